// SPDX-License-Identifier: GPL-2.0-only
/*
 * knock.bpf.c - knockgate's XDP program: the policy of docs/DESIGN.md
 * ("Packet path") applied to a packet parsed by parse.h.
 *
 * One compilation unit. This file holds the knock state machine of sequence and rotating doors,
 * the judge (kg_judge: a parsed packet to a verdict) and the two entry points; the parts they
 * use are headers in lib/, one per concern, each using only knock.h, parse.h and those above it:
 *   lib/maps.h      every map, with what it holds and who writes it; kg_globals; kg_zero;
 *                   kg_lookup_or_init
 *   lib/context.h   struct kg_knock (what every part knows about the packet); allow lists
 *   lib/events.h    events into the ring, the token budgets of those a stranger can cause
 *   lib/firsts.h    the first-knock filter (kg_firsts)
 *   lib/grants.h    the grant filter (kg_gfilter) and the writes of kg_grants
 *   lib/siphash.h   SipHash-2-4
 *   lib/single.h    single-packet doors: spa, signed, payload
 *   lib/flows.h     established flows (kg_flows): the judge's alone, included next to it
 *
 * Costs by path (besides the one kg_stats lookup every packet makes; DESIGN.md has the table):
 *   non-IP, other L4, later fragments, malformed:  no map lookup
 *   unrelated port:              kg_ports; no clock unless the source's hint slot is live
 *   protected, TCP w/o SYN:      kg_ports + kg_flows; no flow: no clock, no update
 *   protected, SYN or UDP:       kg_ports + kg_grants; no grant entry: no clock, no update
 *   protected, with grant entry: + clock + kg_flows (+ kg_doors and an insert for a new flow)
 *   knock port:                  kg_ports (+ clock, kg_penalty, kg_progress, kg_probation,
 *                                kg_doors, kg_firsts... for knock candidates)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "knock.h"
#include "parse.h"

char LICENSE[] SEC("license") = "GPL";

#include "lib/maps.h"
#include "lib/context.h"
#include "lib/events.h"
#include "lib/firsts.h"
#include "lib/grants.h"
#include "lib/siphash.h"
#include "lib/single.h"

#define KG_HINT_BITS __builtin_ctz(KG_HINT_SLOTS)
#define KG_COOLDOWN_DOOR 0xff /* kg_event.door of a COOLDOWN: every door */

/* What kg_door() reports back (a mask). */
#define KG_R_RESET (1U << 0) /* an exact record of progress was thrown away */
#define KG_R_MOVED (1U << 1) /* the knock counted: a step, a start, a grant, a retransmission */
#define KG_R_TIDY (1U << 2)  /* it cleared a live bit: an entry may hold nothing any more */

static __always_inline int kg_is_pass(__u32 verdict)
{
	return verdict <= KG_V_PASS_FLOW;
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

/* ---- sequences of sequence and rotating doors ------------------------------------------- */

/*
 * A sequence door has one sequence (s = 0, steps[0..]); a rotating door two, one per window it
 * accepts (s = 0, 1: steps[KG_ROT_STEPS * s..], live until valid_until_ns[s]). A progress record
 * carries the epoch of the sequence it follows: for a rotating door the door's epoch mixed with
 * the window number, so that a record cannot carry over to the next window's sequence.
 */
static __always_inline int kg_rotating(const struct kg_door *door)
{
	return door->type == KG_TYPE_ROTATING;
}

static __always_inline __u32 kg_seq_epoch(const struct kg_door *door, __u32 s)
{
	if (!kg_rotating(door))
		return door->epoch;
	return door->epoch + (__u32)door->win[s & 1] * 2654435761u;
}

static __always_inline int kg_seq_live(const struct kg_door *door, __u32 s, __u64 now)
{
	if (!kg_rotating(door))
		return s == 0;
	return now <= door->valid_until_ns[s & 1];
}

static __always_inline __u32 kg_seq_base(const struct kg_door *door, __u32 s)
{
	return kg_rotating(door) ? (s & 1) * KG_ROT_STEPS : 0;
}

/* The sequence a record of this epoch follows, or -1 if it is stale. */
static __always_inline int kg_seq_of(const struct kg_door *door, __u32 epoch, __u64 now)
{
	if (kg_seq_live(door, 0, now) && epoch == kg_seq_epoch(door, 0))
		return 0;
	if (kg_rotating(door) && kg_seq_live(door, 1, now) && epoch == kg_seq_epoch(door, 1))
		return 1;
	return -1;
}

/* Step i of sequence s. */
static __always_inline const struct kg_step *kg_seq_step(const struct kg_door *door, __u32 s, __u32 i)
{
	return &door->steps[(kg_seq_base(door, s) + i) & (KG_MAX_STEPS - 1)];
}

/*
 * A rotating door's window may produce one grant: the first completion marks it spent
 * (an atomic insert), any later one is refused. Returns 0 if the grant may go ahead.
 */
static __always_inline int kg_spend(struct kg_stats *st, const struct kg_knock *k, __u32 slot,
				    const struct kg_door *door, __u32 s, __u8 nsteps)
{
	struct kg_spent_key sk = {};
	__u64 at = k->now;

	if (!kg_rotating(door))
		return 0;
	sk.door_id = door->door_id;
	sk.window = door->win[s & 1];
	if (bpf_map_update_elem(&kg_spent, &sk, &at, BPF_NOEXIST) == 0)
		return 0;
	st->c[KG_C_REJECT_SPENT]++;
	kg_emit_knock(st, k, KG_EV_REJECT, slot, nsteps, KG_REJECT_SPENT, 0);
	return -1;
}

/*
 * Fleet mode (KG_DOOR_CLAIM): a rotating window, spent here, is handed to the daemon to be claimed
 * fleet-wide; the daemon writes the grant on a win. Budgeted like signed knocks (signed_tokens, the
 * SIGNED_QUEUED/SUPPRESSED counters). Without a token or room in the ring the window is not spent,
 * so the client may knock again.
 */
static __always_inline void kg_hand_up(struct kg_stats *st, const struct kg_knock *k, __u32 slot,
				       const struct kg_door *door, __u8 nsteps, __u32 s)
{
	struct kg_spent_key sk = {};

	if (!kg_take_token(&kg_globals.signed_tokens)) {
		st->c[KG_C_SIGNED_SUPPRESSED]++;
		return;
	}
	if (kg_spend(st, k, slot, door, s, nsteps))
		return;
	if (kg_emit(st, &k->pkt, KG_EV_CLAIM, slot, nsteps, KG_RESET_NONE, 0, k->now, door->win[s & 1])) {
		sk.door_id = door->door_id;
		sk.window = door->win[s & 1];
		bpf_map_delete_elem(&kg_spent, &sk);
		st->c[KG_C_SIGNED_SUPPRESSED]++;
		return;
	}
	st->c[KG_C_SIGNED_QUEUED]++;
}

/* Sequence s complete on a door: grant, counter, event. */
static __always_inline void kg_grant(struct kg_stats *st, const struct kg_knock *k, const struct kg_addr *src,
				     __u32 slot, const struct kg_door *door, __u8 nsteps, __u32 s)
{
	__u64 expires = k->now + door->open_for_ns;

	if (door->flags & KG_DOOR_CLAIM) {
		kg_hand_up(st, k, slot, door, nsteps, s);
		return;
	}
	if (kg_spend(st, k, slot, door, s, nsteps))
		return;
	if (kg_grant_set(st, &k->pkt, src, slot, expires) == 0) {
		st->c[KG_C_GRANT]++;
		kg_emit(st, &k->pkt, KG_EV_GRANT, slot, nsteps, KG_RESET_NONE, 0, k->now, expires);
	}
}

/* ---- the knock state machine (DESIGN.md "Knock state machine") ------------------------- */

/*
 * The second correct step on door d (first knock at start_ns): grant on a two-step door,
 * else step 2 in kg_progress (inserting the source's entry if p is NULL).
 */
static __always_inline void kg_second(struct kg_stats *st, const struct kg_knock *k, const struct kg_addr *src,
				      struct kg_progress *p, __u32 d, const struct kg_door *door, __u64 start_ns,
				      __u32 s)
{
	struct kg_door_progress *dp;

	kg_hint_raise(k, k->now + door->step_timeout_ns);
	if (door->nsteps == 2) {
		kg_grant(st, k, src, d, door, 2, s);
		return;
	}
	if (!p) {
		p = kg_init_elem(st, &kg_progress, src, &kg_zero.progress);
		if (!p)
			return;
	}
	dp = &p->d[d & (KG_MAX_DOORS - 1)];
	dp->start_ns = start_ns;
	dp->last_ns = k->now;
	dp->epoch = kg_seq_epoch(door, s);
	dp->step = 2;
	p->doors |= 1U << (d & (KG_MAX_DOORS - 1));
	st->c[KG_C_STEP]++;
	kg_emit(st, &k->pkt, KG_EV_STEP, d, 2, KG_RESET_NONE, 0, k->now, 0);
}

/* The source's kg_probation entry (inserted if pr is NULL). */
static __always_inline struct kg_probation *kg_probation_of(struct kg_stats *st, const struct kg_addr *src,
							    struct kg_probation *pr)
{
	if (pr)
		return pr;
	return kg_init_elem(st, &kg_probation, src, &kg_zero.probation);
}

/*
 * The knock state machine of DESIGN.md for one door slot d and a knock candidate. It looks up
 * the source's kg_progress and kg_probation entries itself. Returns KG_R_* flags.
 *
 * A global function: the verifier checks it once, for any d, instead of once per door and per
 * combination of what happened on the doors before, which is what an inlined 16-door loop
 * costs it.
 */
__noinline int kg_door(struct kg_stats *st, const struct kg_knock *k, __u32 d)
{
	struct kg_door_progress *dp;
	struct kg_first_knock *f;
	struct kg_progress *p;
	struct kg_probation *pr;
	struct kg_door *door;
	struct kg_addr src;
	__u32 bit, key, res = 0, s, first;
	__u8 nsteps, done, reason;
	int usable, exact = 0, seq;

	if (!st || !k)
		return 0;
	d &= KG_MAX_DOORS - 1;
	bit = 1U << d;
	key = (k->gen & 1) * KG_MAX_DOORS + d;
	door = bpf_map_lookup_elem(&kg_doors, &key);
	if (!door)
		return 0;
	__builtin_memcpy(&src, &k->pkt.src, sizeof(src)); /* map keys from the stack (kernel 6.1) */
	p = bpf_map_lookup_elem(&kg_progress, &src);
	pr = bpf_map_lookup_elem(&kg_probation, &src);
	nsteps = door->nsteps;
	usable = (door->flags & KG_DOOR_ACTIVE) && nsteps >= 1 &&
		 (door->type == KG_TYPE_SEQUENCE ? nsteps <= KG_MAX_STEPS
						 : door->type == KG_TYPE_ROTATING && nsteps <= KG_ROT_STEPS);

	/* (a) Two or more steps done: the record is in kg_progress. */
	if (p && (p->doors & bit)) {
		dp = &p->d[d];
		done = dp->step;
		res |= KG_R_TIDY;
		seq = usable ? kg_seq_of(door, dp->epoch, k->now) : -1;
		if (seq < 0 || done < 2 || done >= nsteps) {
			/* Stale: the door was removed, its rules changed or its window ended.
			 * Counts as no progress. */
			p->doors &= ~bit;
		} else {
			s = seq & 1;
			exact = 1;
			if (k->now - dp->last_ns > door->step_timeout_ns) {
				reason = KG_RESET_STEP_TIMEOUT;
			} else if (k->now - dp->start_ns > door->seq_timeout_ns) {
				reason = KG_RESET_SEQ_TIMEOUT;
			} else if (kg_is_step(kg_seq_step(door, s, done), &k->pkt)) {
				done++;
				dp->step = done;
				dp->last_ns = k->now;
				kg_hint_raise(k, k->now + door->step_timeout_ns);
				if (done == nsteps) {
					p->doors &= ~bit;
					kg_grant(st, k, &src, d, door, nsteps, s);
				} else {
					st->c[KG_C_STEP]++;
					kg_emit(st, &k->pkt, KG_EV_STEP, d, done, KG_RESET_NONE, 0, k->now, 0);
				}
				return KG_R_MOVED | KG_R_TIDY;
			} else if (kg_is_step(kg_seq_step(door, s, done - 1), &k->pkt)) {
				st->c[KG_C_RETRANSMIT]++;
				return KG_R_MOVED;
			} else {
				reason = KG_RESET_WRONG_PORT;
			}
			p->doors &= ~bit;
			st->c[KG_C_RESET_WRONG_PORT - KG_RESET_WRONG_PORT + reason]++;
			kg_emit(st, &k->pkt, KG_EV_RESET, d, done, reason, 0, k->now, 0);
			res |= KG_R_RESET;
		}
	}

	/* (b) One step done: the exact record is in kg_probation. */
	if (!exact && pr && (pr->live & bit)) {
		f = &pr->d[d];
		res |= KG_R_TIDY;
		seq = usable && nsteps >= 2 ? kg_seq_of(door, f->epoch, k->now) : -1;
		if (seq < 0) {
			pr->live &= ~bit;
		} else {
			s = seq & 1;
			exact = 1;
			if (k->now - f->at_ns > door->step_timeout_ns) {
				/* step_timeout <= sequence_timeout: this is the only timeout after one step. */
				reason = KG_RESET_STEP_TIMEOUT;
			} else if (kg_is_step(kg_seq_step(door, s, 1), &k->pkt)) {
				pr->live &= ~bit;
				pr->spent |= bit;
				kg_second(st, k, &src, p, d, door, f->at_ns, s);
				return res | KG_R_MOVED;
			} else if (kg_is_step(kg_seq_step(door, s, 0), &k->pkt)) {
				st->c[KG_C_RETRANSMIT]++;
				return KG_R_MOVED;
			} else {
				reason = KG_RESET_WRONG_PORT;
			}
			pr->live &= ~bit;
			pr->spent |= bit;
			st->c[KG_C_RESET_WRONG_PORT - KG_RESET_WRONG_PORT + reason]++;
			kg_emit_knock(st, k, KG_EV_RESET, d, 1, reason, 0);
			res |= KG_R_RESET;
		}
	}

	if (!usable || !(k->port_doors & bit))
		return res;
	/* The sequence to try first: the newer window's (a rotating door's two sequences start on
	 * ports of different parity, docs/KNOCKS.md, so at most one of them matches a first knock). */
	first = kg_rotating(door) && door->win[1] > door->win[0] ? 1 : 0;

	/*
	 * (c) No exact record of this door (none made, or evicted by a flood): the first-knock
	 * filter stands in for the first knock, unless the record says it was followed up or reset.
	 */
	if (!exact && nsteps >= 2 && !(pr && (pr->spent & bit))) {
		for (s = 0; s < 2; s++) {
			__u32 t = (first ^ s) & 1;

			if (!kg_seq_live(door, t, k->now) || !kg_is_step(kg_seq_step(door, t, 1), &k->pkt))
				continue;
			if (!kg_fk_test(k, d, kg_seq_epoch(door, t)))
				continue;
			/* A false positive must not open allow_from either. */
			if ((door->flags & KG_DOOR_ALLOW_LIST) && !kg_allowed(k, d)) {
				st->c[KG_C_NOT_ALLOWED]++;
				return res;
			}
			st->c[KG_C_STEP_FROM_FILTER]++;
			kg_second(st, k, &src, p, d, door, k->now, t);
			pr = kg_probation_of(st, &src, pr);
			if (pr)
				pr->spent |= bit;
			return res | KG_R_MOVED;
		}
	}

	/* (d) No live progress on this door (or just reset): does this knock start it? */
	if (kg_seq_live(door, first, k->now) && kg_is_step(kg_seq_step(door, first, 0), &k->pkt))
		s = first;
	else if (kg_rotating(door) && kg_seq_live(door, first ^ 1, k->now) &&
		 kg_is_step(kg_seq_step(door, first ^ 1, 0), &k->pkt))
		s = first ^ 1;
	else
		return res;
	s &= 1;
	if ((door->flags & KG_DOOR_ALLOW_LIST) && !kg_allowed(k, d)) {
		st->c[KG_C_NOT_ALLOWED]++;
		return res;
	}
	kg_hint_raise(k, k->now + door->step_timeout_ns);
	if (nsteps == 1) {
		kg_grant(st, k, &src, d, door, nsteps, s);
		return res | KG_R_MOVED;
	}
	kg_fk_insert(k, d, kg_seq_epoch(door, s));
	res |= KG_R_MOVED;
	st->c[KG_C_STEP]++;
	pr = kg_probation_of(st, &src, pr);
	if (pr) {
		f = &pr->d[d];
		f->at_ns = k->now;
		f->epoch = kg_seq_epoch(door, s);
		pr->live |= bit;
		pr->spent &= ~bit;
	}
	kg_emit_knock(st, k, KG_EV_STEP, d, 1, KG_RESET_NONE, 0);
	return res;
}

/*
 * A failed sequence (a reset of an exact record with no door moving on in the same packet):
 * counted in kg_penalty; the max_failures-th within failure_window starts a cooldown, which
 * throws away the source's progress on every door. Looks its entries up afresh.
 */
__noinline int kg_fail(struct kg_stats *st, const struct kg_knock *k)
{
	struct kg_penalty *pen;
	struct kg_probation *pr;
	struct kg_addr src;
	__u32 max = kg_globals.max_failures;

	if (!st || !k || max == 0)
		return 0;
	__builtin_memcpy(&src, &k->pkt.src, sizeof(src));
	pen = kg_lookup_or_init(st, &kg_penalty, &src, &kg_zero.penalty);
	if (!pen)
		return 0;
	if (pen->window_start_ns == 0 || k->now - pen->window_start_ns > kg_globals.failure_window_ns) {
		pen->window_start_ns = k->now;
		pen->failures = 0;
	}
	pen->failures++;
	st->c[KG_C_FAILURE]++;
	if (pen->failures < max)
		return 0;
	pen->cooldown_until_ns = k->now + kg_globals.cooldown_ns;
	pen->failures = 0;
	pen->window_start_ns = 0;
	st->c[KG_C_COOLDOWN]++;
	kg_emit_knock(st, k, KG_EV_COOLDOWN, KG_COOLDOWN_DOOR, max > 255 ? 255 : max, KG_RESET_NONE,
		      pen->cooldown_until_ns);
	bpf_map_delete_elem(&kg_progress, &src);
	pr = bpf_map_lookup_elem(&kg_probation, &src);
	if (pr) {
		pr->spent |= pr->live;
		pr->live = 0;
	}
	return 1;
}

/* Whether the source is in a cooldown (knock packets only). */
static __always_inline int kg_in_cooldown(struct kg_knock *k)
{
	struct kg_penalty *pen;

	if (kg_globals.max_failures == 0)
		return 0;
	pen = bpf_map_lookup_elem(&kg_penalty, &k->pkt.src);
	return pen && pen->cooldown_until_ns > k->now;
}

/*
 * Runs kg_door over every door slot in mask (the port's doors and those the source has a live
 * record on); then deletes the source's entries that hold nothing any more. Returns the
 * KG_R_* flags of all doors.
 */
static __always_inline __u32 kg_knock(struct kg_stats *st, struct kg_knock *k, __u32 mask)
{
	struct kg_progress *p;
	struct kg_probation *pr;
	__u32 d, res = 0;

	for (d = 0; d < KG_MAX_DOORS; d++) {
		if (mask & (1U << d))
			res |= kg_door(st, k, d);
	}
	if (res & KG_R_TIDY) {
		p = bpf_map_lookup_elem(&kg_progress, &k->pkt.src);
		if (p && p->doors == 0)
			bpf_map_delete_elem(&kg_progress, &k->pkt.src);
		pr = bpf_map_lookup_elem(&kg_probation, &k->pkt.src);
		if (pr && pr->live == 0 && pr->spent == 0)
			bpf_map_delete_elem(&kg_probation, &k->pkt.src);
	}
	return res;
}

/* ---- flows (lib/flows.h): used by the judge alone ------------------------------------ */

#include "lib/flows.h"

/* The policy: returns the verdict (a KG_V_* of enum kg_stat). framing: a constant enum kg_framing. */
static __always_inline __u32 kg_judge(struct xdp_md *xdp, struct kg_stats *st, struct kg_knock *k, const int framing)
{
	struct kg_pkt *pkt = &k->pkt;
	struct kg_port_info *pi;
	struct kg_progress *p;
	struct kg_probation *pr;
	__u16 protect, knock, single;
	__u32 key, verdict, res, mask, d, granted;
	int r;

	r = kg_parse(xdp, pkt, framing);
#if defined(KG_BENCH_STEP) && KG_BENCH_STEP == 2
	/* bench/steps.ts: the cost of parsing (and of the stats counter), and nothing else */
	return r == KG_PARSE_OK ? KG_V_PASS_UNRELATED : KG_V_DROP_MALFORMED;
#endif
	if (r == KG_PARSE_NON_IP)
		return KG_V_PASS_NON_IP;
	if (r != KG_PARSE_OK)
		return KG_V_DROP_MALFORMED;
	if (pkt->frag == KG_FRAG_LATER)
		return KG_V_PASS_FRAGMENT;
	k->gen = *(volatile __u32 *)&kg_globals.active_gen & 1;
	if (pkt->proto == KG_PROTO_ICMP) {
		/* An echo request: a knock if a payload door of the active generation takes them. */
		single = kg_globals.icmp_doors[k->gen & 1];
		granted = 0;
		for (d = 0; d < KG_MAX_DOORS; d++) {
			if ((single >> d) & 1)
				granted |= kg_single(xdp, st, k, d);
		}
		return granted ? KG_V_DROP_KNOCK : KG_V_PASS_OTHER_L4;
	}
	if (pkt->proto != KG_PROTO_TCP && pkt->proto != KG_PROTO_UDP)
		return KG_V_PASS_OTHER_L4;

	key = (k->gen * KG_PROTOS + pkt->proto) * KG_PORTS + pkt->dport;
	pi = bpf_map_lookup_elem(&kg_ports, &key); /* lookup 1 */
	if (!pi) /* cannot happen: the key is always in range */
		return KG_V_PASS_UNRELATED;
	protect = pi->protect_doors;
	knock = pi->knock_doors;
	single = pi->single_doors;
#if defined(KG_BENCH_STEP) && KG_BENCH_STEP == 3
	/* bench/steps.ts: parsing and the kg_ports lookup */
	return protect | knock | single ? KG_V_DROP_KNOCK : KG_V_PASS_UNRELATED;
#endif

	if (protect) {
		struct kg_grant *g;

		if (pkt->proto == KG_PROTO_TCP && (pkt->tcp_flags & (KG_TCP_SYN | KG_TCP_ACK)) != KG_TCP_SYN)
			return kg_established(st, k, protect);
		/* A SYN (a new connection) or a UDP datagram: the source needs a grant entry. The
		 * grant filter answers for most sources without one (a spoofed flood) from one word. */
		g = kg_gf_may_hold(pkt) ? bpf_map_lookup_elem(&kg_grants, &pkt->src) : NULL; /* lookup 2 */
		if (!g) {
			kg_deny(st, pkt, protect, KG_DENY_NO_GRANT);
			return KG_V_DROP_NO_GRANT;
		}
		k->now = bpf_ktime_get_ns();
		return kg_admit(st, k, g, protect, pi->flow_only_doors);
	}

	/* A first fragment is never a knock: dropped at a knock port (which must look
	 * filtered), passed to any other port it does not protect. */
	if (pkt->frag == KG_FRAG_FIRST)
		return knock | single ? KG_V_DROP_KNOCK : KG_V_PASS_UNRELATED;

	verdict = knock | single ? KG_V_DROP_KNOCK : KG_V_PASS_UNRELATED;
	if (!pkt->knock)
		return verdict;
	if (single && pkt->proto == KG_PROTO_UDP) {
		/* Before the cooldown check: a spoofer cannot lock a source out of these doors. */
		for (d = 0; d < KG_MAX_DOORS; d++) {
			if ((single >> d) & 1)
				kg_single(xdp, st, k, d);
		}
	}

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
		if (kg_in_cooldown(k)) {
			st->c[KG_C_COOLDOWN_KNOCK]++;
			return verdict;
		}
		kg_fk_locate(k);
	}

	p = bpf_map_lookup_elem(&kg_progress, &pkt->src);
	pr = bpf_map_lookup_elem(&kg_probation, &pkt->src);
	mask = knock | (p ? p->doors : 0) | (pr ? pr->live : 0);
	if (!mask)
		return verdict;
	res = kg_knock(st, k, mask);
	if ((res & KG_R_RESET) && !(res & KG_R_MOVED))
		kg_fail(st, k);
	return verdict;
}

/* libxdp's run config (xdp-tools' XDP_RUN_CONFIG of <xdp/xdp_helpers.h>, spelled out so the
 * build needs no libxdp headers): a BTF-described struct named "_" + the program's name in the
 * ".xdp_run_config" section, which libxdp reads from the object (or from the loaded program's
 * BTF). In a dispatcher, programs run by ascending priority; knockgate runs early by default (10,
 * like xdp-filter; the config's xdp_priority overrides it) and the chain goes on only when it
 * passes a packet: later programs see what it passes and never what it drops. libbpf skips the
 * section when it loads the program. */
struct {
	__uint(priority, 10);
	__uint(XDP_PASS, 1);
} _knockgate_xdp SEC(".xdp_run_config");

/* The same for the entry point of devices without a link-layer header. */
struct {
	__uint(priority, 10);
	__uint(XDP_PASS, 1);
} _knockgate_xdp_l3 SEC(".xdp_run_config");

/* Both entry points: parse by the framing (a constant), judge, count the verdict. */
static __always_inline int kg_xdp(struct xdp_md *xdp, const int framing)
{
	struct kg_knock k; /* k.pkt is zeroed by kg_parse, the rest here: not the whole struct twice */
	struct kg_stats *st;
	__u32 zero = 0, verdict;

	k.now = 0;
	k.fk_hash = 0;
	k.gen = 0;
	k.hint_idx = 0;
	k.port_doors = 0;
	k.fk_block = 0;

	st = bpf_map_lookup_elem(&kg_stats, &zero);
	if (!st) /* cannot happen: a one-entry per-CPU array */
		return XDP_ABORTED;
#if defined(KG_BENCH_STEP) && KG_BENCH_STEP == 1
	/* bench/steps.ts: the kg_stats lookup and one counter, no parsing */
	st->c[KG_V_PASS_UNRELATED]++;
	return XDP_PASS;
#endif

	verdict = kg_judge(xdp, st, &k, framing);

	/* The one exit: exactly one verdict counter per packet. Clang can see that the global
	 * functions only return verdicts and drops the check; the verifier cannot, hence the
	 * barriers and the mask (a no-op: KG_VERDICTS <= 16). */
	barrier_var(verdict);
	if (verdict >= KG_VERDICTS)
		verdict = KG_V_DROP_MALFORMED;
	barrier_var(verdict);
	st->c[verdict & 15]++;
	return kg_is_pass(verdict) ? XDP_PASS : XDP_DROP;
}

/* KG_PROG_NAME: devices with an Ethernet header (the loader picks by device type, src/net/link-type.ts). */
SEC("xdp")
int knockgate_xdp(struct xdp_md *xdp)
{
	return kg_xdp(xdp, KG_FRAMING_ETH);
}

/* KG_PROG_NAME_L3: devices without a link-layer header (TUN, WireGuard...): frames start at the IP header. */
SEC("xdp")
int knockgate_xdp_l3(struct xdp_md *xdp)
{
	return kg_xdp(xdp, KG_FRAMING_L3);
}

_Static_assert(KG_VERDICTS <= 16 && KG_STAT_MAX > 15, "the verdict mask in knockgate_xdp");
