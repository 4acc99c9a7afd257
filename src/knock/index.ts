// The knock module: the user-space crypto and wire formats of the keyed door types (rotating,
// spa, signed, fwknop), shared by the knock client and the daemon, and the replay cache that
// outlives the daemon. docs/KNOCKS.md describes them.
export { siphash24, siphash24u64 } from './siphash.js';
export {
  SIGNED_LEN,
  SIGNED_MAGIC,
  SPA_LEN,
  SPA_MAGIC,
  SPA_TAG_WINDOW_S,
  decodeSigned,
  decodeSpa,
  doorId,
  encodeSigned,
  encodeSpa,
  keyIdOf,
  signedMessage,
  spaTag,
  verifySpa,
} from './wire.js';
export type { SignedDatagram, SignedInput, SpaDatagram, SpaInput } from './wire.js';
export { rotatingSequence, windowBounds, windowOf } from './rotating.js';
export {
  KeyFileError,
  checkPrivateMode,
  readPrivateKey,
  readPublicKey,
  readSecretFile,
  writeKeyPair,
  writeSecretFile,
} from './keys.js';
export type { SecretLength, WriteOptions, WrittenKeyPair } from './keys.js';
export { NonceCache, SignedVerifier } from './verify.js';
export type { SignedCheck, SignedClientKey, SignedRejection } from './verify.js';
export {
  FWKNOP_PORT,
  FWKNOP_MIN_LEN,
  checkFwknopAccess,
  checkFwknopFresh,
  decodeFwknop,
  encodeFwknop,
  fwknopDigest,
  fwknopLengthOk,
  fwknopMaxLength,
} from './fwknop.js';
export type { FwknopAccess, FwknopDecode, FwknopHmacType, FwknopKeys, FwknopMessage, FwknopRefusal } from './fwknop.js';
export { fwknoprcStanza, formatFwknopKeyFile, generateFwknopKeys, parseFwknopKeyText, readFwknopKeyFile, writeFwknopKeyFile } from './fwknop-keys.js';
export { FwknopVerifier } from './fwknop-verify.js';
export type { FwknopCheck, FwknopClient } from './fwknop-verify.js';
export { ReplayCache, ReplayCacheError } from './replay.js';
export type { ClaimResult, ReplayGuard } from './replay.js';
