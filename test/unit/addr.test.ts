import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cidrContains, familyOf, formatAddress, isMapped, maskAddress, parseAddress, parseCidr } from '../../src/net/addr.js';

const mapped = (a: number, b: number, c: number, d: number): Buffer => Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]);

test('IPv4 becomes IPv4-mapped and formats back as dotted quad', () => {
  const buf = parseAddress('198.18.0.2');
  assert.deepEqual(buf, mapped(198, 18, 0, 2));
  assert.equal(formatAddress(buf), '198.18.0.2');
  assert.equal(familyOf(buf), 4);
  assert.equal(isMapped(buf), true);
  for (const text of ['0.0.0.0', '255.255.255.255', '10.0.0.1', '203.0.113.7']) {
    assert.equal(formatAddress(parseAddress(text)), text);
  }
});

test('IPv4-mapped IPv6 text is the same address as the IPv4 text', () => {
  assert.deepEqual(parseAddress('::ffff:198.18.0.2'), mapped(198, 18, 0, 2));
  assert.deepEqual(parseAddress('::FFFF:c612:2'), mapped(198, 18, 0, 2));
  assert.equal(formatAddress(parseAddress('::ffff:c612:2')), '198.18.0.2');
});

test('IPv6 is stored as is and formatted per RFC 5952', () => {
  const buf = parseAddress('2001:0DB8:0000:0000:0001:0000:0000:0001');
  assert.deepEqual(buf, Buffer.from('20010db8000000000001000000000001', 'hex'));
  assert.equal(familyOf(buf), 6);
  const cases: [string, string][] = [
    ['2001:0DB8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'], // longest run of zeros, first one on a tie
    ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['2001:db8:0:0:1:0:0:0', '2001:db8:0:0:1::'], // the longer run wins
    ['0:0:0:0:0:0:0:0', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['FE80::0001', 'fe80::1'],
    ['2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff', '2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
  ];
  for (const [input, expected] of cases) {
    const text = formatAddress(parseAddress(input));
    assert.equal(text, expected, input);
    assert.deepEqual(parseAddress(text), parseAddress(input));
  }
});

test('parseAddress rejects ambiguous and malformed text, naming it', () => {
  const cases: [string, string][] = [
    ['1.2.3', '"1.2.3" is not an IP address: write IPv4 addresses as four decimal numbers, e.g. 198.18.0.1'],
    ['127.1', '"127.1" is not an IP address: write IPv4 addresses as four decimal numbers, e.g. 198.18.0.1'],
    ['010.0.0.1', '"010.0.0.1" is not an IP address: leading zeros are ambiguous (octal or decimal?): write 10.0.0.1'],
    ['256.1.1.1', '"256.1.1.1" is not an IP address: 256 is not an octet (0..255)'],
    ['0x7f.0.0.1', '"0x7f.0.0.1" is not an IPv4 or IPv6 address'],
    ['4294967295', '"4294967295" is not an IP address: write IPv4 addresses as four decimal numbers, e.g. 198.18.0.1'],
    ['fe80::1%eth0', '"fe80::1%eth0" is not an IP address: zone indexes (%eth0) are not supported'],
    ['[::1]', '"[::1]" is not an IP address: write IPv6 addresses without brackets'],
    ['1::2::3', '"1::2::3" is not an IPv4 or IPv6 address'],
    ['1:2:3:4:5:6:7:8:9', '"1:2:3:4:5:6:7:8:9" is not an IPv4 or IPv6 address'],
    ['::1.2.3.4', '"::1.2.3.4" is not an IP address: "::a.b.c.d" is the deprecated IPv4-compatible form: write 1.2.3.4 for the IPv4 address'],
    ['example.com', '"example.com" is not an IPv4 or IPv6 address'],
    ['', '"" is not an IPv4 or IPv6 address'],
  ];
  for (const [input, message] of cases) assert.throws(() => parseAddress(input), { message }, input);
});

test('formatAddress and familyOf want 16 bytes', () => {
  assert.throws(() => formatAddress(Buffer.alloc(4)), { message: 'an address buffer has 16 bytes, this one has 4' });
  assert.throws(() => familyOf(Buffer.alloc(15)), /16 bytes/);
});

test('parseCidr: IPv4 networks are mapped, with both prefix lengths', () => {
  assert.deepEqual(parseCidr('198.18.0.0/15'), { family: 4, addr: mapped(198, 18, 0, 0), prefix: 15, mappedPrefix: 111, text: '198.18.0.0/15' });
  assert.deepEqual(parseCidr('0.0.0.0/0'), { family: 4, addr: mapped(0, 0, 0, 0), prefix: 0, mappedPrefix: 96, text: '0.0.0.0/0' });
  assert.deepEqual(parseCidr('203.0.113.7'), { family: 4, addr: mapped(203, 0, 113, 7), prefix: 32, mappedPrefix: 128, text: '203.0.113.7/32' });
});

test('parseCidr: IPv6 networks, canonical text', () => {
  assert.deepEqual(parseCidr('2001:DB8:0::/32'), { family: 6, addr: Buffer.from('20010db8000000000000000000000000', 'hex'), prefix: 32, mappedPrefix: 32, text: '2001:db8::/32' });
  assert.deepEqual(parseCidr('::/0'), { family: 6, addr: Buffer.alloc(16), prefix: 0, mappedPrefix: 0, text: '::/0' });
  assert.equal(parseCidr('2001:db8::1').text, '2001:db8::1/128');
  assert.equal(parseCidr('2001:db8::1').prefix, 128);
  // Inside ::ffff:0:0/96 a network is an IPv4 network, the way the kernel will see it.
  assert.deepEqual(parseCidr('::ffff:192.0.2.0/120'), { family: 4, addr: mapped(192, 0, 2, 0), prefix: 24, mappedPrefix: 120, text: '192.0.2.0/24' });
  assert.deepEqual(parseCidr('::ffff:0:0/96'), { family: 4, addr: mapped(0, 0, 0, 0), prefix: 0, mappedPrefix: 96, text: '0.0.0.0/0' });
  assert.equal(parseCidr('::fffe:0:0/95').family, 6); // covers mapped space and more
});

test('parseCidr: host bits set suggests the network', () => {
  assert.throws(() => parseCidr('198.18.0.1/15'), { message: '198.18.0.1/15 has host bits set: did you mean 198.18.0.0/15?' });
  assert.throws(() => parseCidr('2001:db8::1/32'), { message: '2001:db8::1/32 has host bits set: did you mean 2001:db8::/32?' });
  assert.throws(() => parseCidr('::ffff:192.0.2.1/120'), { message: '::ffff:192.0.2.1/120 has host bits set: did you mean 192.0.2.0/24?' });
});

test('parseCidr: bad prefixes and addresses', () => {
  assert.throws(() => parseCidr('198.18.0.0/33'), { message: '"198.18.0.0/33" has a bad prefix length "33": an IPv4 prefix is 0..32' });
  assert.throws(() => parseCidr('2001:db8::/129'), { message: '"2001:db8::/129" has a bad prefix length "129": an IPv6 prefix is 0..128' });
  assert.throws(() => parseCidr('10.0.0.0/'), { message: '"10.0.0.0/" has a bad prefix length "": an IPv4 prefix is 0..32' });
  assert.throws(() => parseCidr('10.0.0.0/8/8'), { message: '"10.0.0.0/8/8" is not a network: write ADDRESS/PREFIX, e.g. 198.18.0.0/15' });
  assert.throws(() => parseCidr('10.0.0/8'), { message: '"10.0.0/8": "10.0.0" is not an IP address: write IPv4 addresses as four decimal numbers, e.g. 198.18.0.1' });
});

test('cidrContains', () => {
  const v4 = parseCidr('198.18.0.0/15');
  assert.equal(cidrContains(v4, parseAddress('198.18.0.1')), true);
  assert.equal(cidrContains(v4, parseAddress('198.19.255.255')), true);
  assert.equal(cidrContains(v4, parseAddress('198.20.0.0')), false);
  assert.equal(cidrContains(v4, parseAddress('198.17.255.255')), false);
  assert.equal(cidrContains(v4, parseAddress('::ffff:198.18.3.4')), true);
  assert.equal(cidrContains(v4, parseAddress('2001:db8::1')), false);

  const v6 = parseCidr('2001:db8::/32');
  assert.equal(cidrContains(v6, parseAddress('2001:db8:ffff::1')), true);
  assert.equal(cidrContains(v6, parseAddress('2001:db9::1')), false);
  assert.equal(cidrContains(v6, parseAddress('198.18.0.1')), false);

  const anyV4 = parseCidr('0.0.0.0/0');
  assert.equal(cidrContains(anyV4, parseAddress('1.2.3.4')), true);
  assert.equal(cidrContains(anyV4, parseAddress('::1')), false);
  const any = parseCidr('::/0');
  assert.equal(cidrContains(any, parseAddress('1.2.3.4')), true);
  assert.equal(cidrContains(any, parseAddress('::1')), true);

  const host = parseCidr('2001:db8::7');
  assert.equal(cidrContains(host, parseAddress('2001:db8::7')), true);
  assert.equal(cidrContains(host, parseAddress('2001:db8::6')), false);

  const odd = parseCidr('10.0.0.128/25'); // a prefix that ends inside a byte
  assert.equal(cidrContains(odd, parseAddress('10.0.0.200')), true);
  assert.equal(cidrContains(odd, parseAddress('10.0.0.127')), false);
});

test('maskAddress clears host bits only', () => {
  const a = parseAddress('2001:db8:ffff:ffff::1');
  assert.deepEqual(maskAddress(a, 128), a);
  assert.deepEqual(maskAddress(a, 0), Buffer.alloc(16));
  assert.equal(formatAddress(maskAddress(a, 36)), '2001:db8:f000::');
  assert.deepEqual(a, parseAddress('2001:db8:ffff:ffff::1'), 'input untouched');
});
