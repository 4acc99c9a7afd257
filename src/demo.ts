/**
 * `knockgate demo`: the whole story on one machine, in two network namespaces. A gateway
 * namespace runs a real TCP service behind the gate (config/demo.yaml), a client namespace
 * knocks with the real client. The terminal shows the refused connection, the knock, the open
 * connection, the live event stream and the grant expiring; then everything the demo created
 * (namespaces, veth pair, pins, processes) is removed, also on failure or Ctrl-C.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { eventLine, type GateEvent } from './kernel/events.js';

export const DEMO = {
  gw: 'kg-demo-gw',
  cl: 'kg-demo-cl',
  gwIf: 'kg-demo-g',
  clIf: 'kg-demo-c',
  gw4: '198.18.0.1',
  cl4: '198.18.0.2',
  gw6: '2001:db8::1',
  cl6: '2001:db8::2',
  pin: '/sys/fs/bpf/kg-demo',
  port: 2222,
} as const;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DEMO_CONFIG = `${ROOT}config/demo.yaml`;
const CLI = `${ROOT}dist/src/cli/main.js`;

export const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
export const dim = (s: string): string => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);
export const say = (s: string): void => {
  process.stdout.write(`${s}\n`);
};
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function sh(cmd: string, args: readonly string[], check = true): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20_000 });
  if (check && r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${(r.stderr || r.error?.message || '').trim()}`);
  return r.stdout;
}

/** Remove everything the demo may have created (also what a killed earlier run left). */
export function cleanupDemo(): void {
  for (const ns of [DEMO.gw, DEMO.cl]) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
  if (existsSync(DEMO.pin)) rmSync(DEMO.pin, { recursive: true, force: true });
}

function createLab(): void {
  sh('ip', ['netns', 'add', DEMO.gw]);
  sh('ip', ['netns', 'add', DEMO.cl]);
  sh('ip', ['link', 'add', DEMO.gwIf, 'netns', DEMO.gw, 'type', 'veth', 'peer', 'name', DEMO.clIf, 'netns', DEMO.cl]);
  for (const [ns, dev, a4, a6] of [
    [DEMO.gw, DEMO.gwIf, `${DEMO.gw4}/24`, `${DEMO.gw6}/64`],
    [DEMO.cl, DEMO.clIf, `${DEMO.cl4}/24`, `${DEMO.cl6}/64`],
  ] as const) {
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', a4, 'dev', dev]);
    sh('ip', ['-n', ns, 'addr', 'add', a6, 'dev', dev, 'nodad']);
    sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
  }
}

const SERVICE = `
const net = require('node:net');
const s = net.createServer((c) => { c.on('error', () => {}); c.end('SSH-2.0-knockgate-demo (a real TCP service behind the gate)\\n'); });
s.listen({ port: ${DEMO.port}, host: '::', ipv6Only: false }, () => process.stdout.write('listening\\n'));
setTimeout(() => process.exit(0), 600000).unref();
`;

/** A TCP connection attempt from the client namespace (through `ip netns exec`). */
function tryConnect(host: string, timeoutMs: number): { ok: boolean; text: string } {
  const script = `const s=require('node:net').connect({host:${JSON.stringify(host)},port:${DEMO.port}});let d='';` +
    `const t=setTimeout(()=>{console.log(JSON.stringify({ok:false,text:'no answer in ${timeoutMs} ms: the SYN was dropped'}));process.exit(0)},${timeoutMs});` +
    `s.on('data',x=>{d+=x;if(d.includes('\\n')){clearTimeout(t);console.log(JSON.stringify({ok:true,text:d.trim()}));process.exit(0)}});` +
    `s.on('error',e=>{clearTimeout(t);console.log(JSON.stringify({ok:false,text:e.code}));process.exit(0)})`;
  const out = sh('ip', ['netns', 'exec', DEMO.cl, process.execPath, '-e', script]);
  return JSON.parse(out.trim().split('\n').pop() ?? '{}') as { ok: boolean; text: string };
}

function waitLine(child: ChildProcess, pred: (line: Record<string, unknown>) => boolean, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      child.stdout?.off('data', onData);
      reject(new Error(`timed out waiting for ${what}`));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          if (pred(JSON.parse(text) as Record<string, unknown>)) {
            clearTimeout(timer);
            child.stdout?.off('data', onData);
            resolve();
            return;
          }
        } catch {
          /* not JSON */
        }
      }
    };
    child.stdout?.on('data', onData);
  });
}

export interface DemoOptions {
  /** shorten the wait for the grant to expire (the door's open_for comes from the config) */
  config?: string;
}

export async function runDemo(opts: DemoOptions = {}): Promise<number> {
  if (process.getuid?.() !== 0) {
    say('the demo needs root: it creates network namespaces and loads an XDP program (run it with sudo)');
    return 1;
  }
  const config = opts.config ?? DEMO_CONFIG;
  const openFor = /open_for:\s*(\d+)s/.exec(readFileSync(config, 'utf8'))?.[1];
  const openForMs = Number(openFor ?? 10) * 1000;
  const children: ChildProcess[] = [];
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  cleanupDemo();
  try {
    say(bold('knockgate demo'));
    say(dim(`lab: namespace ${DEMO.gw} (${DEMO.gw4}, ${DEMO.gw6}) runs a TCP service on port ${DEMO.port} behind the gate;`));
    say(dim(`     namespace ${DEMO.cl} (${DEMO.cl4}, ${DEMO.cl6}) is the client; joined by veth ${DEMO.gwIf} <-> ${DEMO.clIf}`));
    createLab();

    const service = spawn('ip', ['netns', 'exec', DEMO.gw, process.execPath, '-e', SERVICE], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(service);
    await waitLine(service, () => true, 10_000, 'the demo service').catch(() => undefined);

    say(`\n${bold('1. the gate starts')}: knockgate run -c ${config}`);
    const daemon = spawn('nsenter', [`--net=/run/netns/${DEMO.gw}`, process.execPath, CLI, 'run', '-c', config], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(daemon);
    let buf = '';
    daemon.stdout.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const l = JSON.parse(text) as Record<string, unknown>;
          if (typeof l['event'] === 'string') say(dim(`   [event] ${eventLine(l as unknown as GateEvent)}`));
          else if (typeof l['msg'] === 'string' && (l['level'] as number) >= 30) say(dim(`   [daemon] ${String(l['msg'])}`));
        } catch {
          say(dim(`   [daemon] ${text}`));
        }
      }
    });
    await waitLine(daemon, (l) => l['msg'] === 'knockgate running', 30_000, 'the daemon');
    if (interrupted) return 130;

    say(`\n${bold('2. the client connects')} to ${DEMO.gw4}:${DEMO.port} without knocking`);
    const before = tryConnect(DEMO.gw4, 1500);
    say(`   -> ${before.ok ? `OPEN (unexpected!): ${before.text}` : `refused: ${before.text}`}`);
    await sleep(300);

    say(`\n${bold('3. the client knocks')}: knockgate knock ${DEMO.gw4} ssh -c ${config}`);
    const knock = spawnSync('ip', ['netns', 'exec', DEMO.cl, process.execPath, CLI, 'knock', DEMO.gw4, 'ssh', '-c', config, '--check', String(DEMO.port)], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    for (const l of `${knock.stderr}${knock.stdout}`.trim().split('\n')) if (l) say(`   ${l}`);
    await sleep(300);

    say(`\n${bold('4. the client connects again')}`);
    const after = tryConnect(DEMO.gw4, 3000);
    say(`   -> ${after.ok ? `open: ${after.text}` : `refused (unexpected!): ${after.text}`}`);
    const other = tryConnect(DEMO.gw6, 1500);
    say(`   -> over IPv6 (${DEMO.cl6} holds no grant): ${other.ok ? 'OPEN (unexpected!)' : `refused: ${other.text}`}`);
    await sleep(300);

    say(`\n${bold('5. the grant expires')} after open_for (${openForMs / 1000}s); waiting...`);
    await sleep(openForMs + 500);
    const expired = tryConnect(DEMO.gw4, 1500);
    say(`   -> ${expired.ok ? `OPEN (unexpected!): ${expired.text}` : `refused again: ${expired.text}`}`);

    say(`\n${bold('6. status')}: knockgate status`);
    const status = spawnSync('nsenter', [`--net=/run/netns/${DEMO.gw}`, process.execPath, CLI, 'status', '--pin-path', DEMO.pin], { encoding: 'utf8', timeout: 20_000 });
    for (const l of status.stdout.trim().split('\n')) say(`   ${l}`);

    const ok = !before.ok && after.ok && !other.ok && !expired.ok && knock.status === 0;
    say(`\n${ok ? bold('demo finished: the gate did what it says') : bold('demo finished, but something did not behave as expected (see above)')}`);
    return ok ? 0 : 1;
  } finally {
    for (const c of children.reverse()) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        await Promise.race([new Promise((r) => c.once('exit', r)), sleep(10_000)]);
        if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      }
    }
    cleanupDemo();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    say(dim('cleaned up: namespaces, veth pair, pins and processes removed'));
  }
}

