// Validation: walks a parsed YAML document (yaml's Document API, so every node keeps its
// position) and turns it into a GateConfig, collecting every problem instead of stopping at
// the first. Pure: no file system access (load.ts reads files).
import { posix } from 'node:path';
import { isAlias, isMap, isScalar, isSeq, visit, type Document, type LineCounter, type Node, type Scalar, type YAMLMap, type YAMLSeq } from 'yaml';
import { parseCidr, type Cidr } from '../net/addr.js';
import { checkTimeout, formatDuration, parseDuration } from './duration.js';
import { isPattern, patternProblem } from './ifpattern.js';
import { suggest, type ConfigIssue } from './errors.js';
import {
  DEFAULTS,
  DOOR_NAME,
  LIMITS,
  LOG_LEVELS,
  SCOPES,
  XDP_MODES,
  ATTACH_METHODS,
  type AttachMethod,
  type DoorConfig,
  type DoorType,
  DOOR_TYPES,
  type GateConfig,
  type InterfaceConfig,
  type LogLevel,
  type PortRange,
  type Scope,
  type Step,
  type OnPartition,
  ON_PARTITION,
  type XdpMode,
} from './model.js';
import { formatRange, formatStep, parsePortRange, parseStep, rangeHolds } from './ports.js';
import { formatSize, parseSize } from './size.js';
import { checkFleet } from './fleet.js';

export type PathSeg = string | number;

/** "doors.ssh.sequence[1]"; keys that are not plain words are quoted: doors["my door"]. */
export function formatPath(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

export const ROOT_KEYS = ['interfaces', 'xdp_mode', 'attach', 'xdp_priority', 'pin_path', 'keep', 'log', 'limits', 'brute_force', 'defaults', 'doors', 'fleet'] as const;
export const LOG_KEYS = ['level', 'denials_per_second', 'knock_events_per_second'] as const;
export const LIMITS_KEYS = ['sources', 'flows', 'event_ring', 'first_knock_filter'] as const;
export const BRUTE_FORCE_KEYS = ['max_failures', 'failure_window', 'cooldown'] as const;
export const TIMEOUT_KEYS = ['step_timeout', 'sequence_timeout', 'open_for', 'flow_idle'] as const;
export const DOOR_KEYS = [
  'type', 'sequence', 'protects', 'allow_from', 'scope', ...TIMEOUT_KEYS,
  'secret_file', 'knock_ports', 'length', 'window', 'port', 'key_file', 'max_skew', 'clients', 'knock', 'payload',
  'on_partition',
] as const;

/** The keys only some door types take (every other door key applies to all types). */
const TYPE_KEYS: Record<DoorType, readonly string[]> = {
  sequence: ['sequence', 'step_timeout', 'sequence_timeout'],
  rotating: ['secret_file', 'knock_ports', 'length', 'window', 'step_timeout', 'sequence_timeout'],
  spa: ['port', 'key_file', 'max_skew'],
  signed: ['port', 'clients', 'max_skew'],
  payload: ['knock', 'payload'],
};
const TYPED_KEYS = new Set(Object.values(TYPE_KEYS).flat());

/** A payload door's bytes: "hex:6b6e6f636b" or text (UTF-8), 1..32 bytes. */
export function parsePayload(text: string): Buffer {
  let bytes: Buffer;
  if (text.startsWith('hex:')) {
    const hex = text.slice(4).replace(/\s+/g, '');
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new Error(`${JSON.stringify(text)} is not hex: write hex: and an even number of hex digits, e.g. hex:6b6e6f636b`);
    bytes = Buffer.from(hex, 'hex');
  } else {
    bytes = Buffer.from(text, 'utf8');
  }
  if (bytes.length === 0) throw new Error('an empty payload matches every packet: give 1..32 bytes');
  if (bytes.length > LIMITS.payloadMaxBytes) throw new Error(`${bytes.length} bytes: a payload prefix has at most ${LIMITS.payloadMaxBytes}`);
  return bytes;
}

/** A single-packet door's port: "62201/udp" (or just 62201). */
function parseUdpPort(text: string | number): number {
  const step = parseStep(typeof text === 'number' ? `${text}/udp` : text);
  if (step.proto !== 'udp') throw new Error(`${formatStep(step)}: single-packet knocks are UDP datagrams; write ${step.port}/udp`);
  return step.port;
}
export const INTERFACE_KEYS = ['name', 'xdp_mode', 'attach', 'xdp_priority'] as const;

/** A key of a mapping with its nodes. `value` is null for `key:` with nothing after it. */
export interface Entry {
  key: string;
  keyNode: Node;
  value: Node | null;
  path: PathSeg[];
}

type Origin = 'door' | 'defaults' | 'builtin';
interface Timeout {
  ms: number;
  origin: Origin;
  entry: Entry | null;
}

export interface ValidationResult {
  /** null when there are errors. */
  config: Omit<GateConfig, 'file' | 'warnings'> | null;
  errors: ConfigIssue[];
  warnings: ConfigIssue[];
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class Checker {
  readonly errors: ConfigIssue[] = [];
  readonly warnings: ConfigIssue[] = [];
  /** "path|key" for every unknown key reported with a suggestion, so that the suggested key
   * is not also reported as missing. */
  private readonly suggested = new Set<string>();

  constructor(
    private readonly doc: Document,
    private readonly lineCounter: LineCounter,
    private readonly file: string,
  ) {}

  private issue(at: Node | number | null, path: readonly PathSeg[], message: string): ConfigIssue {
    const offset = typeof at === 'number' ? at : (at?.range?.[0] ?? 0);
    const { line, col } = this.lineCounter.linePos(offset);
    return { file: this.file, line, col, path: formatPath(path), message };
  }

  error(at: Node | number | null, path: readonly PathSeg[], message: string): void {
    this.errors.push(this.issue(at, path, message));
  }

  warn(at: Node | number | null, path: readonly PathSeg[], message: string): void {
    this.warnings.push(this.issue(at, path, message));
  }

  resolve(node: unknown): Node | null {
    if (isAlias(node)) return node.resolve(this.doc) ?? null;
    return isMap(node) || isSeq(node) || isScalar(node) ? node : null;
  }

  /** Where to point for an entry's value: the value, or the key when the value is empty. */
  valueNode(e: Entry): Node {
    return e.value !== null && !(isScalar(e.value) && e.value.value === null) ? e.value : e.keyNode;
  }

  describe(node: Node | null): string {
    if (node === null) return 'nothing';
    if (isMap(node)) return 'a mapping';
    if (isSeq(node)) return 'a list';
    if (isScalar(node)) {
      const v = node.value;
      if (v === null || v === undefined) return 'nothing';
      if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
      if (typeof v === 'number') return `the number ${scalarText(node)}`;
      if (typeof v === 'boolean') return String(v);
    }
    return 'something else';
  }

  /**
   * The entries of a mapping. Reports a non-mapping, duplicate keys, and keys not in
   * `allowed` (with a did-you-mean); returns only the known keys.
   */
  entries(node: Node | null, path: PathSeg[], allowed: readonly string[] | null, expected: string, at: Node | null = node): Map<string, Entry> | null {
    if (!isMap(node)) {
      this.error(at ?? node, path, `expected ${expected}, found ${this.describe(node)}`);
      return null;
    }
    const out = new Map<string, Entry>();
    for (const pair of (node as YAMLMap<unknown, unknown>).items) {
      const keyNode = this.resolve(pair.key);
      if (!isScalar(keyNode) || keyNode.value === null) {
        this.error(keyNode ?? node, path, 'keys must be plain names');
        continue;
      }
      const key = scalarText(keyNode);
      const keyPath = [...path, key];
      const previous = out.get(key);
      if (previous !== undefined) {
        this.error(keyNode, keyPath, `${JSON.stringify(key)} is set twice (first on line ${this.lineOf(previous.keyNode)})`);
        continue;
      }
      if (allowed !== null && !allowed.includes(key)) {
        const near = suggest(key, allowed);
        if (near !== null) this.suggested.add(`${formatPath(path)}|${near}`);
        this.error(keyNode, keyPath, near !== null
          ? `unknown key ${JSON.stringify(key)}: did you mean ${JSON.stringify(near)}?`
          : `unknown key ${JSON.stringify(key)}: expected ${listOf(allowed)}`);
        continue;
      }
      const value = pair.value === null || pair.value === undefined ? null : this.resolve(pair.value);
      out.set(key, { key, keyNode, value, path: keyPath });
    }
    return out;
  }

  /** Reports a missing required key, unless an unknown key near it was reported already. */
  missing(at: Node, path: PathSeg[], key: string, hint: string): void {
    if (this.suggested.has(`${formatPath(path)}|${key}`)) return;
    this.error(at, [...path, key], `required key is missing: ${hint}`);
  }

  lineOf(node: Node): number {
    return this.lineCounter.linePos(node.range?.[0] ?? 0).line;
  }

  /** Reports a key whose value is empty (`key:`); returns true when a value is present. */
  present(e: Entry, hint: string): boolean {
    if (e.value === null || (isScalar(e.value) && (e.value.value === null || e.value.value === undefined))) {
      this.error(e.keyNode, e.path, `has no value: ${hint}`);
      return false;
    }
    return true;
  }

  /** The items of a list value; reports a non-list. */
  list(e: Entry, example: string): { node: Node | null; index: number }[] | null {
    if (!isSeq(e.value)) {
      this.error(this.valueNode(e), e.path, `expected a list, e.g. ${example}, found ${this.describe(e.value)}`);
      return null;
    }
    return (e.value as YAMLSeq<unknown>).items.map((item, index) => ({ node: this.resolve(item), index }));
  }

  string(e: Entry, example: string): string | undefined {
    if (isScalar(e.value) && typeof e.value.value === 'string') return e.value.value;
    this.error(this.valueNode(e), e.path, `expected a string, e.g. ${example}, found ${this.describe(e.value)}`);
    return undefined;
  }

  integer(e: Entry, min: number, max: number): number | undefined {
    const v = isScalar(e.value) ? e.value.value : undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      this.error(this.valueNode(e), e.path, `expected a whole number ${min}..${max}, found ${this.describe(e.value)}`);
      return undefined;
    }
    if (v < min || v > max) {
      this.error(this.valueNode(e), e.path, `${isScalar(e.value) ? scalarText(e.value) : v} is out of range: ${min}..${max}`);
      return undefined;
    }
    return v;
  }

  boolean(e: Entry): boolean | undefined {
    const v = isScalar(e.value) ? e.value.value : undefined;
    if (typeof v === 'boolean') return v;
    this.error(this.valueNode(e), e.path, `expected true or false, found ${this.describe(e.value)}`);
    return undefined;
  }

  oneOf<T extends string>(e: Entry, choices: readonly T[], what: string): T | undefined {
    const v = isScalar(e.value) ? e.value.value : undefined;
    if (typeof v === 'string' && (choices as readonly string[]).includes(v)) return v as T;
    const text = isScalar(e.value) && v !== null && v !== undefined ? scalarText(e.value) : null;
    if (text === null || typeof v !== 'string') {
      this.error(this.valueNode(e), e.path, `expected ${what}: ${choices.join(', ')}; found ${this.describe(e.value)}`);
      return undefined;
    }
    const lower = text.toLowerCase();
    const near = choices.find((c) => c === lower) ?? suggest(text, choices)
      ?? choices.find((c) => lower.length >= 3 && (lower.startsWith(c) || c.startsWith(lower))) ?? null;
    this.error(this.valueNode(e), e.path, near !== null
      ? `${JSON.stringify(text)} is not ${what}: did you mean ${JSON.stringify(near)}?`
      : `${JSON.stringify(text)} is not ${what}: expected one of ${choices.join(', ')}`);
    return undefined;
  }

  timeout(e: Entry): number | undefined {
    const v = isScalar(e.value) ? e.value.value : undefined;
    if (typeof v !== 'string' && typeof v !== 'number') {
      this.error(this.valueNode(e), e.path, `expected a duration, e.g. 5s, found ${this.describe(e.value)}`);
      return undefined;
    }
    try {
      const ms = parseDuration(v);
      checkTimeout(ms, String(v));
      return ms;
    } catch (err) {
      this.error(this.valueNode(e), e.path, errorMessage(err));
      return undefined;
    }
  }
}

/** The text of a scalar as written, for names that YAML may have read as numbers. */
function scalarText(node: Scalar): string {
  const v = node.value;
  if (typeof v === 'string') return v;
  return node.source ?? String(v);
}

function listOf(words: readonly string[], conjunction = 'or'): string {
  return words.length <= 1 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} ${conjunction} ${words.at(-1)}`;
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

  // xdp_mode first: interfaces inherit it.
  let xdpMode: XdpMode = DEFAULTS.xdpMode;
  const xdpEntry = root.get('xdp_mode');
  if (xdpEntry !== undefined && c.present(xdpEntry, `remove the key to use the default (${DEFAULTS.xdpMode})`)) {
    xdpMode = c.oneOf(xdpEntry, XDP_MODES, 'an XDP mode') ?? xdpMode;
  }
  // attach and xdp_priority: defaults for the interfaces, like xdp_mode
  let attach: AttachMethod = DEFAULTS.attach;
  const attachEntry = root.get('attach');
  if (attachEntry !== undefined && c.present(attachEntry, `remove the key to use the default (${DEFAULTS.attach})`)) {
    attach = c.oneOf(attachEntry, ATTACH_METHODS, 'an attach method') ?? attach;
  }
  let priority: number = DEFAULTS.xdpPriority;
  const prioEntry = root.get('xdp_priority');
  if (prioEntry !== undefined && c.present(prioEntry, `remove the key to use the default (${DEFAULTS.xdpPriority})`)) {
    priority = c.integer(prioEntry, 0, LIMITS.xdpPriorityMax) ?? priority;
  }

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
      let mode = xdpMode;
      let ifAttach = attach;
      let ifPriority = priority;
      if (isMap(node)) {
        const e = c.entries(node, path, INTERFACE_KEYS, 'an interface');
        const nameEntry = e?.get('name');
        if (e !== null && nameEntry === undefined) c.missing(node, path, 'name', 'the interface name, e.g. { name: eth1, xdp_mode: generic }');
        if (nameEntry !== undefined && c.present(nameEntry, 'the interface name, e.g. eth1')) {
          nameNode = c.valueNode(nameEntry);
          if (isScalar(nameEntry.value) && nameEntry.value.value !== null) name = scalarText(nameEntry.value);
          else c.error(nameNode, nameEntry.path, `expected an interface name, found ${c.describe(nameEntry.value)}`);
        }
        const modeEntry = e?.get('xdp_mode');
        if (modeEntry !== undefined && c.present(modeEntry, `remove the key to use xdp_mode (${xdpMode})`)) {
          mode = c.oneOf(modeEntry, XDP_MODES, 'an XDP mode') ?? mode;
        }
        const ifAttachEntry = e?.get('attach');
        if (ifAttachEntry !== undefined && c.present(ifAttachEntry, `remove the key to use attach (${attach})`)) {
          ifAttach = c.oneOf(ifAttachEntry, ATTACH_METHODS, 'an attach method') ?? ifAttach;
        }
        const ifPrioEntry = e?.get('xdp_priority');
        if (ifPrioEntry !== undefined && c.present(ifPrioEntry, `remove the key to use xdp_priority (${priority})`)) {
          ifPriority = c.integer(ifPrioEntry, 0, LIMITS.xdpPriorityMax) ?? ifPriority;
        }
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

  // pin_path
  let pinPath: string = DEFAULTS.pinPath;
  const pinEntry = root.get('pin_path');
  if (pinEntry !== undefined && c.present(pinEntry, `remove the key to use the default (${DEFAULTS.pinPath})`)) {
    const p = c.string(pinEntry, DEFAULTS.pinPath);
    if (p !== undefined) {
      if (!p.startsWith('/')) c.error(c.valueNode(pinEntry), pinEntry.path, `${JSON.stringify(p)} is not an absolute path: write e.g. ${DEFAULTS.pinPath}`);
      else if (p.includes('\0')) c.error(c.valueNode(pinEntry), pinEntry.path, 'the path contains a NUL character');
      else {
        const normal = posix.normalize(p).replace(/\/+$/, '');
        if (normal === '') c.error(c.valueNode(pinEntry), pinEntry.path, `"/" cannot hold pins: write a directory on a bpffs, e.g. ${DEFAULTS.pinPath}`);
        else pinPath = normal;
      }
    }
  }

  // keep
  let keep: boolean = DEFAULTS.keep;
  const keepEntry = root.get('keep');
  if (keepEntry !== undefined && c.present(keepEntry, `remove the key to use the default (${DEFAULTS.keep})`)) {
    keep = c.boolean(keepEntry) ?? keep;
  }

  // log
  let level: LogLevel = DEFAULTS.log.level;
  let denialsPerSecond: number = DEFAULTS.log.denialsPerSecond;
  let knockEventsPerSecond: number = DEFAULTS.log.knockEventsPerSecond;
  const logEntry = root.get('log');
  if (logEntry !== undefined && c.present(logEntry, 'remove the key to use the defaults')) {
    const e = c.entries(logEntry.value, logEntry.path, LOG_KEYS, 'a mapping with level, denials_per_second and knock_events_per_second');
    const kpsEntry = e?.get('knock_events_per_second');
    if (kpsEntry !== undefined && c.present(kpsEntry, `remove the key to use the default (${DEFAULTS.log.knockEventsPerSecond})`)) {
      knockEventsPerSecond = c.integer(kpsEntry, 0, LIMITS.knockEventsPerSecondMax) ?? knockEventsPerSecond;
    }
    const levelEntry = e?.get('level');
    if (levelEntry !== undefined && c.present(levelEntry, `remove the key to use the default (${DEFAULTS.log.level})`)) {
      level = c.oneOf(levelEntry, LOG_LEVELS, 'a log level') ?? level;
    }
    const dpsEntry = e?.get('denials_per_second');
    if (dpsEntry !== undefined && c.present(dpsEntry, `remove the key to use the default (${DEFAULTS.log.denialsPerSecond})`)) {
      denialsPerSecond = c.integer(dpsEntry, 0, LIMITS.denialsPerSecondMax) ?? denialsPerSecond;
    }
  }

  // limits
  let sources: number = DEFAULTS.limits.sources;
  let flows: number = DEFAULTS.limits.flows;
  let eventRingBytes: number = DEFAULTS.limits.eventRingBytes;
  let firstKnockFilterBytes: number = DEFAULTS.limits.firstKnockFilterBytes;
  const limitsEntry = root.get('limits');
  if (limitsEntry !== undefined && c.present(limitsEntry, 'remove the key to use the defaults')) {
    const e = c.entries(limitsEntry.value, limitsEntry.path, LIMITS_KEYS, 'a mapping with sources, flows, event_ring and first_knock_filter');
    const srcEntry = e?.get('sources');
    if (srcEntry !== undefined && c.present(srcEntry, `remove the key to use the default (${DEFAULTS.limits.sources})`)) {
      sources = c.integer(srcEntry, LIMITS.sourcesMin, LIMITS.sourcesMax) ?? sources;
    }
    const flowsEntry = e?.get('flows');
    if (flowsEntry !== undefined && c.present(flowsEntry, `remove the key to use the default (${DEFAULTS.limits.flows})`)) {
      flows = c.integer(flowsEntry, LIMITS.flowsMin, LIMITS.flowsMax) ?? flows;
    }
    const ringEntry = e?.get('event_ring');
    if (ringEntry !== undefined && c.present(ringEntry, `remove the key to use the default (${formatSize(DEFAULTS.limits.eventRingBytes)})`)) {
      eventRingBytes = powerOfTwoSize(c, ringEntry, LIMITS.ringMin, LIMITS.ringMax, '256KiB') ?? eventRingBytes;
    }
    const fkEntry = e?.get('first_knock_filter');
    if (fkEntry !== undefined && c.present(fkEntry, `remove the key to use the default (${formatSize(DEFAULTS.limits.firstKnockFilterBytes)})`)) {
      firstKnockFilterBytes = powerOfTwoSize(c, fkEntry, LIMITS.filterMin, LIMITS.filterMax, '8MiB') ?? firstKnockFilterBytes;
    }
  }

  // brute_force
  let maxFailures: number = DEFAULTS.bruteForce.maxFailures;
  let failureWindowMs: number = DEFAULTS.bruteForce.failureWindowMs;
  let cooldownMs: number = DEFAULTS.bruteForce.cooldownMs;
  const bfEntry = root.get('brute_force');
  if (bfEntry !== undefined && c.present(bfEntry, 'remove the key to use the defaults')) {
    const e = c.entries(bfEntry.value, bfEntry.path, BRUTE_FORCE_KEYS, 'a mapping with max_failures, failure_window and cooldown');
    const mfEntry = e?.get('max_failures');
    if (mfEntry !== undefined && c.present(mfEntry, `remove the key to use the default (${DEFAULTS.bruteForce.maxFailures})`)) {
      maxFailures = c.integer(mfEntry, 0, LIMITS.maxFailuresMax) ?? maxFailures;
    }
    const fwEntry = e?.get('failure_window');
    if (fwEntry !== undefined && c.present(fwEntry, `remove the key to use the default (${formatDuration(DEFAULTS.bruteForce.failureWindowMs)})`)) {
      failureWindowMs = c.timeout(fwEntry) ?? failureWindowMs;
    }
    const cdEntry = e?.get('cooldown');
    if (cdEntry !== undefined && c.present(cdEntry, `remove the key to use the default (${formatDuration(DEFAULTS.bruteForce.cooldownMs)})`)) {
      cooldownMs = c.timeout(cdEntry) ?? cooldownMs;
    }
  }

  // defaults
  const defaults: Record<(typeof TIMEOUT_KEYS)[number], Timeout> = {
    step_timeout: { ms: DEFAULTS.stepTimeoutMs, origin: 'builtin', entry: null },
    sequence_timeout: { ms: DEFAULTS.sequenceTimeoutMs, origin: 'builtin', entry: null },
    open_for: { ms: DEFAULTS.openForMs, origin: 'builtin', entry: null },
    flow_idle: { ms: DEFAULTS.flowIdleMs, origin: 'builtin', entry: null },
  };
  const defaultsBad = new Set<string>();
  const defaultsEntry = root.get('defaults');
  if (defaultsEntry !== undefined && c.present(defaultsEntry, 'remove the key to use the built-in defaults')) {
    const e = c.entries(defaultsEntry.value, defaultsEntry.path, TIMEOUT_KEYS, 'a mapping with step_timeout, sequence_timeout, open_for and flow_idle');
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

  // doors
  const doors: DoorConfig[] = [];
  const doorsEntry = root.get('doors');
  /** Per door, the nodes of its parsed steps (for cross-door errors). */
  const stepNodes = new Map<DoorConfig, { node: Node; path: PathSeg[] }[]>();
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

  // A knock step must not be a protected port: protected ports are judged first, so the knock
  // would be dropped as a protected-port packet and never count.
  // Checked among the doors that are valid on their own.
  for (const door of doors) {
    door.sequence.forEach((step, i) => {
      const protectors = doors.filter((d) => d.protects.some((r) => rangeHolds(r, step))).map((d) => d.name);
      if (protectors.length === 0) return;
      const where = stepNodes.get(door)?.[i];
      const by = protectors.length === 1 ? `door ${protectors[0]} protects it` : `doors ${listOf(protectors, 'and')} protect it`;
      c.error(where?.node ?? null, where?.path ?? [], `${formatStep(step)} is a knock step of door ${door.name}, but ${by}: knocks on a protected port are dropped before they count; pick a port no door protects`);
    });
  }

  // The knock ports of the other door types: never protected, never shared with another door
  // (a sequence door may share steps with another sequence door, as before).
  for (const [i, door] of doors.entries()) {
    if (door.type === 'sequence') continue;
    const at = doorNodes.get(door);
    for (const r of knockRanges(door)) {
      const protectors = doors.filter((d) => d.protects.some((p) => rangesOverlap(p, r))).map((d) => d.name);
      if (protectors.length > 0) {
        c.error(at?.keyNode ?? null, at?.path ?? [], `door ${door.name} knocks on ${formatRange(r)}, but ${protectors.length === 1 ? `door ${protectors[0]} protects` : `doors ${listOf(protectors, 'and')} protect`} ${r.first === r.last ? 'it' : 'ports of it'}: knocks on a protected port are dropped before they count; pick ports no door protects`);
      }
      for (const [j, other] of doors.entries()) {
        if (j === i || (j < i && other.type !== 'sequence')) continue; // each pair once
        const clash = knockRanges(other).find((o) => rangesOverlap(o, r));
        if (clash !== undefined) {
          c.error(at?.keyNode ?? null, at?.path ?? [], `door ${door.name} knocks on ${formatRange(r)}, which overlaps ${formatRange(clash)} of door ${other.name}: a ${door.type} door needs knock ports of its own`);
        }
      }
    }
  }

  // A port scan in ascending (or descending) order must never walk through a sequence. Every
  // knock candidate to a port that is not the next step resets progress, except a packet to a
  // protected port (judged before knocks, with no progress lookup). So two consecutive steps
  // of the same protocol need at least one port between them that no door protects.
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

  const fleetEntry = root.get('fleet');
  const fleet = fleetEntry === undefined ? null : checkFleet(c, fleetEntry);
  if (fleet === null) {
    for (const d of doors) {
      const at = doorNodes.get(d)?.value;
      const pe = at && isMap(at) ? (at as YAMLMap<unknown, unknown>).items.find((p) => isScalar(p.key) && p.key.value === 'on_partition') : undefined;
      if (pe !== undefined && fleetEntry === undefined) c.warn(pe.key as Node, [...(doorNodes.get(d)?.path ?? []), 'on_partition'], 'on_partition applies in fleet mode only: this config has no fleet section');
    }
  }

  if (c.errors.length > 0) return { config: null, errors: c.errors, warnings: c.warnings };
  return {
    config: {
      fleet,
      interfaces,
      pinPath,
      keep,
      log: { level, denialsPerSecond, knockEventsPerSecond },
      limits: { sources, flows, eventRingBytes, firstKnockFilterBytes },
      bruteForce: { maxFailures, failureWindowMs, cooldownMs },
      doors,
    },
    errors: [],
    warnings: c.warnings,
  };
}

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
  stepNodes: { node: Node; path: PathSeg[] }[];
  allowEntry: Entry | null;
}

function checkDoor(c: Checker, entry: Entry, defaults: Record<(typeof TIMEOUT_KEYS)[number], Timeout>, defaultsBad: Set<string>): CheckedDoor | null {
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
  let type: DoorType = 'sequence';
  const typeEntry = e.get('type');
  if (typeEntry !== undefined && c.present(typeEntry, 'remove the key for a fixed sequence')) {
    const t = c.oneOf(typeEntry, DOOR_TYPES, 'a door type');
    if (t === undefined) return null;
    type = t;
  }
  for (const [key, ke] of e) {
    if (!TYPED_KEYS.has(key) || TYPE_KEYS[type].includes(key)) continue;
    const owners = DOOR_TYPES.filter((t) => TYPE_KEYS[t].includes(key));
    c.error(ke.keyNode, ke.path, `${key} is not a key of a ${type} door (it belongs to type ${listOf(owners)}): remove it${type === 'sequence' ? ', or set type' : ''}`);
  }
  const typed = checkDoorType(c, entry, e, type);

  // sequence
  const sequence: Step[] = [];
  const stepNodes: { node: Node; path: PathSeg[] }[] = [];
  const seqEntry = type === 'sequence' ? e.get('sequence') : null;
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

  // scope
  let scope: Scope = DEFAULTS.scope;
  const scopeEntry = e.get('scope');
  if (scopeEntry !== undefined && c.present(scopeEntry, `remove the key to use the default (${DEFAULTS.scope})`)) {
    scope = c.oneOf(scopeEntry, SCOPES, 'a grant scope') ?? scope;
  }

  // on_partition (fleet mode): which one-time doors refuse while no fleet-wide claim can be made
  let onPartition: OnPartition = DEFAULTS.onPartition;
  const opEntry = e.get('on_partition');
  if (opEntry !== undefined && c.present(opEntry, `remove the key to use the default (${DEFAULTS.onPartition})`)) {
    onPartition = c.oneOf(opEntry, ON_PARTITION, 'a partition policy') ?? onPartition;
    if (type !== 'rotating' && type !== 'signed') {
      c.error(opEntry.keyNode, opEntry.path, `on_partition applies to one-time doors that claim through etcd (rotating, signed); a ${type} door ${type === 'spa' ? 'is verified in the kernel, which never waits for the network' : 'has nothing to claim'}: remove it`);
    }
  }

  // timeouts
  const t: Record<(typeof TIMEOUT_KEYS)[number], Timeout> = { ...defaults };
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
    },
    stepNodes,
    allowEntry,
  };
}

/** A required key of a door type; reports it missing. */
function required(c: Checker, entry: Entry, e: Map<string, Entry>, key: string, hint: string): Entry | undefined {
  const ke = e.get(key);
  if (ke === undefined) {
    c.missing(entry.keyNode, entry.path, key, hint);
    return undefined;
  }
  return c.present(ke, hint) ? ke : undefined;
}

/** A duration key within [min, max] ms, or the fallback when absent. */
function boundedDuration(c: Checker, e: Map<string, Entry>, key: string, min: number, max: number, fallback: number): number | undefined {
  const ke = e.get(key);
  if (ke === undefined) return fallback;
  if (!c.present(ke, `remove the key to use the default (${formatDuration(fallback)})`)) return undefined;
  const ms = c.timeout(ke);
  if (ms === undefined) return undefined;
  if (ms < min || ms > max) {
    c.error(c.valueNode(ke), ke.path, `${formatDuration(ms)} is out of range: ${formatDuration(min)}..${formatDuration(max)}`);
    return undefined;
  }
  return ms;
}

/** A file path: any non-empty string; files are read when the config is loaded (secrets.ts). */
function filePath(c: Checker, ke: Entry | undefined, example: string): string | undefined {
  if (ke === undefined) return undefined;
  const text = c.string(ke, example);
  if (text === undefined) return undefined;
  if (text.trim() === '') {
    c.error(c.valueNode(ke), ke.path, `the file name is empty: give the path of the file, e.g. ${example}`);
    return undefined;
  }
  return text;
}

type TypedFields = Pick<DoorConfig, 'rotating' | 'spa' | 'signed' | 'payload'>;

/** The type-specific keys of a door (docs/CONFIG.md "Door types"). null when one is wrong. */
function checkDoorType(c: Checker, entry: Entry, e: Map<string, Entry>, type: DoorType): TypedFields | null {
  const before = c.errors.length;
  const skew = (): number | undefined => boundedDuration(c, e, 'max_skew', LIMITS.maxSkewMinMs, LIMITS.maxSkewMaxMs, DEFAULTS.maxSkewMs);
  const port = (): number | undefined => {
    const pe = required(c, entry, e, 'port', 'the UDP port the knock datagram goes to, e.g. port: 62201/udp');
    return pe === undefined ? undefined : scalarItem(c, c.valueNode(pe), pe.path, pe, 'a UDP port, e.g. 62201/udp', parseUdpPort);
  };
  switch (type) {
    case 'sequence':
      return {};
    case 'rotating': {
      const secretFile = filePath(c, required(c, entry, e, 'secret_file', 'the file holding the shared secret (hex), e.g. secret_file: /etc/knockgate/ssh.secret; make one with `knockgate keygen --type rotating FILE`'), '/etc/knockgate/ssh.secret');
      const re = required(c, entry, e, 'knock_ports', 'the port range the sequences are drawn from, e.g. knock_ports: 40000-40999/udp');
      let range = re === undefined ? undefined : scalarItem(c, c.valueNode(re), re.path, re, 'a port range, e.g. 40000-40999/udp', parsePortRange);
      if (range !== undefined && re !== undefined && range.last - range.first + 1 < LIMITS.rotatingMinRange) {
        c.error(c.valueNode(re), re.path, `${formatRange(range)} has ${range.last - range.first + 1} ports: a rotating door draws from at least ${LIMITS.rotatingMinRange}, so that a sequence cannot be guessed`);
        range = undefined;
      }
      const le = e.get('length');
      const length = le === undefined ? DEFAULTS.rotatingLength : c.present(le, `remove the key to use the default (${DEFAULTS.rotatingLength})`) ? c.integer(le, LIMITS.rotatingMinLength, LIMITS.rotatingMaxLength) : undefined;
      const windowMs = boundedDuration(c, e, 'window', LIMITS.windowMinMs, LIMITS.windowMaxMs, DEFAULTS.windowMs);
      if (c.errors.length > before || secretFile === undefined || range === undefined || length === undefined || windowMs === undefined) return null;
      return { rotating: { secretFile, range, length, windowMs } };
    }
    case 'spa': {
      const p = port();
      const keyFile = filePath(c, required(c, entry, e, 'key_file', 'the file holding the door\'s 128-bit key (hex), e.g. key_file: /etc/knockgate/ssh.key; make one with `knockgate keygen --type spa FILE`'), '/etc/knockgate/ssh.key');
      const maxSkewMs = skew();
      if (c.errors.length > before || p === undefined || keyFile === undefined || maxSkewMs === undefined) return null;
      return { spa: { port: p, keyFile, maxSkewMs } };
    }
    case 'signed': {
      const p = port();
      const maxSkewMs = skew();
      const ce = required(c, entry, e, 'clients', 'the clients\' public keys by name, e.g. clients: { alice: /etc/knockgate/clients/alice.pub }; make a pair with `knockgate keygen FILE`');
      const clients: { name: string; publicKeyFile: string }[] = [];
      if (ce !== undefined) {
        const m = c.entries(ce.value, ce.path, null, 'a mapping of client names to public key files');
        if (m !== null && m.size === 0) c.error(c.valueNode(ce), ce.path, '{} lists no client: add one, e.g. alice: /etc/knockgate/clients/alice.pub');
        if (m !== null && m.size > LIMITS.maxClientsPerDoor) c.error(c.valueNode(ce), ce.path, `${m.size} clients: at most ${LIMITS.maxClientsPerDoor} per door`);
        for (const [name, cl] of m ?? []) {
          if (!DOOR_NAME.test(name)) c.error(cl.keyNode, cl.path, `${JSON.stringify(name)} is not a client name: 1..31 characters of A-Z a-z 0-9 _ -, starting with a letter or digit`);
          const f = c.present(cl, 'give the path of the client\'s public key') ? filePath(c, cl, '/etc/knockgate/clients/alice.pub') : undefined;
          if (f !== undefined) clients.push({ name, publicKeyFile: f });
        }
      }
      if (c.errors.length > before || p === undefined || maxSkewMs === undefined) return null;
      return { signed: { port: p, clients, maxSkewMs } };
    }
    case 'payload': {
      const ke = required(c, entry, e, 'knock', 'what carries the payload: knock: icmp (an echo request) or knock: 62203/udp');
      let knock: { proto: 'udp' | 'icmp'; port: number } | undefined;
      if (ke !== undefined) {
        const v = isScalar(ke.value) ? ke.value.value : undefined;
        if (typeof v === 'string' && v.trim().toLowerCase() === 'icmp') knock = { proto: 'icmp', port: 0 };
        else {
          const p = scalarItem(c, c.valueNode(ke), ke.path, ke, 'icmp or a UDP port, e.g. 62203/udp', parseUdpPort);
          if (p !== undefined) knock = { proto: 'udp', port: p };
        }
      }
      const pe = required(c, entry, e, 'payload', 'the bytes the knock\'s payload starts with, e.g. payload: "hex:6b6e6f636b" or payload: open-sesame');
      const payload = pe === undefined ? undefined : scalarItem(c, c.valueNode(pe), pe.path, pe, 'text or hex:..., 1..32 bytes', (t) => parsePayload(String(t)));
      if (c.errors.length > before || knock === undefined || payload === undefined) return null;
      return { payload: { ...knock, payload } };
    }
  }
}

/** The ports a door knocks on (as ranges), for the cross-door checks. */
export function knockRanges(d: DoorConfig): PortRange[] {
  switch (d.type) {
    case 'sequence':
      return d.sequence.map((s) => ({ first: s.port, last: s.port, proto: s.proto }));
    case 'rotating':
      return [d.rotating!.range];
    case 'spa':
      return [{ first: d.spa!.port, last: d.spa!.port, proto: 'udp' }];
    case 'signed':
      return [{ first: d.signed!.port, last: d.signed!.port, proto: 'udp' }];
    case 'payload':
      return d.payload!.proto === 'icmp' ? [] : [{ first: d.payload!.port, last: d.payload!.port, proto: 'udp' }];
  }
}

function rangesOverlap(a: PortRange, b: PortRange): boolean {
  return a.proto === b.proto && a.first <= b.last && b.first <= a.last;
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

/** Parses one list item with a pure text parser, reporting its error at the item. */
function scalarItem<T>(c: Checker, node: Node | null, path: PathSeg[], list: Entry, what: string, parse: (text: string) => T): T | undefined {
  if (!isScalar(node) || node.value === null || node.value === undefined || typeof node.value === 'boolean') {
    c.error(node ?? list.keyNode, path, `expected ${what}, found ${c.describe(node)}`);
    return undefined;
  }
  try {
    const v = node.value;
    // Numbers reach the parsers as numbers so they can say "has no protocol".
    return typeof v === 'number' ? (parse as (text: string | number) => T)(v) : parse(scalarText(node));
  } catch (err) {
    c.error(node, path, errorMessage(err));
    return undefined;
  }
}
