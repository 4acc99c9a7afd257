// The knock module: the user-space crypto and wire formats of the keyed door types (rotating,
// spa, signed), shared by the knock client and the daemon. docs/KNOCKS.md describes them.
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
