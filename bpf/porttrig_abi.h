/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * porttrig map ABI: every struct and constant that the eBPF data path and the
 * TypeScript control plane (src/bpf/abi.ts) both read. This header is the one
 * source of truth; test/bpf/abi.test.ts checks the TypeScript codecs against the
 * BTF of the compiled object, field by field.
 *
 * Rules for this file:
 *  - fixed-width types only; byte order in the type (__be32 is network order,
 *    everything else is host order);
 *  - every struct is explicitly padded with `_pad` fields that writers zero,
 *    so hash keys never contain uninitialised bytes;
 *  - bump PT_LAYOUT_VERSION whenever a struct or a map definition changes.
 */
#ifndef PORTTRIG_ABI_H
#define PORTTRIG_ABI_H

#include <linux/types.h>

/* Version of the pinned map layout; a daemon refuses to adopt another one. */
#define PT_LAYOUT_VERSION 7

/* Rule ids are 1..PT_MAX_RULES-1; 0 means "no rule". */
#define PT_MAX_RULES 1024
/* At most this many enabled rules share one trigger (proto, port). */
#define PT_TRIGGER_SLOTS 4
/* `ports` is indexed by PT_PROTO_IDX(proto) * PT_PORTS_PER_PROTO + port. */
#define PT_PORTS_PER_PROTO 65536
#define PT_PORT_SLOTS (2 * PT_PORTS_PER_PROTO)
#define PT_PROTO_IDX_TCP 0
#define PT_PROTO_IDX_UDP 1

#define PT_NSEC_PER_SEC 1000000000ULL
/* Every timestamp in the maps is CLOCK_MONOTONIC plus this bias, 8 days:
 * longer than the longest idle timeout (7 d) and flow timer, so "long ago" is
 * representable even seconds after boot, when the raw clock is still smaller
 * than a timeout. The data path reads CLOCK_MONOTONIC_COARSE
 * (bpf_ktime_get_coarse_ns(), the cheap one), the daemon CLOCK_MONOTONIC
 * (process.hrtime): the data path's stamps lag the daemon's clock by up to
 * PT_CLOCK_TICK_MAX_NS, so a timer ends up to that much earlier in the
 * daemon's eyes than in the data path's (timeouts are >= 1 s). */
#define PT_CLOCK_BIAS_NS (8ULL * 86400 * PT_NSEC_PER_SEC)
/* The longest timer tick of any Linux kernel (CONFIG_HZ=100): how far
 * CLOCK_MONOTONIC_COARSE may lag CLOCK_MONOTONIC. */
#define PT_CLOCK_TICK_MAX_NS (10ULL * 1000 * 1000)
/* Flow idle timeouts: RFC 4787 REQ-5 (UDP, 300 s) and RFC 5382 REQ-5 (TCP
 * established 2 h 4 min) and the transitory timeout of RFC 5382 sec. 5 (240 s,
 * 2*MSL, before the handshake completes and after FIN or RST). */
#define PT_FLOW_TIMEOUT_UDP_NS (300ULL * PT_NSEC_PER_SEC)
#define PT_FLOW_TIMEOUT_TCP_EST_NS (7440ULL * PT_NSEC_PER_SEC)
#define PT_FLOW_TIMEOUT_TCP_TRANS_NS (240ULL * PT_NSEC_PER_SEC)
/* A flow entry whose other direction is missing is over after this much idle
 * time: it exists only for an instant while a flow is inserted or removed.
 * Never longer than the shortest flow timer (the data path relies on that). */
#define PT_FLOW_ORPHAN_NS (10ULL * PT_NSEC_PER_SEC)
/* How long the translation of a fragmented datagram is remembered after its
 * first fragment. RFC 791 has a receiver wait 15 s for the rest of a datagram
 * (Linux: ipfrag_time, 30 s); in practice the fragments follow the first one
 * within milliseconds, and a short life limits what a reused IP id (RFC 4963,
 * RFC 6864) can mis-translate. */
#define PT_FRAG_TIMEOUT_NS (5ULL * PT_NSEC_PER_SEC)
/* Datagrams in flight whose translation is remembered (LRU: the oldest go). */
#define PT_FRAG_SLOTS 4096
/* A timestamp already this fresh is not rewritten: saves a store (and a cache
 * line bounce between CPUs) per packet; far below the 1 s minimum idle timeout. */
#define PT_REFRESH_GRANULARITY_NS (10ULL * 1000 * 1000)

/* TC handle and priority of porttrig's filters on clsact ingress. */
#define PT_TC_HANDLE 0x7074
#define PT_TC_PRIORITY 1

/* --- attach: hash map, ifindex -> flags, daemon only ----------------------- */
#define PT_ATTACH_LAN (1U << 0)          /* pt_lan_ingress attached here */
#define PT_ATTACH_WAN (1U << 1)          /* pt_wan_ingress attached here */
#define PT_ATTACH_CREATED_QDISC (1U << 2) /* porttrig created the clsact qdisc */
#define PT_ATTACH_XDP (1U << 3)          /* pt_wan_xdp attached here (datapath.xdp) */

/* --- config: array map, one entry, written by the daemon ------------------ */
/* The gateway's own addresses that pt_config carries inline, so that the
 * non-local-destination test of a trigger packet (SPEC 4.1) is a few compares
 * instead of a hash lookup (make bench: ~8 ns of the trigger path). */
#define PT_CONFIG_LOCAL_ADDRS 8

struct pt_config {
	__be32 wan_addr;        /* IPv4 address of the WAN interface; 0 = none yet */
	__u32 wan_ifindex;      /* host endianness */
	__u32 layout_version;   /* PT_LAYOUT_VERSION of the object that created the pins */
	__u32 sessions_per_host; /* limits.sessions_per_host */
	__be32 local_addrs[PT_CONFIG_LOCAL_ADDRS]; /* addresses of pt_local_addrs; 0 = unused slot */
	__u32 local_addrs_all;  /* 1: local_addrs holds every address of pt_local_addrs;
				 * 0: look in pt_local_addrs too (more addresses, or being updated) */
	__u32 wan_flags;        /* PT_WAN_*; was padding (always 0) before, so pinned state
				 * made by an older version reads as an Ethernet WAN until the
				 * daemon writes pt_config at start: no layout change */
};
/* The WAN interface is a layer-3 device (PPP, TUN, WireGuard: no link-layer
 * header): translated packets go out there with bpf_redirect(), not
 * bpf_redirect_neigh(). */
#define PT_WAN_L3 (1U << 0)

/* --- rules: array map indexed by rule id ---------------------------------- */
#define PT_RULE_ENABLED (1U << 0)
#define PT_RULE_PEER_CONTACTED (1U << 1)
#define PT_RULE_CONFLICT_LAST (1U << 2)
#define PT_RULE_KILL_FLOWS (1U << 3)

struct pt_rule {
	__u64 idle_timeout_ns;  /* session idle timeout */
	__u32 flags;            /* PT_RULE_* */
	__u32 _pad;
};

/* Rule names, so that a restarted daemon maps pinned state back to rules. */
#define PT_RULE_NAME_LEN 64
struct pt_rule_name {
	char name[PT_RULE_NAME_LEN]; /* NUL-terminated; empty = free id */
};

/* --- ports: array map, PT_PORT_SLOTS entries ------------------------------ */
struct pt_port {
	__u16 trigger[PT_TRIGGER_SLOTS]; /* rules triggered by traffic TO this port; 0 = free */
	__u16 open_rule;        /* rule whose open spec holds this WAN port; 0 = none */
	__u16 open_lan_port;    /* LAN port this WAN port reaches, host endianness */
	__u16 lan_port_refs;    /* open specs whose LAN side holds this port (reply filter) */
	__u16 _pad;
};

/* --- sessions: hash map ---------------------------------------------------- */
/* In peer mode `any` a rule has one session (peer 0) that one LAN host owns;
 * in mode `contacted` one session per remote peer. */
struct pt_session_key {
	__u32 rule;             /* rule id, host endianness */
	__be32 peer;            /* remote peer (mode contacted) or 0 */
};

struct pt_session {
	__u64 opened_ns;        /* pt_now() (CLOCK_MONOTONIC + PT_CLOCK_BIAS_NS) when opened */
	__u64 last_seen_ns;     /* last trigger or flow packet */
	__be32 host;            /* LAN host that owns the session */
	__u32 ifindex;          /* LAN interface the host was last seen on */
};

/* --- host_sessions: hash map, LAN host (__be32) -> struct pt_host --------- */
struct pt_host {
	__u32 sessions;         /* sessions the host holds (live, or expired and not yet removed) */
	__u32 recount;          /* scratch of the daemon's sweep (pt_sweep, PT_SWEEP_RECOUNT):
				 * live sessions counted for this host by the current recount;
				 * 0 between recounts (the recount's end resets it: a pass that
				 * reset it first made kernel 6.1's verifier refuse pt_sweep) */
	__u64 recheck_ns;       /* none of them ends before this time (pt_now() clock); 0 = unknown.
				 * A host at sessions_per_host looks for its expired sessions
				 * only after it (SPEC 4.6: expired sessions do not count). */
};

/* --- reclaim: array map, PT_RECLAIM__COUNT entries, written by the data path -- */
/* When a trigger or an inbound connection finds pt_sessions or pt_flows full,
 * the data path removes the expired entries itself (bpf_for_each_map_elem), so
 * dead state never blocks new state, with or without a daemon. A scan walks the
 * whole map: it runs at most once per PT_RECLAIM_INTERVAL_NS per map, or
 * earlier once the earliest deadline seen by the last scan has passed. */
enum pt_reclaim_map {
	PT_RECLAIM_SESSIONS = 0,
	PT_RECLAIM_FLOWS,
	PT_RECLAIM__COUNT,
};

struct pt_reclaim {
	__u64 last_ns;          /* when the last scan ran; 0 = never */
	__u64 next_ns;          /* no session live at that scan ends before this (0 = unknown) */
	__u32 freed;            /* entries the last scan removed */
	__u32 more;             /* 1: it stopped at PT_RECLAIM_BATCH; the next may run at once */
};
#define PT_RECLAIM_INTERVAL_NS (1ULL * PT_NSEC_PER_SEC)
/* A scan stops once it has removed this many entries (a packet waits for it):
 * room enough for a while, and the next one may follow at once. */
#define PT_RECLAIM_BATCH 1024
/* No walk of pt_sessions (a full table's, or a host's at its limit) follows
 * another by less than this: LAN hosts with many addresses and short sessions
 * cannot make every trigger walk the table. */
#define PT_RECLAIM_GAP_NS (100ULL * 1000 * 1000)

/* --- the daemon's sweep: ctx of the program pt_sweep, run with BPF_PROG_TEST_RUN -- */
/* The daemon removes expired state and recounts in the kernel, with the data
 * path's own decisions, instead of copying the tables to user space: it runs
 * pt_sweep (SEC("syscall"), in the daemon's thread, preemptible between hash
 * buckets) with this struct as its context, in and out. */
#define PT_SWEEP_SESSIONS (1U << 0)  /* walk pt_sessions: remove what is over, count the live */
#define PT_SWEEP_FLOWS (1U << 1)     /* walk pt_flows: end flows that are over, count the live */
#define PT_SWEEP_RECOUNT (1U << 2)   /* with SESSIONS: set pt_host_sessions to the live counts */
#define PT_SWEEP_SESSIONS6 (1U << 3) /* walk pt6_sessions likewise (with RECOUNT: pt6_host_sessions) */
#define PT_SWEEP_FLOWS6 (1U << 4)    /* walk pt6_flows likewise */
#define PT_SWEEP_HOST6 (1U << 5)     /* with SESSIONS6: only host6's sessions (no counts then) */

struct pt_sweep {
	__u64 now;                /* in: map clock (CLOCK_MONOTONIC + PT_CLOCK_BIAS_NS) */
	__u32 what;               /* in: PT_SWEEP_* */
	__be32 host;              /* in: only this LAN host's sessions (0 = all; no counts then) */
	__u64 sessions_next_ns;   /* out: earliest deadline of a live session seen; 0 = none */
	__u64 flows_next_ns;      /* out: earliest time a live flow seen can be over; 0 = none */
	__u32 sessions;           /* out: session entries seen */
	__u32 sessions_live;      /* out: live sessions (of `host`) */
	__u32 sessions_expired;   /* out: removed, idle past their rule's timeout */
	__u32 sessions_closed;    /* out: removed, their rule gone or disabled */
	__u32 flow_entries;       /* out: flow entries left, live */
	__u32 flows_live;         /* out: live flows (their inbound entries) */
	__u32 flow_entries_removed; /* out: flow entries removed */
	__u32 hosts_fixed;        /* out: per-host counts the recount corrected */
	__u32 hosts;              /* out: pt_host_sessions entries after a recount */
	__u32 _pad;
	/* IPv6 (PT_SWEEP_SESSIONS6, PT_SWEEP_FLOWS6): the same, over the pt6_ maps. */
	__be32 host6[4];          /* in: with PT_SWEEP_HOST6, only this LAN host's sessions */
	__u64 sessions6_next_ns;  /* out */
	__u64 flows6_next_ns;     /* out */
	__u32 sessions6;          /* out */
	__u32 sessions6_live;     /* out */
	__u32 sessions6_expired;  /* out */
	__u32 sessions6_closed;   /* out */
	__u32 flow6_entries;      /* out */
	__u32 flows6_live;        /* out */
	__u32 flow6_entries_removed; /* out */
	__u32 hosts6_fixed;       /* out */
	__u32 hosts6;             /* out: pt6_host_sessions entries after a recount */
	__u32 _pad6;
};

/* --- load-time options: .rodata.opts, written between open and load ------- */
#define PT_OPT_TEST_CLOCK (1U << 0)  /* tests: pt_now() reads pt_test_now_ns, not the kernel clock */

struct pt_load_opts {
	__u32 flags;            /* PT_OPT_* */
	__u32 _pad;
};

/* --- flows: hash map, two entries per flow (one per direction) ------------ */
#define PT_DIR_IN 1   /* WAN -> LAN packets, as they arrive on the WAN */
#define PT_DIR_OUT 2  /* LAN -> WAN replies, as they arrive on the LAN */

struct pt_flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;             /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;               /* PT_DIR_* */
	__u16 _pad;
};

/* TCP flags seen in one direction, for the flow timers. */
#define PT_SEEN_SYN (1U << 0)
#define PT_SEEN_ACK (1U << 1)   /* an ACK without SYN */
#define PT_SEEN_FIN (1U << 2)
#define PT_SEEN_RST (1U << 3)

struct pt_flow {
	__u64 created_ns;
	__u64 last_seen_ns;
	__be32 nat_addr;        /* IN: LAN host; OUT: WAN address */
	__be16 nat_port;        /* IN: LAN port; OUT: WAN port */
	__u16 rule;             /* rule id, host endianness */
	__be32 sess_peer;       /* peer field of the session key, to refresh it */
	__u32 ifindex;          /* interface to redirect to */
	__u32 seen;             /* PT_SEEN_* in this direction (atomically or'ed) */
	__u32 _pad;
};

/* --- frags: LRU hash map, first fragments translated recently ------------ */
/* Non-first fragments carry no L4 header, so they are matched to their first
 * fragment by (saddr, daddr, IP id, protocol) as they arrive (RFC 791). */
struct pt_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;              /* IP identification */
	__u8 proto;             /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;               /* PT_DIR_* */
};

struct pt_frag {
	__u64 first_ns;         /* pt_now() when the first fragment was translated */
	__be32 nat_addr;        /* IN: LAN host (new daddr); OUT: WAN address (new saddr) */
	__u32 ifindex;          /* interface to redirect to */
};

/* --- IPv6 pinholes (SPEC 9) ------------------------------------------------ */
/* No address translation: an open session lets inbound connections reach the
 * LAN host's own address (port translation `A-B -> C` still applies). The
 * IPv6 state lives in its own maps, sized like the IPv4 ones from `limits`;
 * `sessions_per_host` counts per address family (SPEC 9: sections 4, 5 and 8
 * hold per family), per host address. Addresses are in network order. */

/* pt6_sessions: hash. Peer mode `any`: one session per (rule, LAN host)
 * (IPv6 hosts do not conflict: host = the host, peer = ::). Mode
 * `contacted`: one per (rule, remote peer) that one host owns (host = ::,
 * peer = the peer; the owner is in the value), so that `conflict` decides
 * between hosts as in IPv4. */
struct pt6_session_key {
	__u32 rule;             /* rule id, host endianness */
	__u32 _pad;
	__be32 host[4];         /* mode any: the LAN host; mode contacted: :: */
	__be32 peer[4];         /* mode contacted: the remote peer; mode any: :: */
};

struct pt6_session {
	__u64 opened_ns;
	__u64 last_seen_ns;
	__be32 host[4];         /* LAN host that owns the session */
	__u32 ifindex;          /* LAN interface the host was last seen on */
	__u32 _pad;
};

/* pt6_host_sessions: hash, LAN host address -> struct pt_host. */
struct pt6_addr {
	__be32 a[4];
};

/* pt6_flows: hash, two entries per flow (PT_DIR_IN as the remote's packets
 * arrive on the WAN, dport = the open WAN port; PT_DIR_OUT as the host's
 * replies arrive on the LAN, sport = the LAN port). */
struct pt6_flow_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;             /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;               /* PT_DIR_* */
	__u16 _pad;
};

#define PT6_FLOW_CONTACTED (1U << 0)  /* its session is keyed by peer (mode contacted) */

struct pt6_flow {
	__u64 created_ns;
	__u64 last_seen_ns;
	__be16 nat_port;        /* IN: LAN port (new dport); OUT: WAN port (new sport) */
	__u16 rule;             /* rule id, host endianness */
	__u32 ifindex;          /* interface to redirect to */
	__u32 seen;             /* PT_SEEN_* in this direction (atomically or'ed) */
	__u32 flags;            /* PT6_FLOW_* */
};

/* pt6_frags: LRU hash, first fragments passed recently, so that the later
 * fragments (no L4 header) follow them (RFC 8200 4.5: identification is 32
 * bits; the key is the fragment header's, with the upper-layer protocol). */
struct pt6_frag_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 id;              /* fragment header identification */
	__u8 proto;             /* the fragment header's next header (TCP, UDP, or the
				 * destination options that precede them) */
	__u8 dir;               /* PT_DIR_* */
	__u16 _pad;
};

struct pt6_frag {
	__u64 first_ns;
	__u32 ifindex;          /* interface to redirect to */
	__u32 _pad;
};

/* pt6_lan_nets: LPM trie of the LAN's IPv6 prefixes (from the LAN interfaces,
 * followed; and lan_networks); value: the prefix length. pt6_local_addrs:
 * hash of the gateway's own IPv6 addresses (never triggers, never pinhole
 * targets), value 1. */
struct pt_lpm_v6 {
	__u32 prefixlen;
	__be32 addr[4];
};

/* --- counters -------------------------------------------------------------- */
/* Counters are kept per address family (enum pt_family). */
enum pt_family {
	PT_F_IPV4 = 0,
	PT_F_IPV6,
	PT_F__COUNT,
};
/* rule_stats: per-CPU array indexed by
 * (family * PT_MAX_RULES + rule id) * PT_RC__COUNT + counter. */
enum pt_rule_counter {
	PT_RC_TRIGGER_HITS = 0,
	PT_RC_SESSIONS_OPENED,
	PT_RC_REFUSED_CONFLICT,
	PT_RC_REFUSED_HOST_LIMIT,
	PT_RC_REFUSED_MAP_FULL,
	PT_RC_FLOWS_OPENED,
	PT_RC_FLOWS_REFUSED,
	PT_RC_SESSIONS_EXPIRED,   /* written by the daemon's sweeper */
	PT_RC__COUNT,
};

/* pkt_stats: per-CPU array indexed by
 * (family * PT_D__COUNT + direction) * PT_V__COUNT + verdict. */
enum pt_direction {
	PT_D_LAN = 0,             /* packets seen on LAN ingress */
	PT_D_WAN,                 /* packets seen on WAN ingress */
	PT_D__COUNT,
};

enum pt_verdict {
	PT_V_PASS = 0,            /* matched nothing, passed untouched */
	PT_V_TRIGGER,             /* trigger packet, passed untouched */
	PT_V_TRANSLATED,          /* flow packet, rewritten and redirected */
	PT_V_DROPPED,             /* dropped (TTL / hop limit exceeded) */
	PT_V_MALFORMED,           /* bad header, passed untouched */
	PT_V__COUNT,
};

/* --- XDP fast path (datapath.xdp, bpf/xdp.h): not pinned, made per object -- */
/* xdp_config: array map, one entry, written by the daemon before it attaches. */
struct pt_xdp_config {
	__u8 wan_mac[6];        /* the WAN device's own address: the XDP path takes
				 * only frames sent to it (SPEC 8, PACKET_HOST) */
	__u16 all_off;          /* nonzero: pt_xdp_tx overflowed; every flow goes to TC */
	__u32 wan_ifindex;      /* the device pt_wan_xdp is attached to, and */
	__u32 netns_ino;        /* its network namespace (inode of /proc/self/ns/net):
				 * the tracepoints count that device's failures only */
};

/* xdp_tx: hash map, LAN ifindex -> why bpf_redirect() to it failed. Written by
 * the tracepoint programs when the kernel could not transmit a frame that
 * pt_wan_xdp redirected there; the XDP path then leaves that interface's
 * packets to TC: for good (until the daemon clears the map on reload) when
 * the device cannot take XDP frames (PT_XDP_TX_PERMANENT), else for
 * PT_XDP_TX_RETRY_NS after the last failure (a device going down, a driver
 * reconfiguring). The daemon marks interfaces that must not get XDP frames
 * (bridges, shaped LANs) with failures 0 and a positive err (PT_XDP_TX_*). */
struct pt_xdp_tx {
	__u64 since_ns;         /* map clock of the first failure */
	__u64 last_ns;          /* map clock of the last failure */
	__s32 err;              /* -errno of the first failure, or PT_XDP_TX_BRIDGE / _SHAPED */
	__u32 failures;         /* failed batches (xdp_devmap_xmit) or frames (xdp_redirect_err) */
};
#define PT_XDP_TX_MAX 64
#define PT_XDP_TX_RETRY_NS (1000ULL * 1000 * 1000)
/* Marks of the daemon (positive, unlike an errno). */
#define PT_XDP_TX_BRIDGE 1      /* a bridge: no ndo_xdp_xmit */
#define PT_XDP_TX_SHAPED 2      /* a qdisc or egress filter that XDP frames would bypass */

/* xdp_stats: per-CPU array of packet counters of pt_wan_xdp. */
enum pt_xdp_counter {
	PT_XDP_REDIRECTED = 0,    /* translated and redirected by XDP */
	PT_XDP_PASSED,            /* left to the stack and TC (not an established flow's plain packet) */
	PT_XDP_FALLBACK,          /* an established flow's packet left to TC: XDP cannot transmit to its LAN interface */
	PT_XDP__COUNT,
};

#endif /* PORTTRIG_ABI_H */
