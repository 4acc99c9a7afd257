// The door types besides the fixed sequence: the schema (parsing and its errors), the key
// files (src/config/secrets.ts) and the policy compiler (planGeneration) for each type.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, checkConfigText, parseConfigText } from '../../src/config/index.js';
import { loadDoorSecrets } from '../../src/config/secrets.js';
import { doorConfigOf, doorsAsConfigText } from '../../src/kernel/doors.js';
import { DOOR_TYPE, KG, PROTO, decodeDoor, decodePortInfo, encodeDoor, rotatingSteps } from '../../src/kernel/layout.js';
import { planGeneration, type SlotState } from '../../src/kernel/tables.js';
import { rotatingSequence, windowOf } from '../../src/knock/rotating.js';
import { doorId } from '../../src/knock/wire.js';

const dir = mkdtempSync(join(tmpdir(), 'kg-doortypes-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ALL = `
interfaces: [lo]
doors:
  seq: { sequence: [7000/tcp, 8000/udp], protects: [22/tcp] }
  rot:
    type: rotating
    secret_file: rot.secret
    knock_ports: 41000-41999/udp
    length: 3
    window: 1m
    protects: [2205/tcp]
  spa: { type: spa, port: 62201/udp, key_file: spa.key, max_skew: 10s, protects: [2201/tcp] }
  sig: { type: signed, port: 62202, clients: { alice: alice.pub }, protects: [2202/tcp] }
  pay: { type: payload, knock: 62203/udp, payload: "hex:6b6e6f636b", protects: [2203/tcp] }
  ping: { type: payload, knock: icmp, payload: open-sesame, protects: [2204/tcp] }
`;

function errorsOf(text: string): string[] {
  const r = checkConfigText(text);
  assert.equal(r.config, null, 'expected the config to be refused');
  return r.errors.map((e) => `${e.path}: ${e.message}`);
}

test('every door type parses to its model', () => {
  const c = parseConfigText(ALL);
  const by = new Map(c.doors.map((d) => [d.name, d]));
  /** a door's type-specific settings (DoorConfig is a union on type) */
  const spec = (name: string, type: string): unknown => (by.get(name) as Record<string, unknown> | undefined)?.[type];
  assert.equal(by.get('seq')?.type, 'sequence');
  assert.deepEqual(spec('rot', 'rotating'), { secretFile: 'rot.secret', range: { first: 41000, last: 41999, proto: 'udp' }, length: 3, windowMs: 60_000 });
  assert.deepEqual(by.get('rot')?.sequence, []);
  assert.deepEqual(spec('spa', 'spa'), { port: 62201, keyFile: 'spa.key', maxSkewMs: 10_000 });
  assert.deepEqual(spec('sig', 'signed'), { port: 62202, clients: [{ name: 'alice', publicKeyFile: 'alice.pub' }], maxSkewMs: 30_000 });
  assert.deepEqual(spec('pay', 'payload'), { proto: 'udp', port: 62203, payload: Buffer.from('knock') });
  assert.deepEqual(spec('ping', 'payload'), { proto: 'icmp', port: 0, payload: Buffer.from('open-sesame') });
});

test('door type errors say what is wrong and what to do', () => {
  const base = (door: string) => `interfaces: [lo]\ndoors:\n  d: ${door}\n`;
  const cases: [string, RegExp][] = [
    ['{ type: spa, port: 62201/udp, protects: [22/tcp] }', /key_file: required key is missing.*keygen --type spa/],
    ['{ type: spa, port: 62201/tcp, key_file: k, protects: [22/tcp] }', /single-packet knocks are UDP datagrams; write 62201\/udp/],
    ['{ type: spa, port: 62201/udp, key_file: k, max_skew: 1h, protects: [22/tcp] }', /max_skew: 1h is out of range: 1s..10m/],
    ['{ type: spa, port: 62201/udp, key_file: k, sequence: [1/tcp, 3/tcp], protects: [22/tcp] }', /sequence is not a key of a spa door \(it belongs to type sequence\)/],
    ['{ sequence: [7000/tcp], port: 5/udp, protects: [22/tcp] }', /port is not a key of a sequence door.*or set type/],
    ['{ type: rotating, secret_file: s, knock_ports: 41000-41010/udp, protects: [22/tcp] }', /has 11 ports: a rotating door draws from at least 64/],
    ['{ type: rotating, secret_file: s, knock_ports: 41000-41999/udp, length: 9, protects: [22/tcp] }', /length: 9 is out of range: 2..8/],
    ['{ type: rotating, secret_file: s, knock_ports: 41000-41999/udp, window: 1s, protects: [22/tcp] }', /window: 1s is out of range: 5s..1h/],
    ['{ type: signed, port: 1/udp, clients: {}, protects: [22/tcp] }', /lists no client/],
    ['{ type: payload, knock: icmp, payload: "hex:abc", protects: [22/tcp] }', /is not hex/],
    ['{ type: payload, knock: icmp, payload: "012345678901234567890123456789012", protects: [22/tcp] }', /33 bytes: a payload prefix has at most 32/],
    ['{ type: knockd, protects: [22/tcp] }', /is not a door type/],
  ];
  for (const [door, re] of cases) {
    const errs = errorsOf(base(door));
    assert.ok(errs.some((e) => re.test(e)), `${door}: ${errs.join(' | ')}`);
  }
});

test('knock ports of the new types are never protected nor shared with another door', () => {
  const errs = errorsOf(`interfaces: [lo]
doors:
  a: { type: rotating, secret_file: s, knock_ports: 41000-41999/udp, protects: [41500/udp] }
  b: { type: spa, port: 41200/udp, key_file: k, protects: [22/tcp] }
  c: { sequence: [41300/udp, 7000/tcp], protects: [23/tcp] }
`);
  assert.ok(errs.some((e) => /door a knocks on 41000-41999\/udp, but door a protects ports of it/.test(e)), errs.join('\n'));
  assert.ok(errs.some((e) => /door a knocks on 41000-41999\/udp, which overlaps 41200\/udp of door b/.test(e)), errs.join('\n'));
  assert.ok(errs.some((e) => /overlaps 41300\/udp of door c/.test(e)), errs.join('\n'));
});

function writeKey(name: string, text: string, mode: number): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, mode);
  return p;
}

test('key files: read relative to the config, refused when others can read them, never echoed', async () => {
  const spaHex = '00112233445566778899aabbccddeeff';
  writeKey('spa.key', spaHex + '\n', 0o600);
  writeKey('rot.secret', 'ab'.repeat(32), 0o600);
  const { writeKeyPair } = await import('../../src/knock/keys.js');
  await writeKeyPair(join(dir, 'alice'), { force: true });
  writeFileSync(join(dir, 'alice.pub.txt'), '');
  const cfgPath = join(dir, 'k.yaml');
  writeFileSync(cfgPath, ALL);
  const cfg = { ...parseConfigText(ALL, cfgPath), file: cfgPath };
  const s = await loadDoorSecrets(cfg);
  assert.deepEqual(s.keys.get('spa'), Buffer.from(spaHex, 'hex'));
  assert.equal(s.keys.get('rot')?.length, 32);
  assert.equal(s.clients.get('sig')?.[0]?.name, 'alice');

  chmodSync(join(dir, 'spa.key'), 0o644);
  await assert.rejects(loadDoorSecrets(cfg), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /doors\.spa\.key_file/);
    assert.match(err.message, /chmod 600/);
    assert.doesNotMatch(err.message, new RegExp(spaHex));
    return true;
  });
  chmodSync(join(dir, 'spa.key'), 0o600);
});

const NOW = { wallMs: 1_800_000_000_000, monoNs: 5_000_000_000n };
const secret = Buffer.alloc(32, 7);
const spaKey = Buffer.alloc(16, 9);

function slotsOfPlan(slots: ReturnType<typeof planGeneration>['slots']): SlotState[] {
  // Through the codec, as the kernel would give them back.
  return slots.map((d) => ({ door: decodeDoor(encodeDoor(d)), allow: null }));
}

test('planGeneration: rotating doors hold the current and the previous window, one slot each', () => {
  const cfg = parseConfigText(ALL);
  const plan = planGeneration([], cfg.doors, { secrets: new Map([['rot', secret], ['spa', spaKey]]), clock: NOW });
  const rot = plan.doors.find((d) => d.config.name === 'rot')!;
  const k = decodeDoor(encodeDoor(rot.kdoor));
  const w = windowOf(NOW.wallMs, 60_000);
  assert.equal(k.type, DOOR_TYPE.ROTATING);
  assert.equal(k.doorId, doorId('rot'));
  for (const x of [w - 1n, w]) {
    const s = Number(x & 1n) as 0 | 1;
    assert.equal(k.win[s], x);
    assert.deepEqual(rotatingSteps(k, s).map((p) => p.port), rotatingSequence(secret, 'rot', x, { first: 41000, last: 41999 }, 3));
    const endMs = Number(x + 2n) * 60_000;
    assert.equal(k.validUntilNs[s], NOW.monoNs + BigInt(endMs - NOW.wallMs) * 1_000_000n);
  }
  // every port of the range knocks for the rotating door's slot, and nothing else does
  const bit = 1 << rot.slot;
  const info = (proto: number, port: number) => decodePortInfo(plan.ports, (proto * KG.PORTS + port) * 8);
  assert.equal(info(PROTO.UDP, 41000).knockDoors & bit, bit);
  assert.equal(info(PROTO.UDP, 41999).knockDoors & bit, bit);
  assert.equal(info(PROTO.UDP, 42000).knockDoors & bit, 0);
  assert.deepEqual(plan.liveWindows.map((l) => l.window).sort(), [w - 1n, w].sort());

  // single-packet doors: their port carries single_doors, ICMP payload doors the ICMP mask
  const spa = plan.doors.find((d) => d.config.name === 'spa')!;
  assert.equal(info(PROTO.UDP, 62201).singleDoors, 1 << spa.slot);
  assert.deepEqual(spa.kdoor.key, spaKey);
  const ping = plan.doors.find((d) => d.config.name === 'ping')!;
  assert.equal(plan.icmpDoors, 1 << ping.slot);

  // the next window: the window both hold keeps its sequence and the epoch stays
  const later = planGeneration(slotsOfPlan(plan.slots), cfg.doors, { secrets: new Map([['rot', secret], ['spa', spaKey]]), clock: { wallMs: NOW.wallMs + 60_000, monoNs: NOW.monoNs + 60_000_000_000n } });
  const rot2 = later.doors.find((d) => d.config.name === 'rot')!;
  assert.equal(rot2.rulesChanged, false);
  assert.equal(rot2.kdoor.win[Number((w + 1n) & 1n)], w + 1n);
  assert.equal(rot2.kdoor.win[Number(w & 1n)], w);

  // a new secret changes the sequences of the same windows: the epoch moves on
  const rekeyed = planGeneration(slotsOfPlan(plan.slots), cfg.doors, { secrets: new Map([['rot', Buffer.alloc(32, 8)], ['spa', spaKey]]), clock: NOW });
  assert.equal(rekeyed.doors.find((d) => d.config.name === 'rot')!.rulesChanged, true);
});

test('the CLI path: doors read back from the kernel keep their keys and windows without the files', () => {
  const cfg = parseConfigText(ALL);
  const plan = planGeneration([], cfg.doors, { secrets: new Map([['rot', secret], ['spa', spaKey]]), clock: NOW });
  const prev = slotsOfPlan(plan.slots);
  const live = prev.filter((s) => (s.door.flags & 1) !== 0).map((s) => doorConfigOf(s.door, s.allow));
  // rendered as config and parsed again, as `knockgate door set` does
  const reparsed = parseConfigText(doorsAsConfigText(live));
  assert.deepEqual(reparsed.doors.map((d) => d.type).sort(), ['payload', 'payload', 'rotating', 'sequence', 'signed', 'spa']);
  const again = planGeneration(prev, reparsed.doors, { clock: NOW });
  for (const d of again.doors) {
    const before = plan.doors.find((p) => p.config.name === d.config.name)!;
    assert.equal(d.rulesChanged, false, `door ${d.config.name} kept its rules`);
    assert.deepEqual(decodeDoor(encodeDoor(d.kdoor)), decodeDoor(encodeDoor(before.kdoor)), d.config.name);
  }
  assert.doesNotMatch(doorsAsConfigText(live), new RegExp(spaKey.toString('hex')));
});
