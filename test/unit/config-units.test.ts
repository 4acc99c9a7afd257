// The pure value parsers of the config (also used by the CLI): durations, ports, sizes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkTimeout, formatDuration, MAX_DURATION_MS, parseDuration, parseTimeout } from '../../src/config/duration.js';
import { editDistance, formatIssue, suggest } from '../../src/config/errors.js';
import { formatRange, formatStep, parsePort, parsePortRange, parseStep, rangeHolds } from '../../src/config/ports.js';
import { formatSize, parseSize } from '../../src/config/size.js';

test('parseDuration reads units and combinations', () => {
  const cases: [string, number][] = [
    ['500ms', 500],
    ['5s', 5_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1h30m', 5_400_000],
    ['1m30s500ms', 90_500],
    ['24h', 86_400_000],
    ['0ms', 0],
    [' 5s ', 5_000],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

test('parseDuration: a bare number needs a unit', () => {
  assert.throws(() => parseDuration(30), { message: '30 has no unit: write 30s for seconds or 30ms for milliseconds (units: ms, s, m, h)' });
  assert.throws(() => parseDuration('30'), { message: '30 has no unit: write 30s for seconds or 30ms for milliseconds (units: ms, s, m, h)' });
});

test('parseDuration rejects what it cannot read, saying how to write it', () => {
  const cases: [string, string][] = [
    ['', '"" is not a duration: write a number and a unit, e.g. 500ms, 5s, 2m, 1h30m'],
    ['5 seconds', '"5 seconds" is not a duration: write a number and a unit, e.g. 500ms, 5s, 2m, 1h30m'],
    ['1.5s', '"1.5s" is not a duration: use whole numbers, e.g. 1500ms rather than 1.5s'],
    ['10S', '"10S" is not a duration: "S" is not a unit (units are lower case: s), e.g. 500ms, 5s, 2m, 1h30m'],
    ['3d', '"3d" is not a duration: "d" is not a unit (units are ms, s, m and h), e.g. 500ms, 5s, 2m, 1h30m'],
    ['1m1h', '"1m1h" is not a duration: write each unit once, largest first, e.g. 500ms, 5s, 2m, 1h30m'],
    ['5s5s', '"5s5s" is not a duration: write each unit once, largest first, e.g. 500ms, 5s, 2m, 1h30m'],
    ['-5s', '"-5s" is not a duration: write a number and a unit, e.g. 500ms, 5s, 2m, 1h30m'],
    ['s', '"s" is not a duration: write a number and a unit, e.g. 500ms, 5s, 2m, 1h30m'],
  ];
  for (const [text, message] of cases) assert.throws(() => parseDuration(text), { message }, text);
});

test('parseTimeout bounds durations to (0, 24h]', () => {
  assert.equal(parseTimeout('1ms'), 1);
  assert.equal(parseTimeout('24h'), MAX_DURATION_MS);
  assert.throws(() => parseTimeout('0s'), { message: '0s is too short: a duration must be more than 0' });
  assert.throws(() => parseTimeout('24h1ms'), { message: '24h1ms is too long: at most 24h' });
  assert.throws(() => checkTimeout(0), { message: '0ms is too short: a duration must be more than 0' });
});

test('formatDuration is the inverse of parseDuration', () => {
  const cases: [number, string][] = [
    [0, '0ms'],
    [1, '1ms'],
    [500, '500ms'],
    [5_000, '5s'],
    [90_000, '1m30s'],
    [90_500, '1m30s500ms'],
    [3_600_000, '1h'],
    [5_400_000, '1h30m'],
    [86_400_000, '24h'],
    [3_600_001, '1h1ms'],
  ];
  for (const [ms, text] of cases) {
    assert.equal(formatDuration(ms), text);
    assert.equal(parseDuration(text), ms);
  }
  for (let ms = 0; ms < 200_000_000; ms = ms * 3 + 7) assert.equal(parseDuration(formatDuration(ms)), ms, String(ms));
  assert.throws(() => formatDuration(-1), RangeError);
  assert.throws(() => formatDuration(1.5), RangeError);
});

test('parseStep reads PORT/tcp and PORT/udp', () => {
  assert.deepEqual(parseStep('7000/tcp'), { port: 7000, proto: 'tcp' });
  assert.deepEqual(parseStep('8000/udp'), { port: 8000, proto: 'udp' });
  assert.deepEqual(parseStep('1/UDP'), { port: 1, proto: 'udp' });
  assert.deepEqual(parseStep('65535/tcp'), { port: 65535, proto: 'tcp' });
});

test('parseStep errors', () => {
  const cases: [string | number, string][] = [
    ['8000/icmp', '"8000/icmp" is not a knock step: write PORT/tcp or PORT/udp, e.g. 8000/udp'],
    ['ssh/tcp', '"ssh/tcp" is not a port: ports are 1..65535'],
    ['0/tcp', '"0/tcp": port 0 is out of range: ports are 1..65535'],
    ['70000/udp', '"70000/udp": port 70000 is out of range: ports are 1..65535'],
    ['7000', '"7000" has no protocol: write 7000/tcp or 7000/udp'],
    [7000, '7000 has no protocol: write 7000/tcp or 7000/udp'],
    ['7000-7001/tcp', '"7000-7001/tcp" is a range: a knock step is a single port, e.g. 7000/tcp'],
    ['tcp', '"tcp" is not a knock step: write PORT/tcp or PORT/udp, e.g. 7000/udp'],
  ];
  for (const [text, message] of cases) assert.throws(() => parseStep(text), { message }, String(text));
});

test('parsePortRange reads single ports and inclusive ranges', () => {
  assert.deepEqual(parsePortRange('22/tcp'), { first: 22, last: 22, proto: 'tcp' });
  assert.deepEqual(parsePortRange('60000-61000/udp'), { first: 60000, last: 61000, proto: 'udp' });
  assert.deepEqual(parsePortRange('1-65535/tcp'), { first: 1, last: 65535, proto: 'tcp' });
  assert.deepEqual(parsePortRange('80-80/tcp'), { first: 80, last: 80, proto: 'tcp' });
});

test('parsePortRange errors', () => {
  const cases: [string | number, string][] = [
    ['61000-60000/udp', '"61000-60000/udp" is backwards: write 60000-61000/udp'],
    ['22/sctp', '"22/sctp" is not a port or port range: write PORT/PROTO or FIRST-LAST/PROTO with PROTO tcp or udp, e.g. 22/tcp or 60000-61000/udp'],
    ['1-65536/tcp', '"1-65536/tcp": port 65536 is out of range: ports are 1..65535'],
    ['0-10/tcp', '"0-10/tcp": port 0 is out of range: ports are 1..65535'],
    ['22', '"22" has no protocol: write 22/tcp or 22/udp'],
    ['100-200', '"100-200" has no protocol: write 100-200/tcp or 100-200/udp'],
    [22, '22 has no protocol: write 22/tcp or 22/udp'],
    ['a-b/tcp', '"a-b/tcp" is not a port or port range: write PORT/PROTO or FIRST-LAST/PROTO with PROTO tcp or udp, e.g. 22/tcp or 60000-61000/udp'],
  ];
  for (const [text, message] of cases) assert.throws(() => parsePortRange(text), { message }, String(text));
});

test('formatStep and formatRange round trip', () => {
  for (const text of ['7000/tcp', '8000/udp', '1/tcp', '65535/udp']) assert.equal(formatStep(parseStep(text)), text);
  for (const text of ['22/tcp', '60000-61000/udp', '1-65535/tcp']) assert.equal(formatRange(parsePortRange(text)), text);
  assert.equal(formatRange(parsePortRange('80-80/tcp')), '80/tcp');
});

test('parsePort and rangeHolds', () => {
  assert.equal(parsePort('443'), 443);
  assert.throws(() => parsePort('0', '--port'), { message: '--port: port 0 is out of range: ports are 1..65535' });
  const r = parsePortRange('60000-61000/udp');
  assert.equal(rangeHolds(r, { port: 60000, proto: 'udp' }), true);
  assert.equal(rangeHolds(r, { port: 61000, proto: 'udp' }), true);
  assert.equal(rangeHolds(r, { port: 61001, proto: 'udp' }), false);
  assert.equal(rangeHolds(r, { port: 60500, proto: 'tcp' }), false);
});

test('parseSize and formatSize', () => {
  assert.equal(parseSize(262144), 262144);
  assert.equal(parseSize('262144'), 262144);
  assert.equal(parseSize('256KiB'), 262144);
  assert.equal(parseSize('1MiB'), 1048576);
  assert.equal(parseSize('1 GiB'), 1024 ** 3);
  assert.equal(parseSize('4096B'), 4096);
  assert.throws(() => parseSize('256KB'), { message: '"256KB" is not a size: sizes use binary units, write 256KiB' });
  assert.throws(() => parseSize('1M'), { message: '"1M" is not a size: sizes use binary units, write 1MiB' });
  assert.throws(() => parseSize('1TiB'), { message: '"1TiB" is not a size: "TiB" is not a unit (B, KiB, MiB, GiB)' });
  assert.throws(() => parseSize('1.5MiB'), { message: '"1.5MiB" is not a size: write bytes or a whole number with KiB, MiB or GiB, e.g. 256KiB' });
  assert.throws(() => parseSize(-1), { message: '-1 is not a size: write a whole number of bytes or e.g. 256KiB' });
  for (const [bytes, text] of [[262144, '256KiB'], [1048576, '1MiB'], [4096, '4KiB'], [1000, '1000B'], [1536, '1536B'], [3 * 1024 ** 2, '3MiB']] as const) {
    assert.equal(formatSize(bytes), text);
    assert.equal(parseSize(text), bytes);
  }
});

test('did-you-mean: Levenshtein distance at most 2', () => {
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('step_timout', 'step_timeout'), 1);
  assert.equal(suggest('step_timout', ['sequence', 'step_timeout']), 'step_timeout');
  assert.equal(suggest('intrfaces', ['interfaces', 'doors']), 'interfaces');
  assert.equal(suggest('colour', ['sequence', 'protects']), null);
  assert.equal(suggest('abc', ['abd', 'abc']), 'abc');
});

test('formatIssue prints file:line:col: path: message', () => {
  assert.equal(formatIssue({ file: 'knockgate.yaml', line: 12, col: 7, path: 'doors.ssh.sequence[1]', message: 'm' }), 'knockgate.yaml:12:7: doors.ssh.sequence[1]: m');
  assert.equal(formatIssue({ file: 'k.yaml', line: 3, col: 1, path: '', message: 'invalid YAML: x' }), 'k.yaml:3:1: invalid YAML: x');
  assert.equal(formatIssue({ file: 'k.yaml', line: 0, col: 0, path: '', message: 'cannot read the config file: no such file' }), 'k.yaml: cannot read the config file: no such file');
});
