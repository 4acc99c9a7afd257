// The reverse direction: knockgate's encoder is checked by fwknop's own parser, libfko's
// fko_new_with_data() (what fwknopd runs on each SPA packet, minus the firewall). Needs
// Debian's libfko3 (scripts/setup.sh installs it with fwknop-client): skipped with the reason
// where it is missing, a failure in CI.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeFwknop, type FwknopKeys } from '../../src/knock/fwknop.js';
import { generateFwknopKeys } from '../../src/knock/fwknop-keys.js';
import { fkoDecode, libfkoSkipReason } from '../helpers/libfko.js';

function needLibfko(t: TestContext): boolean {
  const reason = libfkoSkipReason();
  if (reason === null) return true;
  if (process.env['CI'] === 'true') throw new Error(`cannot run in CI: ${reason}`);
  t.skip(reason);
  return false;
}

const keys: FwknopKeys = generateFwknopKeys();

test("libfko accepts knockgate's datagrams and reads the same fields", (t) => {
  if (!needLibfko(t)) return;
  const cases = [
    { input: { username: 'alice', timestamp: 1_796_399_197, access: [{ proto: 'tcp' as const, port: 22 }] }, message: '0.0.0.0,tcp/22', type: 1, timeout: 0 },
    { input: { username: 'ops', timestamp: 1_800_000_000, access: [{ proto: 'tcp' as const, port: 443 }, { proto: 'udp' as const, port: 51820 }], allowIp: '198.18.0.7', clientTimeout: 45 }, message: '198.18.0.7,tcp/443,udp/51820', type: 3, timeout: 45 },
  ];
  for (const c of cases) {
    for (let i = 0; i < 20; i++) {
      // many salts and random fields: padding lengths and base64 tails all vary
      const d = encodeFwknop(c.input, keys).toString('latin1');
      const r = fkoDecode(d, keys.encryptionKey, keys.hmacKey);
      assert.equal(r.rc, 0, `libfko: ${r.error}`);
      assert.equal(r.username, c.input.username);
      assert.equal(r.timestamp, c.input.timestamp);
      assert.equal(r.message, c.message);
      assert.equal(r.messageType, c.type);
      assert.equal(r.clientTimeout, c.timeout);
    }
  }
});

test('the oracle can fail: libfko refuses a wrong HMAC key, a wrong encryption key, a changed byte', (t) => {
  if (!needLibfko(t)) return;
  const d = encodeFwknop({ username: 'alice', timestamp: 1_796_399_197, access: [{ proto: 'tcp', port: 22 }] }, keys).toString('latin1');
  assert.notEqual(fkoDecode(d, keys.encryptionKey, randomBytes(64)).rc, 0);
  assert.notEqual(fkoDecode(d, randomBytes(32), keys.hmacKey).rc, 0);
  const changed = d.slice(0, 40) + (d[40] === 'A' ? 'B' : 'A') + d.slice(41);
  assert.notEqual(fkoDecode(changed, keys.encryptionKey, keys.hmacKey).rc, 0);
});
