/**
 * What parts 3-5 share: the lab (namespaces, veth), a gate pinned for it, the baseline
 * programs, the TCP service in the gateway namespace, and the child processes (generator,
 * client, knockd), every one of them tracked and ended by PID in close().
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { progTestRun } from '../src/bpf/index.js';
import { ETH_HLEN, checksumsValid } from '../test/helpers/packets.js';
import { loadBaseProgs, openBenchGate, PORTS, type BaseProgs, type BenchGate } from './gate.js';
import { loadGen } from './gen.js';
import { createLab, LAB_ADDR, type Lab } from './lab.js';
import { Child, ROOT, cpuCount } from './sys.js';
import { frameFor, type Family } from './classes.js';
import type { FloodL4, GenArgs } from './flood-gen.js';
import type { CycleArgs } from './peer.js';

export const NODE = process.execPath;
export const GEN_JS = `${ROOT}dist/bench/flood-gen.js`;
export const PEER_JS = `${ROOT}dist/bench/peer.js`;

/** A running flood: GENERATORS processes on the generator CPU. */
export interface Flood {
  children: Child[];
  /** end every generator (SIGTERM, then SIGKILL), by PID */
  stop(): Promise<void>;
  /** frames per second the generators sent, summed (after stop), or null */
  pps(): number | null;
}

/** Generator processes per flood. One: two would take two thirds of the CPU from ksoftirqd when
 * the receive path is deferred there, and overflow the veth's ring. */
export const GENERATORS = 1;

export interface Env {
  id: string;
  lab: Lab;
  bg: BenchGate;
  base: BaseProgs;
  service: Child;
  tmp: string;
  /** CPU the generator (and so the receiving softirq) runs on; the rest run on mainCpu */
  genCpu: number;
  mainCpu: number;
  startGenerator(o: { family: Family; dport: number; seconds: number; maxFrames: number; range?: number; batch?: number; l4?: FloodL4 }): Promise<Flood>;
  startCycles(a: Omit<CycleArgs, 'tag' | 'host4' | 'host6' | 'port'>): Child;
  /** start a process inside the gateway namespace, pinned to mainCpu */
  startInGateway(what: string, args: string[]): Child;
  close(): Promise<void>;
}

const children = new Set<Child>();

/** Emergency stop of every child still running (signal handlers). */
export function killAllChildren(): void {
  for (const c of children) {
    if (c.running) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}

function pinned(cpu: number, args: string[]): string[] {
  return cpuCount() > 1 ? ['taskset', '-c', String(cpu), ...args] : args;
}

/** The generator's frames must be ones an IP stack accepts: check its checksums once. */
export function checkGenerator(): { ok: boolean; detail: string } {
  const gen = loadGen();
  try {
    const problems: string[] = [];
    for (const family of [4, 6] as const) {
      const src = family === 4 ? LAB_ADDR.spoof4 : LAB_ADDR.spoof6;
      gen.setCfg({ range: src.range, first: src.first, action: 2, flags: 1 });
      let frame = frameFor('flood', family, src.prefix);
      for (let i = 0; i < 3; i++) {
        const r = progTestRun(gen.gen, frame, { dataOut: true });
        const f = r.dataOut ?? Buffer.alloc(0);
        const sums = checksumsValid(f, ETH_HLEN);
        if (sums === null) problems.push(`IPv${family}: no TCP segment`);
        if (sums?.ip === false) problems.push('IPv4 header checksum');
        if (sums?.l4 === false) problems.push(`TCP/IPv${family} checksum`);
        if (f.equals(frame)) problems.push(`IPv${family} frame not rewritten`);
        frame = f;
      }
    }
    return problems.length === 0 ? { ok: true, detail: 'IPv4 and IPv6 checksums valid after rewriting' } : { ok: false, detail: [...new Set(problems)].join(', ') };
  } finally {
    gen.close();
  }
}

export async function openEnv(id: string, o: { sources: number; poolSize: number }): Promise<Env> {
  const lab = createLab(id, o.poolSize);
  const tmp = mkdtempSync(join(tmpdir(), `kg-bench-${id}-`));
  let bg: BenchGate | null = null;
  let base: BaseProgs | null = null;
  let service: Child | null = null;
  const cores = cpuCount();
  const genCpu = cores - 1;
  const mainCpu = 0;
  const track = (c: Child): Child => {
    children.add(c);
    void c.exited.then(() => children.delete(c));
    return c;
  };
  try {
    bg = openBenchGate({ pinPath: `/sys/fs/bpf/kg-bench-${id}-lab`, iface: lab.ifG, sources: o.sources });
    base = loadBaseProgs();
    // The service and the client run on the generator's CPU (see startCycles): the client's ACKs
    // are sent from the softirq that handles the service's replies, on the service's CPU.
    service = track(Child.start('service', 'ip', ['netns', 'exec', lab.nsG, ...pinned(genCpu, [NODE, PEER_JS, 'serve', String(PORTS.service), `kg-bench-${id}`])]));
    await service.waitLine((l) => l.includes('"listening"'), 15_000);
    const env: Env = {
      id,
      lab,
      bg,
      base,
      service,
      tmp,
      genCpu,
      mainCpu,
      startGenerator: async (g) => {
        const sp = g.family === 4 ? LAB_ADDR.spoof4 : LAB_ADDR.spoof6;
        const args: GenArgs = {
          tag: `kg-bench-${id}`,
          ifname: lab.ifC,
          family: g.family,
          src: sp.prefix,
          first: sp.first,
          range: g.range ?? sp.range,
          dst: g.family === 4 ? LAB_ADDR.g4 : LAB_ADDR.g6,
          dstMac: LAB_ADDR.macG,
          srcMac: LAB_ADDR.macC,
          dport: g.dport,
          l4: g.l4 ?? 'syn',
          seconds: g.seconds,
          maxFrames: g.maxFrames,
          batch: g.batch ?? 64,
          start: 0,
        };
        const maxEach = Math.max(1, Math.floor(g.maxFrames / GENERATORS));
        const cs: Child[] = [];
        const flood: Flood = {
          children: cs,
          stop: async () => {
            await Promise.all(cs.map((c) => c.stop()));
          },
          pps: () => {
            const rates = cs.map((c) => c.json().find((o) => o['done'] === true)?.['pps']).filter((x): x is number => typeof x === 'number');
            return rates.length === cs.length && rates.length > 0 ? rates.reduce((s2, x) => s2 + x, 0) : null;
          },
        };
        try {
          for (let i = 0; i < GENERATORS; i++) {
            const one: GenArgs = { ...args, maxFrames: maxEach, start: Math.floor((i * args.range) / GENERATORS) };
            cs.push(track(Child.start('flood generator', 'nsenter', [`--net=/run/netns/${lab.nsC}`, ...pinned(genCpu, [NODE, GEN_JS, JSON.stringify(one)])])));
          }
          await Promise.all(cs.map((c) => c.waitLine((l) => l.includes('"ready"'), 20_000)));
        } catch (err) {
          await flood.stop();
          throw err;
        }
        return flood;
      },
      startCycles: (a) => {
        const args: CycleArgs = { ...a, tag: `kg-bench-${id}`, host4: LAB_ADDR.g4, host6: LAB_ADDR.g6, port: PORTS.service };
        // On the generator's CPU: packets into the veth schedule the gateway end's NAPI on the CPU
        // that sends them, and a busy NAPI stays there; the client's packets, sent from another
        // CPU, would move the whole receive path to that CPU, away from the flood it competes with.
        return track(Child.start('knock client', 'ip', ['netns', 'exec', lab.nsC, ...pinned(genCpu, [NODE, PEER_JS, 'cycles', JSON.stringify(args)])]));
      },
      // nsenter --net, not `ip netns exec`: the daemon must see the host's bpffs (the bench's pins),
      // and refuses a private one that would not outlive it.
      startInGateway: (what, args) => track(Child.start(what, 'nsenter', [`--net=/run/netns/${lab.nsG}`, ...pinned(mainCpu, args)])),
      close: async () => {
        for (const c of [...children]) await c.stop();
        try {
          bg?.destroy();
        } finally {
          base?.close();
          lab.destroy();
          rmSync(tmp, { recursive: true, force: true });
        }
      },
    };
    return env;
  } catch (err) {
    for (const c of [...children]) await c.stop();
    try {
      bg?.destroy();
    } finally {
      base?.close();
      lab.destroy();
      rmSync(tmp, { recursive: true, force: true });
    }
    throw err;
  }
}
