// Validation: walks a parsed YAML document (yaml's Document API, so every node keeps its
// position) and turns it into a GateConfig, collecting every problem instead of stopping at
// the first. Pure: no file system access (load.ts reads files).
//
// The plain settings are tables of scalar keys (default, reader) read by one function; the
// door types' own keys are read by their modules (src/doors/); what holds across doors is a
// named check each, run once every door has been read on its own.
import { posix } from 'node:path';
import { isMap, isScalar, visit, type Document, type LineCounter, type Node, type YAMLMap } from 'yaml';
import { parseCidr, type Cidr } from '../net/addr.js';
import { DOORS, kindOf } from '../doors/index.js';
import { Checker, errorMessage, isEmpty, listOf, scalarItem, scalarText, type Entry, type PathSeg } from './checker.js';
import { formatDuration } from './duration.js';
import { isPattern, patternProblem } from './ifpattern.js';
import type { ConfigIssue } from './errors.js';
import {
  DEFAULTS,
  DEFAULT_DOOR_TYPE,
  DOOR_NAME,
  LIMITS,
  LOG_LEVELS,
  SCOPES,
  XDP_MODES,
  ATTACH_METHODS,
  type DoorConfig,
  type DoorType,
  DOOR_TYPES,
  type GateConfig,
  type InterfaceConfig,
  type PortRange,
  type Step,
  ON_PARTITION,
} from './model.js';
import { formatRange, formatStep, parsePortRange, parseStep, rangeHolds } from './ports.js';
import { formatSize, parseSize } from './size.js';
import { checkFleet } from './fleet.js';

export { Checker, formatPath, type Entry, type PathSeg } from './checker.js';
export { parsePayload } from '../doors/payload.js';

export const ROOT_KEYS = ['interfaces', 'xdp_mode', 'attach', 'xdp_priority', 'pin_path', 'keep', 'log', 'limits', 'brute_force', 'defaults', 'doors', 'fleet'] as const;
export const LOG_KEYS = ['level', 'denials_per_second', 'knock_events_per_second'] as const;
export const TIMEOUT_KEYS = ['step_timeout', 'sequence_timeout', 'open_for', 'flow_idle'] as const;
/** The keys every door takes, then each type's own keys (src/doors/), then on_partition. */
export const DOOR_KEYS: readonly string[] = [
  ...new Set(['type', 'sequence', 'protects', 'allow_from', 'scope', ...TIMEOUT_KEYS, ...DOOR_TYPES.flatMap((t) => DOORS[t].config.keys), 'on_partition']),
];
export const INTERFACE_KEYS = ['name', 'xdp_mode', 'attach', 'xdp_priority'] as const;

/** The door keys only some types take (every other door key applies to all types). */
const TYPED_KEYS = new Set(DOOR_TYPES.flatMap((t) => DOORS[t].config.keys));

// ---- scalar keys ---------------------------------------------------------------------------

/** A scalar key: its value when absent, how to read it (reporting at the entry), how to show the default. */
interface ScalarKey<T> {
  fallback: T;
  read(c: Checker, e: Entry): T | undefined;
  shown?(v: T): string;
}
type ScalarTable = Record<string, ScalarKey<never> | ScalarKey<string> | ScalarKey<number> | ScalarKey<boolean>>;
type Values<S> = { [K in keyof S]: S[K] extends ScalarKey<infer T> ? T : never };

const oneOf = <T extends string>(choices: readonly T[], what: string) => (c: Checker, e: Entry): T | undefined => c.oneOf(e, choices, what);
const integer = (min: number, max: number) => (c: Checker, e: Entry): number | undefined => c.integer(e, min, max);
const timeout = (c: Checker, e: Entry): number | undefined => c.timeout(e);
const powerOfTwo = (min: number, max: number, example: string) => (c: Checker, e: Entry): number | undefined => powerOfTwoSize(c, e, min, max, example);
const key = <T>(fallback: T, read: (c: Checker, e: Entry) => T | undefined, shown?: (v: T) => string): ScalarKey<T> =>
  shown === undefined ? { fallback, read } : { fallback, read, shown };

/** Root keys that interfaces inherit (and may set for themselves). */
const XDP_SCALARS = {
  xdp_mode: key(DEFAULTS.xdpMode, oneOf(XDP_MODES, 'an XDP mode')),
  attach: key(DEFAULTS.attach, oneOf(ATTACH_METHODS, 'an attach method')),
  xdp_priority: key<number>(DEFAULTS.xdpPriority, integer(0, LIMITS.xdpPriorityMax)),
};
const ROOT_SCALARS = {
  pin_path: key<string>(DEFAULTS.pinPath, readPinPath),
  keep: key<boolean>(DEFAULTS.keep, (c, e) => c.boolean(e)),
};
/** (read in this order; listed in LOG_KEYS' order) */
const LOG_SCALARS = {
  knock_events_per_second: key<number>(DEFAULTS.log.knockEventsPerSecond, integer(0, LIMITS.knockEventsPerSecondMax)),
  level: key(DEFAULTS.log.level, oneOf(LOG_LEVELS, 'a log level')),
  denials_per_second: key<number>(DEFAULTS.log.denialsPerSecond, integer(0, LIMITS.denialsPerSecondMax)),
};
const LIMITS_SCALARS = {
  sources: key<number>(DEFAULTS.limits.sources, integer(LIMITS.sourcesMin, LIMITS.sourcesMax)),
  flows: key<number>(DEFAULTS.limits.flows, integer(LIMITS.flowsMin, LIMITS.flowsMax)),
  event_ring: key<number>(DEFAULTS.limits.eventRingBytes, powerOfTwo(LIMITS.ringMin, LIMITS.ringMax, '256KiB'), formatSize),
  first_knock_filter: key<number>(DEFAULTS.limits.firstKnockFilterBytes, powerOfTwo(LIMITS.filterMin, LIMITS.filterMax, '8MiB'), formatSize),
};
const BRUTE_FORCE_SCALARS = {
  max_failures: key<number>(DEFAULTS.bruteForce.maxFailures, integer(0, LIMITS.maxFailuresMax)),
  failure_window: key<number>(DEFAULTS.bruteForce.failureWindowMs, timeout, formatDuration),
  cooldown: key<number>(DEFAULTS.bruteForce.cooldownMs, timeout, formatDuration),
};
const DOOR_SCALARS = {
  scope: key(DEFAULTS.scope, oneOf(SCOPES, 'a grant scope')),
  on_partition: key(DEFAULTS.onPartition, oneOf(ON_PARTITION, 'a partition policy')),
};

/**
 * Reads the keys of a table from a mapping's entries, in the table's order: each present key's
 * value, or (absent, empty or wrong) its fallback. `fallbacks` overrides the table's (a key that
 * inherits from another); `hint` says what removing the key means.
 */
function scalars<S extends ScalarTable>(
  c: Checker,
  e: ReadonlyMap<string, Entry> | null | undefined,
  table: S,
  fallbacks: Partial<Values<S>> = {},
  hint = (_key: string, shown: string): string => `remove the key to use the default (${shown})`,
): Values<S> {
  const out: Record<string, unknown> = {};
  for (const [k, spec] of Object.entries(table) as [string, ScalarKey<unknown>][]) {
    const fallback = k in fallbacks ? (fallbacks as Record<string, unknown>)[k] : spec.fallback;
    out[k] = fallback;
    const ke = e?.get(k);
    if (ke !== undefined && c.present(ke, hint(k, spec.shown?.(fallback) ?? String(fallback)))) out[k] = spec.read(c, ke) ?? fallback;
  }
  return out as Values<S>;
}

/** A section of scalar keys (log, limits, brute_force): the section's mapping, then its keys. */
function section<S extends ScalarTable>(c: Checker, root: ReadonlyMap<string, Entry>, name: string, table: S, expected: string, allowed: readonly string[] = Object.keys(table)): Values<S> {
  const se = root.get(name);
  const e = se !== undefined && c.present(se, 'remove the key to use the defaults') ? c.entries(se.value, se.path, allowed, expected) : null;
  return scalars(c, e, table);
}

/** pin_path: an absolute directory (on a bpffs), normalized. */
function readPinPath(c: Checker, e: Entry): string | undefined {
  const p = c.string(e, DEFAULTS.pinPath);
  if (p === undefined) return undefined;
  if (!p.startsWith('/')) c.error(c.valueNode(e), e.path, `${JSON.stringify(p)} is not an absolute path: write e.g. ${DEFAULTS.pinPath}`);
  else if (p.includes('\0')) c.error(c.valueNode(e), e.path, 'the path contains a NUL character');
  else {
    const normal = posix.normalize(p).replace(/\/+$/, '');
    if (normal === '') c.error(c.valueNode(e), e.path, `"/" cannot hold pins: write a directory on a bpffs, e.g. ${DEFAULTS.pinPath}`);
    else return normal;
  }
  return undefined;
}

type Origin = 'door' | 'defaults' | 'builtin';
interface Timeout {
  ms: number;
  origin: Origin;
  entry: Entry | null;
}
type Timeouts = Record<(typeof TIMEOUT_KEYS)[number], Timeout>;

export interface ValidationResult {
  /** null when there are errors. */
  config: Omit<GateConfig, 'file' | 'warnings'> | null;
  errors: ConfigIssue[];
  warnings: ConfigIssue[];
}

function interfaceNameProblem(name: string): string | null {
  if (name.length === 0) return 'it is empty';
  if (name.length > LIMITS.maxInterfaceNameLength) return `it is ${name.length} characters long; Linux allows at most ${LIMITS.maxInterfaceNameLength}`;
  if (name === '.' || name === '..') return 'it is reserved';
  const bad = /[/:\s]/.exec(name);
  if (bad !== null) return `it contains ${bad[0] === '/' || bad[0] === ':' ? `'${bad[0]}'` : 'whitespace'}`;
  return null;
}

function doorNameProblem(name: string): string | null {
  if (DOOR_NAME.test(name)) return null;
  if (name.length === 0) return 'it is empty';
  if (name.length > LIMITS.maxDoorNameLength) return `it is ${name.length} characters long; at most ${LIMITS.maxDoorNameLength}`;
  return 'use letters, digits, "_" and "-", starting with a letter or digit';
}

/** Validates a parsed document (which must have no YAML errors) into the config model. */
export function validateDocument(doc: Document, lineCounter: LineCounter, file: string): ValidationResult {
  const c = new Checker(doc, lineCounter, file);
  for (const w of doc.warnings) {
    const { line, col } = lineCounter.linePos(w.pos[0]);
    c.warnings.push({ file, line, col, path: '', message: w.message });
  }
  // An alias without an anchor before it is a YAML error that yaml only reports on toJS().
  visit(doc, {
    Alias(_, alias) {
      if (alias.resolve(doc) === undefined) c.error(alias, [], `invalid YAML: alias *${alias.source} has no anchor &${alias.source} before it`);
    },
  });
  if (c.errors.length > 0) return { config: null, errors: c.errors, warnings: c.warnings };
  const rootNode = c.resolve(doc.contents);
  if (rootNode === null || (isScalar(rootNode) && rootNode.value === null)) {
    c.error(0, [], 'the file is empty: a config needs at least interfaces and doors, see config/knockgate.example.yaml');
    return { config: null, errors: c.errors, warnings: c.warnings };
  }
  const root = c.entries(rootNode, [], ROOT_KEYS, 'a mapping with interfaces, doors and other settings');
  if (root === null) return { config: null, errors: c.errors, warnings: c.warnings };

  // xdp_mode, attach and xdp_priority first: interfaces inherit them.
  const xdp = scalars(c, root, XDP_SCALARS);
  // interfaces
  const interfaces: InterfaceConfig[] = [];
  const ifEntry = root.get('interfaces');
  if (ifEntry === undefined) {
    c.missing(rootNode, [], 'interfaces', 'list the interfaces to guard, e.g. interfaces: [eth0]');
  } else if (c.present(ifEntry, 'list the interfaces to guard, e.g. interfaces: [eth0]')) {
    const items = c.list(ifEntry, '[eth0]');
    // An explicit empty list is the packaged config's inert state: the gate loads but guards nothing.
    if (items !== null && items.length === 0) {
      c.warn(c.valueNode(ifEntry), ifEntry.path, '[] is empty: the gate is attached to no interface and guards nothing; list the interfaces to guard, e.g. [eth0]');
    }
    const seen = new Map<string, number>();
    for (const { node, index } of items ?? []) {
      const path = [...ifEntry.path, index];
      let name: string | undefined;
      let nameNode: Node | null = node;
      let mode = xdp.xdp_mode;
      let ifAttach = xdp.attach;
      let ifPriority = xdp.xdp_priority;
      if (isMap(node)) {
        const e = c.entries(node, path, INTERFACE_KEYS, 'an interface');
        const nameEntry = e?.get('name');
        if (e !== null && nameEntry === undefined) c.missing(node, path, 'name', 'the interface name, e.g. { name: eth1, xdp_mode: generic }');
        if (nameEntry !== undefined && c.present(nameEntry, 'the interface name, e.g. eth1')) {
          nameNode = c.valueNode(nameEntry);
          if (isScalar(nameEntry.value) && nameEntry.value.value !== null) name = scalarText(nameEntry.value);
          else c.error(nameNode, nameEntry.path, `expected an interface name, found ${c.describe(nameEntry.value)}`);
        }
        // each key falls back to the root key of the same name
        ({ xdp_mode: mode, attach: ifAttach, xdp_priority: ifPriority } = scalars(c, e, XDP_SCALARS, xdp, (key, shown) => `remove the key to use ${key} (${shown})`));
      } else if (isScalar(node) && node.value !== null && node.value !== undefined && typeof node.value !== 'boolean') {
        name = scalarText(node);
      } else {
        c.error(node ?? ifEntry.keyNode, path, `expected an interface name or { name: NAME, xdp_mode: MODE }, found ${c.describe(node)}`);
      }
      if (name === undefined) continue;
      const pattern = isPattern(name);
      const problem = pattern ? patternProblem(name) : interfaceNameProblem(name);
      if (problem !== null) {
        c.error(nameNode, path, `${JSON.stringify(name)} is not ${pattern ? 'a valid interface pattern' : 'an interface name'}: ${problem}`);
        continue;
      }
      const first = seen.get(name);
      if (first !== undefined) {
        c.error(nameNode, path, `${JSON.stringify(name)} is already listed as interfaces[${first}]`);
        continue;
      }
      seen.set(name, index);
      interfaces.push(pattern ? { name, mode, attach: ifAttach, priority: ifPriority, pattern: true } : { name, mode, attach: ifAttach, priority: ifPriority });
    }
  }

  const { pin_path: pinPath, keep } = scalars(c, root, ROOT_SCALARS);
  const log = section(c, root, 'log', LOG_SCALARS, 'a mapping with level, denials_per_second and knock_events_per_second', LOG_KEYS);
  const limits = section(c, root, 'limits', LIMITS_SCALARS, 'a mapping with sources, flows, event_ring and first_knock_filter');
  const bf = section(c, root, 'brute_force', BRUTE_FORCE_SCALARS, 'a mapping with max_failures, failure_window and cooldown');
  const { defaults, defaultsBad } = checkDefaults(c, root.get('defaults'));

  // doors
  const doors: DoorConfig[] = [];
  const doorsEntry = root.get('doors');
  /** Per door, the nodes of its parsed steps (for cross-door errors). */
  const stepNodes = new Map<DoorConfig, StepNode[]>();
  const doorNodes = new Map<DoorConfig, Entry>();
  if (doorsEntry === undefined) {
    c.missing(rootNode, [], 'doors', 'define at least one door, see config/knockgate.example.yaml');
  } else if (c.present(doorsEntry, 'define at least one door, e.g. doors: { ssh: { sequence: [7000/tcp, 8000/udp, 9000/tcp], protects: [22/tcp] } }')) {
    const e = c.entries(doorsEntry.value, doorsEntry.path, null, 'a mapping of door names to doors');
    if (e !== null && e.size === 0) c.error(c.valueNode(doorsEntry), doorsEntry.path, '{} has no doors: define at least one');
    let count = 0;
    let allowTotal = 0;
    for (const entry of e?.values() ?? []) {
      count++;
      if (count === LIMITS.maxDoors + 1) {
        c.error(entry.keyNode, doorsEntry.path, `${e?.size} doors: at most ${LIMITS.maxDoors} are supported`);
      }
      const door = checkDoor(c, entry, defaults, defaultsBad);
      if (door === null) continue;
      if (door.config.allowFrom !== null) {
        const before = allowTotal;
        allowTotal += door.config.allowFrom.length;
        if (before <= LIMITS.maxAllowTotal && allowTotal > LIMITS.maxAllowTotal) {
          const allowEntry = door.allowEntry;
          c.error(allowEntry?.keyNode ?? entry.keyNode, allowEntry?.path ?? entry.path,
            `the doors' allow_from lists hold ${allowTotal} networks up to here: at most ${LIMITS.maxAllowTotal} in total`);
        }
      }
      doors.push(door.config);
      stepNodes.set(door.config, door.stepNodes);
      doorNodes.set(door.config, entry);
    }
  }

  // Checked among the doors that are valid on their own.
  checkStepsUnprotected(c, doors, stepNodes);
  checkKnockPortsOwn(c, doors, doorNodes);
  checkScanWalk(c, doors, stepNodes);

  const fleetEntry = root.get('fleet');
  const fleet = fleetEntry === undefined ? null : checkFleet(c, fleetEntry);
  if (fleetEntry === undefined) warnOnPartitionWithoutFleet(c, doors, doorNodes);

  if (c.errors.length > 0) return { config: null, errors: c.errors, warnings: c.warnings };
  return {
    config: {
      fleet,
      interfaces,
      pinPath,
      keep,
      log: { level: log.level, denialsPerSecond: log.denials_per_second, knockEventsPerSecond: log.knock_events_per_second },
      limits: { sources: limits.sources, flows: limits.flows, eventRingBytes: limits.event_ring, firstKnockFilterBytes: limits.first_knock_filter },
      bruteForce: { maxFailures: bf.max_failures, failureWindowMs: bf.failure_window, cooldownMs: bf.cooldown },
      doors,
    },
    errors: [],
    warnings: c.warnings,
  };
}

/** defaults: the timeouts doors inherit; `defaultsBad` names the ones set wrong (doors that inherit them are not checked against them). */
function checkDefaults(c: Checker, de: Entry | undefined): { defaults: Timeouts; defaultsBad: Set<string> } {
  const defaults: Timeouts = {
    step_timeout: { ms: DEFAULTS.stepTimeoutMs, origin: 'builtin', entry: null },
    sequence_timeout: { ms: DEFAULTS.sequenceTimeoutMs, origin: 'builtin', entry: null },
    open_for: { ms: DEFAULTS.openForMs, origin: 'builtin', entry: null },
    flow_idle: { ms: DEFAULTS.flowIdleMs, origin: 'builtin', entry: null },
  };
  const defaultsBad = new Set<string>();
  if (de !== undefined && c.present(de, 'remove the key to use the built-in defaults')) {
    const e = c.entries(de.value, de.path, TIMEOUT_KEYS, 'a mapping with step_timeout, sequence_timeout, open_for and flow_idle');
    for (const key of TIMEOUT_KEYS) {
      const te = e?.get(key);
      if (te === undefined) continue;
      const builtin = formatDuration(defaults[key].ms);
      const ms = c.present(te, `remove the key to use the default (${builtin})`) ? c.timeout(te) : undefined;
      if (ms === undefined) defaultsBad.add(key);
      else defaults[key] = { ms, origin: 'defaults', entry: te };
    }
    if (!defaultsBad.has('step_timeout') && !defaultsBad.has('sequence_timeout')) {
      checkTimeoutOrder(c, defaults.step_timeout, defaults.sequence_timeout);
    }
  }
  return { defaults, defaultsBad };
}

// ---- cross-door checks ---------------------------------------------------------------------

interface StepNode {
  node: Node;
  path: PathSeg[];
}

/**
 * A knock step must not be a protected port: protected ports are judged first, so the knock
 * would be dropped as a protected-port packet and never count.
 */
function checkStepsUnprotected(c: Checker, doors: readonly DoorConfig[], stepNodes: ReadonlyMap<DoorConfig, StepNode[]>): void {
  for (const door of doors) {
    door.sequence.forEach((step, i) => {
      const protectors = doors.filter((d) => d.protects.some((r) => rangeHolds(r, step))).map((d) => d.name);
      if (protectors.length === 0) return;
      const where = stepNodes.get(door)?.[i];
      const by = protectors.length === 1 ? `door ${protectors[0]} protects it` : `doors ${listOf(protectors, 'and')} protect it`;
      c.error(where?.node ?? null, where?.path ?? [], `${formatStep(step)} is a knock step of door ${door.name}, but ${by}: knocks on a protected port are dropped before they count; pick a port no door protects`);
    });
  }
}

/**
 * The knock ports of the other door types: never protected, never shared with another door
 * (a sequence door may share steps with another sequence door, as before).
 */
function checkKnockPortsOwn(c: Checker, doors: readonly DoorConfig[], doorNodes: ReadonlyMap<DoorConfig, Entry>): void {
  const shares = (d: DoorConfig): boolean => d.type === DEFAULT_DOOR_TYPE;
  for (const [i, door] of doors.entries()) {
    if (shares(door)) continue;
    const at = doorNodes.get(door);
    for (const r of knockRanges(door)) {
      const protectors = doors.filter((d) => d.protects.some((p) => rangesOverlap(p, r))).map((d) => d.name);
      if (protectors.length > 0) {
        c.error(at?.keyNode ?? null, at?.path ?? [], `door ${door.name} knocks on ${formatRange(r)}, but ${protectors.length === 1 ? `door ${protectors[0]} protects` : `doors ${listOf(protectors, 'and')} protect`} ${r.first === r.last ? 'it' : 'ports of it'}: knocks on a protected port are dropped before they count; pick ports no door protects`);
      }
      for (const [j, other] of doors.entries()) {
        if (j === i || (j < i && !shares(other))) continue; // each pair once
        const clash = knockRanges(other).find((o) => rangesOverlap(o, r));
        if (clash !== undefined) {
          c.error(at?.keyNode ?? null, at?.path ?? [], `door ${door.name} knocks on ${formatRange(r)}, which overlaps ${formatRange(clash)} of door ${other.name}: a ${door.type} door needs knock ports of its own`);
        }
      }
    }
  }
}

/**
 * A port scan in ascending (or descending) order must never walk through a sequence. Every
 * knock candidate to a port that is not the next step resets progress, except a packet to a
 * protected port (judged before knocks, with no progress lookup). So two consecutive steps
 * of the same protocol need at least one port between them that no door protects.
 */
function checkScanWalk(c: Checker, doors: readonly DoorConfig[], stepNodes: ReadonlyMap<DoorConfig, StepNode[]>): void {
  for (const door of doors) {
    door.sequence.forEach((step, i) => {
      const prev = i > 0 ? door.sequence[i - 1] : undefined;
      if (!prev || prev.proto !== step.proto || prev.port === step.port) return;
      const lo = Math.min(prev.port, step.port);
      const hi = Math.max(prev.port, step.port);
      for (let port = lo + 1; port < hi; port++) {
        if (!doors.some((d) => d.protects.some((r) => rangeHolds(r, { port, proto: step.proto })))) return;
      }
      const where = stepNodes.get(door)?.[i];
      const between = hi - lo === 2 ? `${lo + 1}/${step.proto}` : `${lo + 1}-${hi - 1}/${step.proto}`;
      const gap = hi - lo === 1 ? 'right next to it' : `with only protected ports (${between}) between them`;
      c.error(
        where?.node ?? null,
        where?.path ?? [],
        `${formatStep(step)} follows ${formatStep(prev)} ${gap}: a port scan in ${step.port > prev.port ? 'ascending' : 'descending'} order would knock both in turn and open door ${door.name}; leave an unprotected port between consecutive steps`,
      );
    });
  }
}

/** on_partition in a config without a fleet section: harmless, but it does nothing. */
function warnOnPartitionWithoutFleet(c: Checker, doors: readonly DoorConfig[], doorNodes: ReadonlyMap<DoorConfig, Entry>): void {
  for (const d of doors) {
    const at = doorNodes.get(d)?.value;
    const pe = at && isMap(at) ? (at as YAMLMap<unknown, unknown>).items.find((p) => isScalar(p.key) && p.key.value === 'on_partition') : undefined;
    if (pe !== undefined) c.warn(pe.key as Node, [...(doorNodes.get(d)?.path ?? []), 'on_partition'], 'on_partition applies in fleet mode only: this config has no fleet section');
  }
}

/** The ports a door knocks on (as ranges), for the cross-door checks. */
export function knockRanges(d: DoorConfig): PortRange[] {
  return kindOf(d).config.knockRanges(d);
}

function rangesOverlap(a: PortRange, b: PortRange): boolean {
  return a.proto === b.proto && a.first <= b.last && b.first <= a.last;
}

// ---- one door ------------------------------------------------------------------------------

function originNote(t: Timeout, key: string): string {
  if (t.origin === 'defaults') return ` (from defaults.${key})`;
  if (t.origin === 'builtin') return ' (the default)';
  return '';
}

/** step_timeout must not exceed sequence_timeout; reported at whichever was set here. */
function checkTimeoutOrder(c: Checker, step: Timeout, seq: Timeout, doorOrigin: Origin = 'defaults'): void {
  if (step.ms <= seq.ms) return;
  const why = 'the time allowed between two knocks cannot exceed the time allowed for the whole sequence';
  if (step.origin === doorOrigin && step.entry !== null) {
    c.error(c.valueNode(step.entry), step.entry.path,
      `step_timeout ${formatDuration(step.ms)} is longer than sequence_timeout ${formatDuration(seq.ms)}${originNote(seq, 'sequence_timeout')}: ${why}`);
  } else if (seq.entry !== null) {
    c.error(c.valueNode(seq.entry), seq.entry.path,
      `sequence_timeout ${formatDuration(seq.ms)} is shorter than step_timeout ${formatDuration(step.ms)}${originNote(step, 'step_timeout')}: ${why}`);
  }
}

interface CheckedDoor {
  config: DoorConfig;
  stepNodes: StepNode[];
  allowEntry: Entry | null;
}

function checkDoor(c: Checker, entry: Entry, defaults: Timeouts, defaultsBad: Set<string>): CheckedDoor | null {
  const errorsBefore = c.errors.length;
  const name = entry.key;
  const path = entry.path;
  const nameProblem = doorNameProblem(name);
  if (nameProblem !== null) c.error(entry.keyNode, path, `${JSON.stringify(name)} is not a door name: ${nameProblem}`);
  if (entry.value === null || (isScalar(entry.value) && entry.value.value === null)) {
    c.error(entry.keyNode, path, `door ${name} is empty: it needs at least sequence and protects`);
    return null;
  }
  const e = c.entries(entry.value, path, DOOR_KEYS, 'a door: a mapping with sequence, protects and optional allow_from and timeouts');
  if (e === null) return null;

  // type, and the keys that belong to other types
  let type: DoorType = DEFAULT_DOOR_TYPE;
  const typeEntry = e.get('type');
  if (typeEntry !== undefined && c.present(typeEntry, 'remove the key for a fixed sequence')) {
    const t = c.oneOf(typeEntry, DOOR_TYPES, 'a door type');
    if (t === undefined) return null;
    type = t;
  }
  const kind = DOORS[type].config;
  for (const [key, ke] of e) {
    if (!TYPED_KEYS.has(key) || kind.keys.includes(key)) continue;
    const owners = DOOR_TYPES.filter((t) => DOORS[t].config.keys.includes(key));
    c.error(ke.keyNode, ke.path, `${key} is not a key of a ${type} door (it belongs to type ${listOf(owners)}): remove it${type === DEFAULT_DOOR_TYPE ? ', or set type' : ''}`);
  }
  const typed = kind.check(c, entry, e);

  // sequence
  const sequence: Step[] = [];
  const stepNodes: { node: Node; path: PathSeg[] }[] = [];
  const seqEntry = DOORS[type].config.keys.includes('sequence') ? e.get('sequence') : null;
  const seqExample = '[7000/tcp, 8000/udp, 9000/tcp]';
  if (seqEntry === null) {
    // not a sequence door
  } else if (seqEntry === undefined) {
    c.missing(entry.keyNode, path, 'sequence', `the knock sequence, e.g. sequence: ${seqExample}`);
  } else if (c.present(seqEntry, `the knock sequence, e.g. ${seqExample}`)) {
    const items = c.list(seqEntry, seqExample);
    if (items !== null && items.length === 0) c.error(c.valueNode(seqEntry), seqEntry.path, `[] is empty: list 1..${LIMITS.maxSteps} knock steps, e.g. ${seqExample}`);
    if (items !== null && items.length > LIMITS.maxSteps) {
      const extra = items[LIMITS.maxSteps];
      c.error(extra?.node ?? seqEntry.keyNode, seqEntry.path, `${items.length} steps: a sequence has at most ${LIMITS.maxSteps}`);
    }
    for (const { node, index } of items ?? []) {
      const itemPath = [...seqEntry.path, index];
      const step = scalarItem(c, node, itemPath, seqEntry, 'a knock step, e.g. 7000/tcp', parseStep);
      if (step === undefined) continue;
      const prev = sequence.at(-1);
      if (prev !== undefined && stepNodes.at(-1)?.path.at(-1) === index - 1 && prev.port === step.port && prev.proto === step.proto) {
        c.error(node, itemPath, `${formatStep(step)} repeats the step before it: the gate takes a repeated knock for a retransmission, so this sequence could never complete`);
      }
      sequence.push(step);
      stepNodes.push({ node: node ?? seqEntry.keyNode, path: itemPath });
    }
    if (items !== null && items.length === 1 && sequence.length === 1) {
      c.warn(c.valueNode(seqEntry), seqEntry.path, 'a one-step sequence is opened by any scan of that port');
    }
  }

  // protects
  const protects: PortRange[] = [];
  const protEntry = e.get('protects');
  const protExample = '[22/tcp]';
  if (protEntry === undefined) {
    c.missing(entry.keyNode, path, 'protects', `the ports this door opens, e.g. protects: ${protExample}`);
  } else if (c.present(protEntry, `the ports this door opens, e.g. ${protExample}`)) {
    const items = c.list(protEntry, protExample);
    if (items !== null && items.length === 0) c.error(c.valueNode(protEntry), protEntry.path, `[] is empty: list the ports this door opens, e.g. ${protExample}`);
    if (items !== null && items.length > LIMITS.maxProtects) {
      const extra = items[LIMITS.maxProtects];
      c.error(extra?.node ?? protEntry.keyNode, protEntry.path, `${items.length} entries: a door protects at most ${LIMITS.maxProtects} ports or ranges`);
    }
    for (const { node, index } of items ?? []) {
      const range = scalarItem(c, node, [...protEntry.path, index], protEntry, 'a port or port range, e.g. 22/tcp', parsePortRange);
      if (range !== undefined) protects.push(range);
    }
  }

  // allow_from
  let allowFrom: Cidr[] | null = null;
  const allowEntry = e.get('allow_from') ?? null;
  if (allowEntry !== null && c.present(allowEntry, 'remove the key to allow any source')) {
    const items = c.list(allowEntry, '[198.18.0.0/15, 2001:db8::/32]');
    if (items !== null && items.length === 0) {
      c.error(c.valueNode(allowEntry), allowEntry.path, '[] would let nobody knock; remove the key to allow any source');
    }
    if (items !== null && items.length > LIMITS.maxAllowPerDoor) {
      const extra = items[LIMITS.maxAllowPerDoor];
      c.error(extra?.node ?? allowEntry.keyNode, allowEntry.path, `${items.length} networks: allow_from holds at most ${LIMITS.maxAllowPerDoor} per door`);
    }
    if (items !== null && items.length > 0) {
      const seen = new Set<string>();
      allowFrom = [];
      for (const { node, index } of items) {
        const cidr = scalarItem(c, node, [...allowEntry.path, index], allowEntry, 'a network, e.g. 198.18.0.0/15', parseCidr);
        if (cidr === undefined || seen.has(cidr.text)) continue;
        seen.add(cidr.text);
        allowFrom.push(cidr);
      }
    }
  }

  // scope, and on_partition (fleet mode): which one-time doors refuse while no fleet-wide claim can be made
  const { scope, on_partition: onPartition } = scalars(c, e, DOOR_SCALARS);
  const opEntry = e.get('on_partition');
  if (opEntry !== undefined && !isEmpty(opEntry) && kind.onPartition !== true) {
    c.error(opEntry.keyNode, opEntry.path, `on_partition applies to one-time doors that claim through etcd (${DOOR_TYPES.filter((t) => DOORS[t].config.onPartition === true).join(', ')}); a ${type} door ${kind.onPartition}: remove it`);
  }

  // timeouts
  const t: Timeouts = { ...defaults };
  const bad = new Set(defaultsBad);
  for (const key of TIMEOUT_KEYS) {
    const te = e.get(key);
    if (te === undefined) continue;
    const fallback = defaults[key];
    const hint = fallback.origin === 'defaults'
      ? `remove the key to use defaults.${key} (${formatDuration(fallback.ms)})`
      : `remove the key to use the default (${formatDuration(fallback.ms)})`;
    const ms = c.present(te, hint) ? c.timeout(te) : undefined;
    if (ms === undefined) bad.add(key);
    else {
      bad.delete(key);
      t[key] = { ms, origin: 'door', entry: te };
    }
  }
  if (!bad.has('step_timeout') && !bad.has('sequence_timeout') && (t.step_timeout.origin === 'door' || t.sequence_timeout.origin === 'door')) {
    checkTimeoutOrder(c, t.step_timeout, t.sequence_timeout, 'door');
  }

  if (c.errors.length > errorsBefore || typed === null) return null;
  return {
    config: {
      name,
      type,
      ...typed,
      sequence,
      protects,
      allowFrom,
      stepTimeoutMs: t.step_timeout.ms,
      sequenceTimeoutMs: t.sequence_timeout.ms,
      openForMs: t.open_for.ms,
      flowIdleMs: t.flow_idle.ms,
      scope,
      onPartition,
    } as DoorConfig,
    stepNodes,
    allowEntry,
  };
}

/** A size that must be a power of two within [min, max]; reported at the entry. */
function powerOfTwoSize(c: Checker, entry: Entry, min: number, max: number, example: string): number | undefined {
  const v = isScalar(entry.value) ? entry.value.value : undefined;
  const at = c.valueNode(entry);
  if (typeof v !== 'string' && typeof v !== 'number') {
    c.error(at, entry.path, `expected a size, e.g. ${example}, found ${c.describe(entry.value)}`);
    return undefined;
  }
  try {
    const bytes = parseSize(v);
    const shown = typeof v === 'number' ? String(v) : v;
    if (bytes < min || bytes > max) {
      c.error(at, entry.path, `${shown} is out of range: ${formatSize(min)}..${formatSize(max)}`);
    } else if ((bytes & (bytes - 1)) !== 0) {
      const lower = 2 ** Math.floor(Math.log2(bytes));
      c.error(at, entry.path, `${shown} is not a power of two: try ${formatSize(lower)} or ${formatSize(lower * 2)}`);
    } else {
      return bytes;
    }
  } catch (err) {
    c.error(at, entry.path, errorMessage(err));
  }
  return undefined;
}

