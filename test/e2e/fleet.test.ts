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
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelSuite } from '../helpers/kernel.js';
import { etcdSkipReason } from '../helpers/etcd.js';
import { SERVICE_PORT, SOURCE, fleetSection, runAsync, withFleetLab, type FleetLab, type Gw } from '../helpers/fleet-lab.js';
import { CLI, sleep, type LogLine } from '../helpers/daemon.js';
import { encodeSigned, readPrivateKey, rotatingSequence, windowOf } from '../../src/knock/index.js';
import { parseAddress } from '../../src/net/addr.js';

const SEQ = ['7000/tcp', '8000/udp', '9000/tcp'];
const ROT = { first: 40000, last: 40999, length: 4, windowMs: 20_000 } as const;
const SIG_PORT = 62202;

function gateConfig(lab: FleetLab, gw: Gw, extra: { rotSecret?: string; signedPub?: string; openFor?: string } = {}): string {
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
${
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
`
    : ''
}`;
}

const isEvent = (event: string, extra: Record<string, unknown> = {}) => (l: LogLine) =>
  l['event'] === event && l['source'] === SOURCE && Object.entries(extra).every(([k, v]) => l[k] === v);

async function knockAt(lab: FleetLab, i: number, steps = SEQ): Promise<void> {
  assert.deepEqual(await lab.client(['knock', lab.gws[i]!.addr, ...steps]), { ok: true });
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
});
