// A UDP sink for tests, run inside a test namespace with
// `ip netns exec kg-... node dist/test/helpers/udp-capture.js ADDR PORT COUNT TIMEOUT_MS`.
// Prints {"listening":PORT} once bound, then one JSON line per datagram
// {"from":ADDR,"fromPort":N,"data":BASE64}, and exits after COUNT datagrams or TIMEOUT_MS.
import { createSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';

const [addr = '', portText = '', countText = '1', timeoutText = '10000'] = process.argv.slice(2);
const port = Number(portText);
let left = Number(countText);
const sock = createSocket({ type: isIPv6(addr) ? 'udp6' : 'udp4', ipv6Only: isIPv6(addr) });
const out = (v: unknown): void => {
  process.stdout.write(`${JSON.stringify(v)}\n`);
};
const timer = setTimeout(() => {
  out({ timeout: true });
  sock.close();
}, Number(timeoutText));
sock.on('message', (msg, rinfo) => {
  out({ from: rinfo.address, fromPort: rinfo.port, data: msg.toString('base64') });
  if (--left <= 0) {
    clearTimeout(timer);
    sock.close();
  }
});
sock.on('error', (err) => {
  out({ error: err.message });
  process.exit(1);
});
sock.bind(port, addr, () => out({ listening: port }));
