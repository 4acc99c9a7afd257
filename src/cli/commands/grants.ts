/** `knockgate grants`, `revoke`, `grant`: live grants and flows on the pinned gate. */
import { Command } from 'commander';
import { notifyDaemon } from '../../control.js';
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
    .addHelpText('after', '\nExample:\n  knockgate grants --json\n')
    .action(async (opts: TargetOptions & { json?: boolean }) => {
      const gate = await openTarget(opts);
      try {
        const now = monoNowNs();
        const rows = grantRows(gate, now);
        const flows = flowRows(gate, now);
        if (opts.json) {
          process.stdout.write(toJson({ grants: rows, flows }) + '\n');
          return;
        }
        if (rows.length === 0) {
          process.stdout.write('no live grants\n');
        } else {
          const w = Math.max(6, ...rows.map((r) => r.source.length));
          process.stdout.write(`${'SOURCE'.padEnd(w)}  ${'DOOR'.padEnd(16)}  LEFT\n`);
          for (const r of rows) process.stdout.write(`${r.source.padEnd(w)}  ${r.door.padEnd(16)}  ${formatDuration(Math.max(r.expires_in_ms, 1))}\n`);
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
    .addHelpText('after', '\nExample:\n  knockgate revoke 198.18.0.2 --door ssh\n')
    .action(async (addr: Buffer, opts: TargetOptions & { door?: string }) => {
      const pinPath = await resolvePinPath(opts);
      const gate = await openTarget({ pinPath });
      try {
        const slots = opts.door !== undefined ? [slotOf(gate, opts.door)] : undefined;
        const cut = await withGateLock(pinPath, () => gate.revoke(addr, slots));
        const who = formatAddress(addr);
        if (cut.slots.length === 0 && cut.flows === 0) {
          throw new CliError(`${who} holds no live grant and no flow${opts.door !== undefined ? ` on door ${opts.door}` : ''}: nothing to revoke`);
        }
        const names = gate.doors().filter((d) => cut.slots.includes(d.slot)).map((d) => d.door.name);
        await notifyDaemon(pinPath, 'grant revoked', { source: who, doors: names, flows_cut: cut.flows });
        const what = names.length > 0 ? `on ${names.join(', ')}` : 'its flows';
        process.stdout.write(`revoked ${who} ${what} (${cut.flows} flow${cut.flows === 1 ? '' : 's'} cut)\n`);
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
    .addHelpText('after', '\nExample:\n  knockgate grant 198.18.0.2 --door ssh --for 10m\n')
    .action(async (addr: Buffer, opts: TargetOptions & { door: string; for: number }) => {
      const pinPath = await resolvePinPath(opts);
      const gate = await openTarget({ pinPath });
      try {
        const slot = slotOf(gate, opts.door);
        await withGateLock(pinPath, () => gate.grant(addr, slot, BigInt(opts.for) * NS_PER_MS));
        const who = formatAddress(addr);
        const user = process.env['SUDO_USER'] ?? process.env['USER'] ?? String(process.getuid?.() ?? '?');
        await notifyDaemon(pinPath, 'manual grant', { event: 'grant', manual: true, source: who, door: opts.door, for_ms: opts.for, by: user });
        process.stdout.write(`granted ${who} on ${opts.door} for ${formatDuration(opts.for)}\n`);
      } finally {
        gate.close();
      }
    });
}
