/**
 * End-to-end helpers: the daemon as a child process inside a test network namespace, its log
 * lines collected as JSON, and the test client (test/helpers/client.ts) run in a namespace.
 * Every process started here is ended by PID in stop()/kill(), bounded in time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { ROOT } from './kernel.js';

export const CLI = `${ROOT}dist/src/cli/main.js`;
export const CLIENT = `${ROOT}dist/test/helpers/client.js`;

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export class Proc {
  readonly lines: LogLine[] = [];
  readonly raw: string[] = [];
  readonly stderr: string[] = [];
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.raw.push(text);
        let line: LogLine;
        try {
          line = JSON.parse(text) as LogLine;
        } catch {
          continue;
        }
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(line)) return true;
          w.resolve(line);
          return false;
        });
      }
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => this.stderr.push(chunk));
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error('process did not start');
    return this.child.pid;
  }

  /** Resolve with the first line (already seen or future) matching pred; reject after timeoutMs. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs: number, what = 'log line'): Promise<LogLine> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${this.stderr.join('').slice(-2000)}; last lines: ${this.raw.slice(-10).join('\n')}`));
      }, timeoutMs);
      const done = (l: LogLine): void => {
        clearTimeout(timer);
        resolve(l);
      };
      this.waiters.push({ pred, resolve: done });
      // 'close', not 'exit': a line printed just before exiting may still be in the pipe at 'exit'.
      this.child.once('close', (code) => {
        clearTimeout(timer);
        reject(new Error(`process exited (${code}) while waiting for ${what}; stderr: ${this.stderr.join('').slice(-2000)}; last lines: ${this.raw.slice(-10).join('\n')}`));
      });
    });
  }

  msg(msg: string, timeoutMs = 10_000): Promise<LogLine> {
    return this.waitFor((l) => l.msg === msg, timeoutMs, `"${msg}"`);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) process.kill(this.pid, sig);
  }

  /** SIGTERM, then SIGKILL after graceMs; resolves with the exit code. */
  async stop(graceMs = 10_000): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    this.signal('SIGKILL');
  }
}

/** Start the daemon with its network namespace set to `ns` but the host's mounts (so pins are visible). */
export function startDaemon(ns: string, args: readonly string[]): Proc {
  const child = spawn('nsenter', [`--net=/run/netns/${ns}`, process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Proc(child);
}

/** Start a long-running test client command (e.g. `serve PORT`) inside a namespace. */
export function startClient(ns: string, args: readonly string[]): Proc {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, CLIENT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Proc(child);
}

/** How a command that ran to its end (or was killed) ended. */
export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command asynchronously (the logs of running daemons keep being read meanwhile),
 * SIGKILLed (by its PID) after timeoutMs.
 */
export function runAsync(cmd: string, args: readonly string[], timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The command line of the test client inside a namespace. */
const clientCommand = (ns: string, args: readonly string[]): string[] => ['ip', 'netns', 'exec', ns, process.execPath, CLIENT, ...args];

/** The test client's answer: the last line of its output, JSON. */
function clientAnswer(args: readonly string[], r: Run): Record<string, unknown> {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`client ${args.join(' ')}: no JSON answer (status ${r.status}): ${r.stdout} ${r.stderr}`);
  }
}

/** Run a test client command inside a namespace and return its JSON answer. */
export function client(ns: string, args: readonly string[], timeoutMs = 15_000): Record<string, unknown> {
  const [cmd, ...rest] = clientCommand(ns, args);
  const r = spawnSync(cmd!, rest, { encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw r.error;
  return clientAnswer(args, r);
}

/** client(), asynchronously. */
export async function clientAsync(ns: string, args: readonly string[], timeoutMs = 15_000): Promise<Record<string, unknown>> {
  const [cmd, ...rest] = clientCommand(ns, args);
  return clientAnswer(args, await runAsync(cmd!, rest, timeoutMs));
}

/** The command line of the CLI (not the daemon) inside a namespace with the host's mounts (ns null: here). */
const cliCommand = (ns: string | null, args: readonly string[]): string[] =>
  ns === null ? [process.execPath, CLI, ...args] : ['nsenter', `--net=/run/netns/${ns}`, process.execPath, CLI, ...args];

/** Run the CLI (not the daemon) inside a namespace with the host's mounts; returns status and output. */
export function cli(ns: string | null, args: readonly string[], timeoutMs = 30_000): Run {
  const [cmd, ...rest] = cliCommand(ns, args);
  const r = spawnSync(cmd!, rest, { encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** cli(), asynchronously. */
export function cliAsync(ns: string | null, args: readonly string[], timeoutMs = 30_000): Promise<Run> {
  const [cmd, ...rest] = cliCommand(ns, args);
  return runAsync(cmd!, rest, timeoutMs);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
