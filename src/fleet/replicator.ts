/**
 * Replication between this host's kernel and the fleet's store (src/fleet/records.ts has the
 * keys). Local grants, revokes, flow-only uses and (cooldowns: shared) cooldowns are published;
 * the other hosts' records arrive through a watch and are written into the kernel. The kernel
 * never waits on the network: everything here runs after the kernel has decided, or (claims) in
 * the daemon before it writes a grant.
 *
 * Rules that keep the fleet consistent:
 * - Records are applied in revision order per key (a record older than one already applied is
 *   ignored), so a revoke wins over the grant it followed and a re-grant over an older revoke.
 * - A host never re-applies its own records from the watch (it wrote them into its kernel
 *   first; re-applying a flow-only grant after its use would give it a second use). It loads its
 *   own records only at start, when its kernel may have lost them.
 * - Writes into the kernel never publish: grants replicated INTO a host produce no kernel event,
 *   so nothing loops.
 * - While the store is unreachable, local records wait in `pending`; when it returns the store is
 *   read again and each pending record is published unless the store holds a newer one for the
 *   same key (by the origins' wall clocks), in which case the store's is applied.
 */
import type { Logger } from '../log.js';
import { Gate, monoNowNs } from '../kernel/gate.js';
import { MAP, OFFSETS, SIZEOF, decodeGrant, decodePenalty } from '../kernel/layout.js';
import { BPF_ANY } from '../bpf/index.js';
import { parseAddress } from '../net/addr.js';
import {
  PREFIX,
  RECORD_VERSION,
  addrOfKey,
  cooldownKey,
  decodeCooldownRecord,
  decodeGrantRecord,
  encodeRecord,
  grantKey,
  leaseSecond,
  spaKey,
  sourceText,
  type CooldownRecord,
  type GrantRecord,
  type GrantState,
} from './records.js';

/** The store as the replicator uses it: the part of FleetEngine (src/fleet/engine.ts) it needs. */
export interface FleetStore {
  put(key: string, value: Buffer | string, opts?: { expiresAtSec?: number }): Promise<void>;
  list(prefix: string): Promise<{ items: { key: string; value: Buffer; revision: bigint }[]; revision: bigint }>;
  claim(key: string, value: Buffer | string, expiresAtSec: number): Promise<boolean>;
  watch(
    prefix: string,
    onEvents: (events: { type: 'put' | 'delete'; key: string; value: Buffer | null; revision: bigint }[]) => void,
    onResync: (snapshot: { items: { key: string; value: Buffer; revision: bigint }[]; revision: bigint }, reason: string) => void,
  ): { close(): void };
}

export interface DoorInfo {
  slot: number;
  openForMs: number;
}

export interface ReplicatorOptions {
  store: FleetStore;
  hostId: string;
  gate: () => Gate | null;
  /** the live doors by name (slots differ between hosts) */
  doors: () => ReadonlyMap<string, DoorInfo>;
  shareCooldowns: boolean;
  log: Logger;
  /** a record from another host reached this kernel: wall-clock ms since it was made there */
  onApplied?: (kind: GrantState | 'cooldown', rec: { source: string; door: string; origin: string }, lagMs: number) => void;
}

/** Revoke tombstones live at least this long (a partitioned host's older grant meets them). */
const TOMBSTONE_MIN_MS = 10 * 60_000;

export class Replicator {
  /** per key: the revision of the record last applied (or seen) */
  private readonly seen = new Map<string, bigint>();
  /** per key: the store's record as last seen (for weighing pending local records) */
  private readonly stored = new Map<string, { atMs: number }>();
  /** local records that could not be written yet */
  private readonly pending = new Map<string, { value: GrantRecord | CooldownRecord; leaseAtMs: number }>();
  private watches: { close(): void }[] = [];
  private flushing: Promise<void> | null = null;
  private flushAgain = false;
  private closed = false;
  /** wall clock of the last record applied from another host, and its lag */
  lastApplied: { atMs: number; lagMs: number } | null = null;
  private readonly unknownDoors = new Set<string>();
  /** "source/door" of granted records -> origin host */
  private readonly origin = new Map<string, string>();

  constructor(private readonly o: ReplicatorOptions) {}

  /**
   * Watches the fleet's records. Each watch begins with a snapshot of everything live (loaded into
   * the kernel, this host's own records included), and gets a new one after a compaction or an
   * outage (applied; then what was made here meanwhile is published). `ready` resolves after the
   * first snapshot of every watch.
   */
  start(): void {
    const prefixes = [PREFIX.grants, PREFIX.spa, ...(this.o.shareCooldowns ? [PREFIX.cooldowns] : [])];
    let waiting = prefixes.length;
    for (const p of prefixes) {
      let first = true;
      this.watches.push(
        this.o.store.watch(
          p,
          (events) => {
            for (const ev of events) if (ev.type === 'put') this.applyKey(ev.key, ev.value, ev.revision, false);
          },
          (snap, reason) => {
            const n = this.applySnapshot(snap.items, first);
            this.o.log.info({ prefix: p, records: snap.items.length, applied: n, reason, pending: this.pending.size }, 'fleet: records loaded');
            if (first && --waiting === 0) this.resolveReady();
            first = false;
            void this.flush();
          },
        ),
      );
    }
  }

  private resolveReady: () => void = () => {};
  /** resolves once every watch has loaded its first snapshot */
  readonly ready = new Promise<void>((resolve) => {
    this.resolveReady = resolve;
  });

  private applySnapshot(items: readonly { key: string; value: Buffer; revision: bigint }[], withOwn: boolean): number {
    let n = 0;
    for (const it of items) if (this.applyKey(it.key, it.value, it.revision, withOwn)) n++;
    return n;
  }

  /** One record from the store. Returns true if it changed this kernel. */
  private applyKey(key: string, value: Buffer | null, revision: bigint, withOwn: boolean): boolean {
    if ((this.seen.get(key) ?? -1n) >= revision) return false;
    this.seen.set(key, revision);
    if (key.startsWith(PREFIX.spa)) return this.applySpaNonce(key, value, withOwn);
    if (key.startsWith(PREFIX.cooldowns)) {
      const rec = decodeCooldownRecord(value);
      if (rec === null) return false;
      this.stored.set(key, { atMs: rec.atMs });
      if (rec.origin === this.o.hostId && !withOwn) return false;
      return this.applyCooldown(key, rec);
    }
    const rec = decodeGrantRecord(value);
    if (rec === null) {
      this.o.log.debug({ key }, 'fleet: a record this version does not understand was ignored');
      return false;
    }
    this.stored.set(key, { atMs: rec.atMs });
    if (rec.state === 'granted' && rec.expiresAtMs > Date.now()) this.origin.set(`${rec.source}/${rec.door}`, rec.origin);
    else this.origin.delete(`${rec.source}/${rec.door}`);
    const mine = this.pending.get(key);
    if (mine !== undefined) {
      // A local record that waits for the store: the later of the two wins.
      if (mine.value.atMs > rec.atMs) return false;
      this.pending.delete(key);
    }
    if (rec.origin === this.o.hostId && !withOwn) return false;
    return this.applyGrant(key, rec);
  }

  private applyGrant(key: string, rec: GrantRecord): boolean {
    const gate = this.o.gate();
    const addr = addrOfKey(key);
    if (!gate || addr === null) return false;
    const door = this.o.doors().get(rec.door);
    if (door === undefined) {
      if (!this.unknownDoors.has(rec.door)) {
        this.unknownDoors.add(rec.door);
        this.o.log.warn({ door: rec.door, origin: rec.origin }, 'fleet: a grant names a door this host does not have: ignored (do all hosts share the doors?)');
      }
      return false;
    }
    const nowMs = Date.now();
    const now = monoNowNs();
    const cur = gate.map(MAP.GRANTS).lookup(addr);
    const curExp = cur ? (decodeGrant(cur)[door.slot] ?? 0n) : 0n;
    const expMono = now + BigInt(rec.expiresAtMs - nowMs) * 1_000_000n;
    let changed = false;
    if (rec.state === 'granted') {
      if (rec.expiresAtMs <= nowMs || curExp >= expMono) return false;
      gate.grant(addr, door.slot, expMono - now, now);
      changed = true;
    } else if (rec.state === 'revoked') {
      if (curExp === 0n) return false;
      changed = gate.revoke(addr, [door.slot], now).slots.length > 0;
    } else {
      // consumed: the grant that let one flow in elsewhere is used up; a later grant here stays.
      if (curExp <= now || curExp > expMono + 1_000_000_000n) return false;
      gate.grant(addr, door.slot, 0n, now);
      changed = true;
    }
    if (changed && rec.origin !== this.o.hostId) {
      const lagMs = Math.max(0, wallNowMs() - rec.atMs);
      this.lastApplied = { atMs: nowMs, lagMs };
      this.o.onApplied?.(rec.state, rec, lagMs);
      const viaStoreMs = typeof rec.sentAtMs === 'number' ? Math.max(0, wallNowMs() - rec.sentAtMs) : undefined;
      this.o.log.debug({ source: rec.source, door: rec.door, state: rec.state, origin: rec.origin, lag_ms: lagMs, ...(viaStoreMs !== undefined ? { store_ms: viaStoreMs } : {}) }, 'fleet record applied');
    }
    return changed;
  }

  /** An SPA nonce accepted on some host: this kernel refuses it from now on (kg_nonces). */
  private applySpaNonce(key: string, value: Buffer | null, withOwn: boolean): boolean {
    const gate = this.o.gate();
    const hex = key.slice(PREFIX.spa.length);
    if (!gate || !/^[0-9a-f]{32}$/.test(hex)) return false;
    let origin = '';
    try {
      origin = String((JSON.parse(value?.toString('utf8') ?? '{}') as { origin?: unknown }).origin ?? '');
    } catch {
      return false;
    }
    if (origin === this.o.hostId && !withOwn) return false;
    const nonce = Buffer.from(hex, 'hex');
    const m = gate.map(MAP.NONCES);
    if (m.lookup(nonce)) return false;
    const at = Buffer.alloc(8);
    at.writeBigUInt64LE(monoNowNs());
    m.update(nonce, at, BPF_ANY);
    return true;
  }

  /** An SPA nonce this kernel accepted: published so that no other host accepts it. */
  publishSpaNonce(nonce: Buffer, untilMs: number): void {
    const key = spaKey(nonce);
    const rec = { v: RECORD_VERSION, origin: this.o.hostId, atMs: Date.now(), untilMs };
    this.pending.set(key, { value: rec as unknown as CooldownRecord, leaseAtMs: untilMs });
    void this.flush();
  }

  private applyCooldown(key: string, rec: CooldownRecord): boolean {
    const gate = this.o.gate();
    const addr = addrOfKey(key);
    if (!gate || addr === null) return false;
    const nowMs = Date.now();
    if (rec.untilMs <= nowMs) return false;
    const now = monoNowNs();
    const until = now + BigInt(rec.untilMs - nowMs) * 1_000_000n;
    const m = gate.map(MAP.PENALTY);
    const cur = m.lookup(addr);
    const p = cur ? decodePenalty(cur) : { windowStartNs: now, cooldownUntilNs: 0n, failures: 0 };
    if (p.cooldownUntilNs >= until) return false;
    const b = Buffer.alloc(SIZEOF.penalty);
    b.writeBigUInt64LE(p.windowStartNs, OFFSETS.penalty.window_start_ns);
    b.writeBigUInt64LE(until, OFFSETS.penalty.cooldown_until_ns);
    b.writeUInt32LE(p.failures >>> 0, OFFSETS.penalty.failures);
    m.update(addr, b, BPF_ANY);
    if (rec.origin !== this.o.hostId) this.o.onApplied?.('cooldown', { source: rec.source, door: '*', origin: rec.origin }, Math.max(0, nowMs - rec.atMs));
    return true;
  }

  /** A grant this host made (kernel knock, signed knock, claim, CLI): publish it. */
  publishGrant(addr: Buffer, door: string, expiresAtMs: number, how: GrantRecord['how'], madeAtMs = wallNowMs()): void {
    const rec: GrantRecord = { v: RECORD_VERSION, state: 'granted', source: sourceText(addr), door, expiresAtMs, atMs: madeAtMs, origin: this.o.hostId, ...(how ? { how } : {}) };
    this.enqueue(grantKey(door, addr), rec, expiresAtMs);
  }

  /** A revoke made on this host: a tombstone per door, which cuts the grant everywhere. */
  publishRevoke(addr: Buffer, doors: readonly string[], how: GrantRecord['how'] = 'manual'): void {
    const now = Date.now();
    for (const door of doors) {
      const info = this.o.doors().get(door);
      const until = now + Math.max(info?.openForMs ?? 0, TOMBSTONE_MIN_MS);
      const rec: GrantRecord = { v: RECORD_VERSION, state: 'revoked', source: sourceText(addr), door, expiresAtMs: until, atMs: now, origin: this.o.hostId, how };
      this.enqueue(grantKey(door, addr), rec, until);
    }
  }

  /** A flow-only grant let its connection in here: used up on every host. */
  publishConsumed(addr: Buffer, door: string, grantEndMs: number): void {
    const now = Date.now();
    const rec: GrantRecord = { v: RECORD_VERSION, state: 'consumed', source: sourceText(addr), door, expiresAtMs: grantEndMs, atMs: now, origin: this.o.hostId, how: 'knock' };
    this.enqueue(grantKey(door, addr), rec, Math.max(grantEndMs, now) + 60_000);
  }

  publishCooldown(addr: Buffer, untilMs: number): void {
    if (!this.o.shareCooldowns) return;
    const rec: CooldownRecord = { v: RECORD_VERSION, source: sourceText(addr), untilMs, atMs: Date.now(), origin: this.o.hostId };
    this.enqueue(cooldownKey(addr), rec, untilMs);
  }

  private enqueue(key: string, value: GrantRecord | CooldownRecord, leaseAtMs: number): void {
    if ('state' in value) {
      if (value.state === 'granted') this.origin.set(`${value.source}/${value.door}`, value.origin);
      else this.origin.delete(`${value.source}/${value.door}`);
    }
    this.pending.set(key, { value, leaseAtMs });
    void this.flush();
  }

  /**
   * Writes what waits, one record at a time. A failed write stays pending until the store is
   * back (the watch's next snapshot flushes again). A flush asked for while one runs is done
   * after it.
   */
  flush(): Promise<void> {
    if (this.flushing) {
      this.flushAgain = true;
      return this.flushing;
    }
    const run = async (): Promise<void> => {
      do {
        this.flushAgain = false;
        if (!(await this.flushOnce())) return;
      } while (this.flushAgain && !this.closed);
    };
    // `flushing` is set before the body can finish (it awaits at its first put at the earliest,
    // and .finally runs asynchronously), so a finished flush never leaves a stale promise.
    const p = run().finally(() => {
      if (this.flushing === p) this.flushing = null;
    });
    this.flushing = p;
    return p;
  }

  /** One pass over the pending records; false when a write failed (the store is unreachable). */
  private async flushOnce(): Promise<boolean> {
    for (const [key, p] of [...this.pending]) {
      if (this.closed) return false;
      if (this.pending.get(key) !== p) continue;
      const theirs = this.stored.get(key);
      if (theirs !== undefined && theirs.atMs > p.value.atMs) {
        this.pending.delete(key);
        continue;
      }
      const endMs = 'untilMs' in p.value ? p.value.untilMs : p.value.expiresAtMs;
      if (Math.max(endMs, p.leaseAtMs) <= Date.now()) {
        this.pending.delete(key);
        continue;
      }
      try {
        const value = 'state' in p.value ? { ...p.value, sentAtMs: wallNowMs() } : p.value;
        await this.o.store.put(key, encodeRecord(value), { expiresAtSec: leaseSecond(p.leaseAtMs) });
      } catch (err) {
        this.o.log.debug({ err: (err as Error).message, key, waiting: this.pending.size }, 'fleet: write deferred until the store is reachable');
        return false;
      }
      if (this.pending.get(key) === p) this.pending.delete(key);
      this.stored.set(key, { atMs: p.value.atMs });
      this.o.log.debug({ key, state: 'state' in p.value ? p.value.state : 'cooldown' }, 'fleet: record published');
    }
    return true;
  }

  /** "source/door" -> the host a live grant in the store came from (for `knockgate grants`). */
  origins(): Record<string, string> {
    return Object.fromEntries(this.origin);
  }

  /** Records made here that the store has not taken yet. */
  pendingCount(): number {
    return this.pending.size;
  }

  close(): void {
    this.closed = true;
    for (const w of this.watches) w.close();
    this.watches = [];
  }
}

/** The wall clock in ms with sub-ms resolution (lags of a few ms are measured with it). */
export function wallNowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** The 16-byte address of a source given as text (for the CLI). */
export function addrOf(source: string): Buffer {
  return parseAddress(source);
}
