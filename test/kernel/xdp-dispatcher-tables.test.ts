/**
 * The XDP tables on the program as it runs in libxdp's dispatcher: the gate joins a dispatcher on a
 * veth of a throwaway namespace and every row runs (BPF_PROG_TEST_RUN) on the dispatcher, which
 * calls the gate's extension in its slot; then the daemon's restart is replayed (adoption: the slot
 * moves to the newly loaded program, two atomic swaps) and the same source's state carries on.
 * Any table runs this way with KG_XDP_VIA=dispatcher (test/helpers/gate.ts).
 *
 * On a kernel that cannot run the dispatcher the gate falls back to a direct link (said in its
 * log) and the rows run on that program; KG_EXPECT_DISPATCHER=1 (the kernel matrix) makes that a
 * failure.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { kernelSuite } from '../helpers/kernel.js';
import { FlowBook, GateHarness, NO_EVENT, NO_MAP_UPDATE, XDP_DROP, XDP_PASS, config, ev, to, type Entry, type Row } from '../helpers/gate.js';
import { TCP_FLAGS, tcpFrom, tcpSyn } from '../helpers/packets.js';

const syn = (src: string, port: number): Buffer => tcpSyn(to(src), port);
const BASE = config(`
  ssh:
    sequence: [7000/tcp, 8000/tcp, 9000/tcp]
    protects: [22/tcp]
`);
const SRC = '198.18.1.10';
const OTHER = '198.18.1.11';

const denied = (description: string, frame: Buffer): Row => ({
  description,
  frame,
  verdict: XDP_DROP,
  counter: 'drop_no_grant',
  map: NO_MAP_UPDATE,
  events: NO_EVENT,
  counters: { deny_suppressed: 1 },
});

const step = (n: number, port: number): Row => ({
  description: `${port}/tcp, step ${n} of ssh, dropped`,
  frame: syn(SRC, port),
  verdict: XDP_DROP,
  counter: 'drop_knock',
  map: n < 3 ? { progress: { [SRC]: { ssh: n } } } : { progress: { [SRC]: {} }, grants: { [SRC]: ['ssh'] } },
  events: n < 3 ? [ev.knock('ssh', n, 3, port)] : [ev.grant('ssh', port)],
  counters: n < 3 ? { knock_step: 1 } : { grant: 1 },
});

kernelSuite('XDP tables through libxdp’s dispatcher', () => {
  it('unrelated traffic, a protected port, the full knock, then adoption moves the slot and the flow lives on', async (t) => {
    const b = new FlowBook();
    await GateHarness.with({ yaml: BASE, via: 'dispatcher' }, async (h) => {
      t.diagnostic(h.fellBack ? 'this kernel cannot run the dispatcher: rows ran on the direct link' : `rows run on dispatcher fd ${h.dispatcherFd}`);
      const before: Entry[] = [
        { description: 'unrelated SYN passes', frame: syn(SRC, 80), verdict: XDP_PASS, counter: 'pass_unrelated', map: NO_MAP_UPDATE, events: NO_EVENT },
        denied('SYN to 22/tcp without a grant: dropped', syn(SRC, 22)),
        step(1, 7000),
        step(2, 8000),
        step(3, 9000),
        b.opens('SYN to 22/tcp after the knock passes and opens a flow', SRC, 22, (sport) => tcpFrom(to(SRC), sport, 22), 'tcp'),
        denied('another source is still dropped', syn(OTHER, 22)),
      ];
      await h.table(before);
      // attachments() names interfaces by ifindex: read it in the namespace that holds the veth
      const attached = () => h.via!.enter(h.via!.nsA, () => h.gate.attachments()[0]);
      const first = h.fellBack ? 0 : attached()?.progId;
      if (!h.fellBack) assert.ok(first, 'the gate is in the dispatcher before the adoption');
      h.reopen();
      if (!h.fellBack) {
        const a = attached();
        assert.notEqual(a?.progId, first, 'the slot moved to the new program');
        assert.equal(a?.dispatcher?.chain.filter((p) => p.knockgate).length, 1, 'one program of the gate in the chain');
      }
      await h.table([
        b.on('after adoption: the ACK of that connection passes (its flow)', SRC, 22, (sport) => tcpFrom(to(SRC), sport, 22, TCP_FLAGS.ACK)),
        denied('after adoption: another source is still dropped', syn(OTHER, 22)),
      ]);
    });
  });
});
