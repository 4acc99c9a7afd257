/**
 * Interfaces that come and go: the daemon keeps the gate on every interface its config names
 * or matches (patterns), for as long as it runs. It follows rtnetlink link events
 * (src/net/netlink.ts) on the event loop: an interface that (re)appears is attached at once,
 * in its configured XDP mode, through Gate.attachOne(); one that goes is released (its link
 * pin dropped: the kernel already detached it). The daemon's once-a-second watch calls
 * verify(), a safety net that re-attaches a link that vanished some other way and retries
 * attachments that failed.
 *
 * Per interface, a state: `attached` (the gate is on it), `waiting` (it exists and the gate is
 * not on it yet: unprotected, counted in unprotectedSeconds), `absent` (no such interface; a
 * pattern that matches none).
 */
import { entryFor, isPattern } from './config/ifpattern.js';
import type { InterfaceConfig } from './config/index.js';
import type { Gate } from './kernel/gate.js';
import type { Logger } from './log.js';
import { LinkMonitor, isTunnel, listLinks, type Link, type LinkMessage, type LinkMonitorHandlers } from './net/netlink.js';

/** Where link events come from: rtnetlink (tests pass a fake). */
export interface LinkSource {
  list(): Link[];
  monitor(h: LinkMonitorHandlers): { drain(): void; close(): void };
}

const NETLINK: LinkSource = {
  list: listLinks,
  monitor: (h) => new LinkMonitor(h).unref(),
};

/** What the supervisor needs of the gate. */
export type SupervisedGate = Pick<Gate, 'attachOne' | 'detachInterface' | 'releaseInterface' | 'linkIfindex' | 'pinnedLinkNames'>;

export type InterfaceState = 'attached' | 'waiting' | 'absent';
export const INTERFACE_STATES: readonly InterfaceState[] = ['attached', 'waiting', 'absent'];

export interface InterfaceStatus {
  /** the config entry: an interface name or a pattern */
  entry: string;
  /** the interface (for a pattern that matches nothing: the pattern) */
  interface: string;
  state: InterfaceState;
  /** configured mode */
  xdp_mode: string;
  /** mode in use, when attached */
  attached_mode?: string;
  ifindex?: number;
  kind?: string;
  /** ISO time it entered this state */
  since: string;
  /** seconds this interface existed without the gate, since the daemon started */
  unprotected_seconds: number;
  /** why the last attach failed (waiting) */
  error?: string;
}

interface Device {
  name: string;
  index: number;
  type: number;
  kind: string | undefined;
  entry: InterfaceConfig;
  state: 'attached' | 'waiting';
  attachedMode: string;
  sinceMs: number;
  /** when it went without the gate (appeared, or lost the gate); null while attached */
  waitingSinceMs: number | null;
  error: string | null;
}

/** A tunnel on the host that no config entry covers, and why that matters. */
export function tunnelWarning(l: Pick<Link, 'name' | 'kind'>): string {
  return (
    `tunnel device ${l.name} (${l.kind}) is not covered by the config: the gate on the underlay never sees the packets ` +
    `inside the tunnel, so protected ports are reachable through it without a knock; add ${l.name} (or a pattern ` +
    `matching it) to interfaces if the host terminates this tunnel`
  );
}

/**
 * What `check` and the daemon's start say about a config's interfaces on this host: names
 * that do not exist, patterns that match nothing, tunnels left uncovered.
 */
export function interfaceWarnings(entries: readonly InterfaceConfig[], links: readonly Link[]): string[] {
  const out: string[] = [];
  for (const e of entries) {
    const matched = links.some((l) => entryFor([e], l.name) !== undefined);
    if (matched) continue;
    out.push(
      isPattern(e.name)
        ? `interface pattern ${e.name} matches no interface now: the daemon attaches to each one that appears`
        : `interface ${e.name} does not exist (yet): the daemon starts without it and attaches when it appears`,
    );
  }
  for (const l of links) if (isTunnel(l) && entryFor(entries, l.name) === undefined) out.push(tunnelWarning(l));
  return out;
}

export class InterfaceSupervisor {
  private readonly devices = new Map<string, Device>();
  /** ms without the gate, by interface name, over the daemon's life (devices that went included) */
  private readonly unprotectedMs = new Map<string, number>();
  private monitor: { drain(): void; close(): void } | null = null;
  private readonly log: Logger;
  /** when each interface went (for `since` of absent ones) */
  private readonly goneAtMs = new Map<string, number>();
  private readonly startedMs: number;

  constructor(
    private readonly gate: SupervisedGate,
    private entries: readonly InterfaceConfig[],
    logger: Logger,
    private readonly links: LinkSource = NETLINK,
    private readonly now: () => number = Date.now,
  ) {
    this.log = logger.child({ module: 'interfaces' });
    this.startedMs = now();
  }

  /**
   * Attach to every interface present that the config covers, warn about the rest, and
   * follow link events from now on. An interface named in the config that cannot be attached
   * fails the start; a pattern's match that cannot is logged and retried.
   */
  start(): void {
    // Events first: an interface created between the list and the subscription is not missed.
    this.monitor = this.links.monitor({
      onLink: (m) => this.onLink(m),
      onOverflow: () => {
        this.log.warn('link events were lost (netlink buffer overrun): re-reading the interface list');
        this.resync();
      },
      onError: (err) => this.log.error({ err }, 'link event handling failed'),
    });
    const links = this.links.list();
    for (const w of interfaceWarnings(this.entries, links)) this.log.warn(w);
    this.dropUncovered(links);
    for (const l of links) {
      const entry = entryFor(this.entries, l.name);
      if (entry === undefined) continue;
      this.track(l, entry, { strict: !isPattern(entry.name), appeared: false });
    }
  }

  /** A reload: the new entries take effect (interfaces no longer covered are detached). */
  setEntries(entries: readonly InterfaceConfig[]): void {
    this.entries = entries;
    const links = this.links.list();
    for (const w of interfaceWarnings(entries, links)) this.log.warn(w);
    for (const d of [...this.devices.values()]) {
      const entry = entryFor(entries, d.name);
      if (entry === undefined) {
        // Its unprotected seconds so far stay counted (the metric is a counter).
        if (d.waitingSinceMs !== null) this.unprotectedMs.set(d.name, (this.unprotectedMs.get(d.name) ?? 0) + (this.now() - d.waitingSinceMs));
        this.devices.delete(d.name);
        this.gate.detachInterface(d.name);
        this.log.info({ interface: d.name }, 'no longer covered by the config: gate detached');
      } else if (entry.mode !== d.entry.mode || entry.name !== d.entry.name || entry.attach !== d.entry.attach || entry.priority !== d.entry.priority) {
        // A new xdp_priority moves the gate in the interface's dispatcher (attachOne: two atomic swaps).
        d.entry = entry;
        if (d.state === 'attached') this.attach(d, false);
      }
    }
    this.dropUncovered(links);
    for (const l of links) {
      const entry = entryFor(entries, l.name);
      if (entry !== undefined && !this.devices.has(l.name)) this.track(l, entry, { strict: false, appeared: false });
    }
  }

  /** Pinned links that no entry covers, or whose interface is gone, are dropped. */
  private dropUncovered(links: readonly Link[]): void {
    const present = new Map(links.map((l) => [l.name, l]));
    for (const name of this.gate.pinnedLinkNames()) {
      if (entryFor(this.entries, name) === undefined) {
        if (present.has(name)) this.gate.detachInterface(name);
        else this.gate.releaseInterface(name);
      } else if (!present.has(name)) {
        this.gate.releaseInterface(name);
      }
    }
  }

  private track(l: Link, entry: InterfaceConfig, o: { strict: boolean; appeared: boolean }): void {
    const now = this.now();
    const d: Device = {
      name: l.name,
      index: l.index,
      type: l.type,
      kind: l.kind,
      entry,
      state: 'waiting',
      attachedMode: '',
      sinceMs: now,
      waitingSinceMs: now,
      error: null,
    };
    this.devices.set(l.name, d);
    if (o.strict) {
      this.attachOrThrow(d);
      return;
    }
    this.attach(d, o.appeared);
  }

  private attachOrThrow(d: Device): void {
    const a = this.gate.attachOne({ name: d.name, mode: d.entry.mode, attach: d.entry.attach, priority: d.entry.priority }, d.index);
    this.markAttached(d, a.mode, false);
  }

  /** Try to attach; on failure the device stays waiting (retried by verify()). */
  private attach(d: Device, appeared: boolean): boolean {
    try {
      const a = this.gate.attachOne({ name: d.name, mode: d.entry.mode, attach: d.entry.attach, priority: d.entry.priority }, d.index);
      this.markAttached(d, a.mode, appeared);
      return true;
    } catch (err) {
      const msg = (err as Error).message;
      if (d.error !== msg) {
        this.log.error(
          { interface: d.name, ifindex: d.index, xdp_mode: d.entry.mode, err },
          `the gate cannot be attached to ${d.name}: it is unprotected; retrying every second`,
        );
      }
      d.error = msg;
      if (d.state !== 'waiting') {
        d.state = 'waiting';
        d.sinceMs = this.now();
        d.waitingSinceMs = d.sinceMs;
      }
      return false;
    }
  }

  private markAttached(d: Device, mode: string, appeared: boolean): void {
    const now = this.now();
    const unprotected = d.waitingSinceMs !== null ? now - d.waitingSinceMs : 0;
    if (d.waitingSinceMs !== null) this.unprotectedMs.set(d.name, (this.unprotectedMs.get(d.name) ?? 0) + unprotected);
    d.state = 'attached';
    d.attachedMode = mode;
    d.sinceMs = now;
    d.waitingSinceMs = null;
    d.error = null;
    if (appeared) {
      this.log.warn(
        { interface: d.name, ifindex: d.index, xdp_mode: mode, unprotected_ms: unprotected, entry: d.entry.name },
        `interface ${d.name} appeared: gate attached after ${unprotected} ms unprotected`,
      );
    }
  }

  private onLink(m: LinkMessage): void {
    const known = this.devices.get(m.name);
    if (m.event === 'del') {
      if (known && known.index === m.index) this.gone(known);
      return;
    }
    // A rename: the old name is gone, the new one appears.
    for (const d of this.devices.values()) if (d.index === m.index && d.name !== m.name) this.gone(d);
    if (known && known.index === m.index) {
      known.kind = m.kind;
      if (known.state === 'waiting') this.attach(known, true);
      return;
    }
    if (known) this.gone(known); // same name, new index: deleted and re-created between events
    const entry = entryFor(this.entries, m.name);
    if (entry === undefined) {
      if (isTunnel(m)) this.log.warn({ interface: m.name, kind: m.kind }, tunnelWarning(m));
      return;
    }
    this.track(m, entry, { strict: false, appeared: true });
  }

  private gone(d: Device): void {
    const now = this.now();
    if (d.waitingSinceMs !== null) this.unprotectedMs.set(d.name, (this.unprotectedMs.get(d.name) ?? 0) + (now - d.waitingSinceMs));
    this.devices.delete(d.name);
    this.goneAtMs.set(d.name, now);
    try {
      this.gate.releaseInterface(d.name);
    } catch (err) {
      this.log.warn({ interface: d.name, err }, 'could not drop the pinned link of a deleted interface');
    }
    const named = !isPattern(d.entry.name);
    const rec = { interface: d.name, ifindex: d.index, entry: d.entry.name };
    if (named) this.log.warn(rec, `interface ${d.name} is gone: the gate attaches again when it comes back`);
    else this.log.info(rec, `interface ${d.name} is gone: released`);
  }

  /** Re-read the interface list and act on every difference (after lost events). */
  resync(): void {
    let links: Link[];
    try {
      links = this.links.list();
    } catch (err) {
      this.log.error({ err }, 'cannot list interfaces');
      return;
    }
    const byName = new Map(links.map((l) => [l.name, l]));
    for (const d of [...this.devices.values()]) {
      const l = byName.get(d.name);
      if (!l || l.index !== d.index) this.gone(d);
    }
    for (const l of links) if (!this.devices.has(l.name)) this.onLink({ event: 'new', ...l });
  }

  /**
   * The safety net, once a second: a tracked interface whose link is no longer live (pins
   * removed from outside, detached by hand) gets the gate back; waiting ones are retried.
   */
  verify(): void {
    this.monitor?.drain();
    for (const d of [...this.devices.values()]) {
      if (d.state === 'waiting') {
        this.attach(d, true);
        continue;
      }
      let live: boolean;
      try {
        live = this.gate.linkIfindex(d.name) === d.index;
      } catch {
        live = false;
      }
      if (live) continue;
      this.log.error({ interface: d.name, ifindex: d.index }, `the gate's link on ${d.name} vanished while the daemon runs: attaching again`);
      d.state = 'waiting';
      d.sinceMs = this.now();
      d.waitingSinceMs = d.sinceMs;
      this.attach(d, true);
    }
  }

  status(): InterfaceStatus[] {
    const now = this.now();
    const out: InterfaceStatus[] = [];
    const iso = (ms: number) => new Date(ms).toISOString();
    const unprotected = (name: string, d?: Device) =>
      ((this.unprotectedMs.get(name) ?? 0) + (d?.waitingSinceMs != null ? now - d.waitingSinceMs : 0)) / 1000;
    for (const e of this.entries) {
      const devs = [...this.devices.values()].filter((d) => d.entry.name === e.name).sort((a, b) => a.name.localeCompare(b.name));
      for (const d of devs) {
        out.push({
          entry: e.name,
          interface: d.name,
          state: d.state,
          xdp_mode: e.mode,
          ...(d.state === 'attached' ? { attached_mode: d.attachedMode } : {}),
          ifindex: d.index,
          ...(d.kind !== undefined ? { kind: d.kind } : {}),
          since: iso(d.sinceMs),
          unprotected_seconds: unprotected(d.name, d),
          ...(d.error !== null ? { error: d.error } : {}),
        });
      }
      if (devs.length === 0) {
        out.push({ entry: e.name, interface: e.name, state: 'absent', xdp_mode: e.mode, since: iso(this.goneAtMs.get(e.name) ?? this.startedMs), unprotected_seconds: isPattern(e.name) ? 0 : unprotected(e.name) });
      }
    }
    return out;
  }

  /** Seconds without the gate, by interface, over the daemon's life (for the metric). */
  unprotectedSeconds(): Map<string, number> {
    const now = this.now();
    const out = new Map<string, number>();
    for (const [name, ms] of this.unprotectedMs) out.set(name, ms / 1000);
    for (const d of this.devices.values()) {
      out.set(d.name, (out.get(d.name) ?? 0) + (d.waitingSinceMs !== null ? (now - d.waitingSinceMs) / 1000 : 0));
    }
    return out;
  }

  close(): void {
    this.monitor?.close();
    this.monitor = null;
  }
}
