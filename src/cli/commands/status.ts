/** `knockgate status`: what the pinned gate is doing, read from the kernel. */
import { Command } from 'commander';
import { formatDuration } from '../../config/index.js';
import { controlRequest } from '../../control.js';
import { doorJson } from '../../kernel/doors.js';
import { monoNowNs } from '../../kernel/gate.js';
import { STAT_NAMES, VERDICTS } from '../../kernel/layout.js';
import { formatAddress } from '../../net/addr.js';
import type { InterfaceStatus } from '../../interfaces.js';
import { isPattern } from '../../config/ifpattern.js';
import { flowRows, grantRows } from './grants.js';
import { openTarget, resolvePinPath, targetOptions, toJson, type TargetOptions } from '../target.js';
import type { DispatchedState } from '../../kernel/dispatcher.js';

/** The dispatcher of an interface for --json: the chain in run order, knockgate's place marked. */
function dispatcherJson(d: DispatchedState | null) {
  if (d === null) return null;
  return {
    id: d.dispatcherId,
    position: d.chain.findIndex((p) => p.knockgate) + 1,
    chain: d.chain.map((p) => ({ priority: p.priority, name: p.name, prog_id: p.id, chain_call_actions: p.chainCallActions, knockgate: p.knockgate })),
    warnings: d.warnings,
  };
}

function dispatcherLines(d: NonNullable<ReturnType<typeof dispatcherJson>>): string[] {
  const out = [`    dispatcher ${d.id}, knockgate runs ${d.position > 0 ? `#${d.position} of ${d.chain.length}` : 'nowhere (not in the chain)'}:`];
  for (const p of d.chain) {
    out.push(`    ${p.knockgate ? '*' : ' '} prio ${String(p.priority).padStart(4)}  ${p.name.padEnd(16)} prog ${String(p.prog_id).padEnd(6)} goes on after ${p.chain_call_actions.join(',') || 'nothing'}`);
  }
  for (const w of d.warnings) out.push(`    warning: ${w}`);
  return out;
}

/** "eth0             attached (native)", "vlan*            absent (no interface matches)" */
function interfaceLine(i: InterfaceStatus): string {
  const name = i.entry !== i.interface ? `${i.interface} (${i.entry})` : i.interface;
  const unprotected = i.unprotected_seconds >= 0.001 ? `; ${i.unprotected_seconds.toFixed(3)} s unprotected so far` : '';
  let state: string;
  if (i.state === 'attached') state = `attached (${i.attached_mode ?? i.xdp_mode})`;
  else if (i.state === 'waiting') state = `WAITING: exists without the gate${i.error ? ` (${i.error})` : ''}`;
  else if (isPattern(i.entry)) state = 'absent (no interface matches; the gate attaches to each that appears)';
  else state = 'absent (the gate attaches when it appears)';
  return `${name.padEnd(16)} ${state}${unprotected}`;
}

export function statusCommand(): Command {
  return targetOptions(new Command('status'))
    .description('show interfaces (XDP mode, the libxdp dispatcher chain and the gate\'s place in it), doors, counters, grants, flows, sources in progress and in cooldown, lost events and map fill')
    .option('--json', 'JSON output')
    .addHelpText('after', '\nExample:\n  knockgate status\n  knockgate status --json | jq .counters\n')
    .action(async (opts: TargetOptions & { json?: boolean }) => {
      const pinPath = await resolvePinPath(opts);
      const gate = await openTarget({ pinPath });
      try {
        const now = monoNowNs();
        // One round trip: any answer means a daemon runs; it knows the config's interfaces and
        // patterns and what became of each (a daemon of an earlier version answers "unknown op").
        const answer = await controlRequest(pinPath, { op: 'interfaces' }, 1000);
        const daemon = answer !== null;
        const configured = Array.isArray(answer?.['interfaces']) ? (answer['interfaces'] as InterfaceStatus[]) : null;
        const stats = gate.stats();
        const progress = gate.progress(now).filter((p) => !p.stale);
        const flows = flowRows(gate, now);
        const cooldowns = gate.cooldowns(now);
        const filter = gate.filterState(256, now);
        const bf = gate.bruteForce();
        const status = {
          pin_path: pinPath,
          daemon_running: daemon,
          generation: gate.activeGen(),
          interfaces: gate.attachments().map((a) => ({
            name: a.ifname,
            ifindex: a.ifindex,
            xdp_mode: a.mode,
            prog_id: a.progId,
            attach: a.attach,
            ...(a.dispatcher !== undefined ? { dispatcher: dispatcherJson(a.dispatcher) } : {}),
          })),
          /** each configured interface or pattern and its state (null: no daemon to ask) */
          interface_states: configured,
          doors: gate.doors().map((d) => doorJson(d.slot, d.door, d.allow)),
          verdicts: Object.fromEntries(STAT_NAMES.slice(0, VERDICTS).map((n) => [n, stats[n]])),
          counters: Object.fromEntries(STAT_NAMES.slice(VERDICTS).map((n) => [n, stats[n]])),
          grants: grantRows(gate, now),
          flows: { count: flows.length, by_door: Object.fromEntries([...new Set(flows.map((f) => f.door))].map((d) => [d, flows.filter((f) => f.door === d).length])) },
          in_progress: progress.map((p) => ({ source: formatAddress(p.addr), door: p.door, step: p.step })),
          brute_force: { max_failures: bf.maxFailures, failure_window_ms: bf.failureWindowMs, cooldown_ms: bf.cooldownMs },
          in_cooldown: cooldowns.map((c) => ({ source: formatAddress(c.addr), left_ms: Number((c.untilNs - now) / 1_000_000n) })),
          first_knock_filter: {
            bytes: filter.bytes,
            window_ms: Number(filter.windowNs / 1_000_000n),
            fill: filter.fill,
            false_positive_estimate: filter.falsePositive,
          },
          events_lost: stats.event_lost,
          denials_suppressed: stats.deny_suppressed,
          knock_events_suppressed: stats.knock_suppressed,
          maps: gate.mapFill(),
        };
        if (opts.json) {
          process.stdout.write(toJson(status) + '\n');
          return;
        }
        const out: string[] = [];
        out.push(`gate ${pinPath} (generation ${status.generation}; daemon ${daemon ? 'running' : 'not running'})`);
        out.push('interfaces:');
        if (configured !== null) {
          for (const i of configured) out.push(`  ${interfaceLine(i)}`);
          if (configured.length === 0) out.push('  none configured');
        }
        if (configured === null || status.interfaces.some((i) => i.dispatcher)) {
          for (const i of status.interfaces) {
            if (configured === null) out.push(`  ${i.name.padEnd(16)} ${i.xdp_mode}${i.prog_id ? ` (prog ${i.prog_id})` : ''}, ${i.attach === 'link' ? 'direct bpf_link' : 'libxdp dispatcher'}`);
            else if (i.dispatcher) out.push(`  ${i.name}:`);
            if (i.dispatcher) out.push(...dispatcherLines(i.dispatcher));
          }
          if (configured === null && status.interfaces.length === 0) out.push('  none');
        }
        out.push('doors:');
        for (const d of status.doors) {
          out.push(
            `  ${d.name.padEnd(16)} ${d.type === 'sequence' ? d.sequence.join(' ') : d.knock} -> ${d.protects.join(' ')}  open ${formatDuration(d.open_for_ms)}` +
              `${d.scope === 'flow-only' ? ' (one flow)' : ''}  idle ${formatDuration(d.flow_idle_ms)}` +
              `${d.allow_from ? `  from ${d.allow_from.join(' ')}` : ''}`,
          );
        }
        out.push('verdicts:');
        for (const [k, v] of Object.entries(status.verdicts)) out.push(`  ${k.padEnd(20)} ${v}`);
        out.push('counters:');
        for (const [k, v] of Object.entries(status.counters)) out.push(`  ${k.padEnd(20)} ${v}`);
        out.push(`grants: ${status.grants.length}`);
        for (const g of status.grants) out.push(`  ${g.source.padEnd(40)} ${g.door.padEnd(16)} ${formatDuration(Math.max(g.expires_in_ms, 1))} left`);
        out.push(`flows: ${status.flows.count}${status.flows.count > 0 ? ` (${Object.entries(status.flows.by_door).map(([d, n]) => `${d} ${n}`).join(', ')}; knockgate grants lists them)` : ''}`);
        out.push(`sources in progress: ${status.in_progress.length}`);
        for (const p of status.in_progress.slice(0, 20)) out.push(`  ${p.source.padEnd(40)} ${p.door.padEnd(16)} step ${p.step}`);
        out.push(
          `brute-force limit: ${bf.maxFailures === 0 ? 'off' : `${bf.maxFailures} failures in ${formatDuration(bf.failureWindowMs)} -> cooldown ${formatDuration(bf.cooldownMs)}`}; ` +
            `sources in cooldown: ${status.in_cooldown.length}`,
        );
        for (const c of status.in_cooldown.slice(0, 20)) out.push(`  ${c.source.padEnd(40)} ${formatDuration(Math.max(c.left_ms, 1))} left`);
        out.push(
          `first-knock filter: ${(filter.bytes / 1048576).toFixed(filter.bytes < 1048576 ? 2 : 0)} MiB, window ${formatDuration(Number(filter.windowNs / 1_000_000n))}, ` +
            `${(100 * filter.fill).toFixed(2)}% of live bits set, est. false positives ${filter.falsePositive.toExponential(1)}`,
        );
        out.push(
          `events lost: ${status.events_lost}; denial events suppressed: ${status.denials_suppressed}; knock events suppressed: ${status.knock_events_suppressed}`,
        );
        out.push('maps:');
        for (const m of status.maps) out.push(`  ${m.map.padEnd(12)} ${m.entries}/${m.max} (${((100 * m.entries) / m.max).toFixed(1)}%)`);
        process.stdout.write(out.join('\n') + '\n');
      } finally {
        gate.close();
      }
    });
}
