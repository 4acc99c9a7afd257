/**
 * Pins: where a gate outlives its process. ensureBpffs() makes sure a pin directory is on a
 * bpf filesystem (mounting one on its parent if needed, as bpftool does); the rest are small
 * helpers to create and remove pins and pin directories.
 */
import { mkdirSync, rmSync, unlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import koffi from 'koffi';
import { BpfError } from './errors.js';
import { BPF_FS_MAGIC, libc } from './libbpf.js';

const statfsBuf = Buffer.alloc(256); // struct statfs is 120 bytes on x86_64 and arm64

/** True if path exists and is on a bpf filesystem (statfs f_type == BPF_FS_MAGIC). */
export function isBpffs(path: string): boolean {
  if (libc().statfs(path, statfsBuf) !== 0) return false;
  // f_type is the first member, a long: its low 32 bits hold the magic on little-endian hosts
  return statfsBuf.readUInt32LE(0) === BPF_FS_MAGIC;
}

/**
 * Make `dir` a directory on a bpf filesystem: if its parent is not on one, mount a bpffs
 * there (`mount -t bpf bpf PARENT`, mode 0700), then create `dir` (mode 0700).
 */
export function ensureBpffs(dir: string): void {
  const abs = resolve(dir);
  if (isBpffs(abs)) return;
  const parent = dirname(abs);
  if (!isBpffs(parent)) {
    mkdirSync(parent, { recursive: true, mode: 0o700 });
    if (libc().mount('bpf', parent, 'bpf', 0, 'mode=0700') !== 0) {
      throw new BpfError(`mount(bpf, ${parent})`, koffi.errno(), {
        path: parent,
        hint: `${parent} is not on a bpf filesystem and mounting one there failed: run as root, or mount it yourself (\`mount -t bpf bpf ${parent}\`)`,
      });
    }
  }
  mkdirSync(abs, { recursive: true, mode: 0o700 });
}

/** Remove a pin (the object lives on while something else holds it); false if there was none. */
export function unpin(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Create a pin directory (and its parents) on a bpf filesystem. */
export function makePinDir(dir: string): void {
  ensureBpffs(dir);
}

/** Remove a pin directory and every pin under it; nothing if it does not exist. */
export function removePinTree(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
