// The Prometheus endpoint, scraped and parsed after real knocks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSuite, withNetns } from '../helpers/kernel.js';
import { client, startClient, startDaemon, type Proc } from '../helpers/daemon.js';
import { parseProm, sample } from '../helpers/prom.js';

kernelSuite('metrics endpoint', () => {
  test('counters per verdict and door, grants, progress, lost events and map fill, after real knocks', async () => {
    await withNetns(async (env) => {
      const dir = mkdtempSync(join(tmpdir(), 'kg-e2e-metrics-'));
      const pin = `/sys/fs/bpf/kg-e2e-${env.id}`;
      const cfg = join(dir, 'knockgate.yaml');
      writeFileSync(
        cfg,
        `interfaces: [${env.ifA}]
pin_path: ${pin}
limits: { sources: 1024 }
doors:
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [2222/tcp]
  web:
    sequence: [7100/udp, 7200/udp]
    protects: [8443/tcp]
`,
      );
      const server = startClient(env.nsA, ['serve', '2222']);
      let daemon: Proc | null = null;
      try {
        await server.waitFor((l) => l['listening'] === 2222, 10_000, 'service');
        daemon = startDaemon(env.nsA, ['run', '-c', cfg, '--metrics', '127.0.0.1:9477']);
        await daemon.msg('serving metrics', 20_000);
        assert.equal(client(env.nsB, ['connect', env.addrA, '2222', '800'])['ok'], false);
        assert.deepEqual(client(env.nsB, ['knock', env.addrA, '7000/tcp', '8000/udp', '9000/tcp']), { ok: true });
        assert.deepEqual(client(env.nsB, ['knock', env.addrA, '7100/udp']), { ok: true }); // web: in progress
        await daemon.waitFor((l) => l['event'] === 'grant', 5000, 'grant');
        await daemon.waitFor((l) => l['event'] === 'knock' && l['door'] === 'web', 5000, 'web knock');
        assert.equal(client(env.nsB, ['connect', env.addrA, '2222', '3000'])['ok'], true);

        const res = client(env.nsA, ['get', 'http://127.0.0.1:9477/metrics']);
        assert.equal(res['status'], 200, String(res['body']));
        const { samples, type } = parseProm(String(res['body']));
        assert.equal(type.get('knockgate_packets_total'), 'counter');
        assert.ok((sample(samples, 'knockgate_packets_total', { verdict: 'drop_knock' }) ?? 0) >= 4);
        assert.ok((sample(samples, 'knockgate_packets_total', { verdict: 'drop_no_grant' }) ?? 0) >= 1);
        assert.ok((sample(samples, 'knockgate_packets_total', { verdict: 'pass_granted' }) ?? 0) >= 1);
        assert.equal(sample(samples, 'knockgate_door_events_total', { door: 'ssh', event: 'grant' }), 1);
        assert.equal(sample(samples, 'knockgate_door_events_total', { door: 'ssh', event: 'knock' }), 2);
        assert.ok((sample(samples, 'knockgate_door_events_total', { door: 'ssh', event: 'deny', reason: 'no_grant' }) ?? 0) >= 1);
        assert.equal(sample(samples, 'knockgate_grants', { door: 'ssh' }), 1);
        assert.equal(sample(samples, 'knockgate_grants', { door: 'web' }), 0);
        assert.equal(sample(samples, 'knockgate_sources_in_progress', { door: 'web' }), 1);
        assert.equal(sample(samples, 'knockgate_events_lost_total'), 0);
        assert.equal(sample(samples, 'knockgate_map_capacity', { map: 'kg_grants' }), 1024);
        assert.equal(sample(samples, 'knockgate_map_entries', { map: 'kg_grants' }), 1);
        assert.equal(sample(samples, 'knockgate_map_fill_ratio', { map: 'kg_grants' }), 1 / 1024);
        assert.equal(sample(samples, 'knockgate_interface_attached', { interface: env.ifA }), 1);
        // The connection made after the knock is a flow (closed, but lingering up to 10s).
        assert.equal(sample(samples, 'knockgate_flows', { door: 'ssh' }), 1);
        assert.equal(sample(samples, 'knockgate_flows', { door: 'web' }), 0);
        assert.equal(sample(samples, 'knockgate_sources_in_cooldown'), 0);
        assert.equal(sample(samples, 'knockgate_first_knock_filter', { value: 'bytes' }), 8 * 1024 * 1024);
        assert.ok((sample(samples, 'knockgate_first_knock_filter', { value: 'false_positive_estimate' }) ?? 1) < 1e-6);
        assert.equal(sample(samples, 'knockgate_map_capacity', { map: 'kg_flows' }), 65536);
        assert.equal(sample(samples, 'knockgate_map_capacity', { map: 'kg_probation' }), 1024);
        assert.equal(sample(samples, 'knockgate_map_entries', { map: 'kg_progress' }), 0, 'no source has two steps left midway');
        assert.equal(sample(samples, 'knockgate_map_entries', { map: 'kg_flows' }), 1);
        assert.equal(sample(samples, 'knockgate_packets_total', { verdict: 'pass_flow' }) !== undefined, true);
        assert.equal(sample(samples, 'knockgate_kernel_events_total', { counter: 'flow_new' }), 1);
        assert.equal(sample(samples, 'knockgate_kernel_events_total', { counter: 'grant' }), 1);
        assert.equal(client(env.nsA, ['get', 'http://127.0.0.1:9477/other'])['status'], 404);
      } finally {
        if (daemon) await daemon.stop();
        await server.stop();
        rmSync(dir, { recursive: true, force: true });
        if (existsSync(pin)) rmSync(pin, { recursive: true, force: true });
      }
    });
  });
});
