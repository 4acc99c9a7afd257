// What a single-packet knock costs in XDP: an SPA datagram (length, magic, door id, SipHash-2-4
// over 48 bytes, clock, nonce lookup) against a bare XDP_DROP program and the gate's
// protected-port drop path, all measured in the same run through BPF_PROG_TEST_RUN.
//   sudo node dist/bench/spa-cost.js [REPEAT] [ROUNDS]
// Reports ns per packet (the kernel's average over REPEAT runs; median over ROUNDS, the order
// rotated each round) and the ratio to bare XDP_DROP. No pass/fail: timing is for reading.
import { rmSync } from 'node:fs';
import { progTestRun } from '../src/bpf/index.js';
import { parseConfigText } from '../src/config/index.js';
import { Gate } from '../src/kernel/gate.js';
import { encodeSpa } from '../src/knock/wire.js';
import { createLogger } from '../src/log.js';
import { parseAddress } from '../src/net/addr.js';
import { tcpSyn, udpDatagram } from '../test/helpers/packets.js';
import { loadBaseProgs } from './gate.js';

const repeat = Math.max(1000, Math.min(Number(process.argv[2] ?? 1_000_000), 10_000_000));
const rounds = Math.max(3, Math.min(Number(process.argv[3] ?? 9), 99));
const pin = `/sys/fs/bpf/kg-bench-spa-${process.pid}`;
const key = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const addrs = { src: '198.18.0.2', dst: '198.18.0.1' };
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const cfg = parseConfigText(`interfaces: [lo]
doors:
  spa: { type: spa, port: 62201/udp, key_file: unused, protects: [22/tcp] }
`);
const gate = Gate.open({ pinPath: pin, sources: 1024, eventRingBytes: 65536, logger: createLogger({ level: 'silent' }) });
const base = loadBaseProgs();
try {
  gate.applyDoors(cfg.doors, { secrets: new Map([['spa', key]]) });
  const now = Math.floor(Date.now() / 1000);
  const good = encodeSpa({ key, door: 'spa', source: parseAddress(addrs.src), time: now });
  const badMac = Buffer.from(good);
  badMac[35] = (badMac[35] ?? 0) ^ 1;
  // The first run of `good` grants; every later one verifies the MAC and the clock and finds
  // the nonce: the whole path but the grant write.
  progTestRun(gate.progFd, udpDatagram(addrs, 62201, good), { ifindex: 1 });
  const classes: [string, number, Buffer][] = [
    ['bare XDP_DROP', base.drop, udpDatagram(addrs, 62201, good)],
    ['SYN to a protected port, no grant', gate.progFd, tcpSyn({ src: '198.18.0.9', dst: addrs.dst }, 22)],
    ['SPA datagram, MAC verified (replay)', gate.progFd, udpDatagram(addrs, 62201, good)],
    ['SPA datagram, bad MAC', gate.progFd, udpDatagram(addrs, 62201, badMac)],
  ];
  const ns = classes.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < classes.length; i++) {
      const j = (i + r) % classes.length;
      const [, fd, frame] = classes[j]!;
      ns[j]!.push(progTestRun(fd, frame, { repeat, ifindex: 1 }).durationNs);
    }
  }
  const drop = median(ns[0]!);
  console.log(`per packet, median of ${rounds} rounds of ${repeat} runs (BPF_PROG_TEST_RUN):`);
  classes.forEach(([label], i) => {
    const m = median(ns[i]!);
    console.log(`  ${label.padEnd(38)} ${String(m).padStart(5)} ns  ${(m / drop).toFixed(2)}x bare DROP  (+${m - drop} ns)`);
  });
  const st = gate.stats();
  console.log(`kernel counters: reject_replay ${st.reject_replay}, reject_bad_mac ${st.reject_bad_mac}, grant ${st.grant}`);
} finally {
  base.close();
  gate.destroy();
  rmSync(pin, { recursive: true, force: true });
}
