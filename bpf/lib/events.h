/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * lib/events.h - what the XDP program reports: kg_emit puts one struct kg_event into the kg_events
 * ring (a full ring is counted, never waited on); kg_take_token takes from a budget that user space
 * refills in kg_globals; and the two kinds of event that a stranger can cause are budgeted, so that
 * a flood cannot fill the ring: denials (kg_deny, deny_tokens) and the events of first steps, their
 * resets and cooldowns (kg_emit_knock, knock_tokens). Events that carry more than a struct kg_event
 * are reserved in the ring where they are made (lib/single.h). Uses knock.h, parse.h, maps.h and
 * context.h.
 */
#ifndef KNOCKGATE_LIB_EVENTS_H
#define KNOCKGATE_LIB_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../knock.h"
#include "../parse.h"
#include "maps.h"
#include "context.h"

/* Emits one event about pkt; a full ring counts KG_C_EVENT_LOST. Returns 0 if emitted. */
static __always_inline int kg_emit(struct kg_stats *st, const struct kg_pkt *pkt, __u8 type, __u8 door,
				   __u8 step, __u8 reason, __u16 doors, __u64 ts, __u64 expires)
{
	struct kg_event ev = {};

	ev.ts_ns = ts;
	ev.expires_ns = expires;
	__builtin_memcpy(ev.addr, pkt->src32, sizeof(ev.addr));
	ev.port = pkt->dport;
	ev.doors = doors;
	ev.proto = pkt->proto;
	ev.type = type;
	ev.door = door;
	ev.step = step;
	ev.reason = reason;
	ev.ifindex = pkt->ifindex;
	if (bpf_ringbuf_output(&kg_events, &ev, sizeof(ev), 0)) {
		st->c[KG_C_EVENT_LOST]++;
		return -1;
	}
	return 0;
}

/* Takes one token of a budget refilled by user space; 0 if none is left. */
static __always_inline int kg_take_token(__s64 *tokens)
{
	if (*(volatile __s64 *)tokens > 0) {
		__sync_fetch_and_add(tokens, -1);
		return 1;
	}
	return 0;
}

/* A denial: an event (ts_ns 0: no clock) if a token is left, else counted as suppressed. */
static __always_inline void kg_deny(struct kg_stats *st, const struct kg_pkt *pkt, __u16 doors, __u8 reason)
{
	if (kg_take_token(&kg_globals.deny_tokens)) {
		if (kg_emit(st, pkt, KG_EV_DENY, 0, 0, reason, doors, 0, 0) == 0)
			st->c[KG_C_DENY_EVENT]++;
	} else {
		st->c[KG_C_DENY_SUPPRESSED]++;
	}
}

/*
 * An event that a source can cause without knowing more than the first step (a first knock,
 * the reset of one, a cooldown): emitted while knock tokens last, else counted as suppressed,
 * so that a flood of spoofed first knocks cannot fill the ring.
 */
static __always_inline void kg_emit_knock(struct kg_stats *st, const struct kg_knock *k, __u8 type, __u8 door,
					  __u8 step, __u8 reason, __u64 expires)
{
	if (kg_take_token(&kg_globals.knock_tokens))
		kg_emit(st, &k->pkt, type, door, step, reason, 0, k->now, expires);
	else
		st->c[KG_C_KNOCK_SUPPRESSED]++;
}

#endif /* KNOCKGATE_LIB_EVENTS_H */
