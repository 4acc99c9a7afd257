/**
 * BpfMap: a map fd plus what the kernel says about it (bpf_obj_get_info_by_fd), and the
 * element operations on Buffers.
 *
 * Keys and values are raw bytes in the kernel's layout (src/kernel/layout.ts encodes them).
 * Every key/value Buffer must be exactly keySize/valueSize bytes long: the kernel reads that
 * many bytes from the pointer whatever the Buffer's length, so a short Buffer is refused here.
 * lookup() reads into a fresh Buffer (one small pooled allocation); lookupInto() reads into
 * the caller's Buffer and allocates nothing. No call allocates anything else.
 */
import { check, errnoNumber } from './errors.js';
import { closeFd, mapInfo } from './info.js';
import { BPF_ANY, MapType, bpf_map_batch_opts, libbpf, type Libbpf } from './libbpf.js';

export { BPF_ANY, BPF_EXIST, BPF_NOEXIST, BPF_F_LOCK, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, MapType } from './libbpf.js';

const ENOENT = errnoNumber('ENOENT');
const EINVAL = errnoNumber('EINVAL');
const EOPNOTSUPP = errnoNumber('EOPNOTSUPP');
const ENOTSUPP = errnoNumber('ENOTSUPP');

const PERCPU_TYPES = new Set<number>([MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, 21 /* PERCPU_CGROUP_STORAGE */]);
const ARRAY_TYPES = new Set<number>([MapType.ARRAY, MapType.PERCPU_ARRAY]);

let possibleCpus = 0;

/** libbpf_num_possible_cpus(), cached: the size of every per-CPU value array. */
export function numPossibleCpus(): number {
  if (possibleCpus === 0) possibleCpus = check(libbpf().libbpf_num_possible_cpus(), 'libbpf_num_possible_cpus');
  return possibleCpus;
}

/** Used by BpfObject to invalidate the maps it handed out when it is closed. */
export const INVALIDATE: unique symbol = Symbol('BpfMap.invalidate');

export interface FromFdOptions {
  /** close the fd in close() (false: the fd belongs to someone else, e.g. a BpfObject) */
  owned: boolean;
  /** name to use in messages; default: the kernel's name of the map (15 characters max) */
  name?: string;
}

export interface CreateMapOptions {
  flags?: number;
  innerMapFd?: number;
}

export class BpfMap {
  readonly id: number;
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  /** bytes of one lookup result: valueSize, or roundup(valueSize, 8) * possible CPUs */
  readonly lookupSize: number;

  private fdValue: number;
  private readonly owned: boolean;
  private readonly L: Libbpf;
  private readonly countBuf = new Uint32Array(1);

  private constructor(fd: number, owned: boolean, name: string | undefined) {
    this.L = libbpf();
    const info = mapInfo(fd, name ?? `fd ${fd}`);
    this.fdValue = fd;
    this.owned = owned;
    this.id = info.id;
    this.name = name ?? info.name;
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.flags = info.flags;
    this.lookupSize = this.isPerCpu ? roundUp8(info.valueSize) * numPossibleCpus() : info.valueSize;
  }

  /** Wrap an fd. With owned: true, close() closes it; the info query failing closes nothing. */
  static fromFd(fd: number, opts: FromFdOptions): BpfMap {
    return new BpfMap(fd, opts.owned, opts.name);
  }

  /** Open a pinned map (bpf_obj_get); the returned map owns its fd. */
  static openPinned(path: string): BpfMap {
    const fd = check(libbpf().bpf_obj_get(path), `bpf_obj_get(${path})`, { path });
    try {
      return new BpfMap(fd, true, undefined);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  /** Create a map (bpf_map_create); the returned map owns its fd. */
  static create(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, opts: CreateMapOptions = {}): BpfMap {
    const createOpts = {
      sz: 48,
      btf_fd: 0,
      btf_key_type_id: 0,
      btf_value_type_id: 0,
      btf_vmlinux_value_type_id: 0,
      inner_map_fd: opts.innerMapFd ?? 0,
      map_flags: opts.flags ?? 0,
      map_extra: 0,
      numa_node: 0,
      map_ifindex: 0,
    };
    const fd = check(libbpf().bpf_map_create(type, name, keySize, valueSize, maxEntries, createOpts), `bpf_map_create(${name})`);
    try {
      return new BpfMap(fd, true, name);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  get fd(): number {
    if (this.fdValue < 0) throw new Error(`map ${this.name} is closed`);
    return this.fdValue;
  }

  get closed(): boolean {
    return this.fdValue < 0;
  }

  get isPerCpu(): boolean {
    return PERCPU_TYPES.has(this.type);
  }

  /**
   * Fail loudly if the kernel's map does not have the key and value sizes this build was
   * compiled for (a pinned gate loaded from another knock.h).
   */
  expectSizes(keySize: number, valueSize: number): void {
    const wrong: string[] = [];
    if (this.keySize !== keySize) wrong.push(`key size is ${this.keySize} bytes in the kernel, ${keySize} expected`);
    if (this.valueSize !== valueSize) wrong.push(`value size is ${this.valueSize} bytes in the kernel, ${valueSize} expected`);
    if (wrong.length === 0) return;
    throw new MapLayoutError(
      this.name,
      { keySize: this.keySize, valueSize: this.valueSize },
      { keySize, valueSize },
      `map ${this.name}: ${wrong.join(', ')}: the pinned gate was built from another knock.h; ` +
        'run `knockgate detach` and start again',
    );
  }

  /** The value stored under key (a copy), or null if there is none. Per-CPU maps: all CPUs'
   * values back to back (see lookupPerCpu). */
  lookup(key: Buffer): Buffer | null {
    this.checkKey(key);
    const out = Buffer.allocUnsafe(this.lookupSize);
    const r = this.L.bpf_map_lookup_elem(this.fd, key, out);
    if (r === -ENOENT) return null;
    if (r < 0) check(r, `bpf_map_lookup_elem(${this.name})`);
    return out;
  }

  /** Like lookup(), into `out` (lookupSize bytes at least); false if there is no such key. */
  lookupInto(key: Buffer, out: Buffer): boolean {
    this.checkKey(key);
    if (out.length < this.lookupSize) throw new RangeError(`map ${this.name}: output buffer is ${out.length} bytes, ${this.lookupSize} needed`);
    const r = this.L.bpf_map_lookup_elem(this.fd, key, out);
    if (r === -ENOENT) return false;
    if (r < 0) check(r, `bpf_map_lookup_elem(${this.name})`);
    return true;
  }

  /** A per-CPU map's value on each possible CPU (valueSize bytes each, copies). */
  lookupPerCpu(key: Buffer): Buffer[] {
    if (!this.isPerCpu) throw new TypeError(`map ${this.name} is not a per-CPU map (type ${this.type})`);
    const all = this.lookup(key);
    if (all === null) return [];
    const stride = roundUp8(this.valueSize);
    const out: Buffer[] = [];
    for (let off = 0; off < all.length; off += stride) out.push(all.subarray(off, off + this.valueSize));
    return out;
  }

  /** Store value under key. flags: BPF_ANY (default), BPF_NOEXIST, BPF_EXIST. Per-CPU maps
   * take every CPU's value back to back (lookupSize bytes). */
  update(key: Buffer, value: Buffer, flags: number = BPF_ANY): void {
    this.checkKey(key);
    if (value.length !== this.lookupSize) {
      throw new RangeError(`map ${this.name}: value is ${value.length} bytes, the map's values are ${this.lookupSize}`);
    }
    const r = this.L.bpf_map_update_elem(this.fd, key, value, flags);
    if (r < 0) check(r, `bpf_map_update_elem(${this.name})`);
  }

  /** Delete key; false if it was not there. */
  delete(key: Buffer): boolean {
    this.checkKey(key);
    const r = this.L.bpf_map_delete_elem(this.fd, key);
    if (r === -ENOENT) return false;
    if (r < 0) check(r, `bpf_map_delete_elem(${this.name})`);
    return true;
  }

  /**
   * Every key, by bpf_map_get_next_key. The next key is fetched before the current one is
   * yielded, so the consumer may delete the key it was given. If the kernel loses its place
   * (the next key was deleted by someone else; hash maps then restart from the first bucket)
   * keys already yielded are not yielded again; the walk is bounded by 4 * maxEntries steps.
   */
  *keys(): Generator<Buffer, void, undefined> {
    const op = `bpf_map_get_next_key(${this.name})`;
    const ks = this.keySize;
    let cur = Buffer.alloc(ks);
    let r = this.L.bpf_map_get_next_key(this.fd, null, cur);
    if (r === -ENOENT) return;
    check(r, op);
    const dedupe = !ARRAY_TYPES.has(this.type);
    const seen = new Set<string>();
    for (let steps = 0; steps < 4 * this.maxEntries + 16; steps++) {
      const next = Buffer.alloc(ks);
      r = this.L.bpf_map_get_next_key(this.fd, cur, next);
      if (r < 0 && r !== -ENOENT) check(r, op);
      if (dedupe) {
        const id = cur.toString('latin1');
        if (!seen.has(id)) {
          seen.add(id);
          yield cur;
        }
      } else {
        yield cur;
      }
      if (r === -ENOENT) return;
      cur = next;
    }
  }

  /** Every [key, value] (copies); keys deleted while walking are skipped. */
  *entries(): Generator<[Buffer, Buffer], void, undefined> {
    for (const key of this.keys()) {
      const value = this.lookup(key);
      if (value !== null) yield [key, value];
    }
  }

  /**
   * Store `count` elements in one BPF_MAP_UPDATE_BATCH: keys and values packed back to back
   * (count * keySize and count * lookupSize bytes). Kernels or map types without batch
   * support (EINVAL, ENOTSUPP, EOPNOTSUPP) get one update per remaining element instead.
   * Returns count.
   */
  updateBatch(keys: Buffer, values: Buffer, count: number, flags: number = BPF_ANY): number {
    const ks = this.keySize;
    const vs = this.lookupSize;
    if (!Number.isInteger(count) || count < 0) throw new RangeError(`map ${this.name}: bad batch count ${count}`);
    if (keys.length < count * ks) throw new RangeError(`map ${this.name}: ${count} keys need ${count * ks} bytes, got ${keys.length}`);
    if (values.length < count * vs) throw new RangeError(`map ${this.name}: ${count} values need ${count * vs} bytes, got ${values.length}`);
    if (count === 0) return 0;
    this.countBuf[0] = count;
    const r = this.L.bpf_map_update_batch(this.fd, keys, values, this.countBuf, { sz: bpf_map_batch_opts.size, elem_flags: flags, flags: 0 });
    if (r >= 0) return count;
    if (r !== -EINVAL && r !== -ENOTSUPP && r !== -EOPNOTSUPP) check(r, `bpf_map_update_batch(${this.name})`);
    // The kernel writes back how many elements it stored only if its batch loop ran; when
    // the operation is refused up front, libbpf hands back our own count unchanged. A failed
    // batch never stored them all, so count == input means "nothing done".
    const reported = this.countBuf[0] ?? 0;
    const done = reported < count ? reported : 0;
    for (let i = done; i < count; i++) {
      const key = keys.subarray(i * ks, (i + 1) * ks);
      const r1 = this.L.bpf_map_update_elem(this.fd, key, values.subarray(i * vs, (i + 1) * vs), flags);
      if (r1 < 0) check(r1, `bpf_map_update_elem(${this.name}, batch element ${i})`);
    }
    return count;
  }

  /** Pin the map at path (bpf_obj_pin); the directory must exist on a bpf filesystem. */
  pin(path: string): void {
    check(this.L.bpf_obj_pin(this.fd, path), `bpf_obj_pin(${this.name})`, { path });
  }

  /** Close the fd if this map owns it; idempotent. */
  close(): void {
    const fd = this.fdValue;
    if (fd < 0) return;
    this.fdValue = -1;
    if (this.owned) closeFd(fd, `map ${this.name}`);
  }

  [INVALIDATE](): void {
    this.fdValue = -1;
  }

  private checkKey(key: Buffer): void {
    if (key.length !== this.keySize) {
      throw new RangeError(`map ${this.name}: key is ${key.length} bytes, the map's keys are ${this.keySize}`);
    }
  }
}

/** The kernel's map and this build disagree on key/value sizes. */
export class MapLayoutError extends Error {
  constructor(
    readonly map: string,
    readonly actual: { keySize: number; valueSize: number },
    readonly expected: { keySize: number; valueSize: number },
    message: string,
  ) {
    super(message);
    this.name = 'MapLayoutError';
  }
}

function roundUp8(n: number): number {
  return (n + 7) & ~7;
}

