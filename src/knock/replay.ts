// A replay cache that outlives the process: the digests of the knocks a door accepted, each
// kept until the knock could no longer pass the door's clock check. The daemon keeps one per
// door (fwknop doors key it by fwknopDigest) in a small append-only file, so that neither a
// reload nor a restart lets a captured datagram in again. Fleet mode puts a fleet-wide claim in
// front of it later; both answer the same question through ReplayGuard.claim().
//
// The file is text, one record a line, written before claim() says yes (and synced), so a crash
// can lose a record only of a claim that never returned:
//
//   knockgate-replay v1          header
//   <expires ms> <digest>        one per accepted knock; digests are base64 or hex, no spaces
//
// A torn last line (a crash mid-write) is skipped on load; any other unreadable line makes the
// file refused as a whole, since a cache we cannot trust must not be half-trusted. When expired
// records outnumber live ones the file is rewritten (a fresh file renamed over the old one).
import { constants } from 'node:fs';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { checkPrivateMode } from './keys.js';

const HEADER = 'knockgate-replay v1';
const DIGEST = /^[A-Za-z0-9+/=_-]{8,128}$/;

/** What a claim found. */
export type ClaimResult = 'claimed' | 'replay' | 'full';

/** Answers "has this knock been accepted before?" and records it if not, atomically. */
export interface ReplayGuard {
  /**
   * 'claimed' when the digest is new: it is recorded (durably) until expiresAtMs. 'replay' when
   * it is recorded and unexpired. 'full' when no record can be added (refuse the knock). Throws
   * when the record cannot be written (refuse the knock: the gate fails closed).
   */
  claim(digest: string, expiresAtMs: number, nowMs?: number): Promise<ClaimResult>;
}

export class ReplayCacheError extends Error {
  override readonly name = 'ReplayCacheError';
}

export interface ReplayCacheOptions {
  /** most live records; a claim past it answers 'full' (default 100000) */
  max?: number;
  /** clock for load-time expiry (tests) */
  nowMs?: number;
}

/** A replay cache in memory, mirrored to an append-only file. Create it with ReplayCache.open(). */
export class ReplayCache implements ReplayGuard {
  private readonly live = new Map<string, number>();
  private records = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    readonly path: string,
    private handle: FileHandle,
    private readonly max: number,
  ) {}

  /**
   * Opens (or creates, mode 0600, with its directory 0700) the cache file at path and loads its
   * unexpired records. A file readable by group or others, or not a cache file, is refused.
   */
  static async open(path: string, options: ReplayCacheOptions = {}): Promise<ReplayCache> {
    const max = options.max ?? 100_000;
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`a replay cache holds at least one record, not ${max}`);
    const now = options.nowMs ?? Date.now();
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    let handle: FileHandle;
    try {
      handle = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
    } catch (err) {
      throw new ReplayCacheError(`replay cache ${path} cannot be opened: ${(err as Error).message}`);
    }
    const cache = new ReplayCache(path, handle, max);
    try {
      checkPrivateMode(path, await handle.stat());
      const text = await handle.readFile({ encoding: 'utf8' });
      if (text === '') {
        await handle.appendFile(`${HEADER}\n`);
        await handle.sync();
      } else {
        cache.load(text, now);
        // Cut a torn last line off, so the next record starts on a line of its own.
        // (A header without its newline is whole: load() checked it.)
        if (!text.includes('\n')) await handle.appendFile('\n');
        else if (!text.endsWith('\n')) await handle.truncate(Buffer.byteLength(text.slice(0, text.lastIndexOf('\n') + 1)));
      }
      if (cache.records > 2 * cache.live.size + 1024) await cache.compact(now).catch(() => undefined);
    } catch (err) {
      await handle.close();
      if (err instanceof ReplayCacheError) throw err;
      throw new ReplayCacheError(`replay cache ${path}: ${(err as Error).message}`);
    }
    return cache;
  }

  private load(text: string, now: number): void {
    const lines = text.split('\n');
    if (lines[0] !== HEADER) throw new ReplayCacheError(`${this.path} is not a knockgate replay cache (its first line is not "${HEADER}"): move it away`);
    const last = lines.length - 1; // after the final "\n" comes "" (or a torn record)
    for (let i = 1; i <= last; i++) {
      const line = lines[i] ?? '';
      if (line === '') continue;
      const m = /^(\d{1,15}) (\S+)$/.exec(line);
      if (m === null || !DIGEST.test(m[2] ?? '')) {
        if (i === last) continue; // torn by a crash mid-write: its claim never returned
        throw new ReplayCacheError(`${this.path}:${i + 1}: not a replay record; the file is damaged: move it away (knocks accepted before are then accepted again until their timestamps expire)`);
      }
      this.records++;
      const expires = Number(m[1]);
      if (expires > now) this.live.set(m[2] ?? '', Math.max(expires, this.live.get(m[2] ?? '') ?? 0));
    }
  }

  /** Live records. */
  get size(): number {
    return this.live.size;
  }

  /** True when the digest is recorded and unexpired (no change). */
  has(digest: string, nowMs = Date.now()): boolean {
    const at = this.live.get(digest);
    return at !== undefined && at > nowMs;
  }

  claim(digest: string, expiresAtMs: number, nowMs = Date.now()): Promise<ClaimResult> {
    if (this.closed) return Promise.reject(new ReplayCacheError(`replay cache ${this.path} is closed`));
    if (!DIGEST.test(digest)) return Promise.reject(new RangeError('a replay digest is 8..128 base64 or hex characters'));
    if (!Number.isSafeInteger(expiresAtMs)) return Promise.reject(new RangeError(`a replay record expires at whole milliseconds, not ${expiresAtMs}`));
    // Decided synchronously, so two claims of one digest in flight cannot both win.
    if (this.has(digest, nowMs)) return Promise.resolve('replay');
    this.expire(nowMs);
    if (this.live.size >= this.max) return Promise.resolve('full');
    this.live.set(digest, expiresAtMs);
    const write = this.chain.then(async () => {
      try {
        await this.handle.appendFile(`${expiresAtMs} ${digest}\n`);
        await this.handle.datasync();
        this.records++;
      } catch (err) {
        this.live.delete(digest);
        throw new ReplayCacheError(`replay cache ${this.path} cannot be written: ${(err as Error).message}`);
      }
      // The record is written: a failed compaction leaves the old file, which still holds it.
      if (this.records > 2 * this.live.size + 1024) await this.compact(nowMs).catch(() => undefined);
      return 'claimed' as const;
    });
    this.chain = write.catch(() => undefined);
    return write;
  }

  private expire(nowMs: number): void {
    for (const [digest, at] of this.live) if (at <= nowMs) this.live.delete(digest);
  }

  /** Rewrites the file with the live records only (fresh file, synced, renamed over the old one). */
  private async compact(nowMs: number): Promise<void> {
    this.expire(nowMs);
    const tmp = `${this.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const body = [HEADER, ...[...this.live].map(([d, at]) => `${at} ${d}`)].join('\n') + '\n';
    let fresh: FileHandle | undefined;
    try {
      fresh = await open(tmp, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_APPEND, 0o600);
      await fresh.writeFile(body);
      await fresh.sync();
      await rename(tmp, this.path);
    } catch (err) {
      await fresh?.close();
      await unlink(tmp).catch(() => undefined);
      // The old file still holds every record: keep appending to it.
      throw new ReplayCacheError(`replay cache ${this.path} cannot be compacted: ${(err as Error).message}`);
    }
    const old = this.handle;
    this.handle = fresh;
    this.records = this.live.size;
    await old.close();
  }

  /** Waits for pending writes, then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.chain;
    await this.handle.close();
  }
}
