/**
 * The key material of a config's doors, read from the files the doors name: a spa door's
 * 128-bit key, a rotating door's shared secret (both private files: a file readable by group
 * or others is refused) and a signed door's client public keys. Kept apart from the config
 * model, which is plain data that may be logged or rendered; nothing here is ever logged.
 * Relative paths are taken from the config file's directory.
 */
import { dirname, resolve } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { KeyFileError, readPublicKey, readSecretFile } from '../knock/keys.js';
import { keyIdOf } from '../knock/wire.js';
import type { SignedClientKey } from '../knock/verify.js';
import { ConfigError, type ConfigIssue } from './errors.js';
import type { GateConfig } from './model.js';

export interface DoorSecrets {
  /** by door name: a spa door's key (16 bytes) or a rotating door's secret */
  keys: Map<string, Buffer>;
  /** by door name: a signed door's clients */
  clients: Map<string, SignedClientKey[]>;
}

export function noSecrets(): DoorSecrets {
  return { keys: new Map(), clients: new Map() };
}

/** Reads every door's key files; throws one ConfigError naming each file that is wrong. */
export async function loadDoorSecrets(config: GateConfig): Promise<DoorSecrets> {
  const base = config.file === null ? process.cwd() : dirname(config.file);
  const shown = config.file ?? '<config>';
  const issues: ConfigIssue[] = [];
  const out = noSecrets();
  const attempt = async <T>(path: string, read: () => Promise<T>): Promise<T | null> => {
    try {
      return await read();
    } catch (err) {
      const message = err instanceof KeyFileError ? err.message : `cannot read ${resolve(base, path)}: ${(err as Error).message}`;
      issues.push({ file: shown, line: 0, col: 0, path: '', message });
      return null;
    }
  };
  for (const d of config.doors) {
    const tag = (key: string) => (issue: ConfigIssue | undefined) => {
      if (issue !== undefined && issue.path === '') issue.path = `doors.${d.name}.${key}`;
    };
    if (d.type === 'rotating') {
      const key = await attempt(d.rotating.secretFile, () => readSecretFile(resolve(base, d.rotating.secretFile), { minBytes: 16, maxBytes: 64 }));
      tag('secret_file')(issues.at(-1));
      if (key !== null) out.keys.set(d.name, key);
    } else if (d.type === 'spa') {
      const key = await attempt(d.spa.keyFile, () => readSecretFile(resolve(base, d.spa.keyFile), { bytes: 16 }));
      tag('key_file')(issues.at(-1));
      if (key !== null) out.keys.set(d.name, key);
    } else if (d.type === 'signed') {
      const clients: SignedClientKey[] = [];
      const seen = new Map<string, string>();
      for (const c of d.signed.clients) {
        const key: KeyObject | null = await attempt(c.publicKeyFile, () => readPublicKey(resolve(base, c.publicKeyFile)));
        tag(`clients.${c.name}`)(issues.at(-1));
        if (key === null) continue;
        const keyId = keyIdOf(key);
        const twin = seen.get(keyId.toString('hex'));
        if (twin !== undefined) {
          issues.push({ file: shown, line: 0, col: 0, path: `doors.${d.name}.clients.${c.name}`, message: `the same public key as client ${twin}: give each client a key pair of its own (knockgate keygen FILE), so that one can be revoked alone` });
          continue;
        }
        seen.set(keyId.toString('hex'), c.name);
        clients.push({ name: c.name, key, keyId });
      }
      out.clients.set(d.name, clients);
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return out;
}
