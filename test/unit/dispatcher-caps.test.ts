// Without CAP_SYS_ADMIN libxdp's dispatcher cannot be read (BPF_PROG_GET_FD_BY_ID): the gate
// checks its effective set first (src/kernel/dispatcher.ts). The lab that runs a daemon without it
// is test/kernel/share-xdp-filter.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { capEffHas, NO_SYS_ADMIN } from '../../src/kernel/dispatcher.js';

const status = (capEff: string): string => `Name:\tnode\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t${capEff}\nCapBnd:\t000001ffffffffff\n`;

test("CapEff is read bit by bit: root's full set, the packaged unit's three, none", () => {
  assert.equal(capEffHas(status('000001ffffffffff'), 21), true);
  // CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39): the systemd unit's set
  const unit = ((1n << 12n) | (1n << 38n) | (1n << 39n)).toString(16).padStart(16, '0');
  assert.equal(capEffHas(status(unit), 21), false);
  assert.equal(capEffHas(status(unit), 39), true);
  assert.equal(capEffHas(status('0000000000200000'), 21), true);
  assert.equal(capEffHas(status('0000000000000000'), 21), false);
});

test('an unreadable status leaves the decision to the kernel', () => {
  assert.equal(capEffHas('Name:\tnode\n', 21), true);
});

test('the reason says what to add, and where', () => {
  assert.match(NO_SYS_ADMIN, /CAP_SYS_ADMIN/);
  assert.match(NO_SYS_ADMIN, /systemctl edit knockgate/);
  assert.match(NO_SYS_ADMIN, /CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_ADMIN/);
});
