/**
 * rtnetlink link events: which network interfaces exist, and when they come and go.
 *
 * A NETLINK_ROUTE socket bound to the RTMGRP_LINK group receives RTM_NEWLINK / RTM_DELLINK
 * for every interface of the process's network namespace; koffi.node.poll() watches its fd
 * from libuv and each wake-up drains it (non-blocking recv until EAGAIN), on the main thread,
 * as src/bpf/ringbuf.ts does for the ring buffer. Nothing polls on a timer. listLinks() asks
 * for the current list (RTM_GETLINK with NLM_F_DUMP) on a socket of its own.
 *
 * The parser (parseLinkMessages) is pure and takes the bytes a recv() returned, so it is
 * tested on constructed messages without a kernel.
 */
import koffi from 'koffi';

// <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>
const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const RTMGRP_LINK = 1;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SO_RCVBUF = 8;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
const EINTR = 4;
const ENOBUFS = 105;

export const NLMSG_HDRLEN = 16;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_DUMP = 0x300;
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const IFINFOMSG_LEN = 16;
export const IFLA_IFNAME = 3;
export const IFLA_LINKINFO = 18;
export const IFLA_INFO_KIND = 1;
const NLA_TYPE_MASK = 0x3fff; // without NLA_F_NESTED / NLA_F_NET_BYTEORDER
export const IFF_UP = 0x1;

/** A few ARPHRD_* device types (ifi_type), <linux/if_arp.h>. */
export const ARPHRD = {
  ETHER: 1,
  LOOPBACK: 772,
  NONE: 0xfffe,
  TUNNEL: 768,
  TUNNEL6: 769,
  IPGRE: 778,
  SIT: 776,
  IP6GRE: 823,
} as const;

export interface LinkMessage {
  /** RTM_NEWLINK: the interface exists (new or changed); RTM_DELLINK: it is gone */
  event: 'new' | 'del';
  index: number;
  name: string;
  /** ifi_type: ARPHRD_* */
  type: number;
  /** ifi_flags: IFF_* */
  flags: number;
  /** IFLA_INFO_KIND ("veth", "vlan", "wireguard", ...); undefined for physical devices */
  kind?: string;
}

/** One interface as a dump lists it. */
export type Link = Omit<LinkMessage, 'event'>;

function cString(buf: Buffer, start: number, end: number): string {
  const nul = buf.indexOf(0, start);
  return buf.toString('utf8', start, nul >= 0 && nul < end ? nul : end);
}

const align4 = (n: number): number => (n + 3) & ~3;

/** Walk the rtattrs in buf[start, end): calls fn(type, dataStart, dataEnd) for each. */
function attrs(buf: Buffer, start: number, end: number, fn: (type: number, from: number, to: number) => void): void {
  let off = start;
  while (off + 4 <= end) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < 4 || off + len > end) return; // malformed: stop, never read past the message
    fn(type, off + 4, off + len);
    off += align4(len);
  }
}

export interface ParsedBatch {
  links: LinkMessage[];
  /** NLMSG_DONE seen (end of a dump) */
  done: boolean;
  /** an NLMSG_ERROR with a non-zero error: its errno (positive) */
  error?: number;
}

/**
 * Parse the netlink messages in one datagram. Messages other than RTM_NEWLINK/RTM_DELLINK are
 * skipped; a truncated message ends the batch (what was whole before it is kept).
 */
export function parseLinkMessages(buf: Buffer): ParsedBatch {
  const out: ParsedBatch = { links: [], done: false };
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    const type = buf.readUInt16LE(off + 4);
    if (len < NLMSG_HDRLEN || off + len > buf.length) break;
    const end = off + len;
    const body = off + NLMSG_HDRLEN;
    if (type === NLMSG_DONE) {
      out.done = true;
    } else if (type === NLMSG_ERROR) {
      if (body + 4 <= end) {
        const err = buf.readInt32LE(body);
        if (err !== 0) out.error = -err;
      }
    } else if ((type === RTM_NEWLINK || type === RTM_DELLINK) && body + IFINFOMSG_LEN <= end) {
      const link: LinkMessage = {
        event: type === RTM_NEWLINK ? 'new' : 'del',
        type: buf.readUInt16LE(body + 2),
        index: buf.readInt32LE(body + 4),
        flags: buf.readUInt32LE(body + 8),
        name: '',
      };
      attrs(buf, body + IFINFOMSG_LEN, end, (t, from, to) => {
        if (t === IFLA_IFNAME) link.name = cString(buf, from, to);
        else if (t === IFLA_LINKINFO) {
          attrs(buf, from, to, (nt, nfrom, nto) => {
            if (nt === IFLA_INFO_KIND) link.kind = cString(buf, nfrom, nto);
          });
        }
      });
      if (link.name !== '' && link.index > 0) out.links.push(link);
    }
    off += align4(len);
  }
  return out;
}

/** Build a netlink message: header + body (tests and the dump request use it). */
export function nlmsg(type: number, flags: number, seq: number, body: Buffer): Buffer {
  const b = Buffer.alloc(NLMSG_HDRLEN + align4(body.length));
  b.writeUInt32LE(NLMSG_HDRLEN + body.length, 0);
  b.writeUInt16LE(type, 4);
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  b.writeUInt32LE(0, 12);
  body.copy(b, NLMSG_HDRLEN);
  return b;
}

/** One rtattr (payload padded to 4 bytes). */
export function rtattr(type: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(align4(4 + payload.length));
  b.writeUInt16LE(4 + payload.length, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

/** An ifinfomsg followed by attributes. */
export function ifinfomsg(fields: { type?: number; index: number; flags?: number }, ...attributes: Buffer[]): Buffer {
  const h = Buffer.alloc(IFINFOMSG_LEN);
  h.writeUInt8(0, 0); // AF_UNSPEC
  h.writeUInt16LE(fields.type ?? 0, 2);
  h.writeInt32LE(fields.index, 4);
  h.writeUInt32LE(fields.flags ?? 0, 8);
  return Buffer.concat([h, ...attributes]);
}

// ---- the socket ------------------------------------------------------------------------

interface NlLibc {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  send(fd: number, buf: Buffer, len: number, flags: number): number | bigint;
  recv(fd: number, buf: Buffer, len: number, flags: number): number | bigint;
  setsockopt(fd: number, level: number, name: number, val: Buffer, len: number): number;
  close(fd: number): number;
}

let nlLibc: NlLibc | undefined;
function lc(): NlLibc {
  if (nlLibc) return nlLibc;
  const lib = koffi.load('libc.so.6');
  const f = <T>(decl: string): T => lib.func(decl) as unknown as T;
  nlLibc = {
    socket: f('int socket(int domain, int type, int protocol)'),
    bind: f('int bind(int fd, const void *addr, uint32_t len)'),
    send: f('intptr_t send(int fd, const void *buf, size_t len, int flags)'),
    recv: f('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
    setsockopt: f('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)'),
    close: f('int close(int fd)'),
  };
  return nlLibc;
}

/** A netlink socket error, with errno. */
export class NetlinkError extends Error {
  constructor(
    readonly op: string,
    readonly errno: number,
  ) {
    super(`netlink ${op} failed (errno ${errno})`);
    this.name = 'NetlinkError';
  }
}

function openSocket(groups: number, nonblock: boolean): number {
  const L = lc();
  const fd = L.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), NETLINK_ROUTE);
  if (fd < 0) throw new NetlinkError('socket(AF_NETLINK, NETLINK_ROUTE)', koffi.errno());
  const sa = Buffer.alloc(12); // struct sockaddr_nl
  sa.writeUInt16LE(AF_NETLINK, 0);
  sa.writeUInt32LE(groups, 8);
  if (L.bind(fd, sa, sa.length) !== 0) {
    const e = koffi.errno();
    L.close(fd);
    throw new NetlinkError('bind(RTMGRP_LINK)', e);
  }
  return fd;
}

const RECV_BYTES = 64 * 1024;

/** Every interface of this network namespace (RTM_GETLINK dump), in index order. */
export function listLinks(): Link[] {
  const L = lc();
  const fd = openSocket(0, false);
  try {
    const tv = Buffer.alloc(16); // struct timeval: 2 s, so a dump can never hang the daemon
    tv.writeBigInt64LE(2n, 0);
    L.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, tv.length);
    const seq = (Date.now() & 0x7fffffff) >>> 0;
    const req = nlmsg(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, ifinfomsg({ index: 0 }));
    if (Number(L.send(fd, req, req.length, 0)) !== req.length) throw new NetlinkError('send(RTM_GETLINK)', koffi.errno());
    const buf = Buffer.alloc(RECV_BYTES);
    const byIndex = new Map<number, Link>();
    for (;;) {
      const n = Number(L.recv(fd, buf, buf.length, 0));
      if (n < 0) {
        const e = koffi.errno();
        if (e === EINTR) continue;
        throw new NetlinkError('recv(RTM_GETLINK dump)', e);
      }
      if (n === 0) break;
      const batch = parseLinkMessages(buf.subarray(0, n));
      if (batch.error !== undefined) throw new NetlinkError('RTM_GETLINK', batch.error);
      for (const { event: _e, ...l } of batch.links) byIndex.set(l.index, l);
      if (batch.done) break;
    }
    return [...byIndex.values()].sort((a, b) => a.index - b.index);
  } finally {
    L.close(fd);
  }
}

type PollHandle = ReturnType<typeof koffi.node.poll>;

export interface LinkMonitorHandlers {
  onLink(m: LinkMessage): void;
  /** the kernel dropped events (ENOBUFS): the listener must re-read the list (listLinks) */
  onOverflow(): void;
  onError(err: unknown): void;
}

/** RTM_NEWLINK / RTM_DELLINK as they happen, delivered on the event loop. */
export class LinkMonitor {
  private fd: number;
  private readonly poll: PollHandle;
  private readonly buf = Buffer.alloc(RECV_BYTES);

  constructor(private readonly h: LinkMonitorHandlers) {
    this.fd = openSocket(RTMGRP_LINK, true);
    const size = Buffer.alloc(4);
    size.writeInt32LE(1 << 20); // room for a burst (a bond or 100 VLANs created at once)
    lc().setsockopt(this.fd, SOL_SOCKET, SO_RCVBUF, size, 4);
    let handle: PollHandle | null = null;
    let why = '';
    try {
      // koffi's PollHandle calls back with (status, events); the bundled typings say (events).
      handle = koffi.node.poll(this.fd, ((status: number) => this.onPoll(status)) as unknown as () => void) as PollHandle | null;
    } catch (err) {
      why = `: ${(err as Error).message}`;
    }
    if (handle === null) {
      lc().close(this.fd);
      throw new Error(`cannot watch the rtnetlink socket from the event loop${why}`);
    }
    this.poll = handle;
  }

  /** Let the process exit although the monitor is open. */
  unref(): this {
    this.poll.unref();
    return this;
  }

  /** Read everything queued now (also done on the event loop). */
  drain(): void {
    const L = lc();
    while (this.fd >= 0) {
      const n = Number(L.recv(this.fd, this.buf, this.buf.length, MSG_DONTWAIT));
      if (n < 0) {
        const e = koffi.errno();
        if (e === EAGAIN) return;
        if (e === EINTR) continue;
        if (e === ENOBUFS) {
          this.h.onOverflow();
          continue;
        }
        this.h.onError(new NetlinkError('recv(RTMGRP_LINK)', e));
        return;
      }
      if (n === 0) return;
      for (const m of parseLinkMessages(this.buf.subarray(0, n)).links) {
        try {
          this.h.onLink(m);
        } catch (err) {
          this.h.onError(err);
        }
      }
    }
  }

  close(): void {
    if (this.fd < 0) return;
    this.poll.stop();
    this.poll.close();
    lc().close(this.fd);
    this.fd = -1;
  }

  private onPoll(status: number): void {
    if (status < 0) {
      this.h.onError(new Error(`polling the rtnetlink socket failed (libuv status ${status})`));
      return;
    }
    this.drain();
  }
}

/** Link kinds (IFLA_INFO_KIND) of tunnels whose inner packets a gate on the underlay never sees. */
export const TUNNEL_KINDS: ReadonlySet<string> = new Set([
  'vxlan',
  'geneve',
  'wireguard',
  'gre',
  'gretap',
  'ip6gre',
  'ip6gretap',
  'erspan',
  'ip6erspan',
  'ipip',
  'sit',
  'ip6tnl',
  'vti',
  'vti6',
  'xfrm',
  'bareudp',
  'gtp',
  'amt',
]);

/**
 * Tunnels (by kind), and tun devices without a link layer (the usual VPN endpoints: OpenVPN,
 * wireguard-go, ...; a tap device carries Ethernet frames, like a VM's port, and is not one).
 */
export function isTunnel(l: Pick<Link, 'kind' | 'type'>): boolean {
  if (l.kind === undefined) return false;
  return TUNNEL_KINDS.has(l.kind) || (l.kind === 'tun' && l.type === ARPHRD.NONE);
}
