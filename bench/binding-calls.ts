/**
 * Rough cost of one map operation from JS through the binding (koffi -> libbpf -> bpf(2)).
 *
 *   clang -O2 -g -target bpf -Wall -Werror -I/usr/include/$(gcc -dumpmachine) \
 *     -c test/fixtures/binding.bpf.c -o test/fixtures/binding.bpf.o
 *   npx tsc -p tsconfig.json && sudo node dist/bench/binding-calls.js [iterations]
 *
 * Prints operations per second for array-map lookups (lookup: returns a copy; lookupInto:
 * no allocation), array-map updates and hash-map lookups. Compare with the same loop in C
 * (bpf_map_lookup_elem on an array map) to see the FFI's share: on the development VM the
 * syscall alone costs ~1.5 us, koffi + the binding add ~0.3-0.5 us.
 */
import { fileURLToPath } from 'node:url';
import { BpfObject, BPF_ANY } from '../src/bpf/index.js';

const iterations = Number(process.argv[2] ?? 2_000_000);
const objectPath = fileURLToPath(new URL('../../test/fixtures/binding.bpf.o', import.meta.url));

function measure(name: string, fn: () => void): void {
  for (let i = 0; i < 10_000; i++) fn(); // warm up (JIT, koffi call path)
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn();
  const ns = Number(process.hrtime.bigint() - t0);
  const perSec = (iterations * 1e9) / ns;
  console.log(`${name.padEnd(28)} ${(perSec / 1e6).toFixed(2)} M ops/s  (${(ns / iterations).toFixed(0)} ns/op)`);
}

const obj = BpfObject.open(objectPath);
try {
  obj.load();
  const array = obj.map('kb_verdict');
  const hash = obj.map('kb_hash');
  const key = Buffer.alloc(4);
  const value = Buffer.alloc(4);
  const out = Buffer.alloc(array.lookupSize);
  const hout = Buffer.alloc(hash.lookupSize);
  const hkey = Buffer.alloc(4);
  hkey.writeUInt32LE(7);
  hash.update(hkey, Buffer.alloc(8), BPF_ANY);

  console.log(`${iterations} iterations each`);
  measure('array lookup()', () => {
    array.lookup(key);
  });
  measure('array lookupInto()', () => {
    array.lookupInto(key, out);
  });
  measure('array update()', () => {
    array.update(key, value, BPF_ANY);
  });
  measure('hash lookupInto()', () => {
    hash.lookupInto(hkey, hout);
  });
} finally {
  obj.close();
}
