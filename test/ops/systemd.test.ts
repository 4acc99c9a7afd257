// config/knockgate.service: systemd accepts every directive (systemd-analyze verify, with no
// warning about the unit), its sandbox scores as it should, and the capability set it grants is
// both enough and minimal: the daemon starts with exactly those capabilities and fails without
// any one of them (run under setpriv in test namespaces: no systemd is needed for that part).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IN_CI, ROOT, kernelTest, withNetns, type NetnsPair } from '../helpers/kernel.js';
import { CLI, Proc } from '../helpers/daemon.js';

const UNIT = `${ROOT}config/knockgate.service`;
const unitText = readFileSync(UNIT, 'utf8');

/** The unit's `Key=value` lines (comments and sections left out), in order. */
function directives(key: string): string[] {
  return unitText
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));
}

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

/** false (test skipped) without the tool; in CI (CI=true) a missing tool fails the test. */
function requireTool(t: TestContext, cmd: string, aptPackage: string): boolean {
  if (hasCommand(cmd)) return true;
  const reason = `${cmd} is not installed (apt-get install ${aptPackage})`;
  if (IN_CI) throw new Error(`ops test cannot run in CI (CI=true): ${reason}`);
  t.skip(reason);
  return false;
}

/**
 * A copy of the unit, still named knockgate.service, whose ExecStart runs this checkout's CLI
 * with this node, so that verify checks a command that exists.
 */
function withUnitCopy<T>(fn: (path: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'kg-ops-unit-'));
  try {
    const path = join(dir, 'knockgate.service');
    const text = unitText.replace(/^ExecStart=\/usr\/bin\/knockgate /m, `ExecStart=${process.execPath} ${CLI} `);
    assert.notEqual(text, unitText, 'ExecStart=/usr/bin/knockgate ... not found in the unit');
    writeFileSync(path, text);
    return fn(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the unit runs the daemon as documented', () => {
  assert.deepEqual(directives('ExecStart'), ['/usr/bin/knockgate run -c /etc/knockgate/knockgate.yaml']);
  assert.deepEqual(directives('Type'), ['simple']);
  assert.deepEqual(directives('ExecReload'), ['/bin/kill -HUP $MAINPID']);
  assert.deepEqual(directives('KillSignal'), ['SIGTERM']);
  assert.deepEqual(directives('Restart'), ['on-failure']);
  assert.deepEqual(directives('ReadWritePaths'), ['/sys/fs/bpf']);
  assert.deepEqual(directives('ProtectSystem'), ['strict']);
  assert.ok(directives('SystemCallFilter').some((f) => f.split(/\s+/).includes('bpf')), 'bpf(2) must be allowed: @system-service lacks it');
  assert.ok(!directives('SystemCallFilter').some((f) => f.startsWith('~') && f.includes('@privileged')), '~@privileged would take bpf(2) away again');
  assert.deepEqual(directives('MemoryDenyWriteExecute'), [], "MemoryDenyWriteExecute breaks Node's JIT");
  assert.deepEqual(directives('AmbientCapabilities'), directives('CapabilityBoundingSet'));
});

test('systemd-analyze verify accepts the unit without a warning', (t) => {
  if (!requireTool(t, 'systemd-analyze', 'systemd')) return;
  withUnitCopy((path) => {
    const r = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8', timeout: 60_000 });
    const out = `${r.stdout}${r.stderr}`.trim();
    assert.equal(r.status, 0, `systemd-analyze verify exited with ${r.status}:\n${out}`);
    // verify exits 0 even for unknown keys and unparsable values: read what it says.
    const about = out.split('\n').filter((l) => l.includes('knockgate'));
    assert.deepEqual(about, [], `systemd-analyze verify complained about the unit:\n${out}`);
  });
});

test('systemd-analyze security rates the sandbox at most 3.0 (OK)', (t) => {
  if (!requireTool(t, 'systemd-analyze', 'systemd')) return;
  withUnitCopy((path) => {
    // --offline (systemd 250+) reads the file instead of asking a running systemd.
    const r = spawnSync('systemd-analyze', ['security', '--offline=yes', '--threshold=30', '--no-pager', path], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0 && /unrecognized option|unknown option/i.test(r.stderr)) {
      t.skip(`this systemd-analyze has no --offline: ${r.stderr.trim()}`);
      return;
    }
    const overall = /Overall exposure level for \S+: ([\d.]+)/.exec(r.stdout)?.[1];
    assert.equal(r.status, 0, `exposure ${overall ?? '?'} is above 3.0 (or the command failed):\n${r.stderr}\n${r.stdout.slice(-3000)}`);
  });
});

// ---- the capability set ----------------------------------------------------------------------

const CAPS = (directives('CapabilityBoundingSet')[0] ?? '').split(/\s+/).filter(Boolean);

function config(env: NetnsPair, pin: string): string {
  return `interfaces: [${env.ifA}]
xdp_mode: native
pin_path: ${pin}
doors:
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [2222/tcp]
    open_for: 2s
`;
}

/** The daemon in namespace A with only `caps` (CAP_X names), its control socket under runDir. */
function startWithCaps(env: NetnsPair, caps: readonly string[], cfg: string, runDir: string): Proc {
  const set = ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
  const child = spawn(
    'nsenter',
    [`--net=/run/netns/${env.nsA}`, 'setpriv', `--bounding-set=${set}`, '--inh-caps=-all', process.execPath, CLI, 'run', '-c', cfg],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KNOCKGATE_RUN_DIR: runDir } },
  );
  return new Proc(child);
}

async function withDaemonLab(fn: (env: NetnsPair, cfg: string, pin: string, runDir: string) => Promise<void>): Promise<void> {
  await withNetns(async (env) => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-ops-caps-'));
    const pin = `/sys/fs/bpf/kg-ops-${env.id}`;
    try {
      const cfg = join(dir, 'knockgate.yaml');
      writeFileSync(cfg, config(env, pin));
      await fn(env, cfg, pin, join(dir, 'run'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
      if (existsSync(pin)) rmSync(pin, { recursive: true, force: true });
    }
  });
}

kernelTest("the unit's capabilities are enough to load, attach and detach the gate", async (t) => {
  if (!requireTool(t, 'setpriv', 'util-linux')) return;
  assert.deepEqual([...CAPS].sort(), ['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_PERFMON']);
  await withDaemonLab(async (env, cfg, pin, runDir) => {
    const d = startWithCaps(env, CAPS, cfg, runDir);
    try {
      await d.msg('knockgate running', 30_000);
      assert.ok(/\bxdp/.test(spawnSync('ip', ['-n', env.nsA, '-d', 'link', 'show', 'dev', env.ifA], { encoding: 'utf8' }).stdout), 'XDP attached');
      assert.equal(await d.stop(), 0);
      assert.equal(existsSync(pin), false, 'pins removed at SIGTERM');
    } finally {
      await d.stop();
    }
  });
});

for (const missing of CAPS) {
  kernelTest(`without ${missing} the daemon cannot start (the set is minimal)`, async () => {
    await withDaemonLab(async (env, cfg, pin, runDir) => {
      const d = startWithCaps(
        env,
        CAPS.filter((c) => c !== missing),
        cfg,
        runDir,
      );
      const code = await Promise.race([d.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 30_000).unref())]);
      if (code === 'hung') await d.stop();
      assert.notEqual(code, 'hung', 'the daemon kept running');
      assert.notEqual(code, 0);
      assert.equal(
        d.lines.some((l) => l.msg === 'knockgate running'),
        false,
      );
      assert.match(d.stderr.join(''), /EPERM|EACCES|not permitted|Permission denied/);
      assert.equal(existsSync(join(pin, 'prog')), false, 'nothing pinned');
    });
  });
}
