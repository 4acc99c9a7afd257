import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UnsupportedLinkError, arphrdName, framingOfType } from '../../src/net/link-type.js';

test('device types: Ethernet and loopback parse from the Ethernet header, ARPHRD_NONE and RAWIP from the IP header', () => {
  assert.equal(framingOfType('eth0', 1), 'ethernet');
  assert.equal(framingOfType('lo', 772), 'ethernet');
  assert.equal(framingOfType('wg0', 0xfffe), 'l3');
  assert.equal(framingOfType('wwan0', 519), 'l3');
});

test('tunnels that may show XDP their outer header, and types of unknown framing, are refused by name and type', () => {
  for (const [type, name] of [
    [768, 'ARPHRD_TUNNEL'],
    [769, 'ARPHRD_TUNNEL6'],
    [776, 'ARPHRD_SIT'],
    [778, 'ARPHRD_IPGRE'],
    [823, 'ARPHRD_IP6GRE'],
    [512, 'ARPHRD_PPP'],
    [32, 'ARPHRD_INFINIBAND'],
    [280, 'ARPHRD_CAN'],
    [4242, 'ARPHRD_4242'],
  ] as const) {
    assert.throws(
      () => framingOfType('tun7', type),
      (err: unknown) =>
        err instanceof UnsupportedLinkError &&
        err.ifname === 'tun7' &&
        err.message.startsWith(`interface tun7 has device type ${name} (${type}): `) &&
        err.message.includes('remove tun7 from `interfaces`'),
      name,
    );
  }
  assert.match(String((() => { try { framingOfType('gre1', 778); } catch (e) { return (e as Error).message; } return ''; })()), /outer \(tunnel\) IP header/);
  assert.equal(arphrdName(0xfffe), 'ARPHRD_NONE');
});
