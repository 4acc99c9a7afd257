// The daemon's side of signed knocks: the XDP program passes a signed door's datagrams up to
// the daemon, which checks them here (door, key, signature over the source address, clock
// skew, replay) before it writes a grant. Checks run cheapest first, and the nonce cache only
// records knocks whose signature verified, so junk cannot evict real nonces.
import { verify, type KeyObject } from 'node:crypto';
import { decodeSigned, doorId, signedMessage } from './wire.js';

/**
 * The nonces of recent knocks. A nonce seen again within ttlMs is a replay. Entries live in
 * insertion order (a Map's), so expired ones are dropped from the front as later calls pass,
 * and when the cache is full the oldest entry makes room.
 */
export class NonceCache {
  private readonly entries = new Map<string, number>();

  constructor(
    private readonly ttlMs: number,
    private readonly max = 65536,
  ) {
    if (!(ttlMs > 0)) throw new RangeError(`a nonce cache's ttl is a positive number of milliseconds, not ${ttlMs}`);
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`a nonce cache holds at least one nonce, not ${max}`);
  }

  get size(): number {
    return this.entries.size;
  }

  /** True when the nonce was seen within the ttl (a replay); otherwise records it and returns false. */
  seen(nonce: Buffer, nowMs: number): boolean {
    this.expire(nowMs);
    const key = nonce.toString('latin1');
    const at = this.entries.get(key);
    if (at !== undefined && nowMs - at <= this.ttlMs) return true;
    if (at !== undefined) this.entries.delete(key); // expired, but out of order: re-insert at the back
    while (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(key, nowMs);
    return false;
  }

  /** Drops expired entries from the front; stops at the first live one (amortised O(1) a call). */
  private expire(nowMs: number): void {
    for (const [key, at] of this.entries) {
      if (nowMs - at <= this.ttlMs) break;
      this.entries.delete(key);
    }
  }
}

export interface SignedClientKey {
  /** the client's name in the config */
  name: string;
  key: KeyObject;
  /** keyIdOf(key) */
  keyId: Buffer;
}

export type SignedRejection = 'malformed' | 'wrong-door' | 'unknown-key' | 'bad-signature' | 'stale' | 'replay';

export type SignedCheck =
  | { ok: true; client: string; time: bigint; nonce: Buffer }
  | { ok: false; reason: SignedRejection; client?: string };

/** Checks the signed knocks of one door against its clients' public keys. */
export class SignedVerifier {
  private readonly doorId: number;
  private readonly clients = new Map<string, SignedClientKey>();
  private readonly nonces: NonceCache;
  private readonly maxSkew: bigint;

  /** `nonces`: a cache shared with other verifiers (the daemon keeps one across reloads). */
  constructor(door: string, clients: SignedClientKey[], maxSkewMs: number, nonces?: NonceCache) {
    if (!Number.isSafeInteger(maxSkewMs) || maxSkewMs < 0) throw new RangeError(`a clock skew is a whole number of milliseconds >= 0, not ${maxSkewMs}`);
    this.doorId = doorId(door);
    for (const client of clients) {
      const id = client.keyId.toString('hex');
      const other = this.clients.get(id);
      if (other !== undefined) throw new Error(`door ${door}: clients ${other.name} and ${client.name} have the same key: give each client its own key`);
      this.clients.set(id, client);
    }
    this.maxSkew = BigInt(maxSkewMs);
    // A knock is fresh for 2 * maxSkew around its timestamp; a second more covers rounding.
    this.nonces = nonces ?? new NonceCache(2 * maxSkewMs + 1000);
  }

  check(source: Buffer, payload: Buffer, nowMs: number): SignedCheck {
    const d = decodeSigned(payload);
    if (d === null) return { ok: false, reason: 'malformed' };
    if (d.doorId !== this.doorId) return { ok: false, reason: 'wrong-door' };
    const client = this.clients.get(d.keyId.toString('hex'));
    if (client === undefined) return { ok: false, reason: 'unknown-key' };
    let good = false;
    try {
      good = verify(null, signedMessage(source, d.message), client.key, d.signature);
    } catch {
      good = false;
    }
    if (!good) return { ok: false, reason: 'bad-signature', client: client.name };
    const skew = d.time * 1000n - BigInt(Math.floor(nowMs));
    if (skew > this.maxSkew || -skew > this.maxSkew) return { ok: false, reason: 'stale', client: client.name };
    if (this.nonces.seen(d.nonce, nowMs)) return { ok: false, reason: 'replay', client: client.name };
    return { ok: true, client: client.name, time: d.time, nonce: d.nonce };
  }
}
