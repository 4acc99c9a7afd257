// Durations: "500ms", "5s", "2m", "1h", "1h30m", "1m30s500ms". Whole numbers, units in
// descending order, each at most once. The result is in milliseconds. Pure functions, shared
// with the CLI's argument parsers.

const UNITS = [
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
  ['ms', 1],
] as const;

const MS_PER: Record<string, number> = Object.fromEntries(UNITS);

/** The longest timeout or grant a door may have. */
export const MAX_DURATION_MS = 24 * 3_600_000;

const EXAMPLE = 'e.g. 500ms, 5s, 2m, 1h30m';

/**
 * Parses a duration into milliseconds (>= 0). A bare number is an error: the unit is required.
 * Throws an Error whose message names the text and says how to write it.
 */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number' || /^\s*\d+(\.\d+)?\s*$/.test(text)) {
    const n = String(text).trim();
    throw new Error(`${n} has no unit: write ${n}s for seconds or ${n}ms for milliseconds (units: ms, s, m, h)`);
  }
  const shown = JSON.stringify(text);
  const trimmed = text.trim();
  if (trimmed === '') throw new Error(`${shown} is not a duration: write a number and a unit, ${EXAMPLE}`);
  const re = /(\d+)(ms|h|m|s)/y;
  let total = 0;
  let pos = 0;
  let lastRank = -1;
  while (pos < trimmed.length) {
    re.lastIndex = pos;
    const m = re.exec(trimmed);
    if (m === null) {
      const rest = trimmed.slice(pos);
      if (/^\d+\.\d+/.test(rest)) throw new Error(`${shown} is not a duration: use whole numbers, e.g. 1500ms rather than 1.5s`);
      const unit = /^\d+([A-Za-z]+)/.exec(rest)?.[1];
      if (unit !== undefined) {
        const hint = unit.toLowerCase() in MS_PER ? `units are lower case: ${unit.toLowerCase()}` : 'units are ms, s, m and h';
        throw new Error(`${shown} is not a duration: ${JSON.stringify(unit)} is not a unit (${hint}), ${EXAMPLE}`);
      }
      throw new Error(`${shown} is not a duration: write a number and a unit, ${EXAMPLE}`);
    }
    const unit = m[2] ?? '';
    const rank = UNITS.findIndex(([u]) => u === unit);
    if (rank <= lastRank) throw new Error(`${shown} is not a duration: write each unit once, largest first, ${EXAMPLE}`);
    lastRank = rank;
    total += Number(m[1]) * (MS_PER[unit] ?? 0);
    pos = re.lastIndex;
  }
  if (!Number.isSafeInteger(total)) throw new Error(`${shown} is too long to be a duration`);
  return total;
}

/**
 * Parses a door timeout or grant length: a duration more than 0 and at most 24h.
 */
export function parseTimeout(text: string | number): number {
  const ms = parseDuration(text);
  checkTimeout(ms, String(text).trim());
  return ms;
}

/** Throws unless 0 < ms <= 24h; `shown` is the text the duration was written as. */
export function checkTimeout(ms: number, shown: string = formatDuration(ms)): void {
  if (ms <= 0) throw new Error(`${shown} is too short: a duration must be more than 0`);
  if (ms > MAX_DURATION_MS) throw new Error(`${shown} is too long: at most ${formatDuration(MAX_DURATION_MS)}`);
}

/** The shortest text that parseDuration reads back as `ms`: 90000 -> "1m30s", 0 -> "0ms". */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) throw new RangeError(`cannot format ${ms} as a duration: need whole milliseconds >= 0`);
  if (ms === 0) return '0ms';
  let rest = ms;
  let out = '';
  for (const [unit, size] of UNITS) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}
