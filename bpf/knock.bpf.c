// SPDX-License-Identifier: GPL-2.0-only
/*
 * knock.bpf.c - knockgate's XDP program: the policy of docs/DESIGN.md
 * ("Packet path") applied to a packet parsed by parse.h.
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

#define KG_HINT_BITS __builtin_ctz(KG_HINT_SLOTS)
#define KG_COOLDOWN_DOOR 0xff /* kg_event.door of a COOLDOWN: every door */

/* What kg_door() reports back (a mask). */
#define KG_R_RESET (1U << 0) /* an exact record of progress was thrown away */
#define KG_R_MOVED (1U << 1) /* the knock counted: a step, a start, a grant, a retransmission */
#define KG_R_TIDY (1U << 2)  /* it cleared a live bit: an entry may hold nothing any more */

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

static __always_inline int kg_is_pass(__u32 verdict)
{
	return verdict <= KG_V_PASS_FLOW;
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

/* ---- the first-knock filter (DESIGN.md "Eviction resistance") ------------------------ */

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
	kg_gf_mark(pkt);
	return 0;
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

/* ---- single-packet doors: spa, signed, payload (docs/KNOCKS.md) ------------------------- */

#define KG_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define KG_SIPROUND                                                                              \
	do {                                                                                     \
		v0 += v1; v1 = KG_ROTL(v1, 13); v1 ^= v0; v0 = KG_ROTL(v0, 32);                  \
		v2 += v3; v3 = KG_ROTL(v3, 16); v3 ^= v2;                                        \
		v0 += v3; v3 = KG_ROTL(v3, 21); v3 ^= v0;                                        \
		v2 += v1; v1 = KG_ROTL(v1, 17); v1 ^= v2; v2 = KG_ROTL(v2, 32);                  \
	} while (0)

/*
 * SipHash-2-4 (Aumasson and Bernstein, reference implementation's byte order) of a `len`-byte
 * message (a constant multiple of 8) held as little-endian 64-bit words, under the 128-bit key
 * k[0] || k[1] (little-endian words). The final block holds only the length.
 */
static __always_inline __u64 kg_siphash(const __u64 *key, const __u64 *m, const int len)
{
	__u64 v0 = key[0] ^ 0x736f6d6570736575ULL;
	__u64 v1 = key[1] ^ 0x646f72616e646f6dULL;
	__u64 v2 = key[0] ^ 0x6c7967656e657261ULL;
	__u64 v3 = key[1] ^ 0x7465646279746573ULL;
	__u64 b = (__u64)len << 56;
	int i;

#pragma unroll
	for (i = 0; i < len / 8; i++) {
		v3 ^= m[i];
		KG_SIPROUND;
		KG_SIPROUND;
		v0 ^= m[i];
	}
	v3 ^= b;
	KG_SIPROUND;
	KG_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	KG_SIPROUND;
	KG_SIPROUND;
	KG_SIPROUND;
	KG_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static __always_inline __u32 kg_be32_at(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

/*
 * A refused single-packet knock at `now` (0: not read yet; read only for an event): counted,
 * and reported while knock tokens last (a stranger can cause it). Returns 0 (no grant).
 */
static __always_inline int kg_reject(struct kg_stats *st, const struct kg_knock *k, __u32 slot, __u8 reason,
				     __u64 now)
{
	if (reason == KG_REJECT_NOT_ALLOWED)
		st->c[KG_C_NOT_ALLOWED]++;
	else if (reason >= KG_REJECT_MALFORMED && reason <= KG_REJECT_PAYLOAD)
		st->c[KG_C_REJECT_MALFORMED - KG_REJECT_MALFORMED + reason]++;
	if (kg_take_token(&kg_globals.knock_tokens))
		kg_emit(st, &k->pkt, KG_EV_REJECT, slot, 0, reason, 0, now ? now : bpf_ktime_get_ns(), 0);
	else
		st->c[KG_C_KNOCK_SUPPRESSED]++;
	return 0;
}

/* Grant from a single-packet knock. Returns 1 (the packet was the door's knock). */
static __always_inline int kg_single_grant(struct kg_stats *st, const struct kg_knock *k, __u32 slot,
					   const struct kg_door *door, __u64 now)
{
	struct kg_addr src;
	__u64 expires = now + door->open_for_ns;

	__builtin_memcpy(&src, &k->pkt.src, sizeof(src));
	if (kg_grant_set(st, &k->pkt, &src, slot, expires) == 0) {
		st->c[KG_C_GRANT]++;
		kg_emit(st, &k->pkt, KG_EV_GRANT, slot, 1, KG_RESET_NONE, 0, now, expires);
	}
	return 1;
}

/*
 * Fleet mode: an SPA grant whose event carries the nonce, for the daemon to copy into the other
 * hosts' kg_nonces (the MAC binds the source address: a replay elsewhere would re-open a grant
 * that was revoked or ended). Returns 1.
 */
static __always_inline int kg_spa_fleet_grant(struct kg_stats *st, const struct kg_knock *k, __u32 slot,
					      const struct kg_door *door, __u64 now, const struct kg_nonce *nonce)
{
	struct kg_nonce_event *e;
	struct kg_addr src;
	__u64 expires = now + door->open_for_ns;

	__builtin_memcpy(&src, &k->pkt.src, sizeof(src));
	if (kg_grant_set(st, &k->pkt, &src, slot, expires))
		return 1;
	st->c[KG_C_GRANT]++;
	e = bpf_ringbuf_reserve(&kg_events, sizeof(*e), 0);
	if (!e) {
		st->c[KG_C_EVENT_LOST]++;
		return 1;
	}
	__builtin_memset(&e->ev, 0, sizeof(e->ev));
	e->ev.ts_ns = now;
	e->ev.expires_ns = expires;
	__builtin_memcpy(e->ev.addr, k->pkt.src32, sizeof(e->ev.addr));
	e->ev.port = k->pkt.dport;
	e->ev.proto = k->pkt.proto;
	e->ev.type = KG_EV_GRANT;
	e->ev.door = slot;
	e->ev.step = 1;
	e->ev.ifindex = k->pkt.ifindex;
	__builtin_memcpy(&e->nonce, nonce, sizeof(e->nonce));
	bpf_ringbuf_submit(e, 0);
	return 1;
}

/*
 * The tag of timestamp window w (docs/KNOCKS.md): the low 32 bits of SipHash-2-4 under the
 * door's key of "KGST" || door id || w (16 bytes, big-endian fields), from the cache of the
 * (gen, door) slot, computed and stored there when the cached window is another. The entry is
 * one 64-bit word, ((w + 1) << 32) | tag (an entry of zeros holds no window), so a reader never
 * sees half of another CPU's store.
 */
static __always_inline __u64 *kg_spa_tag_entry(const struct kg_knock *k, __u32 slot, __u64 w)
{
	__u32 idx = ((k->gen & 1) * KG_MAX_DOORS + (slot & (KG_MAX_DOORS - 1))) * KG_SPA_TAG_SLOTS +
		    (w & (KG_SPA_TAG_SLOTS - 1));

	return bpf_map_lookup_elem(&kg_spatags, &idx);
}

/* The cached tag of window w, or -1 if the entry holds another window. */
static __always_inline __s64 kg_spa_tag_cached(const __u64 *e, __u64 w)
{
	__u64 v;

	if (!e)
		return -1;
	v = *(volatile const __u64 *)e;
	return (v >> 32) == ((w + 1) & 0xffffffff) ? (__s64)(v & 0xffffffff) : -1;
}

/* Computes the tag of window w and caches it (called only for a window within max_skew). */
static __always_inline __u32 kg_spa_tag_compute(__u64 *e, const struct kg_door *door, const __u64 *key, __u64 w)
{
	__u64 m[2], tag;

	m[0] = bpf_htonl(0x4b475354) | ((__u64)bpf_htonl(door->door_id) << 32); /* "KGST" || door id */
	m[1] = bpf_cpu_to_be64(w);
	tag = kg_siphash(key, m, 16) & 0xffffffff;
	if (e)
		*(volatile __u64 *)e = ((w + 1) << 32) | tag;
	return (__u32)tag;
}

/* Whether timestamp ts (UNIX s, <= 2^34) is within the door's max_skew of the gate's wall clock. */
static __always_inline int kg_spa_fresh(const struct kg_door *door, __u64 ts)
{
	__u64 wall = bpf_ktime_get_boot_ns() + (__u64)kg_globals.wall_offset_ns;
	__u64 tsn = ts * 1000000000ULL;
	__u64 dist = tsn > wall ? tsn - wall : wall - tsn;

	return dist <= door->max_skew_ns;
}

/*
 * An SPA datagram: magic and door id, timestamp within max_skew of the wall clock, the tag of
 * its window (a compare against a cached value: junk stops here), MAC (SipHash-2-4 over source
 * address || bytes 0..31), nonce never seen. Returns 1 on a grant.
 */
static __always_inline int kg_spa(struct xdp_md *xdp, struct kg_stats *st, const struct kg_knock *k, __u32 slot,
				  const struct kg_door *door, __u64 now)
{
	/* source address || the whole datagram: the MAC's 48-byte message, then the MAC */
	__u64 msg[KG_SPA_MSG_LEN / 8 + 1];
	__u64 key[2], mac, ts;
	__u8 *b = (__u8 *)&msg[2]; /* the datagram's bytes 0..39 follow the address */
	struct kg_nonce nonce;
	int fresh = 0;

	if (k->pkt.payload_len != KG_SPA_LEN)
		return kg_reject(st, k, slot, KG_REJECT_MALFORMED, now);
	__builtin_memcpy(msg, k->pkt.src32, 16);
	if (bpf_xdp_load_bytes(xdp, k->pkt.payload_off, b, KG_SPA_LEN))
		return kg_reject(st, k, slot, KG_REJECT_MALFORMED, now);
	if (kg_be32_at(b) != KG_SPA_MAGIC || kg_be32_at(b + 4) != door->door_id)
		return kg_reject(st, k, slot, KG_REJECT_MALFORMED, now);
	ts = ((__u64)kg_be32_at(b + 8) << 32) | kg_be32_at(b + 12);
	if (ts > (1ULL << 34)) /* year 2514: garbage (and ts * 1e9 must not overflow) */
		return kg_reject(st, k, slot, KG_REJECT_STALE, now);
	__builtin_memcpy(key, door->key, sizeof(key));
#ifndef KG_NO_SPA_TAG
	/*
	 * The nonce field's first 4 bytes are the tag of the timestamp's window (little-endian, as
	 * SipHash writes it). A window whose tag is cached costs a compare and no clock: junk with
	 * a current timestamp stops here. Any other window is checked for freshness first, so that
	 * only windows within max_skew are ever computed (at most once each).
	 */
	__u64 w = ts / KG_SPA_TAG_WINDOW_S;
	__u64 *e = kg_spa_tag_entry(k, slot, w);
	__s64 tag = kg_spa_tag_cached(e, w);

	if (tag < 0) {
		if (!kg_spa_fresh(door, ts))
			return kg_reject(st, k, slot, KG_REJECT_STALE, now);
		fresh = 1;
		tag = kg_spa_tag_compute(e, door, key, w);
	}
	if (*(__u32 *)(b + 16) != (__u32)tag)
		return kg_reject(st, k, slot, KG_REJECT_BAD_MAC, now);
#endif
	if (!fresh && !kg_spa_fresh(door, ts))
		return kg_reject(st, k, slot, KG_REJECT_STALE, now);
	mac = kg_siphash(key, msg, KG_SPA_MSG_LEN);
	if (mac != msg[KG_SPA_MSG_LEN / 8]) /* both little-endian: the reference's byte order */
		return kg_reject(st, k, slot, KG_REJECT_BAD_MAC, now);
	now = bpf_ktime_get_ns();
	__builtin_memcpy(&nonce, b + 16, sizeof(nonce));
	/* A lookup first: an LRU update takes a free node before it finds the key exists. */
	if (bpf_map_lookup_elem(&kg_nonces, &nonce) ||
	    bpf_map_update_elem(&kg_nonces, &nonce, &now, BPF_NOEXIST))
		return kg_reject(st, k, slot, KG_REJECT_REPLAY, now);
	if (door->flags & KG_DOOR_CLAIM)
		return kg_spa_fleet_grant(st, k, slot, door, now, &nonce);
	return kg_single_grant(st, k, slot, door, now);
}

/*
 * A signed datagram: checked for length, magic and door id here, then handed to the daemon
 * whole (a struct kg_signed_event), which verifies the Ed25519 signature, time and nonce and
 * writes the grant. Budgeted by signed_tokens. Returns 0: the grant, if any, comes later.
 */
static __always_inline int kg_signed(struct xdp_md *xdp, struct kg_stats *st, const struct kg_knock *k,
				     __u32 slot, const struct kg_door *door, __u64 now)
{
	struct kg_signed_event *e;
	__u8 head[8];

	if (k->pkt.payload_len != KG_SIGNED_LEN || bpf_xdp_load_bytes(xdp, k->pkt.payload_off, head, 8) ||
	    kg_be32_at(head) != KG_SIGNED_MAGIC || kg_be32_at(head + 4) != door->door_id)
		return kg_reject(st, k, slot, KG_REJECT_MALFORMED, now);
	if (!kg_take_token(&kg_globals.signed_tokens)) {
		st->c[KG_C_SIGNED_SUPPRESSED]++;
		return 0;
	}
	e = bpf_ringbuf_reserve(&kg_events, sizeof(*e), 0);
	if (!e) {
		st->c[KG_C_EVENT_LOST]++;
		st->c[KG_C_SIGNED_SUPPRESSED]++;
		return 0;
	}
	__builtin_memset(&e->ev, 0, sizeof(e->ev));
	e->ev.ts_ns = now ? now : bpf_ktime_get_ns();
	__builtin_memcpy(e->ev.addr, k->pkt.src32, sizeof(e->ev.addr));
	e->ev.port = k->pkt.dport;
	e->ev.proto = k->pkt.proto;
	e->ev.type = KG_EV_SIGNED;
	e->ev.door = slot;
	e->ev.ifindex = k->pkt.ifindex;
	if (bpf_xdp_load_bytes(xdp, k->pkt.payload_off, e->payload, KG_SIGNED_LEN)) {
		bpf_ringbuf_discard(e, 0);
		return kg_reject(st, k, slot, KG_REJECT_MALFORMED, now);
	}
	bpf_ringbuf_submit(e, 0);
	st->c[KG_C_SIGNED_QUEUED]++;
	return 0;
}

/* A payload door: the payload starts with the door's payload_len bytes. Returns 1 on a grant. */
static __always_inline int kg_payload(struct xdp_md *xdp, struct kg_stats *st, const struct kg_knock *k,
				      __u32 slot, const struct kg_door *door, __u64 now)
{
	__u8 buf[KG_PAYLOAD_LEN] = {};
	__u32 n = door->payload_len, i, diff = 0;

	if (n < 1 || n > KG_PAYLOAD_LEN)
		return 0;
	/* The same n, in a form whose bounds [1, 32] older verifiers (6.1) see: they learn no
	 * lower bound from "n != 0", and a zero-sized load is refused. */
	n = ((n - 1) & (KG_PAYLOAD_LEN - 1)) + 1;
	if (k->pkt.payload_len < n || bpf_xdp_load_bytes(xdp, k->pkt.payload_off, buf, n))
		return kg_reject(st, k, slot, KG_REJECT_PAYLOAD, now);
	for (i = 0; i < KG_PAYLOAD_LEN; i++)
		diff |= (i < n) ? (__u32)(buf[i] ^ door->payload[i]) : 0;
	if (diff)
		return kg_reject(st, k, slot, KG_REJECT_PAYLOAD, now);
	return kg_single_grant(st, k, slot, door, now ? now : bpf_ktime_get_ns());
}

/*
 * A UDP datagram to the port of single-packet door slot d, or an ICMP echo request while d
 * knocks with those: the door's type decides. Neither progress nor cooldowns apply: a spoofed
 * packet to another port cannot undo a single-packet knock. Returns 1 if it produced a grant.
 * A global function: verified once for any d.
 */
__noinline int kg_single(struct xdp_md *xdp, struct kg_stats *st, const struct kg_knock *k, __u32 d)
{
	struct kg_door *door;
	__u32 key;
	__u64 now;

	if (!xdp || !st || !k)
		return 0;
	d &= KG_MAX_DOORS - 1;
	key = (k->gen & 1) * KG_MAX_DOORS + d;
	door = bpf_map_lookup_elem(&kg_doors, &key);
	if (!door || !(door->flags & KG_DOOR_ACTIVE) || door->proto != k->pkt.proto)
		return 0;
	if (k->pkt.proto == KG_PROTO_UDP && door->port != k->pkt.dport)
		return 0;
	now = 0; /* read where needed: a refusal without an event reads no clock */
	if ((door->flags & KG_DOOR_ALLOW_LIST) && !kg_allowed(k, d))
		return kg_reject(st, k, d, KG_REJECT_NOT_ALLOWED, now);
	if (door->type == KG_TYPE_SPA)
		return kg_spa(xdp, st, k, d, door, now);
	if (door->type == KG_TYPE_SIGNED)
		return kg_signed(xdp, st, k, d, door, now);
	if (door->type == KG_TYPE_PAYLOAD)
		return kg_payload(xdp, st, k, d, door, now);
	return 0;
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
		bpf_map_update_elem(&kg_progress, src, &kg_zero.progress, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&kg_progress, src); /* -EEXIST above: another CPU's entry */
		if (!p) {
			st->c[KG_C_MAP_FULL]++;
			return;
		}
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
	bpf_map_update_elem(&kg_probation, src, &kg_zero.probation, BPF_NOEXIST);
	pr = bpf_map_lookup_elem(&kg_probation, src); /* -EEXIST above: another CPU's entry */
	if (!pr)
		st->c[KG_C_MAP_FULL]++;
	return pr;
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
	pen = bpf_map_lookup_elem(&kg_penalty, &src);
	if (!pen) {
		bpf_map_update_elem(&kg_penalty, &src, &kg_zero.penalty, BPF_NOEXIST);
		pen = bpf_map_lookup_elem(&kg_penalty, &src);
		if (!pen) {
			st->c[KG_C_MAP_FULL]++;
			return 0;
		}
	}
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

/* ---- flows (DESIGN.md "Established flows") ------------------------------------------- */

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
