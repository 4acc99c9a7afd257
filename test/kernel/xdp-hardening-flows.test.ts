/**
 * Established flows and grant scope (docs/DESIGN.md "Established flows"), through
 * BPF_PROG_TEST_RUN: a SYN (or a UDP datagram) to a protected port under a live grant opens a
 * flow; TCP without SYN passes only on a live flow, so spoofed ACKs are dropped with no map
 * update; a flow outlives the grant until idle for flow_idle or closed (FIN/RST, then at most
 * KG_FLOW_LINGER_NS); a new connection after the grant is dropped; revoke cuts flows; scope
 * flow-only lets exactly one flow in and uses the grant up.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { kernelSuite } from '../helpers/kernel.js';
import { FlowBook, GateHarness, NO_EVENT, NO_MAP_UPDATE, XDP_DROP, XDP_PASS, config, ev, to, deniedQuietly as dropped, type Entry, type Row } from '../helpers/gate.js';
import { TCP_FLAGS, addrKey, tcpFrom, tcpSyn, udpDatagram, udpFrom } from '../helpers/packets.js';
import { FLOW_FLAG, KG, MAP, OFFSETS, PROTO, SIZEOF, decodeFlow, encodeFlowKey } from '../../src/kernel/layout.js';
import { monoNowNs } from '../../src/kernel/gate.js';

const { ACK, FIN, RST, PSH, SYN } = TCP_FLAGS;
const syn = (src: string, port: number): Buffer => tcpSyn(to(src), port);
const udp = (src: string, port: number): Buffer => udpDatagram(to(src), port, Buffer.from('knock'));
const DST4 = to('198.18.0.1').dst;
const DST6 = to('2001:db8::1').dst;

const YAML = config(`
  ssh:
    sequence: [7000/tcp, 8000/udp]
    protects: [22/tcp, 5353/udp]
    open_for: 1s
    flow_idle: 10s
  quick:
    sequence: [7100/tcp, 8100/udp]
    protects: [3000/tcp, 3001/udp]
    open_for: 10s
    flow_idle: 1s
  once:
    sequence: [7200/tcp, 8200/udp]
    protects: [2222/tcp, 5000/udp]
    scope: flow-only
    open_for: 10s
  shared:
    sequence: [7300/tcp, 8300/udp]
    protects: [2222/tcp]
    open_for: 10s
  long:
    sequence: [7400/tcp, 8400/udp]
    protects: [3100/tcp]
    open_for: 1m
`);

/** The two knocks of a door (first step TCP, second UDP) from src: a GRANT. */
function knock(src: string, door: string, first: number, second: number, grantsAfter: string[]): Row[] {
  return [
    {
      description: `${src}: ${first}/tcp: ${door} step 1`,
      frame: syn(src, first),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [src]: { [door]: 1 } } },
      events: [ev.knock(door, 1, 2, first)],
      counters: { knock_step: 1 },
    },
    {
      description: `${src}: ${second}/udp: ${door} GRANT`,
      frame: udp(src, second),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [src]: {} }, grants: { [src]: grantsAfter } },
      events: [ev.grant(door, second, 'udp')],
      counters: { grant: 1 },
    },
  ];
}

const tcp = (src: string, port: number, flags: number) => (sport: number) => tcpFrom(to(src), sport, port, flags);

/** A TCP segment without SYN that finds no flow: dropped, no map update, a denial (no tokens: counted). */
const noFlow = (description: string, frame: Buffer, more: Partial<Row> = {}): Row => ({
  description,
  frame,
  verdict: XDP_DROP,
  counter: 'drop_no_flow',
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
  counters: { deny_suppressed: 1 },
  ...more,
});

/** The flags of the flow of (src, sport -> port/tcp). */
function flowFlags(h: GateHarness, src: string, sport: number, port: number): number | null {
  const key = encodeFlowKey({ src: addrKey(src), dst: addrKey(src.includes(':') ? DST6 : DST4), sport, dport: port, proto: PROTO.TCP });
  const v = h.gate.map(MAP.FLOWS).lookup(key);
  return v ? decodeFlow(v).flags : null;
}

kernelSuite('flows: connections opened under a grant (BPF_PROG_TEST_RUN)', () => {
  it('an established connection outlives its grant; a new one is dropped; spoofed ACKs are dropped with no map update', async () => {
    for (const S of ['198.18.40.1', '2001:db8:40::1']) {
      const b = new FlowBook();
      const O = S.includes(':') ? '2001:db8:40::2' : '198.18.40.2';
      await GateHarness.with({ yaml: YAML, denyTokens: 1 }, async (h) => {
        await h.table([
          {
            description: `${S}: ACK to 22/tcp before anything: no flow, dropped (DENY no_flow, ts 0)`,
            frame: tcpFrom(to(S), 50000, 22, ACK),
            verdict: XDP_DROP,
            counter: 'drop_no_flow',
            map: NO_MAP_UPDATE,
            events: [ev.deny('ssh', 'no_flow', 22)],
            counters: { deny_event: 1 },
          },
          dropped(`${S}: SYN to 22/tcp without a grant: dropped`, syn(S, 22), 'drop_no_grant'),
          ...knock(S, 'ssh', 7000, 8000, ['ssh']),
          b.opens(`${S}: SYN to 22/tcp under the grant: a flow`, S, 22, tcp(S, 22, SYN)),
          b.on(`${S}: the same SYN again (a retransmission): passes on the flow`, S, 22, tcp(S, 22, SYN)),
          b.on(`${S}: the handshake's ACK: passes, the flow is established`, S, 22, tcp(S, 22, ACK)),
          {
            action: 'the flow is established, idle limit flow_idle (10s)',
            run: (g) => {
              const flags = flowFlags(g, S, b.sportOf(S, 22), 22); // one connection in this table: sportOf is it
              assert.equal(flags, FLOW_FLAG.ESTABLISHED);
              const [f] = g.gate.flows();
              assert.equal(f?.idleNs, 10_000_000_000n);
              assert.equal(f?.door, 'ssh');
            },
          },
          b.on(`${S}: data (PSH|ACK): passes`, S, 22, tcp(S, 22, PSH | ACK)),
          noFlow(`${S}: ACK from another port (no handshake made): dropped`, tcpFrom(to(S), 50001, 22, ACK)),
          noFlow(`${O}: ACK to 22/tcp from another source: dropped`, tcpFrom(to(O), b.sportOf(S, 22), 22, ACK)),
          noFlow(`${S}: SYN|ACK to 22/tcp: not a SYN, no flow: dropped`, tcpFrom(to(S), 50002, 22, SYN | ACK)),
          noFlow(`${S}: RST to 22/tcp from a port with no flow: dropped`, tcpFrom(to(S), 50003, 22, RST)),
          { pause: 2_500, why: 'past open_for (1s) with a 2x margin' },
          { action: 'the grant is over', run: (g) => assert.deepEqual(g.grantsOf(S), []) },
          b.on(`${S}: data on the established connection after the grant ended: passes`, S, 22, tcp(S, 22, PSH | ACK)),
          dropped(`${S}: a new connection (SYN from a new port) after the grant: drop_expired`, tcpFrom(to(S), 50004, 22, SYN), 'drop_expired'),
          dropped(`${S}: a SYN on the established connection's own ports (a new connection reusing them): drop_expired`, tcpFrom(to(S), b.sportOf(S, 22), 22, SYN), 'drop_expired'),
          b.on(`${S}: and the established connection goes on`, S, 22, tcp(S, 22, ACK)),
        ]);
      });
    }
  });

  it('FIN or RST mark a flow closing: it passes the last ACKs, and ends after min(flow_idle, 10s) without packets', async () => {
    const S = '198.18.41.1';
    const b = new FlowBook();
    await GateHarness.with({ yaml: YAML }, async (h) => {
      await h.table([
        ...knock(S, 'quick', 7100, 8100, ['quick']),
        b.opens(`${S}: connection 1 to 3000/tcp`, S, 3000, tcp(S, 3000, SYN)),
        b.on(`${S}: its ACK`, S, 3000, tcp(S, 3000, ACK)),
        b.on(`${S}: its FIN|ACK: passes, the flow is closing`, S, 3000, tcp(S, 3000, FIN | ACK), 'tcp', { counters: { flow_close: 1 } }),
        ((sport: number): Entry => ({
          action: 'connection 1’s flow is established and closing',
          run: (g) => assert.equal(flowFlags(g, S, sport, 3000), FLOW_FLAG.ESTABLISHED | FLOW_FLAG.CLOSING),
        }))(b.sportOf(S, 3000)),
        b.on(`${S}: the last ACK of the close: passes (counted closing once)`, S, 3000, tcp(S, 3000, ACK)),
        b.opens(`${S}: connection 2 to 3000/tcp`, S, 3000, tcp(S, 3000, SYN)),
        b.on(`${S}: its RST: passes, closing`, S, 3000, tcp(S, 3000, RST), 'tcp', { counters: { flow_close: 1 } }),
        { pause: 2_500, why: 'past quick’s flow_idle (1s) with a 2x margin' },
        b.gone(S, {
          description: `${S}: ACK on connection 2 after the idle limit: dropped, the flow deleted (flow_idle)`,
          frame: tcpFrom(to(S), b.sportOf(S, 3000), 3000, ACK),
          verdict: XDP_DROP,
          counter: 'drop_no_flow',
          map: { flows: { [S]: [] } },
          events: NO_EVENT,
          counters: { deny_suppressed: 1, flow_idle: 1 },
        }),
      ]);
      // Connection 1 is idle too; nobody deleted it yet (its next packet, or the sweep, will).
      assert.deepEqual(h.gate.flows().length, 0);
      assert.equal(h.gate.flows(monoNowNs(), true).length, 1);
      assert.equal(h.gate.sweep().flows, 1);
      assert.equal(h.gate.flows(monoNowNs(), true).length, 0);
    });
  });

  it('the linger after a close: a closing flow of a long flow_idle ends 10s after its last packet (state set by hand)', async () => {
    const S = '198.18.42.1';
    await GateHarness.with({ yaml: YAML }, async (h) => {
      const slot = h.slotOf('ssh');
      const put = (sport: number, agoNs: bigint, flags: number): void => {
        const v = Buffer.alloc(SIZEOF.flow);
        const now = monoNowNs();
        v.writeBigUInt64LE(now - agoNs, OFFSETS.flow.created_ns);
        v.writeBigUInt64LE(now - agoNs, OFFSETS.flow.last_ns);
        v.writeBigUInt64LE(3_600_000_000_000n, OFFSETS.flow.idle_ns); // flow_idle 1h
        v.writeUInt8(slot, OFFSETS.flow.slot);
        v.writeUInt8(flags, OFFSETS.flow.flags);
        // A writer of kg_flows outside XDP marks the grant filter first (DESIGN.md "Grant filter").
        h.gate.gfilter!.mark(addrKey(S));
        h.gate.map(MAP.FLOWS).update(encodeFlowKey({ src: addrKey(S), dst: addrKey(DST4), sport, dport: 22, proto: PROTO.TCP }), v);
      };
      const ms = 1_000_000n;
      put(40001, KG.FLOW_LINGER_NS - 2000n * ms, FLOW_FLAG.ESTABLISHED | FLOW_FLAG.CLOSING);
      put(40002, KG.FLOW_LINGER_NS + 2000n * ms, FLOW_FLAG.ESTABLISHED | FLOW_FLAG.CLOSING);
      put(40003, KG.FLOW_LINGER_NS + 2000n * ms, FLOW_FLAG.ESTABLISHED);
      await h.table([
        {
          description: `${S}: ACK on a closing flow 8s after its last packet: passes`,
          frame: tcpFrom(to(S), 40001, 22, ACK),
          verdict: XDP_PASS,
          counter: 'pass_flow',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
        },
        {
          description: `${S}: ACK on a closing flow 12s after its last packet: dropped, deleted`,
          frame: tcpFrom(to(S), 40002, 22, ACK),
          verdict: XDP_DROP,
          counter: 'drop_no_flow',
          map: { flows: { [S]: ['22/tcp', '22/tcp'] } },
          events: NO_EVENT,
          counters: { deny_suppressed: 1, flow_idle: 1 },
        },
        {
          description: `${S}: ACK on an open flow 12s after its last packet (flow_idle 1h): passes`,
          frame: tcpFrom(to(S), 40003, 22, ACK),
          verdict: XDP_PASS,
          counter: 'pass_flow',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
        },
      ]);
    });
  });

  it('UDP: the first datagram under a grant opens a flow, which outlives the grant; a new flow after it is dropped', async () => {
    const S = '2001:db8:43::1';
    const b = new FlowBook();
    const dgram = (sport: number): Buffer => udpFrom(to(S), sport, 5353);
    await GateHarness.with({ yaml: YAML }, async (h) => {
      await h.table([
        dropped(`${S}: 5353/udp without a grant: drop_no_grant`, udp(S, 5353), 'drop_no_grant'),
        ...knock(S, 'ssh', 7000, 8000, ['ssh']),
        b.opens(`${S}: 5353/udp: a flow`, S, 5353, dgram, 'udp'),
        b.on(`${S}: the next datagram: on the flow`, S, 5353, dgram, 'udp'),
        { pause: 2_500, why: 'past open_for (1s) with a 2x margin' },
        b.on(`${S}: a datagram on the flow after the grant: passes`, S, 5353, dgram, 'udp'),
        dropped(`${S}: a datagram from a new port after the grant: drop_expired`, udpFrom(to(S), 50000, 5353), 'drop_expired'),
        {
          action: 'the sweep keeps the expired grant entry while the flow lives (datagrams are judged through it)',
          run: (g) => {
            assert.equal(g.gate.sweepExpiredGrants(), 0);
            assert.equal(g.gate.map(MAP.GRANTS).lookup(addrKey(S)) !== null, true);
          },
        },
        b.on(`${S}: still passes`, S, 5353, dgram, 'udp'),
      ]);
    });
  });

  it('scope flow-only: exactly one connection gets in; the SYN that opens it uses the grant up; its retransmissions and segments pass', async () => {
    for (const S of ['198.18.44.1', '2001:db8:44::1']) {
      const b = new FlowBook();
      await GateHarness.with({ yaml: YAML }, async (h) => {
        await h.table([
          ...knock(S, 'once', 7200, 8200, ['once']),
          b.opens(`${S}: SYN to 2222/tcp: the one flow; the grant is used up (CONSUMED event)`, S, 2222, tcp(S, 2222, SYN), 'tcp', {
            map: { grants: { [S]: [] } },
            events: [ev.consume('once', 2222)],
            counters: { flow_new: 1, grant_consumed: 1 },
          }),
          b.on(`${S}: the SYN retransmitted: passes on the flow`, S, 2222, tcp(S, 2222, SYN)),
          b.on(`${S}: its ACK: passes`, S, 2222, tcp(S, 2222, ACK)),
          dropped(`${S}: a second connection (another port): drop_expired`, tcpFrom(to(S), 50000, 2222, SYN), 'drop_expired'),
          dropped(`${S}: a UDP flow to the door's other port: drop_expired (the one flow was the TCP one)`, udpFrom(to(S), 50001, 5000), 'drop_expired'),
          dropped(`${S}: a new connection on the first one's ports: drop_expired`, tcpFrom(to(S), b.sportOf(S, 2222), 2222, SYN), 'drop_expired'),
          b.on(`${S}: the first connection goes on`, S, 2222, tcp(S, 2222, PSH | ACK)),
          { action: 'listed: no live grant, one flow of door once', run: (g) => assert.deepEqual([g.gate.grants().length, g.gate.flows().map((f) => f.door)], [0, ['once']]) },
          ...knock(S, 'once', 7200, 8200, ['once']),
          b.opens(`${S}: knocking again grants one more connection`, S, 2222, tcp(S, 2222, SYN), 'tcp', {
            map: { grants: { [S]: [] } },
            events: [ev.consume('once', 2222)],
            counters: { flow_new: 1, grant_consumed: 1 },
          }),
        ]);
      });
    }
  });

  it('a port protected by a flow-only door and a source-scope door: a source grant is used first, the flow-only grant is kept', async () => {
    const S = '198.18.45.1';
    const b = new FlowBook();
    await GateHarness.with({ yaml: YAML }, async (h) => {
      await h.table([
        ...knock(S, 'once', 7200, 8200, ['once']),
        ...knock(S, 'shared', 7300, 8300, ['once', 'shared']),
        b.opens(`${S}: SYN to 2222/tcp: opened under shared’s grant; once’s grant kept`, S, 2222, tcp(S, 2222, SYN)),
        b.opens(`${S}: another connection: shared again`, S, 2222, tcp(S, 2222, SYN)),
        { action: 'both grants live; two flows of door shared', run: (g) => assert.deepEqual([g.grantsOf(S), g.gate.flows().map((f) => f.door)], [['once', 'shared'], ['shared', 'shared']]) },
      ]);
    });
  });

  it('revoke cuts the flows with the grant (all doors, or one); a flow passes only while its door protects the port', async () => {
    const S = '198.18.46.1';
    const b = new FlowBook();
    const rows: Entry[] = [
      ...knock(S, 'long', 7400, 8400, ['long']),
      ...knock(S, 'shared', 7300, 8300, ['long', 'shared']),
      b.opens(`${S}: 3100/tcp: a flow of long`, S, 3100, tcp(S, 3100, SYN)),
      b.opens(`${S}: 2222/tcp: a flow of shared`, S, 2222, tcp(S, 2222, SYN)),
      b.gone(
        S,
        {
          action: `revoke ${S} on door shared: its grant and its flow go, long’s flow stays`,
          run: (g) => assert.deepEqual(g.gate.revoke(addrKey(S), [g.slotOf('shared')]), { slots: [g.slotOf('shared')], flows: 1 }),
        },
        (f) => f === '2222/tcp',
      ),
      noFlow(`${S}: ACK on the revoked connection: dropped`, tcpFrom(to(S), b.sportOf(S, 2222), 2222, ACK)),
      b.on(`${S}: ACK on long’s connection: passes`, S, 3100, tcp(S, 3100, ACK)),
      {
        action: 'door long now protects 3102/tcp and door shared 3100/tcp: long’s flow is not for port 3100 any more',
        run: (g) =>
          g.apply(
            YAML.replace('protects: [3100/tcp]', 'protects: [3102/tcp]').replace(
              'protects: [2222/tcp]\n    open_for: 10s',
              'protects: [2222/tcp, 3100/tcp]\n    open_for: 10s',
            ),
          ),
      },
      noFlow(`${S}: ACK on the old long connection to 3100: its door no longer protects 3100: dropped`, tcpFrom(to(S), b.sportOf(S, 3100), 3100, ACK)),
      b.gone(S, {
        action: `revoke ${S} on every door`,
        run: (g) => assert.deepEqual(g.gate.revoke(addrKey(S)), { slots: [g.slotOf('long')], flows: 1 }),
      }),
      { action: 'nothing left', run: (g) => assert.deepEqual([g.gate.grants(), g.gate.flows()], [[], []]) },
    ];
    await GateHarness.with({ yaml: YAML }, async (h) => {
      await h.table(rows);
    });
  });
});
