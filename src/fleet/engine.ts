/**
 * The fleet engine: the one module that talks to etcd (and the only importer of `etcd3`).
 *
 * Everything above it (replication, daemon, CLI) sees keys relative to one prefix, Buffers,
 * bigint revisions and a connection state; never an etcd3 object, a gRPC error or a lease id.
 *
 * Changes from the shape first agreed (kept the concepts):
 * - `watch()` takes an optional `{ fromRevision }`. Without it, the watch begins with an
 *   `onResync(snapshot, 'start')` of everything under its prefix and streams from there (one code
 *   path for "load at start" and "reload after compaction / outage"); with it, it streams from
 *   that revision (the caller did its own `list()`). `onResync` gets a second argument, the
 *   reason: 'start' | 'compacted' | 'reconnected'.
 * - `EngineOptions` gained tuning knobs with defaults (`requestTimeoutMs`, `unreachableAfterMs`,
 *   `watchQuietMs`), `heartbeatInfo` (extra fields for this host's heartbeat record) and
 *   `heartbeat: false` (no heartbeat written or deleted: short-lived CLI engines).
 * - `hosts()` returns `{ host, lastHeartbeatMs, info }` where `info` is the whole heartbeat record.
 * - Read-only getters besides `state`: `stateReason` (reason of the last transition), `member`
 *   (the endpoint in use, or null), `prefix` (normalised, ends with '/'), `hostId`.
 * - Failing calls reject with `FleetUnavailableError` (no healthy member, or the engine is
 *   `unreachable` or closed: the caller falls back to local state) or `FleetAccessError` (etcd
 *   refused: permission denied, bad credentials; retrying will not help). Anything else is a bug.
 *
 * How the etcd3 client's caveats are handled (see /work/shared/notes/fleet-engine.md):
 * - Its circuit breaker and global retry are disabled (`Policy.noop`): after a leader kill it
 *   rejected ~3.7 s of puts although the cluster was back in ~1.6 s. Retries are ours, bounded by
 *   `requestTimeoutMs` per call and a per-operation deadline.
 * - Host choice is ours: the client is pinned to one member at a time. On a failure every endpoint
 *   is probed in parallel (Maintenance.Status with a short deadline) and the engine re-pins to a
 *   member that answers and knows a leader; it never keeps dialling a dead member. Watches follow
 *   the engine to its new member. At most MAX_IN_FLIGHT unary calls run at once; the rest queue.
 * - Watches are our own gRPC watch streams (one per `watch()`), resumed from their last revision
 *   after a break; a watchdog asks each stream for a progress notification and re-creates a stream
 *   that stays quiet; a "compacted" cancel (etcd-io/etcd#8668) or a return from `unreachable`
 *   triggers a full reload (`onResync`).
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Etcd3,
  CompareResult,
  CompareTarget,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  EtcdRoleNotGrantedError,
  GRPCUnauthenticatedError,
  type IDuplexStream,
  type IOptions,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import { noop } from 'cockatiel';
import type { Logger } from '../log.js';
import { version } from '../version.js';

export interface EngineOptions {
  /** etcd client URLs, `http://host:port` or `https://host:port` (all of one scheme). */
  endpoints: string[];
  /** key prefix of this fleet, e.g. `/knockgate/edge-eu/`; a trailing `/` is added if missing. */
  prefix: string;
  /** this host's id (names its heartbeat key `hosts/<hostId>`). */
  hostId: string;
  /** TLS material (PEM). `ca` alone: server verification; `cert` + `key`: client certificates. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** etcd user. Never logged (nor is anything in `tls`). */
  auth?: { username: string; password: string };
  logger: Logger;
  /**
   * false: this engine writes no heartbeat and its close() leaves `hosts/<hostId>` alone (a
   * short-lived CLI engine, which must not pose as, or delete the record of, a running daemon
   * with the same host id). Default true.
   */
  heartbeat?: boolean;
  /** heartbeat period; the heartbeat key lives on a lease of max(5 s, 3 periods). Default 2000. */
  heartbeatMs?: number;
  /** extra fields for this host's heartbeat record (e.g. the fleet state, grant counts). */
  heartbeatInfo?: () => Record<string, unknown>;
  /** deadline of one unary etcd call; an operation retries on other members for up to 3 of these. Default 2000. */
  requestTimeoutMs?: number;
  /** how long no member may be usable before the state becomes `unreachable`. Default 5000. */
  unreachableAfterMs?: number;
  /** a watch stream silent (no event, no progress reply) for this long is re-created. Default 10000. */
  watchQuietMs?: number;
}

/**
 * connecting: opened, no member has answered yet; connected: pinned to a healthy member;
 * unreachable: no member usable for `unreachableAfterMs` (calls fail fast, probes continue);
 * closed: `close()` was called.
 */
export type EngineState = 'connecting' | 'connected' | 'unreachable' | 'closed';

export interface WatchEvent {
  type: 'put' | 'delete';
  /** relative to the engine's prefix (e.g. `grants/198.18.0.9/ssh`). */
  key: string;
  /** the new value of a put; null for a delete (expired leases and revokes alike). */
  value: Buffer | null;
  /** the revision of the change (mod revision). */
  revision: bigint;
}

export interface KeyValue {
  /** relative to the engine's prefix. */
  key: string;
  value: Buffer;
  /** mod revision of the key. */
  revision: bigint;
}

/** Everything under a prefix at one revision. */
export interface Snapshot {
  items: KeyValue[];
  /** the store revision the snapshot was read at; a watch started at revision + 1 misses nothing. */
  revision: bigint;
}

export interface HostRecord {
  host: string;
  /** when that host last wrote its heartbeat (its own clock, ms since the epoch). */
  lastHeartbeatMs: number;
  /** the whole heartbeat record: { host, version, timeMs, state, endpoint, ...heartbeatInfo() }. */
  info: Record<string, unknown>;
}

export interface WatchHandle {
  /** stops the watch; no callback runs after it returns. */
  close(): void;
}

/** Why a watch delivers a full snapshot: its first load, a compaction past its revision, or the
 * engine's return from `unreachable` (the caller also pushes what it made locally meanwhile). */
export type ResyncReason = 'start' | 'compacted' | 'reconnected';

/** No usable member (or the engine is `unreachable` / closed): the caller acts on local state. */
export class FleetUnavailableError extends Error {
  override readonly name = 'FleetUnavailableError';
}

/** etcd refused the request itself (permission denied, authentication failed): retrying won't help. */
export class FleetAccessError extends Error {
  override readonly name = 'FleetAccessError';
}

/** internal: an attempt failed in a way another attempt may not */
class RetryError extends Error {
  constructor(override readonly cause: unknown) {
    super(message(cause));
  }
}

/** Key of a host's heartbeat record, relative to the prefix. */
export const HOSTS_PREFIX = 'hosts/';

const DEFAULT_HEARTBEAT_MS = 2000;
const DEFAULT_REQUEST_TIMEOUT_MS = 2000;
const DEFAULT_UNREACHABLE_AFTER_MS = 5000;
const DEFAULT_WATCH_QUIET_MS = 10_000;
/** a member must answer Maintenance.Status within this to be chosen */
const PROBE_TIMEOUT_MS = 1000;
/** pause between two attempts of one operation (the second usually goes to a re-chosen member) */
const RETRY_PAUSE_MS = 100;
/** a grant's lease outlives its expiry by this much: the kernel enforces expiry, the lease only cleans up */
const LEASE_SLACK_SEC = 2;
/**
 * Unary calls in flight at once; the rest queue (and their deadlines start when they leave the
 * queue): a burst of hundreds of writes would otherwise time out against a slow member, be taken
 * for a dead one, and be retried on top of itself.
 */
const MAX_IN_FLIGHT = 32;
/** keys per range request of list(): a fleet's whole state does not fit gRPC's 4 MiB messages */
export const LIST_PAGE = 1000;

interface Member {
  endpoint: string;
  client: Etcd3;
}

type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;

/** transient: try again, on another member if need be; retry: again on the same member (a lease
 * to re-grant, a paged read to restart); token: a fresh client (new auth token); access: refused. */
type ErrorKind = 'transient' | 'retry' | 'access' | 'token' | 'fatal';

/** gRPC status codes worth another attempt (possibly on another member). */
const TRANSIENT_CODES = new Set([1, 2, 4, 8, 10, 13, 14]);
const TRANSIENT_MESSAGE = /etcdserver: (leader changed|no leader|request timed out|too many requests|server stopped|not capable|request cancelled)|unavailable|deadline|ECONNREFUSED|ECONNRESET|EHOSTUNREACH|closed|No connection established|stream ended/i;

function classify(err: unknown): ErrorKind {
  if (err instanceof EtcdLeaseInvalidError) return 'retry';
  // a paged list() whose revision was compacted between two pages starts over
  if (err instanceof Error && /required revision has been compacted/.test(err.message)) return 'retry';
  // etcd3 renews an expired token for unary calls itself, not for streams: a fresh client does
  if (err instanceof EtcdInvalidAuthTokenError) return 'token';
  if (
    err instanceof EtcdPermissionDeniedError ||
    err instanceof EtcdAuthenticationFailedError ||
    err instanceof EtcdRoleNotGrantedError ||
    err instanceof GRPCUnauthenticatedError
  ) {
    return 'access';
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number' && TRANSIENT_CODES.has(code)) return 'transient';
  if (err instanceof Error && TRANSIENT_MESSAGE.test(err.message)) return 'transient';
  return 'fatal';
}

function message(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  // etcd3 appends a plea to report its own runtime errors; it is noise in our logs
  return text.replace(/ Please report this error at \S+/, '');
}

/** The first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function normalizePrefix(prefix: string): string {
  if (prefix === '' || prefix === '/') throw new Error('fleet engine: the key prefix must not be empty (e.g. /knockgate/<fleet>/)');
  return prefix.endsWith('/') ? prefix : `${prefix}/`;
}

function buf(value: Buffer | string): Buffer {
  return typeof value === 'string' ? Buffer.from(value) : value;
}

function nowSec(): number {
  return Math.floor(Date.now() / 1000);
}

export class FleetEngine extends EventEmitter {
  /**
   * Starts connecting in the background and returns at once. Never throws for an unreachable
   * cluster (the state goes `unreachable` and probing continues); throws only for bad options
   * (no endpoints, mixed http/https, TLS material with http endpoints, empty prefix or host id).
   * Emits `state` (state: EngineState, reason: string) once per transition.
   */
  static open(opts: EngineOptions): FleetEngine {
    return new FleetEngine(opts);
  }

  /** the normalised prefix (ends with `/`). */
  readonly prefix: string;
  readonly hostId: string;

  private readonly log: Logger;
  private readonly endpoints: string[];
  private readonly clientOptions: Omit<IOptions, 'hosts'>;
  private readonly heartbeatMs: number;
  private readonly requestTimeoutMs: number;
  private readonly unreachableAfterMs: number;
  /** @internal used by watches */
  readonly watchQuietMs: number;

  private current: EngineState = 'connecting';
  private reason = 'opening';
  private closing = false;
  private readonly clients = new Map<string, Etcd3>();
  private pinned: Member | null = null;
  /** when the engine last had no usable member (null while pinned) */
  private outageSince: number | null = Date.now();
  private probing: Promise<void> | null = null;
  private lastProbeReason = 'no member tried yet';
  private readonly pinWaiters = new Set<() => void>();
  private readonly watches = new Set<FleetWatch>();
  /** expiry second -> lease id (a promise, so that concurrent puts share one grant) */
  private readonly leases = new Map<number, Promise<string>>();
  private readonly claimsInFlight = new Map<string, Promise<boolean>>();
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private heartbeatLease: string | null = null;
  private heartbeatRunning = false;
  private heartbeatRefused = '';
  private inFlight = 0;
  private readonly slotWaiters: (() => void)[] = [];

  private constructor(private readonly opts: EngineOptions) {
    super();
    if (opts.endpoints.length === 0) throw new Error('fleet engine: no etcd endpoints given');
    const secure = opts.endpoints.filter((e) => e.startsWith('https://')).length;
    if (secure !== 0 && secure !== opts.endpoints.length) {
      throw new Error('fleet engine: etcd endpoints mix http:// and https://: use one scheme for all');
    }
    if (opts.tls && secure === 0) {
      throw new Error('fleet engine: TLS files are configured but the etcd endpoints are http://: use https:// endpoints');
    }
    if (opts.hostId === '') throw new Error('fleet engine: empty host id');
    this.prefix = normalizePrefix(opts.prefix);
    this.hostId = opts.hostId;
    this.log = opts.logger.child({ module: 'fleet-engine' });
    this.heartbeatMs = opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.unreachableAfterMs = opts.unreachableAfterMs ?? DEFAULT_UNREACHABLE_AFTER_MS;
    this.watchQuietMs = opts.watchQuietMs ?? DEFAULT_WATCH_QUIET_MS;
    // Start each host at a different member (spreads a fleet's load), the same one every time.
    let h = 0;
    for (const c of opts.hostId) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    const n = opts.endpoints.length;
    this.endpoints = opts.endpoints.map((_, i) => opts.endpoints[(i + h) % n]!);

    const requestTimeoutMs = this.requestTimeoutMs;
    this.clientOptions = {
      // No circuit breaker, no hidden retries: they rejected seconds of puts after a leader
      // election. One member per client; our own retries choose the member.
      faultHandling: { host: () => noop, global: noop },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + requestTimeoutMs }),
      dialTimeout: requestTimeoutMs,
      grpcOptions: {
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 2_000,
        // a watch response carries every event of a revision range (a burst of grants)
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
      },
      ...(opts.tls
        ? {
            credentials: {
              // gRPC takes null for "the system's roots"; etcd3's type insists on a Buffer
              rootCertificate: (opts.tls.ca ?? null) as Buffer,
              ...(opts.tls.key ? { privateKey: opts.tls.key } : {}),
              ...(opts.tls.cert ? { certChain: opts.tls.cert } : {}),
            },
          }
        : {}),
      ...(opts.auth ? { auth: { username: opts.auth.username, password: opts.auth.password } } : {}),
    };
    this.repin('opening');
    if (opts.heartbeat !== false) {
      this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
      this.heartbeatTimer.unref();
    }
  }

  get state(): EngineState {
    return this.current;
  }

  /** why the engine is in its state (the reason of the last transition). */
  get stateReason(): string {
    return this.reason;
  }

  /** the member currently used (an endpoint URL), or null. */
  get member(): string | null {
    return this.pinned?.endpoint ?? null;
  }

  /**
   * Writes `key` (relative to the prefix). With `expiresAtSec` (absolute, Unix seconds) the key
   * is attached to the shared lease of that expiry second (granted once, cached, reused by every
   * put with the same expiry), which deletes it a little after the expiry: the store's leases only
   * clean up, each host's kernel enforces the expiry itself.
   */
  async put(key: string, value: Buffer | string, opts?: { expiresAtSec?: number }): Promise<void> {
    const full = this.fullKey(key);
    const v = buf(value);
    await this.withMember(`put ${key}`, async (m) => {
      const exp = opts?.expiresAtSec;
      const lease = exp !== undefined ? await this.leaseFor(m, exp) : undefined;
      try {
        await m.client.kv.put({ key: full, value: v, ...(lease !== undefined ? { lease } : {}) });
      } catch (err) {
        if (err instanceof EtcdLeaseInvalidError && exp !== undefined) this.dropLease(exp);
        throw err;
      }
    });
  }

  /** Deletes `key` (relative to the prefix); deleting an absent key is not an error. */
  async delete(key: string): Promise<void> {
    const full = this.fullKey(key);
    await this.withMember(`delete ${key}`, async (m) => {
      await m.client.kv.deleteRange({ key: full });
    });
  }

  /**
   * Everything under `prefix` (relative to the engine's prefix; '' for all), at one revision:
   * read in pages of LIST_PAGE keys, every page at the first page's revision.
   */
  async list(prefix: string): Promise<Snapshot> {
    const from = this.fullKey(prefix);
    const end = prefixEnd(from);
    return this.withMember(`list ${prefix === '' ? '(all)' : prefix}`, async (m) => {
      const items: KeyValue[] = [];
      let revision: string | null = null;
      let key = from;
      for (;;) {
        const res = await m.client.kv.range({ key, range_end: end, limit: LIST_PAGE, ...(revision !== null ? { revision } : {}) });
        revision ??= res.header.revision;
        for (const kv of res.kvs) items.push({ key: this.relativeKey(kv.key), value: kv.value, revision: BigInt(kv.mod_revision) });
        const last = res.kvs[res.kvs.length - 1];
        if (!res.more || !last) break;
        key = Buffer.concat([last.key, Buffer.from([0])]);
      }
      return { revision: BigInt(revision), items };
    });
  }

  /**
   * Creates `key` only if it does not exist (transaction on createRevision == 0), on the lease of
   * `expiresAtSec`. Resolves true if this call created it (won), false if it already existed.
   * Exactly one caller across the fleet wins a key. Put the host id in `value`: after an ambiguous
   * failure (the request may have committed), the retry recognises its own win by the value.
   * A second claim of a key while this engine's first is in flight resolves false.
   */
  claim(key: string, value: Buffer | string, expiresAtSec: number): Promise<boolean> {
    const pending = this.claimsInFlight.get(key);
    if (pending) return pending.then(() => false);
    const p = this.claimOnce(key, buf(value), expiresAtSec).finally(() => this.claimsInFlight.delete(key));
    this.claimsInFlight.set(key, p);
    return p;
  }

  private async claimOnce(key: string, value: Buffer, expiresAtSec: number): Promise<boolean> {
    const full = this.fullKey(key);
    return this.withMember(`claim ${key}`, async (m, attempt) => {
      const lease = await this.leaseFor(m, expiresAtSec);
      const res = await m.client.kv
        .txn({
          compare: [{ key: full, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }],
          success: [{ request_put: { key: full, value, lease } }],
          failure: [{ request_range: { key: full } }],
        })
        .catch((err: unknown) => {
          if (err instanceof EtcdLeaseInvalidError) this.dropLease(expiresAtSec);
          throw err;
        });
      if (res.succeeded) return true;
      if (attempt > 0) {
        // an earlier attempt may have committed before its answer was lost
        const existing = res.responses[0]?.response_range?.kvs[0];
        if (existing && Buffer.compare(existing.value, value) === 0) return true;
      }
      return false;
    });
  }

  /**
   * Watches every key under `prefix` (relative). `onEvents` gets the changes in revision order, in
   * batches; `onResync` gets the complete current contents (at start unless `fromRevision` is
   * given, after a compaction past the watch's revision, after the engine returns from
   * `unreachable`): the caller reconciles both ways (drop what is gone, add what is new, push what
   * it made locally meanwhile). Events resume after a broken stream from the last revision seen.
   * `fromRevision` is the first revision to deliver (a `list()`'s revision + 1).
   * Callbacks run one at a time; an exception in one is logged and does not stop the watch.
   */
  watch(
    prefix: string,
    onEvents: (events: WatchEvent[]) => void,
    onResync: (snapshot: Snapshot, reason: ResyncReason) => void,
    opts?: { fromRevision?: bigint },
  ): WatchHandle {
    if (this.closing) throw new FleetUnavailableError('the fleet engine is closed');
    const w = new FleetWatch(this, prefix, onEvents, onResync, opts?.fromRevision ?? null, this.log);
    this.watches.add(w);
    return {
      close: () => {
        w.close();
        this.watches.delete(w);
      },
    };
  }

  /** Every host's heartbeat record (keys `hosts/<id>` under the prefix), sorted by host id. */
  async hosts(): Promise<HostRecord[]> {
    const snap = await this.list(HOSTS_PREFIX);
    const out: HostRecord[] = [];
    for (const kv of snap.items) {
      let info: Record<string, unknown>;
      try {
        const parsed: unknown = JSON.parse(kv.value.toString('utf8'));
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) continue;
        info = parsed as Record<string, unknown>;
      } catch {
        continue;
      }
      const host = kv.key.slice(HOSTS_PREFIX.length);
      const t = info['timeMs'];
      out.push({ host, lastHeartbeatMs: typeof t === 'number' ? t : 0, info });
    }
    return out.sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  }

  /** Stops watches and heartbeats, deletes this host's heartbeat key (best effort), closes. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    for (const w of this.watches) w.close();
    this.watches.clear();
    const m = this.pinned;
    if (m && this.opts.heartbeat !== false) {
      const deadline = { deadline: Date.now() + Math.min(this.requestTimeoutMs, 1000) };
      const lease = this.heartbeatLease;
      await Promise.allSettled([
        m.client.kv.deleteRange({ key: this.fullKey(`${HOSTS_PREFIX}${this.hostId}`) }, deadline),
        ...(lease !== null ? [m.client.leaseClient.leaseRevoke({ ID: lease }, deadline)] : []),
      ]);
    }
    this.pinned = null;
    this.setState('closed', 'close() called');
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    this.wakePinWaiters();
  }

  // ---- members -------------------------------------------------------------------------------

  private clientFor(endpoint: string): Etcd3 {
    let c = this.clients.get(endpoint);
    if (!c) {
      c = new Etcd3({ ...this.clientOptions, hosts: [endpoint] });
      this.clients.set(endpoint, c);
    }
    return c;
  }

  private dropClient(endpoint: string): void {
    const c = this.clients.get(endpoint);
    if (!c) return;
    this.clients.delete(endpoint);
    if (this.pinned?.client === c) this.pinned = null;
    c.close();
  }

  /** Asks one member for its status; resolves null if it answers and knows a leader, else why not. */
  private async probe(endpoint: string): Promise<string | null> {
    try {
      const status = await this.clientFor(endpoint).maintenance.status({ deadline: Date.now() + PROBE_TIMEOUT_MS });
      if (status.leader === '0' || status.leader === '') return `${endpoint}: member has no leader`;
      return null;
    } catch (err) {
      // a fresh channel next time: gRPC's own reconnect backoff would otherwise grow to minutes
      this.dropClient(endpoint);
      if (classify(err) === 'access') return `${endpoint}: etcd refused the credentials (${message(err)})`;
      return `${endpoint}: ${message(err)}`;
    }
  }

  /** Drops the current member and starts probing for another (once; concurrent calls join). */
  private repin(reason: string): void {
    if (this.closing) return;
    if (this.pinned) this.log.info({ member: this.pinned.endpoint, reason }, 'fleet: leaving etcd member');
    this.pinned = null;
    this.outageSince ??= Date.now();
    if (this.probing) return;
    this.probing = this.probeLoop()
      .catch((err: unknown) => this.log.error({ err: message(err) }, 'fleet: probing etcd members failed'))
      .finally(() => {
        this.probing = null;
      });
  }

  private async probeLoop(): Promise<void> {
    let pause = 200;
    while (!this.closing) {
      const previous = this.lastPinned;
      // the member just left goes last: another healthy one is preferred
      const order = previous ? [...this.endpoints.filter((e) => e !== previous), previous] : this.endpoints;
      const results = await Promise.all(order.map((e) => this.probe(e)));
      if (this.closing) return;
      const i = results.findIndex((r) => r === null);
      if (i >= 0) {
        const endpoint = order[i]!;
        this.pinned = { endpoint, client: this.clientFor(endpoint) };
        this.lastPinned = endpoint;
        this.outageSince = null;
        this.log.info({ member: endpoint }, 'fleet: using etcd member');
        // watches follow: a member we left may be cut off from the quorum, and a watch there can
        // stay open and silent about everything the others write
        for (const w of this.watches) w.onPinned(endpoint);
        this.setState('connected', `etcd member ${endpoint} answers and has a leader`);
        this.wakePinWaiters();
        return;
      }
      this.lastProbeReason = results.join('; ');
      const since = this.outageSince ?? Date.now();
      if (this.current !== 'unreachable' && Date.now() - since >= this.unreachableAfterMs) {
        this.setState('unreachable', `no etcd member usable for ${Math.round((Date.now() - since) / 1000)} s: ${this.lastProbeReason}`);
        this.wakePinWaiters();
      }
      await sleep(pause);
      pause = Math.min(pause * 2, 2000);
    }
  }

  private lastPinned: string | null = null;

  private setState(state: EngineState, reason: string): void {
    if (state === this.current || this.current === 'closed') return;
    const previous = this.current;
    this.current = state;
    this.reason = reason;
    this.log.debug({ state, previous, reason }, 'fleet: engine state');
    if (previous === 'unreachable' && state === 'connected') {
      for (const w of this.watches) w.requestResync('reconnected');
    }
    try {
      this.emit('state', state, reason);
    } catch (err) {
      this.log.error({ err: message(err) }, 'fleet: a state listener threw');
    }
  }

  private wakePinWaiters(): void {
    for (const wake of this.pinWaiters) wake();
    this.pinWaiters.clear();
  }

  /** The member to use, waiting for a re-pin until `deadline`; fails fast when unreachable. */
  /** @internal */
  async usableMember(what: string, deadline: number): Promise<Member> {
    for (;;) {
      if (this.closing) throw new FleetUnavailableError(`${what}: the fleet engine is closed`);
      if (this.pinned) return this.pinned;
      if (this.current === 'unreachable') throw new FleetUnavailableError(`${what}: etcd is unreachable (${this.reason})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new FleetUnavailableError(`${what}: no etcd member usable (${this.lastProbeReason})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.pinWaiters.delete(done);
          resolve();
        }, left);
        const done = (): void => {
          clearTimeout(timer);
          resolve();
        };
        this.pinWaiters.add(done);
      });
    }
  }

  /** @internal a call or stream on `m` failed in a way another member might not */
  memberFailed(m: Member, reason: string): void {
    if (this.pinned === m) this.repin(reason);
  }

  /** @internal a stream on `m` failed: what to do about it, by the kind of error */
  streamFailed(m: Member, err: unknown, what: string): void {
    const kind = classify(err);
    if (kind === 'token') {
      this.dropClient(m.endpoint);
      this.repin(`${what}: auth token expired`);
    } else if (kind === 'transient') {
      this.memberFailed(m, `${what}: ${message(err)}`);
    }
  }

  /**
   * Runs `fn` against the current member; on a transient failure re-chooses the member and tries
   * again, for up to three request timeouts in all.
   */
  private async withMember<T>(what: string, fn: (m: Member, attempt: number) => Promise<T>): Promise<T> {
    let deadline: number | null = null;
    for (let attempt = 0; ; attempt++) {
      await this.acquireSlot();
      deadline ??= Date.now() + this.requestTimeoutMs * 3;
      try {
        const m = await this.usableMember(what, deadline);
        return await this.attempt(what, m, attempt, deadline, fn);
      } catch (err) {
        if (err instanceof RetryError) {
          if (Date.now() >= deadline) throw new FleetUnavailableError(`${what}: ${message(err.cause)}`);
        } else {
          throw err;
        }
      } finally {
        this.releaseSlot();
      }
      await sleep(RETRY_PAUSE_MS);
    }
  }

  private async acquireSlot(): Promise<void> {
    if (this.inFlight < MAX_IN_FLIGHT) {
      this.inFlight++;
      return;
    }
    await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next) next(); // the slot passes on
    else this.inFlight--;
  }

  /** One attempt: the result, a RetryError (worth another attempt), or the error to throw. */
  private async attempt<T>(what: string, m: Member, attempt: number, deadline: number, fn: (m: Member, attempt: number) => Promise<T>): Promise<T> {
    try {
      return await fn(m, attempt);
    } catch (err) {
      if (err instanceof FleetUnavailableError || err instanceof FleetAccessError) throw err;
      if (this.closing) throw new FleetUnavailableError(`${what}: the fleet engine is closed`);
      const kind = classify(err);
      if (kind === 'access') {
        throw new FleetAccessError(
          `${what}: etcd refused it (${message(err)}): the etcd user needs read-write access to the keys under ${this.prefix}`,
        );
      }
      if (kind === 'fatal') throw new Error(`fleet: ${what}: ${message(err)}`, { cause: err });
      if (kind === 'transient') this.memberFailed(m, `${what}: ${message(err)}`);
      if (kind === 'token') this.streamFailed(m, err, what);
      if (Date.now() >= deadline) throw new FleetUnavailableError(`${what}: ${message(err)}`);
      throw new RetryError(err);
    }
  }

  // ---- leases --------------------------------------------------------------------------------

  /** The lease shared by every key expiring at `expiresAtSec`: granted once, then reused. */
  private leaseFor(m: Member, expiresAtSec: number): Promise<string> {
    if (!Number.isFinite(expiresAtSec)) throw new RangeError(`fleet: expiry ${expiresAtSec} is not a time (Unix seconds)`);
    const now = nowSec();
    for (const sec of this.leases.keys()) if (sec < now) this.leases.delete(sec);
    const sec = Math.floor(expiresAtSec);
    let lease = this.leases.get(sec);
    if (!lease) {
      const ttl = Math.max(sec - now, 0) + LEASE_SLACK_SEC;
      const granted = m.client.leaseClient.leaseGrant({ TTL: ttl }).then((r) => r.ID);
      lease = granted;
      this.leases.set(sec, granted);
      granted.catch(() => {
        if (this.leases.get(sec) === granted) this.leases.delete(sec);
      });
    }
    return lease;
  }

  /** Forgets the cached lease of `expiresAtSec` after etcd said it no longer knows it (expired
   * early, or lost with a cluster restored from a backup): the next put grants a fresh one. */
  private dropLease(expiresAtSec: number): void {
    this.leases.delete(Math.floor(expiresAtSec));
  }

  // ---- heartbeat -----------------------------------------------------------------------------

  private heartbeatRecord(): Record<string, unknown> {
    let extra: Record<string, unknown> = {};
    try {
      extra = this.opts.heartbeatInfo?.() ?? {};
    } catch (err) {
      this.log.warn({ err: message(err) }, 'fleet: heartbeatInfo threw; heartbeat written without it');
    }
    return { ...extra, host: this.hostId, version: version(), timeMs: Date.now(), state: this.current, endpoint: this.pinned?.endpoint ?? null };
  }

  /** Writes this host's heartbeat record on its own lease (kept alive once per beat). */
  private async heartbeat(): Promise<void> {
    if (this.heartbeatRunning || this.closing || this.current !== 'connected') return;
    this.heartbeatRunning = true;
    const ttl = Math.max(5, Math.ceil((3 * this.heartbeatMs) / 1000));
    try {
      await this.withMember('heartbeat', async (m) => {
        if (this.heartbeatLease !== null && !(await this.keepAliveOnce(m, this.heartbeatLease))) this.heartbeatLease = null;
        this.heartbeatLease ??= (await m.client.leaseClient.leaseGrant({ TTL: ttl })).ID;
        const key = this.fullKey(`${HOSTS_PREFIX}${this.hostId}`);
        try {
          await m.client.kv.put({ key, value: Buffer.from(JSON.stringify(this.heartbeatRecord())), lease: this.heartbeatLease });
        } catch (err) {
          if (err instanceof EtcdLeaseInvalidError) this.heartbeatLease = null;
          throw err;
        }
      });
    } catch (err) {
      if (err instanceof FleetAccessError && err.message !== this.heartbeatRefused) {
        this.heartbeatRefused = err.message;
        this.log.warn({ err: err.message }, 'fleet: heartbeat refused by etcd');
      } else {
        this.log.debug({ err: message(err) }, 'fleet: heartbeat not written');
      }
    } finally {
      this.heartbeatRunning = false;
    }
  }

  /** Refreshes a lease once; false if etcd no longer knows it. */
  private async keepAliveOnce(m: Member, id: string): Promise<boolean> {
    const stream = await m.client.leaseClient.leaseKeepAlive();
    stream.on('error', () => undefined);
    try {
      return await new Promise<boolean>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('lease keepalive: deadline exceeded')), this.requestTimeoutMs);
        stream.on('data', (res) => {
          clearTimeout(timer);
          resolve(Number(res.TTL) > 0);
        });
        stream.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        stream.write({ ID: id });
      });
    } finally {
      try {
        stream.cancel();
      } catch {
        // already ended
      }
    }
  }

  // ---- keys ----------------------------------------------------------------------------------

  /** @internal */
  fullKey(key: string): Buffer {
    return Buffer.from(this.prefix + key);
  }

  /** @internal */
  relativeKey(full: Buffer): string {
    return full.toString('utf8').slice(this.prefix.length);
  }

  /** @internal ops for FleetWatch */
  get closed(): boolean {
    return this.closing;
  }

  /** @internal */
  get opDeadlineMs(): number {
    return this.requestTimeoutMs * 3;
  }
}

/**
 * One watch: its own gRPC watch stream on the engine's current member, re-created from the last
 * revision seen whenever it breaks or goes quiet, reloaded in full after a compaction or an outage.
 */
class FleetWatch {
  private closed = false;
  /** the revision the next stream starts at; null: a snapshot is due first */
  private nextRev: bigint | null;
  private resyncReason: ResyncReason = 'start';
  private resyncSeq = 0;
  private stream: WatchStream | null = null;
  private streamMember: string | null = null;
  private endStream: ((why: string, failed?: boolean) => void) | null = null;
  private lastHeard = Date.now();
  private progressAsked = false;
  private readonly key: Buffer;
  private readonly rangeEnd: Buffer;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly engine: FleetEngine,
    private readonly relPrefix: string,
    private readonly onEvents: (events: WatchEvent[]) => void,
    private readonly onResync: (snapshot: Snapshot, reason: ResyncReason) => void,
    fromRevision: bigint | null,
    private readonly log: Logger,
  ) {
    this.key = engine.fullKey(relPrefix);
    this.rangeEnd = prefixEnd(this.key);
    this.nextRev = fromRevision;
    const quiet = engine.watchQuietMs;
    this.timer = setInterval(() => this.watchdog(quiet), Math.max(100, Math.floor(quiet / 4)));
    this.timer.unref();
    void this.loop();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.endStream?.('closed');
  }

  /** The engine moved to `endpoint`: a stream on another member is re-created there. */
  onPinned(endpoint: string): void {
    if (this.streamMember !== null && this.streamMember !== endpoint) this.endStream?.(`engine moved to ${endpoint}`);
  }

  requestResync(reason: ResyncReason): void {
    if (this.closed) return;
    // a watch that has not delivered its first snapshot yet keeps reason 'start'
    if (this.nextRev !== null) this.resyncReason = reason;
    this.nextRev = null;
    this.resyncSeq++;
    this.endStream?.(`resync (${reason})`);
  }

  private lastLogged = '';

  /** Logs a recurring problem once, until the watch works again or the problem changes. */
  private logOnce(level: 'warn' | 'error', err: string, msg: string): void {
    if (err === this.lastLogged) return;
    this.lastLogged = err;
    this.log[level]({ err, prefix: this.relPrefix }, msg);
  }

  private watchdog(quiet: number): void {
    const s = this.stream;
    if (this.closed || !s) return;
    const silent = Date.now() - this.lastHeard;
    if (silent >= quiet) {
      this.log.info({ prefix: this.relPrefix, silentMs: silent, fromRevision: String(this.nextRev) }, 'fleet: watch quiet, re-creating it');
      this.endStream?.('quiet for too long', true);
      return;
    }
    if (silent >= quiet / 2 && !this.progressAsked) {
      this.progressAsked = true;
      try {
        s.write({ progress_request: {} });
      } catch {
        this.endStream?.('progress request failed');
      }
    }
  }

  private async loop(): Promise<void> {
    let pause = 100;
    while (!this.closed) {
      try {
        if (this.nextRev === null) {
          const seq = this.resyncSeq;
          const reason = this.resyncReason;
          const snap = await this.engine.list(this.relPrefix);
          if (this.closed) return;
          if (seq !== this.resyncSeq) continue; // another resync was asked meanwhile: read again
          this.nextRev = snap.revision + 1n;
          this.resyncReason = 'reconnected';
          try {
            this.onResync(snap, reason);
          } catch (err) {
            this.log.error({ err: message(err), prefix: this.relPrefix }, 'fleet: watch resync callback threw');
          }
        }
        const ok = await this.runStream();
        if (ok) {
          pause = 100;
          this.lastLogged = '';
        } else {
          await sleep(pause);
          pause = Math.min(pause * 2, 2000);
        }
      } catch (err) {
        if (this.closed) return;
        if (err instanceof FleetAccessError) this.logOnce('error', err.message, 'fleet: watch refused by etcd');
        else this.log.debug({ err: message(err), prefix: this.relPrefix }, 'fleet: watch waiting for etcd');
        await sleep(pause);
        pause = Math.min(pause * 2, 2000);
      }
    }
  }

  /** Runs one stream until it ends; true if it got as far as being created. */
  private async runStream(): Promise<boolean> {
    const m = await this.engine.usableMember(`watch ${this.relPrefix}`, Date.now() + this.engine.opDeadlineMs);
    const stream = await m.client.watchClient.watch();
    stream.on('error', () => undefined); // errors are handled below; cancel() also emits one
    if (this.closed || this.nextRev === null || this.engine.member !== m.endpoint) {
      stream.cancel(); // closed, a resync is due, or the engine moved meanwhile: start over
      return true;
    }
    const startRev = this.nextRev;
    let created = false;
    this.stream = stream;
    this.streamMember = m.endpoint;
    this.lastHeard = Date.now();
    this.progressAsked = false;
    await new Promise<void>((resolve) => {
      let done = false;
      const end = (why: string, failed = false): void => {
        if (done) return;
        done = true;
        this.stream = null;
        this.streamMember = null;
        this.endStream = null;
        try {
          stream.cancel();
        } catch {
          // already gone
        }
        if (failed && !this.closed) this.engine.memberFailed(m, `watch ${this.relPrefix}: ${why}`);
        resolve();
      };
      this.endStream = end;
      stream.on('data', (res) => {
        if (done) return;
        this.lastHeard = Date.now();
        this.progressAsked = false;
        this.handle(res, end, () => {
          created = true;
        });
      });
      stream.on('error', (err) => {
        if (!done && !this.closed) this.engine.streamFailed(m, err, `watch ${this.relPrefix}`);
        end(message(err));
      });
      stream.on('end', () => end('stream ended', true));
      stream.write({
        create_request: { key: this.key, range_end: this.rangeEnd, start_revision: startRev.toString(), progress_notify: true },
      });
    });
    return created;
  }

  private handle(res: IWatchResponse, end: (why: string, failed?: boolean) => void, onCreated: () => void): void {
    const compactRev = BigInt(res.compact_revision || '0');
    if (compactRev > 0n) {
      this.log.warn(
        { prefix: this.relPrefix, fromRevision: String(this.nextRev), compactRevision: String(compactRev) },
        'fleet: etcd compacted past this watch: reloading everything under the prefix',
      );
      this.requestResync('compacted');
      return;
    }
    if (res.canceled) {
      this.logOnce('warn', `cancelled: ${res.cancel_reason}`, 'fleet: etcd cancelled the watch; re-creating it');
      end(`cancelled: ${res.cancel_reason}`);
      return;
    }
    if (res.created) {
      onCreated();
      const storeRev = BigInt(res.header?.revision ?? '0');
      if (this.nextRev !== null && storeRev > 0n && storeRev + 1n < this.nextRev) {
        // the store is behind what this watch has seen: a cluster restored from a backup or
        // recreated; events from nextRev would never come (or be other events). Reload.
        this.log.warn(
          { prefix: this.relPrefix, fromRevision: String(this.nextRev), storeRevision: String(storeRev) },
          'fleet: etcd store revision went backwards: reloading everything under the prefix',
        );
        this.requestResync('reconnected');
        return;
      }
    }
    const events: WatchEvent[] = [];
    for (const ev of res.events) {
      const revision = BigInt(ev.kv.mod_revision);
      if (this.nextRev !== null && revision < this.nextRev) continue; // replayed after a re-create
      const isDelete = String(ev.type).toUpperCase() === 'DELETE';
      events.push({
        type: isDelete ? 'delete' : 'put',
        key: this.engine.relativeKey(ev.kv.key),
        value: isDelete ? null : ev.kv.value,
        revision,
      });
    }
    if (events.length > 0) {
      this.nextRev = events[events.length - 1]!.revision + 1n;
      try {
        this.onEvents(events);
      } catch (err) {
        this.log.error({ err: message(err), prefix: this.relPrefix }, 'fleet: watch event callback threw');
      }
    } else if (!res.created && res.events.length === 0 && res.header?.revision) {
      // a progress notification: every change up to header.revision has been delivered
      const rev = BigInt(res.header.revision) + 1n;
      if (this.nextRev !== null && rev > this.nextRev) this.nextRev = rev;
    }
  }
}
