/**
 * Policy compiler: turns the doors of a config into the contents of one kernel generation
 * (kg_doors slots, the kg_ports table, kg_allow keys). Pure: no kernel access, so it is unit
 * tested on its own. The gate (gate.ts) writes the result into the inactive generation and
 * flips; see docs/DESIGN.md "Generations".
 */
import type { DoorConfig } from '../config/index.js';
import { doorId } from '../knock/wire.js';
import { rotatingSequence, windowOf } from '../knock/rotating.js';
import { DOOR_FLAG, DOOR_TYPE, KG, PORT_STRIDE, PROTO, encodePortInfo, plainDoorFields, protoNumber, type KDoor, type KStep } from './layout.js';

const NS_PER_MS = 1_000_000n;

/** What a slot held in the active generation, as read back from the kernel. */
export interface SlotState {
  door: KDoor;
  /** canonical allow-list entries of that slot ("addr/mappedPrefix"), sorted; null = none */
  allow: string[] | null;
}

export interface PlannedDoor {
  slot: number;
  config: DoorConfig;
  kdoor: KDoor;
  /** true when the door's knock rules changed: sources midway start over */
  rulesChanged: boolean;
  isNew: boolean;
}

/**
 * What planning needs besides the doors. secrets: by door name, a spa door's 16-byte key or a
 * rotating door's secret (a door without one keeps what its slot holds: the CLI edits doors
 * without the files). clock: the wall clock and CLOCK_MONOTONIC read together; rotating doors
 * get the sequences of the current and the previous window.
 */
export interface PlanContext {
  secrets?: ReadonlyMap<string, Buffer>;
  clock?: { wallMs: number; monoNs: bigint };
  /**
   * Fleet mode (DOOR_FLAG.CLAIM): rotating doors hand completed sequences to the daemon instead
   * of granting; spa doors' grant events carry the nonce. Unset: each door keeps what its slot
   * had (a CLI change leaves it as it was).
   */
  fleet?: boolean;
}

export interface GenerationPlan {
  doors: PlannedDoor[];
  /** all KG.MAX_DOORS slots' kg_door values for the new generation */
  slots: KDoor[];
  /** slots that held a door in the active generation and hold none (or another door) now */
  removedSlots: number[];
  /**
   * kg_ports values of the new generation as they lie in the mmapped array: KG.PROTOS * KG.PORTS
   * entries, proto-major, PORT_STRIDE bytes apart
   */
  ports: Buffer;
  /** allow-list entries per slot: 16-byte address and its mapped prefix */
  allow: { slot: number; addr: Buffer; mappedPrefix: number }[];
  /** slots of payload doors that knock with ICMP echo requests */
  icmpDoors: number;
  /** rotating doors' windows in the kernel: (door id, window) pairs still worth remembering as spent */
  liveWindows: { doorId: number; window: bigint }[];
}

function emptyDoor(epoch: number): KDoor {
  return { flags: 0, epoch, stepTimeoutNs: 0n, seqTimeoutNs: 0n, openForNs: 0n, flowIdleNs: 0n, steps: [], protects: [], name: '', nsteps: 0, ...plainDoorFields() };
}

const TYPE_NUMBER: Record<DoorConfig['type'], number> = {
  sequence: DOOR_TYPE.SEQUENCE,
  rotating: DOOR_TYPE.ROTATING,
  spa: DOOR_TYPE.SPA,
  signed: DOOR_TYPE.SIGNED,
  payload: DOOR_TYPE.PAYLOAD,
};

/** The type-specific fields of a door's kernel slot (all but the rotating sequences). */
function typeFields(d: DoorConfig, prev: KDoor | null, secrets: ReadonlyMap<string, Buffer> | undefined): Partial<KDoor> {
  const same = prev !== null && prev.name === d.name && prev.type === TYPE_NUMBER[d.type];
  switch (d.type) {
    case 'sequence':
      return {};
    case 'rotating': {
      const r = d.rotating!;
      return {
        doorId: doorId(d.name),
        nsteps: r.length,
        windowNs: BigInt(r.windowMs) * NS_PER_MS,
        range: { first: r.range.first, last: r.range.last, proto: protoNumber(r.range.proto) },
      };
    }
    case 'spa': {
      const key = secrets?.get(d.name) ?? (same ? prev.key : null);
      if (key === null || key.length !== 16) throw new Error(`door ${d.name}: no 16-byte key loaded for this spa door`);
      return { doorId: doorId(d.name), port: d.spa!.port, proto: PROTO.UDP, key: Buffer.from(key), maxSkewNs: BigInt(d.spa!.maxSkewMs) * NS_PER_MS };
    }
    case 'signed':
      return { doorId: doorId(d.name), port: d.signed!.port, proto: PROTO.UDP, maxSkewNs: BigInt(d.signed!.maxSkewMs) * NS_PER_MS };
    case 'payload': {
      const p = d.payload!;
      return { port: p.port, proto: p.proto === 'icmp' ? PROTO.ICMP : PROTO.UDP, payload: Buffer.from(p.payload) };
    }
  }
}

/**
 * A rotating door's two sequences: computed from the secret for the current and the previous
 * window (window x in sequence x & 1, live until the end of window x + 1), or kept from the
 * previous slot when there is no secret here (the CLI) or no clock.
 */
function rotatingFields(d: DoorConfig, k: KDoor, prev: KDoor | null, ctx: PlanContext): Pick<KDoor, 'steps' | 'win' | 'validUntilNs'> {
  const r = d.rotating!;
  const secret = ctx.secrets?.get(d.name);
  if (secret !== undefined && ctx.clock !== undefined) {
    const { wallMs, monoNs } = ctx.clock;
    const w = windowOf(wallMs, r.windowMs);
    const steps: KStep[] = Array.from({ length: KG.MAX_STEPS }, () => ({ port: 0, proto: 0 }));
    const win: [bigint, bigint] = [0n, 0n];
    const validUntilNs: [bigint, bigint] = [0n, 0n];
    for (const x of [w - 1n, w]) {
      if (x < 0n) continue;
      const s = Number(x & 1n);
      rotatingSequence(secret, d.name, x, r.range, r.length).forEach((port, i) => {
        steps[KG.ROT_STEPS * s + i] = { port, proto: protoNumber(r.range.proto) };
      });
      win[s] = x;
      const endMs = Number(x + 2n) * r.windowMs; // the end of window x + 1
      validUntilNs[s] = monoNs + BigInt(Math.max(0, endMs - wallMs)) * NS_PER_MS;
    }
    return { steps, win, validUntilNs };
  }
  if (prev !== null && prev.name === d.name && prev.type === DOOR_TYPE.ROTATING && prev.nsteps === k.nsteps &&
      prev.windowNs === k.windowNs && prev.range.first === k.range.first && prev.range.last === k.range.last && prev.range.proto === k.range.proto) {
    return { steps: prev.steps.map((x) => ({ ...x })), win: [prev.win[0], prev.win[1]], validUntilNs: [prev.validUntilNs[0], prev.validUntilNs[1]] };
  }
  return { steps: [], win: [0n, 0n], validUntilNs: [0n, 0n] };
}

/** Whether a door's type-specific knock rules stayed the same (else its epoch moves on). */
function sameTypeRules(prev: KDoor, k: KDoor): boolean {
  if (prev.type !== k.type || prev.doorId !== k.doorId || prev.port !== k.port || prev.proto !== k.proto) return false;
  if (prev.maxSkewNs !== k.maxSkewNs || !prev.key.equals(k.key) || !prev.payload.equals(k.payload)) return false;
  if (k.type !== DOOR_TYPE.ROTATING) return true;
  if (prev.nsteps !== k.nsteps || prev.windowNs !== k.windowNs || prev.range.first !== k.range.first || prev.range.last !== k.range.last) return false;
  // A window held before and after must have kept its sequence (a new secret changes them all).
  for (let a = 0; a < 2; a++) {
    for (let b = 0; b < 2; b++) {
      if (prev.validUntilNs[a] === 0n || k.validUntilNs[b] === 0n || prev.win[a] !== k.win[b]) continue;
      for (let i = 0; i < k.nsteps; i++) {
        const x = prev.steps[KG.ROT_STEPS * a + i];
        const y = k.steps[KG.ROT_STEPS * b + i];
        if (x?.port !== y?.port || x?.proto !== y?.proto) return false;
      }
    }
  }
  return true;
}

export function allowKeyText(addr: Buffer, mappedPrefix: number): string {
  return `${addr.toString('hex')}/${mappedPrefix}`;
}

function allowOf(d: DoorConfig): string[] | null {
  if (d.allowFrom === null) return null;
  return [...new Set(d.allowFrom.map((c) => allowKeyText(c.addr, c.mappedPrefix)))].sort();
}

function sameKnockRules(k: KDoor, prevAllow: string[] | null, d: DoorConfig): boolean {
  if (d.type !== 'sequence') return JSON.stringify(prevAllow) === JSON.stringify(allowOf(d)) && k.stepTimeoutNs === BigInt(d.stepTimeoutMs) * NS_PER_MS && k.seqTimeoutNs === BigInt(d.sequenceTimeoutMs) * NS_PER_MS;
  if (k.type !== DOOR_TYPE.SEQUENCE) return false;
  if (k.steps.length !== d.sequence.length) return false;
  for (let i = 0; i < k.steps.length; i++) {
    const a = k.steps[i];
    const b = d.sequence[i];
    if (!a || !b || a.port !== b.port || a.proto !== protoNumber(b.proto)) return false;
  }
  if (k.stepTimeoutNs !== BigInt(d.stepTimeoutMs) * NS_PER_MS) return false;
  if (k.seqTimeoutNs !== BigInt(d.sequenceTimeoutMs) * NS_PER_MS) return false;
  return JSON.stringify(prevAllow) === JSON.stringify(allowOf(d));
}

/**
 * Assign slots (a door keeps its slot, matched by name; new doors take the lowest slot that
 * was empty in the active generation, then slots freed by this change), compute epochs, and
 * build the generation's tables.
 */
export function planGeneration(previous: readonly SlotState[], doors: readonly DoorConfig[], ctx: PlanContext = {}): GenerationPlan {
  if (doors.length > KG.MAX_DOORS) throw new RangeError(`${doors.length} doors: at most ${KG.MAX_DOORS}`);
  const prevBySlot = Array.from({ length: KG.MAX_DOORS }, (_, s) => previous[s] ?? null);
  const live = (s: number): KDoor | null => {
    const p = prevBySlot[s];
    return p && (p.door.flags & DOOR_FLAG.ACTIVE) !== 0 ? p.door : null;
  };
  const slotOf = new Map<string, number>();
  for (let s = 0; s < KG.MAX_DOORS; s++) {
    const d = live(s);
    if (d && doors.some((c) => c.name === d.name)) slotOf.set(d.name, s);
  }
  const used = new Set(slotOf.values());
  const neverUsed: number[] = [];
  const freed: number[] = [];
  for (let s = 0; s < KG.MAX_DOORS; s++) {
    if (used.has(s)) continue;
    (live(s) ? freed : neverUsed).push(s);
  }
  const free = [...neverUsed, ...freed];
  for (const d of doors) {
    if (slotOf.has(d.name)) continue;
    const s = free.shift();
    if (s === undefined) throw new RangeError(`no free door slot for "${d.name}"`);
    slotOf.set(d.name, s);
  }

  const slots: KDoor[] = Array.from({ length: KG.MAX_DOORS }, (_, s) => emptyDoor(prevBySlot[s]?.door.epoch ?? 0));
  const planned: PlannedDoor[] = [];
  for (const d of doors) {
    const slot = slotOf.get(d.name);
    if (slot === undefined) throw new Error(`internal: door ${d.name} has no slot`);
    const prev = live(slot);
    const prevEpoch = prevBySlot[slot]?.door.epoch ?? 0;
    const isNew = prev === null || prev.name !== d.name;
    const kdoor: KDoor = {
      flags: DOOR_FLAG.ACTIVE | (d.allowFrom !== null ? DOOR_FLAG.ALLOW_LIST : 0) | (d.scope === 'flow-only' ? DOOR_FLAG.FLOW_ONLY : 0),
      epoch: prevEpoch,
      stepTimeoutNs: BigInt(d.stepTimeoutMs) * NS_PER_MS,
      seqTimeoutNs: BigInt(d.sequenceTimeoutMs) * NS_PER_MS,
      openForNs: BigInt(d.openForMs) * NS_PER_MS,
      flowIdleNs: BigInt(d.flowIdleMs) * NS_PER_MS,
      steps: d.sequence.map((s) => ({ port: s.port, proto: protoNumber(s.proto) })),
      protects: d.protects.map((r) => ({ first: r.first, last: r.last, proto: protoNumber(r.proto) })),
      name: d.name,
      nsteps: d.sequence.length,
      ...plainDoorFields(),
      type: TYPE_NUMBER[d.type],
    };
    Object.assign(kdoor, typeFields(d, prev, ctx.secrets));
    if (d.type === 'rotating') Object.assign(kdoor, rotatingFields(d, kdoor, prev, ctx));
    if (d.type === 'rotating' || d.type === 'spa') {
      const claim = ctx.fleet ?? (prev !== null && prev.name === d.name && (prev.flags & DOOR_FLAG.CLAIM) !== 0);
      if (claim) kdoor.flags |= DOOR_FLAG.CLAIM;
    }
    const rulesChanged = isNew || !sameKnockRules(prev, prevBySlot[slot]?.allow ?? null, d) || !sameTypeRules(prev, kdoor);
    if (rulesChanged) kdoor.epoch = (prevEpoch + 1) >>> 0;
    slots[slot] = kdoor;
    planned.push({ slot, config: d, kdoor, rulesChanged, isNew });
  }

  const removedSlots: number[] = [];
  for (let s = 0; s < KG.MAX_DOORS; s++) {
    const prev = live(s);
    if (prev && slots[s]?.name !== prev.name) removedSlots.push(s);
  }

  const knock = new Uint16Array(KG.PROTOS * KG.PORTS);
  const protect = new Uint16Array(KG.PROTOS * KG.PORTS);
  const flowOnly = new Uint16Array(KG.PROTOS * KG.PORTS);
  const single = new Uint16Array(KG.PROTOS * KG.PORTS);
  const allow: GenerationPlan['allow'] = [];
  let icmpDoors = 0;
  const liveWindows: GenerationPlan['liveWindows'] = [];
  for (const p of planned) {
    const bit = 1 << p.slot;
    for (const s of p.config.sequence) knock[protoNumber(s.proto) * KG.PORTS + s.port]! |= bit;
    const c = p.config;
    if (c.type === 'rotating') {
      // Every port of the range is a knock port: a knock on any other one resets progress.
      const base = protoNumber(c.rotating!.range.proto) * KG.PORTS;
      for (let port = c.rotating!.range.first; port <= c.rotating!.range.last; port++) knock[base + port]! |= bit;
      for (let s = 0; s < 2; s++) if (p.kdoor.validUntilNs[s] !== 0n) liveWindows.push({ doorId: p.kdoor.doorId, window: p.kdoor.win[s]! });
    } else if (c.type === 'payload' && c.payload!.proto === 'icmp') {
      icmpDoors |= bit;
    } else if (c.type !== 'sequence') {
      single[PROTO.UDP * KG.PORTS + p.kdoor.port]! |= bit;
    }
    for (const r of p.config.protects) {
      const base = protoNumber(r.proto) * KG.PORTS;
      for (let port = r.first; port <= r.last; port++) protect[base + port]! |= bit;
      if (p.config.scope === 'flow-only') for (let port = r.first; port <= r.last; port++) flowOnly[base + port]! |= bit;
    }
    for (const key of allowOf(p.config) ?? []) {
      const [hex, prefix] = key.split('/');
      allow.push({ slot: p.slot, addr: Buffer.from(hex ?? '', 'hex'), mappedPrefix: Number(prefix) });
    }
  }
  const ports = Buffer.alloc(KG.PROTOS * KG.PORTS * PORT_STRIDE);
  for (let i = 0; i < KG.PROTOS * KG.PORTS; i++) {
    const k = knock[i] ?? 0;
    const pr = protect[i] ?? 0;
    const fo = flowOnly[i] ?? 0;
    const sg = single[i] ?? 0;
    if (k !== 0 || pr !== 0 || sg !== 0) encodePortInfo({ knockDoors: k, protectDoors: pr, flowOnlyDoors: fo, singleDoors: sg }, ports, i * PORT_STRIDE);
  }
  return { doors: planned, slots, removedSlots, ports, allow, icmpDoors, liveWindows };
}

