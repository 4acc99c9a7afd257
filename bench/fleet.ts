/**
 * Fleet mode, end to end: a knock completed on gate A -> the grant written into gate B's kernel,
 * beside the fleet engine's own put -> watch latency measured on the same etcd members in the
 * same run; and knock-at-A-connect-at-B cycles: does B let the connection in at the first SYN?
 *
 *   sudo node dist/bench/fleet.js [--knocks 500] [--gap-ms 100] [--json]
 *
 * The lab is the e2e tests' (test/helpers/fleet-lab.ts): a client namespace, two gateway
 * namespaces with a gate and daemon each, 3 etcd members on a bridge. Each cycle knocks A from a
 * fresh source address (198.18.21.0/24 on the client's loopback), waits --gap-ms (the client's
 * default pause between knocks, 100 ms: what `knockgate knock --then` leaves between the last
 * knock and the command), then opens one TCP connection to B with a 900 ms timeout: shorter than
 * Linux's first SYN retransmission (1 s), so a success is a first-SYN success.
 * The lag is B's own measure (knockgate_fleet_replication_lag_seconds): the kernel's grant at A
 * (its event clock, on the wall clock) -> the grant written into B's kernel.
 * No pass/fail: a report, with the target (lag at most 2x the engine's, >= 99 % first SYN).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fleetSection, runAsync, withFleetLab, SERVICE_PORT } from '../test/helpers/fleet-lab.js';
import { run } from '../test/helpers/kernel.js';
import { measureEngineLatency } from './fleet-engine.js';
import { quantile, round } from './stats.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const knocks = Math.max(100, Math.min(arg('knocks', 500), 5000));
const gapMs = Math.max(0, Math.min(arg('gap-ms', 100), 2000));
const json = process.argv.includes('--json');

/** node -e CYCLES A B PORT GAP N: knock A (7000/tcp 8000/udp 9000/tcp) from a fresh source, wait, connect B. */
const CYCLES = String.raw`
const net = require('node:net'); const dgram = require('node:dgram');
const [a, b, port, gap, n] = process.argv.slice(1);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tcp = (host, p, from, timeout) => new Promise((resolve) => {
  const s = net.connect({ host, port: p, localAddress: from });
  const done = (ok, err) => { clearTimeout(t); s.destroy(); resolve({ ok, err }); };
  const t = setTimeout(() => done(false, 'timeout'), timeout);
  s.once('connect', () => done(true)); s.once('error', (e) => done(false, e.code));
});
const udp = (host, p, from) => new Promise((resolve, reject) => {
  const s = dgram.createSocket('udp4');
  s.bind({ address: from, port: 0 }, () => s.send(Buffer.from('k'), p, host, (e) => { s.close(); e ? reject(e) : resolve(); }));
});
(async () => {
  let ok = 0; const failed = []; const t0 = Date.now();
  for (let i = 0; i < Number(n); i++) {
    const from = '198.18.21.' + (1 + (i % 250));
    await tcp(a, 7000, from, 300); await sleep(10);
    await udp(a, 8000, from); await sleep(10);
    await tcp(a, 9000, from, 300);
    await sleep(Number(gap));
    const r = await tcp(b, Number(port), from, 900);
    if (r.ok) ok++; else failed.push({ i, from, err: r.err });
  }
  console.log(JSON.stringify({ ok, failed: failed.slice(0, 20), failures: failed.length, seconds: (Date.now() - t0) / 1000 }));
})().catch((e) => { console.error(String(e)); process.exit(1); });
`;

await withFleetLab({ gateways: 2, etcdMembers: 3 }, async (lab) => {
  // Fresh sources for every cycle: a /24 on the client's loopback, routed back by the gateways.
  run('ip', ['-n', lab.clientNs, 'addr', 'add', '198.18.21.1/24', 'dev', 'lo']);
  for (const g of lab.gws) run('ip', ['-n', g.ns, 'route', 'add', '198.18.21.0/24', 'dev', g.dataIf]);
  lab.writeConfigs((gw) => `interfaces: [${gw.dataIf}]
xdp_mode: native
pin_path: ${gw.pin}
log:
  level: debug
  knock_events_per_second: 0
  denials_per_second: 0
brute_force:
  max_failures: 0
${fleetSection(lab, gw)}doors:
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [${SERVICE_PORT}/tcp]
    open_for: 10s
`);
  for (let i = 0; i < 2; i++) await lab.start(i);
  const [a, b] = [lab.gws[0]!.daemon!, lab.gws[1]!.daemon!];
  for (const d of [a, b]) await d.waitFor((l) => l.msg === 'fleet: records loaded', 30_000);
  // Which members A and B use (from their heartbeats): the engine is measured between the same two.
  await new Promise((r) => setTimeout(r, 3_000));
  const endpointOf = (host: string): string => (JSON.parse(lab.etcd.etcdctl(['get', `${lab.etcd.prefix}hosts/${host}`, '--print-value-only'])) as { endpoint: string }).endpoint;
  const [ea, eb] = [endpointOf('gw1'), endpointOf('gw2')];

  const engine = await measureEngineLatency(ea, eb, lab.etcd.prefix, { puts: 1000, gapMs: 5 });
  const mark = b.lines.length;
  const r = await runAsync('ip', ['netns', 'exec', lab.clientNs, process.execPath, '-e', CYCLES, lab.gws[0]!.addr, lab.gws[1]!.addr, String(SERVICE_PORT), String(gapMs), String(knocks)], 30 * 60_000);
  if (r.status !== 0) throw new Error(`cycles: ${r.stderr}`);
  const cycles = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: number; failures: number; failed: unknown[]; seconds: number };
  await new Promise((res) => setTimeout(res, 2_000));
  const applied = b.lines.slice(mark).filter((l) => l.msg === 'fleet record applied' && l['state'] === 'granted');
  const lags = applied.map((l) => Number(l['lag_ms']));
  // the part from the origin's put to B's kernel (etcd, B's watch, B's daemon); the rest is A's
  const viaStore = applied.map((l) => Number(l['store_ms'])).filter((x) => Number.isFinite(x));
  const engine2 = await measureEngineLatency(ea, eb, lab.etcd.prefix, { puts: 1000, gapMs: 5 });

  const lag = { n: lags.length, p50: round(quantile(lags, 0.5)), p99: round(quantile(lags, 0.99)), max: round(Math.max(...lags)), from_put_p50: round(quantile(viaStore, 0.5)), from_put_p99: round(quantile(viaStore, 0.99)) };
  const eng = { p50: round((engine.p50Ms + engine2.p50Ms) / 2), p99: round((engine.p99Ms + engine2.p99Ms) / 2), before: engine, after: engine2 };
  const out = {
    knocks,
    gap_ms: gapMs,
    writer_member: ea,
    watcher_member: eb,
    knock_to_kernel_ms: lag,
    engine_put_to_watch_ms: { p50: eng.p50, p99: eng.p99, before: { p50: engine.p50Ms, p99: engine.p99Ms, lost: engine.lost }, after: { p50: engine2.p50Ms, p99: engine2.p99Ms, lost: engine2.lost } },
    ratio: { p50: round(lag.p50 / eng.p50), p99: round(lag.p99 / eng.p99) },
    first_syn: { ok: cycles.ok, of: knocks, percent: round((100 * cycles.ok) / knocks), failed: cycles.failed },
    target: { lag_at_most_2x_engine: lag.p50 <= 2 * eng.p50 && lag.p99 <= 2 * eng.p99, first_syn_99_percent: cycles.ok * 100 >= 99 * knocks },
  };
  if (json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  else {
    process.stdout.write(`fleet: ${knocks} knocks at A, connect at B ${gapMs} ms later\n`);
    process.stdout.write(`  knock at A -> grant in B's kernel: p50 ${lag.p50} ms, p99 ${lag.p99} ms, max ${lag.max} ms (n=${lag.n})\n`);
    process.stdout.write(`    of which A's put -> B's kernel: p50 ${lag.from_put_p50} ms, p99 ${lag.from_put_p99} ms (the rest: A's kernel -> A's put)\n`);
    process.stdout.write(`  etcd put -> watch (engine, same members): p50 ${eng.p50} ms, p99 ${eng.p99} ms\n`);
    process.stdout.write(`  ratio: p50 ${out.ratio.p50}x, p99 ${out.ratio.p99}x (target <= 2x: ${out.target.lag_at_most_2x_engine ? 'met' : 'missed'})\n`);
    process.stdout.write(`  first SYN at B: ${cycles.ok}/${knocks} (${out.first_syn.percent} %; target >= 99 %: ${out.target.first_syn_99_percent ? 'met' : 'missed'})\n`);
  }
  writeFileSync(join(lab.dir, 'result.json'), JSON.stringify(out));
});
