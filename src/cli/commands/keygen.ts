/**
 * `knockgate keygen FILE`: makes the key files of the keyed door types. signed (the default):
 * an Ed25519 key pair, FILE (private, 0600) and FILE.pub; spa: a 16-byte SipHash key; rotating:
 * a 32-byte shared secret (both hex, 0600); fwknop: fwknop's KEY_BASE64 + HMAC_KEY_BASE64, as
 * `fwknop --key-gen` makes them (0600). Prints what was written and where it goes in the config;
 * never a secret, except fwknop's client stanza, which is the keys (as `fwknop --key-gen` prints
 * them): it goes to the terminal, to be pasted into the client's ~/.fwknoprc, and never to a log.
 */
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import { Argument, Command, Option } from 'commander';
import { DEFAULTS, DOOR_NAME } from '../../config/model.js';
import { formatDuration } from '../../config/duration.js';
import { KeyFileError, writeKeyPair, writeSecretFile } from '../../knock/index.js';
import { fwknoprcStanza, writeFwknopKeyFile } from '../../knock/fwknop-keys.js';
import { FWKNOP_PORT } from '../../knock/fwknop.js';
import { CliError, EXIT } from '../exit.js';

export type KeygenType = 'signed' | 'spa' | 'rotating' | 'fwknop';
export const KEYGEN_TYPES: readonly KeygenType[] = ['signed', 'spa', 'rotating', 'fwknop'];

/** Bytes of the secrets keygen makes: the spa key is SipHash's 128 bits; a rotating secret 256 bits. */
export const SECRET_BYTES = { spa: 16, rotating: 32 } as const;

interface KeygenOpts {
  type: KeygenType;
  force?: boolean;
}

const HELP_AFTER = `
signed: FILE is your private key (mode 0600: it stays on this machine; pass it to
  \`knockgate knock --key-file FILE\`); FILE.pub goes to the gate, listed under the signed door's
  clients. The key id printed is the one the gate logs for your knocks.
spa, rotating: FILE holds a shared secret (hex, mode 0600); the gate's door config and every
  client need the same file: copy it over a secure channel (scp, not mail or chat).
fwknop: FILE holds KEY_BASE64 and HMAC_KEY_BASE64 (mode 0600) for the gate's fwknop door; the
  client's ~/.fwknoprc stanza with the same keys is printed (only to this terminal): paste it on
  the client, into a file of mode 0600. Existing fwknop clients keep working unchanged.
An existing file is not replaced without --force.

Examples:
  knockgate keygen ~/.config/knockgate/id_knock
  knockgate keygen --type spa /etc/knockgate/spa.key
  knockgate keygen --type rotating /etc/knockgate/rot.secret
  knockgate keygen --type fwknop /etc/knockgate/fwknop.keys

Exit codes: 0 written, 1 not written (the file exists, or cannot be created), 2 usage.
`;

/** A client name for the snippet: the user's login when it is a valid name, else NAME. */
function clientName(): string {
  try {
    const user = userInfo().username;
    return DOOR_NAME.test(user) ? user : 'NAME';
  } catch {
    return 'NAME';
  }
}

/** A path for YAML: plain when it is safe unquoted, else double-quoted. */
function yamlPath(path: string): string {
  return /^[A-Za-z0-9_./~-]+$/.test(path) ? path : JSON.stringify(path);
}

/** What keygen prints after writing FILE of this type: the files, and a config snippet. */
export async function keygen(file: string, type: KeygenType, force: boolean): Promise<string> {
  const abs = resolve(file);
  const opts = { force };
  switch (type) {
    case 'signed': {
      const pair = await writeKeyPair(file, opts);
      return [
        `wrote the Ed25519 private key to ${pair.privatePath} (mode 0600): keep it on this machine`,
        `wrote the public key to ${pair.publicPath}`,
        `key id: ${pair.keyId}`,
        '',
        `Copy ${pair.publicPath} to the gate and list it under the signed door's clients (the path is where it is on the gate):`,
        '  doors:',
        '    sig:',
        '      type: signed',
        '      port: 62202/udp',
        '      clients:',
        `        ${clientName()}: ${yamlPath(`${abs}.pub`)}`,
        '      protects: [22/tcp]',
        '',
        `Knock with: knockgate knock HOST sig -c CONFIG --key-file ${file}`,
        '',
      ].join('\n');
    }
    case 'spa': {
      const { bytes } = await writeSecretFile(file, SECRET_BYTES.spa, opts);
      return [
        `wrote a ${bytes}-byte spa key to ${file} (mode 0600)`,
        '',
        'The gate and every client need this file (copy it over a secure channel); on the gate:',
        '  doors:',
        '    spa:',
        '      type: spa',
        '      port: 62201/udp',
        `      key_file: ${yamlPath(abs)}`,
        '      protects: [22/tcp]',
        '',
        `Knock with: knockgate knock HOST spa -c CONFIG   (or: knockgate knock HOST spa --type spa --port 62201 --key-file ${file})`,
        '',
      ].join('\n');
    }
    case 'rotating': {
      const { bytes } = await writeSecretFile(file, SECRET_BYTES.rotating, opts);
      return [
        `wrote a ${bytes}-byte rotating secret to ${file} (mode 0600)`,
        '',
        'The gate and every client need this file (copy it over a secure channel); on the gate:',
        '  doors:',
        '    rot:',
        '      type: rotating',
        `      secret_file: ${yamlPath(abs)}`,
        '      knock_ports: 40000-40999/udp',
        `      length: ${DEFAULTS.rotatingLength}`,
        `      window: ${formatDuration(DEFAULTS.windowMs)}`,
        '      protects: [22/tcp]',
        '',
        `Knock with: knockgate knock HOST rot -c CONFIG   (or: knockgate knock HOST rot --type rotating --range 40000-40999/udp --secret-file ${file})`,
        '',
      ].join('\n');
    }
    case 'fwknop': {
      const keys = await writeFwknopKeyFile(file, opts);
      return [
        `wrote fwknop keys (KEY_BASE64, HMAC_KEY_BASE64) to ${file} (mode 0600)`,
        '',
        'On the gate:',
        '  doors:',
        '    fwknop:',
        '      type: fwknop',
        `      port: ${FWKNOP_PORT}/udp`,
        `      key_file: ${yamlPath(abs)}`,
        '      protects: [22/tcp]',
        '',
        'On the client, add this stanza to ~/.fwknoprc (it holds the keys: keep that file mode 0600),',
        'set SPA_SERVER to the gate, and knock with `fwknop -n knockgate`:',
        '',
        fwknoprcStanza({ name: 'knockgate', server: 'GATE', access: [{ proto: 'tcp', port: 22 }], keys }),
      ].join('\n');
    }
  }
}

export function keygenCommand(): Command {
  return new Command('keygen')
    .description('make a key for signed, spa, rotating or fwknop doors: an Ed25519 key pair (FILE, FILE.pub), a shared secret (FILE) or fwknop keys (FILE)')
    .addArgument(new Argument('<file>', 'where to write the key (a signed key pair also writes FILE.pub)'))
    .addOption(new Option('--type <type>', 'the door type the key is for').choices(KEYGEN_TYPES).default('signed'))
    .option('--force', 'replace existing files')
    .addHelpText('after', HELP_AFTER)
    .action(async (file: string, opts: KeygenOpts) => {
      let out: string;
      try {
        out = await keygen(file, opts.type, opts.force === true);
      } catch (err) {
        if (err instanceof KeyFileError) throw new CliError(err.message, EXIT.FAILED);
        throw err;
      }
      process.stdout.write(out);
    });
}
