import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rotatingSequence, windowBounds, windowOf } from '../../src/knock/rotating.js';

const SECRET = Buffer.from(Array.from({ length: 32 }, (_, i) => i)); // 00..1f
const WIDE = { first: 40000, last: 40999 };
const NARROW = { first: 1000, last: 1063 };

// Fixed vectors (also in docs/KNOCKS.md), checked against an independent implementation:
// any change to the derivation must fail here.
const VECTORS: { door: string; w: bigint; range: { first: number; last: number }; length: number; ports: number[] }[] = [
  { door: 'ssh', w: 0n, range: WIDE, length: 4, ports: [40142, 40759, 40626, 40353] },
  { door: 'ssh', w: 1n, range: WIDE, length: 4, ports: [40193, 40361, 40209, 40693] },
  { door: 'ssh', w: 56666666n, range: WIDE, length: 4, ports: [40838, 40311, 40364, 40996] },
  { door: 'ssh', w: 56666666n, range: NARROW, length: 8, ports: [1022, 1047, 1044, 1052, 1018, 1043, 1053, 1001] },
  { door: 'ssh', w: 0n, range: NARROW, length: 8, ports: [1038, 1055, 1042, 1033, 1061, 1037, 1024, 1010] },
];

test('rotating: the fixed vectors', () => {
  for (const v of VECTORS) {
    assert.deepEqual(rotatingSequence(SECRET, v.door, v.w, v.range, v.length), v.ports, `${v.door} w=${v.w} ${v.range.first}-${v.range.last} L=${v.length}`);
  }
});

function checkConstraints(ports: number[], w: bigint, range: { first: number; last: number }, length: number, what: string): void {
  assert.equal(ports.length, length, what);
  const u = ports.map((p) => p - range.first);
  for (const x of u) assert.ok(Number.isInteger(x) && x >= 0 && x <= range.last - range.first, `${what}: ${x + range.first} outside the range`);
  assert.equal((u[0] ?? -1) % 2, Number(w % 2n), `${what}: step 0 has the window's parity`);
  for (let i = 1; i < u.length; i++) {
    assert.ok(Math.abs((u[i] ?? 0) - (u[i - 1] ?? 0)) >= 2, `${what}: steps ${i - 1} and ${i} are neighbours: ${ports.join(',')}`);
    assert.ok(!u.slice(0, i).includes(u[i] ?? -1), `${what}: step ${i} repeats an earlier step: ${ports.join(',')}`);
  }
}

test('rotating: the constraints hold over 2000 windows and several ranges', () => {
  const cases: [{ first: number; last: number }, number][] = [
    [WIDE, 4],
    [NARROW, 8],
    [{ first: 60000, last: 60063 }, 2],
    [{ first: 1, last: 65535 }, 6],
    [{ first: 5000, last: 5009 }, 8], // 10 ports: the smallest range for 8 steps
    [{ first: 7000, last: 7003 }, 2], // 4 ports: the smallest range the function accepts
  ];
  for (const [range, length] of cases) {
    let prev: number[] | null = null;
    for (let w = 1_000_000n; w < 1_002_000n; w++) {
      const what = `${range.first}-${range.last} L=${length} w=${w}`;
      const ports = rotatingSequence(SECRET, 'ssh', w, range, length);
      checkConstraints(ports, w, range, length, what);
      if (prev !== null) assert.notEqual(ports[0], prev[0], `${what}: the first port of consecutive windows differ`);
      prev = ports;
    }
  }
});

test('rotating: deterministic; secret, door and window change the sequence', () => {
  const base = rotatingSequence(SECRET, 'ssh', 123456n, WIDE, 8);
  assert.deepEqual(rotatingSequence(Buffer.from(SECRET), 'ssh', 123456n, WIDE, 8), base);
  const other = Buffer.from(SECRET);
  other[31] = (other[31] ?? 0) ^ 1;
  assert.notDeepEqual(rotatingSequence(other, 'ssh', 123456n, WIDE, 8), base);
  assert.notDeepEqual(rotatingSequence(SECRET, 'ssh2', 123456n, WIDE, 8), base);
  assert.notDeepEqual(rotatingSequence(SECRET, 'ssh', 123457n, WIDE, 8), base);
  assert.notDeepEqual(rotatingSequence(SECRET, 'ssh', 123458n, WIDE, 8), base);
  // a shorter sequence is a prefix of the longer one: the draws are the same
  assert.deepEqual(rotatingSequence(SECRET, 'ssh', 123456n, WIDE, 3), base.slice(0, 3));
  // the same offsets moved along with the range
  const moved = rotatingSequence(SECRET, 'ssh', 123456n, { first: 41000, last: 41999 }, 8);
  assert.deepEqual(moved, base.map((p) => p + 1000));
  // 2000 windows of one door: sequences are spread, not a handful repeating
  const seen = new Set<string>();
  for (let w = 0n; w < 2000n; w++) seen.add(rotatingSequence(SECRET, 'ssh', w, WIDE, 4).join(','));
  assert.ok(seen.size > 1990, `${seen.size} distinct sequences`);
});

test('rotating: bad inputs are refused', () => {
  assert.throws(() => rotatingSequence(Buffer.alloc(15), 'ssh', 0n, WIDE, 4), /at least 16 bytes/);
  assert.throws(() => rotatingSequence(SECRET, 'ssh', -1n, WIDE, 4), RangeError);
  assert.throws(() => rotatingSequence(SECRET, 'ssh', 1n << 64n, WIDE, 4), RangeError);
  assert.throws(() => rotatingSequence(SECRET, 'ssh', 0n, WIDE, 1), /2\.\.8 steps/);
  assert.throws(() => rotatingSequence(SECRET, 'ssh', 0n, WIDE, 9), /2\.\.8 steps/);
  assert.throws(() => rotatingSequence(SECRET, 'ssh', 0n, { first: 100, last: 102 }, 2), /at least 4 ports/);
  assert.throws(() => rotatingSequence(SECRET, 'ssh', 0n, { first: 100, last: 108 }, 8), /needs at least 10 ports/);
  assert.throws(() => rotatingSequence(SECRET, 'ssh', 0n, { first: 200, last: 100 }, 4), /not a port range/);
  assert.throws(() => rotatingSequence(SECRET, 'ssh', 0n, { first: 65500, last: 65536 }, 4), /not a port range/);
});

test('windowOf and windowBounds', () => {
  assert.equal(windowOf(0, 30_000), 0n);
  assert.equal(windowOf(29_999, 30_000), 0n);
  assert.equal(windowOf(30_000, 30_000), 1n);
  assert.equal(windowOf(1_700_000_000_000, 30_000), 56666666n);
  assert.deepEqual(windowBounds(56666666n, 30_000), { startMs: 1_699_999_980_000, endMs: 1_700_000_010_000 });
  for (const ms of [0, 1, 29_999, 1_700_000_000_123]) {
    const { startMs, endMs } = windowBounds(windowOf(ms, 30_000), 30_000);
    assert.ok(startMs <= ms && ms < endMs);
  }
  assert.throws(() => windowOf(0, 0), RangeError);
  assert.throws(() => windowOf(Number.NaN, 30_000), RangeError);
  assert.throws(() => windowBounds(0n, -5), RangeError);
});
