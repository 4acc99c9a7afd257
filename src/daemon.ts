/**
 * The daemon (`knockgate run`): loads or adopts the gate, applies the config, streams kernel
 * events into the log, refills the kernel's denial-event budget, sweeps expired grants, and
 * handles signals: SIGHUP re-reads the config (a bad one is reported and the running gate keeps
 * its last good state), SIGTERM/SIGINT shut down through one path.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { RingBufferReader, ensureBpffs, ifName, setLibbpfLogger } from './bpf/index.js';
import { ControlServer } from './control.js';
import { ConfigError, LIMITS, loadConfigFile, type ConfigIssue, type GateConfig } from './config/index.js';
import { loadDoorSecrets, type DoorSecrets } from './config/secrets.js';
import { NonceCache, SignedVerifier, type SignedRejection } from './knock/verify.js';
import { windowOf } from './knock/rotating.js';
import { doorConfigOf } from './kernel/doors.js';
import { EVENT_MESSAGES, describeEvent, type EventContext, type EventReason, type GateEvent } from './kernel/events.js';
import { Gate, monoNowNs } from './kernel/gate.js';
import { DaemonLock, withGateLock } from './kernel/lock.js';
import { checkPinsOutlive } from './kernel/pinfs.js';
import { InterfaceSupervisor } from './interfaces.js';
import { DOOR_TYPE, EVENT, MAP, decodeEvent, decodeGrant, decodeSignedEvent, nonceOfGrantEvent, type KEvent } from './kernel/layout.js';
import { createLogger, type Logger } from './log.js';
import { Metrics, type ListenAddress } from './metrics.js';
import { parseAddress } from './net/addr.js';
import type { FleetDoor, FleetLink } from './fleet/link.js';
import { version } from './version.js';

export interface DaemonOptions {
  configPath: string;
  /** --keep: leave the gate enforcing after exit (also `keep: true` in the config) */
  keep?: boolean;
  pretty?: boolean;
  objectPath?: string;
  /** serve Prometheus metrics at http://HOST:PORT/metrics */
  metrics?: ListenAddress;
  /** test hook: receives every event after it is logged */
  onEvent?: (e: GateEvent) => void;
  /** tests and bench: fleet engine timings */
  fleetTuning?: { heartbeatMs?: number; requestTimeoutMs?: number; unreachableAfterMs?: number; watchQuietMs?: number };
}

const SWEEP_INTERVAL_MS = 5_000;
/**
 * A grant entry outlives its last grant by this much before the sweep removes it: a flow-only
 * grant is used up by its connection's SYN, and a retransmission of that SYN (up to ~2 min with
 * Linux's default tcp_syn_retries) is judged through the entry.
 */
const GRANT_GRACE_NS = 130_000_000_000n;
const WATCH_INTERVAL_MS = 1_000;
const RECENT_EVENTS = 1_000;
/** The daemon's refusals of signed knocks, as event reasons. */
const SIGNED_REASONS: Record<SignedRejection, EventReason> = {
  malformed: 'malformed',
  'wrong-door': 'wrong_door',
  'unknown-key': 'unknown_key',
  'bad-signature': 'bad_signature',
  stale: 'stale',
  replay: 'replay',
};
/** signed knocks the kernel may pass up per second (each costs an Ed25519 verification here) */
const SIGNED_PER_SECOND = 200;
/** how often the kernel's wall-clock offset (SPA timestamps) is refreshed */
const CLOCK_SYNC_MS = 10_000;
/**
 * Rotating doors move to the next window this long before it starts, so that the current
 * window's sequence is in the kernel from its first millisecond (the cost: the previous
 * window's sequence leaves this much early).
 */
const ROTATE_EARLY_MS = 250;
/** grants whose end the daemon watches to log it; past this, expiries go unlogged */
const MAX_EXPIRY_TIMERS = 100_000;

function issueRecord(i: ConfigIssue) {
  return { file: i.file, line: i.line, col: i.col, key: i.path, problem: i.message };
}

export class Daemon {
  private gate: Gate | null = null;
  private reader: RingBufferReader | null = null;
  private timers: NodeJS.Timeout[] = [];
  private stopping: Promise<void> | null = null;
  private resolveDone: (() => void) | null = null;
  readonly done: Promise<void>;
  private readonly ifnames = new Map<number, string>();
  private doorNames = new Map<number, { name: string; steps: number }>();
  private control: ControlServer | null = null;
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  private metrics: Metrics | null = null;
  private readonly recent: GateEvent[] = [];
  private readonly subscribers = new Set<(e: unknown) => void>();
  /** the generation this daemon last wrote or saw; another one means the CLI changed doors */
  private knownGen = -1;
  private secrets: DoorSecrets = { keys: new Map(), clients: new Map() };
  /** by door name: the verifier of a signed door */
  private verifiers = new Map<string, SignedVerifier>();
  /** nonces of accepted signed knocks, kept across reloads (longest skew allowed, both ways) */
  private readonly signedNonces = new NonceCache(2 * LIMITS.maxSkewMaxMs + 1000);
  private rotationTimer: NodeJS.Timeout | null = null;
  /** one daemon per gate: held from before the gate opens until the process ends */
  private lock: DaemonLock | null = null;
  private ifaces: InterfaceSupervisor | null = null;
  /** fleet mode (src/fleet/link.ts): null without a fleet section */
  private fleet: FleetLink | null = null;

  private constructor(
    private config: GateConfig,
    private readonly opts: DaemonOptions,
    private readonly log: Logger,
  ) {
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
  }

  /**
   * Validate the config, start the gate, and return once it enforces. With `signals`, the
   * process's signal handlers are installed first; a SIGTERM/SIGINT that arrives while the
   * gate is starting stops it as soon as it has started.
   */
  static async start(opts: DaemonOptions, signals = false): Promise<Daemon> {
    const config = await loadConfigFile(opts.configPath);
    const secrets = await loadDoorSecrets(config);
    const log = createLogger({ level: config.log.level, pretty: opts.pretty ?? false });
    setLibbpfLogger(log.child({ module: 'libbpf' }));
    for (const w of config.warnings) log.warn(issueRecord(w), 'config warning');
    const d = new Daemon(config, opts, log);
    d.useSecrets(config, secrets);
    if (signals) d.handleSignals();
    // Before anything is touched: a live daemon on this gate means refuse, change nothing.
    d.lock = DaemonLock.acquire(config.pinPath);
    try {
      await d.startGate();
    } catch (err) {
      d.teardownAfterFailedStart();
      throw err;
    }
    d.started = true;
    if (d.pendingSignal !== null) void d.stop(d.pendingSignal);
    return d;
  }

  private started = false;
  private pendingSignal: NodeJS.Signals | null = null;

  private get keep(): boolean {
    return (this.opts.keep ?? false) || this.config.keep;
  }

  private async startGate(): Promise<void> {
    const c = this.config;
    ensureBpffs(c.pinPath);
    const doubt = checkPinsOutlive(c.pinPath);
    if (doubt !== null) this.log.warn({ pin_path: c.pinPath, why: doubt }, 'cannot tell whether the pins outlive this process (see README: pins that outlive the process)');
    const gate = Gate.open({
      pinPath: c.pinPath,
      sources: c.limits.sources,
      flows: c.limits.flows,
      eventRingBytes: c.limits.eventRingBytes,
      firstKnockFilterBytes: c.limits.firstKnockFilterBytes,
      logger: this.log,
      ...(this.opts.objectPath !== undefined ? { objectPath: this.opts.objectPath } : {}),
    });
    this.gate = gate;
    await withGateLock(c.pinPath, () => gate.applyDoors(c.doors, { secrets: this.secrets.keys, fleet: !!c.fleet }));
    this.refreshDoorNames();
    this.scheduleRotation();
    gate.setBruteForce(c.bruteForce);
    gate.setDenyTokens(c.log.denialsPerSecond);
    gate.setKnockTokens(c.log.knockEventsPerSecond);
    gate.setSignedTokens(SIGNED_PER_SECOND);
    this.ifaces = new InterfaceSupervisor(gate, c.interfaces, this.log);
    this.ifaces.start();
    this.reader = new RingBufferReader(gate.map(MAP.EVENTS).fd, (rec) => this.onRecord(rec));
    this.timers.push(
      setInterval(() => {
        gate.setDenyTokens(this.config.log.denialsPerSecond);
        gate.setKnockTokens(this.config.log.knockEventsPerSecond);
        gate.setSignedTokens(SIGNED_PER_SECOND);
      }, 1000),
    );
    this.timers.push(setInterval(() => gate.syncWallClock(), CLOCK_SYNC_MS));
    this.timers.push(
      setInterval(() => {
        const r = gate.sweep(monoNowNs(), GRANT_GRACE_NS);
        if (r.flows + r.grants + r.penalties + r.probation > 0) {
          this.log.debug({ flows: r.flows, grants: r.grants, penalties: r.penalties, first_knocks: r.probation }, 'expired entries swept');
        }
      }, SWEEP_INTERVAL_MS),
    );
    this.timers.push(setInterval(() => this.watch(), WATCH_INTERVAL_MS));
    if (this.opts.metrics) {
      this.metrics = new Metrics(() => this.gate, version(), {
        interfaces: () => this.ifaces?.status() ?? [],
        unprotectedSeconds: () => this.ifaces?.unprotectedSeconds() ?? new Map(),
      });
      await this.metrics.listen(this.opts.metrics);
      this.log.info({ metrics: `http://${this.opts.metrics.host.includes(':') ? `[${this.opts.metrics.host}]` : this.opts.metrics.host}:${this.opts.metrics.port}/metrics` }, 'serving metrics');
    }
    if (c.fleet) {
      // Loaded only in fleet mode: the etcd client (gRPC, protobufjs) is heavy for every other command.
      const { FleetLink } = await import('./fleet/link.js');
      this.fleet = await FleetLink.open({
        config: c,
        fleet: c.fleet,
        gate: () => this.gate,
        doors: () => this.fleetDoors(),
        log: this.log,
        registry: this.metrics?.registry ?? null,
        ...(this.opts.fleetTuning ? { engineTuning: this.opts.fleetTuning } : {}),
      });
    }
    this.control = await ControlServer.listen(c.pinPath, {
      fleet: async () => (this.fleet ? { ...(await this.fleet.status()), origins: this.fleet.replicator.origins() } : null),
      notify: (change, detail) => {
        this.log.info({ change, ...detail }, 'gate changed from the CLI');
        this.refreshDoorNames();
        if (this.fleet && detail['fleet'] === true) this.fleet.fromCli(change, detail);
        if (change === 'grant revoked' && typeof detail['source'] === 'string' && Array.isArray(detail['doors'])) {
          this.forgetExpiry(detail['source'], detail['doors'].map(String));
        }
      },
      detached: () => {
        this.log.warn({ pin_path: this.config.pinPath }, 'the gate was detached from the CLI');
        void this.stop('detached from the CLI', { leavePins: true });
      },
      detach: () => {
        this.log.warn({ pin_path: this.config.pinPath }, 'detach requested from the CLI: detaching the gate, removing its pins and stopping');
        void this.stop('detach requested from the CLI', { destroy: true });
      },
      interfaces: () => this.ifaces?.status() ?? [],
      recent: (limit) => this.recent.slice(-limit),
      subscribe: (send) => {
        this.subscribers.add(send);
        return () => this.subscribers.delete(send);
      },
    });
    this.log.info(
      {
        config: c.file,
        pin_path: c.pinPath,
        adopted: gate.adopted,
        keep: this.keep,
        interfaces: this.ifaces.status().map((i) => ({ name: i.interface, entry: i.entry, state: i.state, xdp_mode: i.attached_mode ?? i.xdp_mode, attach: gate.attachments().find((a) => a.ifname === i.interface)?.attach })),
        doors: c.doors.map((d) => d.name),
      },
      'knockgate running',
    );
  }

  /** The live doors by name, for fleet records (slots differ between hosts). */
  private fleetDoors(): Map<string, FleetDoor> {
    const out = new Map<string, FleetDoor>();
    const byName = new Map(this.config.doors.map((d) => [d.name, d]));
    for (const d of this.gate?.doors() ?? []) {
      out.set(d.door.name, { slot: d.slot, openForMs: Number(d.door.openForNs / 1_000_000n), onPartition: byName.get(d.door.name)?.onPartition ?? 'local' });
    }
    return out;
  }

  /** Take a config's key material: spa keys and rotating secrets, signed doors' verifiers. */
  private useSecrets(config: GateConfig, secrets: DoorSecrets): void {
    const verifiers = new Map<string, SignedVerifier>();
    for (const d of config.doors) {
      if (d.type !== 'signed') continue;
      verifiers.set(d.name, new SignedVerifier(d.name, secrets.clients.get(d.name) ?? [], d.signed.maxSkewMs, this.signedNonces));
    }
    this.secrets = secrets;
    this.verifiers = verifiers;
  }

  /**
   * Rotating doors: at the start of each window, write the sequences of the new window and the
   * one before into the kernel. The live doors are re-applied (changes made from the CLI stay),
   * with this daemon's secrets.
   */
  private scheduleRotation(written = 0): void {
    if (this.rotationTimer) clearTimeout(this.rotationTimer);
    this.rotationTimer = null;
    const gate = this.gate;
    if (!gate) return;
    const now = Date.now();
    // `written`: the boundary just planned for (early): the next one comes after it.
    const from = Math.max(now, written);
    let next = Infinity;
    for (const d of gate.doors()) {
      if (d.door.type !== DOOR_TYPE.ROTATING || !this.secrets.keys.has(d.door.name)) continue;
      const windowMs = Number(d.door.windowNs / 1_000_000n);
      next = Math.min(next, Number(windowOf(from, windowMs) + 1n) * windowMs);
    }
    if (next === Infinity) return;
    this.rotationTimer = setTimeout(() => void this.rotate(next), Math.max(0, next - now - ROTATE_EARLY_MS));
  }

  /** Writes the windows of the window starting at `boundary` (wall clock, ms) and the one before. */
  private async rotate(boundary: number): Promise<void> {
    const gate = this.gate;
    if (!gate || this.stopping) return;
    try {
      await withGateLock(gate.pinPath, () => {
        // The plan is made as of the boundary, on both clocks.
        const now = Date.now();
        const wallMs = Math.max(now, boundary);
        const clock = { wallMs, monoNs: monoNowNs() + BigInt(wallMs - now) * 1_000_000n };
        return gate.applyDoors(gate.doors().map((d) => doorConfigOf(d.door, d.allow)), { secrets: this.secrets.keys, clock, fleet: !!this.config.fleet });
      });
      this.refreshDoorNames();
      this.log.debug({ doors: gate.doors().filter((d) => d.door.type === DOOR_TYPE.ROTATING).map((d) => d.door.name) }, 'rotating sequences moved to the next window');
    } catch (err) {
      this.log.error({ err }, 'rotating doors could not move to the next window: they refuse knocks once their windows end; check the gate (knockgate status)');
    }
    this.scheduleRotation(boundary);
  }

  /** A signed knock the kernel passed up: verify it (and in fleet mode claim its nonce fleet-wide), then grant, or log why not. */
  private async onSigned(rec: Buffer): Promise<void> {
    const gate = this.gate;
    if (!gate) return;
    const k = decodeSignedEvent(rec);
    const door = this.doorNames.get(k.door)?.name;
    const base = describeEvent({ ...k, type: EVENT.SIGNED }, this.ctx);
    const verifier = door === undefined ? undefined : this.verifiers.get(door);
    if (verifier === undefined) {
      this.publish({ ...base, event: 'reject', reason: 'unknown_key' });
      return;
    }
    const r = verifier.check(k.addr, k.payload, Date.now());
    if (!r.ok) {
      const reason = SIGNED_REASONS[r.reason];
      this.publish({ ...base, event: 'reject', reason, ...(r.client !== undefined ? { client: r.client } : {}) });
      return;
    }
    if (this.fleet) {
      const d = this.config.doors.find((x) => x.name === door);
      const skewMs = d?.type === 'signed' ? d.signed.maxSkewMs : LIMITS.maxSkewMaxMs;
      const claim = await this.fleet.claimNonce(door!, k.payload.subarray(16, 32), skewMs);
      if (claim === 'lost' || claim === 'refused') {
        this.publish({ ...base, event: 'reject', reason: claim === 'lost' ? 'replay' : 'fleet_unreachable', client: r.client });
        return;
      }
      if (this.gate !== gate) return;
    }
    const slotDoor = gate.doors().find((d) => d.slot === k.door && d.door.name === door);
    if (!slotDoor) return;
    let expires: bigint;
    try {
      expires = gate.grant(k.addr, k.door, slotDoor.door.openForNs);
    } catch (err) {
      this.log.error({ err, door, source: base.source, client: r.client }, 'signed knock verified, but the grant could not be written (kg_grants full? raise limits.sources)');
      return;
    }
    const inMs = Number((expires - monoNowNs()) / 1_000_000n);
    const e: GateEvent = { ...base, event: 'grant', expires_in_ms: Math.max(0, inMs), client: r.client };
    this.publish(e);
    this.fleet?.publishGrant(k.addr, door!, Date.now() + Math.max(0, inMs), 'signed');
    this.watchExpiry(k.addr, k.door, e, Math.max(0, inMs));
  }

  /**
   * Fleet mode: a rotating door's sequence completed here (the kernel marked the window spent
   * locally and handed it up): claim the window fleet-wide, grant on a win.
   */
  private async onClaim(k: KEvent): Promise<void> {
    const gate = this.gate;
    const fleet = this.fleet;
    if (!gate || !fleet) return;
    const slotDoor = gate.doors().find((d) => d.slot === k.door);
    // (described as a grant for its source, door and port; expires_ns holds the window here)
    const { expires_in_ms: _window, ...base } = describeEvent({ ...k, type: EVENT.GRANT, expiresNs: 0n }, this.ctx);
    if (!slotDoor) return;
    const name = slotDoor.door.name;
    const window = k.expiresNs;
    const claim = await fleet.claimWindow(name, window, Number(slotDoor.door.windowNs / 1_000_000n));
    if (claim === 'lost' || claim === 'refused') {
      this.publish({ ...base, event: 'reject', reason: claim === 'lost' ? 'spent' : 'fleet_unreachable', step: k.step });
      return;
    }
    if (this.gate !== gate) return;
    const now = monoNowNs();
    // The grant runs from the knock's completion, as the kernel's own grant would.
    const forNs = k.tsNs + slotDoor.door.openForNs > now ? k.tsNs + slotDoor.door.openForNs - now : 0n;
    let expires: bigint;
    try {
      expires = gate.grant(k.addr, k.door, forNs, now);
    } catch (err) {
      this.log.error({ err, door: name, source: base.source }, 'rotating window claimed, but the grant could not be written (kg_grants full? raise limits.sources)');
      return;
    }
    const inMs = Number((expires - monoNowNs()) / 1_000_000n);
    const e: GateEvent = { ...base, event: 'grant', expires_in_ms: Math.max(0, inMs) };
    this.publish(e);
    fleet.publishGrant(k.addr, name, Date.now() + Math.max(0, inMs), 'rotating');
    this.watchExpiry(k.addr, k.door, e, Math.max(0, inMs));
  }

  private refreshDoorNames(): void {
    const gate = this.gate;
    if (!gate) return;
    this.doorNames = new Map(gate.doors().map((d) => [d.slot, { name: d.door.name, steps: d.door.nsteps }]));
    this.knownGen = gate.activeGen();
  }

  /**
   * Notice changes made behind the daemon's back: doors switched by the CLI, pins removed,
   * links gone. Fail closed: while the daemon runs, the gate stays on, so pins removed from
   * outside are put back and the interfaces re-attached (to take the gate down, ask the
   * daemon: `knockgate detach`, or stop it).
   */
  private watch(): void {
    const gate = this.gate;
    if (!gate || this.stopping) return;
    if (!existsSync(join(gate.pinPath, 'maps', 'kg_ports')) || !existsSync(join(gate.pinPath, 'prog'))) {
      try {
        const repinned = gate.repin();
        this.log.error(
          { pin_path: gate.pinPath, repinned },
          'the gate\'s pins were removed from outside while the daemon runs: pinned again and re-attaching (to take the gate down use `knockgate detach` or stop the daemon)',
        );
      } catch (err) {
        this.log.fatal({ err, pin_path: gate.pinPath }, 'the gate\'s pins were removed from outside and cannot be put back: protected ports may be open');
      }
    }
    this.ifaces?.verify();
    if (gate.activeGen() !== this.knownGen) {
      const before = [...this.doorNames.values()].map((d) => d.name);
      this.refreshDoorNames();
      const after = [...this.doorNames.values()].map((d) => d.name);
      this.log.info({ doors_before: before, doors: after }, 'doors changed outside the daemon (until the next reload)');
    }
  }

  private readonly ctx: EventContext = {
    doorName: (slot) => this.doorNames.get(slot)?.name,
    doorSteps: (slot) => this.doorNames.get(slot)?.steps,
    ifName: (index) => {
      if (index === 0) return undefined;
      let n = this.ifnames.get(index);
      if (n === undefined) {
        try {
          n = ifName(index);
          this.ifnames.set(index, n);
        } catch {
          return undefined;
        }
      }
      return n;
    },
    nowNs: monoNowNs,
  };

  private onRecord(rec: Buffer): void {
    let k: KEvent;
    let e: GateEvent;
    try {
      k = decodeEvent(rec);
      if (k.type === EVENT.SIGNED) {
        void this.onSigned(rec).catch((err: unknown) => this.log.error({ err }, 'signed knock: internal error'));
        return;
      }
      if (k.type === EVENT.CLAIM) {
        void this.onClaim(k).catch((err: unknown) => this.log.error({ err }, 'rotating claim: internal error'));
        return;
      }
      e = describeEvent(k, this.ctx);
    } catch (err) {
      this.log.warn({ err, bytes: rec.length }, 'undecodable kernel event');
      return;
    }
    // Fleet first: the other hosts wait for this record; the log line can wait a moment.
    if (this.fleet) {
      this.fleet.onKernelEvent(e, k.addr, k.tsNs);
      const nonce = k.type === EVENT.GRANT ? nonceOfGrantEvent(rec) : null;
      if (nonce !== null) {
        const d = this.config.doors.find((x) => x.name === e.door);
        this.fleet.publishSpaNonce(nonce, d?.type === 'spa' ? d.spa.maxSkewMs : LIMITS.maxSkewMaxMs);
      }
    }
    this.publish(e);
    if (k.type === EVENT.GRANT) this.watchExpiry(k.addr, k.door, e, Number(e.expires_in_ms ?? 0));
  }

  private publish(e: GateEvent): void {
    this.log.info(e, EVENT_MESSAGES[e.event]);
    const stamped = { time: new Date().toISOString(), ...e };
    this.recent.push(stamped);
    if (this.recent.length > RECENT_EVENTS) this.recent.splice(0, this.recent.length - RECENT_EVENTS);
    for (const send of this.subscribers) send(stamped);
    this.metrics?.observe(e);
    this.opts.onEvent?.(e);
  }

  /** A revoked grant does not expire later: drop its watch. */
  private forgetExpiry(source: string, doors: readonly string[]): void {
    let addr: string;
    try {
      addr = parseAddress(source).toString('hex');
    } catch {
      return;
    }
    for (const [slot, d] of this.doorNames) {
      if (!doors.includes(d.name)) continue;
      const key = `${addr}/${slot}`;
      const t = this.expiryTimers.get(key);
      if (t) clearTimeout(t);
      this.expiryTimers.delete(key);
    }
  }

  /** Log the end of a grant when it comes (the kernel just stops honouring it, silently). */
  private watchExpiry(addr: Buffer, slot: number, granted: GateEvent, inMs: number): void {
    const key = `${addr.toString('hex')}/${slot}`;
    const old = this.expiryTimers.get(key);
    if (old) clearTimeout(old);
    else if (this.expiryTimers.size >= MAX_EXPIRY_TIMERS) return;
    const timer = setTimeout(() => {
      this.expiryTimers.delete(key);
      const gate = this.gate;
      if (!gate) return;
      const v = gate.map(MAP.GRANTS).lookup(addr);
      const left = v ? (decodeGrant(v)[slot] ?? 0n) - monoNowNs() : 0n;
      if (left > 0n) {
        this.watchExpiry(addr, slot, granted, Number(left / 1_000_000n) + 1);
        return;
      }
      this.publish({ event: 'expire', source: granted.source, family: granted.family, door: granted.door, port: 0, protocol: granted.protocol });
    }, inMs + 20);
    timer.unref();
    this.expiryTimers.set(key, timer);
  }

  /** SIGHUP: re-read the config; on any error keep the running state and say why. */
  async reload(): Promise<boolean> {
    const log = this.log;
    let next: GateConfig;
    let secrets: DoorSecrets;
    try {
      next = await loadConfigFile(this.opts.configPath);
      secrets = await loadDoorSecrets(next);
    } catch (err) {
      if (err instanceof ConfigError) {
        for (const i of err.issues) log.error(issueRecord(i), 'config rejected');
        log.error({ config: this.opts.configPath, errors: err.issues.length }, 'reload refused: the running gate keeps its last good config');
      } else {
        log.error({ err, config: this.opts.configPath }, 'reload refused: the running gate keeps its last good config');
      }
      return false;
    }
    const cur = this.config;
    const fixed: [string, unknown, unknown][] = [
      ['pin_path', cur.pinPath, next.pinPath],
      ['limits.sources', cur.limits.sources, next.limits.sources],
      ['limits.flows', cur.limits.flows, next.limits.flows],
      ['limits.event_ring', cur.limits.eventRingBytes, next.limits.eventRingBytes],
      ['limits.first_knock_filter', cur.limits.firstKnockFilterBytes, next.limits.firstKnockFilterBytes],
      // the fleet connection (cluster, prefix, identity, credentials' files, cooldown sharing)
      ['fleet', JSON.stringify(cur.fleet ?? null), JSON.stringify(next.fleet ?? null)],
    ];
    const changed = fixed.filter(([, a, b]) => a !== b);
    if (changed.length > 0) {
      for (const [key, a, b] of changed) {
        log.error({ key, running: a, requested: b }, `${key} cannot change on a live gate: restart the daemon to apply it`);
      }
      log.error({ config: this.opts.configPath }, 'reload refused: the running gate keeps its last good config');
      return false;
    }
    for (const w of next.warnings) log.warn(issueRecord(w), 'config warning');
    const gate = this.gate!;
    try {
      await withGateLock(gate.pinPath, () => gate.applyDoors(next.doors, { secrets: secrets.keys, fleet: !!next.fleet }));
    } catch (err) {
      log.error({ err }, 'reload refused: the new doors could not be written; the running gate keeps its last good config');
      return false;
    }
    this.useSecrets(next, secrets);
    this.refreshDoorNames();
    this.scheduleRotation();
    try {
      this.ifaces?.setEntries(next.interfaces);
    } catch (err) {
      log.error({ err }, 'interfaces could not all be attached; doors were updated');
    }
    log.level = next.log.level;
    gate.setBruteForce(next.bruteForce);
    gate.setDenyTokens(next.log.denialsPerSecond);
    gate.setKnockTokens(next.log.knockEventsPerSecond);
    this.config = next;
    log.info({ config: next.file, doors: next.doors.map((d) => d.name) }, 'config reloaded');
    return true;
  }

  /** One shutdown path for every signal. */
  stop(reason: string, opts: { leavePins?: boolean; destroy?: boolean } = {}): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      for (const t of this.timers) clearInterval(t);
      this.timers = [];
      if (this.rotationTimer) clearTimeout(this.rotationTimer);
      this.rotationTimer = null;
      for (const t of this.expiryTimers.values()) clearTimeout(t);
      this.expiryTimers.clear();
      this.reader?.close();
      this.reader = null;
      this.control?.close();
      this.control = null;
      this.metrics?.close();
      this.metrics = null;
      this.ifaces?.close();
      this.ifaces = null;
      const fleet = this.fleet;
      this.fleet = null;
      await fleet?.close().catch((err: unknown) => this.log.warn({ err }, 'fleet: close failed'));
      const gate = this.gate;
      this.gate = null;
      if (gate) {
        if (opts.destroy) {
          gate.destroy();
          this.log.info({ reason }, 'stopped; gate detached and pins removed');
        } else if (opts.leavePins) {
          gate.close();
          this.log.info({ reason }, 'stopped');
        } else if (this.keep) {
          gate.close();
          this.log.info({ reason, pin_path: gate.pinPath }, 'stopped; the gate keeps enforcing (keep)');
        } else {
          gate.destroy();
          this.log.info({ reason }, 'stopped; gate detached and pins removed');
        }
      }
      this.lock?.release();
      this.lock = null;
      this.resolveDone?.();
    })();
    return this.stopping;
  }

  private teardownAfterFailedStart(): void {
    for (const t of this.timers) clearInterval(t);
    if (this.rotationTimer) clearTimeout(this.rotationTimer);
    this.reader?.close();
    this.control?.close();
    this.metrics?.close();
    this.ifaces?.close();
    this.ifaces = null;
    void this.fleet?.close().catch(() => undefined);
    this.fleet = null;
    const gate = this.gate;
    this.gate = null;
    if (gate) {
      if (gate.adopted || this.keep) gate.close();
      else gate.destroy();
    }
    this.lock?.release();
    this.lock = null;
  }

  /** Install signal handlers for a foreground process. */
  handleSignals(): void {
    process.on('SIGHUP', () => {
      if (!this.started) {
        this.log.warn('SIGHUP while starting: ignored (the config was just read)');
        return;
      }
      this.log.info('SIGHUP: reloading config');
      void this.reload();
    });
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      process.once(sig, () => {
        if (this.started) void this.stop(sig);
        else this.pendingSignal = sig;
      });
    }
  }

  currentGate(): Gate | null {
    return this.gate;
  }
}

export async function runDaemon(opts: DaemonOptions): Promise<Daemon> {
  return Daemon.start(opts, true);
}
