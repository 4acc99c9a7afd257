/**
 * BpfError: a failed libbpf/bpf(2)/libc call, carrying the operation, the errno and its name,
 * and a message that says what to do in the common cases.
 *
 * libbpf 1.x returns -errno from int functions and NULL + errno from pointer functions;
 * check() and checkPtr() turn both into a BpfError. checkErrno() is for libc's -1 + errno.
 */
import { constants } from 'node:os';
import koffi from 'koffi';
import { libc } from './libbpf.js';

/** Kernel-internal and libbpf error numbers that os.constants.errno does not know. */
const EXTRA_NAMES: Record<number, [string, string]> = {
  524: ['ENOTSUPP', 'operation not supported'],
  4000: ['LIBBPF_ERRNO__LIBELF', 'something wrong in libelf'],
  4001: ['LIBBPF_ERRNO__FORMAT', 'BPF object format invalid'],
  4002: ['LIBBPF_ERRNO__KVERSION', "incorrect or no 'version' section"],
  4003: ['LIBBPF_ERRNO__ENDIAN', 'endian mismatch'],
  4004: ['LIBBPF_ERRNO__INTERNAL', 'internal error in libbpf'],
  4005: ['LIBBPF_ERRNO__RELOC', 'relocation failed'],
  4006: ['LIBBPF_ERRNO__LOAD', 'load program failure for unknown reason'],
  4007: ['LIBBPF_ERRNO__VERIFY', 'kernel verifier blocks program loading'],
  4008: ['LIBBPF_ERRNO__PROG2BIG', 'program too big'],
  4009: ['LIBBPF_ERRNO__KVER', 'incorrect kernel version'],
  4010: ['LIBBPF_ERRNO__PROGTYPE', "kernel doesn't support this program type"],
  4011: ['LIBBPF_ERRNO__WRNGPID', 'wrong pid in netlink message'],
  4012: ['LIBBPF_ERRNO__INVSEQ', 'invalid netlink sequence'],
  4013: ['LIBBPF_ERRNO__NLPARSE', 'netlink parsing error'],
};

const NAMES = new Map<number, string>();
for (const [name, num] of Object.entries(constants.errno)) if (!NAMES.has(num)) NAMES.set(num, name);
// Numbers with two names (ENOTSUP/EOPNOTSUPP, EWOULDBLOCK/EAGAIN, EDEADLOCK/EDEADLK): the
// spelling the kernel sources and everybody's greps use wins.
for (const name of ['EOPNOTSUPP', 'EAGAIN', 'EDEADLK'] as const) NAMES.set(constants.errno[name], name);

/** errno number -> name ('ENOENT', 'E2BIG', 'ENOTSUPP', 'LIBBPF_ERRNO__VERIFY'...). */
export function errnoName(errno: number): string {
  return EXTRA_NAMES[errno]?.[0] ?? NAMES.get(errno) ?? `E${errno}`;
}

/** errno name -> number, for comparisons: `err.errno === errnoNumber('ENOENT')`. */
export function errnoNumber(name: string): number {
  const n = (constants.errno as Record<string, number | undefined>)[name];
  if (n !== undefined) return n;
  for (const [num, [extra]] of Object.entries(EXTRA_NAMES)) if (extra === name) return Number(num);
  throw new Error(`unknown errno name ${name}`);
}

function describe(errno: number): string {
  const extra = EXTRA_NAMES[errno];
  if (extra) return extra[1];
  try {
    return libc().strerror(errno);
  } catch {
    return errnoName(errno);
  }
}

export interface BpfErrorDetails {
  /** file the operation was about (pin, object file) */
  path?: string;
  /** libbpf's log lines emitted during the operation (e.g. the verifier log) */
  log?: readonly string[];
  /** what to do; replaces the built-in hint */
  hint?: string;
}

/** The built-in advice for an (operation, errno) pair, or '' if there is nothing to add. */
function hintFor(op: string, code: string, path: string | undefined): string {
  const at = path !== undefined ? ` at ${path}` : '';
  switch (code) {
    case 'EPERM':
      return 'run as root (CAP_BPF, CAP_NET_ADMIN)';
    case 'EACCES':
      if (op.startsWith('bpf_object__load')) return 'the verifier rejected a program: see the libbpf log below';
      return 'run as root (CAP_BPF, CAP_NET_ADMIN)';
    case 'ENOENT':
      if (op.startsWith('bpf_obj_get')) return `no gate is pinned${at}`;
      if (op.startsWith('bpf_object__open')) return `no BPF object file${at}`;
      if (op.startsWith('bpf_object__find')) return 'the object has no such map or program: was it built from another source?';
      if (op.startsWith('bpf_map_')) return 'no such element';
      return '';
    case 'E2BIG':
      if (op.includes('update')) return 'map is full (or the index is beyond max_entries)';
      return '';
    case 'EEXIST':
      if (op.startsWith('bpf_obj_pin')) return `something is already pinned${at}: remove it first`;
      if (op.includes('update')) return 'the element exists (BPF_NOEXIST)';
      if (op.includes('link') || op.includes('xdp')) return 'another XDP program is attached to this interface';
      return '';
    case 'EBUSY':
      if (op.includes('link_create')) {
        return 'another XDP program is already attached to this interface: detach it first (`ip link set dev IFACE xdp off`)';
      }
      return '';
    case 'EINVAL':
      return 'invalid argument: the key/value size, flags or map type do not fit this operation, or the kernel is too old';
    case 'ENOTSUPP':
    case 'EOPNOTSUPP':
      return 'not supported by this kernel, map type or network driver';
    case 'ENODEV':
      return 'no such network interface';
    case 'EBADF':
      return 'the file descriptor is closed or is not a BPF object';
    case 'ENOSPC':
      return 'the output buffer is too small';
    case 'LIBBPF_ERRNO__FORMAT':
      return `not a BPF ELF object${at}: rebuild it with \`clang -target bpf\``;
    default:
      return '';
  }
}

const LOG_TAIL_LINES = 30;

export class BpfError extends Error {
  /** the failed call and what it was about, e.g. 'bpf_map_update_elem(kg_grants)' */
  readonly op: string;
  /** positive errno */
  readonly errno: number;
  /** errno name, e.g. 'ENOENT' */
  readonly code: string;
  readonly path: string | undefined;
  /** libbpf log lines emitted during the call (empty when none were captured) */
  readonly log: readonly string[];

  constructor(op: string, errno: number, details: BpfErrorDetails = {}) {
    const code = errnoName(errno);
    const hint = details.hint ?? hintFor(op, code, details.path);
    const log = details.log ?? [];
    let message = `${op}: ${describe(errno)} (${code})${hint ? `: ${hint}` : ''}`;
    if (log.length > 0) {
      const tail = log.length > LOG_TAIL_LINES ? ['...', ...log.slice(-LOG_TAIL_LINES)] : log;
      message += `\nlibbpf log:\n  ${tail.join('\n  ')}`;
    }
    super(message);
    this.name = 'BpfError';
    this.op = op;
    this.errno = errno;
    this.code = code;
    this.path = details.path;
    this.log = log;
  }
}

/** A libbpf int return: the value if >= 0, else a BpfError for -ret. */
export function check(ret: number, op: string, details?: BpfErrorDetails): number {
  if (ret >= 0) return ret;
  throw new BpfError(op, -ret, details);
}

/** A libbpf pointer return: the pointer, or a BpfError from errno if NULL. */
export function checkPtr<T>(ptr: T | null | undefined, op: string, details?: BpfErrorDetails): T {
  if (ptr !== null && ptr !== undefined && ptr !== 0n) return ptr;
  throw new BpfError(op, koffi.errno() || errnoNumber('EINVAL'), details);
}

/** A libc -1 + errno return. */
export function checkErrno(ret: number, op: string, details?: BpfErrorDetails): number {
  if (ret !== -1) return ret;
  throw new BpfError(op, koffi.errno(), details);
}

/** True if err is a BpfError with one of the given errno names. */
export function isBpfError(err: unknown, ...codes: string[]): err is BpfError {
  return err instanceof BpfError && (codes.length === 0 || codes.includes(err.code));
}
