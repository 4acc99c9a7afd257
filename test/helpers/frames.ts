// Floods for end-to-end tests, run as a child process (started by the test, ended by its PID,
// and bounded in count and time on its own). Built on the bench generator fixture
// (test/fixtures/bench-gen.bpf.c): it rewrites the last 32 bits of a template frame's source
// address with first + (n * mult) % range (a permutation: every source once per `range`
// frames), optionally varies the source port, and fixes the checksums.
//
//   node dist/test/helpers/frames.js '<json>'
//
//   {"mode":"chain", "pin":PIN_PATH, "frame":HEX, "first":N, "range":N, "count":N, "pps":N, "seconds":S}
//       BPF_PROG_TEST_RUN of the generator, which tail-calls the gate's pinned program on every
//       rewritten frame: the gate judges spoofed sources against its live maps, with no wire.
//   {"mode":"live", "ifname":IF, "frame":HEX, "first":N, "range":N, "count":N, "sport":true, "seconds":S}
//       BPF_F_TEST_XDP_LIVE_FRAMES: the rewritten frames leave through IF (XDP_TX), so run it
//       inside the namespace that holds IF (nsenter --net=...): real packets on a veth pair.
//
// Prints {"ready":true} once loaded and {"done":true,"frames":N} at the end (or on SIGTERM).
import { check, closeFd, BpfObject, BPF_ANY, ifIndex, isBpfError, progTestRun } from '../../src/bpf/index.js';
import { libbpf } from '../../src/bpf/libbpf.js';
import { fixture } from './kernel.js';

export interface ChainArgs {
  mode: 'chain';
  pin: string;
  frame: string;
  first: number;
  range: number;
  count: number;
  /** frames per second, roughly (the flood sleeps between batches) */
  pps: number;
  seconds: number;
}

export interface LiveArgs {
  mode: 'live';
  ifname: string;
  frame: string;
  first: number;
  range: number;
  count: number;
  sport?: boolean;
  seconds: number;
}

const XDP_DROP = 1;
const XDP_TX = 3;
const GEN_SPORT = 1;

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function out(v: unknown): void {
  process.stdout.write(JSON.stringify(v) + '\n');
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2] ?? '{}') as ChainArgs | LiveArgs;
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  const deadline = Date.now() + Math.min(a.seconds, 120) * 1000;
  const obj = BpfObject.open(fixture('bench-gen'));
  let gateFd = -1;
  let frames = 0;
  try {
    obj.load();
    let mult = 2654435761;
    while (a.range > 1 && gcd(mult % a.range, a.range) !== 1) mult += 2;
    const cfg = Buffer.alloc(32);
    cfg.writeBigUInt64LE(0n, 0);
    cfg.writeBigUInt64LE(BigInt(mult), 8);
    cfg.writeUInt32LE(a.range >>> 0, 16);
    cfg.writeUInt32LE(a.first >>> 0, 20);
    cfg.writeUInt32LE(a.mode === 'live' ? XDP_TX : XDP_DROP, 24);
    cfg.writeUInt32LE(a.mode === 'live' && a.sport ? GEN_SPORT : 0, 28);
    const zero = Buffer.alloc(4);
    obj.map('bench_gen_cfg').update(zero, cfg, BPF_ANY);
    const frame = Buffer.from(a.frame, 'hex');
    const count = Math.min(a.count, 50_000_000);
    if (a.mode === 'chain') {
      gateFd = check(libbpf().bpf_obj_get(`${a.pin}/prog`), 'bpf_obj_get(prog)');
      const fd = Buffer.alloc(4);
      fd.writeUInt32LE(gateFd);
      obj.map('bench_next').update(zero, fd, BPF_ANY);
      const chain = obj.programFd('bench_gen_chain');
      const batch = Math.max(1, Math.min(100_000, Math.floor(a.pps / 10)));
      out({ ready: true, pid: process.pid });
      while (!stop && frames < count && Date.now() < deadline) {
        const t0 = Date.now();
        const n = Math.min(batch, count - frames);
        progTestRun(chain, frame, { repeat: n });
        frames += n;
        const wait = (n / a.pps) * 1000 - (Date.now() - t0);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        else await new Promise((r) => setImmediate(r));
      }
    } else {
      const gen = obj.programFd('bench_gen');
      const ifindex = ifIndex(a.ifname);
      out({ ready: true, pid: process.pid });
      while (!stop && frames < count && Date.now() < deadline) {
        const n = Math.min(1000, count - frames);
        try {
          progTestRun(gen, frame, { repeat: n, ifindex, live: true });
        } catch (err) {
          if (isBpfError(err, 'EINTR')) break;
          throw err;
        }
        frames += n;
        await new Promise((r) => setImmediate(r));
      }
    }
  } finally {
    if (gateFd >= 0) closeFd(gateFd, 'gate prog');
    obj.close();
  }
  out({ done: true, frames });
}

if (process.argv[1]?.endsWith('frames.js')) {
  main().catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
