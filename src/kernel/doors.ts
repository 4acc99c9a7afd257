/**
 * The live gate's doors as config: read back from the kernel (kg_doors + kg_allow of the active
 * generation) into DoorConfig values, and rendered as YAML so that a change made from the CLI
 * goes through exactly the validation a config file gets (src/config/edit.ts).
 */
import { stringify } from 'yaml';
import { formatDuration, formatRange, formatStep, type Cidr, type DoorConfig, type PortRange, type Step } from '../config/index.js';
import { formatAddress, parseCidr } from '../net/addr.js';
import { DOOR_FLAG, protoName, type KDoor } from './layout.js';

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
  return {
    name: door.name,
    sequence,
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
    const entry: Record<string, unknown> = {
      sequence: d.sequence.map(formatStep),
      protects: d.protects.map(formatRange),
    };
    if (d.allowFrom !== null) entry['allow_from'] = d.allowFrom.map((c) => c.text);
    entry['step_timeout'] = formatDuration(d.stepTimeoutMs);
    entry['sequence_timeout'] = formatDuration(d.sequenceTimeoutMs);
    entry['open_for'] = formatDuration(d.openForMs);
    entry['flow_idle'] = formatDuration(d.flowIdleMs);
    if (d.scope !== 'source') entry['scope'] = d.scope;
    body[d.name] = entry;
  }
  return stringify({ interfaces: ['lo'], doors: body }, { flowCollectionPadding: false });
}

/** The JSON shape of a door in `door list --json` and `status --json`. */
export interface DoorJson {
  name: string;
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
}

export function doorJson(slot: number, door: KDoor, allow: readonly string[] | null): DoorJson {
  const c = doorConfigOf(door, allow);
  return {
    name: c.name,
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
}
