/**
 * The grant filter (kg_gfilter, docs/DESIGN.md "Grant filter"): a source that holds no grant
 * and no flow is dropped without a hash lookup, and the filter never misses a source that
 * does. What must hold, whoever writes the grant and whenever the filter is rebuilt:
 *   grants/flows written => the source's bits set before the entry is visible
 * Checked here for grants the kernel writes (completed knocks, single-packet knocks) and user
 * space writes (manual grants, the rest of a revoke), for flows written by hand, across rebuilds
 * running in another process at the same time, and across the adoption of a gate pinned without
 * a grant filter (an earlier knockgate).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { progTestRun } from '../../src/bpf/index.js';
import { monoNowNs } from '../../src/kernel/gate.js';
import { MAP } from '../../src/kernel/layout.js';
import { GateHarness, TEST_IFINDEX, XDP_DROP, XDP_PASS, config, to } from '../helpers/gate.js';
import { kernelSuite } from '../helpers/kernel.js';
import { TCP_FLAGS, addrKey, tcpFrom, udpFrom } from '../helpers/packets.js';

const YAML = config(`
  ssh:
    sequence: [7000/tcp, 8000/udp]
    protects: [22/tcp, 5353/udp]
    open_for: 1h
`);
const HOUR_NS = 3_600_000_000_000n;

const src4 = (i: number): string => `198.18.${100 + (i >> 8)}.${i & 255}`;
const src6 = (i: number): string => `2001:db8:6f::${(i + 1).toString(16)}`;

function run(h: GateHarness, frame: Buffer): number {
  return progTestRun(h.gate.progFd, frame, { ifindex: TEST_IFINDEX }).retval;
}

/** The two knocks of door ssh from src (the kernel writes the grant). */
function knock(h: GateHarness, src: string): void {
  assert.equal(run(h, tcpFrom(to(src), 40000, 7000)), XDP_DROP);
  assert.equal(run(h, udpFrom(to(src), 40000, 8000)), XDP_DROP);
}

/** A SYN to the protected port: PASS for a granted source. */
const syn = (h: GateHarness, src: string, sport = 41000): number => run(h, tcpFrom(to(src), sport, 22));

kernelSuite('grant filter (kg_gfilter)', () => {
  it('a fresh gate trusts it; spoofed sources are not in it, granted ones are, whoever granted', async () => {
    await GateHarness.with({ yaml: YAML }, async (h) => {
      const gf = h.gate.gfilter!;
      assert.equal(gf.on, true, 'trusted from the start (no grants yet)');
      assert.equal(gf.fill(), 0, 'empty');
      const before = h.stats();
      for (let i = 0; i < 200; i++) assert.equal(syn(h, src4(i)), XDP_DROP, `${src4(i)}: no grant`);
      assert.equal(h.stats().drop_no_grant - before.drop_no_grant, 200n);
      assert.equal(gf.fill(), 0, 'drops set no bit');

      knock(h, src4(1)); // kernel: a completed sequence
      h.gate.grant(addrKey(src6(2)), h.slotOf('ssh'), HOUR_NS); // user space: a manual grant
      for (const s of [src4(1), src6(2)]) {
        assert.equal(gf.mayHold(addrKey(s)), true, `${s}: in the filter`);
        assert.equal(syn(h, s), XDP_PASS, `${s}: its SYN passes`);
        assert.equal(run(h, tcpFrom(to(s), 41000, 22, TCP_FLAGS.ACK)), XDP_PASS, `${s}: the flow's ACK passes`);
      }
      // A rebuild keeps them (they hold grants and flows) ...
      h.gate.rebuildGrantFilter();
      for (const s of [src4(1), src6(2)]) assert.equal(syn(h, s, 41001), XDP_PASS, `${s}: after a rebuild`);
      // ... and drops the bits of sources that hold nothing any more.
      for (const s of [src4(1), src6(2)]) h.gate.revoke(addrKey(s));
      h.gate.rebuildGrantFilter();
      assert.equal(gf.fill(), 0, 'revoked and rebuilt: empty again');
      for (const s of [src4(1), src6(2)]) {
        assert.equal(gf.mayHold(addrKey(s)), false);
        assert.equal(syn(h, s, 41002), XDP_DROP, `${s}: revoked`);
      }
      h.drainEvents();
    });
  });

  it('the sweep rebuilds it: expired grants lose their bits; live flows keep theirs', async () => {
    await GateHarness.with({ yaml: YAML }, async (h) => {
      const gf = h.gate.gfilter!;
      const slot = h.slotOf('ssh');
      h.gate.grant(addrKey(src4(7)), slot, 1n); // expires at once
      h.gate.grant(addrKey(src4(8)), slot, HOUR_NS);
      assert.equal(syn(h, src4(8)), XDP_PASS, 'opens a flow');
      h.gate.revoke(addrKey(src4(8))); // cuts the grant and the flow
      h.gate.grant(addrKey(src4(9)), slot, HOUR_NS);
      assert.equal(syn(h, src4(9)), XDP_PASS, 'opens a flow');
      h.gate.sweep(monoNowNs() + 1_000_000n);
      assert.equal(gf.mayHold(addrKey(src4(7))), false, 'expired and swept');
      assert.equal(gf.mayHold(addrKey(src4(8))), false, 'revoked');
      assert.equal(gf.mayHold(addrKey(src4(9))), true, 'holds a grant and a flow');
      assert.equal(run(h, tcpFrom(to(src4(9)), 41000, 22, TCP_FLAGS.ACK)), XDP_PASS);
      h.drainEvents();
    });
  });

  it('no granted source is ever dropped while another process rebuilds it without pause', async () => {
    await GateHarness.with({ yaml: YAML, sources: 4096, flows: 4096 }, async (h) => {
      const gf = h.gate.gfilter!;
      const script = fileURLToPath(new URL('../helpers/gfilter-rebuilder.js', import.meta.url));
      const child = spawn(process.execPath, [script, h.pinPath, '4000'], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const done = new Promise<number | null>((resolve) => child.on('exit', resolve));
      const granted: string[] = [];
      const slot = h.slotOf('ssh');
      let i = 0;
      const flips = new Set<number>();
      const t0 = Date.now();
      try {
        while (Date.now() - t0 < 3500 && i < 3000) {
          const s = i % 3 === 0 ? src6(i) : src4(i);
          if (i % 2 === 0) knock(h, s);
          else h.gate.grant(addrKey(s), slot, HOUR_NS);
          granted.push(s);
          assert.equal(syn(h, s), XDP_PASS, `${s} (#${i}): granted, its SYN passes`);
          const old = granted[Math.floor(Math.random() * granted.length)]!;
          assert.equal(run(h, tcpFrom(to(old), 41000, 22, TCP_FLAGS.ACK)), XDP_PASS, `${old}: its flow's ACK still passes`);
          flips.add(gf.cur);
          i++;
          if (i % 50 === 0) await new Promise((r) => setImmediate(r));
        }
      } finally {
        if (child.exitCode === null) await done;
      }
      assert.equal(child.exitCode, 0, 'the rebuilder exited cleanly');
      const rebuilds = Number(out.trim());
      assert.ok(rebuilds >= 2, `the other process rebuilt the filter (${rebuilds} times)`);
      assert.ok(i >= 20, `grants made meanwhile (${i})`);
      // Everything granted is still in the filter after the last rebuild.
      for (const s of granted) assert.equal(gf.mayHold(addrKey(s)), true, `${s}: still in the filter`);
      h.drainEvents();
    });
  });

  it('adopting a gate pinned without a grant filter: built from its grants and flows before it is trusted', async () => {
    await GateHarness.with({ yaml: YAML }, async (h) => {
      knock(h, src4(20));
      h.gate.grant(addrKey(src6(21)), h.slotOf('ssh'), HOUR_NS);
      assert.equal(syn(h, src6(21)), XDP_PASS, 'opens a flow');
      // What an earlier knockgate leaves: no kg_gfilter or kg_spatags pin. Its program keeps
      // granting meanwhile into maps the next filter knows nothing of.
      for (const name of [MAP.GFILTER, MAP.SPATAGS]) rmSync(`${h.pinPath}/maps/${name}`);
      knock(h, src4(22));
      h.drainEvents();
      const g = h.reopen();
      assert.equal(g.adopted, true);
      for (const name of [MAP.GFILTER, MAP.SPATAGS]) assert.ok(existsSync(`${h.pinPath}/maps/${name}`), `${name} pinned again`);
      assert.equal(g.gfilter!.on, true, 'trusted once built');
      for (const s of [src4(20), src6(21), src4(22)]) {
        assert.equal(g.gfilter!.mayHold(addrKey(s)), true, `${s}: in the new filter`);
        assert.equal(syn(h, s, 42000), XDP_PASS, `${s}: its grant still opens`);
      }
      assert.equal(run(h, tcpFrom(to(src6(21)), 41000, 22, TCP_FLAGS.ACK)), XDP_PASS, 'the flow from before still passes');
      assert.equal(syn(h, src4(23)), XDP_DROP, 'a stranger is still dropped');
      h.drainEvents();
    });
  });
});
