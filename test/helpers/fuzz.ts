/**
 * Frames for the differential fuzz test (test/kernel/fuzz-differential.test.ts): a seeded
 * generator of structured frames in every framing the parser knows (VLAN stacks, IPv4 options
 * and fragments, IPv6 extension chains, TCP flags and data offsets, truncations, padding),
 * byte-level mutations of them, and the fix-ups that make a frame what the lab's kernel would
 * accept if the gate let it through: the lab's MACs and addresses, and valid checksums (the gate
 * reads neither, so they do not change its verdict; the kernel drops a bad checksum, which would
 * hide a bypass).
 *
 * Everything is a function of the seed: the same seed gives the same frames in the same order.
 */
import { TPID_8021AD, TPID_8021Q, buildFrame, fixChecksums, l3Of, parseIPv4, parseIPv6, parseMac, type FrameSpec, type Ipv6ExtSpec, type L4Spec } from './packets.js';

/** mulberry32: small, fast, good enough to pick frames. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** [0, 1) */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** [0, n) */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)] as T;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** The lab the frames are meant for (addresses of the listener namespace, MACs of the veth pair). */
export interface Lab {
  srcMac: string;
  dstMac: string;
  dst4: string;
  dst6: string;
  /** ports that matter to the gate (protected and knock ports): most frames aim at them */
  ports: readonly number[];
}

export type FuzzFraming = 'ethernet' | 'l3';

export interface FuzzFrame {
  framing: FuzzFraming;
  /** the bytes the gate judges and the lab receives (Ethernet, or from the IP header for l3) */
  bytes: Buffer;
  /** how it was made, for the log */
  how: string;
}

const INTERESTING = [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x0f, 0x10, 0x11, 0x12, 0x16, 0x2c, 0x3a, 0x3b, 0x40, 0x45, 0x46, 0x4f, 0x50, 0x5f, 0x60, 0x7f, 0x80, 0x81, 0x86, 0x88, 0xa8, 0xdd, 0xf0, 0xfe, 0xff];

function source(r: Rng, v6: boolean): string {
  if (!v6) return `198.19.${1 + r.int(254)}.${1 + r.int(254)}`;
  const roll = r.int(20);
  if (roll === 0) return `::ffff:198.19.${1 + r.int(254)}.${1 + r.int(254)}`; // IPv4-mapped: malformed for the gate
  if (roll === 1) return `::198.19.${1 + r.int(254)}.${1 + r.int(254)}`; // IPv4-compatible
  return `2001:db8:f:${r.int(0x10000).toString(16)}::${(1 + r.int(0xfffe)).toString(16)}`;
}

function extChain(r: Rng): Ipv6ExtSpec[] {
  const n = r.pick([1, 1, 2, 3, 4, 7, 8, 9, 10]);
  if (r.chance(0.6)) {
    // A chain Linux walks to the end: hop-by-hop first if at all, then destination options,
    // routing (segments left 0) and atomic fragments; no AH (no SA here: the stack drops it).
    const out: Ipv6ExtSpec[] = r.chance(0.3) ? [{ type: 'hop-by-hop' }] : [];
    while (out.length < n) {
      const k = r.int(3);
      out.push(k === 0 ? { type: 'dest-options' } : k === 1 ? { type: 'routing', segmentsLeft: 0 } : { type: 'fragment', offset: 0, more: false, id: r.int(0x7fffffff) });
    }
    return out;
  }
  const out: Ipv6ExtSpec[] = [];
  for (let i = 0; i < n; i++) {
    const k = r.int(6);
    if (k === 0) out.push({ type: 'hop-by-hop', data: r.chance(0.2) ? Buffer.alloc(8 * r.int(4)) : Buffer.alloc(0) });
    else if (k === 1) out.push({ type: 'dest-options', data: Buffer.alloc(r.chance(0.1) ? 8 * r.int(64) : 4) });
    else if (k === 2) out.push({ type: 'routing', segmentsLeft: 0 });
    else if (k === 3) out.push({ type: 'ah' });
    else out.push({ type: 'fragment', offset: r.chance(0.6) ? 0 : 8 * (1 + r.int(200)), more: r.chance(0.5), id: r.int(0x7fffffff) });
  }
  return out;
}

function l4(r: Rng, lab: Lab, v6: boolean): L4Spec {
  const dport = r.chance(0.75) ? r.pick(lab.ports) : r.int(65536);
  const sport = 1024 + r.int(64000);
  const roll = r.int(100);
  if (roll < 50) {
    const flags = r.chance(0.5) ? 0x02 : r.chance(0.3) ? r.pick([0x12, 0x10, 0x04, 0x01, 0x03, 0x06, 0x22, 0xc2, 0x42, 0x82, 0x0a]) : r.int(256);
    const spec: Extract<L4Spec, { proto: 'tcp' }> = { proto: 'tcp', sport, dport, flags, seq: r.int(0x100000000), window: 1 + r.int(65535) };
    if (r.chance(0.2)) spec.options = r.chance(0.5) ? Buffer.from('020405b40402080a0000000000000000', 'hex').subarray(0, 4 * r.int(5)) : r.bytes(4 * r.int(11));
    if (r.chance(0.1)) spec.dataOffset = r.int(16);
    if (r.chance(0.3)) spec.payload = r.bytes(r.int(64));
    if (r.chance(0.05)) spec.truncateTo = r.int(20);
    return spec;
  }
  if (roll < 85) {
    const spec: Extract<L4Spec, { proto: 'udp' }> = { proto: 'udp', sport, dport, payload: r.bytes(r.int(80)) };
    if (r.chance(0.1)) spec.length = r.int(65536);
    if (r.chance(0.05)) spec.truncateTo = r.int(8);
    return spec;
  }
  const protocol = r.pick(v6 ? [58, 58, 59, 50, 47, 4, 41, 132, 135, 253, r.int(256)] : [1, 1, 47, 4, 41, 50, 132, 253, r.int(256)]);
  const payload = protocol === 1 || protocol === 58 ? Buffer.concat([Buffer.from([v6 ? 128 : 8, 0, 0, 0]), r.bytes(4 + r.int(40))]) : r.bytes(r.int(48));
  return { proto: 'raw', protocol, payload };
}

/** One structured frame (Ethernet), addresses already the lab's. */
function structured(r: Rng, lab: Lab): { frame: Buffer; how: string } {
  const v6 = r.chance(0.5);
  const spec: FrameSpec = { srcMac: lab.srcMac, dstMac: lab.dstMac };
  const tags: string[] = [];
  if (r.chance(0.25)) {
    const n = r.pick([1, 1, 2, 2, 3, 4]);
    spec.vlans = Array.from({ length: n }, () => ({ tpid: r.chance(0.5) ? TPID_8021Q : TPID_8021AD, vid: 1 + r.int(4094) }));
    tags.push(`${n} tags`);
  }
  const body = l4(r, lab, v6);
  if (!v6) {
    const ip: NonNullable<FrameSpec['ipv4']> = { src: source(r, false), dst: lab.dst4, id: r.int(65536), ttl: 1 + r.int(255) };
    if (r.chance(0.2)) {
      ip.options = r.chance(0.5) ? Buffer.alloc(4 * (1 + r.int(10)), 1) : r.bytes(4 * (1 + r.int(10)));
      tags.push('options');
    }
    if (r.chance(0.2)) {
      ip.moreFragments = r.chance(0.6);
      if (r.chance(0.5)) ip.fragmentOffset = 8 * (1 + r.int(1000));
      tags.push('fragment');
    }
    if (r.chance(0.3)) ip.dontFragment = true;
    if (r.chance(0.05)) ip.ihl = r.int(16);
    if (r.chance(0.05)) ip.totalLength = r.int(65536);
    spec.ipv4 = ip;
  } else {
    const ip: NonNullable<FrameSpec['ipv6']> = { src: source(r, true), dst: lab.dst6, hopLimit: 1 + r.int(255) };
    if (r.chance(0.3)) {
      ip.extensions = extChain(r);
      tags.push(`${ip.extensions.length} ext`);
    }
    if (r.chance(0.05)) ip.payloadLength = r.int(65536);
    if (r.chance(0.03)) ip.nextHeader = r.int(256);
    spec.ipv6 = ip;
  }
  spec.l4 = body;
  if (r.chance(0.1)) spec.padTo = 60 + r.int(40);
  let frame = buildFrame(spec);
  if (r.chance(0.08)) {
    frame = Buffer.from(frame.subarray(0, 14 + r.int(Math.max(1, frame.length - 14))));
    tags.push('cut');
  }
  return { frame, how: [v6 ? 'IPv6' : 'IPv4', body.proto === 'raw' ? `proto ${body.protocol}` : body.proto, ...tags].join(' ') };
}

/** A few byte-level changes: bit flips, interesting values, inserted or deleted bytes, cuts. */
function mutate(r: Rng, frame: Buffer): Buffer {
  let b = Buffer.from(frame);
  const n = 1 + r.int(4);
  for (let i = 0; i < n; i++) {
    const at = 12 + r.int(Math.max(1, b.length - 12));
    const k = r.int(10);
    if (k < 4 && at < b.length) b[at] = (b[at] ?? 0) ^ (1 << r.int(8));
    else if (k < 7 && at < b.length) b[at] = r.pick(INTERESTING);
    else if (k === 7) b = Buffer.concat([b.subarray(0, at), Buffer.from([r.pick(INTERESTING)]), b.subarray(at)]);
    else if (k === 8 && b.length > 15) b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
    else if (b.length > 15) b = Buffer.from(b.subarray(0, Math.max(15, at)));
  }
  return b;
}

/** VLAN tags walked to find a fuzz frame's IP header (the generator stacks at most 4). */
const FUZZ_MAX_TAGS = 8;

/** The lab's MACs and destination address (the source stays what it was: a lab pool address). */
function toLab(b: Buffer, lab: Lab): void {
  parseMac(lab.dstMac).copy(b, 0);
  parseMac(lab.srcMac).copy(b, 6);
  const l3 = l3Of(b, FUZZ_MAX_TAGS);
  if (l3 === null) return;
  const v = (b[l3.off] ?? 0) >> 4;
  if (v === 4 && b.length >= l3.off + 20) parseIPv4(lab.dst4).copy(b, l3.off + 16);
  if (v === 6 && b.length >= l3.off + 40) parseIPv6(lab.dst6).copy(b, l3.off + 24);
}

/** The next frame of the stream: structured, mutated or not, in one of the two framings. */
export function nextFrame(r: Rng, lab: Lab): FuzzFrame {
  const s = structured(r, lab);
  let frame = s.frame;
  let how = s.how;
  if (r.chance(0.4)) {
    frame = mutate(r, frame);
    how += ' mutated';
  }
  toLab(frame, lab);
  const l3 = l3Of(frame, FUZZ_MAX_TAGS);
  if (l3 !== null && r.chance(0.9)) fixChecksums(frame, l3.off);
  if (r.chance(0.3) && l3 !== null && frame.length > l3.off) {
    return { framing: 'l3', bytes: Buffer.from(frame.subarray(l3.off)), how };
  }
  return { framing: 'ethernet', bytes: frame, how };
}

/** Where the IP header of a fuzz frame starts (null: not found). */
export function ipOffset(f: FuzzFrame): number | null {
  if (f.framing === 'l3') return 0;
  return l3Of(f.bytes, FUZZ_MAX_TAGS)?.off ?? null;
}
