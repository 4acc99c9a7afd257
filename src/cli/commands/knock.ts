import { Command, Option } from 'commander';
import { formatDuration } from '../../config/duration.js';
import { DEFAULTS, DOOR_TYPES, LIMITS, type DoorType } from '../../config/model.js';
import {
  KNOCK_DEFAULTS,
  KnockError,
  checkPortOf,
  findDoor,
  formatAttempt,
  formatFailure,
  knock,
  knockDoorOf,
  resolveHost,
  runThen,
  type KnockDoor,
  type KnockResult,
} from '../../client/knock.js';
import { DOORS, kindOfType, type DoorOptions } from '../../doors/index.js';
import { CliError, EXIT } from '../exit.js';
import { DEFAULT_CONFIG } from '../paths.js';
import {
  parseAddressArg,
  parseCountArg,
  parseDoorNameArg,
  parseDurationArg,
  parsePayloadArg,
  parsePortArg,
  parseRotatingRangeArg,
  parseSequenceArg,
  parseTimeoutArg,
  parseUdpPortArg,
  parseWindowArg,
} from '../parsers.js';

interface KnockOpts extends DoorOptions {
  type?: DoorType;
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
A DOOR from the config file is knocked as its type says, with the key files the config names
(they must be private to their owner: chmod 600). Without the config, --sequence gives a fixed
sequence, and --type a door of another type with the options marked "with --type" above; DOOR
is then the door's name at the gate (rotating, spa and signed knocks are bound to it) and the
config file is not read.

  sequence  PORT/tcp steps are TCP SYNs, PORT/udp steps UDP datagrams (--sequence)
  rotating  the sequence of the current time window, derived from a shared secret
            (--secret-file, --range, --length, --window); good for one grant
  spa       one UDP datagram with a MAC made with the door's key (--port, --key-file)
  signed    one UDP datagram signed with your Ed25519 private key (--port, --key-file;
            make the key pair with \`knockgate keygen FILE\`)
  payload   one UDP datagram (--port) or ICMP echo request (--icmp) carrying --payload

spa and signed knocks name the source address the gate sees: the local address of the route to
HOST, or --source ADDR when a NAT between you and the gate changes it.

Then, if a TCP port to check is known (--check, else the door's first protected TCP port), the
client connects to it to see whether the door opened, and knocks again up to --retries times.
The --then command runs through /bin/sh once the door is open (or after the knock when there is
nothing to check), with KNOCKGATE_HOST, KNOCKGATE_ADDRESS and KNOCKGATE_DOOR set; its exit code
becomes knockgate's.

Examples:
  knockgate knock gw.example.org ssh -c ~/.config/knockgate.yaml --then 'ssh gw.example.org'
  knockgate knock 198.18.0.1 --sequence 7000/tcp,8000/udp,9000/tcp --check 22 --retries 2
  knockgate knock gw.example.org rot --type rotating --secret-file ~/.config/knockgate/rot.secret --range 40000-40999/udp --check 22
  knockgate knock gw.example.org spa --type spa --port 62201 --key-file ~/.config/knockgate/spa.key --check 22
  knockgate knock gw.example.org sig -c client.yaml --key-file ~/.config/knockgate/id_knock --source 203.0.113.7
  knockgate knock gw.example.org --type payload --payload hex:6b6e6f636b --icmp --check 22

Exit codes: 0 open (or sent, if it cannot be verified; with --then: the command's exit code),
1 the door did not open or the knock could not be sent, 2 usage (also: unknown door, unusable
key file), 4 bad config file.
`;

/**
 * The options that describe a door (in the order usage errors look for them), and the door types
 * each one is for (the door modules' client.options). commandLineOnly: only for a door given here.
 */
const DOOR_OPTIONS: { key: keyof DoorOptions; flag: string; types: readonly DoorType[]; commandLineOnly: boolean }[] = (
  [
    ['keyFile', '--key-file', false],
    ['secretFile', '--secret-file', false],
    ['source', '--source', false],
    ['port', '--port', true],
    ['range', '--range', true],
    ['length', '--length', true],
    ['window', '--window', true],
    ['payload', '--payload', true],
    ['icmp', '--icmp', true],
  ] as const
).map(([key, flag, commandLineOnly]) => ({ key, flag, commandLineOnly, types: DOOR_TYPES.filter((t) => DOORS[t].client.options.includes(key)) }));

/** "spa and signed doors", "rotating doors" */
function typesText(types: readonly DoorType[]): string {
  return `${types.length === 1 ? types[0] : `${types.slice(0, -1).join(', ')} and ${types.at(-1)}`} doors`;
}

/** "a rotating door", "an spa door" */
function aDoor(type: DoorType): string {
  return `${type === 'spa' ? 'an' : 'a'} ${type} door`;
}

export function knockCommand(): Command {
  const cmd = new Command('knock')
    .description('knock on a door of a knockgate host (from the config file, or given here), check that it opened, then optionally run a command')
    .argument('<host>', 'host name or address of the gate')
    .argument('[door]', 'door name in the config file (with --type: the door\'s name at the gate)', parseDoorNameArg)
    .option('-s, --sequence <steps>', 'knock this sequence instead of a door from the config, e.g. 7000/tcp,8000/udp,9000/tcp', parseSequenceArg)
    .addOption(new Option('--type <type>', 'give the door here instead of from the config file: its type').choices(DOOR_TYPES))
    .option('--key-file <file>', 'spa: the door\'s key file (instead of the config\'s key_file); signed: your private key')
    .option('--secret-file <file>', 'rotating: the door\'s secret file (instead of the config\'s secret_file)')
    .option('--port <port>', 'with --type spa, signed or payload: the UDP port of the knock datagram', parseUdpPortArg)
    .option('--range <ports>', 'with --type rotating: the ports the sequence is drawn from, e.g. 40000-40999/udp', parseRotatingRangeArg)
    .addOption(
      new Option('--length <n>', `with --type rotating: steps per sequence (${LIMITS.rotatingMinLength}..${LIMITS.rotatingMaxLength}; default ${DEFAULTS.rotatingLength})`).argParser(
        parseCountArg(LIMITS.rotatingMinLength, LIMITS.rotatingMaxLength),
      ),
    )
    .option('--window <duration>', `with --type rotating: how long one sequence is valid (default ${formatDuration(DEFAULTS.windowMs)})`, parseWindowArg)
    .option('--payload <bytes>', `with --type payload: the payload, text or hex:6b6e6f636b (1..${LIMITS.payloadMaxBytes} bytes)`, parsePayloadArg)
    .option('--icmp', 'with --type payload: send an ICMP echo request instead of a UDP datagram')
    .option('--source <address>', 'spa and signed: the source address the gate sees, when a NAT changes yours', parseAddressArg)
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

  const usageError = (message: string): never =>
    cmd.error(`error: ${message}`, { exitCode: EXIT.USAGE, code: 'knockgate.usage' });

  return cmd.action(async (host: string, doorName: string | undefined, opts: KnockOpts) => {
    const given = DOOR_OPTIONS.filter((o) => opts[o.key] !== undefined);
    const type: DoorType | undefined = opts.type ?? (opts.sequence !== undefined ? 'sequence' : undefined);

    let door: KnockDoor;
    let checkPort: number | null = opts.check ?? null;
    if (type === undefined) {
      // a door from the config file
      if (doorName === undefined) {
        usageError('say what to knock: a DOOR name from the config file, or --sequence 7000/tcp,8000/udp,9000/tcp (or --type TYPE for another door given here)');
      }
      const name = doorName ?? '';
      const here = given.find((o) => o.commandLineOnly);
      if (here !== undefined) {
        usageError(`${here.flag} is for a door given on the command line with --type; door ${name} comes from the config file, which sets it: drop ${here.flag}, or add --type`);
      }
      const found = await findDoor(opts.config, name).catch(userError(EXIT.USAGE));
      const wrong = given.find((o) => !o.types.includes(found.type));
      if (wrong !== undefined) {
        usageError(`${wrong.flag} is for ${typesText(wrong.types)}; door ${name} in ${opts.config} is ${aDoor(found.type)}: drop ${wrong.flag}`);
      }
      door = await knockDoorOf(found, keyFiles(opts)).catch(userError(EXIT.USAGE));
      checkPort ??= checkPortOf(found);
    } else {
      door = await commandLineDoor(type, doorName, opts, given, usageError);
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
      ...(opts.source === undefined ? {} : { source: opts.source }),
      onNote: (note) => process.stderr.write(`knockgate: ${note}\n`),
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

function keyFiles(opts: KnockOpts): { keyFile?: string; secretFile?: string } {
  return {
    ...(opts.keyFile === undefined ? {} : { keyFile: opts.keyFile }),
    ...(opts.secretFile === undefined ? {} : { secretFile: opts.secretFile }),
  };
}

/**
 * The door given on the command line (--sequence, or --type with its options); every option
 * that does not fit, and every one missing, is a usage error that says what to write.
 */
async function commandLineDoor(
  type: DoorType,
  doorName: string | undefined,
  opts: KnockOpts,
  given: typeof DOOR_OPTIONS,
  usageError: (message: string) => never,
): Promise<KnockDoor> {
  const typeText = opts.type === undefined ? '--sequence' : `--type ${type}`;
  if (opts.sequence !== undefined && type !== 'sequence') {
    usageError(`--sequence gives the steps of a sequence door: it does not go with --type ${type}`);
  }
  const wrong = given.find((o) => !o.types.includes(type));
  if (wrong !== undefined) usageError(`${wrong.flag} is for ${typesText(wrong.types)}, not with ${typeText}: drop ${wrong.flag}`);
  const need = (what: string, example: string): never => usageError(`${typeText} needs ${what}: add ${example}`);
  const named = (example: string): string => {
    if (doorName === undefined) {
      return need('the DOOR name the gate knows the door by (the knock is bound to it)', `it after HOST, e.g. knockgate knock HOST ${example} --type ${type} ...`);
    }
    return doorName;
  };
  return kindOfType(type).client.fromCommandLine(opts, { name: doorName, typeText, named, need, usageError }).catch(userError(EXIT.USAGE));
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
