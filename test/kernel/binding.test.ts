/**
 * The libbpf binding (src/bpf/) against the real kernel, with test/fixtures/binding.bpf.c:
 * struct layouts against a C oracle, object load, map operations, batch and per-CPU maps,
 * mmapped globals, BPF_PROG_TEST_RUN, ring buffer on the event loop, pins, XDP links on a
 * veth pair in throwaway namespaces, libbpf's log, errors.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import koffi, { type TypeObject } from 'koffi';
import { pino } from 'pino';
import {
  BPF_ANY,
  BPF_EXIST,
  BPF_F_MMAPABLE,
  BPF_F_NO_PREALLOC,
  BPF_NOEXIST,
  BpfError,
  BpfLink,
  BpfMap,
  BpfObject,
  MapLayoutError,
  MapType,
  ProgType,
  RingBufferReader,
  attachXdp,
  check,
  checkPtr,
  ensureBpffs,
  errnoName,
  ifIndex,
  ifName,
  isBpffs,
  mapInfo,
  mmapMap,
  numPossibleCpus,
  progInfo,
  progTestRun,
  setLibbpfLogger,
  unpin,
  waitForPrograms,
  xdpQuery,
} from '../../src/bpf/index.js';
import * as raw from '../../src/bpf/libbpf.js';
import { setFormatBufferSizeForTests } from '../../src/bpf/log.js';
import { IN_CI, ROOT, fixture, kernelSuite, randomSuffix, withNetns, withPinDir } from '../helpers/kernel.js';
import { udpFrom } from '../helpers/packets.js';

const XDP_ABORTED = 0;
const XDP_DROP = 1;
const XDP_PASS = 2;
const XDP_TX = 3;
const KB_COPY_KEY = 0xffffffff;
const KB_MAGIC = 0x6b6e6f636b676174n;

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};

/** A minimal Ethernet + IPv4 + UDP frame (198.18.0.1 -> 198.18.0.2), `extra` payload bytes. */
function udpFrame(extra = 16): Buffer {
  return udpFrom({ src: '198.18.0.1', dst: '198.18.0.2' }, 40000, 9, Buffer.alloc(extra));
}

interface KbRecord {
  seen: bigint;
  globalIn: bigint;
  len: number;
  ifindex: number;
  magic: bigint;
}

function decodeRecord(b: Buffer): KbRecord {
  assert.equal(b.length, 32, 'kb_record is 32 bytes');
  return {
    seen: b.readBigUInt64LE(0),
    globalIn: b.readBigUInt64LE(8),
    len: b.readUInt32LE(16),
    ifindex: b.readUInt32LE(20),
    magic: b.readBigUInt64LE(24),
  };
}

/** Open and load the fixture; closed after the test. */
function loadFixture(t: TestContext, setup?: (obj: BpfObject) => void): BpfObject {
  const obj = BpfObject.open(fixture('binding'));
  t.after(() => obj.close());
  setup?.(obj);
  obj.load();
  return obj;
}

/** Resolve with `n` records (or reject after timeoutMs); records arrive via the event loop. */
function collect(records: Buffer[], n: number, timeoutMs = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const tick = (): void => {
      if (records.length >= n) resolve();
      else if (Date.now() > deadline) reject(new Error(`${records.length} ring buffer records after ${timeoutMs} ms, ${n} expected`));
      else setTimeout(tick, 5);
    };
    tick();
  });
}

function sumPerCpu(m: BpfMap, key: Buffer): bigint {
  return m.lookupPerCpu(key).reduce((s, b) => s + b.readBigUInt64LE(0), 0n);
}

function memoryLogger(): { logger: pino.Logger; records: { level: number; msg: string; [k: string]: unknown }[] } {
  const records: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void records.push(JSON.parse(s) as { level: number; msg: string }) });
  return { logger, records };
}

// ---- layouts: koffi declarations vs the installed C headers ----------------------------

/** C expression for the offset of a koffi member in the C struct, or null to skip it. */
const C_MEMBER: Record<string, Record<string, string | null>> = {
  bpf_link_create_opts: { target: 'perf_event' },
  bpf_prog_info: { gpl_compatible: null },
  bpf_link_info_xdp: { ifindex: 'xdp.ifindex' },
};
const C_STRUCT: Record<string, string> = { bpf_link_info_xdp: 'bpf_link_info' };
const STRUCTS: [string, TypeObject, boolean][] = [
  ['bpf_map_batch_opts', raw.bpf_map_batch_opts, true],
  ['bpf_map_create_opts', raw.bpf_map_create_opts, true],
  ['bpf_link_create_opts', raw.bpf_link_create_opts, true],
  ['bpf_link_update_opts', raw.bpf_link_update_opts, true],
  ['bpf_xdp_query_opts', raw.bpf_xdp_query_opts, true],
  ['bpf_test_run_opts', raw.bpf_test_run_opts, true],
  ['bpf_map_info', raw.bpf_map_info, true],
  ['bpf_prog_info', raw.bpf_prog_info, true],
  ['bpf_link_info_xdp', raw.bpf_link_info_xdp, false], // deliberately the head of the struct only
];
const CONSTANTS: [string, number][] = [
  ['BPF_ANY', raw.BPF_ANY],
  ['BPF_NOEXIST', raw.BPF_NOEXIST],
  ['BPF_EXIST', raw.BPF_EXIST],
  ['BPF_F_LOCK', raw.BPF_F_LOCK],
  ['BPF_F_NO_PREALLOC', raw.BPF_F_NO_PREALLOC],
  ['BPF_F_RDONLY_PROG', raw.BPF_F_RDONLY_PROG],
  ['BPF_F_MMAPABLE', raw.BPF_F_MMAPABLE],
  ['BPF_XDP', raw.BPF_XDP],
  ['BPF_PROG_TYPE_XDP', raw.ProgType.XDP],
  ['XDP_FLAGS_UPDATE_IF_NOEXIST', raw.XDP_FLAGS_UPDATE_IF_NOEXIST],
  ['XDP_FLAGS_SKB_MODE', raw.XDP_FLAGS_SKB_MODE],
  ['XDP_FLAGS_DRV_MODE', raw.XDP_FLAGS_DRV_MODE],
  ['XDP_FLAGS_HW_MODE', raw.XDP_FLAGS_HW_MODE],
  ['XDP_FLAGS_REPLACE', raw.XDP_FLAGS_REPLACE],
  ['XDP_ATTACHED_NONE', raw.XDP_ATTACHED_NONE],
  ['XDP_ATTACHED_DRV', raw.XDP_ATTACHED_DRV],
  ['XDP_ATTACHED_SKB', raw.XDP_ATTACHED_SKB],
  ['XDP_ATTACHED_HW', raw.XDP_ATTACHED_HW],
  ['XDP_ATTACHED_MULTI', raw.XDP_ATTACHED_MULTI],
  ['LIBBPF_WARN', raw.LIBBPF_WARN],
  ['LIBBPF_INFO', raw.LIBBPF_INFO],
  ['LIBBPF_DEBUG', raw.LIBBPF_DEBUG],
  ['BPF_OBJ_NAME_LEN', raw.BPF_OBJ_NAME_LEN],
  ['BPF_FS_MAGIC', raw.BPF_FS_MAGIC],
  ['PROT_READ', raw.PROT_READ],
  ['PROT_WRITE', raw.PROT_WRITE],
  ['MAP_SHARED', raw.MAP_SHARED],
  ['sizeof(struct xdp_md)', 24],
  ['offsetof(struct statfs, f_type)', 0],
  ...Object.entries(raw.MapType).map(([k, v]): [string, number] => [`BPF_MAP_TYPE_${k}`, v]),
];

function oracleSource(): string {
  const lines: string[] = [];
  for (const [name, type, whole] of STRUCTS) {
    const c = `struct ${C_STRUCT[name] ?? name}`;
    if (whole) lines.push(`  P("sizeof(${name})", sizeof(${c}));`);
    for (const m of Object.values(type.members ?? {})) {
      if (m.name.startsWith('_')) continue;
      const member = C_MEMBER[name]?.[m.name];
      if (member === null) continue;
      lines.push(`  P("offsetof(${name}, ${m.name})", offsetof(${c}, ${member ?? m.name}));`);
    }
  }
  for (const [name] of CONSTANTS) lines.push(`  P("${name}", (unsigned long)(${name}));`);
  return [
    '#include <stddef.h>',
    '#include <stdio.h>',
    '#include <sys/mman.h>',
    '#include <sys/vfs.h>',
    '#include <linux/magic.h>',
    '#include <linux/if_link.h>',
    '#include <bpf/bpf.h>',
    '#include <bpf/libbpf.h>',
    '#define P(name, v) printf("%s=%lu\\n", name, (unsigned long)(v))',
    'int main(void) {',
    ...lines,
    '  return 0;',
    '}',
    '',
  ].join('\n');
}

function koffiValue(name: string): number | undefined {
  const m = /^(sizeof|offsetof)\((\w+)(?:, (\w+))?\)$/.exec(name);
  if (m) {
    const entry = STRUCTS.find(([n]) => n === m[2]);
    if (!entry) return undefined;
    return m[1] === 'sizeof' ? entry[1].size : koffi.offsetof(entry[1], m[3] ?? '');
  }
  return CONSTANTS.find(([n]) => n === name)?.[1];
}

describe('libbpf 1.1.2 layouts (C oracle)', () => {
  it('every opts/info struct and constant matches the installed headers', (t) => {
    const cc = spawnSync('cc', ['--version'], { encoding: 'utf8' });
    if (cc.status !== 0) {
      if (IN_CI) assert.fail('cc is needed for the layout oracle');
      t.skip('no C compiler (cc) for the layout oracle');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'kg-test-oracle-'));
    try {
      const src = join(dir, 'oracle.c');
      writeFileSync(src, oracleSource());
      const build = spawnSync('cc', ['-Wall', '-Werror', '-o', join(dir, 'oracle'), src], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(build.status, 0, build.stderr);
      const out = spawnSync(join(dir, 'oracle'), { encoding: 'utf8', timeout: 10_000 });
      assert.equal(out.status, 0, out.stderr);
      const pairs = out.stdout.trim().split('\n').map((l) => l.split('=') as [string, string]);
      assert.ok(pairs.length > 60, `oracle printed ${pairs.length} values`);
      const mismatches: string[] = [];
      for (const [name, value] of pairs) {
        const mine = koffiValue(name);
        if (mine !== Number(value)) mismatches.push(`${name}: C ${value}, binding ${mine}`);
      }
      assert.deepEqual(mismatches, []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- errors (no kernel needed) ---------------------------------------------------------

describe('BpfError', () => {
  it('names errno numbers', () => {
    assert.equal(errnoName(2), 'ENOENT');
    assert.equal(errnoName(7), 'E2BIG');
    assert.equal(errnoName(11), 'EAGAIN');
    assert.equal(errnoName(95), 'EOPNOTSUPP');
    assert.equal(errnoName(524), 'ENOTSUPP');
    assert.equal(errnoName(4001), 'LIBBPF_ERRNO__FORMAT');
  });

  it('turns -errno returns into errors with advice', () => {
    assert.equal(check(3, 'x'), 3);
    assert.throws(
      () => check(-1, 'bpf_map_update_elem(kg_grants)'),
      (err: unknown) => {
        assert.ok(err instanceof BpfError);
        assert.equal(err.op, 'bpf_map_update_elem(kg_grants)');
        assert.equal(err.errno, 1);
        assert.equal(err.code, 'EPERM');
        assert.match(err.message, /^bpf_map_update_elem\(kg_grants\): .*\(EPERM\): run as root \(CAP_BPF, CAP_NET_ADMIN\)$/);
        return true;
      },
    );
    assert.throws(() => check(-7, 'bpf_map_update_elem(kg_grants)'), /\(E2BIG\): map is full/);
    assert.throws(() => check(-17, 'bpf_map_update_elem(kg_grants)'), /\(EEXIST\): the element exists/);
    assert.throws(() => check(-22, 'bpf_map_lookup_batch(x)'), /\(EINVAL\): invalid argument/);
    assert.throws(() => check(-2, 'bpf_obj_get(/sys/fs/bpf/nothing)', { path: '/sys/fs/bpf/nothing' }), /no gate is pinned at \/sys\/fs\/bpf\/nothing/);
  });

  it('turns NULL + errno into errors', () => {
    koffi.errno(5);
    assert.throws(() => checkPtr(null, 'ring_buffer__new'), (err: unknown) => err instanceof BpfError && err.code === 'EIO');
    assert.equal(checkPtr(42n, 'x'), 42n);
  });

  it('reports missing and malformed object files', (t) => {
    const { logger, records } = memoryLogger();
    setLibbpfLogger(logger);
    t.after(() => setLibbpfLogger(null));
    assert.throws(
      () => BpfObject.open('/nonexistent/kg.bpf.o'),
      (err: unknown) =>
        err instanceof BpfError &&
        err.code === 'ENOENT' &&
        err.op === 'bpf_object__open_file(/nonexistent/kg.bpf.o)' &&
        err.log.some((l) => l.includes('failed to open /nonexistent/kg.bpf.o')),
    );
    assert.ok(records.some((r) => r.level === 40 && r.msg === 'elf: failed to open /nonexistent/kg.bpf.o: No such file or directory'));
    const dir = mkdtempSync(join(tmpdir(), 'kg-test-'));
    try {
      const bogus = join(dir, 'bogus.bpf.o');
      writeFileSync(bogus, 'not an ELF file');
      assert.throws(
        () => BpfObject.open(bogus),
        (err: unknown) => err instanceof BpfError && err.code === 'LIBBPF_ERRNO__FORMAT' && /not a proper ELF object/.test(err.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- kernel ----------------------------------------------------------------------------

kernelSuite('libbpf binding on the kernel', () => {
  before(() => {
    fixture('binding');
    fixture('binding-bad');
  });
  after(() => setLibbpfLogger(null));

  it('opens, sizes and loads an object; maps carry the kernel info', (t) => {
    const obj = loadFixture(t, (o) => {
      assert.deepEqual(o.programNames(), ['kb_xdp']);
      for (const m of ['kb_hash', 'kb_verdict', 'kb_count', 'kb_events']) assert.ok(o.mapNames().includes(m), m);
      o.setMaxEntries('kb_hash', 128);
      assert.equal(o.maxEntries('kb_hash'), 128);
      assert.throws(() => o.map('kb_hash'), /needs load\(\) first/);
      assert.throws(() => o.setMaxEntries('kb_nope', 1), (err: unknown) => err instanceof BpfError && /has no map named kb_nope/.test(err.message));
    });
    assert.ok(obj.isLoaded);
    assert.throws(() => obj.setMaxEntries('kb_hash', 1), /must come before load\(\)/);

    const hash = obj.map('kb_hash');
    assert.equal(obj.map('kb_hash'), hash, 'one BpfMap per map');
    hash.close(); // does not own the fd: harmless
    const hash2 = obj.map('kb_hash');
    assert.notEqual(hash2, hash);
    hash2.lookup(u32(1));
    assert.deepEqual([hash.type, hash.keySize, hash.valueSize, hash.maxEntries], [MapType.HASH, 4, 8, 128]);
    assert.ok(hash.id > 0);
    assert.equal(mapInfo(hash2.fd).name, 'kb_hash');
    const verdict = obj.map('kb_verdict');
    assert.deepEqual([verdict.type, verdict.keySize, verdict.valueSize, verdict.maxEntries], [MapType.ARRAY, 4, 4, 4]);
    const count = obj.map('kb_count');
    assert.equal(count.type, MapType.PERCPU_ARRAY);
    assert.ok(count.isPerCpu);
    assert.equal(count.lookupSize, 8 * numPossibleCpus());
    const events = obj.map('kb_events');
    assert.deepEqual([events.type, events.maxEntries], [MapType.RINGBUF, 4096]);
    const bss = obj.map('.bss');
    assert.equal(bss.type, MapType.ARRAY);
    assert.ok((bss.flags & BPF_F_MMAPABLE) !== 0);
    assert.deepEqual([bss.keySize, bss.valueSize, bss.maxEntries], [4, 16, 1]);

    const fd = obj.programFd('kb_xdp');
    const info = progInfo(fd);
    assert.equal(info.type, ProgType.XDP);
    assert.equal(info.name, 'kb_xdp');
    assert.throws(() => obj.programFd('kb_nope'), /has no program named kb_nope \(it has: kb_xdp\)/);

    obj.close();
    assert.throws(() => hash2.lookup(u32(1)), /map kb_hash is closed/);
    assert.throws(() => obj.map('kb_hash'), /is closed/);
    obj.close(); // idempotent
  });

  it('checks key and value sizes with a message that says what to do', (t) => {
    const obj = loadFixture(t);
    const hash = obj.map('kb_hash');
    hash.expectSizes(4, 8);
    assert.throws(
      () => hash.expectSizes(4, 16),
      (err: unknown) => {
        assert.ok(err instanceof MapLayoutError);
        assert.equal(
          err.message,
          'map kb_hash: value size is 8 bytes in the kernel, 16 expected: the pinned gate was built from another knock.h; ' +
            'run `knockgate detach` and start again',
        );
        assert.deepEqual(err.actual, { keySize: 4, valueSize: 8 });
        assert.deepEqual(err.expected, { keySize: 4, valueSize: 16 });
        return true;
      },
    );
    assert.throws(() => hash.expectSizes(16, 8), /key size is 4 bytes in the kernel, 16 expected/);
  });

  it('looks up, updates, deletes and iterates', (t) => {
    const obj = loadFixture(t);
    const hash = obj.map('kb_hash');
    for (let i = 1; i <= 10; i++) hash.update(u32(i), u64(BigInt(i * 100)));
    assert.equal(hash.lookup(u32(3))?.readBigUInt64LE(0), 300n);
    assert.equal(hash.lookup(u32(42)), null);
    const out = Buffer.alloc(8);
    assert.equal(hash.lookupInto(u32(4), out), true);
    assert.equal(out.readBigUInt64LE(0), 400n);
    assert.equal(hash.lookupInto(u32(42), out), false);

    assert.throws(() => hash.update(u32(3), u64(1n), BPF_NOEXIST), (err: unknown) => err instanceof BpfError && err.code === 'EEXIST');
    assert.throws(() => hash.update(u32(99), u64(1n), BPF_EXIST), (err: unknown) => err instanceof BpfError && err.code === 'ENOENT');
    hash.update(u32(3), u64(333n), BPF_EXIST);
    assert.equal(hash.lookup(u32(3))?.readBigUInt64LE(0), 333n);
    assert.throws(() => hash.lookup(Buffer.alloc(2)), /key is 2 bytes, the map's keys are 4/);
    assert.throws(() => hash.update(u32(1), Buffer.alloc(4)), /value is 4 bytes, the map's values are 8/);

    assert.equal(hash.delete(u32(10)), true);
    assert.equal(hash.delete(u32(10)), false);

    const keys = [...hash.keys()].map((k) => k.readUInt32LE(0)).sort((a, b) => a - b);
    assert.deepEqual(keys, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const entries = new Map([...hash.entries()].map(([k, v]) => [k.readUInt32LE(0), v.readBigUInt64LE(0)]));
    assert.equal(entries.get(3), 333n);
    assert.equal(entries.size, 9);

    // deleting the key just yielded does not lose or repeat the others
    const seen: number[] = [];
    for (const k of hash.keys()) {
      seen.push(k.readUInt32LE(0));
      assert.equal(hash.delete(k), true);
    }
    assert.deepEqual(seen.sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual([...hash.keys()], []);

    // arrays: every index is a key, deleting is not possible
    const verdict = obj.map('kb_verdict');
    assert.deepEqual([...verdict.keys()].map((k) => k.readUInt32LE(0)), [0, 1, 2, 3]);
    assert.throws(() => verdict.delete(u32(0)), (err: unknown) => err instanceof BpfError && err.code === 'EINVAL');

    // a full hash map says so
    const small = BpfMap.create(MapType.HASH, 'kg_t_small', 4, 4, 4);
    t.after(() => small.close());
    for (let i = 0; i < 4; i++) small.update(u32(i), u32(i));
    assert.throws(
      () => small.update(u32(4), u32(4)),
      (err: unknown) => err instanceof BpfError && err.code === 'E2BIG' && /map is full/.test(err.message) && err.op === 'bpf_map_update_elem(kg_t_small)',
    );
  });

  it('updates in batches, and falls back to single updates where batches are unsupported', (t) => {
    const obj = loadFixture(t);
    const verdict = obj.map('kb_verdict');
    const keys = Buffer.concat([0, 1, 2, 3].map(u32));
    const values = Buffer.concat([7, 8, 9, 10].map(u32));
    assert.equal(verdict.updateBatch(keys, values, 4), 4);
    assert.deepEqual([0, 1, 2, 3].map((i) => verdict.lookup(u32(i))?.readUInt32LE(0)), [7, 8, 9, 10]);
    assert.throws(() => verdict.updateBatch(keys, values, 5), /5 keys need 20 bytes/);

    const hash = obj.map('kb_hash');
    const n = 50;
    const hk = Buffer.alloc(4 * n);
    const hv = Buffer.alloc(8 * n);
    for (let i = 0; i < n; i++) {
      hk.writeUInt32LE(1000 + i, 4 * i);
      hv.writeBigUInt64LE(BigInt(i), 8 * i);
    }
    assert.equal(hash.updateBatch(hk, hv, n), n);
    assert.equal(hash.lookup(u32(1049))?.readBigUInt64LE(0), 49n);

    // LPM tries (BPF_F_NO_PREALLOC, as kg_allow) take batches on recent kernels
    const lpm = BpfMap.create(MapType.LPM_TRIE, 'kg_t_lpm', 8, 4, 16, { flags: BPF_F_NO_PREALLOC });
    t.after(() => lpm.close());
    const lk = Buffer.alloc(8 * 3);
    const lv = Buffer.alloc(4 * 3);
    for (let i = 0; i < 3; i++) {
      lk.writeUInt32LE(32, 8 * i);
      Buffer.from([198, 18, i, 1]).copy(lk, 8 * i + 4);
      lv.writeUInt32LE(i + 1, 4 * i);
    }
    assert.equal(lpm.updateBatch(lk, lv, 3), 3);
    assert.equal(lpm.lookup(lk.subarray(16, 24))?.readUInt32LE(0), 3);
    assert.equal([...lpm.keys()].length, 3);

    // device maps have no batch update (ENOTSUPP): the binding falls back to one update per
    // element. Values are ifindex 1 (lo).
    const dev = BpfMap.create(MapType.DEVMAP, 'kg_t_dev', 4, 4, 8);
    t.after(() => dev.close());
    const dk = Buffer.concat([0, 1, 2, 5].map(u32));
    const dv = Buffer.concat([1, 1, 1, 1].map(u32));
    const direct = raw.libbpf().bpf_map_update_batch(dev.fd, dk, dv, new Uint32Array([4]), { sz: 24, elem_flags: 0, flags: 0 });
    assert.ok(direct < 0 && ['EINVAL', 'ENOTSUPP', 'EOPNOTSUPP'].includes(errnoName(-direct)), `raw batch on DEVMAP returned ${direct}`);
    assert.equal(dev.updateBatch(dk, dv, 4), 4);
    for (const i of [0, 1, 2, 5]) assert.equal(dev.lookup(u32(i))?.readUInt32LE(0), 1, `devmap[${i}]`);
    assert.equal(dev.lookup(u32(3)), null);
  });

  it('reads per-CPU values of every possible CPU', (t) => {
    const obj = loadFixture(t);
    const count = obj.map('kb_count');
    const prog = obj.programFd('kb_xdp');
    progTestRun(prog, udpFrame(), { repeat: 5 });
    progTestRun(prog, udpFrame());
    const perCpu = count.lookupPerCpu(u32(0));
    assert.equal(perCpu.length, numPossibleCpus());
    for (const b of perCpu) assert.equal(b.length, 8);
    assert.equal(sumPerCpu(count, u32(0)), 6n);
    assert.throws(() => obj.map('kb_hash').lookupPerCpu(u32(0)), /not a per-CPU map/);
  });

  it('mmaps .bss: stores through the view reach the program and the map, and back', (t) => {
    const obj = loadFixture(t);
    const bssMap = obj.map('.bss');
    const bss = mmapMap(bssMap);
    t.after(() => bss.close());
    assert.equal(bss.size, 16);
    assert.equal(bss.length % 4096, 0);
    assert.ok(bss.length >= 4096);

    const prog = obj.programFd('kb_xdp');
    const hash = obj.map('kb_hash');
    bss.view.setBigUint64(0, 0x1122334455667788n, true); // kb_globals.in, one aligned store
    progTestRun(prog, udpFrame());
    assert.equal(hash.lookup(u32(KB_COPY_KEY))?.readBigUInt64LE(0), 0x1122334455667788n, 'the program read the store');
    assert.equal(bss.view.getBigUint64(8, true), 1n, 'the program counted into kb_globals.seen');
    progTestRun(prog, udpFrame(), { repeat: 3 });
    assert.equal(bss.view.getBigUint64(8, true), 4n);

    // the same memory through bpf_map_lookup_elem / bpf_map_update_elem on the map fd
    const v = bssMap.lookup(u32(0));
    assert.equal(v?.readBigUInt64LE(0), 0x1122334455667788n);
    assert.equal(v?.readBigUInt64LE(8), 4n);
    const nv = Buffer.alloc(16);
    nv.writeBigUInt64LE(5n, 0);
    nv.writeBigUInt64LE(100n, 8);
    bssMap.update(u32(0), nv);
    assert.equal(bss.view.getBigUint64(0, true), 5n);
    assert.equal(bss.bytes[8], 100);
    // a single-word store leaves the neighbouring word alone
    bss.view.setUint32(0, 6, true);
    assert.equal(bssMap.lookup(u32(0))?.readBigUInt64LE(8), 100n);

    assert.throws(() => mmapMap(hash), /cannot be mmapped/);
    bss.close();
    assert.throws(() => bss.view, /is closed/);
    bss.close(); // idempotent
  });

  it('runs the program on packets (BPF_PROG_TEST_RUN) and returns its verdicts', (t) => {
    const obj = loadFixture(t);
    const prog = obj.programFd('kb_xdp');
    const verdict = obj.map('kb_verdict');
    const table: { stored: number; expected: number; what: string }[] = [
      { stored: 0, expected: XDP_PASS, what: '0 means pass' },
      { stored: XDP_DROP, expected: XDP_DROP, what: 'drop' },
      { stored: XDP_PASS, expected: XDP_PASS, what: 'pass' },
      { stored: XDP_TX, expected: XDP_TX, what: 'tx' },
    ];
    const frame = udpFrame(30);
    for (const row of table) {
      verdict.update(u32(0), u32(row.stored));
      const r = progTestRun(prog, frame, { dataOut: true });
      assert.equal(r.retval, row.expected, row.what);
      assert.deepEqual(r.dataOut, frame, `${row.what}: packet unchanged`);
      assert.ok(r.durationNs >= 0);
    }
    verdict.update(u32(0), u32(XDP_ABORTED));
    const r = progTestRun(prog, frame, { repeat: 100 });
    assert.equal(r.retval, XDP_PASS);
    assert.equal(r.dataOut, undefined);
    assert.equal(progTestRun(prog, frame, { ifindex: 1 }).retval, XDP_PASS);
    assert.throws(() => progTestRun(prog, frame, { ifindex: 0x7fffffff }), (err: unknown) => err instanceof BpfError && err.code === 'ENODEV');
  });

  it('delivers ring buffer records on the event loop', async (t) => {
    const obj = loadFixture(t);
    const prog = obj.programFd('kb_xdp');
    const before = koffi.stats().callbacks;
    const records: Buffer[] = [];
    const reader = new RingBufferReader(obj.map('kb_events').fd, (b) => records.push(b));
    t.after(() => reader.close());
    assert.equal(koffi.stats().callbacks, before + 1);

    const bss = mmapMap(obj.map('.bss'));
    t.after(() => bss.close());
    bss.view.setBigUint64(0, 77n, true);
    for (const extra of [10, 20, 30]) progTestRun(prog, udpFrame(extra), { ifindex: 1 });
    assert.equal(records.length, 0, 'nothing is delivered synchronously');
    await collect(records, 3);
    const recs = records.map(decodeRecord);
    assert.deepEqual(
      recs.map((r) => r.len),
      [52, 62, 72],
    );
    for (const [i, r] of recs.entries()) {
      assert.equal(r.magic, KB_MAGIC);
      assert.equal(r.globalIn, 77n);
      assert.equal(r.seen, BigInt(i + 1));
      assert.equal(r.ifindex, 1);
    }
    assert.equal(reader.records, 3);

    // errors from the handler go to onError; close() from inside the handler is safe
    const errors: unknown[] = [];
    let calls = 0;
    const r2 = new RingBufferReader(
      obj.map('kb_events').fd,
      () => {
        calls++;
        if (calls === 1) throw new Error('handler failed');
        r2.close();
      },
      { onError: (e) => errors.push(e) },
    );
    for (let i = 0; i < 4; i++) progTestRun(prog, udpFrame());
    assert.equal(r2.consume(), 2); // the handler closed the reader on the 2nd record
    assert.equal(calls, 2);
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]), /handler failed/);
    assert.ok(r2.closed);
    r2.close();
    // the records after the one that closed r2 are still in the ring
    const rest: Buffer[] = [];
    const r3 = new RingBufferReader(obj.map('kb_events').fd, (b) => rest.push(b));
    assert.equal(r3.consume(), 2);
    assert.deepEqual(
      rest.map((b) => decodeRecord(b).seen),
      [6n, 7n],
    );
    r3.close();

    reader.close();
    assert.equal(koffi.stats().callbacks, before, 'close() releases the koffi callback');
    reader.close(); // idempotent

    const { logger, records: logRecords } = memoryLogger();
    setLibbpfLogger(logger);
    t.after(() => setLibbpfLogger(null));
    assert.throws(
      () => new RingBufferReader(obj.map('kb_hash').fd, () => {}),
      (err: unknown) => err instanceof BpfError && err.code === 'EINVAL' && err.op.startsWith('ring_buffer__new'),
    );
    assert.ok(logRecords.some((r) => r.msg.includes('is not BPF_MAP_TYPE_RINGBUF')));
    assert.equal(koffi.stats().callbacks, before, 'a failed constructor releases the koffi callback');
  });

  it('does not keep the process alive after unref()', () => {
    const script = join(mkdtempSync(join(tmpdir(), 'kg-test-')), 'reader.mjs');
    try {
      writeFileSync(
        script,
        [
          `import { BpfObject, RingBufferReader } from ${JSON.stringify(`${ROOT}dist/src/bpf/index.js`)};`,
          'const obj = BpfObject.open(process.argv[2]);',
          'obj.load();',
          "const reader = new RingBufferReader(obj.map('kb_events').fd, () => {});",
          "if (process.argv[3] === 'unref') reader.unref();",
          '',
        ].join('\n'),
      );
      const unref = spawnSync(process.execPath, [script, fixture('binding'), 'unref'], { encoding: 'utf8', timeout: 10_000 });
      assert.equal(unref.signal, null, 'with unref() the process exits by itself');
      assert.equal(unref.status, 0, unref.stderr);
      const held = spawnSync(process.execPath, [script, fixture('binding'), 'ref'], { encoding: 'utf8', timeout: 1500 });
      assert.equal(held.signal, 'SIGTERM', 'without unref() the reader keeps the loop alive');
    } finally {
      rmSync(join(script, '..'), { recursive: true, force: true });
    }
  });

  it('pins maps and programs, opens pins, and reuses pinned maps at load', async (t) => {
    await withPinDir((dir) => {
      const obj = loadFixture(t);
      const hash = obj.map('kb_hash');
      hash.update(u32(5), u64(55n));
      hash.pin(`${dir}/kb_hash`);
      obj.pinProgram('kb_xdp', `${dir}/prog`);
      assert.throws(
        () => hash.pin(`${dir}/kb_hash`),
        (err: unknown) => err instanceof BpfError && err.code === 'EEXIST' && err.message.includes(`already pinned at ${dir}/kb_hash`),
      );

      const pinned = BpfMap.openPinned(`${dir}/kb_hash`);
      t.after(() => pinned.close());
      assert.equal(pinned.id, hash.id);
      assert.deepEqual([pinned.keySize, pinned.valueSize, pinned.type], [4, 8, MapType.HASH]);
      assert.equal(pinned.lookup(u32(5))?.readBigUInt64LE(0), 55n);
      pinned.update(u32(6), u64(66n));
      assert.equal(hash.lookup(u32(6))?.readBigUInt64LE(0), 66n);

      assert.throws(
        () => BpfMap.openPinned(`${dir}/nothing`),
        (err: unknown) => err instanceof BpfError && err.code === 'ENOENT' && err.message.includes(`no gate is pinned at ${dir}/nothing`),
      );

      // a second load adopts the pinned map: same map, same contents
      obj.close();
      const obj2 = loadFixture(t, (o) => o.reuseMap('kb_hash', pinned.fd));
      const again = obj2.map('kb_hash');
      assert.equal(again.id, pinned.id);
      assert.equal(again.lookup(u32(5))?.readBigUInt64LE(0), 55n);
      assert.equal(pinned.lookup(u32(5))?.readBigUInt64LE(0), 55n, 'the caller keeps its fd');

      // the globals too (what a restarted daemon does with maps/kg_globals): the pinned .bss
      // keeps its contents and the new program uses it
      const bss = obj2.map('.bss');
      const region = mmapMap(bss);
      region.view.setBigUint64(0, 4242n, true);
      region.close();
      bss.pin(`${dir}/globals`);
      const pinnedBss = BpfMap.openPinned(`${dir}/globals`);
      t.after(() => pinnedBss.close());
      const obj3 = loadFixture(t, (o) => o.reuseMap('.bss', pinnedBss.fd));
      assert.equal(obj3.map('.bss').id, pinnedBss.id);
      assert.equal(obj3.map('.bss').lookup(u32(0))?.readBigUInt64LE(0), 4242n, 'not reset to the initial value');
      progTestRun(obj3.programFd('kb_xdp'), udpFrame());
      assert.equal(obj3.map('kb_hash').lookup(u32(KB_COPY_KEY))?.readBigUInt64LE(0), 4242n);

      assert.equal(unpin(`${dir}/kb_hash`), true);
      assert.equal(unpin(`${dir}/kb_hash`), false);
      assert.equal(unpin(`${dir}/prog`), true);
    });
  });

  it('attaches XDP to a veth in a test namespace, queries, updates and detaches', async (t) => {
    const { logger, records: logRecords } = memoryLogger();
    setLibbpfLogger(logger);
    t.after(() => setLibbpfLogger(null));
    const obj = loadFixture(t);
    const obj2 = loadFixture(t);
    const prog = obj.programFd('kb_xdp');
    const prog2 = obj2.programFd('kb_xdp');
    const progId = progInfo(prog).id;
    const prog2Id = progInfo(prog2).id;

    await withPinDir(async (dir) => {
      await withNetns(async (env) => {
        const inB = <T>(fn: () => T): T => env.enter(env.nsB, fn);
        const idx = inB(() => ifIndex(env.ifB));
        assert.equal(inB(() => ifName(idx)), env.ifB);
        assert.throws(() => inB(() => ifIndex(`kg-${randomSuffix()}`)), /no interface named kg-\w+: check `ip link`/);
        assert.equal(inB(() => xdpQuery(idx)).attachMode, 'none');

        // native, with packets from the other namespace
        const link = inB(() => attachXdp(prog, idx, 'native'));
        assert.equal(link.mode, 'native');
        let q = inB(() => xdpQuery(idx));
        assert.deepEqual([q.attachMode, q.progId, q.nativeProgId], ['native', progId, progId]);
        assert.deepEqual(link.info().ifindex, idx);
        assert.equal(link.info().progId, progId);
        assert.throws(
          () => inB(() => attachXdp(prog2, idx, 'native')),
          (err: unknown) => err instanceof BpfError && ['EBUSY', 'EEXIST'].includes(err.code),
        );

        const events: Buffer[] = [];
        const reader = new RingBufferReader(obj.map('kb_events').fd, (b) => events.push(b));
        try {
          env.sendUdp(3);
          await collect(events, 1);
        } finally {
          reader.close();
        }
        for (const e of events.map(decodeRecord)) assert.equal(e.ifindex, idx);
        assert.ok(sumPerCpu(obj.map('kb_count'), u32(0)) >= 1n);

        // replace the program under the link, pin the link, close our fd: still attached
        link.update(prog2);
        q = inB(() => xdpQuery(idx));
        assert.deepEqual([q.attachMode, q.progId], ['native', prog2Id]);
        link.pin(`${dir}/link`);
        link.close();
        assert.equal(inB(() => xdpQuery(idx)).progId, prog2Id);

        const pinned = BpfLink.openPinned(`${dir}/link`);
        assert.equal(pinned.info().progId, prog2Id);
        pinned.detach();
        assert.equal(inB(() => xdpQuery(idx)).attachMode, 'none');
        pinned.close();
        unpin(`${dir}/link`);

        // generic; closing an unpinned link detaches
        const generic = inB(() => attachXdp(prog, idx, 'generic'));
        q = inB(() => xdpQuery(idx));
        assert.deepEqual([generic.mode, q.attachMode, q.genericProgId], ['generic', 'generic', progId]);
        generic.close();
        assert.equal(inB(() => xdpQuery(idx)).attachMode, 'none');

        // auto picks native on a veth, and says so
        const auto = inB(() => attachXdp(prog, idx, 'auto'));
        assert.equal(auto.mode, 'native');
        assert.equal(inB(() => xdpQuery(idx)).attachMode, 'native');
        auto.close();
        assert.ok(logRecords.some((r) => r.msg === 'XDP attached in native mode' && r['xdp_mode'] === 'native'));
      });
    });
  });

  it('routes libbpf messages to the logger and puts the verifier log in load errors', (t) => {
    const { logger, records } = memoryLogger();
    setLibbpfLogger(logger);
    t.after(() => {
      setLibbpfLogger(null);
      setFormatBufferSizeForTests(8192);
    });
    setFormatBufferSizeForTests(16); // every message takes the second vsnprintf pass

    const bad = BpfObject.open(fixture('binding-bad'));
    assert.throws(
      () => bad.load(),
      (err: unknown) => {
        assert.ok(err instanceof BpfError);
        assert.match(err.op, /^bpf_object__load\(.*binding-bad\.bpf\.o\)$/);
        assert.ok(['EACCES', 'EINVAL', 'LIBBPF_ERRNO__VERIFY'].includes(err.code), err.code);
        assert.ok(err.log.some((l) => l.includes('BEGIN PROG LOAD LOG')), 'the verifier log is attached');
        assert.ok(err.log.some((l) => /invalid access to packet|R\d+ invalid/.test(l)), err.log.join('\n'));
        assert.match(err.message, /libbpf log:/);
        return true;
      },
    );
    assert.throws(() => bad.programFd('kb_bad'), /is closed/, 'a failed load closes the object');
    const warn = records.filter((r) => r.level === 40);
    assert.ok(warn.some((r) => r.msg.includes('BEGIN PROG LOAD LOG')), 'WARN -> warn, whole message');
    assert.ok(warn.every((r) => !r.msg.endsWith('\n') && !r.msg.startsWith('libbpf: ')));
    assert.ok(records.some((r) => r.level === 20), 'DEBUG -> debug');
    assert.ok(records.every((r) => r['module'] === 'libbpf'));

    // a map the kernel refuses to create
    const obj = BpfObject.open(fixture('binding'));
    obj.setMaxEntries('kb_hash', 0);
    assert.throws(
      () => obj.load(),
      (err: unknown) =>
        err instanceof BpfError && err.code === 'EINVAL' && err.log.some((l) => l.includes("map 'kb_hash': failed to create")),
    );
    assert.throws(() => obj.map('kb_hash'), /is closed/);
  });

  it('sizes ring buffers the way libbpf does (rounded up to a power-of-2 number of pages)', (t) => {
    const obj = loadFixture(t, (o) => {
      o.setMaxEntries('kb_events', 5000);
      assert.equal(o.maxEntries('kb_events'), 8192);
    });
    assert.equal(obj.map('kb_events').maxEntries, 8192);
  });

  it('waits for running programs (synchronize_rcu through a map-in-map update)', () => {
    const t0 = process.hrtime.bigint();
    waitForPrograms();
    waitForPrograms();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.ok(ms < 5000, `two waits took ${ms} ms`);
  });

  it('finds or mounts a bpf filesystem for pins', async () => {
    assert.equal(isBpffs('/sys/fs/bpf'), true);
    assert.equal(isBpffs(tmpdir()), false);
    assert.equal(isBpffs('/nonexistent'), false);
    await withPinDir((dir) => {
      ensureBpffs(`${dir}/gate`);
      assert.equal(isBpffs(`${dir}/gate`), true);
      ensureBpffs(`${dir}/gate`); // idempotent
    });

    // mounting happens in a private mount namespace, so nothing outlives the test
    const base = mkdtempSync(join(tmpdir(), 'kg-test-'));
    try {
      mkdirSync(join(base, 'pins'));
      const script = join(base, 'mount.mjs');
      writeFileSync(
        script,
        [
          `import { ensureBpffs, isBpffs } from ${JSON.stringify(`${ROOT}dist/src/bpf/index.js`)};`,
          'const dir = process.argv[2];',
          "const before = isBpffs(dir + '/..');",
          'ensureBpffs(dir);',
          "console.log(JSON.stringify({ before, parent: isBpffs(dir + '/..'), dir: isBpffs(dir) }));",
          '',
        ].join('\n'),
      );
      const r = spawnSync('unshare', ['--mount', '--propagation', 'private', process.execPath, script, join(base, 'pins', 'gate')], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { before: false, parent: true, dir: true });
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
