// The persistent replay cache: a claim is answered once, survives a reopen (a restart), expires,
// refuses when full, fails closed on a damaged or loose file, and compacts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, chmod, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReplayCache } from '../../src/knock/replay.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knockgate-replay-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});
let serial = 0;
const fresh = (): string => join(dir, `sub${serial}`, `cache${serial++}`);
const D1 = 'DxKX3G2Bts7+djZRFXuB4uyWYbncCuqX4F6PxVE7KKc';
const D2 = 'Jjg65biKnD4VJTUuomsZYeCRSk4ezwzTf9ik12BEBfw';

test('a digest is claimed once; a second claim is a replay until it expires', async () => {
  const cache = await ReplayCache.open(fresh(), { nowMs: 1000 });
  try {
    assert.equal(await cache.claim(D1, 5000, 1000), 'claimed');
    assert.equal(await cache.claim(D1, 9000, 2000), 'replay');
    assert.equal(await cache.claim(D2, 5000, 2000), 'claimed');
    assert.equal(await cache.claim(D1, 9000, 5000), 'claimed', 'expired at 5000: new again');
    assert.equal(cache.size, 1, 'D2 expired too');
  } finally {
    await cache.close();
  }
});

test('concurrent claims of one digest: exactly one wins', async () => {
  const cache = await ReplayCache.open(fresh(), { nowMs: 0 });
  try {
    const results = await Promise.all(Array.from({ length: 8 }, () => cache.claim(D1, 10_000, 0)));
    assert.deepEqual(results.filter((r) => r === 'claimed').length, 1);
    assert.deepEqual(results.filter((r) => r === 'replay').length, 7);
  } finally {
    await cache.close();
  }
});

test('the cache survives a reopen (a daemon restart): the claim is still a replay', async () => {
  const path = fresh();
  const a = await ReplayCache.open(path, { nowMs: 1000 });
  assert.equal(await a.claim(D1, 60_000, 1000), 'claimed');
  assert.equal(await a.claim(D2, 3000, 1000), 'claimed');
  await a.close();
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  const b = await ReplayCache.open(path, { nowMs: 10_000 });
  try {
    assert.equal(b.size, 1, 'D2 expired while the daemon was down');
    assert.equal(await b.claim(D1, 60_000, 10_000), 'replay');
    assert.equal(await b.claim(D2, 60_000, 10_000), 'claimed');
  } finally {
    await b.close();
  }
});

test('full: a claim past max is refused (never evicts a live record)', async () => {
  const cache = await ReplayCache.open(fresh(), { max: 2, nowMs: 0 });
  try {
    assert.equal(await cache.claim('aaaaaaaaaa', 1000, 0), 'claimed');
    assert.equal(await cache.claim('bbbbbbbbbb', 1000, 0), 'claimed');
    assert.equal(await cache.claim('cccccccccc', 1000, 0), 'full');
    assert.equal(await cache.claim('aaaaaaaaaa', 1000, 0), 'replay');
    assert.equal(await cache.claim('cccccccccc', 2000, 1000), 'claimed', 'room again once records expire');
  } finally {
    await cache.close();
  }
});

test('a torn last line (crash mid-write) is skipped; a damaged line elsewhere refuses the file', async () => {
  const torn = fresh();
  const a = await ReplayCache.open(torn, { nowMs: 0 });
  await a.claim(D1, 50_000, 0);
  await a.close();
  await appendFile(torn, '4000 Jjg65b');
  const b = await ReplayCache.open(torn, { nowMs: 0 });
  try {
    assert.equal(await b.claim(D1, 50_000, 0), 'replay');
    assert.equal(await b.claim(D2, 50_000, 0), 'claimed');
  } finally {
    await b.close();
  }
  const b2 = await ReplayCache.open(torn, { nowMs: 0 });
  try {
    assert.equal(await b2.claim(D2, 50_000, 0), 'replay', 'the record after the torn line reads back');
  } finally {
    await b2.close();
  }
  const bad = fresh();
  const c = await ReplayCache.open(bad, { nowMs: 0 });
  await c.close();
  await appendFile(bad, 'garbage here\n9999 ' + D1 + '\n');
  await assert.rejects(ReplayCache.open(bad, { nowMs: 0 }), /:2: not a replay record; the file is damaged: move it away/);
  const alien = fresh();
  await ReplayCache.open(alien).then((x) => x.close());
  await writeFile(alien, 'hello\n');
  await assert.rejects(ReplayCache.open(alien), /not a knockgate replay cache/);
});

test('a cache file readable by others, or a symlink, is refused', async () => {
  const path = fresh();
  await (await ReplayCache.open(path)).close();
  await chmod(path, 0o644);
  await assert.rejects(ReplayCache.open(path), /readable by group or others/);
  const link = `${path}.link`;
  await symlink(path, link);
  await assert.rejects(ReplayCache.open(link), /cannot be opened/);
});

test('expired records are compacted away when they outnumber the live ones', async () => {
  const path = fresh();
  const cache = await ReplayCache.open(path, { nowMs: 0 });
  try {
    for (let i = 0; i < 1100; i++) assert.equal(await cache.claim(`d${String(i).padStart(9, '0')}`, 10 + i, i), 'claimed');
    assert.equal(await cache.claim(D1, 1_000_000, 2000), 'claimed');
    const lines = (await readFile(path, 'utf8')).trim().split('\n');
    assert.ok(lines.length < 100, `compacted to ${lines.length} lines`);
    assert.equal(lines[0], 'knockgate-replay v1');
    assert.ok(lines.includes(`1000000 ${D1}`));
    assert.equal(await cache.claim(D1, 1_000_000, 3000), 'replay');
  } finally {
    await cache.close();
  }
  const again = await ReplayCache.open(path, { nowMs: 3000 });
  try {
    assert.equal(await again.claim(D1, 1_000_000, 3000), 'replay', 'the compacted file holds the live record');
  } finally {
    await again.close();
  }
});
