// The Grafana dashboard (config/grafana/knockgate.json) and the Prometheus alert rules
// (config/prometheus/knockgate-alerts.yml), checked against a real Prometheus: promtool checks
// the rules; then Debian's prometheus, started by the test inside a lab namespace (loopback, its
// own port and data dir), scrapes a live gate (`knockgate run --metrics`) while the lab makes
// conditions true, and every alert expression and every panel query is evaluated through the
// HTTP API. Each condition is one row of CONDITIONS below.
//
// Phase 1 makes conditions true, phase 2 reloads the daemon with no interfaces, phase 3 restarts
// it in fleet mode with an etcd endpoint that does not answer (disconnected). Nothing skips
// (but a missing prometheus, promtool or TUN driver off CI).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { pino } from 'pino';
import { closeFd, progTestRun } from '../../src/bpf/index.js';
import { libbpf } from '../../src/bpf/libbpf.js';
import { Gate } from '../../src/kernel/gate.js';
import { parseAddress } from '../../src/net/addr.js';
import { IN_CI, ROOT, kernelTest, run, withNetns, type NetnsPair } from '../helpers/kernel.js';
import { Proc, client, sleep, startClient, startDaemon } from '../helpers/daemon.js';
import { tcpSyn } from '../helpers/packets.js';
import { closeFd as closeTun, openTun, requireTun, setTunLinkType } from '../helpers/sockets.js';
import { parseProm } from '../helpers/prom.js';

const RULES_FILE = `${ROOT}config/prometheus/knockgate-alerts.yml`;
const DASHBOARD_FILE = `${ROOT}config/grafana/knockgate.json`;

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules: Rule[] = (parseYaml(readFileSync(RULES_FILE, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

interface Target {
  expr: string;
  refId: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  datasource?: { type: string; uid: string };
  targets?: Target[];
}
const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown; allValue?: string }[] };
};
const queryPanels = dashboard.panels.filter((p) => p.type !== 'row');

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

function requireTool(t: TestContext, cmd: string, aptPackage: string): boolean {
  if (hasCommand(cmd)) return true;
  const reason = `${cmd} is not installed (apt-get install ${aptPackage}; scripts/setup.sh does)`;
  if (IN_CI) throw new Error(`ops test cannot run in CI (CI=true): ${reason}`);
  t.skip(reason);
  return false;
}

/** knockgate_* and fleet metric names an expression reads (a histogram's _bucket as its base name). */
function metricsOf(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\b(knockgate_[a-z_]+)/g)].map((m) => m[1]!.replace(/_bucket$/, '')))];
}

/** A panel query as Grafana would send it: the dashboard's variables replaced. */
function grafanaExpr(expr: string): string {
  return expr
    .replace(/\$__rate_interval/g, '1m')
    .replace(/\$__range/g, '10m')
    .replace(/\$instance/g, '.*')
    .replace(/\$\{datasource\}/g, 'prometheus');
}

// ---- the files on their own ------------------------------------------------------------------

test('promtool check rules accepts the alert rules', (t) => {
  if (!requireTool(t, 'promtool', 'prometheus')) return;
  const r = spawnSync('promtool', ['check', 'rules', RULES_FILE], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`));
});

test('every alert has a severity, a summary, a description and a README entry', () => {
  const readme = readFileSync(`${ROOT}README.md`, 'utf8');
  assert.ok(rules.length >= 10);
  for (const r of rules) {
    assert.match(r.labels?.['severity'] ?? '', /^(critical|warning)$/, r.alert);
    assert.ok(r.annotations?.['summary'], `${r.alert}: summary`);
    assert.ok(r.annotations?.['description'], `${r.alert}: description`);
    assert.ok(readme.includes(`\`${r.alert}\``), `${r.alert} is not documented in README.md`);
  }
  // The conditions the issue names, each covered by a rule.
  for (const metric of ['knockgate_interface_attached', 'knockgate_interface_state', 'knockgate_interface_unprotected_seconds_total', 'knockgate_events_lost_total', 'knockgate_map_fill_ratio', 'knockgate_sources_in_cooldown', 'knockgate_fleet_replication_lag_seconds', 'knockgate_fleet_connected']) {
    assert.ok(rules.some((r) => metricsOf(r.expr).includes(metric)), `no alert reads ${metric}`);
  }
});

test('the dashboard picks its Prometheus from a datasource variable, and every panel says what it shows', () => {
  assert.equal(dashboard.uid, 'knockgate');
  const ds = dashboard.templating.list.find((v) => v.type === 'datasource');
  assert.ok(ds, 'a datasource variable');
  assert.equal(ds.query, 'prometheus');
  assert.ok(dashboard.templating.list.some((v) => v.name === 'instance' && v.allValue === '.*'));
  const ids = new Set<number>();
  for (const p of dashboard.panels) {
    assert.ok(!ids.has(p.id), `panel id ${p.id} used twice`);
    ids.add(p.id);
    if (p.type === 'row') continue;
    assert.ok(p.description && p.description.length > 10, `panel "${p.title}" has no description`);
    assert.deepEqual(p.datasource, { type: 'prometheus', uid: `\${${ds.name}}` }, p.title);
    assert.ok((p.targets ?? []).length > 0, `panel "${p.title}" has no query`);
    for (const t of p.targets ?? []) assert.deepEqual(t.datasource, p.datasource, `${p.title} ${t.refId}`);
  }
  // Every metric the daemon or the other branches export has a panel.
  const shown = new Set(queryPanels.flatMap((p) => (p.targets ?? []).flatMap((t) => metricsOf(t.expr))));
  for (const m of ['knockgate_packets_total', 'knockgate_door_events_total', 'knockgate_grants', 'knockgate_flows', 'knockgate_sources_in_progress', 'knockgate_sources_in_cooldown', 'knockgate_first_knock_filter', 'knockgate_events_lost_total', 'knockgate_map_fill_ratio', 'knockgate_interface_attached', 'knockgate_info', 'knockgate_interface_state', 'knockgate_interface_unprotected_seconds_total', 'knockgate_fleet_connected', 'knockgate_fleet_replication_lag_seconds', 'knockgate_fleet_peer_heartbeat_age_seconds', 'knockgate_fleet_claims_total']) {
    assert.ok(shown.has(m), `no panel shows ${m}`);
  }
});

// ---- the live lab --------------------------------------------------------------------------------

/** What the lab does to each alert's condition: 'data', the expression returns data; 'empty', it evaluates and returns nothing. */
type Expect = 'data' | 'empty';

interface Condition {
  alert: string;
  /**
   * phase 1: a knock, a full map, lost events, a named interface deleted (...g: absent), a TUN a
   * pattern matches re-typed to ARPHRD_IPGRE (...t0: waiting), a pattern that matches nothing
   * (...x*: absent); phase 2: reloaded with interfaces: []
   */
  phase1: Expect;
  phase2: Expect;
  /** phase 3: a new daemon (a fresh gate on the first interface only) in fleet mode, etcd unreachable */
  phase3: Expect;
  /** phase 1: the interfaces its result must name, exactly (suffixes of kg-<id>) */
  interfaces1?: string[];
  why: string;
}

const CONDITIONS: Condition[] = [
  { alert: 'KnockgateDown', phase1: 'empty', phase2: 'empty', phase3: 'empty', why: 'the daemon answers every scrape' },
  { alert: 'KnockgateGateDetached', phase1: 'empty', phase2: 'data', phase3: 'empty', why: 'phase 2 reloads the daemon with interfaces: [], which detaches it from everything' },
  { alert: 'KnockgateInterfaceWithoutGate', phase1: 'data', phase2: 'empty', phase3: 'empty', interfaces1: ['t0'], why: 'the TUN ...t0 (ARPHRD_IPGRE) matches the pattern ...t* and the gate refuses its type: waiting; phase 2 configures none' },
  { alert: 'KnockgateInterfaceGone', phase1: 'data', phase2: 'empty', phase3: 'empty', interfaces1: ['g'], why: 'interface ...g was attached and was deleted: absent; phase 2 configures none' },
  { alert: 'KnockgateInterfaceUnprotected', phase1: 'data', phase2: 'data', phase3: 'data', interfaces1: ['t0'], why: 'the TUN ...t0 existed without the gate from the start until the reload, which is within the last 5 minutes in phases 2 and 3 too' },
  { alert: 'KnockgateInterfaceNotAttached', phase1: 'data', phase2: 'empty', phase3: 'empty', interfaces1: ['g'], why: 'interface ...g is named in the config and absent; the pattern ...x* that matches nothing is not counted; phase 2 configures none' },
  { alert: 'KnockgateEventsLost', phase1: 'data', phase2: 'data', phase3: 'data', why: '2000 denials in one BPF_PROG_TEST_RUN burst into a 4KiB ring buffer (in phase 3 the new gate counts from 0: a counter reset, the rise is still in the window)' },
  { alert: 'KnockgateMapNearFull', phase1: 'data', phase2: 'data', phase3: 'empty', why: '61 grants in kg_grants with limits.sources: 64; phase 3 has a fresh gate' },
  { alert: 'KnockgateCooldownStorm', phase1: 'empty', phase2: 'empty', phase3: 'empty', why: 'no source fails a sequence' },
  { alert: 'KnockgateFleetDisconnected', phase1: 'empty', phase2: 'empty', phase3: 'data', why: 'phase 3 runs in fleet mode with an etcd endpoint (127.0.0.1, a closed port) that does not answer' },
  { alert: 'KnockgateFleetLag', phase1: 'empty', phase2: 'empty', phase3: 'empty', why: 'phases 1 and 2 run without fleet mode; phase 3 in fleet mode with no etcd answering' },
  { alert: 'KnockgateFleetPeerSilent', phase1: 'empty', phase2: 'empty', phase3: 'empty', why: 'phases 1 and 2 run without fleet mode; phase 3 in fleet mode with no etcd answering' },
];

test('the condition table covers every alert rule, once', () => {
  assert.deepEqual(CONDITIONS.map((c) => c.alert).sort(), rules.map((r) => r.alert).sort());
});

const PROM_PORT = 19090;
const METRICS_PORT = 19477;
/** Nothing listens here in the lab namespace: fleet mode's etcd endpoint in phase 3. */
const ETCD_CLOSED_PORT = 19379;

/** Queries through Prometheus's HTTP API from inside the namespace: one process for a batch. */
function promQuery(ns: string, queries: readonly string[]): { status: string; error?: string; data?: { resultType: string; result: unknown[] } }[] {
  const script = `
    const qs = JSON.parse(process.argv[1]);
    const out = [];
    for (const q of qs) {
      const res = await fetch('http://127.0.0.1:${PROM_PORT}/api/v1/query?query=' + encodeURIComponent(q), { signal: AbortSignal.timeout(10000) });
      out.push(await res.json());
    }
    process.stdout.write(JSON.stringify(out));`;
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script, JSON.stringify(queries)], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`Prometheus query failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as ReturnType<typeof promQuery>;
}

function promGet(ns: string, path: string): string {
  const res = client(ns, ['get', `http://127.0.0.1:${PROM_PORT}${path}`]);
  return String(res['body'] ?? '');
}

async function waitUntil(what: string, fn: () => boolean, timeoutMs = 90_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (fn()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(1000);
  }
}

/** Pin this process's main thread (the one making bpf syscalls through koffi) to its first allowed CPU, until restore(). */
function pinThread(): { restore(): void } {
  const pid = String(process.pid);
  const cur = spawnSync('taskset', ['-c', '-p', pid], { encoding: 'utf8' });
  const list = /affinity list:\s*(\S+)/.exec(cur.stdout)?.[1];
  assert.ok(cur.status === 0 && list, `taskset -c -p ${pid}: ${cur.stdout}${cur.stderr}`);
  const first = list.split(',')[0]!.split('-')[0]!;
  const set = (cpus: string): void => {
    const r = spawnSync('taskset', ['-c', '-p', cpus, pid], { encoding: 'utf8' });
    assert.equal(r.status, 0, `taskset -c -p ${cpus} ${pid}: ${r.stderr}`);
  };
  set(first);
  return { restore: () => set(list) };
}

function labConfig(env: NetnsPair, pin: string, interfaces: readonly string[]): string {
  return `interfaces: [${interfaces.join(', ')}]
pin_path: ${pin}
limits: { sources: 64, event_ring: 4KiB }
log: { denials_per_second: 100000, knock_events_per_second: 100000 }
doors:
  lab:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [2222/tcp]
    open_for: 10m
`;
}

kernelTest('a real Prometheus evaluates every alert and panel against a live gate; the lab makes the conditions true', async (t) => {
  if (!requireTool(t, 'prometheus', 'prometheus')) return;
  if (!requireTun(t)) return;
  await withNetns(async (env) => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-ops-prom-'));
    const pin = `/sys/fs/bpf/kg-prom-${env.id}`;
    const gone = `kg-${env.id}g`;
    const tun = `kg-${env.id}t0`;
    const cfg = join(dir, 'knockgate.yaml');
    const procs: Proc[] = [];
    let tunFd = -1;
    try {
      // Extra interfaces: veth pairs with both ends in namespace A (deleting one end deletes both).
      const addPair = (name: string): void => {
        env.exec(env.nsA, ['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', `${name.slice(0, -1)}p${name.slice(-1)}`.slice(-15)]);
        env.exec(env.nsA, ['ip', 'link', 'set', name, 'up']);
      };
      addPair(gone);
      // A device the gate cannot parse, matched by a pattern: a TUN (down) given a GRE tunnel's
      // device type. The daemon refuses to attach to it, keeps it `waiting` and retries.
      tunFd = env.enter(env.nsA, () => openTun(tun));
      setTunLinkType(tunFd, 778); // ARPHRD_IPGRE
      writeFileSync(cfg, labConfig(env, pin, [env.ifA, gone, `'kg-${env.id}t*'`, `'kg-${env.id}x*'`]));
      writeFileSync(
        join(dir, 'prometheus.yml'),
        `global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: [${JSON.stringify(RULES_FILE)}]
scrape_configs:
  - job_name: knockgate
    static_configs: [{ targets: ['127.0.0.1:${METRICS_PORT}'] }]
`,
      );
      const server = startClient(env.nsA, ['serve', '2222']);
      procs.push(server);
      await server.waitFor((l) => l['listening'] === 2222, 10_000, 'service');
      const daemon = startDaemon(env.nsA, ['run', '-c', cfg, '--metrics', `127.0.0.1:${METRICS_PORT}`]);
      procs.push(daemon);
      await daemon.msg('knockgate running', 30_000);
      const prom = new Proc(
        spawn(
          'ip',
          ['netns', 'exec', env.nsA, 'prometheus', `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${PROM_PORT}`],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        ),
      );
      procs.push(prom);
      // Ready, every rule loaded, and a first scrape of the gate seen (counters at their start).
      await waitUntil('Prometheus to scrape the gate', () => {
        try {
          const [r] = promQuery(env.nsA, ['knockgate_events_lost_total']);
          return (r?.data?.result.length ?? 0) > 0;
        } catch {
          return false;
        }
      });

      // ---- phase 1: make the conditions true ----
      // kg_grants near full: 60 grants (limits.sources: 64), written as `knockgate grant` does,
      // before the knock adds the 61st. kg_grants is an LRU hash (common LRU): the first CPU to
      // insert takes every free entry into its local free list, and an insert on another CPU
      // that finds none there shrinks the global LRU, evicting unreferenced entries (grants
      // written from user space are never referenced). So the writing thread is pinned to one
      // CPU for the loop, on an empty map; the knock's grant then takes one of the 4 left. Then
      // one SYN from each source through the program marks its grant referenced (an XDP lookup
      // does), which the LRU's shrink skips.
      const affinity = pinThread();
      const gate = Gate.openPinned(pin, pino({ level: 'silent' }));
      try {
        const slot = gate.doors().find((d) => d.door.name === 'lab')!.slot;
        assert.equal(gate.grants().length, 0, 'kg_grants is empty before the lab fills it');
        for (let i = 1; i <= 60; i++) gate.grant(parseAddress(`198.18.2.${i}`), slot, 600_000_000_000n);
        assert.equal(gate.grants().length, 60, 'all 60 grants are in kg_grants');
        const fd = libbpf().bpf_obj_get(join(pin, 'prog'));
        assert.ok(fd >= 0, `bpf_obj_get(${pin}/prog): ${fd}`);
        try {
          for (let i = 1; i <= 60; i++) progTestRun(fd, tcpSyn({ src: `198.18.2.${i}`, dst: env.addrA }, 2222), { repeat: 1, ifindex: 1 });
        } finally {
          closeFd(fd);
        }
      } finally {
        gate.close();
        affinity.restore();
      }
      // A real knock opens the protected port.
      assert.equal(client(env.nsB, ['connect', env.addrA, '2222', '800'])['ok'], false);
      assert.deepEqual(client(env.nsB, ['knock', env.addrA, '7000/tcp', '8000/udp', '9000/tcp']), { ok: true });
      await daemon.waitFor((l) => l['event'] === 'grant', 10_000, 'grant');
      assert.equal(client(env.nsB, ['connect', env.addrA, '2222', '3000'])['ok'], true);
      // Lost events: 2000 denials (SYNs to 2222 from a source without a grant) in one test run,
      // through the pinned program and its 4KiB ring buffer, faster than any reader drains it.
      const progFd = libbpf().bpf_obj_get(join(pin, 'prog'));
      assert.ok(progFd >= 0, `bpf_obj_get(${pin}/prog): ${progFd}`);
      try {
        progTestRun(progFd, tcpSyn({ src: '198.18.3.1', dst: env.addrA }, 2222), { repeat: 2000, ifindex: 1 });
      } finally {
        closeFd(progFd);
      }
      // A named interface the gate is on, deleted: the daemon drops its link and reports it absent.
      env.exec(env.nsA, ['ip', 'link', 'del', gone]);
      await waitUntil('the scrape after the lab changes', () => {
        const rows = promQuery(env.nsA, [
          'knockgate_events_lost_total > 0',
          `knockgate_interface_state{interface="${gone}", state="absent"} == 1`,
          `knockgate_interface_state{interface="${tun}", state="waiting"} == 1`,
          `knockgate_interface_state{interface="kg-${env.id}x*", state="absent"} == 1`, // what KnockgateInterfaceNotAttached leaves out
          `increase(knockgate_interface_unprotected_seconds_total{interface="${tun}"}[5m]) > 0`,
        ]);
        return rows.every((r) => (r.data?.result.length ?? 0) > 0);
      });
      await sleep(3000); // a few more scrapes, for rate() and increase() windows
      // What this build exports: every metric the endpoint declares (a counter with no sample yet included).
      const scraped = parseProm(String(client(env.nsA, ['get', `http://127.0.0.1:${METRICS_PORT}/metrics`])['body']));
      const exported = new Set([...scraped.type.keys(), ...scraped.samples.map((x) => x.name.replace(/_(bucket|sum|count)$/, ''))]);

      const evaluate = async (phase: 1 | 2 | 3): Promise<void> => {
        const exprs = rules.map((r) => r.expr);
        const results = promQuery(env.nsA, exprs);
        for (const [i, rule] of rules.entries()) {
          const c = CONDITIONS.find((x) => x.alert === rule.alert)!;
          await t.test(`phase ${phase}: ${rule.alert}`, (tt) => {
            const r = results[i]!;
            assert.equal(r.status, 'success', `${rule.expr}: ${r.error ?? ''}`);
            const want = phase === 1 ? c.phase1 : phase === 2 ? c.phase2 : c.phase3;
            const got = r.data!.result.length > 0 ? 'data' : 'empty';
            if (got !== want && metricsOf(rule.expr).includes('knockgate_map_fill_ratio')) {
              // What the maps held over the lab, to tell an eviction from a missed scrape.
              const [h] = promQuery(env.nsA, ['knockgate_map_entries{map="kg_grants"}[5m]']);
              tt.diagnostic(`kg_grants entries over the last 5m: ${JSON.stringify(h?.data?.result)}`);
            }
            assert.equal(got, want, `${rule.alert} in phase ${phase}: ${c.why}; ${rule.expr} returned ${JSON.stringify(r.data!.result).slice(0, 600)}`);
            if (phase === 1 && c.interfaces1) {
              const named = (r.data!.result as { metric: Record<string, string> }[]).map((x) => x.metric['interface']).sort();
              assert.deepEqual(named, c.interfaces1.map((x) => `kg-${env.id}${x}`).sort(), `${rule.alert} in phase 1: ${c.why}`);
            }
          });
        }
        // Prometheus evaluated the rules itself too: none may be in error.
        const loaded = JSON.parse(promGet(env.nsA, '/api/v1/rules')) as { data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } };
        const bad = loaded.data.groups.flatMap((g) => g.rules).filter((r) => r.health === 'err');
        assert.deepEqual(bad, [], 'rules Prometheus could not evaluate');
        assert.equal(loaded.data.groups.flatMap((g) => g.rules).length, rules.length);
      };

      await evaluate(1);

      // Every panel query, as Grafana sends it, evaluates and returns data: the fleet's in phase 3.
      const targets = queryPanels.flatMap((p) => (p.targets ?? []).map((tg) => ({ panel: p.title, expr: grafanaExpr(tg.expr), refId: tg.refId })));
      const isFleet = (expr: string): boolean => metricsOf(expr).some((m) => m.startsWith('knockgate_fleet_'));
      const panels = async (phase: 1 | 3): Promise<void> => {
        const mine = targets.filter((x) => isFleet(x.expr) === (phase === 3));
        const panelResults = promQuery(env.nsA, mine.map((x) => x.expr));
        for (const [i, target] of mine.entries()) {
          await t.test(`phase ${phase}: panel "${target.panel}" ${target.refId}`, () => {
            const r = panelResults[i]!;
            assert.equal(r.status, 'success', `${target.expr}: ${r.error ?? ''}`);
            const missing = metricsOf(target.expr).filter((m) => !exported.has(m));
            assert.deepEqual(missing, [], `${target.expr}: metrics the daemon does not export`);
            // Peer heartbeats are read from etcd at scrape time: none while it is unreachable.
            if (target.expr.includes('knockgate_fleet_peer_heartbeat_age_seconds')) assert.deepEqual(r.data!.result, [], `${target.expr}: no heartbeat is readable from an unreachable etcd`);
            else assert.ok(r.data!.result.length > 0, `${target.expr} returned no data`);
          });
        }
      };
      await panels(1);

      // ---- phase 2: the config made inert (interfaces: []) and reloaded ----
      writeFileSync(cfg, labConfig(env, pin, []));
      daemon.signal('SIGHUP');
      await daemon.msg('config reloaded', 30_000);
      await waitUntil('the scrape after the reload', () => {
        const rows = promQuery(env.nsA, ['knockgate_interface_attached{xdp_mode=~"native|generic|offload|multi"}', 'knockgate_interface_state']);
        return rows.every((r) => r.data?.result.length === 0);
      });
      await sleep(2000);
      await evaluate(2);

      // ---- phase 3: a new daemon in fleet mode, its etcd endpoint unreachable ----
      await daemon.stop();
      writeFileSync(
        cfg,
        `${labConfig(env, pin, [env.ifA])}fleet:\n  endpoints: ['http://127.0.0.1:${ETCD_CLOSED_PORT}']\n  prefix: /kg-lab-${env.id}\n  host_id: lab-${env.id}\n`,
      );
      const fleetDaemon = startDaemon(env.nsA, ['run', '-c', cfg, '--metrics', `127.0.0.1:${METRICS_PORT}`]);
      procs.push(fleetDaemon);
      await fleetDaemon.msg('knockgate running', 60_000);
      await waitUntil('the scrape of the daemon in fleet mode', () => {
        const rows = promQuery(env.nsA, ['knockgate_fleet_connected == 0', 'knockgate_map_fill_ratio{map="kg_grants"} == 0', 'up{job="knockgate"} == 1']);
        return rows.every((r) => (r.data?.result.length ?? 0) > 0);
      });
      await sleep(3000); // a few more scrapes, for rate() windows
      for (const line of parseProm(String(client(env.nsA, ['get', `http://127.0.0.1:${METRICS_PORT}/metrics`])['body'])).type.keys()) exported.add(line);
      await evaluate(3);
      await panels(3);
    } finally {
      for (const p of procs.reverse()) await p.stop();
      closeTun(tunFd);
      rmSync(dir, { recursive: true, force: true });
      if (existsSync(pin)) run('rm', ['-rf', pin]);
    }
  });
});
