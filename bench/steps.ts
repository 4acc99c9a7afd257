/**
 * Part 0, steps: what each step of the drop and pass paths costs, and what each of the flood
 * defences buys, from variants of the same program source built with compile-time switches and
 * measured in the same rounds (BPF_PROG_TEST_RUN, one repeated frame, order rotated per round):
 *
 *   stats        -DKG_BENCH_STEP=1   the kg_stats lookup and one counter, no parsing
 *   parse        -DKG_BENCH_STEP=2   + parsing up to L4
 *   ports        -DKG_BENCH_STEP=3   + the kg_ports lookup
 *   no-gfilter   -DKG_NO_GFILTER     the whole program without the grant filter: a flood's
 *                                    source is looked up in kg_grants (or kg_flows)
 *   no-spa-tag   -DKG_NO_SPA_TAG     the whole program without the spa window tag: junk pays
 *                                    SipHash-2-4
 *   gate         (the build)         the whole program
 *
 * The step variants return before any policy: their verdicts are not checked. The variants of
 * the whole program are checked against the verdict each class must reach.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeSpa } from '../src/knock/index.js';
import type { StatName } from '../src/kernel/layout.js';
import { TCP_FLAGS, addrKey, buildFrame } from '../test/helpers/packets.js';
import { generateKeyPairSync } from 'node:crypto';
import { encodeSigned } from '../src/knock/index.js';
import { frameFor, GW, type Family } from './classes.js';
import { PORTS, SPA_KEY, loadBaseProgs, openBenchGate, statsDelta, type BenchGate } from './gate.js';
import { median, rotate } from './stats.js';
import { testRun } from './testrun.js';

export interface StepsParams {
  repeat: number;
  rounds: number;
}

export const STEP_VARIANTS = [
  { id: 'stats', label: 'kg_stats lookup and counter only', defines: ['-DKG_BENCH_STEP=1'], whole: false },
  { id: 'parse', label: '+ parsing to L4', defines: ['-DKG_BENCH_STEP=2'], whole: false },
  { id: 'ports', label: '+ kg_ports lookup', defines: ['-DKG_BENCH_STEP=3'], whole: false },
  { id: 'no-gfilter', label: 'whole program without the grant filter', defines: ['-DKG_NO_GFILTER'], whole: true },
  { id: 'no-spa-tag', label: 'whole program without the spa window tag', defines: ['-DKG_NO_SPA_TAG'], whole: true },
  { id: 'gate', label: 'whole program (as built)', defines: [], whole: true },
] as const;
export type StepVariant = (typeof STEP_VARIANTS)[number]['id'];

export interface StepClass {
  id: string;
  label: string;
  action: 'drop' | 'pass';
  expect: StatName;
  frame: Buffer;
}

export interface StepsResult {
  params: StepsParams;
  variants: { id: string; label: string; defines: string[] }[];
  classes: { id: string; label: string; action: 'drop' | 'pass'; expect: StatName }[];
  baselines: { drop: number; pass: number };
  /** median ns per packet, [variant][class] */
  ns: Record<string, Record<string, number>>;
  /** median over rounds of (ns - bare baseline of the class's action, same round) */
  overBase: Record<string, Record<string, number>>;
  /** verdicts of the whole-program variants: false where a class ended at another counter */
  verdictOk: Record<string, Record<string, boolean>>;
  seconds: number;
}

function bpfDir(): string {
  return fileURLToPath(new URL('../../bpf/', import.meta.url));
}

/** Builds one variant of bpf/knock.bpf.c into dir. */
function buildVariant(dir: string, id: string, defines: readonly string[]): string {
  const out = join(dir, `knock-${id}.bpf.o`);
  let multiarch = 'x86_64-linux-gnu';
  try {
    multiarch = execFileSync('gcc', ['-dumpmachine'], { encoding: 'utf8' }).trim();
  } catch {
    /* the default */
  }
  const src = bpfDir();
  execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-Wall', '-Werror', '-Wno-unused-function', `-I/usr/include/${multiarch}`, `-I${src}`, ...defines, '-c', join(src, 'knock.bpf.c'), '-o', out], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return out;
}

/** Doors the steps' gates have besides the bench's: a signed and a payload door. */
const EXTRA_DOORS = `  sig:
    type: signed
    port: 62202/udp
    clients: { bench: /nonexistent/bench.pub }
    protects: [${PORTS.service}/tcp]
  pay:
    type: payload
    knock: 62203/udp
    payload: open-sesame
    protects: [${PORTS.service}/tcp]
`;

export function stepClasses(): StepClass[] {
  const now = Math.floor(Date.now() / 1000);
  const out: StepClass[] = [];
  for (const family of [4, 6] as Family[]) {
    const src = family === 4 ? '198.19.0.1' : '2001:db8:8000::1';
    const dst = family === 4 ? GW.v4 : GW.v6;
    const ip = family === 4 ? { ipv4: { src, dst } } : { ipv6: { src, dst } };
    const base = { dstMac: '02:6b:67:00:00:02', srcMac: '02:6b:67:00:00:01', padTo: 60, ...ip };
    // junk: well-formed, current timestamp, a tag and MAC made with another key
    const junk = encodeSpa({ key: Buffer.alloc(16, 0x5a), door: 'spa', source: addrKey(src), time: now });
    const v = family === 4 ? 'v4' : 'v6';
    out.push(
      { id: `syn-flood-${v}`, label: `SYN flood to a protected port, IPv${family}`, action: 'drop', expect: 'drop_no_grant', frame: frameFor('flood', family, src) },
      { id: `udp-flood-${v}`, label: `UDP flood to a protected port, IPv${family}`, action: 'drop', expect: 'drop_no_grant', frame: buildFrame({ ...base, l4: { proto: 'udp', sport: 40000, dport: PORTS.service, payload: Buffer.from('flood') } }) },
      { id: `ack-flood-${v}`, label: `ACK flood to a protected port, IPv${family}`, action: 'drop', expect: 'drop_no_flow', frame: buildFrame({ ...base, l4: { proto: 'tcp', sport: 40000, dport: PORTS.service, flags: TCP_FLAGS.ACK } }) },
      { id: `unrelated-tcp-${v}`, label: `unrelated TCP, IPv${family}`, action: 'pass', expect: 'pass_unrelated', frame: frameFor('unrelated-tcp', family, src) },
      { id: `unrelated-udp-${v}`, label: `unrelated UDP, IPv${family}`, action: 'pass', expect: 'pass_unrelated', frame: frameFor('unrelated-udp', family, src) },
      { id: `spa-junk-${v}`, label: `junk spa datagram (current timestamp, no key), IPv${family}`, action: 'drop', expect: 'drop_knock', frame: buildFrame({ ...base, l4: { proto: 'udp', sport: 40000, dport: PORTS.spa, payload: junk } }) },
    );
  }
  // A valid spa knock, repeated: the first run grants; every later one verifies tag and MAC and
  // finds its nonce (the whole path but the grant's write).
  const src = '198.18.9.1';
  const good = encodeSpa({ key: SPA_KEY, door: 'spa', source: addrKey(src), time: now });
  const eth = { dstMac: '02:6b:67:00:00:02', srcMac: '02:6b:67:00:00:01', padTo: 60 };
  const udpTo = (port: number, payload: Buffer): Buffer => buildFrame({ ...eth, ipv4: { src: '198.18.9.2', dst: GW.v4 }, l4: { proto: 'udp', sport: 40000, dport: port, payload } });
  const signed = encodeSigned({ privateKey: generateKeyPairSync('ed25519').privateKey, door: 'sig', source: addrKey('198.18.9.2'), time: now });
  out.push(
    { id: 'signed-v4', label: 'signed datagram (checked, then for the daemon: none here, no tokens), IPv4', action: 'drop', expect: 'drop_knock', frame: udpTo(62202, signed) },
    { id: 'payload-ok-v4', label: 'payload knock with the right bytes (a grant every run), IPv4', action: 'drop', expect: 'drop_knock', frame: udpTo(62203, Buffer.from('open-sesame')) },
    { id: 'payload-junk-v4', label: 'payload knock with other bytes, IPv4', action: 'drop', expect: 'drop_knock', frame: udpTo(62203, Buffer.from('open-sesamx')) },
  );
  out.push({
    id: 'spa-valid-v4',
    label: 'valid spa datagram, verified (a replay: all but the grant), IPv4',
    action: 'drop',
    expect: 'drop_knock',
    frame: buildFrame({ dstMac: '02:6b:67:00:00:02', srcMac: '02:6b:67:00:00:01', padTo: 60, ipv4: { src, dst: GW.v4 }, l4: { proto: 'udp', sport: 40000, dport: PORTS.spa, payload: good } }),
  });
  return out;
}

export function runSteps(id: string, p: StepsParams, log: (s: string) => void = () => undefined): StepsResult {
  const t0 = Date.now();
  const dir = mkdtempSync(join(tmpdir(), `kg-bench-${id}-steps-`));
  const base = loadBaseProgs();
  const gates = new Map<string, BenchGate>();
  try {
    for (const v of STEP_VARIANTS) {
      const obj = buildVariant(dir, v.id, v.defines);
      const bg = openBenchGate({ pinPath: `/sys/fs/bpf/kg-bench-${id}-step-${v.id}`, iface: 'kg-bench0', sources: 65536, objectPath: obj, extraDoors: EXTRA_DOORS });
      gates.set(v.id, bg);
      bg.gate.setKnockTokens(0); // a flood exhausts them at once
      bg.gate.setSignedTokens(0);
    }
    const classes = stepClasses();
    // The valid knock's first run grants (one grant entry, in each gate).
    const valid = classes.find((c) => c.id === 'spa-valid-v4')!;
    for (const bg of gates.values()) testRun(bg.gate.progFd, valid.frame, { ifindex: 1 });
    const verdictOk: Record<string, Record<string, boolean>> = {};
    for (const v of STEP_VARIANTS) {
      if (!v.whole) continue;
      const g = gates.get(v.id)!.gate;
      verdictOk[v.id] = {};
      for (const c of classes) {
        const a = g.stats();
        testRun(g.progFd, c.frame, { ifindex: 1 });
        verdictOk[v.id]![c.id] = statsDelta(a, g.stats())[c.expect] === 1;
      }
    }
    type Subject = { key: string; fd: number; frame: Buffer };
    const subjects: Subject[] = [];
    for (const c of classes) {
      subjects.push({ key: `drop/${c.id}`, fd: base.drop, frame: c.frame }, { key: `pass/${c.id}`, fd: base.pass, frame: c.frame });
      for (const v of STEP_VARIANTS) subjects.push({ key: `${v.id}/${c.id}`, fd: gates.get(v.id)!.gate.progFd, frame: c.frame });
    }
    const runs = new Map<string, number[]>();
    for (let r = 0; r < p.rounds; r++) {
      for (const s of rotate(subjects, r % subjects.length)) {
        const ns = testRun(s.fd, s.frame, { repeat: p.repeat, ifindex: 1 }).durationNs;
        runs.set(s.key, [...(runs.get(s.key) ?? []), ns]);
      }
      log(`  steps round ${r + 1}/${p.rounds}`);
    }
    const ns: Record<string, Record<string, number>> = {};
    const overBase: Record<string, Record<string, number>> = {};
    for (const v of STEP_VARIANTS) {
      ns[v.id] = {};
      overBase[v.id] = {};
      for (const c of classes) {
        const xs = runs.get(`${v.id}/${c.id}`) ?? [];
        const bs = runs.get(`${c.action}/${c.id}`) ?? [];
        ns[v.id]![c.id] = median(xs);
        overBase[v.id]![c.id] = median(xs.map((x, i) => x - (bs[i] ?? NaN)));
      }
    }
    const all = (a: 'drop' | 'pass'): number => median(classes.flatMap((c) => runs.get(`${a}/${c.id}`) ?? []));
    return {
      params: p,
      variants: STEP_VARIANTS.map((v) => ({ id: v.id, label: v.label, defines: [...v.defines] })),
      classes: classes.map((c) => ({ id: c.id, label: c.label, action: c.action, expect: c.expect })),
      baselines: { drop: all('drop'), pass: all('pass') },
      ns,
      overBase,
      verdictOk,
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    for (const g of gates.values()) g.destroy();
    base.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
