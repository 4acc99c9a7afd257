/**
 * `knockgate demo --fleet`: fleet mode on one machine. Two gates (hosts A and B, a namespace
 * each, with a TCP service behind each gate), one client namespace whose one address reaches
 * both, and a one-member etcd cluster the demo starts in A's namespace (B reaches it over a
 * second veth pair). The client knocks at A; the connection opens at B. Then everything the demo
 * created (namespaces, veth pairs, pins, etcd and its data, processes) is removed, also on
 * failure or Ctrl-C.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventLine, type GateEvent } from './kernel/events.js';
import { bold, dim, say, sh, sleep } from './demo.js';

export const FLEET_DEMO = {
  a: 'kg-demo-fa',
  b: 'kg-demo-fb',
  cl: 'kg-demo-fc',
  source: '198.18.20.2',
  addrA: '198.18.11.1',
  addrB: '198.18.12.1',
  etcd: '198.19.0.1',
  port: 2222,
  pin: (h: string): string => `/sys/fs/bpf/kg-demo-fleet-${h}`,
} as const;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = `${ROOT}dist/src/cli/main.js`;
const ETCD = process.env['KG_ETCD'] ?? 'etcd';
const ETCDCTL = process.env['KG_ETCDCTL'] ?? 'etcdctl';

export function cleanupFleetDemo(): void {
  for (const ns of [FLEET_DEMO.a, FLEET_DEMO.b, FLEET_DEMO.cl]) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
  for (const h of ['a', 'b']) if (existsSync(FLEET_DEMO.pin(h))) rmSync(FLEET_DEMO.pin(h), { recursive: true, force: true });
}

function createLab(): void {
  const { a, b, cl } = FLEET_DEMO;
  for (const ns of [a, b, cl]) {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  sh('ip', ['-n', cl, 'addr', 'add', `${FLEET_DEMO.source}/32`, 'dev', 'lo']);
  for (const [ns, gwIf, clIf, addr] of [
    [a, 'kg-demo-fa0', 'kg-demo-fca', FLEET_DEMO.addrA],
    [b, 'kg-demo-fb0', 'kg-demo-fcb', FLEET_DEMO.addrB],
  ] as const) {
    sh('ip', ['link', 'add', gwIf, 'netns', ns, 'type', 'veth', 'peer', 'name', clIf, 'netns', cl]);
    sh('ip', ['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', gwIf]);
    sh('ip', ['-n', ns, 'link', 'set', gwIf, 'up']);
    sh('ip', ['-n', ns, 'route', 'add', `${FLEET_DEMO.source}/32`, 'dev', gwIf]);
    sh('ip', ['-n', cl, 'link', 'set', clIf, 'up']);
    sh('ip', ['-n', cl, 'route', 'add', `${addr.replace(/\.1$/, '.0')}/24`, 'dev', clIf, 'src', FLEET_DEMO.source]);
  }
  // The control link: B reaches etcd in A's namespace.
  sh('ip', ['link', 'add', 'kg-demo-fx', 'netns', a, 'type', 'veth', 'peer', 'name', 'kg-demo-fy', 'netns', b]);
  sh('ip', ['-n', a, 'addr', 'add', `${FLEET_DEMO.etcd}/30`, 'dev', 'kg-demo-fx']);
  sh('ip', ['-n', b, 'addr', 'add', '198.19.0.2/30', 'dev', 'kg-demo-fy']);
  sh('ip', ['-n', a, 'link', 'set', 'kg-demo-fx', 'up']);
  sh('ip', ['-n', b, 'link', 'set', 'kg-demo-fy', 'up']);
}

const SERVICE = (name: string): string => `
const net = require('node:net');
const s = net.createServer((c) => { c.on('error', () => {}); c.end('SSH-2.0-knockgate-demo on host ${name}\\n'); });
s.listen({ port: ${FLEET_DEMO.port}, host: '::', ipv6Only: false }, () => process.stdout.write('listening\\n'));
setTimeout(() => process.exit(0), 600000).unref();
`;

function tryConnect(host: string, timeoutMs: number): { ok: boolean; text: string } {
  const script = `const s=require('node:net').connect({host:${JSON.stringify(host)},port:${FLEET_DEMO.port}});let d='';` +
    `const t=setTimeout(()=>{console.log(JSON.stringify({ok:false,text:'no answer in ${timeoutMs} ms: the SYN was dropped'}));process.exit(0)},${timeoutMs});` +
    `s.on('data',x=>{d+=x;if(d.includes('\\n')){clearTimeout(t);console.log(JSON.stringify({ok:true,text:d.trim()}));process.exit(0)}});` +
    `s.on('error',e=>{clearTimeout(t);console.log(JSON.stringify({ok:false,text:e.code}));process.exit(0)})`;
  const out = sh('ip', ['netns', 'exec', FLEET_DEMO.cl, process.execPath, '-e', script]);
  return JSON.parse(out.trim().split('\n').pop() ?? '{}') as { ok: boolean; text: string };
}

function gateConfig(host: 'a' | 'b'): string {
  return `# knockgate demo --fleet: host ${host.toUpperCase()}
interfaces: [kg-demo-f${host}0]
xdp_mode: native
pin_path: ${FLEET_DEMO.pin(host)}
log:
  level: debug
limits:
  sources: 4096
fleet:
  endpoints: [http://${FLEET_DEMO.etcd}:2379]
  prefix: /knockgate/demo/
  host_id: host-${host}
doors:
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [${FLEET_DEMO.port}/tcp]
    open_for: 30s
`;
}

/** Follows a daemon's JSON lines: prints the interesting ones, resolves waiters. */
class Follow {
  private buf = '';
  private readonly waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  readonly lines: Record<string, unknown>[] = [];

  constructor(child: ChildProcess, tag: string) {
    child.stdout?.on('data', (chunk: Buffer) => {
      this.buf += chunk.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const text = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        let l: Record<string, unknown>;
        try {
          l = JSON.parse(text) as Record<string, unknown>;
        } catch {
          continue;
        }
        this.lines.push(l);
        if (typeof l['event'] === 'string') say(dim(`   [${tag} event] ${eventLine(l as unknown as GateEvent)}`));
        else if (l['msg'] === 'fleet record applied') say(dim(`   [${tag}] a grant from ${String(l['origin'])} written into this kernel, ${Number(l['lag_ms']).toFixed(1)} ms after the knock`));
        else if (typeof l['msg'] === 'string' && (l['level'] as number) >= 30 && l['module'] !== 'libbpf') say(dim(`   [${tag}] ${String(l['msg'])}`));
        for (const w of [...this.waiters]) {
          if (w.pred(l)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(l);
          }
        }
      }
    });
  }

  wait(pred: (l: Record<string, unknown>) => boolean, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }
}

export async function runFleetDemo(): Promise<number> {
  if (process.getuid?.() !== 0) {
    say('the demo needs root: it creates network namespaces and loads XDP programs (run it with sudo)');
    return 1;
  }
  if (spawnSync(ETCD, ['--version'], { timeout: 10_000 }).status !== 0) {
    say(`the fleet demo needs etcd (${ETCD}): apt-get install etcd-server etcd-client (scripts/setup.sh does)`);
    return 1;
  }
  const children: ChildProcess[] = [];
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  cleanupFleetDemo();
  const dir = mkdtempSync(join(tmpdir(), 'kg-demo-fleet-'));
  try {
    say(bold('knockgate demo --fleet'));
    say(dim(`lab: hosts A (${FLEET_DEMO.addrA}, namespace ${FLEET_DEMO.a}) and B (${FLEET_DEMO.addrB}, ${FLEET_DEMO.b}), each a gate with a TCP`));
    say(dim(`     service on port ${FLEET_DEMO.port}; the client (${FLEET_DEMO.source}, ${FLEET_DEMO.cl}) reaches both; etcd on ${FLEET_DEMO.etcd}:2379`));
    createLab();

    say(`\n${bold('1. etcd starts')} (one member; a real fleet runs three, README "Fleet mode")`);
    const etcd = spawn('ip', ['netns', 'exec', FLEET_DEMO.a, ETCD, '--name', 'kgdemo', '--data-dir', join(dir, 'etcd'),
      '--listen-client-urls', `http://${FLEET_DEMO.etcd}:2379`, '--advertise-client-urls', `http://${FLEET_DEMO.etcd}:2379`,
      '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
      '--initial-cluster', 'kgdemo=http://127.0.0.1:2380'], { stdio: ['ignore', 'ignore', 'ignore'] });
    children.push(etcd);
    for (let i = 0; ; i++) {
      const r = spawnSync('ip', ['netns', 'exec', FLEET_DEMO.a, ETCDCTL, `--endpoints=http://${FLEET_DEMO.etcd}:2379`, 'endpoint', 'health'], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, ETCDCTL_API: '3' } });
      if (r.status === 0) break;
      if (i > 100 || interrupted) throw new Error('etcd did not become healthy');
      await sleep(200);
    }
    say(dim('   etcd is healthy'));

    say(`\n${bold('2. the gates start')}: knockgate run -c host-a.yaml / host-b.yaml (with a fleet section)`);
    const follows: Follow[] = [];
    for (const [host, ns] of [['a', FLEET_DEMO.a], ['b', FLEET_DEMO.b]] as const) {
      const service = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', SERVICE(host.toUpperCase())], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(service);
      const cfg = join(dir, `host-${host}.yaml`);
      writeFileSync(cfg, gateConfig(host));
      const daemon = spawn('nsenter', [`--net=/run/netns/${ns}`, process.execPath, CLI, 'run', '-c', cfg], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(daemon);
      const f = new Follow(daemon, host.toUpperCase());
      follows.push(f);
      await f.wait((l) => l['msg'] === 'fleet: records loaded', 30_000, `gate ${host.toUpperCase()}`);
      if (interrupted) return 130;
    }
    const [a, b] = follows as [Follow, Follow];

    say(`\n${bold('3. the client connects to B')} (${FLEET_DEMO.addrB}:${FLEET_DEMO.port}) without knocking`);
    const before = tryConnect(FLEET_DEMO.addrB, 1500);
    say(`   -> ${before.ok ? `OPEN (unexpected!): ${before.text}` : `refused: ${before.text}`}`);

    say(`\n${bold('4. the client knocks at A')}: knockgate knock ${FLEET_DEMO.addrA} ssh -c host-a.yaml`);
    const knock = spawnSync('ip', ['netns', 'exec', FLEET_DEMO.cl, process.execPath, CLI, 'knock', FLEET_DEMO.addrA, 'ssh', '-c', join(dir, 'host-a.yaml')], { encoding: 'utf8', timeout: 30_000 });
    for (const l of `${knock.stderr}${knock.stdout}`.trim().split('\n')) if (l) say(`   ${l}`);
    await a.wait((l) => l['event'] === 'grant', 10_000, 'the grant at A');
    await b.wait((l) => l['msg'] === 'fleet record applied', 10_000, 'the grant at B').catch(() => undefined);

    say(`\n${bold('5. the client connects to B')}, where it never knocked`);
    const after = tryConnect(FLEET_DEMO.addrB, 3000);
    say(`   -> ${after.ok ? `open: ${after.text}` : `refused (unexpected!): ${after.text}`}`);

    say(`\n${bold('6. fleet status')} on B: knockgate fleet status -c host-b.yaml`);
    const st = spawnSync('nsenter', [`--net=/run/netns/${FLEET_DEMO.b}`, process.execPath, CLI, 'fleet', 'status', '-c', join(dir, 'host-b.yaml')], { encoding: 'utf8', timeout: 20_000 });
    for (const l of st.stdout.trim().split('\n')) say(`   ${l}`);

    const ok = !before.ok && after.ok && knock.status === 0;
    say(`\n${ok ? bold('demo finished: a knock at A opened B') : bold('demo finished, but something did not behave as expected (see above)')}`);
    return ok ? 0 : 1;
  } finally {
    for (const c of children.reverse()) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        await Promise.race([new Promise((r) => c.once('exit', r)), sleep(10_000)]);
        if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      }
    }
    cleanupFleetDemo();
    rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    say(dim('cleaned up: namespaces, veth pairs, pins, etcd and its data, processes removed'));
  }
}
