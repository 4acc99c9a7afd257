// The typed config model, its defaults and its bounds. Everything here is plain data: the
// parser (schema.ts) produces it, the policy compiler (src/kernel/tables.ts) consumes it.
import type { Cidr } from '../net/addr.js';
import type { ConfigIssue } from './errors.js';

export type { Cidr } from '../net/addr.js';
export type { ConfigIssue } from './errors.js';

export type Proto = 'tcp' | 'udp';
export type XdpMode = 'native' | 'generic' | 'auto';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
/** source: a grant opens the door's ports to the source address; flow-only: to one new flow. */
export type Scope = 'source' | 'flow-only';

export const XDP_MODES: readonly XdpMode[] = ['native', 'generic', 'auto'];

/** How the gate holds an interface: a program in libxdp's multi-program dispatcher (shared
 * with other XDP programs, xdp-tools' convention), or the interface's one XDP slot through a
 * direct bpf_link. */
export type AttachMethod = 'dispatcher' | 'link';
export const ATTACH_METHODS: readonly AttachMethod[] = ['dispatcher', 'link'];
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
export const SCOPES: readonly Scope[] = ['source', 'flow-only'];

/**
 * sequence: a fixed knock sequence. rotating: a sequence derived from a shared secret for each
 * time window, good for one grant. spa: one UDP datagram with a SipHash-2-4 MAC, verified by
 * the XDP program. signed: one UDP datagram signed with a client's Ed25519 key, verified by the
 * daemon. payload: one UDP datagram or ICMP echo request whose payload starts with a byte string.
 * docs/KNOCKS.md has the wire formats.
 */
export type DoorType = 'sequence' | 'rotating' | 'spa' | 'signed' | 'payload';
export const DOOR_TYPES: readonly DoorType[] = ['sequence', 'rotating', 'spa', 'signed', 'payload'];
/** A door without a `type` key. */
export const DEFAULT_DOOR_TYPE: DoorType = 'sequence';

/** type rotating: the sequence of window w is derived from the secret (src/knock/rotating.ts). */
export interface RotatingSpec {
  secretFile: string;
  /** the ports the sequence is drawn from; every port of it is a knock port of the door */
  range: PortRange;
  /** steps per sequence, 2..8 */
  length: number;
  windowMs: number;
}

/** type spa: the datagram's port (UDP) and the file holding its 128-bit SipHash key. */
export interface SpaSpec {
  port: number;
  keyFile: string;
  /** largest accepted distance between the knock's timestamp and the gate's clock */
  maxSkewMs: number;
}

export interface SignedClient {
  /** the client's name in the config: it appears in the grant's log line */
  name: string;
  publicKeyFile: string;
}

/** type signed: the datagram's port (UDP) and the public keys of the clients that may knock. */
export interface SignedSpec {
  port: number;
  clients: SignedClient[];
  maxSkewMs: number;
}

/** type payload: a UDP datagram to port (proto udp), or an ICMP/ICMPv6 echo request (proto icmp). */
export interface PayloadSpec {
  proto: 'udp' | 'icmp';
  /** 0 with icmp */
  port: number;
  /** the prefix, 1..32 bytes */
  payload: Buffer;
}

export interface Step {
  port: number;
  proto: Proto;
}

/** Inclusive port range; a single port has first === last. */
export interface PortRange {
  first: number;
  last: number;
  proto: Proto;
}

/** What every door has, whatever its type. */
export interface DoorBase {
  name: string;
  /** type sequence: the steps; empty for every other type */
  sequence: Step[];
  protects: PortRange[];
  /** null: any source may knock. Canonical and without duplicates, in file order. */
  allowFrom: Cidr[] | null;
  stepTimeoutMs: number;
  sequenceTimeoutMs: number;
  openForMs: number;
  /** a flow opened under this door's grant ends after this long without a packet */
  flowIdleMs: number;
  scope: Scope;
  /**
   * Fleet mode, one-time doors (rotating, signed): with etcd unreachable, `local` keeps
   * granting from this host's own state (a knock could be used once per partitioned host);
   * `closed` refuses until a fleet-wide claim can be made again.
   */
  onPartition?: OnPartition;
}

/**
 * The type-specific settings of each door type, by type: a door of type T is a DoorBase with
 * `type: T` and these fields. A new door type adds one line here and its module in src/doors/.
 */
export interface DoorSpecs {
  sequence: Record<never, never>;
  rotating: { rotating: RotatingSpec };
  spa: { spa: SpaSpec };
  signed: { signed: SignedSpec };
  payload: { payload: PayloadSpec };
}

/** A door of type T. */
export type DoorConfigOf<T extends DoorType> = DoorBase & { type: T } & DoorSpecs[T];

/** A door of the config: a union discriminated by `type` (narrow on it to reach the type's settings). */
export type DoorConfig = { [T in DoorType]: DoorConfigOf<T> }[DoorType];

export type OnPartition = 'local' | 'closed';
export const ON_PARTITION: readonly OnPartition[] = ['local', 'closed'];
/** shared: a cooldown started on one host holds on every host; local: each host its own. */
export type CooldownSharing = 'shared' | 'local';
export const COOLDOWN_SHARING: readonly CooldownSharing[] = ['shared', 'local'];

/** The optional `fleet:` section: grants and one-time knocks shared through etcd (docs/FLEET.md). */
export interface FleetConfig {
  /** etcd client URLs, e.g. https://198.18.0.1:2379 (a bare host:port means http://) */
  endpoints: string[];
  /** every key of this fleet lives under it; ends with "/" */
  prefix: string;
  /** this host's name in the fleet (default: the hostname) */
  hostId: string;
  /** TLS: files relative to the config file's directory; key_file must be private (0600) */
  tls: { caFile: string | null; certFile: string | null; keyFile: string | null } | null;
  /** etcd authentication; the password file must be private (0600) */
  auth: { username: string; passwordFile: string } | null;
  cooldowns: CooldownSharing;
}

export interface InterfaceConfig {
  /** an interface name, or a glob pattern (`eth*`) standing for every interface it matches */
  name: string;
  mode: XdpMode;
  /** attach (default dispatcher) */
  attach: AttachMethod;
  /** xdp_priority: the run priority in the dispatcher (lower runs first) */
  priority: number;
  /** true when `name` is a pattern (src/config/ifpattern.ts) */
  pattern?: boolean;
}

export interface GateConfig {
  /** Absolute path of the file the config came from; null when parsed from text. */
  file: string | null;
  interfaces: InterfaceConfig[];
  pinPath: string;
  keep: boolean;
  log: { level: LogLevel; denialsPerSecond: number; knockEventsPerSecond: number };
  limits: { sources: number; flows: number; eventRingBytes: number; firstKnockFilterBytes: number };
  /** 0 failures: the limit is off */
  bruteForce: { maxFailures: number; failureWindowMs: number; cooldownMs: number };
  /** In file order. */
  doors: DoorConfig[];
  /** null: this host is an island (no fleet section) */
  fleet?: FleetConfig | null;
  /** Questionable but valid things, with their positions. */
  warnings: ConfigIssue[];
}

/** Bounds. The per-door counts mirror bpf/knock.h (KG_MAX_DOORS, KG_MAX_STEPS, ...). */
export const LIMITS = {
  maxDoors: 16, // KG_MAX_DOORS
  maxSteps: 16, // KG_MAX_STEPS
  maxProtects: 16, // KG_MAX_PROTECTS
  maxDoorNameLength: 31, // KG_NAME_LEN - 1 (NUL)
  maxAllowPerDoor: 256,
  /** kg_allow holds 4096 keys (docs/DESIGN.md) and both generations live in it at once. */
  maxAllowTotal: 2048,
  maxInterfaceNameLength: 15, // IFNAMSIZ - 1
  xdpPriorityMax: 0xffff_ffff, // libxdp's run_prio is an unsigned int
  sourcesMin: 64,
  sourcesMax: 16_777_216,
  flowsMin: 64,
  flowsMax: 16_777_216,
  /** the first-knock filter: 128-byte blocks, a power of two of them */
  filterMin: 64 * 1024,
  filterMax: 1024 * 1024 * 1024,
  maxFailuresMax: 1000,
  ringMin: 4096,
  ringMax: 256 * 1024 * 1024,
  denialsPerSecondMax: 100_000,
  knockEventsPerSecondMax: 100_000,
  maxDurationMs: 24 * 3_600_000,
  /** rotating doors: KG_ROT_STEPS steps per window's sequence; ranges of at least 64 ports */
  rotatingMinLength: 2,
  rotatingMaxLength: 8, // KG_ROT_STEPS
  rotatingMinRange: 64,
  windowMinMs: 5_000,
  windowMaxMs: 3_600_000,
  maxSkewMinMs: 1_000,
  maxSkewMaxMs: 600_000,
  payloadMaxBytes: 32, // KG_PAYLOAD_LEN
  maxClientsPerDoor: 1024,
} as const;

/** The embedded defaults: what a key means when it is absent. */
export const DEFAULTS = {
  xdpMode: 'auto' as XdpMode,
  attach: 'dispatcher' as AttachMethod,
  /** ahead of xdp-tools' default (50), level with xdp-filter (10): see docs/DESIGN.md "Sharing the interface" */
  xdpPriority: 10,
  pinPath: '/sys/fs/bpf/knockgate',
  keep: false,
  log: { level: 'info' as LogLevel, denialsPerSecond: 20, knockEventsPerSecond: 100 },
  // KG_DEFAULT_SOURCES, KG_DEFAULT_FLOWS, KG_DEFAULT_RING_BYTES, KG_DEFAULT_FK_BLOCKS * 128
  limits: { sources: 65536, flows: 65536, eventRingBytes: 256 * 1024, firstKnockFilterBytes: 8 * 1024 * 1024 },
  bruteForce: { maxFailures: 5, failureWindowMs: 60_000, cooldownMs: 300_000 },
  stepTimeoutMs: 5_000,
  sequenceTimeoutMs: 15_000,
  openForMs: 30_000,
  flowIdleMs: 600_000,
  scope: 'source' as Scope,
  rotatingLength: 4,
  windowMs: 30_000,
  maxSkewMs: 30_000,
  onPartition: 'local' as OnPartition,
  /** local: a spoofed source's lockout stays on the host it was spoofed at (docs/FLEET.md) */
  cooldowns: 'local' as CooldownSharing,
} as const;

/** Door names: 1..31 characters [A-Za-z0-9_-], starting with a letter or digit. */
export const DOOR_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$/;
