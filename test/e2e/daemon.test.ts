// End to end: a gateway namespace runs a real TCP service behind the gate, a client namespace
// knocks with real packets over a veth pair, and the daemon runs as a child process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSuite, run, withNetns, type NetnsPair } from '../helpers/kernel.js';
import { client, sleep, startClient, startDaemon, type LogLine, type Proc } from '../helpers/daemon.js';

const SERVICE_PORT = 2222;

function config(env: NetnsPair, pin: string, extra: { sequence?: string; openFor?: string; keep?: boolean } = {}): string {
  return `# e2e config
interfaces: [${env.ifA}]
xdp_mode: native
pin_path: ${pin}
keep: ${extra.keep ?? false}
log:
  level: debug
  denials_per_second: 100
doors:
  ssh:
    sequence: [${extra.sequence ?? '7000/tcp, 8000/udp, 9000/tcp'}]
    protects: [${SERVICE_PORT}/tcp]
    open_for: ${extra.openFor ?? '2s'}
    allow_from: [198.18.0.0/15, 2001:db8::/32]
`;
}

function xdpOn(env: NetnsPair): boolean {
  return /\bxdp/.test(run('ip', ['-n', env.nsA, '-d', 'link', 'show', 'dev', env.ifA]));
}

interface Lab {
  env: NetnsPair;
  dir: string;
  cfg: string;
  pin: string;
  daemon: Proc | null;
  server: Proc;
}

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  await withNetns(async (env) => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-e2e-'));
    const pin = `/sys/fs/bpf/kg-e2e-${env.id}`;
    const server = startClient(env.nsA, ['serve', String(SERVICE_PORT)]);
    const lab: Lab = { env, dir, cfg: join(dir, 'knockgate.yaml'), pin, daemon: null, server };
    try {
      await server.waitFor((l) => l['listening'] === SERVICE_PORT, 10_000, 'test service');
      await fn(lab);
    } finally {
      if (lab.daemon) await lab.daemon.stop();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
      // Whatever the test did, leave no pin behind (links first: that detaches the program).
      if (existsSync(pin)) rmSync(pin, { recursive: true, force: true });
    }
  });
}

function connect(lab: Lab, host: string, timeoutMs = 800): Record<string, unknown> {
  return client(lab.env.nsB, ['connect', host, String(SERVICE_PORT), String(timeoutMs)]);
}

function knock(lab: Lab, host: string, steps = ['7000/tcp', '8000/udp', '9000/tcp']): void {
  assert.deepEqual(client(lab.env.nsB, ['knock', host, ...steps]), { ok: true });
}

const isEvent = (event: string, source: string) => (l: LogLine) => l['event'] === event && l['source'] === source;

async function closedKnockOpenExpire(lab: Lab, host: string, source: string): Promise<void> {
  const d = lab.daemon!;
  assert.equal(connect(lab, host)['ok'], false, `${host}:${SERVICE_PORT} must be closed before the knock`);
  const deny = await d.waitFor(isEvent('deny', source), 5_000, `deny event for ${source}`);
  assert.equal(deny['door'], 'ssh');
  assert.equal(deny['port'], SERVICE_PORT);
  assert.equal(deny['protocol'], 'tcp');
  assert.equal(deny['reason'], 'no_grant');

  knock(lab, host);
  const grant = await d.waitFor(isEvent('grant', source), 5_000, `grant event for ${source}`);
  assert.equal(grant['door'], 'ssh');
  assert.equal(grant['msg'], 'door opened');
  assert.ok(typeof grant['expires_in_ms'] === 'number' && grant['expires_in_ms'] > 0 && grant['expires_in_ms'] <= 2000);
  const steps = d.lines.filter(isEvent('knock', source));
  assert.deepEqual(
    steps.slice(-2).map((l) => [l['step'], l['steps'], l['port'], l['protocol'], l['door']]),
    [
      [1, 3, 7000, 'tcp', 'ssh'],
      [2, 3, 8000, 'udp', 'ssh'],
    ],
  );

  assert.deepEqual(connect(lab, host, 3000), { ok: true, data: 'hello' }, 'the door must be open after the knock');
  await sleep(2600); // open_for is 2s
  assert.equal(connect(lab, host)['ok'], false, 'the door must close again after open_for');
  const expired = await d.waitFor(isEvent('expire', source), 2_000, `expire event for ${source}`);
  assert.equal(expired['door'], 'ssh');
  assert.equal(expired['msg'], 'grant expired');
}

kernelSuite('daemon, end to end in network namespaces', () => {
  test('closed, knock, open, expire over IPv4 and IPv6; events logged; SIGHUP; SIGTERM leaves nothing', async () => {
    await withLab(async (lab) => {
      writeFileSync(lab.cfg, config(lab.env, lab.pin));
      lab.daemon = startDaemon(lab.env.nsA, ['run', '-c', lab.cfg]);
      const d = lab.daemon;
      const started = await d.msg('knockgate running', 20_000);
      assert.deepEqual(started['doors'], ['ssh']);
      assert.ok(xdpOn(lab.env), 'XDP program attached to the gateway interface');
      assert.ok(existsSync(join(lab.pin, 'prog')) && existsSync(join(lab.pin, 'maps', 'kg_grants')));

      await closedKnockOpenExpire(lab, lab.env.addrA, lab.env.addrB);
      await closedKnockOpenExpire(lab, lab.env.addr6A, lab.env.addr6B);

      // A wrong knock resets progress, with the reason in the log.
      knock(lab, lab.env.addrA, ['7000/tcp', '7001/tcp']);
      const reset = await d.waitFor(isEvent('reset', lab.env.addrB), 5_000, 'reset event');
      assert.equal(reset['reason'], 'wrong_port');
      assert.equal(connect(lab, lab.env.addrA)['ok'], false);

      // SIGHUP with a broken config: reported with file, line and key; the old config stays.
      writeFileSync(lab.cfg, config(lab.env, lab.pin).replace('9000/tcp', '9000/icmp'));
      d.signal('SIGHUP');
      const rejected = await d.msg('config rejected');
      assert.equal(rejected['file'], lab.cfg);
      assert.equal(rejected['key'], 'doors.ssh.sequence[2]');
      assert.equal(typeof rejected['line'], 'number');
      assert.match(String(rejected['problem']), /9000\/icmp/);
      await d.waitFor((l) => /reload refused/.test(String(l.msg)), 5_000, 'reload refused');
      knock(lab, lab.env.addrA);
      assert.deepEqual(connect(lab, lab.env.addrA, 3000), { ok: true, data: 'hello' }, 'old config still enforced');

      // SIGHUP with a new sequence: the old one stops working at once, the new one works.
      writeFileSync(lab.cfg, config(lab.env, lab.pin, { sequence: '7100/udp, 7200/tcp, 7300/udp' }));
      d.signal('SIGHUP');
      await d.msg('config reloaded');
      await sleep(2600); // let the grant from before expire
      knock(lab, lab.env.addrA);
      assert.equal(connect(lab, lab.env.addrA)['ok'], false, 'the old sequence must no longer open the door');
      knock(lab, lab.env.addrA, ['7100/udp', '7200/tcp', '7300/udp']);
      assert.deepEqual(connect(lab, lab.env.addrA, 3000), { ok: true, data: 'hello' }, 'the new sequence opens the door');

      // SIGTERM: detached, pins gone, exit code 0.
      assert.equal(await d.stop(), 0);
      await d.waitFor((l) => /gate detached and pins removed/.test(String(l.msg)), 1000, 'shutdown line');
      assert.equal(existsSync(lab.pin), false, 'no pin left behind');
      assert.equal(xdpOn(lab.env), false, 'no XDP program left on the interface');
      assert.deepEqual(connect(lab, lab.env.addrA, 3000), { ok: true, data: 'hello' }, 'without the gate the service is reachable');
    });
  });

  test('--keep leaves the gate enforcing; a later run adopts it, grants in flight included', async () => {
    await withLab(async (lab) => {
      writeFileSync(lab.cfg, config(lab.env, lab.pin, { openFor: '30s' }));
      lab.daemon = startDaemon(lab.env.nsA, ['run', '-c', lab.cfg, '--keep']);
      await lab.daemon.msg('knockgate running', 20_000);
      knock(lab, lab.env.addrA);
      await lab.daemon.waitFor(isEvent('grant', lab.env.addrB), 5_000, 'grant');
      assert.equal(await lab.daemon.stop(), 0);
      lab.daemon = null;

      assert.ok(existsSync(join(lab.pin, 'maps', 'kg_grants')), 'pins kept');
      assert.ok(xdpOn(lab.env), 'still attached after the daemon exited');
      assert.deepEqual(connect(lab, lab.env.addrA, 3000), { ok: true, data: 'hello' }, 'the grant outlives the daemon');
      assert.equal(connect(lab, lab.env.addr6A)['ok'], false, 'other sources still dropped without a daemon');

      lab.daemon = startDaemon(lab.env.nsA, ['run', '-c', lab.cfg]);
      const started = await lab.daemon.msg('knockgate running', 20_000);
      assert.equal(started['adopted'], true);
      assert.deepEqual(connect(lab, lab.env.addrA, 3000), { ok: true, data: 'hello' }, 'the adopted gate keeps the grant');
      assert.equal(connect(lab, lab.env.addr6A)['ok'], false);
      assert.equal(await lab.daemon.stop(), 0);
      lab.daemon = null;
      assert.equal(existsSync(lab.pin), false, 'without --keep the adopting run removes the gate');
      assert.equal(xdpOn(lab.env), false);
    });
  });

  test('a bad config at start is refused with file:line:col and nothing is loaded', async () => {
    await withLab(async (lab) => {
      writeFileSync(lab.cfg, config(lab.env, lab.pin).replace('open_for: 2s', 'open_for: 2'));
      const d = startDaemon(lab.env.nsA, ['run', '-c', lab.cfg]);
      lab.daemon = d;
      assert.equal(await d.exited, 4);
      const stderr = d.stderr.join('');
      assert.match(stderr, new RegExp(`${lab.cfg.replace(/[.]/g, '\\.')}:\\d+:\\d+: doors\\.ssh\\.open_for: `));
      assert.match(stderr, /nothing was changed/);
      assert.equal(existsSync(lab.pin), false);
      assert.equal(xdpOn(lab.env), false);
    });
  });
});
