/**
 * The gate as the benchmarks use it: one door, loaded through the public API (Gate.open,
 * applyDoors), and the few things the harness writes itself through the layout mirror
 * (a source's progress, to put it midway through a sequence). Everything here follows
 * docs/DESIGN.md, not the program's internals.
 */
import { existsSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BpfObject } from '../src/bpf/index.js';
import { parseConfigText } from '../src/config/index.js';
import { Gate, monoNowNs } from '../src/kernel/gate.js';
import { KG, MAP, OFFSETS, SIZEOF, STAT_NAMES, VERDICTS, type StatName, type Stats } from '../src/kernel/layout.js';
import { createLogger } from '../src/log.js';

/** The benchmark doors: bench knocks 7000/tcp, 8000/udp, 9000/tcp; spa knocks with one
 * datagram to 62201/udp; both protect 2222/tcp and 2222/udp. */
export const PORTS = {
  service: 2222,
  spa: 62201,
  steps: [
    { port: 7000, proto: 'tcp' as const },
    { port: 8000, proto: 'udp' as const },
    { port: 9000, proto: 'tcp' as const },
  ],
  unrelatedTcp: 80,
  unrelatedUdp: 53,
};

export const SEQUENCE_TEXT = PORTS.steps.map((s) => `${s.port}/${s.proto}`);

/** The spa door's key (the bench's own: a fixed value, never a secret). */
export const SPA_KEY = Buffer.from('6b672062656e6368207370612020206b', 'hex');

export function configText(opts: { iface: string; pinPath: string; sources: number; ringBytes: number; openFor?: string; spaKeyFile?: string; extraDoors?: string; logLevel?: string; xdpMode?: string }): string {
  return `# knockgate bench
interfaces: [${opts.iface}]
xdp_mode: ${opts.xdpMode ?? 'native'}
pin_path: ${opts.pinPath}
log:
  level: ${opts.logLevel ?? 'silent'}
  denials_per_second: 0
limits:
  sources: ${opts.sources}
  flows: ${opts.sources}
  event_ring: ${opts.ringBytes}
doors:
  bench:
    sequence: [${SEQUENCE_TEXT.join(', ')}]
    protects: [${PORTS.service}/tcp, ${PORTS.service}/udp]
    step_timeout: 5s
    sequence_timeout: 15s
    open_for: ${opts.openFor ?? '30s'}
  spa:
    type: spa
    port: ${PORTS.spa}/udp
    key_file: ${opts.spaKeyFile ?? '/nonexistent/bench-spa.key'}
    protects: [${PORTS.service}/tcp, ${PORTS.service}/udp]
    open_for: ${opts.openFor ?? '30s'}
${opts.extraDoors ?? ''}`;
}

export const benchLogger = createLogger({ level: 'silent' });

export function objectPath(name: string): string {
  return fileURLToPath(new URL(`../../test/fixtures/${name}.bpf.o`, import.meta.url));
}

export function gateObjectPath(): string {
  return fileURLToPath(new URL('../../bpf/knock.bpf.o', import.meta.url));
}

export interface BenchGate {
  gate: Gate;
  pinPath: string;
  slot: number;
  epoch: number;
  destroy(): void;
}

/** Load a gate pinned at pinPath (a fresh /sys/fs/bpf/kg-bench-* directory) with the bench door. */
export function openBenchGate(opts: { pinPath: string; iface: string; sources: number; ringBytes?: number; openFor?: string; objectPath?: string; extraDoors?: string }): BenchGate {
  if (!/^\/sys\/fs\/bpf\/kg-bench-[A-Za-z0-9-]+$/.test(opts.pinPath)) throw new Error(`refusing pin path ${opts.pinPath}`);
  if (existsSync(opts.pinPath)) throw new Error(`${opts.pinPath} exists already`);
  const ringBytes = opts.ringBytes ?? 1 << 20;
  const cfg = parseConfigText(configText({ ...opts, ringBytes }));
  let gate: Gate | null = null;
  try {
    gate = Gate.open({
      pinPath: opts.pinPath,
      sources: cfg.limits.sources,
      flows: cfg.limits.flows,
      eventRingBytes: cfg.limits.eventRingBytes,
      firstKnockFilterBytes: cfg.limits.firstKnockFilterBytes,
      logger: benchLogger,
      ...(opts.objectPath !== undefined ? { objectPath: opts.objectPath } : {}),
    });
    gate.applyDoors(cfg.doors, { secrets: new Map([['spa', SPA_KEY]]) });
    gate.setDenyTokens(0);
    const door = gate.doors().find((d) => d.door.name === 'bench');
    if (!door) throw new Error('the bench door is not live after applyDoors');
    const g = gate;
    let destroyed = false;
    return {
      gate: g,
      pinPath: opts.pinPath,
      slot: door.slot,
      epoch: door.door.epoch,
      destroy: () => {
        if (destroyed) return;
        destroyed = true;
        try {
          g.destroy();
        } finally {
          rmSync(opts.pinPath, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    try {
      gate?.destroy();
    } catch {
      /* reported below */
    }
    rmSync(opts.pinPath, { recursive: true, force: true });
    throw err;
  }
}

/** A kg_progress value: the source is midway through the bench door (slot) at `step`. */
export function progressValue(slot: number, epoch: number, step: number, nowNs: bigint = monoNowNs(), out = Buffer.alloc(SIZEOF.progress)): Buffer {
  out.fill(0);
  out.writeUInt16LE(1 << slot, OFFSETS.progress.doors);
  const at = OFFSETS.progress.d + slot * SIZEOF.door_progress;
  const p = OFFSETS.door_progress;
  out.writeBigUInt64LE(nowNs, at + p.start_ns);
  out.writeBigUInt64LE(nowNs, at + p.last_ns);
  out.writeUInt32LE(epoch >>> 0, at + p.epoch);
  out.writeUInt8(step, at + p.step);
  return out;
}

/** A kg_grants value: the source may pass the door (slot) until `expiresNs`. */
export function grantValue(slot: number, expiresNs: bigint, out = Buffer.alloc(SIZEOF.grant)): Buffer {
  out.fill(0);
  out.writeBigUInt64LE(expiresNs, slot * 8);
  return out;
}

/** A kg_probation value: the source made the bench door's (slot) first knock at nowNs. */
export function probationValue(slot: number, epoch: number, nowNs: bigint = monoNowNs(), out = Buffer.alloc(SIZEOF.probation)): Buffer {
  out.fill(0);
  out.writeUInt16LE(1 << slot, OFFSETS.probation.live);
  const at = OFFSETS.probation.d + slot * SIZEOF.first_knock;
  out.writeBigUInt64LE(nowNs, at + OFFSETS.first_knock.at_ns);
  out.writeUInt32LE(epoch >>> 0, at + OFFSETS.first_knock.epoch);
  return out;
}

/** A kg_flows key: TCP from src:sport to dst:dport (16-byte addresses). */
export function flowKey(src: Buffer, dst: Buffer, sport: number, dport: number, out = Buffer.alloc(SIZEOF.flow_key)): Buffer {
  out.fill(0);
  src.copy(out, OFFSETS.flow_key.src);
  dst.copy(out, OFFSETS.flow_key.dst);
  out.writeUInt16LE(sport, OFFSETS.flow_key.sport);
  out.writeUInt16LE(dport, OFFSETS.flow_key.dport);
  out.writeUInt8(0, OFFSETS.flow_key.proto);
  return out;
}

/** A kg_flows value: an established connection opened under the bench door (slot), idle for an hour at most. */
export function flowValue(slot: number, nowNs: bigint = monoNowNs(), out = Buffer.alloc(SIZEOF.flow)): Buffer {
  out.fill(0);
  out.writeBigUInt64LE(nowNs, OFFSETS.flow.created_ns);
  out.writeBigUInt64LE(nowNs, OFFSETS.flow.last_ns);
  out.writeBigUInt64LE(3_600_000_000_000n, OFFSETS.flow.idle_ns);
  out.writeUInt8(slot, OFFSETS.flow.slot);
  out.writeUInt8(1, OFFSETS.flow.flags); // KG_FLOW_ESTABLISHED
  return out;
}

/** DESIGN.md "Hash for hints": the source's slot in globals.hint. */
export function hintIndex(addrKey: Buffer): number {
  let x = 0;
  for (let i = 0; i < 4; i++) x ^= addrKey.readUInt32LE(i * 4);
  return (Math.imul(x, 2654435761) >>> 0) >>> (32 - Math.log2(KG.HINT_SLOTS));
}

export function statsDelta(a: Stats, b: Stats): Record<StatName, number> {
  const out = {} as Record<StatName, number>;
  for (const n of STAT_NAMES) out[n] = Number(b[n] - a[n]);
  return out;
}

/** The verdict counter (KG_V_*) that moved between a and b, or null if none or several did. */
export function verdictOf(a: Stats, b: Stats): StatName | null {
  const moved = STAT_NAMES.slice(0, VERDICTS).filter((n) => b[n] !== a[n]);
  return moved.length === 1 ? (moved[0] ?? null) : null;
}

export interface BaseProgs {
  obj: BpfObject;
  drop: number;
  pass: number;
  dropCount: number;
  /** packets bench_drop_count has dropped, all CPUs */
  dropped(): bigint;
  close(): void;
}

export function loadBaseProgs(): BaseProgs {
  const obj = BpfObject.open(objectPath('bench-base'));
  try {
    obj.load();
  } catch (err) {
    obj.close();
    throw err;
  }
  const counter = obj.map('bench_count');
  const zero = Buffer.alloc(4);
  return {
    obj,
    drop: obj.programFd('bench_drop'),
    pass: obj.programFd('bench_pass'),
    dropCount: obj.programFd('bench_drop_count'),
    dropped: () => counter.lookupPerCpu(zero).reduce((s, b) => s + b.readBigUInt64LE(0), 0n),
    close: () => obj.close(),
  };
}

export { MAP, monoNowNs };
