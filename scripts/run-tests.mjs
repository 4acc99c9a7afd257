#!/usr/bin/env node
// Runs the compiled node:test files one file at a time (kernel tests share the machine's
// network namespaces and bpffs, so they must not overlap).
//   node scripts/run-tests.mjs [unit|kernel|e2e|ops|fleet|matrix ...]   (default: unit kernel e2e ops fleet)
// `matrix` is the set run on other kernels by scripts/kernel-matrix.sh: the layout tests and the
// XDP test tables (BPF_PROG_TEST_RUN), which prove the program loads and behaves; the network
// end-to-end tests are too timing-bound for a guest under emulation. `share` is what
// kernel-matrix.sh runs in a second guest: libxdp's dispatcher, the XDP tables through it and the
// lab sharing a veth with xdp-tools' xdp-filter (test/kernel/share-xdp-filter.test.ts), which this
// machine's kernel cannot run (it refuses freplace). Both sets fail where the gate falls back to a
// direct link (KG_EXPECT_DISPATCHER=1).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const suites = process.argv.slice(2);
const wanted = suites.length > 0 ? suites : ['unit', 'kernel', 'e2e', 'ops', 'fleet'];
const SETS = {
  matrix: [['unit', /^layout\.test\.js$/], ['kernel', /^xdp-(?!dispatcher-).*\.test\.js$/]],
  share: [['kernel', /^xdp-dispatcher-.*\.test\.js$/], ['kernel', /^share-xdp.*\.test\.js$/]],
};
const files = [];
for (const suite of wanted) {
  for (const [dirName, pattern] of SETS[suite] ?? [[suite, /\.test\.js$/]]) {
    const dir = join(root, 'dist', 'test', dirName);
    let entries = [];
    try { entries = readdirSync(dir); } catch { continue; }
    for (const name of entries.sort()) {
      if (pattern.test(name) && statSync(join(dir, name)).isFile()) files.push(join(dir, name));
    }
  }
}
if (files.length === 0) {
  console.error(`no test files found under dist/test/{${wanted.join(',')}}: run "npm run build" first`);
  process.exit(1);
}
// The matrix kernel (Debian's 6.1) runs libxdp's dispatcher: there a fallback to a direct link fails.
const env = wanted.includes('matrix') || wanted.includes('share') ? { ...process.env, KG_EXPECT_DISPATCHER: '1' } : process.env;
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
