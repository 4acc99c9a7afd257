// The generated manual pages: knockgate(8) covers every command and option of the program,
// knockgate.yaml(5) every key of docs/CONFIG.md, and groff renders both without a warning.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main.js';
import { commandManPage, configManPage, inline, roffText } from '../../src/doc/man.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const meta = { version: '9.9.9', date: '2026-12-04' };
const configMd = readFileSync(`${ROOT}docs/CONFIG.md`, 'utf8');

function walk(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(walk)];
}

/** Lines that would be taken as requests though they are not macros we wrote. */
function strayRequests(roff: string): string[] {
  return roff.split('\n').filter((l) => /^[.']/.test(l) && !/^\.(TH|SH|SS|PP|TP|IP|RS|RE|nf|fi|br|B|BR)( |$)/.test(l) && !l.startsWith('.\\"'));
}

test('roff escaping: backslashes, leading dots and quotes, literals with minus signs', () => {
  assert.equal(roffText('a\\b'), 'a\\eb');
  assert.equal(roffText('.hidden'), '\\&.hidden');
  assert.equal(roffText("'quoted"), "\\&'quoted");
  assert.equal(inline('run `--keep` and **bold** [the docs](DESIGN.md) <https>'), 'run \\fB\\-\\-keep\\fR and \\fBbold\\fR the docs <https>');
  assert.equal(inline('[site](https://example.org/x)'), 'site <https://example.org/x>');
});

test('knockgate(8) has every command, its options and its example', () => {
  const program = buildProgram();
  const page = commandManPage(program, meta);
  assert.match(page, /^\.\\" Generated/);
  assert.match(page, /^\.TH KNOCKGATE 8 "2026-12-04" "knockgate 9\.9\.9" "System Administration"$/m);
  for (const cmd of walk(program).slice(1)) {
    const path: string[] = [];
    for (let c: Command | null = cmd; c; c = c.parent) path.unshift(c.name());
    assert.ok(page.includes(`.SS "${path.join(' ')} `), `no section for ${path.join(' ')}`);
    for (const o of cmd.options) {
      if (o.hidden || !o.long) continue;
      assert.ok(page.includes(o.long.replace(/-/g, '\\-')), `${path.join(' ')}: option ${o.long} missing`);
    }
  }
  assert.ok(page.includes('knockgate check \\-c /etc/knockgate/knockgate.yaml'), 'examples from --help');
  assert.deepEqual(strayRequests(page), []);
});

test('knockgate.yaml(5) has every key of docs/CONFIG.md', () => {
  const page = configManPage(configMd, meta);
  const keys = [...configMd.matchAll(/^\| `([a-z_.[\]A-Z]+)` \|/gm)].map((m) => m[1]!);
  assert.ok(keys.length > 25, `keys found in CONFIG.md: ${keys.length}`);
  for (const k of keys) assert.ok(page.includes(`\\fB${k.replace(/-/g, '\\-')}\\fR`), `key ${k} missing`);
  for (const h of ['VALUE FORMATS', 'KEYS', 'DOOR TYPES', 'WHAT A RELOAD CHANGES', 'WARNINGS', 'ERRORS', 'EDITING']) {
    assert.ok(page.includes(`.SH "${h}"`), `section ${h}`);
  }
  assert.deepEqual(strayRequests(page), []);
});

test('groff renders both pages without a warning', (t) => {
  if (spawnSync('sh', ['-c', 'command -v groff']).status !== 0) {
    t.skip('groff is not installed (apt-get install groff-base)');
    return;
  }
  for (const page of [commandManPage(buildProgram(), meta), configManPage(configMd, meta)]) {
    const r = spawnSync('groff', ['-k', '-man', '-Tutf8', '-ww', '-z'], { input: page, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', r.stderr);
  }
});
