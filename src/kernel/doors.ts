/**
 * The live gate's doors as config: read back from the kernel (kg_doors + kg_allow of the active
 * generation) into DoorConfig values, and rendered as YAML so that a change made from the CLI
 * goes through exactly the validation a config file gets (src/config/edit.ts).
 */
import { stringify } from 'yaml';
import { DEFAULT_DOOR_TYPE, formatDuration, formatRange, formatStep, type Cidr, type DoorConfig } from '../config/index.js';
import { formatAddress, parseCidr } from '../net/addr.js';
import { DOORS, kindOf } from '../doors/index.js';
import { msOf } from '../doors/kind.js';
import { DOOR_FLAG, DOOR_TYPE_NAMES, protoName, type KDoor } from './layout.js';

export { LIVE_KEY } from '../doors/index.js';

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
  const type = DOOR_TYPE_NAMES[door.type] ?? 'sequence';
  const kind = DOORS[type].kernel;
  return {
    name: door.name,
    type,
    ...kind.decode(door),
    sequence: kind.decodeSteps?.(door) ?? [],
    protects: door.protects.map((r) => ({ first: r.first, last: r.last, proto: protoName(r.proto) })),
    allowFrom: allow === null ? null : allow.map(cidrOf),
    stepTimeoutMs: msOf(door.stepTimeoutNs),
    sequenceTimeoutMs: msOf(door.seqTimeoutNs),
    openForMs: msOf(door.openForNs),
    flowIdleMs: msOf(door.flowIdleNs),
    scope: (door.flags & DOOR_FLAG.FLOW_ONLY) !== 0 ? 'flow-only' : 'source',
  } as DoorConfig;
}

/**
 * A complete config text holding `doors` (every timeout explicit), for validation of an edit.
 * The interface and pin path are placeholders: only the doors are taken from the result.
 */
export function doorsAsConfigText(doors: readonly DoorConfig[]): string {
  const body: Record<string, unknown> = {};
  for (const d of doors) {
    const entry: Record<string, unknown> = {};
    if (d.type !== DEFAULT_DOOR_TYPE) entry['type'] = d.type;
    Object.assign(entry, typeKeys(d));
    entry['protects'] = d.protects.map(formatRange);
    if (d.allowFrom !== null) entry['allow_from'] = d.allowFrom.map((c) => c.text);
    if (kindOf(d).config.sequenced) {
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
  return kindOf(d).config.render(d);
}

/** What a door knocks with, for people: "7000/tcp 8000/udp 9000/tcp", "SPA datagram to 62201/udp". */
export function describeKnockRule(d: DoorConfig): string {
  return kindOf(d).config.describe(d);
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
  const windows = kindOf(c).kernel.windows?.(door);
  if (windows !== undefined) json.windows = windows;
  return json;
}
