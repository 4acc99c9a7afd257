// End to end, fleet mode (issue 12): three gates in three gateway namespaces (own pin path,
// daemon and interface each), one client namespace with one source address reaching all three,
// and a 3-member etcd cluster on a bridge the daemons reach (test/helpers/fleet-lab.ts).
//
//   replication  a knock at A opens B and C; a revoke at C cuts A and B; a manual grant at B opens
//                A; a restarted daemon (gate removed) loads the live grants again
//   one-time     a rotating window spent at A is refused at B (fleet-wide claim); a signed
//                datagram accepted at A and replayed at B is refused there (nonce claim)
//   failures     the etcd leader killed during knocks: no grant lost; all of etcd stopped: every
//                gate keeps enforcing and granting locally, and when etcd returns the grants made
//                meanwhile reach the others and a revoke made meanwhile is applied; a compacted
//                revision: the watch reloads
//   config       bad fleet sections are refused with file:line:col errors
//
// No timing assertions: waits are bounded polls with generous limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelSuite } from '../helpers/kernel.js';
import { etcdSkipReason } from '../helpers/etcd.js';
import { SERVICE_PORT, SOURCE, fleetSection, runAsync, withFleetLab, type FleetLab, type Gw } from '../helpers/fleet-lab.js';
import { CLI, sleep, type LogLine } from '../helpers/daemon.js';
import { encodeSigned, encodeSpa, readPrivateKey, rotatingSequence, windowOf } from '../../src/knock/index.js';
import { parseAddress } from '../../src/net/addr.js';

const SEQ = ['7000/tcp', '8000/udp', '9000/tcp'];
const ROT = { first: 40000, last: 40999, length: 4, windowMs: 20_000 } as const;
const SIG_PORT = 62202;
const SPA_PORT = 62201;

function gateConfig(lab: FleetLab, gw: Gw, extra: { rotSecret?: string; signedPub?: string; signedClosed?: boolean; spaKey?: string; openFor?: string; web?: boolean } = {}): string {
  return `# fleet e2e: ${gw.host}
interfaces: [${gw.dataIf}]
xdp_mode: native
pin_path: ${gw.pin}
log:
  level: debug
  denials_per_second: 100
  knock_events_per_second: 1000
brute_force:
  max_failures: 0
${fleetSection(lab, gw)}doors:
  ssh:
    sequence: [${SEQ.join(', ')}]
    protects: [${SERVICE_PORT}/tcp]
    open_for: ${extra.openFor ?? '120s'}
${extra.web ? `  web:
    sequence: [7100/tcp, 8100/udp, 9100/tcp]
    protects: [2223/tcp]
    open_for: 120s
` : ''}${
  extra.rotSecret
    ? `  rot:
    type: rotating
    secret_file: ${extra.rotSecret}
    knock_ports: ${ROT.first}-${ROT.last}/udp
    length: ${ROT.length}
    window: ${ROT.windowMs / 1000}s
    protects: [2205/tcp]
    open_for: 120s
`
    : ''
}${
  extra.signedPub
    ? `  sig:
    type: signed
    port: ${SIG_PORT}/udp
    clients:
      alice: ${extra.signedPub}
    max_skew: 30s
    protects: [2202/tcp]
    open_for: 120s
${extra.signedClosed ? '    on_partition: closed\n' : ''}`
    : ''
}${
  extra.spaKey
    ? `  spa:
    type: spa
    port: ${SPA_PORT}/udp
    key_file: ${extra.spaKey}
    max_skew: 30s
    protects: [2201/tcp]
    open_for: 120s
`
    : ''
}`;
}

const isEvent = (event: string, extra: Record<string, unknown> = {}) => (l: LogLine) =>
  l['event'] === event && l['source'] === SOURCE && Object.entries(extra).every(([k, v]) => l[k] === v);

async function knockAt(lab: FleetLab, i: number, steps = SEQ): Promise<void> {
  assert.deepEqual(await lab.client(['knock', lab.gws[i]!.addr, ...steps]), { ok: true });
}

/** Whether gateway i's kernel holds a grant of `door` for the source, polled until it does (bounded). */
async function hasGrantSoon(lab: FleetLab, i: number, door: string, timeoutMs = 20_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await lab.cli(i, ['grants', '--json', '--pin-path', lab.gws[i]!.pin]);
    const rows = (JSON.parse(r.stdout) as { grants: { source: string; door: string }[] }).grants;
    if (rows.some((g) => g.source === SOURCE && g.door === door)) return true;
    if (Date.now() > deadline) return false;
    await sleep(300);
  }
}

async function lacksGrantSoon(lab: FleetLab, i: number, door: string, timeoutMs = 20_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await lab.cli(i, ['grants', '--json', '--pin-path', lab.gws[i]!.pin]);
    const rows = (JSON.parse(r.stdout) as { grants: { source: string; door: string }[] }).grants;
    if (!rows.some((g) => g.source === SOURCE && g.door === door)) return true;
    if (Date.now() > deadline) return false;
    await sleep(300);
  }
}

/** Waits until every daemon says it loaded the fleet's records (its first snapshot). */
async function fleetReady(lab: FleetLab, i: number): Promise<void> {
  await lab.gws[i]!.daemon!.waitFor((l) => l.msg === 'fleet: records loaded', 30_000, `fleet records loaded on ${lab.gws[i]!.host}`);
}

kernelSuite('fleet mode, end to end: three gates and a 3-member etcd cluster', () => {
  const skip = etcdSkipReason();

  test('knock at A opens B and C; revoke at C cuts A and B; manual grant at B opens A; a restarted daemon reloads the grants', { skip: skip ?? false }, async () => {
    await withFleetLab({}, async (lab) => {
      lab.writeConfigs((gw) => gateConfig(lab, gw));
      for (let i = 0; i < 3; i++) await lab.start(i);
      for (let i = 0; i < 3; i++) await fleetReady(lab, i);
      for (let i = 0; i < 3; i++) assert.equal(await lab.connects(i), false, `${lab.gws[i]!.host} is closed before any knock`);

      await knockAt(lab, 0);
      await lab.gws[0]!.daemon!.waitFor(isEvent('grant', { door: 'ssh' }), 10_000, 'grant at A');
      assert.equal(await lab.opensSoon(0), true, 'A opens after the knock at A');
      assert.equal(await lab.opensSoon(1), true, 'B opens after the knock at A (replicated)');
      assert.equal(await lab.opensSoon(2), true, 'C opens after the knock at A (replicated)');
      // B and C logged no grant of their own: theirs came from the fleet.
      for (const i of [1, 2]) assert.equal(lab.gws[i]!.daemon!.lines.find(isEvent('grant')), undefined, `${lab.gws[i]!.host} granted nothing itself`);

      // The grants, with their origin.
      const grants = await lab.cli(1, ['grants', '-c', lab.gws[1]!.cfg, '--json']);
      assert.equal(grants.status, 0, grants.stderr);
      const rows = (JSON.parse(grants.stdout) as { grants: { source: string; door: string; origin: string }[] }).grants;
      assert.deepEqual(rows.map((r) => [r.source, r.door, r.origin]), [[SOURCE, 'ssh', 'gw1']]);

      // Revoke at C: cut everywhere.
      const rv = await lab.cli(2, ['revoke', SOURCE, '-c', lab.gws[2]!.cfg]);
      assert.equal(rv.status, 0, rv.stderr);
      assert.match(rv.stdout, /on every host of the fleet/);
      for (const i of [2, 0, 1]) assert.equal(await lab.closesSoon(i), true, `${lab.gws[i]!.host} is closed after the revoke at C`);

      // A manual grant at B reaches A; --local stays on B.
      const gr = await lab.cli(1, ['grant', SOURCE, '--door', 'ssh', '--for', '5m', '-c', lab.gws[1]!.cfg]);
      assert.equal(gr.status, 0, gr.stderr);
      assert.equal(await lab.opensSoon(0), true, 'A opens after the manual grant at B');
      const rvLocal = await lab.cli(0, ['revoke', SOURCE, '--local', '-c', lab.gws[0]!.cfg]);
      assert.equal(rvLocal.status, 0, rvLocal.stderr);
      assert.equal(await lab.closesSoon(0), true, 'A is closed after its local revoke');
      assert.equal(await lab.connects(1, 3_000), true, 'B keeps the grant after a --local revoke at A');

      // Fleet status: three hosts with heartbeats, connected.
      const st = await lab.cli(0, ['fleet', 'status', '-c', lab.gws[0]!.cfg, '--json']);
      assert.equal(st.status, 0, st.stderr + st.stdout);
      const status = JSON.parse(st.stdout) as { state: string; hosts: { host: string }[]; daemon: boolean };
      assert.equal(status.state, 'connected');
      assert.equal(status.daemon, true);
      assert.deepEqual(status.hosts.map((h) => h.host), ['gw1', 'gw2', 'gw3']);

      // Restart C's daemon (the gate and its grants are removed on stop): the grant comes back from etcd.
      await lab.stop(2);
      await lab.start(2);
      await fleetReady(lab, 2);
      assert.equal(await lab.opensSoon(2), true, 'C opens again after its restart (grant reloaded from etcd)');
    });
  });

  test('one-time means once per fleet: a rotating window spent at A is refused at B; a signed datagram accepted at A is a replay at B', { skip: skip ?? false }, async () => {
    await withFleetLab({ gateways: 2 }, async (lab) => {
      const rotSecret = join(lab.dir, 'rot.secret');
      const alice = join(lab.dir, 'alice');
      const spaKey = join(lab.dir, 'spa.key');
      for (const [type, path] of [['rotating', rotSecret], ['signed', alice], ['spa', spaKey]] as const) {
        const r = await runAsync(process.execPath, [CLI, 'keygen', '--type', type, path]);
        assert.equal(r.status, 0, r.stderr);
      }
      lab.writeConfigs((gw) => gateConfig(lab, gw, { rotSecret, signedPub: `${alice}.pub`, spaKey }));
      for (let i = 0; i < 2; i++) await lab.start(i);
      for (let i = 0; i < 2; i++) await fleetReady(lab, i);
      const [a, b] = [lab.gws[0]!.daemon!, lab.gws[1]!.daemon!];
      const revokeAll = async (): Promise<void> => {
        const rv = await lab.cli(0, ['revoke', SOURCE, '-c', lab.gws[0]!.cfg]);
        assert.equal(rv.status, 0, rv.stderr);
        for (const i of [0, 1]) assert.equal(await lab.closesSoon(i), true, `${lab.gws[i]!.host} closed after the fleet-wide revoke`);
      };

      // Rotating: the window's sequence at A opens (claim won); the same sequence at B is spent.
      const secret = Buffer.from(readFileSync(rotSecret, 'utf8').replace(/\s+/g, ''), 'hex');
      // Not in the last 8 s of a window: the sequence must stay live at A and then at B.
      if (ROT.windowMs - (Date.now() % ROT.windowMs) < 8_000) await sleep(ROT.windowMs - (Date.now() % ROT.windowMs) + 500);
      const w = windowOf(Date.now(), ROT.windowMs);
      const seq = rotatingSequence(secret, 'rot', w, { first: ROT.first, last: ROT.last }, ROT.length).map((p) => `${p}/udp`);
      await knockAt(lab, 0, seq);
      await a.waitFor(isEvent('grant', { door: 'rot' }), 10_000, 'rotating grant at A');
      await revokeAll();
      let mark = b.lines.length;
      await knockAt(lab, 1, seq);
      await b.waitFor((l) => b.lines.indexOf(l) >= mark && isEvent('reject', { door: 'rot', reason: 'spent' })(l), 10_000, 'the spent window refused at B');
      assert.equal(b.lines.slice(mark).find(isEvent('grant', { door: 'rot' })), undefined, 'B granted nothing for the spent window');

      // Signed: the datagram opens at A; replayed at B it is a replay (B's own cache never saw it).
      const key = await readPrivateKey(alice);
      const datagram = encodeSigned({ privateKey: key, door: 'sig', source: parseAddress(SOURCE), time: Math.floor(Date.now() / 1000) });
      await lab.sendUdp(0, SIG_PORT, datagram);
      await a.waitFor(isEvent('grant', { door: 'sig', client: 'alice' }), 10_000, 'signed grant at A');
      await revokeAll();
      mark = b.lines.length;
      await lab.sendUdp(1, SIG_PORT, datagram);
      await b.waitFor((l) => b.lines.indexOf(l) >= mark && isEvent('reject', { door: 'sig', reason: 'replay' })(l), 10_000, 'the replay refused at B');
      assert.equal(b.lines.slice(mark).find(isEvent('grant', { door: 'sig' })), undefined, 'B granted nothing for the replay');

      // A fresh signed knock at B opens (the claim is per nonce, not per door).
      const fresh = encodeSigned({ privateKey: key, door: 'sig', source: parseAddress(SOURCE), time: Math.floor(Date.now() / 1000) });
      await lab.sendUdp(1, SIG_PORT, fresh);
      await b.waitFor(isEvent('grant', { door: 'sig', client: 'alice' }), 10_000, 'a fresh signed knock opens at B');

      // SPA: verified in each kernel, which never waits for etcd; the nonce accepted at A reaches
      // B's kg_nonces, so the same datagram replayed at B (after a revoke) is a replay there.
      const spaBytes = Buffer.from(readFileSync(spaKey, 'utf8').replace(/\s+/g, ''), 'hex');
      const spa = encodeSpa({ key: spaBytes, door: 'spa', source: parseAddress(SOURCE), time: Math.floor(Date.now() / 1000) });
      await lab.sendUdp(0, SPA_PORT, spa);
      await a.waitFor(isEvent('grant', { door: 'spa' }), 10_000, 'spa grant at A');
      await revokeAll();
      await sleep(1_000); // the nonce's way to B: milliseconds, given a generous bound
      mark = b.lines.length;
      await lab.sendUdp(1, SPA_PORT, spa);
      await b.waitFor((l) => b.lines.indexOf(l) >= mark && isEvent('reject', { door: 'spa', reason: 'replay' })(l), 10_000, 'the spa replay refused at B');
      assert.equal(b.lines.slice(mark).find(isEvent('grant', { door: 'spa' })), undefined, 'B granted nothing for the spa replay');

      const st = await lab.cli(1, ['fleet', 'status', '-c', lab.gws[1]!.cfg, '--json']);
      const claims = (JSON.parse(st.stdout) as { claims: { won: number; lost: number } }).claims;
      assert.ok(claims.lost >= 2 && claims.won >= 1, `B's claims: ${JSON.stringify(claims)}`);
    });
  });

  test('partition: with all of etcd stopped every gate keeps enforcing and granting locally; when it returns grants and revokes made meanwhile reach the other hosts', { skip: skip ?? false }, async () => {
    await withFleetLab({ gateways: 2 }, async (lab) => {
      const alice = join(lab.dir, 'alice');
      const kg = await runAsync(process.execPath, [CLI, 'keygen', '--type', 'signed', alice]);
      assert.equal(kg.status, 0, kg.stderr);
      lab.writeConfigs((gw) => gateConfig(lab, gw, { web: true, signedPub: `${alice}.pub`, signedClosed: true }));
      for (let i = 0; i < 2; i++) await lab.start(i);
      for (let i = 0; i < 2; i++) await fleetReady(lab, i);
      const [a, b] = [lab.gws[0]!.daemon!, lab.gws[1]!.daemon!];
      // Before: a manual grant of door web at A reaches B.
      const gr = await lab.cli(0, ['grant', SOURCE, '--door', 'web', '--for', '10m', '-c', lab.gws[0]!.cfg]);
      assert.equal(gr.status, 0, gr.stderr);
      assert.equal(await hasGrantSoon(lab, 1, 'web'), true, 'B holds the web grant made at A');

      await lab.etcd.stopAll();
      const down = await a.waitFor((l) => l.msg?.startsWith('fleet: etcd unreachable') === true, 60_000, 'A notices the partition');
      assert.equal(typeof down['reason'], 'string', 'the partition is logged with its reason');
      await b.waitFor((l) => l.msg?.startsWith('fleet: etcd unreachable') === true, 60_000, 'B notices the partition');
      const st = await lab.cli(0, ['fleet', 'status', '-c', lab.gws[0]!.cfg, '--json']);
      assert.equal(st.status, 1, 'fleet status fails while etcd is unreachable');
      assert.equal((JSON.parse(st.stdout) as { state: string }).state, 'unreachable');

      // Local enforcement and local grants go on: a knock at A opens A, not B.
      assert.equal(await lab.connects(0), false, 'A still enforces');
      await knockAt(lab, 0);
      await a.waitFor(isEvent('grant', { door: 'ssh' }), 10_000, 'local grant at A during the partition');
      assert.equal(await lab.opensSoon(0), true, 'A opens from local state');
      assert.equal(await lab.connects(1), false, 'B does not (nothing replicated during the partition)');
      // A one-time door with on_partition: closed refuses while no claim can be made.
      const key = await readPrivateKey(alice);
      const signed = encodeSigned({ privateKey: key, door: 'sig', source: parseAddress(SOURCE), time: Math.floor(Date.now() / 1000) });
      await lab.sendUdp(0, SIG_PORT, signed);
      await a.waitFor(isEvent('reject', { door: 'sig', reason: 'fleet_unreachable' }), 10_000, 'the closed signed door refuses during the partition');
      assert.equal(a.lines.find(isEvent('grant', { door: 'sig' })), undefined, 'no signed grant during the partition');
      // A revoke at B during the partition: local now, fleet-wide later.
      const rv = await lab.cli(1, ['revoke', SOURCE, '--door', 'web', '-c', lab.gws[1]!.cfg]);
      assert.equal(rv.status, 0, rv.stderr);
      assert.equal(await hasGrantSoon(lab, 1, 'web', 2_000), false, 'B cut web at once');
      assert.equal(await hasGrantSoon(lab, 0, 'web', 500), true, 'A keeps web while partitioned');

      await lab.etcd.restartAll();
      await a.waitFor((l) => l.msg === 'fleet: connected to etcd; records resynchronised both ways' && a.lines.indexOf(l) > a.lines.indexOf(down), 90_000, 'A reconnects');
      assert.equal(await lab.opensSoon(1, 60_000), true, "B opens: A's partition-time grant was published when etcd returned");
      assert.equal(await lacksGrantSoon(lab, 0, 'web', 60_000), true, "A cut web: B's partition-time revoke was applied");
      // Logged once per partition, not once per failed write.
      assert.equal(a.lines.filter((l) => l.msg?.startsWith('fleet: etcd unreachable') === true).length, 1, 'the partition is logged once');
    });
  });

  test('the etcd leader killed during grants: none is lost and the watches resume', { skip: skip ?? false }, async () => {
    await withFleetLab({}, async (lab) => {
      lab.writeConfigs((gw) => gateConfig(lab, gw));
      for (let i = 0; i < 3; i++) await lab.start(i);
      for (let i = 0; i < 3; i++) await fleetReady(lab, i);
      const sources = Array.from({ length: 16 }, (_, k) => `198.18.77.${k + 1}`);
      let killed = false;
      for (const [k, src] of sources.entries()) {
        if (k === 4) {
          await lab.etcd.kill(await lab.etcd.leader());
          killed = true;
        }
        const r = await lab.cli(0, ['grant', src, '--door', 'ssh', '--for', '10m', '-c', lab.gws[0]!.cfg]);
        assert.equal(r.status, 0, `grant ${src}: ${r.stderr}`);
      }
      assert.ok(killed);
      for (const i of [1, 2]) {
        const deadline = Date.now() + 90_000;
        let missing: string[] = sources;
        while (missing.length > 0 && Date.now() < deadline) {
          const r = await lab.cli(i, ['grants', '--json', '--pin-path', lab.gws[i]!.pin]);
          const have = new Set((JSON.parse(r.stdout) as { grants: { source: string }[] }).grants.map((g) => g.source));
          missing = sources.filter((s) => !have.has(s));
          if (missing.length > 0) await sleep(500);
        }
        assert.deepEqual(missing, [], `${lab.gws[i]!.host} holds every grant made at A across the leader's death`);
      }
      // The watches resumed: a knock at A now still reaches B and C.
      await knockAt(lab, 0);
      assert.equal(await lab.opensSoon(1, 30_000), true, 'B opens after a knock at A (after the leader kill)');
      assert.equal(await lab.opensSoon(2, 30_000), true, 'C opens after a knock at A (after the leader kill)');
    });
  });

  test('a compacted revision: a host whose watch fell behind a compaction reloads every record', { skip: skip ?? false }, async () => {
    await withFleetLab({ gateways: 2 }, async (lab) => {
      lab.writeConfigs((gw) => gateConfig(lab, gw));
      for (let i = 0; i < 2; i++) await lab.start(i);
      for (let i = 0; i < 2; i++) await fleetReady(lab, i);
      const b = lab.gws[1]!.daemon!;
      // B's member, from B's heartbeat; B frozen, its member killed: B's watch must resume elsewhere.
      let hbText = '';
      for (const deadline = Date.now() + 30_000; hbText === '' && Date.now() < deadline; ) {
        hbText = lab.etcd.etcdctl(['get', `${lab.etcd.prefix}hosts/gw2`, '--print-value-only']).trim();
        if (hbText === '') await sleep(300);
      }
      const hb = JSON.parse(hbText) as { endpoint: string };
      const member = lab.etcd.members.findIndex((m) => m.clientUrl === hb.endpoint);
      assert.ok(member >= 0, `B's member ${hb.endpoint}`);
      b.signal('SIGSTOP');
      try {
        await lab.etcd.kill(member);
        const sources = ['198.18.78.1', '198.18.78.2', '198.18.78.3'];
        for (const src of sources) {
          const r = await lab.cli(0, ['grant', src, '--door', 'ssh', '--for', '10m', '-c', lab.gws[0]!.cfg]);
          assert.equal(r.status, 0, r.stderr);
        }
        // Let A publish, then compact past everything B saw.
        const deadline = Date.now() + 30_000;
        while (lab.etcd.etcdctl(['get', '--prefix', `${lab.etcd.prefix}grants/`, '--keys-only']).trim().split('\n').filter((l) => l !== '').length < 3) {
          assert.ok(Date.now() < deadline, 'A published its grants');
          await sleep(300);
        }
        lab.etcd.compact();
      } finally {
        b.signal('SIGCONT');
      }
      await b.waitFor((l) => l.msg === 'fleet: records loaded' && l['reason'] === 'compacted', 60_000, 'B reloads after the compaction');
      for (const src of ['198.18.78.1', '198.18.78.2', '198.18.78.3']) {
        const r = await lab.cli(1, ['grants', '--json', '--pin-path', lab.gws[1]!.pin]);
        assert.ok((JSON.parse(r.stdout) as { grants: { source: string }[] }).grants.some((g) => g.source === src), `B holds ${src} after the reload`);
      }
    });
  });

  test('bad fleet sections are refused with file:line:col errors, and a live daemon refuses a changed fleet section', { skip: skip ?? false }, async () => {
    await withFleetLab({ gateways: 1, etcdMembers: 1 }, async (lab) => {
      const gw = lab.gws[0]!;
      const good = gateConfig(lab, gw);
      const cases: [string, RegExp][] = [
        [good.replace('  host_id: gw1\n', '  host_id: gw1\n  cooldown: shared\n'), /:\d+:3: fleet\.cooldown: unknown key "cooldown": did you mean "cooldowns"\?/],
        [good.replace(/  endpoints: \[.*\]\n/, '  endpoints: [ftp://198.19.0.1:2379]\n'), /:\d+:\d+: fleet\.endpoints\[0\]: .*http:\/\/ or https:\/\//],
        [good.replace(/  prefix: .*\n/, '  prefix: /\n'), /:\d+:\d+: fleet\.prefix: "\/" is the whole key space/],
        [good.replace('  host_id: gw1\n', '  host_id: gw1\n  username: kg\n'), /fleet\.password_file: username is given without password_file/],
        [good.replace('    open_for: 120s\n', '    open_for: 120s\n    on_partition: closed\n'), /doors\.ssh\.on_partition: on_partition applies to one-time doors/],
      ];
      for (const [text, want] of cases) {
        writeFileSync(gw.cfg, text);
        const r = await lab.cli(0, ['check', '-c', gw.cfg]);
        assert.equal(r.status, 4, `check refuses: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout + r.stderr, want);
        assert.ok((r.stdout + r.stderr).includes(gw.cfg), 'the error names the file');
      }
      // A password file readable by others is refused before the daemon starts.
      const pw = join(lab.dir, 'etcd.password');
      writeFileSync(pw, 'secret-password-123\n', { mode: 0o644 });
      writeFileSync(gw.cfg, good.replace('  host_id: gw1\n', `  host_id: gw1\n  username: kg\n  password_file: ${pw}\n`));
      const run = await lab.cli(0, ['run', '-c', gw.cfg], 30_000);
      assert.notEqual(run.status, 0);
      assert.match(run.stdout + run.stderr, /fleet\.password_file/);
      assert.ok(!(run.stdout + run.stderr).includes('secret-password-123'), 'the password is never printed');

      // A live daemon keeps its fleet section: a reload that changes it is refused with what to do.
      writeFileSync(gw.cfg, good);
      const d = await lab.start(0);
      writeFileSync(gw.cfg, good.replace('  host_id: gw1\n', '  host_id: gw9\n'));
      d.signal('SIGHUP');
      await d.waitFor((l) => l['key'] === 'fleet' && String(l.msg).includes('restart the daemon'), 20_000, 'reload refused for fleet');
    });
  });
});

