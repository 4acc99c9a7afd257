// type payload: one UDP datagram to the door's port, or one ICMP/ICMPv6 echo request, whose
// payload starts with a byte string. The XDP program compares the prefix (held in the kernel
// slot, at most KG_PAYLOAD_LEN bytes) and grants; no key, no clock: a shared password on the wire.
import { isScalar } from 'yaml';
import { parseUdpPort, required, scalarItem } from '../config/checker.js';
import { LIMITS } from '../config/model.js';
import { ICMP_PERMISSION_HINT, IcmpError, sendEchoRequest } from '../client/icmp.js';
import { KnockError, endpoint, errnoCode, sendUdp } from '../client/transport.js';
import { DOOR_TYPE, PROTO } from '../kernel/layout.js';
import type { DoorKind, KnockDoorBase } from './kind.js';

/** One UDP datagram to port (proto udp) or ICMP/ICMPv6 echo request (proto icmp, port 0) carrying payload. */
export interface PayloadDoor extends KnockDoorBase<'payload'> {
  /** null for a door given on the command line without a name */
  name: string | null;
  proto: 'udp' | 'icmp';
  port: number;
  payload: Buffer;
}

/** A payload door's bytes: "hex:6b6e6f636b" or text (UTF-8), 1..32 bytes. */
export function parsePayload(text: string): Buffer {
  let bytes: Buffer;
  if (text.startsWith('hex:')) {
    const hex = text.slice(4).replace(/\s+/g, '');
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new Error(`${JSON.stringify(text)} is not hex: write hex: and an even number of hex digits, e.g. hex:6b6e6f636b`);
    bytes = Buffer.from(hex, 'hex');
  } else {
    bytes = Buffer.from(text, 'utf8');
  }
  if (bytes.length === 0) throw new Error('an empty payload matches every packet: give 1..32 bytes');
  if (bytes.length > LIMITS.payloadMaxBytes) throw new Error(`${bytes.length} bytes: a payload prefix has at most ${LIMITS.payloadMaxBytes}`);
  return bytes;
}

export const payload: DoorKind<'payload', PayloadDoor> = {
  type: 'payload',
  config: {
    keys: ['knock', 'payload'],
    check(c, entry, e) {
      const before = c.errors.length;
      const ke = required(c, entry, e, 'knock', 'what carries the payload: knock: icmp (an echo request) or knock: 62203/udp');
      let knock: { proto: 'udp' | 'icmp'; port: number } | undefined;
      if (ke !== undefined) {
        const v = isScalar(ke.value) ? ke.value.value : undefined;
        if (typeof v === 'string' && v.trim().toLowerCase() === 'icmp') knock = { proto: 'icmp', port: 0 };
        else {
          const p = scalarItem(c, c.valueNode(ke), ke.path, ke, 'icmp or a UDP port, e.g. 62203/udp', parseUdpPort);
          if (p !== undefined) knock = { proto: 'udp', port: p };
        }
      }
      const pe = required(c, entry, e, 'payload', 'the bytes the knock\'s payload starts with, e.g. payload: "hex:6b6e6f636b" or payload: open-sesame');
      const bytes = pe === undefined ? undefined : scalarItem(c, c.valueNode(pe), pe.path, pe, 'text or hex:..., 1..32 bytes', (t) => parsePayload(String(t)));
      if (c.errors.length > before || knock === undefined || bytes === undefined) return null;
      return { payload: { ...knock, payload: bytes } };
    },
    render: ({ payload: p }) => ({ knock: p.proto === 'icmp' ? 'icmp' : `${p.port}/udp`, payload: `hex:${p.payload.toString('hex')}` }),
    describe: ({ payload: p }) => `${p.proto === 'icmp' ? 'ICMP echo request' : `datagram to ${p.port}/udp`} starting with ${p.payload.length} bytes`,
    knockRanges: ({ payload: p }) => (p.proto === 'icmp' ? [] : [{ first: p.port, last: p.port, proto: 'udp' }]),
    sequenced: false,
    onPartition: 'has nothing to claim',
  },
  kernel: {
    number: DOOR_TYPE.PAYLOAD,
    encode: ({ payload: p }) => ({ port: p.port, proto: p.proto === 'icmp' ? PROTO.ICMP : PROTO.UDP, payload: Buffer.from(p.payload) }),
    decode: (k) => ({ payload: { proto: k.proto === PROTO.ICMP ? 'icmp' : 'udp', port: k.port, payload: Buffer.from(k.payload) } }),
    ports: ({ payload: p }) => ({ steps: [], single: p.proto === 'icmp' ? null : p.port, icmp: p.proto === 'icmp' }),
    claims: false,
  },
  client: {
    fromConfig: async (d) => ({ type: 'payload', name: d.name, proto: d.payload.proto, port: d.payload.port, payload: d.payload.payload }),
    async fromCommandLine(opts, ctx) {
      if (opts.payload === undefined) return ctx.need('the payload', '--payload TEXT or --payload hex:6b6e6f636b');
      if (opts.icmp === true && opts.port !== undefined) {
        ctx.usageError(`an ICMP echo request has no port: drop --port ${opts.port}, or drop --icmp to send a UDP datagram`);
      }
      if (opts.icmp !== true && opts.port === undefined) return ctx.need('where to send the payload', '--port PORT for a UDP datagram, or --icmp for an ICMP echo request');
      return { type: 'payload', name: ctx.name ?? null, proto: opts.icmp === true ? 'icmp' : 'udp', port: opts.port ?? 0, payload: opts.payload };
    },
    options: ['port', 'payload', 'icmp'],
    async send(target, door) {
      if (door.proto === 'udp') {
        try {
          await sendUdp(target, door.port, door.payload);
        } catch (err) {
          throw new KnockError(`could not send the UDP datagram to ${endpoint(target.address, door.port)}/udp: ${errnoCode(err)}`);
        }
        return;
      }
      try {
        await sendEchoRequest(target, door.payload);
      } catch (err) {
        // the errno's name, or what to do when no ICMP socket may be opened
        const why = err instanceof IcmpError && err.message !== ICMP_PERMISSION_HINT ? err.code : err instanceof Error ? err.message : String(err);
        throw new KnockError(`could not send the ICMP echo request to ${target.address}: ${why}`);
      }
    },
    describe: (door) =>
      door.proto === 'icmp'
        ? `ICMP echo request with a ${door.payload.length}-byte payload`
        : `UDP datagram to ${door.port}/udp with a ${door.payload.length}-byte payload`,
    hint: 'the payload and how it is sent (UDP port or ICMP)',
  },
};
