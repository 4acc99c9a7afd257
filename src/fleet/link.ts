/**
 * The daemon's side of fleet mode: opens the engine with the config's credentials, runs the
 * replicator, claims one-time knocks fleet-wide, tracks the connection state (logged once per
 * change, with the reason; shown in `status` and the metrics) and answers `fleet status`. The
 * daemon calls it at a handful of points and never waits on it on the kernel's behalf.
 */
import type { Registry } from 'prom-client';
import type { FleetConfig, GateConfig, OnPartition } from '../config/model.js';
import type { Gate } from '../kernel/gate.js';
import type { GateEvent } from '../kernel/events.js';
import type { Logger } from '../log.js';
import { Registry as PromRegistry } from 'prom-client';
import { FleetAccessError, FleetEngine, type EngineState } from './engine.js';
import { loadFleetCredentials } from './credentials.js';
import { FleetMetrics, type ClaimResult } from './metrics.js';
import { leaseSecond, nonceKey, spentKey } from './records.js';
import { Replicator, wallNowMs, type DoorInfo } from './replicator.js';
import { monoNowNs } from '../kernel/gate.js';
import { parseAddress } from '../net/addr.js';

export interface FleetDoor extends DoorInfo {
  onPartition: OnPartition;
}

export interface FleetLinkOptions {
  config: GateConfig;
  fleet: FleetConfig;
  gate: () => Gate | null;
  doors: () => ReadonlyMap<string, FleetDoor>;
  log: Logger;
  /** the daemon's metrics registry, when it serves metrics */
  registry: Registry | null;
  /** test and bench hook: engine options beyond the config */
  engineTuning?: { heartbeatMs?: number; requestTimeoutMs?: number; unreachableAfterMs?: number; watchQuietMs?: number };
}

/** won: grant; lost: used on some host already; local: partitioned, the door grants from local state; refused: partitioned, the door is closed. */
export type ClaimOutcome = 'won' | 'lost' | 'local' | 'refused';

export interface FleetStatus {
  host: string;
  prefix: string;
  endpoints: string[];
  state: EngineState;
  reason: string;
  since: string;
  cooldowns: 'shared' | 'local';
  /** local records waiting for the store */
  pending: number;
  /** the last record from another host written into this kernel */
  last_applied: { at: string; lag_ms: number } | null;
  /** claims: count and cost (ms, p50/p99 of the last 1000) */
  claims: { won: number; lost: number; unreachable: number; p50_ms: number | null; p99_ms: number | null };
  hosts: { host: string; last_heartbeat: string; age_ms: number; state: unknown }[] | null;
  hosts_error?: string;
}

const CLAIM_SAMPLES = 1000;

export class FleetLink {
  private stateSince = Date.now();
  private reason = 'connecting';
  private readonly claimMs: number[] = [];
  private readonly claimCounts = { won: 0, lost: 0, unreachable: 0 };

  private constructor(
    private readonly o: FleetLinkOptions,
    readonly engine: FleetEngine,
    readonly replicator: Replicator,
    readonly metrics: FleetMetrics,
    private readonly log: Logger,
  ) {}

  /** Opens the engine (never waits for etcd: an unreachable cluster is a state, not an error). */
  static async open(o: FleetLinkOptions): Promise<FleetLink> {
    const log = o.log.child({ module: 'fleet' });
    const creds = await loadFleetCredentials(o.config, o.fleet);
    let link: FleetLink | null = null;
    const engine = FleetEngine.open({
      endpoints: o.fleet.endpoints,
      prefix: o.fleet.prefix,
      hostId: o.fleet.hostId,
      ...(creds.tls ? { tls: creds.tls } : {}),
      ...(creds.auth ? { auth: creds.auth } : {}),
      logger: log,
      heartbeatInfo: () => ({ pending: link?.replicator.pendingCount() ?? 0, lag_ms: link?.replicator.lastApplied?.lagMs ?? null }),
      ...(o.engineTuning ?? {}),
    });
    const metrics = new FleetMetrics(o.registry ?? new PromRegistry(), () => engine.hosts());
    const replicator = new Replicator({
      store: engine,
      hostId: o.fleet.hostId,
      gate: o.gate,
      doors: o.doors,
      shareCooldowns: o.fleet.cooldowns === 'shared',
      log,
      onApplied: (_kind, _rec, lagMs) => metrics.lag.observe(lagMs / 1000),
    });
    link = new FleetLink(o, engine, replicator, metrics, log);
    engine.on('state', (state: EngineState, reason: string) => link!.onState(state, reason));
    metrics.connected.set(0);
    replicator.start();
    log.info({ host: o.fleet.hostId, prefix: o.fleet.prefix, endpoints: o.fleet.endpoints, cooldowns: o.fleet.cooldowns }, 'fleet mode: connecting to etcd');
    return link;
  }

  get hostId(): string {
    return this.o.fleet.hostId;
  }

  get state(): EngineState {
    return this.engine.state;
  }

  private onState(state: EngineState, reason: string): void {
    this.stateSince = Date.now();
    this.reason = reason;
    this.metrics.connected.set(state === 'connected' ? 1 : 0);
    if (state === 'connected') this.log.info({ state, reason, pending: this.replicator.pendingCount() }, 'fleet: connected to etcd; records resynchronised both ways');
    else if (state === 'unreachable') this.log.warn({ state, reason }, 'fleet: etcd unreachable: this host keeps enforcing and granting from local state (one-time doors with on_partition: closed refuse) until it returns');
    else if (state !== 'closed') this.log.info({ state, reason }, 'fleet: connecting');
  }

  /** A kernel event about a local decision: publish grants, flow-only uses and cooldowns. */
  onKernelEvent(e: GateEvent, addr: Buffer, tsNs?: bigint): void {
    const now = Date.now();
    if (e.event === 'grant') {
      // made when the kernel granted (the event's clock), on the wall clock: the lag's start
      const madeAt = tsNs !== undefined && tsNs > 0n ? wallNowMs() - Number(monoNowNs() - tsNs) / 1e6 : undefined;
      this.replicator.publishGrant(addr, e.door, now + (e.expires_in_ms ?? 0), 'knock', madeAt);
    }
    else if (e.event === 'consume') this.replicator.publishConsumed(addr, e.door, now + (this.o.doors().get(e.door)?.openForMs ?? 0));
    else if (e.event === 'cooldown' && e.cooldown_ms !== undefined) this.replicator.publishCooldown(addr, now + e.cooldown_ms);
  }

  /** A grant the daemon wrote itself (signed knock, rotating claim, CLI): publish it. */
  publishGrant(addr: Buffer, door: string, expiresAtMs: number, how: 'signed' | 'rotating' | 'manual'): void {
    this.replicator.publishGrant(addr, door, expiresAtMs, how);
  }

  publishRevoke(addr: Buffer, doors: readonly string[]): void {
    this.replicator.publishRevoke(addr, doors);
  }

  /** A change made with the CLI that the CLI asked to act fleet-wide (no --local). */
  fromCli(change: string, detail: Record<string, unknown>): void {
    const source = detail['source'];
    if (typeof source !== 'string') return;
    let addr: Buffer;
    try {
      addr = parseAddress(source);
    } catch {
      return;
    }
    if (change === 'grant revoked' && Array.isArray(detail['fleet_doors'])) {
      this.replicator.publishRevoke(addr, detail['fleet_doors'].map(String));
    } else if (change === 'manual grant' && typeof detail['door'] === 'string' && typeof detail['for_ms'] === 'number') {
      this.replicator.publishGrant(addr, detail['door'], Date.now() + detail['for_ms'], 'manual');
    }
  }

  /** An SPA knock accepted here: its nonce goes into every host's kg_nonces. */
  publishSpaNonce(nonce: Buffer, maxSkewMs: number): void {
    this.replicator.publishSpaNonce(nonce, Date.now() + 2 * maxSkewMs + 1000);
  }

  /** Claims a signed knock's nonce, for as long as a replay could pass the time check. */
  claimNonce(door: string, nonce: Buffer, maxSkewMs: number): Promise<ClaimOutcome> {
    return this.claim(door, nonceKey(door, nonce), Date.now() + 2 * maxSkewMs + 1000);
  }

  /** Claims a rotating door's window, until the window can no longer be knocked. */
  claimWindow(door: string, window: bigint, windowMs: number): Promise<ClaimOutcome> {
    const endMs = Number(window + 2n) * windowMs;
    return this.claim(door, spentKey(door, window), Math.max(endMs, Date.now()) + 60_000);
  }

  private async claim(door: string, key: string, holdUntilMs: number): Promise<ClaimOutcome> {
    const onPartition = this.o.doors().get(door)?.onPartition ?? 'local';
    const partitioned = (): ClaimOutcome => {
      this.count('unreachable');
      return onPartition === 'closed' ? 'refused' : 'local';
    };
    if (this.engine.state !== 'connected') return partitioned();
    const t0 = performance.now();
    let won: boolean;
    try {
      won = await this.engine.claim(key, JSON.stringify({ host: this.hostId, at: Date.now() }), leaseSecond(holdUntilMs));
    } catch (err) {
      if (err instanceof FleetAccessError) {
        this.count('error');
        this.log.error({ err: err.message, key }, 'fleet: etcd refused the claim (check the role of this host\'s user): the knock is refused');
        return 'refused';
      }
      this.log.warn({ err: (err as Error).message, door }, 'fleet: claim failed: etcd unreachable');
      return partitioned();
    }
    const ms = performance.now() - t0;
    this.claimMs.push(ms);
    if (this.claimMs.length > CLAIM_SAMPLES) this.claimMs.splice(0, this.claimMs.length - CLAIM_SAMPLES);
    this.count(won ? 'won' : 'lost');
    return won ? 'won' : 'lost';
  }

  private count(r: ClaimResult): void {
    this.metrics.claims.inc({ result: r });
    if (r !== 'error') this.claimCounts[r]++;
  }

  async status(withHosts = true): Promise<FleetStatus> {
    const q = (p: number): number | null => {
      if (this.claimMs.length === 0) return null;
      const s = [...this.claimMs].sort((a, b) => a - b);
      return Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))]! * 100) / 100;
    };
    const last = this.replicator.lastApplied;
    const out: FleetStatus = {
      host: this.hostId,
      prefix: this.o.fleet.prefix,
      endpoints: this.o.fleet.endpoints,
      state: this.engine.state,
      reason: this.reason,
      since: new Date(this.stateSince).toISOString(),
      cooldowns: this.o.fleet.cooldowns,
      pending: this.replicator.pendingCount(),
      last_applied: last ? { at: new Date(last.atMs).toISOString(), lag_ms: Math.round(last.lagMs * 100) / 100 } : null,
      claims: { ...this.claimCounts, p50_ms: q(0.5), p99_ms: q(0.99) },
      hosts: null,
    };
    if (withHosts) {
      try {
        const now = Date.now();
        out.hosts = (await this.engine.hosts()).map((h) => ({ host: h.host, last_heartbeat: new Date(h.lastHeartbeatMs).toISOString(), age_ms: now - h.lastHeartbeatMs, state: h.info['state'] }));
      } catch (err) {
        out.hosts_error = (err as Error).message;
      }
    }
    return out;
  }

  async close(): Promise<void> {
    this.replicator.close();
    await this.engine.close();
  }
}
