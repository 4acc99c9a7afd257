/** `knockgate grants`, `revoke`, `grant`: live grants and flows on the pinned gate. */
import { Command } from 'commander';
import { controlRequest, notifyDaemon } from '../../control.js';
import { fleetConfigOf, readOrigins, withCliEngine, writeGrant, writeRevoke } from '../fleet.js';
import { monoNowNs, type Gate } from '../../kernel/gate.js';
import { withGateLock } from '../../kernel/lock.js';
import { formatDuration } from '../../config/index.js';
import { FLOW_FLAG, protoName } from '../../kernel/layout.js';
import { formatAddress } from '../../net/addr.js';
import { CliError, EXIT } from '../exit.js';
import { parseAddressArg, parseDoorNameArg, parseDurationArg } from '../parsers.js';
import { openTarget, resolvePinPath, targetOptions, toJson, type TargetOptions } from '../target.js';

const NS_PER_MS = 1_000_000n;

function slotOf(gate: Gate, door: string): number {
  const d = gate.doors().find((x) => x.door.name === door);
  if (!d) {
    const names = gate.doors().map((x) => x.door.name);
    throw new CliError(`the live gate has no door named ${JSON.stringify(door)} (it has: ${names.join(', ') || 'none'})`, EXIT.USAGE);
  }
  return d.slot;
}

export interface GrantRow {
  source: string;
  door: string;
  expires_in_ms: number;
  /** fleet mode: the host the grant came from (null: made here and not in the store, or unknown) */
  origin?: string | null;
}

export function grantRows(gate: Gate, now = monoNowNs()): GrantRow[] {
  return gate
    .grants(now)
    .map((g) => ({ source: formatAddress(g.addr), door: g.door, expires_in_ms: Number((g.expiresNs - now) / NS_PER_MS) }))
    .sort((a, b) => a.door.localeCompare(b.door) || a.source.localeCompare(b.source));
}

export interface FlowRow {
  source: string;
  source_port: number;
  destination: string;
  port: number;
  protocol: 'tcp' | 'udp';
  door: string;
  /** new: handshake not complete; established; closing: FIN or RST seen */
  state: 'new' | 'established' | 'closing';
  idle_ms: number;
  age_ms: number;
}

export function flowRows(gate: Gate, now = monoNowNs()): FlowRow[] {
  return gate
    .flows(now)
    .map((f): FlowRow => ({
      source: formatAddress(f.src),
      source_port: f.sport,
      destination: formatAddress(f.dst),
      port: f.dport,
      protocol: protoName(f.proto),
      door: f.door,
      state: (f.flags & FLOW_FLAG.CLOSING) !== 0 ? 'closing' : (f.flags & FLOW_FLAG.ESTABLISHED) !== 0 || f.proto !== 0 ? 'established' : 'new',
      idle_ms: Number(f.idleForNs / NS_PER_MS),
      age_ms: Number((now > f.createdNs ? now - f.createdNs : 0n) / NS_PER_MS),
    }))
    .sort((a, b) => a.door.localeCompare(b.door) || a.source.localeCompare(b.source) || a.port - b.port || a.source_port - b.source_port);
}

export function grantsCommand(): Command {
  return targetOptions(new Command('grants'))
    .description('list live grants with the time left, and the flows (connections) opened under them')
    .option('--json', 'JSON output: {"grants": [...], "flows": [...]}')
    .addHelpText('after', '\nIn fleet mode each grant shows the host it came from (ORIGIN).\n\nExample:\n  knockgate grants --json\n')
    .action(async (opts: TargetOptions & { json?: boolean }) => {
      const pinPath = await resolvePinPath(opts);
      const gate = await openTarget({ pinPath });
      try {
        const origins = await fleetOrigins(opts, pinPath);
        const now = monoNowNs();
        const rows = grantRows(gate, now);
        if (origins !== null) for (const r of rows) r.origin = origins[`${r.source}/${r.door}`] ?? null;
        const flows = flowRows(gate, now);
        if (opts.json) {
          process.stdout.write(toJson({ grants: rows, flows }) + '\n');
          return;
        }
        if (rows.length === 0) {
          process.stdout.write('no live grants\n');
        } else {
          const w = Math.max(6, ...rows.map((r) => r.source.length));
          const o = origins === null ? 0 : Math.max(6, ...rows.map((r) => (r.origin ?? '-').length));
          const originCol = (text: string): string => (o === 0 ? '' : `${text.padEnd(o)}  `);
          process.stdout.write(`${'SOURCE'.padEnd(w)}  ${'DOOR'.padEnd(16)}  ${originCol('ORIGIN')}LEFT\n`);
          for (const r of rows) process.stdout.write(`${r.source.padEnd(w)}  ${r.door.padEnd(16)}  ${originCol(r.origin ?? '-')}${formatDuration(Math.max(r.expires_in_ms, 1))}\n`);
        }
        if (flows.length === 0) {
          process.stdout.write('no flows\n');
          return;
        }
        const src = (f: FlowRow): string => (f.source.includes(':') ? `[${f.source}]:${f.source_port}` : `${f.source}:${f.source_port}`);
        const w = Math.max(6, ...flows.map((f) => src(f).length));
        process.stdout.write(`\n${'FLOW FROM'.padEnd(w)}  ${'TO PORT'.padEnd(10)}  ${'DOOR'.padEnd(16)}  ${'STATE'.padEnd(11)}  IDLE\n`);
        for (const f of flows) {
          process.stdout.write(
            `${src(f).padEnd(w)}  ${`${f.port}/${f.protocol}`.padEnd(10)}  ${f.door.padEnd(16)}  ${f.state.padEnd(11)}  ${formatDuration(f.idle_ms)}\n`,
          );
        }
      } finally {
        gate.close();
      }
    });
}

export function revokeCommand(): Command {
  return targetOptions(new Command('revoke'))
    .description("cut a source's grants and its flows at once: its packets to protected ports are dropped")
    .argument('<addr>', 'source address (IPv4 or IPv6)', parseAddressArg)
    .option('--door <name>', 'only this door (default: every door)', parseDoorNameArg)
    .option('--local', 'fleet mode: revoke on this host only (default: on every host of the fleet)')
    .addHelpText('after', '\nIn fleet mode (a fleet section in the config) the revoke reaches every host, through the\nrunning daemon or, without one, written to etcd directly.\n\nExample:\n  knockgate revoke 198.18.0.2 --door ssh\n')
    .action(async (addr: Buffer, opts: TargetOptions & { door?: string; local?: boolean }) => {
      const pinPath = await resolvePinPath(opts);
      const fleet = opts.local ? null : await fleetConfigOf(opts);
      const gate = await openTarget({ pinPath });
      try {
        const slots = opts.door !== undefined ? [slotOf(gate, opts.door)] : undefined;
        const cut = await withGateLock(pinPath, () => gate.revoke(addr, slots));
        const who = formatAddress(addr);
        if (cut.slots.length === 0 && cut.flows === 0 && fleet === null) {
          throw new CliError(`${who} holds no live grant and no flow${opts.door !== undefined ? ` on door ${opts.door}` : ''}: nothing to revoke`);
        }
        const names = gate.doors().filter((d) => cut.slots.includes(d.slot)).map((d) => d.door.name);
        const fleetDoors = opts.door !== undefined ? [opts.door] : gate.doors().map((d) => d.door.name);
        const daemon = await notifyDaemon(pinPath, 'grant revoked', { source: who, doors: names, flows_cut: cut.flows, ...(fleet ? { fleet: true, fleet_doors: fleetDoors } : {}) });
        const what = names.length > 0 ? `on ${names.join(', ')}` : 'its flows';
        process.stdout.write(`revoked ${who} ${what} (${cut.flows} flow${cut.flows === 1 ? '' : 's'} cut)\n`);
        if (fleet !== null) {
          if (!daemon) {
            const holdMs = Math.max(10 * 60_000, ...gate.doors().map((d) => Number(d.door.openForNs / NS_PER_MS)));
            try {
              await withCliEngine(fleet, (engine) => writeRevoke(engine, fleet.fleet.hostId, addr, fleetDoors, holdMs));
            } catch (err) {
              throw new CliError(`revoked on this host only: ${(err as Error).message}; run the revoke again when etcd is back (or start the daemon, which keeps it until then)`);
            }
          }
          process.stdout.write(`revoked ${who} on ${fleetDoors.join(', ')} on every host of the fleet (${daemon ? 'through the daemon' : 'written to etcd'})\n`);
        }
      } finally {
        gate.close();
      }
    });
}

export function grantCommand(): Command {
  return targetOptions(new Command('grant'))
    .description('open a door by hand for a source (logged as a manual grant)')
    .argument('<addr>', 'source address (IPv4 or IPv6)', parseAddressArg)
    .requiredOption('--door <name>', 'the door to open', parseDoorNameArg)
    .requiredOption('--for <duration>', 'how long, e.g. 10m', parseDurationArg)
    .option('--local', 'fleet mode: grant on this host only (default: on every host of the fleet)')
    .addHelpText('after', '\nIn fleet mode (a fleet section in the config) the grant reaches every host.\n\nExample:\n  knockgate grant 198.18.0.2 --door ssh --for 10m\n')
    .action(async (addr: Buffer, opts: TargetOptions & { door: string; for: number; local?: boolean }) => {
      const pinPath = await resolvePinPath(opts);
      const fleet = opts.local ? null : await fleetConfigOf(opts);
      const gate = await openTarget({ pinPath });
      try {
        const slot = slotOf(gate, opts.door);
        await withGateLock(pinPath, () => gate.grant(addr, slot, BigInt(opts.for) * NS_PER_MS));
        const who = formatAddress(addr);
        const user = process.env['SUDO_USER'] ?? process.env['USER'] ?? String(process.getuid?.() ?? '?');
        const daemon = await notifyDaemon(pinPath, 'manual grant', { event: 'grant', manual: true, source: who, door: opts.door, for_ms: opts.for, by: user, ...(fleet ? { fleet: true } : {}) });
        process.stdout.write(`granted ${who} on ${opts.door} for ${formatDuration(opts.for)}\n`);
        if (fleet !== null) {
          if (!daemon) {
            try {
              await withCliEngine(fleet, (engine) => writeGrant(engine, fleet.fleet.hostId, addr, opts.door, opts.for));
            } catch (err) {
              throw new CliError(`granted on this host only: ${(err as Error).message}`);
            }
          }
          process.stdout.write(`granted on every host of the fleet (${daemon ? 'through the daemon' : 'written to etcd'})\n`);
        }
      } finally {
        gate.close();
      }
    });
}

/** Fleet mode: each live grant's origin host, from the daemon or from etcd; null without a fleet. */
async function fleetOrigins(opts: TargetOptions, pinPath: string): Promise<Record<string, string> | null> {
  const fleet = await fleetConfigOf(opts);
  if (fleet === null) return null;
  const answer = await controlRequest(pinPath, { op: 'fleet' }, 5_000);
  const f = answer?.['fleet'] as { origins?: Record<string, string> } | null | undefined;
  if (f?.origins) return f.origins;
  try {
    return await withCliEngine(fleet, readOrigins, 5_000);
  } catch (err) {
    process.stderr.write(`knockgate: grant origins unknown: ${(err as Error).message}\n`);
    return {};
  }
}
