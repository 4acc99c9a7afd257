/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * lib/context.h - what every part of the XDP program knows about the packet being judged: struct
 * kg_knock (the parsed packet, the clock once read, the active generation, the source's hint slot
 * and first-knock block), filled in by the judge as it goes; and kg_allowed, a door's allow list
 * (kg_allow) asked about the packet's source, which sequence and single-packet doors both check.
 * Uses knock.h, parse.h and maps.h.
 */
#ifndef KNOCKGATE_LIB_CONTEXT_H
#define KNOCKGATE_LIB_CONTEXT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../knock.h"
#include "../parse.h"
#include "maps.h"

/*
 * What the knock state machine needs to know about a packet. Scalars only: it
 * is passed to the global functions kg_door(), kg_admit() and kg_fail().
 */
struct kg_knock {
	struct kg_pkt pkt;
	__u64 now;        /* clock, read only on the paths that need it */
	__u64 fk_hash;    /* keyed hash of the source (first-knock filter) */
	__u32 gen;        /* active generation, read once per packet */
	__u32 hint_idx;   /* the source's slot in kg_globals.hint */
	__u32 port_doors; /* knock_doors of the destination port; 0 on an unrelated port */
	__u32 fk_block;   /* the source's block in kg_firsts */
};

static __always_inline int kg_allowed(const struct kg_knock *k, __u32 slot)
{
	struct kg_allow_key key = {};

	key.prefixlen = 16 + 128;
	key.gen = k->gen;
	key.slot = slot;
	__builtin_memcpy(key.addr, k->pkt.src32, sizeof(key.addr));
	return bpf_map_lookup_elem(&kg_allow, &key) != NULL;
}

#endif /* KNOCKGATE_LIB_CONTEXT_H */
