// Loading config files: good fixtures load to the exact model, bad fixtures give the exact
// messages at the exact positions. Fixtures live in the source tree (test/fixtures/config/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ConfigError, formatIssue } from '../../src/config/errors.js';
import { checkConfigText, loadConfigFile, parseConfigText } from '../../src/config/load.js';
import { DEFAULTS, type DoorConfig, type GateConfig } from '../../src/config/model.js';

const fixtures = new URL('../../../test/fixtures/config/', import.meta.url);
const fixturePath = (name: string): string => fileURLToPath(new URL(name, fixtures));
const examplePath = fileURLToPath(new URL('../../../config/knockgate.example.yaml', import.meta.url));

/** Parses a fixture with its bare name as the file name, so messages read "bad-x.yaml:3:5: ...". */
function parseFixture(name: string): GateConfig {
  return parseConfigText(readFileSync(fixturePath(name), 'utf8'), name);
}

function errorsOf(name: string): string[] {
  try {
    parseFixture(name);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `${name}: expected a ConfigError, got ${String(err)}`);
    assert.equal(err.message, err.format());
    return err.format().split('\n');
  }
  assert.fail(`${name} loaded without errors`);
}

const mapped = (a: number, b: number, c: number, d: number): Buffer => Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]);

test('the minimal config loads with every default', () => {
  const ssh: DoorConfig = {
    name: 'ssh',
    type: 'sequence',
    sequence: [{ port: 7000, proto: 'tcp' }, { port: 8000, proto: 'udp' }, { port: 9000, proto: 'tcp' }],
    protects: [{ first: 22, last: 22, proto: 'tcp' }],
    allowFrom: null,
    stepTimeoutMs: 5000,
    sequenceTimeoutMs: 15000,
    openForMs: 30000,
    flowIdleMs: 600_000,
    scope: 'source',
    onPartition: 'local',
  };
  assert.deepEqual(parseFixture('good-minimal.yaml'), {
    file: 'good-minimal.yaml',
    interfaces: [{ name: 'eth0', mode: 'auto', attach: 'dispatcher', priority: 10 }],
    pinPath: '/sys/fs/bpf/knockgate',
    keep: false,
    log: { level: 'info', denialsPerSecond: 20, knockEventsPerSecond: 100 },
    limits: { sources: 65536, flows: 65536, eventRingBytes: 262144, firstKnockFilterBytes: 8 * 1024 * 1024 },
    bruteForce: { maxFailures: 5, failureWindowMs: 60_000, cooldownMs: 300_000 },
    doors: [ssh],
    fleet: null,
    warnings: [],
  } satisfies GateConfig);
});

test('a config with every key loads to the exact model', () => {
  assert.deepEqual(parseFixture('good-full.yaml'), {
    file: 'good-full.yaml',
    interfaces: [
      { name: 'eth0', mode: 'generic', attach: 'dispatcher', priority: 20 },
      { name: 'eth1', mode: 'native', attach: 'dispatcher', priority: 5 },
      { name: 'wg0', mode: 'generic', attach: 'link', priority: 20 },
    ],
    pinPath: '/sys/fs/bpf/kg-test',
    keep: true,
    log: { level: 'debug', denialsPerSecond: 0, knockEventsPerSecond: 5 },
    limits: { sources: 1024, flows: 2048, eventRingBytes: 1048576, firstKnockFilterBytes: 1024 * 1024 },
    bruteForce: { maxFailures: 3, failureWindowMs: 120_000, cooldownMs: 3_600_000 },
    doors: [
      {
        name: 'ssh',
        type: 'sequence',
        sequence: [{ port: 7000, proto: 'tcp' }, { port: 8000, proto: 'udp' }, { port: 7000, proto: 'tcp' }, { port: 9000, proto: 'tcp' }],
        protects: [{ first: 22, last: 22, proto: 'tcp' }, { first: 2222, last: 2222, proto: 'tcp' }],
        allowFrom: [
          { family: 4, addr: mapped(198, 18, 0, 0), prefix: 15, mappedPrefix: 111, text: '198.18.0.0/15' },
          { family: 6, addr: Buffer.from('20010db8000000000000000000000000', 'hex'), prefix: 32, mappedPrefix: 32, text: '2001:db8::/32' },
          { family: 4, addr: mapped(203, 0, 113, 7), prefix: 32, mappedPrefix: 128, text: '203.0.113.7/32' },
          { family: 4, addr: mapped(192, 0, 2, 0), prefix: 24, mappedPrefix: 120, text: '192.0.2.0/24' },
        ],
        stepTimeoutMs: 500,
        sequenceTimeoutMs: 60_000,
        openForMs: 86_400_000,
        flowIdleMs: 7_200_000,
        scope: 'flow-only',
        onPartition: 'local',
      },
      {
        name: 'web-admin_2',
        type: 'sequence',
        sequence: [{ port: 7443, proto: 'tcp' }, { port: 8443, proto: 'udp' }],
        protects: [{ first: 443, last: 443, proto: 'tcp' }, { first: 60000, last: 61000, proto: 'udp' }],
        allowFrom: null,
        stepTimeoutMs: 2000,
        sequenceTimeoutMs: 2000,
        openForMs: 5_400_000,
        flowIdleMs: 1_800_000,
        scope: 'source',
        onPartition: 'local',
      },
      {
        name: '42',
        type: 'sequence',
        sequence: [{ port: 4242, proto: 'udp' }],
        protects: [{ first: 22, last: 22, proto: 'tcp' }],
        allowFrom: null,
        stepTimeoutMs: 2000,
        sequenceTimeoutMs: 60_000,
        openForMs: 5_400_000,
        flowIdleMs: 1_800_000,
        scope: 'source',
        onPartition: 'local',
      },
    ],
    fleet: null,
    warnings: [
      { file: 'good-full.yaml', line: 49, col: 15, path: 'doors.42.sequence', message: 'a one-step sequence is opened by any scan of that port' },
    ],
  } satisfies GateConfig);
});

test('the example config is valid and matches the embedded defaults', async () => {
  const config = await loadConfigFile(examplePath);
  assert.equal(config.file, examplePath);
  assert.deepEqual(config.warnings, []);
  assert.equal(config.pinPath, DEFAULTS.pinPath);
  assert.equal(config.keep, DEFAULTS.keep);
  assert.deepEqual(config.log, DEFAULTS.log);
  assert.deepEqual(config.limits, DEFAULTS.limits);
  assert.deepEqual(config.bruteForce, DEFAULTS.bruteForce);
  const ssh = config.doors.find((d) => d.name === 'ssh');
  assert.ok(ssh);
  assert.equal(ssh.stepTimeoutMs, DEFAULTS.stepTimeoutMs);
  assert.equal(ssh.sequenceTimeoutMs, DEFAULTS.sequenceTimeoutMs);
  assert.equal(ssh.openForMs, DEFAULTS.openForMs);
  assert.equal(ssh.flowIdleMs, DEFAULTS.flowIdleMs);
  assert.equal(ssh.scope, DEFAULTS.scope);
  assert.deepEqual(config.interfaces, [
    { name: 'eth0', mode: 'auto', attach: DEFAULTS.attach, priority: DEFAULTS.xdpPriority },
    { name: 'eth1', mode: 'generic', attach: DEFAULTS.attach, priority: DEFAULTS.xdpPriority },
  ]);
  // Every key the loader knows appears in the example.
  const text = readFileSync(examplePath, 'utf8');
  for (const key of ['interfaces', 'xdp_mode', 'attach', 'xdp_priority', 'pin_path', 'keep', 'log', 'level', 'denials_per_second', 'knock_events_per_second',
    'limits', 'sources', 'flows', 'event_ring', 'first_knock_filter', 'brute_force', 'max_failures', 'failure_window', 'cooldown',
    'defaults', 'step_timeout', 'sequence_timeout', 'open_for', 'flow_idle', 'doors', 'sequence', 'protects', 'allow_from', 'scope',
    'name']) {
    assert.match(text, new RegExp(`^\\s*(- )?${key}:`, 'm'), key);
  }
});

test('loadConfigFile names the file as given and stores the absolute path', async () => {
  await assert.rejects(loadConfigFile(fixturePath('bad-empty-allow.yaml')), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.issues, [{
      file: fixturePath('bad-empty-allow.yaml'), line: 6, col: 17, path: 'doors.ssh.allow_from',
      message: '[] would let nobody knock; remove the key to allow any source',
    }]);
    return true;
  });
  await assert.rejects(loadConfigFile('/nonexistent/knockgate.yaml'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.format(), '/nonexistent/knockgate.yaml: cannot read the config file: no such file');
    return true;
  });
});

test('text without a file name', () => {
  const config = parseConfigText('interfaces: [eth0]\ndoors: { a: { sequence: [1/tcp, 3/tcp], protects: [5/tcp] } }\n');
  assert.equal(config.file, null);
  assert.throws(() => parseConfigText('interfaces: []\n'), {
    message: '<config>:1:1: doors: required key is missing: define at least one door, see config/knockgate.example.yaml',
  });
  // interfaces: [] is the packaged config's inert state: valid, with a warning that nothing is guarded.
  const inert = parseConfigText('interfaces: []\ndoors: { a: { sequence: [1/tcp, 3/tcp], protects: [5/tcp] } }\n');
  assert.deepEqual(inert.interfaces, []);
  assert.deepEqual(inert.warnings.map(formatIssue), [
    '<config>:1:13: interfaces: [] is empty: the gate is attached to no interface and guards nothing; list the interfaces to guard, e.g. [eth0]',
  ]);
});

test('checkConfigText reports without throwing', () => {
  const bad = checkConfigText('interfaces: [eth0]\nkeep: 1\n', 'k.yaml');
  assert.equal(bad.config, null);
  assert.deepEqual(bad.errors.map((e) => `${e.line}:${e.col} ${e.path}`), ['1:1 doors', '2:7 keep']);
  const good = checkConfigText(readFileSync(fixturePath('good-minimal.yaml'), 'utf8'), 'k.yaml');
  assert.deepEqual(good.errors, []);
  assert.equal(good.config?.doors.length, 1);
});

// Each bad fixture with every message it must produce, in order.
const BAD: Record<string, string[]> = {
  'bad-syntax.yaml': [
    'bad-syntax.yaml:5:5: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ]',
  ],
  'bad-unknown-key.yaml': [
    'bad-unknown-key.yaml:1:1: interface: unknown key "interface": did you mean "interfaces"?',
    'bad-unknown-key.yaml:6:5: doors.ssh.step_timout: unknown key "step_timout": did you mean "step_timeout"?',
    'bad-unknown-key.yaml:7:5: doors.ssh.colour: unknown key "colour": expected type, sequence, protects, allow_from, scope, step_timeout, sequence_timeout, open_for, flow_idle, secret_file, knock_ports, length, window, port, key_file, max_skew, clients, knock, payload or on_partition',
  ],
  'bad-duration.yaml': [
    'bad-duration.yaml:3:17: defaults.step_timeout: "5 seconds" is not a duration: write a number and a unit, e.g. 500ms, 5s, 2m, 1h30m',
    'bad-duration.yaml:4:21: defaults.sequence_timeout: "1.5s" is not a duration: use whole numbers, e.g. 1500ms rather than 1.5s',
    'bad-duration.yaml:5:13: defaults.open_for: 0s is too short: a duration must be more than 0',
    'bad-duration.yaml:10:15: doors.ssh.open_for: 25h is too long: at most 24h',
    'bad-duration.yaml:11:19: doors.ssh.step_timeout: "1m1h" is not a duration: write each unit once, largest first, e.g. 500ms, 5s, 2m, 1h30m',
    'bad-duration.yaml:12:23: doors.ssh.sequence_timeout: "10S" is not a duration: "S" is not a unit (units are lower case: s), e.g. 500ms, 5s, 2m, 1h30m',
  ],
  'bad-bare-number.yaml': [
    'bad-bare-number.yaml:6:15: doors.ssh.open_for: 30 has no unit: write 30s for seconds or 30ms for milliseconds (units: ms, s, m, h)',
  ],
  'bad-step-proto.yaml': [
    'bad-step-proto.yaml:4:26: doors.ssh.sequence[1]: "8000/icmp" is not a knock step: write PORT/tcp or PORT/udp, e.g. 8000/udp',
    'bad-step-proto.yaml:4:37: doors.ssh.sequence[2]: 9000 has no protocol: write 9000/tcp or 9000/udp',
    'bad-step-proto.yaml:5:16: doors.ssh.protects[0]: "22/sctp" is not a port or port range: write PORT/PROTO or FIRST-LAST/PROTO with PROTO tcp or udp, e.g. 22/tcp or 60000-61000/udp',
  ],
  'bad-ports.yaml': [
    'bad-ports.yaml:4:16: doors.ssh.sequence[0]: "0/tcp": port 0 is out of range: ports are 1..65535',
    'bad-ports.yaml:4:23: doors.ssh.sequence[1]: "70000/udp": port 70000 is out of range: ports are 1..65535',
    'bad-ports.yaml:4:34: doors.ssh.sequence[2]: "7000-7001/tcp" is a range: a knock step is a single port, e.g. 7000/tcp',
    'bad-ports.yaml:5:24: doors.ssh.protects[1]: "61000-60000/udp" is backwards: write 60000-61000/udp',
    'bad-ports.yaml:5:41: doors.ssh.protects[2]: "1-65536/tcp": port 65536 is out of range: ports are 1..65535',
  ],
  'bad-knock-protected.yaml': [
    'bad-knock-protected.yaml:7:16: doors.web.sequence[0]: 22/tcp is a knock step of door web, but doors ssh and web protect it: knocks on a protected port are dropped before they count; pick a port no door protects',
    'bad-knock-protected.yaml:7:24: doors.web.sequence[1]: 60500/udp is a knock step of door web, but door ssh protects it: knocks on a protected port are dropped before they count; pick a port no door protects',
  ],
  'bad-timeout-order.yaml': [
    'bad-timeout-order.yaml:8:19: doors.ssh.step_timeout: step_timeout 20s is longer than sequence_timeout 10s (from defaults.sequence_timeout): the time allowed between two knocks cannot exceed the time allowed for the whole sequence',
    'bad-timeout-order.yaml:12:23: doors.web.sequence_timeout: sequence_timeout 3s is shorter than step_timeout 5s (the default): the time allowed between two knocks cannot exceed the time allowed for the whole sequence',
  ],
  'bad-repeated-step.yaml': [
    'bad-repeated-step.yaml:4:36: doors.ssh.sequence[2]: 8000/udp repeats the step before it: the gate takes a repeated knock for a retransmission, so this sequence could never complete',
  ],
  'bad-too-many-doors.yaml': [
    'bad-too-many-doors.yaml:51:3: doors: 17 doors: at most 16 are supported',
  ],
  'bad-too-many-steps.yaml': [
    'bad-too-many-steps.yaml:4:176: doors.ssh.sequence: 17 steps: a sequence has at most 16',
  ],
  'bad-cidr.yaml': [
    'bad-cidr.yaml:7:9: doors.ssh.allow_from[0]: "198.18.0.0/33" has a bad prefix length "33": an IPv4 prefix is 0..32',
    'bad-cidr.yaml:8:9: doors.ssh.allow_from[1]: "10.1.2" is not an IP address: write IPv4 addresses as four decimal numbers, e.g. 198.18.0.1',
    'bad-cidr.yaml:9:9: doors.ssh.allow_from[2]: "010.0.0.1" is not an IP address: leading zeros are ambiguous (octal or decimal?): write 10.0.0.1',
    'bad-cidr.yaml:10:9: doors.ssh.allow_from[3]: "fe80::1%eth0" is not an IP address: zone indexes (%eth0) are not supported',
    'bad-cidr.yaml:11:9: doors.ssh.allow_from[4]: "2001:db8::/129" has a bad prefix length "129": an IPv6 prefix is 0..128',
    'bad-cidr.yaml:12:9: doors.ssh.allow_from[5]: "example.com" is not an IPv4 or IPv6 address',
  ],
  'bad-host-bits.yaml': [
    'bad-host-bits.yaml:6:18: doors.ssh.allow_from[0]: 198.18.0.1/15 has host bits set: did you mean 198.18.0.0/15?',
    'bad-host-bits.yaml:6:33: doors.ssh.allow_from[1]: 2001:db8::1/32 has host bits set: did you mean 2001:db8::/32?',
  ],
  'bad-empty-allow.yaml': [
    'bad-empty-allow.yaml:6:17: doors.ssh.allow_from: [] would let nobody knock; remove the key to allow any source',
  ],
  'bad-missing-interfaces.yaml': [
    'bad-missing-interfaces.yaml:2:1: interfaces: required key is missing: list the interfaces to guard, e.g. interfaces: [eth0]',
    'bad-missing-interfaces.yaml:4:3: doors.ssh.sequence: required key is missing: the knock sequence, e.g. sequence: [7000/tcp, 8000/udp, 9000/tcp]',
  ],
  'bad-interface-name.yaml': [
    'bad-interface-name.yaml:3:5: interfaces[1]: "eth0:1" is not an interface name: it contains \':\'',
    'bad-interface-name.yaml:4:5: interfaces[2]: "eth 1" is not an interface name: it contains whitespace',
    'bad-interface-name.yaml:5:5: interfaces[3]: "a-very-long-interface-name" is not an interface name: it is 26 characters long; Linux allows at most 15',
    'bad-interface-name.yaml:6:5: interfaces[4]: "br/0" is not an interface name: it contains \'/\'',
    'bad-interface-name.yaml:7:5: interfaces[5]: "eth0" is already listed as interfaces[0]',
    'bad-interface-name.yaml:8:29: interfaces[6].xdp_mode: "fast" is not an XDP mode: expected one of native, generic, auto',
    'bad-interface-name.yaml:9:5: interfaces[7].name: required key is missing: the interface name, e.g. { name: eth1, xdp_mode: generic }',
  ],
  'bad-door-name.yaml': [
    'bad-door-name.yaml:3:3: doors["my door"]: "my door" is not a door name: use letters, digits, "_" and "-", starting with a letter or digit',
    'bad-door-name.yaml:6:3: doors._ssh: "_ssh" is not a door name: use letters, digits, "_" and "-", starting with a letter or digit',
    'bad-door-name.yaml:9:3: doors.a-door-name-that-is-far-too-long-x: "a-door-name-that-is-far-too-long-x" is not a door name: it is 34 characters long; at most 31',
  ],
  'bad-hardening.yaml': [
    'bad-hardening.yaml:3:28: log.knock_events_per_second: -1 is out of range: 0..100000',
    'bad-hardening.yaml:5:10: limits.flows: 10 is out of range: 64..16777216',
    'bad-hardening.yaml:6:23: limits.first_knock_filter: 3MiB is not a power of two: try 2MiB or 4MiB',
    'bad-hardening.yaml:8:17: brute_force.max_failures: 1001 is out of range: 0..1000',
    'bad-hardening.yaml:9:19: brute_force.failure_window: 60 has no unit: write 60s for seconds or 60ms for milliseconds (units: ms, s, m, h)',
    'bad-hardening.yaml:10:13: brute_force.cooldown: 0s is too short: a duration must be more than 0',
    'bad-hardening.yaml:11:3: brute_force.max_fails: unknown key "max_fails": expected max_failures, failure_window or cooldown',
    'bad-hardening.yaml:13:14: defaults.flow_idle: 25h is too long: at most 24h',
    'bad-hardening.yaml:18:12: doors.ssh.scope: "flowonly" is not a grant scope: did you mean "flow-only"?',
    'bad-hardening.yaml:19:5: doors.ssh.flow_idle: has no value: remove the key to use the default (10m)',
  ],
  'bad-types.yaml': [
    'bad-types.yaml:1:13: interfaces: expected a list, e.g. [eth0], found the string "eth0"',
    'bad-types.yaml:2:11: xdp_mode: "Native" is not an XDP mode: did you mean "native"?',
    'bad-types.yaml:3:11: pin_path: "sys/fs/bpf/knockgate" is not an absolute path: write e.g. /sys/fs/bpf/knockgate',
    'bad-types.yaml:4:7: keep: expected true or false, found the string "yes"',
    'bad-types.yaml:6:10: log.level: "warning" is not a log level: did you mean "warn"?',
    'bad-types.yaml:7:23: log.denials_per_second: expected a whole number 0..100000, found the number 1.5',
    'bad-types.yaml:9:12: limits.sources: 32 is out of range: 64..16777216',
    'bad-types.yaml:10:15: limits.event_ring: 300KiB is not a power of two: try 256KiB or 512KiB',
    'bad-types.yaml:13:15: doors.ssh.sequence: expected a list, e.g. [7000/tcp, 8000/udp, 9000/tcp], found the string "7000/tcp"',
  ],
  'bad-duplicate-key.yaml': [
    'bad-duplicate-key.yaml:6:3: doors.ssh: "ssh" is set twice (first on line 3)',
  ],
  'bad-empty.yaml': [
    'bad-empty.yaml:1:1: the file is empty: a config needs at least interfaces and doors, see config/knockgate.example.yaml',
  ],
  // Many problems in one file: all are reported, in file order.
  'bad-multiple.yaml': [
    'bad-multiple.yaml:1:20: interfaces[1]: "eth0" is already listed as interfaces[0]',
    'bad-multiple.yaml:2:1: xdp_mod: unknown key "xdp_mod": did you mean "xdp_mode"?',
    'bad-multiple.yaml:3:15: log.level: "loud" is not a log level: expected one of trace, debug, info, warn, error, fatal, silent',
    'bad-multiple.yaml:4:23: limits.event_ring: "1KB" is not a size: sizes use binary units, write 1KiB',
    'bad-multiple.yaml:6:13: defaults.open_for: 30 has no unit: write 30s for seconds or 30ms for milliseconds (units: ms, s, m, h)',
    'bad-multiple.yaml:9:26: doors.ssh.sequence[1]: "8000/icmp" is not a knock step: write PORT/tcp or PORT/udp, e.g. 8000/udp',
    'bad-multiple.yaml:10:24: doors.ssh.protects[1]: "0/udp": port 0 is out of range: ports are 1..65535',
    'bad-multiple.yaml:11:18: doors.ssh.allow_from[0]: 198.18.0.1/15 has host bits set: did you mean 198.18.0.0/15?',
    'bad-multiple.yaml:12:19: doors.ssh.step_timeout: step_timeout 20s is longer than sequence_timeout 15s (the default): the time allowed between two knocks cannot exceed the time allowed for the whole sequence',
    'bad-multiple.yaml:14:15: doors.web.sequence: [] is empty: list 1..16 knock steps, e.g. [7000/tcp, 8000/udp, 9000/tcp]',
    'bad-multiple.yaml:16:17: doors.web.allow_from: [] would let nobody knock; remove the key to allow any source',
  ],
};

for (const [name, expected] of Object.entries(BAD)) {
  test(`bad config ${name}`, () => {
    assert.deepEqual(errorsOf(name), expected);
  });
}

test('issues carry file, line, col and path separately', () => {
  try {
    parseFixture('bad-step-proto.yaml');
    assert.fail('no error');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.issues[0], {
      file: 'bad-step-proto.yaml', line: 4, col: 26, path: 'doors.ssh.sequence[1]',
      message: '"8000/icmp" is not a knock step: write PORT/tcp or PORT/udp, e.g. 8000/udp',
    });
  }
});

function inline(text: string): string[] {
  const r = checkConfigText(text, 'k.yaml');
  return r.errors.map((e) => `${e.line}:${e.col}: ${e.path}: ${e.message}`);
}

const door = (extra = ''): string => `interfaces: [eth0]\ndoors:\n  ssh:\n    sequence: [7000/tcp, 8000/udp]\n    protects: [22/tcp]\n${extra}`;

test('more rules, inline', () => {
  // Two doors may protect the same port; a step may repeat when not adjacent.
  assert.deepEqual(inline(`${door()}  web:\n    sequence: [7000/tcp, 9000/udp, 7000/tcp]\n    protects: [22/tcp]\n`), []);
  // Duplicate allow_from networks are dropped quietly (after canonicalisation).
  const c = parseConfigText(door('    allow_from: [10.0.0.0/8, 10.0.0.0/8, "::ffff:10.0.0.0/104"]\n'));
  assert.deepEqual(c.doors[0]?.allowFrom?.map((x) => x.text), ['10.0.0.0/8']);
  // Sizes: too small, too large, not a number.
  assert.deepEqual(inline(`${door()}limits: { event_ring: 2KiB }\n`), ['6:23: limits.event_ring: 2KiB is out of range: 4KiB..256MiB']);
  assert.deepEqual(inline(`${door()}limits: { event_ring: 512MiB }\n`), ['6:23: limits.event_ring: 512MiB is out of range: 4KiB..256MiB']);
  assert.deepEqual(inline(`${door()}limits: { event_ring: 4096 }\n`), []);
  // Empty values name the default.
  assert.deepEqual(inline(`${door()}xdp_mode:\n`), ['6:1: xdp_mode: has no value: remove the key to use the default (auto)']);
  assert.deepEqual(inline(`${door('    open_for:\n')}`), ['6:5: doors.ssh.open_for: has no value: remove the key to use the default (30s)']);
  // A door with nothing in it.
  assert.deepEqual(inline('interfaces: [eth0]\ndoors:\n  ssh:\n'), ['3:3: doors.ssh: door ssh is empty: it needs at least sequence and protects']);
  // No doors.
  assert.deepEqual(inline('interfaces: [eth0]\ndoors: {}\n'), ['2:8: doors: {} has no doors: define at least one']);
  // The root is not a mapping.
  assert.deepEqual(inline('- eth0\n'), ['1:1: : expected a mapping with interfaces, doors and other settings, found a list']);
  // Multiple documents.
  assert.deepEqual(inline(`${door()}---\na: 1\n`), ['6:1: : invalid YAML: the file holds more than one document (a second "---"); a config is one document']);
  // Tabs.
  assert.deepEqual(inline('interfaces: [eth0]\ndoors:\n\tssh: {}\n'), ['3:1: : invalid YAML: Tabs are not allowed as indentation']);
  // The default step_timeout against a short sequence_timeout in defaults.
  assert.deepEqual(inline(`${door()}defaults: { sequence_timeout: 2s }\n`), [
    '6:31: defaults.sequence_timeout: sequence_timeout 2s is shorter than step_timeout 5s (the default): the time allowed between two knocks cannot exceed the time allowed for the whole sequence',
  ]);
  // Too many protected entries and allow_from networks.
  const many = (n: number, f: (i: number) => string): string => `[${Array.from({ length: n }, (_, i) => f(i)).join(', ')}]`;
  assert.deepEqual(inline(`interfaces: [eth0]\ndoors:\n  ssh:\n    sequence: [7000/tcp]\n    protects: ${many(17, (i) => `${i + 1}/udp`)}\n`),
    ['5:135: doors.ssh.protects: 17 entries: a door protects at most 16 ports or ranges']);
  assert.deepEqual(inline(door(`    allow_from: ${many(257, (i) => `10.0.${i >> 8}.${i & 255}`)}\n`)).map((l) => l.replace(/^\d+:\d+/, 'L:C')),
    ['L:C: doors.ssh.allow_from: 257 networks: allow_from holds at most 256 per door']);
  // Pin path normalisation and the root.
  assert.equal(parseConfigText(door('pin_path: /sys/fs/bpf//kg/../knockgate/\n')).pinPath, '/sys/fs/bpf/knockgate');
  assert.deepEqual(inline(door('pin_path: /\n')), ['6:11: pin_path: "/" cannot hold pins: write a directory on a bpffs, e.g. /sys/fs/bpf/knockgate']);
  // Aliases are followed.
  const aliased = 'interfaces: [eth0]\ndoors:\n  a: { sequence: &s [7000/tcp, 7002/tcp], protects: [22/tcp] }\n  b: { sequence: *s, protects: [23/tcp] }\n';
  assert.deepEqual(parseConfigText(aliased).doors.map((d) => d.sequence.length), [2, 2]);
});

test('the total of allow_from networks fits the kernel allow map', () => {
  const doors = Array.from({ length: 9 }, (_, d) => {
    const nets = Array.from({ length: 240 }, (_, i) => `10.${d}.${i}.0/24`).join(', ');
    return `  d${d}:\n    sequence: [${7000 + d}/tcp]\n    protects: [22/tcp]\n    allow_from: [${nets}]\n`;
  }).join('');
  const r = checkConfigText(`interfaces: [eth0]\ndoors:\n${doors}`, 'k.yaml');
  assert.deepEqual(r.errors.map((e) => `${e.line}:${e.col}: ${e.path}: ${e.message}`), [
    "38:5: doors.d8.allow_from: the doors' allow_from lists hold 2160 networks up to here: at most 2048 in total",
  ]);
});

test('consecutive steps a port scan would walk through are refused', () => {
  const cfg = (doors: string): string => `interfaces: [eth0]\ndoors:\n${doors}`;
  // Adjacent ports, ascending and descending.
  assert.throws(() => parseConfigText(cfg('  a: { sequence: [7000/tcp, 7001/tcp], protects: [22/tcp] }\n')), {
    message:
      '<config>:3:29: doors.a.sequence[1]: 7001/tcp follows 7000/tcp right next to it: a port scan in ascending order would knock both in turn and open door a; leave an unprotected port between consecutive steps',
  });
  assert.throws(() => parseConfigText(cfg('  a: { sequence: [9000/udp, 8999/udp], protects: [22/tcp] }\n')), /8999\/udp follows 9000\/udp right next to it: a port scan in descending order/);
  // Only protected ports between two steps (protected by another door): refused too.
  assert.throws(
    () => parseConfigText(cfg('  a: { sequence: [7100/tcp, 7103/tcp], protects: [22/tcp] }\n  b: { sequence: [9000/udp], protects: [7101-7102/tcp] }\n')),
    /7103\/tcp follows 7100\/tcp with only protected ports \(7101-7102\/tcp\) between them/,
  );
  // One unprotected port between them is enough; another protocol is not in the way; a repeat
  // further apart is fine.
  assert.equal(parseConfigText(cfg('  a: { sequence: [7000/tcp, 7002/tcp], protects: [22/tcp] }\n')).doors.length, 1);
  assert.equal(parseConfigText(cfg('  a: { sequence: [7000/tcp, 7001/udp, 7002/tcp], protects: [22/tcp] }\n')).doors.length, 1);
  assert.equal(parseConfigText(cfg('  a: { sequence: [7100/tcp, 7103/tcp], protects: [7101/tcp] }\n')).doors.length, 1);
});

test('attach and xdp_priority: per interface or for all, checked', () => {
  const ifs = (text: string) => parseConfigText(text).interfaces;
  const doors = 'doors:\n  ssh:\n    sequence: [7000/tcp, 8000/udp]\n    protects: [22/tcp]\n';
  assert.deepEqual(ifs(`interfaces: [eth0]\n${doors}`), [{ name: 'eth0', mode: 'auto', attach: 'dispatcher', priority: 10 }]);
  assert.deepEqual(ifs(`interfaces: [eth0, { name: eth1, attach: dispatcher, xdp_priority: 60 }]\nattach: link\nxdp_priority: 0\n${doors}`), [
    { name: 'eth0', mode: 'auto', attach: 'link', priority: 0 },
    { name: 'eth1', mode: 'auto', attach: 'dispatcher', priority: 60 },
  ]);
  const [bad] = inline(`${door()}attach: bridge\n`);
  assert.match(bad ?? '', /^6:9: attach: "bridge" is not an attach method: expected one of dispatcher, link/);
  assert.match(inline(`${door()}xdp_priority: -1\n`)[0] ?? '', /^6:15: xdp_priority: .*-1/);
  assert.match(inline('interfaces: [{ name: eth0, xdp_priority: 4294967296 }]\ndoors:\n  ssh:\n    sequence: [7000/tcp, 8000/udp]\n    protects: [22/tcp]\n')[0] ?? '', /interfaces\[0\]\.xdp_priority: .*4294967296/);
  assert.match(inline(`${door()}xdp_priority:\n`)[0] ?? '', /xdp_priority: has no value: remove the key to use the default \(10\)/);
});
