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
#define KG_DEFAULT_RING_BYTES (256 * 1024)

/* ---- map names (<= 15 characters; user space finds maps by these) ------- */
#define KG_MAP_PORTS "kg_ports"
#define KG_MAP_DOORS "kg_doors"
#define KG_MAP_ALLOW "kg_allow"
#define KG_MAP_PROGRESS "kg_progress"
#define KG_MAP_GRANTS "kg_grants"
#define KG_MAP_EVENTS "kg_events"
#define KG_MAP_STATS "kg_stats"
#define KG_MAP_GLOBALS ".bss" /* struct kg_globals, mmapped by user space */
#define KG_PROG_NAME "knockgate_xdp"

enum kg_proto {
	KG_PROTO_TCP = 0,
	KG_PROTO_UDP = 1,
};

/*
 * kg_ports[(gen * KG_PROTOS + proto) * KG_PORTS + port]
 * Written by user space into the inactive generation only; read by XDP.
 */
struct kg_port_info {
	__u16 knock_doors;   /* bit d: port is a step of door slot d */
	__u16 protect_doors; /* bit d: door slot d protects this port */
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
	__u8 nsteps;
	__u8 nprotects;
	__u8 pad[6];
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

/* Key of kg_progress and kg_grants. */
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
 * kg_progress: LRU hash, key struct kg_addr. Created by XDP on a first knock,
 * updated in place, entries removed by XDP on reset/grant.
 */
struct kg_progress {
	__u16 doors; /* bit d: d[d] is live */
	__u8 pad[6];
	struct kg_door_progress d[KG_MAX_DOORS];
};

/*
 * kg_grants: LRU hash, key struct kg_addr. Written by XDP when a sequence
 * completes and by user space (manual grants, revokes, expiry sweeps).
 */
struct kg_grant {
	__u64 expires_ns[KG_MAX_DOORS]; /* 0: no grant for that door */
};

enum kg_event_type {
	KG_EV_STEP = 1,  /* knock accepted, not yet complete */
	KG_EV_RESET = 2, /* progress on a door thrown away (reason) */
	KG_EV_GRANT = 3, /* sequence complete, grant until expires_ns */
	KG_EV_DENY = 4,  /* packet to a protected port dropped */
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
};

/* kg_events: ring buffer of these, written by XDP, drained by the daemon. */
struct kg_event {
	__u64 ts_ns;      /* 0 on denials: the drop path reads no clock */
	__u64 expires_ns; /* GRANT: end of the grant */
	__u8 addr[16];    /* source */
	__u16 port;       /* destination port */
	__u16 doors;      /* DENY: doors protecting the port */
	__u8 proto;       /* enum kg_proto */
	__u8 type;        /* enum kg_event_type */
	__u8 door;        /* door slot (STEP, RESET, GRANT) */
	__u8 step;        /* STEP: steps done; RESET: steps done before */
	__u8 reason;      /* RESET: kg_reset_reason; DENY: kg_deny_reason */
	__u8 pad[3];
	__u32 ifindex;    /* interface the packet came in on */
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
	KG_V_PASS_GRANTED = 4,  /* protected port, source holds a live grant */
	KG_V_DROP_NO_GRANT = 5, /* protected port, source holds no grant */
	KG_V_DROP_EXPIRED = 6,  /* protected port, source's grant expired */
	KG_V_DROP_KNOCK = 7,    /* packet to a knock port */
	KG_V_DROP_MALFORMED = 8,/* truncated/invalid headers, too deep, short first fragment */
	KG_VERDICTS = 9,
	KG_C_STEP = 9,              /* knock steps accepted */
	KG_C_GRANT = 10,            /* sequences completed */
	KG_C_RESET_WRONG_PORT = 11,
	KG_C_RESET_STEP_TIMEOUT = 12,
	KG_C_RESET_SEQ_TIMEOUT = 13,
	KG_C_NOT_ALLOWED = 14,      /* first knock from outside allow_from */
	KG_C_RETRANSMIT = 15,       /* repeat of the last accepted knock, ignored */
	KG_C_DENY_EVENT = 16,       /* denial events emitted */
	KG_C_DENY_SUPPRESSED = 17,  /* denial events not emitted: out of tokens */
	KG_C_EVENT_LOST = 18,       /* ring buffer full */
	KG_C_MAP_FULL = 19,         /* progress/grant insert failed */
	KG_STAT_MAX = 20,
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
	__u32 pad0;
	__s64 deny_tokens; /* denial events XDP may still emit; refilled by user space */
	/* hint[hash(src) & (KG_HINT_SLOTS-1)]: time after which no source in the
	 * slot can hold live progress; lets unrelated traffic skip kg_progress. */
	__u64 hint[KG_HINT_SLOTS];
};

_Static_assert(sizeof(struct kg_port_info) == 4, "kg_port_info layout");
_Static_assert(sizeof(struct kg_step) == 4, "kg_step layout");
_Static_assert(sizeof(struct kg_port_range) == 8, "kg_port_range layout");
_Static_assert(sizeof(struct kg_door) == 40 + 4 * KG_MAX_STEPS + 8 * KG_MAX_PROTECTS + KG_NAME_LEN, "kg_door layout");
_Static_assert(sizeof(struct kg_allow_key) == 24, "kg_allow_key layout");
_Static_assert(sizeof(struct kg_addr) == 16, "kg_addr layout");
_Static_assert(sizeof(struct kg_door_progress) == 24, "kg_door_progress layout");
_Static_assert(sizeof(struct kg_progress) == 8 + 24 * KG_MAX_DOORS, "kg_progress layout");
_Static_assert(sizeof(struct kg_grant) == 8 * KG_MAX_DOORS, "kg_grant layout");
_Static_assert(sizeof(struct kg_event) == 48, "kg_event layout");
_Static_assert(sizeof(struct kg_stats) == 8 * KG_STAT_MAX, "kg_stats layout");
_Static_assert(sizeof(struct kg_globals) == 16 + 8 * KG_HINT_SLOTS, "kg_globals layout");
_Static_assert(KG_MAX_DOORS <= 16, "door masks are __u16");
_Static_assert((KG_HINT_SLOTS & (KG_HINT_SLOTS - 1)) == 0, "KG_HINT_SLOTS must be a power of two");

#endif /* KNOCKGATE_KNOCK_H */
