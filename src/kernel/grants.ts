/**
 * Grants and flows as the kernel holds them (kg_grants, kg_flows): listing, manual grants,
 * revokes, and the daemon's sweep of what has expired (penalties and first knocks too). The
 * Gate owns the maps and delegates here; every grant user space writes goes through
 * writeGrant(), which marks the grant filter (DESIGN.md "Grant filter").
 */
import { BPF_ANY, waitForPrograms, type BpfMap } from '../bpf/index.js';
import {
  KG,
  decodeFlow,
  decodeFlowKey,
  decodeGrant,
  decodePenalty,
  encodeGrant,
  flowIdleLimitNs,
  newestFirstKnockNs,
  type Globals,
  type KDoor,
  type KFlow,
  type KFlowKey,
} from './layout.js';
import type { GrantFilter } from './gfilter.js';

export interface GrantEntry {
  addr: Buffer;
  slot: number;
  door: string;
  expiresNs: bigint;
}

export interface FlowEntry extends KFlowKey, KFlow {
  door: string;
  /** ns since the flow's last packet */
  idleForNs: bigint;
  /** the flow has been idle past its limit: the next packet finds it gone */
  expired: boolean;
}

export interface SweepResult {
  flows: number;
  grants: number;
  penalties: number;
  probation: number;
}

export interface GrantMaps {
  grants: BpfMap;
  flows: BpfMap;
  penalty: BpfMap;
  probation: BpfMap;
}

/** Whether a flow has been idle past its limit at `nowNs`. */
function flowExpired(f: KFlow, nowNs: bigint): boolean {
  return nowNs > f.lastNs && nowNs - f.lastNs > flowIdleLimitNs(f);
}

export class Grants {
  constructor(
    private readonly maps: GrantMaps,
    /** null: a gate pinned by an earlier knockgate, opened without loading */
    private readonly gfilter: GrantFilter | null,
    private readonly globals: Globals,
    /** the live doors of the active generation, by slot (for names) */
    private readonly slotDoors: () => Map<number, KDoor>,
  ) {}

  /** Live grants, one entry per (source, door). */
  list(nowNs: bigint): GrantEntry[] {
    const names = this.slotDoors();
    const out: GrantEntry[] = [];
    for (const [key, value] of this.maps.grants.entries()) {
      decodeGrant(value).forEach((exp, slot) => {
        if (exp > nowNs) out.push({ addr: Buffer.from(key), slot, door: names.get(slot)?.name ?? `slot${slot}`, expiresNs: exp });
      });
    }
    return out;
  }

  /** Set (or extend) a grant by hand. */
  grant(addr: Buffer, slot: number, forNs: bigint, nowNs: bigint): bigint {
    const cur = this.maps.grants.lookup(addr);
    const exp = cur ? decodeGrant(cur) : new Array<bigint>(KG.MAX_DOORS).fill(0n);
    exp[slot] = nowNs + forNs;
    this.writeGrant(addr, encodeGrant(exp));
    return nowNs + forNs;
  }

  /**
   * Cut the grants of `addr` (all doors, or the given slots) and delete its flows opened under
   * them. Returns the slots whose live grant was cut and how many live flows were cut (flows
   * already idle past their limit are deleted too, uncounted).
   */
  revoke(addr: Buffer, slots: readonly number[] | undefined, nowNs: bigint): { slots: number[]; flows: number } {
    const cut = this.cutGrants(addr, slots, nowNs);
    let flows = 0;
    for (const [key, value] of [...this.maps.flows.entries()]) {
      const k = decodeFlowKey(key);
      if (!k.src.equals(addr)) continue;
      const f = decodeFlow(value);
      if (slots !== undefined && !slots.includes(f.slot)) continue;
      const live = !flowExpired(f, nowNs);
      if (this.maps.flows.delete(key) && live) flows++;
    }
    return { slots: cut, flows };
  }

  /** Grants and flows of door slots that went away. */
  clearSlots(slots: readonly number[]): void {
    for (const [key] of [...this.maps.grants.entries()]) this.cutGrants(Buffer.from(key), slots, 0n);
    const flows = this.maps.flows;
    for (const [key, value] of [...flows.entries()]) if (slots.includes(decodeFlow(value).slot)) flows.delete(key);
  }

  private cutGrants(addr: Buffer, slots: readonly number[] | undefined, nowNs: bigint): number[] {
    const m = this.maps.grants;
    const cur = m.lookup(addr);
    if (!cur) return [];
    const exp = decodeGrant(cur);
    const cut: number[] = [];
    exp.forEach((v, s) => {
      if ((slots === undefined || slots.includes(s)) && v !== 0n) {
        if (v > nowNs) cut.push(s);
        exp[s] = 0n;
      }
    });
    if (exp.every((v) => v === 0n)) m.delete(addr);
    else this.writeGrant(addr, encodeGrant(exp));
    return cut;
  }

  /**
   * Every grant user space writes goes through here: the grant filter is marked before the
   * write (XDP never finds the entry without its bits) and after it (a rebuild that cleared
   * the bits meanwhile lists the entry). DESIGN.md "Grant filter".
   */
  private writeGrant(addr: Buffer, value: Buffer): void {
    this.gfilter?.mark(addr);
    this.maps.grants.update(addr, value, BPF_ANY);
    this.gfilter?.mark(addr);
  }

  /**
   * Drop the grant filter's bits of sources that hold nothing any more: rebuilt from the
   * sources of kg_grants and kg_flows (the sweep runs it). Returns how many were listed.
   */
  rebuildFilter(): number {
    const gf = this.gfilter;
    if (!gf) return 0;
    const { grants, flows } = this.maps;
    return gf.rebuild(function* () {
      for (const k of grants.keys()) yield Buffer.from(k);
      for (const k of flows.keys()) yield Buffer.from(decodeFlowKey(k).src);
    }, waitForPrograms);
  }

  /** Live flows (and, with `all`, those idle past their limit that nobody has removed yet). */
  flows(nowNs: bigint, all: boolean): FlowEntry[] {
    const names = this.slotDoors();
    const out: FlowEntry[] = [];
    for (const [key, value] of this.maps.flows.entries()) {
      const f = decodeFlow(value);
      const idleForNs = nowNs > f.lastNs ? nowNs - f.lastNs : 0n;
      const expired = idleForNs > flowIdleLimitNs(f);
      if (expired && !all) continue;
      out.push({ ...decodeFlowKey(key), ...f, door: names.get(f.slot)?.name ?? `slot${f.slot}`, idleForNs, expired });
    }
    return out;
  }

  /**
   * Delete grant entries whose every door expired at least `graceNs` ago, unless the source
   * still has a live flow (its datagrams and retransmitted SYNs are judged through the grant
   * entry). Returns how many were removed.
   */
  sweepExpired(nowNs: bigint, graceNs: bigint, liveFlowSources?: ReadonlySet<string>): number {
    const withFlows = liveFlowSources ?? new Set(this.flows(nowNs, false).map((f) => f.src.toString('hex')));
    const m = this.maps.grants;
    let removed = 0;
    for (const [key, value] of [...m.entries()]) {
      if (withFlows.has(key.toString('hex'))) continue;
      if (decodeGrant(value).every((v) => v + graceNs <= nowNs)) {
        if (m.delete(key)) removed++;
      }
    }
    return removed;
  }

  /**
   * The daemon's housekeeping: flows idle past their limit, grant entries (see sweepExpired),
   * penalties whose window and cooldown are over, and first-knock records too old to matter
   * (older than two filter windows). Every map is LRU as well; this keeps them from filling
   * with the dead.
   */
  sweep(nowNs: bigint, grantGraceNs: bigint): SweepResult {
    const res: SweepResult = { flows: 0, grants: 0, penalties: 0, probation: 0 };
    const flows = this.maps.flows;
    const live = new Set<string>();
    for (const [key, value] of [...flows.entries()]) {
      if (flowExpired(decodeFlow(value), nowNs)) {
        if (flows.delete(key)) res.flows++;
      } else {
        live.add(decodeFlowKey(key).src.toString('hex'));
      }
    }
    res.grants = this.sweepExpired(nowNs, grantGraceNs, live);
    const windowNs = this.globals.failureWindowNs;
    const pen = this.maps.penalty;
    for (const [key, value] of [...pen.entries()]) {
      const p = decodePenalty(value);
      if (p.cooldownUntilNs <= nowNs && p.windowStartNs + windowNs < nowNs) {
        if (pen.delete(key)) res.penalties++;
      }
    }
    const old = 2n * this.globals.fkWindowNs;
    const prob = this.maps.probation;
    for (const [key, value] of [...prob.entries()]) {
      if (newestFirstKnockNs(value) + old < nowNs) {
        if (prob.delete(key)) res.probation++;
      }
    }
    // Last: the bits of the grants and flows removed above go with the rebuild.
    this.rebuildFilter();
    return res;
  }
}
