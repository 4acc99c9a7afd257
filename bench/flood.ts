/**
 * Part 3: a flood on the veth pair. Our generator (bench/flood-gen.ts) sends TCP SYNs to the
 * protected port from spoofed sources (198.19.0.0/16, or 2^24 sources in 2001:db8:8000::/33)
 * as fast as one CPU can; each receiver in turn sits on the gateway end of the pair:
 *
 *   xdp-drop     bare XDP_DROP (bench_drop_count: one per-CPU counter)      counts: its counter
 *   knockgate    the gate, native XDP                                        counts: kg_stats drop_no_grant
 *   nft-netdev   nftables netdev ingress: tcp dport 2222 drop                counts: the rule's counter
 *   nft-inet-ct  nftables inet input filter with conntrack (knockd-style)    counts: the drop rule's counter
 *   none         no filter: the SYNs reach the TCP service (SYN cookies)     counts: TCP InSegs (handled, not dropped)
 *
 * Per receiver and family: packets per second over a fixed window after a warm-up, and the
 * softirq time of every CPU over the same window (in % of one core). Generator and receiver
 * share one CPU: the generator runs in process context (its system time), the receiver in
 * the NET_RX softirq raised at the end of each generator batch (its softirq time), so the
 * drop rate is the whole pipeline's and softirq ns/packet is the receiver's own cost.
 */
import { readFileSync } from 'node:fs';
import { attachXdp, ifIndex, type BpfLink } from '../src/bpf/index.js';
import { PORTS } from './gate.js';
import type { Env, Flood } from './env.js';
import type { FloodL4 } from './flood-gen.js';
import { median, rotate } from './stats.js';
import { cpuUse, ksoftirqdPid, processCpuSeconds, readCpuTimes, sleep, type CpuTimes } from './sys.js';
import type { Family } from './classes.js';

export type ReceiverKind = 'xdp-drop' | 'knockgate' | 'nft-netdev' | 'nft-inet-ct' | 'none' | 'xdp-drop-skb' | 'knockgate-skb';
export const RECEIVERS: readonly ReceiverKind[] = ['xdp-drop', 'knockgate', 'nft-netdev', 'nft-inet-ct', 'none', 'xdp-drop-skb', 'knockgate-skb'];
export const RECEIVER_LABELS: Record<ReceiverKind, string> = {
  'xdp-drop': 'bare XDP_DROP',
  knockgate: 'knockgate (XDP)',
  'nft-netdev': 'nftables netdev ingress drop',
  'nft-inet-ct': 'nftables inet + conntrack',
  none: 'no filter (handled, not dropped)',
  'xdp-drop-skb': 'bare XDP_DROP, generic (skb) mode',
  'knockgate-skb': 'knockgate, generic (skb) mode',
};

/** The floods: what the generator sends, and which receivers face each. */
export type FloodKind = FloodL4;
export const FLOOD_KINDS: readonly FloodKind[] = ['syn', 'udp', 'spa'];
export const FLOOD_LABELS: Record<FloodKind, string> = {
  syn: 'TCP SYN to the protected port',
  udp: 'UDP to the protected port',
  spa: 'junk spa datagrams (current timestamp, no key) to the spa port',
};
export const FLOOD_RECEIVERS: Record<FloodKind, readonly ReceiverKind[]> = {
  syn: RECEIVERS,
  udp: ['xdp-drop', 'knockgate', 'nft-netdev', 'xdp-drop-skb', 'knockgate-skb'],
  spa: ['xdp-drop', 'knockgate', 'xdp-drop-skb', 'knockgate-skb'],
};
export function floodPort(kind: FloodKind): number {
  return kind === 'spa' ? PORTS.spa : PORTS.service;
}

export interface Receiver {
  kind: ReceiverKind;
  setup(): void;
  /** packets dropped (or, for none, handled) so far */
  count(): number;
  teardown(): void;
}

const NFT_TABLE = 'kgbench';

export function nft(env: Env, script: string): void {
  env.lab.exec(env.lab.nsG, ['nft', '-f', '-'], { input: script });
}

export function nftCounter(env: Env, family: 'netdev' | 'inet', name: string): number {
  const j = JSON.parse(env.lab.exec(env.lab.nsG, ['nft', '-j', 'list', 'counter', family, NFT_TABLE, name])) as { nftables?: { counter?: { packets?: number } }[] };
  for (const o of j.nftables ?? []) if (o.counter?.packets !== undefined) return o.counter.packets;
  throw new Error(`no counter ${family} ${NFT_TABLE} ${name}`);
}

export function nftDeleteTable(env: Env, family: 'netdev' | 'inet'): void {
  try {
    env.lab.exec(env.lab.nsG, ['nft', 'delete', 'table', family, NFT_TABLE]);
  } catch {
    /* not there */
  }
}

/** knockd-style input filter: established traffic passes, the protected port only from @allowed. */
export function nftInetRuleset(): string {
  const [a, b, c] = PORTS.steps;
  return `table inet ${NFT_TABLE} {
  counter flood { }
  set allowed4 { type ipv4_addr; }
  set allowed6 { type ipv6_addr; }
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    ct state invalid drop
    tcp dport ${PORTS.service} ip saddr @allowed4 accept
    tcp dport ${PORTS.service} ip6 saddr @allowed6 accept
    tcp dport ${PORTS.service} counter name "flood" drop
    ${a!.proto} dport ${a!.port} drop
    ${b!.proto} dport ${b!.port} drop
    ${c!.proto} dport ${c!.port} drop
  }
}
`;
}

function tcpInSegs(pid: number): number {
  const lines = readFileSync(`/proc/${pid}/net/snmp`, 'utf8').split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = (lines[0] ?? '').split(/\s+/);
  const values = (lines[1] ?? '').split(/\s+/);
  const i = names.indexOf('InSegs');
  if (i < 0) throw new Error('no Tcp InSegs in /proc/net/snmp');
  return Number(values[i]);
}

export function receivers(env: Env, flood: FloodKind = 'syn'): Record<ReceiverKind, Receiver> {
  const { lab, bg, base } = env;
  let link: BpfLink | null = null;
  const gateCounter = flood === 'spa' ? 'drop_knock' : 'drop_no_grant';
  const bareDrop = (mode: 'native' | 'generic'): Receiver => ({
    kind: mode === 'native' ? 'xdp-drop' : 'xdp-drop-skb',
    setup: () => {
      link = lab.enter(lab.nsG, () => attachXdp(base.dropCount, ifIndex(lab.ifG), mode));
    },
    count: () => Number(base.dropped()),
    teardown: () => {
      if (!link) return;
      try {
        link.detach();
      } finally {
        link.close();
        link = null;
      }
    },
  });
  const gateRx = (mode: 'native' | 'generic'): Receiver => ({
    kind: mode === 'native' ? 'knockgate' : 'knockgate-skb',
    setup: () => {
      lab.enter(lab.nsG, () => bg.gate.attach([{ name: lab.ifG, mode, attach: 'link', priority: 10 }]));
    },
    count: () => Number(bg.gate.stats()[gateCounter]),
    teardown: () => {
      lab.enter(lab.nsG, () => bg.gate.detachInterface(lab.ifG));
    },
  });
  return {
    'xdp-drop-skb': bareDrop('generic'),
    'knockgate-skb': gateRx('generic'),
    'xdp-drop': {
      kind: 'xdp-drop',
      setup: () => {
        link = lab.enter(lab.nsG, () => attachXdp(base.dropCount, ifIndex(lab.ifG), 'native'));
      },
      count: () => Number(base.dropped()),
      teardown: () => {
        if (!link) return;
        try {
          link.detach();
        } finally {
          link.close();
          link = null;
        }
      },
    },
    knockgate: {
      kind: 'knockgate',
      setup: () => {
        lab.enter(lab.nsG, () => bg.gate.attach([{ name: lab.ifG, mode: 'native', attach: 'link', priority: 10 }]));
      },
      count: () => Number(bg.gate.stats()[gateCounter]),
      teardown: () => {
        lab.enter(lab.nsG, () => bg.gate.detachInterface(lab.ifG));
      },
    },
    'nft-netdev': {
      kind: 'nft-netdev',
      setup: () =>
        nft(
          env,
          `table netdev ${NFT_TABLE} {
  counter flood { }
  chain ingress {
    type filter hook ingress device "${lab.ifG}" priority -500; policy accept;
    meta l4proto { tcp, udp } th dport ${PORTS.service} counter name "flood" drop
  }
}
`,
        ),
      count: () => nftCounter(env, 'netdev', 'flood'),
      teardown: () => nftDeleteTable(env, 'netdev'),
    },
    'nft-inet-ct': {
      kind: 'nft-inet-ct',
      setup: () => nft(env, nftInetRuleset()),
      count: () => nftCounter(env, 'inet', 'flood'),
      teardown: () => nftDeleteTable(env, 'inet'),
    },
    none: {
      kind: 'none',
      setup: () => undefined,
      count: () => tcpInSegs(env.service.pid),
      teardown: () => undefined,
    },
  };
}

/** Losses on the veth pair itself, so far: client packets (skbs) and flood frames that found
 * the gateway end's ring full (256 entries; a NIC's RX ring overflowing). */
export interface VethLoss {
  skbsDropped: number;
  framesDropped: number;
}

export function vethLoss(env: Env): VethLoss {
  const { lab } = env;
  let skbsDropped = NaN;
  let framesDropped = NaN;
  try {
    const j = JSON.parse(lab.exec(lab.nsC, ['ip', '-s', '-j', 'link', 'show', 'dev', lab.ifC])) as { stats64?: { tx?: { dropped?: number } } }[];
    const e = lab.exec(lab.nsC, ['ethtool', '-S', lab.ifC]);
    framesDropped = [...e.matchAll(/xdp_xmit_err\w*:\s*(\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
    // veth's tx_dropped counts both: the skbs it could not pass on, and the XDP frames its peer refused
    skbsDropped = (j[0]?.stats64?.tx?.dropped ?? NaN) - framesDropped;
  } catch {
    /* diagnostics only */
  }
  return { skbsDropped, framesDropped };
}

export interface Sample {
  count: number;
  atNs: bigint;
  cpu: CpuTimes;
  /** CPU seconds used so far by the flood's own threads (generators, the generator CPU's ksoftirqd) */
  ours: number;
}

export function sample(count: () => number, ours: () => number = () => NaN): Sample {
  const a = process.hrtime.bigint();
  const n = count();
  const b = process.hrtime.bigint();
  return { count: n, atNs: (a + b) / 2n, cpu: readCpuTimes(), ours: ours() };
}

/** CPU seconds of the flood's generators and of the generator CPU's ksoftirqd, so far. */
export function floodCpu(env: Env, gen: Flood): () => number {
  const ksoft = ksoftirqdPid(env.genCpu);
  return () => gen.children.reduce((s, c) => s + processCpuSeconds(c.pid), 0) + (ksoft > 0 ? processCpuSeconds(ksoft) : 0);
}

export interface Window {
  pps: number;
  softirqPct: number;
  softirqPctPerCpu: number[];
  /** softirq ns per packet counted (receiver cost, all CPUs) */
  softirqNsPerPacket: number;
  /** generator's own rate over its whole run, frames/s */
  generatorPps: number | null;
  /** user time on each CPU: load that is not ours (our generator and receivers run in the kernel) */
  userPctPerCpu: number[];
  /** CPU time the flood's own threads got (generators + receiving softirq in their context +
   * ksoftirqd), % of one core; less than 100 when other load shares the CPU */
  oursPct: number;
  /** packets per second of that CPU time: the drop rate one whole core would give */
  ppsPerCore: number;
  /** lost at the veth's ring during the window (diagnostics) */
  vethLoss: VethLoss;
}

export function windowOf(a: Sample, b: Sample, generatorPps: number | null = null, loss: VethLoss = { skbsDropped: NaN, framesDropped: NaN }): Window {
  const seconds = Number(b.atNs - a.atNs) / 1e9;
  const pps = (b.count - a.count) / seconds;
  const use = cpuUse(a.cpu, b.cpu);
  return {
    pps,
    softirqPct: use.softirqPct,
    softirqPctPerCpu: use.softirqPctPerCpu,
    softirqNsPerPacket: pps > 0 ? ((use.softirqPct / 100) * 1e9) / pps : NaN,
    generatorPps,
    userPctPerCpu: use.userPctPerCpu,
    oursPct: ((b.ours - a.ours) / seconds) * 100,
    ppsPerCore: b.ours > a.ours ? (b.count - a.count) / (b.ours - a.ours) : NaN,
    vethLoss: loss,
  };
}

export interface FloodParams {
  windowS: number;
  warmupS: number;
  rounds: number;
  families: Family[];
  receivers: ReceiverKind[];
  /** floods to run (default: all); each faces the receivers of FLOOD_RECEIVERS among `receivers` */
  kinds?: FloodKind[];
}

export interface FloodRow {
  /** what the flood sends (absent in results from before floods had kinds: syn) */
  flood?: FloodKind;
  receiver: ReceiverKind;
  label: string;
  family: Family;
  /** medians over rounds */
  pps: number;
  softirqPct: number;
  softirqNsPerPacket: number;
  generatorPps: number;
  /** ratio to bare XDP_DROP (same family), median of the per-round ratios */
  ppsVsDrop: number;
  /** medians over rounds: drop rate per core of the flood's own CPU time, and its ratio to bare XDP_DROP */
  ppsPerCore: number;
  ppsPerCoreVsDrop: number;
  oursPct: number;
  /** the receiver alone: 1e9 / softirq ns per packet, i.e. what one receiving core could drop
   * if the flood were generated elsewhere (as on a real NIC); and its ratio to bare XDP_DROP */
  rxPpsPerCore: number;
  rxVsDrop: number;
  /** median user time of other processes per CPU over the windows, % */
  otherLoadPct: number[];
  windows: Window[];
}

export interface FloodResult {
  params: FloodParams;
  generatorCpu: number;
  generatorCheck: string;
  rows: FloodRow[];
  seconds: number;
}

/** Wait until the receiver's counter moves (the flood has reached it), at most timeoutMs. */
export async function flowing(count: () => number, timeoutMs = 10_000): Promise<boolean> {
  const c0 = count();
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    await sleep(50);
    if (count() !== c0) return true;
  }
  return false;
}

export async function floodWindow(env: Env, rec: Receiver, family: Family, p: { windowS: number; warmupS: number }, kind: FloodKind = 'syn'): Promise<Window> {
  rec.setup();
  try {
    const gen = await env.startGenerator({ family, dport: floodPort(kind), l4: kind, seconds: p.warmupS + p.windowS + 13, maxFrames: Math.round((p.warmupS + p.windowS + 13) * 50e6) });
    try {
      const ours = floodCpu(env, gen);
      await flowing(rec.count);
      await sleep(p.warmupS * 1000);
      const l0 = vethLoss(env);
      const a = sample(rec.count, ours);
      await sleep(p.windowS * 1000);
      const b = sample(rec.count, ours);
      const l1 = vethLoss(env);
      await gen.stop();
      return windowOf(a, b, gen.pps(), { skbsDropped: l1.skbsDropped - l0.skbsDropped, framesDropped: l1.framesDropped - l0.framesDropped });
    } finally {
      await gen.stop();
    }
  } finally {
    rec.teardown();
  }
}

export async function runFlood(env: Env, p: FloodParams, generatorCheck: string, log: (s: string) => void): Promise<FloodResult> {
  const t0 = Date.now();
  const floods = p.kinds ?? [...FLOOD_KINDS];
  const recsOf = (f: FloodKind): ReceiverKind[] => FLOOD_RECEIVERS[f].filter((r) => p.receivers.includes(r));
  const windows = new Map<string, Window[]>();
  for (let round = 0; round < p.rounds; round++) {
    for (const family of p.families) {
      for (const flood of floods) {
        const recs = receivers(env, flood);
        for (const kind of rotate(recsOf(flood), round)) {
          const w = await floodWindow(env, recs[kind], family, p, flood);
          const k = `${flood}/${kind}/${family}`;
          windows.set(k, [...(windows.get(k) ?? []), w]);
          log(
            `  flood round ${round + 1}/${p.rounds} ${flood} IPv${family} ${kind.padEnd(13)} ${(w.pps / 1e6).toFixed(2)} Mpps (${(w.ppsPerCore / 1e6).toFixed(2)} per core), ` +
              `rx ${w.softirqNsPerPacket.toFixed(0)} ns/packet, flood threads ${w.oursPct.toFixed(0)}% of a core, softirq ${w.softirqPct.toFixed(0)}%, user (other load) ${w.userPctPerCpu.map((x) => x.toFixed(0)).join('/')}%`,
          );
        }
      }
    }
  }
  const rows: FloodRow[] = [];
  for (const flood of floods) for (const family of p.families) {
    // generic-mode receivers are compared with the generic bare XDP_DROP
    for (const kind of recsOf(flood)) {
      const ws = windows.get(`${flood}/${kind}/${family}`) ?? [];
      const drops = windows.get(`${flood}/${kind.endsWith('-skb') ? 'xdp-drop-skb' : 'xdp-drop'}/${family}`) ?? [];
      // ratios within a round (receivers of one round ran within seconds of each other)
      const ratio = (f: (w: Window) => number): number => median(ws.map((w, i) => f(w) / (drops[i] ? f(drops[i]!) : NaN)));
      rows.push({
        flood,
        receiver: kind,
        label: RECEIVER_LABELS[kind],
        family,
        pps: median(ws.map((w) => w.pps)),
        softirqPct: median(ws.map((w) => w.softirqPct)),
        softirqNsPerPacket: median(ws.map((w) => w.softirqNsPerPacket)),
        generatorPps: median(ws.map((w) => w.generatorPps ?? NaN).filter((x) => Number.isFinite(x))),
        ppsVsDrop: ratio((w) => w.pps),
        ppsPerCore: median(ws.map((w) => w.ppsPerCore)),
        ppsPerCoreVsDrop: ratio((w) => w.ppsPerCore),
        oursPct: median(ws.map((w) => w.oursPct)),
        rxPpsPerCore: median(ws.map((w) => 1e9 / w.softirqNsPerPacket)),
        rxVsDrop: ratio((w) => 1e9 / w.softirqNsPerPacket),
        otherLoadPct: (ws[0]?.userPctPerCpu ?? []).map((_, c) => median(ws.map((w) => w.userPctPerCpu[c] ?? NaN))),
        windows: ws,
      });
    }
  }
  return { params: p, generatorCpu: env.genCpu, generatorCheck, rows, seconds: (Date.now() - t0) / 1000 };
}
