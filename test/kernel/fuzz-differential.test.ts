/**
 * The differential fuzz test (issue 11; docs/DESIGN.md, "Differential fuzzing"): a gate with
 * doors and no grant judges a seeded stream of structured and mutated frames in every framing
 * its parser knows, through BPF_PROG_TEST_RUN (Ethernet frames through its Ethernet program,
 * L3 frames through the program for devices without a link-layer header). Every frame it
 * passes is replayed, byte for byte, into a namespace that has real listeners on the gate's
 * protected and knock ports and no gate: Ethernet frames through a veth pair, L3 frames written
 * into a TUN device. A delivery there is a bypass, and fails the test with the frame in hex:
 *
 * - a TCP SYN answered: a SYN-ACK captured on the sending side (a packet socket), or a
 *   half-open connection on a listener (`ss state syn-recv`, which no capture loss can hide);
 * - a UDP datagram received by a listener.
 *
 * Before the stream, positive controls prove each detector sees a delivery in this run (so the
 * test can fail), and that the gate drops those same frames.
 *
 *   KG_FUZZ_SECONDS  how long the stream runs (default 120; lower it for local runs)
 *   KG_FUZZ_SEED     the seed (default: random, logged); the same seed gives the same frames
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { it, type TestContext } from 'node:test';
import { ifIndex, progTestRun } from '../../src/bpf/index.js';
import { Gate } from '../../src/kernel/gate.js';
import { STAT_NAMES, VERDICTS } from '../../src/kernel/layout.js';
import { formatAddress } from '../../src/net/addr.js';
import { TEST_IFINDEX, XDP_PASS, doorsOf, silentLogger, toL3 } from '../helpers/gate.js';
import { Rng, ipOffset, nextFrame, type FuzzFrame, type Lab } from '../helpers/fuzz.js';
import { kernelSuite, run, withNetns, withPinDir, type NetnsPair } from '../helpers/kernel.js';
import { TCP_FLAGS, buildFrame, l4Of, l4OfFrame } from '../helpers/packets.js';
import { closeFd, openTun, requireTun, packetSocket, recvDatagram, recvFrame, sendFrame, tcpListen, udpBind, writeTun } from '../helpers/sockets.js';

const SECONDS = Number(process.env['KG_FUZZ_SECONDS'] ?? 120);
const SEED = process.env['KG_FUZZ_SEED'] !== undefined ? Number(process.env['KG_FUZZ_SEED']) : randomInt(2 ** 31);

const TCP_PORTS = [22, 2222, 7000, 9000];
const UDP_PORTS = [5000, 8000];

// No source the stream uses may start a sequence (allow_from): no grant can ever exist, so
// every pass is one the gate makes for a stranger.
const YAML = `
interfaces: [lo]
doors:
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [22/tcp, 2222/tcp, 5000/udp]
    allow_from: [198.18.255.254/32, 2001:db8:ffff::fe/128]
`;

interface Replayed {
  index: number;
  frame: FuzzFrame;
}

/** What identifies the connection or datagram a frame would open: "src|sport" (+ "|seq+1" for TCP). */
function keysOf(f: FuzzFrame): string[] {
  const off = ipOffset(f);
  if (off === null) return [];
  const t = l4Of(f.bytes, off);
  if (t === null || (t.proto !== 6 && t.proto !== 17) || f.bytes.length < t.l4 + 8) return [];
  const src = formatAddress(t.v === 4 ? Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), t.src]) : Buffer.from(t.src));
  const sport = f.bytes.readUInt16BE(t.l4);
  const base = `${src}|${sport}`;
  if (t.proto === 6 && f.bytes.length >= t.l4 + 8) return [base, `${base}|${(f.bytes.readUInt32BE(t.l4 + 4) + 1) >>> 0}`];
  return [base];
}

function macOf(env: NetnsPair, ns: string, ifname: string): string {
  const j = JSON.parse(run('ip', ['-j', '-n', ns, 'link', 'show', ifname])) as { address: string }[];
  const mac = j[0]?.address;
  if (mac === undefined) throw new Error(`no MAC for ${ifname}`);
  void env;
  return mac;
}

/** Half-open connections on B's listeners ("peer|port"). */
function synRecv(env: NetnsPair): string[] {
  return env
    .exec(env.nsB, ['ss', '-Htn', 'state', 'syn-recv'])
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 4)
    .map((f) => {
      const peer = f[f.length - 1] ?? '';
      const i = peer.lastIndexOf(':');
      return `${peer.slice(0, i).replace(/^\[|\]$/g, '')}|${peer.slice(i + 1)}`;
    });
}

class Detectors {
  deliveries: string[] = [];
  constructor(
    private readonly env: NetnsPair,
    private readonly capture: number,
    private readonly udp: number[],
    private readonly baseline: Set<string>,
  ) {}

  /** SYN-ACKs from a listener port and datagrams received; returns the keys of each delivery. */
  poll(): { synAcks: string[]; datagrams: string[] } {
    const synAcks: string[] = [];
    for (let r = recvFrame(this.capture); r !== null; r = recvFrame(this.capture)) {
      if (r.outgoing) continue;
      const f = r.frame;
      const t = l4OfFrame(f);
      if (t === null || t.proto !== 6 || f.length < t.l4 + 14) continue;
      const flags = f[t.l4 + 13] ?? 0;
      const sport = f.readUInt16BE(t.l4);
      if ((flags & (TCP_FLAGS.SYN | TCP_FLAGS.ACK)) !== (TCP_FLAGS.SYN | TCP_FLAGS.ACK) || !TCP_PORTS.includes(sport)) continue;
      const dst = formatAddress(t.v === 4 ? Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), t.dst]) : Buffer.from(t.dst));
      synAcks.push(`${dst}|${f.readUInt16BE(t.l4 + 2)}|${f.readUInt32BE(t.l4 + 8)}`);
    }
    const datagrams: string[] = [];
    for (const fd of this.udp) {
      for (let d = recvDatagram(fd); d !== null; d = recvDatagram(fd)) datagrams.push(`${formatAddress(addr16(d.from))}|${d.port}`);
    }
    return { synAcks, datagrams };
  }

  halfOpen(): string[] {
    return synRecv(this.env).filter((k) => !this.baseline.has(k));
  }
}

function addr16(text: string): Buffer {
  if (!text.includes(':')) return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), Buffer.from(text.split('.').map(Number))]);
  const b = Buffer.alloc(16);
  text.split(':').forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), 2 * i));
  return b;
}

kernelSuite('Differential fuzzing: what the gate passes, a gateless host must not deliver', () => {
  it(`structured and mutated frames for ~${SECONDS}s (seed ${SEED}); every passed frame replayed against real listeners`, async (t: TestContext) => {
    if (!requireTun(t)) return;
    await withNetns(async (env) => {
      await withPinDir(async (dir) => {
        const A = env.nsA;
        const B = env.nsB;
        const tun = `kg-${env.id}f`;
        // No reverse-path filter in B: sources arrive on the TUN but are routed back via the veth.
        const noRpFilter = (dev: string): void => env.enter(B, () => writeFileSync(`/proc/sys/net/ipv4/conf/${dev}/rp_filter`, '0'));
        for (const dev of ['all', 'default', env.ifB]) noRpFilter(dev);
        // Frames of any generated size must reach B whole: a 1500-byte MTU would refuse the longer
        // ones at the sender (EMSGSIZE) and leave them untested.
        for (const [ns, dev] of [[A, env.ifA], [B, env.ifB]] as const) run('ip', ['-n', ns, 'link', 'set', 'dev', dev, 'mtu', '65535']);
        run('ip', ['-n', B, 'route', 'add', 'default', 'via', env.addrA]);
        run('ip', ['-n', B, '-6', 'route', 'add', 'default', 'via', env.addr6A]);
        const lab: Lab = {
          srcMac: macOf(env, A, env.ifA),
          dstMac: macOf(env, B, env.ifB),
          dst4: env.addrB,
          dst6: env.addr6B,
          ports: [...TCP_PORTS, ...UDP_PORTS, 8000, 80, 443, 53],
        };
        const fds: number[] = [];
        let gate: Gate | null = null;
        try {
          const tunFd = env.enter(B, () => openTun(tun));
          fds.push(tunFd);
          run('ip', ['-n', B, 'addr', 'add', '198.18.21.1/32', 'dev', tun]);
          run('ip', ['-n', B, 'addr', 'add', '2001:db8:21::1/128', 'dev', tun, 'nodad']);
          run('ip', ['-n', B, 'link', 'set', tun, 'up']);
          noRpFilter(tun);
          const udp = env.enter(B, () => [
            ...TCP_PORTS.flatMap((p) => [tcpListen('0.0.0.0', p), tcpListen('::', p)]),
            ...UDP_PORTS.flatMap((p) => [udpBind('0.0.0.0', p), udpBind('::', p)]),
          ]);
          fds.push(...udp);
          const udpFds = udp.slice(TCP_PORTS.length * 2);
          const ifA = env.enter(A, () => ifIndex(env.ifA));
          const capture = env.enter(A, () => packetSocket(ifA, 32 * 1024 * 1024));
          fds.push(capture);

          gate = Gate.open({ pinPath: `${dir}/gate`, sources: 4096, eventRingBytes: 64 * 1024, logger: silentLogger });
          gate.applyDoors(doorsOf(YAML));
          gate.setDenyTokens(0);
          gate.setKnockTokens(0);
          const g = gate;
          const judge = (f: FuzzFrame): number => progTestRun(f.framing === 'l3' ? g.progFdL3 : g.progFd, f.bytes, { ifindex: TEST_IFINDEX }).retval;
          let tunRefused = 0;
          let tooLong = 0;
          const replay = (f: FuzzFrame): void => {
            if (f.framing === 'ethernet') {
              try {
                return sendFrame(capture, ifA, f.bytes);
              } catch (err) {
                // Longer than the largest veth MTU (EMSGSIZE): no link delivers such a frame.
                if (!/errno 90\b/.test((err as Error).message)) throw err;
                tooLong++;
                return;
              }
            }
            try {
              writeTun(tunFd, f.bytes);
            } catch (err) {
              // A TUN without packet information refuses what is neither IPv4 nor IPv6 by its
              // first nibble (EINVAL): the device itself never delivers it.
              if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
              tunRefused++;
            }
          };

          // ---- positive controls: each detector sees a delivery, and the gate drops it ------------
          const detect = new Detectors(env, capture, udpFds, new Set());
          const control = async (what: string, f: FuzzFrame, kind: 'syn' | 'udp'): Promise<void> => {
            assert.notEqual(judge(f), XDP_PASS, `control ${what}: the gate drops it`);
            replay(f);
            const deadline = Date.now() + 15_000;
            for (;;) {
              const got = detect.poll();
              if (kind === 'syn' ? got.synAcks.length > 0 : got.datagrams.length > 0) break;
              if (Date.now() > deadline) assert.fail(`control ${what}: the lab did not show the delivery within 15 s: the detector is blind`);
              await sleep(20);
            }
          };
          const eth = (spec: Parameters<typeof buildFrame>[0]): FuzzFrame => ({ framing: 'ethernet', bytes: buildFrame({ srcMac: lab.srcMac, dstMac: lab.dstMac, ...spec }), how: 'control' });
          await control('IPv4 SYN to 22 over the veth', eth({ ipv4: { src: '198.19.0.10', dst: lab.dst4 }, l4: { proto: 'tcp', sport: 41000, dport: 22 } }), 'syn');
          await control('IPv6 UDP to 5000 over the veth', eth({ ipv6: { src: '2001:db8:f::10', dst: lab.dst6 }, l4: { proto: 'udp', sport: 41001, dport: 5000, payload: Buffer.from('x') } }), 'udp');
          const l3 = (f: FuzzFrame): FuzzFrame => ({ framing: 'l3', bytes: toL3(f.bytes), how: 'control' });
          await control('IPv6 SYN to 2222 into the TUN', l3(eth({ ipv6: { src: '2001:db8:f::11', dst: lab.dst6 }, l4: { proto: 'tcp', sport: 41002, dport: 2222 } })), 'syn');
          await control('IPv4 UDP to 8000 into the TUN', l3(eth({ ipv4: { src: '198.19.0.11', dst: lab.dst4 }, l4: { proto: 'udp', sport: 41003, dport: 8000 } })), 'udp');
          const baseline = new Set(synRecv(env));
          // The controls' half-open connections retransmit their SYN-ACKs: not deliveries of the stream.
          const controlPeers = ['2001:db8:f::11|41002', '198.19.0.10|41000'];
          assert.ok(baseline.size >= 2, `the control SYNs left half-open connections (ss state syn-recv): ${[...baseline].join(', ')}`);

          // ---- the stream ------------------------------------------------------------------------
          const watch = new Detectors(env, capture, udpFds, baseline);
          const rng = new Rng(SEED);
          const stats0 = gate.stats();
          const counts = { frames: 0, judged: { ethernet: 0, l3: 0 }, passed: { ethernet: 0, l3: 0 }, tooShort: 0, mutated: 0 };
          const recent: Replayed[] = [];
          const byKey = new Map<string, number>();
          const failures: string[] = [];
          const seen = new Set<string>();
          const report = (why: string, key: string | null): void => {
            if (seen.has(why)) return; // a SYN-ACK retransmitted
            seen.add(why);
            const i = key === null ? undefined : byKey.get(key);
            const hit = i === undefined ? undefined : recent.find((r) => r.index === i);
            if (hit) failures.push(`${why}: frame #${hit.index} (${hit.frame.framing}, ${hit.frame.how}):\n  ${hit.frame.bytes.toString('hex')}`);
            else failures.push(`${why}: not matched to one frame; the last ${Math.min(20, recent.length)} passed frames:\n${recent.slice(-20).map((r) => `  #${r.index} (${r.frame.framing}, ${r.frame.how}) ${r.frame.bytes.toString('hex')}`).join('\n')}`);
          };
          const check = (): void => {
            const got = watch.poll();
            for (const k of got.synAcks) {
              const [dst, dport, ack] = k.split('|');
              if (controlPeers.includes(`${dst}|${dport}`)) continue;
              report(`SYN-ACK to ${dst} port ${dport} (ack ${ack})`, `${dst}|${dport}|${ack}`);
            }
            for (const k of got.datagrams) report(`UDP datagram from ${k.replace('|', ' port ')} received`, k);
          };
          const deadline = Date.now() + SECONDS * 1000;
          let lastSs = Date.now();
          while (Date.now() < deadline && failures.length === 0) {
            for (let i = 0; i < 256; i++) {
              const f = nextFrame(rng, lab);
              const index = counts.frames++;
              if (f.how.endsWith('mutated')) counts.mutated++;
              if (f.bytes.length < 14) {
                counts.tooShort++; // BPF_PROG_TEST_RUN refuses them (l3-tun.test.ts writes such into a TUN)
                continue;
              }
              counts.judged[f.framing]++;
              if (judge(f) !== XDP_PASS) continue;
              counts.passed[f.framing]++;
              replay(f);
              recent.push({ index, frame: f });
              if (recent.length > 4096) {
                for (const k of keysOf(recent[0]!.frame)) if (byKey.get(k) === recent[0]!.index) byKey.delete(k);
                recent.shift();
              }
              for (const k of keysOf(f)) byKey.set(k, index);
            }
            check();
            if (Date.now() - lastSs > 10_000) {
              for (const k of watch.halfOpen()) report(`half-open connection from ${k.replace('|', ' port ')}`, k);
              lastSs = Date.now();
            }
            await new Promise((r) => setImmediate(r));
          }
          await sleep(1000);
          check();
          for (const k of watch.halfOpen()) report(`half-open connection from ${k.replace('|', ' port ')}`, k);

          const stats1 = gate.stats();
          const verdicts = Object.fromEntries(STAT_NAMES.slice(0, VERDICTS).map((n) => [n, Number(stats1[n] - stats0[n])]).filter(([, d]) => d !== 0));
          const summary = `seed ${SEED} (KG_FUZZ_SEED=${SEED} KG_FUZZ_SECONDS=${SECONDS} to repeat): ${counts.frames} frames (${counts.mutated} mutated), judged ${counts.judged.ethernet} Ethernet + ${counts.judged.l3} L3 (${counts.tooShort} L3 frames under 14 bytes not judged), passed and replayed ${counts.passed.ethernet} + ${counts.passed.l3} (${tunRefused} L3 ones refused by the TUN: not IP; ${tooLong} Ethernet ones longer than any veth MTU); verdicts ${JSON.stringify(verdicts)}`;
          t.diagnostic(summary);
          process.stdout.write(`# fuzz: ${summary}\n`);
          assert.deepEqual(failures, [], `the lab delivered frames the gate passed (${summary}):\n${failures.join('\n')}`);
          assert.equal(stats1.grant - stats0.grant, 0n, 'no grant was made (no stream source may knock)');
          assert.deepEqual(gate.grants(), []);
          assert.ok(counts.passed.ethernet > 0 && counts.passed.l3 > 0, `frames of both framings were passed and replayed (${summary})`);
        } finally {
          gate?.destroy();
          for (const fd of fds) closeFd(fd);
        }
      });
    });
  });
});
