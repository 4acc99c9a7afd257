/**
 * The gate on a device without a link-layer header, end to end: a real TUN device in a test
 * namespace, with listeners behind it and packets written into it as if they had arrived on
 * it (issue 11). Gated, the SYN of the issue is dropped; knocked, it passes (SYN-ACK read back
 * from the TUN), over IPv4 and IPv6, in generic XDP (a TUN has no native XDP), before and after an adoption;
 * a device type the gate cannot parse is refused by name.
 *
 * WireGuard, GRE and the other tunnels are not tested here: this machine's kernel has none of
 * their drivers (see docs/DESIGN.md, "Framing").
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { it, type TestContext } from 'node:test';
import { progInfo, xdpQuery, ifIndex } from '../../src/bpf/index.js';
import { Gate, GateError } from '../../src/kernel/gate.js';
import type { StatName, Stats } from '../../src/kernel/layout.js';
import { doorsOf, silentLogger, toL3 } from '../helpers/gate.js';
import { kernelSuite, run, withNetns, withPinDir, type NetnsPair } from '../helpers/kernel.js';
import { IPPROTO, TCP_FLAGS, buildFrame, l4Of } from '../helpers/packets.js';
import { closeFd, openTun, requireTun, readTun, recvDatagram, setTunLinkType, tcpListen, udpBind, writeTun } from '../helpers/sockets.js';

const YAML = `
interfaces: [lo]
doors:
  ssh:
    sequence: [7000/tcp, 8000/tcp, 9000/tcp]
    protects: [22/tcp, 5000/udp]
    step_timeout: 10m
    sequence_timeout: 10m
`;

const HOST4 = '198.18.20.1';
const PEER4 = '198.18.20.2';
const HOST6 = '2001:db8:20::1';
const PEER6 = '2001:db8:20::2';
/** PEER4 as an IPv4-mapped IPv6 source */
const MAPPED = '::ffff:198.18.20.2';

/**
 * The IPv4 SYN of issue 11 (id 1, seq 1234, window 8192, port 42022 -> 22), with the test's
 * addresses instead of 10.66.0.x, and the same SYN over IPv6; or to another port.
 */
function syn(src: string, dport = 22, sport = 42022): Buffer {
  const ip = src.includes(':') ? { ipv6: { src, dst: HOST6 } } : { ipv4: { src, dst: HOST4, id: 1 } };
  return toL3(buildFrame({ ...ip, l4: { proto: 'tcp', sport, dport, seq: 1234, window: 8192, flags: TCP_FLAGS.SYN } }));
}

function udp(src: string, dport: number, payload: string): Buffer {
  const ip = src.includes(':') ? { ipv6: { src, dst: HOST6 } } : { ipv4: { src, dst: HOST4 } };
  return toL3(buildFrame({ ...ip, l4: { proto: 'udp', sport: 42023, dport, payload: Buffer.from(payload) } }));
}

/** TCP segments from port 22 the namespace sent back through the TUN: [dport, flags]. */
function repliesFrom22(fd: number): { dport: number; flags: number }[] {
  const out: { dport: number; flags: number }[] = [];
  for (let p = readTun(fd); p !== null; p = readTun(fd)) {
    const t = l4Of(p, 0);
    if (t === null || t.proto !== IPPROTO.TCP || p.length < t.l4 + 14) continue;
    if (p.readUInt16BE(t.l4) === 22) out.push({ dport: p.readUInt16BE(t.l4 + 2), flags: p[t.l4 + 13] ?? 0 });
  }
  return out;
}

async function waitForSynAck(fd: number, dport: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (repliesFrom22(fd).some((r) => r.dport === dport && (r.flags & (TCP_FLAGS.SYN | TCP_FLAGS.ACK)) === (TCP_FLAGS.SYN | TCP_FLAGS.ACK))) return;
    await sleep(20);
  }
  assert.fail(`no SYN-ACK from port 22 to port ${dport} came back through the TUN within 10 s`);
}

function delta(before: Stats, after: Stats, names: readonly StatName[]): Partial<Record<StatName, number>> {
  return Object.fromEntries(names.map((n) => [n, Number(after[n] - before[n])]).filter(([, d]) => d !== 0));
}

const VERDICTS_SEEN: StatName[] = ['pass_non_ip', 'pass_other_l4', 'pass_unrelated', 'pass_granted', 'pass_flow', 'drop_no_grant', 'drop_knock', 'drop_malformed'];

/** Writes packets into the TUN and returns how the gate's verdict counters moved. */
function judged(gate: Gate, fd: number, ...packets: Buffer[]): Partial<Record<StatName, number>> {
  const before = gate.stats();
  for (const p of packets) writeTun(fd, p);
  return delta(before, gate.stats(), VERDICTS_SEEN);
}

async function withTun(fn: (env: NetnsPair, tun: string, fd: number, dir: string) => Promise<void>): Promise<void> {
  await withNetns(async (env) => {
    await withPinDir(async (dir) => {
      const tun = `kg-${env.id}t`;
      const fd = env.enter(env.nsB, () => openTun(tun));
      try {
        await fn(env, tun, fd, dir);
      } finally {
        closeFd(fd);
      }
    });
  });
}

kernelSuite('L3 devices: the gate on a real TUN device', () => {
  // A TUN device (unlike a TAP) has no native XDP: 'auto' falls back to generic.
  for (const mode of ['generic', 'auto'] as const) {
    it(`${mode} XDP: issue 11's SYN is dropped until a knock, then answered; IPv4 and IPv6; an adopted gate keeps the L3 program`, async (t: TestContext) => {
      if (!requireTun(t)) return;
      await withTun(async (env, tun, fd, dir) => {
        const ns = env.nsB;
        run('ip', ['-n', ns, 'addr', 'add', `${HOST4}/24`, 'dev', tun]);
        run('ip', ['-n', ns, 'addr', 'add', `${HOST6}/64`, 'dev', tun, 'nodad']);
        run('ip', ['-n', ns, 'link', 'set', tun, 'up']);
        const fds = env.enter(ns, () => [tcpListen(HOST4, 22), tcpListen(HOST6, 22), udpBind(HOST4, 5000), udpBind(HOST6, 5000)]);
        const [, , udp4, udp6] = fds as [number, number, number, number];
        const pinPath = `${dir}/gate`;
        const open = (): Gate => Gate.open({ pinPath, sources: 1024, eventRingBytes: 64 * 1024, logger: silentLogger });
        let gate: Gate | null = null;
        try {
          gate = open();
          gate.applyDoors(doorsOf(YAML));
          const g = gate;
          const [att] = env.enter(ns, () => g.attach([{ name: tun, mode, attach: 'link', priority: 10 }]));
          assert.equal(att?.mode, 'generic', `attached to ${tun} in generic mode`);
          const l3Id = progInfo(gate.progFdL3).id;
          assert.equal(env.enter(ns, () => xdpQuery(ifIndex(tun)).progId), l3Id, `${tun} (ARPHRD_NONE) runs the L3 program`);
          repliesFrom22(fd); // whatever the namespace sent while coming up (router solicitations...)

          // IPv4: the SYN, gated.
          assert.deepEqual(judged(gate, fd, syn(PEER4)), { drop_no_grant: 1 }, 'the SYN of issue 11 is dropped at XDP');
          assert.deepEqual(judged(gate, fd, udp(PEER4, 5000, 'hello')), { drop_no_grant: 1 }, 'UDP to 5000 is dropped');
          assert.deepEqual(judged(gate, fd, syn(PEER4, 7000), syn(PEER4, 8000), syn(PEER4, 9000)), { drop_knock: 3 }, 'the knock');
          assert.deepEqual(judged(gate, fd, syn(PEER4, 22, 42030)), { pass_granted: 1 }, 'the SYN after the knock passes');
          await waitForSynAck(fd, 42030);
          assert.deepEqual(judged(gate, fd, udp(PEER4, 5000, 'after')), { pass_granted: 1 });
          let got = null;
          for (let i = 0; i < 500 && (got = recvDatagram(udp4)) === null; i++) await sleep(20);
          assert.equal(got?.data.toString(), 'after', 'the listener got the datagram sent after the knock, and only that one');
          assert.equal(recvDatagram(udp4), null);
          // The granted host's address, IPv4-mapped, over IPv6: not the granted source (dropped as malformed).
          assert.deepEqual(judged(gate, fd, udp(MAPPED, 5000, 'mapped')), { drop_malformed: 1 }, `${MAPPED} does not share ${PEER4}'s grant`);

          // Adoption: a new process takes the pinned gate over; the TUN's link must move to the
          // L3 program (the device type is looked up again in the namespace).
          gate.close();
          gate = null;
          gate = env.enter(ns, open);
          assert.ok(gate.adopted);
          const adoptedL3 = progInfo(gate.progFdL3).id;
          assert.equal(env.enter(ns, () => xdpQuery(ifIndex(tun)).progId), adoptedL3, 'after adoption the TUN runs the new L3 program');

          // IPv6, on the adopted gate.
          assert.deepEqual(judged(gate, fd, syn(PEER6)), { drop_no_grant: 1 }, 'the IPv6 SYN is dropped');
          assert.deepEqual(judged(gate, fd, udp(PEER6, 5000, 'hello')), { drop_no_grant: 1 });
          assert.deepEqual(judged(gate, fd, syn(PEER6, 7000), syn(PEER6, 8000), syn(PEER6, 9000)), { drop_knock: 3 });
          assert.deepEqual(judged(gate, fd, syn(PEER6, 22, 42031)), { pass_granted: 1 });
          await waitForSynAck(fd, 42031);
          assert.deepEqual(judged(gate, fd, udp(PEER6, 5000, 'after6')), { pass_granted: 1 });
          got = null;
          for (let i = 0; i < 500 && (got = recvDatagram(udp6)) === null; i++) await sleep(20);
          assert.equal(got?.data.toString(), 'after6');
          assert.equal(recvDatagram(udp6), null);

          // Nothing ever answered the gated SYNs (ports 42022, from both sources).
          await sleep(200);
          assert.deepEqual(repliesFrom22(fd).filter((r) => r.dport === 42022), [], 'no reply to a gated SYN');

          // Packets shorter than any IP header (BPF_PROG_TEST_RUN cannot run them): malformed.
          const short = [1, 2, 8, 13, 19].map((n) => syn(PEER4).subarray(0, n));
          const moved = judged(gate, fd, ...short);
          assert.deepEqual(moved, { drop_malformed: short.length }, 'a cut IPv4 header is malformed, never passed');
          assert.equal(recvDatagram(udp6), null, `the ${MAPPED} datagram never arrived`);

          // Without the gate, Linux delivers the mapped datagram: the drop above is what stopped it.
          gate.destroy();
          gate = null;
          writeTun(fd, udp(MAPPED, 5000, 'mapped, no gate'));
          got = null;
          for (let i = 0; i < 500 && (got = recvDatagram(udp6)) === null; i++) await sleep(20);
          assert.equal(got?.data.toString(), 'mapped, no gate', `with no gate the IPv6 listener receives a datagram from ${MAPPED}`);
        } finally {
          gate?.destroy();
          for (const f of fds) closeFd(f);
        }
      });
    });
  }

  it('a device type the gate cannot parse is refused by name and type, and nothing is attached', async (t: TestContext) => {
    if (!requireTun(t)) return;
    await withTun(async (env, tun, fd, dir) => {
      const gate = Gate.open({ pinPath: `${dir}/gate`, sources: 1024, eventRingBytes: 64 * 1024, logger: silentLogger });
      try {
        gate.applyDoors(doorsOf(YAML));
        // TUNSETLINK gives a TUN device another type: a GRE tunnel's, then a PPP link's.
        for (const [type, name] of [
          [778, 'ARPHRD_IPGRE'],
          [512, 'ARPHRD_PPP'],
          [32, 'ARPHRD_INFINIBAND'],
        ] as const) {
          setTunLinkType(fd, type);
          assert.throws(
            () => env.enter(env.nsB, () => gate.attach([{ name: tun, mode: 'generic', attach: 'link', priority: 10 }])),
            (err: unknown) => err instanceof GateError && err.message.includes(`interface ${tun} has device type ${name} (${type})`) && /did not attach/.test(err.message),
          );
          assert.equal(env.enter(env.nsB, () => xdpQuery(ifIndex(tun)).attachMode), 'none', `nothing attached to a ${name} device`);
          assert.deepEqual(gate.pinnedLinkNames(), []);
        }
      } finally {
        gate.destroy();
      }
    });
  });
});
