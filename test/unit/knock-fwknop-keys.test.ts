// fwknop key files: what `fwknop --key-gen` writes is read back, keys.ts's 0600 rule applies,
// GnuPG and no-HMAC setups are refused with a message, and no error quotes a key.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyFileError } from '../../src/knock/keys.js';
import {
  FWKNOP_HMAC_KEY_BYTES,
  FWKNOP_KEY_BYTES,
  formatFwknopKeyFile,
  fwknoprcStanza,
  generateFwknopKeys,
  parseFwknopKeyText,
  readFwknopKeyFile,
  writeFwknopKeyFile,
} from '../../src/knock/fwknop-keys.js';
import { decodeFwknop, encodeFwknop } from '../../src/knock/fwknop.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knockgate-fwknop-keys-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// As `fwknop --key-gen --key-gen-file F` (fwknop 2.6.10) wrote it.
const KEYGEN_FILE = 'KEY_BASE64: OifiIiUezrBRceS+J6mL8Rm9mSF30fNfxPreyF5CjgA=\nHMAC_KEY_BASE64: jfgHACeS7ywOhoNVCSOvDVz7x7eS3likdw2IE9S1jAIrhfOwQDuwTqezWtTDUm1gJws8BTQZobYSGDQdslKiGg==\n';
const ENC = 'OifiIiUezrBRceS+J6mL8Rm9mSF30fNfxPreyF5CjgA=';
const HMAC = 'jfgHACeS7ywOhoNVCSOvDVz7x7eS3likdw2IE9S1jAIrhfOwQDuwTqezWtTDUm1gJws8BTQZobYSGDQdslKiGg==';

test("fwknop --key-gen's file, access.conf lines and .fwknoprc lines all parse", () => {
  for (const text of [
    KEYGEN_FILE,
    `# access.conf style\nKEY_BASE64          ${ENC}\nHMAC_KEY_BASE64     ${HMAC}\nHMAC_DIGEST_TYPE    sha256\nUSE_HMAC Y\n`,
    `KEY_BASE64 ${ENC}\r\nHMAC_KEY_BASE64 ${HMAC}\r\nENCRYPTION_MODE CBC\r\n`,
  ]) {
    const k = parseFwknopKeyText(text, 'F');
    assert.deepEqual(k.encryptionKey, Buffer.from(ENC, 'base64'));
    assert.deepEqual(k.hmacKey, Buffer.from(HMAC, 'base64'));
  }
  const plain = parseFwknopKeyText('KEY correct horse\nHMAC_KEY battery staple: x\nHMAC_DIGEST_TYPE SHA512\n', 'F');
  assert.equal(plain.encryptionKey.toString(), 'correct horse');
  assert.equal(plain.hmacKey.toString(), 'battery staple: x');
  assert.equal(plain.hmacType, 'sha512');
});

test('refusals name the file and line, say what to do, and never quote a key', () => {
  const cases: [string, RegExp][] = [
    [`KEY_BASE64: ${ENC}\n`, /F: no HMAC_KEY_BASE64.*legacy mode\) is refused/],
    [`KEY_BASE64: ${ENC}\nHMAC_KEY_BASE64: ${HMAC}\nUSE_HMAC N\n`, /F:3: USE_HMAC N.*refused/],
    [`HMAC_KEY_BASE64: ${HMAC}\n`, /no KEY_BASE64/],
    [`KEY_BASE64: ${ENC}\nKEY: x\nHMAC_KEY_BASE64: ${HMAC}\n`, /both KEY and KEY_BASE64/],
    [`KEY_BASE64: ${ENC}\nHMAC_KEY_BASE64: ${HMAC}\nGPG_RECIPIENT: 1234\n`, /F:3: GPG_RECIPIENT: GnuPG mode is not supported/],
    [`KEY_BASE64: ${ENC}\nHMAC_KEY_BASE64: ${HMAC}\nOPEN_PORTS tcp/22\n`, /F:3: OPEN_PORTS is not an fwknop key setting/],
    [`KEY_BASE64: ${ENC}\nHMAC_KEY_BASE64: ${HMAC}\nHMAC_DIGEST_TYPE md5\n`, /too weak/],
    [`KEY_BASE64: ${ENC}\nHMAC_KEY_BASE64: ${HMAC}\nENCRYPTION_MODE legacy\n`, /legacy.*no HMAC/],
    [`KEY_BASE64: ${ENC}\nHMAC_KEY_BASE64: ${HMAC}\nENCRYPTION_MODE OFB\n`, /not supported/],
    [`KEY_BASE64: ${ENC}!\nHMAC_KEY_BASE64: ${HMAC}\n`, /F:1: KEY_BASE64 is not base64/],
    [`KEY_BASE64: ${Buffer.alloc(40, 7).toString('base64')}\nHMAC_KEY_BASE64: ${HMAC}\n`, /40 bytes.*1\.\.32/],
    [`KEY_BASE64: ${ENC}\nHMAC_KEY_BASE64: ${ENC}\n`, /are the same/],
    [`KEY_BASE64: ${ENC}\nKEY_BASE64: ${ENC}\nHMAC_KEY_BASE64: ${HMAC}\n`, /F:2: KEY_BASE64 is given twice \(also at F:1\)/],
    [`[gate]\n`, /F:1: not a "NAME: value" line/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseFwknopKeyText(text, 'F'), (err: Error) => {
      assert.ok(err instanceof KeyFileError, err.message);
      assert.match(err.message, re);
      assert.ok(!err.message.includes(ENC.slice(0, 12)) && !err.message.includes(HMAC.slice(0, 12)), `quotes a key: ${err.message}`);
      return true;
    });
  }
});

test('a key file must be private to its owner (the same check as every key file)', async () => {
  const path = join(dir, 'loose');
  await writeFile(path, KEYGEN_FILE, { mode: 0o644 });
  await assert.rejects(readFwknopKeyFile(path), /readable by group or others \(mode 0644\).*chmod 600/);
  await assert.rejects(readFwknopKeyFile(join(dir, 'absent')), /does not exist/);
  const good = join(dir, 'good');
  await writeFile(good, KEYGEN_FILE, { mode: 0o600 });
  assert.deepEqual((await readFwknopKeyFile(good)).hmacKey, Buffer.from(HMAC, 'base64'));
});

test("keygen writes keys as fwknop --key-gen does: 32 + 64 bytes, the same two lines, mode 0600", async () => {
  const path = join(dir, 'gate.keys');
  const keys = await writeFwknopKeyFile(path);
  assert.equal(keys.encryptionKey.length, FWKNOP_KEY_BYTES);
  assert.equal(keys.hmacKey.length, FWKNOP_HMAC_KEY_BYTES);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  const text = await readFile(path, 'utf8');
  assert.match(text, /^KEY_BASE64: [A-Za-z0-9+/]{43}=\nHMAC_KEY_BASE64: [A-Za-z0-9+/]{86}==\n$/);
  assert.deepEqual(await readFwknopKeyFile(path), keys);
  await assert.rejects(writeFwknopKeyFile(path), /exists: pass --force/);
  const replaced = await writeFwknopKeyFile(path, { force: true });
  assert.notDeepEqual(replaced, keys);
  assert.equal(formatFwknopKeyFile(parseFwknopKeyText(KEYGEN_FILE, 'F')), KEYGEN_FILE, 'byte for byte the format fwknop writes');
});

test('the .fwknoprc stanza carries the keys and the door in fwknop\'s variable names', () => {
  const keys = generateFwknopKeys();
  const s = fwknoprcStanza({ name: 'gate', server: 'gate.example.org', access: [{ proto: 'tcp', port: 22 }], keys });
  assert.match(s, /^\[gate\]\n/);
  for (const re of [/^SPA_SERVER\s+gate\.example\.org$/m, /^SPA_SERVER_PORT\s+62201$/m, /^ACCESS\s+tcp\/22$/m, /^ALLOW_IP\s+source$/m, /^USE_HMAC\s+Y$/m]) assert.match(s, re);
  // The stanza's key lines are a key file too: they give the same keys back.
  const keyLines = s.split('\n').filter((l) => /^(KEY_BASE64|HMAC_KEY_BASE64)\s/.test(l)).join('\n');
  const back = parseFwknopKeyText(keyLines, 'stanza');
  assert.deepEqual(back, keys);
  const d = encodeFwknop({ timestamp: 1_800_000_000, access: [{ proto: 'tcp', port: 22 }] }, keys);
  assert.ok(decodeFwknop(d, back).ok);
  assert.throws(() => fwknoprcStanza({ name: 'a b', server: 'x', access: [], keys }), /stanza name/);
});
