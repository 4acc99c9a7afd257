/**
 * The flood lab: two network namespaces joined by one veth pair, created here and removed
 * in destroy() (also on failure: run.ts calls it from a finally and from signal handlers).
 *
 *   kg-b<id>-c  "outside": the packet generator and the real client; replies to the spoofed
 *               sources end in blackhole routes here
 *               kg-b<id>c  198.18.0.1/24, 2001:db8::1/64, client pool 198.18.1.x/32, 2001:db8:1::x/128
 *   kg-b<id>-g  "gateway": the receiver under test (XDP program / nftables / knockd) and a TCP service
 *               kg-b<id>g  198.18.0.2/24, 2001:db8::2/64; routes 198.18.0.0/15 and 2001:db8::/32 back
 *               through the client side (where packets to spoofed sources die: it does not forward)
 *
 * Spoofed sources of the floods: 198.19.0.0/16 and 2001:db8:8000::/33; nothing here routes
 * anywhere outside the two namespaces. Neighbours are static, so a flood cannot starve ARP/ND.
 */
import { inNetns, run, tryRun } from './sys.js';

export const LAB_ADDR = {
  c4: '198.18.0.1',
  g4: '198.18.0.2',
  c6: '2001:db8::1',
  g6: '2001:db8::2',
  macC: '02:6b:67:00:00:01',
  macG: '02:6b:67:00:00:02',
  /** flood sources: the frame's prefix and the first host part */
  spoof4: { prefix: '198.19.0.1', first: 0xc6130001, range: (1 << 16) - 2 },
  spoof6: { prefix: '2001:db8:8000::1', first: 1, range: 1 << 24 },
};

export interface Lab {
  id: string;
  nsC: string;
  nsG: string;
  ifC: string;
  ifG: string;
  pool4: string[];
  pool6: string[];
  /** run a command inside one of the lab's namespaces, bounded in time */
  exec(ns: string, args: readonly string[], opts?: { timeoutMs?: number; input?: string }): string;
  /** run fn on this thread inside one of the lab's namespaces */
  enter<T>(ns: string, fn: () => T): T;
  destroy(): void;
}

/** Namespaces created and not yet removed by this process (for emergency cleanup). */
const live = new Set<string>();

export function destroyAllLabs(): void {
  for (const ns of [...live]) {
    tryRun('ip', ['netns', 'del', ns]);
    live.delete(ns);
  }
}

function mine(lab: { nsC: string; nsG: string }, ns: string): void {
  if (ns !== lab.nsC && ns !== lab.nsG) throw new Error(`refusing to act outside the lab's namespaces (${ns})`);
}

export function createLab(id: string, poolSize: number): Lab {
  if (!/^[0-9a-f]{8}$/.test(id)) throw new Error(`bad lab id ${id}`);
  const nsC = `kg-b${id}-c`;
  const nsG = `kg-b${id}-g`;
  const ifC = `kg-b${id}c`;
  const ifG = `kg-b${id}g`;
  const n = Math.min(Math.max(poolSize, 1), 500);
  const pool4 = Array.from({ length: n }, (_, i) => (i < 250 ? `198.18.1.${i + 1}` : `198.18.5.${i - 249}`));
  const pool6 = Array.from({ length: n }, (_, i) => `2001:db8:1::${(i + 1).toString(16)}`);
  const lab: Lab = {
    id,
    nsC,
    nsG,
    ifC,
    ifG,
    pool4,
    pool6,
    exec: (ns, args, opts) => {
      mine(lab, ns);
      return run('ip', ['netns', 'exec', ns, ...args], opts);
    },
    enter: (ns, fn) => {
      mine(lab, ns);
      return inNetns(ns, fn);
    },
    destroy: () => {
      for (const ns of [nsC, nsG]) {
        if (!live.has(ns)) continue;
        tryRun('ip', ['netns', 'del', ns]);
        live.delete(ns);
      }
    },
  };
  try {
    for (const ns of [nsC, nsG]) {
      run('ip', ['netns', 'add', ns]);
      live.add(ns);
    }
    run('ip', ['link', 'add', ifC, 'netns', nsC, 'type', 'veth', 'peer', 'name', ifG, 'netns', nsG]);
    const c = [
      'link set lo up',
      `link set ${ifC} address ${LAB_ADDR.macC}`,
      `addr add ${LAB_ADDR.c4}/24 dev ${ifC}`,
      `addr add ${LAB_ADDR.c6}/64 dev ${ifC} nodad`,
      ...pool4.map((a) => `addr add ${a}/32 dev ${ifC}`),
      ...pool6.map((a) => `addr add ${a}/128 dev ${ifC} nodad`),
      `link set ${ifC} up`,
      `neigh replace ${LAB_ADDR.g4} lladdr ${LAB_ADDR.macG} dev ${ifC} nud permanent`,
      `neigh replace ${LAB_ADDR.g6} lladdr ${LAB_ADDR.macG} dev ${ifC} nud permanent`,
      // replies to spoofed sources end here, silently (no ICMP back into the gateway)
      'route add blackhole 198.19.0.0/16',
      'route add blackhole 2001:db8:8000::/33',
    ];
    const g = [
      'link set lo up',
      `link set ${ifG} address ${LAB_ADDR.macG}`,
      `addr add ${LAB_ADDR.g4}/24 dev ${ifG}`,
      `addr add ${LAB_ADDR.g6}/64 dev ${ifG} nodad`,
      `link set ${ifG} up`,
      `route add 198.18.0.0/15 via ${LAB_ADDR.c4} dev ${ifG}`,
      `route add 2001:db8::/32 via ${LAB_ADDR.c6} dev ${ifG}`,
      `neigh replace ${LAB_ADDR.c4} lladdr ${LAB_ADDR.macC} dev ${ifG} nud permanent`,
      `neigh replace ${LAB_ADDR.c6} lladdr ${LAB_ADDR.macC} dev ${ifG} nud permanent`,
    ];
    run('ip', ['-n', nsC, '-batch', '-'], { input: c.join('\n') + '\n' });
    run('ip', ['-n', nsG, '-batch', '-'], { input: g.join('\n') + '\n' });
    // Spoofed sources have no route back but the one above; no reverse-path filtering, so the
    // IP stack receivers (nftables, no filter) really process them.
    lab.exec(nsG, ['sysctl', '-q', '-w', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', `net.ipv4.conf.${ifG}.rp_filter=0`]);
    // NAPI on the receiving veth without an XDP program (nftables, knockd, no filter): frames
    // redirected into the pair need it (veth_xdp_xmit), and GRO is what turns it on.
    lab.exec(nsG, ['ethtool', '-K', ifG, 'gro', 'on']);
    return lab;
  } catch (err) {
    lab.destroy();
    throw err;
  }
}
