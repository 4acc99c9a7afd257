/**
 * The daemon's control socket: newline-delimited JSON over a Unix stream socket under
 * /run/knockgate, one per gate (named after its pin path). CLI commands use it to tell a
 * running daemon what they changed (the daemon logs it and refreshes its view) and to follow
 * the daemon's event stream (the kernel ring buffer has one consumer: the daemon).
 * Everything works without a daemon: a client that finds no socket just carries on.
 */
import { chmodSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { posix } from 'node:path';

export const CONTROL_DIR = process.env['KNOCKGATE_RUN_DIR'] ?? '/run/knockgate';

export function controlSocketPath(pinPath: string): string {
  // Normalized, so that `--pin-path /sys/fs/bpf/x/` finds the daemon of pin_path /sys/fs/bpf/x.
  const normal = posix.normalize(posix.resolve(pinPath)).replace(/\/+$/, '');
  const name = normal.replace(/^\/+/, '').replace(/[^A-Za-z0-9_.-]+/g, '-') || 'root';
  return `${CONTROL_DIR}/${name}.sock`;
}

export type ControlRequest =
  | { op: 'notify'; change: string; detail?: Record<string, unknown> }
  | { op: 'subscribe' }
  | { op: 'recent'; limit?: number }
  | { op: 'detached' }
  | { op: 'detach' }
  | { op: 'interfaces' }
  | { op: 'fleet' };

export interface ControlHandlers {
  notify(change: string, detail: Record<string, unknown>): void;
  detached(): void;
  recent(limit: number): unknown[];
  /** register a subscriber; returns its unsubscribe function */
  subscribe(send: (event: unknown) => void): () => void;
  /** `knockgate detach` asks the daemon to detach the gate, remove its pins and stop */
  detach?(): void;
  /** each configured interface or pattern and its state */
  interfaces?(): unknown[];
  /** fleet mode: the fleet's state and each grant's origin (null: not in fleet mode) */
  fleet?(): Promise<unknown>;
}

export class ControlServer {
  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  static async listen(pinPath: string, h: ControlHandlers): Promise<ControlServer> {
    const path = controlSocketPath(pinPath);
    mkdirSync(CONTROL_DIR, { recursive: true, mode: 0o750 });
    try {
      unlinkSync(path); // a stale socket from a crashed daemon
    } catch {
      /* none */
    }
    const server = createServer((sock) => serve(sock, h));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    return new ControlServer(server, path);
  }

  close(): void {
    this.server.close();
    try {
      unlinkSync(this.path);
    } catch {
      /* gone */
    }
  }
}

/** Call onLine for every newline-terminated line the socket receives. */
function onLines(sock: Socket, onLine: (line: string) => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      onLine(line);
    }
  });
}

function serve(sock: Socket, h: ControlHandlers): void {
  let unsubscribe: (() => void) | null = null;
  sock.on('error', () => undefined);
  sock.on('close', () => unsubscribe?.());
  onLines(sock, (line) => {
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
    } catch {
      sock.end(JSON.stringify({ ok: false, error: 'bad request' }) + '\n');
      return;
    }
    switch (req.op) {
      case 'notify':
        h.notify(String(req.change), req.detail ?? {});
        sock.end(JSON.stringify({ ok: true }) + '\n');
        break;
      case 'detached':
        sock.end(JSON.stringify({ ok: true }) + '\n');
        h.detached();
        break;
      case 'detach':
        if (!h.detach) {
          sock.end(JSON.stringify({ ok: false, error: 'unknown op' }) + '\n');
          break;
        }
        sock.end(JSON.stringify({ ok: true, pid: process.pid }) + '\n');
        h.detach();
        break;
      case 'interfaces':
        sock.end(JSON.stringify(h.interfaces ? { ok: true, interfaces: h.interfaces() } : { ok: false, error: 'unknown op' }) + '\n');
        break;
      case 'recent':
        sock.end(JSON.stringify({ ok: true, events: h.recent(Math.max(1, Math.min(req.limit ?? 100, 10_000))) }) + '\n');
        break;
      case 'fleet':
        if (!h.fleet) {
          sock.end(JSON.stringify({ ok: true, fleet: null }) + '\n');
          break;
        }
        h.fleet().then(
          (fleet) => sock.end(JSON.stringify({ ok: true, fleet }) + '\n'),
          (err: unknown) => sock.end(JSON.stringify({ ok: false, error: String((err as Error).message) }) + '\n'),
        );
        break;
      case 'subscribe':
        sock.write(JSON.stringify({ ok: true }) + '\n');
        unsubscribe = h.subscribe((e) => sock.write(JSON.stringify(e) + '\n'));
        break;
      default:
        sock.end(JSON.stringify({ ok: false, error: 'unknown op' }) + '\n');
    }
  });
}

/** Send one request and return the first answer line; null when no daemon listens. */
export function controlRequest(pinPath: string, req: ControlRequest, timeoutMs = 2000): Promise<Record<string, unknown> | null> {
  return new Promise((resolve) => {
    const sock = connect(controlSocketPath(pinPath));
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(null);
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        sock.destroy();
        try {
          resolve(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
        } catch {
          resolve(null);
        }
      }
    });
    sock.on('error', () => {
      clearTimeout(timer);
      resolve(null);
    });
  });
}

/** Tell a running daemon about a change; false when none is running. */
export async function notifyDaemon(pinPath: string, change: string, detail: Record<string, unknown> = {}): Promise<boolean> {
  return (await controlRequest(pinPath, { op: 'notify', change, detail })) !== null;
}

/**
 * Follow the daemon's events: calls onEvent for each; resolves when the connection ends.
 * Returns null at once when no daemon listens.
 */
export function subscribe(pinPath: string, onEvent: (e: Record<string, unknown>) => void): Promise<{ close(): void; done: Promise<void> } | null> {
  return new Promise((resolve) => {
    const sock = connect(controlSocketPath(pinPath));
    let acked = false;
    const done = new Promise<void>((r) => sock.on('close', () => r()));
    sock.on('connect', () => sock.write(JSON.stringify({ op: 'subscribe' }) + '\n'));
    sock.on('error', () => {
      if (!acked) resolve(null);
    });
    onLines(sock, (line) => {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (!acked) {
        acked = true;
        resolve({ close: () => sock.destroy(), done });
        return;
      }
      onEvent(msg);
    });
  });
}
