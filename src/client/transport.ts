// The client's transport: sends knock packets (TCP SYNs, UDP datagrams, datagrams bound to the
// source address the gate sees) to a resolved target. The door modules (src/doors/) build their
// knocks from these; src/client/knock.ts resolves, verifies and retries.
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { setImmediate as nextLoop, setTimeout as sleep } from 'node:timers/promises';
import type { Step } from '../config/model.js';
import { formatStep } from '../config/ports.js';
import { KeyFileError } from '../knock/index.js';
import { parseAddress } from '../net/addr.js';

/** A failure whose message is for the user (cannot resolve, no such door, cannot run --then). */
export class KnockError extends Error {
  override readonly name = 'KnockError';
}

export type Family = 4 | 6;

/** Where the knocks go: the host as given and the one address every packet is sent to. */
export interface Target {
  host: string;
  address: string;
  family: Family;
}

export function errnoCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return typeof e?.code === 'string' ? e.code : err instanceof Error ? err.message : String(err);
}


export interface SendOptions {
  /** pause between two packets of one knock */
  delayMs: number;
  /**
   * spa/signed: the source address the gate sees (16 bytes, IPv4 mapped), when it is not the
   * local address of the route to the gate (NAT). Default: that local address.
   */
  source?: Buffer;
  /** the clock, in UNIX milliseconds (tests); default Date.now */
  now?: () => number;
  /** told about waits and choices a person may wonder about (rotating: waiting for the next window) */
  onNote?: (note: string) => void;
}


export function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}


export async function sendSteps(target: Target, steps: readonly Step[], delayMs: number): Promise<void> {
  for (const [i, step] of steps.entries()) {
    if (i > 0 && delayMs > 0) await sleep(delayMs);
    try {
      await sendStep(target, step);
    } catch (err) {
      throw new KnockError(`could not send ${formatStep(step)} to ${target.address}: ${errnoCode(err)}`);
    }
  }
}


/** The 16-byte form (IPv4 mapped) of a local socket address such as "192.0.2.7" or "fe80::1%eth0". */
export function sourceBytes(local: string): Buffer {
  return parseAddress(local.replace(/%.*$/, ''));
}

/**
 * Sends one datagram built for the source address the gate will see: `source` when given, else
 * the local address of the route to target (a connect()ed UDP socket's address, without
 * sending anything first).
 */
async function sendBound(target: Target, port: number, what: string, source: Buffer | undefined, build: (source: Buffer) => Buffer): Promise<void> {
  const sock = createSocket(target.family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(port, target.address, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    const msg = build(source ?? sourceBytes(sock.address().address));
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.send(msg, (err) => (err ? reject(err) : resolve()));
    });
  } catch (err) {
    throw new KnockError(`could not send ${what} to ${endpoint(target.address, port)}/udp: ${errnoCode(err)}`);
  } finally {
    sock.close();
  }
}

/**
 * Sends one authenticated knock datagram (spa, signed): built for the source address the gate
 * sees (opts.source, or the route's local address) and the clock in UNIX seconds.
 */
export function sendSignedDatagram(target: Target, port: number, what: string, opts: SendOptions, build: (source: Buffer, time: number) => Buffer): Promise<void> {
  return sendBound(target, port, what, opts.source, (source) => build(source, Math.floor((opts.now ?? Date.now)() / 1000)));
}

export function sendStep(target: Target, step: Step): Promise<void> {
  return step.proto === 'tcp' ? sendTcpSyn(target, step.port) : sendUdp(target, step.port);
}

const SENT_ANYWAY = new Set(['ECONNREFUSED', 'ECONNRESET']);

/**
 * Sends one TCP SYN: a non-blocking connect() puts the SYN on the wire at once; the socket is
 * then closed, which in SYN_SENT sends nothing more (no retransmission, no RST).
 */
export async function sendTcpSyn(target: Target, port: number): Promise<void> {
  const sock = connect({ host: target.address, port, family: target.family });
  let failure: unknown = null;
  sock.on('error', (err) => {
    failure ??= err;
  });
  try {
    // Node calls connect(2) on the next tick for a literal address; 'connectionAttempt' fires
    // just before it (Node >= 20.12). The timer covers older Nodes: the tick has long run by then.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, 20);
      function done(): void {
        clearTimeout(timer);
        sock.off('connectionAttempt', done).off('connect', done).off('error', done);
        resolve();
      }
      sock.once('connectionAttempt', done).once('connect', done).once('error', done);
    });
    await nextLoop(); // connect(2) runs right after 'connectionAttempt'; an immediate failure is emitted on the tick after it
    // A refusal (RST) or reset can only answer a SYN that left: the knock was sent.
    if (failure !== null && !SENT_ANYWAY.has(errnoCode(failure))) throw failure;
  } finally {
    sock.destroy();
  }
}

const UDP_PAYLOAD = Buffer.from('knockgate\n');

/** Sends one UDP datagram (a small fixed one unless payload is given). */
export async function sendUdp(target: Target, port: number, payload: Buffer = UDP_PAYLOAD): Promise<void> {
  const sock = createSocket(target.family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.send(payload, port, target.address, (err) => (err ? reject(err) : resolve()));
    });
  } finally {
    sock.close();
  }
}

/** Reads a key file; a KeyFileError (which says what to do, never what the file holds) becomes a KnockError. */
export async function readKey<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof KeyFileError) throw new KnockError(err.message);
    throw err;
  }
}


export function endpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

