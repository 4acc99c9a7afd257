// fwknop SPA: datagrams made by the real fwknop client (test/fixtures/fwknop/client-2.6.10.json,
// keys included) decode to the fields the client printed; every kind of bad datagram is refused
// with its own reason; knockgate's encoder round-trips and lays the message out as fwknop does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  FWKNOP_SALT_PREFIX,
  b64Strip,
  checkFwknopAccess,
  checkFwknopFresh,
  decodeFwknop,
  deriveKeyIv,
  encodeFwknop,
  fwknopDigest,
  fwknopLengthOk,
  fwknopMaxLength,
  type FwknopDecode,
  type FwknopKeys,
  type FwknopMessage,
} from '../../src/knock/fwknop.js';
import { FwknopVerifier } from '../../src/knock/fwknop-verify.js';
import type { ClaimResult, ReplayGuard } from '../../src/knock/replay.js';
import { parseAddress } from '../../src/net/addr.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

interface Vector {
  args: string;
  datagram: string;
  random: string;
  username: string;
  timestamp: number;
  message: string;
  clientTimeout: number;
  encoded: string;
  digest: string;
  hmac: string;
}
interface Fixture {
  KEY_BASE64: string;
  HMAC_KEY_BASE64: string;
  vectors: Record<string, Vector>;
}

const fixture = JSON.parse(readFileSync(`${ROOT}test/fixtures/fwknop/client-2.6.10.json`, 'utf8')) as Fixture;
const keys: FwknopKeys = { encryptionKey: Buffer.from(fixture.KEY_BASE64, 'base64'), hmacKey: Buffer.from(fixture.HMAC_KEY_BASE64, 'base64') };
const vec = (name: string): Vector => {
  const v = fixture.vectors[name];
  assert.ok(v, `fixture ${name}`);
  return v;
};

function ok(r: FwknopDecode): FwknopMessage {
  if (!r.ok) assert.fail(`refused: ${r.reason}: ${r.detail}`);
  return r.message;
}
function refused(r: FwknopDecode, reason: string): string {
  assert.equal(r.ok, false, `expected a refusal (${reason})`);
  if (r.ok) return '';
  assert.equal(r.reason, reason, r.detail);
  return r.detail;
}

/** Replaces one character of a base64 text with another base64 character. */
function tamper(text: string, at: number): string {
  const c = text[at] === 'A' ? 'B' : 'A';
  return text.slice(0, at) + c + text.slice(at + 1);
}

test('fwknop client datagram (-A tcp/22 -a ... -U alice) decodes to the fields the client printed', () => {
  const v = vec('v1');
  const m = ok(decodeFwknop(v.datagram, keys));
  assert.equal(m.username, 'alice');
  assert.equal(m.timestamp, v.timestamp);
  assert.equal(m.version, '3.0.0');
  assert.equal(m.messageType, 'access');
  assert.equal(m.allowIp, '198.18.0.5');
  assert.deepEqual(m.access, [{ proto: 'tcp', port: 22 }]);
  assert.equal(m.random, v.random);
  assert.equal(m.messageDigest, v.digest, "the client's SPA Data Digest");
  assert.equal(m.clientTimeout, undefined);
  assert.equal(m.digest, fwknopDigest(v.datagram));
  assert.ok(v.datagram.endsWith(v.hmac), 'the HMAC the client printed ends the datagram');
});

test('fwknop client datagram with -s, two ports and -f 30: source address, both ports, client timeout', () => {
  const v = vec('v2');
  const m = ok(decodeFwknop(v.datagram, keys));
  assert.equal(m.username, 'bob');
  assert.equal(m.messageType, 'client_timeout_access');
  assert.equal(m.allowIp, '0.0.0.0');
  assert.deepEqual(m.access, [{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 53 }]);
  assert.equal(m.clientTimeout, 30);
});

test('fwknop client datagram with --hmac-digest-type sha512 decodes with hmacType sha512 only', () => {
  const v = vec('v4');
  assert.equal(ok(decodeFwknop(v.datagram, { ...keys, hmacType: 'sha512' })).username, 'dave');
  refused(decodeFwknop(v.datagram, keys), 'bad_hmac');
});

test('the wrong encryption key: bad_decrypt (the HMAC still verifies)', () => {
  const wrong = { ...keys, encryptionKey: randomBytes(32) };
  refused(decodeFwknop(vec('v1').datagram, wrong), 'bad_decrypt');
});

test('the wrong HMAC key: bad_hmac, and nothing is decrypted', () => {
  const wrong = { ...keys, hmacKey: randomBytes(64) };
  refused(decodeFwknop(vec('v1').datagram, wrong), 'bad_hmac');
});

test('any changed byte: bad_hmac (ciphertext, first byte, HMAC, last byte)', () => {
  const d = vec('v1').datagram;
  for (const at of [0, 5, 60, d.length - 43, d.length - 20, d.length - 1]) {
    refused(decodeFwknop(tamper(d, at), keys), 'bad_hmac');
  }
  // A character more or less: no longer a length the mode makes, refused before any HMAC.
  refused(decodeFwknop(d.slice(0, -1), keys), 'malformed');
  refused(decodeFwknop(`${d}A`, keys), 'malformed');
});

test('datagram lengths: every client datagram and every encoding has a length fwknopLengthOk allows', () => {
  assert.equal(fwknopMaxLength('sha256'), 417);
  assert.equal(fwknopMaxLength('sha512'), 460);
  for (const name of ['v1', 'v2', 'v6', 'v7', 'v8']) assert.ok(fwknopLengthOk(vec(name).datagram.length), name);
  assert.ok(fwknopLengthOk(vec('v4').datagram.length, 'sha512'));
  const lengths = new Set<number>();
  for (let n = 1; n <= 24; n++) {
    const access = Array.from({ length: n }, (_, i) => ({ proto: 'udp' as const, port: 60000 + i }));
    let d: Buffer;
    try {
      d = encodeFwknop({ username: 'u'.repeat(n), timestamp: 1_800_000_000, access }, keys);
    } catch {
      break; // too long for one datagram
    }
    lengths.add(d.length);
    assert.ok(fwknopLengthOk(d.length), `${d.length}`);
    assert.ok(d.length <= fwknopMaxLength());
  }
  assert.ok(lengths.size >= 5, `several lengths seen: ${[...lengths].join(' ')}`);
  let plausible = 0;
  for (let len = 0; len <= 1500; len++) if (fwknopLengthOk(len)) plausible++;
  assert.ok(plausible < 20, `only ${plausible} of 1501 lengths pass`);
});

test('a stale timestamp (client --time-offset-minus 600s): stale at a 120 s skew, fine at 900 s', () => {
  const v = vec('v8');
  const m = ok(decodeFwknop(v.datagram, keys));
  const sent = (v.timestamp + 600) * 1000; // when the client ran
  refused(checkFwknopFresh(m, sent, 120_000), 'stale');
  ok(checkFwknopFresh(m, sent, 900_000));
  ok(checkFwknopFresh(ok(decodeFwknop(vec('v1').datagram, keys)), vec('v1').timestamp * 1000 + 500, 120_000));
  refused(checkFwknopFresh(ok(decodeFwknop(vec('v1').datagram, keys)), (vec('v1').timestamp - 121) * 1000, 120_000), 'stale');
});

test("fwknop's legacy no-HMAC mode is recognised and refused as no_hmac", () => {
  const detail = refused(decodeFwknop(vec('v3').datagram, keys), 'no_hmac');
  assert.match(detail, /HMAC/);
  // With another encryption key it cannot be told apart from junk.
  refused(decodeFwknop(vec('v3').datagram, { ...keys, encryptionKey: randomBytes(32) }), 'bad_hmac');
});

test('command (-C) and NAT (-N) messages are refused as unsupported_message', () => {
  assert.match(refused(decodeFwknop(vec('v6').datagram, keys), 'unsupported_message'), /command/);
  assert.match(refused(decodeFwknop(vec('v7').datagram, keys), 'unsupported_message'), /NAT/);
});

test('GnuPG-mode data (400+ base64 characters) with a valid HMAC is refused as gpg_mode', () => {
  const body = randomBytes(420).toString('base64').replace(/[=]/g, '').slice(0, 420).replace(/^U/, 'h');
  const hmac = b64Strip(createHmac('sha256', keys.hmacKey).update(FWKNOP_SALT_PREFIX + body, 'latin1').digest());
  assert.match(refused(decodeFwknop(body + hmac, keys), 'gpg_mode'), /GnuPG/);
  assert.match(refused(decodeFwknop(body + 'A'.repeat(43), keys), 'bad_hmac'), /GnuPG/);
});

test('malformed: too short, too long, not base64, the "U2FsdGVkX1" prefix left on', () => {
  const d = vec('v1').datagram;
  refused(decodeFwknop(d.slice(0, 139), keys), 'malformed');
  refused(decodeFwknop('A'.repeat(1501), keys), 'malformed');
  refused(decodeFwknop(`${d.slice(0, 100)}=${d.slice(101)}`, keys), 'malformed');
  refused(decodeFwknop(`${d}\n`, keys), 'malformed');
  refused(decodeFwknop(`${d.slice(0, 50)}\0${d.slice(51)}`, keys), 'malformed');
  refused(decodeFwknop(FWKNOP_SALT_PREFIX + d, keys), 'malformed');
  refused(decodeFwknop(Buffer.from(d, 'latin1').subarray(0, 10), keys), 'malformed');
});

test('encode -> decode round trip, with a client timeout and an -a address', () => {
  const d = encodeFwknop({ username: 'ops', timestamp: 1_800_000_000, access: [{ proto: 'tcp', port: 443 }, { proto: 'udp', port: 51820 }], allowIp: '198.18.7.9', clientTimeout: 60 }, keys);
  const m = ok(decodeFwknop(d, keys));
  assert.deepEqual(
    { u: m.username, t: m.timestamp, ty: m.messageType, ip: m.allowIp, a: m.access, ct: m.clientTimeout, v: m.version },
    { u: 'ops', t: 1_800_000_000, ty: 'client_timeout_access', ip: '198.18.7.9', a: [{ proto: 'tcp', port: 443 }, { proto: 'udp', port: 51820 }], ct: 60, v: '3.0.0' },
  );
  // Two encodings of the same request differ (random field, salt): different replay digests.
  const again = encodeFwknop({ username: 'ops', timestamp: 1_800_000_000, access: [{ proto: 'tcp', port: 443 }] }, keys);
  assert.notEqual(fwknopDigest(again), fwknopDigest(d));
});

test("the encoder lays the message out as fwknop's client does (plaintext fields, salt, prefix, HMAC)", () => {
  const salt = Buffer.from('0011223344556677', 'hex');
  const d = encodeFwknop({ username: 'alice', timestamp: 1796399197, access: [{ proto: 'tcp', port: 22 }], allowIp: '198.18.0.5', random: '4736499381604630', salt }, keys).toString('latin1');
  // The same fields the real client encoded for v1 (same random, user, time, request).
  const full = FWKNOP_SALT_PREFIX + d.slice(0, -43);
  const raw = Buffer.from(full, 'base64');
  assert.equal(raw.subarray(0, 8).toString('latin1'), 'Salted__');
  assert.deepEqual(raw.subarray(8, 16), salt);
  const { key, iv } = deriveKeyIv(keys.encryptionKey, salt);
  const dec = createDecipheriv('aes-256-cbc', key, iv);
  const plain = Buffer.concat([dec.update(raw.subarray(16)), dec.final()]).toString('latin1');
  const v = vec('v1');
  assert.equal(plain, `${v.encoded}:${v.digest}`, "byte for byte the plaintext the client built");
  assert.equal(d.slice(-43), b64Strip(createHmac('sha256', keys.hmacKey).update(full, 'latin1').digest()));
});

test('the encoder refuses what fwknop cannot carry', () => {
  assert.throws(() => encodeFwknop({ username: 'a:b', timestamp: 1, access: [{ proto: 'tcp', port: 22 }] }, keys), /user name/);
  assert.throws(() => encodeFwknop({ timestamp: 1, access: [] }, keys), /at least one/);
  assert.throws(() => encodeFwknop({ timestamp: 1, access: [{ proto: 'tcp', port: 0 }] }, keys), /proto\/port/);
  assert.throws(() => encodeFwknop({ timestamp: 1, access: [{ proto: 'tcp', port: 22 }], allowIp: '2001:db8::1' }, keys), /IPv4/);
  const many = Array.from({ length: 40 }, (_, i) => ({ proto: 'tcp' as const, port: 10000 + i }));
  assert.throws(() => encodeFwknop({ timestamp: 1, access: many }, keys), /too long|too long/);
  assert.throws(() => encodeFwknop({ timestamp: 1, access: [{ proto: 'tcp', port: 22 }] }, { ...keys, encryptionKey: Buffer.alloc(33) }), /1\.\.32/);
});

const SRC4 = parseAddress('198.18.0.5');
const SRC6 = parseAddress('2001:db8::5');
const SSH = [{ proto: 'tcp' as const, from: 22, to: 22 }];

test('access policy: ports must be protected, the source address is opened', () => {
  const m = ok(decodeFwknop(vec('v1').datagram, keys)); // -a 198.18.0.5, tcp/22
  const g = checkFwknopAccess(m, SRC4, { protects: SSH });
  assert.ok(g.ok);
  if (g.ok) assert.deepEqual(g.address, SRC4);
  refused(checkFwknopAccess(m, SRC4, { protects: [{ proto: 'tcp', from: 80, to: 443 }] }) as FwknopDecode, 'not_protected');
  refused(checkFwknopAccess(m, SRC4, { protects: [{ proto: 'udp', from: 22, to: 22 }] }) as FwknopDecode, 'not_protected');
  // two ports asked, one protected: refused whole
  const two = ok(decodeFwknop(vec('v2').datagram, keys));
  refused(checkFwknopAccess(two, SRC4, { protects: SSH }) as FwknopDecode, 'not_protected');
  const both = checkFwknopAccess(two, SRC6, { protects: [...SSH, { proto: 'udp', from: 53, to: 53 }] });
  assert.ok(both.ok, '-s over IPv6 opens the IPv6 source');
  if (both.ok) assert.deepEqual(both.address, SRC6);
});

test('access policy: an -a address other than the source only when the door allows it', () => {
  const m = ok(decodeFwknop(vec('v1').datagram, keys)); // -a 198.18.0.5
  const other = parseAddress('198.18.0.77');
  assert.match(refused(checkFwknopAccess(m, other, { protects: SSH }) as FwknopDecode, 'address_mismatch'), /198\.18\.0\.5/);
  const g = checkFwknopAccess(m, other, { protects: SSH, allowRequestedAddress: true });
  assert.ok(g.ok);
  if (g.ok) assert.deepEqual(g.address, SRC4);
});

class MemoryGuard implements ReplayGuard {
  readonly seen = new Map<string, number>();
  async claim(digest: string, expiresAtMs: number): Promise<ClaimResult> {
    if (this.seen.has(digest)) return 'replay';
    this.seen.set(digest, expiresAtMs);
    return 'claimed';
  }
}

test('FwknopVerifier: right keys grant once, the same datagram again (any source) is a replay', async () => {
  const replay = new MemoryGuard();
  const v = vec('v2');
  const verifier = new FwknopVerifier({
    clients: [
      { name: 'other', keys: { encryptionKey: randomBytes(32), hmacKey: randomBytes(64) } },
      { name: 'laptop', keys },
    ],
    maxSkewMs: 120_000,
    protects: [...SSH, { proto: 'udp', from: 53, to: 53 }],
    replay,
  });
  const now = v.timestamp * 1000 + 2000;
  const first = await verifier.check(Buffer.from(v.datagram), SRC4, now);
  assert.ok(first.ok, JSON.stringify(first));
  if (first.ok) {
    assert.equal(first.client, 'laptop');
    assert.equal(first.message.username, 'bob');
    assert.deepEqual(first.address, SRC4);
  }
  const again = await verifier.check(Buffer.from(v.datagram), SRC6, now + 1000);
  assert.deepEqual([again.ok, !again.ok && again.reason, !again.ok && again.username], [false, 'replay', 'bob']);
  // Junk and stale knocks are not recorded: they cannot fill the cache.
  const stale = await verifier.check(Buffer.from(vec('v8').datagram), SRC4, now);
  assert.equal(!stale.ok && stale.reason, 'stale');
  const junk = await verifier.check(Buffer.from(tamper(v.datagram, 30)), SRC4, now);
  assert.equal(!junk.ok && junk.reason, 'bad_hmac');
  assert.equal(replay.seen.size, 1);
});

test('FwknopVerifier: an authentic knock the policy refuses is recorded, so its replay is logged as one', async () => {
  const replay = new MemoryGuard();
  const v = vec('v1'); // -a 198.18.0.5
  const verifier = new FwknopVerifier({ clients: [{ name: 'laptop', keys }], maxSkewMs: 120_000, protects: SSH, replay });
  const now = v.timestamp * 1000;
  const other = parseAddress('198.18.0.77');
  const first = await verifier.check(Buffer.from(v.datagram), other, now);
  assert.deepEqual([!first.ok && first.reason, !first.ok && first.client], ['address_mismatch', 'laptop']);
  const again = await verifier.check(Buffer.from(v.datagram), SRC4, now);
  assert.equal(!again.ok && again.reason, 'replay', 'even from the address it asked for');
});

test('FwknopVerifier: refuses identical keys and a replay cache that fails', async () => {
  assert.throws(() => new FwknopVerifier({ clients: [{ name: 'a', keys }, { name: 'b', keys }], maxSkewMs: 1000, protects: SSH, replay: new MemoryGuard() }), /same HMAC key/);
  assert.throws(() => new FwknopVerifier({ clients: [{ name: 'a', keys: { encryptionKey: keys.hmacKey.subarray(0, 32), hmacKey: keys.hmacKey.subarray(0, 32) } }], maxSkewMs: 1000, protects: SSH, replay: new MemoryGuard() }), /must differ/);
  const broken: ReplayGuard = { claim: () => Promise.reject(new Error('disk full')) };
  const verifier = new FwknopVerifier({ clients: [{ name: 'a', keys }], maxSkewMs: 120_000, protects: SSH, replay: broken });
  const r = await verifier.check(Buffer.from(vec('v1').datagram), SRC4, vec('v1').timestamp * 1000);
  assert.equal(!r.ok && r.reason, 'replay_cache_error');
  const full: ReplayGuard = { claim: () => Promise.resolve('full') };
  const r2 = await new FwknopVerifier({ clients: [{ name: 'a', keys }], maxSkewMs: 120_000, protects: SSH, replay: full }).check(Buffer.from(vec('v1').datagram), SRC4, vec('v1').timestamp * 1000);
  assert.equal(!r2.ok && r2.reason, 'replay_cache_error');
});

test("docs/KNOCKS.md's fwknop vector is the real client's datagram checked above", () => {
  const doc = readFileSync(`${ROOT}docs/KNOCKS.md`, 'utf8');
  const v = vec('v1');
  const section = doc.slice(doc.indexOf('## fwknop SPA'));
  const block = /Datagram \(\d+ bytes[^\n]*\n\n```\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'the datagram block');
  assert.equal((block[1] ?? '').replace(/\s+/g, ''), v.datagram);
  assert.ok(section.includes(`KEY_BASE64       ${fixture.KEY_BASE64}`));
  assert.ok(section.includes(`HMAC_KEY_BASE64  ${fixture.HMAC_KEY_BASE64}`));
  assert.ok(section.includes(`${v.encoded}:${v.digest}`));
  const lengths = /one of\n?\s*([\d, .]+) bytes long/.exec(section.replace(/\n/g, ' '));
  assert.ok(lengths);
});

/** A datagram with the right keys around an arbitrary plaintext (what only a key holder can make). */
function sealed(plaintext: string): string {
  const salt = randomBytes(8);
  const { key, iv } = deriveKeyIv(keys.encryptionKey, salt);
  const c = createCipheriv('aes-256-cbc', key, iv);
  const full = b64Strip(Buffer.concat([Buffer.from('Salted__'), salt, c.update(plaintext, 'latin1'), c.final()]));
  return full.slice(10) + b64Strip(createHmac('sha256', keys.hmacKey).update(full, 'latin1').digest());
}

test('junk never throws: random text, random bytes, and authenticated plaintexts with broken fields', () => {
  for (let i = 0; i < 500; i++) {
    const len = 140 + (i % 300);
    const text = randomBytes(len).toString('base64').replace(/=/g, '').slice(0, len);
    const r = decodeFwknop(text, keys);
    assert.equal(r.ok, false);
    const raw = decodeFwknop(randomBytes(len), keys);
    assert.equal(raw.ok, false);
  }
  const good = vec('v1').encoded;
  const bodies = [
    '1234567890123456:',
    `${good}:`,
    `${good.replace('YWxpY2U', '')}:x`,
    `1234567890123456:${'::'.repeat(10)}`,
    `1234567890123456:YWxpY2U:99999999999999999:3.0.0:1:MTk4LjE4LjAuNSx0Y3AvMjI`,
    `1234567890123456:YWxpY2U:1:3.0.0:9:MTk4LjE4LjAuNSx0Y3AvMjI`,
    `1234567890123456:YWxpY2U:1:3.0.0:1:${b64Strip(Buffer.from('1.2.3.4,tcp/99999'))}`,
    `1234567890123456:YWxpY2U:1:3.0.0:1:${b64Strip(Buffer.from('1.2.3.4,sctp/22'))}`,
    `1234567890123456:YWxpY2U:1:3.0.0:1:${b64Strip(Buffer.from('1.2.3.4'))}`,
    `1234567890123456:YWxpY2U:1:3.0.0:3:${b64Strip(Buffer.from('1.2.3.4,tcp/22'))}`,
    `1234567890123456:${b64Strip(Buffer.from('a/b'))}:1:3.0.0:1:${b64Strip(Buffer.from('1.2.3.4,tcp/22'))}`,
    `1234567890123456:YWxpY2U:1:3.0.0:1:${b64Strip(Buffer.from('1.2.3.4,tcp/22'))}\u0007`,
  ];
  for (const body of bodies) {
    const withDigest = body.endsWith(':') || body.includes('\u0007') ? body : `${body}:${b64Strip(createHash('sha256').update(body, 'latin1').digest())}`;
    const r = decodeFwknop(sealed(withDigest), keys);
    assert.equal(r.ok, false, withDigest);
    if (!r.ok) assert.ok(['malformed', 'bad_fields', 'bad_decrypt', 'unsupported_message'].includes(r.reason), `${r.reason}: ${withDigest}`);
  }
  assert.match(refused(decodeFwknop(sealed(`${good}:${'A'.repeat(43)}`), keys), 'bad_fields'), /digest does not match/);
  // The sealing helper itself is right: a well-formed body opens, with a server-auth field too.
  const auth = decodeFwknop(sealed(`${good}:c2VjcmV0:${b64Strip(createHash('sha256').update(`${good}:c2VjcmV0`, 'latin1').digest())}`), keys);
  assert.equal(ok(auth).serverAuth, 'secret');
  const body = `1234567890123456:YWxpY2U:1:3.0.0:1:${b64Strip(Buffer.from('1.2.3.4,tcp/22'))}`;
  assert.ok(decodeFwknop(sealed(`${body}:${b64Strip(createHash('sha256').update(body, 'latin1').digest())}`), keys).ok);
});
