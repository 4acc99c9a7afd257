/**
 * One writer at a time: the daemon and CLI commands that change the gate (doors, grants,
 * detach) take an exclusive flock(2) on the pin directory itself (bpffs supports flock, and
 * the lock goes with the gate it protects). Locks die with their process, so a crash never
 * leaves the gate locked.
 */
import { closeSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import koffi from 'koffi';
import { controlSocketPath } from '../control.js';
import { GateError } from './gate.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

let flockFn: ((fd: number, op: number) => number) | undefined;
function flock(fd: number, op: number): number {
  flockFn ??= koffi.load('libc.so.6').func('int flock(int fd, int operation)') as unknown as (fd: number, op: number) => number;
  return flockFn(fd, op);
}

/** Run fn holding the gate's lock; waits up to timeoutMs for another writer to finish. */
export async function withGateLock<T>(pinPath: string, fn: () => T | Promise<T>, timeoutMs = 10_000): Promise<T> {
  const fd = openSync(pinPath, 'r');
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (flock(fd, LOCK_EX | LOCK_NB) === 0) break;
      const errno = koffi.errno();
      if (errno !== EWOULDBLOCK) throw new GateError(`cannot lock ${pinPath} (errno ${errno})`);
      if (Date.now() > deadline) {
        throw new GateError(`another knockgate process has been changing the gate at ${pinPath} for ${timeoutMs / 1000}s: try again`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return await fn();
  } finally {
    closeSync(fd); // releases the lock
  }
}

// ---- one daemon per gate ------------------------------------------------------------------

/**
 * The daemon's lock: an exclusive flock(2) on /run/knockgate/<gate>.lock, beside the control
 * socket, held from before the gate is opened until the process ends. It lives exactly as
 * long as the daemon (the kernel drops it when the process dies, however it dies), so a
 * crashed daemon's stale lock file or socket never blocks a restart. It is a different file
 * from the pin directory that withGateLock() locks, so the two never wait on each other.
 * The file holds the daemon's PID, for messages.
 */
export function daemonLockPath(pinPath: string): string {
  return controlSocketPath(pinPath).replace(/\.sock$/, '.lock');
}

/** A live daemon already serves the gate. */
export class DaemonRunningError extends GateError {
  constructor(
    readonly pinPath: string,
    readonly pid: number | null,
  ) {
    const who = pid !== null ? `a knockgate daemon (PID ${pid})` : 'a knockgate daemon';
    super(
      `${who} already serves the gate at ${pinPath} (control socket ${controlSocketPath(pinPath)}, lock ${daemonLockPath(pinPath)}); ` +
        `nothing was changed. One daemon per gate: ` +
        `see it with \`knockgate status --pin-path ${pinPath}\`, change doors with \`knockgate door ...\`, ` +
        `apply an edited config with \`systemctl reload knockgate\` (or \`kill -HUP ${pid ?? 'PID'}\`), ` +
        `validate a config with \`knockgate check -c FILE\`, stop it with \`systemctl stop knockgate\`; ` +
        `a second gate needs its own pin_path and interfaces`,
    );
    this.name = 'DaemonRunningError';
  }
}

const LOCK_SH = 1;
const LOCK_UN = 8;

function sameFile(fd: number, path: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = statSync(path);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

function readPid(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

export class DaemonLock {
  private constructor(
    readonly path: string,
    private fd: number,
  ) {}

  /**
   * Take the gate's daemon lock or throw DaemonRunningError (with the holder's PID). A few
   * short retries ride out a `status` that is probing the lock at that instant.
   */
  static acquire(pinPath: string): DaemonLock {
    const path = daemonLockPath(pinPath);
    mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    for (let attempt = 0; ; attempt++) {
      const fd = openSync(path, 'a+', 0o600);
      if (flock(fd, LOCK_EX | LOCK_NB) === 0) {
        // A daemon that stopped cleanly unlinks its file while it holds the lock: a lock taken
        // on that old file (opened just before) is worthless, so the file must still be `path`.
        if (sameFile(fd, path)) {
          ftruncateSync(fd, 0);
          writeSync(fd, `${process.pid}\n`, 0);
          return new DaemonLock(path, fd);
        }
        closeSync(fd);
        continue;
      }
      const errno = koffi.errno();
      closeSync(fd);
      if (errno !== EWOULDBLOCK) throw new GateError(`cannot lock ${path} (errno ${errno})`);
      if (attempt >= 4) throw new DaemonRunningError(pinPath, readPid(path));
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 25);
    }
  }

  /** Release the lock and remove its file (a crash leaves the file, which blocks nothing). */
  release(): void {
    if (this.fd < 0) return;
    try {
      unlinkSync(this.path); // while still holding the lock: see acquire()
    } catch {
      /* already gone */
    }
    closeSync(this.fd);
    this.fd = -1;
  }
}

/**
 * Is a daemon serving the gate at pinPath? Its PID (or 0 when its lock file names none), or
 * null. Probes with a shared lock, released at once: it never blocks the daemon for longer.
 */
export function daemonHolding(pinPath: string): number | null {
  const path = daemonLockPath(pinPath);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    if (flock(fd, LOCK_SH | LOCK_NB) === 0) {
      flock(fd, LOCK_UN);
      return null;
    }
    return readPid(path) ?? 0;
  } finally {
    closeSync(fd);
  }
}

/** Wait until no daemon holds the gate's lock; false on timeout. */
export async function waitDaemonGone(pinPath: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (daemonHolding(pinPath) !== null) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** Remove the lock file a crashed (or killed) daemon left, if nobody holds it; true if removed. */
export function removeStaleDaemonLock(pinPath: string): boolean {
  const path = daemonLockPath(pinPath);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return false;
  }
  try {
    if (flock(fd, LOCK_EX | LOCK_NB) !== 0 || !sameFile(fd, path)) return false;
    unlinkSync(path);
    return true;
  } finally {
    closeSync(fd);
  }
}
