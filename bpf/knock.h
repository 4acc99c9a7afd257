/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * knock.h - the single source of truth for everything that crosses the
 * kernel/user boundary: map names, sizes, and the layout of every key, value,
 * event and global. The TypeScript mirror (src/kernel/layout.ts) is tested
 * against the compiled layout (test/unit/layout.test.ts), and the loader checks
 * every map's key and value size at load time.
 *
 * Conventions: fixed-width types only, explicit padding, no implicit holes,
 * every struct's size pinned by _Static_assert. Ports are in host byte order.
 * Addresses are 16 bytes: IPv6 as is, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d).
 * Times are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns); 0 means "never".
 */
#ifndef KNOCKGATE_KNOCK_H
#define KNOCKGATE_KNOCK_H

#include <linux/types.h>
#include <linux/bpf.h> /* struct bpf_spin_lock */

/* ---- sizes (compile-time; changing one changes the map layout) ---------- */
#define KG_MAX_DOORS 16 /* door slots; masks below are __u16 */
#define KG_MAX_STEPS 16    /* knock steps per door */
#define KG_MAX_PROTECTS 16 /* protected port ranges per door */
#define KG_NAME_LEN 32     /* door name, NUL-terminated */
#define KG_GENS 2          /* double-buffered configuration generations */
#define KG_PROTOS 2        /* KG_PROTO_TCP, KG_PROTO_UDP */
#define KG_PORTS 65536
#define KG_PORT_SLOTS (KG_GENS * KG_PROTOS * KG_PORTS)
#define KG_DOOR_SLOTS (KG_GENS * KG_MAX_DOORS)
#define KG_HINT_SLOTS 16384 /* power of two */
#define KG_MAX_VLAN_TAGS 2   /* 802.1Q / 802.1ad tags parsed */
#define KG_MAX_EXT_HDRS 8    /* IPv6 extension headers walked */
#define KG_DEFAULT_SOURCES 65536
#define KG_DEFAULT_FLOWS 65536
#define KG_DEFAULT_RING_BYTES (256 * 1024)
#define KG_FK_WORDS 13                     /* 32-bit words of one half of a filter block */
#define KG_FK_BITS (KG_FK_WORDS * 32)      /* 416 bits per half */
#define KG_FK_HASHES 4                     /* bits set per (source, door) key */
#define KG_FK_BLOCK_BYTES 128              /* sizeof(struct kg_fk_block) */
#define KG_DEFAULT_FK_BLOCKS 65536         /* 8 MiB */
#define KG_FLOW_LINGER_NS 10000000000ULL   /* idle limit of a flow after FIN or RST: 10s */
#define KG_ROT_STEPS 8      /* rotating doors: steps per window's sequence; sequence s in steps[8s..] */
#define KG_PAYLOAD_LEN 32   /* payload doors: longest prefix */
#define KG_SPA_LEN 40       /* SPA datagram (docs/KNOCKS.md) */
#define KG_SPA_MSG_LEN 48   /* SipHash input: source address + datagram bytes 0..31 */
#define KG_SIGNED_LEN 112   /* signed datagram (docs/KNOCKS.md) */
#define KG_SPA_MAGIC 0x4b475332U    /* "KGS2", big-endian */
#define KG_SIGNED_MAGIC 0x4b474531U /* "KGE1", big-endian */
#define KG_DEFAULT_NONCES 65536
#define KG_SPENT_ENTRIES 1024
/* The grant filter (kg_gfilter, DESIGN.md "Grant filter"): two copies of GF_WORDS(sources) u64 words after a header. */
#define KG_GF_HDR_WORDS 8           /* header words before the first copy */
#define KG_GF_BITS_PER_SOURCE 16    /* filter bits per limits.sources entry (rounded up to a power of two) */
#define KG_GF_ON (1ULL << 1)        /* header word 0: the filter may be trusted */
#define KG_GF_CUR 1ULL              /* header word 0: the copy readers test */
/* SPA tags (docs/KNOCKS.md): the keyed 32-bit tag of a timestamp window, cached per door */
#define KG_SPA_TAG_WINDOW_S 64      /* seconds per tag window */
#define KG_SPA_TAG_SLOTS 32         /* cached windows per (gen, door): covers 2 x max_skew (<= 600 s) */

/* ---- map names (<= 15 characters; user space finds maps by these) ------- */
#define KG_MAP_PORTS "kg_ports"
#define KG_MAP_DOORS "kg_doors"
#define KG_MAP_ALLOW "kg_allow"
#define KG_MAP_PROGRESS "kg_progress"
#define KG_MAP_PROBATION "kg_probation"
#define KG_MAP_FIRSTS "kg_firsts"
#define KG_MAP_PENALTY "kg_penalty"
#define KG_MAP_GRANTS "kg_grants"
#define KG_MAP_FLOWS "kg_flows"
#define KG_MAP_EVENTS "kg_events"
#define KG_MAP_NONCES "kg_nonces"
#define KG_MAP_SPENT "kg_spent"
#define KG_MAP_STATS "kg_stats"
#define KG_MAP_GFILTER "kg_gfilter"
#define KG_MAP_SPATAGS "kg_spatags"
#define KG_MAP_GLOBALS ".bss" /* struct kg_globals, mmapped by user space */
#define KG_PROG_NAME "knockgate_xdp"       /* frames that start with an Ethernet header */
#define KG_PROG_NAME_L3 "knockgate_xdp_l3" /* frames that start with the IP header (TUN, WireGuard...) */

enum kg_proto {
	KG_PROTO_TCP = 0,
	KG_PROTO_UDP = 1,
	KG_PROTO_ICMP = 2, /* ICMP or ICMPv6 echo request: payload doors and events only, not in kg_ports */
};

/* kg_door.type */
enum kg_door_type {
	KG_TYPE_SEQUENCE = 0, /* fixed steps */
	KG_TYPE_ROTATING = 1, /* two sequences (windows win[0], win[1]), each good for one grant */
	KG_TYPE_SPA = 2,      /* one datagram with a SipHash-2-4 MAC, verified here */
	KG_TYPE_SIGNED = 3,   /* one datagram signed with Ed25519, passed to the daemon */
	KG_TYPE_PAYLOAD = 4,  /* one datagram or ICMP echo request starting with payload[] */
};

/*
 * kg_ports[(gen * KG_PROTOS + proto) * KG_PORTS + port]
 * Written by user space into the inactive generation only; read by XDP.
 */
struct kg_port_info {
	__u16 knock_doors;     /* bit d: port is a step of door slot d (sequence and rotating doors) */
	__u16 protect_doors;   /* bit d: door slot d protects this port */
	__u16 flow_only_doors; /* bit d: door slot d protects this port with scope flow-only */
	__u16 single_doors;    /* bit d: port of single-packet door slot d (spa, signed, payload) */
};

struct kg_step {
	__u16 port;
	__u8 proto; /* enum kg_proto */
	__u8 pad;
};

struct kg_port_range {
	__u16 first;
	__u16 last; /* inclusive */
	__u8 proto; /* enum kg_proto */
	__u8 pad[3];
};

#define KG_DOOR_ACTIVE (1U << 0)     /* slot holds a door */
#define KG_DOOR_ALLOW_LIST (1U << 1) /* first knock must match kg_allow */
#define KG_DOOR_FLOW_ONLY (1U << 2)  /* scope flow-only: a grant lets exactly one new flow in */
#define KG_DOOR_CLAIM (1U << 3)      /* fleet mode. ROTATING: a completed sequence goes to the daemon
                                      * (KG_EV_CLAIM) to be claimed fleet-wide, instead of a grant.
                                      * SPA: the grant's event carries the nonce (kg_nonce_event), which
                                      * the daemon copies into every host's kg_nonces */

/*
 * kg_doors[gen * KG_MAX_DOORS + slot]
 * Written by user space into the inactive generation only; read by XDP on
 * knock packets. The kernel never reads name or protects: they make the pinned
 * gate self-describing for the CLI and for a daemon that adopts it.
 */
struct kg_door {
	__u32 flags;  /* KG_DOOR_* */
	__u32 epoch;  /* changes whenever the door's knock rules change */
	__u64 step_timeout_ns;
	__u64 seq_timeout_ns;
	__u64 open_for_ns;
	__u64 flow_idle_ns; /* a flow opened under this door's grant ends after this long idle */
	__u8 nsteps;        /* ROTATING: steps of each sequence (<= KG_ROT_STEPS) */
	__u8 nprotects;
	__u8 type;          /* enum kg_door_type */
	__u8 payload_len;   /* PAYLOAD: bytes of payload[] that must match, 1..KG_PAYLOAD_LEN */
	__u16 port;         /* SPA, SIGNED, PAYLOAD over UDP: the door's port; 0 otherwise */
	__u8 proto;         /* SPA, SIGNED, PAYLOAD: KG_PROTO_UDP or KG_PROTO_ICMP */
	__u8 pad;
	__u32 door_id;      /* SPA, SIGNED, ROTATING: the door's id (docs/KNOCKS.md) */
	__u32 pad2;
	__u64 max_skew_ns;  /* SPA, SIGNED: largest accepted |timestamp - wall clock| */
	__u64 window_ns;    /* ROTATING: window length */
	__u64 win[2];       /* ROTATING: window number of sequence s (steps[KG_ROT_STEPS * s...]) */
	__u64 valid_until_ns[2]; /* ROTATING: sequence s is refused from then on; 0: empty */
	__u16 range_first;  /* ROTATING: the ports the sequences are drawn from (all knock ports) */
	__u16 range_last;
	__u8 range_proto;
	__u8 pad3[3];
	__u8 key[16];       /* SPA: the SipHash-2-4 key */
	__u8 payload[KG_PAYLOAD_LEN]; /* PAYLOAD: the prefix */
	struct kg_step steps[KG_MAX_STEPS];
	struct kg_port_range protects[KG_MAX_PROTECTS];
	char name[KG_NAME_LEN];
};

/*
 * kg_allow: LPM trie, key below, value __u32 (1). Written by user space for
 * the inactive generation; read by XDP on a door's first knock when the door
 * has KG_DOOR_ALLOW_LIST. prefixlen = 16 (gen, slot) + address prefix, where an
 * IPv4 prefix /n is stored as the IPv4-mapped ::ffff:0:0/(96 + n).
 */
struct kg_allow_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 slot;
	__u8 addr[16];
	__u8 pad[2]; /* zero; beyond every prefix */
};

/* Key of kg_progress, kg_probation, kg_penalty and kg_grants. */
struct kg_addr {
	__u8 a[16];
};

struct kg_door_progress {
	__u64 start_ns; /* first knock of this attempt */
	__u64 last_ns;  /* last accepted knock */
	__u32 epoch;    /* kg_door.epoch the attempt belongs to */
	__u8 step;      /* steps done, 1..nsteps-1 while live */
	__u8 pad[3];
};

/*
 * kg_progress: LRU hash, key struct kg_addr. Only sources that made at least two
 * correct steps on some door (step >= 2): created by XDP on a second step,
 * updated in place, entries removed by XDP on reset/grant. A flood of first
 * knocks never inserts here (docs/DESIGN.md "Eviction resistance").
 */
struct kg_progress {
	__u16 doors; /* bit d: d[d] is live */
	__u8 pad[6];
	struct kg_door_progress d[KG_MAX_DOORS];
};

struct kg_first_knock {
	__u64 at_ns;  /* the first knock */
	__u32 epoch;  /* kg_door.epoch it was made under */
	__u32 pad;
};

/*
 * kg_probation: LRU hash, key struct kg_addr. Exact records of first knocks
 * (step 1 done), written by XDP only. A flood may evict them; the first-knock
 * filter (kg_firsts) still remembers the knock then.
 */
struct kg_probation {
	__u16 live;  /* bit d: d[d] holds a first knock not yet followed up */
	__u16 spent; /* bit d: the last first knock on d was followed up or reset:
		      * the filter must not stand in for it */
	__u8 pad[4];
	struct kg_first_knock d[KG_MAX_DOORS];
};

/*
 * kg_firsts: ARRAY of blocks (a blocked Bloom filter), index = hash(source) &
 * fk_mask. Each block has two halves, one per window of fk_window_ns (the
 * longest step_timeout): half (now / window) & 1, tagged with its window's
 * start; a half with an older tag is cleared by the next insert. Written and
 * read by XDP under the block's spin lock.
 */
struct kg_fk_block {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 start[2];                 /* window start (ns) of each half's bits */
	__u32 bits[2 * KG_FK_WORDS];    /* half h: words [h * KG_FK_WORDS, (h + 1) * KG_FK_WORDS) */
};

/*
 * kg_penalty: LRU hash, key struct kg_addr. Failed sequences per source and its
 * cooldown (brute-force limit). Written by XDP on a failure; read on knocks.
 */
struct kg_penalty {
	__u64 window_start_ns;   /* start of the current failure window */
	__u64 cooldown_until_ns; /* knocks do not progress before this; 0: none */
	__u32 failures;          /* failures in the current window */
	__u32 pad;
};

/*
 * kg_grants: LRU hash, key struct kg_addr. Written by XDP when a sequence
 * completes and by user space (manual grants, revokes, expiry sweeps).
 */
struct kg_grant {
	__u64 expires_ns[KG_MAX_DOORS]; /* 0: no grant for that door; <= now: expired or used up */
};

/*
 * kg_gfilter: mmapable ARRAY of __u64, KG_GF_HDR_WORDS + 2 * n words (n a power of two). A
 * Bloom filter of the sources that may hold a kg_grants or kg_flows entry, so that a source
 * holding nothing is dropped without a hash lookup. Word 0: KG_GF_ON | cur; word 1: n - 1.
 * Copy c is words [KG_GF_HDR_WORDS + c * n, KG_GF_HDR_WORDS + (c + 1) * n); a source sets two
 * bits of one word (its keyed hash picks them) in BOTH copies, with an atomic OR, before its
 * entry is inserted and again after; readers test copy cur. User space rebuilds the other
 * copy from the maps and flips cur (DESIGN.md "Grant filter": why no bit of a live entry is
 * ever missing). A false positive costs the hash lookup; nothing is ever opened by it.
 */

/*
 * kg_spatags: ARRAY of __u64, KG_DOOR_SLOTS * KG_SPA_TAG_SLOTS. Entry (gen * 16 + slot) *
 * KG_SPA_TAG_SLOTS + (w % KG_SPA_TAG_SLOTS): ((w + 1) << 32) | tag(w), the SPA tag of timestamp
 * window w (docs/KNOCKS.md), computed by XDP on the first datagram of a window and kept.
 * User space zeroes a slot's rows when it writes the slot (a new key).
 */

/*
 * kg_flows: LRU hash. A connection (TCP) or datagram flow (UDP) opened to a
 * protected port under a live grant: created by XDP on the SYN (or the first
 * datagram), refreshed in place, deleted by user space (revoke, sweep).
 * Addresses as in struct kg_addr; ports in host order.
 */
struct kg_flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto; /* enum kg_proto */
	__u8 pad[3];
};

#define KG_FLOW_ESTABLISHED (1U << 0) /* TCP: a packet other than a SYN passed on it */
#define KG_FLOW_CLOSING (1U << 1)     /* TCP: FIN or RST seen: idle limit KG_FLOW_LINGER_NS */

struct kg_flow {
	__u64 created_ns;
	__u64 last_ns; /* last packet */
	__u64 idle_ns; /* the door's flow_idle when the flow was opened */
	__u8 slot;     /* door whose grant opened it */
	__u8 flags;    /* KG_FLOW_* */
	__u8 pad[6];
};

enum kg_event_type {
	KG_EV_STEP = 1,  /* knock accepted, not yet complete */
	KG_EV_RESET = 2, /* progress on a door thrown away (reason) */
	KG_EV_GRANT = 3, /* sequence complete, grant until expires_ns */
	KG_EV_DENY = 4,  /* packet to a protected port dropped */
	KG_EV_COOLDOWN = 5, /* source failed too often: its knocks are ignored until expires_ns */
	KG_EV_CONSUMED = 6, /* a flow-only grant let its one connection in (and is used up) */
	KG_EV_REJECT = 7,   /* a single-packet knock or a rotating sequence refused (reason: kg_reject_reason) */
	KG_EV_SIGNED = 8,   /* a signed knock for the daemon to verify: struct kg_signed_event */
	KG_EV_CLAIM = 9,    /* a rotating sequence complete (KG_DOOR_CLAIM): the daemon claims the
			     * window fleet-wide and grants; expires_ns holds the window number */
};

enum kg_reject_reason {
	KG_REJECT_MALFORMED = 1, /* SPA: wrong length, magic or door id */
	KG_REJECT_BAD_MAC = 2,   /* SPA: the MAC does not verify */
	KG_REJECT_STALE = 3,     /* SPA: timestamp further than max_skew from the gate's clock */
	KG_REJECT_REPLAY = 4,    /* SPA: nonce seen before */
	KG_REJECT_SPENT = 5,     /* ROTATING: the window's sequence already produced a grant */
	KG_REJECT_PAYLOAD = 6,   /* PAYLOAD: the payload does not start with the door's bytes */
	KG_REJECT_NOT_ALLOWED = 7, /* single-packet knock from outside allow_from */
};

enum kg_reset_reason {
	KG_RESET_NONE = 0,
	KG_RESET_WRONG_PORT = 1,
	KG_RESET_STEP_TIMEOUT = 2,
	KG_RESET_SEQ_TIMEOUT = 3,
};

enum kg_deny_reason {
	KG_DENY_NO_GRANT = 1, /* source holds no grant at all */
	KG_DENY_EXPIRED = 2,  /* source's grants for this port have expired */
	KG_DENY_NO_FLOW = 3,  /* TCP without SYN, and no live flow it belongs to */
};

/*
 * kg_nonces: LRU hash, key struct kg_nonce, value __u64 (CLOCK_MONOTONIC ns of the knock).
 * Nonces of SPA knocks whose MAC verified, inserted by XDP (BPF_NOEXIST: a nonce counts once).
 * Only a holder of the key can add entries; a replay (from any address) finds its nonce here.
 */
struct kg_nonce {
	__u8 n[16];
};

/*
 * kg_spent: hash, key below, value __u64 (CLOCK_MONOTONIC ns of the grant). A rotating door's
 * sequence of window w that produced a grant; inserted by XDP (BPF_NOEXIST: once), pruned by
 * user space when the window is over.
 */
struct kg_spent_key {
	__u32 door_id;
	__u32 pad;
	__u64 window;
};

/* kg_events: ring buffer of these, written by XDP, drained by the daemon. */
struct kg_event {
	__u64 ts_ns;      /* 0 on denials: the drop path reads no clock */
	__u64 expires_ns; /* GRANT: end of the grant; COOLDOWN: end of the cooldown */
	__u8 addr[16];    /* source */
	__u16 port;       /* destination port */
	__u16 doors;      /* DENY: doors protecting the port */
	__u8 proto;       /* enum kg_proto */
	__u8 type;        /* enum kg_event_type */
	__u8 door;        /* door slot (STEP, RESET, GRANT, CONSUMED); 0xff: COOLDOWN (every door) */
	__u8 step;        /* STEP: steps done; RESET: steps done before; COOLDOWN: failures */
	__u8 reason;      /* RESET: kg_reset_reason; DENY: kg_deny_reason */
	__u8 pad[3];
	__u32 ifindex;    /* interface the packet came in on */
};

/* A KG_EV_GRANT record of an SPA door with KG_DOOR_CLAIM: the event and the knock's nonce. */
struct kg_nonce_event {
	struct kg_event ev;
	struct kg_nonce nonce;
};

/* A KG_EV_SIGNED record: the event (door = slot, port, source) and the datagram. */
struct kg_signed_event {
	struct kg_event ev;
	__u8 payload[KG_SIGNED_LEN];
};

/*
 * kg_stats: per-CPU array, one entry, value struct kg_stats. Every packet
 * increments exactly one verdict counter (KG_V_*); the KG_C_* counters count
 * events and conditions.
 */
enum kg_stat {
	KG_V_PASS_NON_IP = 0,   /* not IPv4/IPv6 */
	KG_V_PASS_OTHER_L4 = 1, /* IP, but neither TCP nor UDP */
	KG_V_PASS_UNRELATED = 2,/* TCP/UDP to a port that is neither knock nor protected */
	KG_V_PASS_FRAGMENT = 3, /* non-first fragment: no ports to judge */
	KG_V_PASS_GRANTED = 4,  /* protected port, new flow under a live grant */
	KG_V_PASS_FLOW = 5,     /* protected port, packet of a live flow */
	KG_V_DROP_NO_GRANT = 6, /* protected port, SYN or UDP, source holds no grant */
	KG_V_DROP_EXPIRED = 7,  /* protected port, SYN or UDP, no flow and no live grant */
	KG_V_DROP_KNOCK = 8,    /* packet to a knock port */
	KG_V_DROP_MALFORMED = 9,/* truncated/invalid headers, too deep, short first fragment */
	KG_V_DROP_NO_FLOW = 10, /* protected port, TCP without SYN, no live flow */
	KG_VERDICTS = 11,
	KG_C_STEP = 11,             /* knock steps accepted */
	KG_C_GRANT = 12,            /* sequences completed */
	KG_C_RESET_WRONG_PORT = 13,
	KG_C_RESET_STEP_TIMEOUT = 14,
	KG_C_RESET_SEQ_TIMEOUT = 15,
	KG_C_NOT_ALLOWED = 16,      /* first knock from outside allow_from */
	KG_C_RETRANSMIT = 17,       /* repeat of the last accepted knock, ignored */
	KG_C_DENY_EVENT = 18,       /* denial events emitted */
	KG_C_DENY_SUPPRESSED = 19,  /* denial events not emitted: out of tokens */
	KG_C_EVENT_LOST = 20,       /* ring buffer full */
	KG_C_MAP_FULL = 21,         /* progress/probation/penalty/grant/flow insert failed */
	KG_C_STEP_FROM_FILTER = 22, /* second steps accepted on the first-knock filter alone */
	KG_C_FAILURE = 23,          /* failed sequences counted (brute-force limit) */
	KG_C_COOLDOWN = 24,         /* sources put in cooldown */
	KG_C_COOLDOWN_KNOCK = 25,   /* knocks ignored: source in cooldown */
	KG_C_FLOW_NEW = 26,         /* flows opened */
	KG_C_FLOW_CLOSE = 27,       /* flows that saw FIN or RST */
	KG_C_FLOW_IDLE = 28,        /* flows found idle past their limit (deleted) */
	KG_C_GRANT_CONSUMED = 29,   /* flow-only grants used up by their connection */
	KG_C_KNOCK_SUPPRESSED = 30, /* first-knock, reset and cooldown events not emitted: out of tokens */
	KG_C_REJECT_MALFORMED = 31, /* SPA datagrams of the wrong length, magic or door id */
	KG_C_REJECT_BAD_MAC = 32,   /* SPA datagrams whose MAC did not verify */
	KG_C_REJECT_STALE = 33,     /* SPA datagrams with a stale timestamp */
	KG_C_REJECT_REPLAY = 34,    /* SPA datagrams with a nonce seen before */
	KG_C_REJECT_SPENT = 35,     /* rotating sequences completed again after their grant */
	KG_C_REJECT_PAYLOAD = 36,   /* payload-door packets with another payload */
	KG_C_SIGNED_QUEUED = 37,    /* signed knocks passed to the daemon */
	KG_C_SIGNED_SUPPRESSED = 38,/* signed knocks dropped: out of tokens or ring full */
	KG_STAT_MAX = 39,
};

struct kg_stats {
	__u64 c[KG_STAT_MAX];
};

/*
 * Globals (.bss), one instance, mmapped by user space (MAP_SHARED) so that
 * single words can be written without clobbering the rest.
 */
struct kg_globals {
	__u32 active_gen;  /* 0 or 1: the generation XDP reads; user space flips it */
	__u32 max_failures;/* brute-force limit: failures before a cooldown; 0: off */
	__s64 deny_tokens; /* denial events XDP may still emit; refilled by user space */
	__s64 knock_tokens;/* first-knock, reset-after-step-1 and cooldown events XDP may still
			    * emit (spoofable without knowing the sequence); refilled by user space */
	__u64 failure_window_ns;
	__u64 cooldown_ns;
	__u64 fk_window_ns; /* first-knock filter window: >= every door's step_timeout */
	__u64 fk_seed[2];   /* hash keys of the filter, random per load */
	__u32 fk_mask;      /* filter blocks - 1 (a power of two) */
	__u16 icmp_doors[2];/* per generation: bit d: payload door slot d knocks with ICMP echo requests */
	__s64 signed_tokens;/* signed knocks XDP may still pass to the daemon; refilled by user space */
	__s64 wall_offset_ns; /* CLOCK_REALTIME - CLOCK_BOOTTIME, set by user space: SPA timestamps */
	/* hint[hash(src) & (KG_HINT_SLOTS-1)]: time after which no source in the
	 * slot can hold live progress; lets unrelated traffic skip kg_progress and
	 * kg_probation. */
	__u64 hint[KG_HINT_SLOTS];
};

_Static_assert(sizeof(struct kg_port_info) == 8, "kg_port_info layout");
_Static_assert(sizeof(struct kg_step) == 4, "kg_step layout");
_Static_assert(sizeof(struct kg_port_range) == 8, "kg_port_range layout");
_Static_assert(sizeof(struct kg_door) == 48 + 64 + 16 + KG_PAYLOAD_LEN + 4 * KG_MAX_STEPS + 8 * KG_MAX_PROTECTS + KG_NAME_LEN, "kg_door layout");
_Static_assert(sizeof(struct kg_allow_key) == 24, "kg_allow_key layout");
_Static_assert(sizeof(struct kg_addr) == 16, "kg_addr layout");
_Static_assert(sizeof(struct kg_door_progress) == 24, "kg_door_progress layout");
_Static_assert(sizeof(struct kg_progress) == 8 + 24 * KG_MAX_DOORS, "kg_progress layout");
_Static_assert(sizeof(struct kg_first_knock) == 16, "kg_first_knock layout");
_Static_assert(sizeof(struct kg_probation) == 8 + 16 * KG_MAX_DOORS, "kg_probation layout");
_Static_assert(sizeof(struct kg_fk_block) == KG_FK_BLOCK_BYTES, "kg_fk_block layout");
_Static_assert(sizeof(struct kg_penalty) == 24, "kg_penalty layout");
_Static_assert(sizeof(struct kg_grant) == 8 * KG_MAX_DOORS, "kg_grant layout");
_Static_assert(sizeof(struct kg_flow_key) == 40, "kg_flow_key layout");
_Static_assert(sizeof(struct kg_flow) == 32, "kg_flow layout");
_Static_assert(sizeof(struct kg_event) == 48, "kg_event layout");
_Static_assert(sizeof(struct kg_signed_event) == 48 + KG_SIGNED_LEN, "kg_signed_event layout");
_Static_assert(sizeof(struct kg_nonce) == 16, "kg_nonce layout");
_Static_assert(sizeof(struct kg_nonce_event) == 48 + 16, "kg_nonce_event layout");
_Static_assert(sizeof(struct kg_spent_key) == 16, "kg_spent_key layout");
_Static_assert(2 * KG_ROT_STEPS <= KG_MAX_STEPS, "two rotating sequences fit in steps[]");
_Static_assert(sizeof(struct kg_stats) == 8 * KG_STAT_MAX, "kg_stats layout");
_Static_assert(sizeof(struct kg_globals) == 88 + 8 * KG_HINT_SLOTS, "kg_globals layout");
_Static_assert(KG_MAX_DOORS <= 16, "door masks are __u16");
_Static_assert((KG_HINT_SLOTS & (KG_HINT_SLOTS - 1)) == 0, "KG_HINT_SLOTS must be a power of two");
_Static_assert(KG_FK_BITS <= 65536, "filter bit indexes come from 16-bit hash chunks");

#endif /* KNOCKGATE_KNOCK_H */
