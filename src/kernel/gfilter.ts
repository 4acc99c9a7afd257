/**
 * The grant filter (kg_gfilter, bpf/knock.h; docs/DESIGN.md "Grant filter"), from user space:
 * the same keyed hash as the XDP program, marks for user-space writers of kg_grants, and the
 * rebuild that drops the bits of sources that hold nothing any more.
 *
 * The map is mmapped; every bit is set with Atomics.or (a locked instruction on the shared
 * word, like the program's __sync_fetch_and_or), so no bit the kernel sets is ever lost to a
 * read-modify-write from here.
 */
import type { MmapRegion } from '../bpf/index.js';
import { KG } from './layout.js';

const MASK64 = (1n << 64n) - 1n;

/** log2 of the words of one copy for `sources` entries: KG_GF_BITS_PER_SOURCE bits each. */
export function gfilterShift(sources: number): number {
  const words = Math.ceil((Math.max(1, sources) * KG.GF_BITS_PER_SOURCE) / 64);
  return Math.max(4, Math.ceil(Math.log2(words)));
}

/** max_entries of kg_gfilter for `sources`. */
export function gfilterEntries(sources: number): number {
  return KG.GF_HDR_WORDS + 2 * 2 ** gfilterShift(sources);
}

/** kg_gf_hash of bpf/lib/grants.h: the address as four little-endian u32 words (as XDP loads it). */
export function gfilterHash(addr: Buffer, seed0: bigint, seed1: bigint): bigint {
  const a = (BigInt(addr.readUInt32LE(0)) << 32n) | BigInt(addr.readUInt32LE(4));
  const b = (BigInt(addr.readUInt32LE(8)) << 32n) | BigInt(addr.readUInt32LE(12));
  let h = ((a ^ seed1) * 0x9e3779b97f4a7c15n) & MASK64;
  h = ((h ^ (h >> 29n) ^ b ^ seed0) * 0xbf58476d1ce4e5b9n) & MASK64;
  return h ^ (h >> 32n);
}

function bitsOf(h: bigint): bigint {
  return (1n << ((h >> 40n) & 63n)) | (1n << ((h >> 52n) & 63n));
}

export class GrantFilter {
  private readonly words: BigUint64Array;

  constructor(
    private readonly region: MmapRegion,
    /** the first-knock filter's seed words (kg_globals.fk_seed), read when needed */
    private readonly seeds: () => [bigint, bigint],
  ) {
    this.words = new BigUint64Array(region.view.buffer, 0, region.size / 8);
  }

  private header(): bigint {
    return Atomics.load(this.words, 0);
  }

  /** log2 of the words per copy, as the header says */
  get shift(): number {
    return Number(this.header() >> 32n);
  }

  /** whether XDP trusts the filter (else it looks every source up) */
  get on(): boolean {
    return (this.header() & KG.GF_ON) !== 0n;
  }

  /** the copy XDP tests */
  get cur(): number {
    return Number(this.header() & KG.GF_CUR);
  }

  /** A new filter: empty copies, `shift`, trusted or not. Only before any program uses it. */
  init(shift: number, on: boolean): void {
    if (KG.GF_HDR_WORDS + 2 * 2 ** shift > this.words.length) {
      throw new RangeError(`kg_gfilter has ${this.words.length} words, too few for 2 x 2^${shift}`);
    }
    this.words.fill(0n);
    Atomics.store(this.words, 0, (BigInt(shift) << 32n) | (on ? KG.GF_ON : 0n));
  }

  private index(copy: number, h: bigint, shift: number): number {
    return KG.GF_HDR_WORDS + (copy << shift) + Number(h & ((1n << BigInt(shift)) - 1n));
  }

  private hashOf(addr: Buffer): bigint {
    const [s0, s1] = this.seeds();
    return gfilterHash(addr, s0, s1);
  }

  /** Set addr's bits in both copies. User-space writers call it before and after their write. */
  mark(addr: Buffer): void {
    const shift = this.shift;
    const h = this.hashOf(addr);
    const bits = bitsOf(h);
    for (const c of [0, 1]) Atomics.or(this.words, this.index(c, h, shift), bits);
  }

  /** What XDP would answer now: false only if addr can hold no grant or flow. */
  mayHold(addr: Buffer): boolean {
    if (!this.on) return true;
    const shift = this.shift;
    const h = this.hashOf(addr);
    const bits = bitsOf(h);
    return (Atomics.load(this.words, this.index(this.cur, h, shift)) & bits) === bits;
  }

  /** Bits set in the copy XDP tests, over its size (what a spoofed source's lookup odds follow). */
  fill(): number {
    const shift = this.shift;
    const base = KG.GF_HDR_WORDS + (this.cur << shift);
    let set = 0;
    for (let i = 0; i < 2 ** shift; i++) {
      let w = this.words[base + i]!;
      while (w !== 0n) {
        w &= w - 1n;
        set++;
      }
    }
    return set / (64 * 2 ** shift);
  }

  /**
   * Rebuild the copy XDP does not test from the sources that hold entries now, then make it
   * the one XDP tests (and trust the filter). `sources` is called after the copy is cleared;
   * `waitForPrograms` returns once no XDP program that started before it is running.
   *
   * Why no live entry loses its bits: every writer (XDP and user space) marks both copies
   * before its insert and again after. A writer whose second mark lands after the clear left
   * its bits; one whose second mark came before the clear inserted before it, so the sources
   * listed after the clear include it. Entries older than the rebuild are listed as well.
   */
  rebuild(sources: () => Iterable<Buffer>, waitForPrograms: () => void): number {
    const shift = this.shift;
    const other = this.cur ^ 1;
    const base = KG.GF_HDR_WORDS + (other << shift);
    this.words.fill(0n, base, base + 2 ** shift);
    // A full barrier between the clearing stores and the reads of the maps below.
    Atomics.or(this.words, base, 0n);
    let n = 0;
    for (const addr of sources()) {
      this.mark(addr);
      n++;
    }
    Atomics.store(this.words, 0, (BigInt(shift) << 32n) | KG.GF_ON | BigInt(other));
    // The next rebuild clears the copy tested until now: no program may still be reading it.
    waitForPrograms();
    return n;
  }
}
