/**
 * Reconfiguration through Gate.applyDoors (docs/DESIGN.md, "Generations") and adoption of a
 * pinned gate by a second Gate.open, judged by the program itself through BPF_PROG_TEST_RUN:
 * epochs (progress made under old knock rules starts over, progress survives a change of
 * open_for only), removed doors lose their grants, doors keep their slots, and grants and
 * progress in flight survive a close + open on the same pin dir.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { it } from 'node:test';
import { rmSync } from 'node:fs';
import { kernelSuite, withPinDir } from '../helpers/kernel.js';
import { Gate, GateError, removePins } from '../../src/kernel/gate.js';
import {
  FlowBook,
  GateHarness,
  silentLogger,
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
import { TCP_FLAGS, addrKey, tcpFrom, tcpSyn, udpDatagram } from '../helpers/packets.js';
import { MAP, decodeGrant } from '../../src/kernel/layout.js';

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
/** Flows opened by granted SYNs; every test uses sources of its own. */
const book = new FlowBook();
/** A new connection (SYN from a fresh source port) that the grant lets in: a new flow. */
const granted = (src: string, port: number): Row =>
  book.opens(`${src}: ${port}/tcp passes (granted), opens a flow`, src, port, (sport) => tcpFrom(to(src), sport, port));
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
    sequence: [7001/tcp, 7003/tcp]
    protects: [22/tcp]
  b:
    sequence: [7005/tcp, 7007/tcp]
    protects: [22/tcp, 2200/tcp]
  c:
    sequence: [7009/udp, 7011/udp]
    protects: [3300/tcp]
`);
    const yaml2 = config(`
  b:
    sequence: [7005/tcp, 7007/tcp]
    protects: [22/tcp, 2200/tcp]
`);
    const A = '198.18.10.31'; // granted on a only
    const B = '198.18.10.32'; // granted on a and b
    const C = '2001:db8:10::33'; // granted on c only
    const D = '198.18.10.34'; // midway on a
    await GateHarness.with({ yaml: yaml3 }, async (h) => {
      await h.table([
        stepRow(A, 'a', 1, 2, 7001),
        grantRow(A, 'a', 7003),
        stepRow(B, 'a', 1, 2, 7001),
        grantRow(B, 'a', 7003),
        stepRow(B, 'b', 1, 2, 7005),
        grantRow(B, 'b', 7007, ['a', 'b']),
        stepRow(C, 'c', 1, 2, 7009, 'udp'),
        grantRow(C, 'c', 7011, ['c'], 'udp'),
        stepRow(D, 'a', 1, 2, 7001),
        granted(A, 22),
        granted(C, 3300),
        // Removing a door cuts the flows its grants opened too.
        book.gone(A, book.gone(C, apply('doors a and c removed, b kept', yaml2))),
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
          description: `${D}: 7003/tcp (a’s last step, a removed): an unrelated port; the stale progress goes (wrong-port path, no event)`,
          frame: syn(D, 7003),
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

  it('with every slot taken, a replaced door’s slot is reused in the same reload: the old door’s grants do not open the new door', async () => {
    const doors = (names: string[]): string =>
      config(
        '\n' +
          names
            .map((n, i) => `  ${n}:\n    sequence: [${20000 + i * 10}/tcp, ${20005 + i * 10}/udp]\n    protects: [${30000 + i}/tcp]\n`)
            .join(''),
      );
    const v1 = Array.from({ length: 16 }, (_, i) => `d${i}`);
    const v2 = v1.map((n) => (n === 'd5' ? 'x' : n));
    const S = '198.18.10.71';
    await GateHarness.with({ yaml: doors(v1) }, async (h) => {
      await h.table([
        stepRow(S, 'd5', 1, 2, 20050),
        grantRow(S, 'd5', 20055, ['d5'], 'udp'),
        granted(S, 30005),
        book.gone(S, apply('d5 replaced by x (all 16 slots in use)', doors(v2))),
        { action: 'x took slot 5', run: (g) => assert.equal(g.slotOf('x'), 5) },
        { action: `${S} holds no grant`, run: (g) => assert.deepEqual(g.grantsOf(S), []) },
        denied(S, 30005),
      ]);
    });
  });

  it('a knock that completes while a reload removes its door leaves no grant behind (DESIGN step 4: cut grants after the switch)', async () => {
    // A second process (started here, killed by its pid in a finally) runs the pinned program
    // on the one-step knock of door "one" without pause, so that a knock may complete at any
    // moment of applyDoors. After applyDoors has removed "one" and returned, the active
    // generation has no door in slot 0 and no running program still judges against the old
    // one (waitForPrograms), so no program can write a slot-0 grant any more: whatever is left
    // in slot 0 was written during the reload and was never cut. On a correct gate this holds
    // in every cycle whatever the timing; a gate that cuts the grants before switching
    // generations loses the race in about one cycle in five here, so 40 cycles find it.
    const withOne = config(`
  one:
    sequence: [7777/udp]
    protects: [2777/tcp]
  keep:
    sequence: [7000/tcp, 8000/tcp]
    protects: [22/tcp]
`);
    const without = config(`
  keep:
    sequence: [7000/tcp, 8000/tcp]
    protects: [22/tcp]
`);
    const withX = config(`
  keep:
    sequence: [7000/tcp, 8000/tcp]
    protects: [22/tcp]
  x:
    sequence: [7400/tcp, 7401/udp]
    protects: [4444/tcp]
`);
    const S = '198.18.10.61';
    await GateHarness.with({ yaml: withOne }, async (h) => {
      assert.equal(h.slotOf('one'), 0);
      const dist = new URL('../../', import.meta.url).pathname;
      const code = `
        import { libbpf } from ${JSON.stringify(`${dist}src/bpf/libbpf.js`)};
        import { progTestRun } from ${JSON.stringify(`${dist}src/bpf/index.js`)};
        const fd = libbpf().bpf_obj_get(${JSON.stringify(`${h.pinPath}/prog`)});
        if (fd < 0) throw new Error('bpf_obj_get: ' + fd);
        const frame = Buffer.from(${JSON.stringify(udp(S, 7777).toString('hex'))}, 'hex');
        process.stdout.write('ready\\n');
        const end = Date.now() + 30000; // bounded even if nobody stops it
        while (Date.now() < end) progTestRun(fd, frame);
      `;
      const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
      let leftover = 0n;
      let cycles = 0;
      try {
        await Promise.race([
          once(child.stdout, 'data'),
          once(child, 'exit').then(() => {
            throw new Error('the knocking process exited before it was ready');
          }),
        ]);
        for (; cycles < 40 && leftover === 0n; cycles++) {
          h.apply(withOne);
          h.apply(without);
          const v = h.gate.map(MAP.GRANTS).lookup(addrKey(S));
          leftover = v ? (decodeGrant(v)[0] ?? 0n) : 0n;
        }
      } finally {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = once(child, 'exit');
          child.kill();
          await exited;
        }
      }
      h.drainEvents(); // the knocking process's GRANT events (and lost ones): not under test here
      if (leftover !== 0n) {
        // What the leftover does: the next door that takes slot 0 is open to S, who never knocked on it.
        h.apply(withX);
        const xSlot = h.slotOf('x');
        const verdict = h.runFast(syn(S, 4444));
        h.drainEvents();
        assert.fail(
          `after applyDoors removed door "one" (slot 0) in reload cycle ${cycles}, ${S} still held a live grant for slot 0 ` +
            `(expires_ns ${leftover}): a knock completed between the grant cut and the generation switch. ` +
            `Door "x", added later, took slot ${xSlot}, and 4444/tcp (x's port) from ${S}, which never knocked on x, ` +
            `gets ${verdict === XDP_PASS ? 'XDP_PASS' : 'XDP_DROP'}.`,
        );
      }
      assert.deepEqual(h.grantsOf(S), []);
    });
  });

  it('a door keeps its slot across reloads (reordered, others added and removed), and its progress with it', async () => {
    const A = '198.18.10.41';
    const v1 = config(`
  a:
    sequence: [7001/tcp, 7003/tcp, 7005/tcp]
    protects: [22/tcp]
  b:
    sequence: [7101/tcp, 7103/tcp]
    protects: [2200/tcp]
  c:
    sequence: [7201/tcp, 7203/tcp]
    protects: [3300/tcp]
`);
    const v2 = config(`
  new:
    sequence: [7301/tcp, 7303/tcp]
    protects: [4400/tcp]
  c:
    sequence: [7201/tcp, 7203/tcp]
    protects: [3300/tcp]
  a:
    sequence: [7001/tcp, 7003/tcp, 7005/tcp]
    protects: [22/tcp]
`);
    const v3 = config(`
  a:
    sequence: [7001/tcp, 7003/tcp, 7005/tcp]
    protects: [22/tcp]
  later:
    sequence: [7401/tcp, 7403/tcp]
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
        stepRow(A, 'a', 2, 3, 7003),
        apply('c and new removed, "later" added', v3),
        {
          action: 'a keeps 0; "later" takes slot 1, the lowest slot empty in the active generation (b’s, freed one reload ago)',
          run: (g) => assert.deepEqual(slots(g), { a: 0, later: 1 }),
        },
        grantRow(A, 'a', 7005),
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
        granted(G, 22),
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
        book.on(`${G}: ACK on the connection opened before the reopen passes on the new program (its flow was kept)`, G, 22, (sport) =>
          tcpFrom(to(G), sport, 22, TCP_FLAGS.ACK),
        ),
        granted(G, 22),
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

  it('a gate pinned by another version (a map missing, or other sizes) is refused with what to do; removing its pins detaches it', async () => {
    await withPinDir((dir) => {
      const pinPath = `${dir}/gate`;
      const opts = { pinPath, sources: 1024, flows: 1024, firstKnockFilterBytes: 1 << 20, eventRingBytes: 64 * 1024, logger: silentLogger };
      Gate.open(opts).close();
      assert.throws(() => Gate.open({ ...opts, flows: 2048 }), (err: unknown) => {
        assert.ok(err instanceof GateError);
        assert.match(err.message, /was loaded with limits\.flows = 1024, the config asks for 2048: a live gate cannot be resized/);
        return true;
      });
      assert.throws(() => Gate.open({ ...opts, firstKnockFilterBytes: 1 << 21 }), /limits\.first_knock_filter = 1048576 bytes, the config asks for 2097152 bytes/);
      rmSync(`${pinPath}/maps/kg_flows`); // as a gate of a version without flows would have it
      for (const attempt of [() => Gate.open(opts), () => Gate.openPinned(pinPath, silentLogger)]) {
        assert.throws(attempt, (err: unknown) => {
          assert.ok(err instanceof GateError);
          assert.match(err.message, /has another layout \(no map kg_flows\): it was loaded by another knockgate version; run `knockgate detach/);
          return true;
        });
      }
      removePins(pinPath);
      Gate.open(opts).destroy();
    });
  });
});
