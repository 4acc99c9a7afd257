/**
 * Shared setup for the XDP table tests (test/kernel/xdp-*.test.ts): a real gate loaded by
 * Gate.open in a throwaway pin dir, its event ring drained on the event loop, and a checker
 * for Katran-style rows `{description, frame, verdict, counter, map, events}` run through
 * BPF_PROG_TEST_RUN on gate.progFd, or, with KG_XDP_VIA=dispatcher, on the libxdp dispatcher the
 * gate joined on a veth of a throwaway namespace (the program as it runs there: the extension in
 * its slot; reopen() moves the slot to the new program as a restarted daemon does).
 *
 * With `framing: 'l3'` the same rows run through the gate's program for devices without a
 * link-layer header (gate.progFdL3), each frame without its Ethernet header and VLAN tags (what a
 * TUN or WireGuard device hands XDP): one table, both framings.
 *
 * What a row checks, for one packet, whatever the door types (one checker for every table):
 * - the XDP return value (XDP_PASS / XDP_DROP);
 * - exactly one verdict counter (the first VERDICTS entries of STAT_NAMES) moved, by 1, and it
 *   is the expected one; every other counter moved by exactly row.counters[name] (default 0);
 * - the map change: kg_progress, kg_probation, kg_penalty and kg_grants are byte-identical
 *   before and after, and kg_flows identical but for the clock of a flow's last packet, except
 *   for the sources the row names, whose state must then be exactly what the row says (progress
 *   records carrying the epoch of one of their door's live sequences: a rotating door mixes the
 *   window into it); kg_nonces and kg_spent only grow, by exactly row.nonces and row.spent;
 * - the events: exactly the expected ones (any order), each from the frame's source with the
 *   ingress ifindex of the run; DENY with ts 0 and expires 0; every other event stamped inside
 *   the run's time window (collected, and asserted when the table's gate goes: one wrong stamp
 *   does not hide the rest of a table); GRANT with expires = ts + the door's open_for, equal to
 *   the grant map's value, and step = the door's steps (1 for a single-packet door); REJECT and
 *   SIGNED with expires 0, no doors mask, step 0 (a rotating door's REJECT: its steps).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { RingBufferReader, progTestRun } from '../../src/bpf/index.js';
import { parseConfigText, type DoorConfig } from '../../src/config/index.js';
import { describeEvent, type GateEvent } from '../../src/kernel/events.js';
import { Gate, monoNowNs, type BruteForce } from '../../src/kernel/gate.js';
import {
  DOOR_TYPE,
  EVENT,
  KG,
  MAP,
  OFFSETS,
  STAT_NAMES,
  VERDICTS,
  decodeEvent,
  decodeFlow,
  decodeFlowKey,
  decodeGrant,
  decodePenalty,
  decodeProbation,
  decodeProgress,
  flowIdleLimitNs,
  protoName,
  type KDoor,
  type KEvent,
  type StatName,
  type Stats,
} from '../../src/kernel/layout.js';
import { doorId } from '../../src/knock/index.js';
import { formatAddress } from '../../src/net/addr.js';
import { closeFd } from '../../src/bpf/index.js';
import { libbpf } from '../../src/bpf/libbpf.js';
import { kernelSuite, randomSuffix, run, withNetns, withPinDir, type NetnsPair } from './kernel.js';
import { ETH_P_IP, ETH_P_IPV6, addrKey, l3Of } from './packets.js';

let libxdpBpffs: string | null = null;

/**
 * libxdp keeps its dispatcher pins under $LIBXDP_BPFFS/xdp (a bpffs mount point, read once per
 * process): give this process a bpffs instance of its own, unmounted (pins and all) at exit.
 */
function privateLibxdpBpffs(): void {
  if (libxdpBpffs !== null || process.env['LIBXDP_BPFFS'] !== undefined) return;
  const dir = `/run/kg-xdp-${process.pid}-${randomSuffix()}`;
  mkdirSync(dir, { recursive: true });
  run('mount', ['-t', 'bpf', 'bpf', dir]);
  libxdpBpffs = dir;
  process.env['LIBXDP_BPFFS'] = dir;
  process.on('exit', () => {
    spawnSync('umount', [dir], { timeout: 10_000 });
    rmSync(dir, { recursive: true, force: true });
  });
}

/** KG_XDP_VIA=dispatcher: every row runs through libxdp's dispatcher (see the header). */
export const VIA_DISPATCHER = process.env['KG_XDP_VIA'] === 'dispatcher';
/** KG_EXPECT_DISPATCHER=1: a kernel that must run the dispatcher (the 6.1 matrix): no fallback */
const EXPECT_DISPATCHER = process.env['KG_EXPECT_DISPATCHER'] === '1';

export const XDP_DROP = 1;
export const XDP_PASS = 2;
/** ifindex every test run claims the packet came in on (lo, which exists in every netns). */
export const TEST_IFINDEX = 1;

export const VERDICT_NAMES = STAT_NAMES.slice(0, VERDICTS) as readonly StatName[];
export type VerdictName =
  | 'pass_non_ip'
  | 'pass_other_l4'
  | 'pass_unrelated'
  | 'pass_fragment'
  | 'pass_granted'
  | 'pass_flow'
  | 'drop_no_grant'
  | 'drop_expired'
  | 'drop_knock'
  | 'drop_malformed'
  | 'drop_no_flow';

/** Expectations for the sources a row touches (addresses as text). */
export interface MapChange {
  /**
   * source -> its live progress on every door as {door name: steps done}, step 1 from
   * kg_probation and more from kg_progress; {} = none. Naming a source lets both its entries
   * change (a first-knock record left "spent" included).
   */
  progress?: Record<string, Record<string, number>>;
  /** source -> the doors it holds a live grant for, exactly; [] = none */
  grants?: Record<string, string[]>;
  /** source -> its live flows as "PORT/PROTO" (one per flow, sorted); [] = none */
  flows?: Record<string, string[]>;
  /** source -> its kg_penalty entry: failures in the window and whether it is in cooldown */
  penalty?: Record<string, { failures: number; cooldown: boolean }>;
}
export const NO_MAP_UPDATE = 'no map update' as const;
export type MapExpect = typeof NO_MAP_UPDATE | MapChange;

/** The fields of the described event (describeEvent) that must match; others are free. */
export type EventExpect = Partial<Omit<GateEvent, 'expires_in_ms' | 'interface'>>;
export const NO_EVENT = 'no event' as const;

export interface Row {
  description: string;
  frame: Buffer;
  verdict: typeof XDP_PASS | typeof XDP_DROP;
  counter: VerdictName;
  map: MapExpect;
  events: typeof NO_EVENT | EventExpect[];
  /** non-verdict counters that must move, by how much (all others: 0) */
  counters?: Partial<Record<StatName, number>>;
  /** the nonce fields (16 bytes each) the row adds to kg_nonces, exactly (default: none) */
  nonces?: Buffer[];
  /** door name -> the windows of that rotating door the row marks spent in kg_spent, exactly (default: none) */
  spent?: Record<string, bigint[]>;
}

/** A pause between rows (timeouts only; always >= 2x the timeout it exceeds). */
export interface Pause {
  pause: number;
  why: string;
}

/** Something done between rows (reconfiguration, grants by hand, assertions on state). */
export interface Action {
  action: string;
  run: (h: GateHarness) => void | Promise<void>;
}

export type Entry = Row | Pause | Action;

export const silentLogger = pino({ level: 'silent' });

/** Doors of a YAML config (parsed and validated like the daemon's). */
export function doorsOf(yaml: string): DoorConfig[] {
  return parseConfigText(yaml).doors;
}

/** "interfaces: [lo]" + the given doors block (YAML, indented under `doors:`). */
export function config(doorsBlock: string): string {
  return `interfaces: [lo]\ndoors:\n${doorsBlock}`;
}

/** Source address (text) of an Ethernet [+ up to 4 VLAN tags] + IPv4/IPv6 frame, or null. */
export function frameSource(frame: Buffer): string | null {
  const l3 = l3Of(frame, 4);
  if (l3 === null) return null;
  const { off, type } = l3;
  if (type === ETH_P_IP && frame.length >= off + 16) return formatAddress(addrKey(Array.from(frame.subarray(off + 12, off + 16)).join('.')));
  if (type === ETH_P_IPV6 && frame.length >= off + 24) return formatAddress(Buffer.from(frame.subarray(off + 8, off + 24)));
  return null;
}

const key = (addr: string): string => addrKey(addr).toString('hex');

/** How much every counter moved between two readings. */
export function statDelta(before: Stats, after: Stats): Record<StatName, number> {
  return Object.fromEntries(STAT_NAMES.map((n) => [n, Number(after[n] - before[n])])) as Record<StatName, number>;
}

function isRow(e: Entry): e is Row {
  return 'frame' in e;
}

/** Which of the gate's programs a table runs through (see toL3 for what 'l3' does to frames). */
export type HarnessFraming = 'ethernet' | 'l3';
export const FRAMINGS: readonly HarnessFraming[] = ['ethernet', 'l3'];

/**
 * The frame a device without a link-layer header would carry: the bytes after the Ethernet
 * header and any VLAN tags (a non-IP frame keeps its payload, which the L3 program judges by
 * its first nibble).
 */
export function toL3(frame: Buffer): Buffer {
  const l3 = l3Of(frame);
  if (l3 === null) throw new Error(`a ${frame.length}-byte frame has no EtherType: it has no L3 form`);
  return Buffer.from(frame.subarray(l3.off));
}

/**
 * kernelSuite(name) once per framing, named "<prefix> (<framing> framing): <rest>" for a name
 * "<prefix>: <rest>"; fn gets the framing to hand GateHarness.with. One table, both programs.
 */
export function framingSuites(name: string, fn: (framing: HarnessFraming) => void): void {
  const i = name.indexOf(': ');
  for (const framing of FRAMINGS) {
    kernelSuite(i < 0 ? `${name} (${framing} framing)` : `${name.slice(0, i)} (${framing} framing)${name.slice(i)}`, () => fn(framing));
  }
}

export interface HarnessOptions {
  /** the program the rows run through (default 'ethernet') */
  framing?: HarnessFraming;
  /** door config applied right after Gate.open */
  yaml?: string;
  doors?: DoorConfig[];
  denyTokens?: number;
  /** first-knock, step-1 reset and cooldown event budget (default: plenty) */
  knockTokens?: number;
  sources?: number;
  flows?: number;
  firstKnockFilterBytes?: number;
  /** default: off (maxFailures 0) */
  bruteForce?: BruteForce;
  /** run the rows through libxdp's dispatcher (default: $KG_XDP_VIA) */
  via?: 'dispatcher' | 'program';
}

const HARNESS_FILTER_BYTES = 1024 * 1024;

export class GateHarness {
  private reader: RingBufferReader | null = null;
  private pending: KEvent[] = [];
  /** every row checked so far (for a summary) */
  rows = 0;
  /** events of the rows whose ts_ns was not the clock of their run (asserted empty at the end) */
  readonly badStamps: string[] = [];

  private constructor(
    public gate: Gate,
    readonly pinPath: string,
    private readonly opts: HarnessOptions,
  ) {
    this.startReader();
  }

  private static openGate(pinPath: string, opts: HarnessOptions): Gate {
    return Gate.open({
      pinPath,
      sources: opts.sources ?? 1024,
      flows: opts.flows ?? 1024,
      firstKnockFilterBytes: opts.firstKnockFilterBytes ?? HARNESS_FILTER_BYTES,
      eventRingBytes: 64 * 1024,
      logger: silentLogger,
    });
  }

  /**
   * Load a gate in a fresh /sys/fs/bpf/kg-test-<random> dir, apply the doors, run fn, and
   * destroy the gate and the dir in a finally.
   */
  static async with(opts: HarnessOptions, fn: (h: GateHarness) => Promise<void> | void): Promise<void> {
    await withPinDir(async (dir) => {
      const pinPath = `${dir}/gate`;
      const gate = GateHarness.openGate(pinPath, opts);
      const h = new GateHarness(gate, pinPath, opts);
      try {
        h.gate.setDenyTokens(opts.denyTokens ?? 0);
        h.gate.setKnockTokens(opts.knockTokens ?? 1_000_000_000);
        h.gate.setBruteForce(opts.bruteForce ?? { maxFailures: 0, failureWindowMs: 60_000, cooldownMs: 300_000 });
        if (opts.yaml !== undefined) h.apply(opts.yaml);
        else if (opts.doors !== undefined) h.gate.applyDoors(opts.doors);
        if (opts.via === 'dispatcher' || (opts.via === undefined && VIA_DISPATCHER)) {
          await withNetns(async (env) => {
            h.via = env;
            try {
              h.joinDispatcher();
              await fn(h);
            } finally {
              h.leaveDispatcher();
            }
          });
        } else {
          await fn(h);
        }
        h.assertNoLeftoverEvents('end of test');
        assert.deepEqual(h.badStamps, [], 'every event but DENY carries the clock of its packet (ts_ns inside the run)');
      } finally {
        h.stopReader();
        h.gate.destroy();
      }
    });
  }

  apply(yamlOrDoors: string | DoorConfig[]): void {
    this.gate.applyDoors(typeof yamlOrDoors === 'string' ? doorsOf(yamlOrDoors) : yamlOrDoors);
  }

  /** Close this Gate (pins stay) and Gate.open the same pin dir again: adoption. */
  reopen(): Gate {
    this.assertNoLeftoverEvents('before reopen');
    this.stopReader();
    this.gate.close();
    this.gate = GateHarness.openGate(this.pinPath, this.opts);
    this.startReader();
    if (this.via !== null) this.joinDispatcher();
    return this.gate;
  }

  /** KG_XDP_VIA=dispatcher: the namespace whose veth holds the dispatcher */
  via: NetnsPair | null = null;
  /** what rows run on: the gate's program, or the dispatcher holding it */
  private runFd = -1;
  /** via the dispatcher: the kernel could not run it, the gate took a direct link */
  fellBack: boolean | null = null;
  /** the dispatcher the rows run on (0: none) */
  get dispatcherFd(): number {
    return this.runFd;
  }

  /** Attach (or move) the gate into the dispatcher on the veth and run rows on the dispatcher. */
  joinDispatcher(): void {
    const env = this.via!;
    privateLibxdpBpffs();
    // The veth carries real traffic too: IPv6 brings its own (router solicitations, MLD, DAD),
    // which would move the verdict counters between a row's snapshots. Off on both ends.
    for (const [ns, ifname] of [[env.nsA, env.ifA], [env.nsB, env.ifB]] as const) {
      run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${ifname}.disable_ipv6=1`]);
    }
    const a = env.enter(env.nsA, () => {
      this.gate.attach([{ name: env.ifA, mode: 'auto', attach: 'dispatcher', priority: 10 }]);
      return this.gate.attachments()[0];
    });
    if (a?.attach === 'link') {
      // libxdp's dispatcher cannot run on this kernel: the gate fell back to a direct link, and
      // the rows run on that program (what the interface runs)
      assert.ok(!EXPECT_DISPATCHER, 'KG_EXPECT_DISPATCHER=1: the gate must be in libxdp\'s dispatcher on this kernel');
      this.fellBack = true;
      return;
    }
    assert.equal(a?.attach, 'dispatcher');
    this.fellBack = false;
    const id = a?.dispatcher?.dispatcherId ?? 0;
    if (this.runFd >= 0) closeFd(this.runFd);
    this.runFd = libbpf().bpf_prog_get_fd_by_id(id);
    assert.ok(this.runFd >= 0, `dispatcher ${id}: errno ${-this.runFd}`);
  }

  leaveDispatcher(): void {
    if (this.runFd >= 0) closeFd(this.runFd);
    this.runFd = -1;
    const env = this.via;
    if (env !== null) env.enter(env.nsA, () => this.gate.detachInterface(env.ifA));
    this.via = null;
  }

  private get progFd(): number {
    return this.runFd >= 0 ? this.runFd : this.gate.progFd;
  }

  private startReader(): void {
    this.reader = new RingBufferReader(this.gate.map(MAP.EVENTS).fd, (b) => this.pending.push(decodeEvent(b)));
  }

  private stopReader(): void {
    this.reader?.close();
    this.reader = null;
  }

  /** Events read so far and not yet taken. */
  drainEvents(): KEvent[] {
    this.reader?.consume();
    const out = this.pending;
    this.pending = [];
    return out;
  }

  /** Wait (bounded) until n events arrived, then return everything there is. */
  async takeEvents(n: number, timeoutMs = 2000): Promise<KEvent[]> {
    const deadline = Date.now() + timeoutMs;
    this.reader?.consume();
    while (this.pending.length < n && Date.now() < deadline) {
      await sleep(5);
      this.reader?.consume();
    }
    await new Promise((r) => setImmediate(r));
    return this.drainEvents();
  }

  assertNoLeftoverEvents(when: string): void {
    const left = this.drainEvents();
    assert.deepEqual(left.map((e) => this.describe(e)), [], `${when}: unexpected events left in the ring`);
  }

  doorsBySlot(): Map<number, KDoor> {
    return new Map(this.gate.doors().map((d) => [d.slot, d.door]));
  }

  slotOf(name: string): number {
    const d = this.gate.doors().find((x) => x.door.name === name);
    if (!d) throw new Error(`no live door named ${name}`);
    return d.slot;
  }

  describe(k: KEvent): GateEvent {
    const doors = this.doorsBySlot();
    return describeEvent(k, {
      doorName: (s) => doors.get(s)?.name,
      doorSteps: (s) => {
        const d = doors.get(s);
        return d === undefined || d.type === DOOR_TYPE.SEQUENCE || d.type === DOOR_TYPE.ROTATING ? d?.nsteps : undefined;
      },
      ifName: () => undefined,
      nowNs: monoNowNs,
    });
  }

  /**
   * Raw contents of the per-source maps (hex source -> value), of kg_flows (hex source -> its
   * flows' keys and values, last_ns zeroed: the clock of the last packet is not a change), and
   * of kg_nonces and kg_spent (hex key -> value).
   */
  snapshot(): Record<'progress' | 'probation' | 'penalty' | 'grants' | 'flows' | 'nonces' | 'spent', Map<string, Buffer>> {
    type PerSource = typeof MAP.PROGRESS | typeof MAP.PROBATION | typeof MAP.PENALTY | typeof MAP.GRANTS | typeof MAP.NONCES | typeof MAP.SPENT;
    const read = (name: PerSource): Map<string, Buffer> =>
      new Map([...this.gate.map(name).entries()].map(([k, v]) => [k.toString('hex'), Buffer.from(v)]));
    const flows = new Map<string, Buffer[]>();
    for (const [k, v] of this.gate.map(MAP.FLOWS).entries()) {
      const src = decodeFlowKey(k).src.toString('hex');
      const value = Buffer.from(v);
      value.fill(0, OFFSETS.flow.last_ns, OFFSETS.flow.last_ns + 8);
      flows.set(src, [...(flows.get(src) ?? []), Buffer.concat([k, value])]);
    }
    const flat = new Map([...flows].map(([src, list]) => [src, Buffer.concat(list.sort(Buffer.compare))]));
    return {
      progress: read(MAP.PROGRESS),
      probation: read(MAP.PROBATION),
      penalty: read(MAP.PENALTY),
      grants: read(MAP.GRANTS),
      flows: flat,
      nonces: read(MAP.NONCES),
      spent: read(MAP.SPENT),
    };
  }

  /** {door name: steps} of a source's live progress: step 1 (kg_probation) and more (kg_progress). */
  progressOf(src: string): Record<string, number> {
    const doors = this.doorsBySlot();
    const out: Record<string, number> = {};
    const pr = this.gate.map(MAP.PROBATION).lookup(addrKey(src));
    for (const f of pr ? decodeProbation(pr).live : []) out[doors.get(f.slot)?.name ?? `slot${f.slot}`] = 1;
    const v = this.gate.map(MAP.PROGRESS).lookup(addrKey(src));
    for (const p of v ? decodeProgress(v) : []) out[doors.get(p.slot)?.name ?? `slot${p.slot}`] = p.step;
    return out;
  }

  /** A source's live flows as "PORT/PROTO", sorted. */
  flowsOf(src: string, nowNs = monoNowNs()): string[] {
    const key = addrKey(src);
    const out: string[] = [];
    for (const [k, v] of this.gate.map(MAP.FLOWS).entries()) {
      const fk = decodeFlowKey(k);
      if (!fk.src.equals(key)) continue;
      const f = decodeFlow(v);
      if (nowNs - f.lastNs > flowIdleLimitNs(f)) continue;
      out.push(`${fk.dport}/${protoName(fk.proto)}`);
    }
    return out.sort();
  }

  /** A source's kg_penalty entry (failures, cooldown), or null. */
  penaltyOf(src: string, nowNs = monoNowNs()): { failures: number; cooldown: boolean } | null {
    const v = this.gate.map(MAP.PENALTY).lookup(addrKey(src));
    if (v === null) return null;
    const p = decodePenalty(v);
    return { failures: p.failures, cooldown: p.cooldownUntilNs > nowNs };
  }

  /** Door names a source holds a live grant for. */
  grantsOf(src: string, nowNs = monoNowNs()): string[] {
    const v = this.gate.map(MAP.GRANTS).lookup(addrKey(src));
    if (v === null) return [];
    const doors = this.doorsBySlot();
    const out: string[] = [];
    decodeGrant(v).forEach((exp, slot) => {
      if (exp > nowNs) out.push(doors.get(slot)?.name ?? `slot${slot}`);
    });
    return out.sort();
  }

  /**
   * Sets every bit of the first-knock filter's current window: every (source, door) then looks
   * as if it had made a first knock, as under an overwhelming flood. For tests of what still
   * holds when the filter answers yes to everyone.
   */
  saturateFilter(nowNs = monoNowNs()): void {
    const m = this.gate.map(MAP.FIRSTS);
    const w = this.gate.filterWindowNs();
    assert.ok(w > 0n, 'the filter has a window once doors are applied');
    const half = Number((nowNs / w) & 1n);
    const start = nowNs - (nowNs % w);
    const key = Buffer.alloc(4);
    for (let i = 0; i < m.maxEntries; i++) {
      key.writeUInt32LE(i);
      const v = m.lookup(key) ?? Buffer.alloc(m.valueSize);
      v.writeBigUInt64LE(start, OFFSETS.fk_block.start + 8 * half);
      v.fill(0xff, OFFSETS.fk_block.bits + half * KG.FK_WORDS * 4, OFFSETS.fk_block.bits + (half + 1) * KG.FK_WORDS * 4);
      m.update(key, v);
    }
  }

  get framing(): HarnessFraming {
    return this.opts.framing ?? 'ethernet';
  }

  /** An Ethernet frame as this table's program sees it (toL3 for 'l3'). */
  frameFor(frame: Buffer): Buffer {
    return this.framing === 'l3' ? toL3(frame) : frame;
  }

  /** BPF_PROG_TEST_RUN of a frame as built (Ethernet) through the table's program. */
  testRun(frame: Buffer): ReturnType<typeof progTestRun> {
    const fd = this.framing === 'l3' ? this.gate.progFdL3 : this.progFd;
    return progTestRun(fd, this.frameFor(frame), { ifindex: TEST_IFINDEX });
  }

  /** One test run, verdict only (for scans). */
  runFast(frame: Buffer): number {
    return this.testRun(frame).retval;
  }

  stats(): Stats {
    return this.gate.stats();
  }

  async table(entries: readonly Entry[]): Promise<void> {
    for (const e of entries) {
      if (isRow(e)) await this.check(e);
      else if ('pause' in e) await sleep(e.pause);
      else await e.run(this);
    }
  }

  async check(row: Row): Promise<void> {
    const label = this.framing === 'l3' ? `[L3 program] ${row.description}` : row.description;
    this.assertNoLeftoverEvents(`before "${label}"`);
    const stats0 = this.gate.stats();
    const maps0 = this.snapshot();
    const t0 = monoNowNs();
    const { retval } = this.testRun(row.frame);
    const t1 = monoNowNs();
    const stats1 = this.gate.stats();
    const maps1 = this.snapshot();
    this.rows++;

    // verdict and counters
    const delta = statDelta(stats0, stats1);
    const moved = VERDICT_NAMES.filter((n) => delta[n] !== 0).map((n) => `${n}${delta[n] > 0 ? '+' : ''}${delta[n]}`);
    assert.deepEqual(moved, [`${row.counter}+1`], `${label}: verdict counters that moved`);
    assert.equal(retval, row.verdict, `${label}: XDP verdict (${retval === XDP_PASS ? 'XDP_PASS' : retval === XDP_DROP ? 'XDP_DROP' : retval})`);
    const others = Object.fromEntries(STAT_NAMES.slice(VERDICTS).map((n) => [n, delta[n]]).filter(([, d]) => d !== 0));
    const wanted = Object.fromEntries(Object.entries(row.counters ?? {}).filter(([, d]) => d !== 0));
    assert.deepEqual(others, wanted, `${label}: other counters that moved`);

    // events
    const expected = row.events === NO_EVENT ? [] : row.events;
    const got = await this.takeEvents(expected.length);
    const src = frameSource(row.frame);
    const doors = this.doorsBySlot();
    for (const k of got) {
      const d = this.describe(k);
      assert.equal(k.ifindex, TEST_IFINDEX, `${label}: event ifindex`);
      if (src !== null) assert.equal(d.source, src, `${label}: event source`);
      if (k.type === EVENT.DENY) {
        assert.equal(k.tsNs, 0n, `${label}: DENY events carry ts 0 (no clock on the drop path)`);
        assert.equal(k.expiresNs, 0n, `${label}: DENY expires`);
        continue;
      }
      if (!(k.tsNs >= t0 && k.tsNs <= t1)) this.badStamps.push(`${label}: ${d.event} event (${d.reason ?? '-'}) ts ${k.tsNs} outside the run [${t0}, ${t1}]`);
      const door = doors.get(k.door);
      if (k.type === EVENT.GRANT) {
        assert.ok(door, `${label}: GRANT for a slot with no live door`);
        assert.equal(k.expiresNs - k.tsNs, door.openForNs, `${label}: GRANT expires = ts + open_for of ${door.name}`);
        assert.equal(k.step, grantStep(door), `${label}: GRANT step of ${door.name}`);
        const g = this.gate.map(MAP.GRANTS).lookup(Buffer.from(k.addr));
        assert.ok(g, `${label}: GRANT event but no kg_grants entry`);
        assert.equal(decodeGrant(g)[k.door], k.expiresNs, `${label}: kg_grants expiry = GRANT event expiry`);
      }
      if (k.type === EVENT.REJECT || k.type === EVENT.SIGNED) {
        assert.ok(door, `${label}: ${d.event} for a slot with no live door`);
        assert.equal(k.expiresNs, 0n, `${label}: ${d.event} expires`);
        assert.equal(k.doors, 0, `${label}: ${d.event} doors mask`);
        const step = k.type === EVENT.REJECT && door.type === DOOR_TYPE.ROTATING ? door.nsteps : 0;
        assert.equal(k.step, step, `${label}: ${d.event} step`);
        if (k.type === EVENT.SIGNED) assert.equal(k.reason, 0, `${label}: SIGNED reason`);
      }
    }
    const described = got.map((k) => this.describe(k));
    const unmatched = [...described];
    for (const want of expected) {
      const i = unmatched.findIndex((g) => Object.entries(want).every(([f, v]) => (g as unknown as Record<string, unknown>)[f] === v));
      assert.ok(i >= 0, `${label}: expected event ${JSON.stringify(want)} not among ${JSON.stringify(described)}`);
      unmatched.splice(i, 1);
    }
    assert.deepEqual(unmatched, [], `${label}: unexpected events`);

    // maps
    const change: MapChange = row.map === NO_MAP_UPDATE ? {} : row.map;
    const check = (
      which: 'progress' | 'probation' | 'penalty' | 'grants' | 'flows',
      before: Map<string, Buffer>,
      after: Map<string, Buffer>,
      listed: Record<string, unknown> | undefined,
    ): void => {
      const named = new Set(Object.keys(listed ?? {}).map(key));
      // BPF's LRU maps start evicting before they are quite full (once the global free list
      // runs low): in a map more than half full, an insert for a named source may push out
      // another source's entry. Only that: nothing of an unnamed source may change or appear.
      const max = this.gate.map(which === 'progress' ? MAP.PROGRESS : which === 'probation' ? MAP.PROBATION : which === 'penalty' ? MAP.PENALTY : which === 'grants' ? MAP.GRANTS : MAP.FLOWS).maxEntries;
      const mayEvict = which !== 'flows' && before.size > max / 2;
      for (const k of new Set([...before.keys(), ...after.keys()])) {
        if (named.has(k)) continue;
        const b = before.get(k);
        const a = after.get(k);
        if (mayEvict && b !== undefined && a === undefined) continue;
        assert.ok(
          (b === undefined && a === undefined) || (b !== undefined && a !== undefined && b.equals(a)),
          `${label}: kg_${which} entry of ${formatAddress(Buffer.from(k, 'hex'))} changed (${b ? 'present' : 'absent'} -> ${a ? 'present' : 'absent'})`,
        );
      }
    };
    check('progress', maps0.progress, maps1.progress, change.progress);
    check('probation', maps0.probation, maps1.probation, change.progress);
    check('penalty', maps0.penalty, maps1.penalty, change.penalty);
    check('grants', maps0.grants, maps1.grants, change.grants);
    check('flows', maps0.flows, maps1.flows, change.flows);
    for (const [a, want] of Object.entries(change.progress ?? {})) {
      assert.deepEqual(this.progressOf(a), want, `${label}: kg_progress of ${a}`);
      const v = this.gate.map(MAP.PROGRESS).lookup(addrKey(a));
      for (const p of v ? decodeProgress(v) : []) {
        const door = doors.get(p.slot);
        assert.ok(door, `${label}: progress of ${a} on an empty slot ${p.slot}`);
        assert.ok(seqEpochs(door, t1).includes(p.epoch), `${label}: progress of ${a} on ${door.name} carries the epoch of one of its live sequences`);
        assert.ok(p.startNs <= p.lastNs && p.lastNs <= t1, `${label}: progress times of ${a} on ${door.name}`);
      }
      const pr = this.gate.map(MAP.PROBATION).lookup(addrKey(a));
      for (const f of pr ? decodeProbation(pr).live : []) {
        const door = doors.get(f.slot);
        assert.ok(door, `${label}: first knock of ${a} on an empty slot ${f.slot}`);
        assert.ok(seqEpochs(door, t1).includes(f.epoch), `${label}: first knock of ${a} on ${door.name} carries the epoch of one of its live sequences`);
        assert.ok(f.atNs <= t1, `${label}: first knock time of ${a} on ${door.name}`);
      }
    }
    for (const [a, want] of Object.entries(change.grants ?? {})) {
      assert.deepEqual(this.grantsOf(a), [...want].sort(), `${label}: live grants of ${a}`);
    }
    for (const [a, want] of Object.entries(change.flows ?? {})) {
      assert.deepEqual(this.flowsOf(a), [...want].sort(), `${label}: live flows of ${a}`);
    }
    for (const [a, want] of Object.entries(change.penalty ?? {})) {
      assert.deepEqual(this.penaltyOf(a), want, `${label}: kg_penalty of ${a}`);
    }

    // kg_nonces and kg_spent: only additions, exactly the row's
    for (const [k, v] of maps0.nonces) assert.ok(maps1.nonces.get(k)?.equals(v), `${label}: kg_nonces entry ${k} changed or went away`);
    const addedNonces = [...maps1.nonces.keys()].filter((k) => !maps0.nonces.has(k)).sort();
    assert.deepEqual(addedNonces, (row.nonces ?? []).map((n) => n.toString('hex')).sort(), `${label}: nonces added to kg_nonces`);
    for (const k of addedNonces) {
      const at = maps1.nonces.get(k)!.readBigUInt64LE(0);
      assert.ok(at >= t0 && at <= t1, `${label}: a nonce's value is the clock of its knock`);
    }
    for (const [k, v] of maps0.spent) assert.ok(maps1.spent.get(k)?.equals(v), `${label}: kg_spent entry ${k} changed or went away`);
    const addedSpent = [...maps1.spent.keys()].filter((k) => !maps0.spent.has(k)).map((k) => Buffer.from(k, 'hex'));
    assert.deepEqual(
      addedSpent.map((k) => `${k.readUInt32LE(OFFSETS.spent_key.door_id)}/${k.readBigUInt64LE(OFFSETS.spent_key.window)}`).sort(),
      Object.entries(row.spent ?? {}).flatMap(([door, windows]) => windows.map((w) => `${doorId(door)}/${w}`)).sort(),
      `${label}: windows added to kg_spent`,
    );
  }
}

/** Steps a GRANT event of this door carries: 1 for a single-packet door, else the sequence's length. */
function grantStep(d: KDoor): number {
  return d.type === DOOR_TYPE.SPA || d.type === DOOR_TYPE.SIGNED || d.type === DOOR_TYPE.PAYLOAD ? 1 : d.nsteps;
}

/** The epochs a progress record of this door may carry (kg_seq_epoch of its live sequences). */
function seqEpochs(d: KDoor, nowNs: bigint): number[] {
  if (d.type !== DOOR_TYPE.ROTATING) return [d.epoch];
  const out: number[] = [];
  for (const s of [0, 1] as const) {
    if (d.validUntilNs[s] < nowNs) continue;
    out.push((d.epoch + Math.imul(Number(d.win[s] & 0xffffffffn) | 0, 2654435761 | 0)) >>> 0);
  }
  return out;
}

// ---- flows: rows for packets that open one or travel on one ---------------------------------

/**
 * Keeps the flows a table opens, so that rows can state each source's flows exactly: every
 * `opens` row is a new connection (a SYN, or a UDP datagram, from a source port never used
 * before), every `on` row a packet on the flow that `opens` made last for that source, port and
 * protocol.
 */
export class FlowBook {
  private readonly open = new Map<string, string[]>();
  private readonly last = new Map<string, number>();
  private next = 41000;

  /** A fresh source port. */
  port(): number {
    return this.next++;
  }

  /** The source port of the flow `opens` made last for (src, port, proto). */
  sportOf(src: string, port: number, proto: 'tcp' | 'udp' = 'tcp'): number {
    const sport = this.last.get(`${src}|${port}/${proto}`);
    if (sport === undefined) throw new Error(`no flow was opened from ${src} to ${port}/${proto}`);
    return sport;
  }

  /** The flows the book holds for src, as rows state them. */
  of(src: string): string[] {
    return [...(this.open.get(src) ?? [])];
  }

  /**
   * The rows written after this call expect the source's flows (those `which` picks, default
   * all) gone: revoked, their door removed, idle. Rows are built before the table runs, so this
   * acts where the table is written; it returns `entry` to sit in its place.
   */
  gone<E extends Entry>(src: string, entry: E, which?: (flow: string) => boolean): E {
    const keep = (this.open.get(src) ?? []).filter((f) => which !== undefined && !which(f));
    this.open.set(src, keep);
    return entry;
  }

  /** A packet from a new source port that a live grant lets in: pass_granted, one more flow. */
  opens(description: string, src: string, port: number, build: (sport: number) => Buffer, proto: 'tcp' | 'udp' = 'tcp', more: Partial<Row> = {}): Row {
    const sport = this.port();
    this.last.set(`${src}|${port}/${proto}`, sport);
    const list = [...this.of(src), `${port}/${proto}`].sort();
    this.open.set(src, list);
    return {
      description,
      frame: build(sport),
      verdict: XDP_PASS,
      counter: 'pass_granted',
      map: { flows: { [src]: list }, ...((more.map as MapChange | undefined) ?? {}) },
      events: NO_EVENT,
      counters: { flow_new: 1 },
      ...Object.fromEntries(Object.entries(more).filter(([k]) => k !== 'map')),
    };
  }

  /** A packet on the last flow opened for (src, port, proto): pass_flow. */
  on(description: string, src: string, port: number, build: (sport: number) => Buffer, proto: 'tcp' | 'udp' = 'tcp', more: Partial<Row> = {}): Row {
    return {
      description,
      frame: build(this.sportOf(src, port, proto)),
      verdict: XDP_PASS,
      counter: 'pass_flow',
      map: { flows: { [src]: this.of(src) } },
      events: NO_EVENT,
      ...more,
    };
  }
}

// ---- rows, frames and expectations used by many tables -------------------------------------

/** A packet that passes with no map update and no event: only its verdict counter moves. */
export const untouched = (description: string, frame: Buffer, counter: VerdictName): Row => ({
  description,
  frame,
  verdict: XDP_PASS,
  counter,
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
});

/** A packet to a knock port that changes nothing and says nothing (counters: what else moves). */
export const knockNoop = (description: string, frame: Buffer, counters: Row['counters'] = {}): Row => ({
  description,
  frame,
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
  counters,
});

/** A packet to a protected port from a source without a grant there, deny tokens at 0: counted, no event. */
export const deniedQuietly = (description: string, frame: Buffer, counter: 'drop_no_grant' | 'drop_expired' = 'drop_no_grant'): Row => ({
  description,
  frame,
  verdict: XDP_DROP,
  counter,
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
  counters: { deny_suppressed: 1 },
});

export const DST4 = '198.19.0.1';
export const DST6 = '2001:db8:ffff::1';

/** Address pair from `src` to the gate's address of the same family. */
export function to(src: string): { src: string; dst: string } {
  return { src, dst: src.includes(':') ? DST6 : DST4 };
}

type Proto = 'tcp' | 'udp';

/** Expected described events (only the fields given are compared). */
export const ev = {
  knock: (door: string, step: number, steps: number, port: number, protocol: Proto = 'tcp'): EventExpect => ({
    event: 'knock',
    door,
    step,
    steps,
    port,
    protocol,
  }),
  reset: (
    door: string,
    step: number,
    reason: 'wrong_port' | 'step_timeout' | 'sequence_timeout',
    port: number,
    protocol: Proto = 'tcp',
  ): EventExpect => ({ event: 'reset', door, step, reason, port, protocol }),
  grant: (door: string, port: number, protocol: Proto = 'tcp'): EventExpect => ({ event: 'grant', door, port, protocol }),
  deny: (doors: string, reason: 'no_grant' | 'expired' | 'no_flow', port: number, protocol: Proto = 'tcp'): EventExpect => ({
    event: 'deny',
    door: doors,
    reason,
    port,
    protocol,
  }),
  cooldown: (failures: number, port: number, protocol: Proto = 'tcp'): EventExpect => ({ event: 'cooldown', door: '*', failures, port, protocol }),
  consume: (door: string, port: number, protocol: Proto = 'tcp'): EventExpect => ({ event: 'consume', door, port, protocol }),
};
