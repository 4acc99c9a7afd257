/**
 * knockgate's binding to libbpf.so.1 (through koffi): one module per concern.
 *
 *   libbpf.ts   raw declarations and constants     errors.ts  BpfError, check helpers
 *   log.ts      libbpf's log -> pino               object.ts  BpfObject (open/load/close)
 *   map.ts      BpfMap (element operations)        mmap.ts    mmapMap (globals in place)
 *   link.ts     XDP bpf_links, xdpQuery, ifIndex   ringbuf.ts RingBufferReader
 *   testrun.ts  BPF_PROG_TEST_RUN                  pin.ts     bpffs and pins
 *   sync.ts     waitForPrograms (synchronize_rcu)  info.ts    bpf_obj_get_info_by_fd
 *   libxdp.ts   libxdp.so.1: the multi-program dispatcher (XdpProgram, multiprogState)
 */
export { BpfError, check, checkErrno, checkPtr, errnoName, errnoNumber, isBpfError, type BpfErrorDetails } from './errors.js';
export { closeFd, linkInfo, mapInfo, progInfo, progMapIds, type LinkInfo, type MapInfo, type ProgInfo } from './info.js';
export {
  BPF_ANY,
  BPF_EXIST,
  BPF_F_LOCK,
  BPF_F_MMAPABLE,
  BPF_F_NO_PREALLOC,
  BPF_NOEXIST,
  MapType,
  ProgType,
} from './libbpf.js';
export { attachXdp, BpfLink, ifIndex, ifName, xdpQuery, type XdpAttachMode, type XdpMode, type XdpQueryResult } from './link.js';
export { bindingLogger, captureLibbpfLog, installLibbpfPrint, setLibbpfLogger } from './log.js';
export { BpfMap, MapLayoutError, numPossibleCpus, type CreateMapOptions, type FromFdOptions } from './map.js';
export { mmapMap, type MmapRegion } from './mmap.js';
export { BpfObject } from './object.js';
export { ensureBpffs, isBpffs, makePinDir, removePinTree, unpin } from './pin.js';
export { RingBufferReader, type RingBufferOptions } from './ringbuf.js';
export { waitForPrograms } from './sync.js';
export { progTestRun, type TestRunOptions, type TestRunResult } from './testrun.js';
export {
  MAX_DISPATCHER_PROGRAMS,
  XDP_MODE_NATIVE,
  XDP_MODE_SKB,
  XDP_MODE_UNSPEC,
  XdpProgram,
  detachPrograms,
  libxdpUnavailable,
  modeNumber,
  multiprogState,
  type DispatcherMode,
  type MultiprogState,
  type XdpProgramInfo,
} from './libxdp.js';
