// The interface supervisor's state machine, without a kernel: a fake gate (which links are
// pinned where) and a fake link source (the list and the events), with a hand-moved clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { InterfaceConfig } from '../../src/config/index.js';
import { InterfaceSupervisor, type LinkSource, type SupervisedGate } from '../../src/interfaces.js';
import type { Link, LinkMessage, LinkMonitorHandlers } from '../../src/net/netlink.js';

type Line = Record<string, unknown> & { msg: string; level: number };

class FakeGate implements SupervisedGate {
  /** pinned links: interface name -> ifindex it holds (0: the interface was deleted) */
  readonly pins = new Map<string, number>();
  readonly failing = new Set<string>();
  attaches = 0;
  attachOne(i: { name: string; mode: string }, ifindex = 0) {
    if (this.failing.has(i.name)) throw new Error(`attach ${i.name} refused`);
    this.attaches++;
    this.pins.set(i.name, ifindex);
    return { ifname: i.name, ifindex, mode: i.mode === 'auto' ? 'native' : i.mode, progId: 7, attach: 'link' as const };
  }
  detachInterface(name: string): void {
    this.pins.delete(name);
  }
  releaseInterface(name: string): void {
    this.pins.delete(name);
  }
  linkIfindex(name: string): number {
    return this.pins.get(name) ?? -1;
  }
  pinnedLinkNames(): string[] {
    return [...this.pins.keys()].sort();
  }
}

function lab(entries: InterfaceConfig[], links: Link[]) {
  const lines: Line[] = [];
  const logger = pino({ level: 'debug', base: null }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) });
  let handlers: LinkMonitorHandlers | null = null;
  const source: LinkSource = {
    list: () => links.map((l) => ({ ...l })),
    monitor: (h) => {
      handlers = h;
      return { drain: () => undefined, close: () => undefined };
    },
  };
  const clock = { ms: 1_000_000 };
  const gate = new FakeGate();
  const sup = new InterfaceSupervisor(gate as unknown as ConstructorParameters<typeof InterfaceSupervisor>[0], entries, logger, source, () => clock.ms);
  const event = (m: LinkMessage): void => {
    assert.ok(handlers, 'the supervisor subscribed to link events');
    if (m.event === 'new') {
      const i = links.findIndex((l) => l.index === m.index);
      const { event: _e, ...l } = m;
      if (i >= 0) links[i] = l;
      else links.push(l);
    } else {
      const i = links.findIndex((l) => l.index === m.index);
      if (i >= 0) links.splice(i, 1);
      if (gate.pins.has(m.name)) gate.pins.set(m.name, 0); // the kernel detaches the link
    }
    handlers.onLink(m);
  };
  const row = (iface: string) => sup.status().find((r) => r.interface === iface);
  const logged = (re: RegExp) => lines.filter((l) => re.test(l.msg));
  return { sup, gate, lines, clock, links, event, row, logged, overflow: () => handlers!.onOverflow() };
}

const eth = (index: number, name: string, kind?: string): Link => ({ index, name, type: 1, flags: 0x1003, ...(kind ? { kind } : {}) });
const E = (name: string, mode: 'auto' | 'native' | 'generic' = 'auto'): InterfaceConfig => (/[*?[]/.test(name) ? { name, mode, attach: 'link', priority: 10, pattern: true } : { name, mode, attach: 'link', priority: 10 });

test('start: present interfaces attached, missing ones and uncovered tunnels warned about, stray pins dropped', () => {
  const t = lab([E('eth0', 'native'), E('eth1'), E('vlan*'), E('br*')], [eth(1, 'lo'), eth(2, 'eth0'), eth(3, 'vlan10', 'vlan'), eth(4, 'wg0', 'wireguard'), eth(6, 'old0')]);
  t.gate.pins.set('old0', 6); // a link pinned by an earlier config: old0 is no longer covered
  t.gate.pins.set('eth1', 0); // eth1 was deleted while no daemon ran
  t.sup.start();
  assert.deepEqual(t.gate.pinnedLinkNames(), ['eth0', 'vlan10']);
  assert.deepEqual(
    t.sup.status().map((r) => [r.entry, r.interface, r.state, r.attached_mode ?? null]),
    [
      ['eth0', 'eth0', 'attached', 'native'],
      ['eth1', 'eth1', 'absent', null],
      ['vlan*', 'vlan10', 'attached', 'native'],
      ['br*', 'br*', 'absent', null],
    ],
  );
  assert.equal(t.logged(/interface eth1 does not exist \(yet\)/).length, 1);
  assert.equal(t.logged(/interface pattern br\* matches no interface/).length, 1);
  assert.equal(t.logged(/tunnel device wg0 \(wireguard\) is not covered/).length, 1);
  assert.equal(t.logged(/tunnel device/).length, 1, 'vlan10 is covered, lo is no tunnel');
});

test('a named interface fails the start when it cannot be attached; a pattern match is retried instead', () => {
  const t = lab([E('eth0')], [eth(2, 'eth0')]);
  t.gate.failing.add('eth0');
  assert.throws(() => t.sup.start(), /attach eth0 refused/);
  const p = lab([E('vlan*')], [eth(3, 'vlan10')]);
  p.gate.failing.add('vlan10');
  p.sup.start();
  assert.equal(p.row('vlan10')?.state, 'waiting');
  assert.match(p.row('vlan10')?.error ?? '', /refused/);
});

test('deleted and re-created: released, absent, attached again with the time it was unprotected', () => {
  const t = lab([E('eth0', 'generic')], [eth(2, 'eth0')]);
  t.sup.start();
  t.event({ event: 'del', ...eth(2, 'eth0') });
  assert.equal(t.gate.pins.has('eth0'), false, 'the dead link pin is dropped');
  assert.equal(t.row('eth0')?.state, 'absent');
  assert.equal(t.logged(/interface eth0 is gone: the gate attaches again when it comes back/).length, 1);
  t.clock.ms += 5_000; // gone for 5 s: not unprotected (it did not exist)
  t.event({ event: 'new', ...eth(9, 'eth0') });
  assert.equal(t.gate.pins.get('eth0'), 9, 'attached to the new ifindex');
  const r = t.row('eth0')!;
  assert.deepEqual([r.state, r.attached_mode, r.ifindex, r.unprotected_seconds], ['attached', 'generic', 9, 0]);
  const back = t.logged(/interface eth0 appeared: gate attached after 0 ms unprotected/);
  assert.equal(back.length, 1);
  assert.equal(back[0]!['xdp_mode'], 'generic');
  assert.equal(back[0]!.level, 40, 'a warning');
  // A flag change (RTM_NEWLINK, same index) attaches nothing again.
  const n = t.gate.attaches;
  t.event({ event: 'new', ...eth(9, 'eth0'), flags: 0 });
  assert.equal(t.gate.attaches, n);
});

test('an attach that fails leaves the interface waiting, counted as unprotected, retried by verify(), logged once', () => {
  const t = lab([E('vlan*')], []);
  t.sup.start();
  t.gate.failing.add('vlan20');
  t.event({ event: 'new', ...eth(20, 'vlan20', 'vlan') });
  assert.equal(t.row('vlan20')?.state, 'waiting');
  t.clock.ms += 3_000;
  t.sup.verify();
  t.sup.verify();
  assert.equal(t.logged(/cannot be attached to vlan20/).length, 1, 'the same error is logged once');
  assert.equal(t.row('vlan20')?.unprotected_seconds, 3);
  assert.equal(t.sup.unprotectedSeconds().get('vlan20'), 3);
  t.gate.failing.delete('vlan20');
  t.clock.ms += 1_000;
  t.sup.verify();
  assert.equal(t.row('vlan20')?.state, 'attached');
  assert.equal(t.logged(/interface vlan20 appeared: gate attached after 4000 ms unprotected/).length, 1);
  t.clock.ms += 10_000;
  assert.equal(t.sup.unprotectedSeconds().get('vlan20'), 4, 'attached time is not counted');
  // Released when it goes; the count stays for the metric.
  t.event({ event: 'del', ...eth(20, 'vlan20', 'vlan') });
  assert.equal(t.row('vlan20'), undefined);
  assert.equal(t.row('vlan*')?.state, 'absent');
  assert.equal(t.logged(/interface vlan20 is gone: released/).length, 1);
  assert.equal(t.sup.unprotectedSeconds().get('vlan20'), 4);
});

test('a link that vanished while the daemon runs (pins removed) is attached again by verify()', () => {
  const t = lab([E('eth0')], [eth(2, 'eth0')]);
  t.sup.start();
  t.gate.pins.delete('eth0');
  t.sup.verify();
  assert.equal(t.gate.pins.get('eth0'), 2);
  assert.equal(t.logged(/link on eth0 vanished while the daemon runs/).length, 1);
});

test('renames, uncovered newcomers, lost events and reloads', () => {
  const t = lab([E('vlan*'), E('eth0')], [eth(2, 'eth0'), eth(3, 'vlan10', 'vlan')]);
  t.sup.start();
  // vlan10 renamed to x10: no longer covered, released.
  t.event({ event: 'new', ...eth(3, 'x10', 'vlan') });
  assert.equal(t.gate.pins.has('vlan10'), false);
  assert.equal(t.gate.pins.has('x10'), false);
  // An uncovered tunnel appearing at run time is warned about.
  t.event({ event: 'new', ...eth(4, 'vx0', 'vxlan') });
  assert.equal(t.logged(/tunnel device vx0 \(vxlan\) is not covered/).length, 1);
  // Lost events: the list is read again and acted upon (vlan11 appeared, eth0 went).
  t.links.splice(0, t.links.length, eth(3, 'x10', 'vlan'), eth(5, 'vlan11', 'vlan'));
  t.overflow();
  assert.deepEqual(t.gate.pinnedLinkNames(), ['vlan11']);
  assert.equal(t.row('eth0')?.state, 'absent');
  // A reload that drops the pattern detaches its interfaces; one that adds x* attaches x10.
  t.sup.setEntries([E('eth0'), E('x*', 'generic')]);
  assert.deepEqual(t.gate.pinnedLinkNames(), ['x10']);
  assert.equal(t.row('x10')?.attached_mode, 'generic');
});

test('a waiting interface the reload no longer covers keeps its unprotected seconds (the metric is a counter)', () => {
  const t = lab([E('vlan*')], [eth(3, 'vlan10')]);
  t.gate.failing.add('vlan10');
  t.sup.start();
  t.clock.ms += 7_000;
  assert.equal(t.sup.unprotectedSeconds().get('vlan10'), 7);
  t.sup.setEntries([]);
  assert.equal(t.row('vlan10'), undefined);
  t.clock.ms += 3_000;
  assert.equal(t.sup.unprotectedSeconds().get('vlan10'), 7, 'counted up to the reload, and no further');
});

test('a reload that changes xdp_priority or attach puts the interface through attachOne again; an unchanged entry does not', () => {
  const t = lab([E('eth0')], [eth(2, 'eth0')]);
  const seen: { priority: number; attach: string }[] = [];
  const attachOne = t.gate.attachOne.bind(t.gate);
  t.gate.attachOne = (i: { name: string; mode: string; priority?: number; attach?: string }, ifindex = 0) => {
    seen.push({ priority: i.priority ?? -1, attach: i.attach ?? '' });
    return attachOne(i, ifindex);
  };
  t.sup.start();
  t.sup.setEntries([E('eth0')]);
  assert.deepEqual(seen, [{ priority: 10, attach: 'link' }], 'the same entry again: nothing to do');
  t.sup.setEntries([{ ...E('eth0'), priority: 20 }]);
  t.sup.setEntries([{ ...E('eth0'), priority: 20, attach: 'dispatcher' }]);
  assert.deepEqual(seen, [
    { priority: 10, attach: 'link' },
    { priority: 20, attach: 'link' },
    { priority: 20, attach: 'dispatcher' },
  ]);
  assert.equal(t.row('eth0')?.state, 'attached');
});
