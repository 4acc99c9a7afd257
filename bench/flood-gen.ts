/**
 * The flood generator, a child process of the benchmark, started inside the lab's outside
 * namespace and pinned to one CPU:
 *
 *   nsenter --net=/run/netns/kg-b<id>-c taskset -c CPU node dist/bench/flood-gen.js '<json>'
 *
 * It runs bench_gen (test/fixtures/bench-gen.bpf.c) with BPF_PROG_TEST_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES on a template frame, as if received on the veth; the program
 * rewrites the source of every frame and returns XDP_TX, which sends it out of that veth to
 * the gateway namespace. Bounded twice: it stops after `seconds` or `maxFrames`, whichever
 * comes first, and on SIGTERM. Prints {"ready":...} once loaded and {"done":...} at the end.
 */
import { randomBytes } from 'node:crypto';
import { TCP_FLAGS, buildFrame } from '../test/helpers/packets.js';
import { encodeSpa } from '../src/knock/index.js';
import { parseAddress } from '../src/net/addr.js';
import { ifIndex, isBpfError } from '../src/bpf/index.js';
import { loadGen, GEN_SPORT } from './gen.js';
import { XDP, testRun } from './testrun.js';

export type FloodL4 = 'syn' | 'udp' | 'spa';

export interface GenArgs {
  /** marks the process as belonging to one bench run (for leak checks) */
  tag: string;
  ifname: string;
  family: 4 | 6;
  /** the frame's source; its last 32 bits are replaced by first + idx */
  src: string;
  first: number;
  range: number;
  /** where in the permutation this generator starts (generators running together start apart) */
  start: number;
  dst: string;
  dstMac: string;
  srcMac: string;
  dport: number;
  /** what each frame is: a TCP SYN, a UDP datagram, or a junk spa datagram (well-formed, current
   * timestamp, a tag and MAC from a random key: what a flood without the key can send) */
  l4?: FloodL4;
  seconds: number;
  maxFrames: number;
  batch: number;
}

function out(v: unknown): void {
  process.stdout.write(JSON.stringify(v) + '\n');
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2] ?? '{}') as GenArgs;
  let stop = false;
  process.on('SIGTERM', () => {
    stop = true;
  });
  process.on('SIGINT', () => {
    stop = true;
  });
  const gen = loadGen();
  try {
    gen.setCfg({ range: a.range, first: a.first, action: XDP.TX, flags: GEN_SPORT, start: a.start });
    const ip = a.family === 4 ? { ipv4: { src: a.src, dst: a.dst } } : { ipv6: { src: a.src, dst: a.dst } };
    const l4 =
      a.l4 === 'udp'
        ? ({ proto: 'udp', sport: 40000, dport: a.dport, payload: Buffer.from('flood') } as const)
        : a.l4 === 'spa'
          ? ({ proto: 'udp', sport: 40000, dport: a.dport, payload: encodeSpa({ key: randomBytes(16), door: 'spa', source: parseAddress(a.src), time: Math.floor(Date.now() / 1000) }) } as const)
          : ({ proto: 'tcp', sport: 40000, dport: a.dport, flags: TCP_FLAGS.SYN } as const);
    const frame = buildFrame({ dstMac: a.dstMac, srcMac: a.srcMac, ...ip, l4, padTo: 60 });
    const ifindex = ifIndex(a.ifname);
    // One tiny call first: fails early (and clearly) if live frames are not supported.
    testRun(gen.gen, frame, { repeat: 1, ifindex, live: true, batchSize: a.batch });
    out({ ready: true, pid: process.pid, tag: a.tag });
    const t0 = process.hrtime.bigint();
    const deadline = t0 + BigInt(Math.round(a.seconds * 1e9));
    let frames = 1;
    let chunk = 1 << 18;
    // Each call sets up and tears down a page pool (tens of ms, mostly waiting): calls of about
    // 1 s keep that small (the benchmark counts the CPU time the flood got, not wall time). A signal interrupts a call at once (EINTR), the deadline is checked between calls.
    while (!stop && frames < a.maxFrames) {
      const left = Number(deadline - process.hrtime.bigint());
      if (left <= 0) break;
      const n = Math.max(1, Math.min(chunk, a.maxFrames - frames));
      const c0 = process.hrtime.bigint();
      try {
        testRun(gen.gen, frame, { repeat: n, ifindex, live: true, batchSize: a.batch });
      } catch (err) {
        if (isBpfError(err, 'EINTR')) break;
        throw err;
      }
      frames += n;
      const ns = Number(process.hrtime.bigint() - c0);
      const rate = n / Math.max(ns, 1); // frames per ns
      const remaining = Number(deadline - process.hrtime.bigint());
      chunk = Math.max(4096, Math.min(1 << 24, Math.round(rate * Math.min(1e9, Math.max(remaining, 0)))));
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    // The program counts every frame it rewrote, including those of a call a signal cut short.
    const sent = Number(gen.count());
    out({ done: true, frames: sent, seconds, pps: sent / seconds });
  } finally {
    gen.close();
  }
}

main().catch((err: unknown) => {
  out({ error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
