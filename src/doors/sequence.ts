// type sequence: a fixed knock sequence. The steps live in DoorBase.sequence (every door has the
// field, empty for other types); the config walker reads them, the kernel's sequence state
// machine judges them (bpf/knock.bpf.c), and a PORT/tcp step is a TCP SYN, a PORT/udp step a UDP
// datagram.
import type { Step } from '../config/model.js';
import { formatStep } from '../config/ports.js';
import { sendSteps } from '../client/transport.js';
import { DOOR_TYPE, protoName } from '../kernel/layout.js';
import type { DoorKind, KnockDoorBase } from './kind.js';

/** A fixed knock sequence: the same steps every time. */
export interface SequenceDoor extends KnockDoorBase<'sequence'> {
  /** the door's name in the config, null for a sequence given on the command line */
  name: string | null;
  sequence: readonly Step[];
}

export const sequence: DoorKind<'sequence', SequenceDoor> = {
  type: 'sequence',
  config: {
    keys: ['sequence', 'step_timeout', 'sequence_timeout'],
    // The steps are common fields (DoorBase.sequence): the walker reads them for every type that
    // takes the `sequence` key.
    check: () => ({}),
    render: (d) => ({ sequence: d.sequence.map(formatStep) }),
    describe: (d) => d.sequence.map(formatStep).join(' '),
    knockRanges: (d) => d.sequence.map((s) => ({ first: s.port, last: s.port, proto: s.proto })),
    sequenced: true,
    onPartition: 'has nothing to claim',
  },
  kernel: {
    number: DOOR_TYPE.SEQUENCE,
    // The steps are written with the common fields (KDoor.steps from DoorBase.sequence).
    encode: () => ({}),
    decode: () => ({}),
    decodeSteps: (k) => k.steps.map((s) => ({ port: s.port, proto: protoName(s.proto) })),
    sameRules(prev, k) {
      if (prev.steps.length !== k.steps.length) return false;
      return k.steps.every((b, i) => prev.steps[i]?.port === b.port && prev.steps[i]?.proto === b.proto);
    },
    ports: (d) => ({ steps: d.sequence.map((s) => ({ first: s.port, last: s.port, proto: s.proto })), single: null, icmp: false }),
    claims: false,
  },
  client: {
    fromConfig: async (d) => ({ type: 'sequence', name: d.name, sequence: d.sequence }),
    async fromCommandLine(opts, ctx) {
      if (ctx.name !== undefined) ctx.usageError(`give either a DOOR (${ctx.name}) or --sequence, not both`);
      if (opts.sequence === undefined) return ctx.need('the steps', '--sequence 7000/tcp,8000/udp,9000/tcp');
      return { type: 'sequence', name: null, sequence: opts.sequence };
    },
    options: [],
    send: (target, door, opts) => sendSteps(target, door.sequence, opts.delayMs),
    describe: (door) => door.sequence.map(formatStep).join(' '),
    hint: 'the sequence',
  },
};
