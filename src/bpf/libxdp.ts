/**
 * libxdp.so.1 (xdp-tools' multi-program dispatcher library, written against libxdp 1.3.1,
 * Debian 12's libxdp1), through koffi: the raw declarations, then the typed layer the gate uses
 * (XdpProgram, XdpMultiprog) whose failures are BpfErrors carrying the operation, the errno and
 * what to do.
 *
 * How libxdp shares an interface (lib/libxdp/libxdp.c): one "dispatcher" XDP program is attached
 * to the interface through netlink; each component program is an freplace extension
 * (BPF_PROG_TYPE_EXT) linked (bpf_link) into one of the dispatcher's slots, run by ascending
 * priority, the chain going on only after the actions a program's chain-call bitmap names. Adding
 * or removing a program builds a new dispatcher with the new set, relinks every component into it,
 * and swaps it in atomically (netlink XDP_FLAGS_REPLACE with the old dispatcher's fd, retried when
 * another tool raced us). The links and programs are pinned under
 * <bpffs>/xdp/dispatch-<ifindex>-<dispatcher id>/prog<N>-{link,prog} ($LIBXDP_BPFFS overrides
 * <bpffs>, default /sys/fs/bpf), under an flock of <bpffs>/xdp: they, and the netlink attachment,
 * outlive the process that made them. Priority and chain-call actions come from the program's BTF
 * (XDP_RUN_CONFIG) and can be set only before the program is loaded; those of programs already in
 * a dispatcher come from the dispatcher's config.
 *
 * Conventions: int functions return >= 0 or -errno; pointer functions return NULL or an
 * ERR_PTR-encoded error, which libxdp_get_error() turns into -errno. The library is loaded on
 * first use, so a machine without libxdp fails only when the dispatcher is asked for.
 */
import koffi, { type LibraryHandle } from 'koffi';
import { BpfError, errnoNumber, type BpfErrorDetails } from './errors.js';
import { bpf_object, type Ptr, type TestRunOptsRaw } from './libbpf.js';
import { captureLibbpfLog, printCallback } from './log.js';
import { testRunOpts } from './testrun.js';

// ---- constants (xdp/libxdp.h, xdp/prog_dispatcher.h, linux/bpf.h) ---------------------------

/** enum xdp_attach_mode */
export const XDP_MODE_UNSPEC = 0;
export const XDP_MODE_NATIVE = 1;
export const XDP_MODE_SKB = 2;
export const XDP_MODE_HW = 3;

/** enum xdp_action */
export const XdpAction = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;
export const XDP_ACTION_NAMES = ['XDP_ABORTED', 'XDP_DROP', 'XDP_PASS', 'XDP_TX', 'XDP_REDIRECT'] as const;

/** MAX_DISPATCHER_ACTIONS: programs one dispatcher holds */
export const MAX_DISPATCHER_PROGRAMS = 10;
/** XDP_DEFAULT_RUN_PRIO: a program without a run config */
export const XDP_DEFAULT_RUN_PRIO = 50;

export const xdp_program = koffi.opaque('xdp_program');
export const xdp_multiprog = koffi.opaque('xdp_multiprog');

/** libxdp.h: struct xdp_program_opts (1.3.x) */
export const xdp_program_opts = koffi.struct('xdp_program_opts', {
  sz: 'size_t',
  obj: koffi.pointer(bpf_object),
  opts: 'void *',
  prog_name: 'const char *',
  find_filename: 'const char *',
  open_filename: 'const char *',
  pin_path: 'const char *',
  id: 'uint32_t',
  fd: 'int',
});

export interface XdpProgramOptsRaw {
  sz: number;
  obj: Ptr | null;
  opts: null;
  prog_name: string | null;
  find_filename: string | null;
  open_filename: string | null;
  pin_path: string | null;
  id: number;
  fd: number;
}

function declareLibxdp(lib: LibraryHandle) {
  const f = <T>(decl: string): T => lib.func(decl) as unknown as T;
  return {
    libxdp_get_error: f<(ptr: Ptr | null) => number>('long libxdp_get_error(const void *ptr)'),
    libxdp_strerror: f<(err: number, buf: Buffer, size: number) => number>('int libxdp_strerror(int err, void *buf, size_t size)'),
    libxdp_set_print: f<(fn: Ptr | null) => Ptr | null>('void *libxdp_set_print(void *fn)'),

    xdp_program__create: f<(opts: XdpProgramOptsRaw) => Ptr | null>('xdp_program *xdp_program__create(xdp_program_opts *opts)'),
    xdp_program__from_id: f<(id: number) => Ptr | null>('xdp_program *xdp_program__from_id(uint32_t prog_id)'),
    xdp_program__close: f<(prog: Ptr) => void>('void xdp_program__close(xdp_program *prog)'),
    xdp_program__name: f<(prog: Ptr) => string | null>('const char *xdp_program__name(const xdp_program *prog)'),
    xdp_program__id: f<(prog: Ptr) => number>('uint32_t xdp_program__id(const xdp_program *prog)'),
    xdp_program__fd: f<(prog: Ptr) => number>('int xdp_program__fd(const xdp_program *prog)'),
    xdp_program__run_prio: f<(prog: Ptr) => number>('unsigned int xdp_program__run_prio(const xdp_program *prog)'),
    xdp_program__set_run_prio: f<(prog: Ptr, prio: number) => number>(
      'int xdp_program__set_run_prio(xdp_program *prog, unsigned int run_prio)',
    ),
    xdp_program__chain_call_enabled: f<(prog: Ptr, action: number) => boolean>(
      'bool xdp_program__chain_call_enabled(const xdp_program *prog, int action)',
    ),
    xdp_program__test_run: f<(prog: Ptr, opts: TestRunOptsRaw, flags: number) => number>(
      'int xdp_program__test_run(xdp_program *prog, _Inout_ bpf_test_run_opts *opts, unsigned int flags)',
    ),
    xdp_program__attach: f<(prog: Ptr, ifindex: number, mode: number, flags: number) => number>(
      'int xdp_program__attach(xdp_program *prog, int ifindex, int mode, unsigned int flags)',
    ),
    xdp_program__detach_multi: f<(progs: Ptr[], n: number, ifindex: number, mode: number, flags: number) => number>(
      'int xdp_program__detach_multi(xdp_program **progs, size_t num_progs, int ifindex, int mode, unsigned int flags)',
    ),

    xdp_multiprog__get_from_ifindex: f<(ifindex: number) => Ptr | null>('xdp_multiprog *xdp_multiprog__get_from_ifindex(int ifindex)'),
    xdp_multiprog__next_prog: f<(prog: Ptr | null, mp: Ptr) => Ptr | null>(
      'xdp_program *xdp_multiprog__next_prog(const xdp_program *prog, const xdp_multiprog *mp)',
    ),
    xdp_multiprog__close: f<(mp: Ptr) => void>('void xdp_multiprog__close(xdp_multiprog *mp)'),
    xdp_multiprog__attach_mode: f<(mp: Ptr) => number>('int xdp_multiprog__attach_mode(const xdp_multiprog *mp)'),
    xdp_multiprog__main_prog: f<(mp: Ptr) => Ptr | null>('xdp_program *xdp_multiprog__main_prog(const xdp_multiprog *mp)'),
    xdp_multiprog__hw_prog: f<(mp: Ptr) => Ptr | null>('xdp_program *xdp_multiprog__hw_prog(const xdp_multiprog *mp)'),
    xdp_multiprog__is_legacy: f<(mp: Ptr) => boolean>('bool xdp_multiprog__is_legacy(const xdp_multiprog *mp)'),
  };
}

export type Libxdp = ReturnType<typeof declareLibxdp>;

let api: Libxdp | undefined;
let loadError: string | undefined;

/** Why libxdp.so.1 cannot be used here, or null when it can (loads it). */
export function libxdpUnavailable(): string | null {
  try {
    libxdp();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** libxdp.so.1, loaded and declared on first use (its messages go where libbpf's go). */
export function libxdp(): Libxdp {
  if (api !== undefined) return api;
  if (loadError !== undefined) throw new Error(loadError);
  let handle: LibraryHandle;
  try {
    handle = koffi.load('libxdp.so.1');
  } catch (err) {
    loadError =
      `cannot load libxdp.so.1 (${(err as Error).message}): install libxdp 1.3 or newer ` +
      '(Debian/Ubuntu: `apt install libxdp1 xdp-tools`, Fedora: `dnf install libxdp xdp-tools`)';
    throw new Error(loadError);
  }
  api = declareLibxdp(handle);
  api.libxdp_set_print(printCallback());
  return api;
}

// ---- errors -------------------------------------------------------------------------------

/** What to do after a failed libxdp call, by errno name ('' when nothing useful is known). */
function libxdpHint(op: string, code: string): string {
  switch (code) {
    case 'EOPNOTSUPP':
    case 'ENOTSUPP':
      return "this kernel cannot run libxdp's dispatcher (it needs freplace programs that can be relinked, Linux >= 5.10 with BTF), or the dispatcher on the interface is newer than this libxdp";
    case 'E2BIG':
      return `the interface's dispatcher already holds ${MAX_DISPATCHER_PROGRAMS} programs: unload one (\`xdp-loader status\`, \`xdp-loader unload\`)`;
    case 'EBUSY':
    case 'EEXIST':
      if (op.startsWith('xdp_program__attach')) {
        return 'the interface holds an XDP program that libxdp does not manage (or kept changing while we tried): see `xdp-loader status`';
      }
      return '';
    case 'ENOENT':
      if (op.startsWith('xdp_program__detach')) return 'the program is no longer in the interface\'s dispatcher';
      if (op.includes('find') || op.includes('test_run') || op.startsWith('xdp_program__attach')) {
        return "libxdp's xdp-dispatcher.o was not found, or no bpf filesystem is mounted at /sys/fs/bpf ($LIBXDP_BPFFS): install xdp-tools' libxdp1 and mount bpffs";
      }
      return '';
    case 'EPERM':
      return 'run as root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)';
    default:
      return '';
  }
}

function libxdpError(op: string, err: number, details: BpfErrorDetails = {}): BpfError {
  const errno = Math.abs(err) || errnoNumber('EINVAL');
  const hint = details.hint ?? libxdpHint(op, new BpfError(op, errno).code);
  return new BpfError(op, errno, { ...details, ...(hint ? { hint } : {}) });
}

function checkXdp(ret: number, op: string, log?: string[]): number {
  if (ret >= 0) return ret;
  throw libxdpError(op, ret, log !== undefined ? { log } : {});
}

/** A libxdp pointer return: the pointer, or a BpfError (NULL + errno or an ERR_PTR). */
function checkXdpPtr(ptr: Ptr | null, op: string, log?: string[]): Ptr {
  const err = libxdp().libxdp_get_error(ptr);
  if (err === 0 && ptr !== null && ptr !== 0n) return ptr;
  throw libxdpError(op, err || -(koffi.errno() || errnoNumber('EINVAL')), log !== undefined ? { log } : {});
}

/** A pointer that libxdp may hand back as NULL or an ERR_PTR to mean "none". */
function present(ptr: Ptr | null): ptr is Ptr {
  return ptr !== null && ptr !== 0n && libxdp().libxdp_get_error(ptr) === 0;
}

/** Run a libxdp call with libbpf/libxdp WARN and INFO lines collected for its error. */
function logged<T>(fn: (log: string[]) => T): T {
  const log: string[] = [];
  return captureLibbpfLog(log, () => fn(log));
}

// ---- typed layer --------------------------------------------------------------------------

/** enum xdp_attach_mode <-> knockgate's words */
export type DispatcherMode = 'native' | 'generic' | 'offload' | 'unspec';
const MODE_NAMES: Record<number, DispatcherMode> = {
  [XDP_MODE_UNSPEC]: 'unspec',
  [XDP_MODE_NATIVE]: 'native',
  [XDP_MODE_SKB]: 'generic',
  [XDP_MODE_HW]: 'offload',
};
export function modeNumber(mode: DispatcherMode): number {
  return mode === 'native' ? XDP_MODE_NATIVE : mode === 'generic' ? XDP_MODE_SKB : mode === 'offload' ? XDP_MODE_HW : XDP_MODE_UNSPEC;
}

/** What libxdp says about one program. */
export interface XdpProgramInfo {
  id: number;
  name: string;
  /** run priority (lower runs first) */
  priority: number;
  /** actions after which the dispatcher goes on to the next program */
  chainCallActions: string[];
}

/** An `xdp_program`: a program libxdp can attach, owned (closed) by this object. */
export class XdpProgram {
  private ptr: Ptr | null;

  private constructor(ptr: Ptr) {
    this.ptr = ptr;
  }

  /**
   * The program `progName` of a libbpf object. When the object is already loaded, libxdp takes
   * the loaded program as it is the first time it needs its fd (it does not close the object).
   */
  static fromObject(obj: Ptr, progName: string): XdpProgram {
    const opts: XdpProgramOptsRaw = {
      sz: xdp_program_opts.size,
      obj,
      opts: null,
      prog_name: progName,
      find_filename: null,
      open_filename: null,
      pin_path: null,
      id: 0,
      fd: 0,
    };
    return logged((log) => new XdpProgram(checkXdpPtr(libxdp().xdp_program__create(opts), `xdp_program__create(${progName})`, log)));
  }

  /** A loaded program by id (for a detach: libxdp matches programs by id). */
  static fromId(id: number): XdpProgram {
    return logged((log) => new XdpProgram(checkXdpPtr(libxdp().xdp_program__from_id(id), `xdp_program__from_id(${id})`, log)));
  }

  /** @internal a borrowed pointer (a multiprog's component): never closed by us */
  static describe(ptr: Ptr): XdpProgramInfo {
    const L = libxdp();
    const chain: string[] = [];
    XDP_ACTION_NAMES.forEach((name, action) => {
      if (L.xdp_program__chain_call_enabled(ptr, action)) chain.push(name);
    });
    return { id: L.xdp_program__id(ptr), name: L.xdp_program__name(ptr) ?? '?', priority: L.xdp_program__run_prio(ptr), chainCallActions: chain };
  }

  private handle(): Ptr {
    if (this.ptr === null) throw new Error('xdp_program is closed');
    return this.ptr;
  }

  info(): XdpProgramInfo {
    return XdpProgram.describe(this.handle());
  }

  /** 0 until libxdp has the program's fd. */
  get id(): number {
    return libxdp().xdp_program__id(this.handle());
  }

  /** Set the run priority; libxdp accepts it only before it has taken the program's fd. */
  setPriority(prio: number): void {
    checkXdp(libxdp().xdp_program__set_run_prio(this.handle(), prio), `xdp_program__set_run_prio(${prio})`);
  }

  /**
   * BPF_PROG_TEST_RUN through libxdp: an extension runs inside a dispatcher libxdp builds for
   * the run (no interface involved), an XDP program on its own. The first call also makes
   * libxdp take the fd of a program loaded outside it.
   */
  testRun(data: Buffer): number {
    const raw = testRunOpts(data);
    logged((log) => checkXdp(libxdp().xdp_program__test_run(this.handle(), raw, 0), 'xdp_program__test_run', log));
    return raw.retval;
  }

  /** Add the program to the interface's dispatcher (creating one if there is none). */
  attach(ifindex: number, mode: number, what: string): void {
    logged((log) => checkXdp(libxdp().xdp_program__attach(this.handle(), ifindex, mode, 0), `xdp_program__attach(${what})`, log));
  }

  close(): void {
    const p = this.ptr;
    if (p === null) return;
    this.ptr = null;
    libxdp().xdp_program__close(p);
  }

  /** @internal */
  get raw(): Ptr {
    return this.handle();
  }
}

/** Remove programs (by id) from the interface's dispatcher in one atomic swap (or remove the
 * dispatcher when nothing else is left in it). */
export function detachPrograms(ids: readonly number[], ifindex: number, mode: number, what: string): void {
  if (ids.length === 0) return;
  const progs = ids.map((id) => XdpProgram.fromId(id));
  try {
    logged((log) =>
      checkXdp(libxdp().xdp_program__detach_multi(progs.map((p) => p.raw), progs.length, ifindex, mode, 0), `xdp_program__detach_multi(${what})`, log),
    );
  } finally {
    for (const p of progs) p.close();
  }
}

/** What is attached to an interface, as libxdp sees it. */
export interface MultiprogState {
  /** a libxdp dispatcher (false: a single program libxdp does not manage) */
  dispatcher: boolean;
  mode: DispatcherMode;
  /** the dispatcher, or the single program */
  main: XdpProgramInfo;
  /** the dispatcher's programs in run order (empty for a single program) */
  programs: XdpProgramInfo[];
  /** an offloaded program, if any */
  offload: XdpProgramInfo | null;
}

/** The state of the interface's XDP slot; null when nothing is attached. */
export function multiprogState(ifindex: number, what: string): MultiprogState | null {
  const L = libxdp();
  return logged((log) => {
    const mp = L.xdp_multiprog__get_from_ifindex(ifindex);
    const err = L.libxdp_get_error(mp);
    if (err === -errnoNumber('ENOENT') || (err === 0 && (mp === null || mp === 0n))) return null;
    const ptr = checkXdpPtr(mp, `xdp_multiprog__get_from_ifindex(${what})`, log);
    try {
      const main = L.xdp_multiprog__main_prog(ptr);
      const hw = L.xdp_multiprog__hw_prog(ptr);
      const programs: XdpProgramInfo[] = [];
      const legacy = L.xdp_multiprog__is_legacy(ptr);
      if (!legacy) {
        for (let p = L.xdp_multiprog__next_prog(null, ptr); present(p); p = L.xdp_multiprog__next_prog(p, ptr)) programs.push(XdpProgram.describe(p));
      }
      return {
        dispatcher: !legacy,
        mode: MODE_NAMES[L.xdp_multiprog__attach_mode(ptr)] ?? 'unspec',
        main: present(main) ? XdpProgram.describe(main) : { id: 0, name: '', priority: 0, chainCallActions: [] },
        programs,
        offload: present(hw) ? XdpProgram.describe(hw) : null,
      };
    } finally {
      L.xdp_multiprog__close(ptr);
    }
  });
}

