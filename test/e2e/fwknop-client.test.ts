// The real fwknop client (Debian's fwknop-client) in one test namespace sends to a UDP socket in
// the other; knockgate's verifier checks what arrived, with the source address the socket saw:
// the right keys are accepted with the right fields and address; a replay (same or other
// source, and after a restart of the replay cache), a wrong encryption key, a wrong HMAC key, a
// changed byte, a stale timestamp, a port the door does not protect and a client without HMAC
// are each refused with their reason. fwknop 2.6's client sends over IPv4 only (its
// getaddrinfo() asks for AF_INET), so IPv6 is covered with knockgate's own sender, which libfko
// (fwknopd's parser) also accepts. Addresses: 198.18.0.0/30 and 2001:db8::/64, inside the
// namespaces only. The daemon and the XDP half come with the door module (phase 2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { FwknopVerifier, type FwknopCheck } from '../../src/knock/fwknop-verify.js';
import { fwknoprcStanza, generateFwknopKeys } from '../../src/knock/fwknop-keys.js';
import type { FwknopKeys } from '../../src/knock/fwknop.js';
import { ReplayCache } from '../../src/knock/replay.js';
import { formatAddress, parseAddress } from '../../src/net/addr.js';
import { IN_CI, ROOT, kernelSuite, withNetns, type NetnsPair } from '../helpers/kernel.js';
import { Proc } from '../helpers/daemon.js';
import { fkoDecode, libfkoSkipReason } from '../helpers/libfko.js';

const CAPTURE = `${ROOT}dist/test/helpers/udp-capture.js`;
const SENDER = `${ROOT}dist/test/helpers/fwknop-send.js`;
const PORT = 62201;
const MAX_SKEW_MS = 120_000;

function fwknopMissing(): string | null {
  const r = spawnSync('fwknop', ['--version'], { encoding: 'utf8', timeout: 10_000, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: tmpdir() } });
  if (r.error || r.status !== 0) return 'the fwknop client is not installed (apt-get install fwknop-client; scripts/setup.sh does)';
  return null;
}

const b64 = (k: Buffer): string => k.toString('base64');

interface Lab {
  env: NetnsPair;
  dir: string;
  /** sends with fn (run in nsA), returns the datagram captured at addr in nsB and its source */
  capture(addr: string, send: () => void): Promise<{ data: Buffer; from: string }>;
  /** runs the fwknop client in nsA with an rc file and HOME in the temp dir, never the user's */
  fwknop(args: readonly string[]): void;
}

async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  await withNetns(async (env) => {
    const dir = mkdtempSync(join(tmpdir(), 'kg-fwknop-'));
    const rc = join(dir, 'fwknoprc');
    writeFileSync(rc, '', { mode: 0o600 });
    try {
      await fn({
        env,
        dir,
        async capture(addr, send) {
          const sink = new Proc(spawn('ip', ['netns', 'exec', env.nsB, process.execPath, CAPTURE, addr, String(PORT), '1', '20000'], { stdio: ['ignore', 'pipe', 'pipe'] }));
          try {
            await sink.waitFor((l) => l['listening'] === PORT, 15_000, 'capture socket');
            send();
            const got = await sink.waitFor((l) => typeof l['data'] === 'string' || l['timeout'] === true, 25_000, 'a datagram');
            assert.equal(got['timeout'], undefined, 'no datagram arrived');
            return { data: Buffer.from(String(got['data']), 'base64'), from: String(got['from']) };
          } finally {
            await sink.stop(5000);
          }
        },
        fwknop(args) {
          const rcArgs = args.includes('--rc-file') ? [] : ['--rc-file', rc];
          const r = spawnSync('ip', ['netns', 'exec', env.nsA, 'fwknop', ...rcArgs, '--no-save-args', ...args], {
            encoding: 'utf8',
            timeout: 20_000,
            env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir },
          });
          if (r.error) throw r.error;
          assert.equal(r.status, 0, `fwknop ${args.join(' ')}: ${r.stdout} ${r.stderr}`);
        },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

const keyArgs = (k: FwknopKeys): string[] => ['--key-base64-rijndael', b64(k.encryptionKey), '--key-base64-hmac', b64(k.hmacKey), '--use-hmac'];

function reasonOf(r: FwknopCheck): string {
  return r.ok ? 'granted' : r.reason;
}

const missing = fwknopMissing();
kernelSuite('fwknop: the real client, captured in a namespace, checked by knockgate', () => {
  test('right keys grant with the right fields; replays, wrong keys, changes, stale, unprotected, no HMAC are refused', { skip: missing !== null && !IN_CI ? missing : false }, async () => {
    assert.equal(missing, null, missing ?? '');
    await withLab(async (lab) => {
      const { env } = lab;
      const keys = generateFwknopKeys();
      const cachePath = join(lab.dir, 'replay', 'fwknop.digests');
      let replay = await ReplayCache.open(cachePath);
      const verifier = (): FwknopVerifier =>
        new FwknopVerifier({ clients: [{ name: 'laptop', keys }], maxSkewMs: MAX_SKEW_MS, protects: [{ proto: 'tcp', from: 22, to: 22 }], replay });
      let gate = verifier();
      const check = (data: Buffer, from: string): Promise<FwknopCheck> => gate.check(data, parseAddress(from));
      try {
        // 1. The right keys, -a the client's own address.
        const a = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), ...keyArgs(keys), '-A', 'tcp/22', '-a', env.addrA, '-U', 'alice']));
        assert.equal(a.from, env.addrA);
        const granted = await check(a.data, a.from);
        assert.ok(granted.ok, JSON.stringify(granted));
        if (granted.ok) {
          assert.equal(granted.client, 'laptop');
          assert.equal(granted.message.username, 'alice');
          assert.equal(granted.message.allowIp, env.addrA);
          assert.deepEqual(granted.message.access, [{ proto: 'tcp', port: 22 }]);
          assert.ok(Math.abs(granted.message.timestamp * 1000 - Date.now()) < 600_000, 'the client stamped the current time');
          assert.equal(formatAddress(granted.address), env.addrA);
        }

        // 2. The captured datagram again: a replay, from the same source or another one, and
        //    after the replay cache is reopened (a daemon restart).
        assert.equal(reasonOf(await check(a.data, a.from)), 'replay');
        assert.equal(reasonOf(await check(a.data, '198.18.0.3')), 'replay');
        await replay.close();
        replay = await ReplayCache.open(cachePath);
        gate = verifier();
        assert.equal(reasonOf(await check(a.data, a.from)), 'replay', 'still a replay after a restart');

        // 3. -s: the packet's source is opened.
        const s = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), ...keyArgs(keys), '-A', 'tcp/22', '-s']));
        const sGrant = await check(s.data, s.from);
        assert.ok(sGrant.ok, JSON.stringify(sGrant));
        if (sGrant.ok) assert.equal(formatAddress(sGrant.address), env.addrA);

        // 4. A changed byte of a good datagram: bad_hmac.
        const fresh = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), ...keyArgs(keys), '-A', 'tcp/22', '-s']));
        const changed = Buffer.from(fresh.data);
        changed[70] = changed[70] === 0x41 ? 0x42 : 0x41;
        assert.equal(reasonOf(await check(changed, fresh.from)), 'bad_hmac');
        assert.equal(reasonOf(await check(fresh.data, fresh.from)), 'granted', 'the unchanged one still opens');

        // 5. Wrong encryption key, wrong HMAC key.
        const wrongEnc = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), ...keyArgs({ ...keys, encryptionKey: randomBytes(32) }), '-A', 'tcp/22', '-s']));
        assert.equal(reasonOf(await check(wrongEnc.data, wrongEnc.from)), 'bad_decrypt');
        const wrongHmac = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), ...keyArgs({ ...keys, hmacKey: randomBytes(64) }), '-A', 'tcp/22', '-s']));
        assert.equal(reasonOf(await check(wrongHmac.data, wrongHmac.from)), 'bad_hmac');

        // 6. A stale timestamp (--time-offset-minus 10 minutes against a 2-minute skew).
        const stale = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), ...keyArgs(keys), '-A', 'tcp/22', '-s', '--time-offset-minus', '600s']));
        assert.equal(reasonOf(await check(stale.data, stale.from)), 'stale');

        // 7. A port the door does not protect; an -a address that is not the sender's.
        const http = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), ...keyArgs(keys), '-A', 'tcp/80', '-s']));
        assert.equal(reasonOf(await check(http.data, http.from)), 'not_protected');
        const other = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), ...keyArgs(keys), '-A', 'tcp/22', '-a', '198.18.0.3']));
        assert.equal(reasonOf(await check(other.data, other.from)), 'address_mismatch');

        // 8. A client without HMAC (fwknop's legacy mode).
        const bare = await lab.capture(env.addrB, () => lab.fwknop(['-D', env.addrB, '-p', String(PORT), '--key-base64-rijndael', b64(keys.encryptionKey), '-A', 'tcp/22', '-s']));
        assert.equal(reasonOf(await check(bare.data, bare.from)), 'no_hmac');

        // 9. The .fwknoprc stanza `knockgate keygen --type fwknop` prints works with the client as is.
        const stanzaRc = join(lab.dir, 'stanza-rc');
        writeFileSync(stanzaRc, fwknoprcStanza({ name: 'knockgate', server: env.addrB, access: [{ proto: 'tcp', port: 22 }], keys }), { mode: 0o600 });
        const viaRc = await lab.capture(env.addrB, () => lab.fwknop(['--rc-file', stanzaRc, '-n', 'knockgate']));
        const rcGrant = await check(viaRc.data, viaRc.from);
        assert.ok(rcGrant.ok, JSON.stringify(rcGrant));
        if (rcGrant.ok) assert.equal(rcGrant.message.allowIp, '0.0.0.0', 'ALLOW_IP source');
      } finally {
        await replay.close();
      }
    });
  });

  test("IPv6: knockgate's sender reaches a v6 socket; verifier opens the v6 source; libfko agrees", { skip: libfkoSkipReason() !== null && !IN_CI ? libfkoSkipReason() ?? '' : false }, async () => {
    await withLab(async (lab) => {
      const { env } = lab;
      const keys = generateFwknopKeys();
      const replay = await ReplayCache.open(join(lab.dir, 'replay6'));
      try {
        const gate = new FwknopVerifier({ clients: [{ name: 'laptop', keys }], maxSkewMs: MAX_SKEW_MS, protects: [{ proto: 'tcp', from: 22, to: 22 }], replay });
        const args = { address: env.addr6B, family: 6, port: PORT, keyBase64: b64(keys.encryptionKey), hmacKeyBase64: b64(keys.hmacKey), access: [{ proto: 'tcp', port: 22 }], username: 'v6user' };
        const got = await lab.capture(env.addr6B, () => {
          const r = spawnSync('ip', ['netns', 'exec', env.nsA, process.execPath, SENDER, JSON.stringify(args)], { encoding: 'utf8', timeout: 20_000 });
          assert.equal(r.status, 0, `${r.stdout} ${r.stderr}`);
        });
        assert.equal(got.from, env.addr6A);
        const r = await gate.check(got.data, parseAddress(got.from));
        assert.ok(r.ok, JSON.stringify(r));
        if (r.ok) {
          assert.equal(formatAddress(r.address), env.addr6A);
          assert.equal(r.message.username, 'v6user');
        }
        assert.equal(reasonOf(await gate.check(got.data, parseAddress(got.from))), 'replay');
        const fko = fkoDecode(got.data.toString('latin1'), keys.encryptionKey, keys.hmacKey);
        assert.equal(fko.rc, 0, `libfko: ${fko.error}`);
        assert.equal(fko.message, '0.0.0.0,tcp/22');
        assert.equal(fko.username, 'v6user');
      } finally {
        await replay.close();
      }
    });
  });
});
