// End to end: `knockgate knock` run as a process in the client namespace opens a door of the
// real gate (the daemon in the gateway namespace, a TCP service behind it) with real packets,
// checks it, and runs --then.
//
// KG_TEST_CLI overrides the CLI entry point (a main.js that registers `knock`), for running this
// before src/cli/main.ts does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSuite, withNetns, type NetnsPair } from '../helpers/kernel.js';
import { CLI, client, runAsync, sleep, startClient, startDaemon, type LogLine, type Proc, type Run } from '../helpers/daemon.js';

const SERVICE_PORT = 2222;
const SEQUENCE = '7000/tcp, 8000/udp, 9000/tcp';
const OPEN_FOR_MS = 3_000;
const KNOCK_CLI = process.env['KG_TEST_CLI'] ?? CLI;

function gateConfig(env: NetnsPair, pin: string): string {
  return `# e2e gate config
interfaces: [${env.ifA}]
xdp_mode: native
pin_path: ${pin}
log:
  level: debug
  denials_per_second: 100
doors:
  ssh:
    sequence: [${SEQUENCE}]
    protects: [${SERVICE_PORT}/tcp]
    open_for: ${OPEN_FOR_MS}ms
    allow_from: [198.18.0.0/15, 2001:db8::/32]
`;
}

/** What a user keeps on the client: the same door (the interface is the gate's business). */
const CLIENT_CONFIG = `# client-side copy of the door
interfaces: [eth0]
doors:
  ssh:
    sequence: [${SEQUENCE}]
    protects: [${SERVICE_PORT}/tcp]
  web:
    sequence: [7100/udp, 7200/udp]
    protects: [8443/tcp]
`;

interface Lab {
  env: NetnsPair;
  dir: string;
  clientCfg: string;
  daemon: Proc;
}

/** A name for the gate in the client namespace's /etc/hosts (ip netns exec mounts /etc/netns/NS/hosts). */
const GATE_NAME = 'kg-e2e-gate';

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  await withNetns(async (env) => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-e2e-knock-'));
    const pin = `/sys/fs/bpf/kg-e2e-${env.id}`;
    const etcNetns = '/etc/netns';
    const madeEtcNetns = !existsSync(etcNetns);
    const hostsDir = join(etcNetns, env.nsB);
    const server = startClient(env.nsA, ['serve', String(SERVICE_PORT)]);
    let daemon: Proc | null = null;
    try {
      mkdirSync(hostsDir, { recursive: true });
      writeFileSync(join(hostsDir, 'hosts'), `127.0.0.1 localhost\n${env.addrA} ${GATE_NAME}\n${env.addr6A} ${GATE_NAME}\n`);
      await server.waitFor((l) => l['listening'] === SERVICE_PORT, 10_000, 'test service');
      const cfg = join(dir, 'gate.yaml');
      writeFileSync(cfg, gateConfig(env, pin));
      const clientCfg = join(dir, 'client.yaml');
      writeFileSync(clientCfg, CLIENT_CONFIG);
      daemon = startDaemon(env.nsA, ['run', '-c', cfg]);
      await daemon.msg('knockgate running', 20_000);
      await fn({ env, dir, clientCfg, daemon });
    } finally {
      if (daemon) await daemon.stop();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
      rmSync(hostsDir, { recursive: true, force: true });
      if (madeEtcNetns && existsSync(etcNetns) && readdirSync(etcNetns).length === 0) rmdirSync(etcNetns);
      if (existsSync(pin)) rmSync(pin, { recursive: true, force: true });
    }
  });
}

/** `ip netns exec NS node main.js knock ...`, asynchronously (the daemon's log keeps being read). */
function knockCli(ns: string, args: readonly string[], timeoutMs = 30_000): Promise<Run> {
  return runAsync('ip', ['netns', 'exec', ns, process.execPath, KNOCK_CLI, 'knock', ...args], timeoutMs);
}

function serviceOpen(lab: Lab, host: string, timeoutMs = 800): boolean {
  return client(lab.env.nsB, ['connect', host, String(SERVICE_PORT), String(timeoutMs)])['ok'] === true;
}

/** Waits until the door is closed again for this host (grants last OPEN_FOR_MS). */
async function waitClosed(lab: Lab, host: string): Promise<void> {
  const deadline = Date.now() + OPEN_FOR_MS + 5_000;
  while (serviceOpen(lab, host, 500)) {
    if (Date.now() > deadline) assert.fail(`${host}:${SERVICE_PORT} stayed open`);
    await sleep(500);
  }
}

const isEvent = (event: string, source: string) => (l: LogLine) => l['event'] === event && l['source'] === source;

kernelSuite('knockgate knock against the real gate, end to end', () => {
  test('opens the door by name (IPv4, and IPv6 with -6 and a host name) and by --sequence; --then runs and gives its exit code', async () => {
    await withLab(async (lab) => {
      const { env } = lab;
      assert.equal(serviceOpen(lab, env.addrA), false, 'closed before the knock');

      // By door name from the client's config; the check port is the door's protected TCP port.
      const opened = join(lab.dir, 'opened');
      const byName = await knockCli(env.nsB, [env.addrA, 'ssh', '-c', lab.clientCfg, '--then', `echo opened > ${opened}`]);
      assert.equal(byName.status, 0, byName.stderr);
      assert.equal(readFileSync(opened, 'utf8'), 'opened\n', '--then ran');
      assert.match(byName.stderr, /^knock 1\/1: door ssh \(7000\/tcp 8000\/udp 9000\/tcp\) to 198\.18\.0\.1: 198\.18\.0\.1:2222\/tcp is open \(\d+ ms\)\n$/);
      const grant = await lab.daemon.waitFor(isEvent('grant', env.addrB), 5_000, 'grant for the IPv4 client');
      assert.equal(grant['door'], 'ssh');
      assert.equal(serviceOpen(lab, env.addrA, 3_000), true, 'the door is open after the knock');

      // IPv6: a name that resolves to both families, -6 picks the IPv6 address; --json result.
      assert.equal(serviceOpen(lab, env.addr6A), false, 'closed for the IPv6 source');
      const v6 = await knockCli(env.nsB, [GATE_NAME, 'ssh', '-6', '-c', lab.clientCfg, '--json']);
      assert.equal(v6.status, 0, v6.stderr);
      const result = JSON.parse(v6.stdout) as Record<string, unknown>;
      assert.equal(result['ok'], true);
      assert.equal(result['open'], true);
      assert.equal(result['address'], env.addr6A);
      assert.equal(result['family'], 6);
      assert.deepEqual(result['check'], { port: SERVICE_PORT, proto: 'tcp', timeoutMs: 2000 });
      assert.match(v6.stderr, /to kg-e2e-gate \(2001:db8::1\): \[2001:db8::1\]:2222\/tcp is open/);
      await lab.daemon.waitFor(isEvent('grant', env.addr6B), 5_000, 'grant for the IPv6 client');

      // By --sequence with --check, once the IPv4 grant has expired; a failing --then gives its code.
      await waitClosed(lab, env.addrA);
      const grantsBefore = lab.daemon.lines.filter(isEvent('grant', env.addrB)).length;
      const bySeq = await knockCli(env.nsB, [env.addrA, '--sequence', '7000/tcp,8000/udp,9000/tcp', '--check', String(SERVICE_PORT), '--then', 'echo then-ran; exit 5']);
      assert.equal(bySeq.status, 5, bySeq.stderr);
      assert.equal(bySeq.stdout, 'then-ran\n');
      assert.match(bySeq.stderr, /^knock 1\/1: 7000\/tcp 8000\/udp 9000\/tcp to 198\.18\.0\.1: 198\.18\.0\.1:2222\/tcp is open/);
      const d = lab.daemon;
      await d.waitFor(() => d.lines.filter(isEvent('grant', env.addrB)).length > grantsBefore, 5_000, 'a new grant for the IPv4 client');
    });
  });

  test('a wrong sequence with --retries 1: two attempts, exit 1, --then not run', async () => {
    await withLab(async (lab) => {
      const { env } = lab;
      const marker = join(lab.dir, 'then-ran');
      const r = await knockCli(env.nsB, [
        env.addrA,
        '--sequence',
        '7000/tcp,8000/udp,9001/tcp',
        '--check',
        String(SERVICE_PORT),
        '--retries',
        '1',
        '--then',
        `touch ${marker}`,
      ]);
      assert.equal(r.status, 1, r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 3, r.stderr);
      assert.match(lines[0] ?? '', /^knock 1\/2: .*198\.18\.0\.1:2222\/tcp did not answer within 2s$/);
      assert.match(lines[1] ?? '', /^knock 2\/2: .*198\.18\.0\.1:2222\/tcp did not answer within 2s$/);
      assert.match(lines[2] ?? '', /^knockgate: the door did not open after 2 attempts \(198\.18\.0\.1:2222\/tcp still closed\): .*; not running the --then command$/);
      assert.equal(existsSync(marker), false, '--then must not run');
      const d = lab.daemon;
      await d.waitFor(() => d.lines.filter(isEvent('reset', env.addrB)).length >= 2, 5_000, 'a reset per wrong knock (2)');
      assert.equal(lab.daemon.lines.some(isEvent('grant', env.addrB)), false, 'no grant');
      assert.equal(serviceOpen(lab, env.addrA), false, 'still closed');

      // An unknown door: a usage error that lists the doors of the client's config, nothing sent.
      const unknown = await knockCli(env.nsB, [env.addrA, 'sshd', '-c', lab.clientCfg]);
      assert.equal(unknown.status, 2);
      assert.equal(unknown.stderr, `knockgate: ${lab.clientCfg} has no door named "sshd" (did you mean ssh?): its doors are ssh, web\n`);
    });
  });
});
