/**
 * Eviction resistance (docs/DESIGN.md "Eviction resistance"), through BPF_PROG_TEST_RUN: a
 * flood of spoofed first knocks from ten times limits.sources distinct sources, between a real
 * client's knocks, does not cost the client its progress. First knocks live in kg_probation
 * (exact, evictable) and in the first-knock filter (nothing evicts it); kg_progress only holds
 * sources that made two correct steps, which a flood of first knocks never inserts. And what
 * the filter does not give away: a source that never knocked does not pass for one that did
 * (but when the filter says yes to everyone, as under an overwhelming flood, it only saves a
 * source the first step: allow_from, resets, epochs and the remaining steps still hold).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { kernelSuite } from '../helpers/kernel.js';
import { GateHarness, NO_EVENT, NO_MAP_UPDATE, XDP_DROP, XDP_PASS, config, ev, to, knockNoop as nothing, type Entry, type Row } from '../helpers/gate.js';
import { ETH_HLEN, addrKey, tcpSyn, udpDatagram } from '../helpers/packets.js';
import { KG, MAP } from '../../src/kernel/layout.js';

/**
 * A blocked Bloom filter's false-positive rate for `keys` keys spread over `blocks` blocks of
 * KG.FK_BITS bits, KG.FK_HASHES bits a key (the keys of one window, in one half of each block):
 * the Poisson-weighted mean over a block's load.
 */
function bloomFalsePositive(keys: number, blocks: number): number {
  const load = keys / blocks;
  let p = Math.exp(-load);
  let fp = 0;
  for (let j = 0; j < 200; j++) {
    if (j > 0) p *= load / j;
    fp += p * (1 - (1 - 1 / KG.FK_BITS) ** (KG.FK_HASHES * j)) ** KG.FK_HASHES;
  }
  return fp;
}

const SOURCES = 1024;
const FLOOD_SOURCES = 10 * SOURCES;

const syn = (src: string, port: number): Buffer => tcpSyn(to(src), port);
const udp = (src: string, port: number): Buffer => udpDatagram(to(src), port, Buffer.from('knock'));

// Timeouts far longer than any flood here takes, even under emulation (the 6.1 matrix runs
// under TCG, where a flood of 10x limits.sources takes tens of seconds): a first knock must not
// age out of the filter while the flood between the steps runs.
const YAML = config(`
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [22/tcp]
    step_timeout: 2m
    sequence_timeout: 5m
`);

const step1 = (src: string): Row => ({
  description: `${src}: 7000/tcp: step 1 (an exact record in kg_probation, and the filter)`,
  frame: syn(src, 7000),
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: { progress: { [src]: { ssh: 1 } } },
  events: [ev.knock('ssh', 1, 3, 7000)],
  counters: { knock_step: 1 },
});
const step2 = (src: string, fromFilter: boolean): Row => ({
  description: `${src}: 8000/udp: step 2${fromFilter ? ', on the first-knock filter alone (its record was evicted)' : ''}`,
  frame: udp(src, 8000),
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: { progress: { [src]: { ssh: 2 } } },
  events: [ev.knock('ssh', 2, 3, 8000, 'udp')],
  counters: fromFilter ? { knock_step: 1, step_from_filter: 1 } : { knock_step: 1 },
});
const step3 = (src: string): Row => ({
  description: `${src}: 9000/tcp: GRANT`,
  frame: syn(src, 9000),
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: { progress: { [src]: {} }, grants: { [src]: ['ssh'] } },
  events: [ev.grant('ssh', 9000)],
  counters: { grant: 1 },
});
/**
 * `count` SYNs to 7000/tcp (the first step) from spoofed sources 2001:db8:f::/96 + (first + i)
 * mod FLOOD_SOURCES: one BPF_PROG_TEST_RUN each, the frame's source rewritten in place.
 */
function flood(h: GateHarness, count: number, first = 0, prefix = '2001:db8:f::'): void {
  const frame = tcpSyn({ src: prefix, dst: '2001:db8:ffff::1' }, 7000);
  const at = ETH_HLEN + 8 + 12; // the last 32 bits of the IPv6 source
  for (let i = 0; i < count; i++) {
    frame.writeUInt32BE((first + i) % FLOOD_SOURCES, at);
    assert.equal(h.runFast(frame), XDP_DROP);
  }
}

/**
 * After a flood, floods more (as floodEntry) until the exact first-knock records of `victims`
 * are gone: BPF's LRU gives a recently used entry a second chance, so one pass of 10x
 * limits.sources usually, not always, evicts it. At most 10 passes, each from sources no
 * earlier pass used (a source still in the table would only be looked up, not inserted, and
 * how much a repeated pass churns the LRU then depends on which CPU runs it).
 */
const floodUntilEvicted = (victims: string[]): Entry => ({
  action: `flood: spoofed first knocks from ${FLOOD_SOURCES} distinct sources until the records of ${victims.join(', ')} are evicted`,
  run: (h) => {
    const left = (): string[] => victims.filter((v) => h.gate.map(MAP.PROBATION).lookup(addrKey(v)) !== null);
    let passes = 0;
    for (; passes < 10 && left().length > 0; passes++) flood(h, FLOOD_SOURCES, 0, `2001:db8:f${passes + 1}::`);
    // What the rows after this one test is that the filter stands in for a record that is
    // gone, not how the LRU picks its victims: under emulation (the 6.1 matrix, TCG) the LRU's
    // second chance has kept a record through 10 passes. Remove what is left by hand then, as
    // an eviction would.
    for (const v of left()) h.gate.map(MAP.PROBATION).delete(addrKey(v));
    assert.deepEqual(left(), [], `still there after ${passes} passes of ${FLOOD_SOURCES} and a delete`);
  },
});

const floodEntry = (count: number, first = 0): Entry => ({
  action: `flood: ${count} spoofed first knocks from ${Math.min(count, FLOOD_SOURCES)} distinct sources`,
  run: (h) => {
    const before = h.stats();
    flood(h, count, first);
    const after = h.stats();
    // A source of an earlier flood whose exact record is still there knocks again: a retransmission.
    const steps = Number(after.knock_step - before.knock_step);
    assert.equal(steps + Number(after.retransmit - before.retransmit), count, 'every spoofed first knock counted as a step (or a repeat of one)');
    assert.equal(Number(after.drop_knock - before.drop_knock), count);
    // (on a slow machine a record may also time out before its source knocks again: a reset, whose event is budgeted too)
    const resets = Number(after.reset_step_timeout - before.reset_step_timeout);
    assert.equal(Number(after.knock_suppressed - before.knock_suppressed), steps + resets, 'their events were not emitted (no knock tokens)');
  },
});

kernelSuite('eviction: first-knock floods against real clients (BPF_PROG_TEST_RUN)', () => {
  it(`a flood of first knocks from ${FLOOD_SOURCES} sources (10x limits.sources) between step 1 and step 2 evicts the exact record, not the knock`, async () => {
    const C = '198.18.20.1';
    const C6 = '2001:db8:20::1';
    await GateHarness.with({ yaml: YAML, sources: SOURCES }, async (h) => {
      await h.table([
        step1(C),
        step1(C6),
        { action: 'no knock tokens from here on: the flood must not fill the ring', run: (g) => g.gate.setKnockTokens(0) },
        floodEntry(FLOOD_SOURCES),
        floodUntilEvicted([C, C6]),
        {
          action: `the exact records of ${C} and ${C6} were evicted; kg_probation is full; kg_progress is empty`,
          run: (g) => {
            const fill = g.gate.mapFill();
            assert.ok((fill.find((m) => m.map === MAP.PROBATION)?.entries ?? 0) >= SOURCES / 2, JSON.stringify(fill));
            assert.equal(fill.find((m) => m.map === MAP.PROGRESS)?.entries, 0, 'a first knock never inserts into kg_progress');
            assert.deepEqual(g.progressOf(C), {});
          },
        },
        step2(C, true),
        step2(C6, true),
        floodEntry(FLOOD_SOURCES, 5000),
        {
          action: 'kg_progress still holds exactly the two real clients: the flood cannot reach it',
          run: (g) => {
            assert.deepEqual([...g.gate.map(MAP.PROGRESS).keys()].map((k) => k.toString('hex')).sort(), [addrKey(C), addrKey(C6)].map((k) => k.toString('hex')).sort());
          },
        },
        step3(C),
        step3(C6),
      ]);
      assert.deepEqual(h.grantsOf(C), ['ssh']);
      assert.deepEqual(h.grantsOf(C6), ['ssh']);
    });
  });

  it('100 real clients, each knocking through floods between every step: all of them open the door', async () => {
    await GateHarness.with({ yaml: YAML, sources: SOURCES, knockTokens: 0 }, async (h) => {
      const clients = Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? `198.18.21.${i / 2 + 1}` : `2001:db8:21::${i.toString(16)}`));
      const before = h.stats();
      let f = 0;
      const opened: string[] = [];
      for (const c of clients) {
        assert.equal(h.runFast(syn(c, 7000)), XDP_DROP);
        flood(h, 2 * SOURCES, f);
        f += 2 * SOURCES;
        assert.equal(h.runFast(udp(c, 8000)), XDP_DROP);
        flood(h, 2 * SOURCES, f);
        f += 2 * SOURCES;
        assert.equal(h.runFast(syn(c, 9000)), XDP_DROP);
        // checked at once: on a slow machine the first grants (30s) end before the last client knocks
        if (h.grantsOf(c).includes('ssh')) opened.push(c);
      }
      const after = h.stats();
      assert.equal(opened.length, clients.length, `opened: ${opened.length} of ${clients.length}`);
      // 2 * limits.sources inserts churn most clients' exact records out: their second step
      // came from the filter (the LRU keeps a recently used entry a while longer, so not all).
      const fromFilter = Number(after.step_from_filter - before.step_from_filter);
      assert.ok(fromFilter > 0, 'the filter was what let them through');
      console.log(`# ${fromFilter} of ${clients.length} second steps came from the filter`);
      assert.equal(Number(after.grant - before.grant), clients.length);
      h.drainEvents();
    });
  });

  it('a source that never knocked does not pass for one that did, flood or not', async () => {
    const C = '198.18.22.1';
    const N = '198.18.22.2';
    const N6 = '2001:db8:22::2';
    await GateHarness.with({ yaml: YAML, sources: SOURCES }, async (h) => {
      await h.table([
        step1(C),
        { action: 'quiet flood', run: (g) => g.gate.setKnockTokens(0) },
        floodEntry(FLOOD_SOURCES),
        floodUntilEvicted([C]),
        { action: 'tokens back', run: (g) => g.gate.setKnockTokens(1_000_000) },
        nothing(`${N}: 8000/udp without a first knock: nothing (the filter says no)`, udp(N, 8000)),
        nothing(`${N6}: 8000/udp without a first knock: nothing`, udp(N6, 8000)),
        step2(C, true),
        {
          // How many keys the flood put in depends on how many passes eviction took (one here,
          // up to ten under TCG, where the LRU's second chance keeps a record longer): the
          // bound is the blocked Bloom filter's own for that many keys, not a constant.
          action: 'the filter holds every first knock of the flood: its false-positive estimate is what a blocked Bloom filter of its size gives for that many keys',
          run: (g) => {
            const f = g.gate.filterState(1 << 20);
            const keys = Number(g.stats().knock_step);
            const bound = bloomFalsePositive(keys, f.blocks);
            assert.ok(f.fill > 0, String(f.fill));
            assert.ok(f.fill <= (keys * KG.FK_HASHES) / (f.blocks * 2 * KG.FK_BITS), `fill ${f.fill}: more bits than ${keys} keys set`);
            assert.ok(f.falsePositive < 2 * bound, `false positives ${f.falsePositive} for ${keys} keys in ${f.blocks} blocks (a Bloom filter gives ${bound}); fill ${f.fill}`);
            assert.ok(bound < 1e-3, `the test's filter is too small for ${keys} keys (${bound})`);
          },
        },
      ]);
    });
  });

  it('the filter remembers a first knock for one to two windows (the longest step_timeout), then forgets it', async () => {
    const yaml = config(`
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [22/tcp]
    step_timeout: 200ms
`);
    const C = '198.18.23.1';
    await GateHarness.with({ yaml, sources: SOURCES }, async (h) => {
      assert.equal(h.gate.filterWindowNs(), 200_000_000n);
      await h.table([
        step1(C),
        { action: 'quiet flood', run: (g) => g.gate.setKnockTokens(0) },
        floodEntry(FLOOD_SOURCES),
        floodUntilEvicted([C]),
        { action: 'tokens back', run: (g) => g.gate.setKnockTokens(1_000_000) },
        { pause: 600, why: 'past two filter windows (2 x 200ms) with a margin' },
        nothing(`${C}: 8000/udp after 600ms: the exact record is gone, and so is the filter's`, udp(C, 8000)),
      ]);
    });
  });

  it('a change of the door’s knock rules (a new epoch) voids first knocks in the filter too', async () => {
    const C = '198.18.26.1';
    await GateHarness.with({ yaml: YAML, sources: SOURCES }, async (h) => {
      await h.table([
        step1(C),
        { action: 'quiet flood', run: (g) => g.gate.setKnockTokens(0) },
        floodEntry(FLOOD_SOURCES),
        floodUntilEvicted([C]),
        { action: 'tokens back', run: (g) => g.gate.setKnockTokens(1_000_000) },
        { action: 'ssh’s rules change (step_timeout 4s): a new epoch', run: (g) => g.apply(YAML.replace('step_timeout: 2m', 'step_timeout: 4s')) },
        nothing(`${C}: 8000/udp: its first knock was made under the old rules (the filter is keyed by epoch): nothing`, udp(C, 8000)),
      ]);
    });
  });

  it('when the filter says yes to everyone: only the first step is skipped; allow_from, resets and epochs still hold', async () => {
    const yaml = config(`
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [22/tcp]
  guarded:
    sequence: [7100/tcp, 8100/udp]
    protects: [2200/tcp]
    allow_from: [198.18.24.0/24]
`);
    const N = '198.18.24.1'; // never knocked
    const R = '198.18.24.2'; // knocked, then reset
    const O = '198.18.25.1'; // outside guarded's allow_from
    await GateHarness.with({ yaml, sources: SOURCES }, async (h) => {
      await h.table([
        step1(R),
        {
          description: `${R}: 80/tcp: a wrong port: reset (the record says so)`,
          frame: syn(R, 80),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [R]: {} } },
          events: [ev.reset('ssh', 1, 'wrong_port', 80)],
          counters: { reset_wrong_port: 1 },
        },
        { action: 'saturate the filter: every source looks as if it had knocked', run: (g) => g.saturateFilter() },
        step2(N, true),
        step3(N),
        nothing(`${R}: 8000/udp: its record says its first knock was reset: the filter does not stand in`, udp(R, 8000)),
        nothing(`${O}: 8100/udp from outside guarded’s allow_from: not_allowed, even on a yes from the filter`, udp(O, 8100), { not_allowed: 1 }),
        {
          description: `${N}: 8100/udp (inside allow_from): guarded’s two steps done on the filter: GRANT`,
          frame: udp(N, 8100),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { grants: { [N]: ['guarded', 'ssh'] }, progress: { [N]: {} } },
          events: [ev.grant('guarded', 8100, 'udp')],
          counters: { grant: 1, step_from_filter: 1 },
        },
        nothing(`${R}: 9000/tcp: no progress, nothing (the remaining steps still have to be right)`, syn(R, 9000)),
      ]);
    });
  });
});
