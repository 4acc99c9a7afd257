// Editing doors in a config file through yaml's Document API, so comments and layout survive.
// Every edit is validated as a whole config before anything is written, and files are
// replaced atomically (temp file in the same directory, fsync, rename).
import { randomBytes } from 'node:crypto';
import { open, realpath, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { isMap, isScalar, isSeq, Scalar, type Document, type ToStringOptions, type Node, type Pair, type YAMLMap, type YAMLSeq } from 'yaml';
import type { Cidr } from '../net/addr.js';
import { parseCidr } from '../net/addr.js';
import { formatDuration } from './duration.js';
import { ConfigError } from './errors.js';
import { checkConfigText, NO_FILE, parseYaml, readConfigText } from './load.js';
import type { GateConfig, PortRange, Scope, Step } from './model.js';
import { formatRange, formatStep, parsePortRange, parseStep } from './ports.js';

/**
 * Changes to a door. Absent keys are left alone; null removes an optional key (allow_from:
 * any source may knock; a timeout: the door uses defaults.*). Text entries are parsed with the
 * config's own parsers and written in canonical form.
 */
export interface DoorChanges {
  sequence?: readonly (Step | string)[];
  protects?: readonly (PortRange | string)[];
  allowFrom?: readonly (Cidr | string)[] | null;
  stepTimeoutMs?: number | null;
  sequenceTimeoutMs?: number | null;
  openForMs?: number | null;
  flowIdleMs?: number | null;
  /** null: remove the key (scope source, the default) */
  scope?: Scope | null;
}

/** A new door: sequence and protects are required. */
export interface NewDoor extends DoorChanges {
  sequence: readonly (Step | string)[];
  protects: readonly (PortRange | string)[];
}

export interface EditResult {
  /** The new file text. */
  text: string;
  /** The validated config the new text describes. */
  config: GateConfig;
}

/** Thrown when the door to change does not exist, or the door to add already does. */
export class DoorEditError extends Error {
  override readonly name = 'DoorEditError';
}

type Value = string | string[];

/** The YAML keys a DoorChanges sets, in the order the example config uses. */
function yamlValues(changes: DoorChanges): [key: string, value: Value | null][] {
  const out: [string, Value | null][] = [];
  if (changes.sequence !== undefined) out.push(['sequence', changes.sequence.map((s) => formatStep(typeof s === 'string' ? parseStep(s) : s))]);
  if (changes.protects !== undefined) out.push(['protects', changes.protects.map((r) => formatRange(typeof r === 'string' ? parsePortRange(r) : r))]);
  if (changes.allowFrom !== undefined) {
    out.push(['allow_from', changes.allowFrom === null ? null : changes.allowFrom.map((c) => (typeof c === 'string' ? parseCidr(c) : c).text)]);
  }
  const durations: [string, number | null | undefined][] = [
    ['step_timeout', changes.stepTimeoutMs],
    ['sequence_timeout', changes.sequenceTimeoutMs],
    ['open_for', changes.openForMs],
    ['flow_idle', changes.flowIdleMs],
  ];
  for (const [key, ms] of durations) {
    if (ms !== undefined) out.push([key, ms === null ? null : formatDuration(ms)]);
  }
  if (changes.scope !== undefined) out.push(['scope', changes.scope]);
  return out;
}

/**
 * Stringify options that follow the file's own style where yaml would otherwise impose its
 * defaults: flow padding ("[a, b]" or "[ a, b ]"), indentation, block sequence indentation;
 * and no folding of long lines.
 */
function styleOf(text: string): ToStringOptions {
  const padded = (text.match(/[[{] +[^\s\]}]/g) ?? []).length;
  const tight = (text.match(/[[{][^\s\]}]/g) ?? []).length;
  const lines = text.split('\n').filter((l) => /^ +[^\s#]/.test(l));
  const indents = lines.map((l) => l.length - l.trimStart().length);
  const indent = indents.length > 0 ? Math.min(...indents) : 2;
  // indentSeq: "key:\n  - item" (true) or "key:\n- item" (false)
  let seqFlush = 0;
  let seqIndented = 0;
  let prev: string | null = null; // the last line with content
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    const m = /^( *)- /.exec(line);
    if (m !== null && prev !== null && /:\s*(#.*)?$/.test(prev)) {
      if ((m[1] ?? '').length === prev.length - prev.trimStart().length) seqFlush++;
      else seqIndented++;
    }
    prev = line;
  }
  return {
    flowCollectionPadding: padded > tight,
    indent: indent >= 1 && indent <= 8 ? indent : 2,
    indentSeq: seqFlush <= seqIndented,
    lineWidth: 0,
  };
}

/**
 * yaml always puts a blank line before a comment at the end of the document; take it out
 * again when the original file had none there.
 */
function keepTrailingComment(original: string, output: string): string {
  const block = /(?:^|\n)((?:#[^\n]*\n)+)$/.exec(original)?.[1];
  if (block === undefined || original.endsWith(`\n\n${block}`) || !output.endsWith(`\n\n${block}`)) return output;
  return output.slice(0, output.length - block.length - 1) + block;
}

/** The document as text in the style of `original`. */
function render(doc: Document, original: string): string {
  return keepTrailingComment(original, doc.toString(styleOf(original)));
}

function keyText(key: unknown): string | null {
  if (!isScalar(key)) return null;
  const v = key.value;
  return typeof v === 'string' ? v : (key.source ?? String(v));
}

function parseForEdit(text: string, fileName: string): Document {
  const parsed = parseYaml(text, fileName);
  if (parsed.errors.length > 0) throw new ConfigError(parsed.errors);
  return parsed.doc;
}

function doorsMap(doc: Document, fileName: string): YAMLMap {
  const doors = doc.get('doors', true);
  if (!isMap(doors)) throw new DoorEditError(`${fileName} has no doors mapping to edit`);
  return doors;
}

function findDoor(doors: YAMLMap, name: string): Pair | undefined {
  return (doors.items as Pair[]).find((p) => keyText(p.key) === name);
}

function flowSeq(doc: Document, items: string[]): YAMLSeq {
  const seq = doc.createNode(items) as YAMLSeq;
  seq.flow = true;
  return seq;
}

/** Sets one key of a door map, reusing the existing node so its comments and style stay. */
function setKey(doc: Document, door: YAMLMap, key: string, value: Value | null): void {
  if (value === null) {
    door.delete(key);
    return;
  }
  const existing = door.get(key, true) as Node | undefined;
  if (Array.isArray(value)) {
    if (isSeq(existing)) {
      existing.items = value.map((v) => new Scalar(v));
    } else {
      door.set(key, flowSeq(doc, value));
    }
  } else if (isScalar(existing)) {
    existing.value = value;
  } else {
    door.set(key, value);
  }
}

/** Validates edited text; errors name the file as "<file> (as edited)". */
function validated(text: string, fileName: string, file: string | null): EditResult {
  const result = checkConfigText(text, `${fileName} (as edited)`, file);
  if (result.config === null) throw new ConfigError(result.errors, result.warnings);
  // Warnings should name the real file once the text is written.
  const warnings = result.config.warnings.map((w) => ({ ...w, file: fileName }));
  return { text, config: { ...result.config, warnings } };
}

/** Changes settings of an existing door in config text. Throws unless the result is valid. */
export function setDoorInText(text: string, doorName: string, changes: DoorChanges, fileName = NO_FILE, file: string | null = null): EditResult {
  const doc = parseForEdit(text, fileName);
  const pair = findDoor(doorsMap(doc, fileName), doorName);
  if (pair === undefined) throw new DoorEditError(`${fileName} has no door named ${JSON.stringify(doorName)}`);
  if (!isMap(pair.value)) throw new DoorEditError(`door ${JSON.stringify(doorName)} in ${fileName} is not a mapping: fix it by hand first`);
  for (const [key, value] of yamlValues(changes)) setKey(doc, pair.value, key, value);
  return validated(render(doc, text), fileName, file);
}

/** Adds a door at the end of doors. Throws if it exists or the result is invalid. */
export function addDoorToText(text: string, doorName: string, door: NewDoor, fileName = NO_FILE, file: string | null = null): EditResult {
  const doc = parseForEdit(text, fileName);
  let doors = doc.get('doors', true);
  if (doors === undefined || (isScalar(doors) && doors.value === null)) {
    doc.set('doors', doc.createNode({}));
    doors = doc.get('doors', true);
  }
  if (!isMap(doors)) throw new DoorEditError(`${fileName}: doors is not a mapping: fix it by hand first`);
  if (findDoor(doors, doorName) !== undefined) throw new DoorEditError(`${fileName} already has a door named ${JSON.stringify(doorName)}`);
  const body = doc.createNode({}) as YAMLMap;
  for (const [key, value] of yamlValues(door)) {
    if (value !== null) body.set(key, Array.isArray(value) ? flowSeq(doc, value) : value);
  }
  const key = new Scalar(doorName);
  // Keep the file's rhythm: a blank line between doors if the other doors have one.
  const others = doors.items as Pair[];
  if (!doors.flow && others.slice(1).some((p) => isScalar(p.key) && p.key.spaceBefore === true)) key.spaceBefore = true;
  doors.add(doc.createPair(key, body));
  return validated(render(doc, text), fileName, file);
}

/** Removes a door with its comments. Throws if it does not exist or the result is invalid. */
export function removeDoorFromText(text: string, doorName: string, fileName = NO_FILE, file: string | null = null): EditResult {
  const doc = parseForEdit(text, fileName);
  const doors = doorsMap(doc, fileName);
  const pair = findDoor(doors, doorName);
  if (pair === undefined) throw new DoorEditError(`${fileName} has no door named ${JSON.stringify(doorName)}`);
  doors.items.splice(doors.items.indexOf(pair), 1);
  return validated(render(doc, text), fileName, file);
}

/**
 * Replaces a file atomically: the new text goes to a temp file next to the real file (symlinks
 * are followed), is flushed, gets the old file's mode (and owner, when allowed), and is
 * renamed over it.
 */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const target = await realpath(path).catch(() => resolve(path));
  const old = await stat(target).catch(() => null);
  const tmp = join(dirname(target), `.${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    try {
      await fh.writeFile(text, 'utf8');
      if (old !== null) {
        await fh.chmod(old.mode & 0o7777);
        await fh.chown(old.uid, old.gid).catch(() => undefined);
      } else {
        await fh.chmod(0o644);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  const dir = await open(dirname(target), 'r').catch(() => null);
  if (dir !== null) {
    await dir.sync().catch(() => undefined);
    await dir.close();
  }
}

async function editFile(path: string, edit: (text: string, fileName: string, file: string) => EditResult): Promise<GateConfig> {
  const text = await readConfigText(path);
  const result = edit(text, path, resolve(path));
  await writeFileAtomic(path, result.text);
  return result.config;
}

/** `knockgate door set --save`: changes a door in the file, keeping comments and layout. */
export function setDoorInFile(path: string, doorName: string, changes: DoorChanges): Promise<GateConfig> {
  return editFile(path, (text, fileName, file) => setDoorInText(text, doorName, changes, fileName, file));
}

export function addDoorToFile(path: string, doorName: string, door: NewDoor): Promise<GateConfig> {
  return editFile(path, (text, fileName, file) => addDoorToText(text, doorName, door, fileName, file));
}

export function removeDoorFromFile(path: string, doorName: string): Promise<GateConfig> {
  return editFile(path, (text, fileName, file) => removeDoorFromText(text, doorName, fileName, file));
}
