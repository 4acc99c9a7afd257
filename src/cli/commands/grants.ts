/** `knockgate grants`, `revoke`, `grant`: live grants on the pinned gate. */
import { Command } from 'commander';
import { notifyDaemon } from '../../control.js';
import { monoNowNs, type Gate } from '../../kernel/gate.js';
import { withGateLock } from '../../kernel/lock.js';
import { formatDuration } from '../../config/index.js';
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

export function grantsCommand(): Command {
  return targetOptions(new Command('grants'))
    .description('list live grants with the time left')
    .option('--json', 'JSON output')
    .addHelpText('after', '\nExample:\n  knockgate grants --json\n')
    .action(async (opts: TargetOptions & { json?: boolean }) => {
      const gate = await openTarget(opts);
      try {
        const rows = grantRows(gate);
        if (opts.json) {
          process.stdout.write(toJson(rows) + '\n');
          return;
        }
        if (rows.length === 0) {
          process.stdout.write('no live grants\n');
          return;
        }
        const w = Math.max(6, ...rows.map((r) => r.source.length));
        process.stdout.write(`${'SOURCE'.padEnd(w)}  ${'DOOR'.padEnd(16)}  LEFT\n`);
        for (const r of rows) process.stdout.write(`${r.source.padEnd(w)}  ${r.door.padEnd(16)}  ${formatDuration(Math.max(r.expires_in_ms, 1))}\n`);
      } finally {
        gate.close();
      }
    });
}

export function revokeCommand(): Command {
  return targetOptions(new Command('revoke'))
    .description("cut a source's grants at once: its new connections to protected ports are dropped")
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
        if (cut.length === 0) {
          throw new CliError(`${who} holds no live grant${opts.door !== undefined ? ` on door ${opts.door}` : ''}: nothing to revoke`);
        }
        const names = gate.doors().filter((d) => cut.includes(d.slot)).map((d) => d.door.name);
        await notifyDaemon(pinPath, 'grant revoked', { source: who, doors: names });
        process.stdout.write(`revoked ${who} on ${names.join(', ')}\n`);
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
