/**
 * The layers of src/ (README "Architecture"): which part may import which. Every relative
 * import of every module under src/ is read and checked against one table, so a change that
 * makes the binding know about the gate, the kernel know about the daemon, or a door know about
 * the CLI fails here, with the file and the import named.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/** The checkout's src/: the first directory up from this file that holds package.json. */
function findSrc(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('no package.json above the test: run it from a checkout');
    dir = up;
  }
  return join(dir, 'src');
}

const SRC = findSrc();

/** A module's part: its directory under src/, or its own name for a top-level module. */
function partOf(file: string): string {
  const rel = relative(SRC, file).replace(/\\/g, '/');
  const [first, second] = rel.split('/');
  if (second === undefined) return first!.replace(/\.ts$/, '');
  // src/kernel/layout.ts and abi.gen.ts are the kernel's ABI: the one part of src/kernel that
  // door modules and tools may use without depending on the gate.
  if (first === 'kernel' && /^(layout|abi\.gen)\.ts$/.test(second)) return 'abi';
  return first!;
}

const BASE = ['net', 'log', 'version', 'control'];

/**
 * What each part may import (besides itself). Read it bottom-up: the binding knows nothing of
 * ours; wire formats know addresses; the ABI knows nothing; config, doors, kernel and the client
 * form the middle (the door modules are the one place a door type's story lives, so config,
 * kernel and client dispatch into them, and they use the ABI, config readers and the client's
 * transport); fleet, interfaces and metrics sit on the gate; the daemon and the CLI sit on top.
 */
const ALLOWED: Record<string, string[]> = {
  net: [],
  log: [],
  version: [],
  control: [],
  bpf: [],
  knock: ['net'],
  abi: [],
  config: [...BASE, 'knock', 'abi', 'doors'],
  doors: [...BASE, 'knock', 'abi', 'config', 'client', 'kernel'],
  kernel: [...BASE, 'bpf', 'abi', 'knock', 'config', 'doors'],
  client: [...BASE, 'knock', 'abi', 'config', 'doors'],
  fleet: [...BASE, 'bpf', 'abi', 'knock', 'config', 'kernel'],
  interfaces: [...BASE, 'config', 'kernel'],
  metrics: [...BASE, 'abi', 'kernel', 'interfaces', 'fleet'],
  demo: [...BASE, 'abi', 'kernel'],
  'demo-fleet': [...BASE, 'abi', 'kernel', 'demo'],
  daemon: [...BASE, 'bpf', 'abi', 'knock', 'config', 'doors', 'kernel', 'client', 'fleet', 'interfaces', 'metrics'],
  cli: ['*'],
  // the man page, the conffile and the copyright file are rendered from the CLI's own definitions
  doc: ['*'],
};

/** Door modules may use the kernel only for its plan types, never the gate itself. */
const DOORS_FROM_KERNEL = new Set(['kernel/tables.ts']);

function modules(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return modules(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

interface Import {
  file: string;
  target: string;
  typeOnly: boolean;
}

function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const out: Import[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?[^'";]*?from\s+'(\.[^']+)'/gms;
  for (const m of text.matchAll(re)) {
    const target = resolve(dirname(file), m[3]!.replace(/\.js$/, '.ts'));
    out.push({ file, target, typeOnly: m[2] !== undefined });
  }
  for (const m of text.matchAll(/import\(\s*'(\.[^']+)'\s*\)/g)) {
    out.push({ file, target: resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts')), typeOnly: false });
  }
  return out;
}

describe('layers of src/', () => {
  const files = modules(SRC);

  it('every part has a row in the table', () => {
    const parts = new Set(files.map(partOf));
    const missing = [...parts].filter((p) => !(p in ALLOWED));
    assert.deepEqual(missing, [], `new parts of src/ need a row in ALLOWED (test/unit/layers.test.ts) and in the README's Architecture section: ${missing.join(', ')}`);
  });

  it('every relative import stays within what its part may use', () => {
    const wrong: string[] = [];
    let checked = 0;
    for (const file of files) {
      const from = partOf(file);
      for (const imp of importsOf(file)) {
        checked++;
        const to = partOf(imp.target);
        const rel = relative(SRC, imp.target);
        if (to === from) continue;
        const allowed = ALLOWED[from] ?? [];
        if (!allowed.includes('*') && !allowed.includes(to)) {
          wrong.push(`${relative(SRC, file)} imports ${rel} (${from} may use: ${allowed.join(', ') || 'nothing of ours'})`);
        } else if (from === 'doors' && to === 'kernel' && !(imp.typeOnly && DOORS_FROM_KERNEL.has(rel))) {
          wrong.push(`${relative(SRC, file)} imports ${rel}: a door module may take only types from kernel/tables.ts`);
        }
      }
    }
    assert.ok(checked > 200, `only ${checked} imports found: is the pattern still right?`);
    assert.deepEqual(wrong, []);
  });

  it('the checker sees a violation (a deliberate one, in memory)', () => {
    const from = partOf(join(SRC, 'bpf/map.ts'));
    const to = partOf(join(SRC, 'kernel/gate.ts'));
    assert.equal(from, 'bpf');
    assert.equal(to, 'kernel');
    assert.ok(!ALLOWED[from]!.includes(to));
    assert.equal(partOf(join(SRC, 'kernel/layout.ts')), 'abi');
    assert.equal(partOf(join(SRC, 'daemon.ts')), 'daemon');
  });
});
