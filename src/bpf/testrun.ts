/**
 * progTestRun: run a loaded program once (or `repeat` times) on a packet, in the kernel,
 * without any interface (BPF_PROG_TEST_RUN through bpf_prog_test_run_opts).
 */
import { check } from './errors.js';
import { bpf_test_run_opts, libbpf, type TestRunOptsRaw } from './libbpf.js';

export interface TestRunOptions {
  /** run the program this many times (duration is the average); default 1 */
  repeat?: number;
  /** return the packet as the program left it */
  dataOut?: boolean;
  /** XDP: run as if received on this interface (ctx->ingress_ifindex, queue 0) */
  ifindex?: number;
  /**
   * XDP, kernel >= 5.18: BPF_F_TEST_XDP_LIVE_FRAMES: the frames really go where the program
   * sends them (XDP_TX out of `ifindex`, XDP_PASS into its stack); needs `ifindex`
   */
  live?: boolean;
  /** live frames per batch (kernel default 64, at most 256) */
  batchSize?: number;
}

/** linux/bpf.h */
export const BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1;

export interface TestRunResult {
  /** the program's return value (XDP: XDP_ABORTED 0, DROP 1, PASS 2, TX 3, REDIRECT 4) */
  retval: number;
  /** average run time per repetition, ns */
  durationNs: number;
  dataOut?: Buffer;
}

/** Room for a program that grows the packet (bpf_xdp_adjust_head/tail). */
const OUT_SLACK = 4096;

/** sizeof(struct xdp_md): data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex */
const XDP_MD_SIZE = 24;

/** The bpf_test_run_opts of one run: `data` in, everything else zero unless given. */
export function testRunOpts(data: Buffer | null, o: Partial<Omit<TestRunOptsRaw, 'sz' | 'data_in' | 'data_size_in'>> = {}): TestRunOptsRaw {
  return {
    sz: bpf_test_run_opts.size,
    data_in: data,
    data_out: null,
    data_size_in: data?.length ?? 0,
    data_size_out: 0,
    ctx_in: null,
    ctx_out: null,
    ctx_size_in: 0,
    ctx_size_out: 0,
    retval: 0,
    repeat: 1,
    duration: 0,
    flags: 0,
    cpu: 0,
    batch_size: 0,
    ...o,
  };
}

export function progTestRun(progFd: number, data: Buffer, opts: TestRunOptions = {}): TestRunResult {
  const out = opts.dataOut ? Buffer.alloc(data.length + OUT_SLACK) : null;
  let ctx: Buffer | null = null;
  if (opts.ifindex !== undefined) {
    ctx = Buffer.alloc(XDP_MD_SIZE);
    ctx.writeUInt32LE(0, 0); // data: no metadata before the packet
    ctx.writeUInt32LE(data.length, 4); // data_end
    ctx.writeUInt32LE(opts.ifindex, 12); // ingress_ifindex
  }
  const raw = testRunOpts(data, {
    data_out: out,
    data_size_out: out?.length ?? 0,
    ctx_in: ctx,
    ctx_size_in: ctx?.length ?? 0,
    repeat: opts.repeat ?? 1,
    flags: opts.live ? BPF_F_TEST_XDP_LIVE_FRAMES : 0,
    batch_size: opts.live ? (opts.batchSize ?? 0) : 0,
  });
  check(libbpf().bpf_prog_test_run_opts(progFd, raw), `bpf_prog_test_run_opts(prog fd ${progFd})`);
  const result: TestRunResult = { retval: raw.retval, durationNs: raw.duration };
  if (out !== null) result.dataOut = Buffer.from(out.subarray(0, raw.data_size_out));
  return result;
}
