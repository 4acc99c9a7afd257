// The fleet engine against real etcd members (Debian's etcd 3.4, started per test on free
// loopback ports). No timing assertions: waits are generous bounds, never measurements.
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { withEtcd, etcdSkipReason, type EtcdCluster } from '../helpers/etcd.js';
import { IN_CI } from '../helpers/kernel.js';
import {
  FleetEngine,
  FleetAccessError,
  FleetUnavailableError,
  LIST_PAGE,
  type EngineOptions,
  type EngineState,
  type ResyncReason,
  type Snapshot,
  type WatchEvent,
} from '../../src/fleet/engine.js';
import { createLogger } from '../../src/log.js';

const skip = etcdSkipReason();
if (skip !== null && IN_CI) throw new Error(`fleet engine tests cannot run in CI: ${skip}`);

/** Every log line of the engines a test opens, for the "no credentials in logs" checks. */
class LogSink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

interface Opened {
  engine: FleetEngine;
  states: [EngineState, string][];
}

function opener(t: TestContext, sink = new LogSink()) {
  const logger = createLogger({ level: 'debug', destination: sink });
  const engines: FleetEngine[] = [];
  t.after(async () => {
    await Promise.all(engines.map((e) => e.close()));
  });
  return (etcd: EtcdCluster, hostId: string, extra: Partial<EngineOptions> = {}): Opened => {
    const engine = FleetEngine.open({ endpoints: etcd.endpoints, prefix: etcd.prefix, hostId, logger, heartbeatMs: 500, ...extra });
    const states: [EngineState, string][] = [];
    engine.on('state', (s: EngineState, r: string) => states.push([s, r]));
    engines.push(engine);
    return { engine, states };
  };
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A watcher's view of its prefix: the snapshots and events applied in order, as the daemon would. */
class View {
  readonly keys = new Map<string, string>();
  readonly resyncs: ResyncReason[] = [];
  readonly events: WatchEvent[] = [];
  onEvents = (evs: WatchEvent[]): void => {
    for (const e of evs) {
      this.events.push(e);
      if (e.type === 'put') this.keys.set(e.key, e.value!.toString());
      else this.keys.delete(e.key);
    }
  };
  onResync = (snap: Snapshot, reason: ResyncReason): void => {
    this.resyncs.push(reason);
    this.keys.clear();
    for (const kv of snap.items) this.keys.set(kv.key, kv.value.toString());
  };
}

/** put, retrying while the cluster has no usable member (as the daemon's replication does). */
async function putSurely(e: FleetEngine, key: string, value: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      return await e.put(key, value);
    } catch (err) {
      if (!(err instanceof FleetUnavailableError) || i > 100) throw err;
      await sleep(200);
    }
  }
}

const nowSec = (): number => Math.floor(Date.now() / 1000);

describe('fleet engine (real etcd)', skip === null ? {} : { skip }, () => {
  it('replicates puts and deletes between engines on different members, in order', async (t) => {
    const open = opener(t);
    await withEtcd({ members: 3 }, async (etcd) => {
      const a = open(etcd, 'host-a', { endpoints: [etcd.endpoints[0]!] });
      const b = open(etcd, 'host-b', { endpoints: [etcd.endpoints[1]!] });
      const view = new View();
      b.engine.watch('grants/', view.onEvents, view.onResync);
      await until('the first snapshot', () => view.resyncs.length === 1);
      assert.deepEqual(view.resyncs, ['start']);
      for (let i = 0; i < 50; i++) await a.engine.put(`grants/k${i}`, `v${i}`);
      await a.engine.delete('grants/k7');
      await a.engine.put('other/x', 'not watched');
      await until('50 puts and a delete at B', () => view.events.length === 51);
      assert.equal(view.keys.size, 49);
      assert.equal(view.keys.get('grants/k49'), 'v49');
      assert.equal(view.keys.has('grants/k7'), false);
      assert.ok(view.events.every((e, i) => i === 0 || e.revision > view.events[i - 1]!.revision), 'events in revision order');
      assert.ok(!view.events.some((e) => e.key.startsWith('other/')));
      // A later watcher gets the same contents as its start snapshot
      const late = new View();
      a.engine.watch('grants/', late.onEvents, late.onResync);
      await until('the late snapshot', () => late.resyncs.length === 1);
      assert.deepEqual([...late.keys].sort(), [...view.keys].sort());
      // both heartbeats are visible from either side
      await until('two heartbeats', async () => (await a.engine.hosts()).length === 2);
      const hosts = await b.engine.hosts();
      assert.deepEqual(hosts.map((h) => h.host), ['host-a', 'host-b']);
      assert.equal(hosts[0]!.info['state'], 'connected');
      assert.equal(a.states.filter(([s]) => s === 'connected').length, 1);
      // a burst far larger than the engine's in-flight limit queues instead of timing out
      await Promise.all(Array.from({ length: 400 }, (_, i) => a.engine.put(`grants/burst${i}`, 'b', { expiresAtSec: nowSec() + 60 })));
      await until('the burst at B', () => view.keys.size === 49 + 400);
      // an engine without heartbeat (the CLI's) neither appears nor removes a record on close
      const cli = open(etcd, 'host-a', { heartbeat: false }).engine;
      assert.equal((await cli.hosts()).length, 2);
      await cli.close();
      assert.deepEqual((await b.engine.hosts()).map((h) => h.host), ['host-a', 'host-b']);
    });
  });

  it('claim: two engines on two members race for 250 keys, exactly one winner each', async (t) => {
    const open = opener(t);
    await withEtcd({ members: 3 }, async (etcd) => {
      const a = open(etcd, 'host-a', { endpoints: [etcd.endpoints[0]!] }).engine;
      const b = open(etcd, 'host-b', { endpoints: [etcd.endpoints[2]!] }).engine;
      const exp = nowSec() + 60;
      const keys = Array.from({ length: 250 }, (_, i) => `nonces/n${i}`);
      // both engines claim every key at the same moment, 25 keys at a time (a burst of 500
      // transactions at once only measures how slow a loaded machine is)
      const wa: boolean[] = [];
      const wb: boolean[] = [];
      for (let i = 0; i < keys.length; i += 25) {
        const batch = keys.slice(i, i + 25);
        const [ra, rb] = await Promise.all([
          Promise.all(batch.map((k) => a.claim(k, 'host-a', exp))),
          Promise.all(batch.map((k) => b.claim(k, 'host-b', exp))),
        ]);
        wa.push(...ra);
        wb.push(...rb);
      }
      const stored = new Map((await a.list('nonces/')).items.map((kv) => [kv.key, kv.value.toString()]));
      for (let i = 0; i < keys.length; i++) {
        assert.notEqual(wa[i], wb[i], `${keys[i]}: exactly one of A and B wins`);
        assert.equal(stored.get(keys[i]!), wa[i] ? 'host-a' : 'host-b', `${keys[i]}: the winner's value is stored`);
      }
      // a claim of a key already claimed loses, also on the winner's own engine
      assert.equal(await a.claim('nonces/n0', 'host-a', exp), false);
      // concurrent claims of one key on one engine: one winner
      const same = await Promise.all([a.claim('nonces/once', 'host-a', exp), a.claim('nonces/once', 'host-a', exp)]);
      assert.deepEqual(same.sort(), [false, true]);
    });
  });

  it('leases: one per expiry second, shared; expiry deletes reach watchers', async (t) => {
    const open = opener(t);
    await withEtcd({ members: 1 }, async (etcd) => {
      // no heartbeats: their leases would count too
      const a = open(etcd, 'host-a', { heartbeat: false }).engine;
      const b = open(etcd, 'host-b', { heartbeat: false }).engine;
      const view = new View();
      b.watch('grants/', view.onEvents, view.onResync);
      await until('the first snapshot', () => view.resyncs.length === 1);
      const leasesBefore = etcd.etcdctl(['lease', 'list']).trim().split('\n').length;
      const exp = nowSec() + 2;
      await Promise.all(Array.from({ length: 20 }, (_, i) => a.put(`grants/g${i}`, 'x', { expiresAtSec: exp })));
      await a.put('grants/later', 'x', { expiresAtSec: exp + 600 });
      const leasesAfter = etcd.etcdctl(['lease', 'list']).trim().split('\n').length;
      assert.equal(leasesAfter - leasesBefore, 2, '21 puts on 2 expiry seconds: 2 leases');
      await until('20 puts at B', () => view.keys.size === 21);
      await until('the 20 expiry deletes at B', () => view.events.filter((e) => e.type === 'delete').length === 20);
      assert.deepEqual([...view.keys.keys()], ['grants/later']);
    });
  });

  it('leader SIGKILL during a stream of puts: writes resume, the watcher resumes, nothing lost', async (t) => {
    const open = opener(t);
    await withEtcd({ members: 3 }, async (etcd) => {
      const writer = open(etcd, 'host-w').engine;
      const watcher = open(etcd, 'host-r').engine;
      const view = new View();
      watcher.watch('stream/', view.onEvents, view.onResync);
      await until('the first snapshot', () => view.resyncs.length === 1);
      // the watcher's member leads: killing the leader also breaks the watch stream
      const killed = etcd.endpoints.indexOf(watcher.member!);
      await etcd.moveLeader(killed);
      const N = 300;
      for (let i = 0; i < N; i++) {
        if (i === 100) await etcd.kill(killed);
        await putSurely(writer, `stream/k${String(i).padStart(3, '0')}`, `v${i}`);
      }
      await until(`all ${N} keys at the watcher`, () => view.keys.size === N, 120_000);
      for (let i = 0; i < N; i++) assert.equal(view.keys.get(`stream/k${String(i).padStart(3, '0')}`), `v${i}`);
      // writes and watches work on the remaining members
      await writer.put('stream/after', 'x');
      await until('a put after the kill', () => view.keys.has('stream/after'));
      assert.notEqual(writer.member, etcd.endpoints[killed]);
      assert.notEqual(watcher.member, etcd.endpoints[killed]);
      assert.equal(writer.state, 'connected');
      t.diagnostic(`watcher resyncs: ${view.resyncs.join(', ')} (only 'start': it resumed from its revision)`);
    });
  });

  it('all members stopped: unreachable once, calls fail fast; restarted: connected and a resync', async (t) => {
    const open = opener(t);
    await withEtcd({ members: 3 }, async (etcd) => {
      const a = open(etcd, 'host-a', { unreachableAfterMs: 1500 });
      const b = open(etcd, 'host-b', { unreachableAfterMs: 1500 });
      const view = new View();
      b.engine.watch('grants/', view.onEvents, view.onResync);
      await until('the first snapshot', () => view.resyncs.length === 1);
      await a.engine.put('grants/before', '1');
      await until('the first put', () => view.keys.has('grants/before'));
      await etcd.stopAll();
      await until('A unreachable', () => a.engine.state === 'unreachable');
      await until('B unreachable', () => b.engine.state === 'unreachable');
      await assert.rejects(a.engine.put('grants/during', '1'), FleetUnavailableError);
      assert.match(a.engine.stateReason, /no etcd member usable/);
      await sleep(3000); // several probe rounds fail: still one transition
      await etcd.restartAll();
      await until('A connected', () => a.engine.state === 'connected', 120_000);
      await until('B connected', () => b.engine.state === 'connected', 120_000);
      await until('a resync at B', () => view.resyncs.includes('reconnected'), 120_000);
      assert.deepEqual(a.states.map(([s]) => s), ['connected', 'unreachable', 'connected']);
      assert.deepEqual(b.states.map(([s]) => s), ['connected', 'unreachable', 'connected']);
      // a change made while B was away is in its view, and new events flow again
      await a.engine.put('grants/after', '1');
      await until('a put after the restart', () => view.keys.has('grants/after'));
      assert.ok(view.keys.has('grants/before'));
    });
  });

  it('list and the start snapshot page through more keys than one range request returns', async (t) => {
    const open = opener(t);
    await withEtcd({ members: 1 }, async (etcd) => {
      const a = open(etcd, 'host-a').engine;
      const n = 2 * LIST_PAGE + 17;
      for (let i = 0; i < n; i += 100) {
        await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, j) => a.put(`grants/k${String(i + j).padStart(5, '0')}`, `v${i + j}`)));
      }
      await a.put('other/x', 'x');
      const snap = await a.list('grants/');
      assert.equal(snap.items.length, n);
      assert.equal(new Set(snap.items.map((kv) => kv.key)).size, n);
      assert.equal(snap.items[n - 1]!.value.toString(), `v${n - 1}`);
      assert.ok(snap.items.every((kv) => kv.revision <= snap.revision));
      const view = new View();
      a.watch('grants/', view.onEvents, view.onResync);
      await until('the start snapshot', () => view.resyncs.length === 1);
      assert.equal(view.keys.size, n);
    });
  });

  it('a compaction past the watch revision: full reload through onResync', async (t) => {
    const open = opener(t);
    await withEtcd({ members: 1 }, async (etcd) => {
      const a = open(etcd, 'host-a').engine;
      for (let i = 0; i < 10; i++) await a.put(`grants/k${i}`, `v${i}`);
      await a.delete('grants/k3');
      const snap = await a.list('grants/');
      etcd.compact();
      const view = new View();
      a.watch('grants/', view.onEvents, view.onResync, { fromRevision: 2n });
      await until('the compacted resync', () => view.resyncs.length === 1);
      assert.deepEqual(view.resyncs, ['compacted']);
      assert.deepEqual([...view.keys.keys()].sort(), snap.items.map((kv) => kv.key).sort());
      await a.put('grants/new', 'x');
      await until('an event after the reload', () => view.keys.has('grants/new'));
    });
  });

  it('an idle watch stays: progress requests answer the watchdog, no re-creation', async (t) => {
    const sink = new LogSink();
    const open = opener(t, sink);
    await withEtcd({ members: 1 }, async (etcd) => {
      const a = open(etcd, 'host-a', { watchQuietMs: 1000, heartbeat: false }).engine;
      const view = new View();
      a.watch('grants/', view.onEvents, view.onResync);
      await until('the first snapshot', () => view.resyncs.length === 1);
      await sleep(5000); // five quiet periods without a single write
      assert.doesNotMatch(sink.text, /watch quiet/);
      assert.doesNotMatch(sink.text, /leaving etcd member/);
      await a.put('grants/x', 'x');
      await until('an event after the idle time', () => view.keys.has('grants/x'));
      assert.deepEqual(view.resyncs, ['start']);
    });
  });

  it('a silent member (SIGSTOP): the engine and its watch move to another member, nothing lost', async (t) => {
    const open = opener(t);
    await withEtcd({ members: 3 }, async (etcd) => {
      // pause a follower (a paused leader stalls the whole cluster until an election)
      const leader = await etcd.leader();
      const followers = [0, 1, 2].filter((i) => i !== leader);
      const watcher = open(etcd, 'host-r', { watchQuietMs: 2000, endpoints: followers.map((i) => etcd.endpoints[i]!) }).engine;
      const view = new View();
      watcher.watch('grants/', view.onEvents, view.onResync);
      await until('the first snapshot', () => view.resyncs.length === 1);
      const p = etcd.endpoints.indexOf(watcher.member!);
      const q = followers.find((i) => i !== p)!;
      const writer = open(etcd, 'host-w', { endpoints: [etcd.endpoints[leader]!, etcd.endpoints[q]!] }).engine;
      etcd.pause(p);
      try {
        for (let i = 0; i < 20; i++) await putSurely(writer, `grants/k${i}`, 'x');
        await until('20 puts at the watcher', () => view.keys.size === 20, 120_000);
        assert.equal(watcher.member, etcd.endpoints[q]);
      } finally {
        etcd.resume(p);
      }
    });
  });

  it('auth: a read-only user cannot write, a prefix-limited role cannot write outside it; no credentials in logs', async (t) => {
    const sink = new LogSink();
    const open = opener(t, sink);
    await withEtcd({ members: 1, auth: true }, async (etcd) => {
      const auth = etcd.auth!;
      const writer = open(etcd, 'host-w', { auth: auth.writer }).engine;
      const reader = open(etcd, 'host-r', { auth: auth.reader }).engine;
      await writer.put('grants/ok', 'x', { expiresAtSec: nowSec() + 30 });
      assert.equal(await writer.claim('nonces/1', 'host-w', nowSec() + 30), true);
      // the reader sees everything under the prefix...
      const view = new View();
      reader.watch('', view.onEvents, view.onResync);
      await until('the reader snapshot', () => view.keys.has('grants/ok'));
      // ...and can write none of it
      await assert.rejects(reader.put('grants/evil', 'x'), (err: Error) => {
        assert.ok(err instanceof FleetAccessError, String(err));
        assert.match(err.message, /permission denied/);
        assert.match(err.message, new RegExp(`read-write access to the keys under ${etcd.prefix}`));
        return true;
      });
      await assert.rejects(reader.claim('nonces/2', 'host-r', nowSec() + 30), FleetAccessError);
      await assert.rejects(reader.delete('grants/ok'), FleetAccessError);
      // the limited writer cannot write outside its prefix
      const outside = open(etcd, 'host-x', { auth: auth.writer, prefix: '/elsewhere/' }).engine;
      await assert.rejects(outside.put('grants/x', 'x'), FleetAccessError);
      await assert.rejects(outside.list(''), FleetAccessError);
      // bad password: unreachable, with a reason that names the refusal and not the password
      const wrongPassword = 'not-the-password-' + auth.writer.password;
      const bad = open(etcd, 'host-b', { auth: { username: auth.writer.username, password: wrongPassword }, unreachableAfterMs: 500 });
      await until('bad credentials unreachable', () => bad.engine.state === 'unreachable');
      assert.match(bad.engine.stateReason, /refused the credentials/);
      await until('a heartbeat from the writer', async () => (await writer.hosts()).some((h) => h.host === 'host-w'));
      await Promise.all([writer.close(), reader.close(), outside.close(), bad.engine.close()]);
      assert.ok(sink.text.length > 0, 'engines logged something');
      for (const secret of [auth.writer.password, auth.reader.password, auth.root.password, wrongPassword]) {
        assert.ok(!sink.text.includes(secret), 'a password reached the logs');
        assert.ok(!bad.states.some(([, r]) => r.includes(secret)), 'a password reached a state reason');
      }
    });
  });

  it('TLS with client certificates: works with them, unreachable without (key material never logged)', async (t) => {
    const sink = new LogSink();
    const open = opener(t, sink);
    await withEtcd({ members: 1, tls: true }, async (etcd) => {
      const tls = etcd.tls!;
      const a = open(etcd, 'host-a', { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } }).engine;
      const view = new View();
      a.watch('grants/', view.onEvents, view.onResync);
      await a.put('grants/x', 'over tls', { expiresAtSec: nowSec() + 30 });
      await until('the put over TLS', () => view.keys.get('grants/x') === 'over tls');
      assert.ok(etcd.endpoints[0]!.startsWith('https://'));
      // the server requires a client certificate: the CA alone is not enough
      const noCert = open(etcd, 'host-b', { tls: { ca: tls.ca }, unreachableAfterMs: 500 });
      await until('no client certificate: unreachable', () => noCert.engine.state === 'unreachable');
      // a CA that did not sign the server's certificate: refused too
      const other = open(etcd, 'host-c', { tls: { ca: tls.cert, cert: tls.cert, key: tls.key }, unreachableAfterMs: 500 });
      await until('wrong CA: unreachable', () => other.engine.state === 'unreachable');
      await Promise.all([a.close(), noCert.engine.close(), other.engine.close()]);
      const keyBody = tls.key.toString().split('\n').filter((l) => l.length > 40)[0]!;
      assert.ok(!sink.text.includes(keyBody), 'the private key reached the logs');
    });
  });

  it('open() never throws for an unreachable cluster; bad options throw', async (t) => {
    const open = opener(t);
    const fake = { endpoints: ['http://127.0.0.1:1'], prefix: '/kg-none/' } as unknown as EtcdCluster;
    const e = open(fake, 'host-a', { unreachableAfterMs: 300 });
    await until('unreachable', () => e.engine.state === 'unreachable');
    await assert.rejects(e.engine.list(''), FleetUnavailableError);
    const logger = createLogger({ level: 'silent' });
    assert.throws(() => FleetEngine.open({ endpoints: [], prefix: '/p/', hostId: 'h', logger }), /no etcd endpoints/);
    assert.throws(() => FleetEngine.open({ endpoints: ['http://a:1', 'https://b:1'], prefix: '/p/', hostId: 'h', logger }), /mix http/);
    assert.throws(() => FleetEngine.open({ endpoints: ['http://a:1'], prefix: '', hostId: 'h', logger }), /prefix/);
    assert.throws(() => FleetEngine.open({ endpoints: ['http://a:1'], prefix: '/p/', hostId: 'h', logger, tls: { ca: Buffer.from('x') } }), /https/);
  });
});
