/**
 * Smoke test of the benchmarks (bench/): each part runs in --quick mode (tiny repeats and
 * windows) as a child process, and must produce well-formed results.json / RESULTS.md / SVGs
 * with numbers in every field it reports, and leave nothing behind: no namespace, no pin, no
 * process of its run. A benchmark is not a test: no timing or rate is asserted here.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it, type TestContext } from 'node:test';
import { IN_CI, ROOT, kernelSuite, randomSuffix } from '../helpers/kernel.js';

type Json = Record<string, unknown>;

const PARTS = ['steps', 'cost', 'scale', 'flood', 'knocks', 'eviction'] as const;
type Part = (typeof PARTS)[number];

/** Tools the live parts need besides the kernel (apt: nftables, knockd, ethtool). */
const TOOLS: Record<Part, string[]> = {
  steps: ['clang'],
  cost: [],
  scale: [],
  flood: ['nft', 'ethtool', 'nsenter', 'taskset'],
  knocks: ['nft', 'knockd', 'ethtool', 'nsenter', 'taskset'],
  eviction: ['nft', 'ethtool', 'nsenter', 'taskset'],
};

function missingTools(part: Part): string[] {
  return TOOLS[part].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).status !== 0);
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

function num(o: unknown, path: string): number {
  let v: unknown = o;
  for (const k of path.split('.')) v = v && typeof v === 'object' ? (v as Json)[k] : undefined;
  assert.ok(isNum(v), `${path} is a finite number (got ${JSON.stringify(v)})`);
  return v;
}

function checkCost(c: Json, classes: number): void {
  num(c, 'baselines.drop.median');
  num(c, 'baselines.pass.median');
  const list = c['classes'] as Json[];
  assert.equal(list.length, classes);
  for (const k of list) {
    assert.equal(typeof k['id'], 'string');
    num(k, 'ns.median');
    num(k, 'vsDrop.diffNs');
    num(k, 'vsDrop.ratio');
    num(k, 'vsPass.diffNs');
    assert.equal(k['verdictOk'], true, `${String(k['id'])} ends at ${String(k['expected'])} (saw ${String(k['observed'])})`);
  }
}

function checkSvg(path: string): void {
  const s = readFileSync(path, 'utf8');
  assert.match(s, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]*>/);
  assert.ok(s.trimEnd().endsWith('</svg>'), `${path} ends with </svg>`);
  assert.equal((s.match(/</g) ?? []).length, (s.match(/>/g) ?? []).length, `${path}: balanced angle brackets`);
  assert.doesNotMatch(s, /NaN|undefined/, `${path} has no NaN/undefined`);
}

function checkPart(part: Part, r: Json, out: string): void {
  const parts = r['parts'] as Json;
  const p = parts[part] as Json | undefined;
  assert.ok(p, `results.json has parts.${part}`);
  switch (part) {
    case 'steps': {
      const variants = p['variants'] as Json[];
      const classes = p['classes'] as Json[];
      assert.equal(variants.length, 6, 'six variants of the program');
      assert.ok(classes.length >= 10);
      for (const v of variants) for (const c of classes) num(p, `overBase.${String(v['id'])}.${String(c['id'])}`);
      for (const [v, byClass] of Object.entries(p['verdictOk'] as Record<string, Record<string, boolean>>)) {
        for (const [c, ok] of Object.entries(byClass)) assert.equal(ok, true, `variant ${v}: ${c} ends at its verdict`);
      }
      checkSvg(join(out, 'doors.svg'));
      break;
    }
    case 'cost':
      checkCost(p, 12);
      num(p, 'methodCheck.floodSingleNs');
      break;
    case 'scale': {
      const levels = p['levels'] as Json[];
      assert.ok(levels.length >= 2);
      for (const l of levels) checkCost(l, 14);
      for (const m of p['memory'] as Json[]) assert.ok(num(m, 'bytesPerEntry') > 0);
      checkSvg(join(out, 'cost-vs-entries.svg'));
      break;
    }
    case 'flood': {
      const rows = p['rows'] as Json[];
      // syn: seven receivers (generic-mode ones included), udp: five, spa: four; two families
      assert.equal(rows.length, 32, 'every flood against its receivers, two families');
      for (const row of rows) {
        assert.ok(num(row, 'pps') >= 0);
        num(row, 'softirqPct');
      }
      for (const row of rows.filter((x) => String(x['receiver']).startsWith('xdp-drop') || String(x['receiver']).startsWith('knockgate'))) {
        assert.ok(num(row, 'pps') > 0, `${String(row['flood'])} flood: ${String(row['receiver'])} dropped something`);
      }
      checkSvg(join(out, 'flood-pps.svg'));
      break;
    }
    case 'knocks':
    case 'eviction': {
      const runs = part === 'knocks' ? [p['knockgate'], p['knockd'], p['spa']] : [p['run'], p['daemon']];
      for (const k of runs as Json[]) {
        assert.ok(k, `${part}: a run is reported`);
        assert.equal(k['cycles'], 4, `${String(k['system'])}: every cycle ran`);
        assert.equal(k['closedBefore'], true, `${String(k['system'])}: the port is closed to a source that did not knock`);
        num(k, 'successPct');
        num(k, 'floodDropPps');
      }
      break;
    }
  }
}

function leftovers(id: string): string[] {
  const found: string[] = [];
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  for (const l of ns.split('\n')) if (l.includes(`kg-b${id}`)) found.push(`namespace ${l.split(' ')[0]}`);
  for (const n of readdirSync('/sys/fs/bpf')) if (n.startsWith(`kg-bench-${id}`)) found.push(`pin /sys/fs/bpf/${n}`);
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (Number(pid) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`kg-bench-${id}`)) found.push(`process ${pid}`);
    } catch {
      /* gone */
    }
  }
  return found;
}

/** Whatever the bench left despite everything (reported as a failure before this runs). */
function sweep(id: string): void {
  for (const f of leftovers(id)) {
    const [kind, what] = f.split(' ');
    if (kind === 'namespace' && what) spawnSync('ip', ['netns', 'del', what], { timeout: 10_000 });
    if (kind === 'pin' && what) rmSync(what, { recursive: true, force: true });
    if (kind === 'process' && what) {
      try {
        process.kill(Number(what), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}

async function runPart(t: TestContext, part: Part): Promise<void> {
  const missing = missingTools(part);
  if (missing.length > 0) {
    const why = `bench part ${part} needs ${missing.join(', ')} (apt-get install nftables knockd ethtool)`;
    if (IN_CI) throw new Error(why);
    t.skip(why);
    return;
  }
  const id = randomSuffix(4);
  const out = mkdtempSync(join(tmpdir(), 'kg-bench-smoke-'));
  try {
    const r = spawnSync(process.execPath, [`${ROOT}dist/bench/run.js`, '--quick', '--parts', part, '--out-dir', out, '--id', id], {
      encoding: 'utf8',
      timeout: 240_000,
      killSignal: 'SIGTERM',
    });
    const left = leftovers(id);
    assert.deepEqual(left, [], `the bench left these behind: ${left.join(', ')}`);
    assert.equal(r.status, 0, `bench --quick --parts ${part} failed (${r.status ?? r.signal}):\n${(r.stderr ?? '').slice(-4000)}`);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Json;
    assert.equal(res['schema'], 'knockgate-bench/1');
    assert.equal(res['quick'], true);
    assert.deepEqual(res['errors'], []);
    num(res, 'seconds');
    assert.equal(typeof (res['machine'] as Json)['kernel'], 'string');
    for (const tg of res['targets'] as Json[]) {
      for (const k of ['id', 'text', 'value', 'limit']) assert.equal(typeof tg[k], 'string', `target.${k}`);
      assert.ok(tg['met'] === null || typeof tg['met'] === 'boolean');
    }
    checkPart(part, res, out);
    const md = readFileSync(join(out, 'RESULTS.md'), 'utf8');
    assert.match(md, /^# knockgate benchmarks/);
    assert.match(md, /Quick mode/);
    assert.doesNotMatch(r.stdout, /part \w+ failed/);
  } finally {
    sweep(id);
    rmSync(out, { recursive: true, force: true });
  }
}

kernelSuite('bench smoke (npm run bench, --quick; no timing assertion)', () => {
  for (const part of PARTS) it(`bench part ${part} runs and writes well-formed output`, async (t) => runPart(t, part));
});
