/**
 * Pins that outlive the process. A gate survives its daemon only through its pins, and pins
 * live as long as the bpf filesystem that holds them. `ip netns exec NS` runs a command in a
 * private mount namespace with a fresh /sys, so the bpffs the daemon finds (or mounts) at
 * /sys/fs/bpf belongs to that namespace alone and dies with the daemon: a crash would remove
 * the gate. The test: PID 1's view of the same path (through /proc/1/root) must reach the
 * same bpf filesystem (same device); if the process shares PID 1's mount namespace there is
 * nothing to check. Where PID 1 cannot be inspected (some sandboxes), the nearest ancestor in
 * another mount namespace stands in for it: the shell that ran `ip netns exec`.
 */
import { readFileSync, readlinkSync, statSync } from 'node:fs';
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

function mntNs(proc: string, pid: number | 'self'): string | null {
  try {
    return readlinkSync(`${proc}/${pid}/ns/mnt`);
  } catch {
    return null;
  }
}

function parentOf(proc: string, pid: number | 'self'): number | null {
  try {
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
    const stat = readFileSync(`${proc}/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) && ppid > 0 ? ppid : null;
  } catch {
    return null;
  }
}

/**
 * The process to compare with: PID 1 if its mount namespace can be read (the authority on
 * what outlives us), else the nearest ancestor in another mount namespace (what `ip netns
 * exec` or `unshare -m` left behind), else null.
 */
function witness(proc: string, mine: string): { pid: number; ns: string } | null {
  const init = mntNs(proc, 1);
  if (init !== null) return { pid: 1, ns: init };
  let pid = parentOf(proc, 'self');
  let unreadable = false;
  for (let hops = 0; pid !== null && pid > 1 && hops < 64; hops++) {
    const ns = mntNs(proc, pid);
    if (ns === null) unreadable = true;
    else if (ns !== mine) return { pid, ns };
    pid = parentOf(proc, pid);
  }
  // Every ancestor below PID 1 shares this mount namespace: it is the one the process tree
  // was started in (by PID 1), not one made for this process.
  return unreadable || pid !== 1 ? null : { pid: -1, ns: mine };
}

/**
 * Does the bpffs under `pinPath` (which must exist) outlive this process? ok: true (same
 * mount namespace as PID 1, or the witness sees the same filesystem there), false (it does
 * not), or null (cannot tell: neither PID 1 nor an ancestor in another mount namespace can be
 * read).
 */
export function pinFsVerdict(pinPath: string, proc = '/proc'): PinFsVerdict {
  const abs = resolve(pinPath);
  const mine = mntNs(proc, 'self');
  if (mine === null) return { ok: null, why: `cannot read ${proc}/self/ns/mnt` };
  const w = witness(proc, mine);
  if (w === null) return { ok: null, why: 'neither PID 1 nor a parent process in another mount namespace can be inspected' };
  if (w.ns === mine) return { ok: true, shared: true };
  const who = w.pid === 1 ? 'PID 1' : `the parent process ${w.pid}`;
  let here: number;
  try {
    here = statSync(abs).dev;
  } catch (err) {
    return { ok: null, why: `cannot stat ${abs}: ${(err as Error).message}` };
  }
  let there: number;
  try {
    there = statSync(`${proc}/${w.pid}/root${abs}`).dev;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return { ok: false, why: `this process runs in a mount namespace of its own (${mine}; ${who}: ${w.ns}) and ${who} does not see ${abs}` };
    }
    return { ok: null, why: `cannot stat ${abs} as ${who} sees it: ${(err as Error).message}` };
  }
  if (here !== there) {
    return { ok: false, why: `this process runs in a mount namespace of its own (${mine}; ${who}: ${w.ns}) and ${abs} is on another filesystem there` };
  }
  return { ok: true, shared: false };
}

/** Throw PrivateBpffsError when the pins would die with the process; returns a doubt to log. */
export function checkPinsOutlive(pinPath: string): string | null {
  const v = pinFsVerdict(pinPath);
  if (v.ok === false) throw new PrivateBpffsError(pinPath, v.why);
  return v.ok === null ? v.why : null;
}
