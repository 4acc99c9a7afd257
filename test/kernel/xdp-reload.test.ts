/**
 * Reconfiguration through Gate.applyDoors (docs/DESIGN.md, "Generations") and adoption of a
 * pinned gate by a second Gate.open, judged by the program itself through BPF_PROG_TEST_RUN:
 * epochs (progress made under old knock rules starts over, progress survives a change of
 * open_for only), removed doors lose their grants, doors keep their slots, and grants and
 * progress in flight survive a close + open on the same pin dir.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { kernelSuite } from '../helpers/kernel.js';
import {
  GateHarness,
  NO_EVENT,
  NO_MAP_UPDATE,
  XDP_DROP,
  XDP_PASS,
  config,
  ev,
  to,
  type Entry,
  type Row,
} from '../helpers/gate.js';
import { TCP_FLAGS, tcpSegment, tcpSyn, udpDatagram } from '../helpers/packets.js';

const syn = (src: string, port: number): Buffer => tcpSyn(to(src), port);
const udp = (src: string, port: number): Buffer => udpDatagram(to(src), port, Buffer.from('knock'));

const stepRow = (src: string, door: string, n: number, of: number, port: number, proto: 'tcp' | 'udp' = 'tcp'): Row => ({
  description: `${src}: ${port}/${proto}: ${door} step ${n}`,
  frame: proto === 'tcp' ? syn(src, port) : udp(src, port),
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: { progress: { [src]: { [door]: n } } },
  events: [ev.knock(door, n, of, port, proto)],
  counters: { knock_step: 1 },
});
const grantRow = (src: string, door: string, port: number, grants: string[] = [door], proto: 'tcp' | 'udp' = 'tcp'): Row => ({
  description: `${src}: ${port}/${proto}: ${door} GRANT`,
  frame: proto === 'tcp' ? syn(src, port) : udp(src, port),
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: { progress: { [src]: {} }, grants: { [src]: grants } },
  events: [ev.grant(door, port, proto)],
  counters: { grant: 1 },
});
const granted = (src: string, port: number): Row => ({
  description: `${src}: ${port}/tcp passes (granted)`,
  frame: syn(src, port),
  verdict: XDP_PASS,
  counter: 'pass_granted',
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
});
const denied = (src: string, port: number, counter: 'drop_no_grant' | 'drop_expired' = 'drop_no_grant'): Row => ({
  description: `${src}: ${port}/tcp drops (${counter})`,
  frame: syn(src, port),
  verdict: XDP_DROP,
  counter,
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
  counters: { deny_suppressed: 1 },
});
const knockNoop = (description: string, frame: Buffer, map: Row['map'] = NO_MAP_UPDATE): Row => ({
  description,
  frame,
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map,
  events: NO_EVENT,
});
const apply = (what: string, yaml: string): Entry => ({ action: `applyDoors: ${what}`, run: (h) => h.apply(yaml) });

const SSH = (seq: string, extra = ''): string =>
  config(`
  ssh:
    sequence: [${seq}]
    protects: [22/tcp]${extra}
  web:
    sequence: [7500/udp, 7600/tcp]
    protects: [443/tcp]
`);

kernelSuite('XDP: reconfiguration through applyDoors', () => {
  it('a changed sequence bumps the epoch: sources midway start over (no progress carried into the new rules)', async () => {
    const A = '198.18.10.1';
    const B = '2001:db8:10::2';
    const C = '198.18.10.3';
    await GateHarness.with({ yaml: SSH('7000/tcp, 8000/tcp, 9000/tcp') }, async (h) => {
      let epoch = 0;
      await h.table([
        stepRow(A, 'ssh', 1, 3, 7000),
        stepRow(B, 'ssh', 1, 3, 7000),
        stepRow(B, 'ssh', 2, 3, 8000),
        stepRow(C, 'web', 1, 2, 7500, 'udp'),
        {
          action: 'remember epochs',
          run: (g) => {
            epoch = g.gate.doors().find((d) => d.door.name === 'ssh')?.door.epoch ?? -1;
          },
        },
        apply('ssh becomes 7000, 8000, 9500 (web unchanged)', SSH('7000/tcp, 8000/tcp, 9500/tcp')),
        {
          action: 'ssh’s epoch moved on, its old progress is reported stale; web’s is not',
          run: (g) => {
            const doors = g.gate.doors();
            assert.equal(doors.find((d) => d.door.name === 'ssh')?.door.epoch, epoch + 1);
            assert.equal(g.slotOf('ssh'), 0);
            assert.equal(g.slotOf('web'), 1);
            const stale = Object.fromEntries(g.gate.progress().map((p) => [`${p.door} ${p.addr.toString('hex').slice(-8)}`, p.stale]));
            assert.deepEqual(Object.values(stale).sort(), [false, true, true]);
            assert.equal(g.gate.progress().find((p) => p.door === 'web')?.stale, false);
          },
        },
        knockNoop(`${A}: 8000/tcp (step 2 under both rules): old progress does not count, entry dropped`, syn(A, 8000), { progress: { [A]: {} } }),
        knockNoop(`${B}: 9500/tcp (step 3 of the new rules, B was at 2): nothing, entry dropped`, syn(B, 9500), { progress: { [B]: {} } }),
        denied(B, 22),
        {
          description: `${A}: 9000/tcp (no longer a knock port): an unrelated port now, passes`,
          frame: syn(A, 9000),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
        },
        stepRow(A, 'ssh', 1, 3, 7000),
        stepRow(A, 'ssh', 2, 3, 8000),
        grantRow(A, 'ssh', 9500),
        granted(A, 22),
        grantRow(C, 'web', 7600),
        granted(C, 443),
      ]);
    });
  });

  it('a changed step timeout or allow list also starts sources over', async () => {
    const A = '198.18.10.11';
    await GateHarness.with({ yaml: SSH('7000/tcp, 8000/tcp, 9000/tcp') }, async (h) => {
      await h.table([
        stepRow(A, 'ssh', 1, 3, 7000),
        apply('ssh step_timeout 4s', SSH('7000/tcp, 8000/tcp, 9000/tcp', '\n    step_timeout: 4s')),
        knockNoop(`${A}: 8000/tcp after a step_timeout change: starts over`, syn(A, 8000), { progress: { [A]: {} } }),
        stepRow(A, 'ssh', 1, 3, 7000),
        apply('ssh allow_from 198.18.10.0/24', SSH('7000/tcp, 8000/tcp, 9000/tcp', '\n    step_timeout: 4s\n    allow_from: [198.18.10.0/24]')),
        knockNoop(`${A}: 8000/tcp after an allow_from change: starts over`, syn(A, 8000), { progress: { [A]: {} } }),
        stepRow(A, 'ssh', 1, 3, 7000),
        apply('ssh allow_from 198.18.11.0/24 (A is outside now)', SSH('7000/tcp, 8000/tcp, 9000/tcp', '\n    step_timeout: 4s\n    allow_from: [198.18.11.0/24]')),
        knockNoop(`${A}: 8000/tcp: starts over`, syn(A, 8000), { progress: { [A]: {} } }),
        {
          description: `${A}: 7000/tcp from outside the new allow list: not_allowed`,
          frame: syn(A, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
          counters: { not_allowed: 1 },
        },
      ]);
    });
  });

  it('re-applying an identical config (allow lists, timeouts and all) keeps every epoch and all progress', async () => {
    const yaml = config(`
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [22/tcp]
    allow_from: [198.18.10.0/24, 2001:db8:10::/48, 198.18.99.7]
    step_timeout: 7s
    sequence_timeout: 20s
    open_for: 90s
  web:
    sequence: [7500/udp, 7600/tcp]
    protects: [443/tcp]
    allow_from: [2001:db8:10:1::/64]
`);
    const A = '198.18.10.51';
    const B = '2001:db8:10:1::52';
    await GateHarness.with({ yaml }, async (h) => {
      await h.table([
        stepRow(A, 'ssh', 1, 3, 7000),
        stepRow(B, 'web', 1, 2, 7500, 'udp'),
        apply('the same config again', yaml),
        apply('and again', yaml),
        {
          action: 'epochs are still 1',
          run: (g) => assert.deepEqual(g.gate.doors().map((d) => [d.door.name, d.door.epoch]), [['ssh', 1], ['web', 1]]),
        },
        stepRow(A, 'ssh', 2, 3, 8000, 'udp'),
        grantRow(A, 'ssh', 9000),
        grantRow(B, 'web', 7600),
      ]);
    });
  });

  it('a change of open_for only keeps progress (same epoch), and the grant uses the new open_for', async () => {
    const A = '198.18.10.21';
    const B = '2001:db8:10::22';
    await GateHarness.with({ yaml: SSH('7000/tcp, 8000/tcp, 9000/tcp') }, async (h) => {
      let epoch = -1;
      await h.table([
        stepRow(A, 'ssh', 1, 3, 7000),
        stepRow(A, 'ssh', 2, 3, 8000),
        stepRow(B, 'ssh', 1, 3, 7000),
        { action: 'remember the epoch', run: (g) => void (epoch = g.gate.doors()[0]?.door.epoch ?? -1) },
        apply('ssh open_for 2m (was the 30s default)', SSH('7000/tcp, 8000/tcp, 9000/tcp', '\n    open_for: 2m')),
        {
          action: 'same epoch, progress not stale, open_for is 2m',
          run: (g) => {
            const ssh = g.gate.doors().find((d) => d.door.name === 'ssh')?.door;
            assert.equal(ssh?.epoch, epoch);
            assert.equal(ssh?.openForNs, 120_000_000_000n);
            assert.deepEqual(g.gate.progress().map((p) => p.stale), [false, false]);
          },
        },
        grantRow(A, 'ssh', 9000), // the harness checks expires = ts + 2m
        stepRow(B, 'ssh', 2, 3, 8000),
        grantRow(B, 'ssh', 9000),
        granted(A, 22),
        granted(B, 22),
      ]);
    });
  });

  it('removing a door cuts its grants (and its progress no longer counts)', async () => {
    const yaml3 = config(`
  a:
    sequence: [7001/tcp, 7002/tcp]
    protects: [22/tcp]
  b:
    sequence: [7003/tcp, 7004/tcp]
    protects: [22/tcp, 2200/tcp]
  c:
    sequence: [7005/udp, 7006/udp]
    protects: [3300/tcp]
`);
    const yaml2 = config(`
  b:
    sequence: [7003/tcp, 7004/tcp]
    protects: [22/tcp, 2200/tcp]
`);
    const A = '198.18.10.31'; // granted on a only
    const B = '198.18.10.32'; // granted on a and b
    const C = '2001:db8:10::33'; // granted on c only
    const D = '198.18.10.34'; // midway on a
    await GateHarness.with({ yaml: yaml3 }, async (h) => {
      await h.table([
        stepRow(A, 'a', 1, 2, 7001),
        grantRow(A, 'a', 7002),
        stepRow(B, 'a', 1, 2, 7001),
        grantRow(B, 'a', 7002),
        stepRow(B, 'b', 1, 2, 7003),
        grantRow(B, 'b', 7004, ['a', 'b']),
        stepRow(C, 'c', 1, 2, 7005, 'udp'),
        grantRow(C, 'c', 7006, ['c'], 'udp'),
        stepRow(D, 'a', 1, 2, 7001),
        granted(A, 22),
        granted(C, 3300),
        apply('doors a and c removed, b kept', yaml2),
        {
          action: 'b keeps slot 1; only b’s grants are left',
          run: (g) => {
            assert.deepEqual(g.gate.doors().map((d) => [d.slot, d.door.name]), [[1, 'b']]);
            assert.deepEqual(g.gate.grants().map((x) => x.door), ['b']);
            assert.deepEqual(g.grantsOf(A), []);
            assert.deepEqual(g.grantsOf(B), ['b']);
            assert.deepEqual(g.grantsOf(C), []);
          },
        },
        denied(A, 22),
        granted(B, 22),
        granted(B, 2200),
        {
          description: `${C}: 3300/tcp is no longer protected: an unrelated port`,
          frame: syn(C, 3300),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
        },
        {
          description: `${D}: 7002/tcp (a’s last step, a removed): an unrelated port; the stale progress goes (wrong-port path, no event)`,
          frame: syn(D, 7002),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [D]: {} } },
          events: NO_EVENT,
        },
        denied(D, 22),
        apply('door a back (a new door in slot 0, new epoch)', yaml3),
        {
          action: 'a and c are back in their slots; no grant came back with them',
          run: (g) => {
            assert.deepEqual(g.gate.doors().map((d) => [d.slot, d.door.name]), [[0, 'a'], [1, 'b'], [2, 'c']]);
            assert.deepEqual(g.grantsOf(A), []);
            assert.deepEqual(g.grantsOf(C), []);
          },
        },
        denied(A, 22),
        denied(C, 3300),
      ]);
    });
  });

  it('a door keeps its slot across reloads (reordered, others added and removed), and its progress with it', async () => {
    const A = '198.18.10.41';
    const v1 = config(`
  a:
    sequence: [7001/tcp, 7002/tcp, 7003/tcp]
    protects: [22/tcp]
  b:
    sequence: [7101/tcp, 7102/tcp]
    protects: [2200/tcp]
  c:
    sequence: [7201/tcp, 7202/tcp]
    protects: [3300/tcp]
`);
    const v2 = config(`
  new:
    sequence: [7301/tcp, 7302/tcp]
    protects: [4400/tcp]
  c:
    sequence: [7201/tcp, 7202/tcp]
    protects: [3300/tcp]
  a:
    sequence: [7001/tcp, 7002/tcp, 7003/tcp]
    protects: [22/tcp]
`);
    const v3 = config(`
  a:
    sequence: [7001/tcp, 7002/tcp, 7003/tcp]
    protects: [22/tcp]
  later:
    sequence: [7401/tcp, 7402/tcp]
    protects: [5500/tcp]
`);
    const slots = (h: GateHarness): Record<string, number> => Object.fromEntries(h.gate.doors().map((d) => [d.door.name, d.slot]));
    await GateHarness.with({ yaml: v1 }, async (h) => {
      await h.table([
        { action: 'slots in file order', run: (g) => assert.deepEqual(slots(g), { a: 0, b: 1, c: 2 }) },
        stepRow(A, 'a', 1, 3, 7001),
        {
          description: `${A}: 7201/tcp: c step 1, a resets`,
          frame: syn(A, 7201),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A]: { c: 1 } } },
          events: [ev.reset('a', 1, 'wrong_port', 7201), ev.knock('c', 1, 2, 7201)],
          counters: { knock_step: 1, reset_wrong_port: 1 },
        },
        {
          description: `${A}: 7001/tcp: a step 1, c resets`,
          frame: syn(A, 7001),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A]: { a: 1 } } },
          events: [ev.reset('c', 1, 'wrong_port', 7001), ev.knock('a', 1, 3, 7001)],
          counters: { knock_step: 1, reset_wrong_port: 1 },
        },
        apply('reordered; b removed; a door "new" added first', v2),
        {
          action: 'a and c keep 0 and 2; "new" takes slot 3 (never used) rather than b’s freed 1',
          run: (g) => assert.deepEqual(slots(g), { new: 3, c: 2, a: 0 }),
        },
        stepRow(A, 'a', 2, 3, 7002),
        apply('c and new removed, "later" added', v3),
        {
          action: 'a keeps 0; "later" takes slot 1, the lowest slot empty in the active generation (b’s, freed one reload ago)',
          run: (g) => assert.deepEqual(slots(g), { a: 0, later: 1 }),
        },
        grantRow(A, 'a', 7003),
        granted(A, 22),
      ]);
    });
  });
});

kernelSuite('XDP: adoption of a pinned gate', () => {
  it('close the Gate, Gate.open the same pin dir: grants and progress in flight are kept and honoured by the new program', async () => {
    const yaml = SSH('7000/tcp, 8000/tcp, 9000/tcp');
    const G = '198.18.11.1'; // granted before
    const P2 = '2001:db8:11::2'; // at step 2 before
    const P1 = '198.18.11.3'; // at step 1 before
    const W = '198.18.11.4'; // web step 1 before
    const X = '198.18.11.5'; // nobody
    await GateHarness.with({ yaml }, async (h) => {
      await h.table([
        stepRow(G, 'ssh', 1, 3, 7000),
        stepRow(G, 'ssh', 2, 3, 8000),
        grantRow(G, 'ssh', 9000),
        stepRow(P2, 'ssh', 1, 3, 7000),
        stepRow(P2, 'ssh', 2, 3, 8000),
        stepRow(P1, 'ssh', 1, 3, 7000),
        stepRow(W, 'web', 1, 2, 7500, 'udp'),
      ]);
      const statsBefore = h.stats();
      const grantsBefore = h.gate.grants();
      h.gate.setDenyTokens(2);
      const gate = h.reopen();
      assert.equal(gate.adopted, true);
      assert.notEqual(gate.progFd, -1);
      assert.deepEqual(
        gate.grants().map((g) => [g.door, g.expiresNs]),
        grantsBefore.map((g) => [g.door, g.expiresNs]),
      );
      assert.deepEqual(gate.doors().map((d) => d.door.name), ['ssh', 'web']);
      const statsAfter = h.stats();
      for (const [k, v] of Object.entries(statsBefore)) assert.equal(statsAfter[k as keyof typeof statsAfter], v, `stat ${k} kept`);
      await h.table([
        granted(G, 22),
        {
          description: `${G}: ACK to 22/tcp passes on the new program`,
          frame: tcpSegment(to(G), 22, TCP_FLAGS.ACK),
          verdict: XDP_PASS,
          counter: 'pass_granted',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
        },
        {
          description: `${X}: 22/tcp: dropped, and the deny tokens set before the reopen are still there (DENY)`,
          frame: syn(X, 22),
          verdict: XDP_DROP,
          counter: 'drop_no_grant',
          map: NO_MAP_UPDATE,
          events: [ev.deny('ssh', 'no_grant', 22)],
          counters: { deny_event: 1 },
        },
        grantRow(P2, 'ssh', 9000),
        granted(P2, 22),
        stepRow(P1, 'ssh', 2, 3, 8000),
        { action: 'the daemon re-applies the same config after adopting', run: (g) => g.apply(yaml) },
        {
          action: 'same slots, same epochs: nothing in flight goes stale',
          run: (g) => {
            assert.deepEqual(g.gate.doors().map((d) => [d.slot, d.door.name, d.door.epoch]), [[0, 'ssh', 1], [1, 'web', 1]]);
            assert.deepEqual(g.gate.progress().map((p) => p.stale), [false, false]);
          },
        },
        grantRow(P1, 'ssh', 9000),
        grantRow(W, 'web', 7600),
        granted(W, 443),
        granted(G, 22),
        {
          description: `${X}: 22/tcp: the last token`,
          frame: syn(X, 22),
          verdict: XDP_DROP,
          counter: 'drop_no_grant',
          map: NO_MAP_UPDATE,
          events: [ev.deny('ssh', 'no_grant', 22)],
          counters: { deny_event: 1 },
        },
        denied(X, 22),
      ]);
    });
  });

  it('adopted twice in a row, with a reconfiguration in between', async () => {
    const A = '198.18.11.11';
    await GateHarness.with({ yaml: SSH('7000/tcp, 8000/tcp, 9000/tcp') }, async (h) => {
      await h.table([stepRow(A, 'ssh', 1, 3, 7000)]);
      h.reopen();
      await h.table([stepRow(A, 'ssh', 2, 3, 8000), apply('open_for 1m', SSH('7000/tcp, 8000/tcp, 9000/tcp', '\n    open_for: 1m'))]);
      h.reopen();
      await h.table([grantRow(A, 'ssh', 9000), granted(A, 22)]);
    });
  });
});
