// The `fleet:` section: which etcd cluster this host shares grants and one-time knocks through,
// under which prefix, as which host, with which credentials. Validation only (no file access:
// src/fleet/credentials.ts reads the files, with the same private-mode checks as key files).
import { hostname } from 'node:os';
import type { Node } from 'yaml';
import type { Checker, Entry } from './schema.js';
import { COOLDOWN_SHARING, DEFAULTS, type CooldownSharing, type FleetConfig } from './model.js';

export const FLEET_KEYS = ['endpoints', 'prefix', 'host_id', 'ca_file', 'cert_file', 'key_file', 'username', 'password_file', 'cooldowns'] as const;

/** Host ids: what appears in keys and in `fleet status`; 1..63 of [A-Za-z0-9._-]. */
export const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** The default host id: the hostname up to its first dot, if it makes a valid id. */
export function defaultHostId(): string {
  const h = hostname().split('.')[0] ?? '';
  return HOST_ID.test(h) ? h : 'knockgate';
}

/** "198.18.0.1:2379" -> "http://198.18.0.1:2379"; URLs are checked for scheme, host and port. */
export function normalizeEndpoint(text: string): string {
  const withScheme = /^[a-z]+:\/\//i.test(text) ? text : `http://${text}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new Error(`${JSON.stringify(text)} is not an etcd endpoint: write e.g. https://198.18.0.1:2379`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`${JSON.stringify(text)}: etcd endpoints are http:// or https:// URLs`);
  if (u.username !== '' || u.password !== '') throw new Error(`${JSON.stringify(text)} carries credentials in the URL: use username and password_file (the URL would reach logs)`);
  if (u.pathname !== '/' && u.pathname !== '') throw new Error(`${JSON.stringify(text)} has a path: an endpoint is scheme://host:port`);
  if (u.port === '') throw new Error(`${JSON.stringify(text)} has no port: etcd clients usually use 2379, e.g. ${u.protocol}//${u.hostname}:2379`);
  return `${u.protocol}//${u.host}`;
}

export function checkFleet(c: Checker, entry: Entry): FleetConfig | null {
  const before = c.errors.length;
  if (!c.present(entry, 'give at least endpoints, e.g. fleet: { endpoints: [https://198.18.0.1:2379], prefix: /knockgate/prod/ }, or remove the key')) return null;
  const e = c.entries(entry.value, entry.path, FLEET_KEYS, 'a mapping with endpoints, prefix and optional host_id, TLS files, username and password_file');
  if (e === null) return null;

  const endpoints: string[] = [];
  const epEntry = e.get('endpoints');
  if (epEntry === undefined) c.missing(entry.keyNode, entry.path, 'endpoints', 'the etcd client URLs, e.g. endpoints: [https://198.18.0.1:2379]');
  else if (c.present(epEntry, 'the etcd client URLs, e.g. [https://198.18.0.1:2379]')) {
    const items = c.list(epEntry, '[https://198.18.0.1:2379]');
    if (items !== null && items.length === 0) c.error(c.valueNode(epEntry), epEntry.path, '[] is empty: list the etcd members\' client URLs');
    for (const { node, index } of items ?? []) {
      const v = node !== null && 'value' in node ? (node as { value: unknown }).value : undefined;
      if (typeof v !== 'string') {
        c.error(node ?? epEntry.keyNode, [...epEntry.path, index], `expected an endpoint URL, e.g. https://198.18.0.1:2379, found ${c.describe(node)}`);
        continue;
      }
      try {
        const url = normalizeEndpoint(v);
        if (endpoints.includes(url)) c.error(node, [...epEntry.path, index], `${url} is listed twice`);
        else endpoints.push(url);
      } catch (err) {
        c.error(node, [...epEntry.path, index], (err as Error).message);
      }
    }
  }

  let prefix = '/knockgate/';
  const pfEntry = e.get('prefix');
  if (pfEntry === undefined) {
    c.missing(entry.keyNode, entry.path, 'prefix', 'the key prefix of this fleet, e.g. prefix: /knockgate/prod/ (each fleet sharing a cluster needs its own; the etcd role limits a host to it)');
  } else if (c.present(pfEntry, 'the key prefix of this fleet, e.g. /knockgate/prod/')) {
    const p = c.string(pfEntry, '/knockgate/prod/');
    if (p !== undefined) {
      if (!p.startsWith('/')) c.error(c.valueNode(pfEntry), pfEntry.path, `${JSON.stringify(p)}: a prefix starts with "/", e.g. /knockgate/prod/`);
      else if (p === '/') c.error(c.valueNode(pfEntry), pfEntry.path, '"/" is the whole key space: give the fleet a prefix of its own, e.g. /knockgate/prod/');
      else if (/[\s\0]/.test(p)) c.error(c.valueNode(pfEntry), pfEntry.path, `${JSON.stringify(p)} contains whitespace or NUL`);
      else prefix = p.endsWith('/') ? p : `${p}/`;
    }
  }

  let hostId = defaultHostId();
  const hEntry = e.get('host_id');
  if (hEntry !== undefined && c.present(hEntry, `remove the key to use the hostname (${hostId})`)) {
    const h = c.string(hEntry, 'edge-1');
    if (h !== undefined) {
      if (HOST_ID.test(h)) hostId = h;
      else c.error(c.valueNode(hEntry), hEntry.path, `${JSON.stringify(h)} is not a host id: 1..63 letters, digits, ".", "_" or "-", starting with a letter or digit`);
    }
  }

  const file = (key: string): { value: string; node: Node } | null => {
    const fe = e.get(key);
    if (fe === undefined || !c.present(fe, 'give a file path or remove the key')) return null;
    const v = c.string(fe, `/etc/knockgate/etcd-${key.replace('_file', '')}.pem`);
    if (v === undefined) return null;
    if (v.includes('\0') || v === '') {
      c.error(c.valueNode(fe), fe.path, 'not a file path');
      return null;
    }
    return { value: v, node: c.valueNode(fe) };
  };
  const ca = file('ca_file');
  const cert = file('cert_file');
  const key = file('key_file');
  if ((cert === null) !== (key === null)) {
    const have = cert ?? key!;
    c.error(have.node, [...entry.path, cert !== null ? 'cert_file' : 'key_file'], 'a client certificate needs both cert_file and key_file');
  }
  const tls = ca !== null || cert !== null || key !== null ? { caFile: ca?.value ?? null, certFile: cert?.value ?? null, keyFile: key?.value ?? null } : null;
  if (tls !== null) {
    const plain = endpoints.filter((u) => u.startsWith('http://'));
    if (plain.length > 0 && epEntry !== undefined) {
      c.error(c.valueNode(epEntry), epEntry.path, `TLS files are given but ${plain.join(', ')} ${plain.length === 1 ? 'is' : 'are'} plain http://: write https:// (or remove the TLS files)`);
    }
  }

  let auth: FleetConfig['auth'] = null;
  const uEntry = e.get('username');
  const pwFile = file('password_file');
  let username: string | undefined;
  if (uEntry !== undefined && c.present(uEntry, 'the etcd user, e.g. knockgate-edge')) username = c.string(uEntry, 'knockgate-edge');
  if (username !== undefined && pwFile === null && !e.has('password_file')) {
    c.error(uEntry!.keyNode, entry.path.concat('password_file'), 'username is given without password_file: name a private (0600) file holding the password');
  } else if (pwFile !== null && username === undefined && uEntry === undefined) {
    c.error(pwFile.node, entry.path.concat('username'), 'password_file is given without username');
  }
  if (username !== undefined && pwFile !== null) auth = { username, passwordFile: pwFile.value };

  let cooldowns: CooldownSharing = DEFAULTS.cooldowns;
  const cdEntry = e.get('cooldowns');
  if (cdEntry !== undefined && c.present(cdEntry, `remove the key to use the default (${DEFAULTS.cooldowns})`)) {
    cooldowns = c.oneOf(cdEntry, COOLDOWN_SHARING, 'a cooldown sharing') ?? cooldowns;
  }

  if (c.errors.length > before) return null;
  return { endpoints, prefix, hostId, tls, auth, cooldowns };
}
