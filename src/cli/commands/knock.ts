import { Command, Option } from 'commander';
import { formatDuration } from '../../config/duration.js';
import type { Step } from '../../config/model.js';
import {
  KNOCK_DEFAULTS,
  KnockError,
  doorFromConfigFile,
  formatAttempt,
  formatFailure,
  knock,
  resolveHost,
  runThen,
  type KnockDoor,
  type KnockResult,
} from '../../client/knock.js';
import { CliError, EXIT } from '../exit.js';
import { DEFAULT_CONFIG } from '../paths.js';
import { parseCountArg, parseDoorNameArg, parseDurationArg, parsePortArg, parseSequenceArg, parseTimeoutArg } from '../parsers.js';

interface KnockOpts {
  sequence?: Step[];
  config: string;
  delay: number;
  retries: number;
  ipv4?: boolean;
  ipv6?: boolean;
  check?: number;
  checkTimeout: number;
  then?: string;
  json?: boolean;
}

const HELP_AFTER = `
The knock is sent as real packets: a PORT/tcp step is a TCP SYN, a PORT/udp step a UDP datagram.
Then, if a TCP port to check is known (--check, else the door's first protected TCP port), the
client connects to it to see whether the door opened, and knocks again up to --retries times.
The --then command runs through /bin/sh once the door is open (or after the knock when there is
nothing to check), with KNOCKGATE_HOST, KNOCKGATE_ADDRESS and KNOCKGATE_DOOR set; its exit code
becomes knockgate's.

Examples:
  knockgate knock gw.example.org ssh -c ~/.config/knockgate.yaml --then 'ssh gw.example.org'
  knockgate knock 198.18.0.1 --sequence 7000/tcp,8000/udp,9000/tcp --check 22 --retries 2

Exit codes: 0 open (or sent, if it cannot be verified; with --then: the command's exit code),
1 the door did not open or the knock could not be sent, 2 usage, 4 bad config file.
`;

export function knockCommand(): Command {
  const cmd = new Command('knock')
    .description('knock on a door of a knockgate host (from the config file, or a sequence given here), check that it opened, then optionally run a command')
    .argument('<host>', 'host name or address of the gate')
    .argument('[door]', 'door name in the config file (or use --sequence)', parseDoorNameArg)
    .option('-s, --sequence <steps>', 'knock this sequence instead of a door from the config, e.g. 7000/tcp,8000/udp,9000/tcp', parseSequenceArg)
    .option('-c, --config <file>', 'config file that defines the door', DEFAULT_CONFIG)
    .addOption(new Option('--delay <duration>', 'pause between two knocks').argParser(parseDurationArg).default(KNOCK_DEFAULTS.delayMs, formatDuration(KNOCK_DEFAULTS.delayMs)))
    .option('--retries <n>', 'knock again up to N times when the check port stays closed', parseCountArg(0, 100), KNOCK_DEFAULTS.retries)
    .addOption(new Option('-4, --ipv4', 'resolve HOST to an IPv4 address only').conflicts('ipv6'))
    .addOption(new Option('-6, --ipv6', 'resolve HOST to an IPv6 address only'))
    .option('--check <port>', 'TCP port that answers once the door is open (default: the door\'s first protected TCP port)', parsePortArg)
    .addOption(
      new Option('--check-timeout <duration>', 'how long to wait for the check port to answer')
        .argParser(parseTimeoutArg)
        .default(KNOCK_DEFAULTS.checkTimeoutMs, formatDuration(KNOCK_DEFAULTS.checkTimeoutMs)),
    )
    .option('--then <command>', 'run this shell command once the door is open and exit with its exit code')
    .option('--json', 'print the result as one JSON object on stdout')
    .addHelpText('after', HELP_AFTER);
  return cmd.action(async (host: string, doorName: string | undefined, opts: KnockOpts) => {
    if (doorName !== undefined && opts.sequence !== undefined) {
      cmd.error(`error: give either a DOOR (${doorName}) or --sequence, not both`, { exitCode: EXIT.USAGE, code: 'knockgate.usage' });
    }
    if (doorName === undefined && opts.sequence === undefined) {
      cmd.error('error: say what to knock: a DOOR name from the config file, or --sequence 7000/tcp,8000/udp,9000/tcp', {
        exitCode: EXIT.USAGE,
        code: 'knockgate.usage',
      });
    }

    let door: KnockDoor;
    let checkPort: number | null = opts.check ?? null;
    if (doorName !== undefined) {
      const found = await doorFromConfigFile(opts.config, doorName).catch(userError(EXIT.USAGE));
      door = found.door;
      checkPort ??= found.checkPort;
    } else {
      door = { type: 'sequence', name: null, sequence: opts.sequence ?? [] };
    }
    const target = await resolveHost(host, opts.ipv4 ? 4 : opts.ipv6 ? 6 : undefined).catch(userError(EXIT.FAILED));
    if (checkPort === null && opts.retries > 0) {
      process.stderr.write(`knockgate: --retries ${opts.retries} is ignored: without a TCP port to check (--check PORT) the knock is sent once\n`);
    }

    const result = await knock(target, door, {
      delayMs: opts.delay,
      retries: opts.retries,
      checkPort,
      checkTimeoutMs: opts.checkTimeout,
      retryPauseMs: KNOCK_DEFAULTS.retryPauseMs,
      onAttempt: (a, r) => process.stderr.write(formatAttempt(a, r) + '\n'),
    });

    let thenCode: number | null = null;
    if (result.ok && opts.then !== undefined) {
      thenCode = await runThen(opts.then, {
        KNOCKGATE_HOST: target.host,
        KNOCKGATE_ADDRESS: target.address,
        KNOCKGATE_DOOR: door.name ?? '',
      }).catch(userError(EXIT.FAILED));
    }
    if (opts.json) printJson(result, opts.then, thenCode);
    if (!result.ok) {
      throw new CliError(`${formatFailure(result)}${opts.then !== undefined ? '; not running the --then command' : ''}`, EXIT.FAILED);
    }
    if (thenCode !== null) process.exitCode = thenCode;
  });
}

function printJson(result: KnockResult, then: string | undefined, exitCode: number | null): void {
  const out = then === undefined ? result : { ...result, then: { command: then, ran: exitCode !== null, exitCode } };
  process.stdout.write(JSON.stringify(out) + '\n');
}

/** Turns a KnockError into a CliError with the given exit code; rethrows anything else. */
function userError(code: number): (err: unknown) => never {
  return (err: unknown) => {
    if (err instanceof KnockError) throw new CliError(err.message, code);
    throw err;
  };
}
