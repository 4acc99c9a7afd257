/**
 * Manual pages in roff (man(7) macros), generated rather than written by hand so that they
 * cannot drift from what they describe:
 *
 * - knockgate(8) from the commander program tree: every visible command with its usage, full
 *   description, arguments, options (with defaults and choices) and the examples its --help
 *   prints;
 * - knockgate.yaml(5) from docs/CONFIG.md: a small Markdown reader for what that file uses
 *   (headings, paragraphs, lists, fenced code, tables, inline code, bold, links). Tables become
 *   tagged paragraphs (.TP), which read better than tbl(1) tables in a terminal.
 *
 * `node dist/src/doc/man.js OUTDIR` writes knockgate.8 and knockgate.yaml.5 there (the Debian
 * package build, scripts/package.sh, gzips them into /usr/share/man).
 */
import type { Argument, Command, Option } from 'commander';
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import type { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface ManMeta {
  /** "0.1.0" */
  version: string;
  /** "2026-12-04": the date of the source, so that a rebuild gives the same bytes */
  date: string;
}

// ---- roff text ------------------------------------------------------------------------------

/** Text safe inside a roff line: backslashes escaped, and no control character at its start. */
export function roffText(s: string): string {
  const t = s.replace(/\\/g, '\\e');
  return /^[.']/.test(t) ? `\\&${t}` : t;
}

/** Text set in bold as a literal (a command, an option, a key): hyphens are minus signs there. */
function literal(s: string): string {
  return `\\fB${s.replace(/\\/g, '\\e').replace(/-/g, '\\-')}\\fR`;
}

/** Every output line safe: a line that would start with . or ' gets \& in front. */
function safeLines(text: string): string {
  return text
    .split('\n')
    .map((l) => (/^[.']/.test(l) && !/^\.[A-Za-z]{1,2}( |$)/.test(l) && !/^\.\\"/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

function th(title: string, section: number, meta: ManMeta, manual: string): string {
  return `.TH ${title.toUpperCase()} ${section} "${meta.date}" "knockgate ${meta.version}" "${manual}"`;
}

// ---- knockgate(8) from the command tree --------------------------------------------------------

/** What `--help` prints after the built-in help (addHelpText('after', ...)): the examples. */
function afterHelp(cmd: Command): string {
  let text = '';
  // addHelpText() registers listeners of this event; --help emits it with a writer.
  (cmd as unknown as EventEmitter).emit('afterHelp', { error: false, command: cmd, write: (s: string) => (text += s) });
  return text.trim();
}

function commandPath(cmd: Command): string[] {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names;
}

function optionLine(o: Option): string {
  const extra: string[] = [];
  if (o.argChoices && o.argChoices.length > 0) extra.push(`one of: ${o.argChoices.join(', ')}`);
  if (o.defaultValue !== undefined && o.defaultValue !== false && !o.negate) {
    extra.push(`default: ${typeof o.defaultValue === 'string' ? o.defaultValue : JSON.stringify(o.defaultValue)}`);
  }
  const desc = o.description.replace(/\s+/g, ' ').trim();
  return roffText(`${desc}${extra.length > 0 ? ` (${extra.join('; ')})` : ''}`);
}

function flagsText(o: Option): string {
  // "-c, --config <file>": the names literal, the value name in italics.
  const m = /^(.*?)(\s+[<[].*)?$/.exec(o.flags);
  const names = (m?.[1] ?? o.flags).split(/,\s*|\s+|\|/).filter(Boolean);
  const value = m?.[2]?.trim();
  return names.map(literal).join(', ') + (value ? ` \\fI${roffText(value)}\\fR` : '');
}

function describeCommand(cmd: Command, out: string[]): void {
  const help = cmd.createHelp();
  const path = commandPath(cmd);
  const isRoot = cmd.parent === null;
  if (!isRoot) {
    out.push(`.SS "${path.join(' ')} ${cmd.usage().replace(/"/g, "'")}"`);
    const desc = cmd.description().trim();
    if (desc) out.push(roffText(desc.replace(/\s+/g, ' ')));
  }
  const args = cmd.registeredArguments;
  const argsWithText = args.filter((a: Argument) => a.description || (a.argChoices && a.argChoices.length > 0));
  for (const a of argsWithText) {
    out.push('.TP', `\\fI${roffText(a.name())}\\fR`);
    out.push(roffText([a.description, a.argChoices ? `one of: ${a.argChoices.join(', ')}` : ''].filter(Boolean).join(' ')));
  }
  const options = help.visibleOptions(cmd).filter((o) => !(o.long === '--help' && !isRoot) && !(isRoot && o.long === '--help'));
  for (const o of options) {
    out.push('.TP', flagsText(o), optionLine(o));
  }
  const after = afterHelp(cmd);
  const example = /Example:\n([\s\S]*)$/.exec(after);
  const before = example ? after.slice(0, example.index).trim() : after;
  if (before && !isRoot) out.push('.PP', ...before.split(/\n\s*\n/).map((p) => roffText(p.replace(/\s+/g, ' '))).flatMap((p, i) => (i ? ['.PP', p] : [p])));
  if (example?.[1] && !isRoot) {
    out.push('.PP', 'Example:', '.PP', '.RS 4', '.nf');
    // Minus signs, not hyphens: an example is copied into a shell.
    for (const l of example[1].split('\n')) if (l.trim()) out.push(roffText(l.trim()).replace(/-/g, '\\-'));
    out.push('.fi', '.RE');
  }
  for (const sub of help.visibleCommands(cmd)) {
    if (!cmd.commands.includes(sub)) continue; // commander's implicit "help [command]"
    describeCommand(sub, out);
  }
}

/** knockgate(8). */
export function commandManPage(program: Command, meta: ManMeta): string {
  const out: string[] = [];
  out.push(`.\\" Generated from the command tree by src/doc/man.ts: do not edit.`);
  out.push(th(program.name(), 8, meta, 'System Administration'));
  out.push('.SH NAME', `${program.name()} \\- ${roffText(program.description())}`);
  out.push('.SH SYNOPSIS');
  for (const sub of program.commands) {
    if (sub.commands.length > 0) {
      for (const s of sub.commands) out.push('.br', `${literal(program.name())} ${literal(sub.name())} ${literal(s.name())} ${roffText(s.usage())}`);
    } else {
      out.push('.br', `${literal(program.name())} ${literal(sub.name())} ${roffText(sub.usage())}`);
    }
  }
  out.push(
    '.SH DESCRIPTION',
    'knockgate is a port-knocking gate enforced in the kernel: an XDP program drops every packet to a protected port unless its source has knocked the right sequence (or sent a valid single-packet knock), before the network stack sees it.',
    `The daemon (${literal('knockgate run')}) loads and pins the program, attaches it to the configured interfaces and logs its events as JSON lines.`,
    'The other commands work on the pinned gate directly, whether or not the daemon runs; they find it through',
    `${literal('--pin-path')}, else the ${literal('pin_path')} of ${literal('-c')} \\fIFILE\\fR (default ${literal('/etc/knockgate/knockgate.yaml')} when it exists), else ${literal('/sys/fs/bpf/knockgate')}.`,
    '.PP',
    'Global options:',
  );
  const help = program.createHelp();
  for (const o of help.visibleOptions(program)) out.push('.TP', flagsText(o), optionLine(o));
  out.push('.SH COMMANDS');
  for (const sub of help.visibleCommands(program)) if (program.commands.includes(sub)) describeCommand(sub, out);
  out.push(
    '.SH EXIT STATUS',
    '.TP',
    '.B 0',
    'done',
    '.TP',
    '.B 1',
    'failed',
    '.TP',
    '.B 2',
    'usage error (bad argument or invalid change)',
    '.TP',
    '.B 3',
    'no gate is loaded at the pin path',
    '.TP',
    '.B 4',
    'invalid config file',
    '.SH FILES',
    '.TP',
    literal('/etc/knockgate/knockgate.yaml'),
    'The configuration (knockgate.yaml(5)). As installed by the package it lists no interfaces: the gate is loaded but guards nothing until it is edited.',
    '.TP',
    literal('/sys/fs/bpf/knockgate'),
    'The default pin path: the program, its maps and one link per interface.',
    '.TP',
    literal('/run/knockgate/'),
    "The daemon's control socket.",
    '.SH SIGNALS',
    `The daemon rereads its config on SIGHUP (${literal('systemctl reload knockgate')}); an invalid file is reported and the running gate keeps its last good config.`,
    `SIGTERM and SIGINT detach the gate and remove its pins, unless ${literal('keep: true')} or ${literal('--keep')}.`,
    '.SH SEE ALSO',
    '.BR knockgate.yaml (5),',
    '.BR systemctl (1),',
    '.BR journalctl (1),',
    '.BR bpftool (8)',
  );
  return safeLines(out.join('\n')) + '\n';
}

// ---- knockgate.yaml(5) from docs/CONFIG.md ----------------------------------------------------

/** Inline Markdown (code, bold, links) to roff, the rest escaped. */
export function inline(md: string): string {
  let out = '';
  // Split on code spans first: their content is literal.
  // Links first (their text may be a code span): the text, and the address when it is a URL.
  const linked = md.replace(/\[([^\]]+)\]\(([^)]+)\)/g, (_m, text: string, href: string) => (/^https?:/.test(href) ? `${text} <${href}>` : text));
  const parts = linked.split(/(`[^`]*`)/);
  for (const part of parts) {
    if (part.startsWith('`') && part.endsWith('`') && part.length >= 2) {
      out += literal(part.slice(1, -1));
      continue;
    }
    out += part
      .replace(/\\/g, '\\e')
      .replace(/\*\*([^*]+)\*\*/g, '\\fB$1\\fR');
  }
  return out;
}

function splitRow(line: string): string[] {
  // Cells split on | outside code spans (a cell may hold `a | b`).
  const cells: string[] = [];
  let cur = '';
  let code = false;
  const body = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  for (let i = 0; i < body.length; i++) {
    const ch = body[i]!;
    if (ch === '`') code = !code;
    if (ch === '\\' && body[i + 1] === '|') {
      cur += '|';
      i++;
      continue;
    }
    if (ch === '|' && !code) {
      cells.push(cur.trim());
      cur = '';
      continue;
    }
    cur += ch;
  }
  cells.push(cur.trim());
  return cells;
}

/** A Markdown table as tagged paragraphs: the first column is the tag, the others follow it. */
function table(lines: string[], out: string[]): void {
  const header = splitRow(lines[0]!);
  let carried = '';
  for (const line of lines.slice(2)) {
    const cells = splitRow(line);
    if (cells[0]) carried = cells[0];
    const tag = cells[0] || carried;
    const rest = cells.slice(1);
    out.push('.TP', inline(tag));
    if (rest.length === 1) {
      out.push(inline(rest[0]!));
      continue;
    }
    // The last column is the long text when there are more than two: the middle ones as "name: value".
    const last = header.length > 3 ? rest.pop() : undefined;
    const pairs = rest.map((c, i) => (c ? `${inline(header[i + 1] ?? '')}: ${inline(c)}` : '')).filter(Boolean);
    if (pairs.length > 0) out.push(pairs.join('; ') + (last ? '.' : ''));
    if (last) out.push('.br', inline(last));
  }
}

/** knockgate.yaml(5) from the Markdown of docs/CONFIG.md. */
export function configManPage(markdown: string, meta: ManMeta): string {
  const out: string[] = [];
  out.push(`.\\" Generated from docs/CONFIG.md by src/doc/man.ts: do not edit.`);
  out.push(th('knockgate.yaml', 5, meta, 'File Formats'));
  out.push('.SH NAME', 'knockgate.yaml \\- knockgate configuration file');
  out.push('.SH SYNOPSIS', literal('/etc/knockgate/knockgate.yaml'));
  out.push('.SH DESCRIPTION');
  const lines = markdown.split('\n');
  let para: string[] = [];
  const flush = (): void => {
    if (para.length > 0) out.push('.PP', inline(para.join(' ')));
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^# /.test(line)) continue; // the title: NAME says it
    let m = /^(#{2,6}) (.*)$/.exec(line);
    if (m) {
      flush();
      out.push(m[1] === '##' ? `.SH "${m[2]!.toUpperCase().replace(/"/g, '')}"` : `.SS "${m[2]!.replace(/"/g, '')}"`);
      continue;
    }
    if (/^```/.test(line)) {
      flush();
      out.push('.PP', '.RS 4', '.nf');
      for (i++; i < lines.length && !/^```/.test(lines[i]!); i++) out.push(roffText(lines[i]!));
      out.push('.fi', '.RE');
      continue;
    }
    if (/^\|/.test(line)) {
      flush();
      const rows: string[] = [];
      for (; i < lines.length && /^\|/.test(lines[i]!); i++) rows.push(lines[i]!);
      i--;
      table(rows, out);
      continue;
    }
    m = /^[-*] (.*)$/.exec(line);
    if (m) {
      flush();
      const item = [m[1]!];
      for (; i + 1 < lines.length && /^ {2,}\S/.test(lines[i + 1]!); i++) item.push(lines[i + 1]!.trim());
      out.push('.IP \\(bu 2', inline(item.join(' ')));
      continue;
    }
    if (line.trim() === '') {
      flush();
      continue;
    }
    para.push(line.trim());
  }
  flush();
  out.push('.SH SEE ALSO', '.BR knockgate (8)');
  return safeLines(out.join('\n')) + '\n';
}

// ---- entry point ------------------------------------------------------------------------------

async function main(outDir: string): Promise<void> {
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  const { buildProgram } = await import('../cli/main.js');
  const { version } = await import('../version.js');
  // The date of the source, not of the build (SOURCE_DATE_EPOCH, as Debian's tools set it).
  const epoch = Number(process.env['SOURCE_DATE_EPOCH'] ?? NaN);
  const date = (Number.isFinite(epoch) ? new Date(epoch * 1000) : new Date()).toISOString().slice(0, 10);
  const meta = { version: version(), date };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'knockgate.8'), commandManPage(buildProgram(), meta));
  writeFileSync(join(outDir, 'knockgate.yaml.5'), configManPage(readFileSync(join(root, 'docs/CONFIG.md'), 'utf8'), meta));
}

const entry = process.argv[1];
if (entry !== undefined && pathToFileURL(realpathSync(entry)).href === import.meta.url) {
  const outDir = process.argv[2];
  if (!outDir) {
    process.stderr.write('usage: node dist/src/doc/man.js OUTDIR\n');
    process.exit(2);
  }
  main(outDir).catch((err: unknown) => {
    process.stderr.write(`man: ${String(err)}\n`);
    process.exit(1);
  });
}
