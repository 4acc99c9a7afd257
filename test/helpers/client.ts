// A tiny network client for end-to-end tests, run inside a test namespace with
// `ip netns exec kg-... node dist/test/helpers/client.js <command> ...`. Prints one JSON line.
//   knock HOST STEP...            send each step (PORT/tcp = a SYN via connect(), PORT/udp = a datagram)
//   connect HOST PORT TIMEOUT_MS [FROM]  open a TCP connection (from FROM), read the greeting; {ok, data} or {ok:false, error}
//   serve PORT                    run a TCP server on :: that greets every connection with "hello\n"
//   echo PORT                     a TCP server on :: that greets with "hello\n", then echoes every line
//                                 and keeps the connection open
//   hold HOST PORT GAPS_MS [FROM] one connection to an echo server kept open: after each gap of the
//                                 comma-separated list, send a line and wait (2s) for its echo; one
//                                 JSON line per exchange, then {done, ok, failed_at}
//   cycles HOST PORT FROMS STEP...  for each comma-separated source address: knock the steps from it,
//                                 then connect from it (3s); {ok, failed: [...]}
//   get URL                       HTTP GET; {ok, status, body}
//   session                       read commands (the words above, one command a line) on stdin and
//                                 answer each with its JSON line: node starts once, not per command
//                                 (seconds each in an emulated guest)
import { connect, createServer, isIPv6 } from 'node:net';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

function out(v: unknown): void {
  process.stdout.write(JSON.stringify(v) + '\n');
}

async function knockStep(host: string, step: string, from?: string): Promise<void> {
  const m = /^(\d+)\/(tcp|udp)$/.exec(step);
  if (!m) throw new Error(`bad step ${step}`);
  const port = Number(m[1]);
  if (m[2] === 'udp') {
    const s = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
    if (from !== undefined) await new Promise<void>((resolve) => s.bind({ address: from, port: 0 }, resolve));
    await new Promise<void>((resolve, reject) => s.send(Buffer.from('knock'), port, host, (err) => (err ? reject(err) : resolve())));
    s.close();
    return;
  }
  // A SYN leaves as soon as connect() starts; the gate drops it, so give up after a moment.
  const sock = connect({ host, port, ...(from !== undefined ? { localAddress: from } : {}) });
  sock.on('error', () => undefined);
  await sleep(30);
  sock.destroy();
}

async function tryConnect(host: string, port: number, timeoutMs: number, from?: string): Promise<{ ok: boolean; data?: string; error?: string }> {
  return new Promise((resolve) => {
    const sock = connect({ host, port, ...(from !== undefined ? { localAddress: from } : {}) });
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
        resolve({ ok: true, data: data.trim() });
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ ok: false, error: err.code ?? err.message });
    });
  });
}

/** One connection to an echo server, exercised after each gap; see the header. */
async function hold(host: string, port: number, gaps: number[], from?: string): Promise<void> {
  const sock = connect({ host, port, ...(from !== undefined ? { localAddress: from } : {}) });
  sock.setNoDelay(true);
  let buf = '';
  let waiter: ((line: string | null) => void) | null = null;
  const lines: string[] = [];
  sock.on('data', (d) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (waiter) {
        const w = waiter;
        waiter = null;
        w(line);
      } else {
        lines.push(line);
      }
    }
  });
  let closed: string | null = null;
  sock.on('error', (err: NodeJS.ErrnoException) => {
    closed = err.code ?? err.message;
    waiter?.(null);
  });
  sock.on('close', () => {
    closed ??= 'closed';
    waiter?.(null);
  });
  const nextLine = (timeoutMs: number): Promise<string | null> => {
    const have = lines.shift();
    if (have !== undefined) return Promise.resolve(have);
    if (closed !== null) return Promise.resolve(null);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        waiter = null;
        resolve(null);
      }, timeoutMs);
      waiter = (l) => {
        clearTimeout(t);
        resolve(l);
      };
    });
  };
  const greeting = await nextLine(3000);
  if (greeting !== 'hello') {
    out({ connected: false, error: closed ?? 'no greeting' });
    sock.destroy();
    return;
  }
  out({ connected: true, local_port: sock.localPort });
  let ok = 0;
  let failedAt: number | null = null;
  for (let i = 0; i < gaps.length; i++) {
    await sleep(gaps[i] ?? 0);
    const t0 = Date.now();
    sock.write(`ping ${i}\n`);
    const echo = await nextLine(2000);
    const good = echo === `ping ${i}`;
    out({ exchange: i, ok: good, ms: Date.now() - t0 });
    if (!good) {
      failedAt = i;
      break;
    }
    ok++;
  }
  out({ done: true, ok, failed_at: failedAt });
  sock.destroy();
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case 'knock': {
      const [host, ...steps] = args;
      if (!host) throw new Error('knock HOST STEP...');
      for (const s of steps) {
        await knockStep(host, s);
        await sleep(20);
      }
      out({ ok: true });
      return;
    }
    case 'connect': {
      const [host, port, timeout, from] = args;
      out(await tryConnect(host ?? '', Number(port), Number(timeout ?? 1000), from));
      return;
    }
    case 'serve': {
      const port = Number(args[0]);
      const server = createServer((s) => {
        s.on('error', () => undefined);
        s.end('hello\n');
      });
      server.listen({ port, host: '::', ipv6Only: false }, () => out({ listening: port }));
      // Bounded: a test server never outlives 10 minutes even if its test forgot it.
      setTimeout(() => process.exit(0), 600_000).unref();
      return;
    }
    case 'echo': {
      const port = Number(args[0]);
      const server = createServer((s) => {
        s.on('error', () => undefined);
        s.setNoDelay(true);
        s.write('hello\n');
        s.pipe(s);
      });
      server.listen({ port, host: '::', ipv6Only: false }, () => out({ listening: port }));
      setTimeout(() => process.exit(0), 600_000).unref();
      return;
    }
    case 'hold': {
      const [host, port, gapsText, from] = args;
      const gaps = (gapsText ?? '').split(',').filter((g) => g !== '').map(Number);
      await hold(host ?? '', Number(port), gaps, from);
      return;
    }
    case 'cycles': {
      const [host, port, froms, ...steps] = args;
      const failed: { from: string; error: string }[] = [];
      let ok = 0;
      for (const from of (froms ?? '').split(',').filter((f) => f !== '')) {
        for (const s of steps) {
          await knockStep(host ?? '', s, from);
          await sleep(10);
        }
        const r = await tryConnect(host ?? '', Number(port), 3000, from);
        if (r.ok) ok++;
        else failed.push({ from, error: r.error ?? 'failed' });
      }
      out({ ok, failed });
      return;
    }
    case 'get': {
      const res = await fetch(args[0] ?? '', { signal: AbortSignal.timeout(5000) });
      out({ ok: res.ok, status: res.status, body: await res.text() });
      return;
    }
    case 'session': {
      for await (const line of createInterface({ input: process.stdin })) {
        const words = line.trim().split(/\s+/).filter((w) => w !== '');
        if (words[0] === 'session' || words[0] === 'serve' || words[0] === 'echo') {
          out({ ok: false, error: `${words[0]} cannot run in a session` });
          continue;
        }
        await main(words).catch((err: unknown) => out({ ok: false, error: err instanceof Error ? err.message : String(err) }));
      }
      return;
    }
    default:
      throw new Error(`unknown command ${cmd ?? ''}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  out({ ok: false, error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
