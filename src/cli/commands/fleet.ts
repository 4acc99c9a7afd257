/** `knockgate fleet status`: the fleet's members, each host's heartbeat, replication lag, state. */
import { Command } from 'commander';
import { controlRequest } from '../../control.js';
import type { FleetStatus } from '../../fleet/link.js';
import { CliError, EXIT } from '../exit.js';
import { fleetConfigOf, withCliEngine } from '../fleet.js';
import { resolvePinPath, targetOptions, toJson, type TargetOptions } from '../target.js';

type Shown = Partial<FleetStatus> & { host: string; prefix: string; endpoints: string[]; state: string; daemon: boolean; hosts: FleetStatus['hosts'] };

function ago(ms: number): string {
  return ms < 1000 ? `${Math.max(0, Math.round(ms))}ms ago` : ms < 120_000 ? `${(ms / 1000).toFixed(1)}s ago` : `${Math.round(ms / 60_000)}m ago`;
}

function print(s: Shown): void {
  const lines = [
    `host       ${s.host}${s.daemon ? '' : ' (no daemon running: read from etcd by the CLI)'}`,
    `state      ${s.state}${s.reason ? ` (${s.reason})` : ''}${s.since ? ` since ${s.since}` : ''}`,
    `etcd       ${s.endpoints.join(', ')}  prefix ${s.prefix}`,
  ];
  if (s.daemon) {
    lines.push(`cooldowns  ${s.cooldowns}`);
    lines.push(`pending    ${s.pending} local record(s) waiting for etcd`);
    lines.push(`lag        ${s.last_applied ? `${s.last_applied.lag_ms} ms (last record from another host, at ${s.last_applied.at})` : 'no record from another host yet'}`);
    const c = s.claims;
    if (c) lines.push(`claims     won ${c.won}, lost ${c.lost}, unreachable ${c.unreachable}${c.p50_ms !== null ? `; cost p50 ${c.p50_ms} ms, p99 ${c.p99_ms} ms` : ''}`);
  }
  lines.push('');
  if (s.hosts === null) lines.push(`members    unknown: ${s.hosts_error ?? 'etcd unreachable'}`);
  else {
    const w = Math.max(4, ...s.hosts.map((h) => h.host.length));
    lines.push(`${'HOST'.padEnd(w)}  ${'LAST HEARTBEAT'.padEnd(14)}  STATE`);
    for (const h of s.hosts) lines.push(`${h.host.padEnd(w)}  ${ago(h.age_ms).padEnd(14)}  ${String(h.state ?? '-')}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

export function fleetCommand(): Command {
  const fleet = new Command('fleet').description('fleet mode: grants and one-time knocks shared across hosts through etcd');
  fleet.addCommand(
    targetOptions(new Command('status'))
      .description("the fleet's hosts and their last heartbeats, this host's connection state and replication lag")
      .option('--json', 'JSON output')
      .addHelpText('after', '\nExample:\n  knockgate fleet status -c /etc/knockgate/knockgate.yaml\n')
      .action(async (opts: TargetOptions & { json?: boolean }) => {
        const f = await fleetConfigOf(opts);
        if (f === null) throw new CliError(`the config has no fleet section: this host is not in a fleet (give the config with -c)`, EXIT.USAGE);
        const pinPath = await resolvePinPath(opts);
        const answer = await controlRequest(pinPath, { op: 'fleet' }, 8_000);
        const fromDaemon = answer?.['fleet'] as FleetStatus | null | undefined;
        let shown: Shown;
        if (fromDaemon) {
          const { origins: _o, ...rest } = fromDaemon as FleetStatus & { origins?: unknown };
          shown = { ...rest, daemon: true };
        } else {
          shown = { host: f.fleet.hostId, prefix: f.fleet.prefix, endpoints: f.fleet.endpoints, state: 'unreachable', daemon: false, hosts: null };
          try {
            const now = Date.now();
            const hosts = await withCliEngine(f, (engine) => engine.hosts());
            shown.state = 'connected';
            shown.hosts = hosts.map((h) => ({ host: h.host, last_heartbeat: new Date(h.lastHeartbeatMs).toISOString(), age_ms: now - h.lastHeartbeatMs, state: h.info['state'] }));
          } catch (err) {
            shown.hosts_error = (err as Error).message;
          }
        }
        if (opts.json) process.stdout.write(toJson(shown) + '\n');
        else print(shown);
        if (shown.state !== 'connected') process.exitCode = EXIT.FAILED;
      }),
  );
  return fleet;
}
