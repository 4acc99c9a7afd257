/**
 * The live gate's doors as config: read back from the kernel (kg_doors + kg_allow of the active
 * generation) into DoorConfig values, and rendered as YAML so that a change made from the CLI
 * goes through exactly the validation a config file gets (src/config/edit.ts).
 */
import { stringify } from 'yaml';
import { formatDuration, formatRange, formatStep, type Cidr, type DoorConfig, type PortRange, type Step } from '../config/index.js';
import { formatAddress, parseCidr } from '../net/addr.js';
import { DOOR_FLAG, DOOR_TYPE, DOOR_TYPE_NAMES, PROTO, protoName, rotatingSteps, type KDoor } from './layout.js';

/**
 * Stands for a key file in doors read back from the kernel: the kernel holds a spa door's key
 * (the gate keeps it when the CLI edits other doors), a rotating door's current sequences and a
 * signed door's port; the files themselves are only known to the daemon's config.
 */
export const LIVE_KEY = '(held by the live gate)';

const NS_PER_MS = 1_000_000n;

function cidrOf(allowText: string): Cidr {
  const [hex, prefix] = allowText.split('/');
  const addr = Buffer.from(hex ?? '', 'hex');
  const mapped = Number(prefix);
  const text = formatAddress(addr);
  // IPv4-mapped entries carry 96 + the IPv4 prefix.
  const own = text.includes(':') ? mapped : mapped - 96;
  return parseCidr(`${text}/${own}`);
}

/** A kernel door slot (active generation) as a DoorConfig. */
export function doorConfigOf(door: KDoor, allow: readonly string[] | null): DoorConfig {
  const sequence: Step[] = door.steps.map((s) => ({ port: s.port, proto: protoName(s.proto) }));
  const protects: PortRange[] = door.protects.map((r) => ({ first: r.first, last: r.last, proto: protoName(r.proto) }));
  const typed: Pick<DoorConfig, 'rotating' | 'spa' | 'signed' | 'payload'> = {};
  const ms = (ns: bigint): number => Number(ns / NS_PER_MS);
  switch (door.type) {
    case DOOR_TYPE.ROTATING:
      typed.rotating = { secretFile: LIVE_KEY, range: { first: door.range.first, last: door.range.last, proto: protoName(door.range.proto) }, length: door.nsteps, windowMs: ms(door.windowNs) };
      break;
    case DOOR_TYPE.SPA:
      typed.spa = { port: door.port, keyFile: LIVE_KEY, maxSkewMs: ms(door.maxSkewNs) };
      break;
    case DOOR_TYPE.SIGNED:
      typed.signed = { port: door.port, clients: [{ name: 'live', publicKeyFile: LIVE_KEY }], maxSkewMs: ms(door.maxSkewNs) };
      break;
    case DOOR_TYPE.PAYLOAD:
      typed.payload = { proto: door.proto === PROTO.ICMP ? 'icmp' : 'udp', port: door.port, payload: Buffer.from(door.payload) };
      break;
  }
  return {
    name: door.name,
    type: DOOR_TYPE_NAMES[door.type] ?? 'sequence',
    ...typed,
    sequence: door.type === DOOR_TYPE.SEQUENCE ? sequence : [],
    protects,
    allowFrom: allow === null ? null : allow.map(cidrOf),
    stepTimeoutMs: Number(door.stepTimeoutNs / NS_PER_MS),
    sequenceTimeoutMs: Number(door.seqTimeoutNs / NS_PER_MS),
    openForMs: Number(door.openForNs / NS_PER_MS),
    flowIdleMs: Number(door.flowIdleNs / NS_PER_MS),
    scope: (door.flags & DOOR_FLAG.FLOW_ONLY) !== 0 ? 'flow-only' : 'source',
  };
}

/**
 * A complete config text holding `doors` (every timeout explicit), for validation of an edit.
 * The interface and pin path are placeholders: only the doors are taken from the result.
 */
export function doorsAsConfigText(doors: readonly DoorConfig[]): string {
  const body: Record<string, unknown> = {};
  for (const d of doors) {
    const entry: Record<string, unknown> = {};
    if (d.type !== 'sequence') entry['type'] = d.type;
    if (d.type === 'sequence') entry['sequence'] = d.sequence.map(formatStep);
    Object.assign(entry, typeKeys(d));
    entry['protects'] = d.protects.map(formatRange);
    if (d.allowFrom !== null) entry['allow_from'] = d.allowFrom.map((c) => c.text);
    if (d.type === 'sequence' || d.type === 'rotating') {
      entry['step_timeout'] = formatDuration(d.stepTimeoutMs);
      entry['sequence_timeout'] = formatDuration(d.sequenceTimeoutMs);
    }
    entry['open_for'] = formatDuration(d.openForMs);
    entry['flow_idle'] = formatDuration(d.flowIdleMs);
    if (d.scope !== 'source') entry['scope'] = d.scope;
    body[d.name] = entry;
  }
  return stringify({ interfaces: ['lo'], doors: body }, { flowCollectionPadding: false });
}

/** A door's type-specific keys as config (key files as their paths, never their content). */
export function typeKeys(d: DoorConfig): Record<string, unknown> {
  switch (d.type) {
    case 'sequence':
      return {};
    case 'rotating':
      return { secret_file: d.rotating!.secretFile, knock_ports: formatRange(d.rotating!.range), length: d.rotating!.length, window: formatDuration(d.rotating!.windowMs) };
    case 'spa':
      return { port: `${d.spa!.port}/udp`, key_file: d.spa!.keyFile, max_skew: formatDuration(d.spa!.maxSkewMs) };
    case 'signed':
      return { port: `${d.signed!.port}/udp`, clients: Object.fromEntries(d.signed!.clients.map((c) => [c.name, c.publicKeyFile])), max_skew: formatDuration(d.signed!.maxSkewMs) };
    case 'payload':
      return { knock: d.payload!.proto === 'icmp' ? 'icmp' : `${d.payload!.port}/udp`, payload: `hex:${d.payload!.payload.toString('hex')}` };
  }
}

/** What a door knocks with, for people: "7000/tcp 8000/udp 9000/tcp", "SPA datagram to 62201/udp". */
export function describeKnockRule(d: DoorConfig): string {
  switch (d.type) {
    case 'sequence':
      return d.sequence.map(formatStep).join(' ');
    case 'rotating':
      return `rotating sequence of ${d.rotating!.length} in ${formatRange(d.rotating!.range)}, window ${formatDuration(d.rotating!.windowMs)}`;
    case 'spa':
      return `SPA datagram to ${d.spa!.port}/udp`;
    case 'signed':
      return `signed datagram to ${d.signed!.port}/udp`;
    case 'payload':
      return `${d.payload!.proto === 'icmp' ? 'ICMP echo request' : `datagram to ${d.payload!.port}/udp`} starting with ${d.payload!.payload.length} bytes`;
  }
}

/** The JSON shape of a door in `door list --json` and `status --json`. */
export interface DoorJson {
  name: string;
  type: DoorConfig['type'];
  /** what the door knocks with, in words */
  knock: string;
  slot: number;
  epoch: number;
  sequence: string[];
  protects: string[];
  allow_from: string[] | null;
  step_timeout_ms: number;
  sequence_timeout_ms: number;
  open_for_ms: number;
  flow_idle_ms: number;
  scope: DoorConfig['scope'];
  /** rotating doors: the windows held in the kernel */
  windows?: { window: string; sequence: string[] }[];
}

export function doorJson(slot: number, door: KDoor, allow: readonly string[] | null): DoorJson {
  const c = doorConfigOf(door, allow);
  const json: DoorJson = {
    name: c.name,
    type: c.type,
    knock: describeKnockRule(c),
    slot,
    epoch: door.epoch,
    sequence: c.sequence.map(formatStep),
    protects: c.protects.map(formatRange),
    allow_from: c.allowFrom?.map((x) => x.text) ?? null,
    step_timeout_ms: c.stepTimeoutMs,
    sequence_timeout_ms: c.sequenceTimeoutMs,
    open_for_ms: c.openForMs,
    flow_idle_ms: c.flowIdleMs,
    scope: c.scope,
  };
  if (door.type === DOOR_TYPE.ROTATING) {
    // The windows the kernel holds now, and their sequences: what an operator checks a client against.
    json.windows = ([0, 1] as const)
      .filter((s) => door.validUntilNs[s] !== 0n)
      .map((s) => ({ window: door.win[s].toString(), sequence: rotatingSteps(door, s).map((x) => formatStep({ port: x.port, proto: protoName(x.proto) })) }));
  }
  return json;
}
