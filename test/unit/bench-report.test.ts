// bench/report.ts renders every table from one column spec per table: the saved run
// (bench/results.json) renders into exactly the RESULTS.md it was written with, and the cases
// a full run does not have (a part missing, a run not measured, a wrong verdict) render as the
// tables say.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../helpers/kernel.js';
import { scaleRelative } from '../../bench/cost.js';
import { evaluateTargets, terminalReport, writeCharts, writeResultsMd, type BenchResults } from '../../bench/report.js';

const SAVED = join(ROOT, 'bench', 'results.json');

function saved(): BenchResults {
  return JSON.parse(readFileSync(SAVED, 'utf8')) as BenchResults;
}

/** What `node dist/bench/run.js --render` does, into a directory of its own: RESULTS.md's text. */
function renderMd(r: BenchResults): string {
  const dir = mkdtempSync(join(tmpdir(), 'kg-report-'));
  try {
    if (r.parts.scale) Object.assign(r.parts.scale, scaleRelative(r.parts.scale.levels));
    r.targets = evaluateTargets(r);
    r.files = ['results.json', 'RESULTS.md', ...writeCharts(r, dir)];
    writeResultsMd(r, dir);
    return readFileSync(join(dir, 'RESULTS.md'), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The lines of a markdown table that starts with the given header line. */
function mdTableAt(md: string, header: string): string[] {
  const lines = md.split('\n');
  const at = lines.indexOf(header);
  assert.ok(at >= 0, `no table headed ${header}`);
  const end = lines.findIndex((l, i) => i > at && !l.startsWith('|'));
  return lines.slice(at, end < 0 ? undefined : end);
}

test('the saved bench run renders into the RESULTS.md it was written with, byte for byte', () => {
  assert.equal(renderMd(saved()), readFileSync(join(ROOT, 'bench', 'RESULTS.md'), 'utf8'));
});

test('knock scenarios not measured, a wrong verdict and a part that is missing render as the tables say', () => {
  const r = saved();
  assert.ok(r.parts.cost && r.parts.knocks && r.parts.eviction, 'the saved run has parts 1, 4 and 5');
  delete r.parts.steps;
  r.parts.knocks.knockd = null;
  delete r.parts.eviction.daemon;
  const first = r.parts.cost.classes[0]!;
  first.verdictOk = false;
  const md = renderMd(r);
  assert.doesNotMatch(md, /## 0\. Steps/, 'no steps part, no steps section');
  const knocks = mdTableAt(md, '| system | flood | opened | closed before | median ms | p90 ms | max ms | flood Mpps handled | softirq % | knockd CPU % | client packets lost at the veth ring |');
  assert.equal(knocks[1], '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  assert.ok(knocks.includes(`| knockd + nftables | SYN flood, IPv${r.parts.knocks.knockgate.flood.family}, port ${r.parts.knocks.knockgate.flood.dport} | not measured |  |  |  |  |  |  |  |  |`), 'knockd not measured');
  assert.ok(knocks.includes('| knockgate with its daemon (adopts the gate, drains events), eviction attack | the same | not measured |  |  |  |  |  |  |  |  |'), 'the daemon row is there, not measured');
  const cost = mdTableAt(md, '| class | method | ns (median) | min-max | vs DROP | x DROP | vs PASS | x PASS | verdict |');
  assert.match(cost[2]!, new RegExp(`^\\| ${first.label} \\| .* \\| ${first.observed ?? '\\?'} \\(expected ${first.expected}\\) \\|$`));

  const term = terminalReport(r).split('\n');
  const head = term.findIndex((l) => l.startsWith('scenario'));
  assert.ok(head >= 0, 'the terminal knocks table');
  assert.match(term[head]!, /^scenario +opened +median ms +p90 ms +max ms +flood Mpps +softirq % +knockd CPU %$/);
  assert.ok(term.some((l) => /^knockd \+ nftables, SYN flood +n\/a *$/.test(l)), 'knockd not measured: n/a');
  assert.ok(!term.some((l) => l.startsWith('the same, daemon running')), 'no daemon row on the terminal without a daemon run');
  assert.ok(term.some((l) => l.startsWith(`${first.id} (!)`)), 'a wrong verdict is marked on the terminal');
});
