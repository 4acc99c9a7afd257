// Byte sizes: 262144, "262144", "256KiB", "1MiB", "1GiB" (binary units only).

const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const DECIMAL_LOOKALIKES: Record<string, string> = { K: 'KiB', KB: 'KiB', k: 'KiB', kB: 'KiB', kb: 'KiB', Kb: 'KiB', M: 'MiB', MB: 'MiB', mb: 'MiB', G: 'GiB', GB: 'GiB', gb: 'GiB', kib: 'KiB', mib: 'MiB', gib: 'GiB' };

/** Parses a size in bytes. Throws an Error with a helpful message. */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) throw new Error(`${text} is not a size: write a whole number of bytes or e.g. 256KiB`);
    return text;
  }
  const shown = JSON.stringify(text);
  const m = /^\s*(\d+)\s*([A-Za-z]*)\s*$/.exec(text);
  if (m === null) throw new Error(`${shown} is not a size: write bytes or a whole number with KiB, MiB or GiB, e.g. 256KiB`);
  const n = Number(m[1]);
  const unit = m[2] ?? '';
  if (unit === '') return n;
  const size = UNITS[unit];
  if (size === undefined) {
    const fix = DECIMAL_LOOKALIKES[unit];
    throw new Error(fix !== undefined
      ? `${shown} is not a size: sizes use binary units, write ${n}${fix}`
      : `${shown} is not a size: ${JSON.stringify(unit)} is not a unit (B, KiB, MiB, GiB)`);
  }
  const bytes = n * size;
  if (!Number.isSafeInteger(bytes)) throw new Error(`${shown} is too large`);
  return bytes;
}

/** The shortest exact text: 262144 -> "256KiB", 1000 -> "1000B". */
export function formatSize(bytes: number): string {
  for (const unit of ['GiB', 'MiB', 'KiB'] as const) {
    const size = UNITS[unit] ?? 1;
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}
