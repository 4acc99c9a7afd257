// The single-datagram knocks on the wire (docs/KNOCKS.md has the tables): spa, 40 bytes with a
// SipHash-2-4 MAC the XDP program checks, and signed, 112 bytes with an Ed25519 signature the
// daemon checks. Both bind the knock to the source address the gate sees: the MAC or signature
// covers that address followed by the datagram's leading bytes. Integers are big-endian.
import { createHash, createPublicKey, randomBytes, sign, timingSafeEqual, type KeyObject } from 'node:crypto';
import { siphash24 } from './siphash.js';

/** "KGS2" (KGS1, without the window tag, is refused as malformed) */
export const SPA_MAGIC: Buffer = Buffer.from('KGS2', 'latin1');
/** spa: seconds per tag window (docs/KNOCKS.md) */
export const SPA_TAG_WINDOW_S = 64;
const SPA_TAG_LEN = 4;
const SPA_TAG_PREFIX = Buffer.from('KGST', 'latin1');
export const SPA_LEN = 40;
/** "KGE1" */
export const SIGNED_MAGIC: Buffer = Buffer.from('KGE1', 'latin1');
export const SIGNED_LEN = 112;

const ADDR_LEN = 16;
const NONCE_LEN = 16;
const KEY_ID_LEN = 16;
/** spa: the datagram bytes the MAC covers (all but the MAC) */
const SPA_BODY = 32;
/** signed: the datagram bytes the signature covers (all but the signature) */
const SIGNED_BODY = 48;
const DOOR_ID_PREFIX = Buffer.from('knockgate door\0', 'latin1');
const U64_MAX = (1n << 64n) - 1n;

/** The door's 32-bit id on the wire: SHA-256("knockgate door\0" || name), first 4 bytes, BE. */
export function doorId(name: string): number {
  return createHash('sha256').update(DOOR_ID_PREFIX).update(name, 'utf8').digest().readUInt32BE(0);
}

/** The Ed25519 public key's id: SHA-256 of its raw 32 bytes, first 16 bytes. */
export function keyIdOf(publicKey: KeyObject): Buffer {
  if (publicKey.asymmetricKeyType !== 'ed25519') {
    throw new Error(`a knock key is an Ed25519 key, this one is ${publicKey.asymmetricKeyType ?? publicKey.type}`);
  }
  const pub = publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey;
  const { x } = pub.export({ format: 'jwk' });
  if (typeof x !== 'string') throw new Error('the Ed25519 public key did not export its raw bytes');
  return createHash('sha256').update(Buffer.from(x, 'base64url')).digest().subarray(0, KEY_ID_LEN);
}

function checkSource(source: Uint8Array): void {
  if (source.length !== ADDR_LEN) {
    throw new RangeError(`a source address has 16 bytes (IPv4 as ::ffff:a.b.c.d, see parseAddress), this one has ${source.length}`);
  }
}

function toU64(time: number | bigint): bigint {
  if (typeof time === 'number' && !Number.isSafeInteger(time)) {
    throw new RangeError(`a knock's timestamp is a whole number of UNIX seconds, not ${time}`);
  }
  const t = BigInt(time);
  if (t < 0n || t > U64_MAX) throw new RangeError(`a knock's timestamp is a u64, not ${t}`);
  return t;
}

function pickNonce(nonce: Uint8Array | undefined): Buffer {
  if (nonce === undefined) return randomBytes(NONCE_LEN);
  if (nonce.length !== NONCE_LEN) throw new RangeError(`a knock's nonce has 16 bytes, this one has ${nonce.length}`);
  return Buffer.from(nonce);
}

/** magic || door id || timestamp || nonce: the first 32 bytes both datagrams share. */
function header(magic: Buffer, door: string, time: number | bigint, nonce: Uint8Array | undefined): Buffer {
  const head = Buffer.alloc(32);
  magic.copy(head, 0);
  head.writeUInt32BE(doorId(door), 4);
  head.writeBigUInt64BE(toU64(time), 8);
  pickNonce(nonce).copy(head, 16);
  return head;
}

// ---- spa ----

export interface SpaInput {
  /** the door's 16-byte SipHash key */
  key: Uint8Array;
  /** the door's name */
  door: string;
  /** the source address as the gate will see it, 16 bytes */
  source: Uint8Array;
  /** UNIX seconds */
  time: number | bigint;
  /** 12 bytes (the nonce field's bytes after the tag); random by default */
  nonce?: Uint8Array;
}

export interface SpaDatagram {
  doorId: number;
  time: bigint;
  /** the window's tag: the nonce field's first 4 bytes */
  tag: Buffer;
  /** the whole 16-byte nonce field (tag and random bytes), as the gate records it */
  nonce: Buffer;
  mac: Buffer;
}

/**
 * The tag of the timestamp window of `time`: SipHash-2-4 under the door's key of
 * "KGST" || door id || floor(time / 64) (u32, u32, u64, big-endian), first 4 bytes of its
 * output. The gate compares it before the MAC: a datagram without the key's tag costs it a
 * compare, not a SipHash.
 */
export function spaTag(key: Uint8Array, doorIdValue: number, time: number | bigint): Buffer {
  const m = Buffer.alloc(16);
  SPA_TAG_PREFIX.copy(m, 0);
  m.writeUInt32BE(doorIdValue >>> 0, 4);
  m.writeBigUInt64BE(toU64(time) / BigInt(SPA_TAG_WINDOW_S), 8);
  return siphash24(key, m).subarray(0, SPA_TAG_LEN);
}

function spaMac(key: Uint8Array, source: Uint8Array, body: Uint8Array): Buffer {
  return siphash24(key, Buffer.concat([source, body.subarray(0, SPA_BODY)]));
}

/** The 40-byte spa datagram. */
export function encodeSpa(input: SpaInput): Buffer {
  checkSource(input.source);
  if (input.key.length !== 16) throw new RangeError(`an spa key has 16 bytes, this one has ${input.key.length}`);
  const rest = NONCE_LEN - SPA_TAG_LEN;
  if (input.nonce !== undefined && input.nonce.length !== rest) {
    throw new RangeError(`an spa knock's nonce has ${rest} bytes (after the 4-byte tag), this one has ${input.nonce.length}`);
  }
  const body = header(SPA_MAGIC, input.door, input.time, Buffer.alloc(NONCE_LEN));
  spaTag(input.key, doorId(input.door), input.time).copy(body, 16);
  Buffer.from(input.nonce ?? randomBytes(rest)).copy(body, 16 + SPA_TAG_LEN);
  return Buffer.concat([body, spaMac(input.key, input.source, body)]);
}

/** The fields of an spa datagram; null when its length or magic is wrong. Does not check the MAC. */
export function decodeSpa(buf: Uint8Array): SpaDatagram | null {
  if (buf.length !== SPA_LEN) return null;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (!b.subarray(0, 4).equals(SPA_MAGIC)) return null;
  return {
    doorId: b.readUInt32BE(4),
    time: b.readBigUInt64BE(8),
    tag: Buffer.from(b.subarray(16, 16 + SPA_TAG_LEN)),
    nonce: Buffer.from(b.subarray(16, 32)),
    mac: Buffer.from(b.subarray(32, 40)),
  };
}

/** True when buf is an spa datagram whose tag and MAC are right for key and source (constant-time compares). */
export function verifySpa(key: Uint8Array, source: Uint8Array, buf: Uint8Array): boolean {
  checkSource(source);
  const d = decodeSpa(buf);
  if (d === null) return false;
  const expected = spaMac(key, source, buf);
  const macOk = timingSafeEqual(expected, buf.subarray(SPA_BODY, SPA_LEN));
  return macOk && d.time <= U64_MAX && timingSafeEqual(spaTag(key, d.doorId, d.time), d.tag);
}

// ---- signed ----

export interface SignedInput {
  /** the client's Ed25519 private key */
  privateKey: KeyObject;
  door: string;
  /** the source address as the gate will see it, 16 bytes */
  source: Uint8Array;
  /** UNIX seconds */
  time: number | bigint;
  /** 16 bytes; random by default */
  nonce?: Uint8Array;
}

export interface SignedDatagram {
  doorId: number;
  time: bigint;
  nonce: Buffer;
  keyId: Buffer;
  signature: Buffer;
  /** datagram bytes 0..47: what is signed, after the 16-byte source address */
  message: Buffer;
}

/** The 112-byte signed datagram. */
export function encodeSigned(input: SignedInput): Buffer {
  checkSource(input.source);
  if (input.privateKey.type !== 'private' || input.privateKey.asymmetricKeyType !== 'ed25519') {
    throw new Error('a signed knock needs an Ed25519 private key');
  }
  const keyId = keyIdOf(createPublicKey(input.privateKey));
  const body = Buffer.concat([header(SIGNED_MAGIC, input.door, input.time, input.nonce), keyId]);
  const signature = sign(null, Buffer.concat([input.source, body]), input.privateKey);
  return Buffer.concat([body, signature]);
}

/** The fields of a signed datagram; null when its length or magic is wrong. Does not verify. */
export function decodeSigned(buf: Uint8Array): SignedDatagram | null {
  if (buf.length !== SIGNED_LEN) return null;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (!b.subarray(0, 4).equals(SIGNED_MAGIC)) return null;
  return {
    doorId: b.readUInt32BE(4),
    time: b.readBigUInt64BE(8),
    nonce: Buffer.from(b.subarray(16, 32)),
    keyId: Buffer.from(b.subarray(32, 48)),
    signature: Buffer.from(b.subarray(SIGNED_BODY, SIGNED_LEN)),
    message: Buffer.from(b.subarray(0, SIGNED_BODY)),
  };
}

/** What an Ed25519 signature of a signed knock covers: source (16 bytes) || datagram bytes 0..47. */
export function signedMessage(source: Uint8Array, message: Uint8Array): Buffer {
  checkSource(source);
  return Buffer.concat([source, message.subarray(0, SIGNED_BODY)]);
}
