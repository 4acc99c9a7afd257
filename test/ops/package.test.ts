// The Debian package, for real: `scripts/package.sh` builds it (lintian must report no error),
// `apt-get install ./knockgate_*.deb` installs it on this machine, the installed files are
// checked (`knockgate check` on the conffile, `systemd-analyze verify` on the unit, man pages,
// completions), the installed /usr/bin/knockgate runs a gate in a namespace lab where a real
// knock opens a protected port, then `apt-get remove` must leave no XDP program, no pin and no
// file but the conffile, and `apt-get purge` nothing at all.
//
// The package is removed and purged in a finally. A knockgate the operator installed (the
// package, or /usr/bin/knockgate, or /etc/knockgate from a hand install) is never touched: the
// test skips (fails in CI) and says why.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText } from '../../src/config/index.js';
import { inertConfig } from '../../src/doc/conffile.js';
import { IN_CI, ROOT, kernelTest, withNetns } from '../helpers/kernel.js';
import { Proc, client, startClient } from '../helpers/daemon.js';

const VERSION = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string }).version;
const DEB = `${ROOT}dist/deb/knockgate_${VERSION}_amd64.deb`;
const CONFFILE = '/etc/knockgate/knockgate.yaml';
const APT_ENV = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
/** Other helpers may hold the dpkg lock for a while: wait for it rather than fail. */
const APT_OPTS = ['-y', '-q', '-o', 'DPkg::Lock::Timeout=600'];

function sh(cmd: string, args: readonly string[], timeoutMs = 120_000, env: NodeJS.ProcessEnv = process.env): { status: number | null; out: string; stdout: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, env });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  return { status: r.status, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
}

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** dpkg's status of knockgate: "install ok installed", "deinstall ok config-files", or null. */
function dpkgStatus(): string | null {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'knockgate'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() !== 'unknown ok not-installed' ? r.stdout.trim() : null;
}

/** Why the package cannot be installed here by a test, or null. */
function cannotInstall(): string | null {
  if (process.getuid?.() !== 0) return 'installing a package needs root';
  for (const tool of ['dpkg-deb', 'apt-get', 'lintian', 'dpkg-shlibdeps']) {
    if (!hasCommand(tool)) return `${tool} is not installed (scripts/setup.sh installs it)`;
  }
  const status = dpkgStatus();
  if (status !== null) return `a knockgate package is already on this machine (dpkg: ${status}): the test does not touch an operator's install`;
  if (existsSync('/usr/bin/knockgate')) return '/usr/bin/knockgate exists (an `npm install -g` install?): the test does not overwrite it';
  if (existsSync('/etc/knockgate')) return '/etc/knockgate exists (a hand install?): the package would take over its config and purge it';
  return null;
}

function requireInstallable(t: TestContext): boolean {
  const reason = cannotInstall();
  if (reason === null) return true;
  if (IN_CI) throw new Error(`package test cannot run in CI (CI=true): ${reason}`);
  t.skip(reason);
  return false;
}

// ---- without installing ----------------------------------------------------------------------

test('the packaged config is the example with no interface, valid, and says it is inert', () => {
  const example = readFileSync(`${ROOT}config/knockgate.example.yaml`, 'utf8');
  const text = inertConfig(example);
  const cfg = parseConfigText(text, 'knockgate.yaml');
  assert.deepEqual(cfg.interfaces, []);
  assert.deepEqual(
    cfg.warnings.map((w) => w.path),
    ['interfaces'],
  );
  assert.match(text, /^# \/etc\/knockgate\/knockgate\.yaml, as installed by the knockgate package: INERT until edited\./);
  // The rest of the example is kept, comments and all: every line outside its interfaces block.
  const exampleCfg = parseConfigText(example, 'example.yaml');
  assert.deepEqual(
    cfg.doors.map((d) => d.name),
    exampleCfg.doors.map((d) => d.name),
  );
  const lines = new Set(text.split('\n'));
  const kept = example.split('\n').filter((l) => !/^(interfaces:|  - eth0|  - name: eth1|    xdp_mode: generic)$/.test(l) && !/^# (knockgate example configuration|Reference: docs)/.test(l));
  assert.deepEqual(
    kept.filter((l) => !lines.has(l)),
    [],
  );
});

// ---- the package, installed ------------------------------------------------------------------------

/** Every regular file and symlink the package installs (dpkg-deb -c), as absolute paths. */
function packageFiles(): string[] {
  return sh('dpkg-deb', ['-c', DEB])
    .stdout.split('\n')
    .filter((l) => /^[-l]/.test(l))
    .map((l) => l.split(/\s+/)[5]!.replace(/^\./, ''));
}

function xdpOn(ns: string, ifname: string): boolean {
  return /\bxdp/.test(sh('ip', ['-n', ns, '-d', 'link', 'show', 'dev', ifname]).stdout);
}

kernelTest('the Debian package: build (lintian clean), install, check, a real knock through the installed command, remove, purge', async (t) => {
  if (!requireInstallable(t)) return;
  // Build: the package script runs lintian and fails on any error.
  const build = sh('bash', [`${ROOT}scripts/package.sh`], 900_000, { ...process.env, SKIP_BUILD: '1' });
  assert.equal(build.status, 0, `scripts/package.sh failed:\n${build.out.slice(-4000)}`);
  assert.ok(existsSync(DEB), `${DEB} was not built`);
  assert.doesNotMatch(build.out, /^E: /m, 'lintian reported errors');
  // No warning either: a new one is fixed, or overridden with its reason in packaging/debian/lintian-overrides.
  assert.doesNotMatch(build.out, /^W: /m, 'lintian reported warnings');
  const control = sh('dpkg-deb', ['-f', DEB, 'Depends']).stdout;
  for (const dep of ['nodejs (>= 20)', 'libbpf1', 'libxdp1', 'libc6']) assert.ok(control.includes(dep), `Depends lacks ${dep}: ${control}`);
  const files = packageFiles();
  for (const f of [
    '/usr/bin/knockgate',
    '/usr/lib/knockgate/dist/src/cli/main.js',
    '/usr/lib/knockgate/bpf/knock.bpf.o',
    '/usr/lib/knockgate/node_modules/koffi/package.json',
    '/lib/systemd/system/knockgate.service',
    CONFFILE,
    '/usr/share/man/man8/knockgate.8.gz',
    '/usr/share/man/man5/knockgate.yaml.5.gz',
    '/usr/share/bash-completion/completions/knockgate',
    '/usr/share/zsh/vendor-completions/_knockgate',
    '/usr/share/doc/knockgate/copyright',
    '/usr/share/doc/knockgate/changelog.gz',
    '/usr/share/knockgate/grafana/knockgate.json',
    '/usr/share/knockgate/prometheus/knockgate-alerts.yml',
  ]) {
    assert.ok(files.includes(f), `the package lacks ${f}`);
  }
  assert.ok(!files.some((f) => f.includes('/node_modules/typescript/') || f.includes('/node_modules/@types/')), 'dev dependencies in the package');
  assert.ok(!files.some((f) => f.includes('/dist/test/') || f.includes('/dist/bench/')), 'tests or benchmarks in the package');
  const tmp = mkdtempSync(join(tmpdir(), 'kg-ops-pkg-'));
  sh('dpkg-deb', ['--ctrl-tarfile', DEB]);
  sh('dpkg-deb', ['-e', DEB, join(tmp, 'DEBIAN')]);
  assert.equal(readFileSync(join(tmp, 'DEBIAN', 'conffiles'), 'utf8').trim(), CONFFILE);

  let installed = false;
  const procs: Proc[] = [];
  try {
    const inst = sh('apt-get', ['install', ...APT_OPTS, DEB], 900_000, APT_ENV);
    installed = dpkgStatus() !== null;
    assert.equal(inst.status, 0, `apt-get install failed:\n${inst.out.slice(-4000)}`);
    assert.equal(dpkgStatus(), 'install ok installed');

    // knockgate check on the installed conffile: valid, and inert.
    const check = sh('/usr/bin/knockgate', ['check']);
    assert.equal(check.status, 0, check.out);
    assert.match(check.out, /interfaces: none: inert, the gate guards nothing/);
    assert.match(check.out, /warning: \/etc\/knockgate\/knockgate\.yaml:\d+:\d+: interfaces: \[\] is empty/);
    assert.equal(sh('/usr/bin/knockgate', ['--version']).stdout.trim(), VERSION);
    assert.equal((lstatSync(CONFFILE).mode & 0o777).toString(8), '640');

    // The installed unit: systemd accepts it as installed, command included.
    if (hasCommand('systemd-analyze')) {
      const v = sh('systemd-analyze', ['verify', '/lib/systemd/system/knockgate.service']);
      assert.equal(v.status, 0, v.out);
      assert.deepEqual(v.out.split('\n').filter((l) => l.includes('knockgate')), [], v.out);
    } else if (IN_CI) {
      throw new Error('systemd-analyze is not installed (apt-get install systemd)');
    }
    const unit = readFileSync('/lib/systemd/system/knockgate.service', 'utf8');
    assert.match(unit, /^ExecStart=\/usr\/bin\/knockgate run -c \/etc\/knockgate\/knockgate\.yaml$/m);
    assert.doesNotMatch(unit, /npm install/);

    // Man pages render without a warning from groff; completions load.
    for (const page of ['/usr/share/man/man8/knockgate.8.gz', '/usr/share/man/man5/knockgate.yaml.5.gz']) {
      if (!hasCommand('man')) break;
      const m = spawnSync('man', ['--warnings', '-l', page], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat' } });
      assert.equal(m.status, 0, m.stderr);
      assert.equal(m.stderr.trim(), '', `groff warnings for ${page}`);
      assert.ok(m.stdout.length > 2000);
    }
    const man8 = sh('sh', ['-c', 'zcat /usr/share/man/man8/knockgate.8.gz']).stdout;
    for (const cmd of ['run', 'check', 'door set', 'status', 'grants', 'revoke', 'grant', 'events', 'detach', 'knock', 'keygen', 'completion']) {
      assert.ok(man8.includes(`.SS "knockgate ${cmd} `), `knockgate(8) has no section for ${cmd}`);
    }
    const bash = sh('bash', ['-c', 'source /usr/share/bash-completion/completions/knockgate && complete -p knockgate']);
    assert.match(bash.stdout, /complete -F _knockgate_completion knockgate/);
    assert.match(readFileSync('/usr/share/zsh/vendor-completions/_knockgate', 'utf8'), /^#compdef knockgate/);

    // The installed command in a lab: the operator edits the conffile, runs the daemon (here by
    // hand: PID 1 may not be systemd) and knocks with the installed client.
    await withNetns(async (env) => {
      const pin = `/sys/fs/bpf/kg-pkg-${env.id}`;
      try {
        writeFileSync(
          CONFFILE,
          readFileSync(CONFFILE, 'utf8')
            .replace(/^interfaces: \[\]$/m, `interfaces: [${env.ifA}]`)
            .replace(/^pin_path: .*$/m, `pin_path: ${pin}`)
            .replace(/^    protects: \[22\/tcp\]$/m, '    protects: [2222/tcp]')
            .replace(/^    allow_from: .*$/m, '    allow_from: [198.18.0.0/15]'),
        );
        const c2 = sh('/usr/bin/knockgate', ['check']);
        assert.equal(c2.status, 0, c2.out);
        assert.match(c2.out, new RegExp(`interfaces: ${env.ifA} \\(auto\\)`));
        const server = startClient(env.nsA, ['serve', '2222']);
        procs.push(server);
        await server.waitFor((l) => l['listening'] === 2222, 10_000, 'service');
        const daemon = new Proc(spawn('nsenter', [`--net=/run/netns/${env.nsA}`, '/usr/bin/knockgate', 'run'], { stdio: ['ignore', 'pipe', 'pipe'] }));
        procs.push(daemon);
        await daemon.msg('knockgate running', 30_000);
        assert.ok(xdpOn(env.nsA, env.ifA), 'XDP attached by the installed daemon');
        assert.equal(client(env.nsB, ['connect', env.addrA, '2222', '800'])['ok'], false, 'closed before the knock');
        const knock = sh('ip', ['netns', 'exec', env.nsB, '/usr/bin/knockgate', 'knock', env.addrA, '--sequence', '7000/tcp,8000/udp,9000/tcp', '--check', '2222'], 60_000);
        assert.equal(knock.status, 0, `installed knock client: ${knock.out}`);
        assert.equal(client(env.nsB, ['connect', env.addrA, '2222', '3000'])['ok'], true, 'open after the knock');

        // Remove while the daemon runs: prerm detaches the gate and the daemon stops.
        const rm = sh('apt-get', ['remove', ...APT_OPTS, 'knockgate'], 900_000, APT_ENV);
        assert.equal(rm.status, 0, `apt-get remove failed:\n${rm.out.slice(-4000)}`);
        assert.equal(dpkgStatus(), 'deinstall ok config-files');
        const code = await Promise.race([daemon.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 30_000).unref())]);
        assert.notEqual(code, 'hung', 'the daemon kept running after the package was removed');
        assert.equal(existsSync(pin), false, `pins left under ${pin}`);
        assert.equal(xdpOn(env.nsA, env.ifA), false, 'an XDP program was left on the interface');
        assert.equal(client(env.nsB, ['connect', env.addrA, '2222', '3000'])['ok'], true, 'no gate: the port is reachable');
      } finally {
        if (existsSync(pin)) rmSync(pin, { recursive: true, force: true });
      }
    });
    const left = files.filter((f) => f !== CONFFILE && existsSync(f));
    assert.deepEqual(left, [], 'files left after apt-get remove');
    assert.ok(existsSync(CONFFILE), 'the conffile stays until purge');

    const purge = sh('apt-get', ['purge', ...APT_OPTS, 'knockgate'], 900_000, APT_ENV);
    assert.equal(purge.status, 0, `apt-get purge failed:\n${purge.out.slice(-4000)}`);
    assert.equal(dpkgStatus(), null);
    assert.equal(existsSync('/etc/knockgate'), false, '/etc/knockgate left after purge');
    for (const f of ['/etc/systemd/system/multi-user.target.wants/knockgate.service', '/etc/systemd/system/knockgate.service']) {
      assert.equal(existsSync(f) || isLink(f), false, `${f} left after purge`);
    }
    installed = false;
  } finally {
    for (const p of procs.reverse()) await p.stop();
    if (installed || dpkgStatus() !== null) {
      spawnSync('apt-get', ['purge', ...APT_OPTS, 'knockgate'], { env: APT_ENV, timeout: 900_000 });
    }
    rmSync(tmp, { recursive: true, force: true });
  }
});

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
