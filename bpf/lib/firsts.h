/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * lib/firsts.h - the first-knock filter (DESIGN.md "Eviction resistance"): a blocked, time-windowed
 * Bloom filter of (source, door, epoch) in kg_firsts, which stands in for a first knock whose exact
 * record in kg_probation a flood has evicted. kg_fk_locate finds the source's block once per knock
 * packet; kg_fk_insert and kg_fk_test are global functions, verified once each. Uses knock.h,
 * maps.h (kg_firsts; the seeds and window in kg_globals) and context.h.
 */
#ifndef KNOCKGATE_LIB_FIRSTS_H
#define KNOCKGATE_LIB_FIRSTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../knock.h"
#include "maps.h"
#include "context.h"

/* murmur3's 64-bit finalizer */
static __always_inline __u64 kg_mix(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* The source's keyed hash and block. */
static __always_inline void kg_fk_locate(struct kg_knock *k)
{
	__u64 a = ((__u64)k->pkt.src32[0] << 32) | k->pkt.src32[1];
	__u64 b = ((__u64)k->pkt.src32[2] << 32) | k->pkt.src32[3];
	__u64 h = kg_mix(kg_mix(a ^ kg_globals.fk_seed[0]) ^ b);

	k->fk_hash = h;
	k->fk_block = (__u32)h & kg_globals.fk_mask;
}

/* KG_FK_HASHES 16-bit chunks that pick the bits of (source, door, epoch) in a half-block. */
static __always_inline __u64 kg_fk_key(const struct kg_knock *k, __u32 d, __u32 epoch)
{
	return kg_mix(k->fk_hash ^ kg_globals.fk_seed[1] ^ (((__u64)d << 32) | epoch));
}

/* Bit i of a key: chunk i scaled onto [0, KG_FK_BITS) (a multiply and a shift: the verifier
 * keeps the bound, which it would not for a modulo). */
static __always_inline __u32 kg_fk_bit(__u64 key, __u32 i)
{
	return (__u32)((((key >> (16 * i)) & 0xffff) * KG_FK_BITS) >> 16);
}

/* Sets bit `bit` of half `half` (both checked: the verifier sees the bounds). */
static __always_inline void kg_fk_set(struct kg_fk_block *b, __u32 half, __u32 bit)
{
	__u32 w = half * KG_FK_WORDS + (bit >> 5);

	if (w < 2 * KG_FK_WORDS)
		b->bits[w] |= 1U << (bit & 31);
}

static __always_inline int kg_fk_get(const struct kg_fk_block *b, __u32 half, __u32 bit)
{
	__u32 w = half * KG_FK_WORDS + (bit >> 5);

	return w < 2 * KG_FK_WORDS && (b->bits[w] & (1U << (bit & 31)));
}

/*
 * Remembers a first knock of (source, door d, epoch) at k->now. A global function (like
 * kg_fk_test): verified once, on its own.
 */
__noinline int kg_fk_insert(const struct kg_knock *k, __u32 d, __u32 epoch)
{
	struct kg_fk_block *b;
	__u64 w, start, key, now;
	__u32 idx, half, i;

	if (!k)
		return 0;
	w = kg_globals.fk_window_ns;
	if (w == 0)
		return 0;
	idx = k->fk_block;
	now = k->now;
	b = bpf_map_lookup_elem(&kg_firsts, &idx);
	if (!b)
		return 0;
	half = (now / w) & 1;
	start = now - now % w;
	key = kg_fk_key(k, d, epoch);
	bpf_spin_lock(&b->lock);
	if (b->start[half] != start) {
		/* The half still holds the window before last: start it afresh. */
		for (i = 0; i < KG_FK_WORDS; i++) {
			__u32 wi = half * KG_FK_WORDS + i;

			if (wi < 2 * KG_FK_WORDS)
				b->bits[wi] = 0;
		}
		b->start[half] = start;
	}
	for (i = 0; i < KG_FK_HASHES; i++)
		kg_fk_set(b, half, kg_fk_bit(key, i));
	bpf_spin_unlock(&b->lock);
	return 1;
}

/* Whether (source, door d, epoch) made a first knock in this window or the one before. */
__noinline int kg_fk_test(const struct kg_knock *k, __u32 d, __u32 epoch)
{
	struct kg_fk_block *b;
	__u64 w, start, key, now;
	__u32 idx, half, i, h, found = 0, all;

	if (!k)
		return 0;
	w = kg_globals.fk_window_ns;
	if (w == 0)
		return 0;
	idx = k->fk_block;
	now = k->now;
	b = bpf_map_lookup_elem(&kg_firsts, &idx);
	if (!b)
		return 0;
	half = (now / w) & 1;
	start = now - now % w;
	key = kg_fk_key(k, d, epoch);
	bpf_spin_lock(&b->lock);
	for (h = 0; h < 2; h++) {
		__u32 which = (half ^ h) & 1;

		if (b->start[which] != (h == 0 ? start : start - w))
			continue;
		all = 1;
		for (i = 0; i < KG_FK_HASHES; i++)
			all &= kg_fk_get(b, which, kg_fk_bit(key, i));
		found |= all;
	}
	bpf_spin_unlock(&b->lock);
	return found;
}

#endif /* KNOCKGATE_LIB_FIRSTS_H */
