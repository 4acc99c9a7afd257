/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * lib/flows.h - established flows (DESIGN.md "Established flows"): kg_flows entries, by 5-tuple,
 * that a grant opens and that traffic keeps alive. kg_admit, a global function, takes a TCP SYN or
 * UDP datagram to a protected port from a source with a kg_grants entry; kg_established takes TCP
 * without SYN. Only the judge uses them. Uses knock.h, parse.h, maps.h, context.h, events.h
 * (kg_deny, kg_emit) and grants.h (the grant filter).
 */
#ifndef KNOCKGATE_LIB_FLOWS_H
#define KNOCKGATE_LIB_FLOWS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../knock.h"
#include "../parse.h"
#include "maps.h"
#include "context.h"
#include "events.h"
#include "grants.h"

static __always_inline void kg_flow_key_of(const struct kg_pkt *pkt, struct kg_flow_key *fk)
{
	__builtin_memcpy(fk->src, pkt->src32, sizeof(fk->src));
	__builtin_memcpy(fk->dst, pkt->dst32, sizeof(fk->dst));
	fk->sport = pkt->sport;
	fk->dport = pkt->dport;
	fk->proto = pkt->proto;
}

/* Whether a flow has been idle past its limit (KG_FLOW_LINGER_NS once closing). */
static __always_inline int kg_flow_idle(const struct kg_flow *f, __u64 now)
{
	__u64 idle = f->idle_ns;

	if ((f->flags & KG_FLOW_CLOSING) && idle > KG_FLOW_LINGER_NS)
		idle = KG_FLOW_LINGER_NS;
	return now - f->last_ns > idle;
}

static __always_inline int kg_flow_door_ok(const struct kg_flow *f, __u32 protect)
{
	return (protect >> (f->slot & (KG_MAX_DOORS - 1))) & 1;
}

/*
 * A TCP SYN or a UDP datagram to a protected port from a source with a kg_grants entry g:
 * a live flow it belongs to lets it in (a retransmitted SYN, the next datagram); else a live
 * grant from a door protecting the port opens a flow (a door of scope source first; a
 * flow-only grant is used up by it). Returns the verdict.
 */
__noinline int kg_admit(struct kg_stats *st, struct kg_knock *k, struct kg_grant *g, __u32 protect,
		       __u32 flow_only)
{
	struct kg_flow_key fk = {};
	struct kg_flow *f;
	struct kg_door *door;
	__u32 d, key, live = 0, pick, chosen = KG_MAX_DOORS;

	if (!st || !k || !g)
		return KG_V_DROP_EXPIRED;
	kg_flow_key_of(&k->pkt, &fk);
	f = bpf_map_lookup_elem(&kg_flows, &fk); /* lookup 3 */
	if (f && kg_flow_door_ok(f, protect) && !kg_flow_idle(f, k->now) &&
	    (k->pkt.proto == KG_PROTO_UDP || !(f->flags & (KG_FLOW_ESTABLISHED | KG_FLOW_CLOSING)))) {
		f->last_ns = k->now;
		return KG_V_PASS_FLOW;
	}
	/* No flow, or a new connection on a 5-tuple that was used before: it needs a live grant,
	 * from a door of scope source if there is one (a flow-only grant is kept then). */
	for (d = 0; d < KG_MAX_DOORS; d++) /* branch-free: one verifier state for any grant */
		live |= (__u32)(((k->now - g->expires_ns[d]) >> 63) & 1) << d;
	live &= protect;
	pick = (live & ~flow_only) ? (live & ~flow_only) : live;
	for (d = 0; d < KG_MAX_DOORS; d++) {
		if ((pick >> d) & 1) {
			chosen = d;
			break;
		}
	}
	if (chosen >= KG_MAX_DOORS) {
		if (f && kg_flow_idle(f, k->now)) {
			bpf_map_delete_elem(&kg_flows, &fk);
			st->c[KG_C_FLOW_IDLE]++;
		}
		kg_deny(st, &k->pkt, protect, KG_DENY_EXPIRED);
		return KG_V_DROP_EXPIRED;
	}
	key = (k->gen & 1) * KG_MAX_DOORS + chosen;
	door = bpf_map_lookup_elem(&kg_doors, &key);
	if (!door)
		return KG_V_DROP_EXPIRED;
	if (f) {
		/* Reused in place: no insert, nothing for another CPU to lose. */
		f->created_ns = k->now;
		f->last_ns = k->now;
		f->idle_ns = door->flow_idle_ns;
		f->slot = chosen;
		f->flags = 0;
	} else {
		struct kg_flow nf = {};

		nf.created_ns = k->now;
		nf.last_ns = k->now;
		nf.idle_ns = door->flow_idle_ns;
		nf.slot = chosen;
		/* Marked before and after, as for grants: a flow may outlive its source's grant entry. */
		kg_gf_mark(&k->pkt);
		if (bpf_map_update_elem(&kg_flows, &fk, &nf, BPF_ANY)) {
			/* Let the packet in, but keep a flow-only grant for a retry. */
			st->c[KG_C_MAP_FULL]++;
			return KG_V_PASS_GRANTED;
		}
		kg_gf_mark(&k->pkt);
	}
	st->c[KG_C_FLOW_NEW]++;
	if ((flow_only >> chosen) & 1) {
		/* Used up: expired now (not 0, so that it still reads as a grant that was there). */
		g->expires_ns[chosen & (KG_MAX_DOORS - 1)] = k->now;
		st->c[KG_C_GRANT_CONSUMED]++;
		kg_emit(st, &k->pkt, KG_EV_CONSUMED, chosen, 0, KG_RESET_NONE, 0, k->now, 0);
	}
	return KG_V_PASS_GRANTED;
}

/* TCP without SYN to a protected port: only a live flow lets it in. */
static __always_inline __u32 kg_established(struct kg_stats *st, struct kg_knock *k, __u32 protect)
{
	struct kg_pkt *pkt = &k->pkt;
	struct kg_flow_key fk = {};
	struct kg_flow *f;

	if (!kg_gf_may_hold(pkt)) {
		/* No flow can exist: no hash lookup (a spoofed ACK flood stops here). */
		kg_deny(st, pkt, protect, KG_DENY_NO_FLOW);
		return KG_V_DROP_NO_FLOW;
	}
	kg_flow_key_of(pkt, &fk);
	f = bpf_map_lookup_elem(&kg_flows, &fk); /* lookup 2 */
	if (!f) {
		kg_deny(st, pkt, protect, KG_DENY_NO_FLOW);
		return KG_V_DROP_NO_FLOW;
	}
	k->now = bpf_ktime_get_ns();
	if (kg_flow_idle(f, k->now)) {
		bpf_map_delete_elem(&kg_flows, &fk);
		st->c[KG_C_FLOW_IDLE]++;
		kg_deny(st, pkt, protect, KG_DENY_NO_FLOW);
		return KG_V_DROP_NO_FLOW;
	}
	if (!kg_flow_door_ok(f, protect)) {
		kg_deny(st, pkt, protect, KG_DENY_NO_FLOW);
		return KG_V_DROP_NO_FLOW;
	}
	f->last_ns = k->now;
	if (!(f->flags & KG_FLOW_ESTABLISHED))
		f->flags |= KG_FLOW_ESTABLISHED;
	if ((pkt->tcp_flags & (KG_TCP_FIN | KG_TCP_RST)) && !(f->flags & KG_FLOW_CLOSING)) {
		f->flags |= KG_FLOW_CLOSING;
		st->c[KG_C_FLOW_CLOSE]++;
	}
	return KG_V_PASS_FLOW;
}

#endif /* KNOCKGATE_LIB_FLOWS_H */
