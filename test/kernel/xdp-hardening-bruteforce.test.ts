/**
 * The brute-force limit (docs/DESIGN.md "Brute-force limit"), through BPF_PROG_TEST_RUN: a
 * source whose progress is thrown away (a wrong knock, a timeout) with no door moving on in the
 * same packet fails once; max_failures failures within failure_window put it in cooldown (a
 * COOLDOWN event, its progress on every door thrown away), during which its knocks do not
 * progress (cooldown_knock); its grants and flows keep working; the cooldown ends on time.
 * Only knock packets consult kg_penalty: the protected-port and unrelated paths do not.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { kernelSuite } from '../helpers/kernel.js';
import { FlowBook, GateHarness, NO_EVENT, NO_MAP_UPDATE, XDP_DROP, XDP_PASS, config, ev, to, knockNoop, type Entry, type Row } from '../helpers/gate.js';
import { addrKey, tcpFrom, tcpSyn, udpDatagram } from '../helpers/packets.js';
import { MAP } from '../../src/kernel/layout.js';

const syn = (src: string, port: number): Buffer => tcpSyn(to(src), port);
const udp = (src: string, port: number): Buffer => udpDatagram(to(src), port, Buffer.from('knock'));

const YAML = config(`
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [22/tcp]
    step_timeout: 1s
    sequence_timeout: 15s
  web:
    sequence: [7100/tcp, 7200/udp]
    protects: [443/tcp]
`);

const BF = { maxFailures: 3, failureWindowMs: 60_000, cooldownMs: 2_000 };

const step = (src: string, door: 'ssh' | 'web', n: number, port: number, proto: 'tcp' | 'udp', more: Partial<Row> = {}): Row => ({
  description: `${src}: ${port}/${proto}: ${door} step ${n}`,
  frame: proto === 'tcp' ? syn(src, port) : udp(src, port),
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: { progress: { [src]: { [door]: n } } },
  events: [ev.knock(door, n, door === 'ssh' ? 3 : 2, port, proto)],
  counters: { knock_step: 1 },
  ...more,
});

/** A wrong knock (an unrelated TCP port) that resets `door` after `done` steps: one failure. */
const fail = (src: string, door: 'ssh' | 'web', done: number, failures: number, port = 80): Row => ({
  description: `${src}: ${port}/tcp after ${door} step ${done}: reset, failure ${failures}`,
  frame: syn(src, port),
  verdict: XDP_PASS,
  counter: 'pass_unrelated',
  map: { progress: { [src]: {} }, penalty: { [src]: { failures, cooldown: false } } },
  events: [ev.reset(door, done, 'wrong_port', port)],
  counters: { reset_wrong_port: 1, failure: 1 },
});

const ignored = (description: string, frame: Buffer): Row => knockNoop(description, frame, { cooldown_knock: 1 });

kernelSuite('brute-force limit (BPF_PROG_TEST_RUN)', () => {
  it('three failed sequences put a source in cooldown: its knocks are ignored, its grant keeps working, and the cooldown ends', async () => {
    const A = '198.18.30.1';
    const B = '2001:db8:30::2';
    const book = new FlowBook();
    await GateHarness.with({ yaml: YAML, bruteForce: BF, denyTokens: 0 }, async (h) => {
      await h.table([
        { action: `${A} holds a grant on web (by hand)`, run: (g) => void g.gate.grant(addrKey(A), g.slotOf('web'), 60_000_000_000n) },
        book.opens(`${A}: a connection to 443 under that grant`, A, 443, (sport) => tcpFrom(to(A), sport, 443)),
        step(A, 'ssh', 1, 7000, 'tcp'),
        fail(A, 'ssh', 1, 1),
        step(A, 'ssh', 1, 7000, 'tcp'),
        step(A, 'ssh', 2, 8000, 'udp'),
        {
          description: `${A}: 7100/tcp at ssh step 2: ssh resets, web starts: a knock that counted for a door is no failure`,
          frame: syn(A, 7100),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A]: { web: 1 } } },
          events: [ev.reset('ssh', 2, 'wrong_port', 7100), ev.knock('web', 1, 2, 7100)],
          counters: { reset_wrong_port: 1, knock_step: 1 },
        },
        fail(A, 'web', 1, 2, 8080),
        step(A, 'ssh', 1, 7000, 'tcp'),
        { pause: 2_500, why: 'past ssh’s step_timeout (1s) with a 2x margin' },
        {
          description: `${A}: 8000/udp after the step timeout: reset (step_timeout), failure 3: cooldown`,
          frame: udp(A, 8000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A]: {} }, penalty: { [A]: { failures: 0, cooldown: true } } },
          events: [ev.reset('ssh', 1, 'step_timeout', 8000, 'udp'), ev.cooldown(3, 8000, 'udp')],
          counters: { reset_step_timeout: 1, failure: 1, cooldown: 1 },
        },
        ignored(`${A}: 7000/tcp in cooldown: dropped, ignored (no progress, no event)`, syn(A, 7000)),
        ignored(`${A}: 7100/tcp in cooldown: every door`, syn(A, 7100)),
        book.on(`${A}: its connection to 443 still passes (the cooldown stops knocks only)`, A, 443, (sport) => tcpFrom(to(A), sport, 443, 0x10)),
        book.opens(`${A}: and its grant still opens new connections`, A, 443, (sport) => tcpFrom(to(A), sport, 443)),
        {
          description: `${A}: 22/tcp (no ssh grant) in cooldown: the protected-port path does not consult kg_penalty`,
          frame: syn(A, 22),
          verdict: XDP_DROP,
          counter: 'drop_expired',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
          counters: { deny_suppressed: 1 },
        },
        {
          description: `${A}: 80/tcp in cooldown: passes, nothing to reset`,
          frame: syn(A, 80),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
        },
        step(B, 'ssh', 1, 7000, 'tcp'),
        step(B, 'ssh', 2, 8000, 'udp'),
        {
          description: `${B}: 9000/tcp: another source is not affected: GRANT`,
          frame: syn(B, 9000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [B]: {} }, grants: { [B]: ['ssh'] } },
          events: [ev.grant('ssh', 9000)],
          counters: { grant: 1 },
        },
        { pause: 4_500, why: 'past the cooldown (2s) with a 2x margin' },
        step(A, 'ssh', 1, 7000, 'tcp'),
        step(A, 'ssh', 2, 8000, 'udp'),
        {
          description: `${A}: 9000/tcp after the cooldown: GRANT`,
          frame: syn(A, 9000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A]: {} }, grants: { [A]: ['ssh', 'web'] } },
          events: [ev.grant('ssh', 9000)],
          counters: { grant: 1 },
        },
      ]);
      const cooling = h.gate.cooldowns();
      assert.deepEqual(cooling, [], 'no source in cooldown any more');
    });
  });

  it('failures outside failure_window do not add up', async () => {
    const C = '198.18.31.3';
    await GateHarness.with({ yaml: YAML, bruteForce: { maxFailures: 2, failureWindowMs: 300, cooldownMs: 60_000 } }, async (h) => {
      await h.table([
        step(C, 'ssh', 1, 7000, 'tcp'),
        fail(C, 'ssh', 1, 1, 7300),
        { pause: 700, why: 'past failure_window (300ms) with a 2x margin' },
        step(C, 'ssh', 1, 7000, 'tcp'),
        {
          description: `${C}: 7300/tcp: failure 1 of a new window, not 2: no cooldown`,
          frame: syn(C, 7300),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [C]: {} }, penalty: { [C]: { failures: 1, cooldown: false } } },
          events: [ev.reset('ssh', 1, 'wrong_port', 7300)],
          counters: { reset_wrong_port: 1, failure: 1 },
        },
      ]);
      assert.deepEqual(h.gate.cooldowns(), []);
    });
  });

  it('a knock that is right for one door and wrong for another is no failure; a wrong knock after step 1 is one; the cooldown stops every door', async () => {
    const A = '198.18.31.1';
    await GateHarness.with({ yaml: YAML, bruteForce: { maxFailures: 2, failureWindowMs: 60_000, cooldownMs: 60_000 } }, async (h) => {
      await h.table([
        step(A, 'web', 1, 7100, 'tcp'),
        step(A, 'ssh', 1, 7000, 'tcp', {
          description: `${A}: 7000/tcp: ssh step 1, while web waits for its step 2 (7000 is no port of web’s: web resets, no failure: ssh moved)`,
          events: [ev.reset('web', 1, 'wrong_port', 7000), ev.knock('ssh', 1, 3, 7000)],
          counters: { knock_step: 1, reset_wrong_port: 1 },
        }),
        step(A, 'ssh', 2, 8000, 'udp'),
        fail(A, 'ssh', 2, 1),
        step(A, 'ssh', 1, 7000, 'tcp'),
        step(A, 'ssh', 2, 8000, 'udp'),
        step(A, 'web', 1, 7100, 'tcp', {
          description: `${A}: 7100/tcp: web step 1, ssh resets (no failure: web moved)`,
          map: { progress: { [A]: { web: 1 } } },
          events: [ev.reset('ssh', 2, 'wrong_port', 7100), ev.knock('web', 1, 2, 7100)],
          counters: { knock_step: 1, reset_wrong_port: 1 },
        }),
        {
          description: `${A}: 53/udp: web resets after step 1, failure 2: cooldown; no progress is left on any door`,
          frame: udp(A, 53),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [A]: {} }, penalty: { [A]: { failures: 0, cooldown: true } } },
          events: [ev.reset('web', 1, 'wrong_port', 53, 'udp'), ev.cooldown(2, 53, 'udp')],
          counters: { reset_wrong_port: 1, failure: 1, cooldown: 1 },
        },
        ignored(`${A}: 7100/tcp in cooldown: ignored (web)`, syn(A, 7100)),
        ignored(`${A}: 7000/tcp in cooldown: ignored (ssh)`, syn(A, 7000)),
      ]);
      assert.deepEqual(h.gate.cooldowns().map((c) => c.addr), [addrKey(A)]);
    });
  });

  it('max_failures 0 turns the limit off: no kg_penalty entry is ever made', async () => {
    const A = '198.18.32.1';
    await GateHarness.with({ yaml: YAML, bruteForce: { maxFailures: 0, failureWindowMs: 60_000, cooldownMs: 60_000 } }, async (h) => {
      const rows: Entry[] = [];
      for (let i = 0; i < 5; i++) {
        rows.push(step(A, 'ssh', 1, 7000, 'tcp'), {
          description: `${A}: 80/tcp: reset ${i + 1}, not counted`,
          frame: syn(A, 80),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [A]: {} } },
          events: [ev.reset('ssh', 1, 'wrong_port', 80)],
          counters: { reset_wrong_port: 1 },
        });
      }
      await h.table([...rows, step(A, 'ssh', 1, 7000, 'tcp')]);
      assert.equal([...h.gate.map(MAP.PENALTY).keys()].length, 0);
    });
  });

  it('cooldown events are spoofable (a first knock and a wrong one suffice): they spend knock tokens', async () => {
    const A = '198.18.33.1';
    await GateHarness.with({ yaml: YAML, bruteForce: { maxFailures: 1, failureWindowMs: 60_000, cooldownMs: 60_000 }, knockTokens: 1 }, async (h) => {
      await h.table([
        step(A, 'ssh', 1, 7000, 'tcp'),
        {
          description: `${A}: 80/tcp: reset and cooldown, with no token left: counted, no event`,
          frame: syn(A, 80),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [A]: {} }, penalty: { [A]: { failures: 0, cooldown: true } } },
          events: NO_EVENT,
          counters: { reset_wrong_port: 1, failure: 1, cooldown: 1, knock_suppressed: 2 },
        },
      ]);
    });
  });
});
