// A tiny network client for end-to-end tests, run inside a test namespace with
// `ip netns exec kg-... node dist/test/helpers/client.js <command> ...`. Prints one JSON line.
//   knock HOST STEP...            send each step (PORT/tcp = a SYN via connect(), PORT/udp = a datagram)
//   connect HOST PORT TIMEOUT_MS  open a TCP connection, read the greeting; {ok, data} or {ok:false, error}
//   serve PORT                    run a TCP server on :: that greets every connection with "hello\n"
//   get URL                       HTTP GET; {ok, status, body}
import { connect, createServer, isIPv6 } from 'node:net';
import { createSocket } from 'node:dgram';
import { setTimeout as sleep } from 'node:timers/promises';

function out(v: unknown): void {
  process.stdout.write(JSON.stringify(v) + '\n');
}

async function knockStep(host: string, step: string): Promise<void> {
  const m = /^(\d+)\/(tcp|udp)$/.exec(step);
  if (!m) throw new Error(`bad step ${step}`);
  const port = Number(m[1]);
  if (m[2] === 'udp') {
    const s = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => s.send(Buffer.from('knock'), port, host, (err) => (err ? reject(err) : resolve())));
    s.close();
    return;
  }
  // A SYN leaves as soon as connect() starts; the gate drops it, so give up after a moment.
  const sock = connect({ host, port });
  sock.on('error', () => undefined);
  await sleep(30);
  sock.destroy();
}

async function tryConnect(host: string, port: number, timeoutMs: number): Promise<{ ok: boolean; data?: string; error?: string }> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
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
      const [host, port, timeout] = args;
      out(await tryConnect(host ?? '', Number(port), Number(timeout ?? 1000)));
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
    case 'get': {
      const res = await fetch(args[0] ?? '', { signal: AbortSignal.timeout(5000) });
      out({ ok: res.ok, status: res.status, body: await res.text() });
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
