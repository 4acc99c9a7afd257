// Editing doors in a config file: comments and layout survive, invalid results are never
// written, files are replaced atomically.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, lstat, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addDoorToFile, addDoorToText, DoorEditError, removeDoorFromFile, setDoorInFile, setDoorInText } from '../../src/config/edit.js';
import { ConfigError } from '../../src/config/errors.js';
import { loadConfigFile } from '../../src/config/load.js';

const examplePath = fileURLToPath(new URL('../../../config/knockgate.example.yaml', import.meta.url));

const COMMENTED = `# knockgate on the edge box
interfaces: [eth0] # uplink only

doors:
  # the admins' way in
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp] # change monthly
    protects: [22/tcp]
    allow_from: [198.18.0.0/15]
    open_for: 30s # long enough for a slow login

  # game servers
  games:
    sequence: [7100/udp, 7200/udp]
    protects: [27015/udp]
# end of file
`;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kg-test-config-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('setDoorInFile changes only what it is asked to and keeps every comment', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'knockgate.yaml');
    await writeFile(path, COMMENTED);
    const config = await setDoorInFile(path, 'ssh', { sequence: ['7001/tcp', { port: 8001, proto: 'udp' }], openForMs: 90_000 });
    const text = await readFile(path, 'utf8');
    assert.equal(text, COMMENTED
      .replace('sequence: [7000/tcp, 8000/udp, 9000/tcp] # change monthly', 'sequence: [7001/tcp, 8001/udp] # change monthly')
      .replace('open_for: 30s # long enough', 'open_for: 1m30s # long enough'));
    assert.equal(config.file, path);
    assert.deepEqual(config.doors[0]?.sequence, [{ port: 7001, proto: 'tcp' }, { port: 8001, proto: 'udp' }]);
    assert.equal(config.doors[0]?.openForMs, 90_000);
    assert.deepEqual(await loadConfigFile(path), config);
  });
});

test('null removes optional keys; new keys are added to the door', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'knockgate.yaml');
    await writeFile(path, COMMENTED);
    const config = await setDoorInFile(path, 'ssh', { allowFrom: null, openForMs: null, stepTimeoutMs: 2000, protects: ['22/tcp', '2222-2223/tcp'] });
    const text = await readFile(path, 'utf8');
    assert.equal(text, COMMENTED
      .replace('    allow_from: [198.18.0.0/15]\n', '')
      .replace('    open_for: 30s # long enough for a slow login\n', '    step_timeout: 2s\n')
      .replace('protects: [22/tcp]', 'protects: [22/tcp, 2222-2223/tcp]'));
    assert.equal(config.doors[0]?.allowFrom, null);
    assert.equal(config.doors[0]?.openForMs, 30_000);
    assert.equal(config.doors[0]?.stepTimeoutMs, 2000);
  });
});

test('addDoorToFile appends a door in the file\'s style; removeDoorFromFile takes it out again', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'knockgate.yaml');
    await writeFile(path, COMMENTED);
    const added = await addDoorToFile(path, 'web', {
      sequence: ['5000/tcp', '5001/udp'],
      protects: ['443/tcp'],
      allowFrom: ['2001:DB8::/32', '203.0.113.7'],
      openForMs: 600_000,
    });
    assert.deepEqual(added.doors.map((d) => d.name), ['ssh', 'games', 'web']);
    const text = await readFile(path, 'utf8');
    assert.equal(text, COMMENTED.replace('# end of file\n', [
      '',
      '  web:',
      '    sequence: [5000/tcp, 5001/udp]',
      '    protects: [443/tcp]',
      '    allow_from: [2001:db8::/32, 203.0.113.7/32]',
      '    open_for: 10m',
      '# end of file',
      '',
    ].join('\n')));

    const removed = await removeDoorFromFile(path, 'games');
    assert.deepEqual(removed.doors.map((d) => d.name), ['ssh', 'web']);
    const after = await readFile(path, 'utf8');
    assert.doesNotMatch(after, /games|7100\/udp|# game servers/);
    for (const comment of ['# knockgate on the edge box', '# uplink only', "# the admins' way in", '# change monthly', '# long enough for a slow login', '# end of file']) {
      assert.ok(after.includes(comment), comment);
    }
  });
});

test('the example config keeps all its comments through an edit', () => {
  return readFile(examplePath, 'utf8').then((original) => {
    const { text } = setDoorInText(original, 'games', { openForMs: 7_200_000 });
    assert.equal(text, original.replace('    open_for: 1h\n', '    open_for: 2h\n'));
  });
});

test('an edit that would make the config invalid is refused and nothing is written', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'knockgate.yaml');
    await writeFile(path, COMMENTED);
    await chmod(path, 0o640);
    const before = await stat(path);
    await assert.rejects(setDoorInFile(path, 'games', { sequence: ['22/tcp', '7200/udp'] }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.format(), `${path} (as edited):14:16: doors.games.sequence[0]: 22/tcp is a knock step of door games, but door ssh protects it: knocks on a protected port are dropped before they count; pick a port no door protects`);
      return true;
    });
    await assert.rejects(setDoorInFile(path, 'ssh', { stepTimeoutMs: 60_000 }), ConfigError);
    await assert.rejects(removeDoorFromFile(path, 'ssh').then(() => removeDoorFromFile(path, 'games')), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.format(), /doors: \{\} has no doors: define at least one/);
      return true;
    });
    // The first removal (ssh) was valid and was written; the second was not.
    const cfg = await loadConfigFile(path);
    assert.deepEqual(cfg.doors.map((d) => d.name), ['games']);
    assert.deepEqual(await readdir(dir), ['knockgate.yaml'], 'no temp files left behind');
    const after = await stat(path);
    assert.equal(after.mode & 0o777, 0o640, 'mode kept');
    assert.notEqual(after.ino, before.ino, 'replaced by rename, not rewritten in place');
  });
});

test('unknown and duplicate doors, and unparseable files', async () => {
  assert.throws(() => setDoorInText(COMMENTED, 'nope', { openForMs: 1000 }, 'k.yaml'), (err: unknown) => {
    assert.ok(err instanceof DoorEditError);
    assert.equal(err.message, 'k.yaml has no door named "nope"');
    return true;
  });
  assert.throws(() => addDoorToText(COMMENTED, 'ssh', { sequence: ['1/tcp'], protects: ['2/tcp'] }, 'k.yaml'), {
    name: 'DoorEditError', message: 'k.yaml already has a door named "ssh"',
  });
  assert.throws(() => setDoorInText('doors: [x\n', 'ssh', {}, 'k.yaml'), ConfigError);
  assert.throws(() => setDoorInText(COMMENTED, 'ssh', { sequence: ['7000/icmp'] }), { message: '"7000/icmp" is not a knock step: write PORT/tcp or PORT/udp, e.g. 7000/udp' });
});

test('editing through a symlink replaces the target and keeps the link', async () => {
  await withDir(async (dir) => {
    const real = join(dir, 'real.yaml');
    const link = join(dir, 'knockgate.yaml');
    await writeFile(real, COMMENTED);
    await symlink('real.yaml', link);
    await setDoorInFile(link, 'ssh', { openForMs: 45_000 });
    assert.ok((await lstat(link)).isSymbolicLink());
    assert.equal(await readlink(link), 'real.yaml');
    assert.match(await readFile(real, 'utf8'), /open_for: 45s # long enough/);
  });
});

test('edits follow the file\'s own style: padded flow lists, flush block lists', () => {
  const text = 'interfaces:\n- eth0\ndoors:\n  ssh:\n    sequence: [ 7000/tcp ]\n    protects:\n    - 22/tcp\n';
  assert.equal(setDoorInText(text, 'ssh', { openForMs: 60_000 }).text, `${text}    open_for: 1m\n`);
  assert.equal(setDoorInText(text, 'ssh', { sequence: ['7000/tcp', '7002/tcp'] }).text, text.replace('[ 7000/tcp ]', '[ 7000/tcp, 7002/tcp ]'));
});
