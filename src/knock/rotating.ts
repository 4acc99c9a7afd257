// Rotating knock sequences: for each time window the door's sequence is derived from a shared
// secret, so a sequence seen on the wire is worth one window and one grant. Both the client and
// the daemon (which writes the current and the previous window's ports into the gate's tables) call
// rotatingSequence; docs/KNOCKS.md has the derivation and fixed vectors.
import { createHmac } from 'node:crypto';

const LABEL = Buffer.from('knockgate rotating\0', 'latin1');
const TWO32 = 0x1_0000_0000;

/** The window a moment falls in: floor(unixMs / windowMs). */
export function windowOf(unixMs: number, windowMs: number): bigint {
  checkWindowMs(windowMs);
  if (!Number.isFinite(unixMs)) throw new RangeError(`a time is a finite number of milliseconds, not ${unixMs}`);
  return BigInt(Math.floor(unixMs / windowMs));
}

/** Window w as [startMs, endMs): endMs is the next window's start. */
export function windowBounds(w: bigint, windowMs: number): { startMs: number; endMs: number } {
  checkWindowMs(windowMs);
  const startMs = Number(w) * windowMs;
  return { startMs, endMs: startMs + windowMs };
}

function checkWindowMs(windowMs: number): void {
  if (!Number.isSafeInteger(windowMs) || windowMs <= 0) throw new RangeError(`a window is a positive whole number of milliseconds, not ${windowMs}`);
}

/**
 * The u32 stream of window w: HMAC-SHA256(secret, label || door || "\0" || u64 w || u32 c)
 * for blocks c = 0, 1, ..., read as consecutive big-endian u32 values.
 */
function* stream(secret: Uint8Array, door: string, w: bigint): Generator<number, never, void> {
  const prefix = Buffer.concat([LABEL, Buffer.from(door, 'utf8'), Buffer.from([0])]);
  const tail = Buffer.alloc(12);
  tail.writeBigUInt64BE(w, 0);
  for (let c = 0; ; c++) {
    if (c > 0xffffffff) throw new Error('rotating sequence: the block counter ran out'); // 2^32 blocks: never
    tail.writeUInt32BE(c, 8);
    const block = createHmac('sha256', secret).update(prefix).update(tail).digest();
    for (let off = 0; off < block.length; off += 4) yield block.readUInt32BE(off);
  }
}

/** Uniform draws from [0, n) by rejection: values at or past the last whole multiple of n are skipped. */
function* draws(values: Generator<number, never, void>, n: number): Generator<number, never, void> {
  const lim = TWO32 - (TWO32 % n);
  for (;;) {
    const v = values.next().value;
    if (v < lim) yield v % n;
  }
}

/**
 * The knock ports of window w. Step 0's offset has the parity of w, so the first ports of two
 * consecutive windows differ; each later step is at least 2 away from the step before it and
 * differs from every earlier step, so a port scan always crosses a port of the range between
 * two steps and resets the knocker's progress.
 */
export function rotatingSequence(
  secret: Uint8Array,
  door: string,
  w: bigint,
  range: { first: number; last: number },
  length: number,
): number[] {
  if (secret.length < 16) throw new RangeError(`a rotating secret has at least 16 bytes, this one has ${secret.length}`);
  if (w < 0n || w >= 1n << 64n) throw new RangeError(`a window number is a u64, not ${w}`);
  const { first, last } = range;
  if (!Number.isInteger(first) || !Number.isInteger(last) || first < 0 || last > 65535 || first > last) {
    throw new RangeError(`${first}-${last} is not a port range`);
  }
  const n = last - first + 1;
  if (n < 4) throw new RangeError(`a rotating range needs at least 4 ports, ${first}-${last} has ${n}`);
  if (!Number.isInteger(length) || length < 2 || length > 8) throw new RangeError(`a rotating sequence has 2..8 steps, not ${length}`);
  // Step i excludes at most i + 2 offsets (the step before it, its two neighbours, the i - 1
  // steps before that): with length + 2 ports every step has a candidate and the loops end.
  if (n < length + 2) throw new RangeError(`a rotating sequence of ${length} steps needs at least ${length + 2} ports, ${first}-${last} has ${n}`);
  const parity = Number(w & 1n);
  const u = draws(stream(secret, door, w), n);
  const steps: number[] = [];
  for (;;) {
    const x = u.next().value;
    if (x % 2 === parity) {
      steps.push(x);
      break;
    }
  }
  while (steps.length < length) {
    const x = u.next().value;
    const prev = steps[steps.length - 1] ?? 0;
    if (Math.abs(x - prev) >= 2 && !steps.includes(x)) steps.push(x);
  }
  return steps.map((x) => first + x);
}
