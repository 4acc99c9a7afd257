/**
 * libbpf's print callback, routed into pino: LIBBPF_WARN -> warn, LIBBPF_INFO -> info,
 * LIBBPF_DEBUG -> debug, one record per libbpf message, trailing newline and "libbpf: "
 * prefix trimmed. Until setLibbpfLogger() is called, WARN and INFO go to stderr as libbpf's
 * own default printer does.
 *
 * The callback is registered once (on first use of the binding) and stays registered for
 * the life of the process: libbpf keeps the pointer in a global.
 *
 * libbpf hands us `const char *fmt, va_list ap`. On x86_64 (and arm64) a va_list parameter is
 * passed as a pointer to the caller's va_list object, so libc's vsnprintf can format it from
 * here. vsnprintf consumes the va_list, so a 24/32-byte copy (what va_copy does on those
 * ABIs) is kept for the rare second pass when the message does not fit the scratch buffer.
 *
 * captureLibbpfLog() also collects the WARN/INFO messages emitted during a call, so that a
 * failed load can carry the verifier log in its BpfError.
 */
import koffi from 'koffi';
import type { Logger } from 'pino';
import { LIBBPF_DEBUG, LIBBPF_INFO, LIBBPF_WARN, libbpf, libbpf_print_fn, libc, type Ptr } from './libbpf.js';

let logger: Logger | null = null;
let installed = false;
const captures: string[][] = [];

/** sizeof(va_list) where va_list is a pointer-passed object; 0: no second pass possible. */
const VA_LIST_SIZE = process.arch === 'x64' ? 24 : process.arch === 'arm64' ? 32 : 0;
const vaCopy = Buffer.alloc(Math.max(VA_LIST_SIZE, 8));
let scratch = Buffer.alloc(8192);

/** Route libbpf's messages (and the binding's own, see bindingLogger) into `l` (a child
 * with module 'libbpf' unless `l` already binds a module); null restores the stderr default. */
export function setLibbpfLogger(l: Logger | null): void {
  logger = l === null ? null : l.bindings()['module'] !== undefined ? l : l.child({ module: 'libbpf' });
  installLibbpfPrint();
}

/** The logger set with setLibbpfLogger (child with module 'libbpf'), or null. */
export function bindingLogger(): Logger | null {
  return logger;
}

/** Register the print callback with libbpf; idempotent. Called by every entry point that
 * makes libbpf talk (BpfObject.open, ...). */
export function installLibbpfPrint(): void {
  if (installed) return;
  libbpf().libbpf_set_print(printCallback());
  installed = true; // the callback is never unregistered: libbpf may call it at any time
}

let callback: Ptr | null = null;

/** The registered print callback (libxdp's libxdp_set_print takes the same signature). */
export function printCallback(): Ptr {
  callback ??= koffi.register(onPrint, koffi.pointer(libbpf_print_fn)) as unknown as Ptr;
  return callback;
}

/**
 * Run fn and return its result; libbpf WARN/INFO messages printed meanwhile are appended
 * to `lines` (one entry per line) in addition to being logged.
 */
export function captureLibbpfLog<T>(lines: string[], fn: () => T): T {
  installLibbpfPrint();
  captures.push(lines);
  try {
    return fn();
  } finally {
    captures.pop();
  }
}

/** Test hook: shrink the first-pass buffer to exercise the second vsnprintf pass. */
export function setFormatBufferSizeForTests(n: number): void {
  scratch = Buffer.alloc(n);
}

function wanted(level: number): boolean {
  if (captures.length > 0 && level !== LIBBPF_DEBUG) return true;
  if (logger === null) return level !== LIBBPF_DEBUG;
  return logger.isLevelEnabled(level === LIBBPF_WARN ? 'warn' : level === LIBBPF_INFO ? 'info' : 'debug');
}

function format(fmt: Ptr, ap: Ptr): string {
  const { vsnprintf } = libc();
  if (VA_LIST_SIZE > 0) vaCopy.set(new Uint8Array(koffi.view(ap, VA_LIST_SIZE)));
  const n = vsnprintf(scratch, scratch.length, fmt, ap);
  if (n < 0) return '(unformattable libbpf message)';
  if (n < scratch.length || VA_LIST_SIZE === 0) return scratch.toString('utf8', 0, Math.min(n, scratch.length - 1));
  const big = Buffer.alloc(n + 1);
  vsnprintf(big, big.length, fmt, vaCopy);
  return big.toString('utf8', 0, n);
}

function onPrint(level: number, fmt: Ptr, ap: Ptr): number {
  try {
    if (!wanted(level)) return 0;
    const text = format(fmt, ap).replace(/\n+$/, '').replace(/^lib(?:bpf|xdp): /, '');
    if (level !== LIBBPF_DEBUG) for (const lines of captures) lines.push(...text.split('\n'));
    if (logger === null) {
      if (level !== LIBBPF_DEBUG) process.stderr.write(`libbpf: ${text}\n`);
    } else if (level === LIBBPF_WARN) {
      logger.warn(text);
    } else if (level === LIBBPF_INFO) {
      logger.info(text);
    } else {
      logger.debug(text);
    }
  } catch {
    // never throw into libbpf
  }
  return 0;
}
