// Sends one ICMP echo request (IPv4 type 8 / ICMPv6 type 128) carrying a payload, for the
// knock client's `payload` doors with `knock: icmp`. Node has no ICMP sockets, so this calls
// socket(2)/sendto(2)/close(2) of the C library through koffi.
//
// Two kinds of socket, tried in this order:
//   ping: socket(AF, SOCK_DGRAM, IPPROTO_ICMP[V6]), the unprivileged "ping socket" (Linux >= 3.0)
//         allowed when the process's group is in net.ipv4.ping_group_range (one sysctl for both
//         families); the kernel sets the echo identifier and the checksum.
//   raw:  socket(AF, SOCK_RAW, IPPROTO_ICMP[V6]), which needs CAP_NET_RAW; for IPv4 the checksum
//         is computed here, for ICMPv6 the kernel computes it (RFC 3542: always on for ICMPv6).
// Either way the kernel adds the IP header, and the echo data (after the 8-byte echo header:
// type, code, checksum, identifier, sequence) is exactly the payload.
import { constants, endianness } from 'node:os';
import koffi from 'koffi';
import { parseAddress } from '../net/addr.js';

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_DGRAM = 2;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_ICMP = 1;
const IPPROTO_ICMPV6 = 58;
const ICMP_ECHO = 8;
const ICMPV6_ECHO_REQUEST = 128;

/** errnos for which the ping socket is not available and a raw socket is worth a try */
const NO_PING_SOCKET = new Set([constants.errno.EACCES, constants.errno.EPERM, constants.errno.EPROTONOSUPPORT]);
const NO_RAW_SOCKET = new Set([constants.errno.EACCES, constants.errno.EPERM]);

export const ICMP_PERMISSION_HINT =
  'sending an ICMP echo request needs CAP_NET_RAW (run as root) or a ping_group_range that includes your group (sysctl net.ipv4.ping_group_range)';

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number;
  close: (fd: number) => number;
  if_nametoindex: (name: string) => number;
}

let libc: Libc | undefined;
function c(): Libc {
  if (libc === undefined) {
    const lib = koffi.load('libc.so.6');
    const f = <T>(decl: string): T => lib.func(decl) as unknown as T;
    libc = {
      socket: f('int socket(int domain, int type, int protocol)'),
      sendto: f('intptr_t sendto(int sockfd, const void *buf, size_t len, int flags, const void *dest_addr, uint32_t addrlen)'),
      close: f('int close(int fd)'),
      if_nametoindex: f('unsigned int if_nametoindex(const char *ifname)'),
    };
  }
  return libc;
}

function errnoName(errno: number): string {
  for (const [name, n] of Object.entries(constants.errno)) if (n === errno) return name;
  return `errno ${errno}`;
}

/** An ICMP failure; `code` is the errno's name ("ENETUNREACH"), like Node's system errors. */
export class IcmpError extends Error {
  override readonly name = 'IcmpError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** The Internet checksum (RFC 1071) of buf. */
export function internetChecksum(buf: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += ((buf[i] ?? 0) << 8) | (buf[i + 1] ?? 0);
  if (buf.length % 2 === 1) sum += (buf[buf.length - 1] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The echo request: type, code 0, checksum (IPv4 only; 0 for the kernel to fill), id, sequence 1, payload. */
export function echoRequest(family: 4 | 6, payload: Buffer, id: number): Buffer {
  const msg = Buffer.alloc(8 + payload.length);
  msg[0] = family === 4 ? ICMP_ECHO : ICMPV6_ECHO_REQUEST;
  msg.writeUInt16BE(id & 0xffff, 4);
  msg.writeUInt16BE(1, 6);
  payload.copy(msg, 8);
  if (family === 4) msg.writeUInt16BE(internetChecksum(msg), 2);
  return msg;
}

/** sockaddr_in / sockaddr_in6 for the address, port 0. sa_family is in host byte order. */
function sockaddr(address: string, family: 4 | 6): Buffer {
  const le = endianness() === 'LE';
  const [host = '', zone] = address.split('%');
  const bytes = parseAddress(host); // 16 bytes, IPv4 mapped
  const sa = Buffer.alloc(family === 4 ? 16 : 28);
  if (le) sa.writeUInt16LE(family === 4 ? AF_INET : AF_INET6, 0);
  else sa.writeUInt16BE(family === 4 ? AF_INET : AF_INET6, 0);
  if (family === 4) {
    bytes.copy(sa, 4, 12, 16); // sin_addr
    return sa;
  }
  bytes.copy(sa, 8); // sin6_addr after family, port, flowinfo
  if (zone !== undefined) {
    // a link-local address with its interface: "fe80::1%eth0" (or "%2")
    const scope = /^\d+$/.test(zone) ? Number(zone) : c().if_nametoindex(zone);
    if (scope === 0) throw new IcmpError(`${address}: no interface named ${zone}`, 'ENODEV');
    if (le) sa.writeUInt32LE(scope, 24);
    else sa.writeUInt32BE(scope, 24);
  }
  return sa;
}

/** Which socket sent the request: the unprivileged ping socket or a raw socket. */
export type EchoSocket = 'ping' | 'raw';

/**
 * Sends one echo request with `payload` as its data to target. id is the echo identifier
 * (raw sockets only: a ping socket's identifier is chosen by the kernel); default: from the pid.
 * Resolves with the kind of socket used; throws IcmpError when it cannot be sent (a message with
 * ICMP_PERMISSION_HINT when neither socket may be opened).
 */
export async function sendEchoRequest(target: { address: string; family: 4 | 6 }, payload: Buffer, id: number = process.pid & 0xffff): Promise<EchoSocket> {
  const lib = c();
  const domain = target.family === 4 ? AF_INET : AF_INET6;
  const proto = target.family === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
  const addr = sockaddr(target.address, target.family);

  let kind: EchoSocket = 'ping';
  let fd = lib.socket(domain, SOCK_DGRAM | SOCK_CLOEXEC, proto);
  if (fd < 0) {
    const pingErrno = koffi.errno();
    if (!NO_PING_SOCKET.has(pingErrno)) throw new IcmpError(`cannot open an ICMP socket: ${errnoName(pingErrno)}`, errnoName(pingErrno));
    kind = 'raw';
    fd = lib.socket(domain, SOCK_RAW | SOCK_CLOEXEC, proto);
    if (fd < 0) {
      const rawErrno = koffi.errno();
      if (NO_RAW_SOCKET.has(rawErrno)) throw new IcmpError(ICMP_PERMISSION_HINT, errnoName(rawErrno));
      throw new IcmpError(`cannot open a raw ICMP socket: ${errnoName(rawErrno)}`, errnoName(rawErrno));
    }
  }
  try {
    const msg = echoRequest(target.family, payload, id);
    const sent = lib.sendto(fd, msg, msg.length, 0, addr, addr.length);
    if (sent < 0) {
      const name = errnoName(koffi.errno());
      throw new IcmpError(`cannot send an ICMP echo request to ${target.address}: ${name}`, name);
    }
    return kind;
  } finally {
    lib.close(fd);
  }
}
