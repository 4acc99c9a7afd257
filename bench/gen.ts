/**
 * The generator program (test/fixtures/bench-gen.bpf.c) from user space: its configuration
 * map and the tail-call slot of bench_gen_chain.
 */
import { BPF_ANY, BpfObject } from '../src/bpf/index.js';
import { objectPath } from './gate.js';
import { XDP } from './testrun.js';

/** The generator program used as a source-spreading front end (bench_gen_chain). */
export interface GenProgs {
  obj: BpfObject;
  gen: number;
  chain: number;
  setCfg(c: { range: number; first: number; mult?: number; action?: number; flags?: number; start?: number }): void;
  count(): bigint;
  setNext(fd: number): void;
  close(): void;
}

export const GEN_SPORT = 1;

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** A multiplier coprime with range: (count * mult) % range visits every index once per range. */
export function multiplierFor(range: number): number {
  let m = 2654435761;
  while (gcd(m % Math.max(range, 1), Math.max(range, 1)) !== 1 && range > 1) m += 2;
  return m;
}

export function loadGen(): GenProgs {
  const obj = BpfObject.open(objectPath('bench-gen'));
  try {
    obj.load();
  } catch (err) {
    obj.close();
    throw err;
  }
  const cfg = obj.map('bench_gen_cfg');
  const next = obj.map('bench_next');
  const zero = Buffer.alloc(4);
  const v = Buffer.alloc(32);
  return {
    obj,
    gen: obj.programFd('bench_gen'),
    chain: obj.programFd('bench_gen_chain'),
    setCfg: (c) => {
      v.fill(0);
      v.writeBigUInt64LE(BigInt(c.start ?? 0), 0);
      v.writeBigUInt64LE(BigInt(c.mult ?? multiplierFor(c.range)), 8);
      v.writeUInt32LE(c.range >>> 0, 16);
      v.writeUInt32LE(c.first >>> 0, 20);
      v.writeUInt32LE(c.action ?? XDP.TX, 24);
      v.writeUInt32LE(c.flags ?? 0, 28);
      cfg.update(zero, v, BPF_ANY);
    },
    count: () => cfg.lookup(zero)?.readBigUInt64LE(0) ?? 0n,
    setNext: (fd) => {
      const fdBuf = Buffer.alloc(4);
      fdBuf.writeUInt32LE(fd);
      next.update(zero, fdBuf, BPF_ANY);
    },
    close: () => obj.close(),
  };
}
