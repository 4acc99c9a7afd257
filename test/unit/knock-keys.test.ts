import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, symlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  KeyFileError,
  checkPrivateMode,
  readPrivateKey,
  readPublicKey,
  readSecretFile,
  writeKeyPair,
  writeSecretFile,
} from '../../src/knock/keys.js';
import { keyIdOf } from '../../src/knock/wire.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knockgate-keys-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SECRET_HEX = '00112233445566778899aabbccddeeff';
let serial = 0;
/** A new file in the temp dir with the given content and mode. */
async function file(content: string, mode = 0o600): Promise<string> {
  const path = join(dir, `f${serial++}`);
  await writeFile(path, content, { mode });
  await chmod(path, mode); // the umask may have cleared bits
  return path;
}

function rejectsWith(pattern: RegExp, secret?: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof KeyFileError, `a KeyFileError, got ${String(err)}`);
    assert.equal(err.name, 'KeyFileError');
    assert.match(err.message, pattern);
    if (secret !== undefined) assert.ok(!err.message.toLowerCase().includes(secret.toLowerCase()), `the message shows the secret: ${err.message}`);
    return true;
  };
}

test('readSecretFile: a private hex file', async () => {
  const path = await file(`${SECRET_HEX}\n`);
  assert.deepEqual(await readSecretFile(path, { bytes: 16 }), Buffer.from(SECRET_HEX, 'hex'));
  // whitespace, upper case and # comment lines are fine
  const spaced = await file(`# the spa key of door ssh\n  0011 2233 4455 6677\n\t8899AABB CCDDEEFF  \r\n\n# end\n`);
  assert.deepEqual(await readSecretFile(spaced, { bytes: 16 }), Buffer.from(SECRET_HEX, 'hex'));
  const long = await file(`${SECRET_HEX}${SECRET_HEX}\n`);
  assert.equal((await readSecretFile(long, { minBytes: 16 })).length, 32);
  assert.equal((await readSecretFile(long)).length, 32);
});

test('readSecretFile: group- or world-readable files are refused, naming the mode and the fix', async () => {
  for (const mode of [0o644, 0o640, 0o604, 0o660, 0o602, 0o610]) {
    const path = await file(`${SECRET_HEX}\n`, mode);
    const shown = `0${mode.toString(8)}`;
    await assert.rejects(
      readSecretFile(path, { bytes: 16 }),
      rejectsWith(new RegExp(`^${path} is readable by group or others \\(mode ${shown}\\): a secret must be private to its owner; run: chmod 600 ${path}$`), SECRET_HEX),
    );
  }
  await readSecretFile(await file(`${SECRET_HEX}\n`, 0o400), { bytes: 16 });
});

test('readSecretFile: the mode of a symlink\'s target counts', async () => {
  const target = await file(`${SECRET_HEX}\n`, 0o644);
  const link = join(dir, 'link-to-open');
  await symlink(target, link);
  await assert.rejects(readSecretFile(link, { bytes: 16 }), rejectsWith(/mode 0644/));
  await chmod(target, 0o600);
  assert.deepEqual(await readSecretFile(link, { bytes: 16 }), Buffer.from(SECRET_HEX, 'hex'));
});

test('readSecretFile: wrong length, odd length, non-hex and empty files are refused without showing the content', async () => {
  const short = await file('00112233445566778899aabbccddee\n');
  await assert.rejects(
    readSecretFile(short, { bytes: 16 }),
    rejectsWith(new RegExp(`^${short} has 15 bytes, the key needs exactly 16 bytes \\(32 hex digits\\): create one with \`knockgate keygen --type spa ${short}\``), '00112233445566778899aabbccddee'),
  );
  const long = await file(`${SECRET_HEX}00\n`);
  await assert.rejects(readSecretFile(long, { bytes: 16 }), rejectsWith(/has 17 bytes, the key needs exactly 16 bytes/, SECRET_HEX));
  await assert.rejects(readSecretFile(short, { minBytes: 16 }), rejectsWith(/needs at least 16 bytes \(32 hex digits\): create one with `knockgate keygen --type rotating/));
  await assert.rejects(readSecretFile(long, { maxBytes: 16 }), rejectsWith(/takes at most 16 bytes/, SECRET_HEX));
  const odd = await file(`${SECRET_HEX}0\n`);
  await assert.rejects(readSecretFile(odd, { bytes: 16 }), rejectsWith(/odd number of hex digits \(33\)/, SECRET_HEX));
  const text = await file(`# key\n${SECRET_HEX}\nsecret-passphrase-${SECRET_HEX}\n`);
  await assert.rejects(readSecretFile(text, { bytes: 16 }), rejectsWith(new RegExp(`^${text}:3: a secret file holds hex digits`), SECRET_HEX));
  const notHexPassphrase = await file('hunter2hunter2hunter2hunter2hunt\n');
  await assert.rejects(readSecretFile(notHexPassphrase, { bytes: 16 }), rejectsWith(/hex digits \(0-9, a-f\) only/, 'hunter2'));
  const b64 = await file(`${Buffer.from(SECRET_HEX, 'hex').toString('base64')}\n`);
  await assert.rejects(readSecretFile(b64, { bytes: 16 }), rejectsWith(/hex digits/, Buffer.from(SECRET_HEX, 'hex').toString('base64')));
  const empty = await file('# nothing yet\n');
  await assert.rejects(readSecretFile(empty, { bytes: 16 }), rejectsWith(/holds no hex digits: create one with/));
});

test('readSecretFile: missing files and directories', async () => {
  await assert.rejects(readSecretFile(join(dir, 'nope')), rejectsWith(/nope does not exist/));
  const sub = join(dir, 'a-directory');
  await mkdir(sub, { mode: 0o700 });
  await assert.rejects(readSecretFile(sub), rejectsWith(/a-directory is not a regular file/));
});

test('checkPrivateMode on its own', async () => {
  const path = await file('x', 0o600);
  checkPrivateMode(path, await stat(path));
  await chmod(path, 0o620);
  assert.throws(() => checkPrivateMode('/etc/knockgate/spa.key', statSyncLike(0o100620)), { name: 'KeyFileError', message: '/etc/knockgate/spa.key is readable by group or others (mode 0620): a secret must be private to its owner; run: chmod 600 /etc/knockgate/spa.key' });
});

/** A stand-in Stats for a regular file with the given st_mode. */
function statSyncLike(mode: number): import('node:fs').Stats {
  return { mode, isFile: () => (mode & 0o170000) === 0o100000 } as import('node:fs').Stats;
}

test('readPrivateKey and readPublicKey: PEM keys', async () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const priv = await file(String(privateKey.export({ format: 'pem', type: 'pkcs8' })));
  const pub = await file(String(publicKey.export({ format: 'pem', type: 'spki' })), 0o644);
  const readPriv = await readPrivateKey(priv);
  const readPub = await readPublicKey(pub);
  assert.equal(readPriv.type, 'private');
  assert.equal(readPub.type, 'public');
  assert.deepEqual(keyIdOf(readPriv), keyIdOf(publicKey));
  assert.deepEqual(keyIdOf(readPub), keyIdOf(publicKey));
  // the private key must be private; the public key need not be
  await chmod(priv, 0o644);
  await assert.rejects(readPrivateKey(priv), rejectsWith(/readable by group or others \(mode 0644\)/));
});

test('readPrivateKey: other keys and other files are refused', async () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
  const rsaFile = await file(String(rsa.export({ format: 'pem', type: 'pkcs8' })));
  await assert.rejects(readPrivateKey(rsaFile), rejectsWith(/is an rsa key, signed knocks use Ed25519 keys: create one with `knockgate keygen --type signed/));
  const junk = await file('not a key\n');
  await assert.rejects(readPrivateKey(junk), rejectsWith(/is not a PEM private key \(PKCS#8/, 'not a key'));
  const { privateKey } = generateKeyPairSync('ed25519');
  const encrypted = await file(String(privateKey.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'pw' })));
  await assert.rejects(readPrivateKey(encrypted), rejectsWith(/encrypted with a passphrase/));
  const openssh = await file('-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n');
  await assert.rejects(readPrivateKey(openssh), rejectsWith(/is an OpenSSH private key; knockgate reads PKCS#8 PEM/, 'b3BlbnNzaC1rZXktdjEAAAAA'));
  const pub = await file(String(generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' })));
  await assert.rejects(readPrivateKey(pub), rejectsWith(/is not a PEM private key/));
});

// An Ed25519 key from the fixed seed 20..3f, and its OpenSSH line as ssh-keygen writes it.
const FIXED_PRIV = createPrivateKey({
  key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(Array.from({ length: 32 }, (_, i) => 0x20 + i))]),
  format: 'der',
  type: 'pkcs8',
});
const FIXED_SSH = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X';

test('readPublicKey: an OpenSSH line gives the same key id as the PEM key', async () => {
  const pem = await file(String(createPublicKey(FIXED_PRIV).export({ format: 'pem', type: 'spki' })), 0o644);
  const ssh = await file(`${FIXED_SSH} alice@laptop\n`, 0o644);
  const bare = await file(`# alice\n\n  ${FIXED_SSH}  \n`, 0o644);
  const expected = '24f6ed6acbfe1009c030d7ca567c33ca';
  assert.equal(keyIdOf(await readPublicKey(pem)).toString('hex'), expected);
  assert.equal(keyIdOf(await readPublicKey(ssh)).toString('hex'), expected);
  assert.equal(keyIdOf(await readPublicKey(bare)).toString('hex'), expected);
});

test('readPublicKey: bad keys are refused', async () => {
  const privPem = await file(String(FIXED_PRIV.export({ format: 'pem', type: 'pkcs8' })));
  await assert.rejects(readPublicKey(privPem), rejectsWith(/holds a private key, which must stay with the client/));
  const rsa = await file(String(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'pem', type: 'spki' })), 0o644);
  await assert.rejects(readPublicKey(rsa), rejectsWith(/is an rsa key, signed knocks use Ed25519 keys/));
  const cases: [string, RegExp][] = [
    ['ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== bob', /must start with ssh-ed25519/],
    ['ssh-ed25519 !!!notbase64 bob', /not base64/],
    ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICmsuuFBvMrwsi4alNNNC8c2HlJtC', /truncated|32 bytes|trailing|not base64/],
    [`ssh-ed25519 ${sshBlob('ssh-rsa', Buffer.alloc(32))}`, /not an ssh-ed25519 key/],
    [`ssh-ed25519 ${sshBlob('ssh-ed25519', Buffer.alloc(31))}`, /an Ed25519 key has 32 bytes, this one has 31/],
    [`ssh-ed25519 ${Buffer.concat([Buffer.from(sshBlob('ssh-ed25519', Buffer.alloc(32, 1)), 'base64'), Buffer.alloc(2)]).toString('base64')}`, /trailing bytes/],
    [`${FIXED_SSH} a\n${FIXED_SSH} b`, /has 2 lines: a public key file holds one key/],
    ['', /is empty/],
    ['-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', /is not a PEM public key \(SPKI/],
  ];
  for (const [content, pattern] of cases) {
    await assert.rejects(readPublicKey(await file(content, 0o644)), rejectsWith(pattern), content);
  }
});

/** The base64 of an OpenSSH key blob: string type, string key. */
function sshBlob(type: string, key: Buffer): string {
  const str = (b: Buffer): Buffer => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  return Buffer.concat([str(Buffer.from(type)), str(key)]).toString('base64');
}

test('writeSecretFile: a new 0600 file of random hex that readSecretFile reads back', async () => {
  const path = join(dir, 'spa.key');
  assert.deepEqual(await writeSecretFile(path, 16), { path, bytes: 16 });
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.match(await readFile(path, 'utf8'), /^[0-9a-f]{32}\n$/);
  const first = await readSecretFile(path, { bytes: 16 });
  await assert.rejects(writeSecretFile(path, 16), rejectsWith(new RegExp(`^${path} exists: pass --force to replace it$`)));
  assert.deepEqual(await readSecretFile(path, { bytes: 16 }), first, 'a refused write leaves the file alone');
  // --force replaces it, and a loose mode on the old file does not survive
  await chmod(path, 0o644);
  await writeSecretFile(path, 32, { force: true });
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal((await readSecretFile(path, { minBytes: 16 })).length, 32);
});

test('writeKeyPair: 0600 private key, 0644 public key, the key id, no overwrite', async () => {
  const path = join(dir, 'client.key');
  const written = await writeKeyPair(path);
  assert.equal(written.privatePath, path);
  assert.equal(written.publicPath, `${path}.pub`);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal((await stat(`${path}.pub`)).mode & 0o777 & ~process.umask(), 0o644 & ~process.umask());
  assert.match(await readFile(path, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
  assert.match(await readFile(`${path}.pub`, 'utf8'), /^-----BEGIN PUBLIC KEY-----\n/);
  const priv = await readPrivateKey(path);
  const pub = await readPublicKey(`${path}.pub`);
  assert.equal(written.keyId, keyIdOf(priv).toString('hex'));
  assert.equal(written.keyId, keyIdOf(pub).toString('hex'));
  assert.match(written.keyId, /^[0-9a-f]{32}$/);

  await assert.rejects(writeKeyPair(path), rejectsWith(new RegExp(`^${path} exists: pass --force to replace it$`)));
  assert.equal(keyIdOf(await readPrivateKey(path)).toString('hex'), written.keyId, 'a refused write leaves the key alone');
  // only the .pub exists: refused too, and the private key is not written
  const lonely = join(dir, 'lonely.key');
  await writeFile(`${lonely}.pub`, 'x');
  await assert.rejects(writeKeyPair(lonely), rejectsWith(/lonely\.key\.pub exists: pass --force/));
  await assert.rejects(stat(lonely), { code: 'ENOENT' });

  const again = await writeKeyPair(path, { force: true });
  assert.notEqual(again.keyId, written.keyId);
  assert.equal(keyIdOf(await readPublicKey(`${path}.pub`)).toString('hex'), again.keyId);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
});
