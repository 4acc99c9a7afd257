/**
 * Sharing the interface (issue 14): xdp-tools' real xdp-filter and knockgate on the same veth,
 * through libxdp's dispatcher, in both orders of loading and at both relative priorities; the
 * foreign-program refusal; detach and SIGKILL with another program in the chain.
 *
 * The lab: two network namespaces joined by a veth (test/helpers/kernel.ts), and a bpffs instance
 * of its own (/run/kg-<id>-bpffs, $LIBXDP_BPFFS for every lab command) holding libxdp's
 * dispatcher pins and the gate's, gone with the lab. xdp-filter pins its maps under
 * /sys/fs/bpf/xdp-filter whatever $LIBXDP_BPFFS says: the lab refuses to start if another
 * xdp-filter is loaded on the machine, and removes the directory when it ends. Lab commands
 * (xdp-filter, xdp-loader, knockgate run/status/detach) run in the gate's network namespace
 * through nsenter (not `ip netns exec`, which hides /sys/fs/bpf).
 *
 * Not in the kernel matrix (too slow under emulation); run it there by hand with
 * KG_TIMEOUT_SCALE=20 (scripts/kernel-matrix.sh -- node --test dist/test/kernel/share-xdp-filter.test.js).
 *
 * What the kernel allows decides what must happen, and both outcomes are asserted: a kernel that
 * runs freplace extensions in libxdp's dispatcher (probed by loading xdp-filter and reading
 * `xdp-loader status`) must share the interface; one that cannot (Linux < 5.10, or a kernel that
 * refuses BPF_PROG_TYPE_EXT, as some hardened ones do) must make knockgate fall back to a direct
 * bpf_link where nothing else is attached, and refuse, naming the program, where something is.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { after, before } from 'node:test';
import { CLI, Proc, client, sleep, startClient } from '../helpers/daemon.js';
import { fixture, kernelSuite, kernelTest, randomSuffix, run, withNetns, type NetnsPair } from '../helpers/kernel.js';

const PROTECTED = 2222;
const FILTERED = 2323;
const UNRELATED = 8080;
const STEPS = ['7000/tcp', '8000/udp', '9000/tcp'];
const SETTLE_MS = 300;
/** KG_TIMEOUT_SCALE: multiplies every bound (an emulated guest runs ~20x slower) */
const SCALE = Math.max(1, Number(process.env['KG_TIMEOUT_SCALE'] ?? 1) || 1);
/** xdp-tools live in /usr/sbin, which not every PATH (a test VM's) has */
const tool = (name: string): string => (existsSync(`/usr/sbin/${name}`) ? `/usr/sbin/${name}` : name);
const XDP_FILTER = tool('xdp-filter');
const XDP_LOADER = tool('xdp-loader');
/** an address of nsB that never knocked */
const STRANGER = '2001:db8::6/64';

interface Lab {
  env: NetnsPair;
  dir: string;
  /** the lab's own bpffs instance: libxdp's dispatcher pins ($LIBXDP_BPFFS) and the gate's */
  bpffs: string;
  cfg: string;
  pin: string;
  servers: Proc[];
  daemon: Proc | null;
}

/** xdp-filter pins its maps under the first bpffs mount (/sys/fs/bpf/xdp-filter), not $LIBXDP_BPFFS. */
const XDP_FILTER_PINS = '/sys/fs/bpf/xdp-filter';

function labEnv(lab: Lab): NodeJS.ProcessEnv {
  return { ...process.env, LIBXDP_BPFFS: lab.bpffs, PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin` };
}

/** A command in the gate's network namespace (nsA) with the lab's bpffs for libxdp. */
function labRun(lab: Lab, argv: readonly string[], timeoutMs = 60_000 * SCALE): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('nsenter', [`--net=/run/netns/${lab.env.nsA}`, ...argv], { encoding: 'utf8', timeout: timeoutMs, env: labEnv(lab) });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function labOk(lab: Lab, argv: readonly string[], timeoutMs = 60_000 * SCALE): string {
  const r = labRun(lab, argv, timeoutMs);
  assert.equal(r.status, 0, `${argv.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function knockgate(lab: Lab, args: readonly string[]): { status: number | null; stdout: string; stderr: string } {
  return labRun(lab, [process.execPath, CLI, ...args]);
}

function startGate(lab: Lab): Proc {
  const child = spawn('nsenter', [`--net=/run/netns/${lab.env.nsA}`, process.execPath, CLI, 'run', '-c', lab.cfg], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: labEnv(lab),
  });
  lab.daemon = new Proc(child);
  return lab.daemon;
}

function writeConfig(lab: Lab, extra: string): void {
  writeFileSync(
    lab.cfg,
    `interfaces:\n  - name: ${lab.env.ifA}\n${extra}pin_path: ${lab.pin}\nlog:\n  level: debug\n` +
      `doors:\n  ssh:\n    sequence: [${STEPS.join(', ')}]\n    protects: [${PROTECTED}/tcp]\n    open_for: 5m\n`,
  );
}

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  if (existsSync(XDP_FILTER_PINS)) {
    throw new Error(`${XDP_FILTER_PINS} exists: an xdp-filter outside the tests is loaded on this machine, and the lab would share its maps; run the tests elsewhere`);
  }
  await withNetns(async (env) => {
    const id = randomSuffix();
    const dir = `/tmp/kg-${id}`;
    const bpffs = `/run/kg-${id}-bpffs`;
    mkdirSync(dir, { recursive: true });
    mkdirSync(bpffs, { recursive: true });
    const lab: Lab = { env, dir, bpffs, cfg: `${dir}/knockgate.yaml`, pin: `${bpffs}/kg-gate`, servers: [], daemon: null };
    let mounted = false;
    try {
      run('mount', ['-t', 'bpf', 'bpf', bpffs]);
      mounted = true;
      for (const port of [PROTECTED, FILTERED, UNRELATED]) {
        const s = startClient(env.nsA, ['serve', String(port)]);
        lab.servers.push(s);
        await s.waitFor((l) => l['listening'] === port, 20_000 * SCALE, `server on ${port}`);
      }
      await fn(lab);
    } finally {
      if (lab.daemon) await lab.daemon.stop(15_000 * SCALE);
      for (const s of lab.servers) await s.stop();
      labRun(lab, [XDP_FILTER, 'unload', env.ifA], 30_000 * SCALE);
      labRun(lab, [XDP_LOADER, 'unload', env.ifA, '--all'], 30_000 * SCALE);
      // What is left goes with the veth (netns removal) and with the lab's bpffs (umount).
      rmSync(XDP_FILTER_PINS, { recursive: true, force: true });
      if (mounted) spawnSync('umount', [bpffs], { timeout: 10_000 });
      rmSync(bpffs, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** A TCP connection from nsB (from its IPv4 address, or from `from6` to A's IPv6 address). */
function reach(lab: Lab, port: number, from6?: string): boolean {
  const host = from6 !== undefined ? lab.env.addr6A : lab.env.addrA;
  const r = client(lab.env.nsB, ['connect', host, String(port), String(3000 * Math.min(SCALE, 5)), ...(from6 !== undefined ? [from6] : [])], 30_000 * SCALE);
  return r['ok'] === true;
}

function knock(lab: Lab): void {
  assert.deepEqual(client(lab.env.nsB, ['knock', lab.env.addrA, ...STEPS], 30_000 * SCALE), { ok: true });
}

function loadFilter(lab: Lab): void {
  labOk(lab, [XDP_FILTER, 'load', lab.env.ifA]);
  labOk(lab, [XDP_FILTER, 'port', String(FILTERED)]);
}

function loaderStatus(lab: Lab): string {
  return labOk(lab, [XDP_LOADER, 'status', lab.env.ifA]);
}

/** knockgate status --json, interfaces part. */
function gateInterfaces(lab: Lab): Record<string, unknown>[] {
  const r = knockgate(lab, ['status', '--json', '--pin-path', lab.pin]);
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { interfaces: Record<string, unknown>[] }).interfaces;
}

async function gateRunning(lab: Lab): Promise<void> {
  await lab.daemon!.msg('knockgate running', 120_000 * SCALE);
  await sleep(SETTLE_MS);
}

/** The traffic every arrangement must produce: each program drops what it should. */
function assertBothEnforce(lab: Lab): void {
  assert.equal(reach(lab, UNRELATED), true, 'unrelated traffic passes both programs');
  assert.equal(reach(lab, FILTERED), false, 'the port xdp-filter blocks is blocked');
  assert.equal(reach(lab, PROTECTED), false, 'the protected port is closed before a knock');
  knock(lab);
  assert.equal(reach(lab, PROTECTED), true, 'the protected port opens after the knock');
  assert.equal(reach(lab, FILTERED), false, 'a knockgate grant does not open a port xdp-filter blocks');
}

let sharing: boolean | null = null;

/** Does this kernel let libxdp build a dispatcher? (xdp-filter alone, then xdp-loader status.) */
async function probeSharing(): Promise<boolean> {
  if (sharing !== null) return sharing;
  let result = false;
  await withLab(async (lab) => {
    labOk(lab, [XDP_FILTER, 'load', lab.env.ifA]);
    result = loaderStatus(lab).includes('xdp_dispatcher');
    labOk(lab, [XDP_FILTER, 'unload', lab.env.ifA]);
  });
  sharing = result;
  return result;
}

kernelSuite('sharing the interface with xdp-filter through libxdp', () => {
  before(async () => {
    for (const t of [XDP_FILTER, XDP_LOADER]) {
      const r = spawnSync(t, ['--version'], { encoding: 'utf8' });
      if (r.error) throw new Error(`${t} is missing: install xdp-tools (scripts/setup.sh)`);
    }
    await probeSharing();
  });
  after(() => undefined);

  for (const order of ['xdp-filter first', 'knockgate first'] as const) {
    for (const prio of [5, 20] as const) {
      kernelTest(`${order}, knockgate at priority ${prio} (xdp-filter at 10): each drops what it should`, async () => {
        await withLab(async (lab) => {
          writeConfig(lab, `    xdp_priority: ${prio}\n`);
          if (order === 'xdp-filter first') loadFilter(lab);
          const d = startGate(lab);
          if (!sharing) {
            if (order === 'xdp-filter first') {
              // A kernel without the dispatcher: xdp-filter holds the interface alone, and the
              // gate refuses to take it, naming the program.
              const code = await d.exited;
              assert.notEqual(code, 0);
              const err = d.stderr.join('') + d.raw.join('\n');
              assert.match(err, /is held by XDP program \d+ \(xdpfilt_\w+\), which libxdp does not manage/);
              assert.match(err, /never replaces another program/);
              lab.daemon = null;
              assert.equal(reach(lab, FILTERED), false, 'xdp-filter still filters');
              return;
            }
            await gateRunning(lab);
            assert.ok(d.lines.some((l) => /dispatcher cannot be used/.test(String(l.msg))), 'the fallback is said');
            assert.equal(gateInterfaces(lab)[0]?.['attach'], 'link');
            const f = labRun(lab, [XDP_FILTER, 'load', lab.env.ifA]);
            assert.notEqual(f.status, 0, 'without the dispatcher xdp-filter cannot join');
            assert.equal(reach(lab, PROTECTED), false);
            return;
          }
          await gateRunning(lab);
          if (order === 'knockgate first') loadFilter(lab);
          await sleep(SETTLE_MS);
          const status = loaderStatus(lab);
          assert.match(status, /knockgate_xdp/, status);
          assert.match(status, /xdpfilt_\w+/, status);
          const [iface] = gateInterfaces(lab);
          assert.equal(iface?.['attach'], 'dispatcher');
          const disp = iface?.['dispatcher'] as { position: number; chain: { name: string; priority: number; knockgate: boolean }[]; warnings: string[] };
          assert.equal(disp.chain.length, 2);
          assert.equal(disp.position, prio < 10 ? 1 : 2, `knockgate's place follows its priority: ${JSON.stringify(disp.chain)}`);
          assert.deepEqual(disp.warnings, []);
          assertBothEnforce(lab);
        });
      });
    }
  }

  kernelTest('detach leaves xdp-filter working; SIGKILL of the daemon leaves the gate enforcing', async () => {
    await withLab(async (lab) => {
      writeConfig(lab, '');
      loadFilter(lab);
      const d = startGate(lab);
      if (!sharing) {
        assert.notEqual(await d.exited, 0);
        lab.daemon = null;
        return; // the refusal is the previous test's
      }
      await gateRunning(lab);
      knock(lab);
      assert.equal(reach(lab, PROTECTED), true);
      d.kill();
      await d.exited;
      lab.daemon = null;
      // the pins hold everything: the grant still stands, a stranger is still out
      assert.equal(reach(lab, PROTECTED), true, 'the grant outlives the daemon');
      run('ip', ['-n', lab.env.nsB, 'addr', 'add', STRANGER, 'dev', lab.env.ifB, 'nodad']);
      assert.equal(reach(lab, PROTECTED, STRANGER.split('/')[0]), false, 'a source without a grant is still dropped after SIGKILL');
      assert.match(loaderStatus(lab), /knockgate_xdp/);
      // a new daemon adopts and moves the interface to its own program, atomically
      const d2 = startGate(lab);
      await gateRunning(lab);
      const moved = d2.lines.find((l) => l.msg === 'moved to this program in the dispatcher');
      assert.ok(moved, 'the restarted daemon moves the dispatcher slot to its program');
      assert.equal((gateInterfaces(lab)[0]?.['dispatcher'] as { chain: unknown[] }).chain.length, 2, 'one knockgate program, one xdp-filter');
      assert.equal(reach(lab, PROTECTED), true, 'grants survive adoption');
      assert.equal(reach(lab, PROTECTED, STRANGER.split('/')[0]), false);
      // detach: knockgate goes, xdp-filter stays
      const r = knockgate(lab, ['detach', '--pin-path', lab.pin]);
      assert.equal(r.status, 0, r.stderr);
      await d2.exited;
      lab.daemon = null;
      const status = loaderStatus(lab);
      assert.doesNotMatch(status, /knockgate_xdp/, status);
      assert.match(status, /xdpfilt_\w+/, status);
      assert.equal(reach(lab, FILTERED), false, 'xdp-filter keeps filtering');
      assert.equal(reach(lab, PROTECTED, STRANGER.split('/')[0]), true, 'the gate is gone');
    });
  });

  kernelTest('a program libxdp does not manage makes run refuse, naming it', async () => {
    await withLab(async (lab) => {
      writeConfig(lab, '');
      const obj = fixture('binding');
      run('ip', ['-n', lab.env.nsA, 'link', 'set', 'dev', lab.env.ifA, 'xdpgeneric', 'obj', obj, 'sec', 'xdp']);
      const id = /prog\/xdp id (\d+)/.exec(run('ip', ['-n', lab.env.nsA, '-d', 'link', 'show', lab.env.ifA]))?.[1];
      assert.ok(id, 'the fixture is attached');
      const d = startGate(lab);
      assert.notEqual(await d.exited, 0, 'run refuses');
      lab.daemon = null;
      const err = d.stderr.join('') + d.raw.join('\n');
      assert.match(err, new RegExp(`is held by XDP program ${id} \\(\\w+\\), which libxdp does not manage`));
      assert.match(err, /ip link set dev \S+ xdp off/);
      assert.match(run('ip', ['-n', lab.env.nsA, '-d', 'link', 'show', lab.env.ifA]), new RegExp(`prog/xdp id ${id}`), 'the foreign program is untouched');
      run('ip', ['-n', lab.env.nsA, 'link', 'set', 'dev', lab.env.ifA, 'xdpgeneric', 'off']);
    });
  });
});
