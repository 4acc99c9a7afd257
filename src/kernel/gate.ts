/**
 * The gate: the loaded (or adopted) XDP program, its pinned maps and links, and every
 * operation on them. Config-to-tables compilation lives in tables.ts; the byte layout in
 * layout.ts; the libbpf binding in src/bpf/. See docs/DESIGN.md for the kernel contract.
 *
 * Pins under `pinPath`:  prog, prog_l3, maps/<name> (the .bss map as maps/kg_globals),
 * links/<ifname> (a direct bpf_link), dispatcher/<ifname> (the gate's program in libxdp's
 * dispatcher, see dispatcher.ts). prog parses frames that start with an Ethernet header, prog_l3
 * those of devices without a link-layer header (TUN, WireGuard): one object, every map shared,
 * the same policy. The device type picks one at attach time (src/net/link-type.ts).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BpfLink,
  BpfMap,
  BpfObject,
  BPF_ANY,
  BPF_F_MMAPABLE,
  attachXdp,
  ensureBpffs,
  ifIndex,
  ifName,
  mmapMap,
  unpin,
  waitForPrograms,
  xdpQuery,
  type MmapRegion,
} from '../bpf/index.js';
import { libc } from '../bpf/libbpf.js';
import type { DoorConfig, InterfaceConfig } from '../config/index.js';
import type { Logger } from '../log.js';
import {
  Globals,
  KG,
  MAP,
  MAP_SPECS,
  OFFSETS,
  PORT_STRIDE,
  PROG_NAME,
  PROG_NAME_L3,
  SIZEOF,
  decodeAllowKey,
  decodeDoor,
  decodeFirstsBlock,
  decodePenalty,
  decodeProbation,
  decodeProgress,
  decodeSpentKey,
  doorIndex,
  encodeAllowKey,
  encodeDoor,
  sumStats,
  type KDoor,
  type KDoorProgress,
  type Stats,
} from './layout.js';
import { Grants, type FlowEntry, type GrantEntry, type SweepResult } from './grants.js';

export type { FlowEntry, GrantEntry, SweepResult };
import { GrantFilter, gfilterEntries, gfilterShift } from './gfilter.js';
import { UnsupportedLinkError, framingOf, type Framing } from '../net/link-type.js';
import { allowKeyText, planGeneration, type GenerationPlan, type PlanContext, type SlotState } from './tables.js';
import {
  Dispatcher,
  DispatcherUnavailable,
  detachAllDispatched,
  detachDispatched,
  dispatchedNames,
  dispatchedState,
  isDispatched,
  type DispatchedState,
} from './dispatcher.js';

/** What attaching needs to know of an interface entry. */
export type AttachTarget = Pick<InterfaceConfig, 'name' | 'mode' | 'attach' | 'priority'>;

export const DEFAULT_PIN_PATH = '/sys/fs/bpf/knockgate';

export function defaultObjectPath(): string {
  // dist/src/kernel/gate.js -> <package>/bpf/knock.bpf.o
  return fileURLToPath(new URL('../../../bpf/knock.bpf.o', import.meta.url));
}

/** Error for a state the user must resolve, with what to do. */
export class GateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GateError';
  }
}

/** No gate is pinned at the given path. */
export class NoGateError extends GateError {
  constructor(readonly pinPath: string) {
    super(`no gate is loaded at ${pinPath}: start one with \`knockgate run -c CONFIG\` (or pass the right --pin-path)`);
    this.name = 'NoGateError';
  }
}

const PINNED_NAME: Record<string, string> = { [MAP.GLOBALS]: 'kg_globals' };

type GateMap = (typeof MAP)[keyof typeof MAP];

/** A map as the loader treats it: its layout as compiled (abi.gen.ts, from the object's BTF), and more. */
interface GateMapSpec {
  readonly name: GateMap;
  /** 0: none (a ring buffer) */
  readonly keySize: number;
  readonly valueSize: number;
  /** declared BPF_F_MMAPABLE (user space mmaps it): a pinned map must be too */
  readonly mmapped: boolean;
  /** max_entries set from the options, and the config key that sets it (a live gate keeps its size) */
  readonly limit?: { readonly key: string; readonly entries: (opts: GateOptions) => number; readonly unitBytes?: number };
  /** a gate pinned by an earlier knockgate may lack it: adopting creates it (the grant filter starts untrusted and is rebuilt) */
  readonly later?: true;
}

function spec(name: GateMap, more: Pick<GateMapSpec, 'limit' | 'later'> = {}): GateMapSpec {
  const gen = MAP_SPECS[name];
  return { name, keySize: gen.keySize, valueSize: gen.valueSize, mmapped: (gen.flags & BPF_F_MMAPABLE) !== 0, ...more };
}

const SOURCES = { key: 'limits.sources', entries: (o: GateOptions) => o.sources };

/** Every map of the gate, once. */
const MAP_LIST: readonly GateMapSpec[] = [
  spec(MAP.PORTS),
  spec(MAP.DOORS),
  spec(MAP.ALLOW),
  spec(MAP.PROGRESS, { limit: SOURCES }),
  spec(MAP.PROBATION, { limit: SOURCES }),
  spec(MAP.FIRSTS, {
    limit: {
      key: 'limits.first_knock_filter',
      entries: (o) => Math.max(1, Math.floor((o.firstKnockFilterBytes ?? KG.DEFAULT_FK_BLOCKS * KG.FK_BLOCK_BYTES) / KG.FK_BLOCK_BYTES)),
      unitBytes: KG.FK_BLOCK_BYTES,
    },
  }),
  spec(MAP.PENALTY, { limit: SOURCES }),
  spec(MAP.GRANTS, { limit: SOURCES }),
  spec(MAP.FLOWS, { limit: { key: 'limits.flows', entries: (o) => o.flows ?? KG.DEFAULT_FLOWS } }),
  spec(MAP.EVENTS, { limit: { key: 'limits.event_ring', entries: (o) => o.eventRingBytes } }),
  spec(MAP.NONCES),
  spec(MAP.SPENT),
  spec(MAP.STATS),
  spec(MAP.GLOBALS),
  spec(MAP.GFILTER, { limit: { key: 'limits.sources', entries: (o) => gfilterEntries(o.sources) }, later: true }),
  spec(MAP.SPATAGS, { later: true }),
];
const ALL_MAPS = MAP_LIST.map((m) => m.name);

/**
 * The one compatibility check of a map against this build. Opening a map (after load, or from
 * pins): key and value sizes (BpfMap.expectSizes: a MapLayoutError). Adopting a pinned gate
 * (`adopt` given): sizes and mmapability, then max_entries against the options, each a
 * GateError saying what to do.
 */
function checkMap(s: GateMapSpec, m: BpfMap, adopt?: GateOptions): void {
  if (adopt === undefined) {
    if (s.keySize !== 0) m.expectSizes(s.keySize, s.valueSize);
    return;
  }
  const fix = `run \`knockgate detach --pin-path ${adopt.pinPath}\` (this drops live grants and flows) and start again`;
  const flagsOff = s.mmapped && (m.flags & BPF_F_MMAPABLE) === 0;
  if (flagsOff || (s.keySize !== 0 && (m.keySize !== s.keySize || m.valueSize !== s.valueSize))) {
    throw new GateError(
      `the gate pinned at ${adopt.pinPath} has another layout (map ${s.name}: key ${m.keySize} B, value ${m.valueSize} B; ` +
        `this build expects key ${s.keySize} B, value ${s.valueSize} B): it was loaded by another knockgate version; ${fix}`,
    );
  }
  if (s.limit !== undefined && m.maxEntries !== s.limit.entries(adopt)) {
    const want = s.limit.entries(adopt);
    const { key, unitBytes } = s.limit;
    const scale = unitBytes ?? 1;
    const unit = unitBytes !== undefined ? ' bytes' : '';
    throw new GateError(
      `the gate pinned at ${adopt.pinPath} was loaded with ${key} = ${m.maxEntries * scale}${unit}, the config asks for ${want * scale}${unit}: ` +
        `a live gate cannot be resized; set ${key} back to ${m.maxEntries * scale}${unit}, or ${fix}`,
    );
  }
}

/** The maps a gate pinned at `paths` lacks (maps added later excepted). */
function missingMaps(paths: ReturnType<typeof pinPaths>): GateMap[] {
  return MAP_LIST.filter((s) => !s.later && !existsSync(paths.map(s.name))).map((s) => s.name);
}

export interface GateOptions {
  pinPath: string;
  /** limits.sources: kg_progress, kg_probation, kg_penalty and kg_grants entries (each) */
  sources: number;
  /** limits.flows (default KG_DEFAULT_FLOWS) */
  flows?: number;
  eventRingBytes: number;
  /** limits.first_knock_filter in bytes, a power of two (default KG_DEFAULT_FK_BLOCKS blocks) */
  firstKnockFilterBytes?: number;
  logger: Logger;
  objectPath?: string;
}

/** The brute-force limit as the kernel holds it (kg_globals). */
export interface BruteForce {
  maxFailures: number;
  failureWindowMs: number;
  cooldownMs: number;
}

export interface Attachment {
  ifname: string;
  ifindex: number;
  mode: string;
  progId: number;
  /** how the gate holds it: libxdp's dispatcher or a direct bpf_link */
  attach: 'dispatcher' | 'link';
  /** dispatcher: the chain and the gate's place in it */
  dispatcher?: DispatchedState | null;
}

export interface ProgressEntry extends KDoorProgress {
  addr: Buffer;
  door: string;
  stale: boolean;
}

export interface CooldownEntry {
  addr: Buffer;
  untilNs: bigint;
}

export interface FilterState {
  blocks: number;
  bytes: number;
  windowNs: bigint;
  /** blocks sampled for the estimates */
  sampled: number;
  /** fraction of the bits of live halves (current and previous window) that are set */
  fill: number;
  /** estimated chance that a source that never knocked passes for one that did */
  falsePositive: number;
}

function pinPaths(pinPath: string) {
  return {
    prog: join(pinPath, 'prog'),
    progL3: join(pinPath, 'prog_l3'),
    maps: join(pinPath, 'maps'),
    links: join(pinPath, 'links'),
    map: (name: string) => join(pinPath, 'maps', PINNED_NAME[name] ?? name),
    link: (ifname: string) => join(pinPath, 'links', ifname),
  };
}

/** CLOCK_REALTIME - CLOCK_BOOTTIME in ns: what turns bpf_ktime_get_boot_ns() into wall time. */
export function wallOffsetNs(): bigint {
  const ts = Buffer.alloc(16);
  const read = (clock: number): bigint => {
    if (libc().clock_gettime(clock, ts) !== 0) throw new Error(`clock_gettime(${clock}) failed`);
    return ts.readBigInt64LE(0) * 1_000_000_000n + ts.readBigInt64LE(8);
  };
  // Boot time read on both sides of the wall clock: the offset is exact to their midpoint.
  const b0 = read(7); // CLOCK_BOOTTIME
  const wall = read(0); // CLOCK_REALTIME
  const b1 = read(7);
  return wall - (b0 + b1) / 2n;
}

export function monoNowNs(): bigint {
  // process.hrtime is CLOCK_MONOTONIC, the clock bpf_ktime_get_ns() reads.
  return process.hrtime.bigint();
}

export class Gate {
  private readonly paths: ReturnType<typeof pinPaths>;
  private closed = false;

  private constructor(
    readonly pinPath: string,
    private readonly maps: Map<GateMap, BpfMap>,
    private readonly globals: MmapRegion,
    /** kg_ports, mmapped: generations are rewritten in place */
    private readonly ports: MmapRegion,
    /** fd of the loaded program (Ethernet framing); -1 when the gate was opened from pins without loading */
    readonly progFd: number,
    /** fd of the same program for frames that start at the IP header (no link-layer header); -1 likewise */
    readonly progFdL3: number,
    private readonly object: BpfObject | null,
    /** true when this process found the gate pinned and took it over */
    readonly adopted: boolean,
    private readonly log: Logger,
  ) {
    this.paths = pinPaths(pinPath);
    this.g = new Globals(globals);
    const gf = maps.get(MAP.GFILTER);
    this.gfRegion = gf ? mmapMap(gf) : null;
    this.gfilter = this.gfRegion ? new GrantFilter(this.gfRegion, () => this.filterSeed()) : null;
    const grantMaps = { grants: this.map(MAP.GRANTS), flows: this.map(MAP.FLOWS), penalty: this.map(MAP.PENALTY), probation: this.map(MAP.PROBATION) };
    this.grantTable = new Grants(grantMaps, this.gfilter, this.g, () => this.slotNames());
  }

  /** struct kg_globals, in place (the generated accessor). */
  private readonly g: Globals;
  /** kg_grants and kg_flows (grants.ts) */
  private readonly grantTable: Grants;

  /** The grant filter (null: a gate pinned by an earlier knockgate, opened without loading). */
  readonly gfilter: GrantFilter | null;
  private readonly gfRegion: MmapRegion | null;

  private filterSeed(): [bigint, bigint] {
    return [this.g.fkSeed.get(0), this.g.fkSeed.get(1)];
  }

  /**
   * Load the program and pin it, or adopt a pinned gate: reuse its maps (grants and progress
   * included), load the program against them and move its links to the new program.
   */
  static open(opts: GateOptions): Gate {
    const log = opts.logger;
    const paths = pinPaths(opts.pinPath);
    ensureBpffs(opts.pinPath);
    const adopting = existsSync(paths.map(MAP.PORTS));
    const objectPath = opts.objectPath ?? defaultObjectPath();
    if (!existsSync(objectPath)) {
      throw new GateError(`BPF object ${objectPath} not found: run \`npm run build\` (needs clang, see scripts/setup.sh)`);
    }
    const obj = BpfObject.open(objectPath);
    const reused: BpfMap[] = [];
    const created = new Set<GateMap>(ALL_MAPS);
    try {
      for (const s of MAP_LIST) if (s.limit) obj.setMaxEntries(s.name, s.limit.entries(opts));
      if (adopting) {
        const missing = missingMaps(paths);
        if (missing.length > 0) {
          throw new GateError(
            `the gate pinned at ${opts.pinPath} has another layout (no map ${missing.join(', ')}): it was loaded by another ` +
              `knockgate version; run \`knockgate detach --pin-path ${opts.pinPath}\` (this drops live grants and flows) and start again`,
          );
        }
        for (const s of MAP_LIST) {
          if (!existsSync(paths.map(s.name))) continue; // a map added later: created below
          const pinned = BpfMap.openPinned(paths.map(s.name));
          reused.push(pinned);
          checkMap(s, pinned, opts);
          obj.reuseMap(s.name, pinned.fd);
          created.delete(s.name);
        }
      }
      obj.load();
    } catch (err) {
      for (const m of reused) m.close();
      obj.close();
      throw err;
    }
    for (const m of reused) m.close();
    const maps = new Map<GateMap, BpfMap>();
    for (const s of MAP_LIST) {
      const m = obj.map(s.name);
      checkMap(s, m);
      maps.set(s.name, m);
    }
    const progFd = obj.programFd(PROG_NAME);
    const progFdL3 = obj.programFd(PROG_NAME_L3);
    mkdirSync(paths.maps, { recursive: true });
    mkdirSync(paths.links, { recursive: true });
    for (const name of created) maps.get(name)!.pin(paths.map(name));
    unpin(paths.prog);
    obj.pinProgram(PROG_NAME, paths.prog);
    unpin(paths.progL3);
    obj.pinProgram(PROG_NAME_L3, paths.progL3);
    const globals = mmapMap(maps.get(MAP.GLOBALS)!);
    const ports = mmapMap(maps.get(MAP.PORTS)!);
    const gate = new Gate(opts.pinPath, maps, globals, ports, progFd, progFdL3, obj, adopting, log.child({ module: 'gate' }));
    if (!adopting) gate.seedFilter(maps.get(MAP.FIRSTS)!.maxEntries);
    // A new grant filter is trusted at once on a new gate (no grants yet); adopting a gate
    // without one, it is trusted only after the rebuild below.
    if (created.has(MAP.GFILTER)) gate.gfilter!.init(gfilterShift(opts.sources), !adopting);
    gate.syncWallClock();
    if (adopting) {
      for (const ifname of gate.pinnedLinkNames()) {
        // Direct links move here; a place in a dispatcher moves at attach() (dispatcher.ts).
        if (!existsSync(paths.link(ifname))) continue;
        const link = BpfLink.openPinned(paths.link(ifname));
        try {
          // A link whose interface was deleted meanwhile is detached for good: drop its pin
          // (the daemon attaches anew when the interface is back).
          if (link.info().ifindex === 0) {
            unpin(paths.link(ifname));
            log.warn({ interface: ifname }, 'the pinned link of a deleted interface was dropped');
          } else {
            // The program for the device's framing (an interface of a type the gate refuses
            // keeps the Ethernet one it had: attach() names the problem).
            let fd: number;
            try {
              fd = gate.programFor(framingOf(ifname));
            } catch {
              fd = progFd;
            }
            link.update(fd);
          }
        } finally {
          link.close();
        }
      }
      if (created.has(MAP.GFILTER)) {
        // The old program wrote grants without marking them: once it has finished running,
        // every grant and flow it wrote is in the maps the rebuild lists.
        waitForPrograms();
        const n = gate.rebuildGrantFilter();
        log.info({ sources: n }, 'grant filter built for the adopted gate');
      }
      log.info({ pin_path: opts.pinPath, doors: gate.doors().map((d) => d.door.name) }, 'adopted the pinned gate');
    } else {
      log.info({ pin_path: opts.pinPath }, 'loaded the gate');
    }
    return gate;
  }

  /** Open a pinned gate's maps without loading anything (CLI commands). */
  static openPinned(pinPath: string, logger: Logger): Gate {
    const paths = pinPaths(pinPath);
    if (!existsSync(paths.map(MAP.PORTS))) throw new NoGateError(pinPath);
    const missing = missingMaps(paths);
    if (missing.length > 0) {
      throw new GateError(
        `the gate pinned at ${pinPath} has another layout (no map ${missing.join(', ')}): it was loaded by another knockgate version; ` +
          `run \`knockgate detach --pin-path ${pinPath}\` (it removes any version's pins) and start this version`,
      );
    }
    const maps = new Map<GateMap, BpfMap>();
    try {
      for (const s of MAP_LIST) {
        if (s.later && !existsSync(paths.map(s.name))) continue;
        const m = BpfMap.openPinned(paths.map(s.name));
        maps.set(s.name, m);
        checkMap(s, m);
      }
    } catch (err) {
      for (const m of maps.values()) m.close();
      throw err;
    }
    const globals = mmapMap(maps.get(MAP.GLOBALS)!);
    const ports = mmapMap(maps.get(MAP.PORTS)!);
    return new Gate(pinPath, maps, globals, ports, -1, -1, null, true, logger.child({ module: 'gate' }));
  }

  map(name: GateMap): BpfMap {
    const m = this.maps.get(name);
    if (!m) throw new Error(`internal: map ${name} not open`);
    return m;
  }

  // ---- generations --------------------------------------------------------------------

  activeGen(): number {
    return this.g.activeGen & 1;
  }

  /** The 16 slots of a generation as the kernel holds them, with their allow lists. */
  readSlots(gen = this.activeGen()): SlotState[] {
    const doors = this.map(MAP.DOORS);
    const allow = new Map<number, string[]>();
    for (const key of this.map(MAP.ALLOW).keys()) {
      const k = decodeAllowKey(key);
      if (k.gen !== gen) continue;
      const list = allow.get(k.slot) ?? [];
      list.push(allowKeyText(k.addr, k.mappedPrefix));
      allow.set(k.slot, list);
    }
    const out: SlotState[] = [];
    for (let slot = 0; slot < KG.MAX_DOORS; slot++) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(doorIndex(gen, slot));
      const v = doors.lookup(key);
      const door = v ? decodeDoor(v) : decodeDoor(Buffer.alloc(SIZEOF.door));
      const list = allow.get(slot);
      out.push({ door, allow: list ? list.sort() : null });
    }
    return out;
  }

  /** Live doors of the active generation. */
  doors(): { slot: number; door: KDoor; allow: string[] | null }[] {
    return this.readSlots()
      .map((s, slot) => ({ slot, door: s.door, allow: s.allow }))
      .filter((d) => (d.door.flags & 1) !== 0);
  }

  /**
   * Replace the rules with `doors`, atomically: the inactive generation is rewritten, the
   * active index flips, and we wait until no packet is still judged against the old one.
   */
  applyDoors(doors: readonly DoorConfig[], ctx: PlanContext = {}): GenerationPlan {
    const active = this.activeGen();
    const next = active ^ 1;
    const plan = planGeneration(this.readSlots(active), doors, { clock: { wallMs: Date.now(), monoNs: monoNowNs() }, ...ctx });
    this.syncWallClock();

    // Grants of doors that go away are cut before their slot can be reused (and again after
    // the switch, below).
    if (plan.removedSlots.length > 0) this.grantTable.clearSlots(plan.removedSlots);

    const doorMap = this.map(MAP.DOORS);
    plan.slots.forEach((d, slot) => {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(doorIndex(next, slot));
      doorMap.update(key, encodeDoor(d), BPF_ANY);
    });
    this.clearSpaTags(next);

    // Nothing reads generation `next` (see waitForPrograms below): rewrite it in place.
    this.ports.bytes.set(plan.ports, next * KG.PROTOS * KG.PORTS * PORT_STRIDE);

    const allowMap = this.map(MAP.ALLOW);
    const stale = [...allowMap.keys()].filter((k) => decodeAllowKey(k).gen === next);
    for (const k of stale) allowMap.delete(k);
    const one = Buffer.alloc(4);
    one.writeUInt32LE(1);
    for (const a of plan.allow) allowMap.update(encodeAllowKey(next, a.slot, a.addr, a.mappedPrefix), one, BPF_ANY);

    // The first-knock filter remembers a knock for one to two windows: a window must be at
    // least every door's step_timeout. (A change of window starts the filter afresh.)
    const longest = plan.slots.reduce((m, d) => ((d.flags & 1) !== 0 && d.stepTimeoutNs > m ? d.stepTimeoutNs : m), 0n);
    const window = longest > 0n ? longest : 1_000_000_000n;
    if (window > this.filterWindowNs()) this.setFilterWindow(window);

    this.g.icmpDoors.set(next, plan.icmpDoors);

    // The flip: one aligned 32-bit store, after every write above.
    Atomics.store(new Uint32Array(this.globals.view.buffer, OFFSETS.globals.active_gen, 1), 0, next);
    waitForPrograms();
    // Again now that no packet can see the removed doors: a knock that completed on one of them
    // between the first cut and the switch must not leave a grant for its slot behind.
    if (plan.removedSlots.length > 0) this.grantTable.clearSlots(plan.removedSlots);
    // A shorter window only after the switch: no door of the old generation needs more then.
    if (window < this.filterWindowNs()) this.setFilterWindow(window);
    this.pruneSpent(plan.liveWindows);
    this.log.debug({ generation: next, doors: plan.doors.map((d) => d.config.name) }, 'rules switched');
    return plan;
  }

  // ---- attach -------------------------------------------------------------------------

  /** Interfaces the gate holds (a direct link or a place in a dispatcher). */
  pinnedLinkNames(): string[] {
    let links: string[] = [];
    try {
      links = readdirSync(this.paths.links);
    } catch {
      // none
    }
    return [...new Set([...links, ...dispatchedNames(this.pinPath)])].sort();
  }

  /** How the gate parses the interface's frames; a device type it cannot parse is a GateError. */
  static framing(ifname: string): Framing {
    try {
      return framingOf(ifname);
    } catch (err) {
      if (err instanceof UnsupportedLinkError) throw new GateError(err.message);
      throw err;
    }
  }

  /** The loaded program that parses frames of this framing. */
  programFor(framing: Framing): number {
    return framing === 'l3' ? this.progFdL3 : this.progFd;
  }

  /**
   * Attach to each interface (or move an existing link to this program); returns the state.
   * The interface's device type picks the program (framingOf): a type the gate cannot parse
   * throws a GateError naming the interface and its type, and nothing is attached to it.
   */
  attach(ifaces: readonly InterfaceConfig[]): Attachment[] {
    for (const i of ifaces) this.attachOne(i);
    return this.attachments();
  }

  /**
   * The one place the gate is put on an interface (the daemon's start, reloads, and
   * interfaces that come back all go through here). A pinned link that still holds this
   * interface in the wanted mode is kept; a stale one (its interface was deleted: the kernel
   * detached it, the pin stayed) or one in another mode is replaced.
   */
  attachOne(i: AttachTarget, ifindex = ifIndex(i.name)): Attachment {
    if (this.progFd < 0) throw new Error('internal: attach needs a loaded program');
    const framing = Gate.framing(i.name);
    const pin = this.paths.link(i.name);
    // A link left by an interface that was deleted holds nothing: drop its pin first.
    if (existsSync(pin) && this.linkIfindex(i.name) !== ifindex) this.releaseInterface(i.name);
    if (this.attachDispatched(i, framing)) {
      const a = this.attachments().find((x) => x.ifname === i.name);
      if (a) return a;
      throw new GateError(`the gate was put in ${i.name}'s dispatcher but is not found there: check \`xdp-loader status ${i.name}\``);
    }
    if (existsSync(pin)) {
      const live = this.linkIfindex(i.name) === ifindex;
      const q = xdpQuery(ifindex);
      const modeOk = i.mode === 'auto' || q.attachMode === i.mode;
      if (live && modeOk) return { ifname: i.name, ifindex, mode: q.attachMode, progId: q.progId, attach: 'link' };
      if (live) this.detachInterface(i.name);
      else this.releaseInterface(i.name);
    }
    const link = attachXdp(this.programFor(framing), ifindex, i.mode);
    try {
      link.pin(pin);
    } finally {
      link.close();
    }
    const q = xdpQuery(ifindex);
    this.log.info({ interface: i.name, ifindex, xdp_mode: q.attachMode, framing, prog_id: q.progId }, 'attached');
    return { ifname: i.name, ifindex, mode: q.attachMode, progId: q.progId, attach: 'link' };
  }

  /** The ifindex a pinned link is attached to: 0 when the kernel detached it (interface gone), -1 without a pin. */
  linkIfindex(ifname: string): number {
    const pin = this.paths.link(ifname);
    if (!existsSync(pin)) return -1;
    const link = BpfLink.openPinned(pin);
    try {
      return link.info().ifindex;
    } finally {
      link.close();
    }
  }

  /** Drop the pin of a link whose interface is gone (nothing to detach: the kernel did). */
  releaseInterface(ifname: string): void {
    if (unpin(this.paths.link(ifname))) this.log.info({ interface: ifname }, 'released (the interface is gone)');
  }

  /**
   * Pin again whatever is missing under the pin directory (removed from outside while the
   * daemon runs): the directory, every map, the program. Links removed with them were
   * detached by the kernel; attachOne() puts them back. Returns what was re-pinned.
   */
  repin(): string[] {
    if (this.closed || this.object === null || this.progFd < 0) throw new Error('internal: repin needs a loaded gate');
    const done: string[] = [];
    ensureBpffs(this.pinPath);
    mkdirSync(this.paths.maps, { recursive: true });
    mkdirSync(this.paths.links, { recursive: true });
    for (const name of ALL_MAPS) {
      const path = this.paths.map(name);
      if (existsSync(path)) continue;
      this.map(name).pin(path);
      done.push(path);
    }
    if (!existsSync(this.paths.prog)) {
      this.object.pinProgram(PROG_NAME, this.paths.prog);
      done.push(this.paths.prog);
    }
    if (!existsSync(this.paths.progL3)) {
      this.object.pinProgram(PROG_NAME_L3, this.paths.progL3);
      done.push(this.paths.progL3);
    }
    return done;
  }


  private dispatcherValue: Dispatcher | null = null;

  /**
   * attach: dispatcher (dispatcher.ts). False when the interface is to get a direct bpf_link:
   * attach: link, an interface this gate already holds with a link (kept, with a warning), or
   * libxdp unusable here with nothing else attached (said so).
   */
  private attachDispatched(i: AttachTarget, framing: Framing): boolean {
    // The way the gate holds an interface stays (switching cannot be atomic): said when the config differs.
    if (existsSync(this.paths.link(i.name))) {
      if (i.attach === 'dispatcher') {
        this.log.warn({ interface: i.name }, 'the gate holds this interface with a direct bpf_link (attach: link, or an older knockgate): it stays so; to share it through the dispatcher, `knockgate detach` and start again');
      }
      return false;
    }
    if (i.attach === 'link') {
      if (!isDispatched(this.pinPath, i.name)) return false;
      this.log.warn({ interface: i.name }, 'the gate is in this interface\'s dispatcher: it stays there; for a direct bpf_link (attach: link), `knockgate detach` and start again');
    }
    if (this.dispatcherValue === null) {
      const maps = new Map<string, number>(ALL_MAPS.map((name) => [name, this.map(name).fd]));
      const objectPath = this.object?.path ?? defaultObjectPath();
      const src = { pinPath: this.pinPath, objectPath, progName: PROG_NAME, targetFd: this.progFd, maps, log: this.log };
      this.dispatcherValue = new Dispatcher(src, (m) => new GateError(m));
    }
    try {
      const program = framing === 'l3' ? { name: PROG_NAME_L3, targetFd: this.progFdL3 } : { name: PROG_NAME, targetFd: this.progFd };
      this.dispatcherValue.attach(i as InterfaceConfig, program);
      return true;
    } catch (err) {
      if (!(err instanceof DispatcherUnavailable)) throw err;
      this.log.warn({ interface: i.name, reason: err.reason }, "libxdp's dispatcher cannot be used: nothing else is attached here, so the gate takes the interface alone with a direct bpf_link (other XDP programs cannot join it)");
      return false;
    }
  }

  attachments(): Attachment[] {
    const out: Attachment[] = [];
    for (const ifname of this.pinnedLinkNames()) {
      const attach = existsSync(this.paths.link(ifname)) ? 'link' : 'dispatcher';
      let ifindex = 0;
      try {
        ifindex = ifIndex(ifname);
      } catch {
        out.push({ ifname, ifindex: 0, mode: 'gone', progId: 0, attach });
        continue;
      }
      if (attach === 'dispatcher') {
        const d = dispatchedState(ifindex, ifname, this.map(MAP.PORTS).id);
        out.push({ ifname, ifindex, mode: d?.mode ?? 'none', progId: d?.progId ?? 0, attach, dispatcher: d });
        continue;
      }
      let linked = ifindex;
      try {
        linked = this.linkIfindex(ifname);
      } catch {
        /* unreadable pin: report what the interface has */
      }
      if (linked !== ifindex) {
        // The interface was deleted and another took its name: the pinned link holds nothing.
        out.push({ ifname, ifindex, mode: 'gone', progId: 0, attach });
        continue;
      }
      const q = xdpQuery(ifindex);
      out.push({ ifname, ifindex, mode: q.attachMode, progId: q.progId, attach });
    }
    return out;
  }

  detachInterface(ifname: string): void {
    if (isDispatched(this.pinPath, ifname)) detachDispatched(this.pinPath, ifname, this.map(MAP.PORTS).id, this.log);
    const pin = this.paths.link(ifname);
    if (!existsSync(pin)) return;
    const link = BpfLink.openPinned(pin);
    try {
      link.detach();
    } finally {
      link.close();
      unpin(pin);
    }
    this.log.info({ interface: ifname }, 'detached');
  }

  // ---- state --------------------------------------------------------------------------

  private slotNames(): Map<number, KDoor> {
    return new Map(this.doors().map((d) => [d.slot, d.door]));
  }

  grants(nowNs = monoNowNs()): GrantEntry[] {
    return this.grantTable.list(nowNs);
  }

  /** Sources midway through a sequence: step 1 (kg_probation) and beyond (kg_progress). */
  progress(nowNs = monoNowNs()): ProgressEntry[] {
    const doors = this.slotNames();
    const out: ProgressEntry[] = [];
    for (const [key, value] of this.map(MAP.PROBATION).entries()) {
      for (const f of decodeProbation(value).live) {
        const d = doors.get(f.slot);
        const stale = !d || d.epoch !== f.epoch || nowNs - f.atNs > d.stepTimeoutNs;
        out.push({ slot: f.slot, startNs: f.atNs, lastNs: f.atNs, epoch: f.epoch, step: 1, addr: Buffer.from(key), door: d?.name ?? `slot${f.slot}`, stale });
      }
    }
    for (const [key, value] of this.map(MAP.PROGRESS).entries()) {
      for (const p of decodeProgress(value)) {
        const d = doors.get(p.slot);
        const stale =
          !d || d.epoch !== p.epoch || nowNs - p.lastNs > d.stepTimeoutNs || nowNs - p.startNs > d.seqTimeoutNs;
        out.push({ ...p, addr: Buffer.from(key), door: d?.name ?? `slot${p.slot}`, stale });
      }
    }
    return out;
  }

  stats(): Stats {
    const key = Buffer.alloc(4);
    return sumStats(this.map(MAP.STATS).lookupPerCpu(key));
  }

  /** Tell the kernel how boot time maps to wall time (SPA timestamps). The daemon repeats it. */
  syncWallClock(): void {
    this.g.wallOffsetNs = wallOffsetNs();
  }

  setSignedTokens(n: number): void {
    this.g.signedTokens = BigInt(n);
  }

  /** Forget spent rotating windows that no door holds any more. */
  pruneSpent(live: readonly { doorId: number; window: bigint }[]): number {
    const keep = new Set(live.map((l) => `${l.doorId}/${l.window}`));
    const m = this.map(MAP.SPENT);
    let n = 0;
    for (const k of [...m.keys()]) {
      const s = decodeSpentKey(k);
      if (keep.has(`${s.doorId}/${s.window}`)) continue;
      m.delete(k);
      n++;
    }
    return n;
  }

  /** Rotating windows that produced their grant: "doorId/window". */
  spentWindows(): { doorId: number; window: bigint }[] {
    return [...this.map(MAP.SPENT).keys()].map(decodeSpentKey);
  }

  setDenyTokens(n: number): void {
    this.g.denyTokens = BigInt(n);
  }

  /** The budget of first-knock, reset-after-step-1 and cooldown events (refilled every second). */
  setKnockTokens(n: number): void {
    this.g.knockTokens = BigInt(n);
  }

  /** The brute-force limit; applies at once (maxFailures 0: off). */
  setBruteForce(b: BruteForce): void {
    this.g.failureWindowNs = BigInt(b.failureWindowMs) * 1_000_000n;
    this.g.cooldownNs = BigInt(b.cooldownMs) * 1_000_000n;
    this.g.maxFailures = b.maxFailures >>> 0;
  }

  bruteForce(): BruteForce {
    return {
      maxFailures: this.g.maxFailures,
      failureWindowMs: Number(this.g.failureWindowNs / 1_000_000n),
      cooldownMs: Number(this.g.cooldownNs / 1_000_000n),
    };
  }

  /** A fresh gate's filter: random hash keys and the block mask (an adopted gate keeps its own). */
  private seedFilter(blocks: number): void {
    if (blocks <= 0 || (blocks & (blocks - 1)) !== 0) throw new GateError(`the first-knock filter has ${blocks} blocks: a power of two is needed`);
    const seed = randomBytes(16);
    this.g.fkSeed.set(0, seed.readBigUInt64LE(0));
    this.g.fkSeed.set(1, seed.readBigUInt64LE(8));
    this.g.fkMask = blocks - 1;
  }

  /** The first-knock filter's window: the longest step_timeout of the live doors. */
  filterWindowNs(): bigint {
    return this.g.fkWindowNs;
  }

  private setFilterWindow(ns: bigint): void {
    this.g.fkWindowNs = ns;
  }

  /** Set (or extend) a grant by hand. */
  grant(addr: Buffer, slot: number, forNs: bigint, nowNs = monoNowNs()): bigint {
    return this.grantTable.grant(addr, slot, forNs, nowNs);
  }

  /**
   * Cut the grants of `addr` (all doors, or the given slots) and delete its flows opened under
   * them. Returns the slots whose live grant was cut and how many live flows were cut (flows
   * already idle past their limit are deleted too, uncounted).
   */
  revoke(addr: Buffer, slots?: readonly number[], nowNs = monoNowNs()): { slots: number[]; flows: number } {
    return this.grantTable.revoke(addr, slots, nowNs);
  }

  /** Drop the grant filter's bits of sources that hold nothing any more (grants.ts). Returns how many were listed. */
  rebuildGrantFilter(): number {
    return this.grantTable.rebuildFilter();
  }

  /** Forget the cached spa tags of generation `gen` (its slots are being rewritten). */
  private clearSpaTags(gen: number): void {
    const m = this.maps.get(MAP.SPATAGS);
    if (!m) return;
    const key = Buffer.alloc(4);
    const zero = Buffer.alloc(8);
    for (let i = gen * KG.MAX_DOORS * KG.SPA_TAG_SLOTS; i < (gen + 1) * KG.MAX_DOORS * KG.SPA_TAG_SLOTS; i++) {
      key.writeUInt32LE(i);
      m.update(key, zero, BPF_ANY);
    }
  }

  /** Live flows (and, with `all`, those idle past their limit that nobody has removed yet). */
  flows(nowNs = monoNowNs(), all = false): FlowEntry[] {
    return this.grantTable.flows(nowNs, all);
  }

  /** Sources whose knocks are ignored now (brute-force limit). */
  cooldowns(nowNs = monoNowNs()): CooldownEntry[] {
    const out: CooldownEntry[] = [];
    for (const [key, value] of this.map(MAP.PENALTY).entries()) {
      const p = decodePenalty(value);
      if (p.cooldownUntilNs > nowNs) out.push({ addr: Buffer.from(key), untilNs: p.cooldownUntilNs });
    }
    return out;
  }

  /** Delete grant entries whose every door expired `graceNs` ago and whose source has no live flow (grants.ts). */
  sweepExpiredGrants(nowNs = monoNowNs(), graceNs = 0n, liveFlowSources?: ReadonlySet<string>): number {
    return this.grantTable.sweepExpired(nowNs, graceNs, liveFlowSources);
  }

  /** The daemon's housekeeping of flows, grants, penalties and first knocks (grants.ts). */
  sweep(nowNs = monoNowNs(), grantGraceNs = 0n): SweepResult {
    return this.grantTable.sweep(nowNs, grantGraceNs);
  }

  /**
   * The first-knock filter's fill, from `sample` blocks picked at random: the fraction of bits
   * set in the halves that a test would read (current and previous window), and the false
   * positive chance that follows (both halves are tested: 1 - (1 - f^k)^2).
   */
  filterState(sample = 256, nowNs = monoNowNs()): FilterState {
    const m = this.map(MAP.FIRSTS);
    const blocks = m.maxEntries;
    const windowNs = this.filterWindowNs();
    const start = windowNs > 0n ? nowNs - (nowNs % windowNs) : 0n;
    const n = Math.min(sample, blocks);
    const key = Buffer.alloc(4);
    let set = 0;
    let fpSum = 0;
    for (let i = 0; i < n; i++) {
      key.writeUInt32LE(n === blocks ? i : Math.floor(Math.random() * blocks));
      const v = m.lookup(key);
      if (!v) continue;
      const b = decodeFirstsBlock(v);
      let miss = 1;
      for (let h = 0; h < 2; h++) {
        const valid = windowNs > 0n && (b.start[h] === start || b.start[h] === start - windowNs);
        const f = valid ? (b.set[h] ?? 0) / KG.FK_BITS : 0;
        set += valid ? (b.set[h] ?? 0) : 0;
        miss *= 1 - f ** KG.FK_HASHES;
      }
      fpSum += 1 - miss;
    }
    return {
      blocks,
      bytes: blocks * KG.FK_BLOCK_BYTES,
      windowNs,
      sampled: n,
      fill: n > 0 ? set / (n * 2 * KG.FK_BITS) : 0,
      falsePositive: n > 0 ? fpSum / n : 0,
    };
  }

  mapFill(): { map: string; entries: number; max: number }[] {
    const count = (m: BpfMap): number => {
      let n = 0;
      for (const _ of m.keys()) n++;
      return n;
    };
    return [MAP.PROGRESS, MAP.PROBATION, MAP.PENALTY, MAP.GRANTS, MAP.FLOWS].map((name) => {
      const m = this.map(name);
      return { map: name, entries: count(m), max: m.maxEntries };
    });
  }

  // ---- teardown -----------------------------------------------------------------------

  /** Close fds; the pinned gate keeps enforcing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dispatcherValue?.close();
    this.globals.close();
    this.ports.close();
    this.gfRegion?.close();
    for (const m of this.maps.values()) m.close();
    this.object?.close();
  }

  /** Detach from every interface and remove every pin, then close. */
  destroy(): void {
    for (const ifname of this.pinnedLinkNames()) this.detachInterface(ifname);
    this.close();
    removePins(this.pinPath);
    this.log.info({ pin_path: this.pinPath }, 'gate removed');
  }
}

/** Remove the gate's pins (links first, so the program detaches). */
export function removePins(pinPath: string, log?: Logger): void {
  const paths = pinPaths(pinPath);
  if (log !== undefined) detachAllDispatched(pinPath, log);
  rmSync(join(pinPath, 'dispatcher'), { recursive: true, force: true });
  for (const ifname of (() => {
    try {
      return readdirSync(paths.links);
    } catch {
      return [];
    }
  })()) {
    unpin(paths.link(ifname));
  }
  unpin(paths.prog);
  unpin(paths.progL3);
  for (const name of ALL_MAPS) unpin(paths.map(name));
  rmSync(paths.links, { recursive: true, force: true });
  rmSync(paths.maps, { recursive: true, force: true });
  rmSync(pinPath, { recursive: true, force: true });
}

export { ifName };
