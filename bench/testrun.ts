/**
 * BPF_PROG_TEST_RUN for the benchmarks, on top of src/bpf/libbpf.ts's declarations: what
 * src/bpf/testrun.ts does, plus BPF_F_TEST_XDP_LIVE_FRAMES with batch_size (kernel >= 5.18),
 * and the wall time of the call. The options object is reused between calls (this runs
 * millions of times in a loop).
 */
import { check } from '../src/bpf/errors.js';
import { bpf_test_run_opts, libbpf, type TestRunOptsRaw } from '../src/bpf/libbpf.js';
import { testRunOpts } from '../src/bpf/testrun.js';

/** linux/bpf.h: run XDP frames through the real redirect/XDP_TX/XDP_PASS paths. */
export const BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1;

export const XDP = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;

/** sizeof(struct xdp_md) */
const XDP_MD_SIZE = 24;

export interface RunOptions {
  repeat?: number;
  /** ctx->ingress_ifindex (in the calling thread's network namespace) */
  ifindex?: number;
  /** BPF_F_TEST_XDP_LIVE_FRAMES: the frames really go where the program sends them */
  live?: boolean;
  /** frames per batch in live mode (kernel default 64, at most 256) */
  batchSize?: number;
}

export interface RunResult {
  retval: number;
  /** the kernel's average per repetition, integer ns */
  durationNs: number;
  /** wall time of the whole call (syscall and FFI included), ns */
  wallNs: number;
}

const raw: TestRunOptsRaw = testRunOpts(null);

const ctxCache = new Map<string, Buffer>();

function ctxFor(len: number, ifindex: number): Buffer {
  const k = `${len}/${ifindex}`;
  let ctx = ctxCache.get(k);
  if (!ctx) {
    ctx = Buffer.alloc(XDP_MD_SIZE);
    ctx.writeUInt32LE(0, 0); // data
    ctx.writeUInt32LE(len, 4); // data_end
    ctx.writeUInt32LE(ifindex, 12); // ingress_ifindex
    ctxCache.set(k, ctx);
  }
  return ctx;
}

export function testRun(progFd: number, data: Buffer, opts: RunOptions = {}): RunResult {
  const ctx = opts.ifindex !== undefined ? ctxFor(data.length, opts.ifindex) : null;
  // koffi writes the struct back after each call (data_size_out included): reset every field.
  raw.sz = bpf_test_run_opts.size;
  raw.data_in = data;
  raw.data_size_in = data.length;
  raw.data_out = null;
  raw.data_size_out = 0;
  raw.ctx_out = null;
  raw.ctx_size_out = 0;
  raw.cpu = 0;
  raw.ctx_in = ctx;
  raw.ctx_size_in = ctx?.length ?? 0;
  raw.retval = 0;
  raw.duration = 0;
  raw.repeat = opts.repeat ?? 1;
  raw.flags = opts.live ? BPF_F_TEST_XDP_LIVE_FRAMES : 0;
  raw.batch_size = opts.live ? (opts.batchSize ?? 0) : 0;
  const t0 = process.hrtime.bigint();
  const r = libbpf().bpf_prog_test_run_opts(progFd, raw);
  const wallNs = Number(process.hrtime.bigint() - t0);
  check(r, `bpf_prog_test_run_opts(prog fd ${progFd}${opts.live ? ', live frames' : ''})`);
  return { retval: raw.retval, durationNs: raw.duration, wallNs };
}
