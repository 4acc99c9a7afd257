/**
 * XDP attachment through bpf_link (BPF_LINK_CREATE with BPF_XDP): the attachment lives as
 * long as the link fd or its pin, so whether the gate outlives the process is an explicit
 * choice (pin it or not). Also: what is attached to an interface (bpf_xdp_query), and
 * interface names <-> indexes.
 */
import koffi from 'koffi';
import { BpfError, check, checkPtr, isBpfError } from './errors.js';
import { closeFd, linkInfo, type LinkInfo } from './info.js';
import {
  BPF_XDP,
  XDP_ATTACHED_DRV,
  XDP_ATTACHED_HW,
  XDP_ATTACHED_MULTI,
  XDP_ATTACHED_NONE,
  XDP_ATTACHED_SKB,
  XDP_FLAGS_DRV_MODE,
  XDP_FLAGS_SKB_MODE,
  bpf_link_create_opts,
  bpf_xdp_query_opts,
  libbpf,
  libc,
  type XdpQueryOptsRaw,
} from './libbpf.js';
import { bindingLogger } from './log.js';

/** How to attach: native (driver) XDP, generic (skb) XDP, or native falling back to generic. */
export type XdpMode = 'native' | 'generic' | 'auto';

/** What an interface has: nothing, one program in one mode, or several (multi). */
export type XdpAttachMode = 'none' | 'native' | 'generic' | 'offload' | 'multi';

export interface XdpQueryResult {
  attachMode: XdpAttachMode;
  /** the attached program's id (0: none; with 'multi', the native one if any) */
  progId: number;
  nativeProgId: number;
  genericProgId: number;
  offloadProgId: number;
}

export class BpfLink {
  private fdValue: number;

  private constructor(
    fd: number,
    /** the mode attachXdp attached in; undefined for links opened from a pin */
    readonly mode: 'native' | 'generic' | undefined,
  ) {
    this.fdValue = fd;
  }

  /** Open a pinned link; the returned link owns the fd (closing it keeps the pin). */
  static openPinned(path: string): BpfLink {
    return new BpfLink(check(libbpf().bpf_obj_get(path), `bpf_obj_get(${path})`, { path }), undefined);
  }

  /** @internal used by attachXdp */
  static fromFd(fd: number, mode: 'native' | 'generic' | undefined): BpfLink {
    return new BpfLink(fd, mode);
  }

  get fd(): number {
    if (this.fdValue < 0) throw new Error('BPF link is closed');
    return this.fdValue;
  }

  get closed(): boolean {
    return this.fdValue < 0;
  }

  /** Pin the link: the attachment then survives close() and the end of the process. */
  pin(path: string): void {
    check(libbpf().bpf_obj_pin(this.fd, path), 'bpf_obj_pin(link)', { path });
  }

  /** Atomically replace the attached program (no packet sees no program). */
  update(newProgFd: number): void {
    check(libbpf().bpf_link_update(this.fd, newProgFd, null), 'bpf_link_update');
  }

  /** Detach the program now, even if the link is pinned or held elsewhere. */
  detach(): void {
    check(libbpf().bpf_link_detach(this.fd), 'bpf_link_detach');
  }

  info(): LinkInfo {
    return linkInfo(this.fd, 'link');
  }

  /** Close the fd (an unpinned link detaches then); idempotent. */
  close(): void {
    const fd = this.fdValue;
    if (fd < 0) return;
    this.fdValue = -1;
    closeFd(fd, 'link');
  }
}

function createXdpLink(progFd: number, ifindex: number, flags: number, mode: string): number {
  const opts = { sz: bpf_link_create_opts.size, flags, iter_info: null, iter_info_len: 0, target_btf_id: 0, target: [0, 0, 0, 0] };
  return check(libbpf().bpf_link_create(progFd, ifindex, BPF_XDP, opts), `bpf_link_create(xdp ${mode}, ${describeIf(ifindex)})`);
}

const FALLBACK_CODES = ['EOPNOTSUPP', 'ENOTSUPP', 'EINVAL'];

/**
 * Attach an XDP program to an interface as a bpf_link. 'auto' tries native mode and falls
 * back to generic when the driver has no XDP support (logged).
 */
export function attachXdp(progFd: number, ifindex: number, mode: XdpMode): BpfLink {
  if (mode === 'native') return BpfLink.fromFd(createXdpLink(progFd, ifindex, XDP_FLAGS_DRV_MODE, mode), 'native');
  if (mode === 'generic') return BpfLink.fromFd(createXdpLink(progFd, ifindex, XDP_FLAGS_SKB_MODE, mode), 'generic');
  const log = bindingLogger();
  try {
    const link = BpfLink.fromFd(createXdpLink(progFd, ifindex, XDP_FLAGS_DRV_MODE, 'native'), 'native');
    log?.info({ interface: describeIf(ifindex), xdp_mode: 'native' }, 'XDP attached in native mode');
    return link;
  } catch (err) {
    if (!isBpfError(err, ...FALLBACK_CODES)) throw err;
    const link = BpfLink.fromFd(createXdpLink(progFd, ifindex, XDP_FLAGS_SKB_MODE, 'generic'), 'generic');
    log?.info(
      { interface: describeIf(ifindex), xdp_mode: 'generic', native_error: err.code },
      'native XDP is not available on this interface: XDP attached in generic mode',
    );
    return link;
  }
}

const ATTACH_MODES: Record<number, XdpAttachMode> = {
  [XDP_ATTACHED_NONE]: 'none',
  [XDP_ATTACHED_DRV]: 'native',
  [XDP_ATTACHED_SKB]: 'generic',
  [XDP_ATTACHED_HW]: 'offload',
  [XDP_ATTACHED_MULTI]: 'multi',
};

/** What XDP program is attached to the interface, and how (netlink query). */
export function xdpQuery(ifindex: number): XdpQueryResult {
  const opts: XdpQueryOptsRaw = { sz: bpf_xdp_query_opts.size, prog_id: 0, drv_prog_id: 0, hw_prog_id: 0, skb_prog_id: 0, attach_mode: 0 };
  check(libbpf().bpf_xdp_query(ifindex, 0, opts), `bpf_xdp_query(${describeIf(ifindex)})`);
  return {
    attachMode: ATTACH_MODES[opts.attach_mode] ?? 'multi',
    progId: opts.prog_id || opts.drv_prog_id || opts.skb_prog_id || opts.hw_prog_id,
    nativeProgId: opts.drv_prog_id,
    genericProgId: opts.skb_prog_id,
    offloadProgId: opts.hw_prog_id,
  };
}

/** Interface index of `name` in this network namespace. */
export function ifIndex(name: string): number {
  const index = libc().if_nametoindex(name);
  if (index === 0) {
    throw new BpfError(`if_nametoindex(${name})`, koffi.errno() || 19, { hint: `no interface named ${name}: check \`ip link\`` });
  }
  return index;
}

const nameBuf = Buffer.alloc(16); // IF_NAMESIZE

/** Name of the interface with this index in this network namespace. */
export function ifName(index: number): string {
  checkPtr(libc().if_indextoname(index, nameBuf), `if_indextoname(${index})`, {
    hint: `no interface with index ${index}: check \`ip link\``,
  });
  const end = nameBuf.indexOf(0);
  return nameBuf.toString('utf8', 0, end < 0 ? nameBuf.length : end);
}

function describeIf(ifindex: number): string {
  try {
    return `${ifName(ifindex)} (ifindex ${ifindex})`;
  } catch {
    return `ifindex ${ifindex}`;
  }
}

