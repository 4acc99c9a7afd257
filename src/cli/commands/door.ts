/**
 * `knockgate door set|add|remove|list`: change the live gate's doors without detaching it.
 * Every change is validated exactly like a config file (the live doors are rendered as config
 * and edited with src/config/edit.ts), written into the inactive generation and switched in
 * atomically (Gate.applyDoors). --save applies the same edit to the config file, keeping its
 * comments and layout; the file is only written once the kernel took the change.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Command } from 'commander';
import {
  ConfigError,
  addDoorToText,
  formatDuration,
  formatRange,
  formatStep,
  removeDoorFromText,
  setDoorInText,
  writeFileAtomic,
  type Cidr,
  type DoorChanges,
  type DoorConfig,
  type EditResult,
  type NewDoor,
  type PortRange,
  type Scope,
  type Step,
} from '../../config/index.js';
import { notifyDaemon } from '../../control.js';
import { describeKnockRule, doorConfigOf, doorJson, doorsAsConfigText } from '../../kernel/doors.js';
import { kindOf } from '../../doors/index.js';
import type { Gate } from '../../kernel/gate.js';
import { withGateLock } from '../../kernel/lock.js';
import { CliError, EXIT } from '../exit.js';
import { parseCidrListArg, parseDoorNameArg, parseDurationArg, parseProtectsArg, parseScopeArg, parseSequenceArg } from '../parsers.js';
import { DEFAULT_CONFIG } from '../paths.js';
import { openTarget, resolvePinPath, targetOptions, toJson, type TargetOptions } from '../target.js';

interface ChangeOptions extends TargetOptions {
  sequence?: Step[];
  protects?: PortRange[];
  allowFrom?: Cidr[];
  anySource?: boolean;
  stepTimeout?: number;
  sequenceTimeout?: number;
  openFor?: number;
  flowIdle?: number;
  scope?: Scope;
  save?: boolean;
}

function changesOf(o: ChangeOptions): DoorChanges {
  const c: DoorChanges = {};
  if (o.sequence !== undefined) c.sequence = o.sequence;
  if (o.protects !== undefined) c.protects = o.protects;
  if (o.allowFrom !== undefined && o.anySource) throw new CliError('--allow-from and --any-source contradict each other: pick one', EXIT.USAGE);
  if (o.allowFrom !== undefined) c.allowFrom = o.allowFrom;
  if (o.anySource) c.allowFrom = null;
  if (o.stepTimeout !== undefined) c.stepTimeoutMs = o.stepTimeout;
  if (o.sequenceTimeout !== undefined) c.sequenceTimeoutMs = o.sequenceTimeout;
  if (o.openFor !== undefined) c.openForMs = o.openFor;
  if (o.flowIdle !== undefined) c.flowIdleMs = o.flowIdle;
  if (o.scope !== undefined) c.scope = o.scope === 'source' ? null : o.scope;
  return c;
}

function liveDoors(gate: Gate): DoorConfig[] {
  return gate.doors().map((d) => doorConfigOf(d.door, d.allow));
}

/** A validation failure of the edited live doors, worded for a command line. */
function liveEditError(err: unknown, door: string): never {
  if (err instanceof ConfigError) {
    const lines = err.issues.map((i) => `  ${i.path}: ${i.message}`);
    throw new CliError(`door ${door}: the change is not valid:\n${lines.join('\n')}`, EXIT.USAGE);
  }
  if (err instanceof Error && err.name === 'DoorEditError') throw new CliError(err.message.replace('<config>', 'the live gate'), EXIT.USAGE);
  throw err;
}

function describe(d: DoorConfig): string {
  return (
    `${d.name}${d.type !== 'sequence' ? ` (${d.type})` : ''}: ${describeKnockRule(d)} -> ${d.protects.map(formatRange).join(' ')}` +
    ` (${kindOf(d).config.sequenced ? `step ${formatDuration(d.stepTimeoutMs)}, sequence ${formatDuration(d.sequenceTimeoutMs)}, ` : ''}open ${formatDuration(d.openForMs)}` +
    `${d.scope === 'flow-only' ? ' for one flow' : ''}, flow idle ${formatDuration(d.flowIdleMs)}` +
    `${d.allowFrom ? `, from ${d.allowFrom.map((c) => c.text).join(' ')}` : ''})`
  );
}

/**
 * The shared path of set/add/remove: lock, validate the live edit (and the file edit with
 * --save), switch the kernel, write the file, tell the daemon.
 */
async function applyEdit(
  opts: ChangeOptions,
  door: string,
  verb: string,
  edit: (text: string, fileName: string, file: string | null) => EditResult,
): Promise<void> {
  const pinPath = await resolvePinPath(opts);
  const gate = await openTarget({ pinPath });
  try {
    const savePath = opts.save ? resolve(opts.config ?? DEFAULT_CONFIG) : null;
    const result = await withGateLock(pinPath, async () => {
      let live: EditResult;
      try {
        live = edit(doorsAsConfigText(liveDoors(gate)), '<config>', null);
      } catch (err) {
        liveEditError(err, door);
      }
      let saved: EditResult | null = null;
      if (savePath !== null) {
        const text = await readFile(savePath, 'utf8').catch((err: NodeJS.ErrnoException) => {
          throw new CliError(`--save: cannot read ${savePath} (${err.code ?? err.message}): pass the config file with -c`);
        });
        try {
          saved = edit(text, savePath, savePath);
        } catch (err) {
          if (err instanceof ConfigError) {
            throw new CliError(`--save: the change would make ${savePath} invalid; nothing was changed:\n${err.format()}`, EXIT.BAD_CONFIG);
          }
          throw new CliError(`--save: ${(err as Error).message}; nothing was changed`, EXIT.USAGE);
        }
      }
      const plan = gate.applyDoors(live.config.doors);
      if (saved !== null && savePath !== null) await writeFileAtomic(savePath, saved.text);
      return { plan, live };
    });
    const now = result.live.config.doors.find((d) => d.name === door);
    const restarted = result.plan.doors.find((d) => d.config.name === door)?.rulesChanged ?? false;
    const notified = await notifyDaemon(pinPath, `door ${verb}`, { door, ...(now ? { door_config: describe(now) } : {}) });
    if (now) process.stdout.write(`door ${describe(now)}\n`);
    else process.stdout.write(`door ${door} removed; its grants were cut\n`);
    if (now && restarted && verb !== 'add') process.stdout.write('sources midway through the old sequence start over\n');
    if (savePath !== null) process.stdout.write(`saved to ${savePath}\n`);
    else {
      process.stdout.write(
        `this change lives in the kernel until the daemon reloads its config (SIGHUP or restart): add --save to write it to ${opts.config ?? DEFAULT_CONFIG}\n`,
      );
    }
    if (!notified) process.stdout.write('(no daemon is running: the gate was changed directly)\n');
  } finally {
    gate.close();
  }
}

function withChangeOptions(cmd: Command): Command {
  return targetOptions(cmd)
    .option('--sequence <steps>', 'knock steps, e.g. 7000/tcp,8000/udp,9000/tcp', parseSequenceArg)
    .option('--protects <ports>', 'protected ports, e.g. 22/tcp,60000-61000/udp', parseProtectsArg)
    .option('--allow-from <cidrs>', 'sources that may knock, e.g. 198.18.0.0/15,2001:db8::/32', parseCidrListArg)
    .option('--any-source', 'remove the allow list: any source may knock')
    .option('--step-timeout <duration>', 'longest gap between two knocks, e.g. 5s', parseDurationArg)
    .option('--sequence-timeout <duration>', 'longest time from first to last knock, e.g. 15s', parseDurationArg)
    .option('--open-for <duration>', 'how long a completed sequence opens the door, e.g. 30s', parseDurationArg)
    .option('--flow-idle <duration>', 'how long a connection opened under a grant may stay idle, e.g. 10m', parseDurationArg)
    .option('--scope <scope>', 'what a grant opens: source (the ports, to the address) or flow-only (one connection)', parseScopeArg)
    .option('--save', `also write the change into the config file (-c, default ${DEFAULT_CONFIG}), keeping its comments`);
}

export function doorCommand(): Command {
  const door = new Command('door').description('change the live gate\'s doors without detaching it');

  door.addCommand(
    withChangeOptions(new Command('set'))
      .description('change a door of the live gate atomically; sources midway through its old sequence start over')
      .argument('<name>', 'door name', parseDoorNameArg)
      .addHelpText('after', '\nExample:\n  knockgate door set ssh --sequence 7000/tcp,8000/udp,9000/tcp --open-for 60s --save\n')
      .action(async (name: string, opts: ChangeOptions) => {
        const changes = changesOf(opts);
        if (Object.keys(changes).length === 0) {
          throw new CliError('door set: nothing to change: give --sequence, --protects, --allow-from, --any-source, --scope or a timeout', EXIT.USAGE);
        }
        await applyEdit(opts, name, 'set', (text, fileName, file) => setDoorInText(text, name, changes, fileName, file));
      }),
  );

  door.addCommand(
    withChangeOptions(new Command('add'))
      .description('add a door to the live gate')
      .argument('<name>', 'door name', parseDoorNameArg)
      .addHelpText('after', '\nExample:\n  knockgate door add web --sequence 7100/udp,7200/tcp --protects 8443/tcp --save\n')
      .action(async (name: string, opts: ChangeOptions) => {
        const changes = changesOf(opts);
        if (opts.sequence === undefined || opts.protects === undefined) {
          throw new CliError('door add: --sequence and --protects are required', EXIT.USAGE);
        }
        const nd: NewDoor = { ...changes, sequence: opts.sequence, protects: opts.protects };
        await applyEdit(opts, name, 'add', (text, fileName, file) => addDoorToText(text, name, nd, fileName, file));
      }),
  );

  door.addCommand(
    targetOptions(new Command('remove'))
      .description('remove a door from the live gate; its grants are cut')
      .argument('<name>', 'door name', parseDoorNameArg)
      .option('--save', `also remove it from the config file (-c, default ${DEFAULT_CONFIG})`)
      .addHelpText('after', '\nExample:\n  knockgate door remove web --save\n')
      .action(async (name: string, opts: ChangeOptions) => {
        await applyEdit(opts, name, 'remove', (text, fileName, file) => removeDoorFromText(text, name, fileName, file));
      }),
  );

  door.addCommand(
    targetOptions(new Command('list'))
      .description('list the live gate\'s doors')
      .option('--json', 'JSON output')
      .addHelpText('after', '\nExample:\n  knockgate door list --json\n')
      .action(async (opts: TargetOptions & { json?: boolean }) => {
        const gate = await openTarget(opts);
        try {
          if (opts.json) {
            process.stdout.write(toJson(gate.doors().map((d) => doorJson(d.slot, d.door, d.allow))) + '\n');
          } else {
            for (const d of gate.doors()) process.stdout.write(`${describe(doorConfigOf(d.door, d.allow))}\n`);
          }
        } finally {
          gate.close();
        }
      }),
  );
  return door;
}
