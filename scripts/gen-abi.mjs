#!/usr/bin/env node
// Generates src/kernel/abi.gen.ts, the TypeScript side of the kernel/user contract, from its one
// source: bpf/knock.h as compiled (the way cilium/ebpf's bpf2go generates bpf_bpfel.go).
//
//   node scripts/gen-abi.mjs           write src/kernel/abi.gen.ts (make -C bpf runs this)
//   node scripts/gen-abi.mjs --check   exit 1 if the file differs from what the sources give
//
// What comes from where:
// - #define KG_* of knock.h (clang -dM -E): numbers (bigint where the C expression has a 64-bit
//   literal, e.g. 10000000000ULL) and strings (map and program names).
// - every `struct kg_*` and `enum kg_*` of knock.h: sizes, member offsets and enumerators, from
//   the BTF of a translation unit that names each of them (knock.bpf.o's BTF lacks the types the
//   program only handles as bytes, like struct kg_event, and every enum).
// - bpf/knock.bpf.o's BTF: each map as the program declares it (type, key and value size,
//   max_entries, flags), and struct kg_globals behind .bss, for which a typed accessor is written.
//   Every knock.h struct the program uses must have the same layout in both BTFs, or this fails.
//
// Plain JavaScript so that it runs before tsc. Needs clang and bpftool (scripts/setup.sh).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const check = args.includes('--check');
const header = opt('--header', join(repo, 'bpf', 'knock.h'));
const object = opt('--object', join(repo, 'bpf', 'knock.bpf.o'));
const out = opt('--out', join(repo, 'src', 'kernel', 'abi.gen.ts'));
const clang = process.env.CLANG || 'clang';
const bpftool = process.env.BPFTOOL || 'bpftool';
const multiarch = process.env.MULTIARCH || tryRun('gcc', ['-dumpmachine']) || '';
const includes = ['-I', dirname(header), ...(multiarch ? ['-I', `/usr/include/${multiarch}`] : [])];

function tryRun(cmd, argv) {
  try {
    return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

function fail(msg) {
  process.stderr.write(`gen-abi: ${msg}\n`);
  process.exit(1);
}

function run(cmd, argv) {
  try {
    return execFileSync(cmd, argv, { encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    fail(`${cmd} ${argv.join(' ')} failed: ${err.stderr || err.message}`);
  }
}

// ---- #define KG_* ------------------------------------------------------------------------

/** name -> number | bigint | string, in the header's order of names (sorted by clang). */
function readDefines() {
  const raw = new Map();
  for (const line of run(clang, ['-dM', '-E', '-x', 'c', ...includes, header]).split('\n')) {
    const m = /^#define (KG_\w+) (.*)$/.exec(line); // function-like macros (KG_X(a)) do not match
    if (m) raw.set(m[1], m[2].trim());
  }
  const values = new Map();
  const evaluate = (name, seen = []) => {
    if (values.has(name)) return values.get(name);
    if (seen.includes(name)) fail(`#define ${name} refers to itself`);
    const body = raw.get(name);
    if (body === undefined) fail(`#define ${seen.at(-1)} uses ${name}, which knock.h does not define`);
    let v;
    const str = /^"([^"\\]*)"$/.exec(body);
    if (str) {
      v = str[1];
    } else {
      let wide = false;
      const expr = body.replace(/\b(0x[0-9a-fA-F]+|\d+)([uUlL]*)\b|\b(KG_\w+)\b/g, (_, num, suffix, ident) => {
        if (ident) {
          const x = evaluate(ident, [...seen, name]);
          if (typeof x === 'string') fail(`#define ${name}: ${ident} is a string`);
          if (typeof x === 'bigint') wide = true;
          return `(${BigInt(x)}n)`;
        }
        if (/ll/i.test(suffix)) wide = true;
        return `${BigInt(num)}n`;
      });
      if (!/^[\d\sn()+\-*/%<>|&^]*$/.test(expr)) {
        fail(`#define ${name} ${body}: not a constant this generator can evaluate (numbers, KG_ names, + - * / % << >> | & ^)`);
      }
      const big = Function(`"use strict"; return (${expr});`)();
      if (wide) v = big;
      else if (big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)) v = Number(big);
      else fail(`#define ${name} = ${big} does not fit a JavaScript number: give it a ULL suffix`);
    }
    values.set(name, v);
    return v;
  };
  for (const name of raw.keys()) evaluate(name);
  return values;
}

// ---- BTF ---------------------------------------------------------------------------------

function btfOf(path) {
  const { types } = JSON.parse(run(bpftool, ['-j', 'btf', 'dump', 'file', path]));
  const byId = new Map(types.map((t) => [t.id, t]));
  const resolve = (id) => {
    let t = byId.get(id);
    while (t && ['TYPEDEF', 'VOLATILE', 'CONST', 'RESTRICT', 'TYPE_TAG'].includes(t.kind)) t = byId.get(t.type_id);
    return t;
  };
  return { types, byId, resolve };
}

/** The BTF of every struct and enum knock.h defines, whether or not the program uses it. */
function headerBtf() {
  const source = readFileSync(header, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
  const names = (kind) => [...new Set([...source.matchAll(new RegExp(`\\b${kind}\\s+(kg_\\w+)\\s*\\{`, 'g'))].map((m) => m[1]))];
  const structs = names('struct');
  const enums = names('enum');
  const tu = [
    '#include "knock.h"',
    ...structs.map((s, i) => `struct ${s} *kg_abi_s${i};`),
    ...enums.map((e, i) => `enum ${e} kg_abi_e${i};`),
    'enum bpf_map_type kg_abi_map_type;',
    '',
  ].join('\n');
  const dir = mkdtempSync(join(tmpdir(), 'kg-gen-abi-'));
  try {
    writeFileSync(join(dir, 'abi.c'), tu);
    run(clang, ['-g', '-O2', '-target', 'bpf', '-Wall', '-Werror', ...includes, '-c', join(dir, 'abi.c'), '-o', join(dir, 'abi.o')]);
    return { ...btfOf(join(dir, 'abi.o')), structs, enums };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const isPad = (name) => /^pad\d*$/.test(name);

/** A member's type as the accessor sees it: scalar kind and element count. */
function scalarOf(btf, typeId, where) {
  let t = btf.resolve(typeId);
  let count = 0;
  if (t.kind === 'ARRAY') {
    count = t.nr_elems;
    t = btf.resolve(t.type_id);
  }
  if (t.kind === 'ENUM') t = { kind: 'INT', size: t.size, encoding: '(none)' };
  if (t.kind !== 'INT' || ![1, 2, 4, 8].includes(t.size)) fail(`${where}: only integers and arrays of integers have accessors (found ${t.kind})`);
  const signed = t.encoding === 'SIGNED';
  const bits = t.size * 8;
  return { bits, signed, count, big: bits === 64, dv: `${bits === 64 ? 'Big' : ''}${signed ? 'Int' : 'Uint'}${bits}` };
}

function structLayout(btf, name) {
  const t = btf.types.find((x) => x.kind === 'STRUCT' && x.name === name);
  if (!t) return null;
  for (const m of t.members) if (m.bits_offset % 8 !== 0 || m.bitfield_size) fail(`struct ${name}.${m.name}: bit-fields are not supported`);
  return { size: t.size, members: t.members.map((m) => ({ name: m.name, offset: m.bits_offset / 8, typeId: m.type_id })) };
}

function sameLayout(a, b) {
  return a.size === b.size && a.members.length === b.members.length && a.members.every((m, i) => m.name === b.members[i].name && m.offset === b.members[i].offset);
}

/** The maps of the program's .maps section, as libbpf reads them (__uint / __type members). */
function mapSpecs(prog, mapTypes) {
  const sec = prog.types.find((t) => t.kind === 'DATASEC' && t.name === '.maps');
  if (!sec) fail(`${object} has no .maps section in its BTF`);
  const specs = [];
  for (const v of sec.vars) {
    const vt = prog.byId.get(v.type_id);
    const def = prog.resolve(vt.type_id);
    const spec = { name: vt.name, type: '', keySize: 0, valueSize: 0, maxEntries: 0, flags: 0 };
    for (const m of def.members) {
      const target = prog.resolve(prog.byId.get(m.type_id).type_id); // every member is a pointer
      const uint = () => target.nr_elems; // __uint(x, N): int (*x)[N]
      if (m.name === 'type') spec.type = mapTypes.get(uint()) ?? String(uint());
      else if (m.name === 'max_entries') spec.maxEntries = uint();
      else if (m.name === 'map_flags') spec.flags = uint();
      else if (m.name === 'key_size') spec.keySize = uint();
      else if (m.name === 'value_size') spec.valueSize = uint();
      else if (m.name === 'key') spec.keySize = target.size ?? sizeOfArrayOrStruct(prog, target);
      else if (m.name === 'value') spec.valueSize = target.size ?? sizeOfArrayOrStruct(prog, target);
    }
    specs.push(spec);
  }
  return specs.sort((a, b) => a.name.localeCompare(b.name));
}

function sizeOfArrayOrStruct(btf, t) {
  if (t.kind === 'ARRAY') return t.nr_elems * (btf.resolve(t.type_id).size ?? sizeOfArrayOrStruct(btf, btf.resolve(t.type_id)));
  fail(`cannot size BTF type ${t.kind} ${t.name}`);
}

// ---- output ------------------------------------------------------------------------------

const camel = (s) => s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
const lit = (v) => (typeof v === 'bigint' ? `${v}n` : typeof v === 'string' ? `'${v}'` : String(v));
const key = (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : `'${k}'`);

function commonPrefix(names) {
  let p = names[0] ?? '';
  for (const n of names) while (!n.startsWith(p)) p = p.slice(0, -1);
  return p.slice(0, p.lastIndexOf('_') + 1);
}

function generate() {
  if (!existsSync(object)) fail(`${object} not found: build it first (make -C bpf)`);
  const defines = readDefines();
  const hdr = headerBtf();
  const prog = btfOf(object);
  const rel = (p) => relative(repo, p);
  const L = [];
  const emit = (s = '') => L.push(s);

  emit(`// Code generated by scripts/gen-abi.mjs from ${rel(header)} and the BTF of ${rel(object)}. DO NOT EDIT.`);
  emit('// Regenerated by `make -C bpf` (npm run build); test/unit/layout.test.ts fails when it is stale.');
  emit();

  const nums = [...defines].filter(([, v]) => typeof v !== 'string').sort(([a], [b]) => a.localeCompare(b));
  const strs = [...defines].filter(([, v]) => typeof v === 'string').sort(([a], [b]) => a.localeCompare(b));
  emit('/** Every numeric #define KG_* of knock.h, without the prefix (bigint where C has a 64-bit literal). */');
  emit('export const KG = {');
  for (const [n, v] of nums) emit(`  ${n.slice(3)}: ${lit(v)},`);
  emit('} as const;');
  emit();
  emit('/** Map names: #define KG_MAP_* (the .bss map holds struct kg_globals). */');
  emit('export const MAP = {');
  for (const [n, v] of strs.filter(([n]) => n.startsWith('KG_MAP_'))) emit(`  ${n.slice(7)}: ${lit(v)},`);
  emit('} as const;');
  emit();
  emit('/** The other string #define KG_* (program names). */');
  emit('export const KG_STRINGS = {');
  for (const [n, v] of strs.filter(([n]) => !n.startsWith('KG_MAP_'))) emit(`  ${n.slice(3)}: ${lit(v)},`);
  emit('} as const;');
  emit();

  // enums
  for (const e of hdr.enums) {
    const t = hdr.types.find((x) => x.kind === 'ENUM' && x.name === e);
    if (!t) fail(`enum ${e} is not in the BTF of knock.h`);
    const prefix = commonPrefix(t.values.map((v) => v.name));
    emit(`/** enum ${e} (prefix ${prefix}). */`);
    emit(`export const ${e} = {`);
    for (const v of t.values) emit(`  ${v.name.slice(prefix.length)}: ${v.val},`);
    emit('} as const;');
    emit();
  }

  // structs
  const layouts = new Map();
  for (const s of hdr.structs) {
    const l = structLayout(hdr, s);
    if (!l) fail(`struct ${s} is not in the BTF of knock.h`);
    const used = structLayout(prog, s);
    if (used && !sameLayout(l, used)) fail(`struct ${s} has another layout in ${rel(object)} than in ${rel(header)}: rebuild the object (make -C bpf)`);
    layouts.set(s, l);
  }
  emit('/** sizeof(struct kg_*) of knock.h, without the prefix. */');
  emit('export const SIZEOF = {');
  for (const [s, l] of layouts) emit(`  ${s.slice(3)}: ${l.size},`);
  emit('} as const;');
  emit();
  emit('/** offsetof(struct kg_*, member) of knock.h, without the pad members. */');
  emit('export const OFFSETS = {');
  for (const [s, l] of layouts) {
    const ms = l.members.filter((m) => !isPad(m.name)).map((m) => `${key(m.name)}: ${m.offset}`);
    emit(`  ${s.slice(3)}: { ${ms.join(', ')} },`);
  }
  emit('} as const;');
  emit();

  // maps
  const mapTypes = new Map(hdr.types.find((t) => t.kind === 'ENUM' && t.name === 'bpf_map_type').values.map((v) => [v.val, v.name]));
  const specs = mapSpecs(prog, mapTypes);
  const bss = prog.types.find((t) => t.kind === 'DATASEC' && t.name === '.bss');
  const globalsVar = bss?.vars.length === 1 ? prog.byId.get(bss.vars[0].type_id) : null;
  const globalsType = globalsVar ? prog.resolve(globalsVar.type_id) : null;
  if (!globalsType || globalsType.kind !== 'STRUCT' || globalsType.name !== 'kg_globals') fail(`${rel(object)}: .bss must hold one variable, a struct kg_globals`);
  const mapNames = new Set(strs.filter(([n]) => n.startsWith('KG_MAP_')).map(([, v]) => v));
  for (const s of specs) if (!mapNames.has(s.name)) fail(`map ${s.name} of ${rel(object)} has no #define KG_MAP_* in ${rel(header)}`);
  emit('export interface MapSpecGen {');
  emit('  readonly name: string;');
  emit('  /** enum bpf_map_type, without BPF_MAP_TYPE_ */');
  emit('  readonly type: string;');
  emit('  /** 0: none (ring buffers) */');
  emit('  readonly keySize: number;');
  emit('  readonly valueSize: number;');
  emit('  /** as compiled; the loader may set another before load */');
  emit('  readonly maxEntries: number;');
  emit('  readonly flags: number;');
  emit('}');
  emit();
  emit(`/** Every map of ${rel(object)} as its BTF declares it; the globals (.bss) last. */`);
  emit('export const MAP_SPECS = {');
  for (const s of specs) {
    emit(`  ${s.name}: { name: '${s.name}', type: '${s.type.replace(/^BPF_MAP_TYPE_/, '')}', keySize: ${s.keySize}, valueSize: ${s.valueSize}, maxEntries: ${s.maxEntries}, flags: ${s.flags} },`);
  }
  emit(`  '.bss': { name: '.bss', type: 'ARRAY', keySize: 4, valueSize: ${globalsType.size}, maxEntries: 1, flags: 0 },`);
  emit('} as const satisfies Record<string, MapSpecGen>;');
  emit();

  // globals accessor
  const g = structLayout(prog, 'kg_globals');
  emit('/** An array member of struct kg_globals, read and written in place. */');
  emit('export interface GlobalsArray<T> {');
  emit('  readonly length: number;');
  emit('  get(i: number): T;');
  emit('  set(i: number, v: T): void;');
  emit('}');
  emit();
  emit('/** Where the struct is: read `view` at every access (an mmapped region refuses it once unmapped). */');
  emit('export interface GlobalsRegion {');
  emit('  readonly view: DataView;');
  emit('}');
  emit();
  emit('function member<T>(region: GlobalsRegion, at: number, length: number, size: number, get: (v: DataView, o: number) => T, set: (v: DataView, o: number, x: T) => void): GlobalsArray<T> {');
  emit('  const off = (i: number): number => {');
  emit("    if (!Number.isInteger(i) || i < 0 || i >= length) throw new RangeError(`index ${i} out of kg_globals array of ${length}`);");
  emit('    return at + i * size;');
  emit('  };');
  emit('  return { length, get: (i) => get(region.view, off(i)), set: (i, x) => set(region.view, off(i), x) };');
  emit('}');
  emit();
  emit('/**');
  emit(' * struct kg_globals (the .bss map, mmapped): one typed property per member, little-endian,');
  emit(' * read and written in place in `region` (offset 0 = the struct). Scalars are get/set properties;');
  emit(' * arrays are GlobalsArray. Named in camelCase after the C members.');
  emit(' */');
  emit('export class Globals {');
  const arrays = [];
  for (const m of g.members) {
    if (isPad(m.name)) continue;
    const s = scalarOf(prog, m.typeId, `struct kg_globals.${m.name}`);
    const ty = s.big ? 'bigint' : 'number';
    if (s.count > 0) {
      arrays.push({ m, s, ty });
      emit(`  /** ${m.name}[${s.count}] at ${m.offset} */`);
      emit(`  readonly ${camel(m.name)}: GlobalsArray<${ty}>;`);
    }
  }
  emit();
  emit('  constructor(private readonly region: GlobalsRegion) {');
  for (const { m, s } of arrays) {
    emit(
      `    this.${camel(m.name)} = member(region, ${m.offset}, ${s.count}, ${s.bits / 8}, (v, o) => v.get${s.dv}(o, true), (v, o, x) => v.set${s.dv}(o, x, true));`,
    );
  }
  emit('  }');
  for (const m of g.members) {
    if (isPad(m.name)) continue;
    const s = scalarOf(prog, m.typeId, `struct kg_globals.${m.name}`);
    if (s.count > 0) continue;
    const ty = s.big ? 'bigint' : 'number';
    emit();
    emit(`  /** ${s.signed ? 's' : 'u'}${s.bits} ${m.name} at ${m.offset} */`);
    emit(`  get ${camel(m.name)}(): ${ty} {`);
    emit(`    return this.region.view.get${s.dv}(${m.offset}, true);`);
    emit('  }');
    emit(`  set ${camel(m.name)}(v: ${ty}) {`);
    emit(`    this.region.view.set${s.dv}(${m.offset}, v, true);`);
    emit('  }');
  }
  emit('}');
  return L.join('\n') + '\n';
}

const text = generate();
const current = existsSync(out) ? readFileSync(out, 'utf8') : null;
if (check) {
  if (current !== text) fail(`${relative(repo, out)} is stale (it differs from what ${relative(repo, header)} and ${relative(repo, object)} give): run \`make -C bpf\` and commit it`);
} else if (current !== text) {
  writeFileSync(out, text);
  process.stdout.write(`gen-abi: wrote ${relative(repo, out)}\n`);
} else {
  const now = new Date();
  utimesSync(out, now, now); // up to date: newer than its sources for make
}
