/**
 * Prometheus endpoint (`knockgate run --metrics 127.0.0.1:9477`, off by default), built on
 * prom-client. Kernel counters and map state are read at scrape time; per-door event counts
 * come from the daemon's event stream.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import type { GateEvent } from './kernel/events.js';
import type { Gate } from './kernel/gate.js';
import { INTERFACE_STATES, type InterfaceStatus } from './interfaces.js';
import { STAT_NAMES, VERDICTS } from './kernel/layout.js';

export interface ListenAddress {
  host: string;
  port: number;
}

/** "127.0.0.1:9477", "[::1]:9477", "localhost:9477" or ":9477" (all interfaces). */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw new Error(`"${text}" is not a listen address: write HOST:PORT, e.g. 127.0.0.1:9477 or [::1]:9477`);
  }
  return { host: m[1] ?? (m[2] === '' ? '::' : (m[2] ?? '::')), port };
}

/** What the daemon knows beyond the gate's maps. */
export interface MetricsSources {
  /** each configured interface or pattern and its state */
  interfaces?: () => InterfaceStatus[];
  /** seconds each interface existed without the gate */
  unprotectedSeconds?: () => Map<string, number>;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly events: Counter<'door' | 'event' | 'reason'>;
  private server: Server | null = null;

  constructor(getGate: () => Gate | null, version: string, sources: MetricsSources = {}) {
    const r = this.registry;
    // prom-client calls collect() with the metric as `this`; pass it on with the live gate.
    const withGate = <T>(fn: (this: T, g: Gate) => void) =>
      function (this: T): void {
        const g = getGate();
        if (g) fn.call(this, g);
      };
    new Gauge({ name: 'knockgate_info', help: 'knockgate version', labelNames: ['version'], registers: [r] }).set({ version }, 1);
    new Counter({
      name: 'knockgate_packets_total',
      help: 'Packets judged by the XDP program, by verdict reason (kernel per-CPU counters, summed)',
      labelNames: ['verdict'],
      registers: [r],
      collect: withGate(function (this: Counter<'verdict'>, g: Gate) {
        const s = g.stats();
        this.reset();
        for (const n of STAT_NAMES.slice(0, VERDICTS)) this.inc({ verdict: n }, Number(s[n]));
      }),
    });
    new Counter({
      name: 'knockgate_kernel_events_total',
      help: 'Kernel-side counts: knock steps, grants, resets by reason, refused first knocks, retransmits, denial events emitted and suppressed, events lost, map inserts that failed, second steps on the first-knock filter, failures and cooldowns, flows opened/closing/idle, flow-only grants used, knock events suppressed',
      labelNames: ['counter'],
      registers: [r],
      collect: withGate(function (this: Counter<'counter'>, g: Gate) {
        const s = g.stats();
        this.reset();
        for (const n of STAT_NAMES.slice(VERDICTS)) this.inc({ counter: n }, Number(s[n]));
      }),
    });
    new Counter({
      name: 'knockgate_events_lost_total',
      help: 'Kernel events dropped because the ring buffer was full',
      registers: [r],
      collect: withGate(function (this: Counter, g: Gate) {
        this.reset();
        this.inc(Number(g.stats().event_lost));
      }),
    });
    this.events = new Counter({
      name: 'knockgate_door_events_total',
      help: 'Events seen by the daemon, by door, kind (knock, reset, grant, deny, cooldown, consume, expire) and reason (denials, first knocks and cooldowns are rate-limited in the kernel)',
      labelNames: ['door', 'event', 'reason'],
      registers: [r],
    });
    new Gauge({
      name: 'knockgate_grants',
      help: 'Live grants, by door',
      labelNames: ['door'],
      registers: [r],
      collect: withGate(function (this: Gauge<'door'>, g: Gate) {
        this.reset();
        for (const d of g.doors()) this.set({ door: d.door.name }, 0);
        for (const x of g.grants()) this.inc({ door: x.door });
      }),
    });
    new Gauge({
      name: 'knockgate_sources_in_progress',
      help: 'Sources midway through a sequence (live progress), by door',
      labelNames: ['door'],
      registers: [r],
      collect: withGate(function (this: Gauge<'door'>, g: Gate) {
        this.reset();
        for (const d of g.doors()) this.set({ door: d.door.name }, 0);
        for (const p of g.progress()) if (!p.stale) this.inc({ door: p.door });
      }),
    });
    new Gauge({
      name: 'knockgate_flows',
      help: 'Live flows (connections opened under a grant), by door',
      labelNames: ['door'],
      registers: [r],
      collect: withGate(function (this: Gauge<'door'>, g: Gate) {
        this.reset();
        for (const d of g.doors()) this.set({ door: d.door.name }, 0);
        for (const f of g.flows()) this.inc({ door: f.door });
      }),
    });
    new Gauge({
      name: 'knockgate_sources_in_cooldown',
      help: 'Sources whose knocks are ignored (brute-force limit)',
      registers: [r],
      collect: withGate(function (this: Gauge, g: Gate) {
        this.set(g.cooldowns().length);
      }),
    });
    new Gauge({
      name: 'knockgate_first_knock_filter',
      help: 'First-knock filter: fill (bits set in the live windows, sampled) and the false-positive rate it implies',
      labelNames: ['value'],
      registers: [r],
      collect: withGate(function (this: Gauge<'value'>, g: Gate) {
        const f = g.filterState();
        this.set({ value: 'fill_ratio' }, f.fill);
        this.set({ value: 'false_positive_estimate' }, f.falsePositive);
        this.set({ value: 'bytes' }, f.bytes);
      }),
    });
    // One walk of the maps per scrape serves the three map gauges.
    let fillCache: { at: number; rows: ReturnType<Gate['mapFill']> } | null = null;
    const mapFill = (g: Gate): ReturnType<Gate['mapFill']> => {
      if (!fillCache || Date.now() - fillCache.at > 250) fillCache = { at: Date.now(), rows: g.mapFill() };
      return fillCache.rows;
    };
    const mapGauge = (name: string, help: string, value: (m: ReturnType<Gate['mapFill']>[number]) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['map'],
        registers: [r],
        collect: withGate(function (this: Gauge<'map'>, g: Gate) {
          for (const m of mapFill(g)) this.set({ map: m.map }, value(m));
        }),
      });
    };
    mapGauge('knockgate_map_entries', 'Entries in the progress, probation, penalty, grant and flow maps', (m) => m.entries);
    mapGauge('knockgate_map_capacity', 'Capacity of those maps (limits.sources; kg_flows: limits.flows)', (m) => m.max);
    mapGauge('knockgate_map_fill_ratio', 'Entries / capacity of those maps', (m) => m.entries / m.max);
    new Gauge({
      name: 'knockgate_interface_attached',
      help: 'Interfaces the gate is attached to, with the XDP mode in use',
      labelNames: ['interface', 'xdp_mode'],
      registers: [r],
      collect: withGate(function (this: Gauge<'interface' | 'xdp_mode'>, g: Gate) {
        this.reset();
        for (const a of g.attachments()) this.set({ interface: a.ifname, xdp_mode: a.mode }, 1);
      }),
    });
    if (sources.interfaces) {
      const list = sources.interfaces;
      new Gauge({
        name: 'knockgate_interface_state',
        help: 'Each configured interface (a pattern that matches none: the pattern) by state, 1 for the current one: attached (the gate is on it), waiting (it exists without the gate: unprotected), absent (no such interface)',
        labelNames: ['interface', 'state'],
        registers: [r],
        collect: function (this: Gauge<'interface' | 'state'>) {
          this.reset();
          for (const i of list()) for (const st of INTERFACE_STATES) this.set({ interface: i.interface, state: st }, i.state === st ? 1 : 0);
        },
      });
    }
    if (sources.unprotectedSeconds) {
      const secs = sources.unprotectedSeconds;
      new Counter({
        name: 'knockgate_interface_unprotected_seconds_total',
        help: 'Seconds a configured interface existed without the gate (since the daemon started): alert on any increase',
        labelNames: ['interface'],
        registers: [r],
        collect: function (this: Counter<'interface'>) {
          this.reset();
          for (const [name, s] of secs()) this.inc({ interface: name }, s);
        },
      });
    }
  }

  /** Count one daemon-side event. */
  observe(e: GateEvent): void {
    this.events.inc({ door: e.door, event: e.event, reason: e.reason ?? '' });
  }

  listen(addr: ListenAddress): Promise<void> {
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
        return;
      }
      this.registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text))
        .catch((err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`));
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(addr.port, addr.host, () => resolve());
    });
  }

  close(): void {
    this.server?.close();
    this.server = null;
  }
}
