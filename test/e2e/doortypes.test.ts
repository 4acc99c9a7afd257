// End to end, the keyed and single-packet door types (issue "One-time and cryptographic knocks")
// with real packets between two namespaces, the daemon as a child process in the gateway
// namespace and a TCP service behind every door:
//
//   spa       the real client opens (IPv4 from the config, IPv6 from the command line); the
//             exact datagram it makes for a source (recorded by a UDP listener of the test, with
//             --source) opens once: replayed from the same address (after a revoke) it is a
//             `replay`, from another address a `bad_mac`; datagrams made with src/knock/ with
//             stale timestamps, a wrong key, another door's id or a tampered byte do not open;
//             a key file readable by group or others is refused by the client and the daemon;
//   signed    the same through the daemon's verifier, whose log names the client;
//   payload   a UDP datagram and an ICMP/ICMPv6 echo request that start with the bytes open;
//             other bytes, a shorter prefix and another door's payload do not;
//   rotating  the real client opens once per window: the same sequence again (after a revoke),
//             from the same or another address, is `spent`; the next window's opens; a wrong
//             secret does not;
//   keep      the daemon started with --keep and stopped: the pinned gate still lets spa knocks
//             in, while signed doors fail closed; `knockgate detach` removes it.
//
// Every test also checks that no key, secret or private key text ever reaches the daemon's log
// or the client's output. Key files are made with `knockgate keygen`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPrivateKey, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSuite, run, withNetns, type NetnsPair } from '../helpers/kernel.js';
import { CLI, Proc, runAsync, sleep, startClient, startDaemon, type LogLine, type Run } from '../helpers/daemon.js';
import { encodeSigned, encodeSpa, readPrivateKey, rotatingSequence, windowOf } from '../../src/knock/index.js';
import { parseAddress } from '../../src/net/addr.js';

/** The protected TCP service of each door. */
const SVC = { spa: 2201, sig: 2202, pay: 2203, ping: 2204, rot: 2205 } as const;
const SPA_PORT = 62201;
const SIG_PORT = 62202;
const PAY_PORT = 62203;
const ROT = { first: 40000, last: 40999, length: 4, windowMs: 10_000 } as const;
/** A second address of the client, for replays from elsewhere. */
const ALT4 = '198.18.0.6';
const ALT6 = '2001:db8::6';

interface Keys {
  spa: string;
  /** another spa key: a wrong key for the door */
  spaWrong: string;
  rot: string;
  rotWrong: string;
  /** Ed25519 private keys (FILE.pub beside each); alice and bob are the door's clients, mallory is not */
  alice: string;
  bob: string;
  mallory: string;
  spaKey: Buffer;
  rotSecret: Buffer;
  /** every text that must never be printed: key hex, private key PEM bodies and seeds */
  secrets: string[];
}

interface Lab {
  env: NetnsPair;
  dir: string;
  cfg: string;
  pin: string;
  keys: Keys;
  daemon: Proc;
  /** the payload door's bytes (UDP) and the ICMP door's text */
  payload: Buffer;
  icmpPayload: string;
  /** stdout and stderr of every CLI run, checked for secrets */
  outputs: string[];
}

// A tiny tool run in the client namespace (`node -e TOOL ...`), one JSON line out:
//   send HOST FROM PORT:HEX...        UDP datagrams from FROM (exactly these bytes), 20 ms apart
//   connect HOST FROM PORT TIMEOUT_MS a TCP connection from FROM ('-': the route's address)
//   listen ADDR - PORT TIMEOUT_MS     a UDP socket on ADDR:PORT: {ready}, then the first datagram as {hex}
const TOOL = String.raw`
const dgram = require('node:dgram');
const net = require('node:net');
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const [cmd, host, from, ...rest] = process.argv.slice(1);
const local = from === '-' ? undefined : from;
async function main() {
  if (cmd === 'send') {
    const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    await new Promise((resolve, reject) => { s.once('error', reject); s.bind({ address: local, port: 0 }, resolve); });
    for (const item of rest) {
      const at = item.indexOf(':');
      const buf = Buffer.from(item.slice(at + 1), 'hex');
      await new Promise((resolve, reject) => s.send(buf, Number(item.slice(0, at)), host, (e) => (e ? reject(e) : resolve())));
      await new Promise((r) => setTimeout(r, 20));
    }
    s.close();
    out({ ok: true });
  } else if (cmd === 'connect') {
    const [port, timeout] = rest;
    await new Promise((resolve) => {
      const sock = net.connect({ host, port: Number(port), ...(local ? { localAddress: local } : {}) });
      const done = (v) => { clearTimeout(timer); sock.destroy(); out(v); resolve(); };
      const timer = setTimeout(() => done({ ok: false, error: 'timeout' }), Number(timeout));
      sock.once('connect', () => done({ ok: true }));
      sock.once('error', (e) => done({ ok: false, error: e.code || e.message }));
    });
  } else if (cmd === 'listen') {
    const [port, timeout] = rest;
    const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    const timer = setTimeout(() => { out({ ok: false, error: 'timeout' }); process.exit(1); }, Number(timeout));
    s.on('message', (msg) => { clearTimeout(timer); out({ hex: msg.toString('hex') }); s.close(); });
    await new Promise((resolve, reject) => { s.once('error', reject); s.bind({ address: host, port: Number(port) }, resolve); });
    out({ ready: true });
  } else {
    throw new Error('unknown command ' + cmd);
  }
}
main().catch((e) => { out({ ok: false, error: String(e && e.message || e) }); process.exit(1); });
`;

async function tool(lab: Lab, args: readonly string[]): Promise<Record<string, unknown>> {
  const r = await runAsync('ip', ['netns', 'exec', lab.env.nsB, process.execPath, '-e', TOOL, ...args], 15_000);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`tool ${args.join(' ')}: no JSON answer (status ${r.status}): ${r.stdout} ${r.stderr}`);
  }
}

/**
 * The exact datagram `knockgate knock` sends, recorded: the client knocks with `--source
 * source` on a UDP listener of the test at listenAddr (an address of the client namespace), so
 * the datagram is the one it would send to the gate from `source`, and it reaches no gate.
 */
async function recordClientKnock(lab: Lab, listenAddr: string, port: number, source: string, args: readonly string[]): Promise<Buffer> {
  const child = spawn('ip', ['netns', 'exec', lab.env.nsB, process.execPath, '-e', TOOL, 'listen', listenAddr, '-', String(port), '15000'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const listener = new Proc(child);
  try {
    await listener.waitFor((l) => l['ready'] === true, 10_000, 'UDP listener ready');
    const r = await knockCli(lab, [listenAddr, ...args, '--source', source]);
    assert.equal(r.status, 0, `knock --source ${source}: ${r.stderr}`);
    const got = await listener.waitFor((l) => typeof l['hex'] === 'string', 10_000, 'the recorded datagram');
    return Buffer.from(String(got['hex']), 'hex');
  } finally {
    await listener.stop(2_000);
  }
}

/** Sends these exact datagrams from `from` to host:port (several: 20 ms apart). */
async function send(lab: Lab, from: string, host: string, port: number, ...datagrams: Buffer[]): Promise<void> {
  const r = await tool(lab, ['send', host, from, ...datagrams.map((d) => `${port}:${d.toString('hex')}`)]);
  assert.deepEqual(r, { ok: true }, `sending from ${from} to ${host}:${port}`);
}

/** One datagram to each port, from `from` (a rotating sequence). */
async function sendSteps(lab: Lab, from: string, host: string, ports: readonly number[]): Promise<void> {
  const r = await tool(lab, ['send', host, from, ...ports.map((p) => `${p}:6b6e6f636b`)]);
  assert.deepEqual(r, { ok: true }, `knocking ${ports.join(',')} from ${from}`);
}

/** Whether a TCP connection from `from` to host:port completes within timeoutMs. */
async function connects(lab: Lab, port: number, host: string, from = '-', timeoutMs = 800): Promise<boolean> {
  const r = await tool(lab, ['connect', host, from, String(port), String(timeoutMs)]);
  return r['ok'] === true;
}

/** Polls (bounded) until the connection succeeds: a grant written by the daemon comes a moment after the knock. */
async function opensSoon(lab: Lab, port: number, host: string, from = '-'): Promise<boolean> {
  const deadline = Date.now() + 6_000;
  for (;;) {
    if (await connects(lab, port, host, from, 1_000)) return true;
    if (Date.now() > deadline) return false;
    await sleep(200);
  }
}

type Match = Partial<Record<'event' | 'source' | 'door' | 'reason' | 'client' | 'protocol', string>>;
const matches = (m: Match) => (l: LogLine): boolean => Object.entries(m).every(([k, v]) => l[k] === v);

/** Runs action, then waits for a log line matching m that was not there before it. */
async function afterEvent(lab: Lab, m: Match, action: () => Promise<unknown>): Promise<LogLine> {
  const seen = new Set(lab.daemon.lines);
  await action();
  return lab.daemon.waitFor((l) => !seen.has(l) && matches(m)(l), 10_000, `event ${JSON.stringify(m)}`);
}

/** Asserts that no grant of `door` for `source` was logged after the mark. */
function noGrantSince(lab: Lab, mark: number, door: string, source: string, what: string): void {
  const g = lab.daemon.lines.slice(mark).find(matches({ event: 'grant', door, source }));
  assert.equal(g, undefined, `${what}: unexpected grant ${JSON.stringify(g)}`);
}

/** The CLI in the gateway namespace with the host's mounts (pins visible). */
async function kg(lab: Lab, args: readonly string[]): Promise<Run> {
  const r = await runAsync('nsenter', [`--net=/run/netns/${lab.env.nsA}`, process.execPath, CLI, ...args, '--pin-path', lab.pin]);
  lab.outputs.push(r.stdout, r.stderr);
  return r;
}

async function revoke(lab: Lab, source: string): Promise<void> {
  const r = await kg(lab, ['revoke', source]);
  assert.equal(r.status, 0, `revoke ${source}: ${r.stderr}`);
}

/** `knockgate knock ...` run in the client namespace. */
async function knockCli(lab: Lab, args: readonly string[]): Promise<Run> {
  const r = await runAsync('ip', ['netns', 'exec', lab.env.nsB, process.execPath, CLI, 'knock', ...args]);
  lab.outputs.push(r.stdout, r.stderr);
  return r;
}

function jsonResult(r: Run): Record<string, unknown> {
  try {
    return JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    throw new Error(`knock --json printed no JSON (status ${r.status}): ${r.stdout} ${r.stderr}`);
  }
}

const nowS = (): number => Math.floor(Date.now() / 1000);
const addr = (a: string): Buffer => parseAddress(a);

function flip(buf: Buffer, at: number): Buffer {
  const b = Buffer.from(buf);
  b[at] = (b[at] ?? 0) ^ 0x01;
  return b;
}

/** The texts a private key file gives away: its PEM body and its raw seed (hex and base64). */
function privateKeyTexts(path: string): string[] {
  const pem = readFileSync(path, 'utf8');
  const body = pem.split('\n').filter((l) => l !== '' && !l.startsWith('-----')).join('');
  const d = createPrivateKey(pem).export({ format: 'jwk' }).d ?? '';
  return [body, Buffer.from(d, 'base64url').toString('hex'), Buffer.from(d, 'base64url').toString('base64')];
}

function hexOf(path: string): string {
  return readFileSync(path, 'utf8').replace(/\s+/g, '');
}

async function makeKeys(dir: string, outputs: string[]): Promise<Keys> {
  const gen = async (type: 'spa' | 'rotating' | 'signed', name: string): Promise<string> => {
    const path = join(dir, name);
    const r = await runAsync(process.execPath, [CLI, 'keygen', '--type', type, path]);
    assert.equal(r.status, 0, `keygen --type ${type}: ${r.stderr}`);
    outputs.push(r.stdout, r.stderr);
    assert.equal(statSync(path).mode & 0o777, 0o600, `${name} is private (0600)`);
    return path;
  };
  const spa = await gen('spa', 'spa.key');
  const spaWrong = await gen('spa', 'wrong-spa.key');
  const rot = await gen('rotating', 'rot.secret');
  const rotWrong = await gen('rotating', 'wrong-rot.secret');
  const alice = await gen('signed', 'alice');
  const bob = await gen('signed', 'bob');
  const mallory = await gen('signed', 'mallory');
  const secrets = [hexOf(spa), hexOf(spaWrong), hexOf(rot), hexOf(rotWrong), ...[alice, bob, mallory].flatMap(privateKeyTexts)];
  for (const s of secrets) assert.ok(s.length >= 32, 'a secret text to look for');
  return {
    spa,
    spaWrong,
    rot,
    rotWrong,
    alice,
    bob,
    mallory,
    spaKey: Buffer.from(hexOf(spa), 'hex'),
    rotSecret: Buffer.from(hexOf(rot), 'hex'),
    secrets,
  };
}

function configText(env: NetnsPair, pin: string, keys: Keys, payload: Buffer, icmpPayload: string): string {
  return `# e2e door types
interfaces: [${env.ifA}]
xdp_mode: native
pin_path: ${pin}
log:
  level: debug
  denials_per_second: 100
  knock_events_per_second: 1000
brute_force:
  max_failures: 0
doors:
  spa:
    type: spa
    port: ${SPA_PORT}/udp
    key_file: ${keys.spa}
    max_skew: 30s
    protects: [${SVC.spa}/tcp]
  sig:
    type: signed
    port: ${SIG_PORT}/udp
    clients:
      alice: ${keys.alice}.pub
      bob: ${keys.bob}.pub
    max_skew: 30s
    protects: [${SVC.sig}/tcp]
  pay:
    type: payload
    knock: ${PAY_PORT}/udp
    payload: "hex:${payload.toString('hex')}"
    protects: [${SVC.pay}/tcp]
  ping:
    type: payload
    knock: icmp
    payload: ${icmpPayload}
    protects: [${SVC.ping}/tcp]
  rot:
    type: rotating
    secret_file: ${keys.rot}
    knock_ports: ${ROT.first}-${ROT.last}/udp
    length: ${ROT.length}
    window: ${ROT.windowMs / 1000}s
    protects: [${SVC.rot}/tcp]
`;
}

async function withLab(opts: { keep?: boolean }, fn: (lab: Lab) => Promise<void>): Promise<void> {
  await withNetns(async (env) => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-e2e-doortypes-'));
    const pin = `/sys/fs/bpf/kg-e2e-${env.id}`;
    const services: Proc[] = [];
    let daemon: Proc | null = null;
    const outputs: string[] = [];
    try {
      // A second address on the client for replays from elsewhere; the gate routes back to it.
      // Never the default source (IPv4: not in the route's subnet; IPv6: deprecated), so the
      // real client keeps knocking from addrB / addr6B; the test binds to it explicitly.
      run('ip', ['-n', env.nsB, 'addr', 'add', `${ALT4}/32`, 'dev', env.ifB]);
      run('ip', ['-n', env.nsB, 'addr', 'add', `${ALT6}/128`, 'dev', env.ifB, 'nodad', 'preferred_lft', '0']);
      run('ip', ['-n', env.nsA, 'route', 'add', `${ALT4}/32`, 'dev', env.ifA]);
      for (const port of Object.values(SVC)) {
        const s = startClient(env.nsA, ['serve', String(port)]);
        services.push(s);
        await s.waitFor((l) => l['listening'] === port, 10_000, `service on ${port}`);
      }
      const keys = await makeKeys(dir, outputs);
      const payload = randomBytes(12);
      const icmpPayload = `open-sesame-${randomBytes(4).toString('hex')}`;
      const cfg = join(dir, 'knockgate.yaml');
      writeFileSync(cfg, configText(env, pin, keys, payload, icmpPayload));
      daemon = startDaemon(env.nsA, ['run', '-c', cfg, ...(opts.keep === true ? ['--keep'] : [])]);
      await daemon.msg('knockgate running', 20_000);
      await fn({ env, dir, cfg, pin, keys, daemon, payload, icmpPayload, outputs });
    } finally {
      if (daemon) await daemon.stop();
      for (const s of services) await s.stop(5_000);
      if (existsSync(pin)) {
        // a gate left behind (keep, or a failed test): detach it, then make sure the pins are gone
        spawnDetach(env, pin);
        rmSync(pin, { recursive: true, force: true });
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

function spawnDetach(env: NetnsPair, pin: string): void {
  try {
    run('nsenter', [`--net=/run/netns/${env.nsA}`, process.execPath, CLI, 'detach', '--pin-path', pin], 30_000);
  } catch {
    // best effort: the pins are removed next, and the namespaces with the interfaces after that
  }
}

/**
 * Neither the daemon's log nor any CLI output shows a key, a secret or a private key, nor a
 * payload door's bytes (for those doors the byte string is the secret, docs/KNOCKS.md).
 */
function assertNoSecrets(lab: Lab): void {
  const secrets = [...lab.keys.secrets, lab.payload.toString('hex'), lab.icmpPayload];
  const texts: [string, string][] = [
    ['the daemon log', lab.daemon.raw.join('\n')],
    ['the daemon stderr', lab.daemon.stderr.join('')],
    ['the CLI output', lab.outputs.join('\n')],
  ];
  for (const [where, text] of texts) {
    for (const s of secrets) {
      assert.ok(!text.includes(s) && !text.toLowerCase().includes(s.toLowerCase()), `${where} contains secret material (${s.slice(0, 6)}...)`);
    }
  }
  assert.ok(lab.daemon.lines.length > 0, 'the daemon logged JSON lines');
}

function spaFor(lab: Lab, source: string, time = nowS(), key: Buffer = lab.keys.spaKey, door = 'spa'): Buffer {
  return encodeSpa({ key, door, source: addr(source), time });
}

kernelSuite('door types rotating, spa, signed and payload, end to end in network namespaces', () => {
  test('spa: the client opens over IPv4 and IPv6; a replay from the same or another address, stale timestamps, a wrong key and tampered bytes do not', async () => {
    await withLab({}, async (lab) => {
      const { env } = lab;
      assert.equal(await connects(lab, SVC.spa, env.addrA), false, 'closed before any knock');

      // The real client: IPv4 with the door from the config file (the config's key_file).
      const v4 = await knockCli(lab, [env.addrA, 'spa', '-c', lab.cfg, '--json']);
      assert.equal(v4.status, 0, v4.stderr);
      assert.equal(jsonResult(v4)['open'], true);
      await lab.daemon.waitFor(matches({ event: 'grant', door: 'spa', source: env.addrB }), 5_000, 'spa grant (IPv4)');
      assert.equal(await connects(lab, SVC.spa, env.addrA), true, 'open after the IPv4 knock');
      assert.equal(await connects(lab, SVC.sig, env.addrA), false, 'another door stays closed');

      // IPv6 with the door given on the command line.
      assert.equal(await connects(lab, SVC.spa, env.addr6A), false, 'closed for the IPv6 source');
      const v6 = await knockCli(lab, [env.addr6A, 'spa', '--type', 'spa', '--port', String(SPA_PORT), '--key-file', lab.keys.spa, '--check', String(SVC.spa)]);
      assert.equal(v6.status, 0, v6.stderr);
      await lab.daemon.waitFor(matches({ event: 'grant', door: 'spa', source: env.addr6B }), 5_000, 'spa grant (IPv6)');
      assert.equal(await connects(lab, SVC.spa, env.addr6A), true, 'open after the IPv6 knock');
      await revoke(lab, env.addrB);
      await revoke(lab, env.addr6B);
      assert.equal(await connects(lab, SVC.spa, env.addrA), false, 'closed after revoke (IPv4)');
      assert.equal(await connects(lab, SVC.spa, env.addr6A), false, 'closed after revoke (IPv6)');

      for (const [gate, me, alt] of [
        [env.addrA, env.addrB, ALT4],
        [env.addr6A, env.addr6B, ALT6],
      ] as const) {
        // The real client's datagram for this source, recorded: it opens once.
        const knock = await recordClientKnock(lab, alt, SPA_PORT, me, ['spa', '--type', 'spa', '--port', String(SPA_PORT), '--key-file', lab.keys.spa]);
        assert.equal(knock.length, 40);
        await afterEvent(lab, { event: 'grant', door: 'spa', source: me }, () => send(lab, me, gate, SPA_PORT, knock));
        assert.equal(await connects(lab, SVC.spa, gate, me), true, `open for ${me}`);
        await revoke(lab, me);
        assert.equal(await connects(lab, SVC.spa, gate, me), false, `closed again for ${me}`);

        // Replayed from the same address: its nonce was used.
        let mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'spa', source: me, reason: 'replay' }, () => send(lab, me, gate, SPA_PORT, knock));
        assert.equal(await connects(lab, SVC.spa, gate, me), false, `a replay from ${me} does not open`);
        noGrantSince(lab, mark, 'spa', me, 'replay from the same address');

        // Replayed from another address: the MAC covers the source.
        mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'spa', source: alt, reason: 'bad_mac' }, () => send(lab, alt, gate, SPA_PORT, knock));
        assert.equal(await connects(lab, SVC.spa, gate, alt), false, `a replay from ${alt} does not open`);
        noGrantSince(lab, mark, 'spa', alt, 'replay from another address');

        // ...while a knock made for that address opens it (the replays were refused on their merits).
        await afterEvent(lab, { event: 'grant', door: 'spa', source: alt }, () => send(lab, alt, gate, SPA_PORT, spaFor(lab, alt)));
        assert.equal(await connects(lab, SVC.spa, gate, alt), true, `a fresh knock opens for ${alt}`);
        await revoke(lab, alt);
      }

      // Refused datagrams, each with its reason; none opens.
      const me = env.addrB;
      const fresh = spaFor(lab, me);
      const refused: [string, Buffer, string][] = [
        ['a timestamp 5 minutes old', spaFor(lab, me, nowS() - 300), 'stale'],
        ['a timestamp 5 minutes ahead', spaFor(lab, me, nowS() + 300), 'stale'],
        ['a wrong key', spaFor(lab, me, nowS(), randomBytes(16)), 'bad_mac'],
        ["another spa key file's key", spaFor(lab, me, nowS(), Buffer.from(readFileSync(lab.keys.spaWrong, 'utf8').trim(), 'hex')), 'bad_mac'],
        ["another door's id", spaFor(lab, me, nowS(), lab.keys.spaKey, 'sig'), 'malformed'],
        ['a tampered timestamp byte', flip(fresh, 15), 'bad_mac'],
        ['a tampered nonce byte', flip(fresh, 20), 'bad_mac'],
        ['a tampered MAC byte', flip(fresh, 39), 'bad_mac'],
        ['a tampered magic byte', flip(fresh, 0), 'malformed'],
        ['a truncated datagram', fresh.subarray(0, 39), 'malformed'],
      ];
      for (const [what, dg, reason] of refused) {
        const mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'spa', source: me, reason }, () => send(lab, me, env.addrA, SPA_PORT, dg));
        noGrantSince(lab, mark, 'spa', me, what);
        assert.equal(await connects(lab, SVC.spa, env.addrA), false, `${what} does not open`);
      }
      // The untampered datagram still opens: tampered copies did not use up its nonce.
      await afterEvent(lab, { event: 'grant', door: 'spa', source: me }, () => send(lab, me, env.addrA, SPA_PORT, fresh));
      assert.equal(await connects(lab, SVC.spa, env.addrA), true, 'the original of the tampered datagrams opens');
      await revoke(lab, me);

      // The real client with the wrong key file.
      const wrong = await knockCli(lab, [env.addrA, 'spa', '--type', 'spa', '--port', String(SPA_PORT), '--key-file', lab.keys.spaWrong, '--check', String(SVC.spa), '--check-timeout', '1s']);
      assert.equal(wrong.status, 1, `a knock with the wrong key fails: ${wrong.stderr}`);
      await lab.daemon.waitFor((l) => matches({ event: 'reject', door: 'spa', source: me, reason: 'bad_mac' })(l), 5_000, 'bad_mac for the wrong key');
      assert.equal(await connects(lab, SVC.spa, env.addrA), false, 'closed after the wrong-key knock');

      // A key file readable by group or others is refused by the client and by the daemon.
      const loose = join(lab.dir, 'loose-spa.key');
      copyFileSync(lab.keys.spa, loose);
      chmodSync(loose, 0o644);
      const byClient = await knockCli(lab, [env.addrA, 'spa', '--type', 'spa', '--port', String(SPA_PORT), '--key-file', loose, '--check', String(SVC.spa)]);
      assert.equal(byClient.status, 2, `the client refuses a 0644 key file: ${byClient.stderr}`);
      assert.match(byClient.stderr, /readable by group or others \(mode 0644\).*chmod 600/);
      const badPin = `${lab.pin}-loose`;
      const badCfg = join(lab.dir, 'loose.yaml');
      writeFileSync(badCfg, readFileSync(lab.cfg, 'utf8').replace(`key_file: ${lab.keys.spa}`, `key_file: ${loose}`).replace(`pin_path: ${lab.pin}`, `pin_path: ${badPin}`));
      try {
        const byDaemon = await runAsync('nsenter', [`--net=/run/netns/${env.nsA}`, process.execPath, CLI, 'run', '-c', badCfg]);
        lab.outputs.push(byDaemon.stdout, byDaemon.stderr);
        assert.notEqual(byDaemon.status, 0, 'the daemon does not start with a 0644 key file');
        assert.match(byDaemon.stderr, /loose-spa\.key is readable by group or others/);
        assert.equal(existsSync(badPin), false, 'nothing was loaded');
      } finally {
        if (existsSync(badPin)) rmSync(badPin, { recursive: true, force: true });
      }
      assert.equal(await connects(lab, SVC.spa, env.addrA), false, 'the running gate is unaffected');

      assertNoSecrets(lab);
    });
  });

  test('signed: the client opens over IPv4 and IPv6 and the grant names the client; replays, stale timestamps, unknown keys and tampered bytes do not', async () => {
    await withLab({}, async (lab) => {
      const { env, keys } = lab;
      const alice = await readPrivateKey(keys.alice);
      const bob = await readPrivateKey(keys.bob);
      const mallory = await readPrivateKey(keys.mallory);
      const signed = (source: string, privateKey = alice, time = nowS(), door = 'sig'): Buffer => encodeSigned({ privateKey, door, source: addr(source), time });
      assert.equal(await connects(lab, SVC.sig, env.addrA), false, 'closed before any knock');

      // The real client: IPv4 with the door from the config and the private key; IPv6 from the command line.
      const v4 = await knockCli(lab, [env.addrA, 'sig', '-c', lab.cfg, '--key-file', keys.alice, '--json']);
      assert.equal(v4.status, 0, v4.stderr);
      assert.equal(jsonResult(v4)['open'], true);
      const g4 = await lab.daemon.waitFor(matches({ event: 'grant', door: 'sig', source: env.addrB }), 5_000, 'signed grant (IPv4)');
      assert.equal(g4['client'], 'alice', 'the grant names the client');
      assert.equal(await connects(lab, SVC.sig, env.addrA), true, 'open after the IPv4 knock');
      const v6 = await knockCli(lab, [env.addr6A, 'sig', '--type', 'signed', '--port', String(SIG_PORT), '--key-file', keys.bob, '--check', String(SVC.sig)]);
      assert.equal(v6.status, 0, v6.stderr);
      const g6 = await lab.daemon.waitFor(matches({ event: 'grant', door: 'sig', source: env.addr6B }), 5_000, 'signed grant (IPv6)');
      assert.equal(g6['client'], 'bob');
      assert.equal(await connects(lab, SVC.sig, env.addr6A), true, 'open after the IPv6 knock');
      await revoke(lab, env.addrB);
      await revoke(lab, env.addr6B);
      assert.equal(await connects(lab, SVC.sig, env.addrA), false, 'closed after revoke');

      for (const [gate, me, alt] of [
        [env.addrA, env.addrB, ALT4],
        [env.addr6A, env.addr6B, ALT6],
      ] as const) {
        // The real client's datagram for this source, recorded: it opens once.
        const knock = await recordClientKnock(lab, alt, SIG_PORT, me, ['sig', '--type', 'signed', '--port', String(SIG_PORT), '--key-file', keys.alice]);
        assert.equal(knock.length, 112);
        await afterEvent(lab, { event: 'grant', door: 'sig', source: me, client: 'alice' }, () => send(lab, me, gate, SIG_PORT, knock));
        assert.equal(await opensSoon(lab, SVC.sig, gate, me), true, `open for ${me}`);
        await revoke(lab, me);
        assert.equal(await connects(lab, SVC.sig, gate, me), false, `closed again for ${me}`);

        let mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'sig', source: me, reason: 'replay', client: 'alice' }, () => send(lab, me, gate, SIG_PORT, knock));
        assert.equal(await connects(lab, SVC.sig, gate, me), false, `a replay from ${me} does not open`);
        noGrantSince(lab, mark, 'sig', me, 'replay from the same address');

        mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'sig', source: alt, reason: 'bad_signature', client: 'alice' }, () => send(lab, alt, gate, SIG_PORT, knock));
        assert.equal(await connects(lab, SVC.sig, gate, alt), false, `a replay from ${alt} does not open`);
        noGrantSince(lab, mark, 'sig', alt, 'replay from another address');

        await afterEvent(lab, { event: 'grant', door: 'sig', source: alt, client: 'alice' }, () => send(lab, alt, gate, SIG_PORT, signed(alt)));
        assert.equal(await opensSoon(lab, SVC.sig, gate, alt), true, `a fresh knock opens for ${alt}`);
        await revoke(lab, alt);
      }

      const me = env.addrB;
      const fresh = signed(me);
      const refused: [string, Buffer, Match][] = [
        ['a timestamp 5 minutes old', signed(me, alice, nowS() - 300), { reason: 'stale', client: 'alice' }],
        ['a timestamp 5 minutes ahead', signed(me, alice, nowS() + 300), { reason: 'stale', client: 'alice' }],
        ['a key that is not a client of the door', signed(me, mallory), { reason: 'unknown_key' }],
        ["another door's id (checked in the kernel)", signed(me, alice, nowS(), 'spa'), { reason: 'malformed' }],
        ['a tampered timestamp byte', flip(fresh, 15), { reason: 'bad_signature', client: 'alice' }],
        ['a tampered nonce byte', flip(fresh, 20), { reason: 'bad_signature', client: 'alice' }],
        ['a tampered signature byte', flip(fresh, 100), { reason: 'bad_signature', client: 'alice' }],
        ['a truncated datagram', fresh.subarray(0, 111), { reason: 'malformed' }],
      ];
      // alice's key id with bob's signature: the signature must be alice's.
      const forged = Buffer.concat([fresh.subarray(0, 48), signed(me, bob).subarray(48)]);
      refused.push(["another client's signature under alice's key id", forged, { reason: 'bad_signature', client: 'alice' }]);
      for (const [what, dg, m] of refused) {
        const mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'sig', source: me, ...m }, () => send(lab, me, env.addrA, SIG_PORT, dg));
        noGrantSince(lab, mark, 'sig', me, what);
        assert.equal(await connects(lab, SVC.sig, env.addrA), false, `${what} does not open`);
      }
      // The untampered datagram still opens (only verified knocks enter the nonce cache).
      await afterEvent(lab, { event: 'grant', door: 'sig', source: me, client: 'alice' }, () => send(lab, me, env.addrA, SIG_PORT, fresh));
      assert.equal(await opensSoon(lab, SVC.sig, env.addrA), true, 'the original of the tampered datagrams opens');
      await revoke(lab, me);

      // The real client with a key the door does not list.
      const wrong = await knockCli(lab, [env.addrA, 'sig', '-c', lab.cfg, '--key-file', keys.mallory, '--check-timeout', '1s']);
      assert.equal(wrong.status, 1, `a knock with an unlisted key fails: ${wrong.stderr}`);
      await lab.daemon.waitFor(matches({ event: 'reject', door: 'sig', source: me, reason: 'unknown_key' }), 5_000, 'unknown_key for mallory');
      assert.equal(await connects(lab, SVC.sig, env.addrA), false, 'closed after the unlisted key');

      assertNoSecrets(lab);
    });
  });

  test('payload: a UDP datagram and an ICMP/ICMPv6 echo request that start with the bytes open; other bytes do not', async () => {
    await withLab({}, async (lab) => {
      const { env } = lab;
      const payloadArg = `hex:${lab.payload.toString('hex')}`;
      assert.equal(await connects(lab, SVC.pay, env.addrA), false, 'closed before any knock');

      // UDP: the real client from the config (IPv4) and from the command line (IPv6).
      const v4 = await knockCli(lab, [env.addrA, 'pay', '-c', lab.cfg, '--json']);
      assert.equal(v4.status, 0, v4.stderr);
      assert.equal(jsonResult(v4)['open'], true);
      await lab.daemon.waitFor(matches({ event: 'grant', door: 'pay', source: env.addrB }), 5_000, 'payload grant (IPv4)');
      assert.equal(await connects(lab, SVC.pay, env.addrA), true, 'open after the UDP payload knock');
      assert.equal(await connects(lab, SVC.ping, env.addrA), false, 'the ICMP door is another door: still closed');
      const v6 = await knockCli(lab, [env.addr6A, '--type', 'payload', '--port', String(PAY_PORT), '--payload', payloadArg, '--check', String(SVC.pay)]);
      assert.equal(v6.status, 0, v6.stderr);
      await lab.daemon.waitFor(matches({ event: 'grant', door: 'pay', source: env.addr6B }), 5_000, 'payload grant (IPv6)');
      await revoke(lab, env.addrB);
      await revoke(lab, env.addr6B);
      assert.equal(await connects(lab, SVC.pay, env.addrA), false, 'closed after revoke');

      // The payload is a prefix: more bytes after it still open; other bytes do not.
      const me = env.addrB;
      const refused: [string, Buffer][] = [
        ['other bytes', randomBytes(lab.payload.length)],
        ['the payload but its last byte', lab.payload.subarray(0, lab.payload.length - 1)],
        ['the payload with one byte changed', flip(lab.payload, 3)],
        ['the payload after another byte', Buffer.concat([Buffer.from([0]), lab.payload])],
        ["the ICMP door's text", Buffer.from(lab.icmpPayload)],
      ];
      for (const [what, dg] of refused) {
        const mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'pay', source: me, reason: 'payload' }, () => send(lab, me, env.addrA, PAY_PORT, dg));
        noGrantSince(lab, mark, 'pay', me, what);
        assert.equal(await connects(lab, SVC.pay, env.addrA), false, `${what} does not open`);
      }
      await afterEvent(lab, { event: 'grant', door: 'pay', source: me }, () => send(lab, me, env.addrA, PAY_PORT, Buffer.concat([lab.payload, Buffer.from(' and more')])));
      assert.equal(await connects(lab, SVC.pay, env.addrA), true, 'the payload followed by more bytes opens');
      await revoke(lab, me);

      // ICMP and ICMPv6 echo requests, the real client with the door from the config.
      assert.equal(await connects(lab, SVC.ping, env.addrA), false, 'the ICMP door is closed');
      for (const [gate, src] of [
        [env.addrA, env.addrB],
        [env.addr6A, env.addr6B],
      ] as const) {
        const r = await knockCli(lab, [gate, 'ping', '-c', lab.cfg, '--json']);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(jsonResult(r)['open'], true);
        await lab.daemon.waitFor(matches({ event: 'grant', door: 'ping', source: src, protocol: 'icmp' }), 5_000, `ICMP grant for ${src}`);
        assert.equal(await connects(lab, SVC.ping, gate), true, `open for ${src} after the echo request`);
        await revoke(lab, src);
        assert.equal(await connects(lab, SVC.ping, gate), false, `closed for ${src} after revoke`);
      }
      // An echo request with other bytes: refused, the door stays closed.
      const mark = lab.daemon.lines.length;
      const wrong = await knockCli(lab, [env.addrA, '--type', 'payload', '--icmp', '--payload', 'open-sesame-wrong', '--check', String(SVC.ping), '--check-timeout', '1s']);
      assert.equal(wrong.status, 1, `a wrong ICMP payload does not open: ${wrong.stderr}`);
      await lab.daemon.waitFor((l) => lab.daemon.lines.indexOf(l) >= mark && matches({ event: 'reject', door: 'ping', source: me, reason: 'payload' })(l), 5_000, 'ICMP payload reject');
      noGrantSince(lab, mark, 'ping', me, 'a wrong ICMP payload');

      assertNoSecrets(lab);
    });
  });

  test('rotating: the client opens once per window; the same sequence again (after revoke) from the same or another address is spent; a wrong secret does not open', async (t) => {
    await withLab({}, async (lab) => {
      const { env, keys } = lab;
      const range = { first: ROT.first, last: ROT.last };
      /** Waits out the first 300 ms of a window, when the daemon may not have written its sequence yet. */
      const clearOfWindowStart = async (): Promise<void> => {
        const into = Date.now() % ROT.windowMs;
        if (into < 300) await sleep(300 - into);
      };
      const windowOfKnock = (r: Run): bigint => {
        const m = /rotating sequence of window (\d+) /.exec(String(jsonResult(r)['knock']));
        assert.ok(m, `the knock names its window: ${r.stdout}`);
        return BigInt(m[1] ?? '0');
      };
      assert.equal(await connects(lab, SVC.rot, env.addrA), false, 'closed before any knock');

      // IPv4: the real client with the door from the config. (Not in the first moment of a
      // window: the daemon's timer writes a window's sequence a few ms after it starts.)
      await clearOfWindowStart();
      const v4 = await knockCli(lab, [env.addrA, 'rot', '-c', lab.cfg, '--json']);
      assert.equal(v4.status, 0, v4.stderr);
      assert.equal(jsonResult(v4)['open'], true);
      const w = windowOfKnock(v4);
      await lab.daemon.waitFor(matches({ event: 'grant', door: 'rot', source: env.addrB }), 5_000, 'rotating grant (IPv4)');
      assert.equal(await connects(lab, SVC.rot, env.addrA), true, 'open after the rotating knock');
      await revoke(lab, env.addrB);
      assert.equal(await connects(lab, SVC.rot, env.addrA), false, 'closed after revoke');

      // The same window's sequence again, from the same and from another address: spent.
      // (The gate holds a window's sequence until the end of the next window, >= 10 s from the knock.)
      const seq = rotatingSequence(keys.rotSecret, 'rot', w, range, ROT.length);
      for (const from of [env.addrB, ALT4]) {
        const mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'rot', source: from, reason: 'spent' }, () => sendSteps(lab, from, env.addrA, seq));
        noGrantSince(lab, mark, 'rot', from, `the spent sequence from ${from}`);
        assert.equal(await connects(lab, SVC.rot, env.addrA, from), false, `the spent sequence does not open for ${from}`);
      }
      // The real client knocking again in the same window would send the same spent sequence:
      // it gets in only with the next window's sequence (the daemon's timer writes it).
      const next = (Number(w) + 1) * ROT.windowMs;
      await sleep(Math.max(0, next - Date.now()) + 1_000);
      // Window w's sequence is still live in window w + 1 (the gate accepts the previous window):
      // it is still spent there. (Only when the steps above left us in window w + 1, as they do
      // unless they took more than a window.)
      if (windowOf(Date.now(), ROT.windowMs) === w + 1n) {
        const mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'rot', source: env.addrB, reason: 'spent' }, () => sendSteps(lab, env.addrB, env.addrA, seq));
        noGrantSince(lab, mark, 'rot', env.addrB, "the previous window's spent sequence");
        assert.equal(await connects(lab, SVC.rot, env.addrA), false, "the previous window's spent sequence does not open");
      } else {
        t.diagnostic(`skipped the replay in window w + 1: now in window ${windowOf(Date.now(), ROT.windowMs)}, knocked in ${w}`);
      }
      await clearOfWindowStart();

      // IPv6: the real client with the door on the command line, in a later window.
      const v6 = await knockCli(lab, [
        env.addr6A, 'rot', '--type', 'rotating', '--secret-file', keys.rot, '--range', `${ROT.first}-${ROT.last}/udp`,
        '--length', String(ROT.length), '--window', `${ROT.windowMs / 1000}s`, '--check', String(SVC.rot), '--json',
      ]);
      assert.equal(v6.status, 0, v6.stderr);
      const w6 = windowOfKnock(v6);
      assert.ok(w6 > w, `a later window (${w6} > ${w})`);
      await lab.daemon.waitFor(matches({ event: 'grant', door: 'rot', source: env.addr6B }), 5_000, 'rotating grant (IPv6)');
      assert.equal(await connects(lab, SVC.rot, env.addr6A), true, 'open after the IPv6 rotating knock');
      await revoke(lab, env.addr6B);
      const seq6 = rotatingSequence(keys.rotSecret, 'rot', w6, range, ROT.length);
      for (const from of [env.addr6B, ALT6]) {
        const mark = lab.daemon.lines.length;
        await afterEvent(lab, { event: 'reject', door: 'rot', source: from, reason: 'spent' }, () => sendSteps(lab, from, env.addr6A, seq6));
        noGrantSince(lab, mark, 'rot', from, `the spent sequence from ${from}`);
        assert.equal(await connects(lab, SVC.rot, env.addr6A, from), false, `the spent sequence does not open for ${from}`);
      }

      // A wrong secret.
      const mark = lab.daemon.lines.length;
      const wrong = await knockCli(lab, [
        env.addrA, 'rot', '--type', 'rotating', '--secret-file', keys.rotWrong, '--range', `${ROT.first}-${ROT.last}/udp`,
        '--length', String(ROT.length), '--window', `${ROT.windowMs / 1000}s`, '--check', String(SVC.rot), '--check-timeout', '1s',
      ]);
      assert.equal(wrong.status, 1, `a wrong secret does not open: ${wrong.stderr}`);
      noGrantSince(lab, mark, 'rot', env.addrB, 'a wrong secret');
      assert.equal(await connects(lab, SVC.rot, env.addrA), false, 'closed after the wrong secret');

      assertNoSecrets(lab);
    });
  });

  test('keep: with the daemon stopped the pinned gate still lets spa knocks in and signed doors fail closed; detach removes it', async () => {
    await withLab({ keep: true }, async (lab) => {
      const { env, keys } = lab;
      // With the daemon running, both doors open (the control for what follows).
      const sig = await knockCli(lab, [env.addrA, 'sig', '-c', lab.cfg, '--key-file', keys.alice]);
      assert.equal(sig.status, 0, sig.stderr);
      await lab.daemon.waitFor(matches({ event: 'grant', door: 'sig', source: env.addrB, client: 'alice' }), 5_000, 'signed grant');
      await revoke(lab, env.addrB);
      assert.equal(await connects(lab, SVC.sig, env.addrA), false, 'closed after revoke');

      // Stop the daemon: the gate stays.
      const code = await lab.daemon.stop();
      assert.equal(code, 0, `the daemon exits cleanly: ${lab.daemon.stderr.join('')}`);
      assert.ok(lab.daemon.lines.some((l) => l.msg === 'stopped; the gate keeps enforcing (keep)'), `keep stop logged: ${lab.daemon.raw.slice(-5).join('\n')}`);
      assert.ok(existsSync(join(lab.pin, 'maps')), 'the pins stay');
      assert.equal(await connects(lab, SVC.spa, env.addrA), false, 'the spa door is closed without the daemon');
      assert.equal(await connects(lab, SVC.sig, env.addrA), false, 'the signed door is closed without the daemon');

      // spa is checked in XDP: it still opens, once per datagram.
      for (const [gate, me] of [
        [env.addrA, env.addrB],
        [env.addr6A, env.addr6B],
      ] as const) {
        const spa = await knockCli(lab, [gate, 'spa', '-c', lab.cfg]);
        assert.equal(spa.status, 0, `spa opens without the daemon (${me}): ${spa.stderr}`);
        assert.equal(await connects(lab, SVC.spa, gate), true, `spa door open for ${me}`);
        await revoke(lab, me);
        assert.equal(await connects(lab, SVC.spa, gate), false, `closed again for ${me}`);
        const knock = spaFor(lab, me);
        await send(lab, me, gate, SPA_PORT, knock);
        assert.equal(await connects(lab, SVC.spa, gate), true, `a datagram made by the test opens for ${me}`);
        await revoke(lab, me);
        await send(lab, me, gate, SPA_PORT, knock);
        assert.equal(await connects(lab, SVC.spa, gate), false, `its replay does not open for ${me} (the kernel's nonce cache)`);
        await send(lab, me, gate, SPA_PORT, spaFor(lab, me, nowS() - 300));
        assert.equal(await connects(lab, SVC.spa, gate), false, `a stale knock does not open for ${me}`);
      }

      // signed needs the daemon: it fails closed.
      const sig2 = await knockCli(lab, [env.addrA, 'sig', '-c', lab.cfg, '--key-file', keys.alice, '--check-timeout', '1s']);
      assert.equal(sig2.status, 1, `a signed knock does not open without the daemon: ${sig2.stderr}`);
      const alice = await readPrivateKey(keys.alice);
      await send(lab, env.addrB, env.addrA, SIG_PORT, encodeSigned({ privateKey: alice, door: 'sig', source: addr(env.addrB), time: nowS() }));
      assert.equal(await connects(lab, SVC.sig, env.addrA, '-', 1_500), false, 'the signed door stays closed without the daemon');

      // detach: pins gone, nothing in front of the services any more.
      const d = await kg(lab, ['detach']);
      assert.equal(d.status, 0, d.stderr);
      assert.equal(existsSync(lab.pin), false, 'the pins are removed');
      assert.equal(await connects(lab, SVC.sig, env.addrA), true, 'after detach the service answers without a knock');

      assertNoSecrets(lab);
    });
  });
});
