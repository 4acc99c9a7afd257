/**
 * knockgate's benchmarks (issue 4): `npm run bench`, as root.
 *
 *   node dist/bench/run.js [--quick] [--parts cost,scale,flood,knocks,eviction] [--out-dir DIR] [--id HEX8]
 *
 *   0 steps     what each step of the program costs, and each flood defence: compile-time
 *               variants of the same source, same rounds                          (bench/steps.ts)
 *   1 cost      per-packet cost of each packet class through BPF_PROG_TEST_RUN, against bare
 *               XDP_DROP / XDP_PASS programs in the same run                     (bench/cost.ts)
 *   2 scale     the same with 1, 1k, 100k, 1M entries in kg_progress / kg_grants (bench/cost.ts)
 *   3 flood     a live-frames SYN flood on a veth pair: drop rate and softirq time per receiver
 *               (bare XDP_DROP, knockgate, nftables netdev, nftables inet + conntrack, none)
 *                                                                                  (bench/flood.ts)
 *   4 knocks    knock-then-connect cycles under the flood: knockgate and knockd (bench/knocks.ts)
 *   5 eviction  the same under spoofed first knocks from 10x limits.sources sources
 *
 * Writes results.json, RESULTS.md, cost-vs-entries.svg and flood-pps.svg to the output directory
 * (default: bench/ for a full run, bench/out/quick-<id>/ with --quick) and prints a table.
 * Everything it creates (namespaces kg-b<id>-*, pins /sys/fs/bpf/kg-bench-<id>-*, child
 * processes) is removed at the end, also on failure and on SIGINT/SIGTERM.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { runCost, runScale, scaleRelative, type CostParams, type ScaleParams } from './cost.js';
import { checkGenerator, killAllChildren, openEnv, type Env } from './env.js';
import { RECEIVERS, runFlood, type FloodParams } from './flood.js';
import { poolSizeFor, runEviction, runKnocks, type KnockParams } from './knocks.js';
import { destroyAllLabs } from './lab.js';
import { SCHEMA, evaluateTargets, terminalReport, writeCharts, writeResultsMd, type BenchResults } from './report.js';
import { ROOT, machineInfo, setAffinity } from './sys.js';
import { runSteps, type StepsParams } from './steps.js';

export const PARTS = ['steps', 'cost', 'scale', 'flood', 'knocks', 'eviction'] as const;
export type Part = (typeof PARTS)[number];

export interface Plan {
  quick: boolean;
  steps: StepsParams;
  cost: CostParams;
  scale: ScaleParams;
  flood: FloodParams;
  knocks: KnockParams;
  /** limits.sources of the lab's gate: the eviction attack's capacity */
  labSources: number;
}

export function plan(quick: boolean): Plan {
  if (quick) {
    return {
      quick,
      steps: { repeat: 20_000, rounds: 2 },
      cost: { repeat: 20_000, runs: 3, samples: 200 },
      scale: { repeat: 20_000, runs: 3, samples: 100, sources: 4096, levels: [1, 1000] },
      flood: { windowS: 0.3, warmupS: 0.2, rounds: 1, families: [4, 6], receivers: [...RECEIVERS] },
      knocks: { cycles: 4, gapMs: 10, connectTimeoutMs: 1500, budgetS: 40 },
      labSources: 1024,
    };
  }
  return {
    quick,
    steps: { repeat: 1_000_000, rounds: 9 },
    cost: { repeat: 1_000_000, runs: 9, samples: 8_000 },
    scale: { repeat: 1_000_000, runs: 7, samples: 5_000, sources: 1_310_720, levels: [1, 1000, 100_000, 1_000_000] },
    flood: { windowS: 2, warmupS: 0.5, rounds: 3, families: [4, 6], receivers: [...RECEIVERS] },
    knocks: { cycles: 100, gapMs: 10, connectTimeoutMs: 1500, budgetS: 200 },
    labSources: 65536,
  };
}

interface Args {
  /** re-render RESULTS.md, the charts and the table from an existing results.json */
  render: string | null;
  quick: boolean;
  windowS: number | null;
  rounds: number | null;
  cycles: number | null;
  parts: Part[];
  outDir: string | null;
  id: string;
}

const USAGE = `usage: node dist/bench/run.js [--quick] [--parts ${PARTS.join(',')}] [--out-dir DIR] [--window S] [--rounds N] [--cycles N] [--id HEX8]
  --quick      seconds instead of minutes (the smoke test); numbers are not meaningful
  --parts      which parts to run (default: all)
  --out-dir    where results.json, RESULTS.md and the SVGs go (default: bench/, or bench/out/quick-<id>/ with --quick)
  --window S   flood window per receiver, seconds (part 3)
  --rounds N   flood rounds (part 3)
  --cycles N   knock cycles per scenario (parts 4, 5; at most 120)
  --render F   only write RESULTS.md, the charts and the table again from results.json F (into --out-dir, default F's directory)
  --id         8 hex digits naming this run's namespaces (kg-b<id>-*) and pins (/sys/fs/bpf/kg-bench-<id>-*)
Needs root, a kernel with BPF (>= 5.18), nftables, knockd and ethtool.`;

function positive(flag: string, v: string): number {
  const n = Number(v);
  if (!(n > 0) || n > 3600) throw new Error(`${flag} takes a positive number\n${USAGE}`);
  return n;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { render: null, quick: false, windowS: null, rounds: null, cycles: null, parts: [...PARTS], outDir: null, id: randomBytes(4).toString('hex') };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${x} needs a value\n${USAGE}`);
      return v;
    };
    if (x === '--quick') a.quick = true;
    else if (x === '--parts') {
      const ps = val().split(',').filter(Boolean);
      for (const p of ps) if (!(PARTS as readonly string[]).includes(p)) throw new Error(`unknown part ${p}\n${USAGE}`);
      a.parts = PARTS.filter((p) => ps.includes(p));
    } else if (x === '--out-dir') a.outDir = resolve(val());
    else if (x === '--render') a.render = resolve(val());
    else if (x === '--window') a.windowS = positive(x, val());
    else if (x === '--rounds') a.rounds = Math.round(positive(x, val()));
    else if (x === '--cycles') a.cycles = Math.round(positive(x, val()));
    else if (x === '--id') {
      a.id = val();
      if (!/^[0-9a-f]{8}$/.test(a.id)) throw new Error(`--id takes 8 lowercase hex digits\n${USAGE}`);
    } else if (x === '--help' || x === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${x}\n${USAGE}`);
  }
  return a;
}

/** Remove this run's pins whatever happened (the parts remove their own; this is the net). */
function removeOurPins(id: string): void {
  let names: string[] = [];
  try {
    names = readdirSync('/sys/fs/bpf');
  } catch {
    return;
  }
  for (const n of names) if (n.startsWith(`kg-bench-${id}-`)) rmSync(join('/sys/fs/bpf', n), { recursive: true, force: true });
}

function cleanupNow(id: string): void {
  killAllChildren();
  destroyAllLabs();
  removeOurPins(id);
  try {
    for (const n of readdirSync(tmpdir())) if (n.startsWith(`kg-bench-${id}-`)) rmSync(join(tmpdir(), n), { recursive: true, force: true });
  } catch {
    /* nothing to remove */
  }
}

function render(file: string, outDir: string | null): number {
  const r = JSON.parse(readFileSync(file, 'utf8')) as BenchResults;
  if (r.schema !== SCHEMA) throw new Error(`${file} is not a ${SCHEMA} results file`);
  const dir = outDir ?? dirname(file);
  if (r.parts.scale) Object.assign(r.parts.scale, scaleRelative(r.parts.scale.levels));
  r.targets = evaluateTargets(r);
  r.files = ['results.json', 'RESULTS.md', ...writeCharts(r, dir)];
  writeResultsMd(r, dir);
  writeFileSync(join(dir, 'results.json'), JSON.stringify(r, null, 2) + '\n');
  console.log(terminalReport(r));
  return 0;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.render !== null) return render(args.render, args.outDir);
  if (process.getuid?.() !== 0) {
    console.error('bench: run as root (BPF programs, network namespaces, nftables)');
    return 2;
  }
  const p = plan(args.quick);
  if (args.windowS !== null) p.flood.windowS = args.windowS;
  if (args.rounds !== null) p.flood.rounds = args.rounds;
  if (args.cycles !== null) p.knocks.cycles = Math.min(args.cycles, 120);
  const outDir = args.outDir ?? (args.quick ? join(ROOT, 'bench', 'out', `quick-${args.id}`) : join(ROOT, 'bench'));
  mkdirSync(outDir, { recursive: true });
  const onSignal = (sig: NodeJS.Signals): void => {
    console.error(`bench: ${sig}: cleaning up`);
    cleanupNow(args.id);
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  const log = (s: string): void => console.error(s);
  const started = Date.now();
  const command = process.env['npm_lifecycle_event'] === 'bench' ? `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}` : `node dist/bench/run.js ${process.argv.slice(2).join(' ')}`.trim();
  const r: BenchResults = {
    schema: SCHEMA,
    quick: args.quick,
    id: args.id,
    command,
    startedAt: new Date(started).toISOString(),
    seconds: 0,
    machine: machineInfo(),
    parts: {},
    errors: [],
    targets: [],
    files: [],
  };
  try {
    setAffinity([0]);
  } catch {
    /* a single-CPU machine or a restricted cpuset: run unpinned */
  }
  const fail = (part: string, err: unknown): void => {
    const msg = err instanceof Error ? err.message : String(err);
    r.errors.push({ part, error: msg.split('\n').slice(0, 6).join(' ') });
    log(`part ${part} failed: ${err instanceof Error ? (err.stack ?? msg) : msg}`);
  };
  try {
    if (args.parts.includes('steps')) {
      log('0. steps and variants ...');
      try {
        r.parts.steps = runSteps(args.id, p.steps, log);
      } catch (err) {
        fail('steps', err);
      }
    }
    if (args.parts.includes('cost')) {
      log('1. per-packet cost ...');
      try {
        r.parts.cost = runCost(args.id, p.cost);
      } catch (err) {
        fail('cost', err);
      }
    }
    if (args.parts.includes('scale')) {
      log('2. scale ...');
      try {
        r.parts.scale = runScale(args.id, p.scale);
      } catch (err) {
        fail('scale', err);
      }
    }
    const live = args.parts.filter((x) => x === 'flood' || x === 'knocks' || x === 'eviction');
    if (live.length > 0) {
      let env: Env | null = null;
      try {
        const check = checkGenerator();
        if (!check.ok) throw new Error(`the generator's frames are wrong: ${check.detail}`);
        env = await openEnv(args.id, { sources: p.labSources, poolSize: poolSizeFor(p.knocks.cycles) });
        if (live.includes('flood')) {
          log('3. flood on veth ...');
          try {
            r.parts.flood = await runFlood(env, p.flood, check.detail, log);
          } catch (err) {
            fail('flood', err);
          }
        }
        if (live.includes('knocks')) {
          log('4. knocks under flood ...');
          try {
            r.parts.knocks = await runKnocks(env, p.knocks, 4, log);
          } catch (err) {
            fail('knocks', err);
          }
        }
        if (live.includes('eviction')) {
          log('5. eviction attack ...');
          try {
            r.parts.eviction = await runEviction(env, p.knocks, log);
          } catch (err) {
            fail('eviction', err);
          }
        }
      } catch (err) {
        fail(live.join('+'), err);
      } finally {
        await env?.close();
      }
    }
  } finally {
    cleanupNow(args.id);
  }
  r.seconds = (Date.now() - started) / 1000;
  r.targets = evaluateTargets(r);
  r.files = ['results.json', 'RESULTS.md', ...writeCharts(r, outDir)];
  writeResultsMd(r, outDir);
  writeFileSync(join(outDir, 'results.json'), JSON.stringify(r, null, 2) + '\n');
  console.log(terminalReport(r));
  console.log(`\nwritten: ${r.files.map((f) => join(outDir, f)).join(', ')}`);
  return r.errors.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(2);
  },
);
