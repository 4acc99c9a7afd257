// fwknop's single-packet authorization (SPA) on the wire, in Rijndael + HMAC mode: fwknop's
// default and recommended mode, the one its clients (Debian's fwknop-client, the Android, iOS,
// macOS and Windows clients) send with KEY_BASE64 + HMAC_KEY_BASE64. docs/KNOCKS.md ("fwknop")
// has the layout and a test vector from the real client. Pure: node:crypto only, no I/O.
//
// A datagram is printable base64 text:
//
//   wire  = b64(ciphertext)[10:] || b64(HMAC(hmac_key, "U2FsdGVkX1" || b64(ciphertext)[10:]))
//   ciphertext = "Salted__" || salt(8) || AES-256-CBC(key, iv, PKCS#7(plaintext))
//   key || iv  = EVP_BytesToKey(MD5, 1 round): D1 = MD5(k || salt), Di = MD5(D(i-1) || k || salt)
//   plaintext  = random(16 digits) ":" b64(user) ":" time ":" version ":" type ":" b64(access)
//                [":" b64(nat access)] [":" b64(server auth)] [":" client timeout] ":" digest
//
// where b64 is standard base64 with its "=" padding stripped, "U2FsdGVkX1" is b64("Salted__")'s
// first 10 characters (fwknop strips them from the wire because every datagram would start with
// them) and digest is b64(SHA-256(everything before ":digest")). The HMAC covers the base64 text,
// not the bytes, so a datagram is checked exactly as it arrived.
//
// Checks run in the order an unauthenticated sender cannot exploit: the text's shape (length,
// alphabet), the HMAC over the exact bytes, and only then decryption and the fields. Every
// refusal is a typed reason with a message for the log; none quotes key material.
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { formatAddress, parseAddress } from '../net/addr.js';

/** fwknop's default server port (udp). */
export const FWKNOP_PORT = 62201;
/** The protocol version fwknop 2.6 writes into every message. */
export const FWKNOP_VERSION = '3.0.0';
/** b64("Salted__")'s first 10 characters: stripped from the wire by the client, put back to check. */
export const FWKNOP_SALT_PREFIX = 'U2FsdGVkX1';
/** fwknopd refuses SPA data shorter than this (server/fwknopd_common.h MIN_SPA_DATA_SIZE). */
export const FWKNOP_MIN_LEN = 140;
/** ... and longer than this (MAX_SPA_PACKET_LEN). */
export const FWKNOP_MAX_LEN = 1500;
/** libfko takes a Rijndael message (prefix put back, HMAC removed) this long or longer for GnuPG. */
export const FWKNOP_GPG_MIN_LEN = 400;
/** The 16 decimal digits that start every plaintext. */
const RAND_LEN = 16;
const MAX_USERNAME_B64 = 64;
const MAX_TIMESTAMP_LEN = 12;
const MAX_VERSION_LEN = 8;
const MAX_MESSAGE_B64 = 256;
/** The client timeout fwknop accepts: 1 .. 2 << 15. */
const MAX_CLIENT_TIMEOUT = 2 << 15;
const BLOCK = 16;
const SALT_LEN = 8;
const SALTED = Buffer.from('Salted__', 'latin1');
const BASE64_TEXT = /^[A-Za-z0-9+/]*$/;

/** HMAC digests fwknop offers (--hmac-digest-type) that knockgate accepts: not md5 or sha1. */
export type FwknopHmacType = 'sha256' | 'sha384' | 'sha512' | 'sha3_256' | 'sha3_512';
export const FWKNOP_HMAC_TYPES: readonly FwknopHmacType[] = ['sha256', 'sha384', 'sha512', 'sha3_256', 'sha3_512'];
const HMAC_ALGO: Record<FwknopHmacType, string> = {
  sha256: 'sha256',
  sha384: 'sha384',
  sha512: 'sha512',
  sha3_256: 'sha3-256',
  sha3_512: 'sha3-512',
};
/** Length of each HMAC on the wire: base64 of the digest, "=" stripped. */
const HMAC_B64_LEN: Record<FwknopHmacType, number> = { sha256: 43, sha384: 64, sha512: 86, sha3_256: 43, sha3_512: 86 };

/** The keys of one fwknop client, as fwknop's KEY_BASE64 / HMAC_KEY_BASE64 (or KEY / HMAC_KEY) give them. */
export interface FwknopKeys {
  /** the Rijndael key: 1..32 bytes (fwknop --key-gen makes 32) */
  encryptionKey: Buffer;
  /** the HMAC key: 1..128 bytes (fwknop --key-gen makes 64) */
  hmacKey: Buffer;
  /** default sha256, fwknop's default */
  hmacType?: FwknopHmacType;
}

export const FWKNOP_MAX_KEY_LEN = 32;
export const FWKNOP_MAX_HMAC_KEY_LEN = 128;

/** fwknop's message types (lib/fko.h fko_message_type_t). */
export const FWKNOP_MESSAGE_TYPES = {
  command: 0,
  access: 1,
  nat_access: 2,
  client_timeout_access: 3,
  client_timeout_nat_access: 4,
  local_nat_access: 5,
  client_timeout_local_nat_access: 6,
} as const;
export type FwknopMessageTypeName = keyof typeof FWKNOP_MESSAGE_TYPES;
const TYPE_NAMES = Object.keys(FWKNOP_MESSAGE_TYPES) as FwknopMessageTypeName[];

export type FwknopProto = 'tcp' | 'udp' | 'icmp' | 'none';

/** One `proto/port` of the access request (`-A tcp/22,udp/53`); `none/0` when the client gave no -A. */
export interface FwknopAccess {
  proto: FwknopProto;
  port: number;
}

/** Inner digests fwknop may use (-m), told apart by their length as libfko does. */
type DigestType = 'md5' | 'sha1' | 'sha256' | 'sha384' | 'sha512' | 'sha3-256' | 'sha3-512';
const DIGESTS_BY_LEN: Record<number, readonly DigestType[]> = {
  22: ['md5'],
  27: ['sha1'],
  43: ['sha256', 'sha3-256'],
  64: ['sha384'],
  86: ['sha512', 'sha3-512'],
};

/** A datagram that passed the HMAC, decrypted and parsed. Nothing here is checked against a policy yet. */
export interface FwknopMessage {
  /** the user name the client put in (its login, or -U / SPOOF_USER): a label, not an authentication */
  username: string;
  /** the client's clock, UNIX seconds (after --time-offset-plus/minus) */
  timestamp: number;
  /** fwknop's protocol version, "3.0.0" for fwknop 2.6 */
  version: string;
  messageType: FwknopMessageTypeName;
  /**
   * The address the client asks access for, as sent: "0.0.0.0" means "the packet's source"
   * (`-s`, ALLOW_IP source); anything else is the client's `-a` (or -R) IPv4 address.
   */
  allowIp: string;
  access: FwknopAccess[];
  /** -f / FW_TIMEOUT: how long the client asks the port to stay open, seconds */
  clientTimeout?: number;
  /** the optional server-auth field (unused by fwknopd and by knockgate) */
  serverAuth?: string;
  /** the 16 decimal digits the message starts with */
  random: string;
  /** the digest field inside the message (base64, as sent) */
  messageDigest: string;
  /**
   * The replay-cache key: b64(SHA-256(the datagram as received)), what fwknopd's replay cache
   * keeps. The HMAC covers every byte, so a replay cannot change it without the HMAC key.
   */
  digest: string;
}

export type FwknopRefusal =
  /** not fwknop SPA text: length out of range, not base64, or the "U2FsdGVkX1" prefix left on */
  | 'malformed'
  /** the HMAC does not verify with this door's HMAC key (wrong key, tampered, or not fwknop) */
  | 'bad_hmac'
  /** a client without an HMAC key (fwknop's legacy mode): its message decrypts without one */
  | 'no_hmac'
  /** GnuPG mode (--gpg-encryption), which knockgate does not speak */
  | 'gpg_mode'
  /** the HMAC verified but the encryption key does not decrypt it (wrong KEY_BASE64) */
  | 'bad_decrypt'
  /** decrypted, but the fields are not a valid fwknop message (or the inner digest is wrong) */
  | 'bad_fields'
  /** a valid message of a kind knockgate does not grant: a command (-C) or NAT (-N) request */
  | 'unsupported_message'
  /** the timestamp is outside the door's max_skew */
  | 'stale'
  /** the same datagram was accepted before */
  | 'replay'
  /** the replay cache cannot record another knock (full or not writable): refused, fails closed */
  | 'replay_cache_error'
  /** the access request asks for a proto/port the door does not protect (or for none) */
  | 'not_protected'
  /** the client asks access for an address (-a) other than the packet's source, and the door does not allow that */
  | 'address_mismatch';

export type FwknopDecode = { ok: true; message: FwknopMessage } | { ok: false; reason: FwknopRefusal; detail: string };

const refuse = (reason: FwknopRefusal, detail: string): { ok: false; reason: FwknopRefusal; detail: string } => ({ ok: false, reason, detail });

/** Standard base64 with the "=" padding stripped, as libfko writes every base64 field. */
export function b64Strip(data: Uint8Array): string {
  return Buffer.from(data).toString('base64').replace(/=+$/, '');
}

/**
 * OpenSSL's EVP_BytesToKey with MD5 and one round, as libfko's rij_salt_and_iv: 32-byte key,
 * 16-byte IV. (fwknop's pre-2.5 "legacy" mode padded a short key with "0" characters first; the
 * client refuses legacy mode with HMAC, so knockgate, which requires HMAC, never sees it.)
 */
export function deriveKeyIv(key: Uint8Array, salt: Uint8Array): { key: Buffer; iv: Buffer } {
  const pw = Buffer.from(key);
  const out: Buffer[] = [];
  let prev = Buffer.alloc(0);
  while (out.length * 16 < 48) {
    prev = createHash('md5').update(prev).update(pw).update(salt).digest();
    out.push(prev);
  }
  const kiv = Buffer.concat(out);
  return { key: kiv.subarray(0, 32), iv: kiv.subarray(32, 48) };
}

function hmacOf(keys: FwknopKeys, text: string): string {
  return b64Strip(createHmac(HMAC_ALGO[keys.hmacType ?? 'sha256'], keys.hmacKey).update(text, 'latin1').digest());
}

function checkKeys(keys: FwknopKeys): void {
  const n = keys.encryptionKey.length;
  if (n < 1 || n > FWKNOP_MAX_KEY_LEN) throw new RangeError(`an fwknop encryption key has 1..${FWKNOP_MAX_KEY_LEN} bytes, this one has ${n}`);
  const h = keys.hmacKey.length;
  if (h < 1 || h > FWKNOP_MAX_HMAC_KEY_LEN) throw new RangeError(`an fwknop HMAC key has 1..${FWKNOP_MAX_HMAC_KEY_LEN} bytes, this one has ${h}`);
  if (keys.hmacType !== undefined && !FWKNOP_HMAC_TYPES.includes(keys.hmacType)) {
    throw new RangeError(`fwknop HMAC type ${String(keys.hmacType)} is not one of ${FWKNOP_HMAC_TYPES.join(', ')}`);
  }
}

// ---- the fields -------------------------------------------------------------------------

/** fwknop's user name rule (lib/fko_user.c validate_username): printable, none of "/\[]:;|=,+*?<> */
export function validUsername(name: string): boolean {
  if (name.length === 0 || name.length > 64) return false;
  for (const ch of name) {
    const c = ch.codePointAt(0) ?? 0;
    if (c < 0x20 || c > 0x7e) return false;
    if ('"/\\[]:;|=,+*?<>'.includes(ch)) return false;
  }
  return true;
}

function parsePort(text: string): number | null {
  if (!/^\d{1,5}$/.test(text)) return null;
  const port = Number(text);
  return port <= 65535 ? port : null;
}

/** "ip,proto/port[,proto/port...]" (lib/fko_message.c validate_access_msg); a string says why it is not. */
function parseAccessMessage(text: string): { allowIp: string; access: FwknopAccess[] } | string {
  const parts = text.split(',');
  const ip = parts[0] ?? '';
  if (!/^[0-9.]{7,15}$/.test(ip)) return `the access message's address ${JSON.stringify(ip)} is not an IPv4 address`;
  try {
    parseAddress(ip);
  } catch {
    return `the access message's address ${JSON.stringify(ip)} is not an IPv4 address`;
  }
  if (parts.length < 2) return 'the access message has no proto/port';
  const access: FwknopAccess[] = [];
  for (const spec of parts.slice(1)) {
    const m = /^(tcp|udp|icmp|none)\/(.*)$/.exec(spec);
    const port = m === null ? null : parsePort(m[2] ?? '');
    // fwknop takes port 0 only in "none/0" (no -A); a real port is 1..65535.
    if (m === null || port === null || (port === 0 && m[1] !== 'none')) return `the access request ${JSON.stringify(spec)} is not proto/port`;
    access.push({ proto: m[1] as FwknopProto, port });
  }
  return { allowIp: ip, access };
}

function decodeB64Field(text: string): string | null {
  if (!BASE64_TEXT.test(text) || text.length % 4 === 1) return null;
  return Buffer.from(text, 'base64').toString('latin1');
}

/** Parses a decrypted plaintext (the 16 digits are already checked). */
function parsePlaintext(plain: string, digest: string): FwknopDecode {
  for (let i = 0; i < plain.length; i++) {
    const c = plain.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return refuse('bad_fields', 'the message has non-printable characters');
  }
  const fields = plain.split(':');
  if (fields.length < 7) return refuse('bad_fields', `the message has ${fields.length} fields, fwknop sends at least 7`);
  if (fields.length > 10) return refuse('bad_fields', `the message has ${fields.length} fields, fwknop sends at most 10`);
  const messageDigest = fields.pop() ?? '';
  const kinds = DIGESTS_BY_LEN[messageDigest.length];
  if (kinds === undefined) return refuse('bad_fields', `the message's digest has ${messageDigest.length} characters, not a digest fwknop makes`);
  const body = plain.slice(0, plain.length - messageDigest.length - 1);
  const want = Buffer.from(messageDigest, 'latin1');
  const matches = kinds.some((kind) => {
    const got = Buffer.from(b64Strip(createHash(kind).update(body, 'latin1').digest()), 'latin1');
    return got.length === want.length && timingSafeEqual(got, want);
  });
  if (!matches) return refuse('bad_fields', "the message's digest does not match its fields");

  const [random = '', user64 = '', time = '', version = '', typeText = '', msg64 = '', ...rest] = fields;
  if (!/^\d{16}$/.test(random)) return refuse('bad_fields', 'the random field is not 16 digits');
  if (user64.length === 0 || user64.length > MAX_USERNAME_B64) return refuse('bad_fields', 'the user name field is empty or too long');
  const username = decodeB64Field(user64);
  if (username === null || !validUsername(username)) return refuse('bad_fields', 'the user name is not a valid fwknop user name');
  if (time.length > MAX_TIMESTAMP_LEN || !/^\d+$/.test(time)) return refuse('bad_fields', 'the timestamp is not a number of seconds');
  const timestamp = Number(time);
  if (version.length === 0 || version.length > MAX_VERSION_LEN) return refuse('bad_fields', 'the version field is empty or too long');
  if (!/^\d{1,2}$/.test(typeText) || Number(typeText) >= TYPE_NAMES.length) return refuse('bad_fields', `message type ${JSON.stringify(typeText)} is not one fwknop defines`);
  const messageType = TYPE_NAMES[Number(typeText)] ?? 'access';
  if (messageType === 'command') return refuse('unsupported_message', 'a command message (fwknop -C): knockgate grants access to ports, it runs no commands');
  if (messageType.includes('nat')) return refuse('unsupported_message', `a NAT request (fwknop -N / --nat-local, message type ${messageType}): knockgate does not forward ports`);
  const timed = messageType === 'client_timeout_access';
  const maxRest = timed ? 2 : 1; // [server auth] [timeout]
  if (rest.length > maxRest || (timed && rest.length < 1)) return refuse('bad_fields', `a ${messageType} message has ${fields.length + 1} fields`);
  if (msg64.length === 0 || msg64.length > MAX_MESSAGE_B64) return refuse('bad_fields', 'the access message is empty or too long');
  const msgText = decodeB64Field(msg64);
  if (msgText === null) return refuse('bad_fields', 'the access message is not base64');
  const parsed = parseAccessMessage(msgText);
  if (typeof parsed === 'string') return refuse('bad_fields', parsed);

  const message: FwknopMessage = {
    username,
    timestamp,
    version,
    messageType,
    allowIp: parsed.allowIp,
    access: parsed.access,
    random,
    messageDigest,
    digest,
  };
  if (timed) {
    const t = rest.pop() ?? '';
    if (!/^\d{1,6}$/.test(t) || Number(t) > MAX_CLIENT_TIMEOUT) return refuse('bad_fields', `the client timeout ${JSON.stringify(t)} is not a number of seconds`);
    message.clientTimeout = Number(t);
  }
  if (rest.length === 1) {
    const auth = decodeB64Field(rest[0] ?? '');
    if (auth === null) return refuse('bad_fields', 'the server-auth field is not base64');
    message.serverAuth = auth;
  }
  return { ok: true, message };
}

// ---- decoding ---------------------------------------------------------------------------

/** Decrypts the base64 ciphertext text (prefix put back); the plaintext, or why it failed. */
function decrypt(cipherText: string, keys: FwknopKeys): string | null {
  const raw = Buffer.from(cipherText, 'base64');
  if (raw.length < 2 * BLOCK || raw.length % BLOCK !== 0) return null;
  if (!raw.subarray(0, SALT_LEN).equals(SALTED)) return null;
  const salt = raw.subarray(SALT_LEN, 2 * SALT_LEN);
  const { key, iv } = deriveKeyIv(keys.encryptionKey, salt);
  let plain: Buffer;
  try {
    const d = createDecipheriv('aes-256-cbc', key, iv);
    plain = Buffer.concat([d.update(raw.subarray(2 * SALT_LEN)), d.final()]);
  } catch {
    return null; // bad PKCS#7 padding: not this key
  }
  // libfko's own check for a good decryption: 16 digits and a colon.
  if (plain.length <= RAND_LEN || !/^\d{16}:$/.test(plain.subarray(0, RAND_LEN + 1).toString('latin1'))) return null;
  return plain.toString('latin1');
}

/**
 * Whether `len` base64 characters (stripped) can hold salted AES-CBC ciphertext: "Salted__",
 * the salt and at least one block, 16 * (k + 2) bytes, base64 of which is 64m, 64m + 22 or
 * 64m + 43 characters long. Includes the 10 characters stripped from the wire.
 */
function cipherLengthOk(withPrefix: number): boolean {
  const r = withPrefix % 64;
  return withPrefix >= 64 && (r === 0 || r === 22 || r === 43);
}

/**
 * The lengths an fwknop Rijndael + HMAC datagram can have: a salted ciphertext under 400
 * base64 characters (libfko's GnuPG threshold) followed by the HMAC. For the kernel's length
 * check: [FWKNOP_MIN_LEN, fwknopMaxLength(type)]; the daemon applies the exact rule.
 */
export function fwknopLengthOk(len: number, hmacType: FwknopHmacType = 'sha256'): boolean {
  const withPrefix = len - HMAC_B64_LEN[hmacType] + FWKNOP_SALT_PREFIX.length;
  return len >= FWKNOP_MIN_LEN && withPrefix < FWKNOP_GPG_MIN_LEN && cipherLengthOk(withPrefix);
}

/** The longest Rijndael + HMAC datagram of this HMAC type (432 for sha256, 475 for sha512). */
export function fwknopMaxLength(hmacType: FwknopHmacType = 'sha256'): number {
  let withPrefix = FWKNOP_GPG_MIN_LEN - 1;
  while (!cipherLengthOk(withPrefix)) withPrefix--;
  return withPrefix - FWKNOP_SALT_PREFIX.length + HMAC_B64_LEN[hmacType];
}

/** The datagram's shape, before any key is used: length, alphabet, no prefix. */
function checkShape(text: string): string | null {
  if (text.length < FWKNOP_MIN_LEN) return `${text.length} bytes, fwknop SPA data has at least ${FWKNOP_MIN_LEN}`;
  if (text.length > FWKNOP_MAX_LEN) return `${text.length} bytes, fwknop SPA data has at most ${FWKNOP_MAX_LEN}`;
  if (!BASE64_TEXT.test(text)) return 'not base64 text (fwknop SPA data is A-Z a-z 0-9 + / only)';
  // fwknopd refuses data that still carries the prefix: it could be a captured datagram with the
  // prefix put in front to dodge the replay cache.
  if (text.startsWith(FWKNOP_SALT_PREFIX)) return `starts with ${FWKNOP_SALT_PREFIX}, which fwknop clients strip`;
  return null;
}

function asText(datagram: Uint8Array | string): string {
  return typeof datagram === 'string' ? datagram : Buffer.from(datagram).toString('latin1');
}

/** The replay-cache key of a datagram: b64(SHA-256(datagram)), as fwknopd's replay cache. */
export function fwknopDigest(datagram: Uint8Array | string): string {
  return b64Strip(createHash('sha256').update(asText(datagram), 'latin1').digest());
}

/**
 * Why a datagram whose HMAC failed was refused: a client without HMAC (legacy mode) sends the
 * ciphertext alone, which then decrypts with the encryption key to a message whose inner digest
 * verifies; that earns a message telling the operator to give the client an HMAC key. The message
 * is refused all the same: without an HMAC nothing in it is authenticated.
 */
function diagnoseNoHmac(text: string, keys: FwknopKeys): FwknopDecode {
  const bad = refuse('bad_hmac', 'the HMAC does not verify with this door\'s HMAC key (wrong HMAC key, a changed byte, or not fwknop)');
  if (FWKNOP_SALT_PREFIX.length + text.length >= FWKNOP_GPG_MIN_LEN) {
    bad.detail += `; at ${text.length} bytes it may be GnuPG mode (--gpg-encryption), which knockgate does not speak`;
    return bad;
  }
  if (!cipherLengthOk(FWKNOP_SALT_PREFIX.length + text.length)) return bad;
  const plain = decrypt(FWKNOP_SALT_PREFIX + text, keys);
  if (plain === null) return bad;
  const parsed = parsePlaintext(plain, '');
  if (!parsed.ok && parsed.reason === 'bad_fields') return bad;
  return refuse('no_hmac', 'the client sent no HMAC (fwknop without --use-hmac / HMAC_KEY_BASE64, its legacy mode): refused; give the client the door\'s HMAC key and USE_HMAC Y');
}

/**
 * Checks and opens one datagram with one client's keys: shape, then the HMAC over the exact
 * bytes, then decryption, then the fields. Freshness, replay and the door's policy are the
 * caller's (see checkFwknopFresh, checkFwknopAccess, FwknopVerifier).
 */
export function decodeFwknop(datagram: Uint8Array | string, keys: FwknopKeys): FwknopDecode {
  checkKeys(keys);
  const text = asText(datagram);
  const shape = checkShape(text);
  if (shape !== null) return refuse('malformed', shape);
  const hmacLen = HMAC_B64_LEN[keys.hmacType ?? 'sha256'];
  const gpgLong = text.length - hmacLen + FWKNOP_SALT_PREFIX.length >= FWKNOP_GPG_MIN_LEN;
  if (!gpgLong && !fwknopLengthOk(text.length, keys.hmacType)) {
    // Not a length Rijndael + HMAC can have; a client without HMAC could have sent it.
    if (cipherLengthOk(FWKNOP_SALT_PREFIX.length + text.length)) return diagnoseNoHmac(text, keys);
    return refuse('malformed', `${text.length} bytes is not a length fwknop's Rijndael + HMAC mode makes`);
  }
  const cipherPart = text.slice(0, text.length - hmacLen);
  const sent = Buffer.from(text.slice(text.length - hmacLen), 'latin1');
  const want = Buffer.from(hmacOf(keys, FWKNOP_SALT_PREFIX + cipherPart), 'latin1');
  if (sent.length !== want.length || !timingSafeEqual(sent, want)) return diagnoseNoHmac(text, keys);
  if (gpgLong) {
    return refuse('gpg_mode', 'a GnuPG-mode message (--gpg-encryption / USE_GPG): knockgate speaks fwknop\'s Rijndael + HMAC mode only; give the client KEY_BASE64 and HMAC_KEY_BASE64');
  }
  const plain = decrypt(FWKNOP_SALT_PREFIX + cipherPart, keys);
  if (plain === null) return refuse('bad_decrypt', 'the HMAC verified but the encryption key does not decrypt it (wrong KEY_BASE64)');
  return parsePlaintext(plain, fwknopDigest(text));
}

// ---- the door's checks ------------------------------------------------------------------

/** The timestamp is within maxSkewMs of now (either way), as fwknopd's MAX_SPA_PACKET_AGE. */
export function checkFwknopFresh(message: FwknopMessage, nowMs: number, maxSkewMs: number): FwknopDecode {
  const skewS = message.timestamp - Math.floor(nowMs / 1000);
  if (Math.abs(skewS) * 1000 > maxSkewMs) {
    const dir = skewS < 0 ? 'old' : 'in the future';
    return refuse('stale', `the timestamp is ${Math.abs(skewS)} s ${dir}, the door allows ${Math.floor(maxSkewMs / 1000)} s: check the client's clock`);
  }
  return { ok: true, message };
}

/** A port a door protects: proto and an inclusive port range. */
export interface FwknopProtected {
  proto: 'tcp' | 'udp';
  from: number;
  to: number;
}

export interface FwknopAccessPolicy {
  /** the door's protects */
  protects: readonly FwknopProtected[];
  /** grant the address the client asks for with -a when it is not the packet's source (default false) */
  allowRequestedAddress?: boolean;
}

export type FwknopGrantCheck =
  | { ok: true; /** the address to open for, 16 bytes (IPv4 mapped) */ address: Buffer; access: FwknopAccess[] }
  | { ok: false; reason: FwknopRefusal; detail: string };

/**
 * fwknop's access semantics against a door: every proto/port asked for must be one the door
 * protects (a request for several ports is granted whole or not at all, as fwknopd's
 * OPEN_PORTS), and the address opened is the packet's source: "0.0.0.0" (-s) says so, an
 * address equal to the source too; another address (-a) only when the door allows it.
 * `source` is the packet's source, 16 bytes (IPv4 mapped).
 */
export function checkFwknopAccess(message: FwknopMessage, source: Uint8Array, policy: FwknopAccessPolicy): FwknopGrantCheck {
  if (source.length !== 16) throw new RangeError(`a source address has 16 bytes (IPv4 mapped), this one has ${source.length}`);
  for (const a of message.access) {
    if (a.proto === 'none') return refuse('not_protected', 'the client asked for no port (no -A): give it -A tcp/PORT');
    const hit = a.proto !== 'icmp' && policy.protects.some((p) => p.proto === a.proto && a.port >= p.from && a.port <= p.to);
    if (!hit) return refuse('not_protected', `the client asked for ${a.proto}/${a.port}, which this door does not protect`);
  }
  const src = Buffer.from(source);
  if (message.allowIp === '0.0.0.0') return { ok: true, address: src, access: message.access };
  const asked = parseAddress(message.allowIp);
  if (asked.equals(src)) return { ok: true, address: src, access: message.access };
  if (policy.allowRequestedAddress === true) return { ok: true, address: asked, access: message.access };
  return refuse('address_mismatch', `the client asked access for ${message.allowIp} (-a) but sent from ${formatAddress(src)}; the door opens for the sender only (allow the requested address in the door, or use fwknop -s)`);
}

// ---- encoding ---------------------------------------------------------------------------

export interface FwknopInput {
  /** the user name to put in (fwknop: the login, or -U); default "knockgate" */
  username?: string;
  /** UNIX seconds */
  timestamp: number;
  /** what to open: at least one proto/port */
  access: readonly FwknopAccess[];
  /** the address to ask access for; default "0.0.0.0" (the packet's source, fwknop -s) */
  allowIp?: string;
  /** seconds the port should stay open (fwknop -f); makes the message a client_timeout_access one */
  clientTimeout?: number;
  /** fixed values for tests; random otherwise */
  random?: string;
  salt?: Uint8Array;
}

/** Builds one fwknop SPA datagram (Rijndael + HMAC, access message) as the fwknop client does. */
export function encodeFwknop(input: FwknopInput, keys: FwknopKeys): Buffer {
  checkKeys(keys);
  const username = input.username ?? 'knockgate';
  if (!validUsername(username)) throw new RangeError(`${JSON.stringify(username)} is not a valid fwknop user name (printable, none of "/\\[]:;|=,+*?<>)`);
  if (!Number.isSafeInteger(input.timestamp) || input.timestamp < 0 || input.timestamp > 0xffffffff) {
    throw new RangeError(`an fwknop timestamp is a whole number of UNIX seconds, not ${input.timestamp}`);
  }
  if (input.access.length === 0) throw new RangeError('an fwknop access request names at least one proto/port');
  for (const a of input.access) {
    if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535 || (a.port === 0 && a.proto !== 'none')) {
      throw new RangeError(`${a.proto}/${a.port} is not a proto/port fwknop can ask for`);
    }
  }
  const allowIp = input.allowIp ?? '0.0.0.0';
  const msgText = `${allowIp},${input.access.map((a) => `${a.proto}/${a.port}`).join(',')}`;
  const checked = parseAccessMessage(msgText);
  if (typeof checked === 'string') throw new RangeError(checked);
  const random = input.random ?? `${randomInt(1, 10)}${Array.from({ length: RAND_LEN - 1 }, () => randomInt(0, 10)).join('')}`;
  if (!/^\d{16}$/.test(random)) throw new RangeError('the random field is 16 decimal digits');
  let typeNo: number = FWKNOP_MESSAGE_TYPES.access;
  let tail = '';
  if (input.clientTimeout !== undefined && input.clientTimeout > 0) {
    if (!Number.isInteger(input.clientTimeout) || input.clientTimeout > MAX_CLIENT_TIMEOUT) {
      throw new RangeError(`an fwknop client timeout is 1..${MAX_CLIENT_TIMEOUT} whole seconds, not ${input.clientTimeout}`);
    }
    typeNo = FWKNOP_MESSAGE_TYPES.client_timeout_access;
    tail = `:${input.clientTimeout}`;
  }
  const body = `${random}:${b64Strip(Buffer.from(username, 'latin1'))}:${input.timestamp}:${FWKNOP_VERSION}:${typeNo}:${b64Strip(Buffer.from(msgText, 'latin1'))}${tail}`;
  const plaintext = `${body}:${b64Strip(createHash('sha256').update(body, 'latin1').digest())}`;

  const salt = input.salt === undefined ? randomBytes(SALT_LEN) : Buffer.from(input.salt);
  if (salt.length !== SALT_LEN) throw new RangeError(`an fwknop salt has ${SALT_LEN} bytes`);
  const { key, iv } = deriveKeyIv(keys.encryptionKey, salt);
  const c = createCipheriv('aes-256-cbc', key, iv);
  const ciphertext = Buffer.concat([SALTED, salt, c.update(plaintext, 'latin1'), c.final()]);
  const full = b64Strip(ciphertext);
  if (full.length >= FWKNOP_GPG_MIN_LEN) throw new RangeError(`the access request is too long for one fwknop datagram (${full.length} base64 characters, fwknop's limit is ${FWKNOP_GPG_MIN_LEN - 1}): ask for fewer ports`);
  const wire = full.slice(FWKNOP_SALT_PREFIX.length) + hmacOf(keys, full);
  return Buffer.from(wire, 'latin1');
}
