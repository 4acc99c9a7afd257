/**
 * Helpers for kernel tests (root, a real kernel with BPF):
 *
 * - kernelSkipReason() / requireKernel(t) / kernelTest() / kernelSuite(): a test that cannot
 *   run skips with the reason on a developer machine, and fails when CI=true.
 * - withNetns(): two fresh network namespaces joined by a veth pair, all named kg-<random>,
 *   removed in a finally even when the test fails. Addresses come from 198.18.0.0/15 and
 *   2001:db8::/32 only; packets never leave these namespaces.
 * - withPinDir(): a bpffs directory /sys/fs/bpf/kg-test-<random>, removed in a finally.
 * - fixture(): a compiled test/fixtures/*.bpf.o, built with clang if missing or stale.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, test, type TestContext } from 'node:test';
import koffi from 'koffi';

/** Repository root (this file runs as dist/test/helpers/kernel.js). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export const IN_CI = process.env['CI'] === 'true';

let cachedReason: string | null | undefined;

/** Why kernel tests cannot run here, or null if they can. */
export function kernelSkipReason(): string | null {
  if (cachedReason !== undefined) return cachedReason;
  cachedReason = probeKernel();
  return cachedReason;
}

function probeKernel(): string | null {
  if (process.platform !== 'linux') return `kernel tests need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'kernel tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)';
  let mountinfo = '';
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return 'cannot read /proc/self/mountinfo';
  }
  if (!mountinfo.split('\n').some((l) => / \/sys\/fs\/bpf .* - bpf /.test(l))) return 'no bpf filesystem mounted at /sys/fs/bpf';
  try {
    const libbpf = koffi.load('libbpf.so.1');
    const create = libbpf.func('int bpf_map_create(int, const char *, uint32_t, uint32_t, uint32_t, const void *)');
    const fd = create(2 /* ARRAY */, 'kg_probe', 4, 4, 1, null) as number;
    if (fd < 0) return `the bpf() syscall fails here (errno ${-fd})`;
    koffi.load('libc.so.6').func('int close(int)')(fd);
  } catch (err) {
    return `libbpf.so.1 is not usable: ${(err as Error).message}`;
  }
  return null;
}

function cannotRun(reason: string): Error {
  return new Error(`kernel test cannot run in CI (CI=true): ${reason}`);
}

/** Call first in a kernel test: false (test skipped) if the kernel is not usable, throws in CI. */
export function requireKernel(t: TestContext): boolean {
  const reason = kernelSkipReason();
  if (reason === null) return true;
  if (IN_CI) throw cannotRun(reason);
  t.skip(reason);
  return false;
}

type TestFn = (t: TestContext) => void | Promise<void>;

/** test() that skips (or fails in CI) when the kernel is not usable. */
export function kernelTest(name: string, fn: TestFn): void {
  test(name, async (t) => {
    if (!requireKernel(t)) return;
    await fn(t);
  });
}

/** describe() whose tests are skipped (or the suite fails in CI) when the kernel is not usable. */
export function kernelSuite(name: string, fn: () => void): void {
  const reason = kernelSkipReason();
  if (reason !== null && IN_CI) {
    test(name, () => {
      throw cannotRun(reason);
    });
    return;
  }
  describe(name, reason === null ? {} : { skip: reason }, fn);
}

export function randomSuffix(bytes = 4): string {
  return randomBytes(bytes).toString('hex');
}

/** Run a command (argument vector, no shell), bounded in time; throws with its stderr on failure. */
export function run(cmd: string, args: readonly string[], timeoutMs = 10_000, input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, ...(input !== undefined ? { input } : {}) });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

// ---- network namespaces ----------------------------------------------------------------

const CLONE_NEWNET = 0x40000000;
let setnsFn: ((fd: number, nstype: number) => number) | undefined;

function setns(fd: number): void {
  setnsFn ??= koffi.load('libc.so.6').func('int setns(int fd, int nstype)') as unknown as (fd: number, nstype: number) => number;
  if (setnsFn(fd, CLONE_NEWNET) !== 0) throw new Error(`setns failed (errno ${koffi.errno()})`);
}

export interface NetnsPair {
  /** random part of every name */
  id: string;
  /** namespace holding ifA / ifB */
  nsA: string;
  nsB: string;
  /** the two ends of the veth pair */
  ifA: string;
  ifB: string;
  addrA: string;
  addrB: string;
  addr6A: string;
  addr6B: string;
  /** run a command inside a namespace (`ip netns exec NS ...`), bounded in time */
  exec(ns: string, args: readonly string[], timeoutMs?: number): string;
  /**
   * Run fn with this thread (Node's main thread) inside the namespace, then come back.
   * fn must be synchronous: ifindexes, bpf_link_create, netlink queries resolve there.
   */
  enter<T>(ns: string, fn: () => T): T;
  /** send `count` (<= 100) UDP datagrams from nsA to addrB:port */
  sendUdp(count: number, port?: number): void;
}

/**
 * Two namespaces kg-<id>-a and kg-<id>-b with a veth pair kg-<id>a <-> kg-<id>b,
 * 198.18.0.1/30 and 2001:db8::1/64 on A, .2 and ::2 on B. Removed in a finally.
 */
export async function withNetns<T>(fn: (env: NetnsPair) => T | Promise<T>): Promise<T> {
  const id = randomSuffix();
  const nsA = `kg-${id}-a`;
  const nsB = `kg-${id}-b`;
  const ifA = `kg-${id}a`;
  const ifB = `kg-${id}b`;
  const env: NetnsPair = {
    id,
    nsA,
    nsB,
    ifA,
    ifB,
    addrA: '198.18.0.1',
    addrB: '198.18.0.2',
    addr6A: '2001:db8::1',
    addr6B: '2001:db8::2',
    exec: (ns, args, timeoutMs) => run('ip', ['netns', 'exec', ns, ...args], timeoutMs),
    enter: <R>(ns: string, f: () => R): R => {
      const home = openSync('/proc/thread-self/ns/net', 'r');
      let target = -1;
      try {
        target = openSync(`/run/netns/${ns}`, 'r');
        setns(target);
        try {
          return f();
        } finally {
          setns(home);
        }
      } finally {
        if (target >= 0) closeSync(target);
        closeSync(home);
      }
    },
    sendUdp: (count, port = 9) => {
      const n = Math.min(Math.max(count, 1), 100);
      const script = `for i in $(seq 1 ${n}); do echo knock > /dev/udp/198.18.0.2/${port} || true; done`;
      run('ip', ['netns', 'exec', nsA, 'bash', '-c', script], 10_000);
    },
  };
  const created: string[] = [];
  try {
    for (const ns of [nsA, nsB]) {
      run('ip', ['netns', 'add', ns]);
      created.push(ns);
    }
    run('ip', ['link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
    for (const [ns, dev, a4, a6] of [
      [nsA, ifA, '198.18.0.1/30', '2001:db8::1/64'],
      [nsB, ifB, '198.18.0.2/30', '2001:db8::2/64'],
    ] as const) {
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', ns, 'addr', 'add', a4, 'dev', dev]);
      run('ip', ['-n', ns, 'addr', 'add', a6, 'dev', dev, 'nodad']);
      run('ip', ['-n', ns, 'link', 'set', dev, 'up']);
    }
    return await fn(env);
  } finally {
    for (const ns of created) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
  }
}

// ---- pins ------------------------------------------------------------------------------

/** A fresh directory /sys/fs/bpf/kg-test-<random>, removed (with every pin in it) in a finally. */
export async function withPinDir<T>(fn: (dir: string) => T | Promise<T>): Promise<T> {
  const dir = `/sys/fs/bpf/kg-test-${randomSuffix()}`;
  mkdirSync(dir, { mode: 0o700 });
  try {
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- fixtures --------------------------------------------------------------------------

/**
 * Path of test/fixtures/<name>.bpf.o, compiled from <name>.bpf.c (same flags as bpf/Makefile)
 * if it is missing or older than its source.
 */
export function fixture(name: string): string {
  const src = `${ROOT}test/fixtures/${name}.bpf.c`;
  const obj = `${ROOT}test/fixtures/${name}.bpf.o`;
  if (!existsSync(obj) || statSync(obj).mtimeMs < statSync(src).mtimeMs) {
    const triplet = run('gcc', ['-dumpmachine']).trim();
    const tmp = `${obj}.tmp-${process.pid}`;
    run('clang', ['-O2', '-g', '-target', 'bpf', '-Wall', '-Werror', `-I/usr/include/${triplet}`, '-c', src, '-o', tmp], 60_000);
    renameSync(tmp, obj); // atomic: a concurrent reader sees the old or the new object
  }
  return obj;
}
