// Key files for the knocks that need keys. Secrets (the spa SipHash key, the rotating secret)
// are hex text; signed knocks use Ed25519 keys, the private key as PKCS#8 PEM and the public
// key as SPKI PEM or an OpenSSH "ssh-ed25519 AAAA..." line. Files holding a secret must be
// private to their owner (no group or other permission bits), like ssh's private keys.
// Errors name the file, say what is wrong and what to do; they never quote a file's content.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, open, rename, unlink } from 'node:fs/promises';
import { keyIdOf } from './wire.js';

export class KeyFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyFileError';
  }
}

const mode3 = (mode: number): string => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;

/** Refuses anything but a regular file without group or other permission bits. */
export function checkPrivateMode(path: string, st: Stats): void {
  if (!st.isFile()) throw new KeyFileError(`${path} is not a regular file: a secret must be kept in a file`);
  if ((st.mode & 0o077) !== 0) {
    throw new KeyFileError(
      `${path} is readable by group or others (mode ${mode3(st.mode)}): a secret must be private to its owner; run: chmod 600 ${path}`,
    );
  }
}

function codeOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  const { code } = err as { code: unknown };
  return typeof code === 'string' ? code : undefined;
}

function openError(path: string, err: unknown): KeyFileError {
  switch (codeOf(err)) {
    case 'ENOENT':
      return new KeyFileError(`${path} does not exist: check the path, or create the key with \`knockgate keygen\``);
    case 'EACCES':
    case 'EPERM':
      return new KeyFileError(`${path} cannot be read (permission denied): run as the file's owner or as root`);
    case 'EISDIR':
      return new KeyFileError(`${path} is a directory, not a key file`);
    default:
      return new KeyFileError(`${path} cannot be read: ${(err as Error).message}`);
  }
}

/** Reads a key file as text; with mustBePrivate, refuses it unless it is private to its owner. */
export async function readKeyFile(path: string, mustBePrivate: boolean): Promise<string> {
  let handle;
  try {
    // O_NONBLOCK: opening a FIFO must not hang; it is then refused as not a regular file.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw openError(path, err);
  }
  try {
    const st = await handle.stat(); // the file the path leads to, after symlinks
    if (mustBePrivate) checkPrivateMode(path, st);
    else if (!st.isFile()) throw new KeyFileError(`${path} is not a regular file`);
    return await handle.readFile({ encoding: 'utf8' });
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    throw openError(path, err);
  } finally {
    await handle.close();
  }
}

export interface SecretLength {
  /** exactly this many bytes */
  bytes?: number;
  minBytes?: number;
  maxBytes?: number;
}

function createHint(path: string, bytes: number, exact: boolean): string {
  const type = exact && bytes === 16 ? 'spa' : 'rotating';
  return `create one with \`knockgate keygen --type ${type} ${path}\` or \`(umask 077; openssl rand -hex ${bytes} > ${path})\``;
}

/** A secret from a hex text file (whitespace and #-comment lines ignored); the file must be private. */
export async function readSecretFile(path: string, length: SecretLength = {}): Promise<Buffer> {
  const text = await readKeyFile(path, true);
  let hex = '';
  const lines = text.split(/\r?\n/);
  for (const [i, line] of lines.entries()) {
    const trimmed = line.trim();
    if (trimmed.startsWith('#')) continue;
    const digits = trimmed.replace(/\s+/g, '');
    if (!/^[0-9a-fA-F]*$/.test(digits)) {
      throw new KeyFileError(`${path}:${i + 1}: a secret file holds hex digits (0-9, a-f) only; this line has other characters`);
    }
    hex += digits;
  }
  const { bytes, minBytes, maxBytes } = length;
  const want = bytes ?? minBytes ?? 16;
  if (hex.length === 0) throw new KeyFileError(`${path} holds no hex digits: ${createHint(path, want, bytes !== undefined)}`);
  if (hex.length % 2 !== 0) throw new KeyFileError(`${path} has an odd number of hex digits (${hex.length}): a secret is whole bytes, 2 hex digits each`);
  const n = hex.length / 2;
  if (bytes !== undefined && n !== bytes) {
    throw new KeyFileError(`${path} has ${n} bytes, the key needs exactly ${bytes} bytes (${bytes * 2} hex digits): ${createHint(path, bytes, true)}`);
  }
  if (minBytes !== undefined && n < minBytes) {
    throw new KeyFileError(`${path} has ${n} bytes, the secret needs at least ${minBytes} bytes (${minBytes * 2} hex digits): ${createHint(path, Math.max(minBytes, 32), false)}`);
  }
  if (maxBytes !== undefined && n > maxBytes) {
    throw new KeyFileError(`${path} has ${n} bytes, the secret takes at most ${maxBytes} bytes (${maxBytes * 2} hex digits): shorten it or create a new one`);
  }
  return Buffer.from(hex, 'hex');
}

const PRIVATE_HINT = (path: string): string =>
  `create one with \`knockgate keygen --type signed ${path}\` or \`openssl genpkey -algorithm ed25519 -out ${path}\``;

/** An Ed25519 private key from a PKCS#8 PEM file; the file must be private. */
export async function readPrivateKey(path: string): Promise<KeyObject> {
  const text = await readKeyFile(path, true);
  const encrypted = (): KeyFileError =>
    new KeyFileError(`${path} is encrypted with a passphrase, which knockgate does not support: ${PRIVATE_HINT(path)}`);
  if (text.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----') || text.includes('Proc-Type: 4,ENCRYPTED')) throw encrypted();
  if (text.includes('-----BEGIN OPENSSH PRIVATE KEY-----')) {
    throw new KeyFileError(`${path} is an OpenSSH private key; knockgate reads PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"): ${PRIVATE_HINT(path)}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: 'pem' });
  } catch (err) {
    if (codeOf(err) === 'ERR_MISSING_PASSPHRASE') throw encrypted();
    throw new KeyFileError(`${path} is not a PEM private key (PKCS#8, "-----BEGIN PRIVATE KEY-----"): ${PRIVATE_HINT(path)}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new KeyFileError(`${path} is an ${key.asymmetricKeyType ?? 'unknown'} key, signed knocks use Ed25519 keys: ${PRIVATE_HINT(path)}`);
  }
  return key;
}

/** Decodes the blob of an OpenSSH public key line: string "ssh-ed25519", string key (32 bytes). */
function parseOpenSshEd25519(path: string, line: string): KeyObject {
  const bad = (why: string): KeyFileError => new KeyFileError(`${path} is not a valid OpenSSH ssh-ed25519 public key: ${why}`);
  const [type, b64] = line.split(/\s+/);
  if (type !== 'ssh-ed25519') throw bad('the line must start with ssh-ed25519');
  if (b64 === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw bad('the key after ssh-ed25519 is not base64');
  const blob = Buffer.from(b64, 'base64');
  let off = 0;
  const field = (): Buffer => {
    if (off + 4 > blob.length) throw bad('the key is truncated');
    const len = blob.readUInt32BE(off);
    if (off + 4 + len > blob.length) throw bad('the key is truncated');
    const out = blob.subarray(off + 4, off + 4 + len);
    off += 4 + len;
    return out;
  };
  if (field().toString('latin1') !== 'ssh-ed25519') throw bad('the key blob is not an ssh-ed25519 key');
  const raw = field();
  if (raw.length !== 32) throw bad(`an Ed25519 key has 32 bytes, this one has ${raw.length}`);
  if (off !== blob.length) throw bad('the key blob has trailing bytes');
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
  } catch {
    throw bad('the 32 bytes are not an Ed25519 public key');
  }
}

/** An Ed25519 public key from an SPKI PEM file or an OpenSSH "ssh-ed25519 AAAA... comment" line. */
export async function readPublicKey(path: string): Promise<KeyObject> {
  const text = await readKeyFile(path, false);
  const hint = `give the client's public key (the .pub file written by \`knockgate keygen --type signed\`, or an ssh-ed25519 line from ssh-keygen -t ed25519)`;
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
    throw new KeyFileError(`${path} holds a private key, which must stay with the client: ${hint}`);
  }
  let key: KeyObject;
  if (text.includes('-----BEGIN')) {
    try {
      key = createPublicKey({ key: text, format: 'pem' });
    } catch {
      throw new KeyFileError(`${path} is not a PEM public key (SPKI, "-----BEGIN PUBLIC KEY-----"): ${hint}`);
    }
  } else {
    const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
    if (lines.length === 0) throw new KeyFileError(`${path} is empty: ${hint}`);
    if (lines.length > 1) throw new KeyFileError(`${path} has ${lines.length} lines: a public key file holds one key`);
    key = parseOpenSshEd25519(path, lines[0] ?? '');
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new KeyFileError(`${path} is an ${key.asymmetricKeyType ?? 'unknown'} key, signed knocks use Ed25519 keys: ${hint}`);
  }
  return key;
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return false;
    throw openError(path, err);
  }
}

/**
 * Writes a new file whose mode is set when it is created. Without force an existing file is
 * refused; with force the data goes to a fresh file beside it, renamed over the old one (so a
 * replaced key file never keeps the old file's looser mode).
 */
export async function createFile(path: string, data: string, mode: number, force: boolean): Promise<void> {
  const target = force ? `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp` : path;
  let handle;
  try {
    handle = await open(target, 'wx', mode);
  } catch (err) {
    if (codeOf(err) === 'EEXIST') throw new KeyFileError(`${path} exists: pass --force to replace it`);
    throw new KeyFileError(`${path} cannot be created: ${(err as Error).message}`);
  }
  try {
    await handle.writeFile(data, 'utf8');
    await handle.sync();
  } catch (err) {
    await handle.close();
    await unlink(target).catch(() => undefined);
    throw new KeyFileError(`${path} cannot be written: ${(err as Error).message}`);
  }
  await handle.close();
  if (target !== path) {
    try {
      await rename(target, path);
    } catch (err) {
      await unlink(target).catch(() => undefined);
      throw new KeyFileError(`${path} cannot be replaced: ${(err as Error).message}`);
    }
  }
}

export interface WriteOptions {
  /** replace an existing file */
  force?: boolean;
}

/** Writes `bytes` random bytes as hex to a new file of mode 0600. */
export async function writeSecretFile(path: string, bytes: number, options: WriteOptions = {}): Promise<{ path: string; bytes: number }> {
  if (!Number.isInteger(bytes) || bytes < 1) throw new RangeError(`a secret has a positive whole number of bytes, not ${bytes}`);
  await createFile(path, `${randomBytes(bytes).toString('hex')}\n`, 0o600, options.force === true);
  return { path, bytes };
}

export interface WrittenKeyPair {
  /** the private key, PKCS#8 PEM, mode 0600 */
  privatePath: string;
  /** the public key, SPKI PEM, at privatePath + '.pub' */
  publicPath: string;
  /** hex of the key id the signed datagrams carry */
  keyId: string;
}

/** Generates an Ed25519 key pair: the private key at path (0600), the public key at path.pub (0644). */
export async function writeKeyPair(path: string, options: WriteOptions = {}): Promise<WrittenKeyPair> {
  const force = options.force === true;
  const publicPath = `${path}.pub`;
  if (!force) {
    // Check both first, so a refusal leaves neither file half-written.
    for (const p of [path, publicPath]) if (await exists(p)) throw new KeyFileError(`${p} exists: pass --force to replace it`);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privatePem = privateKey.export({ format: 'pem', type: 'pkcs8' });
  const publicPem = publicKey.export({ format: 'pem', type: 'spki' });
  await createFile(path, String(privatePem), 0o600, force);
  try {
    await createFile(publicPath, String(publicPem), 0o644, force);
  } catch (err) {
    if (!force) await unlink(path).catch(() => undefined);
    throw err;
  }
  return { privatePath: path, publicPath, keyId: keyIdOf(publicKey).toString('hex') };
}
