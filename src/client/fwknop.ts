// The fwknop sender of `knockgate knock`: one fwknop SPA datagram (Rijndael + HMAC, as the
// fwknop client sends with KEY_BASE64 / HMAC_KEY_BASE64) over UDP to the door's port, IPv4 or
// IPv6. It knocks on a knockgate fwknop door and on a stock fwknopd alike. The keys never
// appear in a message.
import { createSocket } from 'node:dgram';
import { userInfo } from 'node:os';
import { encodeFwknop, FWKNOP_PORT, validUsername, type FwknopAccess, type FwknopKeys } from '../knock/fwknop.js';

export interface FwknopSendOptions {
  /** the gate's address (already resolved) and its family */
  address: string;
  family: 4 | 6;
  /** the door's port, default 62201 */
  port?: number;
  keys: FwknopKeys;
  /** what to open, e.g. [{proto: 'tcp', port: 22}] */
  access: readonly FwknopAccess[];
  /** the IPv4 address to ask access for (fwknop -a); default "0.0.0.0", the source the gate sees (fwknop -s) */
  allowIp?: string;
  /** the user name in the message (fwknop -U); default the login name, as the fwknop client */
  username?: string;
  /** seconds the port should stay open (fwknop -f) */
  clientTimeout?: number;
  /** the timestamp, UNIX seconds; default now */
  timestamp?: number;
  /** the local address to send from */
  from?: string;
}

/** The login name when fwknop would take it, else "knockgate". */
function defaultUsername(): string {
  try {
    const name = userInfo().username;
    return validUsername(name) ? name : 'knockgate';
  } catch {
    return 'knockgate';
  }
}

/** Builds one datagram and sends it; resolves with the datagram sent (for -v output and tests). */
export async function sendFwknop(o: FwknopSendOptions): Promise<Buffer> {
  const datagram = encodeFwknop(
    {
      username: o.username ?? defaultUsername(),
      timestamp: o.timestamp ?? Math.floor(Date.now() / 1000),
      access: o.access,
      ...(o.allowIp !== undefined ? { allowIp: o.allowIp } : {}),
      ...(o.clientTimeout !== undefined ? { clientTimeout: o.clientTimeout } : {}),
    },
    o.keys,
  );
  const sock = createSocket(o.family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      if (o.from !== undefined) sock.bind({ address: o.from, port: 0 }, () => resolve());
      else resolve();
    });
    await new Promise<void>((resolve, reject) => {
      sock.send(datagram, o.port ?? FWKNOP_PORT, o.address, (err) => (err ? reject(err) : resolve()));
    });
  } finally {
    sock.close();
  }
  return datagram;
}
