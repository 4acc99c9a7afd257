/**
 * Parts 4 and 5: real knock-then-connect cycles (bench/peer.ts, in the outside namespace)
 * while the generator floods the gateway.
 *
 *   knocks under flood  the same SYN flood to the protected port, once against knockgate and
 *                       once against knockd (Debian's package, sniffing the veth with libpcap)
 *                       with the knockd-style nftables filter (conntrack, a set of allowed
 *                       sources that knockd's command fills)
 *   eviction attack     spoofed first knocks (SYN to the first step's port) from 10x the
 *                       progress map's capacity of distinct IPv6 sources, against knockgate
 *
 * A cycle: the three knocks 10 ms apart, then a TCP connect to the service (timeout 3 s, so the
 * kernel's one SYN retransmission at 1 s is included); it succeeds when the greeting arrives.
 * Time to open: from the first knock to the greeting. Each cycle uses a source address of its
 * own, and the scenarios use disjoint ones, so no grant is ever reused.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { STAT_NAMES, type StatName } from '../src/kernel/layout.js';
import { SEQUENCE_TEXT, PORTS, SPA_KEY, configText, statsDelta } from './gate.js';
import { ROOT } from './sys.js';
import type { FloodL4 } from './flood-gen.js';
import type { Env } from './env.js';
import { floodCpu, flowing, nft, nftCounter, nftDeleteTable, nftInetRuleset, sample, vethLoss, windowOf, type VethLoss } from './flood.js';
import { median, quantile } from './stats.js';
import { processCpuSeconds, sleep, type Child } from './sys.js';
import type { Family } from './classes.js';

export interface KnockParams {
  cycles: number;
  gapMs: number;
  connectTimeoutMs: number;
  /** hard limit for one scenario's cycles */
  budgetS: number;
}

export interface KnockRun {
  system: 'knockgate' | 'knockd';
  flood: { family: Family; dport: number; sources: number; l4?: FloodL4 };
  /** the client's knocks (absent: the bench door's sequence) */
  steps?: string[];
  cycles: number;
  ok: number;
  successPct: number;
  /** a source that did not knock could not connect (checked once first) */
  closedBefore: boolean | null;
  openMs: { median: number; p90: number; max: number };
  failures: { cycle: number; family: number; error: string }[];
  /** flood packets the receiver dropped per second during the cycles */
  floodDropPps: number;
  generatorPps: number | null;
  softirqPct: number;
  softirqPctPerCpu: number[];
  /** knockd's own CPU time over the cycles, % of one core */
  knockdCpuPct?: number;
  /** packets lost at the veth's ring during the cycles: client skbs, flood frames */
  vethLoss: VethLoss;
  /** user time per CPU during the cycles: load that is not the benchmark's */
  otherLoadPct: number[];
  /** kg_stats counters that moved during the run (knockgate) */
  gateCounters?: Partial<Record<StatName, number>>;
  seconds: number;
}

function parseCycles(client: Child): { cycles: number; ok: number; times: number[]; failures: KnockRun['failures']; closed: boolean | null } {
  const lines = client.json();
  const closed = lines.find((l) => l['closedCheck'] === true);
  const cyc = lines.filter((l) => typeof l['cycle'] === 'number');
  const failures = cyc
    .filter((l) => l['ok'] !== true)
    .map((l) => ({ cycle: Number(l['cycle']), family: Number(l['family']), error: String(l['error'] ?? 'failed') }));
  const times = cyc.filter((l) => l['ok'] === true).map((l) => Number(l['ms']));
  const err = lines.find((l) => typeof l['error'] === 'string' && l['cycle'] === undefined);
  if (err) failures.push({ cycle: -1, family: 0, error: `client: ${String(err['error'])}` });
  return { cycles: cyc.length, ok: times.length, times, failures, closed: closed ? closed['closed'] === true : null };
}

interface Scenario {
  system: 'knockgate' | 'knockd';
  flood: { family: Family; dport: number; range: number; l4?: FloodL4 };
  steps?: string[];
  pool: { pool4: string[]; pool6: string[] };
  counter: () => number;
  setup: () => Promise<void>;
  teardown: () => Promise<void>;
  knockdPid?: () => number;
}

async function runScenario(env: Env, s: Scenario, p: KnockParams): Promise<KnockRun> {
  const t0 = Date.now();
  await s.setup();
  try {
    const gen = await env.startGenerator({ family: s.flood.family, dport: s.flood.dport, range: s.flood.range, l4: s.flood.l4 ?? 'syn', seconds: p.budgetS + 10, maxFrames: Math.round((p.budgetS + 10) * 50e6) });
    let client: Child | null = null;
    try {
      await flowing(s.counter);
      await sleep(500);
      const ours = floodCpu(env, gen);
      const g0 = env.bg.gate.stats();
      const a = sample(s.counter, ours);
      const l0 = vethLoss(env);
      const k0 = s.knockdPid ? processCpuSeconds(s.knockdPid()) : NaN;
      client = env.startCycles({ ...s.pool, steps: s.steps ?? SEQUENCE_TEXT, cycles: p.cycles, gapMs: p.gapMs, connectTimeoutMs: p.connectTimeoutMs, closedCheck: true, deadlineS: p.budgetS });
      if (!(await client.waitExit(p.budgetS * 1000 + 15_000))) await client.stop();
      const b = sample(s.counter, ours);
      const l1 = vethLoss(env);
      const k1 = s.knockdPid ? processCpuSeconds(s.knockdPid()) : NaN;
      const g1 = env.bg.gate.stats();
      await gen.stop();
      const w = windowOf(a, b, gen.pps());
      const r = parseCycles(client);
      const wallS = Number(b.atNs - a.atNs) / 1e9;
      const run: KnockRun = {
        system: s.system,
        flood: { family: s.flood.family, dport: s.flood.dport, sources: s.flood.range, l4: s.flood.l4 ?? 'syn' },
        ...(s.steps ? { steps: s.steps } : {}),
        cycles: r.cycles,
        ok: r.ok,
        successPct: r.cycles > 0 ? (r.ok / p.cycles) * 100 : 0,
        closedBefore: r.closed,
        openMs: { median: median(r.times), p90: quantile(r.times, 0.9), max: Math.max(...r.times, NaN) },
        failures: r.failures.slice(0, 20),
        floodDropPps: w.pps,
        generatorPps: w.generatorPps,
        softirqPct: w.softirqPct,
        softirqPctPerCpu: w.softirqPctPerCpu,
        vethLoss: { skbsDropped: l1.skbsDropped - l0.skbsDropped, framesDropped: l1.framesDropped - l0.framesDropped },
        otherLoadPct: w.userPctPerCpu,
        seconds: (Date.now() - t0) / 1000,
      };
      if (r.times.length > 0) run.openMs.max = Math.max(...r.times);
      if (s.knockdPid) run.knockdCpuPct = ((k1 - k0) / wallS) * 100;
      if (s.system === 'knockgate') {
        const d = statsDelta(g0, g1);
        run.gateCounters = Object.fromEntries(STAT_NAMES.filter((n) => d[n] !== 0).map((n) => [n, d[n]]));
      }
      return run;
    } finally {
      if (client) await client.stop();
      await gen.stop();
    }
  } finally {
    await s.teardown();
  }
}

function pools(env: Env, index: number, cycles: number): { pool4: string[]; pool6: string[] } {
  const per = Math.ceil(cycles / 2) + 1;
  return { pool4: env.lab.pool4.slice(index * per, (index + 1) * per), pool6: env.lab.pool6.slice(index * per, (index + 1) * per) };
}

export function poolSizeFor(cycles: number): number {
  return 5 * (Math.ceil(cycles / 2) + 1);
}

/** The client's spa knock: one datagram to the spa door under its key. */
export const SPA_STEP = `spa:${PORTS.spa}:${SPA_KEY.toString('hex')}`;

function gateScenario(env: Env, flood: Scenario['flood'], pool: Scenario['pool'], counter: StatName): Scenario {
  const { lab, bg } = env;
  return {
    system: 'knockgate',
    flood,
    pool,
    counter: () => Number(bg.gate.stats()[counter]),
    setup: async () => {
      lab.enter(lab.nsG, () => bg.gate.attach([{ name: lab.ifG, mode: 'native', attach: 'link', priority: 10 }]));
    },
    teardown: async () => {
      lab.enter(lab.nsG, () => bg.gate.detachInterface(lab.ifG));
    },
  };
}

function knockdScenario(env: Env, flood: Scenario['flood'], pool: Scenario['pool']): Scenario {
  const { lab, tmp } = env;
  const conf = join(tmp, 'knockd.conf');
  const logFile = join(tmp, 'knockd.log');
  const script = join(tmp, 'knockd-open.sh');
  let knockd: Child | null = null;
  const seq = PORTS.steps.map((s) => `${s.port}:${s.proto}`).join(',');
  return {
    system: 'knockd',
    flood,
    pool,
    counter: () => nftCounter(env, 'inet', 'flood'),
    knockdPid: () => knockd?.pid ?? -1,
    setup: async () => {
      nft(env, nftInetRuleset());
      writeFileSync(
        script,
        `#!/bin/sh
# knockd's command (runs in the gateway namespace): allow the source that knocked
case "$1" in
  *:*) exec nft add element inet kgbench allowed6 "{ $1 }" ;;
  *) exec nft add element inet kgbench allowed4 "{ $1 }" ;;
esac
`,
        { mode: 0o755 },
      );
      writeFileSync(
        conf,
        `[options]
	LogFile = ${logFile}
	PidFile = ${join(tmp, 'knockd.pid')}

[kgbench]
	sequence    = ${seq}
	seq_timeout = 15
	tcpflags    = syn
	command     = ${script} %IP%
`,
      );
      knockd = env.startInGateway('knockd', ['knockd', '-i', lab.ifG, '-c', conf]);
      for (let i = 0; i < 50; i++) {
        if (existsSync(logFile) && /listening on/.test(readFileSync(logFile, 'utf8'))) return;
        if (!knockd.running) break;
        await sleep(100);
      }
      throw new Error(`knockd did not start: ${existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-500) : 'no log'} ${knockd.stderr.join('').slice(-500)}`);
    },
    teardown: async () => {
      await knockd?.stop();
      nftDeleteTable(env, 'inet');
    },
  };
}

/**
 * The gate with its daemon: `knockgate run --keep` in the gateway namespace adopts the bench's
 * pinned gate (same config, so the same map sizes), refills the event budgets and drains the
 * ring (every accepted first knock is an event while its budget lasts). Stopped with SIGTERM;
 * --keep leaves the gate pinned for the bench to detach.
 */
function daemonScenario(env: Env, flood: Scenario['flood'], pool: Scenario['pool']): Scenario {
  const { lab, bg, tmp } = env;
  let daemon: Child | null = null;
  const gate = gateScenario(env, flood, pool, 'knock_step');
  return {
    ...gate,
    setup: async () => {
      await gate.setup();
      const keyFile = join(tmp, 'spa.key');
      writeFileSync(keyFile, SPA_KEY.toString('hex') + '\n', { mode: 0o600 });
      const conf = join(tmp, 'knockgate.yaml');
      const ring = bg.gate.map('kg_events').maxEntries;
      writeFileSync(conf, configText({ iface: lab.ifG, pinPath: bg.pinPath, sources: bg.gate.map('kg_progress').maxEntries, ringBytes: ring, spaKeyFile: keyFile, logLevel: 'info', xdpMode: 'auto' }));
      // xdp_mode auto: the daemon keeps the link the bench attached (native) instead of attaching again
      daemon = env.startInGateway('knockgate daemon', [process.execPath, `${ROOT}dist/src/cli/main.js`, 'run', '-c', conf, '--keep']);
      await daemon.waitLine((l) => l.includes('adopted the pinned gate'), 30_000);
      await sleep(1000);
    },
    teardown: async () => {
      try {
        await daemon?.stop();
      } finally {
        await gate.teardown();
      }
    },
  };
}

export interface KnocksResult {
  params: KnockParams;
  knockgate: KnockRun;
  knockd: KnockRun | null;
  knockdError?: string;
  /** spa knocks while junk spa datagrams flood the spa port */
  spa?: KnockRun;
  seconds: number;
}

export async function runKnocks(env: Env, p: KnockParams, family: Family, log: (s: string) => void): Promise<KnocksResult> {
  const t0 = Date.now();
  const flood = { family, dport: PORTS.service, range: family === 4 ? (1 << 16) - 2 : 1 << 24 };
  const gate = await runScenario(env, gateScenario(env, flood, pools(env, 0, p.cycles), 'drop_no_grant'), p);
  log(`  knockgate: ${gate.ok}/${gate.cycles} cycles opened, median ${gate.openMs.median.toFixed(0)} ms`);
  let knockd: KnockRun | null = null;
  let knockdError: string | undefined;
  try {
    knockd = await runScenario(env, knockdScenario(env, flood, pools(env, 1, p.cycles)), p);
    log(`  knockd:    ${knockd.ok}/${knockd.cycles} cycles opened, median ${knockd.openMs.median.toFixed(0)} ms, knockd CPU ${knockd.knockdCpuPct?.toFixed(1)}%`);
  } catch (err) {
    knockdError = err instanceof Error ? err.message : String(err);
    log(`  knockd: not measured: ${knockdError}`);
  }
  const spaFlood = { family, dport: PORTS.spa, range: flood.range, l4: 'spa' as const };
  const spa = await runScenario(env, { ...gateScenario(env, spaFlood, pools(env, 3, p.cycles), 'drop_knock'), steps: [SPA_STEP] }, p);
  log(`  knockgate, spa knocks under a junk spa flood: ${spa.ok}/${spa.cycles} cycles opened, median ${spa.openMs.median.toFixed(0)} ms`);
  const out: KnocksResult = { params: p, knockgate: gate, knockd, spa, seconds: (Date.now() - t0) / 1000 };
  if (knockdError !== undefined) out.knockdError = knockdError;
  return out;
}

export interface EvictionResult {
  params: KnockParams;
  /** the same attack with the daemon running (it adopts the gate and drains the event ring) */
  daemon?: KnockRun;
  daemonError?: string;
  /** limits.sources: the progress map's capacity */
  capacity: number;
  /** distinct spoofed sources the first knocks come from */
  spoofedSources: number;
  run: KnockRun;
  /** progress entries (sources with two correct steps) left after the attack / capacity */
  progressFill: number;
  /** first-knock records left after the attack / capacity */
  probationFill: number;
  seconds: number;
}

export async function runEviction(env: Env, p: KnockParams, log: (s: string) => void): Promise<EvictionResult> {
  const t0 = Date.now();
  const capacity = env.bg.gate.map('kg_progress').maxEntries;
  const flood = { family: 6 as const, dport: PORTS.steps[0]!.port, range: capacity * 10 };
  const run = await runScenario(env, gateScenario(env, flood, pools(env, 2, p.cycles), 'knock_step'), p);
  const fills = env.bg.gate.mapFill();
  const fill = fills.find((m) => m.map === 'kg_progress');
  const prob = fills.find((m) => m.map === 'kg_probation');
  log(`  eviction: ${run.ok}/${run.cycles} cycles opened under first knocks from ${flood.range} sources (capacity ${capacity})`);
  let daemon: KnockRun | undefined;
  let daemonError: string | undefined;
  try {
    daemon = await runScenario(env, daemonScenario(env, flood, pools(env, 4, p.cycles)), p);
    log(`  eviction, daemon running: ${daemon.ok}/${daemon.cycles} cycles opened`);
  } catch (err) {
    daemonError = err instanceof Error ? err.message : String(err);
    log(`  eviction with the daemon: not measured: ${daemonError}`);
  }
  return {
    ...(daemon ? { daemon } : {}),
    ...(daemonError !== undefined ? { daemonError } : {}),
    params: p,
    capacity,
    spoofedSources: flood.range,
    run,
    progressFill: fill ? fill.entries / fill.max : NaN,
    probationFill: prob ? prob.entries / prob.max : NaN,
    seconds: (Date.now() - t0) / 1000,
  };
}
