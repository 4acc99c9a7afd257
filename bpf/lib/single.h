/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * lib/single.h - single-packet doors (docs/KNOCKS.md; DESIGN.md "Door types"): spa (a SipHash-2-4
 * MAC, a cached tag of the timestamp's window in kg_spatags, a nonce that counts once in
 * kg_nonces), signed (checked for length, magic and door id here, then handed whole to the daemon
 * through the ring: the daemon verifies the signature and writes the grant) and payload (the
 * payload starts with the door's bytes). kg_single, a global function, picks by the door's type,
 * for a UDP datagram to the door's port or an ICMP echo request; neither progress nor cooldowns
 * apply. Uses knock.h, parse.h, maps.h, context.h, events.h, grants.h (kg_grant_set) and siphash.h.
 */
#ifndef KNOCKGATE_LIB_SINGLE_H
#define KNOCKGATE_LIB_SINGLE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../knock.h"
#include "../parse.h"
#include "maps.h"
#include "context.h"
#include "events.h"
#include "grants.h"
#include "siphash.h"

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

#endif /* KNOCKGATE_LIB_SINGLE_H */
