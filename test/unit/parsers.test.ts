// The CLI's argument parsers, through commander as the commands use them: a bad value is a
// usage error (exit code 2 through main's explain()) whose message says what to write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { explain } from '../../src/cli/main.js';
import {
  parseAddressArg,
  parseCidrListArg,
  parseCountArg,
  parseDoorNameArg,
  parseDurationArg,
  parsePortArg,
  parseProtectsArg,
  parseSequenceArg,
  parseTimeoutArg,
} from '../../src/cli/parsers.js';
import { EXIT } from '../../src/cli/exit.js';

/** A program whose options use every parser; parse() returns the options or the usage error. */
function parse(args: string[]): { opts: Record<string, unknown>; door?: string } | { error: CommanderError; stderr: string } {
  let stderr = '';
  let door: string | undefined;
  const program = new Command('t')
    .exitOverride()
    .configureOutput({ writeErr: (s) => (stderr += s), writeOut: () => undefined })
    .argument('[door]', 'door', parseDoorNameArg)
    .option('--delay <duration>', 'd', parseDurationArg)
    .option('--timeout <duration>', 't', parseTimeoutArg)
    .option('--sequence <steps>', 's', parseSequenceArg)
    .option('--protects <ports>', 'p', parseProtectsArg)
    .option('--allow-from <cidrs>', 'a', parseCidrListArg)
    .option('--address <ip>', 'i', parseAddressArg)
    .option('--retries <n>', 'n', parseCountArg(0, 10))
    .option('--port <port>', 'port', parsePortArg)
    .action((d: string | undefined) => {
      door = d;
    });
  try {
    program.parse(args, { from: 'user' });
  } catch (err) {
    assert.ok(err instanceof CommanderError, `expected a CommanderError, got ${String(err)}`);
    return { error: err, stderr };
  }
  return door === undefined ? { opts: program.opts() } : { opts: program.opts(), door };
}

function ok(args: string[]): Record<string, unknown> {
  const r = parse(args);
  if ('error' in r) assert.fail(`${args.join(' ')}: unexpected error ${r.error.message}`);
  return r.opts;
}

/** The value is rejected as a usage error (exit 2) and the message is the one given. */
function rejects(args: string[], message: string): void {
  const r = parse(args);
  if (!('error' in r)) return assert.fail(`${args.join(' ')}: expected a usage error`);
  assert.equal(r.error.code, 'commander.invalidArgument', args.join(' '));
  assert.equal(explain(r.error).code, EXIT.USAGE, 'main maps it to the usage exit code');
  assert.ok(r.error.message.endsWith(` ${message}`), `${args.join(' ')}:\n  got:  ${r.error.message}\n  want: ... ${message}`);
  assert.match(r.stderr, /is invalid( for argument .*)?\. /);
}

test('parseDurationArg and parseTimeoutArg: units, bounds, and a message that says how to write one', () => {
  assert.equal(ok(['--delay', '100ms'])['delay'], 100);
  assert.equal(ok(['--delay', '5s'])['delay'], 5_000);
  assert.equal(ok(['--delay', '10m'])['delay'], 600_000);
  assert.equal(ok(['--delay', '0ms'])['delay'], 0);
  rejects(['--delay', '100'], '100 has no unit: write 100s for seconds or 100ms for milliseconds (units: ms, s, m, h)');
  rejects(['--delay', '1.5s'], '"1.5s" is not a duration: use whole numbers, e.g. 1500ms rather than 1.5s');
  rejects(['--delay', '3d'], '"3d" is not a duration: "d" is not a unit (units are ms, s, m and h), e.g. 500ms, 5s, 2m, 1h30m');
  rejects(['--delay', '25h'], '25h is too long: at most 24h');
  assert.equal(ok(['--timeout', '2s'])['timeout'], 2_000);
  rejects(['--timeout', '0ms'], '0ms is too short: a duration must be more than 0');
  rejects(['--timeout', '25h'], '25h is too long: at most 24h');
});

test('parseSequenceArg: steps, limits, and no step repeating the one before', () => {
  assert.deepEqual(ok(['--sequence', '7000/tcp,8000/udp,9000/tcp'])['sequence'], [
    { port: 7000, proto: 'tcp' },
    { port: 8000, proto: 'udp' },
    { port: 9000, proto: 'tcp' },
  ]);
  assert.deepEqual(ok(['--sequence', ' 7000/TCP , 7000/udp'])['sequence'], [
    { port: 7000, proto: 'tcp' },
    { port: 7000, proto: 'udp' },
  ]);
  assert.deepEqual(ok(['--sequence', '7000/tcp,8000/tcp,7000/tcp'])['sequence'], [
    { port: 7000, proto: 'tcp' },
    { port: 8000, proto: 'tcp' },
    { port: 7000, proto: 'tcp' },
  ], 'a step may come back later, just not right after itself');
  const sixteen = Array.from({ length: 16 }, (_, i) => `${7000 + i}/udp`).join(',');
  assert.equal((ok(['--sequence', sixteen])['sequence'] as unknown[]).length, 16);
  rejects(['--sequence', `${sixteen},9999/tcp`], '17 steps: a sequence has at most 16');
  rejects(['--sequence', '7000/tcp,7000/tcp'], '7000/tcp repeats the step before it: the gate takes a repeated knock for a retransmission, so this sequence could never complete');
  rejects(['--sequence', '7000'], '"7000" has no protocol: write 7000/tcp or 7000/udp');
  rejects(['--sequence', '7000/tcp,8000/icmp'], '"8000/icmp" is not a knock step: write PORT/tcp or PORT/udp, e.g. 8000/udp');
  rejects(['--sequence', '7000-7005/tcp'], '"7000-7005/tcp" is a range: a knock step is a single port, e.g. 7000/tcp');
  rejects(['--sequence', '70000/tcp'], '"70000/tcp": port 70000 is out of range: ports are 1..65535');
  rejects(['--sequence', '7000/tcp,,8000/udp'], '"7000/tcp,,8000/udp" has an empty item: separate knock steps with single commas, e.g. 7000/tcp,8000/udp,9000/tcp');
  rejects(['--sequence', ''], 'no knock steps given: write e.g. 7000/tcp,8000/udp,9000/tcp');
});

test('parseProtectsArg: ports and ranges', () => {
  assert.deepEqual(ok(['--protects', '22/tcp,60000-61000/udp'])['protects'], [
    { first: 22, last: 22, proto: 'tcp' },
    { first: 60000, last: 61000, proto: 'udp' },
  ]);
  rejects(['--protects', '22'], '"22" has no protocol: write 22/tcp or 22/udp');
  rejects(['--protects', '61000-60000/udp'], '"61000-60000/udp" is backwards: write 60000-61000/udp');
  rejects(['--protects', Array.from({ length: 17 }, (_, i) => `${i + 1}/tcp`).join(',')], '17 entries: a door protects at most 16 ports or ranges');
});

test('parseCidrListArg: networks, bare addresses, duplicates dropped', () => {
  const texts = (ok(['--allow-from', '198.18.0.0/15,2001:db8::/32,198.18.0.7,198.18.0.0/15'])['allowFrom'] as { text: string }[]).map((c) => c.text);
  assert.deepEqual(texts, ['198.18.0.0/15', '2001:db8::/32', '198.18.0.7/32']);
  rejects(['--allow-from', '198.18.0.1/15'], '198.18.0.1/15 has host bits set: did you mean 198.18.0.0/15?');
  rejects(['--allow-from', '198.18.0.0/33'], '"198.18.0.0/33" has a bad prefix length "33": an IPv4 prefix is 0..32');
});

test('parseAddressArg: the 16-byte form, strict text', () => {
  const v4 = ok(['--address', '198.18.0.1'])['address'] as Buffer;
  assert.equal(v4.toString('hex'), '00000000000000000000ffffc6120001');
  const v6 = ok(['--address', '2001:db8::2'])['address'] as Buffer;
  assert.equal(v6.toString('hex'), '20010db8000000000000000000000002');
  rejects(['--address', '198.18.0.01'], '"198.18.0.01" is not an IP address: leading zeros are ambiguous (octal or decimal?): write 198.18.0.1');
  rejects(['--address', 'gateway'], '"gateway" is not an IPv4 or IPv6 address');
});

test('parseCountArg and parsePortArg: whole numbers in range', () => {
  assert.equal(ok(['--retries', '0'])['retries'], 0);
  assert.equal(ok(['--retries', '10'])['retries'], 10);
  rejects(['--retries', '11'], '11 is out of range: write a number 0..10');
  rejects(['--retries', '-1'], '-1 is out of range: write a number 0..10');
  rejects(['--retries', '2.5'], '"2.5" is not a whole number: write a number 0..10');
  rejects(['--retries', 'many'], '"many" is not a whole number: write a number 0..10');
  assert.equal(ok(['--port', '22'])['port'], 22);
  rejects(['--port', '0'], '"0": port 0 is out of range: ports are 1..65535');
  rejects(['--port', 'ssh'], '"ssh" is not a port: ports are 1..65535');
});

test('parseDoorNameArg: the config rule for door names', () => {
  const r = parse(['ssh-2_b']);
  assert.ok(!('error' in r) && r.door === 'ssh-2_b');
  rejects(['--', '-ssh'], '"-ssh" is not a door name: use letters, digits, "_" and "-", starting with a letter or digit');
  rejects(['my door'], '"my door" is not a door name: use letters, digits, "_" and "-", starting with a letter or digit');
  rejects(['a'.repeat(32)], `"${'a'.repeat(32)}" is not a door name: it is 32 characters long; at most 31`);
});

test('the parsers throw InvalidArgumentError when called directly', () => {
  assert.throws(() => parseSequenceArg('7000'), InvalidArgumentError);
  assert.throws(() => parseDurationArg('soon'), InvalidArgumentError);
  assert.throws(() => parseDoorNameArg(''), (err: unknown) => err instanceof InvalidArgumentError && err.message === '"" is not a door name: it is empty');
});
