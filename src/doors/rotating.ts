// type rotating: a knock sequence derived from a shared secret for each time window
// (src/knock/rotating.ts), good for one grant. The daemon writes the sequences of the current
// and the previous window into the kernel slot at each window's start; the kernel's sequence
// state machine judges them and records a completed window as spent (or, in fleet mode, hands
// it up to be claimed). Every port of the range is a knock port, so a knock on any other one
// resets progress.
import { boundedDuration, filePath, required, scalarItem } from '../config/checker.js';
import { formatDuration } from '../config/duration.js';
import { DEFAULTS, LIMITS, type PortRange } from '../config/model.js';
import { formatRange, formatStep, parsePortRange } from '../config/ports.js';
import { plural, readKey, sendSteps } from '../client/transport.js';
import { readSecretFile, rotatingSequence, windowBounds, windowOf } from '../knock/index.js';
import { doorId } from '../knock/wire.js';
import { DOOR_TYPE, KG, protoName, protoNumber, rotatingSteps, type KDoor, type KStep } from '../kernel/layout.js';
import { LIVE_KEY, NS_PER_MS, msOf, type DoorConfigOf, type DoorKind, type KnockDoorBase } from './kind.js';
import type { PlanContext } from '../kernel/tables.js';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A rotating sequence: the steps of time window w = floor(unixMs / windowMs) are derived from
 * the secret and the door's name (src/knock/rotating.ts); each step is a port of `range`.
 */
export interface RotatingDoor extends KnockDoorBase<'rotating'> {
  /** the door's name at the gate: part of the derivation */
  name: string;
  secret: Buffer;
  range: PortRange;
  length: number;
  windowMs: number;
}

/** A rotating knock starts only when the window has at least length * delay + this left. */
export const WINDOW_MARGIN_MS = 500;

/** A rotating door's shared secret (16..64 bytes of hex in a file private to its owner). Throws KnockError. */
export function loadRotatingSecret(path: string): Promise<Buffer> {
  return readKey(() => readSecretFile(path, { minBytes: 16, maxBytes: 64 }));
}

function describeWindow(door: RotatingDoor, w: bigint): string {
  return `rotating sequence of window ${w} (${plural(door.length, 'step')} in ${formatRange(door.range)})`;
}

/**
 * The door's two sequences: computed from the secret for the current and the previous window
 * (window x in sequence x & 1, live until the end of window x + 1), or kept from the previous
 * slot when there is no secret here (the CLI) or no clock.
 */
function windowFields(d: DoorConfigOf<'rotating'>, k: KDoor, prev: KDoor | null, ctx: PlanContext): Pick<KDoor, 'steps' | 'win' | 'validUntilNs'> {
  const r = d.rotating;
  const secret = ctx.secrets?.get(d.name);
  if (secret !== undefined && ctx.clock !== undefined) {
    const { wallMs, monoNs } = ctx.clock;
    const w = windowOf(wallMs, r.windowMs);
    const steps: KStep[] = Array.from({ length: KG.MAX_STEPS }, () => ({ port: 0, proto: 0 }));
    const win: [bigint, bigint] = [0n, 0n];
    const validUntilNs: [bigint, bigint] = [0n, 0n];
    for (const x of [w - 1n, w]) {
      if (x < 0n) continue;
      const s = Number(x & 1n);
      rotatingSequence(secret, d.name, x, r.range, r.length).forEach((port, i) => {
        steps[KG.ROT_STEPS * s + i] = { port, proto: protoNumber(r.range.proto) };
      });
      win[s] = x;
      const endMs = Number(x + 2n) * r.windowMs; // the end of window x + 1
      validUntilNs[s] = monoNs + BigInt(Math.max(0, endMs - wallMs)) * NS_PER_MS;
    }
    return { steps, win, validUntilNs };
  }
  if (prev !== null && prev.name === d.name && prev.type === DOOR_TYPE.ROTATING && prev.nsteps === k.nsteps &&
      prev.windowNs === k.windowNs && prev.range.first === k.range.first && prev.range.last === k.range.last && prev.range.proto === k.range.proto) {
    return { steps: prev.steps.map((x) => ({ ...x })), win: [prev.win[0], prev.win[1]], validUntilNs: [prev.validUntilNs[0], prev.validUntilNs[1]] };
  }
  return { steps: [], win: [0n, 0n], validUntilNs: [0n, 0n] };
}

export const rotating: DoorKind<'rotating', RotatingDoor> = {
  type: 'rotating',
  config: {
    keys: ['secret_file', 'knock_ports', 'length', 'window', 'step_timeout', 'sequence_timeout'],
    check(c, entry, e) {
      const before = c.errors.length;
      const secretFile = filePath(c, required(c, entry, e, 'secret_file', 'the file holding the shared secret (hex), e.g. secret_file: /etc/knockgate/ssh.secret; make one with `knockgate keygen --type rotating FILE`'), '/etc/knockgate/ssh.secret');
      const re = required(c, entry, e, 'knock_ports', 'the port range the sequences are drawn from, e.g. knock_ports: 40000-40999/udp');
      let range = re === undefined ? undefined : scalarItem(c, c.valueNode(re), re.path, re, 'a port range, e.g. 40000-40999/udp', parsePortRange);
      if (range !== undefined && re !== undefined && range.last - range.first + 1 < LIMITS.rotatingMinRange) {
        c.error(c.valueNode(re), re.path, `${formatRange(range)} has ${range.last - range.first + 1} ports: a rotating door draws from at least ${LIMITS.rotatingMinRange}, so that a sequence cannot be guessed`);
        range = undefined;
      }
      const le = e.get('length');
      const length = le === undefined ? DEFAULTS.rotatingLength : c.present(le, `remove the key to use the default (${DEFAULTS.rotatingLength})`) ? c.integer(le, LIMITS.rotatingMinLength, LIMITS.rotatingMaxLength) : undefined;
      const windowMs = boundedDuration(c, e, 'window', LIMITS.windowMinMs, LIMITS.windowMaxMs, DEFAULTS.windowMs);
      if (c.errors.length > before || secretFile === undefined || range === undefined || length === undefined || windowMs === undefined) return null;
      return { rotating: { secretFile, range, length, windowMs } };
    },
    render: ({ rotating: r }) => ({ secret_file: r.secretFile, knock_ports: formatRange(r.range), length: r.length, window: formatDuration(r.windowMs) }),
    describe: ({ rotating: r }) => `rotating sequence of ${r.length} in ${formatRange(r.range)}, window ${formatDuration(r.windowMs)}`,
    knockRanges: (d) => [d.rotating.range],
    sequenced: true,
    onPartition: true,
  },
  kernel: {
    number: DOOR_TYPE.ROTATING,
    encode(d, k, prev, ctx) {
      const r = d.rotating;
      const fields: Partial<KDoor> = {
        doorId: doorId(d.name),
        nsteps: r.length,
        windowNs: BigInt(r.windowMs) * NS_PER_MS,
        range: { first: r.range.first, last: r.range.last, proto: protoNumber(r.range.proto) },
      };
      return { ...fields, ...windowFields(d, { ...k, ...fields }, prev, ctx) };
    },
    decode: (k) => ({ rotating: { secretFile: LIVE_KEY, range: { first: k.range.first, last: k.range.last, proto: protoName(k.range.proto) }, length: k.nsteps, windowMs: msOf(k.windowNs) } }),
    sameRules(prev, k) {
      if (prev.nsteps !== k.nsteps || prev.windowNs !== k.windowNs || prev.range.first !== k.range.first || prev.range.last !== k.range.last) return false;
      // A window held before and after must have kept its sequence (a new secret changes them all).
      for (let a = 0; a < 2; a++) {
        for (let b = 0; b < 2; b++) {
          if (prev.validUntilNs[a] === 0n || k.validUntilNs[b] === 0n || prev.win[a] !== k.win[b]) continue;
          for (let i = 0; i < k.nsteps; i++) {
            const x = prev.steps[KG.ROT_STEPS * a + i];
            const y = k.steps[KG.ROT_STEPS * b + i];
            if (x?.port !== y?.port || x?.proto !== y?.proto) return false;
          }
        }
      }
      return true;
    },
    // Every port of the range is a knock port: a knock on any other one resets progress.
    ports: (d) => ({ steps: [d.rotating.range], single: null, icmp: false }),
    claims: true,
    liveWindows: (k) => ([0, 1] as const).filter((s) => k.validUntilNs[s] !== 0n).map((s) => ({ doorId: k.doorId, window: k.win[s] })),
    // The windows the kernel holds now, and their sequences: what an operator checks a client against.
    windows: (k) => ([0, 1] as const)
      .filter((s) => k.validUntilNs[s] !== 0n)
      .map((s) => ({ window: k.win[s].toString(), sequence: rotatingSteps(k, s).map((x) => formatStep({ port: x.port, proto: protoName(x.proto) })) })),
  },
  client: {
    async fromConfig(d, opts) {
      const r = d.rotating;
      const secret = await loadRotatingSecret(opts.secretFile ?? r.secretFile);
      return { type: 'rotating', name: d.name, secret, range: r.range, length: r.length, windowMs: r.windowMs };
    },
    async fromCommandLine(opts, ctx) {
      const name = ctx.named('rot');
      if (opts.secretFile === undefined) return ctx.need('the shared secret', '--secret-file FILE (made by `knockgate keygen --type rotating FILE`)');
      if (opts.range === undefined) return ctx.need('the ports the sequence is drawn from', "--range 40000-40999/udp (the door's knock_ports)");
      const secret = await loadRotatingSecret(opts.secretFile);
      return { type: 'rotating', name, secret, range: opts.range, length: opts.length ?? DEFAULTS.rotatingLength, windowMs: opts.window ?? DEFAULTS.windowMs };
    },
    options: ['secretFile', 'range', 'length', 'window'],
    /**
     * Sends the steps of the current window. When the window ends before the whole sequence could
     * arrive (less than length * delay + WINDOW_MARGIN_MS left), waits for the next window and
     * sends its sequence instead, saying so through onNote.
     */
    async send(target, door, opts) {
      const t = (opts.now ?? Date.now)();
      let w = windowOf(t, door.windowMs);
      const leftMs = windowBounds(w, door.windowMs).endMs - t;
      const needMs = door.length * opts.delayMs + WINDOW_MARGIN_MS;
      // (a knock longer than a window straddles a boundary whenever it starts: no use waiting)
      if (leftMs < needMs && needMs < door.windowMs) {
        opts.onNote?.(`window ${w} ends in ${formatDuration(leftMs)}, too soon for ${plural(door.length, 'knock')}: waiting for window ${w + 1n}`);
        await sleep(leftMs);
        w += 1n;
      }
      const ports = rotatingSequence(door.secret, door.name, w, door.range, door.length);
      await sendSteps(target, ports.map((port) => ({ port, proto: door.range.proto })), opts.delayMs);
      return describeWindow(door, w);
    },
    describe: (door, nowMs) => describeWindow(door, windowOf(nowMs, door.windowMs)),
    hint: 'the secret, the range, the length and the window (they must match the gate\'s), the clocks of both hosts',
    resolveFiles: (d, resolve) => ({ ...d, rotating: { ...d.rotating, secretFile: resolve(d.rotating.secretFile) } }),
  },
};
