// What libxdp's dispatcher adds per packet: the gate attached through the dispatcher on a veth in
// a throwaway namespace, and the same packets run (BPF_PROG_TEST_RUN) through the dispatcher (which
// calls the gate's extension in its slot) and through the gate's own XDP program (a direct attach
// runs exactly that), in the same run, the order rotated each round.
//   sudo node dist/bench/dispatcher-cost.js [REPEAT] [ROUNDS]
// Reports ns per packet (the kernel's average over REPEAT runs; median over ROUNDS) and the ratio
// dispatcher / direct. On a kernel where the dispatcher cannot run, says so and exits 0. No
// pass/fail: timing is for reading.
import { rmSync } from 'node:fs';
import { progTestRun } from '../src/bpf/index.js';
import { libbpf } from '../src/bpf/libbpf.js';
import { closeFd } from '../src/bpf/info.js';
import { parseConfigText } from '../src/config/index.js';
import { Gate } from '../src/kernel/gate.js';
import { createLogger } from '../src/log.js';
import { withNetns } from '../test/helpers/kernel.js';
import { tcpSyn } from '../test/helpers/packets.js';

const repeat = Math.max(1000, Math.min(Number(process.argv[2] ?? 1_000_000), 10_000_000));
const rounds = Math.max(3, Math.min(Number(process.argv[3] ?? 9), 99));
const pin = `/sys/fs/bpf/kg-bench-dispatcher-${process.pid}`;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const addrs = { src: '198.18.0.2', dst: '198.18.0.1' };

const cfg = parseConfigText(`interfaces: [lo]
doors:
  ssh: { sequence: [7000/tcp, 8000/udp, 9000/tcp], protects: [22/tcp] }
`);

await withNetns(async (env) => {
  // warnings (why the dispatcher cannot run, if it cannot) to stderr
  const gate = Gate.open({ pinPath: pin, sources: 1024, eventRingBytes: 65536, logger: createLogger({ level: 'warn', destination: 2 }) });
  try {
    gate.applyDoors(cfg.doors);
    const state = env.enter(env.nsA, () => {
      gate.attach([{ name: env.ifA, mode: 'auto', attach: 'dispatcher', priority: 10 }]);
      return gate.attachments()[0];
    });
    if (state?.attach !== 'dispatcher' || !state.dispatcher) {
      process.stdout.write(`libxdp's dispatcher cannot run on this kernel (see the warning above): nothing to compare\n`);
      return;
    }
    const dispFd = libbpf().bpf_prog_get_fd_by_id(state.dispatcher.dispatcherId);
    if (dispFd < 0) throw new Error(`dispatcher ${state.dispatcher.dispatcherId}: errno ${-dispFd}`);
    try {
      const classes: [string, Buffer][] = [
        ['SYN to a protected port, no grant (drop)', tcpSyn({ src: '198.18.0.9', dst: addrs.dst }, 22)],
        ['SYN to an unrelated port (pass)', tcpSyn({ src: '198.18.0.9', dst: addrs.dst }, 8080)],
      ];
      const runs: [string, number][] = [
        ['direct (the XDP program)', gate.progFd],
        ['dispatcher -> extension', dispFd],
      ];
      const ns = classes.map(() => runs.map(() => [] as number[]));
      for (let r = 0; r < rounds; r++) {
        for (let c = 0; c < classes.length; c++) {
          for (let k = 0; k < runs.length; k++) {
            const j = (k + r) % runs.length;
            ns[c]![j]!.push(progTestRun(runs[j]![1], classes[c]![1], { repeat, ifindex: 1 }).durationNs);
          }
        }
      }
      process.stdout.write(`dispatcher ${state.dispatcher.dispatcherId} (mode ${state.mode}), ${repeat} runs x ${rounds} rounds, median ns per packet\n`);
      classes.forEach(([name], c) => {
        const direct = median(ns[c]![0]!);
        const disp = median(ns[c]![1]!);
        process.stdout.write(
          `  ${name.padEnd(44)} direct ${direct.toFixed(0).padStart(5)} ns   dispatcher ${disp.toFixed(0).padStart(5)} ns   ` +
            `ratio ${(disp / direct).toFixed(2)}   added ${(disp - direct).toFixed(0)} ns\n`,
        );
      });
    } finally {
      closeFd(dispFd);
    }
    env.enter(env.nsA, () => gate.detachInterface(env.ifA));
  } finally {
    gate.destroy();
    rmSync(pin, { recursive: true, force: true });
  }
});
