// Interfaces that come and go, without a kernel: the rtnetlink parser on constructed and
// captured messages, interface patterns (matching, and config errors with file:line), the
// warnings `check` prints, the one-daemon-per-gate lock, and the private-bpffs test on a
// fake /proc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkConfigText } from '../../src/config/load.js';
import { entryFor, entryMatches, patternProblem } from '../../src/config/ifpattern.js';
import { interfaceWarnings } from '../../src/interfaces.js';
import { pinFsVerdict } from '../../src/kernel/pinfs.js';
import {
  ARPHRD,
  IFLA_IFNAME,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_MULTI,
  RTM_DELLINK,
  RTM_NEWLINK,
  ifinfomsg,
  isTunnel,
  nlmsg,
  parseLinkMessages,
  rtattr,
} from '../../src/net/netlink.js';

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);
const NESTED = 0x8000;

function link(type: number, index: number, name: string, kind?: string, ifiType: number = ARPHRD.ETHER): Buffer {
  const info = kind === undefined ? [] : [rtattr(IFLA_LINKINFO | NESTED, rtattr(IFLA_INFO_KIND, cstr(kind)))];
  return nlmsg(type, 0, 1, ifinfomsg({ index, type: ifiType, flags: 0x1003 }, rtattr(IFLA_IFNAME, cstr(name)), ...info));
}

test('netlink: RTM_NEWLINK / RTM_DELLINK with name, type, flags and nested kind', () => {
  const b = Buffer.concat([link(RTM_NEWLINK, 7, 'eth0'), link(RTM_NEWLINK, 9, 'wg0', 'wireguard', ARPHRD.NONE), link(RTM_DELLINK, 7, 'eth0')]);
  const r = parseLinkMessages(b);
  assert.equal(r.done, false);
  assert.deepEqual(r.links, [
    { event: 'new', index: 7, name: 'eth0', type: ARPHRD.ETHER, flags: 0x1003 },
    { event: 'new', index: 9, name: 'wg0', type: ARPHRD.NONE, flags: 0x1003, kind: 'wireguard' },
    { event: 'del', index: 7, name: 'eth0', type: ARPHRD.ETHER, flags: 0x1003 },
  ]);
});

test('netlink: end of a dump, errors, other message types skipped', () => {
  const done = nlmsg(NLMSG_DONE, NLM_F_MULTI, 1, Buffer.alloc(4));
  const err = Buffer.alloc(4);
  err.writeInt32LE(-1); // -EPERM
  const other = nlmsg(20 /* RTM_NEWADDR */, 0, 1, Buffer.alloc(8));
  const r = parseLinkMessages(Buffer.concat([other, link(RTM_NEWLINK, 2, 'lo', undefined, ARPHRD.LOOPBACK), done]));
  assert.equal(r.done, true);
  assert.deepEqual(r.links.map((l) => l.name), ['lo']);
  const e = parseLinkMessages(nlmsg(NLMSG_ERROR, 0, 1, err));
  assert.equal(e.error, 1);
  const ack = Buffer.alloc(4); // error 0 = ACK
  assert.equal(parseLinkMessages(nlmsg(NLMSG_ERROR, 0, 1, ack)).error, undefined);
});

test('netlink: truncated and malformed input never throws nor reads past the message', () => {
  const whole = link(RTM_NEWLINK, 3, 'veth0', 'veth');
  for (let n = 0; n < whole.length; n++) {
    const r = parseLinkMessages(whole.subarray(0, n));
    assert.deepEqual(r.links, [], `truncated at ${n}`);
  }
  // An attribute whose length runs past the message: the name is not taken from beyond it.
  const bad = Buffer.from(whole);
  bad.writeUInt16LE(200, 16 + 16); // IFLA_IFNAME rta_len
  assert.deepEqual(parseLinkMessages(bad).links, []);
  // A message length below the header: stop.
  const tiny = Buffer.from(whole);
  tiny.writeUInt32LE(8, 0);
  assert.deepEqual(parseLinkMessages(tiny).links, []);
  // Random bytes: no exception.
  for (let i = 0; i < 2000; i++) {
    const junk = Buffer.from(whole);
    junk[Math.floor(Math.random() * junk.length)] = Math.floor(Math.random() * 256);
    parseLinkMessages(junk);
  }
});

test('netlink: messages captured from the kernel (6.18) for `ip link add kg-cap0 type veth peer name kg-cap0p` and `ip link del kg-cap0`', () => {
  // test/fixtures/netlink/veth-add-del.hex: one recv() datagram per line, as RTMGRP_LINK delivered them.
  const lines = readFileSync(fileURLToPath(new URL('../../../test/fixtures/netlink/veth-add-del.hex', import.meta.url)), 'utf8').trim().split('\n');
  const got = lines.map((l) => parseLinkMessages(Buffer.from(l, 'hex')).links.map((m) => [m.event, m.name, m.index, m.type, m.kind]));
  assert.deepEqual(got, [
    [['new', 'kg-cap0p', 2, ARPHRD.ETHER, 'veth']],
    [['new', 'kg-cap0', 3, ARPHRD.ETHER, 'veth']],
    [['del', 'kg-cap0', 3, ARPHRD.ETHER, 'veth']],
    [['del', 'kg-cap0p', 2, ARPHRD.ETHER, 'veth']],
  ]);
});

test('tunnels: by kind; tun without a link layer is one, tap is not', () => {
  assert.ok(isTunnel({ kind: 'vxlan', type: ARPHRD.ETHER }));
  assert.ok(isTunnel({ kind: 'wireguard', type: ARPHRD.NONE }));
  assert.ok(isTunnel({ kind: 'gre', type: ARPHRD.IPGRE }));
  assert.ok(isTunnel({ kind: 'tun', type: ARPHRD.NONE }));
  assert.equal(isTunnel({ kind: 'tun', type: ARPHRD.ETHER }), false);
  assert.equal(isTunnel({ kind: 'veth', type: ARPHRD.ETHER }), false);
  assert.equal(isTunnel({ type: ARPHRD.ETHER }), false);
});

test('patterns: glob matching; exact names win over patterns, then the first pattern', () => {
  const e = (name: string) => ({ name, mode: 'auto' as const });
  assert.ok(entryMatches(e('eth*'), 'eth0'));
  assert.ok(entryMatches(e('eth*'), 'eth'));
  assert.equal(entryMatches(e('eth*'), 'veth0'), false, 'anchored at the start');
  assert.ok(entryMatches(e('vlan1??'), 'vlan100'));
  assert.equal(entryMatches(e('vlan1??'), 'vlan10'), false);
  assert.ok(entryMatches(e('kg-[ab]*'), 'kg-a1'));
  assert.equal(entryMatches(e('kg-[ab]*'), 'kg-c1'), false);
  assert.ok(entryMatches(e('en[!o]*'), 'enp3s0'));
  assert.equal(entryMatches(e('en[!o]*'), 'eno1'), false);
  assert.ok(entryMatches(e('eth[0-3]'), 'eth2'));
  assert.equal(entryMatches(e('eth[0-3]'), 'eth4'), false);
  assert.ok(entryMatches(e('br.x*'), 'br.x0'));
  assert.equal(entryMatches(e('br.x*'), 'brax0'), false, '"." is literal');
  const list = [e('eth*'), e('eth1'), e('e*')];
  assert.equal(entryFor(list, 'eth1')?.name, 'eth1');
  assert.equal(entryFor(list, 'eth0')?.name, 'eth*');
  assert.equal(entryFor(list, 'enp1')?.name, 'e*');
  assert.equal(entryFor(list, 'lo'), undefined);
});

test('patterns: malformed ones are described', () => {
  assert.equal(patternProblem('eth*'), null);
  assert.match(patternProblem('eth[0-')!, /has no closing '\]'/);
  assert.match(patternProblem('eth]')!, /closes no '\['/);
  assert.match(patternProblem('eth[9-0]')!, /backwards/);
  assert.match(patternProblem('*')!, /matches every interface/);
  assert.match(patternProblem('eth 0*')!, /whitespace/);
  assert.match(patternProblem('a'.repeat(16) + '*')!, /at most 15/);
});

test('config: interface patterns load; malformed ones are errors with file:line:col', () => {
  const ok = checkConfigText(
    'interfaces: [eth0, "vlan*", { name: "kg-*", xdp_mode: generic }]\ndoors:\n  ssh:\n    sequence: [1000/tcp, 2000/tcp]\n    protects: [22/tcp]\n',
    'k.yaml',
  );
  assert.deepEqual(ok.errors, []);
  assert.deepEqual(ok.config?.interfaces, [
    { name: 'eth0', mode: 'auto', attach: 'dispatcher', priority: 10 },
    { name: 'vlan*', mode: 'auto', attach: 'dispatcher', priority: 10, pattern: true },
    { name: 'kg-*', mode: 'generic', attach: 'dispatcher', priority: 10, pattern: true },
  ]);
  const bad = checkConfigText(
    'interfaces:\n  - eth0\n  - "eth[0-"\n  - { name: "*" }\ndoors:\n  ssh:\n    sequence: [1000/tcp, 2000/tcp]\n    protects: [22/tcp]\n',
    'k.yaml',
  );
  assert.deepEqual(
    bad.errors.map((e) => `${e.file}:${e.line}:${e.col}: ${e.path}`),
    ['k.yaml:3:5: interfaces[1]', 'k.yaml:4:13: interfaces[2]'],
  );
  assert.match(bad.errors[0]!.message, /"eth\[0-" is not a valid interface pattern: '\[' at position 4 has no closing '\]'/);
  assert.match(bad.errors[1]!.message, /"\*" is not a valid interface pattern: it matches every interface/);
});

test('check warnings: missing names, patterns matching nothing, uncovered tunnels', () => {
  const links = [
    { index: 1, name: 'lo', type: ARPHRD.LOOPBACK, flags: 0 },
    { index: 2, name: 'eth0', type: ARPHRD.ETHER, flags: 0 },
    { index: 3, name: 'wg0', type: ARPHRD.NONE, flags: 0, kind: 'wireguard' },
    { index: 4, name: 'vx1', type: ARPHRD.ETHER, flags: 0, kind: 'vxlan' },
  ];
  const w = interfaceWarnings(
    [
      { name: 'eth0', mode: 'auto', attach: 'link', priority: 10 },
      { name: 'eth1', mode: 'auto', attach: 'link', priority: 10 },
      { name: 'vlan*', mode: 'auto', attach: 'link', priority: 10, pattern: true },
      { name: 'vx*', mode: 'auto', attach: 'link', priority: 10, pattern: true },
    ],
    links,
  );
  assert.equal(w.length, 3);
  assert.match(w[0]!, /^interface eth1 does not exist \(yet\)/);
  assert.match(w[1]!, /^interface pattern vlan\* matches no interface now/);
  assert.match(w[2]!, /^tunnel device wg0 \(wireguard\) is not covered by the config: the gate on the underlay never sees the packets inside the tunnel/);
});

test('one daemon per gate: the lock refuses a second holder with its PID, and frees on release', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kg-lock-'));
  const saved = process.env['KNOCKGATE_RUN_DIR'];
  process.env['KNOCKGATE_RUN_DIR'] = dir;
  try {
    // control.ts reads KNOCKGATE_RUN_DIR when first loaded: load it fresh for this test.
    const lock = await import('../../src/kernel/lock.js');
    const pin = '/sys/fs/bpf/kg-unit-lock';
    assert.equal(lock.daemonHolding(pin), null);
    const held = lock.DaemonLock.acquire(pin);
    assert.ok(held.path.startsWith(`${dir}/`), `the lock lives beside the control socket: ${held.path}`);
    assert.equal(lock.daemonHolding(pin), process.pid);
    assert.throws(
      () => lock.DaemonLock.acquire(pin),
      (err: Error) => err.name === 'DaemonRunningError' && new RegExp(`PID ${process.pid}\\b`).test(err.message) && /knockgate status/.test(err.message),
    );
    held.release();
    assert.equal(existsSync(held.path), false, 'a clean stop removes the lock file');
    assert.equal(lock.daemonHolding(pin), null, 'a released (or dead) holder blocks nothing');
    // A lock file left by a crash (no holder) blocks nothing either.
    writeFileSync(held.path, '999999\n');
    assert.equal(lock.daemonHolding(pin), null);
    const again = lock.DaemonLock.acquire(pin);
    again.release();
  } finally {
    if (saved === undefined) delete process.env['KNOCKGATE_RUN_DIR'];
    else process.env['KNOCKGATE_RUN_DIR'] = saved;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('private bpffs: compared with PID 1, else the nearest ancestor in another mount namespace', () => {
  const root = mkdtempSync(join(tmpdir(), 'kg-proc-'));
  try {
    const proc = join(root, 'proc');
    const hostRoot = join(root, 'host'); // what the witness sees as /
    mkdirSync(join(hostRoot, 'pins'), { recursive: true });
    const pins = join(root, 'pins'); // our pin dir
    mkdirSync(pins);
    const fakePid = (pid: string, ns: string, ppid: number, rootDir?: string): void => {
      mkdirSync(join(proc, pid, 'ns'), { recursive: true });
      symlinkSync(ns, join(proc, pid, 'ns', 'mnt'));
      writeFileSync(join(proc, pid, 'stat'), `${pid === 'self' ? 4242 : pid} (node (x)) S ${ppid} 1 1\n`);
      if (rootDir !== undefined) symlinkSync(rootDir, join(proc, pid, 'root'));
    };
    // Same namespace as PID 1: fine.
    fakePid('self', 'mnt:[1]', 100);
    fakePid('1', 'mnt:[1]', 0, '/');
    assert.deepEqual(pinFsVerdict(pins, proc), { ok: true, shared: true });
    // Another namespace, and PID 1 does not see the pin dir: refused.
    rmSync(proc, { recursive: true });
    fakePid('self', 'mnt:[2]', 100);
    fakePid('1', 'mnt:[1]', 0, hostRoot);
    const v = pinFsVerdict(pins, proc);
    assert.equal(v.ok, false);
    // PID 1 sees the same directory (same device): fine.
    rmSync(proc, { recursive: true });
    fakePid('self', 'mnt:[2]', 100);
    fakePid('1', 'mnt:[1]', 0, '/');
    assert.deepEqual(pinFsVerdict(pins, proc), { ok: true, shared: false });
    // PID 1 unreadable: the parent in another namespace stands in (`ip netns exec` from a shell).
    rmSync(proc, { recursive: true });
    fakePid('self', 'mnt:[2]', 100);
    fakePid('100', 'mnt:[1]', 1, hostRoot);
    assert.equal(pinFsVerdict(pins, proc).ok, false);
    // Every ancestor below PID 1 in our namespace: it is the tree's own namespace.
    rmSync(proc, { recursive: true });
    fakePid('self', 'mnt:[2]', 100);
    fakePid('100', 'mnt:[2]', 1);
    assert.deepEqual(pinFsVerdict(pins, proc), { ok: true, shared: true });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
