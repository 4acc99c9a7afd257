/**
 * The fleet section's files: TLS CA, client certificate and key, and the etcd password. The key
 * and the password file must be private (0600, like key files: src/knock/keys.ts); a file that
 * is wrong is named in a ConfigError with the fleet key it came from. Nothing read here is ever
 * logged or printed: the engine takes it, and the logger redacts `password` wherever it appears.
 */
import { dirname, resolve } from 'node:path';
import { KeyFileError, readKeyFile } from '../knock/keys.js';
import { ConfigError, type ConfigIssue } from '../config/errors.js';
import type { FleetConfig, GateConfig } from '../config/model.js';

export interface FleetCredentials {
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  auth?: { username: string; password: string };
}

export async function loadFleetCredentials(config: GateConfig, fleet: FleetConfig): Promise<FleetCredentials> {
  const base = config.file === null ? process.cwd() : dirname(config.file);
  const shown = config.file ?? '<config>';
  const issues: ConfigIssue[] = [];
  const read = async (key: string, path: string | null, mustBePrivate: boolean): Promise<string | undefined> => {
    if (path === null) return undefined;
    const full = resolve(base, path);
    try {
      return await readKeyFile(full, mustBePrivate);
    } catch (err) {
      const message = err instanceof KeyFileError ? err.message : `cannot read ${full}: ${(err as Error).message}`;
      issues.push({ file: shown, line: 0, col: 0, path: `fleet.${key}`, message });
      return undefined;
    }
  };
  const out: FleetCredentials = {};
  if (fleet.tls !== null) {
    const ca = await read('ca_file', fleet.tls.caFile, false);
    const cert = await read('cert_file', fleet.tls.certFile, false);
    const key = await read('key_file', fleet.tls.keyFile, true);
    out.tls = {
      ...(ca !== undefined ? { ca: Buffer.from(ca) } : {}),
      ...(cert !== undefined ? { cert: Buffer.from(cert) } : {}),
      ...(key !== undefined ? { key: Buffer.from(key) } : {}),
    };
  }
  if (fleet.auth !== null) {
    const pw = await read('password_file', fleet.auth.passwordFile, true);
    if (pw !== undefined) {
      // One line: the password, without its line break (and nothing else in the file).
      const password = pw.replace(/\r?\n$/, '');
      if (password === '' || /[\r\n]/.test(password)) {
        issues.push({ file: shown, line: 0, col: 0, path: 'fleet.password_file', message: `${resolve(base, fleet.auth.passwordFile)} must hold the password on one line` });
      } else out.auth = { username: fleet.auth.username, password };
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return out;
}
