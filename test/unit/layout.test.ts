// The TypeScript mirror (src/kernel/layout.ts) against the C layout of bpf/knock.h.
// A tiny C oracle is compiled against knock.h and prints every size, offset and constant;
// any drift between the header and the mirror fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  COOLDOWN_DOOR,
  DENY_REASON,
  DOOR_FLAG,
  EVENT,
  FLOW_FLAG,
  KG,
  MAP,
  OFFSETS,
  PROG_NAME,
  PROG_NAME_L3,
  PROTO,
  RESET_REASON,
  SIZEOF,
  STAT_MAX,
  STAT_NAMES,
  VERDICTS,
  decodeAllowKey,
  decodeDoor,
  decodeEvent,
  decodeFirstsBlock,
  decodeFlow,
  decodeFlowKey,
  decodeGrant,
  decodePenalty,
  decodePortInfo,
  decodeProbation,
  decodeProgress,
  encodeAllowKey,
  encodeFlowKey,
  encodeDoor,
  encodeGrant,
  encodePortInfo,
  plainDoorFields,
  DOOR_TYPE,
  REJECT_REASON,
  portIndex,
  sumStats,
  type KDoor,
} from '../../src/kernel/layout.js';

const repo = new URL('../../../', import.meta.url).pathname;

const fields: Record<string, readonly string[]> = {
  kg_port_info: ['knock_doors', 'protect_doors', 'flow_only_doors', 'single_doors'],
  kg_step: ['port', 'proto'],
  kg_port_range: ['first', 'last', 'proto'],
  kg_door: ['flags', 'epoch', 'step_timeout_ns', 'seq_timeout_ns', 'open_for_ns', 'flow_idle_ns', 'nsteps', 'nprotects', 'type', 'payload_len', 'port', 'proto',
    'door_id', 'max_skew_ns', 'window_ns', 'win', 'valid_until_ns', 'range_first', 'range_last', 'range_proto', 'key', 'payload', 'steps', 'protects', 'name'],
  kg_allow_key: ['prefixlen', 'gen', 'slot', 'addr'],
  kg_door_progress: ['start_ns', 'last_ns', 'epoch', 'step'],
  kg_progress: ['doors', 'd'],
  kg_first_knock: ['at_ns', 'epoch'],
  kg_probation: ['live', 'spent', 'd'],
  kg_fk_block: ['lock', 'start', 'bits'],
  kg_penalty: ['window_start_ns', 'cooldown_until_ns', 'failures'],
  kg_flow_key: ['src', 'dst', 'sport', 'dport', 'proto'],
  kg_flow: ['created_ns', 'last_ns', 'idle_ns', 'slot', 'flags'],
  kg_event: ['ts_ns', 'expires_ns', 'addr', 'port', 'doors', 'proto', 'type', 'door', 'step', 'reason', 'ifindex'],
  kg_signed_event: ['ev', 'payload'],
  kg_nonce_event: ['ev', 'nonce'],
  kg_spent_key: ['door_id', 'window'],
  kg_globals: ['active_gen', 'max_failures', 'deny_tokens', 'knock_tokens', 'failure_window_ns', 'cooldown_ns', 'fk_window_ns', 'fk_seed', 'fk_mask',
    'icmp_doors', 'signed_tokens', 'wall_offset_ns', 'hint'],
};
const sized = [
  'kg_port_info', 'kg_step', 'kg_port_range', 'kg_door', 'kg_allow_key', 'kg_addr', 'kg_door_progress', 'kg_progress',
  'kg_first_knock', 'kg_probation', 'kg_fk_block', 'kg_penalty', 'kg_grant', 'kg_flow_key', 'kg_flow', 'kg_event', 'kg_stats',
  'kg_globals', 'kg_signed_event', 'kg_nonce_event', 'kg_nonce', 'kg_spent_key',
];
const constants = [
  'KG_MAX_DOORS', 'KG_MAX_STEPS', 'KG_MAX_PROTECTS', 'KG_NAME_LEN', 'KG_GENS', 'KG_PROTOS', 'KG_PORTS', 'KG_PORT_SLOTS',
  'KG_DOOR_SLOTS', 'KG_HINT_SLOTS', 'KG_MAX_VLAN_TAGS', 'KG_MAX_EXT_HDRS', 'KG_DEFAULT_SOURCES', 'KG_DEFAULT_FLOWS',
  'KG_DEFAULT_RING_BYTES', 'KG_FK_WORDS', 'KG_FK_BITS', 'KG_FK_HASHES', 'KG_FK_BLOCK_BYTES', 'KG_DEFAULT_FK_BLOCKS',
  'KG_FLOW_LINGER_NS', 'KG_ROT_STEPS', 'KG_PAYLOAD_LEN', 'KG_SPA_LEN', 'KG_SPA_MSG_LEN', 'KG_SIGNED_LEN', 'KG_SPA_MAGIC',
  'KG_SIGNED_MAGIC', 'KG_DEFAULT_NONCES', 'KG_SPENT_ENTRIES',
  'KG_TYPE_SEQUENCE', 'KG_TYPE_ROTATING', 'KG_TYPE_SPA', 'KG_TYPE_SIGNED', 'KG_TYPE_PAYLOAD', 'KG_PROTO_ICMP',
  'KG_EV_REJECT', 'KG_EV_SIGNED', 'KG_REJECT_MALFORMED', 'KG_REJECT_BAD_MAC', 'KG_REJECT_STALE', 'KG_REJECT_REPLAY',
  'KG_REJECT_SPENT', 'KG_REJECT_PAYLOAD', 'KG_REJECT_NOT_ALLOWED',
  'KG_PROTO_TCP', 'KG_PROTO_UDP', 'KG_DOOR_ACTIVE', 'KG_DOOR_ALLOW_LIST', 'KG_DOOR_FLOW_ONLY', 'KG_DOOR_CLAIM', 'KG_EV_CLAIM', 'KG_FLOW_ESTABLISHED',
  'KG_FLOW_CLOSING', 'KG_EV_STEP', 'KG_EV_RESET', 'KG_EV_GRANT', 'KG_EV_DENY', 'KG_EV_COOLDOWN', 'KG_EV_CONSUMED',
  'KG_RESET_NONE', 'KG_RESET_WRONG_PORT', 'KG_RESET_STEP_TIMEOUT', 'KG_RESET_SEQ_TIMEOUT',
  'KG_DENY_NO_GRANT', 'KG_DENY_EXPIRED', 'KG_DENY_NO_FLOW', 'KG_VERDICTS', 'KG_STAT_MAX',
  'KG_GF_HDR_WORDS', 'KG_GF_BITS_PER_SOURCE', 'KG_GF_ON', 'KG_GF_CUR', 'KG_SPA_TAG_WINDOW_S', 'KG_SPA_TAG_SLOTS',
];
const strings = [
  'KG_MAP_PORTS', 'KG_MAP_DOORS', 'KG_MAP_ALLOW', 'KG_MAP_PROGRESS', 'KG_MAP_PROBATION', 'KG_MAP_FIRSTS', 'KG_MAP_PENALTY',
  'KG_MAP_GRANTS', 'KG_MAP_FLOWS', 'KG_MAP_EVENTS', 'KG_MAP_NONCES', 'KG_MAP_SPENT', 'KG_MAP_STATS', 'KG_MAP_GLOBALS', 'KG_PROG_NAME',
  'KG_MAP_GFILTER', 'KG_MAP_SPATAGS',
  'KG_PROG_NAME_L3',
];

interface Oracle {
  size: Record<string, number>;
  offset: Record<string, Record<string, number>>;
  constant: Record<string, number>;
  string: Record<string, string>;
}

function runOracle(): Oracle {
  const lines: string[] = ['#include <stdio.h>', '#include <stddef.h>', '#include "knock.h"', 'int main(void) {', 'printf("{\\"size\\":{");'];
  sized.forEach((s, i) => lines.push(`printf("%s\\"${s}\\":%zu", ${i ? '","' : '""'}, sizeof(struct ${s}));`));
  lines.push('printf("},\\"offset\\":{");');
  Object.entries(fields).forEach(([s, fs], i) => {
    lines.push(`printf("%s\\"${s}\\":{", ${i ? '","' : '""'});`);
    fs.forEach((f, j) => lines.push(`printf("%s\\"${f}\\":%zu", ${j ? '","' : '""'}, offsetof(struct ${s}, ${f}));`));
    lines.push('printf("}");');
  });
  lines.push('printf("},\\"constant\\":{");');
  constants.forEach((c, i) => lines.push(`printf("%s\\"${c}\\":%lld", ${i ? '","' : '""'}, (long long)(${c}));`));
  lines.push('printf("},\\"string\\":{");');
  strings.forEach((c, i) => lines.push(`printf("%s\\"${c}\\":\\"%s\\"", ${i ? '","' : '""'}, ${c});`));
  lines.push('printf("}}\\n");', 'return 0; }');
  const dir = mkdtempSync(join(tmpdir(), 'kg-oracle-'));
  try {
    const src = join(dir, 'oracle.c');
    const bin = join(dir, 'oracle');
    writeFileSync(src, lines.join('\n'));
    execFileSync('cc', ['-Wall', '-Werror', '-I', join(repo, 'bpf'), src, '-o', bin]);
    return JSON.parse(execFileSync(bin, { encoding: 'utf8' })) as Oracle;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const oracle = runOracle();

test('struct sizes match knock.h', () => {
  const mirror: Record<string, number> = {};
  for (const s of sized) mirror[s] = SIZEOF[s.replace(/^kg_/, '') as keyof typeof SIZEOF];
  assert.deepEqual(mirror, oracle.size);
});

test('field offsets match knock.h', () => {
  const mirror: Record<string, Record<string, number>> = {};
  for (const [s, fs] of Object.entries(fields)) {
    const table = OFFSETS[s.replace(/^kg_/, '') as keyof typeof OFFSETS] as Record<string, number>;
    mirror[s] = Object.fromEntries(fs.map((f) => [f, table[f] ?? -1]));
  }
  assert.deepEqual(mirror, oracle.offset);
});

test('constants and names match knock.h', () => {
  const mirror: Record<string, number> = {
    KG_MAX_DOORS: KG.MAX_DOORS,
    KG_MAX_STEPS: KG.MAX_STEPS,
    KG_MAX_PROTECTS: KG.MAX_PROTECTS,
    KG_NAME_LEN: KG.NAME_LEN,
    KG_GENS: KG.GENS,
    KG_PROTOS: KG.PROTOS,
    KG_PORTS: KG.PORTS,
    KG_PORT_SLOTS: KG.PORT_SLOTS,
    KG_DOOR_SLOTS: KG.DOOR_SLOTS,
    KG_HINT_SLOTS: KG.HINT_SLOTS,
    KG_MAX_VLAN_TAGS: KG.MAX_VLAN_TAGS,
    KG_MAX_EXT_HDRS: KG.MAX_EXT_HDRS,
    KG_DEFAULT_SOURCES: KG.DEFAULT_SOURCES,
    KG_DEFAULT_FLOWS: KG.DEFAULT_FLOWS,
    KG_DEFAULT_RING_BYTES: KG.DEFAULT_RING_BYTES,
    KG_FK_WORDS: KG.FK_WORDS,
    KG_FK_BITS: KG.FK_BITS,
    KG_FK_HASHES: KG.FK_HASHES,
    KG_FK_BLOCK_BYTES: KG.FK_BLOCK_BYTES,
    KG_DEFAULT_FK_BLOCKS: KG.DEFAULT_FK_BLOCKS,
    KG_FLOW_LINGER_NS: Number(KG.FLOW_LINGER_NS),
    KG_ROT_STEPS: KG.ROT_STEPS,
    KG_PAYLOAD_LEN: KG.PAYLOAD_LEN,
    KG_SPA_LEN: KG.SPA_LEN,
    KG_SPA_MSG_LEN: KG.SPA_MSG_LEN,
    KG_SIGNED_LEN: KG.SIGNED_LEN,
    KG_SPA_MAGIC: KG.SPA_MAGIC,
    KG_SIGNED_MAGIC: KG.SIGNED_MAGIC,
    KG_DEFAULT_NONCES: KG.DEFAULT_NONCES,
    KG_SPENT_ENTRIES: KG.SPENT_ENTRIES,
    KG_GF_HDR_WORDS: KG.GF_HDR_WORDS,
    KG_GF_BITS_PER_SOURCE: KG.GF_BITS_PER_SOURCE,
    KG_GF_ON: Number(KG.GF_ON),
    KG_GF_CUR: Number(KG.GF_CUR),
    KG_SPA_TAG_WINDOW_S: KG.SPA_TAG_WINDOW_S,
    KG_SPA_TAG_SLOTS: KG.SPA_TAG_SLOTS,
    KG_TYPE_SEQUENCE: DOOR_TYPE.SEQUENCE,
    KG_TYPE_ROTATING: DOOR_TYPE.ROTATING,
    KG_TYPE_SPA: DOOR_TYPE.SPA,
    KG_TYPE_SIGNED: DOOR_TYPE.SIGNED,
    KG_TYPE_PAYLOAD: DOOR_TYPE.PAYLOAD,
    KG_PROTO_ICMP: PROTO.ICMP,
    KG_EV_REJECT: EVENT.REJECT,
    KG_EV_SIGNED: EVENT.SIGNED,
    KG_REJECT_MALFORMED: REJECT_REASON.MALFORMED,
    KG_REJECT_BAD_MAC: REJECT_REASON.BAD_MAC,
    KG_REJECT_STALE: REJECT_REASON.STALE,
    KG_REJECT_REPLAY: REJECT_REASON.REPLAY,
    KG_REJECT_SPENT: REJECT_REASON.SPENT,
    KG_REJECT_PAYLOAD: REJECT_REASON.PAYLOAD,
    KG_REJECT_NOT_ALLOWED: REJECT_REASON.NOT_ALLOWED,
    KG_PROTO_TCP: PROTO.TCP,
    KG_PROTO_UDP: PROTO.UDP,
    KG_DOOR_ACTIVE: DOOR_FLAG.ACTIVE,
    KG_DOOR_ALLOW_LIST: DOOR_FLAG.ALLOW_LIST,
    KG_DOOR_FLOW_ONLY: DOOR_FLAG.FLOW_ONLY,
    KG_DOOR_CLAIM: DOOR_FLAG.CLAIM,
    KG_EV_CLAIM: EVENT.CLAIM,
    KG_FLOW_ESTABLISHED: FLOW_FLAG.ESTABLISHED,
    KG_FLOW_CLOSING: FLOW_FLAG.CLOSING,
    KG_EV_STEP: EVENT.STEP,
    KG_EV_RESET: EVENT.RESET,
    KG_EV_GRANT: EVENT.GRANT,
    KG_EV_DENY: EVENT.DENY,
    KG_EV_COOLDOWN: EVENT.COOLDOWN,
    KG_EV_CONSUMED: EVENT.CONSUMED,
    KG_RESET_NONE: RESET_REASON.NONE,
    KG_RESET_WRONG_PORT: RESET_REASON.WRONG_PORT,
    KG_RESET_STEP_TIMEOUT: RESET_REASON.STEP_TIMEOUT,
    KG_RESET_SEQ_TIMEOUT: RESET_REASON.SEQ_TIMEOUT,
    KG_DENY_NO_GRANT: DENY_REASON.NO_GRANT,
    KG_DENY_EXPIRED: DENY_REASON.EXPIRED,
    KG_DENY_NO_FLOW: DENY_REASON.NO_FLOW,
    KG_VERDICTS: VERDICTS,
    KG_STAT_MAX: STAT_MAX,
  };
  assert.deepEqual(mirror, oracle.constant);
  assert.deepEqual(
    {
      KG_MAP_PORTS: MAP.PORTS,
      KG_MAP_DOORS: MAP.DOORS,
      KG_MAP_ALLOW: MAP.ALLOW,
      KG_MAP_PROGRESS: MAP.PROGRESS,
      KG_MAP_PROBATION: MAP.PROBATION,
      KG_MAP_FIRSTS: MAP.FIRSTS,
      KG_MAP_PENALTY: MAP.PENALTY,
      KG_MAP_GRANTS: MAP.GRANTS,
      KG_MAP_FLOWS: MAP.FLOWS,
      KG_MAP_EVENTS: MAP.EVENTS,
      KG_MAP_NONCES: MAP.NONCES,
      KG_MAP_SPENT: MAP.SPENT,
      KG_MAP_STATS: MAP.STATS,
      KG_MAP_GLOBALS: MAP.GLOBALS,
      KG_PROG_NAME: PROG_NAME,
      KG_MAP_GFILTER: MAP.GFILTER,
      KG_MAP_SPATAGS: MAP.SPATAGS,
      KG_PROG_NAME_L3: PROG_NAME_L3,
    },
    oracle.string,
  );
});

test('enum kg_stat order matches STAT_NAMES', () => {
  // Each enumerator's value must be its index in STAT_NAMES: read every one back by name,
  // so a reordered or renamed enumerator fails.
  const src = ['#include <stdio.h>', '#include "knock.h"', 'int main(void){'];
  STAT_NAMES.forEach((n, i) => {
    const c = (i < VERDICTS ? 'KG_V_' : 'KG_C_') + n.replace(/^knock_step$/, 'step').toUpperCase();
    src.push(`printf("%d\\n", ${c});`);
  });
  src.push('return 0;}');
  const dir = mkdtempSync(join(tmpdir(), 'kg-oracle-'));
  try {
    writeFileSync(join(dir, 'e.c'), src.join('\n'));
    execFileSync('cc', ['-Wall', '-Werror', '-I', join(repo, 'bpf'), join(dir, 'e.c'), '-o', join(dir, 'e')]);
    const values = execFileSync(join(dir, 'e'), { encoding: 'utf8' }).trim().split('\n').map(Number);
    assert.deepEqual(values, STAT_NAMES.map((_, i) => i));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('codecs round-trip', () => {
  const pi = { knockDoors: 0x8001, protectDoors: 0x0102, flowOnlyDoors: 0x0100, singleDoors: 0x4000 };
  assert.deepEqual(decodePortInfo(encodePortInfo(pi)), pi);
  assert.equal(portIndex(1, PROTO.UDP, 65535), 262143);

  const door: KDoor = {
    flags: DOOR_FLAG.ACTIVE | DOOR_FLAG.ALLOW_LIST,
    epoch: 7,
    stepTimeoutNs: 5_000_000_000n,
    seqTimeoutNs: 15_000_000_000n,
    openForNs: 30_000_000_000n,
    flowIdleNs: 600_000_000_000n,
    steps: [
      { port: 7000, proto: PROTO.TCP },
      { port: 8000, proto: PROTO.UDP },
      { port: 65535, proto: PROTO.TCP },
    ],
    protects: [{ first: 22, last: 22, proto: PROTO.TCP }, { first: 60000, last: 61000, proto: PROTO.UDP }],
    nsteps: 3,
    ...plainDoorFields(),
    type: DOOR_TYPE.SPA,
    port: 62201,
    proto: PROTO.UDP,
    doorId: 0xdeadbeef,
    maxSkewNs: 30_000_000_000n,
    key: Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex'),
    name: 'ssh-admin_1',
  };
  const enc = encodeDoor(door);
  assert.equal(enc.length, SIZEOF.door);
  assert.deepEqual(decodeDoor(enc), door);
  assert.throws(() => encodeDoor({ ...door, name: 'x'.repeat(32) }), /longer than 31 bytes/);

  const addr = Buffer.from('00000000000000000000ffffc6120002', 'hex');
  const key = encodeAllowKey(1, 3, addr, 96 + 15);
  assert.equal(key.readUInt32LE(0), 16 + 96 + 15);
  assert.deepEqual(decodeAllowKey(key), { gen: 1, slot: 3, addr, mappedPrefix: 111 });

  const expires = Array.from({ length: KG.MAX_DOORS }, (_, i) => BigInt(i * 1000));
  assert.deepEqual(decodeGrant(encodeGrant(expires)), expires);
});

test('progress, event and stats decoders read the right offsets', () => {
  const p = Buffer.alloc(SIZEOF.progress);
  p.writeUInt16LE(0b100000000000010, OFFSETS.progress.doors); // slots 1 and 14
  const at = OFFSETS.progress.d + 14 * SIZEOF.door_progress;
  p.writeBigUInt64LE(11n, at + OFFSETS.door_progress.start_ns);
  p.writeBigUInt64LE(22n, at + OFFSETS.door_progress.last_ns);
  p.writeUInt32LE(9, at + OFFSETS.door_progress.epoch);
  p.writeUInt8(3, at + OFFSETS.door_progress.step);
  const live = decodeProgress(p);
  assert.deepEqual(live.map((d) => d.slot), [1, 14]);
  assert.deepEqual(live[1], { slot: 14, startNs: 11n, lastNs: 22n, epoch: 9, step: 3 });

  const e = Buffer.alloc(SIZEOF.event);
  e.writeBigUInt64LE(5n, OFFSETS.event.ts_ns);
  e.writeUInt16LE(22, OFFSETS.event.port);
  e.writeUInt8(EVENT.GRANT, OFFSETS.event.type);
  e.writeUInt32LE(42, OFFSETS.event.ifindex);
  const ev = decodeEvent(e);
  assert.equal(ev.tsNs, 5n);
  assert.equal(ev.port, 22);
  assert.equal(ev.type, EVENT.GRANT);
  assert.equal(ev.ifindex, 42);
  assert.throws(() => decodeEvent(Buffer.alloc(10)), /10 bytes, 48 expected/);

  const cpu0 = Buffer.alloc(SIZEOF.stats);
  const cpu1 = Buffer.alloc(SIZEOF.stats);
  const idx = STAT_NAMES.indexOf('drop_no_grant') * 8;
  cpu0.writeBigUInt64LE(3n, idx);
  cpu1.writeBigUInt64LE(4n, idx);
  cpu1.writeBigUInt64LE(9n, STAT_NAMES.indexOf('knock_suppressed') * 8);
  cpu1.writeBigUInt64LE(2n, (STAT_MAX - 1) * 8);
  const sum = sumStats([cpu0, cpu1]);
  assert.equal(sum.drop_no_grant, 7n);
  assert.equal(sum.knock_suppressed, 9n);
  assert.equal(sum.signed_suppressed, 2n);
  assert.equal(COOLDOWN_DOOR, 0xff);
});

test('probation, filter block, penalty and flow codecs read the right offsets', () => {
  const pr = Buffer.alloc(SIZEOF.probation);
  pr.writeUInt16LE((1 << 3) | (1 << 15), OFFSETS.probation.live);
  pr.writeUInt16LE(1 << 7, OFFSETS.probation.spent);
  const at = OFFSETS.probation.d + 15 * SIZEOF.first_knock;
  pr.writeBigUInt64LE(77n, at + OFFSETS.first_knock.at_ns);
  pr.writeUInt32LE(5, at + OFFSETS.first_knock.epoch);
  const dp = decodeProbation(pr);
  assert.deepEqual(dp.live.map((f) => f.slot), [3, 15]);
  assert.deepEqual(dp.live[1], { slot: 15, atNs: 77n, epoch: 5 });
  assert.equal(dp.spent, 1 << 7);

  const blk = Buffer.alloc(SIZEOF.fk_block);
  blk.writeBigUInt64LE(1000n, OFFSETS.fk_block.start);
  blk.writeBigUInt64LE(2000n, OFFSETS.fk_block.start + 8);
  blk.writeUInt32LE(0xffffffff, OFFSETS.fk_block.bits); // half 0, word 0: 32 bits
  blk.writeUInt32LE(0x11, OFFSETS.fk_block.bits + KG.FK_WORDS * 4); // half 1, word 0: 2 bits
  blk.writeUInt32LE(0x80000000, OFFSETS.fk_block.bits + (2 * KG.FK_WORDS - 1) * 4); // half 1, last word
  assert.deepEqual(decodeFirstsBlock(blk), { start: [1000n, 2000n], set: [32, 3] });

  const pen = Buffer.alloc(SIZEOF.penalty);
  pen.writeBigUInt64LE(1n, OFFSETS.penalty.window_start_ns);
  pen.writeBigUInt64LE(2n, OFFSETS.penalty.cooldown_until_ns);
  pen.writeUInt32LE(3, OFFSETS.penalty.failures);
  assert.deepEqual(decodePenalty(pen), { windowStartNs: 1n, cooldownUntilNs: 2n, failures: 3 });

  const key = {
    src: Buffer.from('00000000000000000000ffffc6120002', 'hex'),
    dst: Buffer.from('20010db8000000000000000000000001', 'hex'),
    sport: 40000,
    dport: 22,
    proto: PROTO.UDP,
  };
  const enc = encodeFlowKey(key);
  assert.equal(enc.length, SIZEOF.flow_key);
  assert.deepEqual(decodeFlowKey(enc), key);
  const f = Buffer.alloc(SIZEOF.flow);
  f.writeBigUInt64LE(10n, OFFSETS.flow.created_ns);
  f.writeBigUInt64LE(20n, OFFSETS.flow.last_ns);
  f.writeBigUInt64LE(30n, OFFSETS.flow.idle_ns);
  f.writeUInt8(9, OFFSETS.flow.slot);
  f.writeUInt8(FLOW_FLAG.CLOSING, OFFSETS.flow.flags);
  assert.deepEqual(decodeFlow(f), { createdNs: 10n, lastNs: 20n, idleNs: 30n, slot: 9, flags: FLOW_FLAG.CLOSING });
});

test('the compiled object\'s BTF has the same layout as the mirror', () => {
  // The structs the program itself uses (maps' keys and values, .bss) as clang laid them out
  // in bpf/knock.bpf.o; built by `npm run build`.
  const obj = join(repo, 'bpf', 'knock.bpf.o');
  const btf = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', obj], { encoding: 'utf8' })) as {
    types: { kind: string; name: string; size?: number; members?: { name: string; bits_offset: number }[] }[];
  };
  const structs = new Map(btf.types.filter((t) => t.kind === 'STRUCT').map((t) => [t.name, t]));
  const checked: string[] = [];
  for (const name of sized) {
    const t = structs.get(name);
    if (!t) continue;
    const key = name.replace(/^kg_/, '');
    assert.equal(t.size, SIZEOF[key as keyof typeof SIZEOF], `sizeof(struct ${name}) in the BPF object`);
    const offsets = OFFSETS[key as keyof typeof OFFSETS] as Record<string, number> | undefined;
    for (const m of t.members ?? []) {
      if (offsets && m.name in offsets && !m.name.startsWith('pad')) assert.equal(m.bits_offset / 8, offsets[m.name], `offsetof(struct ${name}, ${m.name}) in the BPF object`);
    }
    checked.push(name);
  }
  // Every map key/value type must have been found (kg_event travels through the ring buffer as
  // bytes and has no BTF; the C oracle above covers it).
  for (const must of ['kg_port_info', 'kg_door', 'kg_allow_key', 'kg_addr', 'kg_progress', 'kg_grant', 'kg_stats', 'kg_globals']) {
    assert.ok(checked.includes(must), `struct ${must} not found in the BTF of ${obj}`);
  }
});
