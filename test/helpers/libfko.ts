// fwknop's own parser as a test oracle: libfko (Debian's libfko3, installed with fwknop-client
// by scripts/setup.sh) through koffi. fko_new_with_data() is what fwknopd calls on every SPA
// packet: HMAC check, decryption, decoding, the inner digest; it runs no firewall command.
// libfkoSkipReason() says why it cannot be used here (skip on a laptop, fail in CI).
import koffi from 'koffi';

const FKO_ENC_MODE_CBC = 2;
const FKO_HMAC_SHA256 = 3;

export interface FkoDecoded {
  rc: number;
  error: string;
  username?: string;
  timestamp?: number;
  message?: string;
  messageType?: number;
  clientTimeout?: number;
}

interface Lib {
  newWithData: (ctx: unknown[], data: string, key: Buffer, klen: number, mode: number, hkey: Buffer, hlen: number, htype: number) => number;
  getUsername: (ctx: unknown, out: unknown[]) => number;
  getTimestamp: (ctx: unknown, out: number[]) => number;
  getMessage: (ctx: unknown, out: unknown[]) => number;
  getMessageType: (ctx: unknown, out: number[]) => number;
  getClientTimeout: (ctx: unknown, out: number[]) => number;
  errstr: (rc: number) => string;
  destroy: (ctx: unknown) => number;
}

let lib: Lib | null | undefined;
let reason: string | null = null;

function load(): Lib | null {
  if (lib !== undefined) return lib;
  try {
    const so = koffi.load('libfko.so.3');
    lib = {
      newWithData: so.func('int fko_new_with_data(_Out_ void **ctx, const char *msg, const uint8_t *key, int klen, int mode, const uint8_t *hkey, int hlen, int htype)') as Lib['newWithData'],
      getUsername: so.func('int fko_get_username(void *ctx, _Out_ const char **u)') as Lib['getUsername'],
      getTimestamp: so.func('int fko_get_timestamp(void *ctx, _Out_ int64_t *t)') as Lib['getTimestamp'],
      getMessage: so.func('int fko_get_spa_message(void *ctx, _Out_ const char **m)') as Lib['getMessage'],
      getMessageType: so.func('int fko_get_spa_message_type(void *ctx, _Out_ int16_t *t)') as Lib['getMessageType'],
      getClientTimeout: so.func('int fko_get_spa_client_timeout(void *ctx, _Out_ int *t)') as Lib['getClientTimeout'],
      errstr: so.func('const char *fko_errstr(int)') as Lib['errstr'],
      destroy: so.func('int fko_destroy(void *ctx)') as Lib['destroy'],
    };
  } catch (err) {
    reason = `libfko.so.3 is not loadable (install fwknop-client: scripts/setup.sh): ${(err as Error).message}`;
    lib = null;
  }
  return lib;
}

/** Why libfko cannot be used here, or null. */
export function libfkoSkipReason(): string | null {
  load();
  return reason;
}

/** Decodes SPA data as fwknopd does (Rijndael CBC, HMAC-SHA256). */
export function fkoDecode(data: string, key: Buffer, hmacKey: Buffer): FkoDecoded {
  const l = load();
  if (l === null) throw new Error(reason ?? 'libfko unavailable');
  const ctx: unknown[] = [null];
  const rc = l.newWithData(ctx, data, key, key.length, FKO_ENC_MODE_CBC, hmacKey, hmacKey.length, FKO_HMAC_SHA256);
  const out: FkoDecoded = { rc, error: l.errstr(rc) };
  if (rc !== 0) return out;
  try {
    const s: unknown[] = [null];
    const n: number[] = [0];
    if (l.getUsername(ctx[0], s) === 0) out.username = String(s[0]);
    if (l.getTimestamp(ctx[0], n) === 0) out.timestamp = Number(n[0]);
    if (l.getMessage(ctx[0], s) === 0) out.message = String(s[0]);
    if (l.getMessageType(ctx[0], n) === 0) out.messageType = Number(n[0]);
    if (l.getClientTimeout(ctx[0], n) === 0) out.clientTimeout = Number(n[0]);
  } finally {
    l.destroy(ctx[0]);
  }
  return out;
}
