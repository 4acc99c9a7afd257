/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * lib/grants.h - grants. The grant filter (DESIGN.md "Grant filter"): kg_gfilter's bits for the
 * sources that may hold a kg_grants or kg_flows entry, which stop a flood's packets to a protected
 * port before any hash lookup (src/kernel/gfilter.ts computes the same hash and rebuilds the
 * filter). And kg_grant_set, the one place XDP writes a grant (completed sequences, single-packet
 * knocks), marking the filter before and after. Uses knock.h, parse.h and maps.h (kg_gfilter,
 * kg_grants, kg_zero; the seeds in kg_globals).
 */
#ifndef KNOCKGATE_LIB_GRANTS_H
#define KNOCKGATE_LIB_GRANTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../knock.h"
#include "../parse.h"
#include "maps.h"

/* ---- the grant filter (DESIGN.md "Grant filter") ---------------------------------------- */

/*
 * The source's keyed hash (the first-knock filter's seed, random per load, kept on adoption):
 * two multiplies. src/kernel/gfilter.ts computes the same.
 */
static __always_inline __u64 kg_gf_hash(const struct kg_pkt *pkt)
{
	__u64 a = ((__u64)pkt->src32[0] << 32) | pkt->src32[1];
	__u64 b = ((__u64)pkt->src32[2] << 32) | pkt->src32[3];
	__u64 h = (a ^ kg_globals.fk_seed[1]) * 0x9e3779b97f4a7c15ULL;

	h = (h ^ (h >> 29) ^ b ^ kg_globals.fk_seed[0]) * 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 32);
}

/* The two bits of a source's word. */
static __always_inline __u64 kg_gf_bits(__u64 h)
{
	return (1ULL << ((h >> 40) & 63)) | (1ULL << ((h >> 52) & 63));
}

/*
 * Whether the source may hold a kg_grants or kg_flows entry. 1 (look it up) whenever the
 * filter cannot answer: not trusted yet (KG_GF_ON clear), or an index out of range.
 */
static __always_inline int kg_gf_may_hold(const struct kg_pkt *pkt)
{
#ifdef KG_NO_GFILTER
	return 1;
#else
	__u32 zero = 0, idx;
	__u64 *hdr, *w, s, h, bits;

	hdr = bpf_map_lookup_elem(&kg_gfilter, &zero);
	if (!hdr)
		return 1;
	s = *(volatile __u64 *)hdr;
	if (!(s & KG_GF_ON))
		return 1;
	h = kg_gf_hash(pkt);
	idx = KG_GF_HDR_WORDS + (((s & KG_GF_CUR) << (s >> 32)) | (h & ((1ULL << (s >> 32)) - 1)));
	w = bpf_map_lookup_elem(&kg_gfilter, &idx);
	if (!w)
		return 1;
	bits = kg_gf_bits(h);
	return (*w & bits) == bits;
#endif
}

/* Sets the source's bits in both copies (whether or not the filter is trusted yet). */
static __always_inline void kg_gf_mark(const struct kg_pkt *pkt)
{
	__u32 zero = 0, idx, c;
	__u64 *hdr, *w, s, h, bits;

	hdr = bpf_map_lookup_elem(&kg_gfilter, &zero);
	if (!hdr)
		return;
	s = *(volatile __u64 *)hdr;
	h = kg_gf_hash(pkt);
	bits = kg_gf_bits(h);
	for (c = 0; c < 2; c++) {
		idx = KG_GF_HDR_WORDS + (((__u64)c << (s >> 32)) | (h & ((1ULL << (s >> 32)) - 1)));
		w = bpf_map_lookup_elem(&kg_gfilter, &idx);
		if (w && (*(volatile __u64 *)w & bits) != bits)
			__sync_fetch_and_or(w, bits);
	}
}

/* ---- grants ----------------------------------------------------------------------------- */

/*
 * kg_grants[src].expires_ns[slot] = expires: in place if the entry exists, else inserted. The
 * grant filter is marked before (no reader finds the entry without its bits) and after (a
 * rebuild that cleared the bits meanwhile finds the entry).
 */
static __always_inline int kg_grant_set(struct kg_stats *st, const struct kg_pkt *pkt, const struct kg_addr *src,
					__u32 slot, __u64 expires)
{
	struct kg_grant *g;

	kg_gf_mark(pkt);
	g = kg_lookup_or_init(st, &kg_grants, src, &kg_zero.grant);
	if (!g)
		return -1;
	g->expires_ns[slot & (KG_MAX_DOORS - 1)] = expires;
	kg_gf_mark(pkt);
	return 0;
}

#endif /* KNOCKGATE_LIB_GRANTS_H */
