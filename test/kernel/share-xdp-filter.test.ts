/**
 * Sharing the interface (issue 14): xdp-tools' real xdp-filter and knockgate on the same veth,
 * through libxdp's dispatcher, in both orders of loading and at both relative priorities; detach
 * of either one leaving the other working; SIGKILL of the daemon leaving the gate enforcing and a
 * restart adopting it; the foreign-program refusal. A source that never knocked is refused the
 * protected port at every step.
 *
 * The lab: two network namespaces joined by a veth (test/helpers/kernel.ts), and a bpffs instance
 * of its own (/run/kg-<id>-bpffs, $LIBXDP_BPFFS for every lab command) holding libxdp's
 * dispatcher pins and the gate's, gone with the lab. xdp-filter pins its maps under
 * /sys/fs/bpf/xdp-filter whatever $LIBXDP_BPFFS says: the lab refuses to start if another
 * xdp-filter is loaded on the machine, and removes the directory when it ends. Lab commands
 * (xdp-filter, xdp-loader, knockgate run/status/detach) run in the gate's network namespace
 * through nsenter (not `ip netns exec`, which hides /sys/fs/bpf).
 *
 * Built to run in the emulated 6.1 guest (scripts/kernel-matrix.sh runs it there in a guest of its
 * own, `node scripts/run-tests.mjs share`), where every node start costs ~20 s and a daemon start
 * ~60 s: each order is one lab walked through its steps (one daemon start per arrangement; the
 * second priority is reached by a SIGHUP reload, which moves the gate in the dispatcher), the
 * connections come from one client process in the peer namespace (`client.js session`), and the
 * chain order is read from `xdp-loader status` (a C program) except where knockgate's own status
 * is the point. Each step is a subtest, so the spec reporter prints each step's wall time.
 *
 * What the kernel allows decides what must happen, and both outcomes are asserted: a kernel that
 * runs freplace extensions in libxdp's dispatcher (probed by loading xdp-filter and reading
 * `xdp-loader status`) must share the interface; one that cannot (Linux < 5.10, or a kernel that
 * refuses BPF_PROG_TYPE_EXT, as some hardened ones do, this host's among them) must make knockgate
 * fall back to a direct bpf_link where nothing else is attached, and refuse, naming the program,
 * where something is. KG_EXPECT_DISPATCHER=1 (the 6.1 guest) makes the second outcome a failure.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { before, type TestContext } from 'node:test';
import { CLI, CLIENT, Proc, sleep, startClient, type LogLine } from '../helpers/daemon.js';
import { fixture, kernelSuite, kernelTest, randomSuffix, run, withNetns, type NetnsPair } from '../helpers/kernel.js';

const PROTECTED = 2222;
const FILTERED = 2323;
const UNRELATED = 8080;
const STEPS = ['7000/tcp', '8000/udp', '9000/tcp'];
const SETTLE_MS = 300;
/** xdp-filter's priority (its XDP_RUN_CONFIG): knockgate runs at 5 (before it) or 20 (after) */
const FILTER_PRIO = 10;
/**
 * Multiplies every bound: KG_TIMEOUT_SCALE, else 20 in the kernel matrix's guest (emulated, ~20x
 * slower). Bounds only: nothing here measures time.
 */
const SCALE = Math.max(1, Number(process.env['KG_TIMEOUT_SCALE'] ?? (process.env['KG_MATRIX_KERNEL'] ? 20 : 1)) || 1);
/** bounds of one command, one daemon start, one connection attempt (a dropped SYN waits it out) */
const COMMAND_MS = 60_000 * Math.min(SCALE, 5);
const START_MS = 90_000 * Math.min(SCALE, 5);
const CONNECT_MS = 3000 * Math.min(SCALE, 2);
const EXPECT_DISPATCHER = process.env['KG_EXPECT_DISPATCHER'] === '1';
/** xdp-tools live in /usr/sbin, which not every PATH (a test VM's) has */
const tool = (name: string): string => (existsSync(`/usr/sbin/${name}`) ? `/usr/sbin/${name}` : name);
const XDP_FILTER = tool('xdp-filter');
const XDP_LOADER = tool('xdp-loader');
/** an address of nsB that never knocks: the protected port must stay closed to it at every step */
const STRANGER = '2001:db8::6';

/** xdp-filter pins its maps under the first bpffs mount (/sys/fs/bpf/xdp-filter), not $LIBXDP_BPFFS. */
const XDP_FILTER_PINS = '/sys/fs/bpf/xdp-filter';

/** One client process in a namespace answering `connect`/`knock` lines (client.js session). */
class Peer {
  readonly proc: Proc;

  constructor(ns: string) {
    this.proc = new Proc(spawn('ip', ['netns', 'exec', ns, process.execPath, CLIENT, 'session'], { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  async ask(words: readonly string[], timeoutMs: number): Promise<Record<string, unknown>> {
    const from = this.proc.lines.length;
    this.proc.child.stdin!.write(`${words.join(' ')}\n`);
    return this.proc.waitFor((l) => this.proc.lines.indexOf(l) >= from, timeoutMs, `the answer to "${words.join(' ')}"`);
  }

  async stop(): Promise<void> {
    this.proc.child.stdin!.end();
    await this.proc.stop(5000);
  }
}

interface Lab {
  env: NetnsPair;
  dir: string;
  /** the lab's own bpffs instance: libxdp's dispatcher pins ($LIBXDP_BPFFS) and the gate's */
  bpffs: string;
  cfg: string;
  pin: string;
  servers: Proc[];
  peer: Peer;
  daemon: Proc | null;
}

function labEnv(lab: Lab): NodeJS.ProcessEnv {
  return { ...process.env, LIBXDP_BPFFS: lab.bpffs, PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin` };
}

/** A command in the gate's network namespace (nsA) with the lab's bpffs for libxdp. */
function labRun(lab: Lab, argv: readonly string[], timeoutMs = COMMAND_MS): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('nsenter', [`--net=/run/netns/${lab.env.nsA}`, ...argv], { encoding: 'utf8', timeout: timeoutMs, env: labEnv(lab) });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function labOk(lab: Lab, argv: readonly string[]): string {
  const r = labRun(lab, argv);
  assert.equal(r.status, 0, `${argv.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function knockgate(lab: Lab, args: readonly string[]): { status: number | null; stdout: string; stderr: string } {
  return labRun(lab, [process.execPath, CLI, ...args]);
}

/** The daemon, with only the packaged systemd unit's capabilities when `unitCaps`. */
function startGate(lab: Lab, unitCaps = false): Proc {
  const caps = unitCaps ? ['setpriv', '--bounding-set=-all,+bpf,+net_admin,+perfmon', '--inh-caps=-all'] : [];
  const child = spawn('nsenter', [`--net=/run/netns/${lab.env.nsA}`, ...caps, process.execPath, CLI, 'run', '-c', lab.cfg], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: labEnv(lab),
  });
  lab.daemon = new Proc(child);
  return lab.daemon;
}

function writeConfig(lab: Lab, priority: number): void {
  writeFileSync(
    lab.cfg,
    `interfaces:\n  - name: ${lab.env.ifA}\n    xdp_priority: ${priority}\npin_path: ${lab.pin}\nlog:\n  level: info\n` +
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
    run('ip', ['-n', env.nsB, 'addr', 'add', `${STRANGER}/64`, 'dev', env.ifB, 'nodad']);
    const lab: Lab = { env, dir, bpffs, cfg: `${dir}/knockgate.yaml`, pin: `${bpffs}/kg-gate`, servers: [], peer: new Peer(env.nsB), daemon: null };
    let mounted = false;
    try {
      run('mount', ['-t', 'bpf', 'bpf', bpffs]);
      mounted = true;
      lab.servers = [PROTECTED, FILTERED, UNRELATED].map((port) => startClient(env.nsA, ['serve', String(port)]));
      await Promise.all(lab.servers.map((s, i) => s.waitFor((l) => typeof l['listening'] === 'number', START_MS, `server ${i}`)));
      await fn(lab);
    } finally {
      if (lab.daemon) await lab.daemon.stop(15_000 * Math.min(SCALE, 5));
      await lab.peer.stop();
      for (const s of lab.servers) await s.stop();
      labRun(lab, [XDP_FILTER, 'unload', env.ifA]);
      labRun(lab, [XDP_LOADER, 'unload', env.ifA, '--all']);
      // What is left goes with the veth (netns removal) and with the lab's bpffs (umount).
      rmSync(XDP_FILTER_PINS, { recursive: true, force: true });
      if (mounted) spawnSync('umount', [bpffs], { timeout: 10_000 });
      rmSync(bpffs, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** A TCP connection from nsB to A, from nsB's IPv4 address (the one that knocks) or from the stranger. */
async function reach(lab: Lab, port: number, who: 'knocker' | 'stranger' = 'knocker'): Promise<boolean> {
  const target = who === 'stranger' ? [lab.env.addr6A, String(port), String(CONNECT_MS), STRANGER] : [lab.env.addrA, String(port), String(CONNECT_MS)];
  const r = await lab.peer.ask(['connect', ...target], CONNECT_MS + COMMAND_MS);
  return r['ok'] === true;
}

async function knock(lab: Lab): Promise<void> {
  assert.deepEqual(await lab.peer.ask(['knock', lab.env.addrA, ...STEPS], COMMAND_MS), { ok: true });
}

function loadFilter(lab: Lab): void {
  labOk(lab, [XDP_FILTER, 'load', lab.env.ifA]);
  labOk(lab, [XDP_FILTER, 'port', String(FILTERED)]);
}

/** `xdp-loader status IFACE`: the dispatcher's programs in run order ("=> PRIO NAME ..." lines). */
function loaderChain(lab: Lab): { text: string; chain: { priority: number; name: string }[] } {
  const text = labOk(lab, [XDP_LOADER, 'status', lab.env.ifA]);
  const chain = [...text.matchAll(/^\s*=>\s+(\d+)\s+(\S+)/gm)].map((m) => ({ priority: Number(m[1]), name: m[2]! }));
  return { text, chain };
}

/** The run order libxdp shows must be exactly these programs (knockgate_xdp, xdpfilt_*). */
function assertChain(lab: Lab, expected: readonly ('knockgate' | 'xdp-filter')[]): void {
  const { text, chain } = loaderChain(lab);
  const names = chain.map((p) => (p.name.startsWith('knockgate_xdp') ? 'knockgate' : p.name.startsWith('xdpfilt_') ? 'xdp-filter' : p.name));
  assert.deepEqual(names, expected, text);
}

/** knockgate status --json: the interface's dispatcher part. */
function gateDispatcher(lab: Lab): { attach: unknown; position: number; chain: { name: string; priority: number; knockgate: boolean }[]; warnings: string[] } {
  const r = knockgate(lab, ['status', '--json', '--pin-path', lab.pin]);
  assert.equal(r.status, 0, r.stderr);
  const [iface] = (JSON.parse(r.stdout) as { interfaces: Record<string, unknown>[] }).interfaces;
  const d = iface?.['dispatcher'] as { position: number; chain: { name: string; priority: number; knockgate: boolean }[]; warnings: string[] } | undefined;
  return { attach: iface?.['attach'], position: d?.position ?? 0, chain: d?.chain ?? [], warnings: d?.warnings ?? [] };
}

async function gateRunning(d: Proc): Promise<void> {
  await d.msg('knockgate running', START_MS);
  await sleep(SETTLE_MS);
}

/** A message logged after line index `from`. */
function loggedAfter(d: Proc, from: number, msg: string): LogLine | undefined {
  return d.lines.slice(from).find((l) => l.msg === msg);
}

/** SIGHUP with a new xdp_priority: the gate moves to it in the dispatcher (two atomic swaps). */
async function reloadPriority(lab: Lab, priority: number): Promise<void> {
  const d = lab.daemon!;
  const from = d.lines.length;
  writeConfig(lab, priority);
  d.signal('SIGHUP');
  await d.waitFor((l) => d.lines.indexOf(l) >= from && (l.msg === 'config reloaded' || /reload refused/.test(String(l.msg))), START_MS, 'the reload');
  const moved = loggedAfter(d, from, 'moved to this program in the dispatcher');
  assert.ok(moved, `the reload moves the gate: ${d.raw.slice(from).join('\n')}`);
  assert.equal(moved['xdp_priority'], priority);
  await sleep(SETTLE_MS);
}

/** What must hold at every step while the gate is loaded: the stranger is out. */
async function assertStrangerOut(lab: Lab, when: string): Promise<void> {
  assert.equal(await reach(lab, PROTECTED, 'stranger'), false, `the protected port is closed to a source that never knocked (${when})`);
}

/** Every arrangement: each program drops what it should, and unrelated traffic passes both. */
async function assertBothEnforce(lab: Lab, knocked: boolean): Promise<void> {
  assert.equal(await reach(lab, UNRELATED), true, 'unrelated traffic passes both programs');
  assert.equal(await reach(lab, FILTERED), false, 'the port xdp-filter blocks is blocked');
  await assertStrangerOut(lab, 'both loaded');
  if (!knocked) {
    assert.equal(await reach(lab, PROTECTED), false, 'the protected port is closed before a knock');
    await knock(lab);
  }
  assert.equal(await reach(lab, PROTECTED), true, 'the protected port is open to the source that knocked');
  assert.equal(await reach(lab, FILTERED), false, 'a knockgate grant does not open a port xdp-filter blocks');
}

/** Steps of one lab as subtests, in order; after a failed step the rest fail without running. */
function stepper(t: TestContext): (name: string, fn: () => Promise<void>) => Promise<void> {
  let failed: string | null = null;
  return async (name, fn) => {
    await t.test(name, async () => {
      if (failed !== null) throw new Error(`not run: the step "${failed}" failed`);
      try {
        await fn();
      } catch (err) {
        failed = name;
        throw err;
      }
    });
  };
}

let sharing: boolean | null = null;

/** Whether libxdp built a dispatcher for xdp-filter (loaded on the lab's interface). */
function probeSharing(lab: Lab): boolean {
  if (sharing === null) {
    sharing = loaderChain(lab).text.includes('xdp_dispatcher');
    assert.ok(sharing || !EXPECT_DISPATCHER, `KG_EXPECT_DISPATCHER=1: libxdp must build a dispatcher on this kernel:\n${loaderChain(lab).text}`);
  }
  return sharing;
}

kernelSuite('sharing the interface with xdp-filter through libxdp', () => {
  before(() => {
    for (const t of [XDP_FILTER, XDP_LOADER]) {
      const r = spawnSync(t, ['--version'], { encoding: 'utf8' });
      if (r.error) throw new Error(`${t} is missing: install xdp-tools (scripts/setup.sh)`);
    }
  });

  kernelTest('xdp-filter first, knockgate at 5 then 20; SIGKILL, restart, detach', async (t) => {
    const step = stepper(t);
    await withLab(async (lab) => {
      loadFilter(lab);
      if (!probeSharing(lab)) {
        // A kernel without the dispatcher: xdp-filter holds the interface alone, and the gate
        // refuses to take it, naming the program.
        writeConfig(lab, 5);
        const d = startGate(lab);
        const code = await d.exited;
        lab.daemon = null;
        assert.notEqual(code, 0);
        const err = d.stderr.join('') + d.raw.join('\n');
        assert.match(err, /is held by XDP program \d+ \(xdpfilt_\w+\), which libxdp does not manage/);
        assert.match(err, /never replaces another program/);
        assert.equal(await reach(lab, FILTERED), false, 'xdp-filter still filters');
        return;
      }
      await step(`knockgate joins xdp-filter's dispatcher at priority 5, ahead of it (${FILTER_PRIO})`, async () => {
        writeConfig(lab, 5);
        await gateRunning(startGate(lab));
        assertChain(lab, ['knockgate', 'xdp-filter']);
        const st = gateDispatcher(lab);
        assert.equal(st.attach, 'dispatcher');
        assert.equal(st.chain.length, 2, JSON.stringify(st.chain));
        assert.equal(st.position, 1, `knockgate's place follows its priority: ${JSON.stringify(st.chain)}`);
        assert.deepEqual(st.warnings, []);
        await assertBothEnforce(lab, false);
      });
      await step('a reload to priority 20 moves knockgate behind xdp-filter; the grant holds', async () => {
        await reloadPriority(lab, 20);
        assertChain(lab, ['xdp-filter', 'knockgate']);
        await assertBothEnforce(lab, true);
      });
      await step('SIGKILL of the daemon: the gate stays in the dispatcher and enforces', async () => {
        lab.daemon!.kill();
        await lab.daemon!.exited;
        lab.daemon = null;
        assertChain(lab, ['xdp-filter', 'knockgate']);
        await assertStrangerOut(lab, 'no daemon');
        assert.equal(await reach(lab, PROTECTED), true, 'the grant outlives the daemon');
        assert.equal(await reach(lab, FILTERED), false, 'xdp-filter still filters');
      });
      await step('a restarted daemon adopts the gate and moves the dispatcher slot to its program', async () => {
        const d = startGate(lab);
        await gateRunning(d);
        assert.ok(d.lines.find((l) => l.msg === 'moved to this program in the dispatcher'), d.raw.join('\n'));
        assertChain(lab, ['xdp-filter', 'knockgate']);
        await assertBothEnforce(lab, true);
      });
      await step('knockgate detach: xdp-filter stays and keeps filtering', async () => {
        const r = knockgate(lab, ['detach', '--pin-path', lab.pin]);
        assert.equal(r.status, 0, r.stderr);
        await lab.daemon!.exited;
        lab.daemon = null;
        assertChain(lab, ['xdp-filter']);
        assert.equal(await reach(lab, FILTERED), false, 'xdp-filter keeps filtering');
        assert.equal(await reach(lab, PROTECTED, 'stranger'), true, 'the gate is gone');
      });
    });
  });

  kernelTest('knockgate first at 20, xdp-filter joins at 10, then knockgate at 5; xdp-filter unloaded', async (t) => {
    const step = stepper(t);
    await withLab(async (lab) => {
      if (sharing === null) {
        // run alone (--test-name-pattern): probe with xdp-filter, then take it off again
        loadFilter(lab);
        probeSharing(lab);
        labOk(lab, [XDP_FILTER, 'unload', lab.env.ifA]);
      }
      writeConfig(lab, 20);
      const d = startGate(lab);
      await gateRunning(d);
      if (!sharing) {
        assert.ok(d.lines.some((l) => /dispatcher cannot be used/.test(String(l.msg))), 'the fallback is said');
        assert.equal(gateDispatcher(lab).attach, 'link');
        const f = labRun(lab, [XDP_FILTER, 'load', lab.env.ifA]);
        assert.notEqual(f.status, 0, 'without the dispatcher xdp-filter cannot join');
        await assertStrangerOut(lab, 'fallback');
        assert.equal(await reach(lab, PROTECTED), false);
        return;
      }
      await step('knockgate alone creates the dispatcher', async () => {
        assertChain(lab, ['knockgate']);
        await assertStrangerOut(lab, 'knockgate alone');
        assert.equal(await reach(lab, FILTERED), true, 'nothing filters that port yet');
      });
      await step(`xdp-filter joins knockgate's dispatcher ahead of it (${FILTER_PRIO} < 20)`, async () => {
        loadFilter(lab);
        await sleep(SETTLE_MS);
        assertChain(lab, ['xdp-filter', 'knockgate']);
        const st = gateDispatcher(lab);
        assert.equal(st.attach, 'dispatcher');
        assert.equal(st.position, 2, `knockgate's place follows its priority: ${JSON.stringify(st.chain)}`);
        assert.deepEqual(st.warnings, []);
        await assertBothEnforce(lab, false);
      });
      await step('a reload to priority 5 moves knockgate ahead of xdp-filter; the grant holds', async () => {
        await reloadPriority(lab, 5);
        assertChain(lab, ['knockgate', 'xdp-filter']);
        await assertBothEnforce(lab, true);
      });
      await step('xdp-filter unload: knockgate stays and keeps enforcing', async () => {
        labOk(lab, [XDP_FILTER, 'unload', lab.env.ifA]);
        await sleep(SETTLE_MS);
        assertChain(lab, ['knockgate']);
        await assertStrangerOut(lab, 'xdp-filter gone');
        assert.equal(await reach(lab, PROTECTED), true, 'the grant holds');
        assert.equal(await reach(lab, FILTERED), true, 'the port xdp-filter blocked is open again');
        assert.equal(lab.daemon!.child.exitCode, null, 'the daemon runs on');
      });
    });
  });

  kernelTest("without CAP_SYS_ADMIN (the systemd unit's set): a direct link where nothing is attached, with the reason", async () => {
    await withLab(async (lab) => {
      writeConfig(lab, 10);
      const d = startGate(lab, true);
      await gateRunning(d);
      const warn = d.lines.find((l) => /dispatcher cannot be used/.test(String(l.msg)));
      assert.ok(warn, d.raw.join('\n'));
      assert.match(String(warn['reason']), /lacks CAP_SYS_ADMIN/);
      assert.match(String(warn['reason']), /systemctl edit knockgate/);
      assert.match(run('ip', ['-n', lab.env.nsA, '-d', 'link', 'show', lab.env.ifA]), /prog\/xdp id \d+/, 'the gate holds the interface');
      await assertStrangerOut(lab, 'direct link');
    });
  });

  kernelTest('a program libxdp does not manage makes run refuse, naming it', async () => {
    await withLab(async (lab) => {
      writeConfig(lab, 10);
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
