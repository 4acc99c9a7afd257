// knockgate's fwknop sender for tests, run inside a test namespace with
// `ip netns exec kg-... node dist/test/helpers/fwknop-send.js JSON` where JSON is
// {"address","family","port","keyBase64","hmacKeyBase64","access":[{"proto","port"}],"allowIp"?,"username"?}.
// Prints {"sent":BASE64} (the datagram) or {"error":MESSAGE}.
import { sendFwknop } from '../../src/client/fwknop.js';
import type { FwknopAccess } from '../../src/knock/fwknop.js';

interface Args {
  address: string;
  family: 4 | 6;
  port: number;
  keyBase64: string;
  hmacKeyBase64: string;
  access: FwknopAccess[];
  allowIp?: string;
  username?: string;
}

const a = JSON.parse(process.argv[2] ?? '{}') as Args;
try {
  const sent = await sendFwknop({
    address: a.address,
    family: a.family,
    port: a.port,
    keys: { encryptionKey: Buffer.from(a.keyBase64, 'base64'), hmacKey: Buffer.from(a.hmacKeyBase64, 'base64') },
    access: a.access,
    ...(a.allowIp !== undefined ? { allowIp: a.allowIp } : {}),
    ...(a.username !== undefined ? { username: a.username } : {}),
  });
  process.stdout.write(`${JSON.stringify({ sent: sent.toString('base64') })}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: (err as Error).message })}\n`);
  process.exitCode = 1;
}
