/**
 * The fleet engine's own latency: a put on one engine -> the event in another engine's watch
 * callback (two FleetEngine instances, two gRPC connections, one process, one monotonic clock),
 * on 1 member and on 3 members (writer and watcher pinned to different members); and the cost of
 * a one-time claim (the create-if-absent transaction), sequential, on a follower.
 *
 *   node dist/bench/fleet-engine.js [--puts 1000] [--gap-ms 5] [--members 1,3] [--throughput] [--json]
 *
 * --throughput adds sustained writes on 3 members (32 puts in flight, grant-like leases) with 1
 * and with 20 watching engines: how far one cluster goes.
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
  /** pause after each put's answer before the next put; default 5 ms */
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
    // one put at a time, gapMs after the previous one's answer: the latency of a put, not of a
    // queue that a late timer would build by firing several due puts at once
    for (let i = 0; i < puts; i++) {
      send(`${dir}m${i}`);
      await pending.pop();
      if (gapMs > 0) await sleep(gapMs);
    }
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

export interface ClaimLatency {
  endpoint: string;
  claims: number;
  won: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * The cost of a one-time claim (the create-if-absent transaction a signed nonce or a rotating
 * window pays before its grant): `claims` sequential claims of fresh keys, each on its own
 * expiry second's lease as the daemon's are (leases granted on the way are part of the cost).
 */
export async function measureClaimLatency(
  endpoint: string,
  prefix: string,
  claims = 500,
  auth?: { username: string; password: string },
): Promise<ClaimLatency> {
  const logger = createLogger({ level: 'warn', destination: 2 });
  const engine = FleetEngine.open({ endpoints: [endpoint], prefix, hostId: 'bench-claimer', logger, heartbeat: false, ...(auth ? { auth } : {}) });
  const dir = `bench-claims-${Math.random().toString(16).slice(2, 10)}/`;
  const ms: number[] = [];
  let won = 0;
  try {
    const deadline = Date.now() + 30_000;
    while (engine.state !== 'connected') {
      if (Date.now() > deadline) throw new Error(`fleet bench: engine not connected (${engine.state}: ${engine.stateReason})`);
      await sleep(20);
    }
    const exp = Math.floor(Date.now() / 1000) + 30;
    for (let i = 0; i < claims; i++) {
      const t = process.hrtime.bigint();
      if (await engine.claim(`${dir}n${i}`, 'bench', exp + (i % 10))) won++;
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    const left = await engine.list(dir);
    await Promise.all(left.items.map((kv) => engine.delete(kv.key)));
  } finally {
    await engine.close();
  }
  return { endpoint, claims, won, p50Ms: round(quantile(ms, 0.5), 2), p99Ms: round(quantile(ms, 0.99), 2) };
}

export interface Throughput {
  watchers: number;
  inFlight: number;
  seconds: number;
  /** puts answered per second */
  putsPerSec: number;
  /** events delivered per second, summed over the watchers */
  eventsPerSec: number;
  /** true if every watcher got every put */
  complete: boolean;
}

/**
 * Sustained writes: `inFlight` puts outstanding at all times for `seconds`, each on a grant-like
 * lease (one per expiry second), while `watchers` engines (the fleet's hosts) watch the prefix.
 */
export async function measureThroughput(endpoints: string[], prefix: string, watchers: number, seconds = 5, inFlight = 32): Promise<Throughput> {
  const logger = createLogger({ level: 'warn', destination: 2 });
  const writer = FleetEngine.open({ endpoints: [endpoints[0]!], prefix, hostId: 'bench-writer', logger, heartbeat: false });
  const dir = `bench-tp-${Math.random().toString(16).slice(2, 10)}/`;
  let events = 0;
  let ready = 0;
  const ws = Array.from({ length: watchers }, (_, i) => {
    const e = FleetEngine.open({ endpoints: [endpoints[(i + 1) % endpoints.length]!], prefix, hostId: `bench-w${i}`, logger, heartbeat: false });
    const h = e.watch(
      dir,
      (evs) => {
        for (const ev of evs) if (ev.type === 'put') events++;
      },
      () => ready++,
    );
    return { e, h };
  });
  let puts = 0;
  try {
    const deadline = Date.now() + 30_000;
    while (ready < watchers || writer.state !== 'connected') {
      if (Date.now() > deadline) throw new Error('fleet bench: watchers not ready');
      await sleep(20);
    }
    const stopAt = Date.now() + seconds * 1000;
    const t0 = Date.now();
    let n = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (Date.now() < stopAt) {
          const i = n++;
          await writer.put(`${dir}g${i}`, 'x'.repeat(96), { expiresAtSec: Math.floor(Date.now() / 1000) + 30 + (i % 60) });
          puts++;
        }
      }),
    );
    const elapsed = (Date.now() - t0) / 1000;
    const end = Date.now() + 20_000;
    while (events < puts * watchers && Date.now() < end) await sleep(50);
    const deliveredIn = (Date.now() - t0) / 1000;
    return {
      watchers,
      inFlight,
      seconds: round(elapsed, 1),
      putsPerSec: Math.round(puts / elapsed),
      eventsPerSec: Math.round(events / deliveredIn),
      complete: events === puts * watchers,
    };
  } finally {
    for (const w of ws) w.h.close();
    await Promise.all(ws.map((w) => w.e.close()));
    await writer.close();
  }
}

/** Starts a cluster of each size in turn and measures it (writer on member 1, watcher on the last). */
export async function runFleetEngineBench(
  sizes: readonly number[] = [1, 3],
  params: EngineLatencyParams = {},
): Promise<(EngineLatency & { claim: ClaimLatency })[]> {
  const out: (EngineLatency & { claim: ClaimLatency })[] = [];
  for (const members of sizes) {
    await withEtcd({ members }, async (etcd) => {
      const r = await measureEngineLatency(etcd.endpoints[0]!, etcd.endpoints[members - 1]!, etcd.prefix, params);
      // on a follower when there is one: the transaction goes through the leader, as most hosts' would
      const leader = members > 1 ? await etcd.leader() : 0;
      const on = members > 1 ? (leader + 1) % members : 0;
      const claim = await measureClaimLatency(etcd.endpoints[on]!, etcd.prefix, Math.max(500, Math.min(params.puts ?? 1000, 2000)));
      out.push({ members, ...r, claim });
    });
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
    console.error('usage: node dist/bench/fleet-engine.js [--puts N] [--gap-ms MS] [--members 1,3] [--throughput] [--json]');
    process.exit(2);
  }
  const results = await runFleetEngineBench(sizes, { puts, gapMs });
  const throughput = process.argv.includes('--throughput')
    ? await withEtcd({ members: 3 }, async (etcd) => [await measureThroughput(etcd.endpoints, etcd.prefix, 1), await measureThroughput(etcd.endpoints, etcd.prefix, 20)])
    : [];
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify({ latency: results, throughput }, null, 2));
  } else {
    console.log(`etcd put -> watch through FleetEngine, ${puts} puts one at a time, ${gapMs} ms between (writer and watcher on different members when there are several)`);
    console.log('members  received  lost   p50 ms   p90 ms   p99 ms   max ms | claims  won  claim p50 ms  claim p99 ms');
    for (const r of results) {
      console.log(
        `${String(r.members).padStart(7)}  ${String(r.received).padStart(8)}  ${String(r.lost).padStart(4)}  ${r.p50Ms.toFixed(2).padStart(7)}  ${r.p90Ms.toFixed(2).padStart(7)}  ${r.p99Ms.toFixed(2).padStart(7)}  ${r.maxMs.toFixed(2).padStart(7)} | ` +
          `${String(r.claim.claims).padStart(6)}  ${String(r.claim.won).padStart(3)}  ${r.claim.p50Ms.toFixed(2).padStart(12)}  ${r.claim.p99Ms.toFixed(2).padStart(12)}`,
      );
    }
    for (const t of throughput) {
      console.log(
        `throughput, 3 members, ${t.inFlight} puts in flight for ${t.seconds} s, ${t.watchers} watcher(s): ${t.putsPerSec} puts/s, ${t.eventsPerSec} events/s delivered${t.complete ? '' : ' (INCOMPLETE)'}`,
      );
    }
    const load = (await import('node:os')).loadavg()[0]!;
    console.log(`(load average ${load.toFixed(1)} on ${(await import('node:os')).cpus().length} CPUs during the run: read the numbers with it)`);
  }
}
