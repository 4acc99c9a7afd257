/**
 * The keyed and single-packet door types in the XDP program (docs/KNOCKS.md), through
 * BPF_PROG_TEST_RUN on a real gate: spa (the kernel checks length, magic, door id, SipHash MAC,
 * timestamp and nonce, then grants), signed (the kernel checks length, magic and door id and
 * passes the datagram to the daemon through the ring), payload over UDP and over ICMP/ICMPv6
 * echo requests, and rotating sequences (two windows live, one grant per window, spent windows
 * pruned by applyDoors). Rows are test/helpers/gate.ts's, checked by GateHarness.check like every
 * other table's, with the nonces (row.nonces) and spent windows (row.spent) a row must add.
 *
 * The harness's ring reader decodes every record as a 48-byte struct kg_event, so the 112 bytes
 * of a KG_EV_SIGNED record's datagram never reach a row: the test that checks them reads the
 * ring of a gate of its own.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, verify as edVerify, type KeyObject } from 'node:crypto';
import { it } from 'node:test';
import { RingBufferReader, progTestRun } from '../../src/bpf/index.js';
import type { GateEvent } from '../../src/kernel/events.js';
import { Gate, monoNowNs } from '../../src/kernel/gate.js';
import type { PlanContext } from '../../src/kernel/tables.js';
import {
  DOOR_TYPE,
  EVENT,
  KG,
  MAP,
  OFFSETS,
  PROTO,
  SIZEOF,
  decodePortInfo,
  decodeSignedEvent,
  portIndex,
  rotatingSteps,
  type KEvent,
  type StatName,
} from '../../src/kernel/layout.js';
import { doorId, encodeSigned, encodeSpa, rotatingSequence, signedMessage, windowOf } from '../../src/knock/index.js';
import { formatAddress } from '../../src/net/addr.js';
import {
  FlowBook,
  GateHarness,
  NO_EVENT,
  NO_MAP_UPDATE,
  TEST_IFINDEX,
  XDP_DROP,
  XDP_PASS,
  config,
  deniedQuietly,
  doorsOf,
  framingSuites,
  ev,
  frameSource,
  knockNoop,
  silentLogger,
  statDelta,
  to,
  untouched,
  type EventExpect,
  type HarnessOptions,
  type Row,
} from '../helpers/gate.js';
import { kernelSuite, withPinDir } from '../helpers/kernel.js';
import { IPPROTO, addrKey, buildFrame, internetChecksum, l4OfFrame, pseudoHeader, tcpFrom, tcpSyn, udpDatagram, type FrameSpec, type Ipv4Spec, type Ipv6Spec } from '../helpers/packets.js';

// ---- the doors ----------------------------------------------------------------------------

const SPA_PORT = 62201;
const SIG_PORT = 62202;
const PAY_PORT = 62203;
const RANGE = { first: 41000, last: 41999 } as const;
const ROT_LEN = 3;
/** Long windows: a window's sequence stays live for minutes, whatever the machine's speed. */
const WINDOW_MS = 600_000;

const YAML = config(`
  spa:  { type: spa, port: ${SPA_PORT}/udp, key_file: /unused, max_skew: 30s, protects: [2201/tcp] }
  sig:  { type: signed, port: ${SIG_PORT}/udp, clients: { alice: /unused }, protects: [2202/tcp] }
  pay:  { type: payload, knock: ${PAY_PORT}/udp, payload: "hex:6b6e6f636b", protects: [2203/tcp] }
  ping: { type: payload, knock: icmp, payload: open-sesame, protects: [2204/tcp] }
  rot:  { type: rotating, secret_file: /unused, knock_ports: ${RANGE.first}-${RANGE.last}/udp, length: ${ROT_LEN}, window: 10m, protects: [2205/tcp] }
  seq:  { sequence: [7000/tcp, 8000/tcp, 9000/tcp], protects: [2206/tcp] }
`);
const DOORS = doorsOf(YAML);
const WITHOUT_PING = DOORS.filter((d) => d.name !== 'ping');

const SPA_KEY = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const WRONG_KEY = Buffer.from('00112233445566778899aabbccddeefe', 'hex');
const ROT_SECRET = Buffer.from('6b6e6f636b676174652d726f746174696e672d7465737420736563726574210a', 'hex');
const OTHER_SECRET = Buffer.from('0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000', 'hex');
const SECRETS: ReadonlyMap<string, Buffer> = new Map([
  ['spa', SPA_KEY],
  ['rot', ROT_SECRET],
]);

/** A fixed window (Nov 2023): every sequence below is the same on every run. */
const W = windowOf(1_700_000_000_000, WINDOW_MS);
/** A wall clock 1 s into window w. */
const wallIn = (w: bigint): number => Number(w) * WINDOW_MS + 1000;
/** PlanContext with the secrets and the clock in window w (mono = now unless given). */
const at = (w: bigint, monoNs = monoNowNs(), wallMs = wallIn(w)): PlanContext => ({ secrets: SECRETS, clock: { wallMs, monoNs } });

const seqOf = (w: bigint, secret: Buffer = ROT_SECRET): number[] => rotatingSequence(secret, 'rot', w, RANGE, ROT_LEN);

// ---- frames -------------------------------------------------------------------------------

const syn = (src: string, port: number): Buffer => tcpSyn(to(src), port);
const udp = (src: string, port: number, payload: Buffer = Buffer.from('x')): Buffer => udpDatagram(to(src), port, payload);
const unixNow = (): number => Math.floor(Date.now() / 1000);

let nonceCounter = 0;
/** A fresh 16-byte nonce (distinct within a run). */
function freshNonce(): Buffer {
  const n = Buffer.alloc(16, 0xa5);
  n.writeUInt32BE(process.pid >>> 0, 0);
  n.writeUInt32BE(++nonceCounter, 12);
  return n;
}

/** Another second of the same 64-second spa tag window (the nonce field starts with its tag). */
const sameWindow = (t: number): number => (t % 64 === 63 ? t - 1 : t + 1);

interface SpaOpts {
  time?: number | bigint;
  /** the 12 random bytes after the tag */
  nonce?: Buffer;
  key?: Buffer;
  door?: string;
  /** the address the MAC is computed for (default: src) */
  macFor?: string;
}
/** An spa datagram from src (40 bytes), its 16-byte nonce field (tag and nonce, what kg_nonces records) and its 12 random bytes. */
function spaDatagram(src: string, o: SpaOpts = {}): { payload: Buffer; nonce: Buffer; rand: Buffer } {
  const rand = o.nonce ?? freshNonce().subarray(4);
  const payload = encodeSpa({ key: o.key ?? SPA_KEY, door: o.door ?? 'spa', source: addrKey(o.macFor ?? src), time: o.time ?? unixNow(), nonce: rand });
  return { payload, nonce: payload.subarray(16, 32), rand };
}

const ed = generateKeyPairSync('ed25519');
function signedDatagram(src: string, o: { door?: string; time?: number; privateKey?: KeyObject; macFor?: string } = {}): Buffer {
  return encodeSigned({ privateKey: o.privateKey ?? ed.privateKey, door: o.door ?? 'sig', source: addrKey(o.macFor ?? src), time: o.time ?? unixNow(), nonce: freshNonce() });
}

const ICMP_ECHO = 8;
const ICMP_ECHO_REPLY = 0;
const ICMPV6_ECHO_REQUEST = 128;
const ICMPV6_ECHO_REPLY = 129;

interface IcmpOpts {
  type?: number;
  code?: number;
  /** IP protocol / next header carrying it (default ICMP for IPv4, ICMPv6 for IPv6) */
  protocol?: number;
  ipv4?: Partial<Ipv4Spec>;
  ipv6?: Partial<Ipv6Spec>;
  frame?: Omit<FrameSpec, 'ipv4' | 'ipv6' | 'l4'>;
  /** keep only the first n bytes of the ICMP message (the IP length follows) */
  truncateTo?: number;
}

/** An ICMP (IPv4) or ICMPv6 (IPv6) message, echo request by default, with a valid checksum. */
function icmp(src: string, data: Buffer | string, o: IcmpOpts = {}): Buffer {
  const v6 = src.includes(':');
  const { dst } = to(src);
  const protocol = o.protocol ?? (v6 ? IPPROTO.ICMPV6 : IPPROTO.ICMP);
  const body = Buffer.from(data);
  const msg = Buffer.alloc(8 + body.length);
  msg[0] = o.type ?? (v6 ? ICMPV6_ECHO_REQUEST : ICMP_ECHO);
  msg[1] = o.code ?? 0;
  msg.writeUInt16BE(0x4b47, 4); // identifier
  msg.writeUInt16BE(1, 6); // sequence
  body.copy(msg, 8);
  // ICMPv6 sums over the IPv6 pseudo-header (IPv4 addresses as ::ffff:a.b.c.d); ICMP over the message alone
  const pseudo = protocol === IPPROTO.ICMPV6 ? [pseudoHeader(addrKey(src), addrKey(dst), IPPROTO.ICMPV6, msg.length)] : [];
  msg.writeUInt16BE(internetChecksum(...pseudo, msg), 2);
  const l4 = { proto: 'raw' as const, protocol, payload: o.truncateTo === undefined ? msg : msg.subarray(0, o.truncateTo) };
  return buildFrame({
    ...(o.frame ?? {}),
    ...(v6 ? { ipv6: { src, dst, ...(o.ipv6 ?? {}) } } : { ipv4: { src, dst, ...(o.ipv4 ?? {}) } }),
    l4,
  });
}

// ---- expectations -------------------------------------------------------------------------

type Proto = 'tcp' | 'udp' | 'icmp';
const evx = {
  grant: (door: string, port: number, protocol: Proto): EventExpect => ({ event: 'grant', door, port, protocol }),
  reject: (door: string, reason: NonNullable<GateEvent['reason']>, port: number, protocol: Proto = 'udp'): EventExpect => ({ event: 'reject', door, reason, port, protocol }),
  signed: (door: string, port: number): EventExpect => ({ event: 'signed', door, port, protocol: 'udp' }),
  knock: (door: string, step: number, port: number): EventExpect => ({ event: 'knock', door, step, steps: door === 'rot' ? ROT_LEN : 3, port, protocol: door === 'rot' ? 'udp' : 'tcp' }),
  reset: (door: string, step: number, port: number): EventExpect => ({ event: 'reset', door, step, reason: 'wrong_port', port, protocol: door === 'rot' ? 'udp' : 'tcp' }),
};


type RejectReason = 'malformed' | 'bad_mac' | 'stale' | 'replay' | 'spent' | 'payload';
const REJECT_COUNTER: Record<RejectReason, StatName> = {
  malformed: 'reject_malformed',
  bad_mac: 'reject_bad_mac',
  stale: 'reject_stale',
  replay: 'reject_replay',
  spent: 'reject_spent',
  payload: 'reject_payload',
};

/** A UDP knock to a single-packet door's port that is refused: dropped, counted, a REJECT event. */
function refused(description: string, frame: Buffer, door: string, port: number, reason: RejectReason): Row {
  return {
    description,
    frame,
    verdict: XDP_DROP,
    counter: 'drop_knock',
    map: NO_MAP_UPDATE,
    events: [evx.reject(door, reason, port)],
    counters: { [REJECT_COUNTER[reason]]: 1 },
  };
}

/** A single-packet knock that grants `door` to src (the source then holds `grantsAfter`). */
function opens(description: string, frame: Buffer, door: string, port: number, protocol: Proto, grantsAfter: string[], more: Partial<Row> = {}): Row {
  const src = frameSource(frame);
  assert.ok(src !== null, 'a frame with a source');
  return {
    description,
    frame,
    verdict: XDP_DROP,
    counter: 'drop_knock',
    map: { grants: { [src]: grantsAfter } },
    events: [evx.grant(door, port, protocol)],
    counters: { grant: 1 },
    ...more,
  };
}

const passes = (b: FlowBook, description: string, src: string, port: number): Row =>
  b.opens(description, src, port, (sport) => tcpFrom(to(src), sport, port));

// ---- the gate ----------------------------------------------------------------------------

/**
 * Runs fn on a harness gate, with the doors of YAML applied (secrets, and the clock in window w)
 * unless ctx is null.
 */
async function withGate(opts: HarnessOptions, fn: (h: GateHarness) => Promise<void>, ctx: PlanContext | null = at(W)): Promise<void> {
  await GateHarness.with(opts, async (h) => {
    if (ctx !== null) h.gate.applyDoors(DOORS, ctx);
    await fn(h);
  });
}

/** The .bss (struct kg_globals) as it is now. */
function globals(h: GateHarness | Gate): Buffer {
  const gate = h instanceof GateHarness ? h.gate : h;
  const v = gate.map(MAP.GLOBALS).lookup(Buffer.alloc(4));
  assert.ok(v, 'the .bss has its one entry');
  return v;
}
const icmpDoors = (h: GateHarness, gen: number): number => globals(h).readUInt16LE(OFFSETS.globals.icmp_doors + 2 * gen);

const bit = (h: GateHarness, name: string): number => 1 << h.slotOf(name);

// ---- sources ------------------------------------------------------------------------------

const A4 = '198.18.7.1';
const B4 = '198.18.7.2';
const C4 = '198.18.7.3';
const D4 = '198.18.7.4';
const E4 = '198.18.7.5';
const A6 = '2001:db8:7::1';
const B6 = '2001:db8:7::2';
const C6 = '2001:db8:7::3';

// =============================================================================================

kernelSuite('XDP doors: what applyDoors writes for the new types', () => {
  it('kg_doors slots, kg_ports single and knock bits, and icmp_doors of the generation', async () => {
    await withGate({}, async (h) => {
      assert.equal(icmpDoors(h, 0), 0, 'no ICMP doors before any applyDoors (gen 0)');
      assert.equal(icmpDoors(h, 1), 0, 'no ICMP doors before any applyDoors (gen 1)');
      await h.table([untouched('no doors yet: an echo request with the payload is just ICMP', icmp(A4, 'open-sesame'), 'pass_other_l4')]);

      const gen0 = h.gate.activeGen();
      h.gate.applyDoors(DOORS, at(W));
      const gen = h.gate.activeGen();
      assert.equal(gen, gen0 ^ 1, 'applyDoors flipped the generation');
      assert.equal(icmpDoors(h, gen), bit(h, 'ping'), 'icmp_doors of the new generation: the ping door only');
      assert.equal(icmpDoors(h, gen ^ 1), 0, 'the other generation is left as it was');

      const doors = new Map(h.gate.doors().map((d) => [d.door.name, d.door]));
      const spa = doors.get('spa')!;
      assert.equal(spa.type, DOOR_TYPE.SPA);
      assert.equal(spa.port, SPA_PORT);
      assert.equal(spa.proto, PROTO.UDP);
      assert.equal(spa.doorId, doorId('spa'));
      assert.ok(spa.key.equals(SPA_KEY), 'the spa key is in the slot');
      assert.equal(spa.maxSkewNs, 30_000_000_000n);
      const sig = doors.get('sig')!;
      assert.deepEqual([sig.type, sig.port, sig.proto, sig.doorId], [DOOR_TYPE.SIGNED, SIG_PORT, PROTO.UDP, doorId('sig')]);
      const pay = doors.get('pay')!;
      assert.deepEqual([pay.type, pay.port, pay.proto, pay.payload.toString()], [DOOR_TYPE.PAYLOAD, PAY_PORT, PROTO.UDP, 'knock']);
      const ping = doors.get('ping')!;
      assert.deepEqual([ping.type, ping.port, ping.proto, ping.payload.toString()], [DOOR_TYPE.PAYLOAD, 0, PROTO.ICMP, 'open-sesame']);
      const rot = doors.get('rot')!;
      assert.deepEqual([rot.type, rot.nsteps, rot.doorId, rot.windowNs], [DOOR_TYPE.ROTATING, ROT_LEN, doorId('rot'), BigInt(WINDOW_MS) * 1_000_000n]);
      assert.deepEqual(rot.range, { first: RANGE.first, last: RANGE.last, proto: PROTO.UDP });
      for (const w of [W - 1n, W]) {
        const s = Number(w & 1n) as 0 | 1;
        assert.equal(rot.win[s], w, `window ${w} is sequence ${s}`);
        assert.deepEqual(rotatingSteps(rot, s).map((x) => x.port), seqOf(w), `sequence ${s} holds window ${w}'s ports`);
        assert.ok(rot.validUntilNs[s] > monoNowNs(), `window ${w}'s sequence is live`);
      }
      assert.ok(rot.validUntilNs[Number(W & 1n)]! > rot.validUntilNs[Number((W - 1n) & 1n)]!, "window w's sequence outlives w-1's");

      const port = (proto: number, p: number) => {
        const v = h.gate.map(MAP.PORTS).lookup(Buffer.from(new Uint32Array([portIndex(gen, proto, p)]).buffer));
        assert.ok(v);
        return decodePortInfo(v);
      };
      assert.deepEqual(port(PROTO.UDP, SPA_PORT), { knockDoors: 0, protectDoors: 0, flowOnlyDoors: 0, singleDoors: bit(h, 'spa') });
      assert.deepEqual(port(PROTO.UDP, SIG_PORT), { knockDoors: 0, protectDoors: 0, flowOnlyDoors: 0, singleDoors: bit(h, 'sig') });
      assert.deepEqual(port(PROTO.UDP, PAY_PORT), { knockDoors: 0, protectDoors: 0, flowOnlyDoors: 0, singleDoors: bit(h, 'pay') });
      assert.equal(port(PROTO.TCP, SPA_PORT).singleDoors, 0, 'single-packet doors are UDP only');
      for (const p of [RANGE.first, 41500, RANGE.last]) assert.deepEqual(port(PROTO.UDP, p), { knockDoors: bit(h, 'rot'), protectDoors: 0, flowOnlyDoors: 0, singleDoors: 0 }, `${p}/udp`);
      for (const p of [RANGE.first - 1, RANGE.last + 1]) assert.equal(port(PROTO.UDP, p).knockDoors, 0, `${p}/udp is outside the range`);
      assert.equal(port(PROTO.TCP, 41500).knockDoors, 0, 'the range is UDP');
      assert.equal(port(PROTO.TCP, 2204).protectDoors, bit(h, 'ping'));
    }, null);
  });

  it('a change that removes the ping door stops ICMP knocks (and cuts its grants); putting it back restores them', async () => {
    await withGate({}, async (h) => {
      const b = new FlowBook();
      await h.table([
        opens(`${A4}: echo request "open-sesame" opens ping`, icmp(A4, 'open-sesame'), 'ping', 0, 'icmp', ['ping']),
        passes(b, `${A4}: SYN to 2204/tcp passes`, A4, 2204),
        {
          action: 'apply the doors without ping',
          run: (g) => {
            g.gate.applyDoors(WITHOUT_PING, at(W));
            assert.equal(icmpDoors(g, g.gate.activeGen()), 0, 'icmp_doors of the new generation is empty');
            assert.deepEqual(g.grantsOf(A4), [], "the removed door's grant is cut");
            assert.ok(!g.gate.doors().some((d) => d.door.name === 'ping'), 'no live door ping');
          },
        },
        untouched(`${B4}: echo request "open-sesame": no ICMP door, just ICMP (no counter, no event)`, icmp(B4, 'open-sesame'), 'pass_other_l4'),
        untouched(`${B6}: ICMPv6 echo request "open-sesame": just ICMPv6`, icmp(B6, 'open-sesame'), 'pass_other_l4'),
        untouched(`${B4}: a ping with other data: no reject_payload either`, icmp(B4, 'hello'), 'pass_other_l4'),
        {
          action: 'apply the doors with ping again',
          run: (g) => {
            g.gate.applyDoors(DOORS, at(W));
            assert.equal(icmpDoors(g, g.gate.activeGen()), bit(g, 'ping'), 'icmp_doors names the (new) slot of ping');
          },
        },
        opens(`${B4}: echo request "open-sesame" opens ping again`, icmp(B4, 'open-sesame'), 'ping', 0, 'icmp', ['ping']),
      ]);
    });
  });
});

// =============================================================================================

// Through both programs: single-packet doors read their payload at an offset from the frame's start.
framingSuites('XDP doors: spa', (framing) => {
  it('a right knock opens for its source only, IPv4 and IPv6, and burns its nonce', async () => {
    await withGate({ framing }, async (h) => {
      const b = new FlowBook();
      const k4 = spaDatagram(A4);
      const k6 = spaDatagram(A6);
      await h.table([
        deniedQuietly(`${A4}: SYN to 2201/tcp before the knock: dropped`, syn(A4, 2201)),
        opens(`${A4}: spa knock: GRANT (step 1), nonce recorded`, udp(A4, SPA_PORT, k4.payload), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [k4.nonce] }),
        passes(b, `${A4}: SYN to 2201/tcp passes`, A4, 2201),
        deniedQuietly(`${B4}: SYN to 2201/tcp from another source: dropped`, syn(B4, 2201)),
        deniedQuietly(`${A4}: SYN to 2202/tcp (door sig): drop_expired`, syn(A4, 2202), 'drop_expired'),
        opens(`${A6}: spa knock over IPv6: GRANT`, udp(A6, SPA_PORT, k6.payload), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [k6.nonce] }),
        passes(b, `${A6}: SYN to 2201/tcp passes`, A6, 2201),
        deniedQuietly(`${B6}: SYN to 2201/tcp from another IPv6 source: dropped`, syn(B6, 2201)),
        untouched(`${B4}: TCP SYN to ${SPA_PORT}/tcp: the door is UDP, the port is nobody's`, syn(B4, SPA_PORT), 'pass_unrelated'),
      ]);
      const s = spaDatagram(C4);
      const o = spaDatagram(D4);
      const x = spaDatagram(B6);
      await h.table([
        opens(`${C4}: in an 802.1Q tag`, buildFrame({ vlans: [{ vid: 7 }], ipv4: to(C4), l4: { proto: 'udp', dport: SPA_PORT, payload: s.payload } }), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [s.nonce] }),
        opens(`${D4}: with IPv4 options (the payload is found after them)`, buildFrame({ ipv4: { ...to(D4), options: Buffer.from([1, 1, 1, 1, 1, 1, 1, 0]) }, l4: { proto: 'udp', dport: SPA_PORT, payload: o.payload } }), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [o.nonce] }),
        opens(`${B6}: behind an IPv6 destination-options header`, buildFrame({ ipv6: { ...to(B6), extensions: [{ type: 'dest-options' }] }, l4: { proto: 'udp', dport: SPA_PORT, payload: x.payload } }), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [x.nonce] }),
      ]);
      assert.deepEqual(h.gate.grants().map((g) => g.door).sort(), ['spa', 'spa', 'spa', 'spa', 'spa']);
    });
  });

  it('replays, another source, stale and garbage timestamps, a wrong key: refused with their reason, nothing granted', async () => {
    await withGate({ framing }, async (h) => {
      const now = unixNow();
      const k = spaDatagram(A4, { time: now });
      // A timestamp whose value in ns wraps (mod 2^64) onto the gate's clock: only the range check
      // (ts <= 2^34) can refuse it, since ts * 1e9 would then look fresh.
      const wrapped = wrappingTimestamp(BigInt(Date.now()) * 1_000_000n);
      await h.table([
        opens(`${A4}: the knock`, udp(A4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [k.nonce] }),
        refused(`${A4}: the same 40 bytes again: replay (no new grant: kg_grants unchanged)`, udp(A4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'replay'),
        refused(`${B4}: the same 40 bytes from another source: bad MAC (the MAC covers the source)`, udp(B4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'bad_mac'),
        refused(`${B6}: the same 40 bytes from an IPv6 source: bad MAC`, udp(B6, SPA_PORT, k.payload), 'spa', SPA_PORT, 'bad_mac'),
        refused(`${B4}: a knock made for ${A4}, sent from ${B4}: bad MAC`, udp(B4, SPA_PORT, spaDatagram(B4, { macFor: A4 }).payload), 'spa', SPA_PORT, 'bad_mac'),
        refused(`${B6}: a knock made for ${B4}, sent from ${B6}: bad MAC`, udp(B6, SPA_PORT, spaDatagram(B6, { macFor: B4 }).payload), 'spa', SPA_PORT, 'bad_mac'),
        refused(`${B4}: a new knock (fresh time, valid MAC) reusing ${A4}'s nonce: replay`, udp(B4, SPA_PORT, spaDatagram(B4, { nonce: k.rand, time: sameWindow(now) }).payload), 'spa', SPA_PORT, 'replay'),
        refused(`${B4}: timestamp 120 s behind: stale`, udp(B4, SPA_PORT, spaDatagram(B4, { time: now - 120 }).payload), 'spa', SPA_PORT, 'stale'),
        refused(`${B4}: timestamp 120 s ahead: stale`, udp(B4, SPA_PORT, spaDatagram(B4, { time: now + 120 }).payload), 'spa', SPA_PORT, 'stale'),
        refused(`${B4}: timestamp 0: stale`, udp(B4, SPA_PORT, spaDatagram(B4, { time: 0 }).payload), 'spa', SPA_PORT, 'stale'),
        refused(`${B4}: timestamp 2^64-1: stale (no overflow)`, udp(B4, SPA_PORT, spaDatagram(B4, { time: (1n << 64n) - 1n }).payload), 'spa', SPA_PORT, 'stale'),
        refused(`${B4}: timestamp ${wrapped} (x 1e9 wraps to now mod 2^64): stale`, udp(B4, SPA_PORT, spaDatagram(B4, { time: wrapped }).payload), 'spa', SPA_PORT, 'stale'),
        refused(`${B4}: MAC under another key: bad MAC`, udp(B4, SPA_PORT, spaDatagram(B4, { key: WRONG_KEY }).payload), 'spa', SPA_PORT, 'bad_mac'),
        refused(`${B4}: a knock for another door (id of "sig"): malformed`, udp(B4, SPA_PORT, spaDatagram(B4, { door: 'sig' }).payload), 'spa', SPA_PORT, 'malformed'),
        refused(`${B4}: a signed datagram (112 bytes) to the spa port: malformed`, udp(B4, SPA_PORT, signedDatagram(B4, { door: 'spa' })), 'spa', SPA_PORT, 'malformed'),
        deniedQuietly(`${B4}: after all that, SYN to 2201/tcp still drops`, syn(B4, 2201)),
        deniedQuietly(`${B6}: and for the IPv6 source`, syn(B6, 2201)),
      ]);
      assert.deepEqual(h.gate.grants().map((g) => [formatAddress(g.addr), g.door]), [[A4, 'spa']]);
    });
  });

  it('every byte is covered: magic and door id malformed, a timestamp moved past max_skew stale, tag, nonce and MAC a bad MAC; lengths other than 40 malformed', async () => {
    await withGate({ framing }, async (h) => {
      const k = spaDatagram(A4);
      const rows: Row[] = [];
      for (let i = 0; i < KG.SPA_LEN; i++) {
        const t = Buffer.from(k.payload);
        t[i] = t[i]! ^ 0x01;
        const region = i < 4 ? 'magic' : i < 8 ? 'door id' : i < 16 ? 'timestamp' : i < 20 ? 'tag' : i < 32 ? 'nonce' : 'MAC';
        // The timestamp is checked before the tag and the MAC: a flip in bytes 8..14 moves it
        // by 256 s or more, past max_skew (30 s): stale; byte 15 moves it by 1 s: bad MAC.
        const reason = i < 8 ? 'malformed' : i < 15 ? 'stale' : 'bad_mac';
        rows.push(refused(`${A4}: byte ${i} (${region}) flipped`, udp(A4, SPA_PORT, t), 'spa', SPA_PORT, reason));
      }
      const cut = (n: number): Buffer => Buffer.from(k.payload.subarray(0, n));
      rows.push(
        refused(`${A4}: empty datagram`, udp(A4, SPA_PORT, Buffer.alloc(0)), 'spa', SPA_PORT, 'malformed'),
        refused(`${A4}: 8 bytes (magic and door id only)`, udp(A4, SPA_PORT, cut(8)), 'spa', SPA_PORT, 'malformed'),
        refused(`${A4}: 39 bytes`, udp(A4, SPA_PORT, cut(39)), 'spa', SPA_PORT, 'malformed'),
        refused(`${A4}: 41 bytes (the knock and one more)`, udp(A4, SPA_PORT, Buffer.concat([k.payload, Buffer.from([0])])), 'spa', SPA_PORT, 'malformed'),
        refused(`${A4}: 80 bytes (the knock twice)`, udp(A4, SPA_PORT, Buffer.concat([k.payload, k.payload])), 'spa', SPA_PORT, 'malformed'),
        refused(
          `${A4}: 40 bytes in the frame, but the UDP length says 39`,
          buildFrame({ ipv4: to(A4), l4: { proto: 'udp', dport: SPA_PORT, payload: k.payload, length: 8 + 39 } }),
          'spa',
          SPA_PORT,
          'malformed',
        ),
        refused(`${A4}: 39 bytes in the IP packet, the 40th in the Ethernet trailer`, Buffer.concat([udp(A4, SPA_PORT, cut(39)), k.payload.subarray(39)]), 'spa', SPA_PORT, 'malformed'),
        knockNoop(`${A4}: the knock as the first fragment of a datagram (MF): dropped, not judged`, buildFrame({ ipv4: { ...to(A4), moreFragments: true }, l4: { proto: 'udp', dport: SPA_PORT, payload: k.payload } })),
        // None of the refusals above burnt the nonce: the untouched datagram still opens.
        opens(`${A4}: the untouched datagram after all its forgeries: GRANT`, udp(A4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [k.nonce] }),
      );
      await h.table(rows);
    });
  });

  it('only a knock that verifies burns its nonce: forged and stale ones do not', async () => {
    await withGate({ framing }, async (h) => {
      const nonce = freshNonce().subarray(4);
      const now = unixNow();
      const stale = spaDatagram(A4, { nonce, time: now - 3600 });
      const forged = Buffer.from(spaDatagram(A4, { nonce, time: now }).payload);
      forged[39] = forged[39]! ^ 0x80;
      const good = spaDatagram(A4, { nonce, time: now });
      await h.table([
        refused(`${A4}: stale knock with nonce N`, udp(A4, SPA_PORT, stale.payload), 'spa', SPA_PORT, 'stale'),
        refused(`${A4}: forged MAC with nonce N`, udp(A4, SPA_PORT, forged), 'spa', SPA_PORT, 'bad_mac'),
        refused(`${B4}: a knock made for ${B4} with another key and nonce N`, udp(B4, SPA_PORT, spaDatagram(B4, { nonce, key: WRONG_KEY }).payload), 'spa', SPA_PORT, 'bad_mac'),
        opens(`${A4}: a fresh knock with nonce N: GRANT`, udp(A4, SPA_PORT, good.payload), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [good.nonce] }),
        refused(`${A4}: N once more with another fresh timestamp of the window: replay`, udp(A4, SPA_PORT, spaDatagram(A4, { nonce, time: sameWindow(now) }).payload), 'spa', SPA_PORT, 'replay'),
      ]);
    });
  });

  it('spoofed packets cannot undo a spa grant: other ports, a sequence reset, garbage to the spa port', async () => {
    await withGate({ framing }, async (h) => {
      const b = new FlowBook();
      const k = spaDatagram(A4);
      const [p0] = seqOf(W);
      const q = firstFreePort([...seqOf(W), ...seqOf(W - 1n)]);
      await h.table([
        opens(`${A4}: spa knock`, udp(A4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [k.nonce] }),
        knockNoop(`${A4}: a port of the rotating range that is no step`, udp(A4, q)),
        {
          description: `${A4}: 7000/tcp, step 1 of seq`,
          frame: syn(A4, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A4]: { seq: 1 } } },
          events: [evx.knock('seq', 1, 7000)],
          counters: { knock_step: 1 },
        },
        {
          description: `${A4}: 9000/tcp: seq reset (wrong port); the spa grant is untouched`,
          frame: syn(A4, 9000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A4]: {} } },
          events: [evx.reset('seq', 1, 9000)],
          counters: { reset_wrong_port: 1 },
        },
        {
          description: `${A4}: rot's first step ${p0}`,
          frame: udp(A4, p0!),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A4]: { rot: 1 } } },
          events: [evx.knock('rot', 1, p0!)],
          counters: { knock_step: 1 },
        },
        {
          description: `${A4}: then ${q}: rot reset (wrong port); the spa grant is untouched`,
          frame: udp(A4, q),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A4]: {} } },
          events: [evx.reset('rot', 1, q)],
          counters: { reset_wrong_port: 1 },
        },
        refused(`${A4}: garbage to the spa port`, udp(A4, SPA_PORT, Buffer.from('garbage')), 'spa', SPA_PORT, 'malformed'),
        refused(`${A4}: a forged knock to the spa port`, udp(A4, SPA_PORT, spaDatagram(A4, { key: WRONG_KEY }).payload), 'spa', SPA_PORT, 'bad_mac'),
        refused(`${A4}: its own knock replayed`, udp(A4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'replay'),
        refused(`${A4}: a payload-door miss`, udp(A4, PAY_PORT, Buffer.from('nope')), 'pay', PAY_PORT, 'payload'),
        passes(b, `${A4}: SYN to 2201/tcp still passes`, A4, 2201),
      ]);
      assert.deepEqual(h.grantsOf(A4), ['spa']);
    });
  });

  it('a source in brute-force cooldown can still use the single-packet doors (judged before the cooldown)', async () => {
    await withGate({ framing, bruteForce: { maxFailures: 1, failureWindowMs: 60_000, cooldownMs: 300_000 } }, async (h) => {
      h.gate.setSignedTokens(10);
      const b = new FlowBook();
      const k = spaDatagram(A4);
      const [p0] = seqOf(W);
      await h.table([
        {
          description: `${A4}: 7000/tcp, step 1 of seq`,
          frame: syn(A4, 7000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A4]: { seq: 1 } } },
          events: [evx.knock('seq', 1, 7000)],
          counters: { knock_step: 1 },
        },
        {
          description: `${A4}: 9000/tcp: reset, a failure, the first one (max 1): COOLDOWN`,
          frame: syn(A4, 9000),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A4]: {} }, penalty: { [A4]: { failures: 0, cooldown: true } } },
          events: [evx.reset('seq', 1, 9000), ev.cooldown(1, 9000)],
          counters: { reset_wrong_port: 1, failure: 1, cooldown: 1 },
        },
        knockNoop(`${A4}: 7000/tcp in cooldown: ignored`, syn(A4, 7000), { cooldown_knock: 1 }),
        knockNoop(`${A4}: rot's first step ${p0} in cooldown: ignored (rotating doors are sequences)`, udp(A4, p0!), { cooldown_knock: 1 }),
        opens(`${A4}: spa knock in cooldown: GRANT`, udp(A4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [k.nonce] }),
        opens(`${A4}: payload knock in cooldown: GRANT`, udp(A4, PAY_PORT, Buffer.from('knock')), 'pay', PAY_PORT, 'udp', ['pay', 'spa']),
        opens(`${A4}: ICMP knock in cooldown: GRANT`, icmp(A4, 'open-sesame'), 'ping', 0, 'icmp', ['pay', 'ping', 'spa']),
        {
          description: `${A4}: signed knock in cooldown: passed to the daemon`,
          frame: udp(A4, SIG_PORT, signedDatagram(A4)),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: NO_MAP_UPDATE,
          events: [evx.signed('sig', SIG_PORT)],
          counters: { signed_queued: 1 },
        },
        passes(b, `${A4}: SYN to 2201/tcp passes`, A4, 2201),
        passes(b, `${A4}: SYN to 2203/tcp passes`, A4, 2203),
        passes(b, `${A4}: SYN to 2204/tcp passes`, A4, 2204),
      ]);
      assert.deepEqual(h.penaltyOf(A4), { failures: 0, cooldown: true }, 'still in cooldown');
    });
  });

  it('refusals spend knock tokens (else knock_suppressed); grants and signed records do not', async () => {
    await withGate({ framing, knockTokens: 1 }, async (h) => {
      h.gate.setSignedTokens(10);
      const k = spaDatagram(A4);
      const knockTokens = (): bigint => globals(h).readBigInt64LE(OFFSETS.globals.knock_tokens);
      await h.table([
        refused(`${B4}: 39-byte spa datagram, the one token`, udp(B4, SPA_PORT, k.payload.subarray(0, 39)), 'spa', SPA_PORT, 'malformed'),
        { action: 'the token is spent', run: () => assert.equal(knockTokens(), 0n) },
        knockNoop(`${B4}: forged spa knock, no token`, udp(B4, SPA_PORT, spaDatagram(B4, { key: WRONG_KEY }).payload), { reject_bad_mac: 1, knock_suppressed: 1 }),
        knockNoop(`${B4}: stale spa knock, no token`, udp(B4, SPA_PORT, spaDatagram(B4, { time: unixNow() - 600 }).payload), { reject_stale: 1, knock_suppressed: 1 }),
        knockNoop(`${B4}: payload miss, no token`, udp(B4, PAY_PORT, Buffer.from('nope')), { reject_payload: 1, knock_suppressed: 1 }),
        knockNoop(`${B4}: malformed signed, no token`, udp(B4, SIG_PORT, Buffer.alloc(112)), { reject_malformed: 1, knock_suppressed: 1 }),
        {
          description: `${B4}: ICMP payload miss, no token: passes, counted`,
          frame: icmp(B4, 'open-sesamE'),
          verdict: XDP_PASS,
          counter: 'pass_other_l4',
          map: NO_MAP_UPDATE,
          events: NO_EVENT,
          counters: { reject_payload: 1, knock_suppressed: 1 },
        },
        opens(`${A4}: spa knock: its GRANT needs no token`, udp(A4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'udp', ['spa'], { nonces: [k.nonce] }),
        opens(`${A4}: payload knock: GRANT`, udp(A4, PAY_PORT, Buffer.from('knock')), 'pay', PAY_PORT, 'udp', ['pay', 'spa']),
        {
          description: `${A4}: signed knock: its record needs no knock token`,
          frame: udp(A4, SIG_PORT, signedDatagram(A4)),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: NO_MAP_UPDATE,
          events: [evx.signed('sig', SIG_PORT)],
          counters: { signed_queued: 1 },
        },
        { action: 'still no token, never below 0', run: () => assert.equal(knockTokens(), 0n) },
        { action: 'refill: 1 token', run: (g) => g.gate.setKnockTokens(1) },
        refused(`${A4}: its knock replayed, after the refill`, udp(A4, SPA_PORT, k.payload), 'spa', SPA_PORT, 'replay'),
      ]);
    });
  });
});

// =============================================================================================

kernelSuite('XDP doors: signed', () => {
  it('passed to the daemon while signed tokens last; length, magic and door id checked; the kernel never grants', async () => {
    await withGate({}, async (h) => {
      const signedTokens = (): bigint => globals(h).readBigInt64LE(OFFSETS.globals.signed_tokens);
      const queued = (description: string, frame: Buffer): Row => ({
        description,
        frame,
        verdict: XDP_DROP,
        counter: 'drop_knock',
        map: NO_MAP_UPDATE,
        events: [evx.signed('sig', SIG_PORT)],
        counters: { signed_queued: 1 },
      });
      const good = signedDatagram(A4);
      const badMagic = Buffer.from(good);
      badMagic[3] = 0x32; // "KGE2"
      const badSig = Buffer.from(good);
      badSig[111] = badSig[111]! ^ 0xff;
      const other = generateKeyPairSync('ed25519');
      await h.table([
        { action: 'signed tokens: 2', run: (g) => g.gate.setSignedTokens(2) },
        queued(`${A4}: a signed knock: SIGNED record, no grant`, udp(A4, SIG_PORT, good)),
        queued(`${A6}: a signed knock over IPv6`, udp(A6, SIG_PORT, signedDatagram(A6))),
        knockNoop(`${A4}: a third, no token left: signed_suppressed`, udp(A4, SIG_PORT, signedDatagram(A4)), { signed_suppressed: 1 }),
        { action: 'signed tokens: 1', run: (g) => g.gate.setSignedTokens(1) },
        refused(`${B4}: 111 bytes: malformed`, udp(B4, SIG_PORT, good.subarray(0, 111)), 'sig', SIG_PORT, 'malformed'),
        refused(`${B4}: 113 bytes: malformed`, udp(B4, SIG_PORT, Buffer.concat([good, Buffer.from([0])])), 'sig', SIG_PORT, 'malformed'),
        refused(`${B4}: empty: malformed`, udp(B4, SIG_PORT, Buffer.alloc(0)), 'sig', SIG_PORT, 'malformed'),
        refused(`${B4}: magic KGE2: malformed`, udp(B4, SIG_PORT, badMagic), 'sig', SIG_PORT, 'malformed'),
        refused(`${B4}: a signed knock for door spa: malformed (door id)`, udp(B4, SIG_PORT, signedDatagram(B4, { door: 'spa' })), 'sig', SIG_PORT, 'malformed'),
        refused(`${B4}: an spa datagram (40 bytes): malformed`, udp(B4, SIG_PORT, spaDatagram(B4, { door: 'sig' }).payload), 'sig', SIG_PORT, 'malformed'),
        refused(
          `${B4}: 112 bytes in the frame, the UDP length says 111: malformed`,
          buildFrame({ ipv4: to(B4), l4: { proto: 'udp', dport: SIG_PORT, payload: good, length: 8 + 111 } }),
          'sig',
          SIG_PORT,
          'malformed',
        ),
        knockNoop(`${B4}: as the first fragment of a datagram: dropped, not judged`, buildFrame({ ipv4: { ...to(B4), moreFragments: true }, l4: { proto: 'udp', dport: SIG_PORT, payload: good } })),
        { action: 'the refusals took no signed token', run: () => assert.equal(signedTokens(), 1n) },
        queued(`${B4}: a good one takes the token left`, udp(B4, SIG_PORT, signedDatagram(B4))),
        { action: 'signed tokens: 5', run: (g) => g.gate.setSignedTokens(5) },
        // The kernel does not verify: what the daemon refuses still goes up.
        queued(`${B4}: a broken signature: still passed up (the daemon verifies)`, udp(B4, SIG_PORT, badSig)),
        queued(`${B4}: an hour old: still passed up`, udp(B4, SIG_PORT, signedDatagram(B4, { time: unixNow() - 3600 }))),
        queued(`${B4}: signed by an unknown key: still passed up`, udp(B4, SIG_PORT, signedDatagram(B4, { privateKey: other.privateKey }))),
        queued(`${B4}: made for ${A4}: still passed up`, udp(B4, SIG_PORT, signedDatagram(B4, { macFor: A4 }))),
        queued(`${A4}: the first knock replayed: still passed up`, udp(A4, SIG_PORT, good)),
        { action: '5 - 5 tokens', run: () => assert.equal(signedTokens(), 0n) },
        refused(`${B4}: a good signed knock to the spa port: malformed there`, udp(B4, SPA_PORT, signedDatagram(B4, { door: 'sig' })), 'spa', SPA_PORT, 'malformed'),
        deniedQuietly(`${A4}: SYN to 2202/tcp: the kernel granted nothing`, syn(A4, 2202)),
        deniedQuietly(`${B4}: SYN to 2202/tcp: nothing`, syn(B4, 2202)),
      ]);
      assert.deepEqual(h.gate.grants(), [], 'no grant at all');
    });
  });

  it('a SIGNED ring record is a struct kg_signed_event: the event, then the whole datagram', async () => {
    // The harness's reader cuts records to 48 bytes: this gate has a reader of its own.
    await withPinDir(async (dir) => {
      const gate = Gate.open({ pinPath: `${dir}/gate`, sources: 1024, flows: 1024, firstKnockFilterBytes: 1024 * 1024, eventRingBytes: 64 * 1024, logger: silentLogger });
      const records: Buffer[] = [];
      const reader = new RingBufferReader(gate.map(MAP.EVENTS).fd, (r) => records.push(r));
      try {
        gate.setKnockTokens(100);
        gate.setSignedTokens(100);
        gate.applyDoors(DOORS, at(W));
        const slot = gate.doors().find((d) => d.door.name === 'sig')!.slot;
        for (const src of [A4, A6]) {
          const datagram = signedDatagram(src);
          records.length = 0;
          const t0 = monoNowNs();
          const { retval } = progTestRun(gate.progFd, udp(src, SIG_PORT, datagram), { ifindex: TEST_IFINDEX });
          const t1 = monoNowNs();
          assert.equal(retval, XDP_DROP, `${src}: the signed knock is dropped`);
          reader.consume();
          assert.equal(records.length, 1, `${src}: one record`);
          const raw = records[0]!;
          assert.equal(raw.length, SIZEOF.signed_event, `${src}: the record is 48 + 112 bytes`);
          const e = decodeSignedEvent(raw);
          assert.equal(e.type, EVENT.SIGNED);
          assert.equal(e.door, slot, 'the door slot');
          assert.equal(e.port, SIG_PORT);
          assert.equal(e.proto, PROTO.UDP);
          assert.ok(e.addr.equals(addrKey(src)), 'the source as the gate saw it');
          assert.equal(e.ifindex, TEST_IFINDEX);
          assert.ok(e.tsNs >= t0 && e.tsNs <= t1, 'stamped inside the run');
          assert.deepEqual([e.expiresNs, e.doors, e.step, e.reason], [0n, 0, 0, 0]);
          assert.ok(e.payload.equals(datagram), `${src}: the record's payload is the datagram, byte for byte`);
          // What the daemon verifies with: the source from the record, the signed bytes from the payload.
          assert.ok(edVerify(null, signedMessage(e.addr, e.payload), ed.publicKey, e.payload.subarray(48)), 'the signature verifies from the record alone');
        }
        // A refusal on the same ring is a plain 48-byte struct kg_event.
        records.length = 0;
        progTestRun(gate.progFd, udp(B4, SIG_PORT, Buffer.alloc(111)), { ifindex: TEST_IFINDEX });
        reader.consume();
        assert.deepEqual(records.map((r) => [r.length, r[OFFSETS.event.type], r[OFFSETS.event.reason]]), [[SIZEOF.event, EVENT.REJECT, 1]]);
        // Out of signed tokens: no record at all.
        gate.setSignedTokens(0);
        records.length = 0;
        progTestRun(gate.progFd, udp(B4, SIG_PORT, signedDatagram(B4)), { ifindex: TEST_IFINDEX });
        reader.consume();
        assert.deepEqual(records, []);
        assert.equal(gate.stats().signed_suppressed, 1n);
        assert.equal(gate.stats().signed_queued, 2n);
        assert.deepEqual(gate.grants(), []);
      } finally {
        reader.close();
        gate.destroy();
      }
    });
  });
});

// =============================================================================================

// Through both programs: single-packet doors read their payload at an offset from the frame's start.
framingSuites('XDP doors: payload', (framing) => {
  it('UDP: a datagram that starts with the bytes opens; anything else is refused; both dropped', async () => {
    await withGate({ framing }, async (h) => {
      const b = new FlowBook();
      const pay = (src: string, data: string | Buffer): Buffer => udp(src, PAY_PORT, Buffer.from(data));
      await h.table([
        opens(`${A4}: "knock": GRANT`, pay(A4, 'knock'), 'pay', PAY_PORT, 'udp', ['pay']),
        passes(b, `${A4}: SYN to 2203/tcp passes`, A4, 2203),
        opens(`${A4}: "knock" again: GRANT again (expiry moved on)`, pay(A4, 'knock'), 'pay', PAY_PORT, 'udp', ['pay']),
        opens(`${B4}: "knockknock and more": GRANT (a prefix)`, pay(B4, 'knockknock and more'), 'pay', PAY_PORT, 'udp', ['pay']),
        opens(`${A6}: "knock" over IPv6: GRANT`, pay(A6, 'knock'), 'pay', PAY_PORT, 'udp', ['pay']),
        refused(`${C4}: "knoc" (4 of 5 bytes)`, pay(C4, 'knoc'), 'pay', PAY_PORT, 'payload'),
        refused(`${C4}: empty`, pay(C4, ''), 'pay', PAY_PORT, 'payload'),
        refused(`${C4}: "Knock"`, pay(C4, 'Knock'), 'pay', PAY_PORT, 'payload'),
        refused(`${C4}: "knocK"`, pay(C4, 'knocK'), 'pay', PAY_PORT, 'payload'),
        refused(`${C4}: " knock" (not at the start)`, pay(C4, ' knock'), 'pay', PAY_PORT, 'payload'),
        refused(`${C4}: an spa datagram`, pay(C4, spaDatagram(C4).payload), 'pay', PAY_PORT, 'payload'),
        refused(`${B6}: "xnock" over IPv6`, pay(B6, 'xnock'), 'pay', PAY_PORT, 'payload'),
        refused(`${C4}: "knock" in the frame, the UDP length says 4 bytes`, buildFrame({ ipv4: to(C4), l4: { proto: 'udp', dport: PAY_PORT, payload: Buffer.from('knock'), length: 8 + 4 } }), 'pay', PAY_PORT, 'payload'),
        refused(`${C4}: "kno" in the packet, "ck" in the Ethernet trailer`, Buffer.concat([pay(C4, 'kno'), Buffer.from('ck')]), 'pay', PAY_PORT, 'payload'),
        knockNoop(`${C4}: "knock" as the first fragment (MF): dropped, not judged`, buildFrame({ ipv4: { ...to(C4), moreFragments: true }, l4: { proto: 'udp', dport: PAY_PORT, payload: Buffer.from('knock') } })),
        untouched(`${C4}: a later fragment: no port to judge`, buildFrame({ ipv4: { ...to(C4), fragmentOffset: 8, protocol: IPPROTO.UDP }, l4: { proto: 'raw', protocol: IPPROTO.UDP, payload: Buffer.from('knock') } }), 'pass_fragment'),
        untouched(`${C4}: TCP SYN to ${PAY_PORT}/tcp: the door is UDP`, syn(C4, PAY_PORT), 'pass_unrelated'),
        refused(`${C4}: "knock" to the spa port: that is spa's (malformed)`, udp(C4, SPA_PORT, Buffer.from('knock')), 'spa', SPA_PORT, 'malformed'),
        untouched(`${C4}: "knock" to ${PAY_PORT + 10}/udp: nobody's port`, udp(C4, PAY_PORT + 10, Buffer.from('knock')), 'pass_unrelated'),
        deniedQuietly(`${C4}: SYN to 2203/tcp: no grant`, syn(C4, 2203)),
      ]);
    });
  });

  it('ICMP/ICMPv6: an echo request whose data starts with the bytes opens (dropped); other pings pass; other ICMP is not judged', async () => {
    await withGate({ framing }, async (h) => {
      const b = new FlowBook();
      const missed = (description: string, frame: Buffer): Row => ({
        description,
        frame,
        verdict: XDP_PASS,
        counter: 'pass_other_l4',
        map: NO_MAP_UPDATE,
        events: [evx.reject('ping', 'payload', 0, 'icmp')],
        counters: { reject_payload: 1 },
      });
      const pattern = Buffer.from(Array.from({ length: 56 }, (_, i) => i));
      await h.table([
        opens(`${A4}: echo request "open-sesame": GRANT, dropped`, icmp(A4, 'open-sesame'), 'ping', 0, 'icmp', ['ping']),
        passes(b, `${A4}: SYN to 2204/tcp passes`, A4, 2204),
        deniedQuietly(`${A4}: SYN to 2203/tcp (door pay): drop_expired`, syn(A4, 2203), 'drop_expired'),
        opens(`${A6}: ICMPv6 echo request "open-sesame and more": GRANT`, icmp(A6, 'open-sesame and more'), 'ping', 0, 'icmp', ['ping']),
        passes(b, `${A6}: SYN to 2204/tcp passes`, A6, 2204),
        opens(`${C4}: in an 802.1Q tag: GRANT`, icmp(C4, 'open-sesame', { frame: { vlans: [{ vid: 9 }] } }), 'ping', 0, 'icmp', ['ping']),
        opens(
          `${C6}: ICMPv6 behind an atomic fragment header (offset 0, M clear: a whole datagram): GRANT`,
          icmp(C6, 'open-sesame', { ipv6: { extensions: [{ type: 'fragment', offset: 0, more: false }] } }),
          'ping',
          0,
          'icmp',
          ['ping'],
        ),
        missed(`${B4}: "open-sesam" (one byte short)`, icmp(B4, 'open-sesam')),
        missed(`${B4}: an ordinary ping (56 bytes of pattern)`, icmp(B4, pattern)),
        missed(`${B4}: an echo request with no data`, icmp(B4, '')),
        missed(`${B4}: "Open-sesame"`, icmp(B4, 'Open-sesame')),
        missed(`${B6}: ICMPv6 "open sesame"`, icmp(B6, 'open sesame')),
        missed(`${B4}: "open-sesa" in the packet, "me" in the Ethernet trailer`, Buffer.concat([icmp(B4, 'open-sesa'), Buffer.from('me')])),
        untouched(`${B4}: echo reply "open-sesame": not a knock`, icmp(B4, 'open-sesame', { type: ICMP_ECHO_REPLY }), 'pass_other_l4'),
        untouched(`${B4}: type 8 code 1: not an echo request`, icmp(B4, 'open-sesame', { code: 1 }), 'pass_other_l4'),
        untouched(`${B4}: destination unreachable carrying "open-sesame"`, icmp(B4, 'open-sesame', { type: 3, code: 3 }), 'pass_other_l4'),
        untouched(`${B4}: type 128 over IPv4 (ICMPv6's echo request number)`, icmp(B4, 'open-sesame', { type: ICMPV6_ECHO_REQUEST }), 'pass_other_l4'),
        untouched(`${B4}: ICMPv6 (58) in IPv4, type 128`, icmp(B4, 'open-sesame', { protocol: IPPROTO.ICMPV6, type: ICMPV6_ECHO_REQUEST }), 'pass_other_l4'),
        untouched(`${B6}: ICMPv6 echo reply "open-sesame"`, icmp(B6, 'open-sesame', { type: ICMPV6_ECHO_REPLY }), 'pass_other_l4'),
        untouched(`${B6}: ICMPv6 type 8 (ICMPv4's echo request number)`, icmp(B6, 'open-sesame', { type: ICMP_ECHO }), 'pass_other_l4'),
        untouched(`${B6}: ICMPv4 (1) in IPv6, type 8`, icmp(B6, 'open-sesame', { protocol: IPPROTO.ICMP, type: ICMP_ECHO }), 'pass_other_l4'),
        untouched(`${B4}: a 4-byte ICMP message (no echo header)`, icmp(B4, '', { truncateTo: 4 }), 'pass_other_l4'),
        untouched(`${B4}: echo request "open-sesame" as a first fragment (MF): not a knock`, icmp(B4, 'open-sesame', { ipv4: { moreFragments: true } }), 'pass_other_l4'),
        untouched(`${B4}: a later fragment starting "open-sesame"`, icmp(B4, 'open-sesame', { ipv4: { fragmentOffset: 8 } }), 'pass_fragment'),
        untouched(`${B6}: ICMPv6 echo request behind a fragment header (M set): not a knock`, icmp(B6, 'open-sesame', { ipv6: { extensions: [{ type: 'fragment', more: true }] } }), 'pass_other_l4'),
        untouched(`${B6}: ICMPv6 after a later fragment header`, icmp(B6, 'open-sesame', { ipv6: { extensions: [{ type: 'fragment', offset: 8 }] } }), 'pass_fragment'),
        untouched(`${B4}: UDP "open-sesame" to an unrelated port: the ICMP door is ICMP`, udp(B4, 7, Buffer.from('open-sesame')), 'pass_unrelated'),
        deniedQuietly(`${B4}: SYN to 2204/tcp: none of that opened the door`, syn(B4, 2204)),
        deniedQuietly(`${B6}: nor for the IPv6 source`, syn(B6, 2204)),
      ]);
    });
  });
});

// =============================================================================================

/** The lowest port of the range in none of the given sequences, nor next to their ports. */
function firstFreePort(taken: readonly number[]): number {
  for (let p = RANGE.first + 1; p < RANGE.last; p++) if (!taken.includes(p)) return p;
  throw new Error('no free port in the range');
}

/** The rows that knock a rotating sequence from src: STEP 1, STEP 2, then `last` for the last step. */
function rotKnock(src: string, ports: readonly number[], last: (description: string, frame: Buffer) => Row, what: string): Row[] {
  const p2 = ports[2];
  assert.ok(p2 !== undefined);
  return [...rotSteps(src, ports, what), last(`${src}: ${what} step 3 (${p2})`, udp(src, p2))];
}

/** The first two steps of a rotating sequence from src: STEP 1, STEP 2. */
function rotSteps(src: string, ports: readonly number[], what: string): Row[] {
  const [p0, p1] = ports;
  assert.ok(p0 !== undefined && p1 !== undefined);
  return [
    {
      description: `${src}: ${what} step 1 (${p0})`,
      frame: udp(src, p0),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [src]: { rot: 1 } } },
      events: [evx.knock('rot', 1, p0)],
      counters: { knock_step: 1 },
    },
    {
      description: `${src}: ${what} step 2 (${p1})`,
      frame: udp(src, p1),
      verdict: XDP_DROP,
      counter: 'drop_knock',
      map: { progress: { [src]: { rot: 2 } } },
      events: [evx.knock('rot', 2, p1)],
      counters: { knock_step: 1 },
    },
  ];
}

const rotGrant = (window: bigint, grantsAfter: string[] = ['rot']) => (description: string, frame: Buffer): Row => {
  const src = frameSource(frame)!;
  return {
    description: `${description}: GRANT`,
    frame,
    verdict: XDP_DROP,
    counter: 'drop_knock',
    map: { progress: { [src]: {} }, grants: { [src]: grantsAfter } },
    events: [evx.grant('rot', udpPortOf(frame), 'udp')],
    counters: { grant: 1 },
    spent: { rot: [window] },
  };
};

const rotSpent = (description: string, frame: Buffer): Row => {
  const src = frameSource(frame)!;
  return {
    description: `${description}: the window is spent: REJECT, no grant`,
    frame,
    verdict: XDP_DROP,
    counter: 'drop_knock',
    map: { progress: { [src]: {} } },
    events: [evx.reject('rot', 'spent', udpPortOf(frame))],
    counters: { reject_spent: 1 },
  };
};

/** The destination port of a UDP knock frame. */
function udpPortOf(frame: Buffer): number {
  const t = l4OfFrame(frame);
  assert.ok(t !== null, 'a frame with an L4 header');
  return frame.readUInt16BE(t.l4 + 2);
}

/** Knocking ports that start nothing (steps `from`, `from` + 1, ... of a sequence): each a quiet drop. */
const rotNothing = (src: string, ports: readonly number[], what: string, from = 1): Row[] =>
  ports.map((p, i) => knockNoop(`${src}: ${what} step ${i + from} (${p}): nothing`, udp(src, p)));

kernelSuite('XDP doors: rotating', () => {
  const sW = seqOf(W);
  const sW1 = seqOf(W - 1n);
  const sW2 = seqOf(W - 2n);
  const sNext = seqOf(W + 1n);
  const sOther = seqOf(W, OTHER_SECRET);

  it('test data: the sequences used below do not collide where a test relies on it', () => {
    const firsts = [sW[0], sW1[0]];
    for (const [name, s] of [['w-2', sW2], ['another secret', sOther]] as const) {
      for (const p of s) assert.ok(!firsts.includes(p), `${name}'s port ${p} is not a first step of w or w-1`);
    }
    assert.notEqual(sW[0]! % 2, sW1[0]! % 2, 'first ports of consecutive windows differ in parity');
    for (const p of sW.slice(1)) assert.ok(p !== sW1[0], `w's later step ${p} is not w-1's first`);
    for (const p of sW1) assert.ok(p !== sW[0] && p !== sNext[0], `w-1's port ${p} is no first step of w or w+1`);
    for (const p of sW1.slice(1)) assert.ok(p !== sW[0], `w-1's later step ${p} is not w's first`);
    for (const p of sNext) assert.ok(p !== seqOf(W + 2n)[0] && p !== seqOf(W + 3n)[0], `w+1's port ${p} is no first step of w+2 or w+3`);
  });

  it("window w's sequence opens once; again (any source) it is spent; w-1's opens once; w-2's and another secret's never", async () => {
    await withGate({}, async (h) => {
      const b = new FlowBook();
      await h.table([
        deniedQuietly(`${A4}: SYN to 2205/tcp before: dropped`, syn(A4, 2205)),
        ...rotKnock(A4, sW, rotGrant(W), "window w's"),
        { action: 'kg_spent: (rot, w)', run: (g) => assert.deepEqual(g.gate.spentWindows(), [{ doorId: doorId('rot'), window: W }]) },
        passes(b, `${A4}: SYN to 2205/tcp passes`, A4, 2205),
        deniedQuietly(`${B4}: SYN to 2205/tcp from another source: dropped`, syn(B4, 2205)),
        ...rotKnock(A4, sW, rotSpent, "window w's, again,"),
        ...rotKnock(B4, sW, rotSpent, "window w's (a replay from another source)"),
        ...rotKnock(A6, sW, rotSpent, "window w's (over IPv6)"),
        ...rotNothing(C4, sW2, "window w-2's"),
        ...rotNothing(C4, sOther, "another secret's window-w"),
        ...rotKnock(D4, sW1, rotGrant(W - 1n), "window w-1's (a client whose clock is behind)"),
        ...rotKnock(E4, sW1, rotSpent, "window w-1's, again,"),
        { action: 'kg_spent: w and w-1', run: (g) => assert.deepEqual(g.gate.spentWindows().map((s) => s.window).sort(), [W - 1n, W].sort()) },
        passes(b, `${D4}: SYN to 2205/tcp passes`, D4, 2205),
        deniedQuietly(`${B4}: SYN to 2205/tcp: still nothing`, syn(B4, 2205)),
        deniedQuietly(`${C4}: SYN to 2205/tcp: nothing`, syn(C4, 2205)),
        { action: 'no knock tokens', run: (g) => g.gate.setKnockTokens(0) },
        {
          description: `${E4}: w's step 1 without a knock token: counted, no event`,
          frame: udp(E4, sW[0]!),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [E4]: { rot: 1 } } },
          events: NO_EVENT,
          counters: { knock_step: 1, knock_suppressed: 1 },
        },
        {
          description: `${E4}: w's step 2 (a STEP event of step 2 is not budgeted)`,
          frame: udp(E4, sW[1]!),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [E4]: { rot: 2 } } },
          events: [evx.knock('rot', 2, sW[1]!)],
          counters: { knock_step: 1 },
        },
        {
          description: `${E4}: w's step 3: spent, and its REJECT needs a knock token`,
          frame: udp(E4, sW[2]!),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [E4]: {} } },
          events: NO_EVENT,
          counters: { reject_spent: 1, knock_suppressed: 1 },
        },
      ]);
      assert.deepEqual(
        h.gate.grants().map((g) => `${formatAddress(g.addr)} ${g.door}`).sort(),
        [`${A4} rot`, `${D4} rot`].sort(),
      );
    });
  });

  it('a port of the range between steps resets progress; a scan of the whole range opens nothing', async () => {
    await withGate({}, async (h) => {
      const q = firstFreePort([...sW, ...sW1]);
      await h.table([
        {
          description: `${A4}: w's step 1 (${sW[0]})`,
          frame: udp(A4, sW[0]!),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A4]: { rot: 1 } } },
          events: [evx.knock('rot', 1, sW[0]!)],
          counters: { knock_step: 1 },
        },
        {
          description: `${A4}: ${q}, a port of the range that is no step: reset`,
          frame: udp(A4, q),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [A4]: {} } },
          events: [evx.reset('rot', 1, q)],
          counters: { reset_wrong_port: 1 },
        },
        ...rotNothing(A4, sW.slice(1), "after the reset, w's", 2),
        ...rotSteps(B4, sW, "w's"),
        {
          description: `${B4}: ${q} at step 2: reset`,
          frame: udp(B4, q),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [B4]: {} } },
          events: [evx.reset('rot', 2, q)],
          counters: { reset_wrong_port: 1 },
        },
        knockNoop(`${B4}: w's step 3 after the reset: nothing`, udp(B4, sW[2]!)),
        {
          description: `${B4}: step 1 again: a fresh start`,
          frame: udp(B4, sW[0]!),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [B4]: { rot: 1 } } },
          events: [evx.knock('rot', 1, sW[0]!)],
          counters: { knock_step: 1 },
        },
        knockNoop(`${B4}: the same port again: a retransmission`, udp(B4, sW[0]!), { retransmit: 1 }),
        {
          description: `${B4}: a datagram to a port outside the range (${RANGE.last + 1}) passes, and resets too (an unrelated knock candidate)`,
          frame: udp(B4, RANGE.last + 1),
          verdict: XDP_PASS,
          counter: 'pass_unrelated',
          map: { progress: { [B4]: {} } },
          events: [evx.reset('rot', 1, RANGE.last + 1)],
          counters: { reset_wrong_port: 1 },
        },
        knockNoop(`${B4}: so step 2 now starts nothing`, udp(B4, sW[1]!)),
      ]);
      h.drainEvents();

      // Scans: every port of the range, ascending then descending, from fresh sources.
      for (const [src, ports] of [
        [C4, range(RANGE.first, RANGE.last)],
        [D4, range(RANGE.first, RANGE.last).reverse()],
        [B6, range(RANGE.first, RANGE.last)],
      ] as const) {
        const s0 = h.stats();
        const events: KEvent[] = [];
        ports.forEach((p, i) => {
          assert.equal(h.runFast(udp(src, p)), XDP_DROP, `${src}: ${p}/udp is a knock port: dropped`);
          if (i % 100 === 99) events.push(...h.drainEvents());
        });
        events.push(...h.drainEvents());
        const d = statDelta(s0, h.stats());
        assert.equal(d.drop_knock, ports.length, `${src}: every packet of the scan was a knock`);
        assert.equal(d.grant, 0, `${src}: the scan opened nothing`);
        assert.equal(d.reject_spent, 0, `${src}: not even a spent window`);
        assert.equal(d.event_lost, 0, `${src}: no event lost`);
        assert.ok(!events.some((e) => e.type === EVENT.GRANT || e.type === EVENT.REJECT), `${src}: no GRANT or REJECT event`);
        assert.ok(d.knock_step > 0 && d.reset_wrong_port > 0, `${src}: the scan did start sequences, and each was reset`);
        assert.deepEqual(h.grantsOf(src), [], `${src}: no grant`);
      }
      assert.deepEqual(h.gate.spentWindows(), [], 'no window was spent');
    });
  });

  it('an applyDoors into window w+1 keeps w (and progress on it), voids w-1 and prunes its spent record', async () => {
    await withGate({}, async (h) => {
      const b = new FlowBook();
      let epoch = -1;
      await h.table([
        ...rotKnock(A4, sW1, rotGrant(W - 1n), "w-1's"),
        ...rotSteps(B4, sW, "w's"),
        ...rotSteps(C4, sW1, "w-1's"),
        {
          action: 'apply the same doors with the clock in window w+1',
          run: (g) => {
            epoch = g.gate.doors().find((d) => d.door.name === 'rot')!.door.epoch;
            g.gate.applyDoors(DOORS, at(W + 1n));
            const rot = g.gate.doors().find((d) => d.door.name === 'rot')!.door;
            assert.deepEqual([rot.win[Number(W & 1n)], rot.win[Number((W + 1n) & 1n)]], [W, W + 1n], 'the kernel holds w and w+1');
            assert.deepEqual(rotatingSteps(rot, Number(W & 1n) as 0 | 1).map((s) => s.port), sW, "w's sequence kept");
            assert.deepEqual(rotatingSteps(rot, Number((W + 1n) & 1n) as 0 | 1).map((s) => s.port), sNext, "w+1's sequence in place of w-1's");
            assert.equal(rot.epoch, epoch, 'the door kept its epoch: the window it held is unchanged');
            assert.deepEqual(g.gate.spentWindows(), [], "the spent record of w-1 (no longer held) was pruned");
          },
        },
        rotGrant(W)(`${B4}: w's step 3 after the reload`, udp(B4, sW[2]!)),
        {
          description: `${C4}: w-1's step 3 after the reload: its progress is void, silently`,
          frame: udp(C4, sW1[2]!),
          verdict: XDP_DROP,
          counter: 'drop_knock',
          map: { progress: { [C4]: {} } },
          events: NO_EVENT,
        },
        ...rotNothing(D4, sW1, "w-1's (voided)"),
        ...rotKnock(D4, sNext, rotGrant(W + 1n), "w+1's"),
        ...rotKnock(E4, sW, rotSpent, "w's (spent by the reload-spanning knock)"),
        { action: 'kg_spent: w and w+1', run: (g) => assert.deepEqual(g.gate.spentWindows().map((s) => s.window).sort(), [W, W + 1n].sort()) },
        passes(b, `${B4}: SYN to 2205/tcp passes`, B4, 2205),
        passes(b, `${D4}: SYN to 2205/tcp passes`, D4, 2205),
        {
          action: 'apply with the clock in window w+3: nothing the kernel held is live any more',
          run: (g) => {
            g.gate.applyDoors(DOORS, at(W + 3n));
            assert.deepEqual(g.gate.spentWindows(), [], 'every spent record pruned');
          },
        },
        ...rotNothing(E4, sNext, "w+1's (two windows ago)"),
        ...rotKnock(E4, seqOf(W + 3n), rotGrant(W + 3n), "w+3's"),
      ]);
    });
  });

  it("the kernel refuses a sequence past its valid_until (the end of the window after its own)", async () => {
    // Planned 1 ms before the end of window w, 1 s ago (monotonic): w-1's sequence ran out 999 ms ago.
    const endOfW = Number(W + 1n) * WINDOW_MS - 1;
    await withGate(
      {},
      async (h) => {
        const rot = h.gate.doors().find((d) => d.door.name === 'rot')!.door;
        const s1 = Number((W - 1n) & 1n) as 0 | 1;
        assert.equal(rot.win[s1], W - 1n, 'the kernel still holds w-1');
        assert.deepEqual(rotatingSteps(rot, s1).map((s) => s.port), sW1);
        assert.ok(rot.validUntilNs[s1] < monoNowNs(), "w-1's valid_until is in the past");
        await h.table([...rotNothing(A4, sW1, "w-1's (expired)"), ...rotKnock(B4, sW, rotGrant(W), "w's")]);
      },
      at(W, monoNowNs() - 1_000_000_000n, endOfW),
    );
  });
});

function range(first: number, last: number): number[] {
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

/**
 * A u64 timestamp t > 2^34 with t * 1e9 = ns (mod 2^64), ns rounded down to a multiple of 512
 * (1e9 = 2^9 * 1953125, and 1953125 is invertible mod 2^55).
 */
function wrappingTimestamp(ns: bigint): bigint {
  const m = 1n << 55n;
  const target = (ns >> 9n) % m;
  let inv = 1n; // Newton: inv = inv * (2 - a * inv) doubles the correct low bits
  for (let i = 0; i < 6; i++) inv = (inv * (2n - 1953125n * inv)) % m;
  inv = ((inv % m) + m) % m;
  let t = (target * inv) % m;
  if (t <= 1n << 34n) t += m;
  assert.equal((t * 1_000_000_000n) % (1n << 64n), (ns >> 9n) << 9n, 'wrappingTimestamp');
  return t;
}
