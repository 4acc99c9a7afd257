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
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
export const SCOPES: readonly Scope[] = ['source', 'flow-only'];

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

export interface DoorConfig {
  name: string;
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
}

export interface InterfaceConfig {
  name: string;
  mode: XdpMode;
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
} as const;

/** The embedded defaults: what a key means when it is absent. */
export const DEFAULTS = {
  xdpMode: 'auto' as XdpMode,
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
} as const;

/** Door names: 1..31 characters [A-Za-z0-9_-], starting with a letter or digit. */
export const DOOR_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$/;
