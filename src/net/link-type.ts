/**
 * What an interface's frames start with, as XDP sees them: the device type (ARPHRD_*, what
 * `/sys/class/net/IF/type` and rtnetlink's ifi_type show) decides which of the gate's two XDP
 * programs parses them (docs/DESIGN.md, "Framing"):
 *
 * - `ethernet`: an Ethernet header (physical NICs, veth, bonds, bridges, VLAN, macvlan, VXLAN,
 *   gretap... and loopback, whose header is an all-zero Ethernet one);
 * - `l3`: the IP header itself, the version nibble giving the family (TUN, WireGuard, raw-IP
 *   modems);
 * - anything else is refused: the gate cannot tell where the IP header starts, and a gate that
 *   cannot find the ports passes everything.
 *
 * The type is read with SIOCGIFHWADDR on a socket of the calling thread's network namespace
 * (sysfs shows the namespace it was mounted in, not necessarily the caller's).
 */
import koffi from 'koffi';

export type Framing = 'ethernet' | 'l3';

const ARPHRD = {
  ETHER: 1,
  RAWIP: 519,
  TUNNEL: 768,
  TUNNEL6: 769,
  LOOPBACK: 772,
  SIT: 776,
  IPGRE: 778,
  IP6GRE: 823,
  NONE: 0xfffe,
} as const;

/** Device types the gate parses, and how. */
const PARSED: ReadonlyMap<number, { framing: Framing; what: string }> = new Map([
  [ARPHRD.ETHER, { framing: 'ethernet', what: 'Ethernet' }],
  [ARPHRD.LOOPBACK, { framing: 'ethernet', what: 'loopback' }],
  // TUN (IFF_TUN) resets the MAC header to the IP header; WireGuard hands over the decrypted
  // IP packet with no header before it.
  [ARPHRD.NONE, { framing: 'l3', what: 'no link-layer header (TUN, WireGuard)' }],
  // qmi_wwan, rmnet, mhi_net in raw-IP mode: IP packets with the MAC header reset to them.
  [ARPHRD.RAWIP, { framing: 'l3', what: 'raw IP' }],
]);

/**
 * Device types that carry IP without a link-layer header but that the gate refuses: on
 * receive these tunnels leave the MAC header (which XDP in generic mode starts at) on the outer
 * IP header, for some configurations at least (ip_gre with header_ops, i.e. without a remote or
 * with a multicast one; sit and ipip in the kernels we looked at), so the first IP header a
 * program sees is the tunnel's and not the packet's. Untested here: the machine this was
 * written on has none of these drivers. Protect the tunnel's traffic another way.
 */
const REFUSED_TUNNELS: ReadonlyMap<number, string> = new Map([
  [ARPHRD.TUNNEL, 'ipip tunnel'],
  [ARPHRD.TUNNEL6, 'ip6tnl tunnel'],
  [ARPHRD.SIT, 'sit tunnel'],
  [ARPHRD.IPGRE, 'GRE tunnel'],
  [ARPHRD.IP6GRE, 'ip6gre tunnel'],
]);

/** The ARPHRD_* name of a type, for messages. */
export function arphrdName(type: number): string {
  const known: Record<number, string> = {
    1: 'ETHER',
    24: 'IEEE1394',
    32: 'INFINIBAND',
    256: 'SLIP',
    280: 'CAN',
    512: 'PPP',
    519: 'RAWIP',
    768: 'TUNNEL',
    769: 'TUNNEL6',
    772: 'LOOPBACK',
    776: 'SIT',
    778: 'IPGRE',
    801: 'IEEE80211',
    803: 'IEEE80211_RADIOTAP',
    804: 'IEEE802154',
    820: 'PHONET_PIPE',
    823: 'IP6GRE',
    824: 'NETLINK',
    825: '6LOWPAN',
    826: 'VSOCKMON',
    0xfffe: 'NONE',
    0xffff: 'VOID',
  };
  return `ARPHRD_${known[type] ?? type}`;
}

/** An interface type the gate will not attach to, with the reason and what to do. */
export class UnsupportedLinkError extends Error {
  constructor(
    readonly ifname: string,
    readonly type: number,
    detail: string,
  ) {
    super(
      `interface ${ifname} has device type ${arphrdName(type)} (${type}): ${detail}; knockgate parses Ethernet (ARPHRD_ETHER, ` +
        `ARPHRD_LOOPBACK) and devices without a link-layer header (ARPHRD_NONE: TUN, WireGuard; ARPHRD_RAWIP). It did not ` +
        `attach: remove ${ifname} from \`interfaces\`, and protect this traffic where it arrives as Ethernet or IP`,
    );
    this.name = 'UnsupportedLinkError';
  }
}

/** How the gate parses frames of a device type; throws UnsupportedLinkError if it cannot. */
export function framingOfType(ifname: string, type: number): Framing {
  const parsed = PARSED.get(type);
  if (parsed) return parsed.framing;
  const tunnel = REFUSED_TUNNELS.get(type);
  if (tunnel !== undefined) {
    throw new UnsupportedLinkError(
      ifname,
      type,
      `a ${tunnel} can hand XDP its packets with the outer (tunnel) IP header first, where the gate would judge the ` +
        `tunnel instead of the packet (see docs/DESIGN.md, "Framing")`,
    );
  }
  throw new UnsupportedLinkError(ifname, type, 'the gate cannot tell where the IP header starts in its frames');
}

const SIOCGIFHWADDR = 0x8927;
const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const IFNAMSIZ = 16;

interface Sys {
  socket: (domain: number, type: number, protocol: number) => number;
  ioctl: (fd: number, request: number, arg: Buffer) => number;
  close: (fd: number) => number;
  strerror: (errnum: number) => string;
}
let sys: Sys | undefined;

function libc(): Sys {
  if (sys === undefined) {
    const lib = koffi.load('libc.so.6');
    sys = {
      socket: lib.func('int socket(int domain, int type, int protocol)') as unknown as Sys['socket'],
      ioctl: lib.func('int ioctl(int fd, unsigned long request, void *arg)') as unknown as Sys['ioctl'],
      close: lib.func('int close(int fd)') as unknown as Sys['close'],
      strerror: lib.func('const char *strerror(int errnum)') as unknown as Sys['strerror'],
    };
  }
  return sys;
}

/** The device type (ARPHRD_*) of an interface of the calling thread's network namespace. */
export function linkType(ifname: string): number {
  const name = Buffer.from(ifname, 'utf8');
  if (name.length === 0 || name.length >= IFNAMSIZ || name.includes(0)) throw new Error(`not an interface name: ${JSON.stringify(ifname)}`);
  const c = libc();
  const fd = c.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const e = koffi.errno();
    throw new Error(`socket(AF_INET) for SIOCGIFHWADDR failed: ${c.strerror(e)} (errno ${e})`);
  }
  try {
    const ifr = Buffer.alloc(40); // struct ifreq: name, then struct sockaddr ifr_hwaddr
    name.copy(ifr, 0);
    if (c.ioctl(fd, SIOCGIFHWADDR, ifr) !== 0) {
      const e = koffi.errno();
      const hint = e === 19 ? `: no interface named ${ifname}, check \`ip link\`` : '';
      throw new Error(`SIOCGIFHWADDR(${ifname}) failed: ${c.strerror(e)} (errno ${e})${hint}`);
    }
    return ifr.readUInt16LE(IFNAMSIZ); // sa_family, host order (little-endian targets)
  } finally {
    c.close(fd);
  }
}

/** How the gate parses an interface's frames; throws UnsupportedLinkError if it cannot. */
export function framingOf(ifname: string): Framing {
  return framingOfType(ifname, linkType(ifname));
}
