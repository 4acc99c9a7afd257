/**
 * The XDP program's policy through BPF_PROG_TEST_RUN (docs/DESIGN.md, "Packet path"):
 * unrelated traffic, protected ports, the knock state machine (steps, grants, expiry, resets,
 * retransmissions, timeouts), allow lists and doors that share ports. Each table row is one
 * packet: {description, frame, expected verdict, verdict counter, map change, events}; rows run
 * in order against one gate (see test/helpers/gate.ts for what a row checks). Every table runs
 * through both of the gate's programs (framingSuites): Ethernet frames, and the same frames
 * without their Ethernet header through the program for devices without one (TUN, WireGuard).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import {
  FlowBook,
  GateHarness,
  NO_EVENT,
  NO_MAP_UPDATE,
  XDP_DROP,
  XDP_PASS,
  config,
  doorsOf,
  ev,
  framingSuites,
  to,
  type Entry,
  type Row,
  deniedQuietly,
  untouched,
} from '../helpers/gate.js';
import { ETH_P_ARP, IPPROTO, TCP_FLAGS, addrKey, buildFrame, tcpFrom, tcpSegment, tcpSyn, udpDatagram, udpFrom } from '../helpers/packets.js';

const syn = (src: string, port: number): Buffer => tcpSyn(to(src), port);
const seg = (src: string, port: number, flags: number): Buffer => tcpSegment(to(src), port, flags);
const udp = (src: string, port: number): Buffer => udpDatagram(to(src), port, Buffer.from('knock'));
const raw = (src: string, protocol: number): Buffer =>
  buildFrame({
    ...(src.includes(':') ? { ipv6: to(src) } : { ipv4: to(src) }),
    l4: { proto: 'raw', protocol, payload: Buffer.from('0800f7ff00000000', 'hex') },
  });

/** A packet to a knock port that changes nothing (not a knock candidate, or not a step now). */
const knockPortNoop = (description: string, frame: Buffer): Row => ({
  description,
  frame,
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
});

/**
 * A new connection (a SYN from a fresh source port) or a new UDP flow that the source's grant
 * lets in: it opens a flow (see FlowBook).
 */
const granted = (b: FlowBook, description: string, src: string, port: number, proto: 'tcp' | 'udp' = 'tcp'): Row =>
  b.opens(description, src, port, (sport) => (proto === 'tcp' ? tcpFrom(to(src), sport, port) : udpFrom(to(src), sport, port)), proto);

const BASE = config(`
  ssh:
    sequence: [7000/tcp, 8000/tcp, 9000/tcp]
    protects: [22/tcp]
  mixed:
    sequence: [7100/tcp, 7100/udp, 7200/udp, 7300/tcp]
    protects: [2222/tcp, 5353/udp, 6000-6010/udp]
`);

const V4 = '198.18.1.10';
const V4B = '198.18.1.11';
const V6 = '2001:db8:1::10';
const V6B = '2001:db8:1::11';

framingSuites('XDP: traffic that is none of the gate’s business', (framing) => {
  it('passes unrelated TCP/UDP, other L4 and non-IP frames without a map update or an event', async () => {
    await GateHarness.with({ framing, yaml: BASE, denyTokens: 100 }, async (h) => {
      await h.table([
        untouched('IPv4 SYN to an unrelated port (80/tcp)', syn(V4, 80), 'pass_unrelated'),
        untouched('IPv6 SYN to an unrelated port (80/tcp)', syn(V6, 80), 'pass_unrelated'),
        untouched('IPv4 ACK to an unrelated port (443/tcp)', seg(V4, 443, TCP_FLAGS.ACK), 'pass_unrelated'),
        untouched('IPv6 PSH|ACK to an unrelated port (443/tcp)', seg(V6, 443, TCP_FLAGS.PSH | TCP_FLAGS.ACK), 'pass_unrelated'),
        untouched('IPv4 FIN to an unrelated port', seg(V4, 8080, TCP_FLAGS.FIN | TCP_FLAGS.ACK), 'pass_unrelated'),
        untouched('IPv4 UDP to an unrelated port (53/udp)', udp(V4, 53), 'pass_unrelated'),
        untouched('IPv6 UDP to an unrelated port (53/udp)', udp(V6, 53), 'pass_unrelated'),
        untouched('IPv4 UDP to a port that is a knock port for TCP only (7000/udp)', udp(V4, 7000), 'pass_unrelated'),
        untouched('IPv6 SYN to a port protected for UDP only (5353/tcp)', syn(V6, 5353), 'pass_unrelated'),
        untouched('IPv4 SYN to 6005/tcp (the range 6000-6010 is protected for UDP only)', syn(V4, 6005), 'pass_unrelated'),
        untouched('IPv4 UDP to the port right after a protected range (6011/udp)', udp(V4, 6011), 'pass_unrelated'),
        untouched('IPv4 SYN to port 0', syn(V4, 0), 'pass_unrelated'),
        untouched('IPv6 UDP to port 65535', udp(V6, 65535), 'pass_unrelated'),
        untouched('IPv4 ICMP echo request', raw(V4, IPPROTO.ICMP), 'pass_other_l4'),
        untouched('IPv4 GRE (47)', raw(V4, 47), 'pass_other_l4'),
        untouched('IPv6 ICMPv6 echo request', raw(V6, IPPROTO.ICMPV6), 'pass_other_l4'),
        untouched('IPv6 ESP (50): its payload is opaque', raw(V6, IPPROTO.ESP), 'pass_other_l4'),
        untouched('IPv6 No Next Header (59)', raw(V6, IPPROTO.NONE), 'pass_other_l4'),
        untouched('ARP request', buildFrame({ etherType: ETH_P_ARP, payload: Buffer.alloc(28, 1), padTo: 60 }), 'pass_non_ip'),
        untouched('LLDP (0x88cc)', buildFrame({ dstMac: '01:80:c2:00:00:0e', etherType: 0x88cc, payload: Buffer.alloc(46) }), 'pass_non_ip'),
        untouched('ARP in an 802.1Q tag', buildFrame({ vlans: [{ vid: 10 }], etherType: ETH_P_ARP, payload: Buffer.alloc(28) }), 'pass_non_ip'),
        knockPortNoop('IPv4 ACK to a knock port (7000/tcp): dropped, not a knock', seg(V4, 7000, TCP_FLAGS.ACK)),
        knockPortNoop('IPv6 SYN|ACK to a knock port (7000/tcp): dropped, not a knock', seg(V6, 7000, TCP_FLAGS.SYN | TCP_FLAGS.ACK)),
        knockPortNoop('IPv4 RST to a knock port (7000/tcp)', seg(V4, 7000, TCP_FLAGS.RST)),
        knockPortNoop('IPv4 SYN to a later step with no progress (8000/tcp): dropped, nothing starts', syn(V4, 8000)),
        knockPortNoop('IPv6 UDP to a UDP knock port that is not a first step (7100/udp)', udp(V6, 7100)),
      ]);
      assert.deepEqual(h.gate.grants(), []);
      assert.deepEqual(h.gate.progress(), []);
    });
  });
});

framingSuites('XDP: a protected port from a source without a grant', (framing) => {
  it('drops; a DENY event (ts 0) while deny tokens last, then only deny_suppressed', async () => {
    await GateHarness.with({ framing, yaml: BASE, denyTokens: 3 }, async (h) => {
      await h.table([
        {
          description: 'IPv4 SYN to 22/tcp, 3 tokens',
          frame: syn(V4, 22),
          verdict: XDP_DROP,
          counter: 'drop_no_grant',
          map: NO_MAP_UPDATE,
          events: [ev.deny('ssh', 'no_grant', 22)],
          counters: { deny_event: 1 },
        },
        {
          description: 'IPv6 ACK to 22/tcp (TCP without SYN: no flow), 2 tokens',
          frame: seg(V6, 22, TCP_FLAGS.ACK),
          verdict: XDP_DROP,
          counter: 'drop_no_flow',
          map: NO_MAP_UPDATE,
          events: [ev.deny('ssh', 'no_flow', 22)],
          counters: { deny_event: 1 },
        },
        {
          description: 'IPv4 UDP to 6005/udp (inside a protected range), last token',
          frame: udp(V4, 6005),
          verdict: XDP_DROP,
          counter: 'drop_no_grant',
          map: NO_MAP_UPDATE,
          events: [ev.deny('mixed', 'no_grant', 6005, 'udp')],
          counters: { deny_event: 1 },
        },
        deniedQuietly('IPv4 SYN to 22/tcp, no token left: no event', syn(V4, 22)),
        deniedQuietly('IPv6 UDP to 5353/udp, no token left: no event', udp(V6, 5353)),
        deniedQuietly('IPv6 SYN to 2222/tcp, no token left', syn(V6, 2222)),
        { action: 'refill: 1 token', run: (g) => g.gate.setDenyTokens(1) },
        {
          description: 'IPv6 SYN to 2222/tcp after a refill',
          frame: syn(V6, 2222),
          verdict: XDP_DROP,
          counter: 'drop_no_grant',
          map: NO_MAP_UPDATE,
          events: [ev.deny('mixed', 'no_grant', 2222)],
          counters: { deny_event: 1 },
        },
        deniedQuietly('IPv4 SYN to 22/tcp, tokens spent again', syn(V4, 22)),
        { action: 'tokens set to 0', run: (g) => g.gate.setDenyTokens(0) },
        deniedQuietly('IPv6 UDP to 6000/udp (first port of the range)', udp(V6, 6000)),
        deniedQuietly('IPv4 UDP to 6010/udp (last port of the range)', udp(V4, 6010)),
      ]);
    });
  });
});

/** The ssh knock from `src`, then what the grant opens (for src only, and only ssh's ports). */
function fullKnock(src: string, other: string, b = new FlowBook()): Entry[] {
  return [
    {
      description: `${src}: 7000/tcp, step 1 of ssh, the knock itself dropped`,
      frame: syn(src, 7000),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [src]: { ssh: 1 } } },
      events: [ev.knock('ssh', 1, 3, 7000)],
      counters: { knock_step: 1 },
    },
    deniedQuietly(`${src}: 22/tcp between knocks still drops`, syn(src, 22)),
    {
      description: `${src}: 8000/tcp, step 2`,
      frame: syn(src, 8000),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [src]: { ssh: 2 } } },
      events: [ev.knock('ssh', 2, 3, 8000)],
      counters: { knock_step: 1 },
    },
    {
      description: `${src}: 9000/tcp, last step: GRANT (expires = ts + open_for), progress entry deleted`,
      frame: syn(src, 9000),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [src]: {} }, grants: { [src]: ['ssh'] } },
      events: [ev.grant('ssh', 9000)],
      counters: { grant: 1 },
    },
    granted(b, `${src}: SYN to 22/tcp passes, and opens a flow`, src, 22),
    b.on(`${src}: ACK on that connection passes (its flow)`, src, 22, (sport) => tcpFrom(to(src), sport, 22, TCP_FLAGS.ACK)),
    {
      description: `${src}: ACK to 22/tcp from a port with no flow: dropped (a grant opens connections, it does not let segments in)`,
      frame: tcpFrom(to(src), 1234, 22, TCP_FLAGS.ACK),
      verdict: XDP_DROP,
      counter: 'drop_no_flow',
      map: NO_MAP_UPDATE,
      events: NO_EVENT,
      counters: { deny_suppressed: 1 },
    },
    deniedQuietly(`${other}: SYN to 22/tcp from another source still drops`, syn(other, 22)),
    knockPortNoop(`${src}: 9000/tcp again after the grant: dropped, nothing changes`, syn(src, 9000)),
    deniedQuietly(`${src}: 2222/tcp belongs to door mixed: drop_expired (a grant entry, none for mixed)`, syn(src, 2222), 'drop_expired'),
    deniedQuietly(`${src}: 5353/udp belongs to door mixed`, udp(src, 5353), 'drop_expired'),
    untouched(`${src}: unrelated ports still pass`, syn(src, 80), 'pass_unrelated'),
  ];
}

framingSuites('XDP: the full knock', (framing) => {
  it('IPv4: steps advance, knocks are dropped, GRANT, then 22/tcp passes for that source only', async () => {
    await GateHarness.with({ framing, yaml: BASE }, async (h) => {
      await h.table(fullKnock(V4, V4B));
      assert.deepEqual(h.gate.grants().map((g) => g.door), ['ssh']);
    });
  });

  it('IPv6: the same', async () => {
    await GateHarness.with({ framing, yaml: BASE }, async (h) => {
      await h.table(fullKnock(V6, V6B));
    });
  });

  it('an IPv4 source and an IPv6 source knock interleaved without disturbing each other', async () => {
    await GateHarness.with({ framing, yaml: BASE }, async (h) => {
      const a = fullKnock(V4, V4B);
      const b = fullKnock(V6, V6B);
      // 7000 (v4), 7000 (v6), 22 (v4), 22 (v6), 8000 (v4), ...
      const mixed: Entry[] = [];
      for (let i = 0; i < Math.max(a.length, b.length); i++) {
        const x = a[i];
        const y = b[i];
        if (x) mixed.push(x);
        if (y) mixed.push(y);
      }
      await h.table(mixed);
    });
  });

  it('mixed TCP/UDP steps: the protocol is part of the step', async () => {
    const b = new FlowBook();
    const S = '198.18.1.20';
    await GateHarness.with({ framing, yaml: BASE }, async (h) => {
      await h.table([
        knockPortNoop('7100/udp first (step 1 is 7100/tcp): dropped, nothing starts', udp(S, 7100)),
        {
          description: '7100/tcp: step 1',
          frame: syn(S, 7100),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { mixed: 1 } } },
          events: [ev.knock('mixed', 1, 4, 7100)],
          counters: { knock_step: 1 },
        },
        {
          description: '7100/udp: step 2 (same port number, other protocol)',
          frame: udp(S, 7100),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { mixed: 2 } } },
          events: [ev.knock('mixed', 2, 4, 7100, 'udp')],
          counters: { knock_step: 1 },
        },
        {
          description: '7200/udp: step 3',
          frame: udp(S, 7200),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { mixed: 3 } } },
          events: [ev.knock('mixed', 3, 4, 7200, 'udp')],
          counters: { knock_step: 1 },
        },
        {
          description: '7300/udp (step 4 is 7300/tcp): an unrelated port, resets (wrong_port)',
          frame: udp(S, 7300),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [S]: {} } },
          events: [ev.reset('mixed', 3, 'wrong_port', 7300, 'udp')],
          counters: { reset_wrong_port: 1 },
        },
        deniedQuietly('2222/tcp still closed', syn(S, 2222)),
        {
          description: 'again 7100/tcp: step 1',
          frame: syn(S, 7100),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { mixed: 1 } } },
          events: [ev.knock('mixed', 1, 4, 7100)],
          counters: { knock_step: 1 },
        },
        {
          description: '7100/udp: step 2',
          frame: udp(S, 7100),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { mixed: 2 } } },
          events: [ev.knock('mixed', 2, 4, 7100, 'udp')],
          counters: { knock_step: 1 },
        },
        {
          description: '7200/udp: step 3',
          frame: udp(S, 7200),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { mixed: 3 } } },
          events: [ev.knock('mixed', 3, 4, 7200, 'udp')],
          counters: { knock_step: 1 },
        },
        {
          description: '7300/tcp: step 4, GRANT',
          frame: syn(S, 7300),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: {} }, grants: { [S]: ['mixed'] } },
          events: [ev.grant('mixed', 7300)],
          counters: { grant: 1 },
        },
        granted(b, '2222/tcp passes', S, 2222),
        granted(b, '5353/udp passes', S, 5353, 'udp'),
        granted(b, '6003/udp passes', S, 6003, 'udp'),
        deniedQuietly('22/tcp is door ssh’s: drop_expired', syn(S, 22), 'drop_expired'),
      ]);
    });
  });

  it('a 16-step sequence (the maximum), alternating TCP and UDP', async () => {
    const b = new FlowBook();
    const steps = Array.from({ length: 16 }, (_, i) => ({ port: 10001 + i * 37, proto: i % 2 === 0 ? ('tcp' as const) : ('udp' as const) }));
    const yaml = config(`
  long:
    sequence: [${steps.map((s) => `${s.port}/${s.proto}`).join(', ')}]
    protects: [2022/tcp]
    open_for: 2m
`);
    for (const S of ['198.18.1.30', '2001:db8:1::30']) {
      await GateHarness.with({ framing, yaml }, async (h) => {
        const rows: Entry[] = steps.map((s, i): Row => {
          const frame = s.proto === 'tcp' ? syn(S, s.port) : udp(S, s.port);
          const last = i === steps.length - 1;
          return {
            description: `${S}: ${s.port}/${s.proto}, step ${i + 1} of 16`,
            frame,
            verdict: XDP_DROP,
            counter: 'drop_knock',
            map: last ? { progress: { [S]: {} }, grants: { [S]: ['long'] } } : { progress: { [S]: { long: i + 1 } } },
            events: [last ? ev.grant('long', s.port, s.proto) : ev.knock('long', i + 1, 16, s.port, s.proto)],
            counters: last ? { grant: 1 } : { knock_step: 1 },
          };
        });
        rows.splice(8, 0, deniedQuietly(`${S}: 2022/tcp halfway: still closed`, syn(S, 2022)));
        await h.table([...rows, granted(b, `${S}: 2022/tcp passes`, S, 2022)]);
      });
    }
  });
});

framingSuites('XDP: grant expiry', (framing) => {
  it('open_for 300ms: passes, then after 700ms drops with drop_expired and a DENY (expired)', async () => {
    const b = new FlowBook();
    const yaml = config(`
  brief:
    sequence: [7400/udp, 7500/tcp]
    protects: [3000-3010/tcp]
    open_for: 300ms
    flow_idle: 300ms
`);
    for (const S of ['198.18.1.40', '2001:db8:1::40']) {
      await GateHarness.with({ framing, yaml, denyTokens: 1 }, async (h) => {
        await h.table([
          {
            description: `${S}: 7400/udp step 1`,
            frame: udp(S, 7400),
            verdict: XDP_DROP,
            counter: 'drop_knock',
            map: { progress: { [S]: { brief: 1 } } },
            events: [ev.knock('brief', 1, 2, 7400, 'udp')],
            counters: { knock_step: 1 },
          },
          {
            description: `${S}: 7500/tcp: GRANT for 300ms`,
            frame: syn(S, 7500),
            verdict: XDP_DROP,
            counter: 'drop_knock',
            map: { progress: { [S]: {} }, grants: { [S]: ['brief'] } },
            events: [ev.grant('brief', 7500)],
            counters: { grant: 1 },
          },
          granted(b, `${S}: 3005/tcp passes`, S, 3005),
          { pause: 700, why: 'past open_for (300ms) and the flow’s flow_idle (300ms) with a 2x margin' },
          {
            description: `${S}: a new connection to 3005/tcp after expiry: drop_expired, DENY reason expired`,
            frame: syn(S, 3005),
            verdict: XDP_DROP,
            counter: 'drop_expired',
            map: NO_MAP_UPDATE,
            events: [ev.deny('brief', 'expired', 3005)],
            counters: { deny_event: 1 },
          },
          {
            description: `${S}: ACK to 3010/tcp after expiry, no token left: no flow`,
            frame: seg(S, 3010, TCP_FLAGS.ACK),
            verdict: XDP_DROP,
            counter: 'drop_no_flow',
            map: NO_MAP_UPDATE,
            events: NO_EVENT,
            counters: { deny_suppressed: 1 },
          },
          {
            action: 'the expired grant is not listed; its flow is idle past flow_idle, so a sweep removes the grant entry',
            run: (g) => {
              assert.deepEqual(g.gate.grants(), []);
              assert.equal(g.gate.sweepExpiredGrants(), 1);
            },
          },
          deniedQuietly(`${S}: a new connection to 3005/tcp after the sweep: drop_no_grant`, syn(S, 3005)),
        ]);
      });
    }
  });
});

framingSuites('XDP: resets and retransmissions', (framing) => {
  it('wrong ports reset (and may restart), the last accepted knock repeated is ignored', async () => {
    const b = new FlowBook();
    const S = '198.18.1.50';
    const step = (port: number, n: number, proto: 'tcp' | 'udp' = 'tcp'): Row => ({
      description: `${port}/${proto}: step ${n}`,
      frame: proto === 'tcp' ? syn(S, port) : udp(S, port),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [S]: { ssh: n } } },
      events: [ev.knock('ssh', n, 3, port, proto)],
      counters: { knock_step: 1 },
    });
    const retransmit = (port: number): Row => ({
      description: `${port}/tcp again: a retransmission, ignored (progress unchanged, no event)`,
      frame: syn(S, port),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: NO_MAP_UPDATE,
      events: NO_EVENT,
      counters: { retransmit: 1 },
    });
    await GateHarness.with({ framing, yaml: BASE }, async (h) => {
      await h.table([
        step(7000, 1),
        retransmit(7000),
        retransmit(7000),
        step(8000, 2),
        retransmit(8000),
        {
          description: '7000/tcp at step 2 (an older step, not the last): reset wrong_port, and it restarts the door (step 1)',
          frame: syn(S, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { ssh: 1 } } },
          events: [ev.reset('ssh', 2, 'wrong_port', 7000), ev.knock('ssh', 1, 3, 7000)],
          counters: { reset_wrong_port: 1, knock_step: 1 },
        },
        {
          description: '9000/tcp at step 1 (skipping 8000): reset wrong_port, entry deleted',
          frame: syn(S, 9000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: {} } },
          events: [ev.reset('ssh', 1, 'wrong_port', 9000)],
          counters: { reset_wrong_port: 1 },
        },
        step(7000, 1),
        {
          description: 'SYN to an unrelated port (80/tcp) midway: passes, resets wrong_port',
          frame: syn(S, 80),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [S]: {} } },
          events: [ev.reset('ssh', 1, 'wrong_port', 80)],
          counters: { reset_wrong_port: 1 },
        },
        step(7000, 1),
        step(8000, 2),
        untouched('ACK to an unrelated port midway: not a knock candidate, no reset', seg(S, 80, TCP_FLAGS.ACK), 'pass_unrelated'),
        untouched('ICMP midway: no reset', raw(S, IPPROTO.ICMP), 'pass_other_l4'),
        knockPortNoop('ACK to the next step (9000/tcp): not a knock, progress unchanged', seg(S, 9000, TCP_FLAGS.ACK)),
        deniedQuietly('SYN to the protected port midway: dropped, progress unchanged (protected ports are judged first)', syn(S, 22)),
        {
          description: 'UDP to an unrelated port (53/udp) midway: a knock candidate, resets',
          frame: udp(S, 53),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [S]: {} } },
          events: [ev.reset('ssh', 2, 'wrong_port', 53, 'udp')],
          counters: { reset_wrong_port: 1 },
        },
        knockPortNoop('8000/tcp after the reset: not a first step, nothing starts', syn(S, 8000)),
        step(7000, 1),
        {
          description: '7100/tcp (door mixed’s first step) midway through ssh: ssh resets, mixed starts',
          frame: syn(S, 7100),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { mixed: 1 } } },
          events: [ev.reset('ssh', 1, 'wrong_port', 7100), ev.knock('mixed', 1, 4, 7100)],
          counters: { reset_wrong_port: 1, knock_step: 1 },
        },
        {
          description: '7000/tcp: mixed resets, ssh starts again',
          frame: syn(S, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { ssh: 1 } } },
          events: [ev.reset('mixed', 1, 'wrong_port', 7000), ev.knock('ssh', 1, 3, 7000)],
          counters: { reset_wrong_port: 1, knock_step: 1 },
        },
        step(8000, 2),
        {
          description: '9000/tcp: GRANT after all that',
          frame: syn(S, 9000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: {} }, grants: { [S]: ['ssh'] } },
          events: [ev.grant('ssh', 9000)],
          counters: { grant: 1 },
        },
        granted(b, '22/tcp passes', S, 22),
      ]);
    });
  });

  it('step timeout (150ms) and sequence timeout (400ms) reset with their reasons', async () => {
    const S = '198.18.1.60';
    const S6 = '2001:db8:1::60';
    const yaml = config(`
  st:
    sequence: [7600/tcp, 7700/tcp, 7800/tcp]
    protects: [2600/tcp]
    step_timeout: 150ms
    sequence_timeout: 400ms
  sq:
    sequence: [7650/udp, 7750/udp, 7850/udp]
    protects: [2650/tcp]
    step_timeout: 400ms
    sequence_timeout: 400ms
`);
    // The config requires step_timeout <= sequence_timeout, and the kernel checks the step
    // timeout first; so with a valid config a sequence timeout can only be hit between T and
    // T + step_timeout after the first knock, never with a 2x margin on both sides. To exercise
    // the kernel's sequence-timeout check without timing luck, door sq gets a step timeout of
    // 10s loaded directly (the validator is not what is under test here).
    const doors = doorsOf(yaml).map((d) => (d.name === 'sq' ? { ...d, stepTimeoutMs: 10_000 } : d));
    await GateHarness.with({ framing, doors }, async (h) => {
      const first = (src: string, door: string, port: number, proto: 'tcp' | 'udp'): Row => ({
        description: `${src}: ${port}/${proto}: ${door} step 1`,
        frame: proto === 'tcp' ? syn(src, port) : udp(src, port),
        verdict: XDP_DROP,
        counter: 'drop_knock',
        map: { progress: { [src]: { [door]: 1 } } },
        events: [ev.knock(door, 1, 3, port, proto)],
        counters: { knock_step: 1 },
      });
      await h.table([
        first(S, 'st', 7600, 'tcp'),
        first(S6, 'st', 7600, 'tcp'),
        { pause: 400, why: 'more than 2x the step timeout (150ms)' },
        {
          description: `${S}: 7700/tcp after 400ms: reset step_timeout (steps done 1), nothing restarts`,
          frame: syn(S, 7700),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: {} } },
          events: [ev.reset('st', 1, 'step_timeout', 7700)],
          counters: { reset_step_timeout: 1 },
        },
        {
          description: `${S6}: 7600/tcp (the first step) after 400ms: reset step_timeout, then step 1 again`,
          frame: syn(S6, 7600),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S6]: { st: 1 } } },
          events: [ev.reset('st', 1, 'step_timeout', 7600), ev.knock('st', 1, 3, 7600)],
          counters: { reset_step_timeout: 1, knock_step: 1 },
        },
        first(S, 'sq', 7650, 'udp'),
        {
          description: `${S}: 7750/udp at once: sq step 2`,
          frame: udp(S, 7750),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { sq: 2 } } },
          events: [ev.knock('sq', 2, 3, 7750, 'udp')],
          counters: { knock_step: 1 },
        },
        { pause: 900, why: 'more than 2x the sequence timeout (400ms), far below sq’s step timeout (10s)' },
        {
          description: `${S}: 7850/udp (the last step) after 900ms: reset sequence_timeout (steps done 2), no grant`,
          frame: udp(S, 7850),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: {} } },
          events: [ev.reset('sq', 2, 'sequence_timeout', 7850, 'udp')],
          counters: { reset_seq_timeout: 1 },
        },
        deniedQuietly(`${S}: 2650/tcp stays closed`, syn(S, 2650)),
        {
          action: `${S6}: progress on st is reported stale (step timeout passed)`,
          run: async (g) => {
            await new Promise((r) => setTimeout(r, 400));
            const p = g.gate.progress().filter((x) => x.door === 'st');
            assert.equal(p.length, 1);
            assert.equal(p[0]?.stale, true);
          },
        },
        {
          description: `${S6}: an unrelated SYN after the hint window: passes, no lookup-driven reset, stale entry left alone`,
          frame: syn(S6, 80),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
        },
      ]);
    });
  });
});

framingSuites('XDP: allow_from', (framing) => {
  it('a source outside allow_from cannot start the door (not_allowed); IPv4 and IPv6 sources inside can', async () => {
    const b = new FlowBook();
    const yaml = config(`
  guarded:
    sequence: [7900/tcp, 7950/udp]
    protects: [8443/tcp]
    allow_from: [198.18.2.0/24, 2001:db8:2::/48]
`);
    const IN4 = '198.18.2.7';
    const IN6 = '2001:db8:2:ffff::7';
    const OUT4 = '198.18.3.7';
    const OUT6 = '2001:db8:3::7';
    const notAllowed = (src: string): Row => ({
      description: `${src} (outside allow_from): 7900/tcp dropped, not_allowed, no progress, no event`,
      frame: syn(src, 7900),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: NO_MAP_UPDATE,
      events: NO_EVENT,
      counters: { not_allowed: 1 },
    });
    const knockIn = (src: string): Entry[] => [
      {
        description: `${src} (inside allow_from): 7900/tcp step 1`,
        frame: syn(src, 7900),
        verdict: XDP_DROP,
        counter: 'drop_knock',
        map: { progress: { [src]: { guarded: 1 } } },
        events: [ev.knock('guarded', 1, 2, 7900)],
        counters: { knock_step: 1 },
      },
      {
        description: `${src}: 7950/udp GRANT`,
        frame: udp(src, 7950),
        verdict: XDP_DROP,
        counter: 'drop_knock',
        map: { progress: { [src]: {} }, grants: { [src]: ['guarded'] } },
        events: [ev.grant('guarded', 7950, 'udp')],
        counters: { grant: 1 },
      },
      granted(b, `${src}: 8443/tcp passes`, src, 8443),
    ];
    await GateHarness.with({ framing, yaml }, async (h) => {
      await h.table([
        notAllowed(OUT4),
        notAllowed(OUT6),
        notAllowed('198.18.1.255'),
        notAllowed('198.18.3.0'),
        notAllowed('2001:db8:1:ffff::7'),
        knockPortNoop(`${OUT4}: 7950/udp (a later step): dropped, nothing`, udp(OUT4, 7950)),
        deniedQuietly(`${OUT4}: 8443/tcp closed`, syn(OUT4, 8443)),
        ...knockIn(IN4),
        ...knockIn(IN6),
        ...knockIn('198.18.2.0'),
        ...knockIn('198.18.2.255'),
        deniedQuietly(`${OUT6}: 8443/tcp still closed`, syn(OUT6, 8443)),
      ]);
    });
  });
});

framingSuites('XDP: doors that share ports', (framing) => {
  it('two doors protecting one port, sharing a first step: either grant opens it; one door’s right knock is the other’s wrong one', async () => {
    const b = new FlowBook();
    const yaml = config(`
  alpha:
    sequence: [7001/tcp, 7005/tcp]
    protects: [22/tcp]
  beta:
    sequence: [7001/tcp, 7003/udp, 7004/tcp]
    protects: [22/tcp, 2200/tcp]
`);
    const A = '198.18.4.1';
    const B = '2001:db8:4::1';
    const C = '198.18.4.3';
    const both = (src: string): Row => ({
      description: `${src}: 7001/tcp: step 1 of both doors`,
      frame: syn(src, 7001),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [src]: { alpha: 1, beta: 1 } } },
      events: [ev.knock('alpha', 1, 2, 7001), ev.knock('beta', 1, 3, 7001)],
      counters: { knock_step: 2 },
    });
    await GateHarness.with({ framing, yaml, denyTokens: 1 }, async (h) => {
      await h.table([
        {
          description: `${C}: 22/tcp: DENY names both doors`,
          frame: syn(C, 22),
          verdict: XDP_DROP,
          counter: 'drop_no_grant',
          map: NO_MAP_UPDATE,
          events: [ev.deny('alpha,beta', 'no_grant', 22)],
          counters: { deny_event: 1 },
        },
        both(A),
        {
          description: `${A}: 7005/tcp: alpha GRANT, and for beta a wrong port (reset)`,
          frame: syn(A, 7005),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A]: {} }, grants: { [A]: ['alpha'] } },
          events: [ev.grant('alpha', 7005), ev.reset('beta', 1, 'wrong_port', 7005)],
          counters: { grant: 1, reset_wrong_port: 1 },
        },
        granted(b, `${A}: 22/tcp passes (alpha)`, A, 22),
        deniedQuietly(`${A}: 2200/tcp is beta’s only: drop_expired`, syn(A, 2200), 'drop_expired'),
        both(B),
        {
          description: `${B}: 7003/udp: beta step 2, for alpha a wrong port (7003/udp is no port of alpha's: reset)`,
          frame: udp(B, 7003),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [B]: { beta: 2 } } },
          events: [ev.knock('beta', 2, 3, 7003, 'udp'), ev.reset('alpha', 1, 'wrong_port', 7003, 'udp')],
          counters: { knock_step: 1, reset_wrong_port: 1 },
        },
        {
          description: `${B}: 7003/udp again: a retransmission for beta, ignored`,
          frame: udp(B, 7003),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
          counters: { retransmit: 1 },
        },
        {
          description: `${B}: 7004/tcp: beta GRANT`,
          frame: syn(B, 7004),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [B]: {} }, grants: { [B]: ['beta'] } },
          events: [ev.grant('beta', 7004)],
          counters: { grant: 1 },
        },
        granted(b, `${B}: 22/tcp passes (beta)`, B, 22),
        granted(b, `${B}: 2200/tcp passes (beta)`, B, 2200),
        both(A),
        {
          description: `${A}: 7003/udp: beta step 2 (alpha resets); A keeps its alpha grant`,
          frame: udp(A, 7003),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A]: { beta: 2 } } },
          events: [ev.knock('beta', 2, 3, 7003, 'udp'), ev.reset('alpha', 1, 'wrong_port', 7003, 'udp')],
          counters: { knock_step: 1, reset_wrong_port: 1 },
        },
        {
          description: `${A}: 7004/tcp: beta GRANT, added to the alpha grant in the same entry`,
          frame: syn(A, 7004),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A]: {} }, grants: { [A]: ['alpha', 'beta'] } },
          events: [ev.grant('beta', 7004)],
          counters: { grant: 1 },
        },
        granted(b, `${A}: 2200/tcp passes now`, A, 2200),
        deniedQuietly(`${C}: 22/tcp still closed for anyone else`, syn(C, 22)),
      ]);
      assert.equal(h.stats().retransmit, 1n);
    });
  });
});

framingSuites('XDP: edge cases of the state machine', (framing) => {
  it('a one-step door grants at once (no progress entry); a repeated non-adjacent step advances, the same step twice in a row is a retransmission', async () => {
    const b = new FlowBook();
    const yaml = config(`
  one:
    sequence: [7777/udp]
    protects: [2777/tcp]
  rep:
    sequence: [7000/tcp, 8000/udp, 7000/tcp, 9000/tcp]
    protects: [22/tcp]
`);
    const S = '198.18.12.1';
    const S6 = '2001:db8:12::1';
    await GateHarness.with({ framing, yaml }, async (h) => {
      await h.table([
        {
          description: `${S}: 7777/udp: a one-step door grants at once, no progress entry`,
          frame: udp(S, 7777),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: {} }, grants: { [S]: ['one'] } },
          events: [ev.grant('one', 7777, 'udp')],
          counters: { grant: 1 },
        },
        granted(b, `${S}: 2777/tcp passes`, S, 2777),
        {
          description: `${S6}: 7000/tcp: rep step 1`,
          frame: syn(S6, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S6]: { rep: 1 } } },
          events: [ev.knock('rep', 1, 4, 7000)],
          counters: { knock_step: 1 },
        },
        {
          description: `${S6}: 7000/tcp again: retransmission`,
          frame: syn(S6, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
          counters: { retransmit: 1 },
        },
        {
          description: `${S6}: 8000/udp: step 2`,
          frame: udp(S6, 8000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S6]: { rep: 2 } } },
          events: [ev.knock('rep', 2, 4, 8000, 'udp')],
          counters: { knock_step: 1 },
        },
        {
          description: `${S6}: 7777/udp midway: one grants, rep resets (a wrong port for rep)`,
          frame: udp(S6, 7777),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S6]: {} }, grants: { [S6]: ['one'] } },
          events: [ev.reset('rep', 2, 'wrong_port', 7777, 'udp'), ev.grant('one', 7777, 'udp')],
          counters: { reset_wrong_port: 1, grant: 1 },
        },
        {
          description: `${S6}: 7000/tcp: rep step 1 again`,
          frame: syn(S6, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S6]: { rep: 1 } } },
          events: [ev.knock('rep', 1, 4, 7000)],
          counters: { knock_step: 1 },
        },
        {
          description: `${S6}: 8000/udp: step 2`,
          frame: udp(S6, 8000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S6]: { rep: 2 } } },
          events: [ev.knock('rep', 2, 4, 8000, 'udp')],
          counters: { knock_step: 1 },
        },
        {
          description: `${S6}: 7000/tcp: step 3 (the first step's port again, two steps later)`,
          frame: syn(S6, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S6]: { rep: 3 } } },
          events: [ev.knock('rep', 3, 4, 7000)],
          counters: { knock_step: 1 },
        },
        {
          description: `${S6}: 7000/tcp again: a retransmission of step 3, not a restart`,
          frame: syn(S6, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
          counters: { retransmit: 1 },
        },
        {
          description: `${S6}: 9000/tcp: GRANT`,
          frame: syn(S6, 9000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S6]: {} }, grants: { [S6]: ['one', 'rep'] } },
          events: [ev.grant('rep', 9000)],
          counters: { grant: 1 },
        },
        granted(b, `${S6}: 22/tcp passes`, S6, 22),
        granted(b, `${S6}: 2777/tcp passes`, S6, 2777),
      ]);
    });
  });

  it('grants set and revoked by hand (Gate.grant / Gate.revoke) are honoured; knocking again renews a grant', async () => {
    const b = new FlowBook();
    const S = '198.18.12.11';
    const S6 = '2001:db8:12::11';
    let expiry = 0n;
    const sshKnock = (src: string): Row[] =>
      [7000, 8000, 9000].map((port, i) => ({
        description: `${src}: ${port}/tcp: ssh ${i < 2 ? `step ${i + 1}` : 'GRANT'}`,
        frame: syn(src, port),
        verdict: XDP_DROP,
        counter: 'drop_knock',
        map: i < 2 ? { progress: { [src]: { ssh: i + 1 } } } : { progress: { [src]: {} }, grants: { [src]: ['ssh'] } },
        events: [i < 2 ? ev.knock('ssh', i + 1, 3, port) : ev.grant('ssh', port)],
        counters: i < 2 ? { knock_step: 1 } : { grant: 1 },
      }));
    await GateHarness.with({ framing, yaml: BASE }, async (h) => {
      await h.table([
        deniedQuietly(`${S}: 22/tcp before`, syn(S, 22)),
        { action: `grant ${S} on ssh for 60s by hand`, run: (g) => void g.gate.grant(addrKey(S), g.slotOf('ssh'), 60_000_000_000n) },
        granted(b, `${S}: 22/tcp passes`, S, 22),
        deniedQuietly(`${S}: 2222/tcp (mixed) does not`, syn(S, 2222), 'drop_expired'),
        { action: `grant ${S6} on mixed by hand`, run: (g) => void g.gate.grant(addrKey(S6), g.slotOf('mixed'), 60_000_000_000n) },
        granted(b, `${S6}: 2222/tcp passes`, S6, 2222),
        granted(b, `${S6}: 6010/udp passes`, S6, 6010, 'udp'),
        b.gone(S, {
          action: `revoke ${S}: its grant and the flow it opened are cut`,
          run: (g) => {
            assert.deepEqual(g.gate.revoke(addrKey(S)), { slots: [g.slotOf('ssh')], flows: 1 });
            assert.deepEqual(g.flowsOf(S), []);
          },
        }),
        deniedQuietly(`${S}: 22/tcp after the revoke`, syn(S, 22)),
        {
          description: `${S}: ACK on the revoked connection: no flow`,
          frame: tcpFrom(to(S), b.sportOf(S, 22), 22, TCP_FLAGS.ACK),
          verdict: XDP_DROP,
          counter: 'drop_no_flow',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
          counters: { deny_suppressed: 1 },
        },
        {
          action: `revoke ${S6} on ssh only: nothing to cut (its flows are door mixed’s)`,
          run: (g) => assert.deepEqual(g.gate.revoke(addrKey(S6), [g.slotOf('ssh')]), { slots: [], flows: 0 }),
        },
        granted(b, `${S6}: 2222/tcp still passes`, S6, 2222),
        { action: `a 1ns grant for ${S} (expired at once)`, run: (g) => void g.gate.grant(addrKey(S), g.slotOf('ssh'), 1n) },
        deniedQuietly(`${S}: 22/tcp with an expired grant: drop_expired`, syn(S, 22), 'drop_expired'),
        ...sshKnock(S),
        granted(b, `${S}: 22/tcp passes after the knock`, S, 22),
        { action: 'remember the expiry', run: (g) => void (expiry = g.gate.grants().find((x) => x.addr.equals(addrKey(S)))?.expiresNs ?? 0n) },
        ...sshKnock(S),
        {
          action: 'knocking again renewed the grant (the GRANT row checked expires = ts + open_for)',
          run: (g) => assert.ok((g.gate.grants().find((x) => x.addr.equals(addrKey(S)))?.expiresNs ?? 0n) > expiry),
        },
        granted(b, `${S}: 22/tcp passes`, S, 22),
      ]);
    });
  });

  it('16 doors (every slot): the last slot works, and a DENY names every door protecting the port', async () => {
    const b = new FlowBook();
    const doors = Array.from({ length: 16 }, (_, i) => `  d${i}:\n    sequence: [${20000 + i * 10}/tcp, ${20005 + i * 10}/udp]\n    protects: [22/tcp, ${30000 + i}/tcp]\n`).join('');
    const S = '198.18.12.21';
    await GateHarness.with({ framing, yaml: config(`\n${doors}`), denyTokens: 1 }, async (h) => {
      assert.equal(h.slotOf('d15'), 15);
      await h.table([
        {
          description: `${S}: 22/tcp: DENY naming d0..d15`,
          frame: syn(S, 22),
          verdict: XDP_DROP,
          counter: 'drop_no_grant',
          map: NO_MAP_UPDATE,
          events: [ev.deny(Array.from({ length: 16 }, (_, i) => `d${i}`).join(','), 'no_grant', 22)],
          counters: { deny_event: 1 },
        },
        {
          description: `${S}: 20150/tcp: d15 step 1`,
          frame: syn(S, 20150),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { d15: 1 } } },
          events: [ev.knock('d15', 1, 2, 20150)],
          counters: { knock_step: 1 },
        },
        {
          description: `${S}: 20155/udp: d15 GRANT`,
          frame: udp(S, 20155),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: {} }, grants: { [S]: ['d15'] } },
          events: [ev.grant('d15', 20155, 'udp')],
          counters: { grant: 1 },
        },
        granted(b, `${S}: 22/tcp passes`, S, 22),
        granted(b, `${S}: 30015/tcp passes`, S, 30015),
        deniedQuietly(`${S}: 30014/tcp (d14’s) does not`, syn(S, 30014), 'drop_expired'),
        {
          description: `${S}: 20000/tcp: d0 step 1 (slot 0 and slot 15 in one entry's history)`,
          frame: syn(S, 20000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: { d0: 1 } } },
          events: [ev.knock('d0', 1, 2, 20000)],
          counters: { knock_step: 1 },
        },
        {
          description: `${S}: 20005/udp: d0 GRANT`,
          frame: udp(S, 20005),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [S]: {} }, grants: { [S]: ['d0', 'd15'] } },
          events: [ev.grant('d0', 20005, 'udp')],
          counters: { grant: 1 },
        },
        granted(b, `${S}: 30000/tcp passes`, S, 30000),
      ]);
    });
  });

  it('a full event ring: events that do not fit count event_lost, never a second verdict', async () => {
    await GateHarness.with({ framing, yaml: BASE, denyTokens: 5000 }, async (h) => {
      const before = h.stats();
      const frame = syn('198.18.12.31', 22);
      const n = 3000; // 64 KiB ring, 56 bytes a record: about 1170 fit
      for (let i = 0; i < n; i++) assert.equal(h.runFast(frame), XDP_DROP);
      const after = h.stats();
      const d = (k: keyof typeof after): number => Number(after[k] - before[k]);
      assert.equal(d('drop_no_grant'), n);
      assert.equal(d('deny_event') + d('event_lost'), n, 'every token spent is an event or a lost event');
      assert.ok(d('event_lost') > 0, 'the ring filled up');
      assert.equal(d('deny_suppressed'), 0);
      const got = await h.takeEvents(d('deny_event'));
      assert.equal(got.length, d('deny_event'), 'every counted event is in the ring');
      // Drained: the next one fits again.
      await h.check({
        description: 'after draining, a DENY is delivered again',
        frame,
        verdict: XDP_DROP,
        counter: 'drop_no_grant',
        map: NO_MAP_UPDATE,
        events: [ev.deny('ssh', 'no_grant', 22)],
        counters: { deny_event: 1 },
      });
    });
  });
});
