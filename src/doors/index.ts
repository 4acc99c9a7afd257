/**
 * Every door type, by type: the one place the generic code (config walker, policy compiler,
 * client, CLI) looks a door type up. Each module holds its type's whole story (src/doors/kind.ts
 * says what that is); bpf/ holds its kernel code.
 */
import type { DoorConfig, DoorType } from '../config/model.js';
import type { DoorKind } from './kind.js';
import { payload, type PayloadDoor } from './payload.js';
import { rotating, type RotatingDoor } from './rotating.js';
import { sequence, type SequenceDoor } from './sequence.js';
import { signed, type SignedDoor } from './signed.js';
import { spa, type SpaDoor } from './spa.js';

export type { DoorKind, KnockPorts, KeyFileOptions, DoorOptions, CommandLineContext, UserVerifier, UserVerdict } from './kind.js';
export { LIVE_KEY } from './kind.js';
export type { PayloadDoor, RotatingDoor, SequenceDoor, SignedDoor, SpaDoor };

/** Every door type the client can knock on, ready to knock (key material loaded). */
export type KnockDoor = SequenceDoor | RotatingDoor | SpaDoor | SignedDoor | PayloadDoor;

export const DOORS: { [T in DoorType]: DoorKind<T, Extract<KnockDoor, { type: T }>> } = { sequence, rotating, spa, signed, payload };

/**
 * The kind of a door of the config, or of a door to knock on. (TypeScript cannot follow that
 * DOORS[d.type] fits d itself: the cast says so once, here.)
 */
export function kindOf(d: DoorConfig | KnockDoor): DoorKind<DoorType, KnockDoor> {
  return kindOfType(d.type);
}

/** The kind of a door type, for a door not built yet. */
export function kindOfType(type: DoorType): DoorKind<DoorType, KnockDoor> {
  return DOORS[type] as unknown as DoorKind<DoorType, KnockDoor>;
}
