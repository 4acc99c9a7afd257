// Commander argument parsers. Each one wraps a parser of the config model (so the command line
// and knockgate.yaml accept exactly the same text) and throws commander's InvalidArgumentError,
// whose message commander prints after "option '--x <v>' argument 'y' is invalid."; main.ts
// maps it to the usage exit code (2).
import { InvalidArgumentError } from 'commander';
import { DOOR_NAME, LIMITS, type PortRange, type Scope, type Step } from '../config/model.js';
import { MAX_DURATION_MS, formatDuration, parseDuration, parseTimeout } from '../config/duration.js';
import { formatRange, formatStep, parsePort, parsePortRange, parseStep } from '../config/ports.js';
import { parseAddress, parseCidr, type Cidr } from '../net/addr.js';
import { parsePayload } from '../config/schema.js';

function invalid(err: unknown): InvalidArgumentError {
  return new InvalidArgumentError(err instanceof Error ? err.message : String(err));
}

/** Runs a config parser, turning its Error into an InvalidArgumentError. */
function wrap<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw invalid(err);
  }
}

/** Splits "a,b, c" into trimmed items; an empty item is an error that shows the list. */
function items(text: string, what: string, example: string): string[] {
  const parts = text.split(',').map((p) => p.trim());
  if (parts.length === 1 && parts[0] === '') throw new InvalidArgumentError(`no ${what} given: write e.g. ${example}`);
  if (parts.some((p) => p === '')) {
    throw new InvalidArgumentError(`${JSON.stringify(text)} has an empty item: separate ${what} with single commas, e.g. ${example}`);
  }
  return parts;
}

/** A duration such as "100ms", "5s", "10m" (0..24h), in milliseconds. */
export function parseDurationArg(value: string): number {
  const ms = wrap(() => parseDuration(value));
  if (ms > MAX_DURATION_MS) throw new InvalidArgumentError(`${value.trim()} is too long: at most ${formatDuration(MAX_DURATION_MS)}`);
  return ms;
}

/** A duration more than 0 and at most 24h (a timeout), in milliseconds. */
export function parseTimeoutArg(value: string): number {
  return wrap(() => parseTimeout(value));
}

/** A grant scope: source or flow-only. */
export function parseScopeArg(value: string): Scope {
  const v = value.trim().toLowerCase();
  if (v === 'source' || v === 'flow-only') return v;
  throw new InvalidArgumentError(`${JSON.stringify(value)} is not a scope: write source or flow-only`);
}

const SEQUENCE_EXAMPLE = '7000/tcp,8000/udp,9000/tcp';

/** A knock sequence "7000/tcp,8000/udp,9000/tcp": 1..16 steps, none repeating the one before. */
export function parseSequenceArg(value: string): Step[] {
  const parts = items(value, 'knock steps', SEQUENCE_EXAMPLE);
  if (parts.length > LIMITS.maxSteps) {
    throw new InvalidArgumentError(`${parts.length} steps: a sequence has at most ${LIMITS.maxSteps}`);
  }
  const steps: Step[] = [];
  for (const part of parts) {
    const step = wrap(() => parseStep(part));
    const prev = steps.at(-1);
    if (prev !== undefined && prev.port === step.port && prev.proto === step.proto) {
      throw new InvalidArgumentError(
        `${formatStep(step)} repeats the step before it: the gate takes a repeated knock for a retransmission, so this sequence could never complete`,
      );
    }
    steps.push(step);
  }
  return steps;
}

/** Protected ports "22/tcp,60000-61000/udp": 1..16 ports or ranges. */
export function parseProtectsArg(value: string): PortRange[] {
  const parts = items(value, 'ports', '22/tcp,60000-61000/udp');
  if (parts.length > LIMITS.maxProtects) {
    throw new InvalidArgumentError(`${parts.length} entries: a door protects at most ${LIMITS.maxProtects} ports or ranges`);
  }
  return parts.map((part) => wrap(() => parsePortRange(part)));
}

/** Networks "198.18.0.0/15,2001:db8::/32" (a bare address is a /32 or /128); duplicates dropped. */
export function parseCidrListArg(value: string): Cidr[] {
  const parts = items(value, 'networks', '198.18.0.0/15,2001:db8::/32');
  if (parts.length > LIMITS.maxAllowPerDoor) {
    throw new InvalidArgumentError(`${parts.length} networks: at most ${LIMITS.maxAllowPerDoor}`);
  }
  const out: Cidr[] = [];
  for (const part of parts) {
    const cidr = wrap(() => parseCidr(part));
    if (!out.some((c) => c.text === cidr.text)) out.push(cidr);
  }
  return out;
}

/** An IPv4 or IPv6 address, in the kernel's 16-byte form (IPv4 mapped). */
export function parseAddressArg(value: string): Buffer {
  return wrap(() => parseAddress(value));
}

/** A TCP or UDP port 1..65535. */
export function parsePortArg(value: string): number {
  return wrap(() => parsePort(value.trim()));
}

/** A parser for a whole number min..max. */
export function parseCountArg(min: number, max: number): (value: string) => number {
  return (value: string): number => {
    const text = value.trim();
    if (!/^-?\d+$/.test(text)) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a whole number: write a number ${min}..${max}`);
    const n = Number(text);
    if (n < min || n > max) throw new InvalidArgumentError(`${n} is out of range: write a number ${min}..${max}`);
    return n;
  };
}

/** A door name, by the rule of the config's door names. */
export function parseDoorNameArg(value: string): string {
  if (DOOR_NAME.test(value)) return value;
  const shown = JSON.stringify(value);
  if (value.length === 0) throw new InvalidArgumentError(`${shown} is not a door name: it is empty`);
  if (value.length > LIMITS.maxDoorNameLength) {
    throw new InvalidArgumentError(`${shown} is not a door name: it is ${value.length} characters long; at most ${LIMITS.maxDoorNameLength}`);
  }
  throw new InvalidArgumentError(`${shown} is not a door name: use letters, digits, "_" and "-", starting with a letter or digit`);
}

/** A UDP port for a single-datagram knock: "62201" or "62201/udp". */
export function parseUdpPortArg(value: string): number {
  const text = value.trim();
  const m = /^(.*)\/([A-Za-z]+)$/.exec(text);
  if (m === null) return wrap(() => parsePort(text));
  if ((m[2] ?? '').toLowerCase() !== 'udp') {
    throw new InvalidArgumentError(`${JSON.stringify(value)}: this knock is a UDP datagram: write the port as ${m[1]} or ${m[1]}/udp`);
  }
  return wrap(() => parsePort(m[1] ?? ''));
}

/** The port range of a rotating door, "40000-40999/udp": at least LIMITS.rotatingMinRange ports. */
export function parseRotatingRangeArg(value: string): PortRange {
  const range = wrap(() => parsePortRange(value.trim()));
  const n = range.last - range.first + 1;
  if (n < LIMITS.rotatingMinRange) {
    throw new InvalidArgumentError(
      `${formatRange(range)} has ${n} port${n === 1 ? '' : 's'}: a rotating door draws its steps from at least ${LIMITS.rotatingMinRange} ports, e.g. 40000-40999/udp`,
    );
  }
  return range;
}

/** The window of a rotating door: a duration LIMITS.windowMinMs..LIMITS.windowMaxMs. */
export function parseWindowArg(value: string): number {
  const ms = wrap(() => parseDuration(value));
  if (ms < LIMITS.windowMinMs || ms > LIMITS.windowMaxMs) {
    throw new InvalidArgumentError(`${value.trim()} is out of range: a window is ${formatDuration(LIMITS.windowMinMs)}..${formatDuration(LIMITS.windowMaxMs)}`);
  }
  return ms;
}

/** A knock payload: "hex:6b6e6f636b" (hex digits) or text (its UTF-8 bytes), 1..32 bytes. */
export function parsePayloadArg(value: string): Buffer {
  return wrap(() => parsePayload(value));
}
