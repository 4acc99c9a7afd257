// How long a door change takes in the kernel: Gate.applyDoors (rewrite the inactive
// generation through the mmapped kg_ports, flip, synchronize_rcu), against waitForPrograms()
// alone measured in the same run.   sudo node dist/bench/swap-cost.js [ROUNDS]
import { rmSync } from 'node:fs';
import { waitForPrograms } from '../src/bpf/index.js';
import { parseConfigText } from '../src/config/index.js';
import { Gate } from '../src/kernel/gate.js';
import { createLogger } from '../src/log.js';

const rounds = Math.max(5, Math.min(Number(process.argv[2] ?? 50), 1000));
const pin = `/sys/fs/bpf/kg-bench-swap-${process.pid}`;
const doors = (first: number) =>
  parseConfigText(`interfaces: [lo]\ndoors:\n  ssh: { sequence: [${first}/tcp, ${first + 1000}/udp, ${first + 2000}/tcp], protects: [22/tcp] }\n`).doors;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const gate = Gate.open({ pinPath: pin, sources: 1024, eventRingBytes: 65536, logger: createLogger({ level: 'silent' }) });
try {
  const apply: number[] = [];
  const sync: number[] = [];
  for (let i = 0; i < rounds; i++) {
    let t = performance.now();
    gate.applyDoors(doors(i % 2 === 0 ? 7000 : 7100));
    apply.push(performance.now() - t);
    t = performance.now();
    waitForPrograms();
    sync.push(performance.now() - t);
  }
  const a = median(apply);
  const s = median(sync);
  console.log(`door change (applyDoors): median ${a.toFixed(2)} ms over ${rounds} rounds; synchronize_rcu alone: ${s.toFixed(2)} ms; the rest: ${(a - s).toFixed(2)} ms`);
} finally {
  gate.destroy();
  rmSync(pin, { recursive: true, force: true });
}
