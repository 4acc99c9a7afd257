/**
 * Policy compiler: turns the doors of a config into the contents of one kernel generation
 * (kg_doors slots, the kg_ports table, kg_allow keys). Pure: no kernel access, so it is unit
 * tested on its own. The gate (gate.ts) writes the result into the inactive generation and
 * flips; see docs/DESIGN.md "Generations".
 */
import type { DoorConfig } from '../config/index.js';
import { DOOR_TYPES } from '../config/model.js';
import { DOORS, kindOf, type DoorKind } from '../doors/index.js';
import { DOOR_FLAG, KG, PORT_STRIDE, PROTO, encodePortInfo, plainDoorFields, protoNumber, type KDoor } from './layout.js';

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

/** Whether a door's type-specific knock rules stayed the same (else its epoch moves on). */
function sameTypeRules(prev: KDoor, k: KDoor): boolean {
  if (prev.type !== k.type || prev.doorId !== k.doorId || prev.port !== k.port || prev.proto !== k.proto) return false;
  if (prev.maxSkewNs !== k.maxSkewNs || !prev.key.equals(k.key) || !prev.payload.equals(k.payload)) return false;
  const kind = DOOR_KINDS[k.type];
  return kind?.kernel.sameRules?.(prev, k) ?? true;
}

/** The door kinds by their kernel type number. */
const DOOR_KINDS = Object.fromEntries(DOOR_TYPES.map((t) => [DOORS[t].kernel.number, DOORS[t]])) as Record<number, DoorKind | undefined>;

export function allowKeyText(addr: Buffer, mappedPrefix: number): string {
  return `${addr.toString('hex')}/${mappedPrefix}`;
}

function allowOf(d: DoorConfig): string[] | null {
  if (d.allowFrom === null) return null;
  return [...new Set(d.allowFrom.map((c) => allowKeyText(c.addr, c.mappedPrefix)))].sort();
}

/** Whether the rules every door type shares stayed the same: allow list and timeouts. */
function sameKnockRules(k: KDoor, prevAllow: string[] | null, d: DoorConfig): boolean {
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
    const kind = kindOf(d);
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
      type: kind.kernel.number,
    };
    Object.assign(kdoor, kind.kernel.encode(d, kdoor, prev, ctx));
    if (kind.kernel.claims) {
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
    const c = p.config;
    const kind = kindOf(c);
    const knocks = kind.kernel.ports(c, p.kdoor);
    for (const r of knocks.steps) {
      const base = protoNumber(r.proto) * KG.PORTS;
      for (let port = r.first; port <= r.last; port++) knock[base + port]! |= bit;
    }
    if (knocks.single !== null) single[PROTO.UDP * KG.PORTS + knocks.single]! |= bit;
    if (knocks.icmp) icmpDoors |= bit;
    liveWindows.push(...(kind.kernel.liveWindows?.(p.kdoor) ?? []));
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

