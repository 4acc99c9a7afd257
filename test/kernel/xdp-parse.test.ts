/**
 * Header parsing as the policy sees it (bpf/parse.h, docs/DESIGN.md "Packet path"): VLAN
 * tags, IPv4 options and bad IPv4 headers, IPv6 extension headers, fragments, truncated
 * headers and frames cut at every byte. The point throughout: no encapsulation, option,
 * extension header or fragmentation hides a protected port or forges a knock; what cannot be
 * parsed is dropped (drop_malformed) and changes nothing.
 *
 * Every table but the VLAN one runs through both of the gate's programs (framingSuites): the one
 * for Ethernet frames and the one for devices without a link-layer header (TUN, WireGuard),
 * which gets the same frames without their Ethernet header.
 */
import assert from 'node:assert/strict';
import { beforeEach, it } from 'node:test';
import { kernelSuite } from '../helpers/kernel.js';
import {
  FlowBook,
  GateHarness,
  NO_EVENT,
  NO_MAP_UPDATE,
  XDP_DROP,
  XDP_PASS,
  config,
  ev,
  framingSuites,
  to,
  toL3,
  type Entry,
  type Row,
} from '../helpers/gate.js';
import {
  ETH_P_ARP,
  ETH_P_IP,
  IPPROTO,
  TCP_FLAGS,
  TPID_8021AD,
  TPID_8021Q,
  buildFrame,
  truncate,
  type Ipv4Spec,
  type Ipv6ExtSpec,
  type Ipv6Spec,
  type L4Spec,
  type VlanTag,
} from '../helpers/packets.js';

// Long timeouts: these tests are about parsing, and a slow machine (the 6.1 matrix runs under
// emulation) must not turn a step into a step timeout between two test runs.
const YAML = config(`
  ssh:
    sequence: [7000/tcp, 8000/tcp, 9000/tcp]
    protects: [22/tcp]
    step_timeout: 10m
    sequence_timeout: 10m
  dns:
    sequence: [7000/udp, 7100/udp]
    protects: [5000/udp]
`);

interface Opts {
  vlans?: VlanTag[];
  v4?: Partial<Ipv4Spec>;
  v6?: Partial<Ipv6Spec>;
  padTo?: number;
}

function frame(src: string, l4: L4Spec, o: Opts = {}): Buffer {
  const base = to(src);
  return buildFrame({
    ...(o.vlans ? { vlans: o.vlans } : {}),
    ...(src.includes(':') ? { ipv6: { ...base, ...o.v6 } } : { ipv4: { ...base, ...o.v4 } }),
    l4,
    ...(o.padTo !== undefined ? { padTo: o.padTo } : {}),
  });
}
const tcp = (dport: number, extra: Partial<Extract<L4Spec, { proto: 'tcp' }>> = {}): L4Spec => ({ proto: 'tcp', dport, flags: TCP_FLAGS.SYN, ...extra });
const udpL4 = (dport: number, extra: Partial<Extract<L4Spec, { proto: 'udp' }>> = {}): L4Spec => ({ proto: 'udp', dport, payload: Buffer.from('knock'), ...extra });
/** The 20 bytes of a TCP SYN header to `dport`, as a later fragment's payload would carry them. */
const tcpLookingBytes = (dport: number): Buffer => {
  const b = Buffer.alloc(20);
  b.writeUInt16BE(40000, 0);
  b.writeUInt16BE(dport, 2);
  b[12] = 5 << 4;
  b[13] = TCP_FLAGS.SYN;
  return b;
};

const malformed = (description: string, f: Buffer): Row => ({
  description,
  frame: f,
  verdict: XDP_DROP,
  counter: 'drop_malformed',
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
});
const noGrant = (description: string, f: Buffer): Row => ({
  description,
  frame: f,
  verdict: XDP_DROP,
  counter: 'drop_no_grant',
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
  counters: { deny_suppressed: 1 },
});
/** Flows opened by the granted sources' SYNs: a fresh book for each test (each has a gate of its own). */
let book = new FlowBook();
beforeEach(() => {
  book = new FlowBook();
});
/** A SYN from a fresh source port (built by `build`) that the source's grant lets in: a new flow. */
const granted = (description: string, src: string, build: (sport: number) => Buffer): Row => book.opens(description, src, 22, build);
const passes = (description: string, f: Buffer, counter: Row['counter']): Row => ({
  description,
  frame: f,
  verdict: XDP_PASS,
  counter,
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
});
const knockNoop = (description: string, f: Buffer): Row => ({
  description,
  frame: f,
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
});
/** An ssh step (7000, 8000, 9000) that counts. */
const sshStep = (description: string, src: string, n: 1 | 2 | 3, f: Buffer): Row => {
  const port = [7000, 8000, 9000][n - 1] ?? 0;
  return n === 3
    ? {
        description,
        frame: f,
        verdict: XDP_DROP,
        counter: 'drop_knock',
        map: { progress: { [src]: {} }, grants: { [src]: ['ssh'] } },
        events: [ev.grant('ssh', port)],
        counters: { grant: 1 },
      }
    : {
        description,
        frame: f,
        verdict: XDP_DROP,
        counter: 'drop_knock',
        map: { progress: { [src]: { ssh: n } } },
        events: [ev.knock('ssh', n, 3, port)],
        counters: { knock_step: 1 },
      };
};

const Q = (vid: number): VlanTag => ({ tpid: TPID_8021Q, vid });
const AD = (vid: number): VlanTag => ({ tpid: TPID_8021AD, vid });

kernelSuite('XDP: VLAN tags', () => {
  it('one 802.1Q tag and QinQ are parsed (knocks count, protected ports drop); a third tag is malformed', async () => {
    const S = '198.18.6.1';
    const S6 = '2001:db8:6::1';
    const O = '198.18.6.2';
    await GateHarness.with({ yaml: YAML }, async (h) => {
      await h.table([
        sshStep('802.1Q, IPv4 SYN 7000: step 1', S, 1, frame(S, tcp(7000), { vlans: [Q(10)] })),
        noGrant('802.1Q, IPv4 SYN 22: dropped', frame(S, tcp(22), { vlans: [Q(10)] })),
        noGrant('802.1Q, IPv4 UDP 5000/udp: dropped', frame(S, udpL4(5000), { vlans: [Q(10)] })),
        sshStep('QinQ (802.1ad + 802.1Q), IPv4 SYN 8000: step 2', S, 2, frame(S, tcp(8000), { vlans: [AD(100), Q(10)] })),
        noGrant('QinQ, IPv4 SYN 22: dropped', frame(S, tcp(22), { vlans: [AD(100), Q(10)] })),
        malformed('three tags, IPv4 SYN 9000: malformed, progress untouched', frame(S, tcp(9000), { vlans: [AD(100), Q(10), Q(20)] })),
        malformed('three tags, IPv4 SYN 22: malformed', frame(S, tcp(22), { vlans: [AD(100), Q(10), Q(20)] })),
        malformed('three 802.1Q tags, IPv6 SYN 22: malformed', frame(S6, tcp(22), { vlans: [Q(1), Q(2), Q(3)] })),
        malformed('three tags, ARP: malformed (the tag limit comes before the EtherType)', buildFrame({ vlans: [AD(1), Q(2), Q(3)], etherType: ETH_P_ARP, payload: Buffer.alloc(28) })),
        passes('QinQ, ARP: non-IP', buildFrame({ vlans: [AD(1), Q(2)], etherType: ETH_P_ARP, payload: Buffer.alloc(28) }), 'pass_non_ip'),
        sshStep('two 802.1Q tags, IPv4 SYN 9000: GRANT', S, 3, frame(S, tcp(9000), { vlans: [Q(10), Q(11)] })),
        granted('QinQ, IPv4 SYN 22 from the granted source: passes', S, (sport) => frame(S, tcp(22, { sport }), { vlans: [AD(100), Q(10)] })),
        book.on('802.1Q, IPv4 ACK 22 on that connection: passes (its flow)', S, 22, (sport) => frame(S, tcp(22, { sport, flags: TCP_FLAGS.ACK }), { vlans: [Q(99)] })),
        granted('untagged, IPv4 SYN 22: passes (grants are per source)', S, (sport) => frame(S, tcp(22, { sport }))),
        malformed('three tags, IPv4 SYN 22 from the granted source: still malformed', frame(S, tcp(22), { vlans: [Q(1), Q(2), Q(3)] })),
        noGrant('QinQ, IPv4 SYN 22 from another source: dropped', frame(O, tcp(22), { vlans: [AD(100), Q(10)] })),
        sshStep('802.1Q, IPv6 SYN 7000: step 1', S6, 1, frame(S6, tcp(7000), { vlans: [Q(10)] })),
        noGrant('QinQ, IPv6 SYN 22: dropped', frame(S6, tcp(22), { vlans: [AD(100), Q(10)] })),
        sshStep('one 802.1ad tag, IPv6 SYN 8000: step 2', S6, 2, frame(S6, tcp(8000), { vlans: [AD(7)] })),
        malformed('three tags, IPv6 SYN 9000: malformed, no grant', frame(S6, tcp(9000), { vlans: [AD(7), Q(8), Q(9)] })),
        sshStep('QinQ, IPv6 SYN 9000: GRANT', S6, 3, frame(S6, tcp(9000), { vlans: [AD(100), Q(10)] })),
        granted('QinQ, IPv6 SYN 22: passes', S6, (sport) => frame(S6, tcp(22, { sport }), { vlans: [AD(100), Q(10)] })),
        noGrant('802.1Q, IPv6 UDP 5000/udp: dropped (ssh’s grant does not cover dns’s port)', frame(S6, udpL4(5000), { vlans: [Q(10)] })),
      ].map((r) => (r.description.includes('dns’s port') ? { ...r, counter: 'drop_expired' as const } : r)));
    });
  });
});

framingSuites('XDP: IPv4 headers', (framing) => {
  it('options are skipped by IHL; IHL < 5, short total length, header past the end, truncated L4 are malformed', async () => {
    const S = '198.18.7.1';
    const ra = Buffer.from([0x94, 0x04, 0x00, 0x00]); // Router Alert: IHL 6
    const nops40 = Buffer.alloc(40, 0x01); // 40 NOPs: IHL 15, the maximum
    const nops8 = Buffer.alloc(8, 0x01); // IHL 7
    await GateHarness.with({ yaml: YAML, framing }, async (h) => {
      await h.table([
        noGrant('IHL 6 (Router Alert), SYN 22: dropped', frame(S, tcp(22), { v4: { options: ra } })),
        noGrant('IHL 15 (40 bytes of options), SYN 22: dropped', frame(S, tcp(22), { v4: { options: nops40 } })),
        noGrant('IHL 7, UDP 5000/udp: dropped', frame(S, udpL4(5000), { v4: { options: nops8 } })),
        sshStep('IHL 6, SYN 7000: step 1 (counted)', S, 1, frame(S, tcp(7000), { v4: { options: ra } })),
        sshStep('IHL 15, SYN 8000: step 2', S, 2, frame(S, tcp(8000), { v4: { options: nops40 } })),
        malformed('IHL 4 (header bytes unchanged), SYN 9000: malformed, no grant', frame(S, tcp(9000), { v4: { ihl: 4 } })),
        malformed('IHL 0, SYN 22', frame(S, tcp(22), { v4: { ihl: 0 } })),
        malformed('IHL 15 but only 20 header bytes and a 20-byte TCP header in the frame (header past the end)', frame(S, tcp(22), { v4: { ihl: 15 } })),
        malformed('total length 19 (< the 20-byte header), SYN 22', frame(S, tcp(22), { v4: { totalLength: 19 } })),
        malformed('IHL 6 and total length 23 (< 24), SYN 9000', frame(S, tcp(9000), { v4: { options: ra, totalLength: 23 } })),
        malformed('total length 20: the IP datagram claims no TCP header at all, SYN 22 in the frame', frame(S, tcp(22), { v4: { totalLength: 20 } })),
        malformed('total length 20 + 16: TCP header not complete within the IP length, SYN 9000', frame(S, tcp(9000), { v4: { totalLength: 36 } })),
        malformed('TCP header cut to 12 bytes (whole datagram), to 22', frame(S, tcp(22, { truncateTo: 12 }))),
        malformed('TCP header cut to 12 bytes, padded to the Ethernet minimum, to 9000', frame(S, tcp(9000, { truncateTo: 12 }), { padTo: 60 })),
        malformed('TCP data offset 4 (< 5), to 22', frame(S, tcp(22, { dataOffset: 4 }))),
        malformed('TCP data offset 15 with no options in the datagram, to 9000', frame(S, tcp(9000, { dataOffset: 15 }))),
        noGrant('TCP data offset 8 (12 option bytes present), to 22: a normal drop', frame(S, tcp(22, { options: Buffer.from('020405b40402080a00000000', 'hex') }))),
        malformed('UDP header cut to 4 bytes, to 5000/udp', frame(S, udpL4(5000, { truncateTo: 4, payload: Buffer.alloc(0) }))),
        malformed('UDP: total length 20 + 4, header in the frame, to 7100/udp', frame(S, udpL4(7100), { v4: { totalLength: 24 } })),
        noGrant('Ethernet padding after a short datagram: SYN 22 padded to 128 bytes, a normal drop', frame(S, tcp(22), { padTo: 128 })),
        passes('UDP 53 padded to the Ethernet minimum (from another source, with no progress): passes', frame('198.18.7.2', udpL4(53, { payload: Buffer.alloc(0) }), { padTo: 60 }), 'pass_unrelated'),
        sshStep('IHL 7, SYN 9000: GRANT', S, 3, frame(S, tcp(9000), { v4: { options: nops8 } })),
        granted('IHL 15, SYN 22 from the granted source: passes', S, (sport) => frame(S, tcp(22, { sport }), { v4: { options: nops40 } })),
        malformed('IHL 4, SYN 22 from the granted source: still malformed', frame(S, tcp(22), { v4: { ihl: 4 } })),
      ]);
    });
  });
});

const HBH: Ipv6ExtSpec = { type: 'hop-by-hop' };
const DST: Ipv6ExtSpec = { type: 'dest-options' };
const RT: Ipv6ExtSpec = { type: 'routing' };
const AH: Ipv6ExtSpec = { type: 'ah' };
const exts = (...e: Ipv6ExtSpec[]): Opts => ({ v6: { extensions: e } });
const eight = [HBH, RT, DST, DST, DST, DST, DST, DST];
const nine = [HBH, RT, DST, DST, DST, DST, DST, DST, DST];

framingSuites('XDP: IPv6 extension headers', (framing) => {
  it('walked up to 8 (hop-by-hop, routing, fragment, destination options, AH); a 9th is malformed', async () => {
    const S = '2001:db8:7::1';
    const O = '2001:db8:7::2';
    await GateHarness.with({ yaml: YAML, framing }, async (h) => {
      await h.table([
        noGrant('hop-by-hop + dest options + routing, SYN 22: dropped', frame(S, tcp(22), exts(HBH, DST, RT))),
        sshStep('hop-by-hop + dest options + routing, SYN 7000: step 1', S, 1, frame(S, tcp(7000), exts(HBH, DST, RT))),
        noGrant('8 extension headers, SYN 22: still parsed, dropped', frame(S, tcp(22), exts(...eight))),
        noGrant('8 extension headers, UDP 5000/udp: dropped', frame(S, udpL4(5000), exts(...eight))),
        sshStep('8 extension headers, SYN 8000: step 2', S, 2, frame(S, tcp(8000), exts(...eight))),
        malformed('9 extension headers, SYN 22: malformed', frame(S, tcp(22), exts(...nine))),
        malformed('9 extension headers, SYN 9000: malformed, no grant', frame(S, tcp(9000), exts(...nine))),
        malformed('9 extension headers, ICMPv6: malformed', frame(S, { proto: 'raw', protocol: IPPROTO.ICMPV6, payload: Buffer.alloc(8) }, exts(...nine))),
        noGrant('AH, SYN 22: dropped', frame(S, tcp(22), exts(AH))),
        noGrant('a 2 KiB destination options header, SYN 22: dropped', frame(S, tcp(22), exts({ type: 'dest-options', data: Buffer.alloc(2040) }))),
        noGrant(
          '8 headers of every kind (fragment header atomic), SYN 22: dropped',
          frame(S, tcp(22), exts(HBH, DST, RT, { type: 'fragment', offset: 0, more: false }, AH, DST, DST, DST)),
        ),
        passes('AH, ICMPv6: other L4', frame(S, { proto: 'raw', protocol: IPPROTO.ICMPV6, payload: Buffer.alloc(8) }, exts(AH)), 'pass_other_l4'),
        passes('hop-by-hop, ESP: other L4', frame(S, { proto: 'raw', protocol: IPPROTO.ESP, payload: Buffer.alloc(16) }, exts(HBH)), 'pass_other_l4'),
        malformed('a destination options header longer than the payload length', frame(S, tcp(22), { v6: { extensions: [DST], payloadLength: 4 } })),
        malformed('hop-by-hop claiming 16 bytes with only 8 in the frame', frame(S, { proto: 'raw', protocol: IPPROTO.NONE }, exts({ type: 'hop-by-hop', hdrLen: 1 }))),
        malformed('payload length 0 (a jumbogram), SYN 22', frame(S, tcp(22), { v6: { payloadLength: 0 } })),
        malformed('payload length 16: TCP header not complete within it, SYN 9000', frame(S, tcp(9000), { v6: { payloadLength: 16 } })),
        sshStep('AH, SYN 9000: GRANT', S, 3, frame(S, tcp(9000), exts(AH))),
        granted('8 extension headers, SYN 22 from the granted source: passes', S, (sport) => frame(S, tcp(22, { sport }), exts(...eight))),
        malformed('9 extension headers, SYN 22 from the granted source: malformed', frame(S, tcp(22), exts(...nine))),
        noGrant('hop-by-hop + dest options + routing, SYN 22 from another source: dropped', frame(O, tcp(22), exts(HBH, DST, RT))),
      ]);
    });
  });
});

function fragmentRows(S: string, O: string): Entry[] {
  const v6 = S.includes(':');
  /** first fragment (offset 0, more fragments) */
  const first = (l4: L4Spec, pad?: number): Buffer =>
    frame(S, l4, {
      ...(v6 ? { v6: { extensions: [{ type: 'fragment', offset: 0, more: true }] } } : { v4: { moreFragments: true } }),
      ...(pad !== undefined ? { padTo: pad } : {}),
    });
  /** a later fragment (offset != 0) whose bytes look like a TCP SYN header to `dport` */
  const later = (offset: number, more: boolean, protocol: number, payload: Buffer): Buffer =>
    frame(S, { proto: 'raw', protocol, payload }, v6 ? { v6: { extensions: [{ type: 'fragment', offset, more }] } } : { v4: { fragmentOffset: offset, moreFragments: more } });
  const TCP = IPPROTO.TCP;
  return [
    noGrant('first fragment, SYN 22 with a whole TCP header: judged like a whole packet, dropped', first(tcp(22))),
    noGrant('first fragment, UDP 5000/udp: dropped', first(udpL4(5000))),
    malformed('tiny first fragment (8 TCP bytes), to 22: malformed', first(tcp(22, { truncateTo: 8 }))),
    malformed('tiny first fragment (8 TCP bytes) padded to the Ethernet minimum, to 22: malformed', first(tcp(22, { truncateTo: 8 }), 60)),
    malformed('tiny first fragment (16 TCP bytes) to 7000: malformed', first(tcp(7000, { truncateTo: 16 }))),
    malformed('tiny first fragment (4 UDP bytes) to 5000/udp: malformed', first(udpL4(5000, { truncateTo: 4 }))),
    passes('non-first fragment (offset 8, more) carrying bytes that look like a TCP SYN to 22: pass_fragment, no port', later(8, true, TCP, tcpLookingBytes(22)), 'pass_fragment'),
    passes('last fragment (offset 1480) looking like a TCP SYN to 22: pass_fragment', later(1480, false, TCP, tcpLookingBytes(22)), 'pass_fragment'),
    passes('non-first fragment looking like a SYN to the first knock 7000: pass_fragment, no knock', later(8, true, TCP, tcpLookingBytes(7000)), 'pass_fragment'),
    passes('non-first fragment of UDP looking like a datagram to 5000: pass_fragment', later(16, true, IPPROTO.UDP, Buffer.from('9c4013880010000000000000', 'hex')), 'pass_fragment'),
    passes('non-first fragment of ICMP: pass_fragment', later(8, false, v6 ? IPPROTO.ICMPV6 : IPPROTO.ICMP, Buffer.alloc(16)), 'pass_fragment'),
    knockNoop('first fragment, SYN 7000 (a first step): dropped, never a knock, no progress', first(tcp(7000))),
    knockNoop('first fragment, UDP 7000/udp (a first step): dropped, no progress', first(udpL4(7000))),
    passes('first fragment, SYN 80 (unrelated): passes', first(tcp(80)), 'pass_unrelated'),
    passes('first fragment, UDP 53: passes', first(udpL4(53)), 'pass_unrelated'),
    sshStep(v6 ? 'atomic fragment (offset 0, no more), SYN 7000: a whole datagram, step 1' : 'DF set, SYN 7000: not a fragment, step 1', S, 1, v6 ? frame(S, tcp(7000), { v6: { extensions: [{ type: 'fragment', offset: 0, more: false }] } }) : frame(S, tcp(7000), { v4: { dontFragment: true } })),
    passes('midway: first fragment to an unrelated port: passes, no reset', first(tcp(80)), 'pass_unrelated'),
    passes('midway: first fragment, UDP 53: passes, no reset', first(udpL4(53)), 'pass_unrelated'),
    passes('midway: non-first fragment: pass_fragment, no reset', later(8, true, TCP, tcpLookingBytes(80)), 'pass_fragment'),
    knockNoop('midway: first fragment to the next step 8000: dropped, progress stays at 1', first(tcp(8000))),
    sshStep('8000 whole: step 2', S, 2, frame(S, tcp(8000))),
    sshStep('9000 whole: GRANT', S, 3, frame(S, tcp(9000))),
    granted('granted: first fragment to 22 (a SYN with a whole TCP header): passes, opens a flow', S, (sport) => first(tcp(22, { sport }))),
    passes('granted: non-first fragment: pass_fragment', later(8, true, TCP, tcpLookingBytes(22)), 'pass_fragment'),
    malformed('granted: tiny first fragment to 22: still malformed', first(tcp(22, { truncateTo: 8 }))),
    noGrant(`${O}: first fragment to 22 from another source: dropped`, frame(O, tcp(22), v6 ? { v6: { extensions: [{ type: 'fragment', offset: 0, more: true }] } } : { v4: { moreFragments: true } })),
  ];
}

framingSuites('XDP: fragments', (framing) => {
  it('IPv4: first fragments judged by their ports (never knocks), tiny ones malformed, later ones pass_fragment', async () => {
    await GateHarness.with({ yaml: YAML, framing }, async (h) => {
      await h.table(fragmentRows('198.18.8.1', '198.18.8.2'));
    });
  });

  it('IPv6 (fragment header): the same', async () => {
    await GateHarness.with({ yaml: YAML, framing }, async (h) => {
      await h.table([
        ...fragmentRows('2001:db8:8::1', '2001:db8:8::2'),
        passes(
          'non-first fragment after hop-by-hop whose next header claims more extension headers: pass_fragment (not walked)',
          frame('2001:db8:8::3', { proto: 'raw', protocol: IPPROTO.HOPOPTS, payload: Buffer.alloc(64, 0x3c) }, {
            v6: { extensions: [HBH, { type: 'fragment', offset: 64, more: true }] },
          }),
          'pass_fragment',
        ),
        noGrant(
          'first fragment after hop-by-hop + dest options, SYN 22: dropped',
          frame('2001:db8:8::3', tcp(22), { v6: { extensions: [HBH, DST, { type: 'fragment', offset: 0, more: true }] } }),
        ),
      ]);
    });
  });
});

framingSuites('XDP: frames cut at every byte', (framing) => {
  it('every truncation of each frame is malformed and changes nothing; the whole frame is judged normally', async () => {
    const S = '198.18.9.1';
    const S6 = '2001:db8:9::1';
    const P = '198.18.9.2'; // has progress on ssh (step 1): truncated knocks must not move it
    // Frames end with their L4 header (no payload): every shorter cut lands inside a header.
    const udpL4 = (dport: number): L4Spec => ({ proto: 'udp', dport });
    const cases: { name: string; frame: Buffer; whole: (d: string, f: Buffer) => Row }[] = [
      { name: 'IPv4 TCP SYN 22', frame: frame(S, tcp(22)), whole: noGrant },
      { name: 'IPv4 UDP 5000', frame: frame(S, udpL4(5000)), whole: noGrant },
      { name: 'IPv4 (IHL 7) TCP (data offset 6) SYN 22', frame: frame(S, tcp(22, { options: Buffer.from('020405b4', 'hex') }), { v4: { options: Buffer.alloc(8, 1) } }), whole: noGrant },
      { name: 'IPv6 TCP SYN 22', frame: frame(S6, tcp(22)), whole: noGrant },
      { name: 'IPv6 hop-by-hop + first fragment + TCP SYN 22', frame: frame(S6, tcp(22), { v6: { extensions: [HBH, { type: 'fragment', offset: 0, more: true }] } }), whole: noGrant },
      { name: 'IPv6 AH + UDP 5000', frame: frame(S6, udpL4(5000), exts(AH)), whole: noGrant },
      { name: 'QinQ IPv4 TCP SYN 22', frame: frame(S, tcp(22), { vlans: [AD(1), Q(2)] }), whole: noGrant },
      { name: '802.1Q IPv6 UDP 5000', frame: frame(S6, udpL4(5000), { vlans: [Q(3)] }), whole: noGrant },
      {
        name: 'IPv4 SYN 8000 from a source midway',
        frame: frame(P, tcp(8000)),
        whole: (d, f) => sshStep(d, P, 2, f),
      },
    ];
    // The L3 program gets each frame without its 14-byte Ethernet header (and tags): its cuts
    // start 14 bytes further, where BPF_PROG_TEST_RUN accepts the frame (shorter ones: the TUN
    // test, test/e2e/l3-devices.test.ts).
    const l2 = (f: Buffer): number => f.length - toL3(f).length;
    const shortest = (f: Buffer): number => (framing === 'l3' ? l2(f) + 14 : 14);
    await GateHarness.with({ yaml: YAML, framing }, async (h) => {
      await h.check(sshStep(`${P}: 7000: step 1`, P, 1, frame(P, tcp(7000))));
      for (const c of cases) {
        const rows: Row[] = [];
        for (let n = shortest(c.frame); n < c.frame.length; n++) rows.push(malformed(`${c.name} cut to ${n} of ${c.frame.length} bytes`, truncate(c.frame, n)));
        rows.push(c.whole(`${c.name}, whole (${c.frame.length} bytes)`, c.frame));
        await h.table(rows);
      }
      if (framing === 'l3') {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header for any XDP program.
        const before = h.stats();
        for (let n = 1; n < 14; n++) assert.throws(() => h.runFast(truncate(frame(S, tcp(22)), 14 + n)), /EINVAL/, `a ${n}-byte L3 frame`);
        assert.deepEqual(h.stats(), before);
        assert.deepEqual(h.progressOf(P), { ssh: 2 });
        return;
      }
      // Non-IP: the EtherType is all that is read.
      const arp = buildFrame({ etherType: ETH_P_ARP, payload: Buffer.alloc(28) });
      await h.table([
        passes('ARP cut to the Ethernet header (14 bytes): non-IP', truncate(arp, 14), 'pass_non_ip'),
        ...[14, 15, 16, 17].map((n) => malformed(`802.1Q ARP cut to ${n} bytes (inside the tag)`, truncate(buildFrame({ vlans: [Q(5)], etherType: ETH_P_ARP, payload: Buffer.alloc(28) }), n))),
        passes('802.1Q ARP cut after the tag (18 bytes): non-IP', truncate(buildFrame({ vlans: [Q(5)], etherType: ETH_P_ARP, payload: Buffer.alloc(28) }), 18), 'pass_non_ip'),
        ...[18, 19, 20, 21].map((n) => malformed(`QinQ ARP cut to ${n} bytes (inside the inner tag)`, truncate(buildFrame({ vlans: [AD(5), Q(6)], etherType: ETH_P_ARP, payload: Buffer.alloc(28) }), n))),
        passes('QinQ ARP cut after both tags (22 bytes): non-IP', truncate(buildFrame({ vlans: [AD(5), Q(6)], etherType: ETH_P_ARP, payload: Buffer.alloc(28) }), 22), 'pass_non_ip'),
      ]);
      // Shorter than an Ethernet header: BPF_PROG_TEST_RUN itself refuses such a frame
      // (bpf_test_init: size < ETH_HLEN -> EINVAL), so the program never sees one here; a
      // driver never hands XDP less than an Ethernet header either.
      const before = h.stats();
      for (let n = 1; n < 14; n++) {
        assert.throws(() => h.runFast(truncate(frame(S, tcp(22)), n)), /EINVAL/, `a ${n}-byte frame`);
      }
      assert.deepEqual(h.stats(), before);
      assert.deepEqual(h.progressOf(P), { ssh: 2 });
    });
  });
});

/** An Ethernet header (EtherType IPv4) before raw IP bytes: toL3 takes it off again. */
const ethOver = (ip: Buffer, etherType = ETH_P_IP): Buffer => buildFrame({ etherType, payload: ip });

kernelSuite('XDP (l3 framing): frames that start at the IP header', () => {
  it('the version nibble gives the family: the SYN of issue 11 is judged as IPv4, other versions are not IP', async () => {
    // The IPv4 SYN to port 22 that a TUN device let through (issue 11): 10.66.0.2 -> 10.66.0.1.
    const issue = Buffer.from('4500002800010000400666490a4200020a420001a4260016000004d20000000050022000d24d0000', 'hex');
    const S = '198.18.11.1';
    const S6 = '2001:db8:11::1';
    const withVersion = (f: Buffer, v: number): Buffer => {
      const l3 = toL3(f);
      l3[0] = (v << 4) | ((l3[0] ?? 0) & 0x0f);
      return ethOver(l3);
    };
    await GateHarness.with({ yaml: YAML, framing: 'l3' }, async (h) => {
      await h.table([
        noGrant('issue 11’s SYN to 22 (10.66.0.2): dropped', ethOver(issue)),
        noGrant('IPv4 SYN 22: dropped', frame(S, tcp(22))),
        noGrant('IPv6 SYN 22: dropped', frame(S6, tcp(22))),
        noGrant('IPv4 UDP 5000: dropped', frame(S, udpL4(5000))),
        noGrant('IPv6 UDP 5000: dropped', frame(S6, udpL4(5000))),
        passes('IPv4 SYN 80: unrelated', frame(S, tcp(80)), 'pass_unrelated'),
        passes('an IPv4 header with version 5: not IP (the stack drops it)', withVersion(frame(S, tcp(22)), 5), 'pass_non_ip'),
        passes('an IPv6 header with version 0: not IP', withVersion(frame(S6, tcp(22)), 0), 'pass_non_ip'),
        passes('version 15: not IP', withVersion(frame(S, tcp(22)), 15), 'pass_non_ip'),
        malformed('an IPv6 header under version 4 (read as an IPv4 header, IHL 0): malformed', withVersion(frame(S6, tcp(22)), 4)),
        malformed('34 bytes of an IPv4 SYN under version 6 (shorter than an IPv6 header): malformed', withVersion(truncate(frame(S, tcp(22)), 14 + 20 + 14), 6)),
        sshStep('IPv4 SYN 7000: step 1', S, 1, frame(S, tcp(7000))),
        sshStep('IPv4 SYN 8000: step 2', S, 2, frame(S, tcp(8000))),
        sshStep('IPv4 SYN 9000: GRANT', S, 3, frame(S, tcp(9000))),
        granted('IPv4 SYN 22 from the granted source: passes', S, (sport) => frame(S, tcp(22, { sport }))),
        noGrant('issue 11’s SYN from another source: still dropped', ethOver(issue)),
      ]);
    });
  });
});

framingSuites('XDP: IPv4-mapped IPv6 sources', (framing) => {
  it('::ffff:a.b.c.d is malformed: it never knocks, never uses a.b.c.d’s progress or grant; ::a.b.c.d is a source of its own', async () => {
    const A = '198.18.12.1';
    const MAPPED = '::ffff:198.18.12.1';
    const COMPAT = '::198.18.12.1';
    const v6To = (src: string, l4: L4Spec, dst = '2001:db8:ffff::1'): Buffer => buildFrame({ ipv6: { src, dst }, l4 });
    const yaml = config(`
  ssh:
    sequence: [7000/tcp, 8000/tcp, 9000/tcp]
    protects: [22/tcp, 5000/udp]
    step_timeout: 10m
    sequence_timeout: 10m
`);
    await GateHarness.with({ yaml, framing }, async (h) => {
      await h.table([
        malformed(`${MAPPED} SYN 7000 (a first knock): malformed, no progress`, v6To(MAPPED, tcp(7000))),
        sshStep(`${A} SYN 7000: step 1`, A, 1, frame(A, tcp(7000))),
        malformed(`${MAPPED} SYN 8000 (${A}’s next step): malformed, ${A} stays at step 1`, v6To(MAPPED, tcp(8000))),
        malformed(`${MAPPED} SYN 9000: malformed`, v6To(MAPPED, tcp(9000))),
        sshStep(`${A} SYN 8000: step 2 (its own progress, untouched)`, A, 2, frame(A, tcp(8000))),
        sshStep(`${A} SYN 9000: GRANT`, A, 3, frame(A, tcp(9000))),
        malformed(`${MAPPED} SYN 22 while ${A} holds a grant: malformed`, v6To(MAPPED, tcp(22))),
        malformed(`${MAPPED} UDP 5000 while ${A} holds a grant: malformed (Linux would deliver it)`, v6To(MAPPED, udpL4(5000))),
        malformed(`${MAPPED} to a mapped destination, UDP 5000: malformed`, v6To(MAPPED, udpL4(5000), '::ffff:198.19.0.1')),
        malformed(`${MAPPED} UDP 53 (unrelated): malformed all the same`, v6To(MAPPED, udpL4(53))),
        granted(`${A} SYN 22: passes (its grant)`, A, (sport) => frame(A, tcp(22, { sport }))),
        noGrant(`${COMPAT} (IPv4-compatible, a key of its own) SYN 22: no grant`, v6To(COMPAT, tcp(22))),
        sshStep(`${COMPAT} SYN 7000: step 1 of its own`, COMPAT, 1, v6To(COMPAT, tcp(7000))),
        noGrant('a native IPv6 source to a mapped destination, SYN 22: no grant (judged as usual)', v6To('2001:db8:12::1', tcp(22), '::ffff:198.19.0.1')),
      ]);
      assert.deepEqual(h.grantsOf(A), ['ssh']);
      assert.deepEqual(h.progressOf(COMPAT), { ssh: 1 });
    });
  });
});
