/**
 * BpfObject: a BPF ELF object through libbpf's life cycle, open -> (set, reuse) -> load ->
 * (programs, maps) -> close.
 *
 * The object owns the fds of its maps and programs: maps handed out by map() do not own
 * theirs and become unusable when the object is closed. A failed load() closes the object
 * (libbpf would otherwise keep the ELF and every map created so far) and throws a BpfError
 * carrying libbpf's log of the attempt (the verifier log for a rejected program).
 */
import { BpfError, check, checkPtr } from './errors.js';
import { ProgType, libbpf, type Libbpf, type Ptr } from './libbpf.js';
import { captureLibbpfLog, installLibbpfPrint } from './log.js';
import { BpfMap, INVALIDATE } from './map.js';

export class BpfObject {
  private ptr: Ptr | null;
  private loaded = false;
  private readonly L: Libbpf;
  private readonly handedOut = new Map<string, BpfMap>();

  private constructor(
    readonly path: string,
    ptr: Ptr,
  ) {
    this.ptr = ptr;
    this.L = libbpf();
  }

  /** Open (parse) an ELF object; nothing reaches the kernel until load(). */
  static open(path: string): BpfObject {
    installLibbpfPrint();
    const log: string[] = [];
    const ptr = captureLibbpfLog(log, () => libbpf().bpf_object__open_file(path, null));
    return new BpfObject(path, checkPtr(ptr, `bpf_object__open_file(${path})`, { path, log }));
  }

  get isLoaded(): boolean {
    return this.loaded;
  }

  /** Names of the maps in the object (libbpf's names: internal maps are "<obj>.bss" etc.). */
  mapNames(): string[] {
    const out: string[] = [];
    for (let m = this.L.bpf_object__next_map(this.handle(), null); m !== null; m = this.L.bpf_object__next_map(this.handle(), m)) {
      out.push(this.L.bpf_map__name(m) ?? '?');
    }
    return out;
  }

  /** Names of the programs in the object. */
  programNames(): string[] {
    const out: string[] = [];
    for (let p = this.L.bpf_object__next_program(this.handle(), null); p !== null; p = this.L.bpf_object__next_program(this.handle(), p)) {
      out.push(this.L.bpf_program__name(p) ?? '?');
    }
    return out;
  }

  /** Size a map before load (for a ring buffer: bytes, a power of 2 multiple of the page size). */
  setMaxEntries(mapName: string, n: number): void {
    this.beforeLoad('setMaxEntries');
    check(this.L.bpf_map__set_max_entries(this.findMap(mapName), n), `bpf_map__set_max_entries(${mapName}, ${n})`);
  }

  /** The max_entries the map will be (or was) created with. */
  maxEntries(mapName: string): number {
    return this.L.bpf_map__max_entries(this.findMap(mapName));
  }

  /**
   * Make load() use an existing map (e.g. a pinned one) instead of creating this one
   * (bpf_map__reuse_fd). libbpf dups the fd: the caller keeps ownership of `fd`. libbpf does
   * not compare the two maps' layouts: check them with BpfMap.expectSizes first.
   */
  reuseMap(mapName: string, fd: number): void {
    this.beforeLoad('reuseMap');
    check(this.L.bpf_map__reuse_fd(this.findMap(mapName), fd), `bpf_map__reuse_fd(${mapName})`);
  }

  /**
   * Load program `name` as an freplace extension (BPF_PROG_TYPE_EXT) of function `targetFunc`
   * of the loaded program `targetFd`, instead of as the type its section names; the object's
   * other programs are not loaded. An extension runs in the place of a global function of
   * another program (libxdp's dispatcher slots) and can be linked to any target whose function
   * has the same prototype (kernel >= 5.10).
   */
  loadAsExtension(name: string, targetFd: number, targetFunc: string): void {
    this.beforeLoad('loadAsExtension');
    const L = this.L;
    for (let p = L.bpf_object__next_program(this.handle(), null); p !== null; p = L.bpf_object__next_program(this.handle(), p)) {
      const pname = L.bpf_program__name(p) ?? '?';
      if (pname !== name) {
        check(L.bpf_program__set_autoload(p, false), `bpf_program__set_autoload(${pname}, false)`);
        continue;
      }
      check(L.bpf_program__set_type(p, ProgType.EXT), `bpf_program__set_type(${name}, EXT)`);
      check(L.bpf_program__set_expected_attach_type(p, 0), `bpf_program__set_expected_attach_type(${name}, 0)`);
      check(L.bpf_program__set_attach_target(p, targetFd, targetFunc), `bpf_program__set_attach_target(${name}, ${targetFunc})`);
    }
    this.findProgram(name);
    this.load();
  }

  /** The libbpf `struct bpf_object *` (for libxdp, which takes the object itself). */
  get pointer(): Ptr {
    return this.handle();
  }

  /** Create the maps and load the programs into the kernel. On failure the object is closed. */
  load(): void {
    this.beforeLoad('load');
    const log: string[] = [];
    const ptr = this.handle();
    const ret = captureLibbpfLog(log, () => this.L.bpf_object__load(ptr));
    if (ret < 0) {
      this.close();
      throw new BpfError(`bpf_object__load(${this.path})`, -ret, { path: this.path, log });
    }
    this.loaded = true;
  }

  /** fd of a loaded program (owned by the object). */
  programFd(name: string): number {
    this.afterLoad('programFd');
    const prog = checkPtr(this.L.bpf_object__find_program_by_name(this.handle(), name), `bpf_object__find_program_by_name(${name})`, {
      hint: `${this.path} has no program named ${name} (it has: ${this.programNames().join(', ')})`,
    });
    return check(this.L.bpf_program__fd(prog), `bpf_program__fd(${name})`);
  }

  /** Pin a loaded program at path. */
  pinProgram(name: string, path: string): void {
    check(this.L.bpf_obj_pin(this.programFd(name), path), `bpf_obj_pin(${name})`, { path });
  }

  /**
   * A loaded map, by the name it has in the C source (".bss", ".rodata" and ".data" for the
   * globals). The returned BpfMap does not own its fd; closing it is harmless and the object
   * stays the owner. Repeated calls return the same BpfMap (a new one after it was closed).
   */
  map(name: string): BpfMap {
    this.afterLoad('map');
    const cached = this.handedOut.get(name);
    if (cached !== undefined && !cached.closed) return cached;
    const fd = check(this.L.bpf_map__fd(this.findMap(name)), `bpf_map__fd(${name})`);
    const m = BpfMap.fromFd(fd, { owned: false, name });
    this.handedOut.set(name, m);
    return m;
  }

  /** Free everything libbpf holds for the object (maps and programs stay alive only where
   * pinned, attached, or otherwise referenced); idempotent. */
  close(): void {
    const ptr = this.ptr;
    if (ptr === null) return;
    this.ptr = null;
    for (const m of this.handedOut.values()) m[INVALIDATE]();
    this.handedOut.clear();
    this.L.bpf_object__close(ptr);
  }

  private handle(): Ptr {
    if (this.ptr === null) throw new Error(`BPF object ${this.path} is closed`);
    return this.ptr;
  }

  private findProgram(name: string): Ptr {
    return checkPtr(this.L.bpf_object__find_program_by_name(this.handle(), name), `bpf_object__find_program_by_name(${name})`, {
      hint: `${this.path} has no program named ${name} (it has: ${this.programNames().join(', ')})`,
    });
  }

  private findMap(name: string): Ptr {
    return checkPtr(this.L.bpf_object__find_map_by_name(this.handle(), name), `bpf_object__find_map_by_name(${name})`, {
      hint: `${this.path} has no map named ${name} (it has: ${this.mapNames().join(', ')})`,
    });
  }

  private beforeLoad(what: string): void {
    this.handle();
    if (this.loaded) throw new Error(`BPF object ${this.path}: ${what}() must come before load()`);
  }

  private afterLoad(what: string): void {
    this.handle();
    if (!this.loaded) throw new Error(`BPF object ${this.path}: ${what}() needs load() first`);
  }
}
