/**
 * The TypeScript mirror of bpf/knock.h: constants, sizes, field offsets, and the codecs of
 * every struct that crosses the kernel/user boundary. test/unit/layout.test.ts compiles a
 * C oracle against knock.h and checks every number here, so a drift fails the tests; the
 * loader also checks each map's key and value size against SIZEOF at load time.
 * All multi-byte fields are little-endian (the only byte order BPF targets we build for).
 */

export const KG = {
  MAX_DOORS: 16,
  MAX_STEPS: 16,
  MAX_PROTECTS: 16,
  NAME_LEN: 32,
  GENS: 2,
  PROTOS: 2,
  PORTS: 65536,
  PORT_SLOTS: 2 * 2 * 65536,
  DOOR_SLOTS: 2 * 16,
  HINT_SLOTS: 16384,
  MAX_VLAN_TAGS: 2,
  MAX_EXT_HDRS: 8,
  DEFAULT_SOURCES: 65536,
  DEFAULT_RING_BYTES: 256 * 1024,
} as const;

export const MAP = {
  PORTS: 'kg_ports',
  DOORS: 'kg_doors',
  ALLOW: 'kg_allow',
  PROGRESS: 'kg_progress',
  GRANTS: 'kg_grants',
  EVENTS: 'kg_events',
  STATS: 'kg_stats',
  GLOBALS: '.bss',
} as const;
export type MapName = (typeof MAP)[keyof typeof MAP];

export const PROG_NAME = 'knockgate_xdp';

export const PROTO = { TCP: 0, UDP: 1 } as const;
export type ProtoName = 'tcp' | 'udp';
export function protoNumber(p: ProtoName): number {
  return p === 'tcp' ? PROTO.TCP : PROTO.UDP;
}
export function protoName(n: number): ProtoName {
  if (n === PROTO.TCP) return 'tcp';
  if (n === PROTO.UDP) return 'udp';
  throw new RangeError(`unknown kernel protocol number ${n}`);
}

export const DOOR_FLAG = { ACTIVE: 1, ALLOW_LIST: 2 } as const;

export const EVENT = { STEP: 1, RESET: 2, GRANT: 3, DENY: 4 } as const;
export const RESET_REASON = { NONE: 0, WRONG_PORT: 1, STEP_TIMEOUT: 2, SEQ_TIMEOUT: 3 } as const;
export const DENY_REASON = { NO_GRANT: 1, EXPIRED: 2 } as const;

/** enum kg_stat, in order. The first VERDICTS entries are verdicts: every packet counts once. */
export const STAT_NAMES = [
  'pass_non_ip',
  'pass_other_l4',
  'pass_unrelated',
  'pass_fragment',
  'pass_granted',
  'drop_no_grant',
  'drop_expired',
  'drop_knock',
  'drop_malformed',
  'knock_step',
  'grant',
  'reset_wrong_port',
  'reset_step_timeout',
  'reset_seq_timeout',
  'not_allowed',
  'retransmit',
  'deny_event',
  'deny_suppressed',
  'event_lost',
  'map_full',
] as const;
export type StatName = (typeof STAT_NAMES)[number];
export const VERDICTS = 9;
export const STAT_MAX = STAT_NAMES.length;

export const SIZEOF = {
  port_info: 4,
  step: 4,
  port_range: 8,
  door: 40 + 4 * KG.MAX_STEPS + 8 * KG.MAX_PROTECTS + KG.NAME_LEN,
  allow_key: 24,
  addr: 16,
  door_progress: 24,
  progress: 8 + 24 * KG.MAX_DOORS,
  grant: 8 * KG.MAX_DOORS,
  event: 48,
  stats: 8 * STAT_MAX,
  globals: 16 + 8 * KG.HINT_SLOTS,
} as const;

/** Field offsets, checked against offsetof() in the C oracle. */
export const OFFSETS = {
  port_info: { knock_doors: 0, protect_doors: 2 },
  step: { port: 0, proto: 2 },
  port_range: { first: 0, last: 2, proto: 4 },
  door: {
    flags: 0,
    epoch: 4,
    step_timeout_ns: 8,
    seq_timeout_ns: 16,
    open_for_ns: 24,
    nsteps: 32,
    nprotects: 33,
    steps: 40,
    protects: 40 + 4 * KG.MAX_STEPS,
    name: 40 + 4 * KG.MAX_STEPS + 8 * KG.MAX_PROTECTS,
  },
  allow_key: { prefixlen: 0, gen: 4, slot: 5, addr: 6 },
  door_progress: { start_ns: 0, last_ns: 8, epoch: 16, step: 20 },
  progress: { doors: 0, d: 8 },
  event: {
    ts_ns: 0,
    expires_ns: 8,
    addr: 16,
    port: 32,
    doors: 34,
    proto: 36,
    type: 37,
    door: 38,
    step: 39,
    reason: 40,
    ifindex: 44,
  },
  globals: { active_gen: 0, deny_tokens: 8, hint: 16 },
} as const;

// ---- kg_ports -------------------------------------------------------------------------

export interface PortInfo {
  knockDoors: number;
  protectDoors: number;
}

/** Array maps store each value at a stride of its size rounded up to 8 (kernel array_map). */
export const PORT_STRIDE = 8;

export function portIndex(gen: number, proto: number, port: number): number {
  return (gen * KG.PROTOS + proto) * KG.PORTS + port;
}

export function encodePortInfo(v: PortInfo, out = Buffer.alloc(SIZEOF.port_info), off = 0): Buffer {
  out.writeUInt16LE(v.knockDoors, off + OFFSETS.port_info.knock_doors);
  out.writeUInt16LE(v.protectDoors, off + OFFSETS.port_info.protect_doors);
  return out;
}

export function decodePortInfo(b: Buffer, off = 0): PortInfo {
  return {
    knockDoors: b.readUInt16LE(off + OFFSETS.port_info.knock_doors),
    protectDoors: b.readUInt16LE(off + OFFSETS.port_info.protect_doors),
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
  steps: KStep[];
  protects: KPortRange[];
  name: string;
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
  b.writeUInt8(d.steps.length, o.nsteps);
  b.writeUInt8(d.protects.length, o.nprotects);
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
  const nsteps = Math.min(b.readUInt8(o.nsteps), KG.MAX_STEPS);
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
    steps,
    protects,
    name: nameBytes.subarray(0, nul < 0 ? KG.NAME_LEN : nul).toString('utf8'),
  };
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
