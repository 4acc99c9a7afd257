/**
 * The ascending (and descending) port scan (docs/DESIGN.md, "unrelated port"): one source
 * sends a SYN (or a UDP datagram) to every port 1..65535 in order. The sequence's ports come
 * up in the order of the sequence, but every unrelated port in between is a wrong knock that
 * resets the source's progress (through the hint slot), so the door never opens.
 *
 * Every one of the 65535 packets is its own BPF_PROG_TEST_RUN (repeat 1): a run costs a few
 * microseconds, a whole scan well under a second. The frame is built once and only its
 * destination port is rewritten (the L4 checksum goes stale; the program never reads it).
 * Per packet only the verdict is checked; counters, events and maps are checked for the
 * whole scan, and the protected port is then tried through a full table row.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { kernelSuite } from '../helpers/kernel.js';
import { GateHarness, NO_EVENT, NO_MAP_UPDATE, XDP_DROP, XDP_PASS, config, to } from '../helpers/gate.js';
import { l4OfFrame, tcpSyn, udpDatagram } from '../helpers/packets.js';
import type { StatName } from '../../src/kernel/layout.js';
import { ConfigError, checkConfigText, formatIssue, parseConfigText } from '../../src/config/index.js';

interface ScanCase {
  name: string;
  proto: 'tcp' | 'udp';
  src: string;
  /** knock ports of this protocol (any door) */
  knockPorts: number[];
  /** the port(s) that start a door (their first step) */
  firstSteps: number[];
  protectedPorts: number[];
  order: 'ascending' | 'descending';
}

/** Sends one packet to every port in order; returns the ports whose verdict was not the expected one. */
function scan(h: GateHarness, c: ScanCase): string[] {
  const frame = c.proto === 'tcp' ? tcpSyn(to(c.src), 1) : udpDatagram(to(c.src), 1, Buffer.from('scan'));
  const dportAt = l4OfFrame(frame)!.l4 + 2;
  const drop = new Set([...c.knockPorts, ...c.protectedPorts]);
  const bad: string[] = [];
  for (let i = 1; i <= 65535; i++) {
    const port = c.order === 'ascending' ? i : 65536 - i;
    frame.writeUInt16BE(port, dportAt);
    const v = h.runFast(frame);
    const want = drop.has(port) ? XDP_DROP : XDP_PASS;
    if (v !== want) bad.push(`${port}/${c.proto}: ${v}, expected ${want}`);
  }
  return bad;
}

async function scanNeverOpens(yaml: string, c: ScanCase, door: string): Promise<void> {
  await GateHarness.with({ yaml }, async (h) => {
    const before = h.stats();
    const bad = scan(h, c);
    assert.deepEqual(bad.slice(0, 10), [], `${c.name}: verdicts`);
    const after = h.stats();
    const delta = (n: StatName): number => Number(after[n] - before[n]);
    const nKnock = c.knockPorts.length;
    const nProt = c.protectedPorts.length;
    // Every packet counted once: 65535 verdicts.
    assert.deepEqual(
      {
        pass_unrelated: delta('pass_unrelated'),
        drop_knock: delta('drop_knock'),
        drop_no_grant: delta('drop_no_grant'),
        deny_suppressed: delta('deny_suppressed'),
        pass_granted: delta('pass_granted'),
        drop_expired: delta('drop_expired'),
        grant: delta('grant'),
        // each first step starts the door, and the unrelated port right after it resets it
        knock_step: delta('knock_step'),
        reset_wrong_port: delta('reset_wrong_port'),
      },
      {
        pass_unrelated: 65535 - nKnock - nProt,
        drop_knock: nKnock,
        drop_no_grant: nProt,
        deny_suppressed: nProt,
        pass_granted: 0,
        drop_expired: 0,
        grant: 0,
        knock_step: c.firstSteps.length,
        reset_wrong_port: c.firstSteps.length,
      },
      `${c.name}: counters over the scan`,
    );
    const events = (await h.takeEvents(2 * c.firstSteps.length)).map((e) => h.describe(e));
    assert.deepEqual(
      events.map((e) => `${e.event} ${e.door} ${e.port}/${e.protocol} ${e.reason ?? ''}`.trim()),
      c.firstSteps.flatMap((p) => {
        // the first port after p in scan order that is not protected (protected ports are
        // judged before knocks and never touch progress)
        let next = p;
        do next = c.order === 'ascending' ? next + 1 : next - 1;
        while (c.protectedPorts.includes(next));
        return [`knock ${door} ${p}/${c.proto}`, `reset ${door} ${next}/${c.proto} wrong_port`];
      }),
      `${c.name}: events`,
    );
    assert.deepEqual(h.grantsOf(c.src), [], `${c.name}: no grant`);
    assert.deepEqual(h.progressOf(c.src), {}, `${c.name}: no progress left`);
    assert.deepEqual(h.gate.grants(), []);
    for (const p of c.protectedPorts) {
      await h.check({
        description: `${c.name}: after the scan ${p}/${c.proto} still drops for the scanner`,
        frame: c.proto === 'tcp' ? tcpSyn(to(c.src), p) : udpDatagram(to(c.src), p),
        verdict: XDP_DROP,
        counter: 'drop_no_grant',
        map: NO_MAP_UPDATE,
        events: NO_EVENT,
        counters: { deny_suppressed: 1 },
      });
    }
  });
}

// Long timeouts: nothing in the scan can be saved by a timeout, only by the wrong-port resets.
const ASC = config(`
  up:
    sequence: [7000/tcp, 8000/tcp, 9000/tcp]
    protects: [22/tcp]
    step_timeout: 1h
    sequence_timeout: 2h
  upudp:
    sequence: [7000/udp, 8000/udp, 9000/udp]
    protects: [5353/udp]
    step_timeout: 1h
    sequence_timeout: 2h
`);

kernelSuite('XDP: an ascending scan never opens an ascending sequence', () => {
  it('TCP SYN to every port 1..65535 in order from one IPv4 source', async () => {
    await scanNeverOpens(
      ASC,
      { name: 'IPv4 TCP scan', proto: 'tcp', src: '198.18.5.1', knockPorts: [7000, 8000, 9000], firstSteps: [7000], protectedPorts: [22], order: 'ascending' },
      'up',
    );
  });

  it('TCP SYN to every port 1..65535 in order from one IPv6 source', async () => {
    await scanNeverOpens(
      ASC,
      { name: 'IPv6 TCP scan', proto: 'tcp', src: '2001:db8:5::1', knockPorts: [7000, 8000, 9000], firstSteps: [7000], protectedPorts: [22], order: 'ascending' },
      'up',
    );
  });

  it('UDP to every port 1..65535 in order (a UDP sequence), IPv4 and IPv6', async () => {
    for (const src of ['198.18.5.2', '2001:db8:5::2']) {
      await scanNeverOpens(
        ASC,
        { name: `${src} UDP scan`, proto: 'udp', src, knockPorts: [7000, 8000, 9000], firstSteps: [7000], protectedPorts: [5353], order: 'ascending' },
        'upudp',
      );
    }
  });

  it('a descending TCP scan 65535..1 never opens a descending sequence', async () => {
    const yaml = config(`
  down:
    sequence: [9100/tcp, 8100/tcp, 7100/tcp]
    protects: [22/tcp]
    step_timeout: 1h
    sequence_timeout: 2h
`);
    await scanNeverOpens(
      yaml,
      { name: 'descending TCP scan', proto: 'tcp', src: '198.18.5.3', knockPorts: [7100, 8100, 9100], firstSteps: [9100], protectedPorts: [22], order: 'descending' },
      'down',
    );
  });

  it('control: the same ports knocked in order without the ports between them do open the door', async () => {
    await GateHarness.with({ yaml: ASC }, async (h) => {
      const S = '198.18.5.4';
      for (const p of [7000, 8000, 9000]) assert.equal(h.runFast(tcpSyn(to(S), p)), XDP_DROP);
      assert.equal(h.runFast(tcpSyn(to(S), 22)), XDP_PASS);
      assert.deepEqual(h.grantsOf(S), ['up']);
      h.drainEvents();
    });
  });
});

kernelSuite('XDP: the ascending scan and sequences with no unrelated port between steps', () => {
  // DESIGN.md: "an ascending scan of every port resets progress and never opens an ascending
  // sequence". That rests on an unrelated port (a knock candidate that resets) lying between
  // two consecutive steps of the same protocol. Adjacent ports (7000, 7001, 7002) have none,
  // and neither do steps separated only by ports the gate protects (protected ports are judged
  // first and never touch progress): a scan would open such a door, so the config refuses it
  // (src/config/schema.ts). One unprotected port between the steps is enough, and then the scan
  // never opens the door.
  const refused = (yaml: string, messages: string[]): void => {
    assert.throws(
      () => parseConfigText(yaml),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
        assert.equal(err.message, messages.join('\n'));
        assert.deepEqual(err.issues.map(formatIssue), messages);
        return true;
      },
    );
  };

  it('adjacent steps [7000/tcp, 7001/tcp, 7002/tcp]: the config is refused', () => {
    refused(
      config(`
  adjacent:
    sequence: [7000/tcp, 7001/tcp, 7002/tcp]
    protects: [22/tcp]
`),
      [
        '<config>:5:26: doors.adjacent.sequence[1]: 7001/tcp follows 7000/tcp right next to it: a port scan in ascending order would knock both in turn and open door adjacent; leave an unprotected port between consecutive steps',
        '<config>:5:36: doors.adjacent.sequence[2]: 7002/tcp follows 7001/tcp right next to it: a port scan in ascending order would knock both in turn and open door adjacent; leave an unprotected port between consecutive steps',
      ],
    );
  });

  it('steps with only a protected port between them [7100/tcp, 7102/tcp], protects 7101/tcp: the config is refused', () => {
    refused(
      config(`
  protected-gap:
    sequence: [7100/tcp, 7102/tcp]
    protects: [7101/tcp]
`),
      [
        '<config>:5:26: doors.protected-gap.sequence[1]: 7102/tcp follows 7100/tcp with only protected ports (7101/tcp) between them: a port scan in ascending order would knock both in turn and open door protected-gap; leave an unprotected port between consecutive steps',
      ],
    );
  });

  it('one unrelated port between the steps [7000/tcp, 7002/tcp, 7004/tcp]: accepted, and an ascending TCP scan never opens it', async () => {
    const yaml = config(`
  gap:
    sequence: [7000/tcp, 7002/tcp, 7004/tcp]
    protects: [22/tcp]
    step_timeout: 1h
    sequence_timeout: 2h
`);
    assert.deepEqual(checkConfigText(yaml).errors, []);
    await scanNeverOpens(
      yaml,
      { name: 'one-port gaps', proto: 'tcp', src: '198.18.5.9', knockPorts: [7000, 7002, 7004], firstSteps: [7000], protectedPorts: [22], order: 'ascending' },
      'gap',
    );
  });

  it('a protected port and one unrelated port between the steps [7100/tcp, 7103/tcp], protects 7101/tcp: accepted, and an ascending TCP scan never opens it', async () => {
    const yaml = config(`
  protected-gap:
    sequence: [7100/tcp, 7103/tcp]
    protects: [7101/tcp]
    step_timeout: 1h
    sequence_timeout: 2h
`);
    assert.deepEqual(checkConfigText(yaml).errors, []);
    await scanNeverOpens(
      yaml,
      { name: 'protected and unrelated gap', proto: 'tcp', src: '198.18.5.10', knockPorts: [7100, 7103], firstSteps: [7100], protectedPorts: [7101], order: 'ascending' },
      'protected-gap',
    );
  });
});
