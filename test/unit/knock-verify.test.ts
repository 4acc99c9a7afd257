import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { parseAddress } from '../../src/net/addr.js';
import { NonceCache, SignedVerifier, type SignedClientKey } from '../../src/knock/verify.js';
import { SIGNED_LEN, encodeSigned, keyIdOf } from '../../src/knock/wire.js';

const nonce = (n: number): Buffer => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(n, 12);
  return b;
};

test('NonceCache: a nonce seen within the ttl is a replay; after it, it is new again', () => {
  const cache = new NonceCache(1000);
  assert.equal(cache.seen(nonce(1), 10_000), false);
  assert.equal(cache.seen(nonce(1), 10_000), true);
  assert.equal(cache.seen(nonce(1), 11_000), true, 'at exactly ttl it is still a replay');
  assert.equal(cache.seen(nonce(2), 10_500), false);
  assert.equal(cache.seen(nonce(1), 11_001), false, 'expired: new again');
  assert.equal(cache.seen(nonce(1), 11_500), true);
});

test('NonceCache: expired entries are dropped as time passes', () => {
  const cache = new NonceCache(1000);
  for (let i = 0; i < 100; i++) cache.seen(nonce(i), 10_000 + i);
  assert.equal(cache.size, 100);
  cache.seen(nonce(1000), 11_050); // entries from before 10_050 have expired
  assert.equal(cache.size, 51);
  cache.seen(nonce(1001), 20_000);
  assert.equal(cache.size, 1);
});

test('NonceCache: when full, the oldest entry makes room', () => {
  const cache = new NonceCache(60_000, 3);
  for (let i = 1; i <= 3; i++) assert.equal(cache.seen(nonce(i), 1000 + i), false);
  assert.equal(cache.seen(nonce(4), 1010), false);
  assert.equal(cache.size, 3);
  assert.equal(cache.seen(nonce(2), 1011), true);
  assert.equal(cache.seen(nonce(3), 1012), true);
  assert.equal(cache.seen(nonce(4), 1013), true);
  assert.equal(cache.seen(nonce(1), 1014), false, 'the oldest was dropped');
  assert.throws(() => new NonceCache(0), RangeError);
  assert.throws(() => new NonceCache(1000, 0), RangeError);
});

function client(name: string): SignedClientKey & { privateKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { name, key: publicKey, keyId: keyIdOf(publicKey), privateKey };
}

const alice = client('alice');
const bob = client('bob');
const mallory = client('mallory'); // not in the list
const SRC = parseAddress('198.18.0.2');
const SRC6 = parseAddress('2001:db8::7');
const NOW = 1_700_000_000_000;
const T = BigInt(NOW / 1000);
const SKEW = 30_000;

function knock(who: { privateKey: KeyObject }, over: { door?: string; source?: Buffer; time?: bigint; nonce?: Buffer } = {}): Buffer {
  return encodeSigned({ privateKey: who.privateKey, door: over.door ?? 'ssh', source: over.source ?? SRC, time: over.time ?? T, ...(over.nonce === undefined ? {} : { nonce: over.nonce }) });
}

const verifier = (): SignedVerifier => new SignedVerifier('ssh', [alice, bob], SKEW);

test('SignedVerifier: a good knock names its client', () => {
  const v = verifier();
  const pkt = knock(bob, { nonce: nonce(7) });
  assert.deepEqual(v.check(SRC, pkt, NOW), { ok: true, client: 'bob', time: T, nonce: nonce(7) });
  const pkt6 = knock(alice, { source: SRC6 });
  const r = v.check(SRC6, pkt6, NOW + 500);
  assert.ok(r.ok);
  assert.equal(r.client, 'alice');
});

test('SignedVerifier: malformed, wrong door, unknown key', () => {
  const v = verifier();
  const pkt = knock(alice);
  assert.deepEqual(v.check(SRC, pkt.subarray(0, SIGNED_LEN - 1), NOW), { ok: false, reason: 'malformed' });
  assert.deepEqual(v.check(SRC, Buffer.concat([pkt, Buffer.alloc(1)]), NOW), { ok: false, reason: 'malformed' });
  assert.deepEqual(v.check(SRC, Buffer.alloc(0), NOW), { ok: false, reason: 'malformed' });
  assert.deepEqual(v.check(SRC, knock(alice, { door: 'web' }), NOW), { ok: false, reason: 'wrong-door' });
  assert.deepEqual(v.check(SRC, knock(mallory), NOW), { ok: false, reason: 'unknown-key' });
});

test('SignedVerifier: a packet signed for another source address is a bad signature', () => {
  const v = verifier();
  assert.deepEqual(v.check(SRC6, knock(alice, { source: SRC }), NOW), { ok: false, reason: 'bad-signature', client: 'alice' });
  assert.deepEqual(v.check(parseAddress('198.18.0.3'), knock(alice), NOW), { ok: false, reason: 'bad-signature', client: 'alice' });
});

test('SignedVerifier: a changed byte anywhere is refused, each region with its reason', () => {
  const pkt = knock(alice, { nonce: nonce(9) });
  const regions: [string, number, number, string][] = [
    ['magic', 0, 4, 'malformed'],
    ['door id', 4, 8, 'wrong-door'],
    ['timestamp', 8, 16, 'bad-signature'],
    ['nonce', 16, 32, 'bad-signature'],
    ['key id', 32, 48, 'unknown-key'],
    ['signature', 48, 112, 'bad-signature'],
  ];
  for (const [what, from, to, reason] of regions) {
    for (let i = from; i < to; i++) {
      const bad = Buffer.from(pkt);
      bad[i] = (bad[i] ?? 0) ^ 0x01;
      const r = verifier().check(SRC, bad, NOW);
      assert.equal(r.ok, false, `${what} byte ${i}`);
      assert.equal(r.ok ? '' : r.reason, reason, `${what} byte ${i}`);
    }
  }
  // the key id of the other listed client: found, but the signature is not bob's
  const swapped = Buffer.from(pkt);
  bob.keyId.copy(swapped, 32);
  assert.deepEqual(verifier().check(SRC, swapped, NOW), { ok: false, reason: 'bad-signature', client: 'bob' });
});

test('SignedVerifier: timestamps beyond the skew are stale, either way', () => {
  const v = verifier();
  assert.ok(v.check(SRC, knock(alice, { time: T - 30n }), NOW).ok, 'exactly maxSkew old');
  assert.ok(v.check(SRC, knock(alice, { time: T + 30n }), NOW).ok, 'exactly maxSkew ahead');
  assert.deepEqual(v.check(SRC, knock(alice, { time: T - 31n }), NOW), { ok: false, reason: 'stale', client: 'alice' });
  assert.deepEqual(v.check(SRC, knock(alice, { time: T + 31n }), NOW), { ok: false, reason: 'stale', client: 'alice' });
  assert.deepEqual(v.check(SRC, knock(alice, { time: 0n }), NOW), { ok: false, reason: 'stale', client: 'alice' });
  assert.deepEqual(v.check(SRC, knock(alice, { time: (1n << 64n) - 1n }), NOW), { ok: false, reason: 'stale', client: 'alice' });
});

test('SignedVerifier: a replay is refused for as long as the knock could be fresh', () => {
  const v = verifier();
  const pkt = knock(alice, { time: T + 30n }); // fresh from NOW until NOW + 60 s
  assert.ok(v.check(SRC, pkt, NOW).ok);
  assert.deepEqual(v.check(SRC, pkt, NOW), { ok: false, reason: 'replay', client: 'alice' });
  assert.deepEqual(v.check(SRC, pkt, NOW + 60_000), { ok: false, reason: 'replay', client: 'alice' });
  assert.deepEqual(v.check(SRC, pkt, NOW + 60_001), { ok: false, reason: 'stale', client: 'alice' });
  // the same nonce in a new knock of the other client is a replay as well
  assert.deepEqual(v.check(SRC, knock(bob, { nonce: decodeNonce(pkt) }), NOW + 1000), { ok: false, reason: 'replay', client: 'bob' });
});

test('SignedVerifier: a refused knock does not use up its nonce', () => {
  const v = verifier();
  const good = knock(alice, { nonce: nonce(42) });
  const forged = Buffer.from(good);
  forged[60] = (forged[60] ?? 0) ^ 0xff;
  assert.equal(v.check(SRC, forged, NOW).ok, false);
  assert.equal(v.check(SRC6, good, NOW).ok, false);
  assert.equal(v.check(SRC, knock(alice, { nonce: nonce(42), time: T - 100n }), NOW).ok, false); // stale
  assert.ok(v.check(SRC, good, NOW).ok);
});

test('SignedVerifier: two clients with one key are refused', () => {
  assert.throws(() => new SignedVerifier('ssh', [alice, { ...alice, name: 'alice2' }], SKEW), /clients alice and alice2 have the same key/);
  assert.throws(() => new SignedVerifier('ssh', [alice], -1), RangeError);
  // no clients: every knock is an unknown key
  assert.deepEqual(new SignedVerifier('ssh', [], SKEW).check(SRC, knock(alice), NOW), { ok: false, reason: 'unknown-key' });
});

function decodeNonce(pkt: Buffer): Buffer {
  return Buffer.from(pkt.subarray(16, 32));
}
