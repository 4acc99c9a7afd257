// type signed: one UDP datagram signed with a client's Ed25519 key. The XDP program only checks
// its shape and hands it up (EVENT.SIGNED); the daemon verifies the signature against the
// door's clients' public keys (src/knock/verify.ts), the clock and its nonce cache, claims the
// nonce fleet-wide in fleet mode, and grants (src/daemon.ts onSigned).
import { DOOR_NAME } from '../config/model.js';
import { filePath, maxSkew, required, udpPort } from '../config/checker.js';
import { formatDuration } from '../config/duration.js';
import { LIMITS } from '../config/model.js';
import type { KeyObject } from 'node:crypto';
import { readKey, sendSignedDatagram } from '../client/transport.js';
import { KnockError } from '../client/transport.js';
import { encodeSigned, keyIdOf, readPrivateKey } from '../knock/index.js';
import { doorId } from '../knock/wire.js';
import { DOOR_TYPE, PROTO } from '../kernel/layout.js';
import { LIVE_KEY, NS_PER_MS, msOf, type DoorKind, type KnockDoorBase } from './kind.js';

/** One 112-byte UDP datagram to port, signed with the client's Ed25519 private key. */
export interface SignedDoor extends KnockDoorBase<'signed'> {
  name: string;
  port: number;
  privateKey: KeyObject;
}

/** The client's Ed25519 private key for signed doors (PKCS#8 PEM, private to its owner). Throws KnockError. */
export function loadPrivateKey(path: string): Promise<KeyObject> {
  return readKey(() => readPrivateKey(path));
}

export const signed: DoorKind<'signed', SignedDoor> = {
  type: 'signed',
  config: {
    keys: ['port', 'clients', 'max_skew'],
    check(c, entry, e) {
      const before = c.errors.length;
      const p = udpPort(c, entry, e);
      const maxSkewMs = maxSkew(c, e);
      const ce = required(c, entry, e, 'clients', 'the clients\' public keys by name, e.g. clients: { alice: /etc/knockgate/clients/alice.pub }; make a pair with `knockgate keygen FILE`');
      const clients: { name: string; publicKeyFile: string }[] = [];
      if (ce !== undefined) {
        const m = c.entries(ce.value, ce.path, null, 'a mapping of client names to public key files');
        if (m !== null && m.size === 0) c.error(c.valueNode(ce), ce.path, '{} lists no client: add one, e.g. alice: /etc/knockgate/clients/alice.pub');
        if (m !== null && m.size > LIMITS.maxClientsPerDoor) c.error(c.valueNode(ce), ce.path, `${m.size} clients: at most ${LIMITS.maxClientsPerDoor} per door`);
        for (const [name, cl] of m ?? []) {
          if (!DOOR_NAME.test(name)) c.error(cl.keyNode, cl.path, `${JSON.stringify(name)} is not a client name: 1..31 characters of A-Z a-z 0-9 _ -, starting with a letter or digit`);
          const f = c.present(cl, 'give the path of the client\'s public key') ? filePath(c, cl, '/etc/knockgate/clients/alice.pub') : undefined;
          if (f !== undefined) clients.push({ name, publicKeyFile: f });
        }
      }
      if (c.errors.length > before || p === undefined || maxSkewMs === undefined) return null;
      return { signed: { port: p, clients, maxSkewMs } };
    },
    render: ({ signed: s }) => ({ port: `${s.port}/udp`, clients: Object.fromEntries(s.clients.map((c) => [c.name, c.publicKeyFile])), max_skew: formatDuration(s.maxSkewMs) }),
    describe: (d) => `signed datagram to ${d.signed.port}/udp`,
    knockRanges: (d) => [{ first: d.signed.port, last: d.signed.port, proto: 'udp' }],
    sequenced: false,
    onPartition: true,
  },
  kernel: {
    number: DOOR_TYPE.SIGNED,
    encode: (d) => ({ doorId: doorId(d.name), port: d.signed.port, proto: PROTO.UDP, maxSkewNs: BigInt(d.signed.maxSkewMs) * NS_PER_MS }),
    decode: (k) => ({ signed: { port: k.port, clients: [{ name: 'live', publicKeyFile: LIVE_KEY }], maxSkewMs: msOf(k.maxSkewNs) } }),
    ports: (d) => ({ steps: [], single: d.signed.port, icmp: false }),
    claims: false,
  },
  client: {
    async fromConfig(d, opts) {
      const keyFile = opts.keyFile;
      if (keyFile === undefined) {
        throw new KnockError(
          `door ${d.name} is a signed door and the config holds only the public keys of its clients: pass your private key with --key-file FILE (made by \`knockgate keygen FILE\`)`,
        );
      }
      const privateKey = await loadPrivateKey(keyFile);
      return { type: 'signed', name: d.name, port: d.signed.port, privateKey };
    },
    async fromCommandLine(opts, ctx) {
      const name = ctx.named('sig');
      if (opts.port === undefined) return ctx.need("the door's UDP port", '--port 62202');
      if (opts.keyFile === undefined) return ctx.need('your private key', '--key-file FILE (made by `knockgate keygen FILE`)');
      const privateKey = await loadPrivateKey(opts.keyFile);
      return { type: 'signed', name, port: opts.port, privateKey };
    },
    options: ['keyFile', 'source', 'port'],
    send: (target, door, opts) => sendSignedDatagram(target, door.port, 'the signed datagram', opts, (source, time) => encodeSigned({ privateKey: door.privateKey, door: door.name, source, time })),
    describe: (door) => `signed datagram to ${door.port}/udp (key id ${keyIdOf(door.privateKey).toString('hex')})`,
    hint: 'that your public key is among the door\'s clients, the clocks of both hosts (max_skew), --source behind a NAT',
  },
};
