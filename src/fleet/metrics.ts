/**
 * The fleet's Prometheus metrics (names agreed with the dashboards and alert rules):
 * knockgate_fleet_connected, knockgate_fleet_replication_lag_seconds,
 * knockgate_fleet_peer_heartbeat_age_seconds{host}, knockgate_fleet_claims_total{result}.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type ClaimResult = 'won' | 'lost' | 'unreachable' | 'error';

export class FleetMetrics {
  readonly connected: Gauge;
  readonly lag: Histogram;
  readonly claims: Counter<'result'>;

  constructor(
    registry: Registry,
    /** each peer's last heartbeat (wall clock ms), read at scrape time */
    heartbeats: () => Promise<{ host: string; lastHeartbeatMs: number }[]>,
  ) {
    this.connected = new Gauge({ name: 'knockgate_fleet_connected', help: '1 while this host reaches the fleet\'s etcd cluster, 0 while it enforces and grants from local state alone', registers: [registry] });
    this.lag = new Histogram({
      name: 'knockgate_fleet_replication_lag_seconds',
      help: 'A grant, revoke or use made on another host until it was written into this host\'s kernel (the origin\'s wall clock to this host\'s)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    this.claims = new Counter({ name: 'knockgate_fleet_claims_total', help: 'Fleet-wide claims of one-time knocks (signed nonces, rotating windows) by result: won, lost (used on some host already), unreachable, error', labelNames: ['result'], registers: [registry] });
    for (const r of ['won', 'lost', 'unreachable', 'error'] as const) this.claims.inc({ result: r }, 0);
    new Gauge({
      name: 'knockgate_fleet_peer_heartbeat_age_seconds',
      help: 'Seconds since each fleet host (this one included) last wrote its heartbeat',
      labelNames: ['host'],
      registers: [registry],
      async collect(this: Gauge<'host'>) {
        this.reset();
        let hosts: { host: string; lastHeartbeatMs: number }[] = [];
        try {
          hosts = await heartbeats();
        } catch {
          return; // unreachable: knockgate_fleet_connected says so
        }
        const now = Date.now();
        for (const h of hosts) this.set({ host: h.host }, Math.max(0, (now - h.lastHeartbeatMs) / 1000));
      },
    });
  }
}
