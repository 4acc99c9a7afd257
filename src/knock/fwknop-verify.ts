// The daemon's side of an fwknop door: a candidate datagram the XDP program handed up is
// checked here in the order that costs an attacker most and the gate least: shape and HMAC
// (decodeFwknop, per client until one's HMAC verifies), decryption and fields, the clock, the
// replay guard, and last the door's access policy. Only authentic, fresh messages reach the
// replay guard, so junk cannot fill it; an authentic message the policy refuses is recorded
// too, so that its replay (from any source) is logged as the replay it is.
import {
  checkFwknopAccess,
  checkFwknopFresh,
  decodeFwknop,
  type FwknopAccessPolicy,
  type FwknopKeys,
  type FwknopMessage,
  type FwknopRefusal,
} from './fwknop.js';
import type { ReplayGuard } from './replay.js';

/** One client of an fwknop door: a name for the logs and its keys. */
export interface FwknopClient {
  name: string;
  keys: FwknopKeys;
}

export type FwknopCheck =
  | {
      ok: true;
      /** the door's name for the client whose keys opened it */
      client: string;
      message: FwknopMessage;
      /** the address to open for, 16 bytes (IPv4 mapped) */
      address: Buffer;
    }
  | {
      ok: false;
      reason: FwknopRefusal;
      detail: string;
      /** set once a client's HMAC verified */
      client?: string;
      /** set once the message decrypted: the fwknop user name, for the event */
      username?: string;
    };

export interface FwknopVerifierOptions extends FwknopAccessPolicy {
  clients: readonly FwknopClient[];
  /** the door's max_skew, milliseconds */
  maxSkewMs: number;
  replay: ReplayGuard;
}

export class FwknopVerifier {
  constructor(private readonly opts: FwknopVerifierOptions) {
    if (opts.clients.length === 0) throw new RangeError('an fwknop door has at least one client');
    if (!Number.isSafeInteger(opts.maxSkewMs) || opts.maxSkewMs < 0) throw new RangeError(`a clock skew is a whole number of milliseconds >= 0, not ${opts.maxSkewMs}`);
    const seen = new Map<string, string>();
    for (const c of opts.clients) {
      const id = `${c.keys.hmacKey.toString('hex')}`;
      const other = seen.get(id);
      if (other !== undefined) throw new Error(`fwknop clients ${other} and ${c.name} have the same HMAC key: give each client its own keys`);
      seen.set(id, c.name);
      if (c.keys.hmacKey.equals(c.keys.encryptionKey)) throw new Error(`fwknop client ${c.name}: the encryption key and the HMAC key are the same; they must differ (fwknop --key-gen makes two)`);
    }
  }

  /** `source`: the packet's source address, 16 bytes (IPv4 mapped). */
  async check(datagram: Uint8Array, source: Uint8Array, nowMs = Date.now()): Promise<FwknopCheck> {
    let bad: FwknopCheck | undefined;
    for (const client of this.opts.clients) {
      const r = decodeFwknop(datagram, client.keys);
      if (!r.ok) {
        if (r.reason === 'malformed') return { ok: false, reason: r.reason, detail: r.detail };
        if (r.reason === 'bad_hmac') {
          bad ??= { ok: false, reason: r.reason, detail: r.detail };
          continue;
        }
        return { ok: false, reason: r.reason, detail: r.detail, client: client.name };
      }
      const { message } = r;
      const who = { client: client.name, username: message.username };
      const fresh = checkFwknopFresh(message, nowMs, this.opts.maxSkewMs);
      if (!fresh.ok) return { ...fresh, ...who };
      // Remembered until the timestamp can no longer pass the clock check, from whichever of the
      // two clocks is later (a clock stepped back must not revive an expired record).
      const expires = Math.max(message.timestamp * 1000, nowMs) + this.opts.maxSkewMs + 1000;
      let claim;
      try {
        claim = await this.opts.replay.claim(message.digest, expires, nowMs);
      } catch (err) {
        return { ok: false, reason: 'replay_cache_error', detail: `${(err as Error).message}: refused`, ...who };
      }
      if (claim === 'replay') return { ok: false, reason: 'replay', detail: 'this datagram was accepted before', ...who };
      if (claim === 'full') return { ok: false, reason: 'replay_cache_error', detail: 'the replay cache is full: refused until records expire (raise its size, or lower max_skew)', ...who };
      const grant = checkFwknopAccess(message, source, this.opts);
      if (!grant.ok) return { ...grant, ...who };
      return { ok: true, client: client.name, message, address: grant.address };
    }
    return bad ?? { ok: false, reason: 'bad_hmac', detail: 'no client' };
  }
}
