// fwknop's keys in fwknop's own terms: KEY_BASE64 / HMAC_KEY_BASE64 (what `fwknop --key-gen`
// makes: 32 random bytes for Rijndael, 64 for HMAC-SHA256, standard base64) or the plain-text
// KEY / HMAC_KEY, with HMAC_DIGEST_TYPE (and ENCRYPTION_MODE cbc) as in fwknopd's access.conf. A key
// file holds these lines, `NAME: value` (as `fwknop --key-gen-file` writes) or `NAME value` (as
// access.conf and .fwknoprc), and must be private to its owner like every key file (keys.ts).
// Errors name the file and line, never a key.
import { randomBytes } from 'node:crypto';
import { createFile, KeyFileError, readKeyFile, type WriteOptions } from './keys.js';
import {
  FWKNOP_HMAC_TYPES,
  FWKNOP_MAX_HMAC_KEY_LEN,
  FWKNOP_MAX_KEY_LEN,
  FWKNOP_PORT,
  type FwknopAccess,
  type FwknopHmacType,
  type FwknopKeys,
} from './fwknop.js';

/** What `fwknop --key-gen` makes: 32 bytes of Rijndael key, 64 of HMAC-SHA256 key (its block size). */
export const FWKNOP_KEY_BYTES = 32;
export const FWKNOP_HMAC_KEY_BYTES = 64;

const NAMES = ['KEY', 'KEY_BASE64', 'HMAC_KEY', 'HMAC_KEY_BASE64', 'HMAC_DIGEST_TYPE', 'ENCRYPTION_MODE', 'USE_HMAC'] as const;
type Name = (typeof NAMES)[number];

/** One setting and where it came from ("FILE:LINE" or a config key path), for messages. */
export interface FwknopSetting {
  value: string;
  where: string;
}

const KEYGEN_HINT = 'make keys with `knockgate keygen --type fwknop FILE` or `fwknop --key-gen`';

function decodeBase64Key(s: FwknopSetting, name: string): Buffer {
  const v = s.value;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(v) || v.length % 4 === 1) throw new KeyFileError(`${s.where}: ${name} is not base64 (A-Z a-z 0-9 + /, "=" padding)`);
  const bytes = Buffer.from(v, 'base64');
  if (bytes.toString('base64').replace(/=+$/, '') !== v.replace(/=+$/, '')) throw new KeyFileError(`${s.where}: ${name} is not canonical base64 (its last character has stray bits)`);
  return bytes;
}

/**
 * The keys from fwknop settings (the lines of a key file, or a door's inline keys). Exactly one
 * of KEY / KEY_BASE64 and one of HMAC_KEY / HMAC_KEY_BASE64; GnuPG and no-HMAC setups are
 * refused with a message saying so.
 */
export function fwknopKeysFrom(settings: ReadonlyMap<string, FwknopSetting>, where: string): FwknopKeys {
  for (const [name, s] of settings) {
    if (/^(GPG_|USE_GPG)/.test(name)) {
      throw new KeyFileError(`${s.where}: ${name}: GnuPG mode is not supported; knockgate speaks fwknop's Rijndael + HMAC mode: ${KEYGEN_HINT}`);
    }
    if (!(NAMES as readonly string[]).includes(name)) {
      throw new KeyFileError(`${s.where}: ${name} is not an fwknop key setting (known: ${NAMES.join(', ')})`);
    }
  }
  const get = (n: Name): FwknopSetting | undefined => settings.get(n);
  const one = (plain: Name, b64: Name, what: string): { bytes: Buffer; name: string; where: string } | undefined => {
    const p = get(plain);
    const b = get(b64);
    if (p !== undefined && b !== undefined) throw new KeyFileError(`${b.where}: both ${plain} and ${b64} are given; give one ${what}`);
    if (b !== undefined) return { bytes: decodeBase64Key(b, b64), name: b64, where: b.where };
    if (p !== undefined) return { bytes: Buffer.from(p.value, 'utf8'), name: plain, where: p.where };
    return undefined;
  };
  const enc = one('KEY', 'KEY_BASE64', 'encryption key');
  if (enc === undefined) throw new KeyFileError(`${where}: no KEY_BASE64 (or KEY): ${KEYGEN_HINT}`);
  const hmac = one('HMAC_KEY', 'HMAC_KEY_BASE64', 'HMAC key');
  const useHmac = get('USE_HMAC');
  if (useHmac !== undefined && !/^y(es)?$/i.test(useHmac.value)) {
    throw new KeyFileError(`${useHmac.where}: USE_HMAC ${useHmac.value}: fwknop without HMAC (its legacy mode) is refused; set USE_HMAC Y and give HMAC_KEY_BASE64`);
  }
  if (hmac === undefined) throw new KeyFileError(`${where}: no HMAC_KEY_BASE64 (or HMAC_KEY): fwknop without HMAC (its legacy mode) is refused: ${KEYGEN_HINT}`);
  if (enc.bytes.length < 1 || enc.bytes.length > FWKNOP_MAX_KEY_LEN) {
    throw new KeyFileError(`${enc.where}: ${enc.name} has ${enc.bytes.length} bytes, fwknop's Rijndael key has 1..${FWKNOP_MAX_KEY_LEN}: ${KEYGEN_HINT}`);
  }
  if (hmac.bytes.length < 1 || hmac.bytes.length > FWKNOP_MAX_HMAC_KEY_LEN) {
    throw new KeyFileError(`${hmac.where}: ${hmac.name} has ${hmac.bytes.length} bytes, fwknop's HMAC key has 1..${FWKNOP_MAX_HMAC_KEY_LEN}: ${KEYGEN_HINT}`);
  }
  if (enc.bytes.equals(hmac.bytes)) throw new KeyFileError(`${hmac.where}: the encryption key and the HMAC key are the same; they must differ: ${KEYGEN_HINT}`);
  const keys: FwknopKeys = { encryptionKey: enc.bytes, hmacKey: hmac.bytes };
  const type = get('HMAC_DIGEST_TYPE');
  if (type !== undefined) {
    const t = type.value.toLowerCase().replace('-', '_');
    if (t === 'md5' || t === 'sha1') throw new KeyFileError(`${type.where}: HMAC_DIGEST_TYPE ${type.value} is too weak; use sha256 (fwknop's default)`);
    if (!(FWKNOP_HMAC_TYPES as readonly string[]).includes(t)) throw new KeyFileError(`${type.where}: HMAC_DIGEST_TYPE ${type.value} is not one of ${FWKNOP_HMAC_TYPES.join(', ')}`);
    keys.hmacType = t as FwknopHmacType;
  }
  const mode = get('ENCRYPTION_MODE');
  if (mode !== undefined) {
    const m = mode.value.toLowerCase();
    if (m === 'legacy') throw new KeyFileError(`${mode.where}: ENCRYPTION_MODE legacy is fwknop's pre-2.5 mode, which has no HMAC: refused; use cbc (fwknop's default)`);
    if (m !== 'cbc') throw new KeyFileError(`${mode.where}: ENCRYPTION_MODE ${mode.value} is not supported; knockgate speaks cbc, fwknop's default`);
  }
  return keys;
}

/** Parses the text of an fwknop key file; `path` names it in errors. */
export function parseFwknopKeyText(text: string, path: string): FwknopKeys {
  const settings = new Map<string, FwknopSetting>();
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${path}:${i + 1}`;
    const m = /^([A-Za-z0-9_]+)(?:\s*:\s*|\s+)(.*)$/.exec(line);
    if (m === null) throw new KeyFileError(`${where}: not a "NAME: value" line (a key file holds KEY_BASE64 and HMAC_KEY_BASE64 lines as \`fwknop --key-gen\` prints them)`);
    const name = (m[1] ?? '').toUpperCase();
    if (settings.has(name)) throw new KeyFileError(`${where}: ${name} is given twice (also at ${settings.get(name)?.where ?? '?'})`);
    settings.set(name, { value: m[2] ?? '', where });
  }
  return fwknopKeysFrom(settings, path);
}

/** An fwknop key file: KEY_BASE64 / HMAC_KEY_BASE64 lines; the file must be private (0600). */
export async function readFwknopKeyFile(path: string): Promise<FwknopKeys> {
  return parseFwknopKeyText(await readKeyFile(path, true), path);
}

/** New keys as `fwknop --key-gen` makes them (default HMAC type sha256). */
export function generateFwknopKeys(): FwknopKeys {
  return { encryptionKey: randomBytes(FWKNOP_KEY_BYTES), hmacKey: randomBytes(FWKNOP_HMAC_KEY_BYTES) };
}

/** The key file's text, exactly as `fwknop --key-gen --key-gen-file` writes it (plus non-default settings). */
export function formatFwknopKeyFile(keys: FwknopKeys): string {
  const lines = [`KEY_BASE64: ${keys.encryptionKey.toString('base64')}`, `HMAC_KEY_BASE64: ${keys.hmacKey.toString('base64')}`];
  if (keys.hmacType !== undefined && keys.hmacType !== 'sha256') lines.push(`HMAC_DIGEST_TYPE: ${keys.hmacType}`);
  return `${lines.join('\n')}\n`;
}

/** Generates keys and writes them to a new file of mode 0600 (an existing one only with force). */
export async function writeFwknopKeyFile(path: string, options: WriteOptions = {}): Promise<FwknopKeys> {
  const keys = generateFwknopKeys();
  await createFile(path, formatFwknopKeyFile(keys), 0o600, options.force === true);
  return keys;
}

export interface FwknoprcStanzaOptions {
  /** the stanza's name: `fwknop -n NAME` */
  name: string;
  /** SPA_SERVER: the gate's host name or address */
  server: string;
  /** SPA_SERVER_PORT, default 62201 */
  port?: number;
  /** ACCESS, e.g. [{proto: 'tcp', port: 22}] */
  access: readonly FwknopAccess[];
  keys: FwknopKeys;
}

/**
 * The client's ~/.fwknoprc stanza for a door: `fwknop -n NAME` then knocks with these keys.
 * ALLOW_IP source: the gate opens for the address the datagram comes from. It holds the keys:
 * it belongs in a file of mode 0600 on the client, never in a log.
 */
export function fwknoprcStanza(o: FwknoprcStanzaOptions): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(o.name)) throw new RangeError(`${JSON.stringify(o.name)} is not a usable .fwknoprc stanza name`);
  if (/\s/.test(o.server) || o.server === '') throw new RangeError(`${JSON.stringify(o.server)} is not a host name or address`);
  const row = (k: string, v: string): string => `${k.padEnd(20)}${v}`;
  const lines = [
    `[${o.name}]`,
    row('SPA_SERVER', o.server),
    row('SPA_SERVER_PROTO', 'udp'),
    row('SPA_SERVER_PORT', String(o.port ?? FWKNOP_PORT)),
    row('ACCESS', o.access.map((a) => `${a.proto}/${a.port}`).join(',')),
    row('ALLOW_IP', 'source'),
    row('USE_HMAC', 'Y'),
    row('KEY_BASE64', o.keys.encryptionKey.toString('base64')),
    row('HMAC_KEY_BASE64', o.keys.hmacKey.toString('base64')),
  ];
  if (o.keys.hmacType !== undefined && o.keys.hmacType !== 'sha256') lines.push(row('HMAC_DIGEST_TYPE', o.keys.hmacType));
  return `${lines.join('\n')}\n`;
}
