// The knock client: resolves the gate's host, sends a door's knock as real packets, checks
// that the door opened, retries, and runs a command once it is open. No command-line parsing
// here (src/cli/commands/knock.ts does that).
//
// Each door type's sender lives in its module (src/doors/): `sequence` (fixed steps: a PORT/tcp step is a
// TCP SYN, a PORT/udp step a UDP datagram), `rotating` (the steps of the current time window,
// derived from a shared secret), `spa` and `signed` (one authenticated UDP datagram bound to
// the source address the gate sees) and `payload` (one UDP datagram or ICMP echo request
// carrying a byte string). The rest of the client (resolution, verification, retries, --then)
// does not depend on the door type. Key material is never part of a message.
import { spawn } from 'node:child_process';
import { dirname, resolve as resolvePath } from 'node:path';
import { lookup } from 'node:dns/promises';
import { connect, isIP } from 'node:net';
import { constants } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { suggest } from '../config/errors.js';
import { loadConfigFile } from '../config/load.js';
import type { DoorConfig } from '../config/model.js';
import { formatDuration } from '../config/duration.js';
import { DOORS, kindOf, type KeyFileOptions, type KnockDoor } from '../doors/index.js';
import { KnockError, endpoint, errnoCode, type Family, type SendOptions, type Target } from './transport.js';

export { KnockError, sendStep, sendTcpSyn, sendUdp, type Family, type SendOptions, type Target } from './transport.js';
export type { KeyFileOptions, KnockDoor, PayloadDoor, RotatingDoor, SequenceDoor, SignedDoor, SpaDoor } from '../doors/index.js';
export { WINDOW_MARGIN_MS, loadRotatingSecret } from '../doors/rotating.js';
export { loadSpaKey } from '../doors/spa.js';
export { loadPrivateKey } from '../doors/signed.js';

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

/**
 * Sends one complete knock for the door. Throws KnockError when a packet cannot be sent.
 * Resolves with a description of what was sent when it differs from describeKnock(door).
 */
export function sendKnock(target: Target, door: KnockDoor, opts: SendOptions): Promise<string | void> {
  return kindOf(door).client.send(target, door, opts);
}

/**
 * What a knock on this door looks like, for messages: "7000/tcp 8000/udp 9000/tcp",
 * "SPA datagram to 62201/udp". Never shows key material. A rotating door shows the window of
 * nowMs.
 */
export function describeKnock(door: KnockDoor, nowMs: number = Date.now()): string {
  return kindOf(door).client.describe(door, nowMs);
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

/**
 * The door to knock on for a door of the config, reading its key files (which must be private
 * to their owner). A signed door needs the client's private key (opts.keyFile): the config
 * holds only the public keys. Throws KnockError for a key file that cannot be used.
 */
export async function knockDoorOf(door: DoorConfig, opts: KeyFileOptions = {}): Promise<KnockDoor> {
  // (a DoorConfig made in code, not by the config parser, might lack its type's settings)
  if (door.type !== 'sequence' && !(door.type in door)) throw new Error(`door ${door.name} is of type ${door.type} but has no ${door.type} settings`);
  return kindOf(door).client.fromConfig(door, opts);
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
    const resolve = kindOf(found).client.resolveFiles;
    if (resolve !== undefined) return resolve(found, (file) => resolvePath(base, file)) as DoorConfig;
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
  return `the door did not open after ${n}${where}: check ${DOORS[r.type].client.hint}, the host and that the gate lets this source knock`;
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
