/**
 * waitForPrograms: from user space, wait until every BPF program that may be running right
 * now has finished.
 *
 * How: update element 0 of a 1-entry BPF_MAP_TYPE_ARRAY_OF_MAPS. After an update (or delete)
 * of a map-in-map, the bpf(2) syscall calls maybe_wait_bpf_programs() (kernel/bpf/syscall.c),
 * which calls synchronize_rcu() so that "userspace, when we return to it, knows that all
 * non-sleepable programs that could be running use the new map value". XDP programs run
 * inside an RCU read-side critical section (NAPI / softirq), so when the syscall returns,
 * every XDP program that started before it has returned. Sleepable programs are not waited
 * for (the kernel does not, either); knockgate has none.
 *
 * knockgate uses it after flipping the active rules generation: once this returns, no packet
 * is still judged against the old generation, which may then be rewritten.
 *
 * The two maps (the outer array and a tiny inner array it points to) are created on first
 * use and kept for the life of the process. A call costs one synchronize_rcu(): typically a
 * few milliseconds, more on a busy machine.
 */
import { MapType } from './libbpf.js';
import { BpfMap } from './map.js';

let outer: BpfMap | null = null;
let inner: BpfMap | null = null;
const key = Buffer.alloc(4);
const value = Buffer.alloc(4);

export function waitForPrograms(): void {
  if (outer === null || inner === null) {
    const i = BpfMap.create(MapType.ARRAY, 'kg_sync_inner', 4, 4, 1);
    try {
      outer = BpfMap.create(MapType.ARRAY_OF_MAPS, 'kg_sync', 4, 4, 1, { innerMapFd: i.fd });
    } catch (err) {
      i.close();
      throw err;
    }
    inner = i;
  }
  value.writeUInt32LE(inner.fd, 0);
  outer.update(key, value); // returns after synchronize_rcu()
}
