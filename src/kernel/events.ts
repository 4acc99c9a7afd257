/**
 * Kernel events (struct kg_event from the kg_events ring buffer) turned into structured
 * records for the log and the CLI. Decoding reads fixed offsets (layout.ts); naming (door
 * names, interface names) comes from the caller, which knows the live configuration.
 */
import { formatAddress, familyOf } from '../net/addr.js';
import { COOLDOWN_DOOR, DENY_REASON, EVENT, REJECT_REASON, RESET_REASON, decodeEvent, eventProtoName, slotsOf, type KEvent, type ProtoName } from './layout.js';

/** 'expire' is the daemon's: the kernel just stops honouring a grant when its time is up. */
/** 'reject' also comes from the daemon (signed knocks it verified and refused); 'signed' is a
 * signed knock the kernel passed up for verification. */
export type EventKind = 'knock' | 'reset' | 'grant' | 'deny' | 'cooldown' | 'consume' | 'expire' | 'reject' | 'signed';
export type EventReason =
  | 'wrong_port' | 'step_timeout' | 'sequence_timeout' | 'no_grant' | 'expired' | 'no_flow'
  | 'malformed' | 'bad_mac' | 'stale' | 'replay' | 'spent' | 'payload' | 'not_allowed'
  | 'wrong_door' | 'unknown_key' | 'bad_signature'
  /** fleet mode, on_partition: closed: no fleet-wide claim could be made */
  | 'fleet_unreachable';

/** The door field of a cooldown: it stops knocks on every door. */
export const EVERY_DOOR = '*';

export interface GateEvent {
  event: EventKind;
  source: string;
  family: 4 | 6;
  port: number;
  protocol: ProtoName | 'icmp';
  /** STEP, RESET, GRANT, CONSUME: the door; DENY: every door protecting the port; COOLDOWN: '*' */
  door: string;
  /** STEP: steps done so far; RESET: steps done before the reset */
  step?: number;
  /** STEP: length of the door's sequence */
  steps?: number;
  reason?: EventReason;
  /** GRANT: milliseconds the grant lasts from now */
  expires_in_ms?: number;
  /** COOLDOWN: the failures that started it, and milliseconds it lasts from now */
  failures?: number;
  cooldown_ms?: number;
  interface?: string;
  /** signed knocks: the client whose key signed it */
  client?: string;
}

export interface EventContext {
  doorName(slot: number): string | undefined;
  doorSteps(slot: number): number | undefined;
  ifName(ifindex: number): string | undefined;
  /** CLOCK_MONOTONIC now, in ns (same clock as bpf_ktime_get_ns) */
  nowNs(): bigint;
}

const RESET_NAMES: Record<number, EventReason> = {
  [RESET_REASON.WRONG_PORT]: 'wrong_port',
  [RESET_REASON.STEP_TIMEOUT]: 'step_timeout',
  [RESET_REASON.SEQ_TIMEOUT]: 'sequence_timeout',
};
const DENY_NAMES: Record<number, EventReason> = {
  [DENY_REASON.NO_GRANT]: 'no_grant',
  [DENY_REASON.EXPIRED]: 'expired',
  [DENY_REASON.NO_FLOW]: 'no_flow',
};
const REJECT_NAMES: Record<number, EventReason> = {
  [REJECT_REASON.MALFORMED]: 'malformed',
  [REJECT_REASON.BAD_MAC]: 'bad_mac',
  [REJECT_REASON.STALE]: 'stale',
  [REJECT_REASON.REPLAY]: 'replay',
  [REJECT_REASON.SPENT]: 'spent',
  [REJECT_REASON.PAYLOAD]: 'payload',
  [REJECT_REASON.NOT_ALLOWED]: 'not_allowed',
};
const KINDS: Record<number, EventKind> = {
  [EVENT.REJECT]: 'reject',
  [EVENT.SIGNED]: 'signed',
  [EVENT.STEP]: 'knock',
  [EVENT.RESET]: 'reset',
  [EVENT.GRANT]: 'grant',
  [EVENT.DENY]: 'deny',
  [EVENT.COOLDOWN]: 'cooldown',
  [EVENT.CONSUMED]: 'consume',
};

export const EVENT_MESSAGES: Record<EventKind, string> = {
  knock: 'knock step accepted',
  reset: 'knock progress reset',
  grant: 'door opened',
  deny: 'packet to a protected port dropped',
  cooldown: 'source in cooldown: too many failed sequences',
  consume: 'flow-only grant used by its one connection',
  expire: 'grant expired',
  reject: 'knock refused',
  signed: 'signed knock received',
};

function slotName(ctx: EventContext, slot: number): string {
  return ctx.doorName(slot) ?? `slot${slot}`;
}

export function describeEvent(k: KEvent, ctx: EventContext): GateEvent {
  const kind = KINDS[k.type];
  if (!kind) throw new RangeError(`unknown kernel event type ${k.type}`);
  const out: GateEvent = {
    event: kind,
    source: formatAddress(k.addr),
    family: familyOf(k.addr),
    port: k.port,
    protocol: eventProtoName(k.proto),
    door:
      kind === 'deny'
        ? slotsOf(k.doors).map((s) => slotName(ctx, s)).join(',')
        : kind === 'cooldown' || k.door === COOLDOWN_DOOR
          ? EVERY_DOOR
          : slotName(ctx, k.door),
  };
  const ifname = ctx.ifName(k.ifindex);
  if (ifname !== undefined) out.interface = ifname;
  switch (kind) {
    case 'knock': {
      out.step = k.step;
      const steps = ctx.doorSteps(k.door);
      if (steps !== undefined) out.steps = steps;
      break;
    }
    case 'reset': {
      out.step = k.step;
      const reason = RESET_NAMES[k.reason];
      if (reason) out.reason = reason;
      break;
    }
    case 'grant': {
      const left = k.expiresNs - ctx.nowNs();
      out.expires_in_ms = Number(left > 0n ? left / 1_000_000n : 0n);
      break;
    }
    case 'deny': {
      const reason = DENY_NAMES[k.reason];
      if (reason) out.reason = reason;
      break;
    }
    case 'cooldown': {
      const left = k.expiresNs - ctx.nowNs();
      out.failures = k.step;
      out.cooldown_ms = Number(left > 0n ? left / 1_000_000n : 0n);
      break;
    }
    case 'reject': {
      const reason = REJECT_NAMES[k.reason];
      if (reason) out.reason = reason;
      break;
    }
    case 'consume':
    case 'expire':
    case 'signed':
      break;
  }
  return out;
}

export function decodeAndDescribe(record: Buffer, ctx: EventContext): GateEvent {
  return describeEvent(decodeEvent(record), ctx);
}

/** One line for a person: `12:00:01 grant ssh 198.18.0.2 (open 30s)`. */
export function eventLine(e: GateEvent): string {
  const where = `${e.door} ${e.source} -> ${e.port}/${e.protocol}`;
  switch (e.event) {
    case 'knock':
      return `knock  ${where} step ${e.step}${e.steps !== undefined ? `/${e.steps}` : ''}`;
    case 'reset':
      return `reset  ${where} after ${e.step} step(s): ${e.reason ?? 'unknown'}`;
    case 'grant':
      return `grant  ${where} open for ${((e.expires_in_ms ?? 0) / 1000).toFixed(1)}s`;
    case 'deny':
      return `deny   ${where} (${e.reason ?? 'denied'})`;
    case 'cooldown':
      return `cooldown ${e.source}: ${e.failures ?? '?'} failed sequences, knocks ignored for ${((e.cooldown_ms ?? 0) / 1000).toFixed(1)}s`;
    case 'consume':
      return `consume ${where}: the flow-only grant let its one connection in`;
    case 'expire':
      return `expire ${e.door} ${e.source}: the grant ended`;
    case 'reject':
      return `reject ${where}: ${e.reason ?? 'refused'}${e.client !== undefined ? ` (client ${e.client})` : ''}`;
    case 'signed':
      return `signed ${where}: verifying`;
  }
}
