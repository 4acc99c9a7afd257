// Vagrantfile: `vagrant validate` accepts it (offline: validating never downloads the box), and
// its settings, read by evaluating it in Ruby with a recording stand-in for Vagrant's config
// objects (the provider sections cannot be validated without VirtualBox or libvirt installed),
// are the documented ones: 2 CPUs and 4 GiB under both providers, the checkout at /knockgate,
// provisioned as root by scripts/setup.sh.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IN_CI, ROOT } from '../helpers/kernel.js';

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

test('vagrant validate accepts the Vagrantfile, offline', (t) => {
  if (!requireTool(t, 'vagrant', 'vagrant')) return;
  // Vagrant's state (.vagrant/) and home (~/.vagrant.d) go to a scratch directory, not the checkout.
  const scratch = mkdtempSync(join(tmpdir(), 'kg-ops-vagrant-'));
  try {
    const r = spawnSync('vagrant', ['validate', '--ignore-provider', '--no-tty', '--no-color'], {
      encoding: 'utf8',
      timeout: 120_000,
      env: {
        ...process.env,
        VAGRANT_CWD: ROOT,
        VAGRANT_DOTFILE_PATH: join(scratch, 'dot'),
        VAGRANT_HOME: join(scratch, 'home'),
        VAGRANT_CHECKPOINT_DISABLE: '1', // no version check over the network
      },
    });
    assert.equal(r.error, undefined, `vagrant validate: ${r.error?.message}`);
    assert.equal(r.status, 0, `vagrant validate exited with ${r.status}:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /Vagrantfile validated successfully/);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

// Evaluates the Vagrantfile with Vagrant.configure yielding a recorder: setters are stored,
// calls are listed with their arguments, a block gets a recorder of its own. Prints JSON.
const RECORDER = String.raw`
require "json"
class Rec
  attr_reader :h
  def initialize; @h = {}; end
  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    return @h[n.chomp("=")] = args[0] if n.end_with?("=")
    return (@h[n] ||= Rec.new) if args.empty? && kw.empty? && blk.nil?
    call = { "args" => args, "kw" => kw }
    if blk
      inner = Rec.new
      blk.call(inner)
      call["block"] = inner
    end
    (@h[n] ||= []) << call
    nil
  end
  def respond_to_missing?(*) = true
  def to_json(*a) = @h.to_json(*a)
end
module Vagrant
  def self.configure(version)
    raise "config version #{version}" unless version == "2"
    c = Rec.new
    yield c
    puts JSON.generate(c)
  end
end
load ARGV[0]
`;

interface Call {
  args: unknown[];
  kw: Record<string, unknown>;
  block?: Record<string, unknown>;
}

test('the Vagrantfile sets up a Debian 12 VM with 2 CPUs and 4 GiB that provisions with scripts/setup.sh', (t) => {
  if (!requireTool(t, 'ruby', 'ruby (a dependency of vagrant)')) return;
  const r = spawnSync('ruby', ['-e', RECORDER, join(ROOT, 'Vagrantfile')], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `ruby: ${r.stderr}`);
  const vm = (JSON.parse(r.stdout) as { vm: Record<string, unknown> }).vm;
  assert.equal(vm['box'], 'debian/bookworm64');

  const providers = Object.fromEntries((vm['provider'] as Call[]).map((c) => [c.args[0], c.block]));
  for (const name of ['virtualbox', 'libvirt']) {
    assert.deepEqual(providers[name], { memory: 4096, cpus: 2 }, `provider ${name}`);
  }

  const folders = vm['synced_folder'] as Call[];
  const knockgate = folders.find((c) => c.args[1] === '/knockgate');
  assert.ok(knockgate, 'the checkout is synced to /knockgate');
  assert.equal(knockgate.args[0], '.');
  const excluded = (knockgate.kw['rsync__exclude'] ?? []) as string[];
  for (const built of ['node_modules/', 'dist/']) assert.ok(excluded.includes(built), `${built} is built in the VM, not copied`);

  const provisions = vm['provision'] as Call[];
  const setup = provisions.at(-1);
  assert.ok(setup);
  assert.equal(setup.kw['privileged'], true, 'provisioned as root');
  assert.match(String(setup.kw['inline']), /cd \/knockgate && bash scripts\/setup\.sh/);
  const node = provisions.find((c) => c.args[0] === 'node20');
  assert.ok(node && provisions.indexOf(node) < provisions.indexOf(setup), 'Node 20 is installed before setup.sh (Debian 12 has 18)');
});
