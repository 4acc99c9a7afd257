// Key material never reaches a log line (src/log.ts REDACT), whatever record carries it.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/log.js';

test('keys, secrets, private keys and payloads are redacted at any of the first three levels', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger({ level: 'info', destination: sink });
  const secret = '00112233445566778899aabbccddeeff';
  log.info({ secret, door: { key: secret, payload: secret, spa: { key: secret } }, privateKey: secret, name: 'ssh' }, 'door');
  log.info({ key: 'doors.ssh.sequence[2]', problem: 'bad' }, 'config rejected');
  log.info({ doors: { ssh: { secrets: { a: secret } } } }, 'nested');
  const text = lines.join('');
  assert.equal(lines.length, 3);
  assert.match(text, /"key":"doors\.ssh\.sequence\[2\]"/, 'a config key path at the top of a record stays');
  assert.doesNotMatch(text, new RegExp(secret));
  assert.match(text, /"name":"ssh"/);
  assert.match(text, /\[redacted\]/);
});
