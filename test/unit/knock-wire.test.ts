import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { parseAddress } from '../../src/net/addr.js';
import { siphash24 } from '../../src/knock/siphash.js';
import {
  SIGNED_LEN,
  SIGNED_MAGIC,
  SPA_LEN,
  SPA_MAGIC,
  decodeSigned,
  decodeSpa,
  doorId,
  encodeSigned,
  encodeSpa,
  spaTag,
  keyIdOf,
  signedMessage,
  verifySpa,
} from '../../src/knock/wire.js';

const seq = (n: number, from = 0): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => from + i));
const KEY = seq(16); // 00..0f
const NONCE = seq(16, 0xa0); // a0..af (signed)
const SPA_NONCE = seq(12, 0xa4); // a4..af (spa: the nonce field after the 4-byte tag)
const SRC4 = parseAddress('198.18.0.2');
const SRC6 = parseAddress('2001:db8::7');
// An Ed25519 key from the fixed seed 20..3f (PKCS#8 DER: a fixed prefix, then the seed).
const PRIV = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seq(32, 0x20)]), format: 'der', type: 'pkcs8' });
const PUB = createPublicKey(PRIV);

// Fixed vectors (also in docs/KNOCKS.md), checked against independent implementations.
const SPA_VECTOR = '4b47533203d6db22000000006553f100875f03baa4a5a6a7a8a9aaabacadaeaf4ba89a3fdaf5c380';
const SIGNED_VECTOR =
  '4b47453103d6db22000000006553f100a0a1a2a3a4a5a6a7a8a9aaabacadaeaf24f6ed6acbfe1009c030d7ca567c33ca' +
  '75166e7ebb7c349c3b4533930a165d179e489b86a1ba8ca67b3e19c64fedea1bc68dfa3365ef84569abe3beed923266e' +
  'b028dc7f7ace0a661316f89018ca2a0f';

test('doorId: SHA-256("knockgate door\\0" || name), first 4 bytes big-endian', () => {
  assert.equal(doorId('ssh'), 0x03d6db22);
  assert.equal(doorId('web'), 0x5716856c);
  assert.equal(doorId('a'), 0xad29ae0d);
  assert.notEqual(doorId('ssh'), doorId('SSH'));
});

test('spa: the fixed vector', () => {
  const buf = encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 1700000000, nonce: SPA_NONCE });
  assert.equal(buf.toString('hex'), SPA_VECTOR);
  assert.equal(buf.length, SPA_LEN);
  assert.deepEqual(buf.subarray(0, 4), SPA_MAGIC);
  assert.equal(SPA_MAGIC.toString('latin1'), 'KGS2');
  // the nonce field starts with the window's tag: SipHash-2-4 of "KGST" || door id || time / 64
  const tagMsg = Buffer.concat([Buffer.from('KGST', 'latin1'), Buffer.from('03d6db22', 'hex'), Buffer.alloc(8)]);
  tagMsg.writeBigUInt64BE(1700000000n / 64n, 8);
  assert.deepEqual(buf.subarray(16, 20), siphash24(KEY, tagMsg).subarray(0, 4));
  assert.deepEqual(buf.subarray(16, 20), spaTag(KEY, doorId('ssh'), 1700000000));
  assert.deepEqual(buf.subarray(20, 32), SPA_NONCE);
  // the MAC is SipHash-2-4 over source || bytes 0..31
  assert.deepEqual(buf.subarray(32), siphash24(KEY, Buffer.concat([SRC4, buf.subarray(0, 32)])));
  // a bigint timestamp is the same timestamp
  assert.deepEqual(encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 1700000000n, nonce: SPA_NONCE }), buf);
});

test('spa: decode and verify', () => {
  const buf = encodeSpa({ key: KEY, door: 'ssh', source: SRC6, time: 1700000123n, nonce: SPA_NONCE });
  const d = decodeSpa(buf);
  assert.ok(d !== null);
  assert.equal(d.doorId, doorId('ssh'));
  assert.equal(d.time, 1700000123n);
  assert.deepEqual(d.nonce, buf.subarray(16, 32));
  assert.deepEqual(d.nonce.subarray(4), SPA_NONCE);
  assert.deepEqual(d.tag, spaTag(KEY, doorId('ssh'), 1700000123n));
  assert.deepEqual(d.mac, buf.subarray(32, 40));
  assert.equal(verifySpa(KEY, SRC6, buf), true);
  assert.equal(verifySpa(KEY, SRC4, buf), false, 'another source address');
  assert.equal(verifySpa(seq(16, 1), SRC6, buf), false, 'another key');
  // a view into a larger buffer decodes the same
  const big = Buffer.concat([Buffer.alloc(7), buf, Buffer.alloc(5)]);
  assert.equal(verifySpa(KEY, SRC6, big.subarray(7, 47)), true);
});

test('spa: any changed bit fails verification', () => {
  const buf = encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 1700000000, nonce: SPA_NONCE });
  for (let i = 0; i < SPA_LEN; i++) {
    for (const bit of [0x01, 0x80]) {
      const bad = Buffer.from(buf);
      bad[i] = (bad[i] ?? 0) ^ bit;
      assert.equal(verifySpa(KEY, SRC4, bad), false, `byte ${i} bit ${bit}`);
    }
  }
  for (let i = 0; i < 16; i++) {
    const src = Buffer.from(SRC4);
    src[i] = (src[i] ?? 0) ^ 1;
    assert.equal(verifySpa(KEY, src, buf), false, `source byte ${i}`);
  }
});

test('spa: wrong length or magic decodes to null', () => {
  const buf = encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 1, nonce: SPA_NONCE });
  assert.equal(decodeSpa(buf.subarray(0, 39)), null);
  assert.equal(decodeSpa(Buffer.concat([buf, Buffer.alloc(1)])), null);
  assert.equal(decodeSpa(Buffer.alloc(0)), null);
  const other = Buffer.from(buf);
  other.write('KGS1', 0, 'latin1'); // the format before the window tag
  assert.equal(decodeSpa(other), null);
  assert.equal(verifySpa(KEY, SRC4, other), false);
  assert.equal(verifySpa(KEY, SRC4, buf.subarray(0, 39)), false);
});

test('spa: random nonces by default; bad inputs are refused', () => {
  const a = encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 5 });
  const b = encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 5 });
  assert.notDeepEqual(a.subarray(16, 32), b.subarray(16, 32));
  assert.equal(verifySpa(KEY, SRC4, a), true);
  assert.throws(() => encodeSpa({ key: KEY, door: 'ssh', source: Buffer.from([198, 18, 0, 2]), time: 5 }), RangeError);
  assert.throws(() => encodeSpa({ key: seq(15), door: 'ssh', source: SRC4, time: 5 }), RangeError);
  assert.throws(() => encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 5, nonce: seq(15) }), RangeError);
  assert.throws(() => encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 5, nonce: seq(16) }), RangeError);
  assert.throws(() => encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 1.5 }), RangeError);
  assert.throws(() => encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: -1 }), RangeError);
  assert.throws(() => encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 1n << 64n }), RangeError);
  assert.equal(decodeSpa(encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: (1n << 64n) - 1n }))?.time, (1n << 64n) - 1n);
});

test('keyIdOf: SHA-256 of the raw public key, first 16 bytes; the same from the private key', () => {
  assert.equal(keyIdOf(PUB).toString('hex'), '24f6ed6acbfe1009c030d7ca567c33ca');
  assert.deepEqual(keyIdOf(PRIV), keyIdOf(PUB));
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey;
  assert.throws(() => keyIdOf(rsa), /Ed25519/);
});

test('signed: the fixed vector (Ed25519 signatures are deterministic)', () => {
  const buf = encodeSigned({ privateKey: PRIV, door: 'ssh', source: SRC6, time: 1700000000n, nonce: NONCE });
  assert.equal(buf.toString('hex'), SIGNED_VECTOR);
  assert.equal(buf.length, SIGNED_LEN);
  assert.deepEqual(buf.subarray(0, 4), SIGNED_MAGIC);
  assert.equal(SIGNED_MAGIC.toString('latin1'), 'KGE1');
});

test('signed: decode gives the fields and the signed message', () => {
  const buf = encodeSigned({ privateKey: PRIV, door: 'web', source: SRC4, time: 1700000456, nonce: NONCE });
  const d = decodeSigned(buf);
  assert.ok(d !== null);
  assert.equal(d.doorId, doorId('web'));
  assert.equal(d.time, 1700000456n);
  assert.deepEqual(d.nonce, NONCE);
  assert.deepEqual(d.keyId, keyIdOf(PUB));
  assert.deepEqual(d.signature, buf.subarray(48));
  assert.deepEqual(d.message, buf.subarray(0, 48));
  assert.equal(verify(null, signedMessage(SRC4, d.message), PUB, d.signature), true);
  assert.equal(verify(null, Buffer.concat([SRC4, buf.subarray(0, 48)]), PUB, d.signature), true);
  assert.equal(verify(null, signedMessage(SRC6, d.message), PUB, d.signature), false);
});

test('signed: wrong length or magic decodes to null; bad inputs are refused', () => {
  const buf = encodeSigned({ privateKey: PRIV, door: 'ssh', source: SRC4, time: 1 });
  assert.equal(decodeSigned(buf.subarray(0, 111)), null);
  assert.equal(decodeSigned(Buffer.concat([buf, Buffer.alloc(1)])), null);
  const other = Buffer.from(buf);
  other[3] = 0x32;
  assert.equal(decodeSigned(other), null);
  assert.equal(decodeSigned(encodeSpa({ key: KEY, door: 'ssh', source: SRC4, time: 1 })), null);
  assert.throws(() => encodeSigned({ privateKey: PUB, door: 'ssh', source: SRC4, time: 1 }), /Ed25519 private key/);
  assert.throws(() => encodeSigned({ privateKey: PRIV, door: 'ssh', source: seq(4), time: 1 }), RangeError);
});
