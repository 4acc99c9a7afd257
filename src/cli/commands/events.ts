/**
 * `knockgate events [--follow] [--json]`. The kernel ring buffer has one consumer: when the
 * daemon runs, events come from it (its recent history, or its live stream with --follow);
 * when it does not, this command reads the ring buffer itself.
 */
import { Command } from 'commander';
import { RingBufferReader, ifName } from '../../bpf/index.js';
import { subscribe, controlRequest } from '../../control.js';
import { decodeAndDescribe, eventLine, type EventContext, type GateEvent } from '../../kernel/events.js';
import { monoNowNs } from '../../kernel/gate.js';
import { MAP } from '../../kernel/layout.js';
import { parseCountArg } from '../parsers.js';
import { openTarget, resolvePinPath, targetOptions, type TargetOptions } from '../target.js';

type Opts = TargetOptions & { follow?: boolean; json?: boolean; last?: number };

function printer(json: boolean): (e: Record<string, unknown>) => void {
  return (e) => {
    if (json) process.stdout.write(JSON.stringify(e) + '\n');
    else {
      const t = typeof e['time'] === 'string' ? (e['time'] as string).slice(11, 23) : new Date().toISOString().slice(11, 23);
      process.stdout.write(`${t} ${eventLine(e as unknown as GateEvent)}\n`);
    }
  };
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

export function eventsCommand(): Command {
  return targetOptions(new Command('events'))
    .description('show kernel events (knock steps, resets, grants, denials): pretty for a person, --json for a pipe')
    .option('-f, --follow', 'keep streaming new events until interrupted')
    .option('--json', 'one JSON object per line')
    .option('-n, --last <count>', 'how many recent events to show (from a running daemon)', parseCountArg(1, 10_000), 50)
    .addHelpText('after', '\nExamples:\n  knockgate events --follow\n  knockgate events --json | jq \'select(.event == "grant")\'\n')
    .action(async (opts: Opts) => {
      const pinPath = await resolvePinPath(opts);
      const print = printer(opts.json ?? false);
      if (opts.follow) {
        const sub = await subscribe(pinPath, print);
        if (sub !== null) {
          process.stderr.write(`following the daemon's events for ${pinPath} (Ctrl-C to stop)\n`);
          await Promise.race([untilSignal(), sub.done]);
          sub.close();
          return;
        }
      } else {
        const recent = await controlRequest(pinPath, { op: 'recent', limit: opts.last ?? 50 });
        if (recent !== null) {
          for (const e of (recent['events'] as Record<string, unknown>[] | undefined) ?? []) print(e);
          return;
        }
      }
      // No daemon: read the kernel's ring buffer directly.
      const gate = await openTarget({ pinPath });
      const doors = new Map(gate.doors().map((d) => [d.slot, d.door]));
      const ctx: EventContext = {
        doorName: (s) => doors.get(s)?.name,
        doorSteps: (s) => doors.get(s)?.steps.length,
        ifName: (i) => {
          try {
            return i ? ifName(i) : undefined;
          } catch {
            return undefined;
          }
        },
        nowNs: monoNowNs,
      };
      const reader = new RingBufferReader(gate.map(MAP.EVENTS).fd, (rec) => {
        print({ time: new Date().toISOString(), ...decodeAndDescribe(rec, ctx) });
      });
      try {
        if (opts.follow) {
          process.stderr.write(`no daemon is running: following the kernel's ring buffer at ${pinPath} (Ctrl-C to stop)\n`);
          await untilSignal();
        } else reader.consume();
      } finally {
        reader.close();
        gate.close();
      }
    });
}
