/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * parse.h - header parsing for the knockgate XDP program (kernel only).
 *
 * In the style of xdp-tools' parsing_helpers.h: one small always-inline
 * function per header, each checking its own bounds against data_end and
 * advancing a cursor. kg_parse() runs them in order and fills a struct kg_pkt.
 * Parsing only: no map is read and no verdict is chosen here; the caller maps
 * the result to a verdict (docs/DESIGN.md, "Packet path").
 *
 * A frame starts with an Ethernet header (KG_FRAMING_ETH), or, on a device
 * without a link-layer header (TUN, WireGuard...), with the IP header
 * (KG_FRAMING_L3), whose version nibble then gives the family. The framing is a
 * compile-time constant of each XDP entry point: each gets its own specialised
 * copy of the parser, and the policy after it is the same.
 *
 * Besides the bounds of the frame, L4 headers are checked against the length
 * the IP header claims (IPv4 total length, IPv6 payload length): a first
 * fragment padded up to the Ethernet minimum must not pass for one that
 * carries a whole TCP header.
 */
#ifndef KNOCKGATE_PARSE_H
#define KNOCKGATE_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "knock.h"

/* L4 protocol of a struct kg_pkt that is neither KG_PROTO_TCP nor KG_PROTO_UDP. */
#define KG_PROTO_OTHER 0xff

#define KG_IP_MF 0x2000     /* IPv4 more-fragments flag (host order) */
#define KG_IP_OFFSET 0x1fff /* IPv4 fragment offset, 8-byte units (host order) */
#define KG_IP6_MF 0x0001    /* IPv6 fragment header M flag (host order) */
#define KG_IP6_OFFSET 0xfff8 /* IPv6 fragment offset, already in bytes (host order) */

#define KG_ICMP_ECHO 8            /* ICMP echo request type (linux/icmp.h pulls in libc headers) */
#define KG_ICMPV6_ECHO_REQUEST 128 /* ICMPv6 echo request type */

#define KG_TCP_FIN 0x01
#define KG_TCP_SYN 0x02
#define KG_TCP_RST 0x04
#define KG_TCP_ACK 0x10

enum kg_family {
	KG_FAMILY_NONE = 0,
	KG_FAMILY_IPV4 = 4,
	KG_FAMILY_IPV6 = 6,
};

enum kg_frag {
	KG_FRAG_NONE = 0,  /* a whole datagram (IPv6 atomic fragments included) */
	KG_FRAG_FIRST = 1, /* offset 0, more fragments follow: carries the L4 header */
	KG_FRAG_LATER = 2, /* offset != 0: no L4 header, dport unknown */
};

/* Where a frame starts (a compile-time constant of each entry point). */
enum kg_framing {
	KG_FRAMING_ETH = 0, /* at an Ethernet header */
	KG_FRAMING_L3 = 1,  /* at the IP header: no link-layer header */
};

enum kg_parse_result {
	KG_PARSE_OK = 0,        /* IPv4/IPv6; see proto and frag */
	KG_PARSE_NON_IP = 1,    /* neither IPv4 nor IPv6 */
	KG_PARSE_MALFORMED = 2, /* truncated or invalid headers, too many VLAN tags or extension headers */
};

/* A parsed packet. Kernel only: it never crosses to user space. */
struct kg_pkt {
	union {
		struct kg_addr src; /* IPv6 source, or IPv4 as ::ffff:a.b.c.d */
		__u32 src32[4];
	};
	__u32 dst32[4]; /* destination, same form */
	__u32 ifindex;  /* ingress interface */
	__u16 sport;    /* host order; 0 when dport is */
	__u16 dport;    /* host order; 0 when frag == KG_FRAG_LATER or proto is OTHER */
	__u8 family;    /* enum kg_family */
	__u8 proto;     /* KG_PROTO_TCP, KG_PROTO_UDP or KG_PROTO_OTHER */
	__u8 knock;     /* knock candidate: TCP SYN without ACK, or UDP; never a fragment */
	__u8 frag;      /* enum kg_frag */
	__u8 tcp_flags; /* TCP: the flags byte (FIN, SYN, RST, PSH, ACK...); else 0 */
	__u8 pad;
	__u16 payload_off; /* UDP, ICMP echo: where the payload starts, from the frame's start */
	__u16 payload_len; /* UDP, ICMP echo: payload bytes the IP (and UDP) lengths claim */
	__u16 pad2;
};

struct kg_cursor {
	void *pos;
};

/*
 * Headers end at most this far into the frame (8 extension headers of at
 * most 2 KiB each, plus Ethernet, VLAN and IPv6, stay well below it).
 */
#define KG_MAX_HDR_OFF 0x7fff

struct kg_vlan_hdr {
	__be16 tci;
	__be16 proto; /* encapsulated EtherType */
};

/* The IPv6 fragment header (RFC 8200 4.5); the UAPI headers do not define it. */
struct kg_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset (bytes, low 3 bits clear) | M flag */
	__be32 identification;
};

static __always_inline int kg_is_vlan(__be16 h_proto)
{
	return h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD);
}

/*
 * Ethernet header and up to KG_MAX_VLAN_TAGS VLAN tags. Stores the inner
 * EtherType (network order) in *h_proto. Returns 0, or -1 if truncated or a
 * further tag follows.
 */
static __always_inline int kg_parse_eth(struct kg_cursor *c, void *data_end, __be16 *h_proto)
{
	struct ethhdr *eth = c->pos;
	struct kg_vlan_hdr *vlh;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return -1;
	c->pos = eth + 1;
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < KG_MAX_VLAN_TAGS; i++) {
		if (!kg_is_vlan(proto))
			break;
		vlh = c->pos;
		if ((void *)(vlh + 1) > data_end)
			return -1;
		proto = vlh->proto;
		c->pos = vlh + 1;
	}
	if (kg_is_vlan(proto))
		return -1;
	*h_proto = proto;
	return 0;
}

/*
 * The first byte of a frame without a link-layer header: the IP version nibble
 * stands in for the EtherType (what a TUN device without packet information
 * does too). Stores ETH_P_IP, ETH_P_IPV6 or 0 (not IP) in *h_proto. Returns 0,
 * or -1 if the frame is empty.
 */
static __always_inline int kg_parse_l3(struct kg_cursor *c, void *data_end, __be16 *h_proto)
{
	__u8 *first = c->pos;

	if ((void *)(first + 1) > data_end)
		return -1;
	if ((*first >> 4) == 4)
		*h_proto = bpf_htons(ETH_P_IP);
	else if ((*first >> 4) == 6)
		*h_proto = bpf_htons(ETH_P_IPV6);
	else
		*h_proto = 0;
	return 0;
}

/*
 * IPv4 header, options skipped by IHL. Fills family, src and frag; stores the
 * L4 protocol in *l4proto and the bytes the header claims after itself in
 * *room. Returns 0, or -1 if truncated, IHL < 5 or total length < IHL.
 */
static __always_inline int kg_parse_ipv4(struct kg_cursor *c, void *data_end, struct kg_pkt *pkt,
					 __u8 *l4proto, __u32 *room)
{
	struct iphdr *iph = c->pos;
	__u32 hlen, tot;
	__u16 frag;

	if ((void *)(iph + 1) > data_end)
		return -1;
	hlen = iph->ihl * 4;
	if (hlen < sizeof(*iph))
		return -1;
	if (c->pos + hlen > data_end)
		return -1;
	tot = bpf_ntohs(iph->tot_len);
	if (tot < hlen)
		return -1;

	frag = bpf_ntohs(iph->frag_off);
	if (frag & KG_IP_OFFSET)
		pkt->frag = KG_FRAG_LATER;
	else if (frag & KG_IP_MF)
		pkt->frag = KG_FRAG_FIRST;

	pkt->family = KG_FAMILY_IPV4;
	pkt->src32[0] = 0;
	pkt->src32[1] = 0;
	pkt->src32[2] = bpf_htonl(0x0000ffff);
	pkt->src32[3] = iph->saddr;
	pkt->dst32[0] = 0;
	pkt->dst32[1] = 0;
	pkt->dst32[2] = bpf_htonl(0x0000ffff);
	pkt->dst32[3] = iph->daddr;

	*l4proto = iph->protocol;
	*room = tot - hlen;
	c->pos += hlen;
	return 0;
}

static __always_inline int kg_is_ext_hdr(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_AH;
}

/*
 * Makes the verifier forget how the cursor got where it is, keeping only
 * "data + [0, KG_MAX_HDR_OFF]". Without this every combination of extension
 * header kinds and lengths is a distinct verifier state (3^8 of them). The
 * pointer difference is opaque to the verifier (and to clang, through
 * barrier_var), so the round trip costs a few instructions and changes
 * nothing at run time. Pointer subtraction needs a loader with CAP_PERFMON
 * (root has it), as XDP programs practically always have.
 */
static __always_inline int kg_cursor_forget(struct kg_cursor *c, struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data; /* a fresh copy: no range learnt on any path */
	__u64 off = (long)c->pos - (long)data;

	barrier_var(off);
	if (off > KG_MAX_HDR_OFF)
		return -1;
	c->pos = data + off;
	return 0;
}

/*
 * IPv6 extension headers: walks at most KG_MAX_EXT_HDRS of them, updating
 * *nexthdr and *room. A fragment header with a non-zero offset ends the walk
 * (what follows is not a header). Returns 0, or -1 if a header is truncated or
 * one more extension header follows the last one walked.
 */
static __always_inline int kg_skip_ipv6_exts(struct xdp_md *ctx, struct kg_cursor *c, void *data_end,
					     struct kg_pkt *pkt, __u8 *nexthdr, __u32 *room)
{
	__u8 nh = *nexthdr;
	int i;

	for (i = 0; i < KG_MAX_EXT_HDRS; i++) {
		struct ipv6_opt_hdr *h = c->pos;
		__u32 len;

		if (!kg_is_ext_hdr(nh))
			break;
		if ((void *)(h + 1) > data_end)
			return -1;

		if (nh == IPPROTO_FRAGMENT) {
			struct kg_frag_hdr *fh = c->pos;
			__u16 off;

			if ((void *)(fh + 1) > data_end)
				return -1;
			off = bpf_ntohs(fh->frag_off);
			if (off & KG_IP6_OFFSET)
				pkt->frag = KG_FRAG_LATER;
			else if (off & KG_IP6_MF)
				pkt->frag = KG_FRAG_FIRST;
			len = sizeof(*fh);
		} else if (nh == IPPROTO_AH) {
			len = ((__u32)h->hdrlen + 2) * 4; /* RFC 4302: 4-byte units, minus 2 */
		} else {
			len = ((__u32)h->hdrlen + 1) * 8; /* RFC 8200: 8-byte units, minus 1 */
		}
		if (len > *room)
			return -1;
		if (c->pos + len > data_end)
			return -1;
		nh = h->nexthdr;
		*room -= len;
		c->pos += len;
		if (pkt->frag == KG_FRAG_LATER) {
			/* What follows a non-first fragment's header is not a header. */
			*nexthdr = nh;
			return 0;
		}
		if (kg_cursor_forget(c, ctx) < 0)
			return -1;
	}
	if (kg_is_ext_hdr(nh))
		return -1;
	*nexthdr = nh;
	return 0;
}

/*
 * IPv6 fixed header and extension headers. Same outputs as kg_parse_ipv4; -1
 * also for an IPv4-mapped source. The
 * payload length is taken as it is: a jumbogram (payload length 0, RFC 2675)
 * cannot arrive at XDP on any real MTU, and counts as malformed.
 */
static __always_inline int kg_parse_ipv6(struct xdp_md *ctx, struct kg_cursor *c, void *data_end,
					 struct kg_pkt *pkt, __u8 *l4proto, __u32 *room)
{
	struct ipv6hdr *ip6h = c->pos;

	if ((void *)(ip6h + 1) > data_end)
		return -1;
	pkt->family = KG_FAMILY_IPV6;
	__builtin_memcpy(pkt->src32, &ip6h->saddr, sizeof(pkt->src32));
	/* An IPv4-mapped source (::ffff:0:0/96) is not valid on the wire (RFC 4942 2.2) and
	 * is the very key an IPv4 source has here: it would share that source's knocks and
	 * grants. Malformed (docs/DESIGN.md, "Mapped sources"). */
	if (pkt->src32[0] == 0 && pkt->src32[1] == 0 && pkt->src32[2] == bpf_htonl(0x0000ffff))
		return -1;
	__builtin_memcpy(pkt->dst32, &ip6h->daddr, sizeof(pkt->dst32));
	*l4proto = ip6h->nexthdr;
	*room = bpf_ntohs(ip6h->payload_len);
	c->pos = ip6h + 1;
	return kg_skip_ipv6_exts(ctx, c, data_end, pkt, l4proto, room);
}

/*
 * TCP or UDP header. A header that is not complete, in the frame and within
 * the IP length, is malformed (for a first fragment this is the tiny-fragment
 * case). An ICMP (IPv4) or ICMPv6 echo request, whole and unfragmented, is
 * KG_PROTO_ICMP with its data as the payload; any other ICMP is KG_PROTO_OTHER.
 * Returns 0 or -1; *room is left as the bytes after the L4 header.
 */
static __always_inline int kg_parse_l4(struct kg_cursor *c, void *data_end, struct kg_pkt *pkt,
				       __u8 l4proto, __u32 *roomp)
{
	__u32 room = *roomp;

	if (l4proto == IPPROTO_TCP) {
		struct tcphdr *th = c->pos;
		__u32 hlen;
		__u8 flags;

		pkt->proto = KG_PROTO_TCP;
		if (pkt->frag == KG_FRAG_LATER)
			return 0;
		if ((void *)(th + 1) > data_end)
			return -1;
		hlen = th->doff * 4;
		if (hlen < sizeof(*th) || hlen > room)
			return -1;
		if (c->pos + hlen > data_end)
			return -1;
		flags = ((__u8 *)th)[13];
		pkt->sport = bpf_ntohs(th->source);
		pkt->dport = bpf_ntohs(th->dest);
		pkt->tcp_flags = flags;
		pkt->knock = (flags & (KG_TCP_SYN | KG_TCP_ACK)) == KG_TCP_SYN;
		c->pos += hlen;
		*roomp = room - hlen;
	} else if (l4proto == IPPROTO_UDP) {
		struct udphdr *uh = c->pos;
		__u32 ulen;

		pkt->proto = KG_PROTO_UDP;
		if (pkt->frag == KG_FRAG_LATER)
			return 0;
		if ((void *)(uh + 1) > data_end || sizeof(*uh) > room)
			return -1;
		pkt->sport = bpf_ntohs(uh->source);
		pkt->dport = bpf_ntohs(uh->dest);
		pkt->knock = 1;
		c->pos = uh + 1;
		/* The payload is what both the IP and the UDP length claim. */
		ulen = bpf_ntohs(uh->len);
		room -= sizeof(*uh);
		if (ulen >= sizeof(*uh) && ulen - sizeof(*uh) < room)
			room = ulen - sizeof(*uh);
		*roomp = room;
	} else if ((l4proto == IPPROTO_ICMP && pkt->family == KG_FAMILY_IPV4) ||
		   (l4proto == IPPROTO_ICMPV6 && pkt->family == KG_FAMILY_IPV6)) {
		__u8 *ih = c->pos; /* type, code, checksum, identifier, sequence: 8 bytes */

		pkt->proto = KG_PROTO_OTHER;
		if (pkt->frag != KG_FRAG_NONE || (void *)(ih + 8) > data_end || room < 8)
			return 0;
		if (ih[1] == 0 && ih[0] == (pkt->family == KG_FAMILY_IPV4 ? KG_ICMP_ECHO : KG_ICMPV6_ECHO_REQUEST)) {
			pkt->proto = KG_PROTO_ICMP;
			c->pos = ih + 8;
			*roomp = room - 8;
		}
		return 0;
	} else {
		pkt->proto = KG_PROTO_OTHER;
	}
	if (pkt->frag != KG_FRAG_NONE)
		pkt->knock = 0;
	return 0;
}

/*
 * Parses the frame into *pkt. framing (enum kg_framing) must be a constant: the
 * branch on it is resolved at compile time. Returns an enum kg_parse_result.
 */
static __always_inline int kg_parse(struct xdp_md *ctx, struct kg_pkt *pkt, const int framing)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct kg_cursor c = { .pos = (void *)(long)ctx->data };
	__be16 h_proto;
	__u8 l4proto;
	__u32 room;
	int err;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->ifindex = ctx->ingress_ifindex;
	pkt->proto = KG_PROTO_OTHER;

	err = framing == KG_FRAMING_L3 ? kg_parse_l3(&c, data_end, &h_proto) : kg_parse_eth(&c, data_end, &h_proto);
	if (err < 0)
		return KG_PARSE_MALFORMED;
	if (h_proto == bpf_htons(ETH_P_IP))
		err = kg_parse_ipv4(&c, data_end, pkt, &l4proto, &room);
	else if (h_proto == bpf_htons(ETH_P_IPV6))
		err = kg_parse_ipv6(ctx, &c, data_end, pkt, &l4proto, &room);
	else
		return KG_PARSE_NON_IP;
	if (err < 0)
		return KG_PARSE_MALFORMED;
	if (kg_parse_l4(&c, data_end, pkt, l4proto, &room) < 0)
		return KG_PARSE_MALFORMED;
	if (pkt->proto == KG_PROTO_UDP || pkt->proto == KG_PROTO_ICMP) {
		long off = (long)c.pos - (long)ctx->data;

		pkt->payload_off = off & 0xffff;
		pkt->payload_len = room > 0xffff ? 0xffff : room;
	}
	return KG_PARSE_OK;
}

#endif /* KNOCKGATE_PARSE_H */
