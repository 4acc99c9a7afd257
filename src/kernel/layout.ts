/**
 * The codecs of every struct that crosses the kernel/user boundary, on the constants, sizes and
 * offsets that `make -C bpf` generates from bpf/knock.h into abi.gen.ts (re-exported here, so
 * that the rest of the code imports the kernel contract from one module). The loader checks
 * each map's key and value size against the generated map specs at load time.
 * All multi-byte fields are little-endian (the only byte order BPF targets we build for).
 */

import { KG, KG_STRINGS, MAP, kg_deny_reason, kg_door_type, kg_event_type, kg_proto, kg_reject_reason, kg_reset_reason, kg_stat, OFFSETS, SIZEOF } from './abi.gen.js';

export { KG, MAP, MAP_SPECS, OFFSETS, SIZEOF, Globals, type GlobalsArray, type GlobalsRegion } from './abi.gen.js';
export type MapName = (typeof MAP)[keyof typeof MAP];

export const PROG_NAME = KG_STRINGS.PROG_NAME;
/** The same gate for devices without a link-layer header: frames start at the IP header. */
export const PROG_NAME_L3 = KG_STRINGS.PROG_NAME_L3;

export const PROTO = kg_proto;
export type ProtoName = 'tcp' | 'udp';
export function protoNumber(p: ProtoName): number {
  return p === 'tcp' ? PROTO.TCP : PROTO.UDP;
}
export function protoName(n: number): ProtoName {
  if (n === PROTO.TCP) return 'tcp';
  if (n === PROTO.UDP) return 'udp';
  throw new RangeError(`unknown kernel protocol number ${n}`);
}
/** An event's protocol: ICMP (echo requests to payload doors) besides TCP and UDP. */
export function eventProtoName(n: number): ProtoName | 'icmp' {
  return n === PROTO.ICMP ? 'icmp' : protoName(n);
}

export const DOOR_TYPE = kg_door_type;
/** The config's name of each door type, in enum kg_door_type order (checked by the layout test). */
export const DOOR_TYPE_NAMES = ['sequence', 'rotating', 'spa', 'signed', 'payload'] as const;
export type DoorTypeName = (typeof DOOR_TYPE_NAMES)[number];

export const DOOR_FLAG = { ACTIVE: KG.DOOR_ACTIVE, ALLOW_LIST: KG.DOOR_ALLOW_LIST, FLOW_ONLY: KG.DOOR_FLOW_ONLY, CLAIM: KG.DOOR_CLAIM } as const;
export const FLOW_FLAG = { ESTABLISHED: KG.FLOW_ESTABLISHED, CLOSING: KG.FLOW_CLOSING } as const;

export const EVENT = kg_event_type;
export const REJECT_REASON = kg_reject_reason;
export const RESET_REASON = kg_reset_reason;
export const DENY_REASON = kg_deny_reason;
/** kg_event.door of a COOLDOWN: it stops knocks on every door. */
export const COOLDOWN_DOOR = 0xff;

/**
 * A counter's name: its enum kg_stat enumerator without KG_V_ / KG_C_, in lower case
 * (KG_C_STEP is knock_step, beside the verdicts' names).
 */
type StatKey = Extract<keyof typeof kg_stat, `${'V' | 'C'}_${string}`>;
type StatNameOf<K> = K extends 'C_STEP' ? 'knock_step' : K extends `${'V' | 'C'}_${infer R extends string}` ? Lowercase<R> : never;
export type StatName = StatNameOf<StatKey>;

/** enum kg_stat, in order. The first VERDICTS entries are verdicts: every packet counts once. */
export const STAT_NAMES: readonly StatName[] = (Object.entries(kg_stat) as [string, number][])
  .filter(([k]) => /^[VC]_/.test(k))
  .sort(([, a], [, b]) => a - b)
  .map(([k]) => (k === 'C_STEP' ? 'knock_step' : k.slice(2).toLowerCase()) as StatName);
export const VERDICTS = kg_stat.VERDICTS;
export const STAT_MAX = kg_stat.STAT_MAX;

// ---- kg_ports -------------------------------------------------------------------------

export interface PortInfo {
  knockDoors: number;
  protectDoors: number;
  flowOnlyDoors: number;
  singleDoors: number;
}

/** Array maps store each value at a stride of its size rounded up to 8 (kernel array_map). */
export const PORT_STRIDE = 8;

export function portIndex(gen: number, proto: number, port: number): number {
  return (gen * KG.PROTOS + proto) * KG.PORTS + port;
}

export function encodePortInfo(v: PortInfo, out = Buffer.alloc(SIZEOF.port_info), off = 0): Buffer {
  out.writeUInt16LE(v.knockDoors, off + OFFSETS.port_info.knock_doors);
  out.writeUInt16LE(v.protectDoors, off + OFFSETS.port_info.protect_doors);
  out.writeUInt16LE(v.flowOnlyDoors, off + OFFSETS.port_info.flow_only_doors);
  out.writeUInt16LE(v.singleDoors, off + OFFSETS.port_info.single_doors);
  return out;
}

export function decodePortInfo(b: Buffer, off = 0): PortInfo {
  return {
    knockDoors: b.readUInt16LE(off + OFFSETS.port_info.knock_doors),
    protectDoors: b.readUInt16LE(off + OFFSETS.port_info.protect_doors),
    flowOnlyDoors: b.readUInt16LE(off + OFFSETS.port_info.flow_only_doors),
    singleDoors: b.readUInt16LE(off + OFFSETS.port_info.single_doors),
  };
}

// ---- kg_doors -------------------------------------------------------------------------

export interface KStep {
  port: number;
  proto: number;
}
export interface KPortRange {
  first: number;
  last: number;
  proto: number;
}
export interface KDoor {
  flags: number;
  epoch: number;
  stepTimeoutNs: bigint;
  seqTimeoutNs: bigint;
  openForNs: bigint;
  flowIdleNs: bigint;
  /** sequence doors: the steps. Rotating doors: steps[KG.ROT_STEPS * s ...] is sequence s, see nsteps */
  steps: KStep[];
  protects: KPortRange[];
  name: string;
  /** DOOR_TYPE.* */
  type: number;
  /** rotating doors: steps per sequence (steps holds both); others: steps.length */
  nsteps: number;
  /** spa, signed, payload: the UDP port (0 with ICMP) and protocol */
  port: number;
  proto: number;
  doorId: number;
  maxSkewNs: bigint;
  windowNs: bigint;
  win: [bigint, bigint];
  validUntilNs: [bigint, bigint];
  range: KPortRange;
  /** spa: the SipHash key (16 bytes) */
  key: Buffer;
  /** payload: the prefix */
  payload: Buffer;
}

/** The fields a sequence door leaves at zero. */
export function plainDoorFields(): Pick<KDoor, 'type' | 'port' | 'proto' | 'doorId' | 'maxSkewNs' | 'windowNs' | 'win' | 'validUntilNs' | 'range' | 'key' | 'payload'> {
  return {
    type: DOOR_TYPE.SEQUENCE,
    port: 0,
    proto: 0,
    doorId: 0,
    maxSkewNs: 0n,
    windowNs: 0n,
    win: [0n, 0n],
    validUntilNs: [0n, 0n],
    range: { first: 0, last: 0, proto: 0 },
    key: Buffer.alloc(16),
    payload: Buffer.alloc(0),
  };
}

export function doorIndex(gen: number, slot: number): number {
  return gen * KG.MAX_DOORS + slot;
}

export function encodeDoor(d: KDoor): Buffer {
  if (d.steps.length > KG.MAX_STEPS) throw new RangeError(`door ${d.name}: ${d.steps.length} steps, at most ${KG.MAX_STEPS}`);
  if (d.protects.length > KG.MAX_PROTECTS) {
    throw new RangeError(`door ${d.name}: ${d.protects.length} protected ranges, at most ${KG.MAX_PROTECTS}`);
  }
  const name = Buffer.from(d.name, 'utf8');
  if (name.length >= KG.NAME_LEN) throw new RangeError(`door name "${d.name}" is longer than ${KG.NAME_LEN - 1} bytes`);
  const o = OFFSETS.door;
  const b = Buffer.alloc(SIZEOF.door);
  b.writeUInt32LE(d.flags >>> 0, o.flags);
  b.writeUInt32LE(d.epoch >>> 0, o.epoch);
  b.writeBigUInt64LE(d.stepTimeoutNs, o.step_timeout_ns);
  b.writeBigUInt64LE(d.seqTimeoutNs, o.seq_timeout_ns);
  b.writeBigUInt64LE(d.openForNs, o.open_for_ns);
  b.writeBigUInt64LE(d.flowIdleNs, o.flow_idle_ns);
  b.writeUInt8(d.type === DOOR_TYPE.ROTATING ? d.nsteps : d.steps.length, o.nsteps);
  b.writeUInt8(d.protects.length, o.nprotects);
  if (d.key.length !== 16) throw new RangeError(`door ${d.name}: key of ${d.key.length} bytes, 16 expected`);
  if (d.payload.length > KG.PAYLOAD_LEN) throw new RangeError(`door ${d.name}: payload of ${d.payload.length} bytes, at most ${KG.PAYLOAD_LEN}`);
  b.writeUInt8(d.type, o.type);
  b.writeUInt8(d.payload.length, o.payload_len);
  b.writeUInt16LE(d.port, o.port);
  b.writeUInt8(d.proto, o.proto);
  b.writeUInt32LE(d.doorId >>> 0, o.door_id);
  b.writeBigUInt64LE(d.maxSkewNs, o.max_skew_ns);
  b.writeBigUInt64LE(d.windowNs, o.window_ns);
  b.writeBigUInt64LE(d.win[0], o.win);
  b.writeBigUInt64LE(d.win[1], o.win + 8);
  b.writeBigUInt64LE(d.validUntilNs[0], o.valid_until_ns);
  b.writeBigUInt64LE(d.validUntilNs[1], o.valid_until_ns + 8);
  b.writeUInt16LE(d.range.first, o.range_first);
  b.writeUInt16LE(d.range.last, o.range_last);
  b.writeUInt8(d.range.proto, o.range_proto);
  d.key.copy(b, o.key);
  d.payload.copy(b, o.payload);
  d.steps.forEach((s, i) => {
    const at = o.steps + i * SIZEOF.step;
    b.writeUInt16LE(s.port, at + OFFSETS.step.port);
    b.writeUInt8(s.proto, at + OFFSETS.step.proto);
  });
  d.protects.forEach((r, i) => {
    const at = o.protects + i * SIZEOF.port_range;
    b.writeUInt16LE(r.first, at + OFFSETS.port_range.first);
    b.writeUInt16LE(r.last, at + OFFSETS.port_range.last);
    b.writeUInt8(r.proto, at + OFFSETS.port_range.proto);
  });
  name.copy(b, o.name);
  return b;
}

export function decodeDoor(b: Buffer): KDoor {
  const o = OFFSETS.door;
  const type = b.readUInt8(o.type);
  const perSeq = Math.min(b.readUInt8(o.nsteps), KG.MAX_STEPS);
  const nsteps = type === DOOR_TYPE.ROTATING ? KG.MAX_STEPS : perSeq;
  const nprotects = Math.min(b.readUInt8(o.nprotects), KG.MAX_PROTECTS);
  const steps: KStep[] = [];
  for (let i = 0; i < nsteps; i++) {
    const at = o.steps + i * SIZEOF.step;
    steps.push({ port: b.readUInt16LE(at + OFFSETS.step.port), proto: b.readUInt8(at + OFFSETS.step.proto) });
  }
  const protects: KPortRange[] = [];
  for (let i = 0; i < nprotects; i++) {
    const at = o.protects + i * SIZEOF.port_range;
    protects.push({
      first: b.readUInt16LE(at + OFFSETS.port_range.first),
      last: b.readUInt16LE(at + OFFSETS.port_range.last),
      proto: b.readUInt8(at + OFFSETS.port_range.proto),
    });
  }
  const nameBytes = b.subarray(o.name, o.name + KG.NAME_LEN);
  const nul = nameBytes.indexOf(0);
  return {
    flags: b.readUInt32LE(o.flags),
    epoch: b.readUInt32LE(o.epoch),
    stepTimeoutNs: b.readBigUInt64LE(o.step_timeout_ns),
    seqTimeoutNs: b.readBigUInt64LE(o.seq_timeout_ns),
    openForNs: b.readBigUInt64LE(o.open_for_ns),
    flowIdleNs: b.readBigUInt64LE(o.flow_idle_ns),
    steps,
    protects,
    name: nameBytes.subarray(0, nul < 0 ? KG.NAME_LEN : nul).toString('utf8'),
    type,
    nsteps: perSeq,
    port: b.readUInt16LE(o.port),
    proto: b.readUInt8(o.proto),
    doorId: b.readUInt32LE(o.door_id),
    maxSkewNs: b.readBigUInt64LE(o.max_skew_ns),
    windowNs: b.readBigUInt64LE(o.window_ns),
    win: [b.readBigUInt64LE(o.win), b.readBigUInt64LE(o.win + 8)],
    validUntilNs: [b.readBigUInt64LE(o.valid_until_ns), b.readBigUInt64LE(o.valid_until_ns + 8)],
    range: { first: b.readUInt16LE(o.range_first), last: b.readUInt16LE(o.range_last), proto: b.readUInt8(o.range_proto) },
    key: Buffer.from(b.subarray(o.key, o.key + 16)),
    payload: Buffer.from(b.subarray(o.payload, o.payload + Math.min(b.readUInt8(o.payload_len), KG.PAYLOAD_LEN))),
  };
}

/** A rotating door's sequence s (the ports of steps[KG.ROT_STEPS * s ...]). */
export function rotatingSteps(d: KDoor, s: 0 | 1): KStep[] {
  return d.steps.slice(KG.ROT_STEPS * s, KG.ROT_STEPS * s + d.nsteps);
}

// ---- kg_allow -------------------------------------------------------------------------

/** LPM key for (gen, slot, address prefix); `mappedPrefix` counts bits of the 16-byte address. */
export function encodeAllowKey(gen: number, slot: number, addr: Buffer, mappedPrefix: number): Buffer {
  if (addr.length !== 16) throw new RangeError('allow key address must be 16 bytes');
  if (mappedPrefix < 0 || mappedPrefix > 128) throw new RangeError(`bad prefix ${mappedPrefix}`);
  const o = OFFSETS.allow_key;
  const b = Buffer.alloc(SIZEOF.allow_key);
  b.writeUInt32LE(16 + mappedPrefix, o.prefixlen);
  b.writeUInt8(gen, o.gen);
  b.writeUInt8(slot, o.slot);
  addr.copy(b, o.addr);
  return b;
}

export interface KAllowKey {
  gen: number;
  slot: number;
  addr: Buffer;
  mappedPrefix: number;
}

export function decodeAllowKey(b: Buffer): KAllowKey {
  const o = OFFSETS.allow_key;
  return {
    gen: b.readUInt8(o.gen),
    slot: b.readUInt8(o.slot),
    addr: Buffer.from(b.subarray(o.addr, o.addr + 16)),
    mappedPrefix: b.readUInt32LE(o.prefixlen) - 16,
  };
}

// ---- kg_progress ----------------------------------------------------------------------

export interface KDoorProgress {
  slot: number;
  startNs: bigint;
  lastNs: bigint;
  epoch: number;
  step: number;
}

/** Live per-door progress entries of a kg_progress value (only slots whose bit is set). */
export function decodeProgress(b: Buffer): KDoorProgress[] {
  const mask = b.readUInt16LE(OFFSETS.progress.doors);
  const out: KDoorProgress[] = [];
  for (let slot = 0; slot < KG.MAX_DOORS; slot++) {
    if ((mask & (1 << slot)) === 0) continue;
    const at = OFFSETS.progress.d + slot * SIZEOF.door_progress;
    const p = OFFSETS.door_progress;
    out.push({
      slot,
      startNs: b.readBigUInt64LE(at + p.start_ns),
      lastNs: b.readBigUInt64LE(at + p.last_ns),
      epoch: b.readUInt32LE(at + p.epoch),
      step: b.readUInt8(at + p.step),
    });
  }
  return out;
}

// ---- kg_probation ---------------------------------------------------------------------

export interface KFirstKnock {
  slot: number;
  atNs: bigint;
  epoch: number;
}

export interface KProbation {
  /** slots with a first knock not yet followed up */
  live: KFirstKnock[];
  /** mask of slots whose last first knock was followed up or reset */
  spent: number;
}

export function decodeProbation(b: Buffer): KProbation {
  const mask = b.readUInt16LE(OFFSETS.probation.live);
  const live: KFirstKnock[] = [];
  for (let slot = 0; slot < KG.MAX_DOORS; slot++) {
    if ((mask & (1 << slot)) === 0) continue;
    const at = OFFSETS.probation.d + slot * SIZEOF.first_knock;
    live.push({
      slot,
      atNs: b.readBigUInt64LE(at + OFFSETS.first_knock.at_ns),
      epoch: b.readUInt32LE(at + OFFSETS.first_knock.epoch),
    });
  }
  return { live, spent: b.readUInt16LE(OFFSETS.probation.spent) };
}

/** The newest first knock of a kg_probation value, over every slot (live or not); 0: none. */
export function newestFirstKnockNs(b: Buffer): bigint {
  let newest = 0n;
  for (let slot = 0; slot < KG.MAX_DOORS; slot++) {
    const at = b.readBigUInt64LE(OFFSETS.probation.d + slot * SIZEOF.first_knock + OFFSETS.first_knock.at_ns);
    if (at > newest) newest = at;
  }
  return newest;
}

// ---- kg_firsts ------------------------------------------------------------------------

export interface KFirstsBlock {
  /** window start (ns) of each half */
  start: [bigint, bigint];
  /** bits set in each half */
  set: [number, number];
}

function popcount32(x: number): number {
  let v = x >>> 0;
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

export function decodeFirstsBlock(b: Buffer): KFirstsBlock {
  const o = OFFSETS.fk_block;
  const set: [number, number] = [0, 0];
  for (let half = 0; half < 2; half++) {
    for (let w = 0; w < KG.FK_WORDS; w++) set[half]! += popcount32(b.readUInt32LE(o.bits + (half * KG.FK_WORDS + w) * 4));
  }
  return { start: [b.readBigUInt64LE(o.start), b.readBigUInt64LE(o.start + 8)], set };
}

// ---- kg_penalty -----------------------------------------------------------------------

export interface KPenalty {
  windowStartNs: bigint;
  cooldownUntilNs: bigint;
  failures: number;
}

export function decodePenalty(b: Buffer): KPenalty {
  const o = OFFSETS.penalty;
  return {
    windowStartNs: b.readBigUInt64LE(o.window_start_ns),
    cooldownUntilNs: b.readBigUInt64LE(o.cooldown_until_ns),
    failures: b.readUInt32LE(o.failures),
  };
}

// ---- kg_flows -------------------------------------------------------------------------

export interface KFlowKey {
  src: Buffer;
  dst: Buffer;
  sport: number;
  dport: number;
  proto: number;
}

export interface KFlow {
  createdNs: bigint;
  lastNs: bigint;
  idleNs: bigint;
  slot: number;
  flags: number;
}

export function encodeFlowKey(k: KFlowKey): Buffer {
  const o = OFFSETS.flow_key;
  const b = Buffer.alloc(SIZEOF.flow_key);
  k.src.copy(b, o.src);
  k.dst.copy(b, o.dst);
  b.writeUInt16LE(k.sport, o.sport);
  b.writeUInt16LE(k.dport, o.dport);
  b.writeUInt8(k.proto, o.proto);
  return b;
}

export function decodeFlowKey(b: Buffer): KFlowKey {
  const o = OFFSETS.flow_key;
  return {
    src: Buffer.from(b.subarray(o.src, o.src + 16)),
    dst: Buffer.from(b.subarray(o.dst, o.dst + 16)),
    sport: b.readUInt16LE(o.sport),
    dport: b.readUInt16LE(o.dport),
    proto: b.readUInt8(o.proto),
  };
}

export function decodeFlow(b: Buffer): KFlow {
  const o = OFFSETS.flow;
  return {
    createdNs: b.readBigUInt64LE(o.created_ns),
    lastNs: b.readBigUInt64LE(o.last_ns),
    idleNs: b.readBigUInt64LE(o.idle_ns),
    slot: b.readUInt8(o.slot),
    flags: b.readUInt8(o.flags),
  };
}

/** The idle limit a flow is held to: its door's flow_idle, or the linger once it is closing. */
export function flowIdleLimitNs(f: KFlow): bigint {
  return (f.flags & FLOW_FLAG.CLOSING) !== 0 && f.idleNs > KG.FLOW_LINGER_NS ? KG.FLOW_LINGER_NS : f.idleNs;
}

// ---- kg_grants ------------------------------------------------------------------------

export function decodeGrant(b: Buffer): bigint[] {
  const out: bigint[] = [];
  for (let slot = 0; slot < KG.MAX_DOORS; slot++) out.push(b.readBigUInt64LE(slot * 8));
  return out;
}

export function encodeGrant(expiresNs: readonly bigint[]): Buffer {
  const b = Buffer.alloc(SIZEOF.grant);
  expiresNs.forEach((v, slot) => {
    if (slot < KG.MAX_DOORS) b.writeBigUInt64LE(v, slot * 8);
  });
  return b;
}

// ---- kg_events ------------------------------------------------------------------------

export interface KEvent {
  tsNs: bigint;
  expiresNs: bigint;
  addr: Buffer;
  port: number;
  doors: number;
  proto: number;
  type: number;
  door: number;
  step: number;
  reason: number;
  ifindex: number;
}

/** A KG_EV_SIGNED record: the event and the datagram, for the daemon to verify. */
export interface KSignedEvent extends KEvent {
  payload: Buffer;
}

export function decodeSignedEvent(b: Buffer): KSignedEvent {
  if (b.length < SIZEOF.signed_event) throw new RangeError(`signed event record of ${b.length} bytes, ${SIZEOF.signed_event} expected`);
  const o = OFFSETS.signed_event.payload;
  return { ...decodeEvent(b), payload: Buffer.from(b.subarray(o, o + KG.SIGNED_LEN)) };
}

/** The nonce of a KG_EV_GRANT record of an SPA door in fleet mode (struct kg_nonce_event), or null. */
export function nonceOfGrantEvent(b: Buffer): Buffer | null {
  if (b.length < SIZEOF.nonce_event) return null;
  const o = OFFSETS.nonce_event.nonce;
  return Buffer.from(b.subarray(o, o + 16));
}

export function encodeSpentKey(doorId: number, window: bigint): Buffer {
  const b = Buffer.alloc(SIZEOF.spent_key);
  b.writeUInt32LE(doorId >>> 0, OFFSETS.spent_key.door_id);
  b.writeBigUInt64LE(window, OFFSETS.spent_key.window);
  return b;
}

export function decodeSpentKey(b: Buffer): { doorId: number; window: bigint } {
  return { doorId: b.readUInt32LE(OFFSETS.spent_key.door_id), window: b.readBigUInt64LE(OFFSETS.spent_key.window) };
}

export function decodeEvent(b: Buffer): KEvent {
  if (b.length < SIZEOF.event) throw new RangeError(`event record of ${b.length} bytes, ${SIZEOF.event} expected`);
  const o = OFFSETS.event;
  return {
    tsNs: b.readBigUInt64LE(o.ts_ns),
    expiresNs: b.readBigUInt64LE(o.expires_ns),
    addr: Buffer.from(b.subarray(o.addr, o.addr + 16)),
    port: b.readUInt16LE(o.port),
    doors: b.readUInt16LE(o.doors),
    proto: b.readUInt8(o.proto),
    type: b.readUInt8(o.type),
    door: b.readUInt8(o.door),
    step: b.readUInt8(o.step),
    reason: b.readUInt8(o.reason),
    ifindex: b.readUInt32LE(o.ifindex),
  };
}

// ---- kg_stats -------------------------------------------------------------------------

export type Stats = Record<StatName, bigint>;

/** Sum the per-CPU copies of struct kg_stats. */
export function sumStats(perCpu: readonly Buffer[]): Stats {
  const totals = Object.fromEntries(STAT_NAMES.map((n) => [n, 0n])) as Stats;
  for (const b of perCpu) {
    STAT_NAMES.forEach((n, i) => {
      totals[n] += b.readBigUInt64LE(i * 8);
    });
  }
  return totals;
}

// ---- masks ----------------------------------------------------------------------------

export function slotsOf(mask: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < KG.MAX_DOORS; s++) if (mask & (1 << s)) out.push(s);
  return out;
}
