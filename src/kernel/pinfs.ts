/**
 * Pins that outlive the process. A gate survives its daemon only through its pins, and pins
 * live as long as the bpf filesystem that holds them. `ip netns exec NS` runs a command in a
 * private mount namespace with a fresh /sys, so the bpffs the daemon finds (or mounts) at
 * /sys/fs/bpf belongs to that namespace alone and dies with the daemon: a crash would remove
 * the gate. The test: PID 1's view of the same path (through /proc/1/root) must reach the
 * same bpf filesystem (same device); if the process shares PID 1's mount namespace there is
 * nothing to check.
 */
import { readlinkSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { GateError } from './gate.js';

export class PrivateBpffsError extends GateError {
  constructor(
    readonly pinPath: string,
    why: string,
  ) {
    super(
      `the pin directory ${pinPath} is on a bpf filesystem that will not outlive this process (${why}): ` +
        `after a crash the gate and its protection would vanish with it, so nothing was loaded. ` +
        `This happens under \`ip netns exec NS\`, which gives the process a private mount namespace and bpffs. ` +
        `Enter only the network namespace instead: \`nsenter --net=/run/netns/NS knockgate run ...\` ` +
        `(systemd: NetworkNamespacePath=/run/netns/NS), or set pin_path to a directory on a bpffs ` +
        `mounted before entering the namespace (e.g. under /sys/fs/bpf as the host sees it)`,
    );
    this.name = 'PrivateBpffsError';
  }
}

export type PinFsVerdict = { ok: true; shared: boolean } | { ok: false; why: string } | { ok: null; why: string };

/**
 * Does the bpffs under `pinPath` (which must exist) outlive this process? ok: true (same
 * mount namespace as PID 1, or PID 1 sees the same filesystem there), false (it does not),
 * or null (cannot tell, e.g. /proc/1 not readable).
 */
export function pinFsVerdict(pinPath: string, proc = '/proc'): PinFsVerdict {
  const abs = resolve(pinPath);
  let mine: string;
  let init: string;
  try {
    mine = readlinkSync(`${proc}/self/ns/mnt`);
    init = readlinkSync(`${proc}/1/ns/mnt`);
  } catch (err) {
    return { ok: null, why: `cannot compare mount namespaces with PID 1: ${(err as Error).message}` };
  }
  if (mine === init) return { ok: true, shared: true };
  let here: number;
  try {
    here = statSync(abs).dev;
  } catch (err) {
    return { ok: null, why: `cannot stat ${abs}: ${(err as Error).message}` };
  }
  let there: number;
  try {
    there = statSync(`${proc}/1/root${abs}`).dev;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return { ok: false, why: `this process runs in a mount namespace of its own (${mine}, PID 1: ${init}) and PID 1 does not see ${abs}` };
    }
    return { ok: null, why: `cannot stat ${abs} as PID 1 sees it: ${(err as Error).message}` };
  }
  if (here !== there) {
    return { ok: false, why: `this process runs in a mount namespace of its own (${mine}, PID 1: ${init}) and ${abs} is on another filesystem there` };
  }
  return { ok: true, shared: false };
}

/** Throw PrivateBpffsError when the pins would die with the process; returns a doubt to log. */
export function checkPinsOutlive(pinPath: string): string | null {
  const v = pinFsVerdict(pinPath);
  if (v.ok === false) throw new PrivateBpffsError(pinPath, v.why);
  return v.ok === null ? v.why : null;
}
