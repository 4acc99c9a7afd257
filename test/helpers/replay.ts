// Replays knock patterns against a pinned knockgate program through BPF_PROG_TEST_RUN, for the
// hot-swap stress test. Each pattern runs from a fresh source whose address encodes
// (worker, pattern, iteration), so the test can tell afterwards which source completed what.
//   node dist/test/helpers/replay.js PIN_PATH WORKER DURATION_MS
// Prints {"worker":W,"iterations":N} when done. Bounded by DURATION_MS and by 20000 iterations.
import { check, progTestRun } from '../../src/bpf/index.js';
import { libbpf } from '../../src/bpf/libbpf.js';
import { tcpSyn } from './packets.js';

export const OLD = [7000, 7002, 7004];
export const NEW = [8000, 8002, 8004];
/** Patterns: index 0 = the whole old sequence, 1 = the whole new one, the rest mix them. */
export const PATTERNS: number[][] = [
  OLD,
  NEW,
  [OLD[0]!, NEW[1]!, NEW[2]!],
  [NEW[0]!, OLD[1]!, OLD[2]!],
  [OLD[0]!, OLD[1]!, NEW[2]!],
  [NEW[0]!, NEW[1]!, OLD[2]!],
  [OLD[0]!, NEW[1]!, OLD[2]!],
  [NEW[0]!, OLD[1]!, NEW[2]!],
];

export function sourceOf(worker: number, pattern: number, iteration: number): string {
  return `2001:db8:${worker.toString(16)}:${pattern.toString(16)}:${(iteration >>> 16).toString(16)}:${(iteration & 0xffff).toString(16)}::1`;
}

/** (worker, pattern, iteration) back from a 16-byte source address. */
export function decodeSource(addr: Buffer): { worker: number; pattern: number; iteration: number } {
  return { worker: addr.readUInt16BE(4), pattern: addr.readUInt16BE(6), iteration: addr.readUInt16BE(8) * 65536 + addr.readUInt16BE(10) };
}

async function main(): Promise<void> {
  const [pinPath, workerText, durationText] = process.argv.slice(2);
  const worker = Number(workerText);
  const deadline = Date.now() + Number(durationText);
  const progFd = check(libbpf().bpf_obj_get(`${pinPath}/prog`), 'bpf_obj_get(prog)');
  let i = 0;
  for (; i < 20_000 && Date.now() < deadline; i++) {
    PATTERNS.forEach((ports, p) => {
      const src = sourceOf(worker, p, i);
      for (const port of ports) progTestRun(progFd, tcpSyn({ src, dst: '2001:db8:ffff::1' }, port));
    });
    if (i % 50 === 0) await new Promise((r) => setImmediate(r));
  }
  process.stdout.write(JSON.stringify({ worker, iterations: i }) + '\n');
}

if (process.argv[1]?.endsWith('replay.js')) {
  main().catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
