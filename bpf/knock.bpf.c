// SPDX-License-Identifier: GPL-2.0-only
/*
 * knock.bpf.c - knockgate's XDP program: the policy of docs/DESIGN.md
 * ("Packet path") applied to a packet parsed by parse.h.
 *
 * Costs by path (besides the one kg_stats lookup every packet makes):
 *   non-IP, other L4, later fragments, malformed:  no map lookup
 *   unrelated port:            kg_ports; no clock unless the source's hint slot is live
 *   protected port, no grant:  kg_ports + kg_grants; no clock, no update
 *   protected port, granted:   kg_ports + kg_grants + clock
 *   knock port:                kg_ports (+ clock, kg_progress, kg_doors... for knock candidates)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "knock.h"
#include "parse.h"

char LICENSE[] SEC("license") = "GPL";

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

/* Source -> knock progress on every door. Written by XDP only (user space reads it for status). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kg_addr);
	__type(value, struct kg_progress);
	__uint(max_entries, KG_DEFAULT_SOURCES);
} kg_progress SEC(".maps");

/* Source -> grant expiry per door. Written by XDP (completed knocks) and user space (grant, revoke, sweep). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kg_addr);
	__type(value, struct kg_grant);
	__uint(max_entries, KG_DEFAULT_SOURCES);
} kg_grants SEC(".maps");

/* struct kg_event records. Written by XDP, drained by the daemon. */
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
 * All-zero values (.rodata) that new kg_progress and kg_grants entries are
 * inserted with (BPF_NOEXIST) before being filled in place through the pointer
 * a lookup returns: templates on the stack would take 392 and 128 of its 512
 * bytes.
 */
static const union {
	struct kg_progress progress;
	struct kg_grant grant;
} kg_zero;

#define KG_HINT_BITS __builtin_ctz(KG_HINT_SLOTS)

/*
 * What the knock state machine needs to know about a packet. Scalars only: it
 * is passed to the global function kg_door().
 */
struct kg_knock {
	struct kg_pkt pkt;
	__u64 now;        /* clock, read only on the paths that need it */
	__u32 gen;        /* active generation, read once per packet */
	__u32 hint_idx;   /* the source's slot in kg_globals.hint */
	__u32 port_doors; /* knock_doors of the destination port; 0 on an unrelated port */
	__u32 pad;
};

static __always_inline int kg_is_pass(__u32 verdict)
{
	return verdict <= KG_V_PASS_GRANTED;
}

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

/* A denial: an event (ts_ns 0: no clock) if a token is left, else counted as suppressed. */
static __always_inline void kg_deny(struct kg_stats *st, const struct kg_pkt *pkt, __u16 doors, __u8 reason)
{
	if (*(volatile __s64 *)&kg_globals.deny_tokens > 0) {
		__sync_fetch_and_add(&kg_globals.deny_tokens, -1);
		if (kg_emit(st, pkt, KG_EV_DENY, 0, 0, reason, doors, 0, 0) == 0)
			st->c[KG_C_DENY_EVENT]++;
	} else {
		st->c[KG_C_DENY_SUPPRESSED]++;
	}
}

/* DESIGN.md "Hash for hints". */
static __always_inline __u32 kg_hint_index(const struct kg_pkt *pkt)
{
	__u32 x = pkt->src32[0] ^ pkt->src32[1] ^ pkt->src32[2] ^ pkt->src32[3];

	return ((x * 2654435761u) >> (32 - KG_HINT_BITS)) & (KG_HINT_SLOTS - 1);
}

/* hint = max(hint, until). Not atomic: a lost race costs at most a missed reset on a scan. */
static __always_inline void kg_hint_raise(const struct kg_knock *k, __u64 until)
{
	__u64 *h = &kg_globals.hint[k->hint_idx & (KG_HINT_SLOTS - 1)];

	if (*h < until)
		*h = until;
}

static __always_inline int kg_is_step(const struct kg_step *s, const struct kg_pkt *pkt)
{
	return s->port == pkt->dport && s->proto == pkt->proto;
}

static __always_inline int kg_allowed(const struct kg_knock *k, __u32 slot)
{
	struct kg_allow_key key = {};

	key.prefixlen = 16 + 128;
	key.gen = k->gen;
	key.slot = slot;
	__builtin_memcpy(key.addr, k->pkt.src32, sizeof(key.addr));
	return bpf_map_lookup_elem(&kg_allow, &key) != NULL;
}

/* kg_grants[src].expires_ns[slot] = expires: in place if the entry exists, else inserted. */
static __always_inline int kg_grant_set(struct kg_stats *st, const struct kg_addr *src, __u32 slot,
					__u64 expires)
{
	struct kg_grant *g;

	g = bpf_map_lookup_elem(&kg_grants, src);
	if (!g) {
		/* -EEXIST: another CPU or user space inserted it meanwhile; use theirs. */
		bpf_map_update_elem(&kg_grants, src, &kg_zero.grant, BPF_NOEXIST);
		g = bpf_map_lookup_elem(&kg_grants, src);
		if (!g) {
			st->c[KG_C_MAP_FULL]++;
			return -1;
		}
	}
	g->expires_ns[slot & (KG_MAX_DOORS - 1)] = expires;
	return 0;
}

/* Sequence complete on a door: grant, counter, event. */
static __always_inline void kg_grant(struct kg_stats *st, const struct kg_knock *k, const struct kg_addr *src,
				     __u32 slot, const struct kg_door *door, __u8 nsteps)
{
	__u64 expires = k->now + door->open_for_ns;

	if (kg_grant_set(st, src, slot, expires) == 0) {
		st->c[KG_C_GRANT]++;
		kg_emit(st, &k->pkt, KG_EV_GRANT, slot, nsteps, KG_RESET_NONE, 0, k->now, expires);
	}
}

/*
 * The knock state machine of DESIGN.md for one door slot d and a knock
 * candidate. p is the source's progress, or NULL. Returns 1 if it inserted a
 * kg_progress entry for the source (the caller looks it up again), else 0.
 *
 * A global function: the verifier checks it once, for any d, instead of once
 * per door and per combination of what happened on the doors before, which
 * is what an inlined 16-door loop costs it.
 */
__noinline int kg_door(struct kg_stats *st, const struct kg_knock *k, struct kg_progress *p, __u32 d)
{
	struct kg_door_progress *dp;
	struct kg_door *door;
	struct kg_addr src;
	__u32 bit, key;
	__u8 nsteps, done, reason;
	int usable;

	if (!st || !k)
		return 0;
	d &= KG_MAX_DOORS - 1;
	bit = 1U << d;
	key = (k->gen & 1) * KG_MAX_DOORS + d;
	door = bpf_map_lookup_elem(&kg_doors, &key);
	if (!door)
		return 0;
	__builtin_memcpy(&src, &k->pkt.src, sizeof(src)); /* map keys from the stack (kernel 6.1) */
	nsteps = door->nsteps;
	usable = (door->flags & KG_DOOR_ACTIVE) && nsteps >= 1 && nsteps <= KG_MAX_STEPS;

	if (p && (p->doors & bit)) {
		dp = &p->d[d];
		done = dp->step;
		if (!usable || dp->epoch != door->epoch || done == 0 || done >= nsteps) {
			/* Stale: the door was removed or its rules changed. Counts as no progress. */
			p->doors &= ~bit;
		} else {
			if (k->now - dp->last_ns > door->step_timeout_ns) {
				reason = KG_RESET_STEP_TIMEOUT;
			} else if (k->now - dp->start_ns > door->seq_timeout_ns) {
				reason = KG_RESET_SEQ_TIMEOUT;
			} else if (kg_is_step(&door->steps[done & (KG_MAX_STEPS - 1)], &k->pkt)) {
				done++;
				dp->step = done;
				dp->last_ns = k->now;
				kg_hint_raise(k, k->now + door->step_timeout_ns);
				if (done == nsteps) {
					p->doors &= ~bit;
					kg_grant(st, k, &src, d, door, nsteps);
				} else {
					st->c[KG_C_STEP]++;
					kg_emit(st, &k->pkt, KG_EV_STEP, d, done, KG_RESET_NONE, 0, k->now, 0);
				}
				return 0;
			} else if (kg_is_step(&door->steps[(done - 1) & (KG_MAX_STEPS - 1)], &k->pkt)) {
				st->c[KG_C_RETRANSMIT]++;
				return 0;
			} else {
				reason = KG_RESET_WRONG_PORT;
			}
			p->doors &= ~bit;
			st->c[KG_C_RESET_WRONG_PORT - KG_RESET_WRONG_PORT + reason]++;
			kg_emit(st, &k->pkt, KG_EV_RESET, d, done, reason, 0, k->now, 0);
		}
	}

	/* No live progress on this door (or just reset): does this knock start it? */
	if (!usable || !(k->port_doors & bit) || !kg_is_step(&door->steps[0], &k->pkt))
		return 0;
	if ((door->flags & KG_DOOR_ALLOW_LIST) && !kg_allowed(k, d)) {
		st->c[KG_C_NOT_ALLOWED]++;
		return 0;
	}
	kg_hint_raise(k, k->now + door->step_timeout_ns);
	if (nsteps == 1) {
		kg_grant(st, k, &src, d, door, nsteps);
		return 0;
	}

	if (p) {
		dp = &p->d[d];
	} else {
		/* First door this source starts: insert an empty entry, fill it in place. */
		struct kg_progress *np;

		bpf_map_update_elem(&kg_progress, &src, &kg_zero.progress, BPF_NOEXIST);
		np = bpf_map_lookup_elem(&kg_progress, &src); /* -EEXIST above: another CPU's entry */
		if (!np) {
			st->c[KG_C_MAP_FULL]++;
			return 0;
		}
		p = np;
		dp = &np->d[d];
	}
	dp->start_ns = k->now;
	dp->last_ns = k->now;
	dp->epoch = door->epoch;
	dp->step = 1;
	p->doors |= bit;
	st->c[KG_C_STEP]++;
	kg_emit(st, &k->pkt, KG_EV_STEP, d, 1, KG_RESET_NONE, 0, k->now, 0);
	return 1;
}

/*
 * Runs kg_door over every door slot that the port is a step of or the source
 * has progress on (p may be NULL); deletes the progress entry if no door is
 * left in it.
 */
static __always_inline void kg_knock(struct kg_stats *st, struct kg_knock *k, struct kg_progress *p)
{
	__u32 d;

	for (d = 0; d < KG_MAX_DOORS; d++) {
		__u32 live = p ? p->doors : 0;

		if (!((k->port_doors | live) & (1U << d)))
			continue;
		if (kg_door(st, k, p, d) && !p)
			p = bpf_map_lookup_elem(&kg_progress, &k->pkt.src);
	}
	if (p && p->doors == 0)
		bpf_map_delete_elem(&kg_progress, &k->pkt.src);
}

/* The policy: returns the verdict (a KG_V_* of enum kg_stat). */
static __always_inline __u32 kg_judge(struct xdp_md *xdp, struct kg_stats *st, struct kg_knock *k)
{
	struct kg_pkt *pkt = &k->pkt;
	struct kg_port_info *pi;
	struct kg_progress *p;
	__u16 protect, knock;
	__u32 key, verdict;
	int r;

	r = kg_parse(xdp, pkt);
	if (r == KG_PARSE_NON_IP)
		return KG_V_PASS_NON_IP;
	if (r != KG_PARSE_OK)
		return KG_V_DROP_MALFORMED;
	if (pkt->frag == KG_FRAG_LATER)
		return KG_V_PASS_FRAGMENT;
	if (pkt->proto != KG_PROTO_TCP && pkt->proto != KG_PROTO_UDP)
		return KG_V_PASS_OTHER_L4;

	k->gen = *(volatile __u32 *)&kg_globals.active_gen & 1;
	key = (k->gen * KG_PROTOS + pkt->proto) * KG_PORTS + pkt->dport;
	pi = bpf_map_lookup_elem(&kg_ports, &key); /* lookup 1 */
	if (!pi) /* cannot happen: the key is always in range */
		return KG_V_PASS_UNRELATED;
	protect = pi->protect_doors;
	knock = pi->knock_doors;

	if (protect) {
		struct kg_grant *g = bpf_map_lookup_elem(&kg_grants, &pkt->src); /* lookup 2 */
		__u32 d;

		if (!g) {
			kg_deny(st, pkt, protect, KG_DENY_NO_GRANT);
			return KG_V_DROP_NO_GRANT;
		}
		k->now = bpf_ktime_get_ns();
		for (d = 0; d < KG_MAX_DOORS; d++) {
			if ((protect & (1U << d)) && g->expires_ns[d] > k->now)
				return KG_V_PASS_GRANTED;
		}
		kg_deny(st, pkt, protect, KG_DENY_EXPIRED);
		return KG_V_DROP_EXPIRED;
	}

	/* A first fragment is never a knock: dropped at a knock port (which must look
	 * filtered), passed to any other port it does not protect. */
	if (pkt->frag == KG_FRAG_FIRST)
		return knock ? KG_V_DROP_KNOCK : KG_V_PASS_UNRELATED;

	verdict = knock ? KG_V_DROP_KNOCK : KG_V_PASS_UNRELATED;
	if (!pkt->knock)
		return verdict;

	k->hint_idx = kg_hint_index(pkt);
	k->port_doors = knock;
	if (!knock) {
		/* Unrelated port: only a source that may hold live progress costs more. */
		__u64 hint = kg_globals.hint[k->hint_idx & (KG_HINT_SLOTS - 1)];

		if (hint == 0)
			return verdict;
		k->now = bpf_ktime_get_ns();
		if (k->now >= hint)
			return verdict;
	} else {
		k->now = bpf_ktime_get_ns();
	}

	p = bpf_map_lookup_elem(&kg_progress, &pkt->src);
	if (p || knock)
		kg_knock(st, k, p);
	return verdict;
}

SEC("xdp")
int knockgate_xdp(struct xdp_md *xdp)
{
	struct kg_knock k = {};
	struct kg_stats *st;
	__u32 zero = 0, verdict;

	st = bpf_map_lookup_elem(&kg_stats, &zero);
	if (!st) /* cannot happen: a one-entry per-CPU array */
		return XDP_ABORTED;

	verdict = kg_judge(xdp, st, &k);

	/* The one exit: exactly one verdict counter per packet. */
	if (verdict >= KG_VERDICTS)
		verdict = KG_V_DROP_MALFORMED;
	st->c[verdict]++;
	return kg_is_pass(verdict) ? XDP_PASS : XDP_DROP;
}
