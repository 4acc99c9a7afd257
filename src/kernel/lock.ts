/**
 * One writer at a time: the daemon and CLI commands that change the gate (doors, grants,
 * detach) take an exclusive flock(2) on the pin directory itself (bpffs supports flock, and
 * the lock goes with the gate it protects). Locks die with their process, so a crash never
 * leaves the gate locked.
 */
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';
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
