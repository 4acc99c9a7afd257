// `knockgate keygen`: the files it writes, their modes, the refusal to overwrite, and output that
// never shows a secret. In-process through keygen(), and as a process through main.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { keygen } from '../../src/cli/commands/keygen.js';
import { bashCompletion, describeProgram } from '../../src/cli/completion.js';
import { buildProgram } from '../../src/cli/main.js';
import { KeyFileError, keyIdOf, readPrivateKey, readPublicKey, readSecretFile } from '../../src/knock/index.js';
import { readFwknopKeyFile } from '../../src/knock/fwknop-keys.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

const mode = (path: string): number => statSync(path).mode & 0o777;

/** The secret lines of a file: hex digits, or a PEM body. */
function secretLines(path: string): string[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('-----') && !l.startsWith('#'));
}

describe('keygen()', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kg-unit-keygen-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('signed: an Ed25519 pair, the private key 0600, the public key beside it; prints the key id and the config snippet', async () => {
    const file = join(dir, 'id_knock');
    const out = await keygen(file, 'signed', false);
    assert.equal(mode(file), 0o600);
    assert.equal(mode(`${file}.pub`), 0o644 & ~process.umask());
    const priv = await readPrivateKey(file);
    const pub = await readPublicKey(`${file}.pub`);
    const id = keyIdOf(pub).toString('hex');
    assert.deepEqual(keyIdOf(priv), keyIdOf(pub), 'the two files are one pair');
    assert.match(out, new RegExp(`^wrote the Ed25519 private key to ${file} \\(mode 0600\\): keep it on this machine\\n`));
    assert.ok(out.includes(`wrote the public key to ${file}.pub\n`));
    assert.ok(out.includes(`key id: ${id}\n`));
    assert.match(out, /\n {6}clients:\n {8}[A-Za-z0-9_-]+: \/\S+\/id_knock\.pub\n/);
    assert.ok(out.includes(`--key-file ${file}`));
    for (const line of secretLines(file)) assert.ok(!out.includes(line), 'the private key is not printed');
  });

  for (const [type, bytes] of [['spa', 16], ['rotating', 32]] as const) {
    test(`${type}: a ${bytes}-byte hex secret, mode 0600; prints where it goes, not the secret`, async () => {
      const file = join(dir, `${type}.key`);
      const out = await keygen(file, type, false);
      assert.equal(mode(file), 0o600);
      const secret = await readSecretFile(file, { bytes });
      assert.equal(secret.length, bytes);
      assert.match(out, new RegExp(`^wrote a ${bytes}-byte ${type === 'spa' ? 'spa key' : 'rotating secret'} to ${file} \\(mode 0600\\)\\n`));
      assert.match(out, new RegExp(`${type === 'spa' ? 'key_file' : 'secret_file'}: ${file}\\n`));
      assert.ok(!out.includes(secret.toString('hex')), 'the secret is not printed');
      assert.ok(!existsSync(`${file}.pub`));
    });
  }

  test('fwknop: keys as fwknop --key-gen writes them, mode 0600; prints the door snippet and the client stanza with the same keys', async () => {
    const file = join(dir, 'fwknop.keys');
    const out = await keygen(file, 'fwknop', false);
    assert.equal(mode(file), 0o600);
    const keys = await readFwknopKeyFile(file);
    assert.match(readFileSync(file, 'utf8'), /^KEY_BASE64: \S{44}\nHMAC_KEY_BASE64: \S{88}\n$/);
    assert.match(out, new RegExp(`^wrote fwknop keys \\(KEY_BASE64, HMAC_KEY_BASE64\\) to ${file} \\(mode 0600\\)\\n`));
    assert.match(out, new RegExp(`\\n {6}type: fwknop\\n {6}port: 62201/udp\\n {6}key_file: ${file}\\n`));
    const stanza = out.slice(out.indexOf('[knockgate]'));
    assert.match(stanza, /^\[knockgate\]\nSPA_SERVER +GATE\n/);
    assert.ok(stanza.includes(`KEY_BASE64          ${keys.encryptionKey.toString('base64')}\n`));
    assert.ok(stanza.includes(`HMAC_KEY_BASE64     ${keys.hmacKey.toString('base64')}\n`));
    await assert.rejects(keygen(file, 'fwknop', false), { message: `${file} exists: pass --force to replace it` });
  });

  test('an existing file is kept without force and replaced (still 0600) with it', async () => {
    const file = join(dir, 'again.key');
    await keygen(file, 'spa', false);
    const first = readFileSync(file, 'utf8');
    await assert.rejects(keygen(file, 'spa', false), (err: unknown) => err instanceof KeyFileError && err.message === `${file} exists: pass --force to replace it`);
    assert.equal(readFileSync(file, 'utf8'), first);
    await keygen(file, 'spa', true);
    assert.notEqual(readFileSync(file, 'utf8'), first);
    assert.equal(mode(file), 0o600);
  });

  test('a key pair is not half-written when FILE.pub exists', async () => {
    const file = join(dir, 'half');
    writeFileSync(`${file}.pub`, 'someone else\'s\n');
    await assert.rejects(keygen(file, 'signed', false), { message: `${file}.pub exists: pass --force to replace it` });
    assert.ok(!existsSync(file));
    assert.equal(readFileSync(`${file}.pub`, 'utf8'), 'someone else\'s\n');
  });
});

describe('knockgate keygen as a process', () => {
  const HARNESS = `
import { buildProgram, explain } from ${JSON.stringify(`${ROOT}dist/src/cli/main.js`)};
const program = buildProgram();
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
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kg-unit-keygen-cli-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('writes the key (signed by default), refuses to overwrite without --force (exit 1), never prints a secret', () => {
    const file = join(dir, 'me');
    const r = run(['keygen', file]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.equal(mode(file), 0o600);
    for (const line of secretLines(file)) assert.ok(!r.stdout.includes(line));
    const again = run(['keygen', file]);
    assert.equal(again.status, 1);
    assert.equal(again.stderr, `knockgate: ${file} exists: pass --force to replace it\n`);
    const forced = run(['keygen', '--force', file]);
    assert.equal(forced.status, 0, forced.stderr);

    const secretFile = join(dir, 'rot.secret');
    const rot = run(['keygen', secretFile, '--type', 'rotating']);
    assert.equal(rot.status, 0, rot.stderr);
    const [hex] = secretLines(secretFile);
    assert.equal(hex?.length, 64);
    assert.ok(!rot.stdout.includes(hex ?? ''));
  });

  test('usage errors: exit 2', () => {
    const bad = run(['keygen', join(dir, 'x'), '--type', 'rsa']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /argument 'rsa' is invalid\. Allowed choices are signed, spa, rotating, fwknop\./);
    assert.equal(run(['keygen']).status, 2);
    const help = run(['keygen', '--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /Usage: knockgate keygen \[options\] <file>/);
    assert.match(help.stdout, /Examples:\n {2}knockgate keygen /);
  });

  test('is part of the program and of its shell completion', () => {
    const program = buildProgram();
    const spec = describeProgram(program).subcommands.find((c) => c.name === 'keygen');
    assert.ok(spec !== undefined);
    assert.deepEqual(spec.args.map((a) => [a.name, a.value]), [['file', 'file']]);
    assert.deepEqual(spec.options.find((o) => o.names.includes('--type'))?.value, { choices: ['signed', 'spa', 'rotating', 'fwknop'] });
    assert.match(bashCompletion(program), /'knockgate\|keygen'\) cmd='knockgate keygen'/);
  });
});
