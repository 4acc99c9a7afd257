/**
 * Sockets and TUN devices for kernel tests, through the C library (koffi), all synchronous: a
 * socket or a TUN device belongs to the network namespace of the thread that creates it, so
 * create them inside NetnsPair.enter() and use them from anywhere afterwards.
 *
 * - TUN: openTun() (IFF_TUN | IFF_NO_PI: one IP packet per read or write), setTunLinkType()
 * - TCP listeners and UDP sockets: tcpListen(), udpBind(), recvDatagram() (never blocks)
 * - AF_PACKET on one interface: packetSocket(), sendFrame(), recvFrame() (never blocks)
 *
 * Every fd is the caller's to close (closeFd), in a finally.
 */
import { constants, existsSync, openSync, readSync, writeSync } from 'node:fs';
import { constants as os } from 'node:os';
import type { TestContext } from 'node:test';
import { isIPv4 } from 'node:net';
import koffi from 'koffi';
import { libc } from '../../src/bpf/libbpf.js';
import { IN_CI } from './kernel.js';
import { parseIPv4, parseIPv6 } from './packets.js';

const AF_INET = 2;
const AF_INET6 = 10;
const AF_PACKET = 17;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_RCVBUFFORCE = 33;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const MSG_DONTWAIT = 0x40;
const ETH_P_ALL = 0x0003;

const TUNSETIFF = 0x400454ca;
const TUNSETLINK = 0x400454cd;
const IFF_TUN = 0x0001;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;

/** The socket calls (close and strerror are the binding's: src/bpf/libbpf.ts libc()). */
interface Sys {
  socket: (domain: number, type: number, protocol: number) => number;
  bind: (fd: number, addr: Buffer, len: number) => number;
  listen: (fd: number, backlog: number) => number;
  setsockopt: (fd: number, level: number, name: number, value: Buffer, len: number) => number;
  recvfrom: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer | null, addrlen: Buffer | null) => number;
  sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number;
  ioctlPtr: (fd: number, request: number, arg: Buffer) => number;
  ioctlInt: (fd: number, request: number, arg: number) => number;
}
let sys: Sys | undefined;

function c(): Sys {
  if (sys === undefined) {
    const lib = koffi.load('libc.so.6');
    const f = <T>(decl: string): T => lib.func(decl) as unknown as T;
    sys = {
      socket: f('int socket(int domain, int type, int protocol)'),
      bind: f('int bind(int fd, const void *addr, uint32_t len)'),
      listen: f('int listen(int fd, int backlog)'),
      setsockopt: f('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
      recvfrom: f('intptr_t recvfrom(int fd, void *buf, size_t len, int flags, void *addr, void *addrlen)'),
      sendto: f('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
      ioctlPtr: lib.func('ioctl', 'int', ['int', 'unsigned long', 'void *']) as unknown as Sys['ioctlPtr'],
      ioctlInt: lib.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']) as unknown as Sys['ioctlInt'],
    };
  }
  return sys;
}

function fail(what: string): never {
  const e = koffi.errno();
  throw new Error(`${what}: ${libc().strerror(e)} (errno ${e})`);
}

export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

// ---- TUN ----------------------------------------------------------------------------------

/** Call first in a test that needs TUN devices: false (skipped) without /dev/net/tun; throws in CI. */
export function requireTun(t: TestContext): boolean {
  if (existsSync('/dev/net/tun')) return true;
  const reason = 'no /dev/net/tun: this kernel has no TUN driver (CONFIG_TUN), or /dev is not populated';
  if (IN_CI) throw new Error(`kernel test cannot run in CI (CI=true): ${reason}`);
  t.skip(reason);
  return false;
}

/** A new TUN (or TAP) device `name` in the calling thread's namespace; the device lives as long as the fd. */
export function openTun(name: string, kind: 'tun' | 'tap' = 'tun'): number {
  const fd = openSync('/dev/net/tun', constants.O_RDWR | constants.O_NONBLOCK);
  const ifr = Buffer.alloc(40);
  ifr.write(name, 0, 15, 'utf8');
  ifr.writeUInt16LE((kind === 'tun' ? IFF_TUN : IFF_TAP) | IFF_NO_PI, 16);
  if (c().ioctlPtr(fd, TUNSETIFF, ifr) !== 0) {
    const e = koffi.errno();
    libc().close(fd);
    throw new Error(`TUNSETIFF(${name}): ${libc().strerror(e)} (errno ${e})`);
  }
  return fd;
}

/** The device type (ARPHRD_*) of a TUN device that is down: how other device types are had here. */
export function setTunLinkType(fd: number, type: number): void {
  if (c().ioctlInt(fd, TUNSETLINK, type) !== 0) fail(`TUNSETLINK(${type})`);
}

/** One packet out of a TUN device (what the namespace sent through it), or null if none is queued. */
export function readTun(fd: number): Buffer | null {
  const buf = Buffer.alloc(65536);
  try {
    const n = readSync(fd, buf, 0, buf.length, null);
    return Buffer.from(buf.subarray(0, n));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return null;
    throw err;
  }
}

/** One packet into a TUN device, as if it had arrived on it. */
export function writeTun(fd: number, packet: Buffer): void {
  const n = writeSync(fd, packet);
  if (n !== packet.length) throw new Error(`short write into the TUN device: ${n} of ${packet.length} bytes`);
}

// ---- IP sockets -----------------------------------------------------------------------------

function sockaddr(addr: string, port: number): Buffer {
  if (isIPv4(addr)) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(port, 2);
    parseIPv4(addr).copy(b, 4);
    return b;
  }
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(port, 2);
  parseIPv6(addr).copy(b, 8);
  return b;
}

function ipSocket(addr: string, port: number, type: number): number {
  const family = isIPv4(addr) ? AF_INET : AF_INET6;
  const fd = c().socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(`socket(${addr})`);
  try {
    const one = Buffer.alloc(4);
    one.writeInt32LE(1);
    c().setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4);
    if (family === AF_INET6) c().setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, one, 4);
    const sa = sockaddr(addr, port);
    if (c().bind(fd, sa, sa.length) !== 0) fail(`bind(${addr} port ${port})`);
  } catch (err) {
    libc().close(fd);
    throw err;
  }
  return fd;
}

/** A TCP socket listening on addr:port (it answers SYNs with SYN-ACKs; nothing accepts). */
export function tcpListen(addr: string, port: number): number {
  const fd = ipSocket(addr, port, SOCK_STREAM);
  if (c().listen(fd, 4096) !== 0) {
    libc().close(fd);
    fail(`listen(${addr} port ${port})`);
  }
  return fd;
}

/** A UDP socket bound to addr:port. */
export function udpBind(addr: string, port: number): number {
  return ipSocket(addr, port, SOCK_DGRAM);
}

/** One recvfrom() that never blocks: the bytes and the sender's address, or null if nothing is queued. */
function recvNow(fd: number, addrBytes: number, what: string): { data: Buffer; sa: Buffer } | null {
  const buf = Buffer.alloc(65536);
  const sa = Buffer.alloc(addrBytes);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(sa.length);
  const n = Number(c().recvfrom(fd, buf, buf.length, MSG_DONTWAIT, sa, len));
  if (n < 0) {
    if (koffi.errno() === os.errno.EAGAIN) return null;
    fail(`recvfrom(${what})`);
  }
  return { data: Buffer.from(buf.subarray(0, n)), sa };
}

/** One datagram from a UDP socket (source address and port, payload), or null if none is queued. */
export function recvDatagram(fd: number): { from: string; port: number; data: Buffer } | null {
  const got = recvNow(fd, 128, 'udp');
  if (got === null) return null;
  const { sa, data } = got;
  const family = sa.readUInt16LE(0);
  const port = sa.readUInt16BE(2);
  const from =
    family === AF_INET
      ? [...sa.subarray(4, 8)].join('.')
      : Array.from({ length: 8 }, (_, i) => sa.readUInt16BE(8 + 2 * i).toString(16)).join(':');
  return { from, port, data };
}

// ---- AF_PACKET --------------------------------------------------------------------------------

function sockaddrLl(ifindex: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt16LE(AF_PACKET, 0);
  b.writeUInt16BE(ETH_P_ALL, 2);
  b.writeInt32LE(ifindex, 4);
  return b;
}

/**
 * A packet socket bound to one interface: every frame in or out of it, and frames to send.
 * rcvbufBytes: a receive buffer of that size (SO_RCVBUFFORCE), so that a burst is not lost.
 */
export function packetSocket(ifindex: number, rcvbufBytes = 0): number {
  const fd = c().socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, ((ETH_P_ALL & 0xff) << 8) | (ETH_P_ALL >> 8));
  if (fd < 0) fail('socket(AF_PACKET)');
  if (rcvbufBytes > 0) {
    const v = Buffer.alloc(4);
    v.writeInt32LE(rcvbufBytes);
    if (c().setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, v, 4) !== 0) {
      libc().close(fd);
      fail('setsockopt(SO_RCVBUFFORCE)');
    }
  }
  const sa = sockaddrLl(ifindex);
  if (c().bind(fd, sa, sa.length) !== 0) {
    libc().close(fd);
    fail(`bind(AF_PACKET, ifindex ${ifindex})`);
  }
  return fd;
}

/** Sends one whole Ethernet frame out of the socket's interface. */
export function sendFrame(fd: number, ifindex: number, frame: Buffer): void {
  const sa = sockaddrLl(ifindex);
  const n = Number(c().sendto(fd, frame, frame.length, 0, sa, sa.length));
  if (n !== frame.length) fail(`sendto(AF_PACKET, ${frame.length} bytes)`);
}

/** One frame the interface received or sent (pkttype: 4 = sent by this host), or null. */
export function recvFrame(fd: number): { frame: Buffer; outgoing: boolean } | null {
  const got = recvNow(fd, 20, 'AF_PACKET');
  return got === null ? null : { frame: got.data, outgoing: got.sa[10] === 4 };
}
