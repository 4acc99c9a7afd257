/**
 * What a door type is, in one place: a DoorKind gathers everything the control plane knows about
 * one type of door (its config keys and checks, how it is written into and read back from its
 * kernel slot, how the client knocks on it, which knock options the CLI takes for it, and, for a
 * door verified in user space, how the daemon verifies what the kernel hands up). Each type is
 * one module of src/doors/; src/doors/index.ts holds them all as a Record<DoorType, DoorKind>, so
 * a type without a module is a compile error, and so is a module that misses a part.
 *
 * The generic code (config walker, policy compiler, client, CLI, daemon) calls these hooks and
 * never switches on the type. A new door type is: its line in DoorSpecs (src/config/model.ts),
 * its module here, and its kernel code (bpf/).
 */
import type { Checker, Entry } from '../config/checker.js';
import type { DoorConfigOf, DoorSpecs, DoorType, PortRange, Step } from '../config/model.js';
import type { DoorSecrets } from '../config/secrets.js';
import type { KDoor } from '../kernel/layout.js';
import type { PlanContext } from '../kernel/tables.js';
import type { SendOptions, Target } from '../client/transport.js';

export type { DoorConfigOf } from '../config/model.js';

/** The type-specific part of a door of type T: what its config check returns. */
export type DoorSpecOf<T extends DoorType> = DoorSpecs[T];

// ---- config -------------------------------------------------------------------------------

export interface ConfigSide<T extends DoorType> {
  /**
   * The door keys only this type takes (a door key no type lists applies to every type). A key
   * of another type in a door of this one is an error naming the types it belongs to.
   */
  keys: readonly string[];
  /**
   * Reads and checks the type's keys of one door (`keys`: the door's known keys), reporting every
   * problem on c at its position; null when one is wrong.
   */
  check(c: Checker, door: Entry, keys: ReadonlyMap<string, Entry>): DoorSpecOf<T> | null;
  /** The type's keys as they are written in a config file (key files by path, never their content). */
  render(d: DoorConfigOf<T>): Record<string, unknown>;
  /** What the door knocks with, for people: "SPA datagram to 62201/udp". */
  describe(d: DoorConfigOf<T>): string;
  /** The ports the door knocks on, as ranges (for the cross-door checks); [] for none (ICMP). */
  knockRanges(d: DoorConfigOf<T>): PortRange[];
  /** Whether step_timeout and sequence_timeout apply (the door is a sequence of knocks). */
  sequenced: boolean;
  /**
   * Fleet mode: true for a one-time door that claims through etcd (on_partition applies);
   * otherwise why on_partition does not apply, ending the sentence "a TYPE door ...".
   */
  onPartition: true | string;
}

// ---- kernel -------------------------------------------------------------------------------

/** What a door contributes to its generation's kg_ports table (as the kernel judges packets). */
export interface KnockPorts {
  /** ports whose packets are steps of the door's sequence state machine (knockDoors) */
  steps: readonly PortRange[];
  /** the UDP port of a single-datagram door, whose datagrams the kernel judges or hands up (singleDoors) */
  single: number | null;
  /** the door knocks with ICMP/ICMPv6 echo requests (icmpDoors) */
  icmp: boolean;
}

export interface KernelSide<T extends DoorType> {
  /** DOOR_TYPE.X: the type's number in kg_door.type (bpf/knock.h) */
  number: number;
  /**
   * The type-specific fields of the door's kernel slot. `k`: the slot as built so far (the
   * common fields); `prev`: what the slot held in the active generation, null for a new door.
   * Throws when the door cannot be written (e.g. no key loaded).
   */
  encode(d: DoorConfigOf<T>, k: KDoor, prev: KDoor | null, ctx: PlanContext): Partial<KDoor>;
  /**
   * The type-specific config of a slot read back from the kernel (key files stand as LIVE_KEY:
   * the kernel holds the key, or the daemon does).
   */
  decode(k: KDoor): DoorSpecOf<T>;
  /**
   * The steps of DoorBase.sequence from the slot, for a type whose config has them (kg_door.steps
   * holds other things for other types: a rotating door's two window sequences).
   */
  decodeSteps?(k: KDoor): Step[];
  /**
   * Whether the type-specific knock rules of a slot stayed the same (else the door's epoch moves
   * on and sources midway start over). The common fields (type, doorId, port, proto, skew, key,
   * payload) are compared before this is asked.
   */
  sameRules?(prev: KDoor, k: KDoor): boolean;
  ports(d: DoorConfigOf<T>, k: KDoor): KnockPorts;
  /** Fleet mode: the kernel hands completed knocks to the daemon to claim (DOOR_FLAG.CLAIM). */
  claims: boolean;
  /** (door id, window) pairs the slot holds, worth remembering as spent (rotating doors). */
  liveWindows?(k: KDoor): { doorId: number; window: bigint }[];
  /** The windows the slot holds and their sequences, for `door list --json` (rotating doors). */
  windows?(k: KDoor): { window: string; sequence: string[] }[];
}

// ---- daemon (doors verified in user space) --------------------------------------------------

/** The verdict on one datagram the kernel handed up. */
export type UserVerdict =
  | {
      ok: true;
      /** the client whose key verified it (for the grant's log line) */
      client: string;
      /** what makes the knock one-time: claimed fleet-wide in fleet mode */
      nonce: Buffer;
      /** the address to open for, 16 bytes IPv4-mapped, when the message names one other than the sender */
      grantAddr?: Buffer;
    }
  | { ok: false; reason: string; client?: string };

export interface UserVerifier {
  /** addr: the sender as the kernel saw it (16 bytes, IPv4-mapped); nowMs: the wall clock */
  check(addr: Buffer, datagram: Buffer, nowMs: number): UserVerdict;
}

/**
 * A door whose knocks the kernel only prefilters (KernelSide.ports().single, encode's prefilter
 * fields) and hands up as events; the daemon verifies them and grants. (For the fwknop door;
 * signed doors still go through the daemon's own path, src/daemon.ts onSigned.)
 */
export interface DaemonSide<T extends DoorType> {
  /** EVENT.X: the kernel event that carries this door's datagrams up */
  event: number;
  /** the longest the nonce must be remembered (fleet claims' lease), from the door's config */
  nonceLifetimeMs(d: DoorConfigOf<T>): number;
  /** builds the door's verifier from its config and the key material the daemon loaded */
  verifier(d: DoorConfigOf<T>, secrets: DoorSecrets): UserVerifier;
}

// ---- client and CLI -------------------------------------------------------------------------

/** A door ready to knock on: what the client needs (key material loaded), by type. */
export interface KnockDoorBase<T extends DoorType> {
  type: T;
  /** the door's name at the gate, null for a door given on the command line without one */
  name: string | null;
}

/** Key files given on the command line for a door of the config. */
export interface KeyFileOptions {
  /** spa: the key file to use instead of the config's key_file; signed: the client's private key (required) */
  keyFile?: string;
  /** rotating: the secret file to use instead of the config's secret_file */
  secretFile?: string;
}

/** The knock options of `knockgate knock` that describe a door (parsed by commander). */
export interface DoorOptions {
  sequence?: Step[];
  keyFile?: string;
  secretFile?: string;
  port?: number;
  range?: PortRange;
  length?: number;
  window?: number;
  payload?: Buffer;
  icmp?: boolean;
  source?: Buffer;
}

/** How the CLI talks back while building a door from its options. */
export interface CommandLineContext {
  /** the DOOR argument */
  name: string | undefined;
  /** "--type spa" (or "--sequence") */
  typeText: string;
  /** the DOOR name, or a usage error saying the knock is bound to it (example: a name to show) */
  named(example: string): string;
  /** a usage error: `${typeText} needs ${what}: add ${example}` */
  need(what: string, example: string): never;
  usageError(message: string): never;
}

export interface ClientSide<T extends DoorType, K extends KnockDoorBase<T>> {
  /** The door to knock on for a door of the config, reading its key files. Throws KnockError. */
  fromConfig(d: DoorConfigOf<T>, opts: KeyFileOptions): Promise<K>;
  /**
   * The door given on the command line with --type (or --sequence). Throws KnockError for an
   * unusable key file, and through ctx for a missing option.
   */
  fromCommandLine(opts: DoorOptions, ctx: CommandLineContext): Promise<K>;
  /** the knock options (DoorOptions keys) this type takes */
  options: readonly (keyof DoorOptions)[];
  /**
   * Sends one complete knock. Throws KnockError when a packet cannot be sent. Resolves with a
   * description of what was sent when it differs from describe (a rotating door's window).
   */
  send(target: Target, door: K, opts: SendOptions): Promise<string | void>;
  /** What a knock looks like, for messages; never key material. */
  describe(door: K, nowMs: number): string;
  /** What to check first when a door of this type did not open. */
  hint: string;
  /** A config door's key file paths made absolute against the config's directory. */
  resolveFiles?(d: DoorConfigOf<T>, resolve: (path: string) => string): DoorConfigOf<T>;
}

// ---- the whole type ---------------------------------------------------------------------------

export interface DoorKind<T extends DoorType = DoorType, K extends KnockDoorBase<T> = KnockDoorBase<T>> {
  type: T;
  config: ConfigSide<T>;
  kernel: KernelSide<T>;
  client: ClientSide<T, K>;
  /** only for doors verified in user space */
  daemon?: DaemonSide<T>;
}

/**
 * Stands for a key file in doors read back from the kernel: the kernel holds a spa door's key
 * (the gate keeps it when the CLI edits other doors), a rotating door's current sequences and a
 * signed door's port; the files themselves are only known to the daemon's config.
 */
export const LIVE_KEY = '(held by the live gate)';

export const NS_PER_MS = 1_000_000n;

/** Milliseconds of a kernel duration (ns). */
export function msOf(ns: bigint): number {
  return Number(ns / NS_PER_MS);
}
