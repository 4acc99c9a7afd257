/**
 * The CLI in fleet mode. `grant` and `revoke` change this host's kernel first, as without a
 * fleet; then, unless --local, the change goes fleet-wide: through the running daemon (over the
 * control socket; it publishes, and keeps the record until etcd takes it), or, with no daemon
 * running, written to etcd by the CLI itself with the config's credentials. `fleet status` and
 * `grants` ask the daemon, or read etcd themselves.
 */
import { existsSync } from 'node:fs';
import { pino } from 'pino';
import { loadConfigFile, type GateConfig } from '../config/index.js';
import type { FleetConfig } from '../config/model.js';
import type { EngineState, FleetEngine } from '../fleet/engine.js';
import { loadFleetCredentials } from '../fleet/credentials.js';
import { PREFIX, RECORD_VERSION, decodeGrantRecord, encodeRecord, grantKey, leaseSecond, sourceText, type GrantRecord } from '../fleet/records.js';
import { CliError, EXIT } from './exit.js';
import { DEFAULT_CONFIG } from './paths.js';
import type { TargetOptions } from './target.js';

/** The config's fleet section, when the command's config (-c, else the default) has one. */
export async function fleetConfigOf(opts: TargetOptions): Promise<{ config: GateConfig; fleet: FleetConfig } | null> {
  const path = opts.config ?? (existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : null);
  if (path === null) return null;
  let config: GateConfig;
  try {
    config = await loadConfigFile(path);
  } catch (err) {
    if (opts.config !== undefined) throw err;
    return null;
  }
  return config.fleet ? { config, fleet: config.fleet } : null;
}

/** Opens an engine for one CLI command, waits (bounded) until it reaches etcd, runs fn, closes. */
export async function withCliEngine<T>(f: { config: GateConfig; fleet: FleetConfig }, fn: (engine: FleetEngine) => Promise<T>, timeoutMs = 8_000): Promise<T> {
  const creds = await loadFleetCredentials(f.config, f.fleet);
  // Loaded only when needed: the etcd client is heavy for every other command.
  const { FleetEngine } = await import('../fleet/engine.js');
  const logger = pino({ level: 'silent' });
  const engine = FleetEngine.open({
    endpoints: f.fleet.endpoints,
    prefix: f.fleet.prefix,
    hostId: f.fleet.hostId,
    ...(creds.tls ? { tls: creds.tls } : {}),
    ...(creds.auth ? { auth: creds.auth } : {}),
    logger,
    unreachableAfterMs: Math.min(timeoutMs, 5_000),
    heartbeat: false,
  });
  try {
    const state = await new Promise<{ state: EngineState; reason: string }>((resolve) => {
      if (engine.state === 'connected') return resolve({ state: 'connected', reason: '' });
      const timer = setTimeout(() => resolve({ state: engine.state, reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
      engine.on('state', (s: EngineState, reason: string) => {
        if (s === 'connected' || s === 'unreachable') {
          clearTimeout(timer);
          resolve({ state: s, reason });
        }
      });
    });
    if (state.state !== 'connected') {
      throw new CliError(`etcd is unreachable (${f.fleet.endpoints.join(', ')}: ${state.reason || state.state})`, EXIT.FAILED);
    }
    return await fn(engine);
  } finally {
    await engine.close().catch(() => undefined);
  }
}

/** Writes a grant record (no daemon running to publish it). */
export async function writeGrant(engine: FleetEngine, hostId: string, addr: Buffer, door: string, forMs: number): Promise<void> {
  const now = Date.now();
  const rec: GrantRecord = { v: RECORD_VERSION, state: 'granted', source: sourceText(addr), door, expiresAtMs: now + forMs, atMs: now, origin: hostId, how: 'manual' };
  await engine.put(grantKey(door, addr), encodeRecord(rec), { expiresAtSec: leaseSecond(rec.expiresAtMs) });
}

/** Writes revoke tombstones (no daemon running to publish them); see src/fleet/replicator.ts. */
export async function writeRevoke(engine: FleetEngine, hostId: string, addr: Buffer, doors: readonly string[], holdMs: number): Promise<void> {
  const now = Date.now();
  for (const door of doors) {
    const rec: GrantRecord = { v: RECORD_VERSION, state: 'revoked', source: sourceText(addr), door, expiresAtMs: now + holdMs, atMs: now, origin: hostId, how: 'manual' };
    await engine.put(grantKey(door, addr), encodeRecord(rec), { expiresAtSec: leaseSecond(rec.expiresAtMs) });
  }
}

/** "source/door" -> origin host of every live grant in the store. */
export async function readOrigins(engine: FleetEngine): Promise<Record<string, string>> {
  const snap = await engine.list(PREFIX.grants);
  const out: Record<string, string> = {};
  const now = Date.now();
  for (const it of snap.items) {
    const r = decodeGrantRecord(it.value);
    if (r && r.state === 'granted' && r.expiresAtMs > now) out[`${r.source}/${r.door}`] = r.origin;
  }
  return out;
}
