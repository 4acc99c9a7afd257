/**
 * etcd clusters for tests and benchmarks: N members of Debian's `etcd` (etcd-server 3.4) on free
 * ports chosen at run time, one data dir each under a temp dir, optional auth (root, a user whose
 * role is limited to a prefix, a read-only user). Every process is ours, stopped by PID in a
 * finally (and at exit as a last resort); the temp dir is removed.
 *
 *   await withEtcd({ members: 3 }, async (etcd) => { ... etcd.endpoints ... etcd.kill(etcd.leader()) ... });
 *
 * Members listen on 127.0.0.1 unless `host` names another local address: daemons inside a
 * network namespace cannot reach the root namespace's loopback, so e2e tests put the members on an
 * address of a veth or bridge they created (198.18.0.0/15) and pass it here.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, rmSync, readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';

export const ETCD = process.env['KG_ETCD'] ?? 'etcd';
export const ETCDCTL = process.env['KG_ETCDCTL'] ?? 'etcdctl';

/** Why etcd tests cannot run here, or null. */
export function etcdSkipReason(): string | null {
  for (const [bin, arg] of [[ETCD, '--version'], [ETCDCTL, 'version']] as const) {
    const r = spawnSync(bin, [arg], { encoding: 'utf8', timeout: 10_000 });
    if (r.error || r.status !== 0) return `${bin} not found: run scripts/setup.sh (installs etcd-server and etcd-client)`;
  }
  return null;
}

export interface EtcdOptions {
  /** cluster size; default 1 */
  members?: number;
  /** address the members listen on (client and peer); default 127.0.0.1 */
  host?: string;
  /** set up users and enable auth (see EtcdAuth) */
  auth?: boolean;
  /** the prefix the limited users get; default a random `/kg-test-<hex>/` */
  prefix?: string;
  /** extra etcd flags for every member */
  extraArgs?: string[];
  /**
   * TLS on the client port (https://, a CA made for this cluster with openssl, client
   * certificates required: --client-cert-auth). Peers talk plain http on the host.
   */
  tls?: boolean;
}

/** PEM files of a TLS cluster (paths) and their contents. */
export interface EtcdTls {
  caFile: string;
  certFile: string;
  keyFile: string;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** A CA, a server certificate for `host` and a client certificate (CN knockgate), with openssl. */
function makeTls(dir: string, host: string): { client: EtcdTls; serverCert: string; serverKey: string } {
  const f = (name: string): string => join(dir, name);
  const ossl = (args: string[]): void => {
    const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 30_000 });
    if (r.error || r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2', '-subj', '/CN=kg-test-ca']);
  const san = host.includes(':') || /^[0-9.]+$/.test(host) ? `IP:${host}` : `DNS:${host}`;
  writeFileSync(f('server.ext'), `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  writeFileSync(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [who, cn] of [['server', 'kg-etcd'], ['client', 'knockgate']] as const) {
    ossl(['req', ...ec, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`), '-subj', `/CN=${cn}`]);
    ossl(['x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${who}.crt`), '-days', '2', '-extfile', f(`${who}.ext`)]);
  }
  return {
    client: {
      caFile: f('ca.crt'),
      certFile: f('client.crt'),
      keyFile: f('client.key'),
      ca: readFileSync(f('ca.crt')),
      cert: readFileSync(f('client.crt')),
      key: readFileSync(f('client.key')),
    },
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
  };
}

/** Users created when `auth` is set (passwords random per cluster). */
export interface EtcdAuth {
  root: { username: 'root'; password: string };
  /** role `knockgate`: readwrite on the prefix only (the README's commands) */
  writer: { username: string; password: string };
  /** role `knockgate-ro`: read on the prefix only */
  reader: { username: string; password: string };
}

export interface EtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  logFile: string;
  proc: ChildProcess | null;
}

/** Free TCP ports on `host` (bound to port 0, then released; etcd re-binds them at once). */
async function freePorts(host: string, count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, host, () => {
        const addr = srv.address();
        const p = typeof addr === 'object' && addr ? addr.port : 0;
        srv.close(() => resolve(p));
      });
    });
    ports.add(port);
  }
  return [...ports];
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of live) if (p.pid !== undefined && p.exitCode === null) try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
  });
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

export class EtcdCluster {
  readonly members: EtcdMember[];
  readonly prefix: string;
  auth: EtcdAuth | null = null;
  /** client TLS material when started with `tls` */
  tls: EtcdTls | null = null;
  private serverTls: { cert: string; key: string } | null = null;
  private readonly dir: string;

  private constructor(readonly host: string, dir: string, members: EtcdMember[], prefix: string, private readonly extraArgs: string[]) {
    this.dir = dir;
    this.members = members;
    this.prefix = prefix;
  }

  /** Starts the cluster and waits until every member is healthy (retries with new ports if one was taken). */
  static async start(opts: EtcdOptions = {}): Promise<EtcdCluster> {
    const n = opts.members ?? 1;
    const host = opts.host ?? '127.0.0.1';
    const prefix = opts.prefix ?? `/kg-test-${randomBytes(4).toString('hex')}/`;
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const dir = mkdtempSync(join(tmpdir(), 'kg-etcd-'));
      const ports = await freePorts(host, 2 * n);
      const scheme = opts.tls ? 'https' : 'http';
      const members: EtcdMember[] = [];
      for (let i = 0; i < n; i++) {
        const name = `kg${i + 1}`;
        const dataDir = join(dir, name);
        mkdirSync(dataDir);
        members.push({
          name,
          clientUrl: `${scheme}://${urlHost(host)}:${ports[2 * i]}`,
          peerUrl: `http://${urlHost(host)}:${ports[2 * i + 1]}`,
          dataDir,
          logFile: join(dir, `${name}.log`),
          proc: null,
        });
      }
      const cluster = new EtcdCluster(host, dir, members, prefix, opts.extraArgs ?? []);
      try {
        if (opts.tls) {
          const t = makeTls(dir, host);
          cluster.tls = t.client;
          cluster.serverTls = { cert: t.serverCert, key: t.serverKey };
        }
        for (let i = 0; i < n; i++) cluster.spawnMember(i, 'new');
        await cluster.waitHealthy();
        if (opts.auth) await cluster.enableAuth();
        return cluster;
      } catch (err) {
        lastError = err;
        await cluster.close();
      }
    }
    throw new Error(`etcd cluster did not start: ${lastError instanceof Error ? lastError.message : String(lastError)}`);
  }

  get endpoints(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  private initialCluster(): string {
    return this.members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  }

  private spawnMember(i: number, state: 'new' | 'existing'): void {
    const m = this.members[i]!;
    if (m.proc && m.proc.exitCode === null && m.proc.signalCode === null) throw new Error(`etcd member ${m.name} is already running`);
    const log = openSync(m.logFile, 'a');
    const args = [
      '--name', m.name,
      '--data-dir', m.dataDir,
      '--listen-client-urls', m.clientUrl,
      '--advertise-client-urls', m.clientUrl,
      '--listen-peer-urls', m.peerUrl,
      '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', this.initialCluster(),
      '--initial-cluster-state', state,
      '--initial-cluster-token', `kg-${this.dir.slice(-6)}`,
      ...(this.serverTls
        ? ['--cert-file', this.serverTls.cert, '--key-file', this.serverTls.key, '--trusted-ca-file', this.tls!.caFile, '--client-cert-auth']
        : []),
      '--logger', 'zap',
      '--log-outputs', 'stderr',
      ...this.extraArgs,
    ];
    const proc = spawn(ETCD, args, { stdio: ['ignore', log, log] });
    closeSync(log);
    trackExit();
    live.add(proc);
    proc.once('exit', () => live.delete(proc));
    m.proc = proc;
  }

  /** true if the member's process is running */
  running(i: number): boolean {
    const p = this.members[i]!.proc;
    return p !== null && p.exitCode === null && p.signalCode === null;
  }

  /** GET /health on every running member until each says true (bounded). */
  async waitHealthy(timeoutMs = 60_000, which?: number[]): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const idx = which ?? this.members.map((_, i) => i);
    for (const i of idx) {
      const m = this.members[i]!;
      for (;;) {
        if (!this.running(i)) throw new Error(`etcd member ${m.name} exited: ${this.tail(i)}`);
        try {
          if ((await this.health(m.clientUrl)) === 'true') break;
        } catch {
          // not yet
        }
        if (Date.now() > deadline) throw new Error(`etcd member ${m.name} not healthy after ${timeoutMs} ms: ${this.tail(i)}`);
        await sleep(200);
      }
    }
  }

  /** GET /health (https with this cluster's client certificate when TLS is on). */
  private async health(url: string): Promise<string | undefined> {
    if (!this.tls) {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
      return ((await res.json()) as { health?: string }).health;
    }
    const tls = this.tls;
    return new Promise((resolve, reject) => {
      const req = httpsRequest(`${url}/health`, { ca: tls.ca, cert: tls.cert, key: tls.key, timeout: 2000, servername: '' }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => {
          try {
            resolve((JSON.parse(body) as { health?: string }).health);
          } catch (err) {
            reject(err);
          }
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end();
    });
  }

  /** last lines of a member's log (for error messages) */
  tail(i: number, lines = 5): string {
    try {
      return readFileSync(this.members[i]!.logFile, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** SIGKILL a member and wait for it to be gone. */
  async kill(i: number): Promise<void> {
    await this.signal(i, 'SIGKILL');
  }

  /** SIGTERM a member (clean stop) and wait for it to be gone (SIGKILL after 10 s). */
  async stop(i: number): Promise<void> {
    await this.signal(i, 'SIGTERM');
  }

  /** SIGSTOP / SIGCONT a member: alive but silent (a hung host), then back. */
  pause(i: number): void {
    const p = this.members[i]!.proc;
    if (p?.pid !== undefined && this.running(i)) process.kill(p.pid, 'SIGSTOP');
  }

  resume(i: number): void {
    const p = this.members[i]!.proc;
    if (p?.pid !== undefined && this.running(i)) process.kill(p.pid, 'SIGCONT');
  }

  private async signal(i: number, sig: NodeJS.Signals): Promise<void> {
    const p = this.members[i]!.proc;
    if (!p || p.pid === undefined || !this.running(i)) return;
    const gone = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    process.kill(p.pid, 'SIGCONT'); // a paused member cannot act on SIGTERM
    process.kill(p.pid, sig);
    const t = setTimeout(() => {
      if (this.running(i) && p.pid !== undefined) process.kill(p.pid, 'SIGKILL');
    }, 10_000);
    await gone;
    clearTimeout(t);
  }

  /** Stops every member (SIGTERM). */
  async stopAll(): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.stop(i)));
  }

  /** Starts a stopped member again on its data dir and ports (waits for it to be healthy). */
  async restart(i: number, waitHealthy = true): Promise<void> {
    if (this.running(i)) return;
    this.spawnMember(i, 'existing');
    if (waitHealthy) await this.waitHealthy(60_000, [i]);
  }

  /** Starts every stopped member (all at once: a majority must come up to elect a leader). */
  async restartAll(): Promise<void> {
    const stopped = this.members.map((_, i) => i).filter((i) => !this.running(i));
    for (const i of stopped) this.spawnMember(i, 'existing');
    await this.waitHealthy(60_000, stopped);
  }

  /** Runs etcdctl (v3 API) against the running members, as root when auth is on, unless `user` says otherwise. */
  etcdctl(args: readonly string[], user?: { username: string; password: string } | null, timeoutMs = 15_000): string {
    const endpoints = this.members.filter((_, i) => this.running(i)).map((m) => m.clientUrl);
    const who = user === undefined ? this.auth?.root ?? null : user;
    const r = spawnSync(
      ETCDCTL,
      [
        `--endpoints=${endpoints.join(',')}`,
        ...(this.tls ? [`--cacert=${this.tls.caFile}`, `--cert=${this.tls.certFile}`, `--key=${this.tls.keyFile}`] : []),
        ...(who ? [`--user=${who.username}:${who.password}`] : []),
        ...args,
      ],
      { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, ETCDCTL_API: '3' } },
    );
    if (r.error) throw new Error(`etcdctl ${args.join(' ')}: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`etcdctl ${args.join(' ')} exited with ${r.status ?? r.signal}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** Index of the current leader (asks the running members; retries while an election runs). */
  async leader(timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const out = JSON.parse(this.etcdctl(['endpoint', 'status', '-w', 'json'])) as { Endpoint: string; Status: { header: { member_id: number | string }; leader: number | string } }[];
        for (const s of out) {
          if (String(s.Status.leader) !== '0' && String(s.Status.leader) === String(s.Status.header.member_id)) {
            const i = this.members.findIndex((m) => m.clientUrl === s.Endpoint);
            if (i >= 0) return i;
          }
        }
      } catch {
        // election under way, or a member down
      }
      if (Date.now() > deadline) throw new Error('etcd: no leader found');
      await sleep(200);
    }
  }

  /** Hands leadership to member `to` (etcdctl move-leader), and waits until it leads. */
  async moveLeader(to: number): Promise<void> {
    if ((await this.leader()) === to) return;
    const name = this.members[to]!.name;
    // `member list -w simple`: "<hex id>, started, <name>, <peer urls>, <client urls>, <learner>"
    const line = this.etcdctl(['member', 'list']).split('\n').find((l) => l.split(', ')[2] === name);
    if (!line) throw new Error(`etcd: member ${name} not in the member list`);
    this.etcdctl(['move-leader', line.split(', ')[0]!]);
    const deadline = Date.now() + 30_000;
    while ((await this.leader()) !== to) {
      if (Date.now() > deadline) throw new Error(`etcd: ${name} did not become the leader`);
      await sleep(200);
    }
  }

  /** The store's current revision. */
  revision(): bigint {
    const out = JSON.parse(this.etcdctl(['endpoint', 'status', '-w', 'json'])) as { Status: { header: { revision: number | string } } }[];
    return out.reduce((max, s) => (BigInt(s.Status.header.revision) > max ? BigInt(s.Status.header.revision) : max), 0n);
  }

  /** Compacts the history up to `revision` (default: the current revision). Returns the revision. */
  compact(revision?: bigint): bigint {
    const rev = revision ?? this.revision();
    this.etcdctl(['compaction', '--physical', rev.toString()]);
    return rev;
  }

  /**
   * The README's commands: a root user, a role limited to the prefix (readwrite) and its user, a
   * read-only role and its user, then `auth enable` (see prefixRoleCommands).
   */
  private async enableAuth(): Promise<void> {
    const pw = (): string => randomBytes(9).toString('base64url');
    const auth: EtcdAuth = {
      root: { username: 'root', password: pw() },
      writer: { username: 'knockgate', password: pw() },
      reader: { username: 'knockgate-reader', password: pw() },
    };
    for (const args of prefixRoleCommands(this.prefix, auth)) this.etcdctl(args, null);
    this.auth = auth;
  }

  /** Stops every member by PID and removes the data dirs. */
  async close(): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.signal(i, 'SIGKILL').catch(() => undefined)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The etcdctl commands (argument vectors) that set up auth with a role limited to `prefix`, as
 * the README shows them: root, `knockgate` (readwrite on the prefix), `knockgate-ro` (read).
 */
export function prefixRoleCommands(prefix: string, auth: EtcdAuth): string[][] {
  return [
    ['user', 'add', 'root', `--new-user-password=${auth.root.password}`],
    ['user', 'grant-role', 'root', 'root'],
    ['role', 'add', 'knockgate'],
    ['role', 'grant-permission', 'knockgate', '--prefix=true', 'readwrite', prefix],
    ['user', 'add', auth.writer.username, `--new-user-password=${auth.writer.password}`],
    ['user', 'grant-role', auth.writer.username, 'knockgate'],
    ['role', 'add', 'knockgate-ro'],
    ['role', 'grant-permission', 'knockgate-ro', '--prefix=true', 'read', prefix],
    ['user', 'add', auth.reader.username, `--new-user-password=${auth.reader.password}`],
    ['user', 'grant-role', auth.reader.username, 'knockgate-ro'],
    ['auth', 'enable'],
  ];
}

/** Runs fn with a fresh cluster; every member is stopped and every data dir removed afterwards. */
export async function withEtcd<T>(opts: EtcdOptions, fn: (etcd: EtcdCluster) => T | Promise<T>): Promise<T> {
  const etcd = await EtcdCluster.start(opts);
  try {
    return await fn(etcd);
  } finally {
    await etcd.close();
  }
}
