/**
 * The benchmark's outputs: the targets (from the issue) checked against the results, the
 * terminal table, bench/RESULTS.md and the two charts.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CostResult, ScaleResult, ClassCost } from './cost.js';
import type { FloodResult } from './flood.js';
import { FLOOD_LABELS, RECEIVER_LABELS, type FloodKind } from './flood.js';
import type { StepsResult } from './steps.js';
import type { EvictionResult, KnockRun, KnocksResult } from './knocks.js';
import { barChart, lineChart, type Series } from './svg.js';
import type { Machine } from './sys.js';

export const SCHEMA = 'knockgate-bench/1';

export interface Target {
  id: string;
  text: string;
  value: string;
  limit: string;
  /** null: not measured in this run */
  met: boolean | null;
}

export interface BenchResults {
  schema: typeof SCHEMA;
  quick: boolean;
  id: string;
  command: string;
  startedAt: string;
  seconds: number;
  machine: Machine;
  parts: {
    steps?: StepsResult;
    cost?: CostResult;
    scale?: ScaleResult;
    flood?: FloodResult;
    knocks?: KnocksResult;
    eviction?: EvictionResult;
  };
  errors: { part: string; error: string }[];
  targets: Target[];
  files: string[];
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
const signed = (x: number): string => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${x.toFixed(1)}` : 'n/a');
const mpps = (x: number): string => (Number.isFinite(x) ? (x / 1e6).toFixed(2) : 'n/a');

export function evaluateTargets(r: BenchResults): Target[] {
  const t: Target[] = [];
  const cost = r.parts.cost;
  for (const fam of [4, 6]) {
    const c = cost?.classes.find((x) => x.id === `flood-v${fam}`);
    t.push({
      id: `flood-cost-v${fam}`,
      text: `One repeated frame, flood to a protected port (IPv${fam}): at most bare XDP_DROP + 8 ns`,
      value: c ? `${f1(c.ns.median)} ns = DROP ${signed(c.vsDrop.diffNs)} ns` : 'not measured',
      limit: '<= +8 ns',
      met: c ? c.vsDrop.diffNs <= 8 : null,
    });
  }
  for (const id of ['unrelated-tcp-v4', 'unrelated-udp-v4', 'unrelated-tcp-v6', 'unrelated-udp-v6']) {
    const c = cost?.classes.find((x) => x.id === id);
    t.push({
      id: `unrelated-cost-${id.replace('unrelated-', '')}`,
      text: `One repeated frame, unrelated traffic (${id.replace('unrelated-', '').replace('-v', ', IPv').replace('tcp', 'TCP').replace('udp', 'UDP')}): at most bare XDP_PASS + 5 ns`,
      value: c ? `${f1(c.ns.median)} ns = PASS ${signed(c.vsPass.diffNs)} ns` : 'not measured',
      limit: '<= +5 ns',
      met: c ? c.vsPass.diffNs <= 5 : null,
    });
  }
  const scale = r.parts.scale;
  const top = scale?.levels[scale.levels.length - 1];
  const topN = top?.entries ?? 0;
  const topText = topN > 0 ? `${topN.toLocaleString('en')} entries` : 'The largest fill';
  const rel = (id: string): number => scale?.relative[id]?.[(scale?.levels.length ?? 1) - 1] ?? NaN;
  const single = Object.keys(scale?.relative ?? {}).filter((id) => !id.includes('spread'));
  const worst = single.reduce<{ id: string; v: number }>((w, id) => (rel(id) > w.v ? { id, v: rel(id) } : w), { id: '', v: -Infinity });
  t.push({
    id: 'scale-single',
    text: `${topText}: at most 1.5x the cost at 1 entry (one source per class, worst class; each level against its own bare XDP_DROP)`,
    value: scale ? `${f2(worst.v)}x (${worst.id})` : 'not measured',
    limit: '<= 1.5x',
    met: scale ? worst.v <= 1.5 : null,
  });
  for (const [id, limit] of [['flood-spread-v6', 1.2], ['granted-spread-v6', 2.5]] as const) {
    t.push({
      id: `scale-${id}`,
      text: `${topText}: at most ${limit}x the cost at 1 entry (${id.startsWith('flood') ? 'flood from 1M spread sources' : 'granted traffic spread over every granted source'}; each level against its own bare XDP_DROP)`,
      value: scale ? `${f2(rel(id))}x (uncorrected ${f2(scale.relativeRaw?.[id]?.[scale.levels.length - 1] ?? NaN)}x)` : 'not measured',
      limit: `<= ${limit}x`,
      met: scale ? rel(id) <= limit : null,
    });
  }
  const flood = r.parts.flood;
  for (const kind of ['syn', 'udp', 'spa'] as const) {
    for (const fam of [4, 6] as const) {
      const row = (k: string) => flood?.rows.find((x) => x.receiver === k && x.family === fam && (x.flood ?? 'syn') === kind);
      const g = row('knockgate');
      const d = row('xdp-drop');
      const n = row('nft-netdev');
      const name = kind === 'syn' ? 'Spread-source SYN flood' : kind === 'udp' ? 'Spread-source UDP flood' : 'Junk spa flood (spread sources)';
      const want = kind === 'spa' ? 0.5 : 0.85;
      t.push({
        id: `flood-${kind}-rx-drop-v${fam}`,
        text: `${name} (IPv${fam}): receiver at least ${want}x bare XDP_DROP's rate, same run (receiver alone, from its softirq time per packet)`,
        value: g && d ? `${f2(g.rxVsDrop)}x (${f1(g.softirqNsPerPacket)} / ${f1(d.softirqNsPerPacket)} ns per packet)` : 'not measured',
        limit: `>= ${want}x`,
        met: g && d ? g.rxVsDrop >= want : null,
      });
      t.push({
        id: `flood-${kind}-rate-drop-v${fam}`,
        text: `${name} (IPv${fam}): at least ${want}x bare XDP_DROP, same run (whole core: generator and receiver on one core)`,
        value: g && d ? `${f2(g.ppsPerCoreVsDrop)}x (${mpps(g.ppsPerCore)} / ${mpps(d.ppsPerCore)} Mpps per core)` : 'not measured',
        limit: `>= ${want}x`,
        met: g && d ? g.ppsPerCoreVsDrop >= want : null,
      });
      if (kind === 'spa') continue;
      const vsNftRx = g && n ? floodVsNft(g.windows.map((w) => 1e9 / w.softirqNsPerPacket), [n.windows.map((w) => 1e9 / w.softirqNsPerPacket)]) : NaN;
      t.push({
        id: `flood-${kind}-rx-nft-v${fam}`,
        text: `${name} (IPv${fam}): at least 5x nftables netdev ingress drop per packet, same run (receiver alone)`,
        value: g && n ? `${f2(vsNftRx)}x (${f1(g.softirqNsPerPacket)} ns against ${f1(n.softirqNsPerPacket)} ns per packet)` : 'not measured',
        limit: '>= 5x',
        met: g && n ? vsNftRx >= 5 : null,
      });
    }
  }
  const want = r.parts.knocks?.params.cycles ?? 0;
  for (const [id, what, k] of [
    ['knocks-under-flood', 'Knocks under flood', r.parts.knocks?.knockgate],
    ['spa-knocks-under-junk', 'Real spa knocks under a junk spa flood', r.parts.knocks?.spa],
  ] as const) {
    t.push({
      id,
      text: `${what}: ${want} out of ${want}`,
      value: k ? `${k.ok} / ${want}` : 'not measured',
      limit: `${want} / ${want}`,
      met: k ? k.ok === want && want > 0 : null,
    });
  }
  const e = r.parts.eviction?.run;
  t.push({
    id: 'eviction',
    text: 'Eviction attack: at least 99% of real knocks succeed',
    value: e ? `${f1(e.successPct)}% (${e.ok} / ${r.parts.eviction?.params.cycles})` : 'not measured',
    limit: '>= 99%',
    met: e ? e.successPct >= 99 : null,
  });
  const ed = r.parts.eviction?.daemon;
  t.push({
    id: 'eviction-daemon',
    text: 'Eviction attack with the daemon running and draining events: at least 99% of real knocks succeed',
    value: ed ? `${f1(ed.successPct)}% (${ed.ok} / ${r.parts.eviction?.params.cycles})` : r.parts.eviction?.daemonError ? `not measured: ${r.parts.eviction.daemonError.slice(0, 120)}` : 'not measured',
    limit: '>= 99%',
    met: ed ? ed.successPct >= 99 : null,
  });
  return t;
}

function median2(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = (s.length - 1) / 2;
  return (s[Math.floor(m)]! + s[Math.ceil(m)]!) / 2;
}

/** median over rounds of gate / (the best nftables receiver of that round) */
function floodVsNft(gate: number[], nfts: number[][]): number {
  return median2(gate.map((g, i) => g / Math.max(...nfts.map((n) => n[i] ?? NaN))));
}

// ---- tables -------------------------------------------------------------------------------

/** Where a table is rendered: the terminal (padded columns) or RESULTS.md (a markdown table). */
type Medium = 'term' | 'md';

/**
 * One column of a table, for both media: its heading (one string for both, or one per medium;
 * a column without a heading for a medium is not shown there) and its cell for a row.
 */
interface Column<T> {
  head: string | Partial<Record<Medium, string>>;
  cell: (row: T, medium: Medium) => string;
}

function headOf(c: Column<unknown>, medium: Medium): string | undefined {
  return typeof c.head === 'string' ? c.head : c.head[medium];
}

/** Renders rows through their column spec: the terminal's padded table, or a markdown table. */
function render<T>(columns: readonly Column<T>[], rows: readonly T[], medium: Medium): string {
  const shown = columns.filter((c) => headOf(c as Column<unknown>, medium) !== undefined);
  const head = shown.map((c) => headOf(c as Column<unknown>, medium)!);
  const cells = rows.map((r) => shown.map((c) => c.cell(r, medium)));
  return medium === 'md' ? mdTable(head, cells) : termTable(head, cells);
}

function termTable(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

function mdTable(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '--:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** Two columns without headings: a label and its value. */
const PAIRS: Column<[string, string]>[] = [
  { head: '', cell: (r) => r[0] },
  { head: '', cell: (r) => r[1] },
];

const TARGETS: Column<Target>[] = [
  { head: 'target', cell: (t) => t.text },
  { head: 'measured', cell: (t) => t.value },
  { head: 'limit', cell: (t) => t.limit },
  { head: '', cell: (t) => (t.met === null ? 'not measured' : t.met ? 'met' : '**missed**') },
];

/** The steps table: one column per variant of the program. */
function stepsColumns(steps: StepsResult): Column<StepsResult['classes'][number]>[] {
  return [
    { head: 'class (ns over bare DROP or PASS)', cell: (c) => `${c.label} [${c.action === 'drop' ? 'vs DROP' : 'vs PASS'}]` },
    ...steps.variants.map((v) => ({
      head: v.id,
      cell: (c: StepsResult['classes'][number]) => {
        const ok = steps.verdictOk[v.id]?.[c.id];
        return `${signed(steps.overBase[v.id]?.[c.id] ?? NaN)}${ok === false ? ' (!)' : ''}`;
      },
    })),
  ];
}

const COST: Column<ClassCost>[] = [
  { head: 'class', cell: (c, m) => (m === 'md' ? c.label : c.id + (c.verdictOk ? '' : ' (!)')) },
  { head: { term: 'mode', md: 'method' }, cell: (c) => c.mode },
  { head: { term: 'ns', md: 'ns (median)' }, cell: (c) => f1(c.ns.median) },
  { head: 'min-max', cell: (c) => `${f1(c.ns.min)}-${f1(c.ns.max)}` },
  { head: 'vs DROP', cell: (c) => signed(c.vsDrop.diffNs) },
  { head: { term: 'x', md: 'x DROP' }, cell: (c) => f2(c.vsDrop.ratio) },
  { head: 'vs PASS', cell: (c) => signed(c.vsPass.diffNs) },
  { head: { term: 'x', md: 'x PASS' }, cell: (c) => f2(c.vsPass.ratio) },
  { head: { md: 'verdict' }, cell: (c) => `${c.observed ?? '?'}${c.verdictOk ? '' : ' (expected ' + c.expected + ')'}` },
];

/** The scale table: one row per class id, one column per level. */
function scaleColumns(scale: ScaleResult): Column<string>[] {
  const last = scale.levels.length - 1;
  const top = scale.levels[last]?.entries;
  return [
    { head: 'class', cell: (id) => id },
    ...scale.levels.map((l) => ({
      head: { term: String(l.entries), md: `${l.entries.toLocaleString('en')} ${l.entries === 1 ? 'entry' : 'entries'}` },
      cell: (id: string) => f1(l.classes.find((c) => c.id === id)?.ns.median ?? NaN),
    })),
    { head: { term: `x at ${top}`, md: `x at ${top?.toLocaleString('en')}` }, cell: (id) => f2(scale.relative[id]?.[last] ?? NaN) },
    { head: { md: 'uncorrected' }, cell: (id) => f2(scale.relativeRaw?.[id]?.[last] ?? NaN) },
  ];
}

const MEMORY: Column<ScaleResult['memory'][number]>[] = [
  { head: 'map', cell: (x) => x.map },
  { head: 'key + value bytes', cell: (x) => `${x.keyBytes} + ${x.valueBytes}` },
  { head: 'max_entries', cell: (x) => x.maxEntries.toLocaleString('en') },
  { head: 'memlock', cell: (x) => `${(x.memlockBytes / 2 ** 20).toFixed(1)} MiB` },
  { head: 'bytes per entry', cell: (x) => f1(x.bytesPerEntry) },
];

const FLOOD: Column<FloodResult['rows'][number]>[] = [
  { head: 'flood', cell: (x, m) => (m === 'md' ? FLOOD_LABELS[x.flood ?? 'syn'] : (x.flood ?? 'syn')) },
  { head: 'receiver', cell: (x) => x.label },
  { head: 'IP', cell: (x) => `v${x.family}` },
  { head: 'Mpps', cell: (x) => mpps(x.pps) },
  { head: { term: 'flood CPU %', md: 'flood CPU, % of a core' }, cell: (x) => f0(x.oursPct) },
  { head: { term: 'Mpps/core', md: 'Mpps per core' }, cell: (x) => mpps(x.ppsPerCore) },
  { head: { term: 'x DROP', md: 'x bare DROP' }, cell: (x) => f2(x.ppsPerCoreVsDrop) },
  { head: { term: 'softirq %', md: 'softirq, % of a core' }, cell: (x) => f0(x.softirqPct) },
  { head: { term: 'rx ns/pkt', md: 'rx ns/packet' }, cell: (x) => f1(x.softirqNsPerPacket) },
  { head: 'rx Mpps/core', cell: (x) => mpps(x.rxPpsPerCore) },
  { head: { term: 'x DROP', md: 'x bare DROP' }, cell: (x) => f2(x.rxVsDrop) },
];

/** A row of the knocks table: one scenario, named per medium (a medium without a name leaves it out). */
interface KnockRow {
  name: Partial<Record<Medium, string>>;
  run: KnockRun | null | undefined;
  want: number;
  /** the flood, in words (RESULTS.md) */
  flood: string;
}

/** A cell of a measured run ('' for a scenario that was not measured). */
const ofRun = (f: (k: KnockRun, row: KnockRow) => string) => (row: KnockRow): string => (row.run ? f(row.run, row) : '');

const KNOCKS: Column<KnockRow>[] = [
  { head: { term: 'scenario', md: 'system' }, cell: (row, m) => row.name[m]! },
  { head: { md: 'flood' }, cell: (row) => row.flood },
  { head: 'opened', cell: (row, m) => (row.run ? (m === 'md' ? `${row.run.ok} / ${row.want}` : `${row.run.ok}/${row.want}`) : m === 'md' ? 'not measured' : 'n/a') },
  { head: { md: 'closed before' }, cell: ofRun((k) => (k.closedBefore === null ? '?' : k.closedBefore ? 'yes' : '**no**')) },
  { head: 'median ms', cell: ofRun((k) => f0(k.openMs.median)) },
  { head: 'p90 ms', cell: ofRun((k) => f0(k.openMs.p90)) },
  { head: 'max ms', cell: ofRun((k) => f0(k.openMs.max)) },
  { head: { term: 'flood Mpps', md: 'flood Mpps handled' }, cell: ofRun((k) => mpps(k.floodDropPps)) },
  { head: 'softirq %', cell: ofRun((k) => f0(k.softirqPct)) },
  { head: 'knockd CPU %', cell: ofRun((k) => (k.knockdCpuPct !== undefined ? f1(k.knockdCpuPct) : '-')) },
  { head: { md: 'client packets lost at the veth ring' }, cell: ofRun((k) => f0(k.vethLoss.skbsDropped)) },
];

/** The scenarios of parts 4 and 5, in order. */
function knockRows(knocks: KnocksResult | undefined, eviction: EvictionResult | undefined): KnockRow[] {
  const rows: KnockRow[] = [];
  if (knocks) {
    const want = knocks.params.cycles;
    const ft = `SYN flood, IPv${knocks.knockgate.flood.family}, port ${knocks.knockgate.flood.dport}`;
    rows.push({ name: { term: 'knockgate, SYN flood', md: 'knockgate' }, run: knocks.knockgate, want, flood: ft });
    rows.push({ name: { term: 'knockd + nftables, SYN flood', md: 'knockd + nftables' }, run: knocks.knockd, want, flood: ft });
    if (knocks.spa) {
      rows.push({
        name: { term: 'knockgate, spa knocks, junk spa flood', md: 'knockgate, spa knocks (one datagram, then the connect)' },
        run: knocks.spa,
        want,
        flood: `junk spa flood, IPv${knocks.spa.flood.family}, port ${knocks.spa.flood.dport}`,
      });
    }
  }
  if (eviction) {
    const want = eviction.params.cycles;
    rows.push({
      name: { term: `knockgate, first knocks from ${eviction.spoofedSources}`, md: 'knockgate, eviction attack' },
      run: eviction.run,
      want,
      flood: `first knocks (SYN to ${eviction.run.flood.dport}) from ${eviction.spoofedSources.toLocaleString('en')} IPv6 sources, 10x limits.sources`,
    });
    // the terminal lists the daemon's run only when there is one; RESULTS.md always
    rows.push({
      name: { ...(eviction.daemon ? { term: 'the same, daemon running' } : {}), md: 'knockgate with its daemon (adopts the gate, drains events), eviction attack' },
      run: eviction.daemon,
      want,
      flood: 'the same',
    });
  }
  return rows;
}

/** The rows a medium shows. */
const knockRowsFor = (rows: KnockRow[], medium: Medium): KnockRow[] => rows.filter((r) => r.name[medium] !== undefined);

function stepsTitle(steps: StepsResult): string {
  return `0. steps: variants of the program, BPF_PROG_TEST_RUN, repeat ${steps.params.repeat.toLocaleString('en')}, ${steps.params.rounds} rounds (bare XDP_DROP ${f1(steps.baselines.drop)} ns, XDP_PASS ${f1(steps.baselines.pass)} ns)`;
}

export function terminalReport(r: BenchResults): string {
  const out: string[] = [];
  const { steps, cost, scale, flood, knocks, eviction } = r.parts;
  if (steps) out.push('', stepsTitle(steps), render(stepsColumns(steps), steps.classes, 'term'));
  out.push(`knockgate bench${r.quick ? ' (quick: numbers are not meaningful)' : ''}: ${r.machine.cpuModel}, ${r.machine.cores} cores, kernel ${r.machine.kernel}, ${f0(r.seconds)} s`);
  if (cost) {
    out.push('', `1. per-packet cost, BPF_PROG_TEST_RUN (repeat ${cost.params.repeat}, ${cost.params.runs} runs): bare XDP_DROP ${f1(cost.baselines.drop.median)} ns, bare XDP_PASS ${f1(cost.baselines.pass.median)} ns`);
    out.push(render(COST, cost.classes, 'term'));
  }
  if (scale) {
    out.push('', `2. cost (ns) against entries in kg_progress and kg_grants (limits.sources ${scale.params.sources})`);
    out.push(render(scaleColumns(scale), scale.levels[0]?.classes.map((c) => c.id) ?? [], 'term'));
    out.push(scale.memory.map((m) => `${m.map}: ${f1(m.bytesPerEntry)} bytes per entry (memlock ${m.memlockBytes} / ${m.maxEntries})`).join('; '));
  }
  if (flood) {
    out.push('', `3. flood on veth (window ${flood.params.windowS} s, ${flood.params.rounds} rounds, generator on CPU ${flood.generatorCpu})`);
    out.push(render(FLOOD, flood.rows, 'term'));
  }
  if (knocks || eviction) {
    out.push('', '4./5. knock-then-connect cycles under flood');
    out.push(render(KNOCKS, knockRowsFor(knockRows(knocks, eviction), 'term'), 'term'));
  }
  out.push('', 'targets:');
  for (const t of r.targets) out.push(`  [${t.met === null ? '  n/a ' : t.met ? '  met ' : 'MISSED'}] ${t.text}: ${t.value}`);
  for (const e of r.errors) out.push(`  part ${e.part} failed: ${e.error}`);
  return out.join('\n');
}

// ---- charts -------------------------------------------------------------------------------

export function writeCharts(r: BenchResults, dir: string): string[] {
  const files: string[] = [];
  const { scale, flood } = r.parts;
  if (scale && scale.levels.length > 0) {
    const xs = scale.levels.map((l) => l.entries);
    const pick = ['flood-v4', 'flood-v6', 'granted-v4', 'granted-v6', 'advance-v4', 'wrong-v4', 'unrelated-udp-v4', 'flood-spread-v6', 'granted-spread-v6'];
    const series: Series[] = pick.map((id) => ({
      name: id,
      values: scale.levels.map((l) => l.classes.find((c) => c.id === id)?.ns.median ?? NaN),
      dashed: id.includes('spread'),
    }));
    series.push({ name: 'bare XDP_DROP', values: scale.levels.map((l) => l.baselines.drop.median), dashed: true });
    writeFileSync(join(dir, 'cost-vs-entries.svg'), lineChart({ title: 'knockgate: ns per packet against entries in kg_progress and kg_grants', xLabel: 'entries in each map (log scale)', yLabel: 'ns per packet (BPF_PROG_TEST_RUN)', xs, series }));
    files.push('cost-vs-entries.svg');
  }
  if (flood && flood.rows.length > 0) {
    const cats = [...new Set(flood.rows.map((x) => `${x.flood ?? 'syn'}/${x.receiver}`))];
    const kinds = cats;
    const fams = [...new Set(flood.rows.map((x) => x.family))];
    const val = (k: string, fam: number, f: (x: FloodResult['rows'][number]) => number): number => {
      const row = flood.rows.find((x) => `${x.flood ?? 'syn'}/${x.receiver}` === k && x.family === fam);
      return row ? f(row) / 1e6 : NaN;
    };
    const series: Series[] = fams.flatMap((fam) => [
      { name: `IPv${fam} measured`, values: kinds.map((k) => val(k, fam, (x) => x.ppsPerCore)) },
      { name: `IPv${fam} receiver alone`, values: kinds.map((k) => val(k, fam, (x) => x.rxPpsPerCore)) },
    ]);
    writeFileSync(
      join(dir, 'flood-pps.svg'),
      barChart({
        title: 'Floods on veth: Mpps dropped per core, per flood and receiver (same run)',
        yLabel: 'million packets per second per core',
        categories: kinds.map((k) => {
          const [f, rcv] = k.split('/') as [FloodKind, keyof typeof RECEIVER_LABELS];
          return `${f}: ${RECEIVER_LABELS[rcv]}`;
        }),
        series,
      }),
    );
    files.push('flood-pps.svg');
  }
  const steps = r.parts.steps;
  if (steps) {
    const door = steps.classes.filter((c) => /^(spa|signed|payload)-/.test(c.id) || c.id === 'syn-flood-v4');
    const vs = ['gate', 'no-spa-tag', 'no-gfilter'].filter((v) => steps.overBase[v]);
    writeFileSync(
      join(dir, 'doors.svg'),
      barChart({
        title: 'Single-packet doors and floods: ns per packet over bare XDP_DROP (BPF_PROG_TEST_RUN, same run)',
        yLabel: 'ns over bare XDP_DROP',
        categories: door.map((c) => c.id),
        series: vs.map((v) => ({ name: v === 'gate' ? 'knockgate' : v === 'no-spa-tag' ? 'without the spa tag' : 'without the grant filter', values: door.map((c) => steps.overBase[v]?.[c.id] ?? NaN) })),
      }),
    );
    files.push('doors.svg');
  }
  return files;
}

// ---- RESULTS.md ---------------------------------------------------------------------------

function slowerNotes(r: BenchResults): string[] {
  const notes: string[] = [];
  const { cost, scale, flood, knocks } = r.parts;
  if (cost) {
    const worst = [...cost.classes].filter((c) => c.mode === 'repeat').sort((a, b) => b.vsDrop.diffNs - a.vsDrop.diffNs)[0];
    const unrelated = cost.classes.filter((c) => c.kind.startsWith('unrelated'));
    const u = unrelated.map((c) => c.vsPass.diffNs);
    notes.push(
      `Every packet pays for the gate, even traffic it does not care about: unrelated TCP/UDP cost ${f1(Math.min(...u))}..${f1(Math.max(...u))} ns more than a bare XDP_PASS ` +
        `(parsing up to L4, the kg_stats counter, the kg_ports lookup; UDP and TCP SYNs also read their hint slot). Without any XDP program that cost is zero.`,
    );
    if (worst) notes.push(`The most expensive steady class is ${worst.id}: ${f1(worst.ns.median)} ns (${f2(worst.vsDrop.ratio)}x bare XDP_DROP).`);
    const adv = cost.classes.filter((c) => c.kind === 'advance' || c.kind === 'wrong');
    if (adv.length > 0) {
      notes.push(
        `Knocks are the slow path by design: ${adv.map((c) => `${c.id} ${f0(c.ns.median)} ns`).join(', ')} ` +
          '(clock, kg_progress update, kg_doors lookup, an event in the ring buffer; a reset also deletes the entry).',
      );
    }
  }
  if (scale) {
    const last = scale.levels.length - 1;
    const fs = scale.relative['flood-spread-v6']?.[last];
    const gs = scale.relative['granted-spread-v6']?.[last];
    if (fs !== undefined && gs !== undefined) {
      notes.push(
        `With many sources the hash lookups miss the CPU caches: with ${scale.levels[last]?.entries.toLocaleString('en')} entries a flood from 1M spread sources costs ${f2(fs)}x ` +
          `what it costs with 1 entry, and granted traffic spread over all granted sources ${f2(gs)}x. A single repeated packet hides this (its bucket stays cached), ` +
          'which is why the single-source classes hardly move.',
      );
    }
  }
  if (flood) {
    for (const fam of [...new Set(flood.rows.map((x) => x.family))]) {
      const row = (k: string) => flood.rows.find((x) => x.receiver === k && x.family === fam && (x.flood ?? 'syn') === 'syn');
      const g = row('knockgate');
      const d = row('xdp-drop');
      const n = row('nft-netdev');
      if (g && d) {
        notes.push(
          `IPv${fam} SYN flood from spread sources: the gate's receive path costs ${f1(g.softirqNsPerPacket)} ns per packet of softirq time against ${f1(d.softirqNsPerPacket)} ns for a bare XDP_DROP ` +
            `(${f2(g.rxVsDrop)}x its rate; ${f2(g.ppsPerCoreVsDrop)}x with our generator on the same core)` +
            (n ? `, and ${f2(n.softirqNsPerPacket / g.softirqNsPerPacket)}x cheaper per packet than an nftables netdev ingress drop (${f1(n.softirqNsPerPacket)} ns).` : '.') +
            ' A spoofed source holds no grant: the grant filter answers from one word and no kg_grants bucket is read.',
        );
      }
    }
  }
  if (knocks?.knockd && knocks.knockgate && knocks.knockd.ok > knocks.knockgate.ok) {
    notes.push(`In this run knockd opened ${knocks.knockd.ok} of ${knocks.params.cycles} cycles under the flood and the gate ${knocks.knockgate.ok} (failures are listed under part 4).`);
  }
  if (knocks?.knockd && knocks.knockgate) {
    notes.push(
      `knockd opens the door later than the gate (median ${f0(knocks.knockd.openMs.median)} ms against ${f0(knocks.knockgate.openMs.median)} ms): it sees the last knock ` +
        'through libpcap and runs a command that adds the nftables element, so the first SYN of the connect is often dropped and TCP retransmits it after 1 s.',
    );
  }
  return notes;
}

export function writeResultsMd(r: BenchResults, dir: string): void {
  const { steps, cost, scale, flood, knocks, eviction } = r.parts;
  const m = r.machine;
  const s: string[] = [];
  s.push('# knockgate benchmarks', '');
  s.push(
    'Written by `npm run bench` (bench/run.ts); do not edit by hand. Every number is from one run on the machine below, and every comparison is against a baseline measured in that same run. ' +
      'Absolute times depend on the machine; the differences and ratios are what to compare.',
    '',
  );
  if (r.quick) s.push('**Quick mode (smoke test): tiny repeats and windows, the numbers are not meaningful.**', '');
  s.push(
    `**A shared machine.** This run was made on a ${m.cores}-core machine shared with other work (builds and tests of other changes ran meanwhile; the user time of other processes during the flood windows is given in part 3). ` +
      'Absolute numbers move with that load from run to run; every target is a ratio or a difference against a baseline measured in the same round, rounds are repeated and the medians reported.',
    '',
  );
  s.push(
    render(
      PAIRS,
      [
        ['command', `\`${r.command}\``],
        ['date', r.startedAt],
        ['duration', `${f0(r.seconds)} s`],
        ['CPU', `${m.cpuModel}, ${m.cores} cores`],
        ['memory', `${m.memGiB} GiB`],
        ['kernel', `${m.kernel} (HZ ${m.hz}, IRQ time accounting: ${m.irqTimeAccounting})`],
        ['Node', m.node],
        ['libbpf', m.libbpf],
        ['nftables', m.nftables],
        ['knockd', m.knockd],
      ],
      'md',
    ),
    '',
  );
  s.push('## Targets', '');
  s.push('Goals for the gate itself (from the issue). A missed target is reported here, not hidden.', '');
  s.push(render(TARGETS, r.targets, 'md'), '');
  if (r.errors.length > 0) {
    s.push('Parts that failed in this run:', '');
    for (const e of r.errors) s.push(`- ${e.part}: ${e.error}`);
    s.push('');
  }
  s.push('## Fleet replication latency', '');
  s.push(
    render(
      [
        { head: 'measure', cell: (x: [string, string]) => x[0] },
        { head: 'value', cell: (x: [string, string]) => x[1] },
      ],
      [['a grant made on one host, written into another host\'s kernel (knockgate_fleet_replication_lag_seconds)', 'measured separately by the fleet benchmarks in bench/ (fleet mode); not part of this run']],
      'md',
    ),
    '',
    'The fleet helpers measure this in bench/ separately; their number belongs in this row.',
    '',
  );
  s.push('## Where the gate is slower', '');
  for (const n of slowerNotes(r)) s.push(`- ${n}`);
  s.push('');

  if (steps) {
    s.push('## 0. Steps and defences: variants of the program (BPF_PROG_TEST_RUN)', '');
    s.push(
      'What each step of the program costs and what each flood defence buys, measured with variants of the same source built with compile-time switches (bench/steps.ts), all in the same rounds ' +
        `(repeat ${steps.params.repeat.toLocaleString('en')}, ${steps.params.rounds} rounds, order rotated; ns over the bare program of the class's action in the same round, median over rounds). ` +
        '`stats`: the kg_stats lookup and counter only; `parse`: + parsing to L4; `ports`: + the kg_ports lookup (these three return before any policy); ' +
        '`no-gfilter`: the whole program without the grant filter (a flood\'s source is looked up in kg_grants or kg_flows); `no-spa-tag`: without the spa window tag (junk pays SipHash-2-4); `gate`: the build. ' +
        'One repeated frame keeps every hash bucket in the CPU caches: what the grant filter saves against spread sources shows in parts 2 and 3, not here. ' +
        'The doors: spa (key, window tag, MAC, nonce), signed (length, magic, door id; then a ring record for the daemon: none here, signed tokens 0), payload (the bytes compared). ' +
        `Bare XDP_DROP ${f1(steps.baselines.drop)} ns, XDP_PASS ${f1(steps.baselines.pass)} ns. (!) marks a verdict other than the class's.`,
      '',
    );
    s.push(render(stepsColumns(steps), steps.classes, 'md'), '');
    s.push('![single-packet doors](doors.svg)', '');
  }

  if (cost) {
    s.push('## 1. Per-packet cost (BPF_PROG_TEST_RUN)', '');
    s.push(
      `Bare XDP_DROP: **${f1(cost.baselines.drop.median)} ns** (${f1(cost.baselines.drop.min)}-${f1(cost.baselines.drop.max)}), bare XDP_PASS: **${f1(cost.baselines.pass.median)} ns** ` +
        `(${f1(cost.baselines.pass.min)}-${f1(cost.baselines.pass.max)}). BPF_PROG_TEST_RUN's own loop (local_bh_disable/enable, the timer check) is part of every number, baselines included. ` +
        `Repeat ${cost.params.repeat.toLocaleString('en')}, ${cost.params.runs} runs per class, order rotated every round so that baselines and classes alternate; median over runs, min-max as the spread; ` +
        'the differences and ratios to the baselines are medians of the per-round ones (class and baseline of the same round). ' +
        `The gate has two doors (bench: 7000/tcp, 8000/udp, 9000/tcp; spa: one datagram to 62201/udp), both protecting 2222/tcp and 2222/udp, limits.sources 65536, no denial tokens (a flood exhausts them at once).`,
      '',
    );
    s.push(render(COST, cost.classes, 'md'), '');
    s.push(
      '**Method for the knocks.** A knock that advances and a wrong knock that resets change the state they are judged against, so running the same frame again does other work ' +
        '(a retransmission, or a knock with no progress). They are measured one run at a time: before every sample the source is put back at step 1 (one map update from user space), then the ' +
        'program runs once. The bare XDP_DROP program is sampled the same way, pair by pair (the same map update before it, order alternating), and the reported cost is ' +
        '`bare XDP_DROP (repeat) + mean(gate, single runs) - mean(bare XDP_DROP, single runs)` (10%-trimmed means per round, median over rounds). ' +
        `${cost.params.samples.toLocaleString('en')} samples per round and class. ` +
        `A single run costs ${f1(cost.methodCheck.singleRunOverheadNs)} ns more than a repeated one even for the bare program (timer, cold caches after the syscall). ` +
        `Check of the method: the flood class measured both ways gives ${f1(cost.methodCheck.floodRepeatNs)} ns with repeat and ${f1(cost.methodCheck.floodSingleNs)} ns sample by sample; ` +
        'the difference is what cold caches add to a single run, so the knock numbers are upper bounds rather than steady-state costs.',
      '',
    );
  }

  if (scale) {
    s.push('## 2. Scale: entries in kg_progress and kg_grants', '');
    s.push(
      `The gate is loaded once with limits.sources = ${scale.params.sources.toLocaleString('en')} (both LRU maps preallocated at that size) and filled with bpf_map_update_batch to each level ` +
        '(the same sources in both maps: a live progress on the door and a live grant). The same twelve classes are measured at each level as in part 1 ' +
        `(repeat ${scale.params.repeat.toLocaleString('en')}, ${scale.params.runs} runs; knocks ${scale.params.samples.toLocaleString('en')} samples per round). ` +
        'Because one repeated frame keeps its hash bucket in the CPU caches, two more classes send every run from another source: bench_gen_chain rewrites the source and tail-calls the gate ' +
        '(flood: 1,048,576 sources that hold nothing; granted: a permutation of every filled source), measured against the same chain into the bare XDP_DROP program.',
      '',
    );
    s.push(render(scaleColumns(scale), scale.levels[0]?.classes.map((c) => c.id) ?? [], 'md'), '');
    s.push(
      `Bare XDP_DROP at each level: ${scale.levels.map((l) => f1(l.baselines.drop.median)).join(', ')} ns. The levels are measured one after the other (the maps only grow), ` +
        'and the machine does not stay the same meanwhile (other load): every number moves, baselines included. So "x" compares each level against the bare XDP_DROP measured with it, ' +
        '`(ns / DROP at the level) / (ns / DROP at 1 entry)`; "uncorrected" is the plain ratio of the ns. ' +
        `Fillers found afterwards (sampled lookups): ${scale.levels.map((l) => `${f0(l.presentFraction * 100)}%`).join(', ')}.`,
      '',
    );
    s.push('Memory per entry, from the kernel (`memlock` in the map fd\'s fdinfo, divided by max_entries; LRU hashes are preallocated, so this is paid for every slot whether used or not):', '');
    s.push(render(MEMORY, scale.memory, 'md'), '');
    s.push('![cost against entries](cost-vs-entries.svg)', '');
  }

  if (flood) {
    s.push('## 3. Flood on veth', '');
    const other = flood.rows.map((x) => x.otherLoadPct);
    const otherText = (other[0] ?? []).map((_, c) => `CPU ${c}: ${f0(median2(other.map((o) => o[c] ?? NaN)))}%`).join(', ');
    s.push(
      'Our generator (bench/flood-gen.ts with test/fixtures/bench-gen.bpf.c) runs BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on the outside end of a veth pair: every frame is a TCP SYN to the ' +
        'protected port (flood `syn`), a UDP datagram to it (`udp`: the door protects 2222/udp too), or a junk spa datagram to the spa door\'s port (`spa`: well-formed, current timestamp, tag and MAC from a random key), ' +
        `with a new source (IPv4: 65,534 sources in 198.19.0.0/16; IPv6: 2^24 sources in 2001:db8:8000::/33) and a new source port, checksums fixed (self-check: ${flood.generatorCheck}), ` +
        'sent with XDP_TX into the pair. The receiver sits on the gateway end in another namespace. ' +
        `Window ${flood.params.windowS} s after ${flood.params.warmupS} s of warm-up, ${flood.params.rounds} rounds with the receivers' order rotated; medians over rounds, ratios taken within a round. ` +
        "Each receiver's drops are read from its own counter (the bare program's per-CPU counter, kg_stats drop_no_grant (drop_knock for junk spa), the nftables rule's counter; for no filter, TCP InSegs: handled, not dropped). " +
        'Generic (skb) mode is XDP run after the kernel has built an skb (drivers without native XDP, as on many cloud NICs): its rows are labelled so, and compared with the bare XDP_DROP program in generic mode. ' +
        'nftables: the netdev ingress rule drops TCP and UDP to port 2222 before the IP stack; the inet filter is the knockd-style setup (conntrack, `ct state established,related accept`, the port only from a set of allowed sources, else drop). ' +
        'The gate is loaded with limits.sources 65536 and has no grant for any spoofed source.',
      '',
      `Three measures, because generator and receiver share one core (CPU ${flood.generatorCpu}): the generator runs in process context, the receiver in the NET_RX softirq its batches raise on that core. ` +
        '**Mpps** is what the receiver counted per second of wall time: it depends on how much of the core the flood got, and this machine runs other work ' +
        `(user time of other processes during the windows, median: ${otherText}). **Mpps per core** divides by the CPU time the flood's own threads got ` +
        '(the generator, the receiving softirq that runs in its context, ksoftirqd): the drop rate of a whole core, generator included. ' +
        '**rx ns/packet** is the receiver alone: the softirq time (from /proc/stat) per packet, and **rx Mpps/core** = 1000 / rx ns, what one receiving core could drop if the flood came from elsewhere, as it does on a real NIC. ' +
        'Softirq time is sampled at each timer tick on this kernel, so it is the noisier of the two. The targets are checked against both.',
      '',
    );
    s.push(render(FLOOD, flood.rows, 'md'), '');
    s.push('![packets per second per receiver](flood-pps.svg)', '');
  }

  if (knocks || eviction) {
    s.push('## 4. Knocks under flood, 5. eviction attack', '');
    s.push(
      'A real client in the outside namespace (bench/peer.ts) does knock-then-connect cycles while the generator floods: the three knocks 10 ms apart (a TCP knock is a SYN from connect(), ' +
        `a UDP knock one datagram), then a TCP connect to the service behind the gate, which must answer within ${((knocks ?? eviction)!.params.connectTimeoutMs / 1000).toFixed(1)} s (so the kernel's one SYN retransmission after 1 s is allowed). ` +
        'Time to open: first knock to the service\'s greeting. Every cycle comes from its own source address (IPv4 and IPv6 alternate), so no grant is reused; before the cycles a source that did not knock ' +
        'must fail to connect ("closed before"). The gate runs without its daemon (nothing reads the event ring), except in the last row, where the daemon adopts it; ' +
        'the spa row knocks with one spa datagram (bench/peer.ts, the wire format of docs/KNOCKS.md) while junk spa datagrams flood the spa port; ' +
        ' knockd is Debian\'s package, sniffing the gateway veth with libpcap, with the knockd-style ' +
        'nftables inet filter of part 3 and a command that adds the source to its allowed set. The client and the service run on the generator\'s CPU: a packet sent into the veth schedules ' +
        'the gateway end\'s NAPI on the sending CPU, and a busy NAPI stays where it is, so a client (or a service, whose replies the client acknowledges from the softirq on that CPU) on the other CPU ' +
        'would move the whole receive path there (on this machine, a CPU busy with other work); the generator would outrun it and the veth\'s 256-entry ring would overflow, dropping knocks before any ' +
        'filter sees them. Packets lost at that ring are counted in the last column.',
      '',
    );
    s.push(render(KNOCKS, knockRowsFor(knockRows(knocks, eviction), 'md'), 'md'), '');
    if (knocks?.knockdError) s.push(`knockd could not be measured: ${knocks.knockdError}`, '');
    if (eviction) {
      const gc = eviction.run.gateCounters ?? {};
      s.push(
        `During the eviction attack the gate accepted ${(gc.knock_step ?? 0).toLocaleString('en')} knock steps; ${(gc.step_from_filter ?? 0).toLocaleString('en')} second steps ` +
          `came through on the first-knock filter alone (the flood had evicted those clients' exact first-knock records); ${(gc.map_full ?? 0).toLocaleString('en')} inserts failed. ` +
          `First-knock events are budgeted (log.knock_events_per_second; no daemon here, no budget): ${(gc.knock_suppressed ?? 0).toLocaleString('en')} were counted, not emitted, ` +
          `and ${(gc.event_lost ?? 0).toLocaleString('en')} events found the ring full. Afterwards kg_progress (sources with two correct steps, which first knocks never insert into) ` +
          `was ${f0(eviction.progressFill * 100)}% full and kg_probation (first-knock records) ${f0(eviction.probationFill * 100)}%. "flood Mpps handled" is spoofed first knocks per second here.`,
        '',
      );
    }
    if (eviction?.daemonError) s.push(`The eviction attack with the daemon could not be measured: ${eviction.daemonError}`, '');
    if (eviction?.daemon) {
      const gc = eviction.daemon.gateCounters ?? {};
      s.push(
        `With the daemon running (\`knockgate run --keep\` adopting the bench's gate, refilling the event budgets every second and draining the ring): ${(gc.knock_step ?? 0).toLocaleString('en')} knock steps, ` +
          `${(gc.knock_suppressed ?? 0).toLocaleString('en')} first-knock events counted but not emitted (budget), ${(gc.event_lost ?? 0).toLocaleString('en')} found the ring full.`,
        '',
      );
    }
    const fails = [...(knocks?.knockgate.failures ?? []), ...(knocks?.spa?.failures ?? []), ...(eviction?.run.failures ?? []), ...(eviction?.daemon?.failures ?? [])];
    if (fails.length > 0) s.push(`Failed gate cycles: ${fails.map((f) => `#${f.cycle} IPv${f.family} ${f.error}`).join(', ')}.`, '');
  }
  s.push('## Reproduce', '');
  s.push(
    'As root on a machine with BPF (kernel >= 5.18 for live frames), nftables, knockd and ethtool installed: `npm run bench` ' +
      `(this run took ${(r.seconds / 60).toFixed(1)} minutes; \`node dist/bench/run.js --help\` for options; \`--render results.json\` writes this file again from the raw numbers). ` +
      'It creates namespaces `kg-b<id>-c` / `kg-b<id>-g` and pins under `/sys/fs/bpf/kg-bench-<id>-*`, and removes them at the end, also on failure. ' +
      'The raw numbers of this run are in results.json next to this file.',
    '',
  );
  writeFileSync(join(dir, 'RESULTS.md'), s.join('\n'));
}
