/**
 * The real endpoints of the knock benchmarks, run inside the lab's namespaces
 * (`ip netns exec NS taskset -c CPU node dist/bench/peer.js ...`). Prints JSON lines.
 *
 *   serve PORT TAG        a TCP service on [::]:PORT greeting every connection with "hello\n";
 *                         exits after 15 minutes at the latest
 *   cycles '<json>'       knock-then-connect cycles (see CycleArgs), one JSON line per cycle,
 *                         then a summary; each cycle uses its own source address, so a grant
 *                         left by one cycle never opens the door for the next
 *
 * Knocks are real packets: a TCP step is a SYN from connect() (the socket is dropped a few ms
 * later, before any retransmission), a UDP step one datagram.
 */
import { createSocket } from 'node:dgram';
import { connect, createServer, isIPv6 } from 'node:net';
import { encodeSpa } from '../src/knock/index.js';
import { parseAddress } from '../src/net/addr.js';

export interface CycleArgs {
  tag: string;
  host4: string;
  host6: string;
  /** source addresses, one per cycle; families alternate when both are given */
  pool4: string[];
  pool6: string[];
  steps: string[];
  port: number;
  cycles: number;
  /** pause between knocks and before the connect */
  gapMs: number;
  connectTimeoutMs: number;
  /** first check that the port is closed to a source that did not knock */
  closedCheck: boolean;
  /** hard limit for the whole run */
  deadlineS: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function out(v: unknown): void {
  process.stdout.write(JSON.stringify(v) + '\n');
}

/** PORT/tcp, PORT/udp, or spa:PORT:KEYHEX (one spa datagram of door "spa" under that key). */
async function knockStep(host: string, local: string, step: string): Promise<void> {
  const spa = /^spa:(\d+):([0-9a-f]{32})$/.exec(step);
  const m = spa ? [step, spa[1], 'udp'] : /^(\d+)\/(tcp|udp)$/.exec(step);
  if (!m) throw new Error(`bad step ${step}`);
  const port = Number(m[1]);
  const payload = spa
    ? encodeSpa({ key: Buffer.from(spa[2]!, 'hex'), door: 'spa', source: parseAddress(local), time: Math.floor(Date.now() / 1000) })
    : Buffer.from('knock');
  if (m[2] === 'udp') {
    const s = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
    try {
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind({ address: local, port: 0 }, () => resolve());
      });
      await new Promise<void>((resolve, reject) => s.send(payload, port, host, (err) => (err ? reject(err) : resolve())));
    } finally {
      s.close();
    }
    return;
  }
  const sock = connect({ host, port, localAddress: local });
  sock.on('error', () => undefined);
  await sleep(5); // connect() runs on the next tick and sends the SYN; no retransmission yet
  sock.destroy();
}

function tryConnect(host: string, local: string, port: number, timeoutMs: number): Promise<{ ok: boolean; error?: string }> {
  return new Promise((resolve) => {
    const sock = connect({ host, port, localAddress: local });
    let data = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ ok: false, error: 'timeout' });
    }, timeoutMs);
    sock.on('data', (d) => {
      data += d.toString();
      if (data.includes('\n')) {
        clearTimeout(timer);
        sock.destroy();
        resolve(data.startsWith('hello') ? { ok: true } : { ok: false, error: `unexpected greeting ${JSON.stringify(data)}` });
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ ok: false, error: err.code ?? err.message });
    });
  });
}

async function cycles(a: CycleArgs): Promise<void> {
  const deadline = Date.now() + a.deadlineS * 1000;
  const sources: { family: 4 | 6; host: string; local: string }[] = [];
  const n4 = a.pool4.length;
  const n6 = a.pool6.length;
  for (let i = 0, i4 = 0, i6 = 0; sources.length < a.cycles + 1 && (i4 < n4 || i6 < n6); i++) {
    const want6 = (i % 2 === 1 && i6 < n6) || i4 >= n4;
    if (want6) sources.push({ family: 6, host: a.host6, local: a.pool6[i6++]! });
    else sources.push({ family: 4, host: a.host4, local: a.pool4[i4++]! });
  }
  if (a.closedCheck) {
    const s = sources.pop();
    if (s) {
      const r = await tryConnect(s.host, s.local, a.port, 600);
      out({ closedCheck: true, family: s.family, closed: !r.ok });
    }
  }
  const times: number[] = [];
  let ok = 0;
  let done = 0;
  for (let i = 0; i < a.cycles && i < sources.length; i++) {
    if (Date.now() > deadline) break;
    const s = sources[i]!;
    const t0 = process.hrtime.bigint();
    for (const step of a.steps) {
      await knockStep(s.host, s.local, step);
      await sleep(a.gapMs);
    }
    const r = await tryConnect(s.host, s.local, a.port, a.connectTimeoutMs);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    done++;
    if (r.ok) {
      ok++;
      times.push(ms);
    }
    out({ cycle: i, family: s.family, source: s.local, ok: r.ok, ms, ...(r.error ? { error: r.error } : {}) });
  }
  out({ summary: true, cycles: done, ok, timesMs: times });
}

async function main(argv: string[]): Promise<void> {
  const [cmd, arg, tag] = argv;
  if (cmd === 'serve') {
    const port = Number(arg);
    const server = createServer((s) => {
      s.on('error', () => undefined);
      s.end('hello\n');
    });
    server.on('error', (err) => {
      out({ error: err.message });
      process.exit(1);
    });
    server.listen({ port, host: '::', ipv6Only: false, backlog: 4096 }, () => out({ listening: port, tag }));
    setTimeout(() => process.exit(0), 15 * 60_000).unref();
    return;
  }
  if (cmd === 'cycles') {
    await cycles(JSON.parse(arg ?? '{}') as CycleArgs);
    return;
  }
  throw new Error(`unknown command ${cmd ?? ''}`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  out({ error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
