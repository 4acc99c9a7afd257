/**
 * The gate in libxdp's multi-program dispatcher (xdp-tools' convention for sharing an
 * interface's XDP slot); docs/DESIGN.md "Sharing the interface" has the contract.
 *
 * - The program that joins a dispatcher is an freplace extension: the gate's object loaded once
 *   more as BPF_PROG_TYPE_EXT against the gate's own loaded XDP program (its load target) and
 *   against every map of the gate (one set of maps, doors already written before it sees a
 *   packet). One extension per priority: libxdp takes a priority only before it has the
 *   program's fd. Before its first attach, the extension is run once through a dispatcher libxdp
 *   builds for the purpose (BPF_PROG_TEST_RUN of a non-IP frame, which must pass): that proves
 *   this kernel runs it in a dispatcher (freplace, relinkable extensions) while nothing is
 *   attached yet, and hands libxdp the fd (so it never loads the object itself).
 * - The gate's programs in a dispatcher are recognised by the maps they use (the gate's
 *   kg_ports), not by a pin: whatever a crash left behind is found and removed.
 * - Attach: add this process's extension (one atomic dispatcher swap, libxdp), then remove every
 *   other program of the gate from the dispatcher (a second atomic swap). In between both run,
 *   each enforcing against the same maps: the interface is never without the gate. A daemon that
 *   adopts a gate, or a reload that changes xdp_priority, moves the interface this way.
 * - `<pin_path>/dispatcher/<ifname>` pins the gate's extension on that interface: the record of
 *   which interfaces the gate holds this way. libxdp's own pins (<bpffs>/xdp/dispatch-*) and the
 *   netlink attachment of the dispatcher keep the program running when the process dies.
 * - CAP_SYS_ADMIN: without it (the packaged systemd unit's set) the dispatcher cannot be read,
 *   so it is unavailable: the gate takes an interface nothing holds with a direct bpf_link and says
 *   why, and refuses one that something holds, naming that program's id and the capability.
 * - Refusals: an interface held by a program libxdp does not manage; a dispatcher in another
 *   XDP mode than the interface's xdp_mode; a program that would run before the gate and end
 *   the chain on XDP_PASS (what it passes would never reach the gate). When libxdp cannot be used
 *   (not installed, a kernel without the features), the caller falls back to a direct bpf_link,
 *   but only where nothing else is attached.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  BpfError,
  BpfMap,
  BpfObject,
  XDP_MODE_UNSPEC,
  XdpProgram,
  closeFd,
  detachPrograms,
  errnoNumber,
  ifIndex,
  libxdpUnavailable,
  modeNumber,
  multiprogState,
  progMapIds,
  unpin,
  xdpQuery,
  type MultiprogState,
  type XdpProgramInfo,
} from '../bpf/index.js';
import { libbpf } from '../bpf/libbpf.js';
import type { InterfaceConfig } from '../config/index.js';
import type { Logger } from '../log.js';

/** The gate's side of the dispatcher: what an extension is loaded from and against. */
export interface DispatchSource {
  pinPath: string;
  objectPath: string;
  progName: string;
  /** the gate's loaded XDP program (the extensions' load target: same prototype) */
  targetFd: number;
  /** every map of the gate, by the object's name for it, with its fd (reused by the extension) */
  maps: ReadonlyMap<string, number>;
  log: Logger;
}

/** Which of the gate's loaded programs joins the dispatcher (a per-device-type variant, say):
 * its name in the object and the fd of its loaded XDP instance (the extension's load target). */
export interface GateProgram {
  name: string;
  targetFd: number;
}

/** One program of an interface's dispatcher, in run order. */
export interface ChainEntry extends XdpProgramInfo {
  /** a program of this gate */
  knockgate: boolean;
}

export interface DispatchedState {
  /** the dispatcher's program id */
  dispatcherId: number;
  /** XDP mode of the dispatcher */
  mode: string;
  /** the gate's program in the chain (0: not there) */
  progId: number;
  chain: ChainEntry[];
  /** what is wrong with the chain, for status */
  warnings: string[];
}

/** A frame knockgate passes without touching a map (not IPv4/IPv6): the extension's probe. */
const PROBE_FRAME = Buffer.concat([Buffer.alloc(12, 0x02), Buffer.from([0x88, 0xb5]), Buffer.alloc(46)]);
const XDP_PASS = 2;

/** linux/capability.h */
const CAP_SYS_ADMIN = 21;

/** Whether a /proc/<pid>/status text's effective set (CapEff) holds capability `bit` (true when it cannot be read: the kernel decides). */
export function capEffHas(statusText: string, bit: number): boolean {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(statusText);
  return m === null || ((BigInt(`0x${m[1]!}`) >> BigInt(bit)) & 1n) === 1n;
}

function hasSysAdmin(): boolean {
  try {
    return capEffHas(readFileSync('/proc/self/status', 'utf8'), CAP_SYS_ADMIN);
  } catch {
    return true;
  }
}

/**
 * Why the dispatcher is out of reach without CAP_SYS_ADMIN: libxdp reads a dispatcher's programs
 * by id (BPF_PROG_GET_FD_BY_ID), which the kernel allows only with it, and so does the gate when it
 * looks for its own programs in the chain. The packaged systemd unit does not grant it.
 */
export const NO_SYS_ADMIN =
  "this process lacks CAP_SYS_ADMIN, which joining or reading libxdp's dispatcher needs (the kernel gives a program's fd by id " +
  'only with it). Under the packaged systemd unit, add it with `systemctl edit knockgate`: a [Service] drop-in with ' +
  '`CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_ADMIN` and the same AmbientCapabilities=';

function recordDir(pinPath: string): string {
  return join(pinPath, 'dispatcher');
}

/** Interfaces the gate under pinPath holds through a dispatcher. */
export function dispatchedNames(pinPath: string): string[] {
  try {
    return readdirSync(recordDir(pinPath)).sort();
  } catch {
    return [];
  }
}

export function isDispatched(pinPath: string, ifname: string): boolean {
  return existsSync(join(recordDir(pinPath), ifname));
}

/** Id of the gate's kg_ports map: what marks a program as the gate's. */
export function ownMapId(pinPath: string): number {
  const m = BpfMap.openPinned(join(pinPath, 'maps', 'kg_ports'));
  try {
    return m.id;
  } finally {
    m.close();
  }
}

function usesMap(progId: number, mapId: number): boolean {
  const fd = libbpf().bpf_prog_get_fd_by_id(progId);
  if (fd === -errnoNumber('ENOENT')) return false; // gone meanwhile
  if (fd < 0) {
    throw new BpfError(`bpf_prog_get_fd_by_id(${progId})`, -fd, {
      hint: 'reading the programs of a dispatcher by id needs CAP_SYS_ADMIN (libxdp does the same): run as root, or use attach: link',
    });
  }
  try {
    return progMapIds(fd).includes(mapId);
  } finally {
    closeFd(fd, `prog ${progId}`);
  }
}

function describeProgram(p: { id: number; name: string }): string {
  return `XDP program ${p.id} (${p.name || 'no name'})`;
}

/** The chain of an interface's dispatcher with the gate's programs marked; null if none. */
export function dispatchedState(ifindex: number, ifname: string, mapId: number): DispatchedState | null {
  const st = multiprogState(ifindex, ifname);
  if (st === null || !st.dispatcher) return null;
  const chain = st.programs.map((p) => ({ ...p, knockgate: usesMap(p.id, mapId) }));
  const ours = chain.findIndex((p) => p.knockgate);
  const warnings: string[] = [];
  if (ours < 0) warnings.push(`the gate is not in the dispatcher on ${ifname}: run \`knockgate run\` (or restart the daemon) to attach it again`);
  for (const p of chain.slice(0, Math.max(ours, 0))) {
    if (!p.chainCallActions.includes('XDP_PASS')) {
      warnings.push(`${describeProgram(p)} runs before knockgate and ends the chain on XDP_PASS: what it passes never reaches the gate`);
    }
  }
  if (chain.filter((p) => p.knockgate).length > 1) warnings.push(`more than one program of the gate is in the dispatcher on ${ifname} (an interrupted move): restart the daemon`);
  return { dispatcherId: st.main.id, mode: st.mode, progId: chain[ours]?.id ?? 0, chain, warnings };
}

/**
 * Remove the gate's programs from the interface's dispatcher (others keep running; the
 * dispatcher goes when nothing else is left in it) and its record. An interface that no longer
 * exists took its dispatcher with it: only the record is removed.
 */
export function detachDispatched(pinPath: string, ifname: string, mapId: number, log: Logger): void {
  let ifindex = 0;
  try {
    ifindex = ifIndex(ifname);
  } catch {
    // gone
  }
  if (ifindex !== 0) {
    const st = multiprogState(ifindex, ifname);
    if (st !== null && st.dispatcher) {
      const ours = st.programs.filter((p) => usesMap(p.id, mapId)).map((p) => p.id);
      detachPrograms(ours, ifindex, XDP_MODE_UNSPEC, ifname);
    }
  }
  unpin(join(recordDir(pinPath), ifname));
  log.info({ interface: ifname, attach: 'dispatcher' }, 'detached');
}

/** Every interface the gate holds through a dispatcher, detached (for detach of any version). */
export function detachAllDispatched(pinPath: string, log: Logger): void {
  const names = dispatchedNames(pinPath);
  if (names.length === 0) return;
  if (!existsSync(join(pinPath, 'maps', 'kg_ports'))) return; // nothing left to tell the gate's programs by
  const mapId = ownMapId(pinPath);
  for (const name of names) detachDispatched(pinPath, name, mapId, log);
}

interface Extension {
  obj: BpfObject;
  prog: XdpProgram;
  id: number;
  fd: number;
}

/** libxdp could not be used: the caller may fall back to a direct bpf_link where nothing else is attached. */
export class DispatcherUnavailable extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'DispatcherUnavailable';
  }
}

/** Attaches a loaded gate to interfaces through libxdp's dispatcher; owns its extensions. */
export class Dispatcher {
  /** by "program@priority" */
  private readonly extensions = new Map<string, Extension>();
  private unusable: string | null = null;
  private readonly mapId: number;

  constructor(
    private readonly src: DispatchSource,
    /** for GateError (kept in gate.ts) */
    private readonly fail: (message: string) => Error,
  ) {
    this.mapId = ownMapId(src.pinPath);
  }

  /**
   * Put the gate in the interface's dispatcher at its priority (creating the dispatcher if the
   * interface has none, moving the gate from an older program or another priority atomically).
   * Throws DispatcherUnavailable when libxdp cannot be used and nothing else holds the interface.
   */
  attach(i: InterfaceConfig, program: GateProgram = { name: this.src.progName, targetFd: this.src.targetFd }): DispatchedState {
    const ifindex = ifIndex(i.name);
    const log = this.src.log;
    if (!hasSysAdmin()) {
      // Only netlink can be asked what holds the interface (a program's name needs its fd).
      const held = xdpQuery(ifindex).progId;
      if (held === 0) throw new DispatcherUnavailable(NO_SYS_ADMIN);
      throw this.fail(
        `${i.name} is held by XDP program ${held} (\`xdp-loader status ${i.name}\` names it), and ${NO_SYS_ADMIN}. Without it knockgate ` +
          'cannot share the interface, and it never replaces another program: grant CAP_SYS_ADMIN, or unload that program, then start knockgate again',
      );
    }
    const st = multiprogStateOrNull(ifindex, i.name);
    if (st !== null && !st.dispatcher) {
      const owner = usesMap(st.main.id, this.mapId) ? ' (a program of this gate, attached without libxdp)' : '';
      throw this.fail(
        `${i.name} is held by ${describeProgram(st.main)}${owner}, which libxdp does not manage: knockgate never replaces another ` +
          `program. Detach it (\`ip link set dev ${i.name} xdp off\`, or the tool that loaded it) or load it through libxdp ` +
          `(\`xdp-loader load ${i.name} FILE\`) so that both can share the interface, then start knockgate again`,
      );
    }
    let ext: Extension;
    try {
      ext = this.extension(program, i.priority);
    } catch (err) {
      if (!(err instanceof DispatcherUnavailable)) throw err;
      if (st !== null) {
        throw this.fail(
          `libxdp's dispatcher cannot be used here (${err.reason}), and ${i.name} already holds ${describeProgram(st.main)}` +
            `${st.programs.length > 0 ? ` with ${st.programs.map(describeProgram).join(', ')}` : ''}: without the dispatcher knockgate ` +
            'cannot share the interface and will not replace them. Fix libxdp (see the reason) or unload them',
        );
      }
      throw err;
    }
    let mode = modeNumber(i.mode === 'generic' ? 'generic' : i.mode === 'native' ? 'native' : 'unspec');
    if (st !== null) {
      if (i.mode !== 'auto' && i.mode !== st.mode) {
        throw this.fail(
          `the dispatcher on ${i.name} runs in ${st.mode} mode (${st.programs.map(describeProgram).join(', ')}); this interface's ` +
            `xdp_mode is ${i.mode}: the programs of one interface share one mode. Set xdp_mode: ${st.mode} (or auto) for ${i.name}`,
        );
      }
      mode = modeNumber(st.mode);
    }
    const ours = st?.programs.filter((p) => usesMap(p.id, this.mapId)) ?? [];
    const inPlace = ours.length === 1 && ours[0]!.id === ext.id;
    if (!inPlace) {
      const ahead = (st?.programs ?? []).filter(
        (p) => !ours.includes(p) && (p.priority < i.priority || (p.priority === i.priority && p.name < program.name)),
      );
      const bypass = ahead.filter((p) => !p.chainCallActions.includes('XDP_PASS'));
      if (bypass.length > 0) {
        const lowest = Math.min(...bypass.map((p) => p.priority));
        throw this.fail(
          `${bypass.map(describeProgram).join(', ')} would run before knockgate on ${i.name} (priority ${bypass.map((p) => p.priority).join(', ')} ` +
            `<= ${i.priority}) and end the chain on XDP_PASS: what they pass would never reach the gate. Give ${i.name} an xdp_priority ` +
            `below ${lowest} (e.g. ${Math.max(lowest - 1, 0)})`,
        );
      }
      if (!ours.some((p) => p.id === ext.id)) ext.prog.attach(ifindex, mode, `${i.name}, priority ${i.priority}`);
      const stale = ours.filter((p) => p.id !== ext.id).map((p) => p.id);
      if (stale.length > 0) detachPrograms(stale, ifindex, XDP_MODE_UNSPEC, i.name);
    }
    mkdirSync(recordDir(this.src.pinPath), { recursive: true });
    const record = join(recordDir(this.src.pinPath), i.name);
    unpin(record);
    const rc = libbpf().bpf_obj_pin(ext.fd, record);
    if (rc < 0) throw new BpfError(`bpf_obj_pin(extension, ${i.name})`, -rc, { path: record });
    const now = dispatchedState(ifindex, i.name, this.mapId);
    if (now === null || now.progId !== ext.id) {
      throw this.fail(`the gate's program ${ext.id} is not in the dispatcher on ${i.name} after attaching it (another tool changed it meanwhile?): check \`xdp-loader status ${i.name}\``);
    }
    if (!inPlace) {
      log.info(
        {
          interface: i.name,
          attach: 'dispatcher',
          xdp_mode: now.mode,
          xdp_priority: i.priority,
          prog_id: ext.id,
          dispatcher_id: now.dispatcherId,
          moved_from: ours.map((p) => p.id),
          chain: now.chain.map((p) => `${p.name}:${p.id}@${p.priority}`),
        },
        ours.length > 0 ? 'moved to this program in the dispatcher' : 'attached through the dispatcher',
      );
    }
    return now;
  }

  /** The extension of a program at a priority, loaded and probed on first use. */
  private extension(program: GateProgram, priority: number): Extension {
    const key = `${program.name}@${priority}`;
    const cached = this.extensions.get(key);
    if (cached !== undefined) return cached;
    if (this.unusable !== null) throw new DispatcherUnavailable(this.unusable);
    const missing = libxdpUnavailable();
    if (missing !== null) {
      this.unusable = missing;
      throw new DispatcherUnavailable(missing);
    }
    const { objectPath, maps } = this.src;
    const { name: progName, targetFd } = program;
    let obj: BpfObject | null = null;
    let prog: XdpProgram | null = null;
    try {
      obj = BpfObject.open(objectPath);
      for (const [name, fd] of maps) obj.reuseMap(name, fd);
      obj.loadAsExtension(progName, targetFd, progName);
      prog = XdpProgram.fromObject(obj.pointer, progName);
      prog.setPriority(priority);
      const verdict = prog.testRun(PROBE_FRAME);
      if (verdict !== XDP_PASS) throw new Error(`a probe frame run through a dispatcher returned ${verdict}, not XDP_PASS`);
    } catch (err) {
      prog?.close();
      obj?.close();
      if (err instanceof BpfError || /probe frame/.test((err as Error).message)) {
        this.unusable = `the gate could not run as an extension in a libxdp dispatcher: ${(err as Error).message.split('\n')[0]}`;
        throw new DispatcherUnavailable(this.unusable);
      }
      throw err;
    }
    const ext: Extension = { obj, prog, id: prog.id, fd: obj.programFd(progName) };
    this.extensions.set(key, ext);
    return ext;
  }

  /** Close the extensions' fds: where attached, libxdp's pins and our records keep them. */
  close(): void {
    for (const e of this.extensions.values()) {
      e.prog.close();
      e.obj.close();
    }
    this.extensions.clear();
  }
}

function multiprogStateOrNull(ifindex: number, ifname: string): MultiprogState | null {
  try {
    return multiprogState(ifindex, ifname);
  } catch (err) {
    if (err instanceof Error && /cannot load libxdp/.test(err.message)) {
      // without libxdp, ask the kernel directly whether anything is attached
      return null;
    }
    throw err;
  }
}
