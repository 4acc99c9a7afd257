/**
 * What the fleet keeps in etcd, under the fleet's prefix (the engine adds the prefix):
 *
 *   grants/<door>/<source hex>   a GrantRecord: the grant, or its tombstone (revoked, consumed)
 *   cooldowns/<source hex>       a CooldownRecord (cooldowns: shared only)
 *   nonces/<door>/<nonce hex>    claimed once per fleet: a signed knock's nonce
 *   spent/<door>/<window>        claimed once per fleet: a rotating door's window
 *   spa/<nonce hex>              an SPA nonce accepted by some host (copied into every kg_nonces)
 *
 * Doors are named, never numbered (slots differ between hosts); times are wall clock (ms since
 * the epoch), converted to each host's monotonic clock when written into its kernel. A revoke is
 * a tombstone, not a delete: a delete is also what a lease's expiry produces, and a tombstone
 * carries when and where it was made, so a grant made during a partition can be weighed against
 * it. Keys expire through one lease per expiry second (the engine's); the kernel enforces expiry
 * on its own clock, the store's leases only clean up.
 */
import { formatAddress, parseAddress } from '../net/addr.js';

export const RECORD_VERSION = 1;

export type GrantState = 'granted' | 'revoked' | 'consumed';

export interface GrantRecord {
  v: number;
  state: GrantState;
  /** the source address as text, e.g. 198.18.0.5 */
  source: string;
  door: string;
  /** granted: when the grant ends (wall clock ms); tombstones: the end of the grant they cut */
  expiresAtMs: number;
  /** when the grant or tombstone was made on its origin (wall clock ms) */
  atMs: number;
  /** the host that made it */
  origin: string;
  /** when the origin sent it to etcd (wall clock ms): splits the lag into origin and store */
  sentAtMs?: number;
  /** how it was made: a knock, by hand (CLI), a signed knock, a rotating claim */
  how?: 'knock' | 'manual' | 'signed' | 'rotating' | 'spa' | 'resync';
}

export interface CooldownRecord {
  v: number;
  source: string;
  untilMs: number;
  atMs: number;
  origin: string;
}

export const PREFIX = { grants: 'grants/', cooldowns: 'cooldowns/', nonces: 'nonces/', spent: 'spent/', spa: 'spa/' } as const;

export function grantKey(door: string, addr: Buffer): string {
  return `${PREFIX.grants}${door}/${addr.toString('hex')}`;
}

export function cooldownKey(addr: Buffer): string {
  return `${PREFIX.cooldowns}${addr.toString('hex')}`;
}

export function nonceKey(door: string, nonce: Buffer): string {
  return `${PREFIX.nonces}${door}/${nonce.toString('hex')}`;
}

export function spentKey(door: string, window: bigint): string {
  return `${PREFIX.spent}${door}/${window}`;
}

export function spaKey(nonce: Buffer): string {
  return `${PREFIX.spa}${nonce.toString('hex')}`;
}

/** The source address (16 bytes) of a grants/ or cooldowns/ key; null for anything else. */
export function addrOfKey(key: string): Buffer | null {
  const hex = key.slice(key.lastIndexOf('/') + 1);
  return /^[0-9a-f]{32}$/.test(hex) ? Buffer.from(hex, 'hex') : null;
}

export function encodeRecord(r: GrantRecord | CooldownRecord): Buffer {
  return Buffer.from(JSON.stringify(r));
}

const STATES: readonly GrantState[] = ['granted', 'revoked', 'consumed'];

/** A grant record from the store, or null if it is not one this version understands. */
export function decodeGrantRecord(value: Buffer | null): GrantRecord | null {
  if (value === null) return null;
  let r: unknown;
  try {
    r = JSON.parse(value.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof r !== 'object' || r === null) return null;
  const o = r as Record<string, unknown>;
  if (o['v'] !== RECORD_VERSION || !STATES.includes(o['state'] as GrantState)) return null;
  if (typeof o['source'] !== 'string' || typeof o['door'] !== 'string' || typeof o['origin'] !== 'string') return null;
  if (typeof o['expiresAtMs'] !== 'number' || typeof o['atMs'] !== 'number') return null;
  try {
    parseAddress(o['source']);
  } catch {
    return null;
  }
  return o as unknown as GrantRecord;
}

export function decodeCooldownRecord(value: Buffer | null): CooldownRecord | null {
  if (value === null) return null;
  try {
    const o = JSON.parse(value.toString('utf8')) as Record<string, unknown>;
    if (o['v'] !== RECORD_VERSION || typeof o['source'] !== 'string' || typeof o['untilMs'] !== 'number' || typeof o['origin'] !== 'string') return null;
    parseAddress(o['source']);
    return o as unknown as CooldownRecord;
  } catch {
    return null;
  }
}

export function sourceText(addr: Buffer): string {
  return formatAddress(addr);
}

/**
 * Leases are shared per expiry step: a key that must live until `ms` (wall clock) goes on the
 * lease of the next multiple of LEASE_STEP_SEC after it. The engine grants one lease per expiry
 * second it is given; rounding up to 10 s steps makes that one lease grant (one extra round trip
 * before a put) per 10 s instead of per second, at the cost of keys outliving their grant by up
 * to 10 s in the store (the kernels enforce the expiry; the leases only clean up).
 */
export const LEASE_STEP_SEC = 10;

export function leaseSecond(ms: number): number {
  return Math.ceil(ms / 1000 / LEASE_STEP_SEC) * LEASE_STEP_SEC;
}
