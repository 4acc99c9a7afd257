/**
 * One root pino logger for the process; modules take a child (`logger.child({ module })`).
 * Lines are JSON on stdout (journald-friendly). `--pretty` pipes the same records through
 * pino-pretty in-process: one code path, two renderings.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export interface LogOptions {
  level: LevelWithSilent;
  pretty?: boolean;
  /** where JSON lines go; default stdout (fd 1) */
  destination?: NodeJS.WritableStream | number;
}

/** Paths redacted from every record: secrets must never reach a log line. */
/**
 * Key material never reaches a log line, whatever object carries it: door keys and secrets,
 * payload prefixes (a payload door's secret), private keys, at any of the first three levels.
 */
const SECRET_KEYS = ['secret', 'secrets', 'private_key', 'privateKey', 'mac_key', 'payload', 'secret_hex', 'password', 'tls'];
/** `key` at the top of a record names a config key (`{ key: 'doors.ssh.sequence[2]' }`); below
 * it, it is a door's key (struct kg_door.key in a KDoor, say). */
export const REDACT = [...SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]), '*.key', '*.*.key', '*.keys', '*.*.keys'];

export function createLogger(opts: LogOptions): Logger {
  const base = {
    level: opts.level,
    base: { name: 'knockgate' },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (opts.pretty) {
    return pino(base, pretty({ sync: true, colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' }));
  }
  const dest = opts.destination ?? 1;
  if (typeof dest === 'number') return pino(base, pino.destination({ fd: dest, sync: true }));
  return pino(base, dest);
}
