/** Summary statistics for benchmark runs. */

export function sorted(xs: readonly number[]): number[] {
  return [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
}

export function quantile(xs: readonly number[], q: number): number {
  const s = sorted(xs);
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = s[lo] ?? NaN;
  const b = s[hi] ?? NaN;
  return a + (b - a) * (pos - lo);
}

export const median = (xs: readonly number[]): number => quantile(xs, 0.5);

/** Mean of the values between the `trim` and 1-`trim` quantiles (robust to interrupts). */
export function trimmedMean(xs: readonly number[], trim = 0.1): number {
  const s = sorted(xs);
  if (s.length === 0) return NaN;
  const cut = Math.floor(s.length * trim);
  const kept = s.slice(cut, s.length - cut);
  const use = kept.length > 0 ? kept : s;
  return use.reduce((a, b) => a + b, 0) / use.length;
}

export interface Summary {
  median: number;
  min: number;
  max: number;
  /** (max - min) / median, % */
  spreadPct: number;
  runs: number[];
}

export function summarize(runs: readonly number[]): Summary {
  const s = sorted(runs);
  const med = median(s);
  const min = s[0] ?? NaN;
  const max = s[s.length - 1] ?? NaN;
  return { median: med, min, max, spreadPct: med > 0 ? ((max - min) / med) * 100 : NaN, runs: [...runs] };
}

export const round = (x: number, digits = 1): number => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x);

/** Rotate a list by k (alternates who goes first between runs). */
export function rotate<T>(xs: readonly T[], k: number): T[] {
  if (xs.length === 0) return [];
  const n = ((k % xs.length) + xs.length) % xs.length;
  return [...xs.slice(n), ...xs.slice(0, n)];
}
