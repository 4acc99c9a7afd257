// The walker that config validation is built on: a Checker collects issues at file:line:col
// positions while reading a parsed YAML document (yaml's Document API), and small readers for
// the kinds of values door modules and sections take. Pure: no file system access.
import { isAlias, isMap, isScalar, isSeq, type Document, type LineCounter, type Node, type Scalar, type YAMLMap, type YAMLSeq } from 'yaml';
import { checkTimeout, formatDuration, parseDuration } from './duration.js';
import { suggest, type ConfigIssue } from './errors.js';
import { DEFAULTS, LIMITS } from './model.js';
import { formatStep, parseStep } from './ports.js';

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

/** A single-packet door's port: "62201/udp" (or just 62201). */
export function parseUdpPort(text: string | number): number {
  const step = parseStep(typeof text === 'number' ? `${text}/udp` : text);
  if (step.proto !== 'udp') throw new Error(`${formatStep(step)}: single-packet knocks are UDP datagrams; write ${step.port}/udp`);
  return step.port;
}

/** A key of a mapping with its nodes. `value` is null for `key:` with nothing after it. */
export interface Entry {
  key: string;
  keyNode: Node;
  value: Node | null;
  path: PathSeg[];
}

export function errorMessage(err: unknown): string {
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
    if (isEmpty(e)) {
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
export function scalarText(node: Scalar): string {
  const v = node.value;
  if (typeof v === 'string') return v;
  return node.source ?? String(v);
}

export function listOf(words: readonly string[], conjunction = 'or'): string {
  return words.length <= 1 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} ${conjunction} ${words.at(-1)}`;
}
/** A required key of a door type; reports it missing. */
export function required(c: Checker, entry: Entry, e: ReadonlyMap<string, Entry>, key: string, hint: string): Entry | undefined {
  const ke = e.get(key);
  if (ke === undefined) {
    c.missing(entry.keyNode, entry.path, key, hint);
    return undefined;
  }
  return c.present(ke, hint) ? ke : undefined;
}

/** A duration key within [min, max] ms, or the fallback when absent. */
export function boundedDuration(c: Checker, e: ReadonlyMap<string, Entry>, key: string, min: number, max: number, fallback: number): number | undefined {
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
export function filePath(c: Checker, ke: Entry | undefined, example: string): string | undefined {
  if (ke === undefined) return undefined;
  const text = c.string(ke, example);
  if (text === undefined) return undefined;
  if (text.trim() === '') {
    c.error(c.valueNode(ke), ke.path, `the file name is empty: give the path of the file, e.g. ${example}`);
    return undefined;
  }
  return text;
}

/** Parses one list item with a pure text parser, reporting its error at the item. */
export function scalarItem<T>(c: Checker, node: Node | null, path: PathSeg[], list: Entry, what: string, parse: (text: string) => T): T | undefined {
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

/** A single-datagram door's required port key (spa, signed): "62201/udp". */
export function udpPort(c: Checker, entry: Entry, e: ReadonlyMap<string, Entry>): number | undefined {
  const pe = required(c, entry, e, 'port', 'the UDP port the knock datagram goes to, e.g. port: 62201/udp');
  return pe === undefined ? undefined : scalarItem(c, c.valueNode(pe), pe.path, pe, 'a UDP port, e.g. 62201/udp', parseUdpPort);
}

/** A signed or spa door's max_skew key: the largest accepted distance from the gate's clock. */
export function maxSkew(c: Checker, e: ReadonlyMap<string, Entry>): number | undefined {
  return boundedDuration(c, e, 'max_skew', LIMITS.maxSkewMinMs, LIMITS.maxSkewMaxMs, DEFAULTS.maxSkewMs);
}

/** Whether a key has no value (`key:`). */
export function isEmpty(e: Entry): boolean {
  return e.value === null || (isScalar(e.value) && (e.value.value === null || e.value.value === undefined));
}
