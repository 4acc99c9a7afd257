// The operator CLI against a live gate, end to end: with the daemon running, and with the daemon
// stopped and --keep in force. Real packets between two namespaces; the CLI works on the pins.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSuite, run, withNetns, type NetnsPair } from '../helpers/kernel.js';
import { cli, client, sleep, startClient, startDaemon, type LogLine, type Proc } from '../helpers/daemon.js';

const PORT = 2222;

function config(env: NetnsPair, pin: string): string {
  return `# knockgate test config: comments must survive --save
interfaces: [${env.ifA}]
xdp_mode: native
attach: link
pin_path: ${pin}
log:
  level: debug
doors:
  # the admin door
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]   # the old sequence
    protects: [${PORT}/tcp]
    open_for: 30s
`;
}

interface Lab {
  env: NetnsPair;
  cfg: string;
  pin: string;
  daemon: Proc | null;
}

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  await withNetns(async (env) => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-e2e-cli-'));
    const pin = `/sys/fs/bpf/kg-e2e-${env.id}`;
    const server = startClient(env.nsA, ['serve', String(PORT)]);
    const lab: Lab = { env, cfg: join(dir, 'knockgate.yaml'), pin, daemon: null };
    writeFileSync(lab.cfg, config(env, pin));
    try {
      await server.waitFor((l) => l['listening'] === PORT, 10_000, 'test service');
      await fn(lab);
    } finally {
      if (lab.daemon) await lab.daemon.stop();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
      if (existsSync(pin)) rmSync(pin, { recursive: true, force: true });
    }
  });
}

function kg(lab: Lab, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return cli(lab.env.nsA, [...args, '--pin-path', lab.pin]);
}

function kgJson(lab: Lab, ...args: string[]): unknown {
  const r = kg(lab, ...args, '--json');
  assert.equal(r.status, 0, `knockgate ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const open = (lab: Lab, host = lab.env.addrA): boolean => client(lab.env.nsB, ['connect', host, String(PORT), '1500'])['ok'] === true;
const knock = (lab: Lab, steps: string[], host = lab.env.addrA): void => {
  assert.deepEqual(client(lab.env.nsB, ['knock', host, ...steps]), { ok: true });
};
const OLD = ['7000/tcp', '8000/udp', '9000/tcp'];
const NEW = ['7100/udp', '7200/tcp', '7300/udp'];

kernelSuite('CLI on a live gate', () => {
  test('with the daemon running: door set/add/remove/list, grants, revoke, grant, status, events', async () => {
    await withLab(async (lab) => {
      lab.daemon = startDaemon(lab.env.nsA, ['run', '-c', lab.cfg]);
      const d = lab.daemon;
      await d.msg('knockgate running', 20_000);

      // events --follow streams from the daemon while it runs.
      const follow = startDaemon(lab.env.nsA, ['events', '--follow', '--json', '--pin-path', lab.pin]);
      try {
        for (let i = 0; i < 100 && !follow.stderr.join('').includes('following'); i++) await sleep(100);
        assert.match(follow.stderr.join(''), /following the daemon's events/);
        knock(lab, OLD);
        const streamed = await follow.waitFor((l) => l['event'] === 'grant', 5000, 'grant streamed by events --follow');
        assert.equal(streamed['door'], 'ssh');
        assert.equal(streamed['source'], lab.env.addrB);
      } finally {
        follow.signal('SIGINT');
        assert.equal(await follow.exited, 0);
      }
      assert.equal(kg(lab, 'revoke', lab.env.addrB).status, 0);

      // door set: the old sequence stops working at once, the new one works.
      const set = kg(lab, 'door', 'set', 'ssh', '--sequence', NEW.join(','));
      assert.equal(set.status, 0, set.stderr);
      assert.match(set.stdout, /door ssh: 7100\/udp 7200\/tcp 7300\/udp -> 2222\/tcp/);
      assert.match(set.stdout, /until the daemon reloads its config/);
      const changed = await d.waitFor((l) => l.msg === 'gate changed from the CLI' && l['change'] === 'door set', 5000, 'door set logged');
      assert.equal(changed['door'], 'ssh');
      knock(lab, OLD);
      assert.equal(open(lab), false, 'old sequence must fail after door set');
      knock(lab, NEW);
      assert.equal(open(lab), true, 'new sequence must open the door');
      const grant = await d.waitFor((l: LogLine) => l['event'] === 'grant', 5000, 'grant event');
      assert.equal(grant['door'], 'ssh');

      // An invalid change is refused and changes nothing.
      const bad = kg(lab, 'door', 'set', 'ssh', '--sequence', `7100/udp,${PORT}/tcp`);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /protect/);
      assert.deepEqual((kgJson(lab, 'door', 'list') as { sequence: string[] }[])[0]?.sequence, NEW);

      // grants lists the source, and the connection it opened as a flow; revoke cuts both.
      const listed = kgJson(lab, 'grants') as {
        grants: { source: string; door: string; expires_in_ms: number }[];
        flows: { source: string; port: number; protocol: string; door: string; idle_ms: number }[];
      };
      const grants = listed.grants;
      assert.equal(grants.length, 1);
      assert.equal(grants[0]?.source, lab.env.addrB);
      assert.equal(grants[0]?.door, 'ssh');
      assert.ok((grants[0]?.expires_in_ms ?? 0) > 20_000);
      assert.ok(listed.flows.length >= 1, `flows: ${JSON.stringify(listed.flows)}`);
      assert.deepEqual(
        [...new Set(listed.flows.map((f) => `${f.source} ${f.port}/${f.protocol} ${f.door}`))],
        [`${lab.env.addrB} ${PORT}/tcp ssh`],
      );
      assert.match(kg(lab, 'grants').stdout, /FLOW FROM/);
      const rv = kg(lab, 'revoke', lab.env.addrB);
      assert.equal(rv.status, 0, rv.stderr);
      assert.match(rv.stdout, /flows? cut/);
      assert.deepEqual((kgJson(lab, 'grants') as { flows: unknown[] }).flows, [], 'revoke deletes the flows too');
      assert.equal(open(lab), false, 'revoke must cut new connections');
      assert.equal(kg(lab, 'revoke', lab.env.addrB).status, 1, 'nothing left to revoke');

      // grant by hand, logged as such.
      const g = kg(lab, 'grant', lab.env.addr6B, '--door', 'ssh', '--for', '1m');
      assert.equal(g.status, 0, g.stderr);
      await d.waitFor((l) => l['manual'] === true && l['source'] === lab.env.addr6B, 5000, 'manual grant log line');
      assert.equal(open(lab, lab.env.addr6A), true, 'manual grant opens the door over IPv6');
      assert.equal(kg(lab, 'grant', lab.env.addrB, '--door', 'nope', '--for', '1m').status, 2);

      // door add / list / remove.
      assert.equal(kg(lab, 'door', 'add', 'web', '--sequence', '7400/tcp,7500/tcp', '--protects', '8443/tcp').status, 0);
      const names = (kgJson(lab, 'door', 'list') as { name: string }[]).map((x) => x.name);
      assert.deepEqual(names.sort(), ['ssh', 'web']);
      assert.equal(kg(lab, 'door', 'add', 'web', '--sequence', '7600/tcp', '--protects', '8444/tcp').status, 2, 'duplicate door');
      assert.equal(kg(lab, 'door', 'remove', 'web').status, 0);
      assert.deepEqual((kgJson(lab, 'door', 'list') as { name: string }[]).map((x) => x.name), ['ssh']);

      // status and events.
      const st = kgJson(lab, 'status') as Record<string, unknown>;
      assert.equal(st['daemon_running'], true);
      assert.deepEqual(st['interfaces'], [{ name: lab.env.ifA, ifindex: (st['interfaces'] as { ifindex: number }[])[0]?.ifindex, xdp_mode: 'native', prog_id: (st['interfaces'] as { prog_id: number }[])[0]?.prog_id, attach: 'link' }]);
      assert.ok(Number((st['verdicts'] as Record<string, number>)['drop_knock']) >= 3, 'the three knocks of the new sequence');
      assert.ok(Number((st['counters'] as Record<string, number>)['grant']) >= 1);
      assert.equal((st['grants'] as unknown[]).length, 1);
      const text = kg(lab, 'status');
      assert.match(text.stdout, /daemon running/);
      const events = kg(lab, 'events', '--json', '-n', '100');
      assert.equal(events.status, 0, events.stderr);
      const kinds = events.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { event: string }).event);
      assert.ok(kinds.includes('grant') && kinds.includes('knock'), `events: ${kinds.join(',')}`);

      // --save writes the file, keeping its comments; a SIGHUP then keeps the change.
      const saved = cli(lab.env.nsA, ['door', 'set', 'ssh', '--open-for', '45s', '--save', '-c', lab.cfg]);
      assert.equal(saved.status, 0, saved.stderr);
      const file = readFileSync(lab.cfg, 'utf8');
      assert.match(file, /# the admin door/);
      assert.match(file, /# knockgate test config/);
      assert.match(file, /open_for: 45s/);
      d.signal('SIGHUP');
      await d.msg('config reloaded');
      const after = (kgJson(lab, 'door', 'list') as { sequence: string[]; open_for_ms: number }[])[0];
      assert.equal(after?.open_for_ms, 45_000);
      assert.deepEqual(after?.sequence, OLD, 'the reload restores the file\'s sequence (the CLI set it without --save)');
    });
  });

  test('with the daemon stopped and --keep in force, the CLI still runs the gate; detach removes it', async () => {
    await withLab(async (lab) => {
      lab.daemon = startDaemon(lab.env.nsA, ['run', '-c', lab.cfg, '--keep']);
      await lab.daemon.msg('knockgate running', 20_000);
      assert.equal(await lab.daemon.stop(), 0);
      lab.daemon = null;

      assert.equal(kg(lab, 'door', 'set', 'ssh', '--sequence', NEW.join(',')).status, 0);
      knock(lab, OLD);
      assert.equal(open(lab), false);
      knock(lab, NEW);
      assert.equal(open(lab), true);
      const st = kgJson(lab, 'status') as Record<string, unknown>;
      assert.equal(st['daemon_running'], false);
      assert.equal((st['grants'] as unknown[]).length, 1);
      // Without a daemon, events come straight from the kernel ring buffer.
      const ev = kg(lab, 'events', '--json');
      assert.equal(ev.status, 0, ev.stderr);
      assert.ok(ev.stdout.split('\n').some((l) => l.includes('"event":"grant"')), ev.stdout);
      assert.equal(kg(lab, 'revoke', lab.env.addrB, '--door', 'ssh').status, 0);
      assert.equal(open(lab), false);

      const det = kg(lab, 'detach');
      assert.equal(det.status, 0, det.stderr);
      assert.equal(existsSync(lab.pin), false);
      assert.doesNotMatch(run('ip', ['-n', lab.env.nsA, '-d', 'link', 'show', 'dev', lab.env.ifA]), /\bxdp/);
      assert.equal(open(lab), true, 'without the gate the service answers');
      assert.equal(kg(lab, 'status').status, 3, 'no gate loaded: exit 3');
      await sleep(10);
    });
  });
});
