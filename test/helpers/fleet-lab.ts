/**
 * A fleet lab: one client namespace, N gateway namespaces (one gate, daemon, pin path, TCP
 * service each) and an etcd cluster the daemons reach.
 *
 *            client ns kg-<id>-c (source 198.18.20.2 on lo, the same for every gateway)
 *     kg-<id>c1 |          kg-<id>c2 |          kg-<id>c3 |
 *     kg-<id>g1 | gw ns g1 kg-<id>g2 | gw ns g2 kg-<id>g3 | gw ns g3   <- XDP, 198.18.1<i>.1/24
 *     kg-<id>f1 |          kg-<id>f2 |          kg-<id>f3 |           <- control, 198.19.<n>.1<i>/24
 *               +------ bridge kg-<id>-br (root ns, 198.19.<n>.1/24): etcd members -----+
 *
 * Daemons inside a namespace cannot reach the root namespace's 127.0.0.1, so the etcd members
 * listen on the bridge's address; the gates are attached to the client-facing interfaces only.
 * Everything (namespaces, bridge, pins, processes, etcd) is removed in a finally.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomSuffix, run } from './kernel.js';
import { Proc, cliAsync, clientAsync, runAsync, startClient, startDaemon, type LogLine, type Run } from './daemon.js';
import { EtcdCluster } from './etcd.js';

export const SOURCE = '198.18.20.2';
export const SERVICE_PORT = 2222;

export interface Gw {
  index: number;
  host: string;
  ns: string;
  dataIf: string;
  addr: string;
  pin: string;
  cfg: string;
  daemon: Proc | null;
  server: Proc | null;
}

export interface FleetLab {
  id: string;
  dir: string;
  clientNs: string;
  gws: Gw[];
  etcd: EtcdCluster;
  etcdHost: string;
  /** writes each gateway's config from configFor(gw) */
  writeConfigs(configFor: (gw: Gw) => string): void;
  start(i: number, extra?: string[]): Promise<Proc>;
  stop(i: number): Promise<void>;
  /** the test client in the client namespace: one JSON line */
  client(args: readonly string[], timeoutMs?: number): Promise<Record<string, unknown>>;
  connects(i: number, timeoutMs?: number): Promise<boolean>;
  /** waits (bounded) until gateway i lets the source in */
  opensSoon(i: number, timeoutMs?: number): Promise<boolean>;
  /** waits (bounded) until gateway i drops the source again */
  closesSoon(i: number, timeoutMs?: number): Promise<boolean>;
  /** UDP datagrams (exact bytes) from the source to gateway i's port, 20 ms apart */
  sendUdp(i: number, port: number, ...datagrams: Buffer[]): Promise<void>;
  /** the CLI in gateway i's namespace (host mounts) */
  cli(i: number, args: readonly string[], timeoutMs?: number): Promise<Run>;
}

export { runAsync };

/** node -e SEND HOST PORT HEX...: UDP datagrams, 20 ms apart */
const SEND = String.raw`
const s = require('node:dgram').createSocket('udp4');
const [host, port, ...hex] = process.argv.slice(1);
(async () => {
  for (const h of hex) {
    await new Promise((res, rej) => s.send(Buffer.from(h, 'hex'), Number(port), host, (e) => (e ? rej(e) : res())));
    await new Promise((r) => setTimeout(r, 20));
  }
  s.close();
})().catch((e) => { console.error(String(e)); process.exit(1); });
`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function withFleetLab<T>(opts: { gateways?: number; etcdMembers?: number }, fn: (lab: FleetLab) => Promise<T>): Promise<T> {
  const n = opts.gateways ?? 3;
  const id = randomSuffix();
  const net = 64 + (parseInt(id.slice(0, 2), 16) % 128); // 198.19.<net>.0/24 for the control bridge
  const etcdHost = `198.19.${net}.1`;
  const clientNs = `kg-${id}-c`;
  const bridge = `kg-${id}-br`;
  const dir = mkdtempSync(join(tmpdir(), 'kg-fleet-'));
  const nss: string[] = [];
  const gws: Gw[] = [];
  let bridgeMade = false;
  let etcd: EtcdCluster | null = null;
  try {
    run('ip', ['netns', 'add', clientNs]);
    nss.push(clientNs);
    run('ip', ['-n', clientNs, 'link', 'set', 'lo', 'up']);
    run('ip', ['-n', clientNs, 'addr', 'add', `${SOURCE}/32`, 'dev', 'lo']);
    run('ip', ['link', 'add', bridge, 'type', 'bridge']);
    bridgeMade = true;
    run('ip', ['addr', 'add', `${etcdHost}/24`, 'dev', bridge]);
    run('ip', ['link', 'set', bridge, 'up']);
    for (let i = 1; i <= n; i++) {
      const ns = `kg-${id}-g${i}`;
      run('ip', ['netns', 'add', ns]);
      nss.push(ns);
      const cIf = `kg-${id}c${i}`;
      const gIf = `kg-${id}g${i}`;
      const fIf = `kg-${id}f${i}`;
      const eIf = `kg-${id}e${i}`;
      const addr = `198.18.${10 + i}.1`;
      run('ip', ['link', 'add', cIf, 'netns', clientNs, 'type', 'veth', 'peer', 'name', gIf, 'netns', ns]);
      run('ip', ['link', 'add', eIf, 'type', 'veth', 'peer', 'name', fIf, 'netns', ns]);
      run('ip', ['link', 'set', eIf, 'master', bridge]);
      run('ip', ['link', 'set', eIf, 'up']);
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', gIf]);
      run('ip', ['-n', ns, 'link', 'set', gIf, 'up']);
      run('ip', ['-n', ns, 'route', 'add', `${SOURCE}/32`, 'dev', gIf]);
      run('ip', ['-n', ns, 'addr', 'add', `198.19.${net}.${10 + i}/24`, 'dev', fIf]);
      run('ip', ['-n', ns, 'link', 'set', fIf, 'up']);
      run('ip', ['-n', clientNs, 'link', 'set', cIf, 'up']);
      run('ip', ['-n', clientNs, 'route', 'add', `198.18.${10 + i}.0/24`, 'dev', cIf, 'src', SOURCE]);
      for (const x of [ns, clientNs]) run('ip', ['netns', 'exec', x, 'sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0']);
      gws.push({ index: i, host: `gw${i}`, ns, dataIf: gIf, addr, pin: `/sys/fs/bpf/kg-fleet-${id}-${i}`, cfg: join(dir, `gw${i}.yaml`), daemon: null, server: null });
    }
    etcd = await EtcdCluster.start({ members: opts.etcdMembers ?? 3, host: etcdHost });
    for (const g of gws) {
      g.server = startClient(g.ns, ['serve', String(SERVICE_PORT)]);
      await g.server.waitFor((l: LogLine) => l['listening'] === SERVICE_PORT, 15_000, 'test service');
    }
    const lab: FleetLab = {
      id,
      dir,
      clientNs,
      gws,
      etcd,
      etcdHost,
      writeConfigs(configFor) {
        for (const g of gws) writeFileSync(g.cfg, configFor(g));
      },
      async start(i, extra = []) {
        const g = gws[i]!;
        g.daemon = startDaemon(g.ns, ['run', '-c', g.cfg, ...extra]);
        await g.daemon.msg('knockgate running', 30_000);
        return g.daemon;
      },
      async stop(i) {
        const g = gws[i]!;
        if (g.daemon) await g.daemon.stop(15_000);
        g.daemon = null;
      },
      client(args, timeoutMs = 20_000) {
        return clientAsync(clientNs, args, timeoutMs);
      },
      async connects(i, timeoutMs = 800) {
        return (await lab.client(['connect', gws[i]!.addr, String(SERVICE_PORT), String(timeoutMs)]))['ok'] === true;
      },
      async opensSoon(i, timeoutMs = 10_000) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          if (await lab.connects(i, 1_000)) return true;
          if (Date.now() > deadline) return false;
          await sleep(200);
        }
      },
      async closesSoon(i, timeoutMs = 10_000) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          if (!(await lab.connects(i, 600))) return true;
          if (Date.now() > deadline) return false;
          await sleep(200);
        }
      },
      async sendUdp(i, port, ...datagrams) {
        const r = await runAsync('ip', ['netns', 'exec', clientNs, process.execPath, '-e', SEND, gws[i]!.addr, String(port), ...datagrams.map((d) => d.toString('hex'))], 15_000);
        if (r.status !== 0) throw new Error(`sending to ${gws[i]!.addr}:${port}: ${r.stderr}`);
      },
      cli(i, args, timeoutMs = 30_000) {
        return cliAsync(gws[i]!.ns, args, timeoutMs);
      },
    };
    return await fn(lab);
  } finally {
    for (const g of gws) {
      if (g.daemon) await g.daemon.stop(15_000).catch(() => undefined);
      // KG_FLEET_LOGS=DIR keeps each daemon's last log lines for a failing run.
      const keep = process.env['KG_FLEET_LOGS'];
      if (keep && g.daemon) writeFileSync(join(keep, `${g.host}.log`), g.daemon.raw.join('\n') + '\n' + g.daemon.stderr.join(''));
      if (g.server) await g.server.stop(5_000).catch(() => undefined);
      if (existsSync(g.pin)) rmSync(g.pin, { recursive: true, force: true });
    }
    if (etcd) await etcd.close().catch(() => undefined);
    for (const ns of nss) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
    if (bridgeMade) spawnSync('ip', ['link', 'del', bridge], { timeout: 10_000 });
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The fleet section of a gateway's config. */
export function fleetSection(lab: FleetLab, gw: Gw, extra = ''): string {
  return `fleet:
  endpoints: [${lab.etcd.endpoints.join(', ')}]
  prefix: ${lab.etcd.prefix}
  host_id: ${gw.host}
${extra}`;
}
