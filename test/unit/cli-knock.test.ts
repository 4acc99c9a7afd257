// The knock client without a kernel: a fake gate on the loopback interface listens on the knock
// ports (TCP and UDP), records what arrives, and starts its "protected" TCP service once the
// right sequence came in. The CLI's usage errors are checked through commander's exitOverride().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { knockCommand } from '../../src/cli/commands/knock.js';
import { EXIT } from '../../src/cli/exit.js';
import { explain } from '../../src/cli/main.js';
import koffi from 'koffi';
import {
  KnockError,
  WINDOW_MARGIN_MS,
  checkPortOf,
  describeKnock,
  doorFromConfigFile,
  formatAttempt,
  knock,
  knockDoorOf,
  resolveHost,
  runThen,
  sendKnock,
  type KnockDoor,
  type KnockOptions,
  type RotatingDoor,
} from '../../src/client/knock.js';
import { ICMP_PERMISSION_HINT, IcmpError, echoRequest, internetChecksum, sendEchoRequest } from '../../src/client/icmp.js';
import { DEFAULTS, type DoorConfig, type Step } from '../../src/config/model.js';
import { SignedVerifier, keyIdOf, readPublicKey, rotatingSequence, verifySpa, windowBounds, windowOf, writeKeyPair } from '../../src/knock/index.js';
import { parseAddress } from '../../src/net/addr.js';

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
    assert.equal(
      neither.stderr,
      'error: say what to knock: a DOOR name from the config file, or --sequence 7000/tcp,8000/udp,9000/tcp (or --type TYPE for another door given here)\n',
    );
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


// ---- the keyed and single-packet door types --------------------------------------------------

const SPA_KEY_HEX = '00112233445566778899aabbccddeeff';
const ROT_SECRET_HEX = 'f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff';

/** Writes a file of mode 0600 (or the mode given) holding text. */
function writeKey(path: string, text: string, mode = 0o600): string {
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

/** A UDP socket on the loopback interface that records the datagrams arriving. */
class UdpListener {
  readonly received: { msg: Buffer; address: string }[] = [];
  private constructor(
    private readonly sock: UdpSocket,
    readonly port: number,
    onMessage?: () => void,
  ) {
    sock.on('message', (msg, rinfo) => {
      this.received.push({ msg, address: rinfo.address });
      onMessage?.();
    });
  }

  static async open(host: string, port = 0, onMessage?: () => void): Promise<UdpListener> {
    const u = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      u.once('error', reject);
      u.bind(port, host, () => {
        u.off('error', reject);
        resolve();
      });
    });
    return new UdpListener(u, u.address().port, onMessage);
  }

  async waitFor(n: number, timeoutMs = 2_000): Promise<Buffer[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < n && Date.now() < deadline) await sleep(5);
    assert.ok(this.received.length >= n, `expected ${n} datagram(s) on port ${this.port}, got ${this.received.length}`);
    return this.received.map((r) => r.msg);
  }

  close(): void {
    this.sock.close();
  }
}

interface PortRangeListener {
  first: number;
  last: number;
  /** the ports that got a knock, in order of arrival */
  arrived: number[];
  close(): Promise<void>;
}

/** 64 consecutive ports listening on host (a rotating door's range), at a random base that is free. */
async function listenOnRange(open: (port: number, hit: () => void) => Promise<() => Promise<void>>): Promise<PortRangeListener> {
  for (let tries = 0; tries < 20; tries++) {
    const first = 20_000 + Math.floor(Math.random() * 600) * 64;
    const closers: (() => Promise<void>)[] = [];
    const arrived: number[] = [];
    const close = async (): Promise<void> => {
      for (const c of closers) await c();
    };
    try {
      for (let p = first; p < first + 64; p++) closers.push(await open(p, () => arrived.push(p)));
      return { first, last: first + 63, arrived, close };
    } catch {
      await close();
    }
  }
  return assert.fail('no free range of 64 ports on the loopback interface');
}

function listenRange(host: string): Promise<PortRangeListener> {
  return listenOnRange(async (port, hit) => {
    const l = await UdpListener.open(host, port, hit);
    return async () => l.close();
  });
}

function listenTcpRange(host: string): Promise<PortRangeListener> {
  return listenOnRange(async (port, hit) => {
    const s = createServer((c) => {
      c.on('error', () => undefined);
      c.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, host, () => {
        s.off('error', reject);
        resolve();
      });
    });
    s.on('connection', hit);
    return () => new Promise<void>((resolve) => s.close(() => resolve()));
  });
}

describe('door types from the config file', () => {
  let dir = '';
  let cfg = '';
  let alicePub = '';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kg-unit-doors-'));
    writeKey(join(dir, 'spa.key'), `# the spa door's key\n${SPA_KEY_HEX}\n`);
    writeKey(join(dir, 'rot.secret'), `${ROT_SECRET_HEX}\n`);
    alicePub = (await writeKeyPair(join(dir, 'alice'))).publicPath;
    cfg = join(dir, 'knockgate.yaml');
    writeFileSync(cfg, `interfaces: [lo]
doors:
  rot:
    type: rotating
    secret_file: ${join(dir, 'rot.secret')}
    knock_ports: 40000-40999/udp
    length: 4
    window: 30s
    protects: [22/tcp]
  spa:
    type: spa
    port: 62201/udp
    key_file: ${join(dir, 'spa.key')}
    max_skew: 30s
    protects: [53/udp, 2222/tcp]
  sig:
    type: signed
    port: 62202/udp
    clients:
      alice: ${alicePub}
    protects: [22/tcp]
  ping:
    type: payload
    knock: icmp
    payload: "hex:6b6e6f636b"
    protects: [22/tcp]
  word:
    type: payload
    knock: 62203/udp
    payload: open-sesame
    protects: [53/udp]
`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('each type becomes its knock, with its key files read', async () => {
    const rot = await doorFromConfigFile(cfg, 'rot');
    assert.deepEqual(rot, {
      door: { type: 'rotating', name: 'rot', secret: Buffer.from(ROT_SECRET_HEX, 'hex'), range: { first: 40000, last: 40999, proto: 'udp' }, length: 4, windowMs: 30_000 },
      checkPort: 22,
    });
    assert.deepEqual(await doorFromConfigFile(cfg, 'spa'), { door: { type: 'spa', name: 'spa', port: 62201, key: Buffer.from(SPA_KEY_HEX, 'hex') }, checkPort: 2222 });
    const sig = await doorFromConfigFile(cfg, 'sig', { keyFile: join(dir, 'alice') });
    assert.equal(sig.door.type, 'signed');
    assert.ok(sig.door.type === 'signed' && sig.door.port === 62202 && sig.door.name === 'sig');
    assert.deepEqual(keyIdOf(sig.door.privateKey), keyIdOf(await readPublicKey(alicePub)), 'the private key of the listed public key');
    assert.deepEqual(await doorFromConfigFile(cfg, 'ping'), { door: { type: 'payload', name: 'ping', proto: 'icmp', port: 0, payload: Buffer.from('knock') }, checkPort: 22 });
    assert.deepEqual(await doorFromConfigFile(cfg, 'word'), { door: { type: 'payload', name: 'word', proto: 'udp', port: 62203, payload: Buffer.from('open-sesame') }, checkPort: null });
  });

  test('--key-file and --secret-file replace the files the config names', async () => {
    const other = writeKey(join(dir, 'other.key'), 'ffeeddccbbaa99887766554433221100\n');
    const spa = await doorFromConfigFile(cfg, 'spa', { keyFile: other });
    assert.ok(spa.door.type === 'spa' && spa.door.key.equals(Buffer.from('ffeeddccbbaa99887766554433221100', 'hex')));
    const otherSecret = writeKey(join(dir, 'other.secret'), 'ab'.repeat(16));
    const rot = await doorFromConfigFile(cfg, 'rot', { secretFile: otherSecret });
    assert.ok(rot.door.type === 'rotating' && rot.door.secret.equals(Buffer.alloc(16, 0xab)));
  });

  test('a signed door needs the private key: the config holds only public keys', async () => {
    await assert.rejects(doorFromConfigFile(cfg, 'sig'), {
      name: 'KnockError',
      message: 'door sig is a signed door and the config holds only the public keys of its clients: pass your private key with --key-file FILE (made by `knockgate keygen FILE`)',
    });
    await assert.rejects(doorFromConfigFile(cfg, 'sig', { keyFile: alicePub }), { name: 'KnockError', message: /alice\.pub .*(readable by group or others|not a PEM private key)/ });
  });

  test('a key file others can read is refused with what to do, never with the secret', async () => {
    const looseKey = writeKey(join(dir, 'loose.key'), `${SPA_KEY_HEX}\n`, 0o644);
    const looseSecret = writeKey(join(dir, 'loose.secret'), `${ROT_SECRET_HEX}\n`, 0o640);
    const privatePem = readFileSync(join(dir, 'alice'), 'utf8');
    const loosePrivate = writeKey(join(dir, 'loose-alice'), privatePem, 0o604);
    const cases: [string, Parameters<typeof doorFromConfigFile>[2], string][] = [
      ['spa', { keyFile: looseKey }, looseKey],
      ['rot', { secretFile: looseSecret }, looseSecret],
      ['sig', { keyFile: loosePrivate }, loosePrivate],
    ];
    for (const [name, opts, file] of cases) {
      const err = await doorFromConfigFile(cfg, name, opts).catch((e: unknown) => e);
      assert.ok(err instanceof KnockError, `door ${name}: ${String(err)}`);
      assert.match(err.message, new RegExp(`^${file.replace(/[.]/g, '\\.')} is readable by group or others \\(mode 06[04][04]\\)`));
      assert.match(err.message, new RegExp(`chmod 600 ${file.replace(/[.]/g, '\\.')}`));
      for (const secret of [SPA_KEY_HEX, ROT_SECRET_HEX, privatePem.split('\n')[1] ?? '']) assert.ok(!err.message.includes(secret), 'the message shows no key material');
    }
  });

  test('a missing or malformed key file says how to make one', async () => {
    await assert.rejects(doorFromConfigFile(cfg, 'spa', { keyFile: join(dir, 'none.key') }), { name: 'KnockError', message: /none\.key does not exist: .*knockgate keygen/ });
    const short = writeKey(join(dir, 'short.key'), 'aabbcc\n');
    await assert.rejects(doorFromConfigFile(cfg, 'spa', { keyFile: short }), { name: 'KnockError', message: /short\.key has 3 bytes, the key needs exactly 16 bytes .*knockgate keygen --type spa/ });
  });

  test('knockDoorOf converts a DoorConfig without reading the file it came from', async () => {
    const base: DoorConfig = {
      name: 'ping6',
      type: 'payload',
      sequence: [],
      payload: { proto: 'udp', port: 9, payload: Buffer.from([1, 2, 3]) },
      protects: [],
      allowFrom: null,
      stepTimeoutMs: DEFAULTS.stepTimeoutMs,
      sequenceTimeoutMs: DEFAULTS.sequenceTimeoutMs,
      openForMs: DEFAULTS.openForMs,
      flowIdleMs: DEFAULTS.flowIdleMs,
      scope: DEFAULTS.scope,
    };
    assert.deepEqual(await knockDoorOf(base), { type: 'payload', name: 'ping6', proto: 'udp', port: 9, payload: Buffer.from([1, 2, 3]) });
    const { payload: _, ...noSpec } = base;
    await assert.rejects(knockDoorOf(noSpec as DoorConfig), /door ping6 is of type payload but has no payload settings/);
  });
});

describe('single-datagram knocks on the wire', () => {
  for (const host of ['127.0.0.1', '::1']) {
    test(`spa: one 40-byte datagram whose MAC covers the source the gate sees (${host})`, async () => {
      const gate = await UdpListener.open(host);
      try {
        const key = Buffer.from(SPA_KEY_HEX, 'hex');
        const now = 1_700_000_123_456;
        const r = await knock(await resolveHost(host), { type: 'spa', name: 'spa', port: gate.port, key }, { ...FAST, retries: 0, checkPort: null, now: () => now });
        assert.equal(r.ok, true, r.attempts[0]?.error);
        assert.equal(r.knock, `SPA datagram to ${gate.port}/udp`);
        const [msg] = await gate.waitFor(1);
        assert.equal(msg?.length, 40);
        assert.equal(verifySpa(key, parseAddress(host), msg ?? Buffer.alloc(0)), true, 'the MAC verifies for the loopback source');
        assert.equal(msg?.readBigUInt64BE(8), BigInt(Math.floor(now / 1000)), 'the timestamp is the clock in seconds');
        assert.equal(verifySpa(Buffer.alloc(16), parseAddress(host), msg ?? Buffer.alloc(0)), false);
      } finally {
        gate.close();
      }
    });

    test(`signed: one 112-byte datagram the gate's verifier accepts (${host})`, async () => {
      const gate = await UdpListener.open(host);
      const dir = mkdtempSync(join(tmpdir(), 'kg-unit-signed-'));
      try {
        const pair = await writeKeyPair(join(dir, 'id'));
        const door = await knockDoorOf(
          { name: 'sig', type: 'signed', sequence: [], signed: { port: gate.port, clients: [], maxSkewMs: 30_000 }, protects: [], allowFrom: null, stepTimeoutMs: 1, sequenceTimeoutMs: 1, openForMs: 1, flowIdleMs: 1, scope: 'source' },
          { keyFile: pair.privatePath },
        );
        const r = await knock(await resolveHost(host), door, { ...FAST, retries: 0, checkPort: null });
        assert.equal(r.ok, true, r.attempts[0]?.error);
        assert.equal(r.knock, `signed datagram to ${gate.port}/udp (key id ${pair.keyId})`);
        const [msg] = await gate.waitFor(1);
        assert.equal(msg?.length, 112);
        const pub = await readPublicKey(pair.publicPath);
        const verifier = new SignedVerifier('sig', [{ name: 'alice', key: pub, keyId: keyIdOf(pub) }], 30_000);
        assert.deepEqual(verifier.check(parseAddress(host), msg ?? Buffer.alloc(0), Date.now()).ok, true);
        const other = new SignedVerifier('sig', [{ name: 'alice', key: pub, keyId: keyIdOf(pub) }], 30_000);
        assert.deepEqual(other.check(parseAddress('198.18.0.9'), msg ?? Buffer.alloc(0), Date.now()), { ok: false, reason: 'bad-signature', client: 'alice' }, 'bound to the source address');
      } finally {
        gate.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    test(`payload over UDP: the datagram is the payload (${host})`, async () => {
      const gate = await UdpListener.open(host);
      try {
        const payload = Buffer.from('hex-or-text');
        const r = await knock(await resolveHost(host), { type: 'payload', name: null, proto: 'udp', port: gate.port, payload }, { ...FAST, retries: 0, checkPort: null });
        assert.equal(r.ok, true, r.attempts[0]?.error);
        assert.equal(r.knock, `UDP datagram to ${gate.port}/udp with a 11-byte payload`);
        assert.deepEqual(await gate.waitFor(1), [payload]);
      } finally {
        gate.close();
      }
    });
  }

  test('--source: the knock is made for the address the gate sees behind a NAT', async () => {
    const gate = await UdpListener.open('127.0.0.1');
    try {
      const key = Buffer.from(SPA_KEY_HEX, 'hex');
      const source = parseAddress('203.0.113.7');
      const r = await knock(await resolveHost('127.0.0.1'), { type: 'spa', name: 'spa', port: gate.port, key }, { ...FAST, retries: 0, checkPort: null, source });
      assert.equal(r.ok, true);
      const [msg] = await gate.waitFor(1);
      assert.equal(verifySpa(key, source, msg ?? Buffer.alloc(0)), true);
      assert.equal(verifySpa(key, parseAddress('127.0.0.1'), msg ?? Buffer.alloc(0)), false);
    } finally {
      gate.close();
    }
  });

  test('describeKnock never shows key material', () => {
    const doors: KnockDoor[] = [
      { type: 'spa', name: 'spa', port: 62201, key: Buffer.from(SPA_KEY_HEX, 'hex') },
      { type: 'rotating', name: 'rot', secret: Buffer.from(ROT_SECRET_HEX, 'hex'), range: { first: 40000, last: 40999, proto: 'udp' }, length: 4, windowMs: 30_000 },
      { type: 'payload', name: null, proto: 'icmp', port: 0, payload: Buffer.from('knock-knock!') },
    ];
    const texts = doors.map((d) => describeKnock(d, 170_000_000_000));
    assert.deepEqual(texts, ['SPA datagram to 62201/udp', 'rotating sequence of window 5666666 (4 steps in 40000-40999/udp)', 'ICMP echo request with a 12-byte payload']);
    for (const t of texts) assert.ok(!t.includes(SPA_KEY_HEX) && !t.includes(ROT_SECRET_HEX));
  });
});

describe('rotating knocks', () => {
  const secret = Buffer.from(ROT_SECRET_HEX, 'hex');

  for (const proto of ['udp', 'tcp'] as const) {
    test(`sends the sequence of the current window, in order, each step to its port (${proto})`, async () => {
      const range = proto === 'udp' ? await listenRange('127.0.0.1') : await listenTcpRange('127.0.0.1');
      try {
        const door: RotatingDoor = { type: 'rotating', name: 'rot', secret, range: { first: range.first, last: range.last, proto }, length: 6, windowMs: 30_000 };
        const now = 1_700_000_010_000; // 10 s into a 30 s window
        const w = windowOf(now, door.windowMs);
        const notes: string[] = [];
        const r = await knock(await resolveHost('127.0.0.1'), door, { ...FAST, retries: 0, checkPort: null, now: () => now, onNote: (n) => notes.push(n) });
        assert.equal(r.ok, true, r.attempts[0]?.error);
        assert.equal(r.knock, `rotating sequence of window ${w} (6 steps in ${range.first}-${range.last}/${proto})`);
        await sleep(50);
        assert.deepEqual(range.arrived, rotatingSequence(secret, 'rot', w, door.range, 6));
        assert.deepEqual(notes, [], 'no wait in the middle of a window');
      } finally {
        await range.close();
      }
    });
  }

  test('a knock that would straddle the window boundary waits for the next window and says so', async () => {
    const { first, last, arrived, close } = await listenRange('127.0.0.1');
    try {
      const door: RotatingDoor = { type: 'rotating', name: 'rot', secret, range: { first, last, proto: 'udp' }, length: 4, windowMs: 30_000 };
      const w = 56_666n;
      const now = windowBounds(w, door.windowMs).endMs - 100; // 100 ms left; 4 * 20 ms + 500 ms needed
      assert.ok(100 < door.length * FAST.delayMs + WINDOW_MARGIN_MS);
      const notes: string[] = [];
      const start = performance.now();
      const r = await knock(await resolveHost('127.0.0.1'), door, { ...FAST, retries: 0, checkPort: null, now: () => now, onNote: (n) => notes.push(n) });
      assert.ok(performance.now() - start >= 95, 'it waited for the window to end');
      assert.deepEqual(notes, [`window ${w} ends in 100ms, too soon for 4 knocks: waiting for window ${w + 1n}`]);
      assert.equal(r.knock, `rotating sequence of window ${w + 1n} (4 steps in ${first}-${last}/udp)`);
      await sleep(50);
      assert.deepEqual(arrived, rotatingSequence(secret, 'rot', w + 1n, door.range, 4));
    } finally {
      await close();
    }
  });
});

// ---- ICMP ----------------------------------------------------------------------------------

const libc = koffi.load('libc.so.6');
const cSocket = libc.func('int socket(int domain, int type, int protocol)') as unknown as (d: number, t: number, p: number) => number;
const cRecv = libc.func('intptr_t recv(int fd, void *buf, size_t len, int flags)') as unknown as (fd: number, buf: Buffer, len: number, flags: number) => number | bigint;
const cClose = libc.func('int close(int fd)') as unknown as (fd: number) => number;

/** A raw ICMP/ICMPv6 socket that sees the echo requests arriving on loopback; null without CAP_NET_RAW. */
function openCapture(family: 4 | 6): number | null {
  const fd = cSocket(family === 4 ? 2 : 10, 3 /* SOCK_RAW */ | 0o4000 /* SOCK_NONBLOCK */, family === 4 ? 1 : 58);
  return fd < 0 ? null : fd;
}

/** The first echo request (the ICMP message) carrying payload that the capture socket reads, or null. */
async function captureEcho(fd: number, family: 4 | 6, payload: Buffer, timeoutMs = 2_000): Promise<Buffer | null> {
  const buf = Buffer.alloc(65536);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const n = Number(cRecv(fd, buf, buf.length, 0));
    if (n < 0) {
      await sleep(5);
      continue;
    }
    let icmp = buf.subarray(0, n);
    if (family === 4) icmp = icmp.subarray(((icmp[0] ?? 0) & 0x0f) * 4); // a raw IPv4 socket reads the IP header too
    if (icmp[0] === (family === 4 ? 8 : 128) && icmp.subarray(8).equals(payload)) return Buffer.from(icmp);
  }
  return null;
}

describe('ICMP echo requests', () => {
  test('the echo request: type, code, identifier, sequence, checksum, payload', () => {
    const payload = Buffer.from('knock');
    const v4 = echoRequest(4, payload, 0x1234);
    assert.deepEqual([...v4.subarray(0, 2)], [8, 0]);
    assert.equal(v4.readUInt16BE(4), 0x1234);
    assert.equal(v4.readUInt16BE(6), 1);
    assert.equal(internetChecksum(v4), 0, 'the checksum makes the sum come out right');
    assert.deepEqual(v4.subarray(8), payload);
    const v6 = echoRequest(6, Buffer.from('odd'), 7);
    assert.deepEqual([...v6.subarray(0, 4)], [128, 0, 0, 0], 'ICMPv6: the kernel computes the checksum');
    assert.equal(internetChecksum(Buffer.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0x220d, 'RFC 1071 example');
  });

  for (const host of ['127.0.0.1', '::1']) {
    test(`sends one echo request whose data is the payload (${host})`, async (t) => {
      const family = host.includes(':') ? 6 : 4;
      const fd = openCapture(family);
      const payload = Buffer.concat([Buffer.from('kg-'), Buffer.from(String(Math.random()).slice(2, 12))]);
      if (fd === null) {
        // without CAP_NET_RAW nothing can be captured; sending needs a ping socket then
        const err = await sendEchoRequest({ address: host, family }, payload).then(() => null, (e: unknown) => e);
        if (err !== null) assert.deepEqual([(err as IcmpError).name, (err as Error).message], ['IcmpError', ICMP_PERMISSION_HINT]);
        t.skip('capturing needs CAP_NET_RAW');
        return;
      }
      try {
        const kind = await sendEchoRequest({ address: host, family }, payload);
        assert.ok(kind === 'ping' || kind === 'raw');
        const got = await captureEcho(fd, family, payload);
        assert.ok(got !== null, 'the echo request arrived');
        assert.equal(got[1], 0, 'code 0');
        if (family === 4) assert.equal(internetChecksum(got), 0);
      } finally {
        cClose(fd);
      }
    });
  }

  test('a payload door with knock: icmp sends it through knock()', async (t) => {
    const fd = openCapture(6);
    if (fd === null) {
      t.skip('capturing needs CAP_NET_RAW');
      return;
    }
    try {
      const payload = Buffer.from(`icmp-door-${process.pid}`);
      const r = await knock(await resolveHost('::1'), { type: 'payload', name: 'ping', proto: 'icmp', port: 0, payload }, { ...FAST, retries: 0, checkPort: null });
      assert.equal(r.ok, true, r.attempts[0]?.error);
      assert.equal(r.knock, `ICMP echo request with a ${payload.length}-byte payload`);
      assert.ok((await captureEcho(fd, 6, payload)) !== null);
    } finally {
      cClose(fd);
    }
  });

  test('a send that fails is a KnockError naming the address and the errno', async () => {
    // the broadcast address without SO_BROADCAST: EACCES from sendto (or the permission hint without CAP_NET_RAW)
    const target = { host: '255.255.255.255', address: '255.255.255.255', family: 4 as const };
    await assert.rejects(sendKnock(target, { type: 'payload', name: null, proto: 'icmp', port: 0, payload: Buffer.from('x') }, FAST), {
      name: 'KnockError',
      message: /^could not send the ICMP echo request to 255\.255\.255\.255: (EACCES|sending an ICMP echo request needs CAP_NET_RAW .*)$/,
    });
  });
});

describe('knockgate knock: the door options', () => {
  let dir = '';
  let cfg = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kg-unit-knock-opts-'));
    writeKey(join(dir, 'spa.key'), `${SPA_KEY_HEX}\n`);
    cfg = join(dir, 'c.yaml');
    writeFileSync(cfg, `interfaces: [lo]
doors:
  ssh:
    sequence: [7000/tcp, 8000/udp]
    protects: [22/tcp]
  spa:
    type: spa
    port: 62201/udp
    key_file: ${join(dir, 'spa.key')}
    protects: [22/tcp]
`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('combinations that make no sense are usage errors that say what to do', async () => {
    const H = '198.18.0.1';
    const cases: [string[], string][] = [
      // a door given here: what each type needs
      [[H, '--type', 'spa', '--port', '62201', '--key-file', 'k'], '--type spa needs the DOOR name the gate knows the door by (the knock is bound to it): add it after HOST, e.g. knockgate knock HOST spa --type spa ...'],
      [[H, 'spa', '--type', 'spa', '--key-file', 'k'], "--type spa needs the door's UDP port: add --port 62201"],
      [[H, 'spa', '--type', 'spa', '--port', '62201'], "--type spa needs the door's key: add --key-file FILE (made by `knockgate keygen --type spa FILE`)"],
      [[H, 'sig', '--type', 'signed', '--port', '62202'], '--type signed needs your private key: add --key-file FILE (made by `knockgate keygen FILE`)'],
      [[H, 'rot', '--type', 'rotating', '--range', '40000-40999/udp'], '--type rotating needs the shared secret: add --secret-file FILE (made by `knockgate keygen --type rotating FILE`)'],
      [[H, 'rot', '--type', 'rotating', '--secret-file', 's'], "--type rotating needs the ports the sequence is drawn from: add --range 40000-40999/udp (the door's knock_ports)"],
      [[H, '--type', 'payload', '--icmp'], '--type payload needs the payload: add --payload TEXT or --payload hex:6b6e6f636b'],
      [[H, '--type', 'payload', '--payload', 'x'], '--type payload needs where to send the payload: add --port PORT for a UDP datagram, or --icmp for an ICMP echo request'],
      [[H, '--type', 'payload', '--payload', 'x', '--icmp', '--port', '9'], 'an ICMP echo request has no port: drop --port 9, or drop --icmp to send a UDP datagram'],
      [[H, '--type', 'sequence'], '--type sequence needs the steps: add --sequence 7000/tcp,8000/udp,9000/tcp'],
      [[H, 'ssh', '--type', 'sequence', '-s', '7000/tcp'], 'give either a DOOR (ssh) or --sequence, not both'],
      // options of another type
      [[H, 'spa', '--type', 'spa', '--port', '1', '--key-file', 'k', '--range', '40000-40999/udp'], '--range is for rotating doors, not with --type spa: drop --range'],
      [[H, 'spa', '--type', 'spa', '-s', '7000/tcp'], '--sequence gives the steps of a sequence door: it does not go with --type spa'],
      [[H, '-s', '7000/tcp', '--key-file', 'k'], '--key-file is for spa and signed doors, not with --sequence: drop --key-file'],
      [[H, '-s', '7000/tcp', '--source', '203.0.113.7'], '--source is for spa and signed doors, not with --sequence: drop --source'],
      [[H, '--type', 'payload', '--payload', 'x', '--icmp', '--secret-file', 's'], '--secret-file is for rotating doors, not with --type payload: drop --secret-file'],
      [[H, 'rot', '--type', 'rotating', '--secret-file', 's', '--range', '40000-40999/udp', '--icmp'], '--icmp is for payload doors, not with --type rotating: drop --icmp'],
      // a door from the config file
      [[H, 'spa', '-c', 'c.yaml', '--port', '1'], '--port is for a door given on the command line with --type; door spa comes from the config file, which sets it: drop --port, or add --type'],
      [[H, 'spa', '-c', 'c.yaml', '--window', '30s'], '--window is for a door given on the command line with --type; door spa comes from the config file, which sets it: drop --window, or add --type'],
      [[H, 'spa', '-c', 'CFG', '--secret-file', 's'], '--secret-file is for rotating doors; door spa in CFG is an spa door: drop --secret-file'],
      [[H, 'ssh', '-c', 'CFG', '--key-file', 'k'], '--key-file is for spa and signed doors; door ssh in CFG is a sequence door: drop --key-file'],
      [[H, '--payload', 'x', '--icmp'], 'say what to knock: a DOOR name from the config file, or --sequence 7000/tcp,8000/udp,9000/tcp (or --type TYPE for another door given here)'],
    ];
    for (const [raw, message] of cases) {
      const args = raw.map((a) => (a === 'CFG' ? cfg : a));
      const { err, stderr } = await usage(args);
      assert.equal(explain(err).code, EXIT.USAGE, args.join(' '));
      assert.equal(stderr, `error: ${message.replace('CFG', cfg)}\n`, args.join(' '));
    }
  });

  test('bad values of the door options say what to write', async () => {
    const cases: [string[], RegExp][] = [
      [['h', 'x', '--type', 'knocky'], /argument 'knocky' is invalid\. Allowed choices are sequence, rotating, spa, signed, payload\./],
      [['h', 'x', '--type', 'spa', '--port', '62201/tcp'], /"62201\/tcp": this knock is a UDP datagram: write the port as 62201 or 62201\/udp/],
      [['h', 'x', '--type', 'spa', '--port', '0'], /port 0 is out of range/],
      [['h', 'x', '--type', 'rotating', '--range', '40000-40010/udp'], /40000-40010\/udp has 11 ports: a rotating door draws its steps from at least 64 ports/],
      [['h', 'x', '--type', 'rotating', '--length', '9'], /9 is out of range: write a number 2\.\.8/],
      [['h', 'x', '--type', 'rotating', '--window', '1s'], /1s is out of range: a window is 5s\.\.1h/],
      [['h', '--type', 'payload', '--payload', 'hex:zz'], /"hex:zz" is not hex/],
      [['h', '--type', 'payload', '--payload', 'x'.repeat(33)], /33 bytes: a payload prefix has at most 32/],
      [['h', 'x', '--type', 'spa', '--source', '10.0.0.256'], /is not an IP address/],
    ];
    for (const [args, message] of cases) {
      const { err, stderr } = await usage(args);
      assert.equal(explain(err).code, EXIT.USAGE, args.join(' '));
      assert.match(stderr, message, args.join(' '));
    }
  });

  test('--help shows an example per door type', async () => {
    const { stderr } = await usage(['--help']);
    for (const t of ['--type rotating --secret-file', '--type spa --port 62201 --key-file', 'sig -c client.yaml --key-file', '--type payload --payload hex:6b6e6f636b --icmp']) {
      assert.ok(stderr.includes(t), t);
    }
    assert.match(stderr, /--type <type> +give the door here instead of from the config\s+file: its type \(choices: "sequence", "rotating",\s+"spa", "signed", "payload"\)/);
  });
});

describe('knockgate knock: the door types as a process', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kg-unit-knock-proc-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('an spa door from the config: the datagram verifies; nothing prints the key', async () => {
    const gate = await UdpListener.open('127.0.0.1');
    try {
      const keyFile = writeKey(join(dir, 'spa.key'), `${SPA_KEY_HEX}\n`);
      const cfg = join(dir, 'spa.yaml');
      writeFileSync(cfg, `interfaces: [lo]\ndoors:\n  spa:\n    type: spa\n    port: ${gate.port}/udp\n    key_file: ${keyFile}\n    protects: [53/udp]\n`);
      const r = await runCli(['127.0.0.1', 'spa', '-c', cfg, '--json']);
      assert.equal(r.status, 0, r.stderr);
      const result = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(result['type'], 'spa');
      assert.equal(result['knock'], `SPA datagram to ${gate.port}/udp`);
      assert.match(r.stderr, /^knock 1\/1: door spa \(SPA datagram to \d+\/udp\) to 127\.0\.0\.1: sent; not verified/);
      const [msg] = await gate.waitFor(1);
      assert.equal(verifySpa(Buffer.from(SPA_KEY_HEX, 'hex'), parseAddress('127.0.0.1'), msg ?? Buffer.alloc(0)), true);
      assert.ok(!(r.stdout + r.stderr).includes(SPA_KEY_HEX));
    } finally {
      gate.close();
    }
  });

  test('a payload door given on the command line', async () => {
    const gate = await UdpListener.open('::1');
    try {
      const r = await runCli(['::1', '--type', 'payload', '--payload', 'hex:6b6e6f636b', '--port', String(gate.port)]);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(await gate.waitFor(1), [Buffer.from('knock')]);
      assert.match(r.stderr, /^knock 1\/1: UDP datagram to \d+\/udp with a 5-byte payload to ::1: sent; not verified/);
    } finally {
      gate.close();
    }
  });

  test('a key file others can read: exit 2, with chmod 600 and without the secret', async () => {
    const loose = writeKey(join(dir, 'loose.key'), `${SPA_KEY_HEX}\n`, 0o644);
    const r = await runCli(['127.0.0.1', 'spa', '--type', 'spa', '--port', '62201', '--key-file', loose]);
    assert.equal(r.status, 2);
    assert.equal(r.stderr, `knockgate: ${loose} is readable by group or others (mode 0644): a secret must be private to its owner; run: chmod 600 ${loose}\n`);
    assert.ok(!r.stderr.includes(SPA_KEY_HEX));
  });
});
