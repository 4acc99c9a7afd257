// A second process for test/kernel/xdp-gfilter.test.ts: rebuilds a pinned gate's grant filter
// in a loop for MS milliseconds (as the daemon's sweep does), then prints how many rebuilds it
// made. Usage: node dist/test/helpers/gfilter-rebuilder.js PIN_PATH MS
import { pino } from 'pino';
import { Gate } from '../../src/kernel/gate.js';

const [pinPath, ms] = process.argv.slice(2);
if (!pinPath || !ms) throw new Error('usage: gfilter-rebuilder PIN_PATH MS');
const gate = Gate.openPinned(pinPath, pino({ level: 'silent' }));
const end = Date.now() + Number(ms);
let n = 0;
try {
  while (Date.now() < end) {
    gate.rebuildGrantFilter();
    n++;
  }
} finally {
  gate.close();
}
console.log(String(n));
