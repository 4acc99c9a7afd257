/**
 * The fleet engine's own latency: a put on one engine -> the event in another engine's watch
 * callback (two FleetEngine instances, two gRPC connections, one process, one monotonic clock),
 * on 1 member and on 3 members (writer and watcher pinned to different members).
 *
 *   node dist/bench/fleet-engine.js [--puts 1000] [--gap-ms 5] [--members 1,3] [--json]
 *
 * Starts its own etcd members (test/helpers/etcd.ts: free loopback ports, temp data dirs, stopped
 * by PID at the end). For the knock-at-A -> grant-in-B benchmark, call `measureEngineLatency` on
 * the same cluster in the same run, so both numbers share the machine's load.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { FleetEngine, type WatchEvent } from '../src/fleet/engine.js';
import { createLogger } from '../src/log.js';
import { withEtcd } from '../test/helpers/etcd.js';
import { quantile, round } from './stats.js';

export interface EngineLatencyParams {
  /** puts measured (>= 500 for a p99 worth the name); default 1000 */
  puts?: number;
  /** pause between two puts (they are not awaited one by one); default 5 ms */
  gapMs?: number;
  /** puts before measuring (connections, leases warm); default 50 */
  warmup?: number;
}

export interface EngineLatency {
  members: number;
  writerEndpoint: string;
  watcherEndpoint: string;
  puts: number;
  received: number;
  /** puts whose event never arrived (within 10 s of the last put) */
  lost: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

/**
 * Put -> watch latency through two engines on `writerEndpoint` and `watcherEndpoint` (may be the
 * same member), under `prefix` (keys `bench-<random>/...` below it, deleted afterwards).
 */
export async function measureEngineLatency(
  writerEndpoint: string,
  watcherEndpoint: string,
  prefix: string,
  params: EngineLatencyParams = {},
  auth?: { username: string; password: string },
): Promise<Omit<EngineLatency, 'members'>> {
  const puts = params.puts ?? 1000;
  const gapMs = params.gapMs ?? 5;
  const warmup = params.warmup ?? 50;
  const logger = createLogger({ level: 'warn', destination: 2 });
  const base = { prefix, logger, ...(auth ? { auth } : {}) };
  const writer = FleetEngine.open({ ...base, endpoints: [writerEndpoint], hostId: 'bench-writer' });
  const watcher = FleetEngine.open({ ...base, endpoints: [watcherEndpoint], hostId: 'bench-watcher' });
  const dir = `bench-${Math.random().toString(16).slice(2, 10)}/`;
  const sent = new Map<string, bigint>();
  const latencies: number[] = [];
  let started = false;
  const handle = watcher.watch(
    dir,
    (events: WatchEvent[]) => {
      const now = process.hrtime.bigint();
      for (const e of events) {
        if (e.type !== 'put') continue;
        const t = sent.get(e.key);
        if (t === undefined) continue;
        sent.delete(e.key);
        if (!e.key.startsWith(`${dir}w`)) latencies.push(Number(now - t) / 1e6);
      }
    },
    () => {
      started = true;
    },
  );
  try {
    const deadline = Date.now() + 30_000;
    while (!started || writer.state !== 'connected') {
      if (Date.now() > deadline) throw new Error(`fleet bench: engines not connected (writer ${writer.state}: ${writer.stateReason})`);
      await sleep(20);
    }
    const pending: Promise<void>[] = [];
    const send = (key: string): void => {
      sent.set(key, process.hrtime.bigint());
      pending.push(writer.put(key, 'x'));
    };
    for (let i = 0; i < warmup; i++) send(`${dir}w${i}`);
    await Promise.all(pending.splice(0));
    const t0 = Date.now();
    for (let i = 0; i < puts; i++) {
      const due = t0 + i * gapMs;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      send(`${dir}m${i}`);
    }
    await Promise.all(pending);
    const end = Date.now() + 10_000;
    while (latencies.length < puts && Date.now() < end) await sleep(20);
  } finally {
    handle.close();
    try {
      const left = await writer.list(dir);
      await Promise.all(left.items.map((kv) => writer.delete(kv.key)));
    } catch {
      // best effort
    }
    await Promise.all([writer.close(), watcher.close()]);
  }
  return {
    writerEndpoint,
    watcherEndpoint,
    puts,
    received: latencies.length,
    lost: puts - latencies.length,
    p50Ms: round(quantile(latencies, 0.5), 2),
    p90Ms: round(quantile(latencies, 0.9), 2),
    p99Ms: round(quantile(latencies, 0.99), 2),
    maxMs: round(Math.max(...latencies), 2),
  };
}

/** Starts a cluster of each size in turn and measures it (writer on member 1, watcher on the last). */
export async function runFleetEngineBench(sizes: readonly number[] = [1, 3], params: EngineLatencyParams = {}): Promise<EngineLatency[]> {
  const out: EngineLatency[] = [];
  for (const members of sizes) {
    const r = await withEtcd({ members }, (etcd) => measureEngineLatency(etcd.endpoints[0]!, etcd.endpoints[members - 1]!, etcd.prefix, params));
    out.push({ members, ...r });
  }
  return out;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const puts = Number(arg('--puts') ?? 1000);
  const gapMs = Number(arg('--gap-ms') ?? 5);
  const sizes = (arg('--members') ?? '1,3').split(',').map(Number);
  if (!Number.isInteger(puts) || puts < 1 || sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 7)) {
    console.error('usage: node dist/bench/fleet-engine.js [--puts N] [--gap-ms MS] [--members 1,3] [--json]');
    process.exit(2);
  }
  const results = await runFleetEngineBench(sizes, { puts, gapMs });
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(results, null, 2));
  } else {
    console.log(`etcd put -> watch through FleetEngine, ${puts} puts ${gapMs} ms apart (writer and watcher on different members when there are several)`);
    console.log('members  received  lost   p50 ms   p90 ms   p99 ms   max ms');
    for (const r of results) {
      console.log(
        `${String(r.members).padStart(7)}  ${String(r.received).padStart(8)}  ${String(r.lost).padStart(4)}  ${r.p50Ms.toFixed(2).padStart(7)}  ${r.p90Ms.toFixed(2).padStart(7)}  ${r.p99Ms.toFixed(2).padStart(7)}  ${r.maxMs.toFixed(2).padStart(7)}`,
      );
    }
  }
}
