// The knock client: resolves the gate's host, sends a door's knock as real packets, checks
// that the door opened, retries, and runs a command once it is open. No command-line parsing
// here (src/cli/commands/knock.ts does that).
//
// A door type maps to a sender (SENDERS below): today only the fixed `sequence` type, where a
// PORT/tcp step is a TCP SYN and a PORT/udp step is a UDP datagram. Later door types (rotating
// sequences, single-packet authorization) add a member to KnockDoor and a sender; the rest of
// the client (resolution, verification, retries, --then) stays as it is.
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { connect, isIP } from 'node:net';
import { constants } from 'node:os';
import { setImmediate as nextLoop, setTimeout as sleep } from 'node:timers/promises';
import { suggest } from '../config/errors.js';
import { loadConfigFile } from '../config/load.js';
import type { DoorConfig, Step } from '../config/model.js';
import { formatDuration } from '../config/duration.js';
import { formatStep } from '../config/ports.js';

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

/** Every door type the client can knock on (rotating and SPA doors will join here). */
export type KnockDoor = SequenceDoor;

export interface SendOptions {
  /** pause between two packets of one knock */
  delayMs: number;
}

type Sender<D extends KnockDoor> = (target: Target, door: D, opts: SendOptions) => Promise<void>;

/** One sender per door type; the mapped type makes a new door type without a sender a compile error. */
const SENDERS: { [T in KnockDoor['type']]: Sender<Extract<KnockDoor, { type: T }>> } = {
  sequence: sendSequence,
};

/** Sends one complete knock for the door. Throws KnockError when a packet cannot be sent. */
export function sendKnock(target: Target, door: KnockDoor, opts: SendOptions): Promise<void> {
  const send = SENDERS[door.type] as Sender<KnockDoor>;
  return send(target, door, opts);
}

/** What a knock on this door looks like, for messages: "7000/tcp 8000/udp 9000/tcp". */
export function describeKnock(door: KnockDoor): string {
  switch (door.type) {
    case 'sequence':
      return door.sequence.map(formatStep).join(' ');
  }
}

async function sendSequence(target: Target, door: SequenceDoor, opts: SendOptions): Promise<void> {
  for (const [i, step] of door.sequence.entries()) {
    if (i > 0 && opts.delayMs > 0) await sleep(opts.delayMs);
    try {
      await sendStep(target, step);
    } catch (err) {
      throw new KnockError(`could not send ${formatStep(step)} to ${target.address}: ${errnoCode(err)}`);
    }
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

/** Sends one small UDP datagram. */
export async function sendUdp(target: Target, port: number): Promise<void> {
  const sock = createSocket(target.family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.send(UDP_PAYLOAD, port, target.address, (err) => (err ? reject(err) : resolve()));
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

export function doorFromConfig(door: DoorConfig): KnockDoor {
  return { type: 'sequence', name: door.name, sequence: door.sequence };
}

/** The door's first protected TCP port (the first port of its first TCP range), or null. */
export function checkPortOf(door: DoorConfig): number | null {
  return door.protects.find((r) => r.proto === 'tcp')?.first ?? null;
}

/**
 * Loads the config and finds the door. Throws ConfigError for an unreadable or invalid file
 * and KnockError when the door is not in it (listing the doors it has).
 */
export async function doorFromConfigFile(path: string, name: string): Promise<{ door: KnockDoor; checkPort: number | null }> {
  const cfg = await loadConfigFile(path);
  const found = cfg.doors.find((d) => d.name === name);
  if (found === undefined) {
    const names = cfg.doors.map((d) => d.name);
    const near = suggest(name, names);
    throw new KnockError(
      `${path} has no door named ${JSON.stringify(name)}${near !== null ? ` (did you mean ${near}?)` : ''}: its doors are ${names.join(', ')}`,
    );
  }
  return { door: doorFromConfig(found), checkPort: checkPortOf(found) };
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
    knock: describeKnock(door),
    check: opts.checkPort === null ? null : { port: opts.checkPort, proto: 'tcp', timeoutMs: opts.checkTimeoutMs },
    tries,
    attempts: [],
  };
  for (let n = 1; n <= tries; n++) {
    if (n > 1) await sleep(opts.retryPauseMs);
    const attempt: Attempt = { attempt: n, sent: false, open: null };
    try {
      await sendKnock(target, door, opts);
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
  return `the door did not open after ${n}${where}: check the sequence, the host and that the gate lets this source knock`;
}

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
