// Frame builder for tests: Ethernet (+ VLAN tags), IPv4 / IPv6 (+ extension headers), TCP / UDP.
// Everything the XDP program looks at can be set, including values that make a frame malformed
// (IHL, total length, TCP data offset, truncation); everything else gets a sane default, and
// checksums are computed (IPv4 header, TCP/UDP with the pseudo-header) unless overridden.
import { isIPv4, isIPv6 } from 'node:net';

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
export const TPID_8021Q = 0x8100;
export const TPID_8021AD = 0x88a8;

export const IPPROTO = {
  HOPOPTS: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  ROUTING: 43,
  FRAGMENT: 44,
  ESP: 50,
  AH: 51,
  ICMPV6: 58,
  NONE: 59,
  DSTOPTS: 60,
} as const;

export const TCP_FLAGS = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

export const ETH_HLEN = 14;
export const VLAN_HLEN = 4;
export const IPV4_HLEN = 20;
export const IPV6_HLEN = 40;
export const TCP_HLEN = 20;
export const UDP_HLEN = 8;

export interface VlanTag {
  /** 0x8100 (802.1Q, default) or 0x88a8 (802.1ad). */
  tpid?: typeof TPID_8021Q | typeof TPID_8021AD;
  vid?: number;
  pcp?: number;
  dei?: boolean;
}

export interface TcpSpec {
  proto: 'tcp';
  sport?: number;
  dport: number;
  /** Bitwise OR of TCP_FLAGS; default SYN. */
  flags?: number;
  seq?: number;
  ack?: number;
  window?: number;
  /** Option bytes, zero-padded to a multiple of 4. */
  options?: Buffer;
  /** Raw data offset (4-bit, in 32-bit words); default 5 + options. */
  dataOffset?: number;
  payload?: Buffer;
  /** Keep only the first n bytes of the segment; the IP length fields follow (a tiny fragment). */
  truncateTo?: number;
  checksum?: number;
}

export interface UdpSpec {
  proto: 'udp';
  sport?: number;
  dport: number;
  payload?: Buffer;
  /** Raw UDP length field; default 8 + payload. */
  length?: number;
  truncateTo?: number;
  checksum?: number;
}

/** Any other protocol, or a later fragment's bytes: carried as is. */
export interface RawL4Spec {
  proto: 'raw';
  protocol: number;
  payload?: Buffer;
}

export type L4Spec = TcpSpec | UdpSpec | RawL4Spec;

export interface Ipv4Spec {
  src: string;
  dst: string;
  tos?: number;
  id?: number;
  ttl?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** Fragment offset in bytes (a multiple of 8). */
  fragmentOffset?: number;
  /** Option bytes, zero-padded (End of Options List) to a multiple of 4. */
  options?: Buffer;
  /** Raw IHL (4-bit); default from the options. The header bytes written do not change. */
  ihl?: number;
  /** Raw total length; default header + L4 bytes. */
  totalLength?: number;
  /** Raw protocol; default from the L4 spec. */
  protocol?: number;
  checksum?: number;
}

export type Ipv6ExtSpec =
  | {
      /** Hop-by-hop (0) or destination options (60): the TLVs in data, PadN-padded to 8 bytes. */
      type: 'hop-by-hop' | 'dest-options';
      data?: Buffer;
      /** Raw Hdr Ext Len; default from the data. */
      hdrLen?: number;
    }
  | { type: 'routing'; routingType?: number; segmentsLeft?: number; data?: Buffer; hdrLen?: number }
  | {
      type: 'fragment';
      /** Offset in bytes (a multiple of 8). */
      offset?: number;
      /** M flag: more fragments follow. */
      more?: boolean;
      id?: number;
    }
  | {
      /** Authentication header (51); its length counts 4-byte units, minus 2. */
      type: 'ah';
      spi?: number;
      seq?: number;
      /** Integrity check value; default 12 bytes (HMAC-96). */
      icv?: Buffer;
      hdrLen?: number;
    };

export interface Ipv6Spec {
  src: string;
  dst: string;
  trafficClass?: number;
  flowLabel?: number;
  hopLimit?: number;
  /** In order; each one's Next Header names the one after it (then the L4 protocol). */
  extensions?: Ipv6ExtSpec[];
  /** Raw payload length; default extension headers + L4 bytes. */
  payloadLength?: number;
  /** Raw Next Header of the fixed header; default the first extension's or the L4 protocol. */
  nextHeader?: number;
}

export interface FrameSpec {
  dstMac?: string;
  srcMac?: string;
  /** Outermost first. */
  vlans?: VlanTag[];
  /** EtherType after the tags; default IPv4/IPv6 from the L3 spec. Needed for non-IP frames. */
  etherType?: number;
  ipv4?: Ipv4Spec;
  ipv6?: Ipv6Spec;
  l4?: L4Spec;
  /** Bytes after the EtherType of a non-IP frame. */
  payload?: Buffer;
  /** Zero-pad the frame to at least this many bytes (60: the Ethernet minimum without FCS). */
  padTo?: number;
}

function checkInt(name: string, v: number, bits: number): number {
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** bits) {
    throw new RangeError(`${name} must be an integer in [0, ${2 ** bits - 1}], got ${v}`);
  }
  return v;
}

/** Four bytes of a dotted-quad IPv4 address. */
export function parseIPv4(text: string): Buffer {
  if (!isIPv4(text)) throw new TypeError(`not an IPv4 address: ${JSON.stringify(text)}`);
  return Buffer.from(text.split('.').map((p) => Number(p)));
}

/** Sixteen bytes of an IPv6 address (with "::" and a dotted-quad tail allowed; no zone). */
export function parseIPv6(text: string): Buffer {
  if (!isIPv6(text) || text.includes('%')) {
    throw new TypeError(`not an IPv6 address: ${JSON.stringify(text)}`);
  }
  let s = text;
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  const last = s.slice(lastColon + 1);
  if (last.includes('.')) {
    const b = parseIPv4(last);
    tail = [((b[0] ?? 0) << 8) | (b[1] ?? 0), ((b[2] ?? 0) << 8) | (b[3] ?? 0)];
    s = s.slice(0, lastColon + 1) + '0'; // placeholder group, dropped below
  }
  const words = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  let groups: number[];
  const dbl = s.indexOf('::');
  if (dbl >= 0) {
    const head = words(s.slice(0, dbl));
    let rest = words(s.slice(dbl + 2));
    if (tail.length > 0) rest = rest.slice(0, -1);
    const fill = 8 - head.length - rest.length - tail.length;
    groups = [...head, ...new Array<number>(fill).fill(0), ...rest, ...tail];
  } else {
    groups = words(s);
    if (tail.length > 0) groups = [...groups.slice(0, -1), ...tail];
  }
  if (groups.length !== 8) throw new TypeError(`not an IPv6 address: ${JSON.stringify(text)}`);
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** The 16-byte source key the gate uses (struct kg_addr): IPv6 as is, IPv4 as ::ffff:a.b.c.d. */
export function addrKey(text: string): Buffer {
  if (isIPv4(text)) return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), parseIPv4(text)]);
  return parseIPv6(text);
}

/** Six bytes of a MAC address ("02:00:00:00:00:01", or with dashes). */
export function parseMac(text: string): Buffer {
  const parts = text.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new TypeError(`not a MAC address: ${JSON.stringify(text)}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

/** The Internet checksum (RFC 1071) of the concatenated buffers. */
export function internetChecksum(...bufs: Buffer[]): number {
  const data = Buffer.concat(bufs);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2 === 1) sum += (data[data.length - 1] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * The pseudo-header a TCP, UDP or ICMPv6 checksum covers: IPv4's for 4-byte addresses, IPv6's
 * for 16-byte ones; `length` is the L4 segment's.
 */
export function pseudoHeader(src: Buffer, dst: Buffer, proto: number, length: number): Buffer {
  if (src.length === 4 && dst.length === 4) {
    const b = Buffer.alloc(12);
    src.copy(b, 0);
    dst.copy(b, 4);
    b[9] = proto;
    b.writeUInt16BE(length, 10);
    return b;
  }
  if (src.length !== 16 || dst.length !== 16) throw new RangeError(`addresses of 4 or 16 bytes expected, got ${src.length} and ${dst.length}`);
  const b = Buffer.alloc(40);
  src.copy(b, 0);
  dst.copy(b, 16);
  b.writeUInt32BE(length, 32);
  b[39] = proto;
  return b;
}

function padTo(buf: Buffer, multiple: number, fill = 0): Buffer {
  const rem = buf.length % multiple;
  return rem === 0 ? buf : Buffer.concat([buf, Buffer.alloc(multiple - rem, fill)]);
}

function l4Protocol(l4: L4Spec | undefined): number {
  if (l4 === undefined) return IPPROTO.NONE;
  if (l4.proto === 'tcp') return IPPROTO.TCP;
  if (l4.proto === 'udp') return IPPROTO.UDP;
  return checkInt('protocol', l4.protocol, 8);
}

/** The L4 bytes, checksummed over the whole segment with the pseudo-header, then truncated. */
function buildL4(l4: L4Spec | undefined, pseudo: (len: number, proto: number) => Buffer): Buffer {
  if (l4 === undefined) return Buffer.alloc(0);
  if (l4.proto === 'raw') return Buffer.from(l4.payload ?? Buffer.alloc(0));
  let seg: Buffer;
  if (l4.proto === 'tcp') {
    const options = padTo(l4.options ?? Buffer.alloc(0), 4);
    const payload = l4.payload ?? Buffer.alloc(0);
    const doff = checkInt('dataOffset', l4.dataOffset ?? (TCP_HLEN + options.length) / 4, 4);
    const h = Buffer.alloc(TCP_HLEN);
    h.writeUInt16BE(checkInt('sport', l4.sport ?? 40000, 16), 0);
    h.writeUInt16BE(checkInt('dport', l4.dport, 16), 2);
    h.writeUInt32BE(checkInt('seq', l4.seq ?? 1, 32), 4);
    h.writeUInt32BE(checkInt('ack', l4.ack ?? 0, 32), 8);
    h[12] = doff << 4;
    h[13] = checkInt('flags', l4.flags ?? TCP_FLAGS.SYN, 8);
    h.writeUInt16BE(checkInt('window', l4.window ?? 64240, 16), 14);
    seg = Buffer.concat([h, options, payload]);
    const sum = l4.checksum ?? internetChecksum(pseudo(seg.length, IPPROTO.TCP), seg);
    seg.writeUInt16BE(checkInt('checksum', sum, 16), 16);
  } else {
    const payload = l4.payload ?? Buffer.alloc(0);
    const h = Buffer.alloc(UDP_HLEN);
    h.writeUInt16BE(checkInt('sport', l4.sport ?? 40000, 16), 0);
    h.writeUInt16BE(checkInt('dport', l4.dport, 16), 2);
    h.writeUInt16BE(checkInt('length', l4.length ?? UDP_HLEN + payload.length, 16), 4);
    seg = Buffer.concat([h, payload]);
    let sum = l4.checksum ?? internetChecksum(pseudo(seg.length, IPPROTO.UDP), seg);
    if (l4.checksum === undefined && sum === 0) sum = 0xffff; // RFC 768: 0 means "no checksum"
    seg.writeUInt16BE(checkInt('checksum', sum, 16), 6);
  }
  return l4.truncateTo === undefined ? seg : Buffer.from(seg.subarray(0, l4.truncateTo));
}

function buildIpv4(ip: Ipv4Spec, l4: L4Spec | undefined): Buffer {
  const src = parseIPv4(ip.src);
  const dst = parseIPv4(ip.dst);
  const proto = ip.protocol ?? l4Protocol(l4);
  const body = buildL4(l4, (len, p) => pseudoHeader(src, dst, p, len));
  const options = padTo(ip.options ?? Buffer.alloc(0), 4);
  const hlen = IPV4_HLEN + options.length;
  if (hlen > 60) throw new RangeError(`IPv4 options too long: ${options.length} bytes`);
  const off = ip.fragmentOffset ?? 0;
  if (off % 8 !== 0) throw new RangeError(`fragmentOffset must be a multiple of 8, got ${off}`);
  checkInt('fragmentOffset / 8', off / 8, 13);
  const h = Buffer.alloc(IPV4_HLEN);
  h[0] = (4 << 4) | checkInt('ihl', ip.ihl ?? hlen / 4, 4);
  h[1] = checkInt('tos', ip.tos ?? 0, 8);
  h.writeUInt16BE(checkInt('totalLength', ip.totalLength ?? hlen + body.length, 16), 2);
  h.writeUInt16BE(checkInt('id', ip.id ?? 0x1234, 16), 4);
  h.writeUInt16BE((ip.dontFragment ? 0x4000 : 0) | (ip.moreFragments ? 0x2000 : 0) | (off / 8), 6);
  h[8] = checkInt('ttl', ip.ttl ?? 64, 8);
  h[9] = checkInt('protocol', proto, 8);
  src.copy(h, 12);
  dst.copy(h, 16);
  const header = Buffer.concat([h, options]);
  header.writeUInt16BE(checkInt('checksum', ip.checksum ?? internetChecksum(header), 16), 10);
  return Buffer.concat([header, body]);
}

const EXT_TYPE: Record<Ipv6ExtSpec['type'], number> = {
  'hop-by-hop': IPPROTO.HOPOPTS,
  routing: IPPROTO.ROUTING,
  fragment: IPPROTO.FRAGMENT,
  'dest-options': IPPROTO.DSTOPTS,
  ah: IPPROTO.AH,
};

/** Pads TLV options (after the 2-byte header) to a multiple of 8 with Pad1 / PadN. */
function padOptions(data: Buffer): Buffer {
  const need = (8 - ((2 + data.length) % 8)) % 8;
  if (need === 0) return data;
  if (need === 1) return Buffer.concat([data, Buffer.from([0])]);
  return Buffer.concat([data, Buffer.from([1, need - 2]), Buffer.alloc(need - 2)]);
}

function buildExt(ext: Ipv6ExtSpec, next: number): Buffer {
  switch (ext.type) {
    case 'hop-by-hop':
    case 'dest-options': {
      const body = padOptions(ext.data ?? Buffer.alloc(0));
      const hdrLen = ext.hdrLen ?? (2 + body.length) / 8 - 1;
      return Buffer.concat([Buffer.from([next, checkInt('hdrLen', hdrLen, 8)]), body]);
    }
    case 'routing': {
      // Routing type 253 (experimental) with Segments Left 0: a receiver skips it (RFC 8200 4.4).
      const head = Buffer.from([
        next,
        0,
        checkInt('routingType', ext.routingType ?? 253, 8),
        checkInt('segmentsLeft', ext.segmentsLeft ?? 0, 8),
      ]);
      const whole = padTo(Buffer.concat([head, ext.data ?? Buffer.alloc(4)]), 8);
      whole[1] = checkInt('hdrLen', ext.hdrLen ?? whole.length / 8 - 1, 8);
      return whole;
    }
    case 'fragment': {
      const off = ext.offset ?? 0;
      if (off % 8 !== 0) throw new RangeError(`fragment offset must be a multiple of 8, got ${off}`);
      checkInt('fragment offset / 8', off / 8, 13);
      const b = Buffer.alloc(8);
      b[0] = next;
      b.writeUInt16BE(off | (ext.more ? 1 : 0), 2);
      b.writeUInt32BE(checkInt('id', ext.id ?? 0x12345678, 32), 4);
      return b;
    }
    case 'ah': {
      const icv = ext.icv ?? Buffer.alloc(12);
      const b = Buffer.alloc(12);
      b[0] = next;
      const total = 12 + icv.length;
      if (total % 4 !== 0) throw new RangeError(`AH length must be a multiple of 4, got ${total}`);
      b[1] = checkInt('hdrLen', ext.hdrLen ?? total / 4 - 2, 8);
      b.writeUInt32BE(checkInt('spi', ext.spi ?? 0x100, 32), 4);
      b.writeUInt32BE(checkInt('seq', ext.seq ?? 1, 32), 8);
      return Buffer.concat([b, icv]);
    }
  }
}

function buildIpv6(ip: Ipv6Spec, l4: L4Spec | undefined): Buffer {
  const src = parseIPv6(ip.src);
  const dst = parseIPv6(ip.dst);
  const body = buildL4(l4, (len, p) => pseudoHeader(src, dst, p, len));
  const exts = ip.extensions ?? [];
  const proto = l4Protocol(l4);
  const parts = exts.map((ext, i) => {
    const after = exts[i + 1];
    return buildExt(ext, after === undefined ? proto : EXT_TYPE[after.type]);
  });
  const first = exts[0];
  const payload = Buffer.concat([...parts, body]);
  const h = Buffer.alloc(IPV6_HLEN);
  const tc = checkInt('trafficClass', ip.trafficClass ?? 0, 8);
  const fl = checkInt('flowLabel', ip.flowLabel ?? 0, 20);
  h.writeUInt32BE(((6 << 28) | (tc << 20) | fl) >>> 0, 0);
  h.writeUInt16BE(checkInt('payloadLength', ip.payloadLength ?? payload.length, 16), 4);
  h[6] = checkInt('nextHeader', ip.nextHeader ?? (first === undefined ? proto : EXT_TYPE[first.type]), 8);
  h[7] = checkInt('hopLimit', ip.hopLimit ?? 64, 8);
  src.copy(h, 8);
  dst.copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** Builds one Ethernet frame (no FCS). */
export function buildFrame(spec: FrameSpec): Buffer {
  if (spec.ipv4 !== undefined && spec.ipv6 !== undefined) throw new TypeError('give ipv4 or ipv6, not both');
  const eth = Buffer.alloc(12);
  parseMac(spec.dstMac ?? '02:00:00:00:00:02').copy(eth, 0);
  parseMac(spec.srcMac ?? '02:00:00:00:00:01').copy(eth, 6);
  const tags = (spec.vlans ?? []).map((t) => {
    const b = Buffer.alloc(VLAN_HLEN);
    b.writeUInt16BE(t.tpid ?? TPID_8021Q, 0);
    const tci = (checkInt('pcp', t.pcp ?? 0, 3) << 13) | (t.dei ? 0x1000 : 0) | checkInt('vid', t.vid ?? 1, 12);
    b.writeUInt16BE(tci, 2);
    return b;
  });
  let etherType: number;
  let l3: Buffer;
  if (spec.ipv4 !== undefined) {
    etherType = spec.etherType ?? ETH_P_IP;
    l3 = buildIpv4(spec.ipv4, spec.l4);
  } else if (spec.ipv6 !== undefined) {
    etherType = spec.etherType ?? ETH_P_IPV6;
    l3 = buildIpv6(spec.ipv6, spec.l4);
  } else {
    if (spec.etherType === undefined) throw new TypeError('a frame without ipv4/ipv6 needs an etherType');
    etherType = spec.etherType;
    l3 = Buffer.from(spec.payload ?? Buffer.alloc(0));
  }
  const type = Buffer.alloc(2);
  type.writeUInt16BE(checkInt('etherType', etherType, 16), 0);
  const frame = Buffer.concat([eth, ...tags, type, l3]);
  const min = spec.padTo ?? 0;
  return frame.length >= min ? frame : Buffer.concat([frame, Buffer.alloc(min - frame.length)]);
}

export interface AddrPair {
  src: string;
  dst: string;
}

/** A TCP SYN (a knock candidate) over IPv4 or IPv6, chosen by the address text. */
export function tcpSyn(addrs: AddrPair, dport: number, extra: Omit<FrameSpec, 'ipv4' | 'ipv6' | 'l4'> = {}): Buffer {
  return buildFrame({ ...extra, ...ipSpec(addrs), l4: { proto: 'tcp', dport, flags: TCP_FLAGS.SYN } });
}

/** A TCP segment with the given flags (e.g. TCP_FLAGS.ACK: not a knock candidate). */
export function tcpSegment(addrs: AddrPair, dport: number, flags: number): Buffer {
  return buildFrame({ ...ipSpec(addrs), l4: { proto: 'tcp', dport, flags } });
}

/** A TCP segment from a given source port (a connection of its own). */
export function tcpFrom(addrs: AddrPair, sport: number, dport: number, flags: number = TCP_FLAGS.SYN): Buffer {
  return buildFrame({ ...ipSpec(addrs), l4: { proto: 'tcp', sport, dport, flags } });
}

/** A UDP datagram from a given source port. */
export function udpFrom(addrs: AddrPair, sport: number, dport: number, payload: Buffer = Buffer.from('data')): Buffer {
  return buildFrame({ ...ipSpec(addrs), l4: { proto: 'udp', sport, dport, payload } });
}

/** A UDP datagram (always a knock candidate). */
export function udpDatagram(addrs: AddrPair, dport: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return buildFrame({ ...ipSpec(addrs), l4: { proto: 'udp', dport, payload } });
}

function ipSpec(addrs: AddrPair): { ipv4: Ipv4Spec } | { ipv6: Ipv6Spec } {
  if (isIPv4(addrs.src) && isIPv4(addrs.dst)) return { ipv4: { src: addrs.src, dst: addrs.dst } };
  if (isIPv6(addrs.src) && isIPv6(addrs.dst)) return { ipv6: { src: addrs.src, dst: addrs.dst } };
  throw new TypeError(`addresses of one family expected: ${addrs.src} -> ${addrs.dst}`);
}

/** The first n bytes of buf (a copy), e.g. to cut a header short. */
export function truncate(buf: Buffer, n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > buf.length) {
    throw new RangeError(`cannot truncate a ${buf.length}-byte buffer to ${n}`);
  }
  return Buffer.from(buf.subarray(0, n));
}

// ---- reading frames back --------------------------------------------------------------------

/**
 * Where the L3 header of an Ethernet frame starts, after up to `maxTags` 802.1Q / 802.1ad tags
 * (a tag cut short ends the walk), and the EtherType found there (still a TPID if the walk
 * stopped at a tag); null for a frame shorter than an Ethernet header.
 */
export function l3Of(frame: Buffer, maxTags = Infinity): { off: number; type: number } | null {
  if (frame.length < ETH_HLEN) return null;
  let off = ETH_HLEN;
  let type = frame.readUInt16BE(off - 2);
  for (let i = 0; i < maxTags && (type === TPID_8021Q || type === TPID_8021AD) && frame.length >= off + VLAN_HLEN; i++) {
    type = frame.readUInt16BE(off + 2);
    off += VLAN_HLEN;
  }
  return { off, type };
}

/** Where an IP packet's L4 header starts, as the kernel would find it (see l4Of). */
export interface L4At {
  v: 4 | 6;
  /** offset of the L4 header */
  l4: number;
  /** IP protocol (IPv6: after the extension headers) */
  proto: number;
  /** L4 bytes by the IP length fields */
  segLen: number;
  src: Buffer;
  dst: Buffer;
}

/**
 * The L4 header of the IP packet at `off` (version from the first nibble), if the kernel would
 * find one: whole by its length fields, not a fragment, IPv6 extension headers walked (at most 16).
 */
export function l4Of(b: Buffer, off: number): L4At | null {
  const v = (b[off] ?? 0) >> 4;
  if (v === 4) {
    if (b.length < off + IPV4_HLEN) return null;
    const ihl = ((b[off] ?? 0) & 0x0f) * 4;
    const tot = b.readUInt16BE(off + 2);
    const frag = b.readUInt16BE(off + 6);
    if (ihl < IPV4_HLEN || tot < ihl || b.length < off + tot || (frag & 0x3fff) !== 0) return null;
    return { v: 4, l4: off + ihl, proto: b[off + 9] ?? 0, segLen: tot - ihl, src: b.subarray(off + 12, off + 16), dst: b.subarray(off + 16, off + 20) };
  }
  if (v === 6) {
    if (b.length < off + IPV6_HLEN) return null;
    let nh = b[off + 6] ?? 0;
    let rem = b.readUInt16BE(off + 4);
    let p = off + IPV6_HLEN;
    if (b.length < p + rem) return null;
    for (let i = 0; i < 16; i++) {
      let len: number;
      if (nh === IPPROTO.HOPOPTS || nh === IPPROTO.ROUTING || nh === IPPROTO.DSTOPTS) len = ((b[p + 1] ?? 0) + 1) * 8;
      else if (nh === IPPROTO.AH) len = ((b[p + 1] ?? 0) + 2) * 4;
      else if (nh === IPPROTO.FRAGMENT) {
        if (b.length < p + 8 || (b.readUInt16BE(p + 2) & 0xfff9) !== 0) return null; // a real fragment
        len = 8;
      } else break;
      if (len > rem || b.length < p + 2) return null;
      nh = b[p] ?? 0;
      p += len;
      rem -= len;
    }
    return { v: 6, l4: p, proto: nh, segLen: rem, src: b.subarray(off + 8, off + 24), dst: b.subarray(off + 24, off + 40) };
  }
  return null;
}

/** The L4 header of an Ethernet frame's IPv4/IPv6 packet (after any VLAN tags), or null (see l4Of). */
export function l4OfFrame(frame: Buffer): L4At | null {
  const l3 = l3Of(frame);
  if (l3 === null || (l3.type !== ETH_P_IP && l3.type !== ETH_P_IPV6)) return null;
  return l4Of(frame, l3.off);
}

/**
 * Writes a valid IPv4 header checksum and TCP/UDP checksum wherever the kernel would check
 * them, into the IP packet at `off`; true if it wrote any.
 */
export function fixChecksums(b: Buffer, off: number): boolean {
  let fixed = false;
  if ((b[off] ?? 0) >> 4 === 4 && b.length >= off + IPV4_HLEN) {
    const ihl = ((b[off] ?? 0) & 0x0f) * 4;
    if (ihl >= IPV4_HLEN && b.length >= off + ihl) {
      b.writeUInt16BE(0, off + 10);
      b.writeUInt16BE(internetChecksum(b.subarray(off, off + ihl)), off + 10);
      fixed = true;
    }
  }
  const t = l4Of(b, off);
  if (t === null || (t.proto !== IPPROTO.TCP && t.proto !== IPPROTO.UDP)) return fixed;
  const at = t.proto === IPPROTO.TCP ? 16 : 6;
  if (t.segLen < at + 2 || b.length < t.l4 + t.segLen) return fixed;
  const seg = b.subarray(t.l4, t.l4 + t.segLen);
  seg.writeUInt16BE(0, at);
  let sum = internetChecksum(pseudoHeader(t.src, t.dst, t.proto, t.segLen), seg);
  if (sum === 0 && t.proto === IPPROTO.UDP) sum = 0xffff;
  seg.writeUInt16BE(sum, at);
  return true;
}

/**
 * Whether the IP packet at `off` carries valid checksums: the IPv4 header's, and the TCP/UDP
 * segment's with its pseudo-header (null: no L4 header the kernel would find).
 */
export function checksumsValid(b: Buffer, off: number): { ip: boolean; l4: boolean } | null {
  const t = l4Of(b, off);
  if (t === null) return null;
  const ip = t.v === 6 || internetChecksum(b.subarray(off, t.l4)) === 0;
  return { ip, l4: internetChecksum(pseudoHeader(t.src, t.dst, t.proto, t.segLen), b.subarray(t.l4, t.l4 + t.segLen)) === 0 };
}
