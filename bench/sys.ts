/**
 * Small system helpers for the benchmarks: bounded commands, CPU affinity, /proc readings,
 * network-namespace entry for the calling thread, and child processes ended by PID.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';

/** Repository root (this file runs as dist/bench/sys.js). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Run a command (argument vector, no shell), bounded in time; throws with its stderr on failure. */
export function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeoutMs ?? 15_000, input: opts.input });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** Like run(), but never throws: for cleanup. */
export function tryRun(cmd: string, args: readonly string[], timeoutMs = 15_000): boolean {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return !r.error && r.status === 0;
}

// ---- libc --------------------------------------------------------------------------------

const CLONE_NEWNET = 0x40000000;
let libcFns: { setns: (fd: number, nstype: number) => number; setaffinity: (pid: number, size: number, mask: Buffer) => number } | undefined;

function lc() {
  if (libcFns === undefined) {
    const lib = koffi.load('libc.so.6');
    libcFns = {
      setns: lib.func('int setns(int fd, int nstype)') as unknown as (fd: number, nstype: number) => number,
      setaffinity: lib.func('int sched_setaffinity(int pid, size_t cpusetsize, const void *mask)') as unknown as (
        pid: number,
        size: number,
        mask: Buffer,
      ) => number,
    };
  }
  return libcFns;
}

/** Pin the calling thread (Node's main thread) to the given CPUs. */
export function setAffinity(cpuList: readonly number[]): void {
  const mask = Buffer.alloc(128);
  for (const c of cpuList) {
    const byte = mask[c >> 3] ?? 0;
    mask[c >> 3] = byte | (1 << (c & 7));
  }
  if (lc().setaffinity(0, mask.length, mask) !== 0) throw new Error(`sched_setaffinity(${cpuList.join(',')}) failed (errno ${koffi.errno()})`);
}

export function cpuCount(): number {
  return Math.max(1, cpus().length);
}

/** Run fn with this thread inside the named network namespace, then come back. fn must be synchronous. */
export function inNetns<T>(ns: string, fn: () => T): T {
  const home = openSync('/proc/thread-self/ns/net', 'r');
  let target = -1;
  try {
    target = openSync(`/run/netns/${ns}`, 'r');
    if (lc().setns(target, CLONE_NEWNET) !== 0) throw new Error(`setns(${ns}) failed (errno ${koffi.errno()})`);
    try {
      return fn();
    } finally {
      if (lc().setns(home, CLONE_NEWNET) !== 0) throw new Error(`setns(back from ${ns}) failed (errno ${koffi.errno()})`);
    }
  } finally {
    if (target >= 0) closeSync(target);
    closeSync(home);
  }
}

// ---- /proc ---------------------------------------------------------------------------------

export interface CpuTimes {
  /** per CPU: [user, nice, system, idle, iowait, irq, softirq, steal] in USER_HZ ticks */
  cpus: number[][];
  atNs: bigint;
}

export function readCpuTimes(): CpuTimes {
  const out: number[][] = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    out[Number(m[1])] = (m[2] ?? '').trim().split(/\s+/).slice(0, 8).map(Number);
  }
  return { cpus: out, atNs: process.hrtime.bigint() };
}

export interface CpuUse {
  /** softirq time over the interval, in % of one core, summed over every CPU */
  softirqPct: number;
  /** the same per CPU */
  softirqPctPerCpu: number[];
  /** system (kernel, process context) time, % of one core, summed over every CPU */
  systemPct: number;
  /** busy (not idle/iowait) time, % of one core, summed */
  busyPct: number;
  /** user time per CPU, % (the benchmark's generator and receivers spend none: other load) */
  userPctPerCpu: number[];
  busyPctPerCpu: number[];
}

export function cpuUse(a: CpuTimes, b: CpuTimes): CpuUse {
  const per: number[] = [];
  const user: number[] = [];
  const busyPer: number[] = [];
  let soft = 0;
  let sys = 0;
  let busy = 0;
  b.cpus.forEach((tb, i) => {
    const ta = a.cpus[i];
    if (!ta) return;
    const d = tb.map((v, k) => v - (ta[k] ?? 0));
    const total = d.reduce((s, v) => s + v, 0);
    if (total <= 0) {
      per[i] = 0;
      user[i] = 0;
      busyPer[i] = 0;
      return;
    }
    const pct = (k: number): number => ((d[k] ?? 0) / total) * 100;
    per[i] = pct(6);
    user[i] = pct(0) + pct(1);
    busyPer[i] = 100 - pct(3) - pct(4);
    soft += pct(6);
    sys += pct(2);
    busy += 100 - pct(3) - pct(4);
  });
  return { softirqPct: soft, softirqPctPerCpu: per, systemPct: sys, busyPct: busy, userPctPerCpu: user, busyPctPerCpu: busyPer };
}

/** utime + stime of a process, in seconds (USER_HZ = 100 on Linux). */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** PID of the ksoftirqd thread of a CPU (softirq work deferred from that CPU runs there), or -1. */
export function ksoftirqdPid(cpu: number): number {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() === `ksoftirqd/${cpu}`) return Number(d);
    } catch {
      /* gone */
    }
  }
  return -1;
}

/** The kernel's memory accounting of a BPF map (the `memlock:` line of its fdinfo), bytes. */
export function mapMemlock(fd: number): number {
  const m = /^memlock:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (!m) throw new Error(`no memlock line in /proc/self/fdinfo/${fd}`);
  return Number(m[1]);
}

// ---- machine -------------------------------------------------------------------------------

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '';
}

function debVersion(pkg: string): string {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Version}', pkg], { encoding: 'utf8', timeout: 5_000 });
  return r.status === 0 ? r.stdout.trim() : 'not installed';
}

export interface Machine {
  cpuModel: string;
  cores: number;
  memGiB: number;
  kernel: string;
  node: string;
  libbpf: string;
  nftables: string;
  knockd: string;
  hz: string;
  irqTimeAccounting: string;
}

export function machineInfo(): Machine {
  let hz = 'unknown';
  let irqTime = 'unknown';
  try {
    const cfg = spawnSync('sh', ['-c', 'zcat /proc/config.gz 2>/dev/null | grep -E "^CONFIG_HZ=|IRQ_TIME_ACCOUNTING"'], { encoding: 'utf8', timeout: 5_000 }).stdout;
    hz = /CONFIG_HZ=(\d+)/.exec(cfg)?.[1] ?? 'unknown';
    irqTime = /CONFIG_IRQ_TIME_ACCOUNTING=y/.test(cfg) ? 'yes' : /IRQ_TIME_ACCOUNTING is not set/.test(cfg) ? 'no (softirq time is sampled at each tick)' : 'unknown';
  } catch {
    /* keep unknown */
  }
  return {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cores: cpuCount(),
    memGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    libbpf: debVersion('libbpf1'),
    nftables: firstLine('nft', ['--version']) || debVersion('nftables'),
    knockd: debVersion('knockd'),
    hz,
    irqTimeAccounting: irqTime,
  };
}

// ---- children ------------------------------------------------------------------------------

/** A child process we started, with its stdout lines; ended by PID only. */
export class Child {
  readonly lines: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  private waiters: { pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  private done = false;

  constructor(
    readonly what: string,
    readonly proc: ChildProcess,
  ) {
    let buf = '';
    proc.stdout?.setEncoding('utf8');
    proc.stdout?.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(line)) return true;
          w.resolve(line);
          return false;
        });
      }
    });
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (c: string) => {
      if (this.stderr.length < 200) this.stderr.push(c);
    });
    // 'close', not 'exit': by then every line the process printed has been read.
    this.exited = new Promise((resolve) =>
      proc.on('close', (code) => {
        this.done = true;
        resolve(code);
      }),
    );
    proc.on('error', () => undefined);
  }

  static start(what: string, cmd: string, args: readonly string[]): Child {
    return new Child(what, spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  /** not yet exited (its output may still be arriving after that: see waitExit) */
  get running(): boolean {
    return !this.done && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** JSON objects printed so far. */
  json(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const l of this.lines) {
      try {
        const v = JSON.parse(l) as unknown;
        if (v && typeof v === 'object') out.push(v as Record<string, unknown>);
      } catch {
        /* not JSON */
      }
    }
    return out;
  }

  waitLine(pred: (l: string) => boolean, timeoutMs: number): Promise<string> {
    const seen = this.lines.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`${this.what}: no expected output within ${timeoutMs} ms; stderr: ${this.stderr.join('').slice(-1500)}`));
      }, timeoutMs);
      const done = (l: string): void => {
        clearTimeout(timer);
        resolve(l);
      };
      this.waiters.push({ pred, resolve: done });
      void this.exited.then((code) => {
        if (this.waiters.some((w) => w.resolve === done)) {
          clearTimeout(timer);
          this.waiters = this.waiters.filter((w) => w.resolve !== done);
          reject(new Error(`${this.what} exited (${code}) before the expected output; stderr: ${this.stderr.join('').slice(-1500)}`));
        }
      });
    });
  }

  /** Wait for exit up to timeoutMs; true if it exited. */
  async waitExit(timeoutMs: number): Promise<boolean> {
    if (this.done) return true;
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const r = await Promise.race([this.exited.then(() => true as const), t]);
    if (timer) clearTimeout(timer);
    return r;
  }

  /** SIGTERM, then SIGKILL after graceMs; by PID. */
  async stop(graceMs = 3_000): Promise<void> {
    if (!this.running) {
      await this.waitExit(graceMs);
      return;
    }
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      await this.waitExit(graceMs);
      return;
    }
    if (await this.waitExit(graceMs)) return;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      return;
    }
    await this.waitExit(graceMs);
  }
}
