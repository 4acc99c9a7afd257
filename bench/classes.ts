/**
 * The packet classes of the per-packet cost benchmark, IPv4 and IPv6, and how each is set
 * up so that every measured run does the same work:
 *
 *   flood          TCP SYN to the protected port from a source without a grant   (repeat)
 *   granted        TCP ACK of an established flow to the protected port            (repeat)
 *   advance        the sequence's 2nd knock (UDP) from a source at step 1          (single run, state reset)
 *   wrong          a knock on the 3rd step's port from a source at step 1: reset   (single run, state reset)
 *
 * "At step 1" is an exact first-knock record in kg_probation; the advance moves the source into
 * kg_progress (an insert), so each sample also deletes that entry again.
 *   unrelated-tcp  TCP ACK to port 80                                              (repeat)
 *   unrelated-udp  UDP datagram to port 53                                         (repeat)
 *
 * "advance" and "wrong" change the state they are judged against, so they cannot be repeated
 * by BPF_PROG_TEST_RUN as they are: each sample puts the source back at step 1 (one map
 * update) and runs the program once; the same is done, sample by sample, with the bare
 * XDP_DROP program, and the difference is what the gate costs (see bench/cost.ts).
 */
import { TCP_FLAGS, addrKey, buildFrame, type FrameSpec } from '../test/helpers/packets.js';
import type { StatName } from '../src/kernel/layout.js';
import { BPF_ANY } from '../src/bpf/index.js';
import { MAP, PORTS, flowKey, flowValue, grantValue, hintIndex, monoNowNs, probationValue, type BenchGate } from './gate.js';

export type Family = 4 | 6;
export type ClassKind = 'flood' | 'granted' | 'advance' | 'wrong' | 'unrelated-tcp' | 'unrelated-udp';
export const CLASS_KINDS: readonly ClassKind[] = ['flood', 'granted', 'advance', 'wrong', 'unrelated-tcp', 'unrelated-udp'];

export const CLASS_LABELS: Record<ClassKind, string> = {
  flood: 'flood to protected port, no grant',
  granted: 'granted source to protected port',
  advance: 'knock step that advances',
  wrong: 'wrong knock that resets',
  'unrelated-tcp': 'unrelated TCP',
  'unrelated-udp': 'unrelated UDP',
};

/** The gateway's addresses and the MACs in every frame (the veth lab uses the same). */
export const GW = { v4: '198.18.0.2', v6: '2001:db8::2' };

/** Sources of the single-packet classes (none of them in the spoofed ranges of the floods). */
const SOURCES: Record<ClassKind, Record<Family, string>> = {
  flood: { 4: '198.19.0.1', 6: '2001:db8:8000::1' },
  granted: { 4: '198.18.1.1', 6: '2001:db8:1::1' },
  advance: { 4: '198.18.2.1', 6: '2001:db8:2::1' },
  wrong: { 4: '198.18.3.1', 6: '2001:db8:3::1' },
  'unrelated-tcp': { 4: '198.18.4.1', 6: '2001:db8:4::1' },
  'unrelated-udp': { 4: '198.18.4.1', 6: '2001:db8:4::1' },
};

export interface PacketClass {
  id: string;
  kind: ClassKind;
  family: Family;
  label: string;
  src: string;
  frame: Buffer;
  mode: 'repeat' | 'single';
  /** the verdict counter (kg_stats) the packet must end at */
  expect: StatName;
  /** an event counter that must move by one as well */
  expectCounter?: StatName;
  /** XDP action the program must return */
  action: 'drop' | 'pass';
  /** before every single-run sample (and before the check run) */
  prepare?: () => void;
}

/** The source port of the granted class's connection (its flow). */
export const GRANTED_SPORT = 40001;

export function frameFor(kind: ClassKind, family: Family, src: string, extra: Partial<FrameSpec> = {}): Buffer {
  const dst = family === 4 ? GW.v4 : GW.v6;
  const ip = family === 4 ? { ipv4: { src, dst } } : { ipv6: { src, dst } };
  const base: FrameSpec = { dstMac: '02:6b:67:00:00:02', srcMac: '02:6b:67:00:00:01', padTo: 60, ...extra, ...ip };
  switch (kind) {
    case 'flood':
      return buildFrame({ ...base, l4: { proto: 'tcp', sport: 40000, dport: PORTS.service, flags: TCP_FLAGS.SYN } });
    case 'granted':
      return buildFrame({ ...base, l4: { proto: 'tcp', sport: GRANTED_SPORT, dport: PORTS.service, flags: TCP_FLAGS.ACK, payload: Buffer.from('data') } });
    case 'advance':
      return buildFrame({ ...base, l4: { proto: 'udp', sport: 40002, dport: PORTS.steps[1]!.port, payload: Buffer.from('knock') } });
    case 'wrong':
      return buildFrame({ ...base, l4: { proto: 'tcp', sport: 40003, dport: PORTS.steps[2]!.port, flags: TCP_FLAGS.SYN } });
    case 'unrelated-tcp':
      return buildFrame({ ...base, l4: { proto: 'tcp', sport: 40004, dport: PORTS.unrelatedTcp, flags: TCP_FLAGS.ACK, payload: Buffer.from('data') } });
    case 'unrelated-udp':
      return buildFrame({ ...base, l4: { proto: 'udp', sport: 40005, dport: PORTS.unrelatedUdp, payload: Buffer.from('query') } });
  }
}

/**
 * The twelve classes against a loaded bench gate. Gives the granted sources their grant
 * (one hour) and picks unrelated sources whose hint slot no knocking source shares, so they
 * take the path of a source with no recent knock.
 */
export function packetClasses(bg: BenchGate): PacketClass[] {
  const progress = bg.gate.map(MAP.PROGRESS);
  const probation = bg.gate.map(MAP.PROBATION);
  const out: PacketClass[] = [];
  const knockSlots = new Set<number>();
  for (const f of [4, 6] as const) for (const k of ['advance', 'wrong'] as const) knockSlots.add(hintIndex(addrKey(SOURCES[k][f])));
  const value = Buffer.alloc(probation.lookupSize);
  for (const family of [4, 6] as const) {
    for (const kind of CLASS_KINDS) {
      let src = SOURCES[kind][family];
      if (kind === 'unrelated-tcp' || kind === 'unrelated-udp') {
        for (let i = 1; knockSlots.has(hintIndex(addrKey(src))); i++) {
          src = family === 4 ? `198.18.4.${1 + i}` : `2001:db8:4::${(1 + i).toString(16)}`;
        }
      }
      const key = addrKey(src);
      const c: PacketClass = {
        id: `${kind}-v${family}`,
        kind,
        family,
        label: `${CLASS_LABELS[kind]}, IPv${family}`,
        src,
        frame: frameFor(kind, family, src),
        mode: kind === 'advance' || kind === 'wrong' ? 'single' : 'repeat',
        expect: 'drop_no_grant',
        action: 'drop',
      };
      switch (kind) {
        case 'flood':
          c.expectCounter = 'deny_suppressed';
          break;
        case 'granted':
          bg.gate.gfilter!.mark(key); // a writer outside XDP marks the grant filter first
          bg.gate.map(MAP.GRANTS).update(key, grantValue(bg.slot, monoNowNs() + 3_600_000_000_000n), BPF_ANY);
          bg.gate.map(MAP.FLOWS).update(flowKey(key, addrKey(family === 4 ? GW.v4 : GW.v6), GRANTED_SPORT, PORTS.service), flowValue(bg.slot), BPF_ANY);
          c.expect = 'pass_flow';
          c.action = 'pass';
          break;
        case 'advance':
          c.expect = 'drop_knock';
          c.expectCounter = 'knock_step';
          c.prepare = () => {
            progress.delete(key);
            probation.update(key, probationValue(bg.slot, bg.epoch, monoNowNs(), value), BPF_ANY);
          };
          break;
        case 'wrong':
          c.expect = 'drop_knock';
          c.expectCounter = 'reset_wrong_port';
          c.prepare = () => probation.update(key, probationValue(bg.slot, bg.epoch, monoNowNs(), value), BPF_ANY);
          break;
        case 'unrelated-tcp':
        case 'unrelated-udp':
          c.expect = 'pass_unrelated';
          c.action = 'pass';
          break;
      }
      out.push(c);
    }
  }
  return out;
}
