/**
 * RingBufferReader: records of a BPF_MAP_TYPE_RINGBUF map, drained on Node's event loop.
 *
 * libbpf's ring_buffer owns an epoll fd that becomes readable when the ring has data;
 * koffi.node.poll() watches that fd from libuv, and each wake-up runs ring_buffer__consume(),
 * which calls the sample callback once per record, synchronously, on the main thread. Nothing
 * ever blocks in JS. The callback copies the record out of the ring before returning (the
 * kernel may reuse the space right after), so onRecord gets a Buffer it may keep.
 */
import koffi from 'koffi';
import { BpfError, checkPtr } from './errors.js';
import { libbpf, ring_buffer_sample_fn, type Ptr } from './libbpf.js';
import { installLibbpfPrint } from './log.js';

export interface RingBufferOptions {
  /** Errors thrown by onRecord and ring failures; default: rethrown from the event loop
   * (an uncaught exception, as for any event handler). */
  onError?: (err: unknown) => void;
}

type PollHandle = ReturnType<typeof koffi.node.poll>;

/** sample callback return that stops ring_buffer__consume() */
const STOP = -125; // -ECANCELED

export class RingBufferReader {
  private rb: Ptr | null;
  private cb: Ptr | null;
  private readonly poll: PollHandle;
  private consuming = false;
  private closePending = false;
  private pendingError: unknown = undefined;
  private count = 0;

  constructor(
    mapFd: number,
    private readonly onRecord: (data: Buffer) => void,
    private readonly opts: RingBufferOptions = {},
  ) {
    installLibbpfPrint();
    const L = libbpf();
    const cb = koffi.register(
      (_ctx: Ptr | null, data: Ptr, size: number | bigint) => this.onSample(data, Number(size)),
      koffi.pointer(ring_buffer_sample_fn),
    );
    let rb: Ptr;
    try {
      rb = checkPtr(L.ring_buffer__new(mapFd, cb, null, null), `ring_buffer__new(fd ${mapFd})`);
    } catch (err) {
      koffi.unregister(cb);
      throw err;
    }
    this.cb = cb;
    this.rb = rb;
    const epfd = L.ring_buffer__epoll_fd(rb);
    let handle: PollHandle | null = null;
    let why = '';
    try {
      // koffi's PollHandle calls back with (status, events); the bundled typings say (events).
      handle = koffi.node.poll(epfd, ((status: number) => this.onPoll(status)) as unknown as () => void) as PollHandle | null;
    } catch (err) {
      why = `: ${(err as Error).message}`;
    }
    if (handle === null) {
      L.ring_buffer__free(rb);
      koffi.unregister(cb);
      throw new Error(`cannot watch ring buffer (map fd ${mapFd}) from the event loop${why}`);
    }
    this.poll = handle;
  }

  /** Records delivered so far. */
  get records(): number {
    return this.count;
  }

  get closed(): boolean {
    return this.rb === null || this.closePending;
  }

  /** Drain whatever is in the ring now (also done automatically on the event loop);
   * returns the number of records delivered. */
  consume(): number {
    const rb = this.rb;
    if (rb === null || this.closePending) return 0;
    const before = this.count;
    this.consuming = true;
    let n: number;
    try {
      n = libbpf().ring_buffer__consume(rb);
    } finally {
      this.consuming = false;
    }
    const stopped = this.closePending; // onSample returned STOP: n is that, not an error
    if (stopped) this.finishClose();
    const err = this.pendingError;
    this.pendingError = undefined;
    if (err !== undefined) this.report(err);
    if (n < 0 && !stopped) this.report(new BpfError('ring_buffer__consume', -n));
    return this.count - before;
  }

  /** Let the process exit even though the reader is open. */
  unref(): this {
    this.poll.unref();
    return this;
  }

  /** Undo unref(). */
  ref(): this {
    this.poll.ref();
    return this;
  }

  /** Stop watching, free the ring buffer, release the callback; idempotent, and safe from
   * inside onRecord (records after the current one stay in the ring). */
  close(): void {
    if (this.rb === null || this.closePending) return;
    this.poll.stop();
    if (this.consuming) {
      this.closePending = true;
      return;
    }
    this.finishClose();
  }

  private finishClose(): void {
    const rb = this.rb;
    if (rb === null) return;
    this.rb = null;
    this.closePending = false;
    this.poll.close();
    libbpf().ring_buffer__free(rb);
    if (this.cb !== null) koffi.unregister(this.cb);
    this.cb = null;
  }

  private onPoll(status: number): void {
    if (status < 0) {
      this.report(new Error(`polling the ring buffer failed (libuv status ${status})`));
      return;
    }
    this.consume();
  }

  private onSample(data: Ptr, size: number): number {
    if (this.closePending) return STOP;
    const copy = Buffer.allocUnsafe(size);
    copy.set(new Uint8Array(koffi.view(data, size)));
    this.count++;
    try {
      this.onRecord(copy);
    } catch (err) {
      this.pendingError ??= err;
    }
    // A negative return makes libbpf stop after this record (it stays consumed) and leave
    // the following ones in the ring.
    return this.closePending ? STOP : 0;
  }

  private report(err: unknown): void {
    if (this.opts.onError) this.opts.onError(err);
    else throw err;
  }
}
