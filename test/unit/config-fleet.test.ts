// The fleet section and per-door on_partition: parsing, defaults, and file:line:col errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkConfigText, formatIssue } from '../../src/config/index.js';
import { defaultHostId, normalizeEndpoint } from '../../src/config/fleet.js';
import { loadFleetCredentials } from '../../src/fleet/credentials.js';
import { ConfigError } from '../../src/config/errors.js';

const doors = `interfaces: [eth0]
doors:
  ssh:
    sequence: [7000/tcp, 8000/udp, 9000/tcp]
    protects: [22/tcp]
`;

function errors(text: string): string[] {
  return checkConfigText(text, 'k.yaml').errors.map(formatIssue);
}

test('no fleet section: fleet is null and nothing else changes', () => {
  const r = checkConfigText(doors, 'k.yaml');
  assert.equal(r.config?.fleet, null);
  assert.equal(r.config?.doors[0]?.onPartition, 'local');
});

test('a full fleet section with defaults', () => {
  const r = checkConfigText(`${doors}fleet:
  endpoints: [198.18.0.1:2379, "http://198.18.0.2:2379/"]
  prefix: /knockgate/prod
`, 'k.yaml');
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.config?.fleet, {
    endpoints: ['http://198.18.0.1:2379', 'http://198.18.0.2:2379'],
    prefix: '/knockgate/prod/',
    hostId: defaultHostId(),
    tls: null,
    auth: null,
    cooldowns: 'local',
  });
});

test('TLS, auth, host id and shared cooldowns', () => {
  const r = checkConfigText(`${doors}fleet:
  endpoints: [https://etcd1.example:2379]
  prefix: /kg/
  host_id: edge-1.eu
  ca_file: ca.pem
  cert_file: c.pem
  key_file: c.key
  username: kg
  password_file: pw
  cooldowns: shared
`, 'k.yaml');
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.config?.fleet?.tls, { caFile: 'ca.pem', certFile: 'c.pem', keyFile: 'c.key' });
  assert.deepEqual(r.config?.fleet?.auth, { username: 'kg', passwordFile: 'pw' });
  assert.equal(r.config?.fleet?.hostId, 'edge-1.eu');
  assert.equal(r.config?.fleet?.cooldowns, 'shared');
});

test('errors name file, line, column and key, with what to do', () => {
  const base = `${doors}fleet:
  endpoints: [https://198.18.0.1:2379]
  prefix: /kg/
`;
  const cases: [string, RegExp][] = [
    [`${doors}fleet:\n  prefix: /kg/\n`, /^k\.yaml:6:1: fleet\.endpoints: required key is missing/],
    [`${doors}fleet:\n  endpoints: [https://198.18.0.1:2379]\n`, /fleet\.prefix: required key is missing/],
    [`${base}  cooldown: shared\n`, /^k\.yaml:9:3: fleet\.cooldown: unknown key "cooldown": did you mean "cooldowns"\?/],
    [`${base}  cooldowns: global\n`, /fleet\.cooldowns: "global" is not a cooldown sharing/],
    [`${doors}fleet:\n  endpoints: [https://a:b@198.18.0.1:2379]\n  prefix: /kg/\n`, /fleet\.endpoints\[0\]: .*credentials in the URL/],
    [`${doors}fleet:\n  endpoints: [198.18.0.1]\n  prefix: /kg/\n`, /fleet\.endpoints\[0\]: .*has no port/],
    [`${doors}fleet:\n  endpoints: [http://198.18.0.1:2379]\n  prefix: /kg/\n  ca_file: ca.pem\n`, /fleet\.endpoints: TLS files are given but http:\/\/198\.18\.0\.1:2379 is plain http:\/\//],
    [`${base}  cert_file: c.pem\n`, /fleet\.cert_file: a client certificate needs both cert_file and key_file/],
    [`${base}  password_file: pw\n`, /fleet\.username: password_file is given without username/],
    [`${base}  host_id: "-x"\n`, /fleet\.host_id: "-x" is not a host id/],
    [`${doors}fleet:\n  endpoints: [https://198.18.0.1:2379]\n  prefix: kg\n`, /fleet\.prefix: "kg": a prefix starts with "\/"/],
    [`${doors}fleet: []\n`, /fleet: expected a mapping/],
  ];
  for (const [text, want] of cases) {
    const e = errors(text);
    assert.ok(e.some((l) => want.test(l)), `${want}: got ${JSON.stringify(e)}`);
  }
});

test('on_partition: one-time doors only; a warning without a fleet section', () => {
  const rot = `interfaces: [eth0]
doors:
  rot:
    type: rotating
    secret_file: s
    knock_ports: 40000-40999/udp
    protects: [22/tcp]
    on_partition: closed
`;
  const r = checkConfigText(rot, 'k.yaml');
  assert.deepEqual(r.errors, []);
  assert.equal(r.config?.doors[0]?.onPartition, 'closed');
  assert.match(r.warnings.map(formatIssue).join('\n'), /k\.yaml:8:5: doors\.rot\.on_partition: on_partition applies in fleet mode only/);
  const e = errors(`${doors}    on_partition: closed\n`);
  assert.ok(e.some((l) => /^k\.yaml:6:5: doors\.ssh\.on_partition: on_partition applies to one-time doors/.test(l)), JSON.stringify(e));
  const bad = errors(rot.replace('closed', 'open'));
  assert.ok(bad.some((l) => /"open" is not a partition policy/.test(l)), JSON.stringify(bad));
});

test('endpoints normalise', () => {
  assert.equal(normalizeEndpoint('198.18.0.1:2379'), 'http://198.18.0.1:2379');
  assert.equal(normalizeEndpoint('https://[2001:db8::1]:2379'), 'https://[2001:db8::1]:2379');
  assert.throws(() => normalizeEndpoint('unix:///run/etcd.sock'), /http:\/\/ or https:\/\//);
});

test('credentials: a password file readable by others is refused; the password is never in the message', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kg-fleet-cred-'));
  try {
    const text = `${doors}fleet:\n  endpoints: [http://198.18.0.1:2379]\n  prefix: /kg/\n  username: kg\n  password_file: pw\n`;
    writeFileSync(join(dir, 'pw'), 'hunter2-secret\n', { mode: 0o644 });
    const r = checkConfigText(text, join(dir, 'k.yaml'), join(dir, 'k.yaml'));
    await assert.rejects(loadFleetCredentials(r.config!, r.config!.fleet!), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /fleet\.password_file/);
      assert.ok(!err.message.includes('hunter2'));
      return true;
    });
    writeFileSync(join(dir, 'pw'), 'hunter2-secret\n', { mode: 0o600 });
    rmSync(join(dir, 'pw'));
    writeFileSync(join(dir, 'pw'), 'hunter2-secret\n', { mode: 0o600 });
    const c = await loadFleetCredentials(r.config!, r.config!.fleet!);
    assert.deepEqual(c.auth, { username: 'kg', password: 'hunter2-secret' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
