/**
 * What the kernel says about a BPF fd (bpf_obj_get_info_by_fd), and closing fds.
 */
import koffi, { type TypeObject } from 'koffi';
import { check, checkErrno } from './errors.js';
import {
  bpf_link_info_xdp,
  bpf_map_info,
  bpf_prog_info,
  libbpf,
  libc,
  type BpfLinkInfoRaw,
  type BpfMapInfoRaw,
  type BpfProgInfoRaw,
} from './libbpf.js';

export interface MapInfo {
  id: number;
  name: string;
  /** enum bpf_map_type (see MapType) */
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** map_flags (BPF_F_*) */
  flags: number;
}

export interface ProgInfo {
  id: number;
  name: string;
  /** enum bpf_prog_type (see ProgType) */
  type: number;
}

export interface LinkInfo {
  id: number;
  /** enum bpf_link_type (6 = XDP) */
  type: number;
  progId: number;
  /** XDP links: the interface */
  ifindex: number;
}

const infoLen = new Uint32Array(1);

function getInfo<T>(fd: number, type: TypeObject, op: string): T {
  const buf = Buffer.alloc(type.size); // zeroed: pointer members must be 0
  infoLen[0] = type.size;
  check(libbpf().bpf_obj_get_info_by_fd(fd, buf, infoLen), op);
  return koffi.decode(buf, type) as T;
}

export function mapInfo(fd: number, what = `fd ${fd}`): MapInfo {
  const i = getInfo<BpfMapInfoRaw>(fd, bpf_map_info, `bpf_obj_get_info_by_fd(map ${what})`);
  return {
    id: i.id,
    name: i.name,
    type: i.type,
    keySize: i.key_size,
    valueSize: i.value_size,
    maxEntries: i.max_entries,
    flags: i.map_flags,
  };
}

export function progInfo(fd: number, what = `fd ${fd}`): ProgInfo {
  const i = getInfo<BpfProgInfoRaw>(fd, bpf_prog_info, `bpf_obj_get_info_by_fd(prog ${what})`);
  return { id: i.id, name: i.name, type: i.type };
}

export function linkInfo(fd: number, what = `fd ${fd}`): LinkInfo {
  const i = getInfo<BpfLinkInfoRaw>(fd, bpf_link_info_xdp, `bpf_obj_get_info_by_fd(link ${what})`);
  return { id: i.id, type: i.type, progId: i.prog_id, ifindex: i.ifindex };
}

/** close(2), throwing on failure (EBADF means a double close: a bug worth seeing). */
export function closeFd(fd: number, what = `fd ${fd}`): void {
  checkErrno(libc().close(fd), `close(${what})`);
}

/** Offsets in struct bpf_prog_info (UAPI): nr_map_ids (u32) and map_ids (u64 user pointer). */
const PROG_INFO_NR_MAP_IDS = 52;
const PROG_INFO_MAP_IDS = 56;

/** Ids of the maps a loaded program uses (at most `max`). */
export function progMapIds(fd: number, max = 64): number[] {
  const ids = new Uint32Array(max);
  const buf = Buffer.alloc(bpf_prog_info.size);
  buf.writeUInt32LE(max, PROG_INFO_NR_MAP_IDS);
  buf.writeBigUInt64LE(BigInt(koffi.address(ids) as unknown as bigint), PROG_INFO_MAP_IDS);
  infoLen[0] = bpf_prog_info.size;
  check(libbpf().bpf_obj_get_info_by_fd(fd, buf, infoLen), `bpf_obj_get_info_by_fd(prog fd ${fd}, map ids)`);
  const n = Math.min(buf.readUInt32LE(PROG_INFO_NR_MAP_IDS), max);
  return [...ids.subarray(0, n)];
}
