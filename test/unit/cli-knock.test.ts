// The knock client without a kernel: a fake gate on the loopback interface listens on the knock
// ports (TCP and UDP), records what arrives, and starts its "protected" TCP service once the
// right sequence came in. The CLI's usage errors are checked through commander's exitOverride().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { knockCommand } from '../../src/cli/commands/knock.js';
import { EXIT } from '../../src/cli/exit.js';
import { explain } from '../../src/cli/main.js';
import {
  KnockError,
  checkPortOf,
  doorFromConfigFile,
  formatAttempt,
  knock,
  resolveHost,
  runThen,
  type KnockOptions,
} from '../../src/client/knock.js';
import type { Step } from '../../src/config/model.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

// ---- a fake gate ----------------------------------------------------------------------------

class FakeGate {
  /** "PORT/proto" in order of arrival */
  readonly arrived: string[] = [];
  readonly steps: Step[] = [];
  checkPort = 0;
  private readonly tcp: Server[] = [];
  private readonly udp: UdpSocket[] = [];
  private service: Server | null = null;

  constructor(
    readonly host: string,
    private readonly protos: Step['proto'][],
  ) {}

  async start(): Promise<void> {
    for (const proto of this.protos) {
      if (proto === 'tcp') {
        const s = createServer((c) => {
          c.on('error', () => undefined);
          c.destroy();
        });
        await new Promise<void>((resolve) => s.listen(0, this.host, resolve));
        const port = (s.address() as AddressInfo).port;
        s.on('connection', () => this.hit(`${port}/tcp`));
        this.tcp.push(s);
        this.steps.push({ port, proto });
      } else {
        const u = createSocket(this.host.includes(':') ? 'udp6' : 'udp4');
        await new Promise<void>((resolve) => u.bind(0, this.host, resolve));
        const port = u.address().port;
        u.on('message', () => this.hit(`${port}/udp`));
        this.udp.push(u);
        this.steps.push({ port, proto });
      }
    }
    // A port for the service that nothing listens on yet: bind, read the port, close.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, this.host, resolve));
    this.checkPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  }

  get expected(): string[] {
    return this.steps.map((s) => `${s.port}/${s.proto}`);
  }

  private hit(step: string): void {
    this.arrived.push(step);
    const want = this.expected;
    if (this.service === null && this.arrived.slice(-want.length).join(' ') === want.join(' ')) {
      this.service = createServer((c) => {
        c.on('error', () => undefined); // the client hangs up as soon as it connected
        c.end('hello\n');
      });
      // Without a host, listen() binds at once (no lookup); a process knocking from outside can
      // still probe before this runs: the tests that expect the door to open allow retries.
      this.service.listen(this.checkPort);
    }
  }

  async stop(): Promise<void> {
    for (const s of [...this.tcp, ...(this.service ? [this.service] : [])]) await new Promise<void>((resolve) => s.close(() => resolve()));
    for (const u of this.udp) u.close();
  }
}

const FAST: Omit<KnockOptions, 'checkPort' | 'retries'> = { delayMs: 20, checkTimeoutMs: 500, retryPauseMs: 50 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function withGate(host: string, protos: Step['proto'][], fn: (gate: FakeGate) => Promise<void>): Promise<void> {
  const gate = new FakeGate(host, protos);
  await gate.start();
  try {
    await fn(gate);
  } finally {
    await gate.stop();
  }
}

// ---- the library ---------------------------------------------------------------------------

describe('knock(): send, verify, retry', () => {
  for (const host of ['127.0.0.1', '::1']) {
    test(`the right sequence opens the fake gate on the first attempt (${host})`, async () => {
      await withGate(host, ['tcp', 'udp', 'tcp'], async (gate) => {
        const target = await resolveHost(host);
        const lines: string[] = [];
        const r = await knock(target, { type: 'sequence', name: null, sequence: gate.steps }, {
          ...FAST,
          retries: 3,
          checkPort: gate.checkPort,
          onAttempt: (a, res) => lines.push(formatAttempt(a, res)),
        });
        await sleep(50);
        assert.deepEqual(gate.arrived.slice(0, 3), gate.expected, 'each step arrived, in order, with its protocol');
        assert.equal(r.ok, true);
        assert.equal(r.open, true);
        assert.equal(r.tries, 4);
        assert.deepEqual(r.check, { port: gate.checkPort, proto: 'tcp', timeoutMs: 500 });
        assert.equal(lines.length, r.attempts.length);
        assert.equal(gate.arrived.length, 3 * r.attempts.length);
        const where = host.includes(':') ? `[${host}]:${gate.checkPort}` : `${host}:${gate.checkPort}`;
        assert.match(lines.at(-1) ?? '', new RegExp(`^knock ${r.attempts.length}/4: ${gate.expected.join(' ')} to ${host.replace(/[.]/g, '\\.')}: ${where.replace(/[.[\]]/g, '\\$&')}/tcp is open \\(\\d+ ms\\)$`));
      });
    });
  }

  test('the delay is kept between knocks', async () => {
    await withGate('127.0.0.1', ['udp', 'udp', 'udp'], async (gate) => {
      const start = performance.now();
      await knock(await resolveHost('127.0.0.1'), { type: 'sequence', name: null, sequence: gate.steps }, { ...FAST, delayMs: 150, retries: 0, checkPort: null });
      const ms = performance.now() - start;
      assert.ok(ms >= 290 && ms < 1500, `3 knocks with 150ms between them took ${ms} ms`);
    });
  });

  test('a wrong sequence is knocked 1 + retries times and reported as not open', async () => {
    await withGate('127.0.0.1', ['udp', 'tcp', 'udp'], async (gate) => {
      const wrong = [gate.steps[1]!, gate.steps[0]!]; // twice in a row never holds the whole sequence
      const lines: string[] = [];
      const r = await knock(await resolveHost('127.0.0.1'), { type: 'sequence', name: 'ssh', sequence: wrong }, {
        ...FAST,
        retries: 1,
        checkPort: gate.checkPort,
        onAttempt: (a, res) => lines.push(formatAttempt(a, res)),
      });
      assert.equal(r.ok, false);
      assert.equal(r.open, false);
      assert.deepEqual(r.attempts.map((a) => [a.attempt, a.sent, a.open]), [[1, true, false], [2, true, false]]);
      assert.equal(gate.arrived.length, 4, 'the whole sequence went out twice');
      assert.equal(lines.length, 2);
      assert.match(lines[1] ?? '', /^knock 2\/2: door ssh \(\d+\/tcp \d+\/udp\) to 127\.0\.0\.1: 127\.0\.0\.1:\d+\/tcp did not open \(ECONNREFUSED\)$/);
    });
  });

  test('without a check port the knock is sent once and not verified', async () => {
    await withGate('127.0.0.1', ['udp', 'tcp'], async (gate) => {
      const r = await knock(await resolveHost('127.0.0.1'), { type: 'sequence', name: null, sequence: gate.steps }, { ...FAST, retries: 3, checkPort: null });
      await sleep(50);
      assert.equal(r.ok, true);
      assert.equal(r.open, null);
      assert.equal(r.check, null);
      assert.equal(r.attempts.length, 1);
      assert.deepEqual(gate.arrived, gate.expected);
      assert.match(formatAttempt(r.attempts[0]!, r), /sent; not verified: no TCP port to check \(pass --check PORT\)$/);
    });
  });

  test('a SYN to a closed port counts as sent (the RST answers a SYN that left)', async () => {
    await withGate('127.0.0.1', [], async (gate) => {
      const r = await knock(await resolveHost('127.0.0.1'), { type: 'sequence', name: null, sequence: [{ port: gate.checkPort, proto: 'tcp' }] }, { ...FAST, retries: 0, checkPort: null });
      assert.equal(r.attempts[0]?.sent, true, r.attempts[0]?.error);
    });
  });
});

describe('resolveHost', () => {
  test('literal addresses are used as is', async () => {
    assert.deepEqual(await resolveHost('198.18.0.1'), { host: '198.18.0.1', address: '198.18.0.1', family: 4 });
    assert.deepEqual(await resolveHost('2001:db8::1'), { host: '2001:db8::1', address: '2001:db8::1', family: 6 });
    assert.deepEqual(await resolveHost('[2001:db8::1]', 6), { host: '[2001:db8::1]', address: '2001:db8::1', family: 6 });
  });

  test('-4/-6 against a literal of the other family is an error', async () => {
    await assert.rejects(resolveHost('198.18.0.1', 6), new KnockError('198.18.0.1 is an IPv4 address, but -6 asks for IPv6: drop -6 or give an IPv6 address'));
    await assert.rejects(resolveHost('2001:db8::1', 4), { message: '2001:db8::1 is an IPv6 address, but -4 asks for IPv4: drop -4 or give an IPv4 address' });
  });

  test('names go through the system resolver, honouring the family', async () => {
    assert.deepEqual(await resolveHost('localhost', 4), { host: 'localhost', address: '127.0.0.1', family: 4 });
    await assert.rejects(resolveHost('no-such-host.invalid'), { name: 'KnockError', message: 'cannot resolve no-such-host.invalid to an address: no such host' });
  });
});

describe('doors from the config file', () => {
  let dir = '';
  let file = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kg-unit-knock-'));
    file = join(dir, 'client.yaml');
    writeFileSync(file, `interfaces: [eth0]
doors:
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [53/udp, 2222-2230/tcp, 22/tcp]
  dns:
    sequence: [7100/udp, 7200/udp]
    protects: [53/udp]
`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a door gives its sequence and its first protected TCP port', async () => {
    const { door, checkPort } = await doorFromConfigFile(file, 'ssh');
    assert.deepEqual(door, { type: 'sequence', name: 'ssh', sequence: [{ port: 7000, proto: 'tcp' }, { port: 8000, proto: 'udp' }, { port: 9000, proto: 'tcp' }] });
    assert.equal(checkPort, 2222);
    assert.equal((await doorFromConfigFile(file, 'dns')).checkPort, null, 'no TCP port: nothing to check');
    assert.equal(checkPortOf({ protects: [] } as unknown as Parameters<typeof checkPortOf>[0]), null);
  });

  test('an unknown door lists the doors the file has', async () => {
    await assert.rejects(doorFromConfigFile(file, 'shh'), { name: 'KnockError', message: `${file} has no door named "shh" (did you mean ssh?): its doors are ssh, dns` });
    await assert.rejects(doorFromConfigFile(file, 'web'), { message: `${file} has no door named "web": its doors are ssh, dns` });
  });

  test('a missing config file is a ConfigError (exit 4 through main)', async () => {
    const err = await doorFromConfigFile(join(dir, 'none.yaml'), 'ssh').catch((e: unknown) => e);
    assert.equal((err as Error).name, 'ConfigError');
    assert.equal(explain(err).code, EXIT.BAD_CONFIG);
    assert.match(explain(err).message, /none\.yaml: cannot read the config file: no such file/);
  });
});

describe('runThen', () => {
  test('runs through the shell and returns the exit code, with the knock in the environment', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-unit-then-'));
    try {
      const out = join(dir, 'out');
      assert.equal(await runThen(`echo "$KNOCKGATE_ADDRESS $KNOCKGATE_DOOR" > ${out}; exit 7`, { KNOCKGATE_ADDRESS: '198.18.0.1', KNOCKGATE_DOOR: 'ssh' }), 7);
      assert.equal(readFileSync(out, 'utf8'), '198.18.0.1 ssh\n');
      assert.equal(await runThen('true'), 0);
      assert.equal(await runThen('kill -TERM $$'), 143, 'a signal becomes 128 + its number');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- the command ---------------------------------------------------------------------------

/** Parses a knock command line in-process; returns the usage error and what commander printed. */
async function usage(args: string[]): Promise<{ err: CommanderError; stderr: string }> {
  let stderr = '';
  const knockCmd = knockCommand()
    .exitOverride()
    .configureOutput({ writeErr: (s) => (stderr += s), writeOut: (s) => (stderr += s) });
  const program = new Command('knockgate').exitOverride().addCommand(knockCmd);
  try {
    await program.parseAsync(['knock', ...args], { from: 'user' });
  } catch (err) {
    assert.ok(err instanceof CommanderError, `expected a CommanderError, got ${String(err)}`);
    return { err, stderr };
  }
  return assert.fail(`knock ${args.join(' ')}: expected a usage error`);
}

describe('knockgate knock: usage', () => {
  test('DOOR and --sequence: exactly one of them', async () => {
    const both = await usage(['198.18.0.1', 'ssh', '--sequence', '7000/tcp,8000/udp']);
    assert.equal(explain(both.err).code, EXIT.USAGE);
    assert.equal(both.stderr, 'error: give either a DOOR (ssh) or --sequence, not both\n');
    const neither = await usage(['198.18.0.1']);
    assert.equal(explain(neither.err).code, EXIT.USAGE);
    assert.equal(neither.stderr, 'error: say what to knock: a DOOR name from the config file, or --sequence 7000/tcp,8000/udp,9000/tcp\n');
  });

  test('bad values are usage errors that say what to write', async () => {
    const cases: [string[], RegExp][] = [
      [['198.18.0.1', '-s', '7000/tcp,7000/tcp'], /7000\/tcp repeats the step before it/],
      [['198.18.0.1', '-s', '7000/tcp', '--delay', '100'], /100 has no unit: write 100s for seconds or 100ms/],
      [['198.18.0.1', '-s', '7000/tcp', '--retries', 'x'], /"x" is not a whole number: write a number 0\.\.100/],
      [['198.18.0.1', '-s', '7000/tcp', '--check', '70000'], /port 70000 is out of range/],
      [['198.18.0.1', '-s', '7000/tcp', '--check-timeout', '0s'], /0s is too short: a duration must be more than 0/],
      [['198.18.0.1', 'my door'], /"my door" is not a door name/],
      [['198.18.0.1', '-s', '7000/tcp', '-4', '-6'], /option '-4, --ipv4' cannot be used with option '-6, --ipv6'/],
      [[], /missing required argument 'host'/],
    ];
    for (const [args, message] of cases) {
      const { err, stderr } = await usage(args);
      assert.equal(explain(err).code, EXIT.USAGE, args.join(' '));
      assert.match(stderr, message, args.join(' '));
    }
  });

  test('--help shows an example and the exit codes', async () => {
    const { err, stderr } = await usage(['--help']);
    assert.equal(explain(err).code, EXIT.OK);
    assert.match(stderr, /Usage: knockgate knock \[options\] <host> \[door\]/);
    assert.match(stderr, /Examples:\n {2}knockgate knock .* ssh -c /);
    assert.match(stderr, /--delay <duration> +pause between two knocks \(default: 100ms\)/);
    assert.match(stderr, /Exit codes: 0 open/);
  });
});

// The command as a process (the lead registers it in main.ts; this harness does what main() does).
const HARNESS = `
import { Command } from 'commander';
import { explain } from ${JSON.stringify(`${ROOT}dist/src/cli/main.js`)};
import { knockCommand } from ${JSON.stringify(`${ROOT}dist/src/cli/commands/knock.js`)};
const program = new Command('knockgate').exitOverride().addCommand(knockCommand().exitOverride());
try {
  await program.parseAsync(process.argv.slice(1), { from: 'user' });
  process.exitCode = typeof process.exitCode === 'number' ? process.exitCode : 0;
} catch (err) {
  const { message, code } = explain(err);
  if (message) process.stderr.write('knockgate: ' + message + '\\n');
  process.exitCode = code;
}
`;

function runCli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  // Asynchronously: the fake gate lives in this process's event loop.
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', HARNESS, 'knock', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

describe('knockgate knock: as a process against the fake gate', () => {
  test('opens, runs --then and exits with its code; --json prints one result', async () => {
    await withGate('127.0.0.1', ['udp', 'tcp'], async (gate) => {
      const r = await runCli(['127.0.0.1', '--sequence', gate.expected.join(','), '--check', String(gate.checkPort), '--retries', '3', '--delay', '20ms', '--json', '--then', 'echo "then ran on $KNOCKGATE_ADDRESS"; exit 3']);
      assert.equal(r.status, 3, r.stderr);
      const [thenLine, json] = r.stdout.trim().split('\n');
      assert.equal(thenLine, 'then ran on 127.0.0.1');
      const result = JSON.parse(json ?? '') as Record<string, unknown>;
      assert.equal(result['ok'], true);
      assert.equal(result['open'], true);
      assert.deepEqual(result['then'], { command: 'echo "then ran on $KNOCKGATE_ADDRESS"; exit 3', ran: true, exitCode: 3 });
      assert.match(r.stderr, /^(knock \d\/4: .* did not open \(ECONNREFUSED\)\n)*knock \d\/4: .* is open \(\d+ ms\)\n$/);
    });
  });

  test('a door that stays closed: exit 1 after 1 + retries attempts, --then not run', async () => {
    await withGate('127.0.0.1', ['udp', 'udp', 'udp'], async (gate) => {
      const r = await runCli(['127.0.0.1', '-s', gate.expected.slice(0, 2).reverse().join(','), '--check', String(gate.checkPort), '--retries', '1', '--delay', '0ms', '--check-timeout', '300ms', '--then', 'echo THEN-RAN']);
      assert.equal(r.status, 1, r.stderr);
      assert.doesNotMatch(r.stdout, /THEN-RAN/);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 3, r.stderr);
      assert.match(lines[0] ?? '', /^knock 1\/2: /);
      assert.match(lines[1] ?? '', /^knock 2\/2: /);
      assert.match(lines[2] ?? '', /^knockgate: the door did not open after 2 attempts \(127\.0\.0\.1:\d+\/tcp still closed\): .*; not running the --then command$/);
    });
  });

  test('a host that does not resolve: exit 1 with the reason; an unknown door: exit 2 listing the doors', async () => {
    const r = await runCli(['no-such-host.invalid', '-s', '7000/tcp']);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'knockgate: cannot resolve no-such-host.invalid to an address: no such host\n');
    const dir = mkdtempSync(join(tmpdir(), 'kg-unit-knock-'));
    try {
      const cfg = join(dir, 'c.yaml');
      writeFileSync(cfg, 'interfaces: [eth0]\ndoors:\n  ssh:\n    sequence: [7000/tcp, 8000/udp]\n    protects: [22/tcp]\n');
      const d = await runCli(['127.0.0.1', 'web', '-c', cfg]);
      assert.equal(d.status, 2);
      assert.equal(d.stderr, `knockgate: ${cfg} has no door named "web": its doors are ssh\n`);
      const bad = await runCli(['127.0.0.1', 'ssh', '-c', join(dir, 'missing.yaml')]);
      assert.equal(bad.status, 4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

