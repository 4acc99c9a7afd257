#!/usr/bin/env bash
# Shows that the XDP program compiles to the same object before and after a change that should
# not change it (a move of code between bpf/ files, a rename of a comment): builds every variant
# of bpf/knock.bpf.c from the bpf/ of REF and from the working tree's bpf/, and compares them.
#
#   scripts/objdump-same.sh [REF]     REF: a commit (default HEAD)
#
# The variants: the build's (bpf/Makefile's flags) and bench/steps.ts's (its flags and -D
# switches). For each, these must be equal (empty diff):
#   llvm-objdump -d --no-show-raw-insn   every instruction, in order, with its labels
#   llvm-objdump -r                      relocations, except those of the DWARF and .BTF.ext
#   llvm-objdump -s                      the contents of .maps, .rodata, license, .xdp_run_config
#   llvm-readelf -s                      the symbol table (sizes, sections, bindings)
#   bpftool btf dump file                every BTF type, with its id: the maps' and the
#                                        functions' types, as the loader and the layout test see them
# Left out on purpose: DWARF and .BTF.ext (line info names the file and line of every
# instruction, which a move changes), and .BTF's string section (it holds those lines' text).
#
# Prints one line per variant and "identical: N instructions" (N: the build's variant) at the
# end; exits 1 at the first difference, printing it. test/fixtures/*.bpf.c include nothing of
# bpf/, so a change there cannot change them.
set -euo pipefail

ref=${1:-HEAD}
root=$(git rev-parse --show-toplevel)
multiarch=$(gcc -dumpmachine 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH)
work=$(mktemp -d /tmp/kg-objdump-same.XXXXXX)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/before" "$work/after" "$work/out"
git -C "$root" archive "$ref" bpf | tar -x -C "$work/before"
cp -r "$root/bpf" "$work/after/"

# bpf/Makefile's BPF_CFLAGS; bench/steps.ts adds -Wno-unused-function and its switches.
build_flags=(-O2 -g -target bpf -Wall -Werror "-I/usr/include/$multiarch")
bench_flags=("${build_flags[@]}" -Wno-unused-function)
variants=(build stats parse ports no-gfilter no-spa-tag)
declare -A defines=(
	[build]=''
	[stats]='-DKG_BENCH_STEP=1'
	[parse]='-DKG_BENCH_STEP=2'
	[ports]='-DKG_BENCH_STEP=3'
	[no-gfilter]='-DKG_NO_GFILTER'
	[no-spa-tag]='-DKG_NO_SPA_TAG'
)

# The listings of one object, with the object's own path taken out.
listings() {
	local obj=$1 out=$2
	llvm-objdump -d --no-show-raw-insn "$obj" | tail -n +3 >"$out.insns"
	llvm-objdump -r "$obj" | tail -n +3 |
		awk '/^RELOCATION RECORDS FOR/ { skip = ($0 ~ /\[\.(debug_|BTF\.ext)/) } !skip' >"$out.relocs"
	llvm-objdump -s -j .maps -j .rodata -j license -j .xdp_run_config "$obj" | tail -n +3 >"$out.data"
	llvm-readelf -s "$obj" | tail -n +2 >"$out.syms"
	bpftool btf dump file "$obj" >"$out.btf"
}

total=
for v in "${variants[@]}"; do
	if [ "$v" = build ]; then flags=("${build_flags[@]}"); else flags=("${bench_flags[@]}"); fi
	# shellcheck disable=SC2206 # one switch or none
	flags+=(${defines[$v]})
	for side in before after; do
		clang "${flags[@]}" "-I$work/$side/bpf" -c "$work/$side/bpf/knock.bpf.c" -o "$work/out/$side-$v.o"
		listings "$work/out/$side-$v.o" "$work/out/$side-$v"
	done
	for what in insns relocs data syms btf; do
		if ! diff -u "$work/out/before-$v.$what" "$work/out/after-$v.$what" >"$work/out/diff"; then
			echo "$v: $what differ ($ref -> working tree):" >&2
			head -n 60 "$work/out/diff" >&2
			exit 1
		fi
	done
	n=$(grep -cE '^ +[0-9a-f]+:' "$work/out/after-$v.insns")
	echo "$v (${defines[$v]:-no switches}): $n instructions, relocations, data, symbols and BTF equal"
	[ -n "$total" ] || total=$n
done
echo "identical: $total instructions ($ref -> working tree, ${#variants[@]} variants)"
