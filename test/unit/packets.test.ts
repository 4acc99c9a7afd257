import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ETH_HLEN,
  IPPROTO,
  TCP_FLAGS,
  TPID_8021AD,
  TPID_8021Q,
  addrKey,
  buildFrame,
  checksumsValid,
  fixChecksums,
  internetChecksum,
  l3Of,
  l4Of,
  l4OfFrame,
  parseMac,
  pseudoHeader,
  parseIPv4,
  parseIPv6,
  tcpSyn,
  truncate,
  udpDatagram,
} from '../helpers/packets.js';

const hex = (b: Buffer): string => b.toString('hex');

test('IPv4 header matches a known header byte for byte, checksum included', () => {
  // The worked example of RFC 1071-style checksumming found in most references:
  // 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7
  const f = buildFrame({
    ipv4: { src: '192.168.0.1', dst: '192.168.0.199', id: 0, dontFragment: true, ttl: 64 },
    l4: { proto: 'udp', dport: 53, payload: Buffer.alloc(0x73 - 28) },
  });
  assert.equal(hex(f.subarray(ETH_HLEN, ETH_HLEN + 20)), '45000073000040004011b861c0a80001c0a800c7');
  assert.equal(f.length, ETH_HLEN + 0x73);
});

test('Ethernet defaults and a plain IPv4 TCP SYN', () => {
  const f = tcpSyn({ src: '198.18.0.2', dst: '198.18.0.1' }, 22);
  assert.equal(f.length, 14 + 20 + 20);
  assert.equal(hex(f.subarray(0, 14)), '020000000002' + '020000000001' + '0800');
  assert.equal(f.readUInt16BE(14 + 2), 40); // total length
  assert.equal(f[14 + 9], IPPROTO.TCP);
  assert.equal(hex(f.subarray(14 + 12, 14 + 20)), 'c6120002c6120001');
  assert.equal(internetChecksum(f.subarray(14, 34)), 0); // a valid header sums to zero
  const tcp = f.subarray(34);
  assert.equal(tcp.readUInt16BE(0), 40000);
  assert.equal(tcp.readUInt16BE(2), 22);
  assert.equal(tcp[12], 5 << 4); // data offset
  assert.equal(tcp[13], TCP_FLAGS.SYN);
  const pseudo = Buffer.concat([f.subarray(26, 34), Buffer.from([0, IPPROTO.TCP, 0, 20])]);
  assert.equal(internetChecksum(pseudo, tcp), 0);
});

test('VLAN tags sit between the MAC addresses and the EtherType, outermost first', () => {
  const f = tcpSyn({ src: '198.18.0.2', dst: '198.18.0.1' }, 22, {
    vlans: [
      { tpid: TPID_8021AD, vid: 100 },
      { tpid: TPID_8021Q, vid: 200, pcp: 5 },
      { vid: 4095 },
    ],
  });
  assert.equal(hex(f.subarray(12, 26)), '88a8' + '0064' + '8100' + 'a0c8' + '8100' + '0fff' + '0800');
  assert.equal(f.length, 14 + 12 + 40);
  assert.equal(f[26], 0x45);
});

test('IPv4 options, IHL and total length overrides, fragments', () => {
  const withOpts = buildFrame({
    ipv4: { src: '198.18.0.2', dst: '198.18.0.1', options: Buffer.from([1, 1, 1]) },
    l4: { proto: 'udp', dport: 7000 },
  });
  assert.equal(withOpts[14], 0x46); // IHL 6: 3 option bytes padded to 4
  assert.equal(hex(withOpts.subarray(34, 38)), '01010100');
  assert.equal(withOpts.readUInt16BE(16), 24 + 8);
  assert.equal(internetChecksum(withOpts.subarray(14, 38)), 0);
  assert.equal(withOpts.readUInt16BE(38 + 2), 7000); // UDP after the options

  const bad = buildFrame({
    ipv4: { src: '198.18.0.2', dst: '198.18.0.1', ihl: 4, totalLength: 19 },
    l4: { proto: 'udp', dport: 7000 },
  });
  assert.equal(bad[14], 0x44);
  assert.equal(bad.readUInt16BE(16), 19);
  assert.equal(internetChecksum(bad.subarray(14, 34)), 0); // still checksummed over the 20 bytes written

  const first = buildFrame({
    ipv4: { src: '198.18.0.2', dst: '198.18.0.1', moreFragments: true },
    l4: { proto: 'tcp', dport: 22, truncateTo: 8 },
    padTo: 60,
  });
  assert.equal(first.readUInt16BE(14 + 6), 0x2000);
  assert.equal(first.readUInt16BE(14 + 2), 28); // the tiny fragment's IP length...
  assert.equal(first.length, 60); // ...inside a padded frame

  const later = buildFrame({
    ipv4: { src: '198.18.0.2', dst: '198.18.0.1', fragmentOffset: 1480, dontFragment: false },
    l4: { proto: 'raw', protocol: IPPROTO.TCP, payload: Buffer.alloc(16, 0xaa) },
  });
  assert.equal(later.readUInt16BE(14 + 6), 1480 / 8);
  assert.equal(later[14 + 9], IPPROTO.TCP);
  assert.equal(later.readUInt16BE(14 + 2), 36);
  assert.throws(() => buildFrame({ ipv4: { src: '198.18.0.2', dst: '198.18.0.1', fragmentOffset: 4 } }), RangeError);
});

test('IPv6 payload length and next-header chain with extension headers', () => {
  const f = buildFrame({
    ipv6: {
      src: '2001:db8::2',
      dst: '2001:db8::1',
      extensions: [{ type: 'hop-by-hop' }, { type: 'fragment', offset: 0, more: true, id: 7 }],
    },
    l4: { proto: 'udp', dport: 7000, payload: Buffer.from('knoc') },
  });
  const ip = f.subarray(14);
  assert.equal((ip[0] ?? 0) >> 4, 6);
  assert.equal(ip.readUInt16BE(4), 8 + 8 + 8 + 4); // payload length counts the extension headers
  assert.equal(ip[6], IPPROTO.HOPOPTS);
  assert.equal(hex(ip.subarray(8, 24)), '20010db8000000000000000000000002');
  const hbh = ip.subarray(40, 48);
  assert.equal(hex(hbh), '2c00' + '0104' + '00000000'); // next = fragment, len 0, PadN(4)
  const frag = ip.subarray(48, 56);
  assert.equal(hex(frag), '11000001' + '00000007'); // next = UDP, offset 0, M set, id 7
  assert.equal(ip.readUInt16BE(56 + 2), 7000);
  assert.equal(f.length, 14 + 40 + 28);
  const pseudo = Buffer.concat([ip.subarray(8, 40), Buffer.from([0, 0, 0, 12, 0, 0, 0, IPPROTO.UDP])]);
  assert.equal(internetChecksum(pseudo, ip.subarray(56)), 0);

  const later = buildFrame({
    ipv6: { src: '2001:db8::2', dst: '2001:db8::1', extensions: [{ type: 'fragment', offset: 1448 }] },
    l4: { proto: 'raw', protocol: IPPROTO.TCP, payload: Buffer.alloc(8) },
  });
  assert.equal(later[14 + 6], IPPROTO.FRAGMENT);
  assert.equal(hex(later.subarray(54, 58)), '0600' + (1448).toString(16).padStart(4, '0'));
});

test('IPv6 routing, destination options and AH lengths', () => {
  const f = buildFrame({
    ipv6: {
      src: '2001:db8::2',
      dst: '2001:db8::1',
      extensions: [
        { type: 'routing' },
        { type: 'dest-options', data: Buffer.alloc(10) }, // 2 + 10 -> padded to 16: Hdr Ext Len 1
        { type: 'ah' }, // 12 + 12-byte ICV = 24 bytes: Payload Len 24/4 - 2 = 4
      ],
    },
    l4: { proto: 'tcp', dport: 22 },
  });
  const ip = f.subarray(14);
  assert.equal(ip[6], IPPROTO.ROUTING);
  assert.equal(hex(ip.subarray(40, 48)), '3c00fd0000000000');
  assert.equal(ip[48], IPPROTO.AH);
  assert.equal(ip[49], 1);
  assert.equal(hex(ip.subarray(60, 64)), '01020000'); // PadN(2) after the 10 data bytes
  assert.equal(ip[64], IPPROTO.TCP);
  assert.equal(ip[65], 4);
  assert.equal(ip.readUInt16BE(4), 8 + 16 + 24 + 20);
  assert.equal(ip.readUInt16BE(88 + 2), 22);
});

test('UDP datagram over IPv6 and truncate()', () => {
  const f = udpDatagram({ src: '2001:db8::2', dst: '2001:db8::1' }, 7000, Buffer.from([1, 2, 3]));
  assert.equal(f.length, 14 + 40 + 8 + 3);
  assert.equal(f.readUInt16BE(12), 0x86dd);
  assert.equal(f.readUInt16BE(14 + 4), 11);
  assert.equal(f.readUInt16BE(54 + 4), 11); // UDP length
  const t = truncate(f, 30);
  assert.equal(t.length, 30);
  assert.deepEqual(t, f.subarray(0, 30));
  t[0] = 0xff;
  assert.notEqual(f[0], 0xff); // a copy
  assert.throws(() => truncate(f, f.length + 1), RangeError);
});

test('address parsing', () => {
  assert.equal(hex(parseIPv4('198.18.0.2')), 'c6120002');
  assert.equal(hex(parseIPv6('2001:db8::2')), '20010db8000000000000000000000002');
  assert.equal(hex(parseIPv6('::')), '0'.repeat(32));
  assert.equal(hex(parseIPv6('2001:db8::')), '20010db8' + '0'.repeat(24));
  assert.equal(hex(parseIPv6('::ffff:198.18.0.2')), '00000000000000000000ffffc6120002');
  assert.equal(hex(parseIPv6('1:2:3:4:5:6:7:8')), '00010002000300040005000600070008');
  assert.equal(hex(parseIPv6('1:2:3:4:5:6:1.2.3.4')), '00010002000300040005000601020304');
  assert.equal(hex(addrKey('198.18.0.2')), '00000000000000000000ffffc6120002');
  assert.equal(hex(addrKey('2001:db8::2')), '20010db8000000000000000000000002');
  assert.throws(() => parseIPv4('198.18.0.256'), TypeError);
  assert.throws(() => parseIPv6('2001:db8::g'), TypeError);
  assert.throws(() => tcpSyn({ src: '198.18.0.2', dst: '2001:db8::1' }, 22), TypeError);
});

test('reading frames back: l3Of walks VLAN tags (up to maxTags, stopping at a cut tag), l4Of finds the L4 header the kernel would', () => {
  const tagged = buildFrame({ vlans: [{ vid: 5 }, { tpid: TPID_8021AD, vid: 6 }], ipv4: { src: '198.18.0.1', dst: '198.18.0.2' }, l4: { proto: 'udp', dport: 7000 } });
  assert.deepEqual(l3Of(tagged), { off: ETH_HLEN + 8, type: 0x0800 });
  assert.deepEqual(l3Of(tagged, 1), { off: ETH_HLEN + 4, type: TPID_8021AD }, 'stopped after one tag');
  assert.deepEqual(l3Of(truncate(tagged, ETH_HLEN + 6)), { off: ETH_HLEN + 4, type: TPID_8021AD }, 'a cut second tag ends the walk');
  assert.equal(l3Of(truncate(tagged, 13)), null);
  const t = l4OfFrame(tagged);
  assert.ok(t !== null);
  assert.deepEqual([t.v, t.l4, t.proto, t.segLen], [4, ETH_HLEN + 8 + 20, IPPROTO.UDP, 8]);
  assert.equal(tagged.readUInt16BE(t.l4 + 2), 7000);

  const v6 = buildFrame({ ipv6: { src: '2001:db8::1', dst: '2001:db8::2', extensions: [{ type: 'hop-by-hop' }, { type: 'dest-options' }] }, l4: { proto: 'tcp', dport: 22 } });
  const t6 = l4Of(v6, ETH_HLEN);
  assert.deepEqual(t6 && [t6.v, t6.l4, t6.proto, t6.segLen], [6, ETH_HLEN + 40 + 16, IPPROTO.TCP, 20]);
  const frag = buildFrame({ ipv4: { src: '198.18.0.1', dst: '198.18.0.2', moreFragments: true }, l4: { proto: 'tcp', dport: 22 } });
  assert.equal(l4Of(frag, ETH_HLEN), null, 'a fragment has no L4 header the kernel would read');
  assert.equal(l4Of(truncate(v6, v6.length - 1), ETH_HLEN), null, 'shorter than its payload length');
  assert.equal(l4OfFrame(buildFrame({ etherType: 0x0806, payload: Buffer.alloc(28) })), null, 'ARP');
});

test('pseudoHeader, fixChecksums and checksumsValid agree with the builder', () => {
  const src = parseIPv4('198.18.0.1');
  const dst = parseIPv4('198.18.0.2');
  assert.equal(hex(pseudoHeader(src, dst, IPPROTO.TCP, 20)), 'c6120001c612000200060014');
  assert.equal(pseudoHeader(parseIPv6('2001:db8::1'), parseIPv6('2001:db8::2'), IPPROTO.UDP, 9).length, 40);
  assert.throws(() => pseudoHeader(src, parseIPv6('2001:db8::2'), IPPROTO.TCP, 20), /4 or 16 bytes/);
  for (const f of [tcpSyn({ src: '198.18.0.1', dst: '198.18.0.2' }, 22), udpDatagram({ src: '2001:db8::1', dst: '2001:db8::2' }, 53, Buffer.from('x'))]) {
    assert.deepEqual(checksumsValid(f, ETH_HLEN), { ip: true, l4: true });
    const broken = Buffer.from(f);
    broken[broken.length - 1] = (broken[broken.length - 1] ?? 0) ^ 0xff;
    if (broken.readUInt16BE(12) === 0x0800) broken[ETH_HLEN + 8] = 1; // TTL
    const was = checksumsValid(broken, ETH_HLEN);
    assert.equal(was?.l4, false, 'a changed byte breaks the L4 checksum');
    assert.equal(fixChecksums(broken, ETH_HLEN), true);
    assert.deepEqual(checksumsValid(broken, ETH_HLEN), { ip: true, l4: true });
  }
  assert.equal(checksumsValid(buildFrame({ etherType: 0x0806, payload: Buffer.alloc(28) }), ETH_HLEN), null);
  assert.deepEqual([...parseMac('02-00-00-0a-0B-ff')], [2, 0, 0, 10, 11, 255]);
  assert.throws(() => parseMac('02:00:00:00:00'), /not a MAC address/);
});
