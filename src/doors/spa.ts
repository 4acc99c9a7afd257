// type spa: single-packet authorization verified in the kernel. One 40-byte UDP datagram to the
// door's port carries a SipHash-2-4 MAC over the door id, the source address the gate sees, a
// timestamp and a nonce (src/knock/wire.ts, docs/KNOCKS.md); the XDP program checks the MAC
// with the door's 128-bit key (held in the kernel slot), the clock and its replay table, and
// grants. In fleet mode its grant events carry the nonce, published fleet-wide.
import { filePath, maxSkew, required, udpPort } from '../config/checker.js';
import { formatDuration } from '../config/duration.js';
import { readKey, sendSignedDatagram } from '../client/transport.js';
import { encodeSpa, readSecretFile } from '../knock/index.js';
import { doorId } from '../knock/wire.js';
import { DOOR_TYPE, PROTO } from '../kernel/layout.js';
import { LIVE_KEY, NS_PER_MS, msOf, type DoorKind, type KnockDoorBase } from './kind.js';

/** Single-packet authorization: one 40-byte UDP datagram to port with a SipHash-2-4 MAC. */
export interface SpaDoor extends KnockDoorBase<'spa'> {
  name: string;
  port: number;
  /** the door's 16-byte SipHash key */
  key: Buffer;
}

/** An spa door's 16-byte SipHash key (hex in a file private to its owner). Throws KnockError. */
export function loadSpaKey(path: string): Promise<Buffer> {
  return readKey(() => readSecretFile(path, { bytes: 16 }));
}

export const spa: DoorKind<'spa', SpaDoor> = {
  type: 'spa',
  config: {
    keys: ['port', 'key_file', 'max_skew'],
    check(c, entry, e) {
      const before = c.errors.length;
      const p = udpPort(c, entry, e);
      const keyFile = filePath(c, required(c, entry, e, 'key_file', 'the file holding the door\'s 128-bit key (hex), e.g. key_file: /etc/knockgate/ssh.key; make one with `knockgate keygen --type spa FILE`'), '/etc/knockgate/ssh.key');
      const maxSkewMs = maxSkew(c, e);
      if (c.errors.length > before || p === undefined || keyFile === undefined || maxSkewMs === undefined) return null;
      return { spa: { port: p, keyFile, maxSkewMs } };
    },
    render: ({ spa: s }) => ({ port: `${s.port}/udp`, key_file: s.keyFile, max_skew: formatDuration(s.maxSkewMs) }),
    describe: (d) => `SPA datagram to ${d.spa.port}/udp`,
    knockRanges: (d) => [{ first: d.spa.port, last: d.spa.port, proto: 'udp' }],
    sequenced: false,
    onPartition: 'is verified in the kernel, which never waits for the network',
  },
  kernel: {
    number: DOOR_TYPE.SPA,
    encode(d, _k, prev, ctx) {
      const same = prev !== null && prev.name === d.name && prev.type === DOOR_TYPE.SPA;
      // The CLI edits doors without the key files: the slot keeps the key it holds.
      const key = ctx.secrets?.get(d.name) ?? (same ? prev.key : null);
      if (key === null || key.length !== 16) throw new Error(`door ${d.name}: no 16-byte key loaded for this spa door`);
      return { doorId: doorId(d.name), port: d.spa.port, proto: PROTO.UDP, key: Buffer.from(key), maxSkewNs: BigInt(d.spa.maxSkewMs) * NS_PER_MS };
    },
    decode: (k) => ({ spa: { port: k.port, keyFile: LIVE_KEY, maxSkewMs: msOf(k.maxSkewNs) } }),
    ports: (d) => ({ steps: [], single: d.spa.port, icmp: false }),
    claims: true,
  },
  client: {
    async fromConfig(d, opts) {
      const key = await loadSpaKey(opts.keyFile ?? d.spa.keyFile);
      return { type: 'spa', name: d.name, port: d.spa.port, key };
    },
    async fromCommandLine(opts, ctx) {
      const name = ctx.named('spa');
      if (opts.port === undefined) return ctx.need("the door's UDP port", '--port 62201');
      if (opts.keyFile === undefined) return ctx.need("the door's key", '--key-file FILE (made by `knockgate keygen --type spa FILE`)');
      const key = await loadSpaKey(opts.keyFile);
      return { type: 'spa', name, port: opts.port, key };
    },
    options: ['keyFile', 'source', 'port'],
    send: (target, door, opts) => sendSignedDatagram(target, door.port, 'the SPA datagram', opts, (source, time) => encodeSpa({ key: door.key, door: door.name, source, time })),
    describe: (door) => `SPA datagram to ${door.port}/udp`,
    hint: 'the key (the gate\'s key_file), the clocks of both hosts (max_skew), --source behind a NAT',
    resolveFiles: (d, resolve) => ({ ...d, spa: { ...d.spa, keyFile: resolve(d.spa.keyFile) } }),
  },
};

