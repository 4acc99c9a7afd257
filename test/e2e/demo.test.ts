// The README's main command: the demo runs start to finish and leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSuite, ROOT, run } from '../helpers/kernel.js';
import { CLI } from '../helpers/daemon.js';

function processesMentioning(text: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(text) && Number(pid) !== process.pid) out.push(`${pid}: ${cmd}`);
    } catch {
      /* gone */
    }
  }
  return out;
}

kernelSuite('demo', () => {
  test('runs start to finish and leaves no namespace, interface, pin or process', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-demo-test-'));
    try {
      const cfg = join(dir, 'demo.yaml');
      writeFileSync(cfg, readFileSync(join(ROOT, 'config/demo.yaml'), 'utf8').replace('open_for: 10s', 'open_for: 2s'));
      const r = spawnSync(process.execPath, [CLI, 'demo', '-c', cfg], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, `demo failed:\n${r.stdout}\n${r.stderr}`);
      const out = r.stdout;
      assert.match(out, /2\. the client connects.*\n\s+-> refused: no answer/);
      assert.match(out, /\[event\] deny\s+ssh 198\.18\.0\.2 -> 2222\/tcp/);
      assert.match(out, /\[event\] knock\s+ssh 198\.18\.0\.2 -> 7000\/tcp step 1\/3/);
      assert.match(out, /\[event\] grant\s+ssh 198\.18\.0\.2 -> 9000\/tcp open for/);
      assert.match(out, /4\. the client connects again\n\s+-> open: SSH-2\.0-knockgate-demo/);
      assert.match(out, /\[event\] expire ssh 198\.18\.0\.2: the grant ended/);
      assert.match(out, /-> refused again/);
      assert.match(out, /demo finished: the gate did what it says/);
      assert.match(out, /cleaned up/);

      assert.doesNotMatch(run('ip', ['netns', 'list']), /kg-demo/);
      assert.doesNotMatch(run('ip', ['-o', 'link', 'show']), /kg-demo/);
      assert.equal(existsSync('/sys/fs/bpf/kg-demo'), false);
      assert.deepEqual(processesMentioning(cfg), []);
      assert.deepEqual(processesMentioning('knockgate-demo (a real TCP service'), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
