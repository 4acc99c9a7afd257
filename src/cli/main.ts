#!/usr/bin/env node
/**
 * knockgate's command line: one factory per subcommand (src/cli/commands/), errors to stderr
 * with what to do, exit codes from exit.ts.
 */
import { Command, CommanderError } from 'commander';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { BpfError } from '../bpf/index.js';
import { ConfigError } from '../config/errors.js';
import { GateError, NoGateError } from '../kernel/gate.js';
import { DaemonRunningError } from '../kernel/lock.js';
import { checkCommand } from './commands/check.js';
import { completionCommand } from './commands/completion.js';
import { knockCommand } from './commands/knock.js';
import { keygenCommand } from './commands/keygen.js';
import { demoCommand } from './commands/demo.js';
import { detachCommand } from './commands/detach.js';
import { doorCommand } from './commands/door.js';
import { eventsCommand } from './commands/events.js';
import { fleetCommand } from './commands/fleet.js';
import { grantCommand, grantsCommand, revokeCommand } from './commands/grants.js';
import { runCommand } from './commands/run.js';
import { statusCommand } from './commands/status.js';
import { CliError, EXIT } from './exit.js';
import { version } from '../version.js';

export function buildProgram(): Command {
  const program: Command = new Command('knockgate')
    .description('eBPF/XDP port-knocking gate')
    .version(version(), '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      '\nExit codes: 0 done, 1 failed, 2 usage error, 3 no gate loaded, 4 invalid config file, 5 a daemon already serves this gate.\n' +
        'Example:\n  sudo knockgate run -c /etc/knockgate/knockgate.yaml\n  knockgate knock server.example ssh -c client.yaml --then "ssh server.example"\n',
    )
    .addCommand(runCommand())
    .addCommand(checkCommand())
    .addCommand(doorCommand())
    .addCommand(statusCommand())
    .addCommand(grantsCommand())
    .addCommand(grantCommand())
    .addCommand(revokeCommand())
    .addCommand(eventsCommand())
    .addCommand(fleetCommand())
    .addCommand(detachCommand())
    .addCommand(knockCommand())
    .addCommand(keygenCommand())
    .addCommand(completionCommand(() => program))
    .addCommand(demoCommand());
  return program;
}

/** Map an error to its message and exit code. */
export function explain(err: unknown): { message: string; code: number } {
  if (err instanceof CommanderError) return { message: '', code: err.exitCode === 0 ? EXIT.OK : EXIT.USAGE };
  if (err instanceof ConfigError) return { message: `${err.format()}\nconfig rejected: nothing was changed`, code: EXIT.BAD_CONFIG };
  if (err instanceof NoGateError) return { message: err.message, code: EXIT.NO_GATE };
  if (err instanceof DaemonRunningError) return { message: err.message, code: EXIT.DAEMON_RUNNING };
  if (err instanceof CliError) return { message: err.message, code: err.exitCode };
  if (err instanceof GateError || err instanceof BpfError) return { message: err.message, code: EXIT.FAILED };
  if (err instanceof Error) return { message: `${err.message}\n(this is a bug if the message does not say what to do: please report it)`, code: EXIT.FAILED };
  return { message: String(err), code: EXIT.FAILED };
}

/** exitOverride on every command, so usage errors come back as CommanderError (exit 2). */
function overrideExits(cmd: Command): void {
  cmd.exitOverride();
  for (const sub of cmd.commands) overrideExits(sub);
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  overrideExits(program);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (err) {
    const { message, code } = explain(err);
    if (message) process.stderr.write(`knockgate: ${message}\n`);
    return code;
  }
}

function invokedDirectly(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return pathToFileURL(realpathSync(entry)).href === import.meta.url;
  } catch {
    return false;
  }
}
if (invokedDirectly()) {
  main(process.argv).then((code) => process.exit(code));
}
