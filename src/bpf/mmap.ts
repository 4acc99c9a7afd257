/**
 * mmapMap: map the values of an mmapable array map (BPF_F_MMAPABLE; libbpf creates the
 * .bss/.data maps that way) into the process, MAP_SHARED and read-write, so that user space
 * reads and writes single words of the program's globals in place: one aligned store, no
 * read-modify-write of the whole value, and the program sees it at once (and vice versa).
 *
 * The mapping covers roundup(valueSize, 8) * maxEntries bytes rounded up to the page size
 * (what the kernel's array_map_mmap allows). `view` and `bytes` are getters that throw once
 * the region is closed; a DataView kept from before close() must not be used (its memory is
 * unmapped and koffi's external ArrayBuffers cannot be detached).
 */
import koffi from 'koffi';
import { BpfError, checkErrno } from './errors.js';
import { BPF_F_MMAPABLE, MAP_SHARED, MapType, PROT_READ, PROT_WRITE, libc, type Ptr } from './libbpf.js';
import type { BpfMap } from './map.js';

const MAP_FAILED = 0xffffffffffffffffn;

export interface MmapRegion {
  /** DataView over the mapping (little-endian host: pass `true` for littleEndian) */
  readonly view: DataView;
  /** the same bytes as a Uint8Array */
  readonly bytes: Uint8Array;
  /** bytes of map values: roundup(valueSize, 8) * maxEntries */
  readonly size: number;
  /** bytes mapped (size rounded up to the page size) */
  readonly length: number;
  readonly closed: boolean;
  /** munmap; idempotent */
  close(): void;
}

export function mmapMap(map: BpfMap): MmapRegion {
  if (map.type !== MapType.ARRAY || (map.flags & BPF_F_MMAPABLE) === 0) {
    throw new TypeError(
      `map ${map.name} cannot be mmapped: only array maps created with BPF_F_MMAPABLE can ` +
        `(type ${map.type}, flags 0x${map.flags.toString(16)})`,
    );
  }
  const { mmap, munmap, getpagesize } = libc();
  const size = ((map.valueSize + 7) & ~7) * map.maxEntries;
  const page = getpagesize();
  const length = Math.ceil(size / page) * page;
  const ptr = mmap(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, map.fd, 0);
  if (ptr === null || ptr === MAP_FAILED) {
    throw new BpfError(`mmap(${map.name})`, koffi.errno(), { hint: 'a frozen (read-only) map cannot be mapped for writing' });
  }
  return new Region(map.name, ptr, size, length, munmap);
}

class Region implements MmapRegion {
  private ptr: Ptr | null;
  private readonly dv: DataView;
  private readonly u8: Uint8Array;

  constructor(
    private readonly name: string,
    ptr: Ptr,
    readonly size: number,
    readonly length: number,
    private readonly munmap: (addr: Ptr, length: number) => number,
  ) {
    this.ptr = ptr;
    const ab = koffi.view(ptr, length);
    this.dv = new DataView(ab);
    this.u8 = new Uint8Array(ab);
  }

  get view(): DataView {
    this.open();
    return this.dv;
  }

  get bytes(): Uint8Array {
    this.open();
    return this.u8;
  }

  get closed(): boolean {
    return this.ptr === null;
  }

  close(): void {
    const ptr = this.ptr;
    if (ptr === null) return;
    this.ptr = null;
    checkErrno(this.munmap(ptr, this.length), `munmap(${this.name})`);
  }

  private open(): void {
    if (this.ptr === null) throw new Error(`the mapping of map ${this.name} is closed`);
  }
}
