/**
 * Which gate a CLI command works on: --pin-path, else the pin_path of the config file (-c, or
 * the default config when it exists and is valid), else the default pin path. Commands work
 * on the pinned gate directly, whether or not the daemon runs.
 */
import { existsSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { pino } from 'pino';
import { loadConfigFile } from '../config/index.js';
import { DEFAULT_PIN_PATH, Gate } from '../kernel/gate.js';
import { DEFAULT_CONFIG } from './paths.js';

export interface TargetOptions {
  config?: string;
  pinPath?: string;
}

/** Adds -c/--config and --pin-path to a command. */
export function targetOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('-c, --config <file>', `config file (finds the gate's pin_path; default ${DEFAULT_CONFIG} if it exists)`))
    .addOption(new Option('--pin-path <dir>', `the gate's pin directory (default: the config's pin_path, else ${DEFAULT_PIN_PATH})`));
}

export async function resolvePinPath(opts: TargetOptions): Promise<string> {
  if (opts.pinPath !== undefined) return opts.pinPath;
  if (opts.config !== undefined) return (await loadConfigFile(opts.config)).pinPath;
  if (existsSync(DEFAULT_CONFIG)) {
    try {
      return (await loadConfigFile(DEFAULT_CONFIG)).pinPath;
    } catch {
      return DEFAULT_PIN_PATH;
    }
  }
  return DEFAULT_PIN_PATH;
}

/** A logger for CLI-side library messages: warnings and worse, to stderr. */
export const cliLogger = pino({ level: 'warn', base: null }, pino.destination({ fd: 2, sync: true }));

export async function openTarget(opts: TargetOptions): Promise<Gate> {
  return Gate.openPinned(await resolvePinPath(opts), cliLogger);
}

/** JSON.stringify that writes bigints as numbers (ns values stay exact below 2^53 ms-scale use). */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? Number(x) : x));
}
