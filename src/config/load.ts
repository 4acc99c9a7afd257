// Reading a config: text -> YAML document (with positions) -> validated GateConfig.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { ConfigError, sortIssues, type ConfigIssue } from './errors.js';
import type { GateConfig } from './model.js';
import { validateDocument } from './schema.js';

/** The name used in messages for text that did not come from a file. */
export const NO_FILE = '<config>';

export interface ParsedText {
  doc: Document;
  lineCounter: LineCounter;
  /** YAML syntax errors, with positions. */
  errors: ConfigIssue[];
}

function syntaxMessage(code: string, message: string): string {
  if (code === 'MULTIPLE_DOCS') return 'invalid YAML: the file holds more than one document (a second "---"); a config is one document';
  return `invalid YAML: ${message}`;
}

/** Parses YAML keeping comments, layout and positions; syntax errors are returned, not thrown. */
export function parseYaml(text: string, file: string): ParsedText {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false, keepSourceTokens: false });
  const errors = doc.errors.map((e): ConfigIssue => {
    const { line, col } = lineCounter.linePos(e.pos[0]);
    return { file, line, col, path: '', message: syntaxMessage(e.code, e.message) };
  });
  return { doc, lineCounter, errors };
}

export interface CheckResult {
  /** null when there are errors. */
  config: GateConfig | null;
  errors: ConfigIssue[];
  warnings: ConfigIssue[];
}

/**
 * Validates config text without throwing. `fileName` is used in messages; `file` is what the
 * model's `file` field will hold.
 */
export function checkConfigText(text: string, fileName: string = NO_FILE, file: string | null = null): CheckResult {
  const parsed = parseYaml(text, fileName);
  if (parsed.errors.length > 0) return { config: null, errors: sortIssues(parsed.errors), warnings: [] };
  const result = validateDocument(parsed.doc, parsed.lineCounter, fileName);
  const warnings = sortIssues(result.warnings);
  if (result.config === null) return { config: null, errors: sortIssues(result.errors), warnings };
  return { config: { file, ...result.config, warnings }, errors: [], warnings };
}

/**
 * Parses config text into the model, or throws ConfigError carrying every issue.
 * `fileName` names the text in messages (and, when given, becomes the model's `file`).
 */
export function parseConfigText(text: string, fileName?: string): GateConfig {
  const result = checkConfigText(text, fileName ?? NO_FILE, fileName ?? null);
  if (result.config === null) throw new ConfigError(result.errors, result.warnings);
  return result.config;
}

/** Reads a file without throwing anything but a ConfigError. */
export async function readConfigText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'it is a directory' : e.message;
    throw new ConfigError([{ file: path, line: 0, col: 0, path: '', message: `cannot read the config file: ${why}` }]);
  }
}

/**
 * Loads and validates a config file. Messages name the file as given; the model's `file` is
 * the absolute path. Throws ConfigError (also when the file cannot be read).
 */
export async function loadConfigFile(path: string): Promise<GateConfig> {
  const text = await readConfigText(path);
  const result = checkConfigText(text, path, resolve(path));
  if (result.config === null) throw new ConfigError(result.errors, result.warnings);
  return result.config;
}
