// The knock client: resolves the gate's host, sends a door's knock as real packets, checks
// that the door opened, retries, and runs a command once it is open. No command-line parsing
// here (src/cli/commands/knock.ts does that).
//
// A door type maps to a sender (SENDERS below): `sequence` (fixed steps: a PORT/tcp step is a
// TCP SYN, a PORT/udp step a UDP datagram), `rotating` (the steps of the current time window,
// derived from a shared secret), `spa` and `signed` (one authenticated UDP datagram bound to
// the source address the gate sees) and `payload` (one UDP datagram or ICMP echo request
// carrying a byte string). The rest of the client (resolution, verification, retries, --then)
// does not depend on the door type. Key material is never part of a message.
import { spawn } from 'node:child_process';
import { dirname, resolve as resolvePath } from 'node:path';
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import type { KeyObject } from 'node:crypto';
import { connect, isIP } from 'node:net';
import { constants } from 'node:os';
import { setImmediate as nextLoop, setTimeout as sleep } from 'node:timers/promises';
import { suggest } from '../config/errors.js';
import { loadConfigFile } from '../config/load.js';
import type { DoorConfig, PortRange, Step } from '../config/model.js';
import { formatDuration } from '../config/duration.js';
import { formatRange, formatStep } from '../config/ports.js';
import { KeyFileError, encodeSigned, encodeSpa, keyIdOf, readPrivateKey, readSecretFile, rotatingSequence, windowBounds, windowOf } from '../knock/index.js';
import { parseAddress } from '../net/addr.js';
import { ICMP_PERMISSION_HINT, IcmpError, sendEchoRequest } from './icmp.js';

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

function errnoCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return typeof e?.code === 'string' ? e.code : err instanceof Error ? err.message : String(err);
}

/**
 * Resolves HOST with the system resolver (/etc/hosts, DNS), honouring family (-4/-6). A literal
 * address is used as is ("[2001:db8::1]" too); a literal of the other family is an error.
 */
export async function resolveHost(host: string, family?: Family): Promise<Target> {
  const literal = /^\[.*\]$/.test(host) ? host.slice(1, -1) : host;
  const literalFamily = isIP(literal);
  if (literalFamily === 4 || literalFamily === 6) {
    if (family !== undefined && family !== literalFamily) {
      throw new KnockError(`${host} is an IPv${literalFamily} address, but -${family} asks for IPv${family}: drop -${family} or give an IPv${family} address`);
    }
    return { host, address: literal, family: literalFamily };
  }
  if (host === '' || /\s/.test(host)) throw new KnockError(`${JSON.stringify(host)} is not a host name or address`);
  try {
    const r = await lookup(host, { family: family ?? 0 });
    return { host, address: r.address, family: r.family === 6 ? 6 : 4 };
  } catch (err) {
    const code = errnoCode(err);
    const which = family === undefined ? 'an address' : `an IPv${family} address`;
    const why = code === 'ENOTFOUND' || code === 'ENODATA'
      ? `no such host${family === undefined ? '' : ` with ${which} (-${family})`}`
      : code === 'EAI_AGAIN'
        ? 'the resolver did not answer (temporary failure): check the network and /etc/resolv.conf, or give an address'
        : code;
    throw new KnockError(`cannot resolve ${host} to ${which}: ${why}`);
  }
}

// ---- door types -------------------------------------------------------------------------

/** A fixed knock sequence: the same steps every time. */
export interface SequenceDoor {
  type: 'sequence';
  /** the door's name in the config, null for a sequence given on the command line */
  name: string | null;
  sequence: readonly Step[];
}

/**
 * A rotating sequence: the steps of time window w = floor(unixMs / windowMs) are derived from
 * the secret and the door's name (src/knock/rotating.ts); each step is a port of `range`.
 */
export interface RotatingDoor {
  type: 'rotating';
  /** the door's name at the gate: part of the derivation */
  name: string;
  secret: Buffer;
  range: PortRange;
  length: number;
  windowMs: number;
}

/** Single-packet authorization: one 40-byte UDP datagram to port with a SipHash-2-4 MAC. */
export interface SpaDoor {
  type: 'spa';
  name: string;
  port: number;
  /** the door's 16-byte SipHash key */
  key: Buffer;
}

/** One 112-byte UDP datagram to port, signed with the client's Ed25519 private key. */
export interface SignedDoor {
  type: 'signed';
  name: string;
  port: number;
  privateKey: KeyObject;
}

/** One UDP datagram to port (proto udp) or ICMP/ICMPv6 echo request (proto icmp, port 0) carrying payload. */
export interface PayloadDoor {
  type: 'payload';
  /** null for a door given on the command line without a name */
  name: string | null;
  proto: 'udp' | 'icmp';
  port: number;
  payload: Buffer;
}

/** Every door type the client can knock on. */
export type KnockDoor = SequenceDoor | RotatingDoor | SpaDoor | SignedDoor | PayloadDoor;

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

/** A sender may return what it actually sent when that differs from describeKnock (a rotating window). */
type Sender<D extends KnockDoor> = (target: Target, door: D, opts: SendOptions) => Promise<string | void>;

/** One sender per door type; the mapped type makes a new door type without a sender a compile error. */
const SENDERS: { [T in KnockDoor['type']]: Sender<Extract<KnockDoor, { type: T }>> } = {
  sequence: sendSequence,
  rotating: sendRotating,
  spa: sendSpa,
  signed: sendSigned,
  payload: sendPayload,
};

/**
 * Sends one complete knock for the door. Throws KnockError when a packet cannot be sent.
 * Resolves with a description of what was sent when it differs from describeKnock(door).
 */
export function sendKnock(target: Target, door: KnockDoor, opts: SendOptions): Promise<string | void> {
  const send = SENDERS[door.type] as Sender<KnockDoor>;
  return send(target, door, opts);
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

/**
 * What a knock on this door looks like, for messages: "7000/tcp 8000/udp 9000/tcp",
 * "SPA datagram to 62201/udp". Never shows key material. A rotating door shows the window of
 * nowMs.
 */
export function describeKnock(door: KnockDoor, nowMs: number = Date.now()): string {
  switch (door.type) {
    case 'sequence':
      return door.sequence.map(formatStep).join(' ');
    case 'rotating':
      return describeRotating(door, windowOf(nowMs, door.windowMs));
    case 'spa':
      return `SPA datagram to ${door.port}/udp`;
    case 'signed':
      return `signed datagram to ${door.port}/udp (key id ${keyIdOf(door.privateKey).toString('hex')})`;
    case 'payload':
      return door.proto === 'icmp'
        ? `ICMP echo request with a ${door.payload.length}-byte payload`
        : `UDP datagram to ${door.port}/udp with a ${door.payload.length}-byte payload`;
  }
}

function describeRotating(door: RotatingDoor, w: bigint): string {
  return `rotating sequence of window ${w} (${plural(door.length, 'step')} in ${formatRange(door.range)})`;
}

async function sendSequence(target: Target, door: SequenceDoor, opts: SendOptions): Promise<void> {
  await sendSteps(target, door.sequence, opts.delayMs);
}

async function sendSteps(target: Target, steps: readonly Step[], delayMs: number): Promise<void> {
  for (const [i, step] of steps.entries()) {
    if (i > 0 && delayMs > 0) await sleep(delayMs);
    try {
      await sendStep(target, step);
    } catch (err) {
      throw new KnockError(`could not send ${formatStep(step)} to ${target.address}: ${errnoCode(err)}`);
    }
  }
}

/** A rotating knock starts only when the window has at least length * delay + this left. */
export const WINDOW_MARGIN_MS = 500;

/**
 * Sends the steps of the current window. When the window ends before the whole sequence could
 * arrive (less than length * delay + WINDOW_MARGIN_MS left), waits for the next window and
 * sends its sequence instead, saying so through onNote.
 */
async function sendRotating(target: Target, door: RotatingDoor, opts: SendOptions): Promise<string> {
  const t = (opts.now ?? Date.now)();
  let w = windowOf(t, door.windowMs);
  const leftMs = windowBounds(w, door.windowMs).endMs - t;
  const needMs = door.length * opts.delayMs + WINDOW_MARGIN_MS;
  // (a knock longer than a window straddles a boundary whenever it starts: no use waiting)
  if (leftMs < needMs && needMs < door.windowMs) {
    opts.onNote?.(`window ${w} ends in ${formatDuration(leftMs)}, too soon for ${plural(door.length, 'knock')}: waiting for window ${w + 1n}`);
    await sleep(leftMs);
    w += 1n;
  }
  const ports = rotatingSequence(door.secret, door.name, w, door.range, door.length);
  await sendSteps(target, ports.map((port) => ({ port, proto: door.range.proto })), opts.delayMs);
  return describeRotating(door, w);
}

async function sendSpa(target: Target, door: SpaDoor, opts: SendOptions): Promise<void> {
  await sendBound(target, door.port, 'the SPA datagram', opts.source, (source) =>
    encodeSpa({ key: door.key, door: door.name, source, time: Math.floor((opts.now ?? Date.now)() / 1000) }),
  );
}

async function sendSigned(target: Target, door: SignedDoor, opts: SendOptions): Promise<void> {
  await sendBound(target, door.port, 'the signed datagram', opts.source, (source) =>
    encodeSigned({ privateKey: door.privateKey, door: door.name, source, time: Math.floor((opts.now ?? Date.now)() / 1000) }),
  );
}

async function sendPayload(target: Target, door: PayloadDoor): Promise<void> {
  if (door.proto === 'udp') {
    try {
      await sendUdp(target, door.port, door.payload);
    } catch (err) {
      throw new KnockError(`could not send the UDP datagram to ${endpoint(target.address, door.port)}/udp: ${errnoCode(err)}`);
    }
    return;
  }
  try {
    await sendEchoRequest(target, door.payload);
  } catch (err) {
    // the errno's name, or what to do when no ICMP socket may be opened
    const why = err instanceof IcmpError && err.message !== ICMP_PERMISSION_HINT ? err.code : err instanceof Error ? err.message : String(err);
    throw new KnockError(`could not send the ICMP echo request to ${target.address}: ${why}`);
  }
}

/** The 16-byte form (IPv4 mapped) of a local socket address such as "192.0.2.7" or "fe80::1%eth0". */
function sourceBytes(local: string): Buffer {
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

export interface Probe {
  open: boolean;
  /** when not open: "timeout" or an errno code such as ECONNREFUSED */
  error?: string;
  ms: number;
}

/** Tries a TCP connection to target:port; open when the handshake completes within timeoutMs. */
export function probeTcp(target: Target, port: number, timeoutMs: number): Promise<Probe> {
  const start = performance.now();
  const elapsed = (): number => Math.round(performance.now() - start);
  return new Promise((resolve) => {
    const sock = connect({ host: target.address, port, family: target.family });
    const finish = (p: Probe): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(p);
    };
    const timer = setTimeout(() => finish({ open: false, error: 'timeout', ms: elapsed() }), timeoutMs);
    sock.once('connect', () => finish({ open: true, ms: elapsed() }));
    sock.once('error', (err) => finish({ open: false, error: errnoCode(err), ms: elapsed() }));
  });
}

// ---- doors from the config ------------------------------------------------------------

export interface KeyFileOptions {
  /** spa: the key file to use instead of the config's key_file; signed: the client's private key (required) */
  keyFile?: string;
  /** rotating: the secret file to use instead of the config's secret_file */
  secretFile?: string;
}

/** Reads a key file; a KeyFileError (which says what to do, never what the file holds) becomes a KnockError. */
async function readKey<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof KeyFileError) throw new KnockError(err.message);
    throw err;
  }
}

/** A rotating door's shared secret (16..64 bytes of hex in a file private to its owner). Throws KnockError. */
export function loadRotatingSecret(path: string): Promise<Buffer> {
  return readKey(() => readSecretFile(path, { minBytes: 16, maxBytes: 64 }));
}

/** An spa door's 16-byte SipHash key (hex in a file private to its owner). Throws KnockError. */
export function loadSpaKey(path: string): Promise<Buffer> {
  return readKey(() => readSecretFile(path, { bytes: 16 }));
}

/** The client's Ed25519 private key for signed doors (PKCS#8 PEM, private to its owner). Throws KnockError. */
export function loadPrivateKey(path: string): Promise<KeyObject> {
  return readKey(() => readPrivateKey(path));
}

function specOf<S>(door: DoorConfig, spec: S | undefined): S {
  if (spec === undefined) throw new Error(`door ${door.name} is of type ${door.type} but has no ${door.type} settings`);
  return spec;
}

/**
 * The door to knock on for a door of the config, reading its key files (which must be private
 * to their owner). A signed door needs the client's private key (opts.keyFile): the config
 * holds only the public keys. Throws KnockError for a key file that cannot be used.
 */
export async function knockDoorOf(door: DoorConfig, opts: KeyFileOptions = {}): Promise<KnockDoor> {
  const { name } = door;
  switch (door.type) {
    case 'sequence':
      return { type: 'sequence', name, sequence: door.sequence };
    case 'rotating': {
      const spec = specOf(door, door.rotating);
      const secret = await loadRotatingSecret(opts.secretFile ?? spec.secretFile);
      return { type: 'rotating', name, secret, range: spec.range, length: spec.length, windowMs: spec.windowMs };
    }
    case 'spa': {
      const spec = specOf(door, door.spa);
      const key = await loadSpaKey(opts.keyFile ?? spec.keyFile);
      return { type: 'spa', name, port: spec.port, key };
    }
    case 'signed': {
      const spec = specOf(door, door.signed);
      const keyFile = opts.keyFile;
      if (keyFile === undefined) {
        throw new KnockError(
          `door ${name} is a signed door and the config holds only the public keys of its clients: pass your private key with --key-file FILE (made by \`knockgate keygen FILE\`)`,
        );
      }
      const privateKey = await loadPrivateKey(keyFile);
      return { type: 'signed', name, port: spec.port, privateKey };
    }
    case 'payload': {
      const spec = specOf(door, door.payload);
      return { type: 'payload', name, proto: spec.proto, port: spec.port, payload: spec.payload };
    }
  }
}

/** The door's first protected TCP port (the first port of its first TCP range), or null. */
export function checkPortOf(door: DoorConfig): number | null {
  return door.protects.find((r) => r.proto === 'tcp')?.first ?? null;
}

/**
 * Loads the config and finds the door. Throws ConfigError for an unreadable or invalid file
 * and KnockError when the door is not in it (listing the doors it has).
 */
export async function findDoor(path: string, name: string): Promise<DoorConfig> {
  const cfg = await loadConfigFile(path);
  const found = cfg.doors.find((d) => d.name === name);
  if (found !== undefined && cfg.file !== null) {
    // Key files are named relative to the config file's directory, as the daemon reads them.
    const base = dirname(cfg.file);
    if (found.rotating) return { ...found, rotating: { ...found.rotating, secretFile: resolvePath(base, found.rotating.secretFile) } };
    if (found.spa) return { ...found, spa: { ...found.spa, keyFile: resolvePath(base, found.spa.keyFile) } };
  }
  if (found === undefined) {
    const names = cfg.doors.map((d) => d.name);
    const near = suggest(name, names);
    throw new KnockError(
      `${path} has no door named ${JSON.stringify(name)}${near !== null ? ` (did you mean ${near}?)` : ''}: its doors are ${names.join(', ')}`,
    );
  }
  return found;
}

/**
 * The door `name` of the config file, ready to knock on (key files read), and its check port.
 * Throws ConfigError for an unreadable or invalid file, KnockError for an unknown door or a key
 * file that cannot be used.
 */
export async function doorFromConfigFile(path: string, name: string, opts: KeyFileOptions = {}): Promise<{ door: KnockDoor; checkPort: number | null }> {
  const found = await findDoor(path, name);
  return { door: await knockDoorOf(found, opts), checkPort: checkPortOf(found) };
}

// ---- knock, verify, retry -----------------------------------------------------------------

export interface KnockOptions extends SendOptions {
  /** knocks after the first one when the check fails */
  retries: number;
  /** TCP port that answers once the door is open; null: the knock cannot be verified */
  checkPort: number | null;
  checkTimeoutMs: number;
  /** pause before knocking again */
  retryPauseMs: number;
  /** called after each attempt (for progress lines) */
  onAttempt?: (attempt: Attempt, result: KnockResult) => void;
}

export const KNOCK_DEFAULTS = {
  delayMs: 100,
  retries: 0,
  checkTimeoutMs: 2_000,
  retryPauseMs: 1_000,
} as const;

export interface Attempt {
  /** 1-based */
  attempt: number;
  /** false when a packet could not be sent */
  sent: boolean;
  /** true: the check port answered; false: it did not; null: not checked */
  open: boolean | null;
  /** how long the check took */
  checkMs?: number;
  /** why the knock could not be sent or the check failed */
  error?: string;
}

export interface KnockResult {
  /** the door is open, or the knock was sent and cannot be verified */
  ok: boolean;
  /** true: verified open; false: not open after every attempt; null: could not verify */
  open: boolean | null;
  host: string;
  address: string;
  family: Family;
  type: KnockDoor['type'];
  door: string | null;
  knock: string;
  check: { port: number; proto: 'tcp'; timeoutMs: number } | null;
  /** attempts allowed: 1 + retries when verifiable, else 1 */
  tries: number;
  attempts: Attempt[];
}

/**
 * Knocks on the door at target; when a check port is known, checks that it opened and knocks
 * again (up to `retries` more times) if it did not. Without a check port it knocks once.
 */
export async function knock(target: Target, door: KnockDoor, opts: KnockOptions): Promise<KnockResult> {
  const tries = opts.checkPort === null ? 1 : 1 + opts.retries;
  const result: KnockResult = {
    ok: false,
    open: null,
    host: target.host,
    address: target.address,
    family: target.family,
    type: door.type,
    door: door.name,
    knock: describeKnock(door, (opts.now ?? Date.now)()),
    check: opts.checkPort === null ? null : { port: opts.checkPort, proto: 'tcp', timeoutMs: opts.checkTimeoutMs },
    tries,
    attempts: [],
  };
  for (let n = 1; n <= tries; n++) {
    if (n > 1) await sleep(opts.retryPauseMs);
    const attempt: Attempt = { attempt: n, sent: false, open: null };
    try {
      const sent = await sendKnock(target, door, opts);
      if (typeof sent === 'string') result.knock = sent;
      attempt.sent = true;
    } catch (err) {
      if (!(err instanceof KnockError)) throw err;
      attempt.error = err.message;
    }
    if (attempt.sent && opts.checkPort !== null) {
      const probe = await probeTcp(target, opts.checkPort, opts.checkTimeoutMs);
      attempt.open = probe.open;
      attempt.checkMs = probe.ms;
      if (probe.error !== undefined) attempt.error = probe.error;
    }
    result.attempts.push(attempt);
    result.open = opts.checkPort === null ? null : attempt.open === true;
    result.ok = attempt.sent && (opts.checkPort === null || attempt.open === true);
    opts.onAttempt?.(attempt, result);
    if (result.ok) break;
  }
  return result;
}

function hostText(r: Pick<KnockResult, 'host' | 'address'>): string {
  return r.host === r.address ? r.address : `${r.host} (${r.address})`;
}

function endpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** One line per attempt, for a person: "knock 1/2: ssh (7000/tcp ...) to gw (198.18.0.1): 198.18.0.1:22/tcp is open (3 ms)". */
export function formatAttempt(a: Attempt, r: KnockResult): string {
  const head = `knock ${a.attempt}/${r.tries}: ${r.door === null ? r.knock : `door ${r.door} (${r.knock})`} to ${hostText(r)}`;
  if (!a.sent) return `${head}: ${a.error ?? 'not sent'}`;
  if (r.check === null) return `${head}: sent; not verified: no TCP port to check (pass --check PORT)`;
  const where = `${endpoint(r.address, r.check.port)}/tcp`;
  if (a.open === true) return `${head}: ${where} is open (${a.checkMs ?? 0} ms)`;
  const why = a.error === 'timeout' ? `did not answer within ${formatDuration(r.check.timeoutMs)}` : `did not open (${a.error ?? 'unknown'})`;
  return `${head}: ${where} ${why}`;
}

/** The message when the door did not open: what was tried and what to look at. */
export function formatFailure(r: KnockResult): string {
  const n = `${r.attempts.length} attempt${r.attempts.length === 1 ? '' : 's'}`;
  const last = r.attempts.at(-1);
  if (last !== undefined && !last.sent) return `the knock could not be sent after ${n}: ${last.error ?? ''}`;
  const where = r.check === null ? '' : ` (${endpoint(r.address, r.check.port)}/tcp still closed)`;
  return `the door did not open after ${n}${where}: check ${CHECK_HINTS[r.type]}, the host and that the gate lets this source knock`;
}

/** What to check first when a door of this type did not open. */
const CHECK_HINTS: { [T in KnockDoor['type']]: string } = {
  sequence: 'the sequence',
  rotating: 'the secret, the range, the length and the window (they must match the gate\'s), the clocks of both hosts',
  spa: 'the key (the gate\'s key_file), the clocks of both hosts (max_skew), --source behind a NAT',
  signed: 'that your public key is among the door\'s clients, the clocks of both hosts (max_skew), --source behind a NAT',
  payload: 'the payload and how it is sent (UDP port or ICMP)',
};

// ---- --then -------------------------------------------------------------------------------

/**
 * Runs `command` through /bin/sh with inherited stdio and resolves with its exit code
 * (128 + signal number when a signal ended it). While it runs this process ignores SIGINT
 * and SIGQUIT (they reach the child from the terminal, as with system(3)) and forwards
 * SIGTERM and SIGHUP to it.
 */
export function runThen(command: string, env: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, { shell: true, stdio: 'inherit', env: { ...process.env, ...env } });
    const ignore = (): void => undefined;
    const forward = (sig: NodeJS.Signals): void => {
      child.kill(sig);
    };
    process.on('SIGINT', ignore).on('SIGQUIT', ignore).on('SIGTERM', forward).on('SIGHUP', forward);
    const cleanup = (): void => {
      process.off('SIGINT', ignore).off('SIGQUIT', ignore).off('SIGTERM', forward).off('SIGHUP', forward);
    };
    child.once('error', (err) => {
      cleanup();
      reject(new KnockError(`cannot run the --then command ${JSON.stringify(command)}: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      cleanup();
      resolve(code ?? 128 + (signal === null ? 0 : (constants.signals[signal] ?? 0)));
    });
  });
}
