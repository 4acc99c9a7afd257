// `knockgate demo --fleet` runs start to finish (a knock at A opens B) and leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { kernelSuite, run } from '../helpers/kernel.js';
import { CLI } from '../helpers/daemon.js';
import { etcdSkipReason } from '../helpers/etcd.js';

kernelSuite('demo --fleet', () => {
  const skip = etcdSkipReason();
  test('a knock at host A opens host B; no namespace, interface, pin or etcd data is left', { skip: skip ?? false }, () => {
    const r = spawnSync(process.execPath, [CLI, 'demo', '--fleet'], { encoding: 'utf8', timeout: 240_000 });
    assert.equal(r.status, 0, `demo --fleet failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /3\. the client connects to B.*\n\s+-> refused/);
    assert.match(r.stdout, /\[A event\] grant\s+ssh 198\.18\.20\.2 -> 9000\/tcp/);
    assert.match(r.stdout, /\[B\] a grant from host-a written into this kernel/);
    assert.match(r.stdout, /5\. the client connects to B, where it never knocked\n\s+-> open: SSH-2\.0-knockgate-demo on host B/);
    assert.match(r.stdout, /host-a .* connected/);
    assert.match(r.stdout, /demo finished: a knock at A opened B/);
    assert.doesNotMatch(run('ip', ['netns', 'list']), /kg-demo-f/);
    assert.doesNotMatch(run('ip', ['-o', 'link', 'show']), /kg-demo-f/);
    assert.equal(existsSync('/sys/fs/bpf/kg-demo-fleet-a') || existsSync('/sys/fs/bpf/kg-demo-fleet-b'), false);
  });
});
