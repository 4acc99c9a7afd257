/**
 * Raw koffi declarations of libbpf.so.1 (written against libbpf 1.1.2, Debian 12) and of the
 * few libc functions the binding needs. Nothing here checks errors or owns resources: the
 * modules next to this one do (errors.ts, object.ts, map.ts, ...).
 *
 * Conventions (libbpf 1.x, always "strict"): functions returning int return >= 0 on success
 * and -errno on failure; functions returning a pointer return NULL and set errno. Pointers
 * are koffi 3 BigInts. Every opts struct mirrors the 1.1.2 header layout (explicit padding
 * where C has `size_t :0`); test/kernel/binding.test.ts checks each size against a C oracle.
 *
 * The libraries are loaded on first use, so that importing the binding on a machine without
 * libbpf fails only when a BPF operation is actually attempted, with a clear message.
 */
import koffi, { type LibraryHandle } from 'koffi';

/** A native pointer as koffi 3 represents it. */
export type Ptr = bigint;

// ---- constants (UAPI linux/bpf.h, linux/if_link.h, libbpf.h) -----------------------------

/** bpf_map_update_elem flags */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const BPF_F_LOCK = 4;

/** map_flags */
export const BPF_F_NO_PREALLOC = 1 << 0;
export const BPF_F_RDONLY_PROG = 1 << 7;
export const BPF_F_MMAPABLE = 1 << 10;

/** enum bpf_map_type (the ones knockgate meets) */
export const MapType = {
  UNSPEC: 0,
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERF_EVENT_ARRAY: 4,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  STACK_TRACE: 7,
  CGROUP_ARRAY: 8,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  ARRAY_OF_MAPS: 12,
  HASH_OF_MAPS: 13,
  DEVMAP: 14,
  RINGBUF: 27,
} as const;

/** enum bpf_prog_type */
export const ProgType = { XDP: 6, EXT: 28 } as const;

/** enum bpf_attach_type */
export const BPF_XDP = 37;

/** XDP attach flags (linux/if_link.h) */
export const XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0;
export const XDP_FLAGS_SKB_MODE = 1 << 1;
export const XDP_FLAGS_DRV_MODE = 1 << 2;
export const XDP_FLAGS_HW_MODE = 1 << 3;
export const XDP_FLAGS_REPLACE = 1 << 4;

/** enum XDP_ATTACHED_* as reported by bpf_xdp_query() in attach_mode */
export const XDP_ATTACHED_NONE = 0;
export const XDP_ATTACHED_DRV = 1;
export const XDP_ATTACHED_SKB = 2;
export const XDP_ATTACHED_HW = 3;
export const XDP_ATTACHED_MULTI = 4;

/** enum libbpf_print_level */
export const LIBBPF_WARN = 0;
export const LIBBPF_INFO = 1;
export const LIBBPF_DEBUG = 2;

/** BPF_OBJ_NAME_LEN */
export const BPF_OBJ_NAME_LEN = 16;

/** statfs f_type of a bpf filesystem */
export const BPF_FS_MAGIC = 0xcafe4a11;

/** mmap(2) */
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;

// ---- types ------------------------------------------------------------------------------

export const bpf_object = koffi.opaque('bpf_object');
export const bpf_map = koffi.opaque('bpf_map');
export const bpf_program = koffi.opaque('bpf_program');
export const ring_buffer = koffi.opaque('ring_buffer');

/** `int (*)(enum libbpf_print_level, const char *fmt, va_list ap)`; va_list arrives as a
 * pointer on x86_64 and arm64 (see log.ts), fmt is kept a raw pointer for vsnprintf. */
export const libbpf_print_fn = koffi.proto('int libbpf_print_fn(int level, const void *fmt, void *ap)');

/** `int (*)(void *ctx, void *data, size_t size)` */
export const ring_buffer_sample_fn = koffi.proto('int ring_buffer_sample_fn(void *ctx, void *data, size_t size)');

const pad = (n: number) => koffi.array('uint8_t', n);

/** bpf.h: struct bpf_map_batch_opts */
export const bpf_map_batch_opts = koffi.struct('bpf_map_batch_opts', {
  sz: 'size_t',
  elem_flags: 'uint64_t',
  flags: 'uint64_t',
});

/** bpf.h: struct bpf_map_create_opts (1.1.2: ends at map_ifindex) */
export const bpf_map_create_opts = koffi.struct('bpf_map_create_opts', {
  sz: 'size_t',
  btf_fd: 'uint32_t',
  btf_key_type_id: 'uint32_t',
  btf_value_type_id: 'uint32_t',
  btf_vmlinux_value_type_id: 'uint32_t',
  inner_map_fd: 'uint32_t',
  map_flags: 'uint32_t',
  map_extra: 'uint64_t',
  numa_node: 'uint32_t',
  map_ifindex: 'uint32_t',
});

/** bpf.h: struct bpf_link_create_opts. The union (perf_event / kprobe_multi / tracing) is
 * kept as raw words: XDP links use none of it. */
export const bpf_link_create_opts = koffi.struct('bpf_link_create_opts', {
  sz: 'size_t',
  flags: 'uint32_t',
  iter_info: 'void *',
  iter_info_len: 'uint32_t',
  target_btf_id: 'uint32_t',
  target: koffi.array('uint64_t', 4), // union { perf_event; kprobe_multi; tracing }
});

/** bpf.h: struct bpf_link_update_opts */
export const bpf_link_update_opts = koffi.struct('bpf_link_update_opts', {
  sz: 'size_t',
  flags: 'uint32_t',
  old_prog_fd: 'uint32_t',
});

/** libbpf.h: struct bpf_xdp_query_opts (all outputs) */
export const bpf_xdp_query_opts = koffi.struct('bpf_xdp_query_opts', {
  sz: 'size_t',
  prog_id: 'uint32_t',
  drv_prog_id: 'uint32_t',
  hw_prog_id: 'uint32_t',
  skb_prog_id: 'uint32_t',
  attach_mode: 'uint8_t',
  _pad: pad(7), // size_t :0
});

/** bpf.h: struct bpf_test_run_opts (1.1.2 layout: data pointers first, then sizes) */
export const bpf_test_run_opts = koffi.struct('bpf_test_run_opts', {
  sz: 'size_t',
  data_in: 'void *',
  data_out: 'void *',
  data_size_in: 'uint32_t',
  data_size_out: 'uint32_t',
  ctx_in: 'void *',
  ctx_out: 'void *',
  ctx_size_in: 'uint32_t',
  ctx_size_out: 'uint32_t',
  retval: 'uint32_t',
  repeat: 'int',
  duration: 'uint32_t',
  flags: 'uint32_t',
  cpu: 'uint32_t',
  batch_size: 'uint32_t',
});

/** linux/bpf.h: struct bpf_map_info (UAPI of the 6.1 headers; the kernel accepts shorter
 * and longer buffers and fills what both know). */
export const bpf_map_info = koffi.struct('bpf_map_info', {
  type: 'uint32_t',
  id: 'uint32_t',
  key_size: 'uint32_t',
  value_size: 'uint32_t',
  max_entries: 'uint32_t',
  map_flags: 'uint32_t',
  name: koffi.array('char', BPF_OBJ_NAME_LEN),
  ifindex: 'uint32_t',
  btf_vmlinux_value_type_id: 'uint32_t',
  netns_dev: 'uint64_t',
  netns_ino: 'uint64_t',
  btf_id: 'uint32_t',
  btf_key_type_id: 'uint32_t',
  btf_value_type_id: 'uint32_t',
  _pad: 'uint32_t',
  map_extra: 'uint64_t',
});

/** linux/bpf.h: struct bpf_prog_info. Only type/id/name are read; pointer members stay 0
 * so the kernel copies no arrays out. */
export const bpf_prog_info = koffi.struct('bpf_prog_info', {
  type: 'uint32_t',
  id: 'uint32_t',
  tag: koffi.array('uint8_t', 8),
  jited_prog_len: 'uint32_t',
  xlated_prog_len: 'uint32_t',
  jited_prog_insns: 'uint64_t',
  xlated_prog_insns: 'uint64_t',
  load_time: 'uint64_t',
  created_by_uid: 'uint32_t',
  nr_map_ids: 'uint32_t',
  map_ids: 'uint64_t',
  name: koffi.array('char', BPF_OBJ_NAME_LEN),
  ifindex: 'uint32_t',
  gpl_compatible: 'uint32_t', // bit 0
  netns_dev: 'uint64_t',
  netns_ino: 'uint64_t',
  nr_jited_ksyms: 'uint32_t',
  nr_jited_func_lens: 'uint32_t',
  jited_ksyms: 'uint64_t',
  jited_func_lens: 'uint64_t',
  btf_id: 'uint32_t',
  func_info_rec_size: 'uint32_t',
  func_info: 'uint64_t',
  nr_func_info: 'uint32_t',
  nr_line_info: 'uint32_t',
  line_info: 'uint64_t',
  jited_line_info: 'uint64_t',
  nr_jited_line_info: 'uint32_t',
  line_info_rec_size: 'uint32_t',
  jited_line_info_rec_size: 'uint32_t',
  nr_prog_tags: 'uint32_t',
  prog_tags: 'uint64_t',
  run_time_ns: 'uint64_t',
  run_cnt: 'uint64_t',
  recursion_misses: 'uint64_t',
  verified_insns: 'uint32_t',
  attach_btf_obj_id: 'uint32_t',
  attach_btf_id: 'uint32_t',
  _pad: 'uint32_t',
});

/** linux/bpf.h: struct bpf_link_info, head plus the xdp member of its union (the kernel
 * copies min(len, sizeof) bytes, so the short form is enough). */
export const bpf_link_info_xdp = koffi.struct('bpf_link_info_xdp', {
  type: 'uint32_t',
  id: 'uint32_t',
  prog_id: 'uint32_t',
  _pad: 'uint32_t',
  ifindex: 'uint32_t', // union { ... struct { __u32 ifindex; } xdp; ... }
  _pad2: 'uint32_t',
});

// ---- shapes of the structs as JS objects ------------------------------------------------

export interface BpfMapInfoRaw {
  type: number;
  id: number;
  key_size: number;
  value_size: number;
  max_entries: number;
  map_flags: number;
  name: string;
}

export interface BpfProgInfoRaw {
  type: number;
  id: number;
  name: string;
}

export interface BpfLinkInfoRaw {
  type: number;
  id: number;
  prog_id: number;
  ifindex: number;
}

export interface XdpQueryOptsRaw {
  sz: number;
  prog_id: number;
  drv_prog_id: number;
  hw_prog_id: number;
  skb_prog_id: number;
  attach_mode: number;
  _pad?: number[];
}

export interface TestRunOptsRaw {
  sz: number;
  data_in: Buffer | null;
  data_out: Buffer | null;
  data_size_in: number;
  data_size_out: number;
  ctx_in: Buffer | null;
  ctx_out: Buffer | null;
  ctx_size_in: number;
  ctx_size_out: number;
  retval: number;
  repeat: number;
  duration: number;
  flags: number;
  cpu: number;
  batch_size: number;
}

// ---- functions --------------------------------------------------------------------------

/** Bytes: anything koffi passes to a `void *` as a pointer to its memory, without copy. */
type Bytes = Buffer | Uint8Array;

function declareLibbpf(lib: LibraryHandle) {
  const f = <T>(decl: string): T => lib.func(decl) as unknown as T;
  return {
    // bpf_object / bpf_map / bpf_program (libbpf.h)
    bpf_object__open_file: f<(path: string, opts: null) => Ptr | null>(
      'bpf_object *bpf_object__open_file(const char *path, const void *opts)',
    ),
    bpf_object__load: f<(obj: Ptr) => number>('int bpf_object__load(bpf_object *obj)'),
    bpf_object__close: f<(obj: Ptr) => void>('void bpf_object__close(bpf_object *obj)'),
    bpf_object__name: f<(obj: Ptr) => string | null>('const char *bpf_object__name(const bpf_object *obj)'),
    bpf_object__find_map_by_name: f<(obj: Ptr, name: string) => Ptr | null>(
      'bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)',
    ),
    bpf_object__find_program_by_name: f<(obj: Ptr, name: string) => Ptr | null>(
      'bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)',
    ),
    bpf_object__next_map: f<(obj: Ptr, prev: Ptr | null) => Ptr | null>(
      'bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)',
    ),
    bpf_object__next_program: f<(obj: Ptr, prev: Ptr | null) => Ptr | null>(
      'bpf_program *bpf_object__next_program(const bpf_object *obj, bpf_program *prog)',
    ),
    bpf_map__fd: f<(map: Ptr) => number>('int bpf_map__fd(const bpf_map *map)'),
    bpf_map__name: f<(map: Ptr) => string | null>('const char *bpf_map__name(const bpf_map *map)'),
    bpf_map__type: f<(map: Ptr) => number>('int bpf_map__type(const bpf_map *map)'),
    bpf_map__is_internal: f<(map: Ptr) => boolean>('bool bpf_map__is_internal(const bpf_map *map)'),
    bpf_map__set_max_entries: f<(map: Ptr, n: number) => number>(
      'int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)',
    ),
    bpf_map__max_entries: f<(map: Ptr) => number>('uint32_t bpf_map__max_entries(const bpf_map *map)'),
    bpf_map__key_size: f<(map: Ptr) => number>('uint32_t bpf_map__key_size(const bpf_map *map)'),
    bpf_map__value_size: f<(map: Ptr) => number>('uint32_t bpf_map__value_size(const bpf_map *map)'),
    bpf_map__set_pin_path: f<(map: Ptr, path: string | null) => number>(
      'int bpf_map__set_pin_path(bpf_map *map, const char *path)',
    ),
    bpf_map__reuse_fd: f<(map: Ptr, fd: number) => number>('int bpf_map__reuse_fd(bpf_map *map, int fd)'),
    bpf_program__fd: f<(prog: Ptr) => number>('int bpf_program__fd(const bpf_program *prog)'),
    bpf_program__name: f<(prog: Ptr) => string | null>('const char *bpf_program__name(const bpf_program *prog)'),
    bpf_program__set_type: f<(prog: Ptr, type: number) => number>(
      'int bpf_program__set_type(bpf_program *prog, int type)',
    ),
    bpf_program__set_expected_attach_type: f<(prog: Ptr, type: number) => number>(
      'int bpf_program__set_expected_attach_type(bpf_program *prog, int type)',
    ),
    bpf_program__set_attach_target: f<(prog: Ptr, attachProgFd: number, funcName: string) => number>(
      'int bpf_program__set_attach_target(bpf_program *prog, int attach_prog_fd, const char *attach_func_name)',
    ),
    bpf_program__set_autoload: f<(prog: Ptr, autoload: boolean) => number>(
      'int bpf_program__set_autoload(bpf_program *prog, bool autoload)',
    ),

    // low-level syscall wrappers (bpf.h)
    bpf_obj_pin: f<(fd: number, path: string) => number>('int bpf_obj_pin(int fd, const char *pathname)'),
    bpf_obj_get: f<(path: string) => number>('int bpf_obj_get(const char *pathname)'),
    bpf_map_lookup_elem: f<(fd: number, key: Bytes | null, value: Bytes) => number>(
      'int bpf_map_lookup_elem(int fd, const void *key, void *value)',
    ),
    bpf_map_update_elem: f<(fd: number, key: Bytes | null, value: Bytes, flags: number) => number>(
      'int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)',
    ),
    bpf_map_delete_elem: f<(fd: number, key: Bytes) => number>('int bpf_map_delete_elem(int fd, const void *key)'),
    bpf_map_get_next_key: f<(fd: number, key: Bytes | null, next: Bytes) => number>(
      'int bpf_map_get_next_key(int fd, const void *key, void *next_key)',
    ),
    bpf_map_lookup_batch: f<
      (
        fd: number,
        inBatch: Bytes | null,
        outBatch: Bytes,
        keys: Bytes,
        values: Bytes,
        count: Uint32Array,
        opts: object | null,
      ) => number
    >(
      'int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, ' +
        'uint32_t *count, const bpf_map_batch_opts *opts)',
    ),
    bpf_map_update_batch: f<
      (fd: number, keys: Bytes, values: Bytes, count: Uint32Array, opts: object | null) => number
    >(
      'int bpf_map_update_batch(int fd, const void *keys, const void *values, uint32_t *count, ' +
        'const bpf_map_batch_opts *opts)',
    ),
    bpf_map_create: f<
      (type: number, name: string | null, keySize: number, valueSize: number, maxEntries: number, opts: object | null) => number
    >(
      'int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, ' +
        'uint32_t max_entries, const bpf_map_create_opts *opts)',
    ),
    bpf_obj_get_info_by_fd: f<(fd: number, info: Bytes, len: Uint32Array) => number>(
      'int bpf_obj_get_info_by_fd(int bpf_fd, void *info, uint32_t *info_len)',
    ),
    bpf_prog_get_fd_by_id: f<(id: number) => number>('int bpf_prog_get_fd_by_id(uint32_t id)'),
    bpf_map_get_fd_by_id: f<(id: number) => number>('int bpf_map_get_fd_by_id(uint32_t id)'),
    bpf_link_create: f<(progFd: number, targetFd: number, attachType: number, opts: object | null) => number>(
      'int bpf_link_create(int prog_fd, int target_fd, int attach_type, const bpf_link_create_opts *opts)',
    ),
    bpf_link_update: f<(linkFd: number, newProgFd: number, opts: object | null) => number>(
      'int bpf_link_update(int link_fd, int new_prog_fd, const bpf_link_update_opts *opts)',
    ),
    bpf_link_detach: f<(linkFd: number) => number>('int bpf_link_detach(int link_fd)'),
    bpf_xdp_query: f<(ifindex: number, flags: number, opts: XdpQueryOptsRaw) => number>(
      'int bpf_xdp_query(int ifindex, int flags, _Inout_ bpf_xdp_query_opts *opts)',
    ),
    bpf_prog_test_run_opts: f<(progFd: number, opts: TestRunOptsRaw) => number>(
      'int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)',
    ),

    // ring buffer (libbpf.h)
    ring_buffer__new: f<(mapFd: number, cb: Ptr, ctx: null, opts: null) => Ptr | null>(
      'ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn *sample_cb, void *ctx, const void *opts)',
    ),
    ring_buffer__consume: f<(rb: Ptr) => number>('int ring_buffer__consume(ring_buffer *rb)'),
    ring_buffer__epoll_fd: f<(rb: Ptr) => number>('int ring_buffer__epoll_fd(const ring_buffer *rb)'),
    ring_buffer__free: f<(rb: Ptr) => void>('void ring_buffer__free(ring_buffer *rb)'),

    // misc
    libbpf_set_print: f<(fn: Ptr | null) => Ptr | null>('void *libbpf_set_print(libbpf_print_fn *fn)'),
    libbpf_num_possible_cpus: f<() => number>('int libbpf_num_possible_cpus(void)'),
  };
}

function declareLibc(lib: LibraryHandle) {
  const f = <T>(decl: string): T => lib.func(decl) as unknown as T;
  return {
    mmap: f<(addr: null, length: number, prot: number, flags: number, fd: number, offset: number) => Ptr | null>(
      'void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)',
    ),
    munmap: f<(addr: Ptr, length: number) => number>('int munmap(void *addr, size_t length)'),
    close: f<(fd: number) => number>('int close(int fd)'),
    getpagesize: f<() => number>('int getpagesize(void)'),
    if_nametoindex: f<(name: string) => number>('unsigned int if_nametoindex(const char *ifname)'),
    if_indextoname: f<(index: number, buf: Buffer) => Ptr | null>('void *if_indextoname(unsigned int ifindex, void *ifname)'),
    strerror: f<(errnum: number) => string>('const char *strerror(int errnum)'),
    vsnprintf: f<(buf: Buffer, size: number, fmt: Ptr, ap: Ptr | Buffer) => number>(
      'int vsnprintf(void *str, size_t size, const void *format, void *ap)',
    ),
    statfs: f<(path: string, buf: Buffer) => number>('int statfs(const char *path, void *buf)'),
    clock_gettime: f<(clock: number, ts: Buffer) => number>('int clock_gettime(int clockid, void *tp)'),
    mount: f<(source: string, target: string, fstype: string, flags: number, data: string | null) => number>(
      'int mount(const char *source, const char *target, const char *filesystemtype, unsigned long mountflags, const char *data)',
    ),
  };
}

export type Libbpf = ReturnType<typeof declareLibbpf>;
export type Libc = ReturnType<typeof declareLibc>;

let libbpfApi: Libbpf | undefined;
let libcApi: Libc | undefined;

/** libbpf.so.1, loaded and declared on first use. */
export function libbpf(): Libbpf {
  if (libbpfApi === undefined) {
    let handle: LibraryHandle;
    try {
      handle = koffi.load('libbpf.so.1');
    } catch (err) {
      throw new Error(
        `cannot load libbpf.so.1 (${(err as Error).message}): install libbpf 1.x ` +
          '(Debian/Ubuntu: `apt install libbpf1`, Fedora: `dnf install libbpf`)',
      );
    }
    libbpfApi = declareLibbpf(handle);
  }
  return libbpfApi;
}

/** The C library, loaded and declared on first use. */
export function libc(): Libc {
  if (libcApi === undefined) libcApi = declareLibc(koffi.load('libc.so.6'));
  return libcApi;
}
