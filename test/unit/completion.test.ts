// Shell completion generated from the commander tree: the scripts are valid, cover every command
// and option, and bash's completion function gives the right candidates for typed words.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Argument, Command, Option } from 'commander';
import { completionCommand } from '../../src/cli/commands/completion.js';
import { knockCommand } from '../../src/cli/commands/knock.js';
import { bashCompletion, describeProgram, zshCompletion } from '../../src/cli/completion.js';
import { buildProgram } from '../../src/cli/main.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The real program, with knock and completion registered (whether or not main.ts does it yet). */
function realProgram(): Command {
  const program = buildProgram();
  if (!program.commands.some((c) => c.name() === 'knock')) program.addCommand(knockCommand());
  if (!program.commands.some((c) => c.name() === 'completion')) program.addCommand(completionCommand(() => program));
  return program;
}

/** A made-up program with what the real one may grow: nesting, choices, hidden things, variadic args. */
function otherProgram(): Command {
  const remote = new Command('remote').description('manage remotes');
  remote
    .command('add')
    .description("add a remote: it's [quoted]")
    .argument('<name>', 'remote name')
    .argument('<url-file>', 'file holding the URL')
    .addOption(new Option('--mode <mode>', 'how').choices(['fast', 'safe']))
    .option('--state-dir <dir>', 'where to keep state')
    .addOption(new Option('--secret <s>', 'hidden').hideHelp());
  remote.command('rm').argument('<names...>');
  return new Command('my-tool')
    .option('-v, --verbose', 'say more')
    .addCommand(remote)
    .addCommand(new Command('internal').description('hidden'), { hidden: true })
    .addCommand(new Command('sh').addArgument(new Argument('<shell>').choices(['bash', 'zsh'])));
}

function walk(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(walk)];
}

/** Runs the bash completion function with COMP_WORDS = words (the last one is being typed). */
function complete(script: string, fn: string, words: string[], cwd?: string): string[] {
  const driver = `eval "$KG_SCRIPT"
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=\${#COMP_LINE}
${fn}
printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = spawnSync('bash', ['--norc', '--noprofile', '-c', driver, 'bash', ...words], {
    encoding: 'utf8',
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', KG_SCRIPT: script },
    timeout: 10_000,
    ...(cwd === undefined ? {} : { cwd }),
  });
  assert.equal(r.status, 0, `bash failed for ${words.join(' ')}: ${r.stderr}`);
  assert.equal(r.stderr, '', `bash printed errors for ${words.join(' ')}`);
  return r.stdout.split('\n').filter((l) => l !== '').sort();
}

describe('bash completion', () => {
  const program = realProgram();
  const script = bashCompletion(program);
  const fn = '_knockgate_completion';
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kg-unit-completion-'));
    writeFileSync(join(dir, 'client.yaml'), '');
    writeFileSync(join(dir, 'cert.pem'), '');
    mkdirSync(join(dir, 'conf.d'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('is valid bash (bash -n) and registers the function', () => {
    const r = spawnSync('bash', ['-n'], { input: script, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(script, /\ncomplete -F _knockgate_completion knockgate\n$/);
  });

  test('mentions every subcommand and option of the program', () => {
    const cmds = walk(program).slice(1);
    assert.ok(cmds.some((c) => c.name() === 'knock') && cmds.some((c) => c.name() === 'completion'));
    for (const c of cmds) assert.ok(script.includes(`|${c.name()}'`), `subcommand ${c.name()}`);
    for (const c of walk(program)) {
      for (const o of c.options) {
        for (const name of [o.short, o.long]) {
          if (name !== undefined) assert.match(script, new RegExp(`[' ]${name}[' ]`), `option ${name} of ${c.name()}`);
        }
      }
    }
  });

  test('completes subcommands, options and their values', () => {
    assert.deepEqual(complete(script, fn, ['knockgate', 'kn']), ['knock']);
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', '--de']), ['--delay']);
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', '--ch']), ['--check', '--check-timeout']);
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', '-']).filter((w) => !w.startsWith('--')), ['-4', '-6', '-c', '-h', '-s']);
    assert.deepEqual(complete(script, fn, ['knockgate', 'completion', '']), ['bash', 'zsh']);
    assert.deepEqual(complete(script, fn, ['knockgate', 'help', 'kn']), ['knock']);
    assert.deepEqual(complete(script, fn, ['knockgate', '-']), ['--help', '--version', '-V', '-h']);
    // after an option that takes a value, the walk skips the value
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', '--retries', '2', 'gw', '--the']), ['--then']);
    // a value with nothing to offer completes nothing (not subcommands, not options)
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', '--delay', '']), []);
    // a file value: -c FILE, --config FILE, --config=FILE (bash splits the "=")
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', 'gw', '-c', 'c'], dir), ['client.yaml', 'conf.d', 'cert.pem'].sort());
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', '--config', 'cl'], dir), ['client.yaml']);
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', '--config', '=', 'cl'], dir), ['client.yaml']);
    assert.deepEqual(complete(script, fn, ['knockgate', 'knock', '--config=cl'], dir), ['client.yaml']);
    // the first argument of knock is a host name (from the resolver's host list)
    assert.ok(complete(script, fn, ['knockgate', 'knock', 'localh']).includes('localhost'));
  });

  test('follows the tree of another program: nesting, choices, hidden commands and options', () => {
    const other = otherProgram();
    const s = bashCompletion(other);
    const f = '_my_tool_completion';
    assert.equal(spawnSync('bash', ['-n'], { input: s }).status, 0);
    assert.deepEqual(complete(s, f, ['my-tool', '']), ['help', 'remote', 'sh']);
    assert.deepEqual(complete(s, f, ['my-tool', '-v', 'remote', '']), ['add', 'help', 'rm']);
    assert.deepEqual(complete(s, f, ['my-tool', 'remote', 'add', '--mode', '']), ['fast', 'safe']);
    assert.deepEqual(complete(s, f, ['my-tool', 'remote', 'add', '--']), ['--help', '--mode', '--state-dir']);
    assert.deepEqual(complete(s, f, ['my-tool', 'sh', 'z']), ['zsh']);
    assert.doesNotMatch(s, /internal|--secret/);
  });
});

describe('zsh completion', () => {
  test('defines a function per command and registers itself', () => {
    const script = zshCompletion(realProgram());
    assert.match(script, /^#compdef knockgate\n/);
    for (const c of walk(realProgram()).slice(1)) {
      const path = [];
      for (let p: Command | null = c; p !== null; p = p.parent) path.unshift(p.name().replace(/[^A-Za-z0-9_]/g, '_'));
      assert.ok(script.includes(`\n_${path.join('_')}() {\n`), `function for ${path.join(' ')}`);
    }
    assert.match(script, /'1:host:_hosts'/);
    assert.match(script, /'\(-c --config\)'\{-c,--config\}'\[config file that defines the door\]:file:_files'/);
    assert.match(script, /'1:shell:\(bash zsh\)'/);
    assert.match(script, /compdef _knockgate knockgate\n/);
    const other = zshCompletion(otherProgram());
    assert.match(other, /'add:add a remote: it'\\''s \[quoted\]'/);
    assert.match(other, /'--mode\[how\]:mode:\(fast safe\)'/);
  });

  test('is valid zsh (zsh -n)', (t) => {
    if (spawnSync('zsh', ['-c', 'true']).error !== undefined) {
      t.skip('zsh is not installed');
      return;
    }
    for (const script of [zshCompletion(realProgram()), zshCompletion(otherProgram())]) {
      const r = spawnSync('zsh', ['-n'], { input: script, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    }
  });
});

describe('knockgate completion', () => {
  const HARNESS = `
import { buildProgram, explain } from ${JSON.stringify(`${ROOT}dist/src/cli/main.js`)};
import { knockCommand } from ${JSON.stringify(`${ROOT}dist/src/cli/commands/knock.js`)};
import { completionCommand } from ${JSON.stringify(`${ROOT}dist/src/cli/commands/completion.js`)};
const program = buildProgram();
if (!program.commands.some((c) => c.name() === 'knock')) program.addCommand(knockCommand());
if (!program.commands.some((c) => c.name() === 'completion')) program.addCommand(completionCommand(() => program));
const override = (c) => { c.exitOverride(); c.commands.forEach(override); };
override(program);
try {
  await program.parseAsync(process.argv.slice(1), { from: 'user' });
} catch (err) {
  const { message, code } = explain(err);
  if (message) process.stderr.write('knockgate: ' + message + '\\n');
  process.exitCode = code;
}
`;
  const run = (args: string[]): SpawnSyncReturns<string> =>
    spawnSync(process.execPath, ['--input-type=module', '-e', HARNESS, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });

  test('prints the script for the program it is part of', () => {
    const bash = run(['completion', 'bash']);
    assert.equal(bash.status, 0, bash.stderr);
    assert.equal(bash.stdout, bashCompletion(realProgram()));
    const zsh = run(['completion', 'zsh']);
    assert.equal(zsh.status, 0, zsh.stderr);
    assert.equal(zsh.stdout, zshCompletion(realProgram()));
  });

  test('an unknown shell is a usage error listing the shells', () => {
    const r = run(['completion', 'fish']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /value 'fish' is invalid for argument 'shell'\. Allowed choices are bash, zsh\./);
  });

  test('without a getter, it describes the root of its own tree', () => {
    const script = `
import { Command } from 'commander';
import { completionCommand } from ${JSON.stringify(`${ROOT}dist/src/cli/commands/completion.js`)};
await new Command('x').addCommand(new Command('y').addCommand(completionCommand())).parseAsync(['y', 'completion', 'bash'], { from: 'user' });
`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    const expected = new Command('x').addCommand(new Command('y').addCommand(completionCommand()));
    assert.equal(r.stdout, bashCompletion(expected));
    assert.deepEqual(describeProgram(expected).subcommands.map((c) => c.name), ['y', 'help']);
  });
});
