/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * lib/maps.h - every map of the XDP program, each with a comment saying what it holds and who
 * writes it: the tables user space writes (kg_ports, kg_doors, kg_allow, kg_spatags), the
 * per-source state XDP keeps (kg_progress, kg_probation, kg_firsts, kg_penalty, kg_grants,
 * kg_flows, kg_nonces, kg_spent, kg_gfilter), the event ring and the counters; then kg_globals (the
 * .bss), kg_zero (the .rodata that new entries are inserted with) and kg_lookup_or_init, the one
 * way XDP inserts an entry it then fills in place. Uses knock.h (keys, values, sizes) and libbpf's
 * map macros and helpers; every other part of the program uses it. User space (src/kernel/) opens
 * these maps by name.
 */
#ifndef KNOCKGATE_LIB_MAPS_H
#define KNOCKGATE_LIB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../knock.h"

/* Per (gen, proto, port): which doors knock on / protect it. Written by user space (inactive
 * gen) through an mmap of the array: a whole generation is rewritten in microseconds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kg_port_info);
	__uint(max_entries, KG_PORT_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
} kg_ports SEC(".maps");

/* Per (gen, slot): a door's steps, timeouts and epoch. Written by user space (inactive gen). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kg_door);
	__uint(max_entries, KG_DOOR_SLOTS);
} kg_doors SEC(".maps");

/* (gen, slot, prefix) -> 1: sources allowed to start a door with an allow list. Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct kg_allow_key);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} kg_allow SEC(".maps");

/* Source -> knock progress (two or more steps done) on every door. Written by XDP only
 * (user space reads it for status). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kg_addr);
	__type(value, struct kg_progress);
	__uint(max_entries, KG_DEFAULT_SOURCES);
} kg_progress SEC(".maps");

/* Source -> exact records of its first knocks. Written by XDP only; a flood may evict them. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kg_addr);
	__type(value, struct kg_probation);
	__uint(max_entries, KG_DEFAULT_SOURCES);
} kg_probation SEC(".maps");

/* The first-knock filter: a blocked, time-windowed Bloom filter of (source, door, epoch).
 * Written and read by XDP under each block's lock; nothing evicts from it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kg_fk_block);
	__uint(max_entries, KG_DEFAULT_FK_BLOCKS);
} kg_firsts SEC(".maps");

/* Source -> failed sequences and cooldown. Written by XDP on failures; user space sweeps. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kg_addr);
	__type(value, struct kg_penalty);
	__uint(max_entries, KG_DEFAULT_SOURCES);
} kg_penalty SEC(".maps");

/* Source -> grant expiry per door. Written by XDP (completed knocks, flow-only grants used up)
 * and user space (grant, revoke, sweep). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kg_addr);
	__type(value, struct kg_grant);
	__uint(max_entries, KG_DEFAULT_SOURCES);
} kg_grants SEC(".maps");

/* 5-tuple -> established flow. Written by XDP (opened under a grant, refreshed), deleted by
 * user space (revoke, sweep) and by XDP (found idle). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kg_flow_key);
	__type(value, struct kg_flow);
	__uint(max_entries, KG_DEFAULT_FLOWS);
} kg_flows SEC(".maps");

/* Nonces of SPA knocks whose MAC verified. Written by XDP only (BPF_NOEXIST: each counts once). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kg_nonce);
	__type(value, __u64);
	__uint(max_entries, KG_DEFAULT_NONCES);
} kg_nonces SEC(".maps");

/* (rotating door, window) whose sequence produced a grant. Written by XDP (BPF_NOEXIST),
 * pruned by user space once the window is over. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kg_spent_key);
	__type(value, __u64);
	__uint(max_entries, KG_SPENT_ENTRIES);
} kg_spent SEC(".maps");

/* The grant filter (knock.h, DESIGN.md "Grant filter"): sources that may hold a grant or a flow.
 * Written by XDP (atomic OR, where grants and flows are inserted) and user space (its writes,
 * rebuilds, the header); read by XDP on SYNs, datagrams and segments to protected ports.
 * max_entries is set at load from limits.sources. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, KG_GF_HDR_WORDS + 2 * 1024);
	__uint(map_flags, BPF_F_MMAPABLE);
} kg_gfilter SEC(".maps");

/* SPA tags of recent timestamp windows per (gen, door) (knock.h). Written by XDP, zeroed by user
 * space when it writes a door slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, KG_DOOR_SLOTS * KG_SPA_TAG_SLOTS);
} kg_spatags SEC(".maps");

/* struct kg_event records (and struct kg_signed_event). Written by XDP, drained by the daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, KG_DEFAULT_RING_BYTES);
} kg_events SEC(".maps");

/* Per-CPU verdict and event counters (enum kg_stat), one entry. Written by XDP, summed by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct kg_stats);
	__uint(max_entries, 1);
} kg_stats SEC(".maps");

/* The .bss: active_gen and deny_tokens written by user space, hint and deny_tokens by XDP. */
struct kg_globals kg_globals;

/*
 * All-zero values (.rodata) that new kg_progress, kg_probation, kg_penalty and kg_grants
 * entries are inserted with (BPF_NOEXIST) before being filled in place through the pointer a
 * lookup returns: templates on the stack would take up to 392 of its 512 bytes.
 */
static const union {
	struct kg_progress progress;
	struct kg_probation probation;
	struct kg_penalty penalty;
	struct kg_grant grant;
} kg_zero;

/*
 * The entry of key in map, inserted from init (BPF_NOEXIST) for a key the caller has looked
 * up and not found; NULL, counted as KG_C_MAP_FULL, if there is still none. -EEXIST (another CPU
 * or user space inserted it meanwhile) is no error: the lookup after the insert finds theirs.
 */
static __always_inline void *kg_init_elem(struct kg_stats *st, void *map, const void *key, const void *init)
{
	void *v;

	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	v = bpf_map_lookup_elem(map, key);
	if (!v)
		st->c[KG_C_MAP_FULL]++;
	return v;
}

/*
 * The entry of key in map, inserted from init if there is none (as bcc's libbpf-tools
 * bpf_map_lookup_or_try_init): how XDP inserts into kg_progress, kg_probation, kg_penalty and
 * kg_grants. A caller that already looked the key up calls kg_init_elem: no second lookup.
 */
static __always_inline void *kg_lookup_or_init(struct kg_stats *st, void *map, const void *key, const void *init)
{
	void *v = bpf_map_lookup_elem(map, key);

	return v ? v : kg_init_elem(st, map, key, init);
}

#endif /* KNOCKGATE_LIB_MAPS_H */
