/**
 * Parts 1 and 2: per-packet cost through BPF_PROG_TEST_RUN, against a bare XDP_DROP and a bare
 * XDP_PASS program measured in the same run; and the same with 1 .. 1M entries in the
 * progress and grant maps.
 *
 * Method.
 *  - repeat classes: one BPF_PROG_TEST_RUN call with `repeat` runs of the same frame; the kernel
 *    reports the average per run (integer ns). `runs` calls per class; in each round the order
 *    of baselines and classes is rotated, so baseline and candidate alternate.
 *  - single-run classes (advance, wrong): a sample = put the source back at step 1 (one map
 *    update from user space), then one run (repeat 1). Sample by sample, the bare XDP_DROP
 *    program is run the same way (same map update before it, order alternating), so both see
 *    the same syscall and cache disturbance. Per round the 10%-trimmed means are taken; the
 *    class costs  bare XDP_DROP (repeat) + (mean single-run gate - mean single-run bare drop).
 *    The same is done for the flood class as a check of the method (it can be measured both ways).
 *  - spread sources (part 2): bench_gen_chain (test/fixtures/bench-gen.bpf.c) rewrites the
 *    source of every run (a permutation of a range) and tail-calls the program under test, so
 *    each run looks up another source, as in a real flood; cost = bare XDP_DROP (repeat) +
 *    (chain -> gate) - (chain -> bare XDP_DROP).
 */
import { BPF_ANY, RingBufferReader } from '../src/bpf/index.js';
import { SIZEOF } from '../src/kernel/layout.js';
import { addrKey } from '../test/helpers/packets.js';
import { GRANTED_SPORT, GW, packetClasses, frameFor, type PacketClass } from './classes.js';
import { loadGen } from './gen.js';
import { MAP, PORTS, flowKey, flowValue, grantValue, loadBaseProgs, monoNowNs, openBenchGate, progressValue, statsDelta, verdictOf, type BaseProgs, type BenchGate } from './gate.js';
import { median, rotate, summarize, trimmedMean, type Summary } from './stats.js';
import { mapMemlock } from './sys.js';
import { XDP, testRun } from './testrun.js';

export interface CostParams {
  repeat: number;
  runs: number;
  /** single-run samples per round and class */
  samples: number;
}

export interface Versus {
  diffNs: number;
  ratio: number;
}

export interface ClassCost {
  id: string;
  kind: string;
  family: number;
  label: string;
  mode: 'repeat' | 'single' | 'spread';
  expected: string;
  observed: string | null;
  verdictOk: boolean;
  ns: Summary;
  vsDrop: Versus;
  vsPass: Versus;
}

export interface CostResult {
  params: CostParams;
  baselines: { drop: Summary; pass: Summary };
  classes: ClassCost[];
  methodCheck: {
    /** flood, IPv4, measured with repeat */
    floodRepeatNs: number;
    /** flood, IPv4, measured sample by sample as the single-run classes are */
    floodSingleNs: number;
    /** what one single run costs beyond the program itself (timer, cold caches), bare XDP_DROP */
    singleRunOverheadNs: number;
  };
  seconds: number;
}

const ACTION = { drop: XDP.DROP, pass: XDP.PASS } as const;

function versus(x: number, base: number): Versus {
  return { diffNs: x - base, ratio: base > 0 ? x / base : NaN };
}

/** Paired by round (both measured within the same rotation): medians of differences and ratios. */
function versusRuns(xs: readonly number[], base: readonly number[]): Versus {
  const d = xs.map((x, i) => x - (base[i] ?? NaN));
  const r = xs.map((x, i) => x / (base[i] ?? NaN));
  return { diffNs: median(d), ratio: median(r) };
}

/** Check that a class ends where DESIGN.md says it does; returns the verdict seen. */
function checkClass(bg: BenchGate, c: PacketClass): { observed: string | null; ok: boolean } {
  c.prepare?.();
  const a = bg.gate.stats();
  const r = testRun(bg.gate.progFd, c.frame);
  const b = bg.gate.stats();
  const observed = verdictOf(a, b);
  const d = statsDelta(a, b);
  const ok = observed === c.expect && r.retval === ACTION[c.action] && (c.expectCounter === undefined || d[c.expectCounter] === 1);
  return { observed, ok };
}

interface Subject {
  key: string;
  fd: number;
  frame: Buffer;
  before?: () => void;
}

/** Each subject `runs` times with `repeat`, order rotated per round; kernel ns per run. */
function measureRepeat(subjects: readonly Subject[], runs: number, repeat: number): Map<string, number[]> {
  const out = new Map<string, number[]>(subjects.map((s) => [s.key, []]));
  for (const s of subjects) {
    s.before?.();
    testRun(s.fd, s.frame, { repeat: Math.max(1, Math.floor(repeat / 10)) }); // warm up
  }
  for (let r = 0; r < runs; r++) {
    for (const s of rotate(subjects, r)) {
      s.before?.();
      out.get(s.key)!.push(testRun(s.fd, s.frame, { repeat }).durationNs);
    }
  }
  return out;
}

/**
 * Single-run sampling: per round, `samples` pairs (candidate, bare drop) with the same
 * prepare() before each; returns per-round trimmed means of both.
 */
function measureSingle(
  cands: readonly { key: string; fd: number; frame: Buffer; prepare: () => void }[],
  dropFd: number,
  runs: number,
  samples: number,
  drain: () => void,
): Map<string, { cand: number[]; base: number[] }> {
  const out = new Map(cands.map((c) => [c.key, { cand: [] as number[], base: [] as number[] }]));
  for (let r = 0; r < runs; r++) {
    for (const c of rotate(cands, r)) {
      const cs: number[] = [];
      const bs: number[] = [];
      for (let k = 0; k < samples; k++) {
        if (((k + r) & 1) === 0) {
          c.prepare();
          cs.push(testRun(c.fd, c.frame).durationNs);
          c.prepare();
          bs.push(testRun(dropFd, c.frame).durationNs);
        } else {
          c.prepare();
          bs.push(testRun(dropFd, c.frame).durationNs);
          c.prepare();
          cs.push(testRun(c.fd, c.frame).durationNs);
        }
        if ((k & 1023) === 1023) drain();
      }
      drain();
      const o = out.get(c.key)!;
      o.cand.push(trimmedMean(cs));
      o.base.push(trimmedMean(bs));
    }
  }
  return out;
}

/** Drains the gate's event ring (as the daemon would), so knocks never find it full. */
function eventDrain(bg: BenchGate): { drain: () => void; close: () => void } {
  const reader = new RingBufferReader(bg.gate.map(MAP.EVENTS).fd, () => undefined).unref();
  return { drain: () => void reader.consume(), close: () => reader.close() };
}

/** Measures every class against the baselines on a loaded gate (parts 1 and 2 share this). */
function measureClasses(
  bg: BenchGate,
  base: BaseProgs,
  classes: readonly PacketClass[],
  p: CostParams,
  withMethodCheck: boolean,
): { baselines: { drop: Summary; pass: Summary }; classes: ClassCost[]; methodCheck?: CostResult['methodCheck'] } {
  const checks = new Map(classes.map((c) => [c.id, checkClass(bg, c)]));
  const ev = eventDrain(bg);
  try {
    const anyFrame = classes[0]!.frame;
    const repeatClasses = classes.filter((c) => c.mode === 'repeat');
    const subjects: Subject[] = [
      { key: 'drop', fd: base.drop, frame: anyFrame },
      { key: 'pass', fd: base.pass, frame: anyFrame },
      ...repeatClasses.map((c) => ({ key: c.id, fd: bg.gate.progFd, frame: c.frame })),
    ];
    const rep = measureRepeat(subjects, p.runs, p.repeat);
    const drop = summarize(rep.get('drop')!);
    const pass = summarize(rep.get('pass')!);

    const progress = bg.gate.map(MAP.PROGRESS);
    const dummyKey = addrKey('2001:db8:ffff::1');
    const dummyValue = Buffer.alloc(SIZEOF.progress);
    const singles = classes
      .filter((c) => c.mode === 'single')
      .map((c) => ({ key: c.id, fd: bg.gate.progFd, frame: c.frame, prepare: c.prepare ?? (() => undefined) }));
    const flood4 = classes.find((c) => c.id === 'flood-v4');
    if (withMethodCheck && flood4) {
      singles.push({
        key: 'method-check',
        fd: bg.gate.progFd,
        frame: flood4.frame,
        prepare: () => progress.update(dummyKey, progressValue(bg.slot, bg.epoch, 1, monoNowNs(), dummyValue), BPF_ANY),
      });
    }
    const single = measureSingle(singles, base.drop, p.runs, p.samples, ev.drain);

    const out: ClassCost[] = [];
    const dropRuns = rep.get('drop')!;
    const passRuns = rep.get('pass')!;
    for (const c of classes) {
      let ns: Summary;
      let vsDrop: Versus;
      let vsPass: Versus;
      if (c.mode === 'repeat') {
        const runs = rep.get(c.id)!;
        ns = summarize(runs);
        vsDrop = versusRuns(runs, dropRuns);
        vsPass = versusRuns(runs, passRuns);
      } else {
        const s = single.get(c.id)!;
        ns = summarize(s.cand.map((v, i) => drop.median + v - (s.base[i] ?? NaN)));
        vsDrop = versus(ns.median, drop.median);
        vsPass = versus(ns.median, pass.median);
      }
      const chk = checks.get(c.id)!;
      out.push({
        id: c.id,
        kind: c.kind,
        family: c.family,
        label: c.label,
        mode: c.mode,
        expected: c.expect,
        observed: chk.observed,
        verdictOk: chk.ok,
        ns,
        vsDrop,
        vsPass,
      });
    }
    let methodCheck: CostResult['methodCheck'] | undefined;
    const mc = single.get('method-check');
    if (mc && flood4) {
      methodCheck = {
        floodRepeatNs: summarize(rep.get(flood4.id)!).median,
        floodSingleNs: median(mc.cand.map((v, i) => drop.median + v - (mc.base[i] ?? NaN))),
        singleRunOverheadNs: median(mc.base) - drop.median,
      };
    }
    return methodCheck ? { baselines: { drop, pass }, classes: out, methodCheck } : { baselines: { drop, pass }, classes: out };
  } finally {
    ev.close();
  }
}

// ---- part 1 -------------------------------------------------------------------------------

export function runCost(id: string, p: CostParams): CostResult {
  const t0 = Date.now();
  const base = loadBaseProgs();
  let bg: BenchGate | null = null;
  try {
    bg = openBenchGate({ pinPath: `/sys/fs/bpf/kg-bench-${id}-cost`, iface: 'kg-bench0', sources: 65536 });
    const classes = packetClasses(bg);
    const r = measureClasses(bg, base, classes, p, true);
    return {
      params: p,
      baselines: r.baselines,
      classes: r.classes,
      methodCheck: r.methodCheck ?? { floodRepeatNs: NaN, floodSingleNs: NaN, singleRunOverheadNs: NaN },
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    bg?.destroy();
    base.close();
  }
}

// ---- part 2 -------------------------------------------------------------------------------

export interface ScaleParams extends CostParams {
  /** limits.sources of the gate: the size of kg_progress and kg_grants */
  sources: number;
  levels: number[];
}

export interface ScaleLevel {
  entries: number;
  /** entries found in each map afterwards, by a sample of lookups (fraction present) */
  presentFraction: number;
  baselines: { drop: Summary; pass: Summary };
  classes: ClassCost[];
}

export interface ScaleResult {
  params: ScaleParams;
  memory: { map: string; maxEntries: number; memlockBytes: number; bytesPerEntry: number; keyBytes: number; valueBytes: number }[];
  levels: ScaleLevel[];
  /** per class id, at each level: (ns / bare XDP_DROP of that level) / (the same at the first
   * level). Dividing by the baseline measured next to it takes out what the machine itself did
   * between levels (other load, clock), which moves every number, baselines included. */
  relative: Record<string, number[]>;
  /** the same without that correction: ns at each level / ns at the first level */
  relativeRaw: Record<string, number[]>;
  seconds: number;
}

/** Filler sources: 2001:db8:f::/96 + (FILL_FIRST + i). */
const FILL_PREFIX = [0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0f, 0, 0, 0, 0, 0, 0];
const FILL_FIRST = 0x10000;
/** Spread flood sources: 2001:db8:e::/96 + (FILL_FIRST + i), never in a map. */
const FLOOD_SPREAD_RANGE = 1 << 20;

function fillerKey(i: number, out: Buffer, off: number): void {
  for (let k = 0; k < 12; k++) out[off + k] = FILL_PREFIX[k]!;
  out.writeUInt32BE((FILL_FIRST + i) >>> 0, off + 12);
}

function fill(bg: BenchGate, from: number, to: number): void {
  const chunk = 65536;
  const progress = bg.gate.map(MAP.PROGRESS);
  const grants = bg.gate.map(MAP.GRANTS);
  const flows = bg.gate.map(MAP.FLOWS);
  const now = monoNowNs();
  const pv = progressValue(bg.slot, bg.epoch, 2, now);
  const gv = grantValue(bg.slot, now + 3_600_000_000_000n);
  const fv = flowValue(bg.slot, now);
  const gw = addrKey(GW.v6);
  const n0 = Math.min(chunk, to - from);
  const keys = Buffer.alloc(n0 * 16);
  const fkeys = Buffer.alloc(n0 * flows.keySize);
  const pvals = Buffer.alloc(n0 * progress.lookupSize);
  const gvals = Buffer.alloc(n0 * grants.lookupSize);
  const fvals = Buffer.alloc(n0 * flows.lookupSize);
  for (let i = 0; i < n0; i++) {
    pv.copy(pvals, i * progress.lookupSize);
    gv.copy(gvals, i * grants.lookupSize);
    fv.copy(fvals, i * flows.lookupSize);
  }
  for (let at = from; at < to; at += chunk) {
    const n = Math.min(chunk, to - at);
    for (let i = 0; i < n; i++) {
      fillerKey(at + i, keys, i * 16);
      // the granted spread class: an established connection from each filler source
      flowKey(keys.subarray(i * 16, i * 16 + 16), gw, GRANTED_SPORT, PORTS.service, fkeys.subarray(i * flows.keySize, (i + 1) * flows.keySize));
    }
    // Writers outside XDP mark the grant filter before they write (DESIGN.md "Grant filter").
    for (let i = 0; i < n; i++) bg.gate.gfilter!.mark(keys.subarray(i * 16, i * 16 + 16));
    progress.updateBatch(keys, pvals, n, BPF_ANY);
    grants.updateBatch(keys, gvals, n, BPF_ANY);
    flows.updateBatch(fkeys, fvals, n, BPF_ANY);
  }
}

function presentFraction(bg: BenchGate, n: number): number {
  const grants = bg.gate.map(MAP.GRANTS);
  const progress = bg.gate.map(MAP.PROGRESS);
  const key = Buffer.alloc(16);
  const pout = Buffer.alloc(progress.lookupSize);
  const gout = Buffer.alloc(grants.lookupSize);
  const probes = Math.min(n, 2000);
  let found = 0;
  for (let k = 0; k < probes; k++) {
    fillerKey(Math.floor((k * n) / probes), key, 0);
    if (progress.lookupInto(key, pout) && grants.lookupInto(key, gout)) found++;
  }
  return probes > 0 ? found / probes : 1;
}

export function scaleRelative(levels: readonly ScaleLevel[]): { relative: Record<string, number[]>; relativeRaw: Record<string, number[]> } {
  const relative: Record<string, number[]> = {};
  const relativeRaw: Record<string, number[]> = {};
  const first = levels[0];
  for (const c of first?.classes ?? []) {
    const ns = (l: ScaleLevel): number => l.classes.find((x) => x.id === c.id)?.ns.median ?? NaN;
    relativeRaw[c.id] = levels.map((l) => ns(l) / c.ns.median);
    relative[c.id] = levels.map((l) => ns(l) / l.baselines.drop.median / (c.ns.median / first!.baselines.drop.median));
  }
  return { relative, relativeRaw };
}

export function runScale(id: string, p: ScaleParams): ScaleResult {
  const t0 = Date.now();
  const base = loadBaseProgs();
  const gen = loadGen();
  let bg: BenchGate | null = null;
  try {
    bg = openBenchGate({ pinPath: `/sys/fs/bpf/kg-bench-${id}-scale`, iface: 'kg-bench0', sources: p.sources });
    const classes = packetClasses(bg);
    const memory = [MAP.PROGRESS, MAP.GRANTS, MAP.FLOWS].map((name) => {
      const m = bg!.gate.map(name);
      const memlock = mapMemlock(m.fd);
      return { map: name, maxEntries: m.maxEntries, memlockBytes: memlock, bytesPerEntry: memlock / m.maxEntries, keyBytes: m.keySize, valueBytes: m.valueSize };
    });
    const floodFrame = frameFor('flood', 6, '2001:db8:e::1:0');
    const grantedFrame = frameFor('granted', 6, '2001:db8:f::1:0');
    const levels: ScaleLevel[] = [];
    let filled = 0;
    for (const entries of p.levels) {
      if (entries > filled) {
        fill(bg, filled, entries);
        filled = entries;
      }
      const present = presentFraction(bg, entries);
      const r = measureClasses(bg, base, classes, p, false);
      // spread sources, IPv6: flood from 1M distinct sources, granted from the `entries` filled ones
      const gate = bg.gate;
      const floodCfg = () => gen.setCfg({ range: FLOOD_SPREAD_RANGE, first: FILL_FIRST, action: XDP.DROP });
      const grantedCfg = () => gen.setCfg({ range: entries, first: FILL_FIRST, action: XDP.DROP });
      const spreadChecks = [
        { key: 'flood-spread-v6', cfg: floodCfg, frame: floodFrame, expect: 'drop_no_grant' as const },
        { key: 'granted-spread-v6', cfg: grantedCfg, frame: grantedFrame, expect: 'pass_flow' as const },
      ].map((s) => {
        s.cfg();
        gen.setNext(gate.progFd);
        const a = gate.stats();
        const n = 1000;
        testRun(gen.chain, s.frame, { repeat: n });
        const d = statsDelta(a, gate.stats());
        return { ...s, ok: d[s.expect] === n, observed: d[s.expect] === n ? s.expect : verdictOf(a, gate.stats()) };
      });
      const subjects: Subject[] = [
        { key: 'chain-drop', fd: gen.chain, frame: floodFrame, before: () => (floodCfg(), gen.setNext(base.drop)) },
        ...spreadChecks.map((s) => ({ key: s.key, fd: gen.chain, frame: s.frame, before: () => (s.cfg(), gen.setNext(gate.progFd)) })),
      ];
      const rep = measureRepeat(subjects, p.runs, p.repeat);
      const chainDrop = rep.get('chain-drop')!;
      for (const s of spreadChecks) {
        const runs = rep.get(s.key)!.map((v, i) => r.baselines.drop.median + v - (chainDrop[i] ?? NaN));
        const ns = summarize(runs);
        r.classes.push({
          id: s.key,
          kind: s.key.replace(/-spread-v6$/, ''),
          family: 6,
          label: s.key.startsWith('flood') ? `flood to protected port, ${FLOOD_SPREAD_RANGE} spread sources, IPv6` : `granted, spread over the ${entries} granted sources, IPv6`,
          mode: 'spread',
          expected: s.expect,
          observed: s.observed,
          verdictOk: s.ok,
          ns,
          vsDrop: versus(ns.median, r.baselines.drop.median),
          vsPass: versus(ns.median, r.baselines.pass.median),
        });
      }
      levels.push({ entries, presentFraction: present, baselines: r.baselines, classes: r.classes });
    }
    return { params: p, memory, levels, ...scaleRelative(levels), seconds: (Date.now() - t0) / 1000 };
  } finally {
    bg?.destroy();
    gen.close();
    base.close();
  }
}

