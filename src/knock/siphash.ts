// SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF"), the MAC of spa
// knocks. The XDP program computes the same function over 48 bytes (bpf/), so this is the
// reference the kernel side is tested against. BigInt arithmetic: slow next to C, but it runs
// once per knock sent or checked, and it is easy to read against the paper.

const MASK64 = (1n << 64n) - 1n;

function rotl(x: bigint, b: bigint): bigint {
  return ((x << b) | (x >> (64n - b))) & MASK64;
}

/** The state v0..v3; one SipRound mixes it in place. */
type State = [bigint, bigint, bigint, bigint];

function sipRound(v: State): void {
  v[0] = (v[0] + v[1]) & MASK64;
  v[1] = rotl(v[1], 13n);
  v[1] ^= v[0];
  v[0] = rotl(v[0], 32n);
  v[2] = (v[2] + v[3]) & MASK64;
  v[3] = rotl(v[3], 16n);
  v[3] ^= v[2];
  v[0] = (v[0] + v[3]) & MASK64;
  v[3] = rotl(v[3], 21n);
  v[3] ^= v[0];
  v[2] = (v[2] + v[1]) & MASK64;
  v[1] = rotl(v[1], 17n);
  v[1] ^= v[2];
  v[2] = rotl(v[2], 32n);
}

function readU64LE(buf: Uint8Array, off: number): bigint {
  let x = 0n;
  for (let i = 7; i >= 0; i--) x = (x << 8n) | BigInt(buf[off + i] ?? 0);
  return x;
}

/** SipHash-2-4 of msg under the 16-byte key, as the u64 the reference implementation computes. */
export function siphash24u64(key: Uint8Array, msg: Uint8Array): bigint {
  if (key.length !== 16) throw new RangeError(`a SipHash key has 16 bytes, this one has ${key.length}`);
  const k0 = readU64LE(key, 0);
  const k1 = readU64LE(key, 8);
  const v: State = [
    k0 ^ 0x736f6d6570736575n, // "somepseudorandomlygeneratedbytes"
    k1 ^ 0x646f72616e646f6dn,
    k0 ^ 0x6c7967656e657261n,
    k1 ^ 0x7465646279746573n,
  ];
  const whole = msg.length - (msg.length % 8);
  for (let off = 0; off < whole; off += 8) {
    const m = readU64LE(msg, off);
    v[3] ^= m;
    sipRound(v);
    sipRound(v);
    v[0] ^= m;
  }
  // The last block: the remaining 0..7 bytes, little-endian, with the length's low byte on top.
  let last = BigInt(msg.length & 0xff) << 56n;
  for (let i = msg.length - 1; i >= whole; i--) last |= BigInt(msg[i] ?? 0) << BigInt((i - whole) * 8);
  v[3] ^= last;
  sipRound(v);
  sipRound(v);
  v[0] ^= last;
  v[2] ^= 0xffn;
  sipRound(v);
  sipRound(v);
  sipRound(v);
  sipRound(v);
  return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/** SipHash-2-4 as 8 bytes in the reference implementation's order (the u64, little-endian). */
export function siphash24(key: Uint8Array, msg: Uint8Array): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(siphash24u64(key, msg));
  return out;
}
