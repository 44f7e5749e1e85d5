// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * porttrig data path: two TC (clsact ingress) programs.
 *
 *  pt_lan_ingress  on every LAN interface: translates replies of accepted flows
 *                  back to the WAN address, and arms sessions on trigger packets
 *                  (in the kernel, before the trigger packet goes on).
 *  pt_wan_ingress  on the WAN interface: opens flows for inbound connections to
 *                  open ports of open sessions and rewrites them to the LAN host.
 *
 * Translated packets are sent straight to the egress interface with
 * bpf_redirect_neigh(), or with bpf_redirect() after a FIB lookup for most
 * packets of an established flow (bpf_redirect() to a layer-3 WAN;
 * redirect.h): they never meet netfilter's forward chain or conntrack, so a
 * gateway with a "forward policy drop" firewall needs no extra rule.
 *
 * Each program comes in two builds of one body: for Ethernet devices and,
 * suffixed _l3, for layer-3 devices (PPP, TUN, WireGuard), which have no
 * link-layer header at TC ingress. The daemon attaches the one that matches
 * the interface's link type; the offset of the IPv4 header is a constant in
 * each, so the Ethernet build pays nothing for the other.
 * Everything else leaves with TC_ACT_UNSPEC, untouched byte for byte, so that
 * other TC filters still see it.
 *
 * IPv6 (SPEC 9) has programs of its own, bpf/ipv6/ingress6.h, which these
 * tail-call for a packet whose skb->protocol is IPv6 (pt6_tail()).
 *
 * The rare paths (ICMP errors, non-first fragments, a flow's first packet) are
 * BPF-to-BPF calls (__noinline), not inlined: inlined, they made the compiler
 * keep their values alive through the whole program, and the miss path paid
 * for it in stack spills (make bench: WAN miss 32 -> 26 ns).
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "porttrig_abi.h"
#include "parsing.h"
#include "csum.h"
#include "conntrack.h"
#include "mtu.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Every map is pinned by name under the daemon's pin_path, so sessions and
 * flows outlive the daemon; sizes of the big ones are set from `limits`. */

/* Runtime settings (WAN address, limits); one entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pt_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_config SEC(".maps");

/* Rule settings by rule id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PT_MAX_RULES);
	__type(key, __u32);
	__type(value, struct pt_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_rules SEC(".maps");

/* Rule names by rule id: read only by the daemon, to adopt pinned state. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PT_MAX_RULES);
	__type(key, __u32);
	__type(value, struct pt_rule_name);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_rule_names SEC(".maps");

/* Per (protocol, port): rules it triggers, the rule that opens it, and whether
 * it is a LAN-side port of some open spec. An array: one inlined load per
 * lookup, so the miss path costs no hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PT_PORT_SLOTS);
	__type(key, __u32);
	__type(value, struct pt_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_ports SEC(".maps");

/* Open sessions. max_entries = limits.sessions. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pt_session_key);
	__type(value, struct pt_session);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_sessions SEC(".maps");

/* Sessions per LAN host, for limits.sessions_per_host. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __be32);
	__type(value, struct pt_host);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_host_sessions SEC(".maps");

/* When the data path last reclaimed expired sessions and flows (pt_reclaim_sessions(), pt_reclaim_flows()). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PT_RECLAIM__COUNT);
	__type(key, __u32);
	__type(value, struct pt_reclaim);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_reclaim_state SEC(".maps");

/* Accepted flows, one entry per direction. max_entries = 2 * limits.flows. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * 262144);
	__type(key, struct pt_flow_key);
	__type(value, struct pt_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_flows SEC(".maps");

/* Translations of fragmented datagrams, by their first fragment, so that the
 * non-first fragments (no L4 header, no ports) follow it (SPEC 5). Written
 * and read only for fragments; LRU, so a flood of them evicts old entries
 * rather than failing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PT_FRAG_SLOTS);
	__type(key, struct pt_frag_key);
	__type(value, struct pt_frag);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_frags SEC(".maps");

/* The gateway's own IPv4 addresses: traffic to them never triggers. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __be32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_local_addrs SEC(".maps");

struct pt_lpm_v4 {
	__u32 prefixlen;
	__be32 addr;
};

/* LAN subnets: packets arriving on the WAN from these are never translated.
 * The value is the prefix length (1: unknown, as older daemons wrote it), so
 * that a subnet's broadcast address is not taken for a LAN host. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pt_lpm_v4);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_lan_nets SEC(".maps");

/* Interfaces the daemon attached to (ifindex -> PT_ATTACH_*); read only by
 * the daemon, so that `porttrig detach` removes just what porttrig created. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_attach SEC(".maps");

/* Per-family, per-rule counters (enum pt_rule_counter). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PT_F__COUNT * PT_MAX_RULES * PT_RC__COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_rule_stats SEC(".maps");

/* Packets by address family, direction and verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PT_F__COUNT * PT_D__COUNT * PT_V__COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_pkt_stats SEC(".maps");

/* Load-time options (PT_OPT_*), written into .rodata.opts between open and
 * load. The map is frozen, so the verifier knows the value and removes the
 * branches it rules out: a production load pays nothing for the test clock. */
const volatile struct pt_load_opts pt_opts SEC(".rodata.opts") = {};
/* The clock under PT_OPT_TEST_CLOCK, set by the tests through .data.clock, so
 * that BPF_PROG_TEST_RUN rows and the differential test run on simulated time. */
__u64 pt_test_now_ns SEC(".data.clock") = 0;

_Static_assert(sizeof(struct pt_host) == 16, "pt_host must have no implicit padding");
_Static_assert(sizeof(struct pt_port) == 16, "pt_port is read on every packet: keep it small");
_Static_assert(sizeof(struct pt_flow_key) == 16, "pt_flow_key must stay 16 bytes");
_Static_assert(sizeof(struct pt_session_key) == 8, "pt_session_key must stay 8 bytes");
_Static_assert(sizeof(struct pt_frag_key) == 12, "pt_frag_key must have no padding");
/* pt_flow_fate() skips the partner lookup for a flow idle no longer than
 * PT_FLOW_ORPHAN_NS: exact only while no flow timer is shorter. */
_Static_assert(PT_FLOW_ORPHAN_NS <= PT_FLOW_TIMEOUT_TCP_TRANS_NS &&
	       PT_FLOW_ORPHAN_NS <= PT_FLOW_TIMEOUT_UDP_NS &&
	       PT_FLOW_ORPHAN_NS <= PT_FLOW_TIMEOUT_TCP_EST_NS, "orphan timeout must be the shortest");

/* Count the packet's verdict (per address family, direction and verdict:
 * family 0, IPv4, keeps the indices of layouts before 7) and return `act`. */
static __always_inline int pt_done(enum pt_family fam, enum pt_direction dir, enum pt_verdict v, int act)
{
	__u32 idx = (fam * PT_D__COUNT + dir) * PT_V__COUNT + v;
	__u64 *n = bpf_map_lookup_elem(&pt_pkt_stats, &idx);
	if (n)
		*n += 1;
	return act;
}

static __always_inline void pt_count(enum pt_family fam, __u32 rule, enum pt_rule_counter c)
{
	__u32 idx = (fam * PT_MAX_RULES + rule) * PT_RC__COUNT + c;
	__u64 *n = bpf_map_lookup_elem(&pt_rule_stats, &idx);
	if (n)
		*n += 1;
}

/* The flow key of a packet as it arrives, in direction `dir`. */
static __always_inline struct pt_flow_key pt_flow_key_of(const struct pt_pkt *p, __u8 dir)
{
	struct pt_flow_key k = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.dir = dir,
	};
	return k;
}

/*
 * The clock of every timestamp in the maps (see PT_CLOCK_BIAS_NS).
 * CLOCK_MONOTONIC_COARSE: the time of the last timer tick, at most one tick
 * (PT_CLOCK_TICK_MAX_NS) behind CLOCK_MONOTONIC. bpf_ktime_get_ns() reads the
 * clock source and costs ~30 ns a call on a VM, bpf_ktime_get_coarse_ns()
 * ~8 ns (make bench); the timers it serves are >= 1 s.
 */
static __always_inline __u64 pt_now(void)
{
	if (pt_opts.flags & PT_OPT_TEST_CLOCK)
		return pt_test_now_ns;
	return bpf_ktime_get_coarse_ns() + PT_CLOCK_BIAS_NS;
}

static __always_inline struct pt_port *pt_port_slot(__u8 proto, __be16 port)
{
	__u32 idx = (proto == IPPROTO_UDP ? PT_PROTO_IDX_UDP : PT_PROTO_IDX_TCP) * PT_PORTS_PER_PROTO +
		    bpf_ntohs(port);
	return bpf_map_lookup_elem(&pt_ports, &idx);
}

/* Is the timestamp older than PT_REFRESH_GRANULARITY_NS (due a refresh)? */
static __always_inline bool pt_stale(__u64 stamp, __u64 now)
{
	return (__s64)(now - stamp) > (__s64)PT_REFRESH_GRANULARITY_NS;
}

static __always_inline void pt_touch(__u64 *stamp, __u64 now)
{
	if (pt_stale(*stamp, now))
		*stamp = now;
}

/* A session is live while its idle time is within the rule's timeout. Signed:
 * another CPU may have stamped last_seen a hair after our `now`. */
static __always_inline bool pt_live_until(__u64 last_seen_ns, __u64 idle_ns, __u64 now)
{
	return (__s64)(now - last_seen_ns) <= (__s64)idle_ns;
}

enum pt_take {
	PT_TAKE_OK = 0,
	PT_TAKE_LIMIT,      /* the host holds sessions_per_host live sessions */
	PT_TAKE_FULL,       /* pt_host_sessions itself is full */
};

static __noinline bool pt_reclaim_sessions(__u64 now);
static __noinline void pt_reclaim_host(__be32 host, __u64 now);

/* Lower h->recheck_ns to `until` (racy min: a lost update only makes a later
 * scan wait for the next sweep; the daemon's recount resets it to 0). */
static __always_inline void pt_host_until(struct pt_host *h, __u64 until)
{
	__u64 cur = h->recheck_ns;
	if (cur == 0 || (__s64)(until - cur) < 0)
		h->recheck_ns = until;
}

/* One attempt to take a session slot for the host whose key is `host` in
 * `hosts` (pt_host_sessions or pt6_host_sessions: a constant at every inlined
 * call site), whose new session lives until `until` unless refreshed. */
static __always_inline enum pt_take pt_host_take_in(void *hosts, const void *host, __u32 limit, __u64 until)
{
	struct pt_host *h = bpf_map_lookup_elem(hosts, host);
	if (!h) {
		struct pt_host one = { .sessions = 1, .recheck_ns = until };
		if (limit < 1)
			return PT_TAKE_LIMIT;
		if (!bpf_map_update_elem(hosts, host, &one, BPF_NOEXIST))
			return PT_TAKE_OK;
		/* Lost a race with another CPU (EEXIST), or the map is full. */
		h = bpf_map_lookup_elem(hosts, host);
		if (!h)
			return PT_TAKE_FULL;
	}
	if (__sync_fetch_and_add(&h->sessions, 1) >= limit) {
		__sync_fetch_and_sub(&h->sessions, 1);
		return PT_TAKE_LIMIT;
	}
	pt_host_until(h, until);
	return PT_TAKE_OK;
}

static __always_inline enum pt_take pt_host_take_once(__be32 host, __u32 limit, __u64 until)
{
	return pt_host_take_in(&pt_host_sessions, &host, limit, until);
}

/*
 * Take one session slot for `host`. Expired sessions do not count (SPEC 4.6):
 * a host at its limit whose earliest session deadline (recheck_ns) has passed
 * gets its expired sessions removed (pt_reclaim_host) and tries again; a full
 * pt_host_sessions gets the expired sessions of every host removed.
 */
static __always_inline enum pt_take pt_host_take(__be32 host, __u32 limit, __u64 now, __u64 until)
{
	enum pt_take t = pt_host_take_once(host, limit, until);
	if (t == PT_TAKE_LIMIT) {
		struct pt_host *h = bpf_map_lookup_elem(&pt_host_sessions, &host);
		if (!h || (h->recheck_ns && (__s64)(now - h->recheck_ns) <= 0))
			return t;
		pt_reclaim_host(host, now);
	} else if (t == PT_TAKE_FULL) {
		if (!pt_reclaim_sessions(now))
			return t;
	} else {
		return t;
	}
	return pt_host_take_once(host, limit, until);
}

/* Give a slot back; the entry goes when it reaches zero, so that hosts that
 * hold nothing never fill pt_host_sessions. A take racing the delete can lose
 * one count; the daemon's sweep recounts every second. */
static __always_inline void pt_host_release_in(void *hosts, const void *host)
{
	struct pt_host *h = bpf_map_lookup_elem(hosts, host);
	if (h && h->sessions > 0 && __sync_fetch_and_sub(&h->sessions, 1) == 1)
		bpf_map_delete_elem(hosts, host);
}

static __always_inline void pt_host_release(__be32 host)
{
	pt_host_release_in(&pt_host_sessions, &host);
}

/*
 * Open or refresh the session (rule, host[, peer]) for a trigger packet, per
 * SPEC 4.1-4.6. New values go in with one map update, so a reader on another
 * CPU sees either the old session or the new one, never a mix. What a
 * decision needs of the session is copied before any helper call: another CPU
 * may delete the entry and reuse its memory meanwhile.
 */
static __noinline void pt_arm(__u32 id, const struct pt_pkt *p, __u32 ifindex,
				   const struct pt_config *cfg, __u64 now)
{
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &id);
	if (!rule)
		return;
	__u32 flags = rule->flags;
	__u64 idle = rule->idle_timeout_ns;
	if (!(flags & PT_RULE_ENABLED))
		return;

	struct pt_session_key key = {
		.rule = id,
		.peer = (flags & PT_RULE_PEER_CONTACTED) ? p->daddr : 0,
	};
	struct pt_session *s = bpf_map_lookup_elem(&pt_sessions, &key);
	__be32 old_host = 0;
	bool keep_slot = false;  /* the host already holds this session's slot */

	if (s) {
		__be32 s_host = s->host;
		if (pt_live_until(s->last_seen_ns, idle, now)) {
			if (s_host == p->saddr) {
				pt_touch(&s->last_seen_ns, now);
				if (s->ifindex != ifindex)
					s->ifindex = ifindex;
				pt_count(PT_F_IPV4, id, PT_RC_TRIGGER_HITS);
				return;
			}
			if (!(flags & PT_RULE_CONFLICT_LAST)) {
				pt_count(PT_F_IPV4, id, PT_RC_TRIGGER_HITS);
				pt_count(PT_F_IPV4, id, PT_RC_REFUSED_CONFLICT);
				return;
			}
			old_host = s_host;      /* conflict: last -> take it over */
		} else if (s_host == p->saddr) {
			/* Expired but not removed yet: as good as absent (SPEC 4.3). */
			keep_slot = true;
		} else {
			old_host = s_host;
		}
	}
	pt_count(PT_F_IPV4, id, PT_RC_TRIGGER_HITS);

	struct pt_session fresh = {
		.opened_ns = now,
		.last_seen_ns = now,
		.host = p->saddr,
		.ifindex = ifindex,
	};
	if (!keep_slot) {
		enum pt_take t = pt_host_take(p->saddr, cfg->sessions_per_host, now, now + idle);
		if (t != PT_TAKE_OK) {
			pt_count(PT_F_IPV4, id, t == PT_TAKE_LIMIT ? PT_RC_REFUSED_HOST_LIMIT : PT_RC_REFUSED_MAP_FULL);
			return;
		}
	}
	if (old_host) {
		/* A reclaim in pt_host_take() may have removed the old session
		 * already, and given its slot back with it. */
		struct pt_session *cur = bpf_map_lookup_elem(&pt_sessions, &key);
		if (!cur || cur->host != old_host)
			old_host = 0;
	}
	long err = bpf_map_update_elem(&pt_sessions, &key, &fresh, BPF_ANY);
	if (err == -E2BIG && pt_reclaim_sessions(now))
		err = bpf_map_update_elem(&pt_sessions, &key, &fresh, BPF_ANY);
	if (err) {
		if (!keep_slot)
			pt_host_release(p->saddr);
		pt_count(PT_F_IPV4, id, PT_RC_REFUSED_MAP_FULL);
		return;
	}
	if (old_host)
		pt_host_release(old_host);
	pt_count(PT_F_IPV4, id, PT_RC_SESSIONS_OPENED);
}

/*
 * Rewrite the destination (dst = true) or source address of the IPv4 header
 * and decrement the TTL, fixing the header checksum incrementally (RFC 1624).
 * Direct writes: the header checksum compensates them, so a CHECKSUM_COMPLETE
 * skb->csum stays right.
 */
static __always_inline int pt_rewrite_l3(struct __sk_buff *skb, const struct pt_pkt *p, bool dst,
					 __be32 old_addr, __be32 addr)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + PT_L3_OFF(p);
	if ((void *)(ip + 1) > data_end)
		return -1;

	/* TTL and protocol share one 16-bit word of the header. */
	__u16 *ttl_word = (void *)&ip->ttl;
	__u16 old_ttl_word = *ttl_word;
	ip->ttl -= 1;
	__sum16 check = pt_csum_update16(ip->check, old_ttl_word, *ttl_word);
	ip->check = pt_csum_update32(check, old_addr, addr);
	if (dst)
		ip->daddr = addr;
	else
		ip->saddr = addr;
	return 0;
}

/*
 * Rewrite the destination (dst = true) or source address and port, decrement
 * the TTL, fix the IP checksum directly and the L4 checksum through
 * bpf_l4_csum_replace(), which knows whether the skb carries a full checksum
 * or a CHECKSUM_PARTIAL pseudo-header sum (veth, local senders). UDP checksum
 * 0 ("none", RFC 768) stays 0 (BPF_F_MARK_MANGLED_0). A non-first fragment
 * has no L4 header: only its IP header changes.
 */
static __always_inline int pt_rewrite(struct __sk_buff *skb, const struct pt_pkt *p, bool dst,
				      __be32 addr, __be16 port)
{
	__be32 old_addr = dst ? p->daddr : p->saddr;
	__be16 old_port = dst ? p->dport : p->sport;
	__u32 l4_off = p->l4_off & 0x7f;  /* <= ETH_HLEN + 60: bounded for the verifier */

	if (!p->nonfirst_frag) {
		bool udp = p->proto == IPPROTO_UDP;
		__u32 csum_off = l4_off + (udp ? offsetof(struct udphdr, check) : offsetof(struct tcphdr, check));
		__u64 mangled0 = udp ? BPF_F_MARK_MANGLED_0 : 0;

		if (bpf_l4_csum_replace(skb, csum_off, old_addr, addr, BPF_F_PSEUDO_HDR | sizeof(addr) | mangled0))
			return -1;
		if (port != old_port &&
		    bpf_l4_csum_replace(skb, csum_off, old_port, port, sizeof(port) | mangled0))
			return -1;
	}
	if (pt_rewrite_l3(skb, p, dst, old_addr, addr))
		return -1;
	if (!p->nonfirst_frag) {
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		__be16 *ports = data + l4_off;
		if ((void *)(ports + 2) > data_end)
			return -1;
		ports[dst ? 1 : 0] = port;
	}
	return 0;
}

/* PT_SEEN_* of a packet of protocol `proto` with TCP flags `f` (byte 13). */
static __always_inline __u32 pt_seen_of(__u8 proto, __u8 f)
{
	__u32 seen = 0;
	if (proto != IPPROTO_TCP)
		return 0;
	if (f & PT_TCP_SYN)
		seen |= PT_SEEN_SYN;
	else if (f & PT_TCP_ACK)
		seen |= PT_SEEN_ACK;
	if (f & PT_TCP_FIN)
		seen |= PT_SEEN_FIN;
	if (f & PT_TCP_RST)
		seen |= PT_SEEN_RST;
	return seen;
}

static __always_inline __u32 pt_seen_flags(const struct pt_pkt *p)
{
	return pt_seen_of(p->proto, p->tcp_flags);
}

/* The key of the other direction's entry of a flow (flows come in pairs). */
static __always_inline struct pt_flow_key pt_partner_key(const struct pt_flow_key *k, const struct pt_flow *f)
{
	struct pt_flow_key pk = { .proto = k->proto };
	if (k->dir == PT_DIR_IN) {
		pk.saddr = f->nat_addr;
		pk.daddr = k->saddr;
		pk.sport = f->nat_port;
		pk.dport = k->sport;
		pk.dir = PT_DIR_OUT;
	} else {
		pk.saddr = k->daddr;
		pk.daddr = f->nat_addr;
		pk.sport = k->dport;
		pk.dport = f->nat_port;
		pk.dir = PT_DIR_IN;
	}
	return pk;
}

/* RFC 4787 / RFC 5382 timer of a flow from the TCP flags seen each way:
 * established once the LAN side answered with SYN and the remote acked. */
static __always_inline __u64 pt_flow_timeout(__u8 proto, __u32 in_seen, __u32 out_seen)
{
	if (proto != IPPROTO_TCP)
		return PT_FLOW_TIMEOUT_UDP_NS;
	if ((in_seen | out_seen) & (PT_SEEN_FIN | PT_SEEN_RST))
		return PT_FLOW_TIMEOUT_TCP_TRANS_NS;
	if ((out_seen & PT_SEEN_SYN) && (in_seen & PT_SEEN_ACK))
		return PT_FLOW_TIMEOUT_TCP_EST_NS;
	return PT_FLOW_TIMEOUT_TCP_TRANS_NS;
}

enum pt_fate {
	PT_FATE_LIVE = 0,
	PT_FATE_EXPIRED,    /* idle beyond its flow timer */
	PT_FATE_ORPHAN,     /* the other direction's entry is gone */
	PT_FATE_KILLED,     /* kill_flows_on_expiry: its session ended or changed hands */
};

/* The fate of a flow by its timer (RFC 4787 / RFC 5382), from both of its
 * entries' stamps and TCP flags: `in` says whether (last, seen) are the
 * inbound entry's. Address-independent: both families' flows use it. */
static __always_inline enum pt_fate pt_flow_timer_fate(__u8 proto, bool in, __u64 last, __u32 seen,
						       __u64 pf_last, __u32 pf_seen, __u64 now)
{
	__u64 newest = last > pf_last ? last : pf_last;
	__u64 timeout = pt_flow_timeout(proto, in ? seen : pf_seen, in ? pf_seen : seen);
	return (__s64)(now - newest) > (__s64)timeout ? PT_FATE_EXPIRED : PT_FATE_LIVE;
}

/*
 * What becomes of the flow of entry `fv` (key `k`, a copy of the entry): the
 * decision of flowFate() in src/core/sweep.ts, which the daemon's sweeper
 * makes, to the letter (test/bpf/datapath.test.ts compares both on a table).
 * `rflags`: the flags of the flow's rule; `owned`: the flow's session is live
 * and held by the flow's LAN host.
 */
static __always_inline enum pt_fate pt_flow_fate(const struct pt_flow_key *k, const struct pt_flow *fv,
						 __u32 rflags, bool owned, __u64 now)
{
	/* A reload that removed or disabled the rule closed its ports: its flows
	 * end with it (the sweeper decides the same, flowFate()). */
	if (!(rflags & PT_RULE_ENABLED))
		return PT_FATE_KILLED;
	if ((rflags & PT_RULE_KILL_FLOWS) && !owned)
		return PT_FATE_KILLED;
	/* Busy flows stop here: every timer is at least PT_FLOW_ORPHAN_NS and the
	 * flow's last packet is at least as recent as this entry's. */
	if ((__s64)(now - fv->last_seen_ns) <= (__s64)PT_FLOW_ORPHAN_NS)
		return PT_FATE_LIVE;
	struct pt_flow_key pk = pt_partner_key(k, fv);
	struct pt_flow *pf = bpf_map_lookup_elem(&pt_flows, &pk);
	if (!pf)
		return PT_FATE_ORPHAN;
	return pt_flow_timer_fate(k->proto, k->dir == PT_DIR_IN, fv->last_seen_ns, fv->seen,
				  pf->last_seen_ns, pf->seen, now);
}

/* A flow entry found for a packet, with what forwarding on it needs. */
struct pt_flow_ref {
	/* The entry in the map: its stamp and TCP flags are refreshed through it. */
	struct pt_flow *f;
	/* A copy of the entry taken right after the lookup, before any helper
	 * call: what the data path decides and translates with. Another CPU may
	 * delete the entry meanwhile, and the map reuse its memory for another flow. */
	struct pt_flow fv;
	/* The flow's session, if it was looked up and is live and held by the
	 * flow's host; else NULL. Refreshed only by outbound packets (SPEC 4.2). */
	struct pt_session *s;
	/* The session was looked up: `s == NULL` then means not live or not owned. */
	bool looked_up;
	__u64 now;
};

/*
 * Judge the flow entry (k, fv) at `now`: its fate, and its session when the
 * fate or the caller needs it (`want_session`).
 */
static __always_inline enum pt_fate pt_flow_judge(const struct pt_flow_key *k, const struct pt_flow *fv,
						  __u64 now, bool want_session, struct pt_session **sp)
{
	__u32 rid = fv->rule;
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &rid);
	__u32 rflags = rule ? rule->flags : 0;
	__u64 idle = rule ? rule->idle_timeout_ns : 0;
	bool owned = false;

	/* Flows live on open ports only: the flow's WAN port must still be held
	 * by the flow's rule and still reach the flow's LAN port. A reload that
	 * gave the port to another rule, or changed its translation, ends the
	 * flow like one that disabled its rule (applyRules() removes such flows
	 * from the map at once). */
	bool in = k->dir == PT_DIR_IN;
	struct pt_port *pp = pt_port_slot(k->proto, in ? k->dport : fv->nat_port);
	if (!pp || pp->open_rule != rid || pp->open_lan_port != bpf_ntohs(in ? fv->nat_port : k->sport))
		rflags = 0;

	*sp = NULL;
	if ((rflags & PT_RULE_ENABLED) && ((rflags & PT_RULE_KILL_FLOWS) || want_session)) {
		struct pt_session_key skey = { .rule = rid, .peer = fv->sess_peer };
		struct pt_session *s = bpf_map_lookup_elem(&pt_sessions, &skey);
		if (s) {
			__be32 host = k->dir == PT_DIR_IN ? fv->nat_addr : k->saddr;
			owned = s->host == host && pt_live_until(s->last_seen_ns, idle, now);
			if (owned)
				*sp = s;
		}
	}
	return pt_flow_fate(k, fv, rflags, owned, now);
}

/*
 * End the flow whose entry (k, fv) was judged over: delete both entries, each
 * only if it is still the entry that was judged (same creation stamp and
 * translation). Another CPU may have ended it already and opened a new flow
 * on the same 5-tuple; that one stays. A hash map has no compare-and-delete,
 * so a window of a few instructions remains between the check and the delete:
 * losing a flow opened in it costs that connection its first packet (a
 * retransmission opens it again), never a mis-translation.
 */
static __noinline int pt_flow_end(const struct pt_flow_key *k, const struct pt_flow *fv)
{
	int removed = 0;
	struct pt_flow_key pk = pt_partner_key(k, fv);
	struct pt_flow *f = bpf_map_lookup_elem(&pt_flows, &pk);
	if (f && f->created_ns == fv->created_ns && !bpf_map_delete_elem(&pt_flows, &pk))
		removed++;
	f = bpf_map_lookup_elem(&pt_flows, k);
	if (f && f->created_ns == fv->created_ns && f->nat_addr == fv->nat_addr && f->nat_port == fv->nat_port &&
	    !bpf_map_delete_elem(&pt_flows, k))
		removed++;
	return removed;  /* entries removed: the daemon's sweep tallies them */
}

/*
 * Look up the flow entry `k`. A flow that is over (pt_flow_fate) is absent
 * at once, whether or not a daemon runs to sweep it (SPEC 5, 6): both its
 * entries are deleted here, so that the same 5-tuple may open a new flow.
 * The clock is read only on a hit, so a miss costs one hash lookup.
 *
 * The session is looked up only when its state decides the flow's fate
 * (kill_flows_on_expiry), when the caller asks (`want_session`: a bare SYN,
 * pt_syn_reopens()), or when an outbound packet finds the flow's stamp due a
 * refresh, which then refreshes the session too (SPEC 4.2): a busy flow pays
 * the session's hash lookup once per PT_REFRESH_GRANULARITY_NS, not per
 * packet, and its session's stamp lags its host's last packet by at most
 * twice that (the flow's granularity, then the session's own), far below the
 * 1 s minimum timeout. Inbound packets never refresh the session: only the
 * LAN host keeps its ports open (RFC 4787 REQ-6, RFC 6092 REC-16).
 */
static __always_inline bool pt_flow_get(const struct pt_flow_key *k, struct pt_flow_ref *ref, bool want_session)
{
	struct pt_flow *f = bpf_map_lookup_elem(&pt_flows, k);
	if (!f)
		return false;
	ref->fv = *f;
	__u64 now = pt_now();
	bool out = k->dir == PT_DIR_OUT;
	/* An outbound entry not touched since its flow opened (the LAN host's
	 * first packets, within PT_REFRESH_GRANULARITY_NS of the inbound one)
	 * refreshes the session too: its stamp does not move yet, so staleness
	 * alone would skip the host's first answer. */
	want_session |= out && (pt_stale(ref->fv.last_seen_ns, now) || ref->fv.last_seen_ns == ref->fv.created_ns);
	if (pt_flow_judge(k, &ref->fv, now, want_session, &ref->s) != PT_FATE_LIVE) {
		pt_flow_end(k, &ref->fv);
		return false;
	}
	ref->f = f;
	ref->looked_up = want_session;
	ref->now = now;
	return true;
}

/* End the flow whose entry is `k` if it is over; true if there is none now. */
static __noinline bool pt_flow_clear(const struct pt_flow_key *k, __u64 now)
{
	struct pt_flow *f = bpf_map_lookup_elem(&pt_flows, k);
	if (!f)
		return true;
	struct pt_flow fv = *f;
	struct pt_session *s;
	if (pt_flow_judge(k, &fv, now, false, &s) == PT_FATE_LIVE)
		return false;
	pt_flow_end(k, &fv);
	return true;
}

/*
 * A bare SYN on the 5-tuple of a live flow entry: is it a new connection?
 * Yes when the flow has seen FIN or RST either way (the remote reuses its
 * source port after a close, RFC 793 TIME-WAIT assassination aside), or when
 * the flow's session is no longer live and held by the flow's host (expired,
 * or taken over under `conflict: last`): then the old flow ends and the SYN is
 * judged like any first packet (SPEC 5). A SYN retransmitted on a flow that is
 * still open goes on as that flow.
 */
static __noinline bool pt_syn_reopens(const struct pt_flow_key *k, const struct pt_flow_ref *ref)
{
	if (!ref->s)
		return true;
	if (ref->fv.seen & (PT_SEEN_FIN | PT_SEEN_RST))
		return true;
	struct pt_flow_key pk = pt_partner_key(k, &ref->fv);
	struct pt_flow *pf = bpf_map_lookup_elem(&pt_flows, &pk);
	return pf && (pf->seen & (PT_SEEN_FIN | PT_SEEN_RST));
}

/* --- reclaiming expired state (no daemon needed) --------------------------- */

struct bpf_map;  /* the kernel's; callbacks get a pointer they do not use */

struct pt_reclaim_ctx {
	__u64 now;
	__u64 next_ns;      /* earliest deadline of a live session (or flow) seen; 0 = none */
	__u64 host_next_ns; /* the same among `host`'s sessions */
	struct pt_reclaim *st;  /* the scan's budget (st->freed); NULL: no budget */
	__be32 host;        /* the host whose live sessions are counted; 0 = every host's */
	__u32 live;         /* live sessions (or flows) seen (of `host`) */
	__u32 freed;        /* 1: an entry was removed */
	__u32 sweep;        /* the daemon's sweep (pt_sweep): PT_SWEEP_* it asked for; 0 = data path */
	/* Tallies of the daemon's sweep (struct pt_sweep), only ever incremented. */
	__u32 seen;
	__u32 expired;
	__u32 closed;
	__u32 removed;
	__u32 fixed;
	__u32 hosts;
};
/* The verifier explores a bpf_for_each_map_elem() callback until the state it
 * leaves in the context converges (kernel 6.8+): the context holds nothing
 * that the programs branch on and that could take unboundedly many values
 * (`freed` is a flag, `live` is only stored; the budget is counted in the
 * map value, which the verifier does not track). */

/* Count one removal against the scan's budget: 1 (stop) once it is spent. */
static __always_inline long pt_reclaim_spend(struct pt_reclaim *st, __u32 *freed)
{
	*freed = 1;
	if (!st)
		return 0;
	if (++st->freed < PT_RECLAIM_BATCH)
		return 0;
	st->more = 1;
	return 1;
}

static __always_inline long pt_reclaim_spent(struct pt_reclaim_ctx *c)
{
	return pt_reclaim_spend(c->st, &c->freed);
}

/* What the daemon's sweep (pt_sweep) leaves behind. `live`: live sessions per
 * rule id, counted over pt_sessions (live6: over pt6_sessions): what porttrig_sessions_active reads,
 * instead of the map; at offset 0, where the daemon reads it. `last`: the last
 * sweep's context as it returned, for `bpftool map dump`; it also puts struct
 * pt_sweep in the object's BTF, which the program's void * context does not
 * (the ABI test reads the struct from there). */
struct {
	__u32 live[PT_MAX_RULES];
	__u32 live6[PT_MAX_RULES];   /* the same over pt6_sessions (PT_SWEEP_SESSIONS6) */
	struct pt_sweep last;
} pt_sweep_data SEC(".data.sweep") = {};

/* The daemon's sweep saw a live session of rule `rid` held by `host`: count
 * it for the rule and, in a recount, for the host (pt_host.recount). */
static __always_inline void pt_sweep_count_live(__u32 rid, __be32 host, bool recount)
{
	if (rid < PT_MAX_RULES)
		pt_sweep_data.live[rid]++;
	if (!recount)
		return;
	struct pt_host *h = bpf_map_lookup_elem(&pt_host_sessions, &host);
	if (h) {
		__sync_fetch_and_add(&h->recount, 1);
	} else {
		/* A count the data path lost: the recount's end sets it. */
		struct pt_host one = { .sessions = 0, .recount = 1 };
		bpf_map_update_elem(&pt_host_sessions, &host, &one, BPF_NOEXIST);
	}
}

/* bpf_for_each_map_elem() callback over pt_sessions: remove a session that
 * is expired or whose rule is gone or disabled, as the sweeper would
 * (planSweep()), giving its host's slot back. */
static long pt_reclaim_session_cb(struct bpf_map *map, const struct pt_session_key *k,
				  struct pt_session *s, struct pt_reclaim_ctx *c)
{
	struct pt_session_key key = *k;
	__be32 host = s->host;
	__u64 last = s->last_seen_ns;
	__u32 rid = key.rule;
	struct pt_rule *r = bpf_map_lookup_elem(&pt_rules, &rid);
	__u32 rflags = r ? r->flags : 0;
	__u64 idle = r ? r->idle_timeout_ns : 0;
	c->seen++;
	if ((rflags & PT_RULE_ENABLED) && pt_live_until(last, idle, c->now)) {
		__u64 until = last + idle;
		if (!c->next_ns || (__s64)(until - c->next_ns) < 0)
			c->next_ns = until;
		if (!c->host) {
			c->live++;
			if (c->sweep)
				pt_sweep_count_live(rid, host, c->sweep & PT_SWEEP_RECOUNT);
		} else if (host == c->host) {
			if (!c->host_next_ns || (__s64)(until - c->host_next_ns) < 0)
				c->host_next_ns = until;
			c->live++;
		}
		return 0;
	}
	if (bpf_map_delete_elem(&pt_sessions, &key))
		return 0;  /* someone else removed it, and released its slot */
	if (c->sweep & PT_SWEEP_RECOUNT) {
		/* The entry stays even at 0: it holds this recount's tally (a
		 * drifted count may reach 0 before the host's last session);
		 * the recount's end removes hosts left with no live session. */
		struct pt_host *h = bpf_map_lookup_elem(&pt_host_sessions, &host);
		if (h && h->sessions > 0)
			__sync_fetch_and_sub(&h->sessions, 1);
	} else {
		pt_host_release(host);
	}
	if (rflags & PT_RULE_ENABLED) {
		pt_count(PT_F_IPV4, rid, PT_RC_SESSIONS_EXPIRED);
		c->expired++;
	} else {
		c->closed++;
	}
	return pt_reclaim_spent(c);
}

/* bpf_for_each_map_elem() callback over pt_flows: end a flow that is over.
 * Under pressure only flows idle past the shortest flow timer are judged
 * (the rest cost one compare, not a partner lookup): orphans and flows ended
 * by kill_flows_on_expiry younger than that wait for the sweep or their next
 * packet. */
static long pt_reclaim_flow_cb(struct bpf_map *map, const struct pt_flow_key *k,
			       struct pt_flow *f, struct pt_reclaim_ctx *c)
{
	if ((__s64)(c->now - f->last_seen_ns) <= (__s64)PT_FLOW_TIMEOUT_TCP_TRANS_NS)
		return 0;
	struct pt_flow_key key = *k;
	struct pt_flow fv = *f;
	struct pt_session *s;
	if (pt_flow_judge(&key, &fv, c->now, false, &s) == PT_FATE_LIVE)
		return 0;
	pt_flow_end(&key, &fv);
	return pt_reclaim_spent(c);
}

/*
 * bpf_for_each_map_elem() callback of the daemon's sweep over pt_flows: end
 * a flow that is over (the same judgement as pt_reclaim_flow_cb and the
 * packets' own, pt_flow_judge()), count the live ones by their inbound
 * entry, and note the earliest time a live flow can run out of its timer: no
 * earlier than this entry's stamp plus the shortest timer its protocol has
 * (UDP 300 s, TCP 240 s), since a pair's last packet is at least as recent.
 * That bound needs no lookup of the other entry. Orphans, kill_flows_on_expiry
 * and reloads end flows at other times: the daemon also sweeps flows after
 * sessions expire, after reloads, and periodically.
 */
static long pt_sweep_flow_cb(struct bpf_map *map, const struct pt_flow_key *k,
			     struct pt_flow *f, struct pt_reclaim_ctx *c)
{
	struct pt_flow_key key = *k;
	struct pt_flow fv = *f;
	struct pt_session *s;
	if (pt_flow_judge(&key, &fv, c->now, false, &s) != PT_FATE_LIVE) {
		c->removed += pt_flow_end(&key, &fv);
		return 0;
	}
	c->seen++;  /* entries left: an entry removed with its partner is never visited */
	if (key.dir == PT_DIR_IN)
		c->live++;
	__u64 until = fv.last_seen_ns +
		      (key.proto == IPPROTO_TCP ? PT_FLOW_TIMEOUT_TCP_TRANS_NS : PT_FLOW_TIMEOUT_UDP_NS);
	if (!c->next_ns || (__s64)(until - c->next_ns) < 0)
		c->next_ns = until;
	return 0;
}

_Static_assert(PT_FLOW_TIMEOUT_TCP_TRANS_NS <= PT_FLOW_TIMEOUT_TCP_EST_NS,
	       "pt_sweep_flow_cb: the transitory timer is TCP's shortest");

/* Recount, end: a host's count is the live sessions the walk found;
 * a host with none goes. A session the data path opened meanwhile, after the
 * walk passed its bucket, is not in the recount: its host's count is then one
 * short until the next recount (the drift the recount exists to bound). */
static __always_inline long pt_recount_apply(void *hosts, const void *host, struct pt_host *h,
					     __u32 *nhosts, __u32 *fixed)
{
	__u32 n = h->recount;
	h->recount = 0;  /* ready for the next recount: no pass has to reset it first */
	if (h->sessions == n) {
		(*nhosts)++;
		return 0;
	}
	(*fixed)++;
	if (!n) {
		bpf_map_delete_elem(hosts, host);
		return 0;
	}
	(*nhosts)++;
	h->sessions = n;
	h->recheck_ns = 0;  /* the data path computes the next deadline itself */
	return 0;
}

static long pt_recount_apply_cb(struct bpf_map *map, const __be32 *k, struct pt_host *h, struct pt_reclaim_ctx *c)
{
	__be32 host = *k;
	return pt_recount_apply(&pt_host_sessions, &host, h, &c->hosts, &c->fixed);
}

/*
 * pt_sessions or pt_flows (`which`) is full: remove what is over in it,
 * unless a scan ran less than PT_RECLAIM_INTERVAL_NS ago, did not stop at its
 * budget, and no session it saw live has reached its deadline since (flows:
 * the interval only). True if anything was removed. Walks the map
 * (bpf_for_each_map_elem, kernel 5.13) until PT_RECLAIM_BATCH entries are
 * removed: a whole walk of a full table of live state is paid at most once a
 * second (bench/reclaim.ts measures it).
 */
static __always_inline struct pt_reclaim *pt_reclaim_due_st(struct pt_reclaim *st, __u32 which, __u64 now)
{
	if (!st)
		return NULL;
	__u64 last = st->last_ns;
	__u64 next = st->next_ns;
	bool due = !last || st->more || (__s64)(now - last) >= (__s64)PT_RECLAIM_INTERVAL_NS ||
		   (next && (__s64)(now - next) > 0);
	if (!due)
		return NULL;
	if (which == PT_RECLAIM_SESSIONS && last && (__s64)(now - last) < (__s64)PT_RECLAIM_GAP_NS)
		return NULL;
	st->last_ns = now;
	st->freed = 0;
	st->more = 0;
	return st;
}

static __always_inline struct pt_reclaim *pt_reclaim_due(__u32 which, __u64 now)
{
	return pt_reclaim_due_st(bpf_map_lookup_elem(&pt_reclaim_state, &which), which, now);
}

/* One function per map: the verifier (kernel 6.1) counts a callback's frame
 * in the call chain of every caller of the function that names it, and the
 * flow callback's own calls do not fit under the trigger path's frames. */
static __noinline bool pt_reclaim_sessions(__u64 now)
{
	struct pt_reclaim *st = pt_reclaim_due(PT_RECLAIM_SESSIONS, now);
	if (!st)
		return false;
	struct pt_reclaim_ctx c = { .now = now, .st = st };
	bpf_for_each_map_elem(&pt_sessions, pt_reclaim_session_cb, &c, 0);
	st->next_ns = c.next_ns;
	return c.freed;
}

static __noinline bool pt_reclaim_flows(__u64 now)
{
	struct pt_reclaim *st = pt_reclaim_due(PT_RECLAIM_FLOWS, now);
	if (!st)
		return false;
	struct pt_reclaim_ctx c = { .now = now, .st = st };
	bpf_for_each_map_elem(&pt_flows, pt_reclaim_flow_cb, &c, 0);
	return c.freed;
}

/*
 * A host at sessions_per_host whose earliest session deadline has passed:
 * walk pt_sessions (unless another walk ran less than PT_RECLAIM_GAP_NS ago),
 * removing every session that is over (any host's: the walk costs the same),
 * then set the host's count to its live sessions (repairing any drift) and
 * recheck_ns to the earliest deadline among them. The walk counts as the
 * table's scan too (pt_reclaim_sessions(), pt_reclaim_flows()).
 */
static __noinline void pt_reclaim_host(__be32 host, __u64 now)
{
	__u32 which = PT_RECLAIM_SESSIONS;
	struct pt_reclaim *st = bpf_map_lookup_elem(&pt_reclaim_state, &which);
	if (!st)
		return;
	__u64 last = st->last_ns;
	if (last && (__s64)(now - last) < (__s64)PT_RECLAIM_GAP_NS)
		return;
	st->last_ns = now;
	st->freed = 0;
	st->more = 0;
	/* No budget: the host's count must be complete. */
	struct pt_reclaim_ctx c = { .now = now, .host = host };
	bpf_for_each_map_elem(&pt_sessions, pt_reclaim_session_cb, &c, 0);
	st->next_ns = c.next_ns;
	struct pt_host *h = bpf_map_lookup_elem(&pt_host_sessions, &host);
	if (!h)
		return;
	/* A count of 0 may stay: the caller takes a slot right after. */
	h->sessions = c.live;
	h->recheck_ns = c.host_next_ns;
}

/* Remember where the rest of a fragmented datagram goes (see pt_frags). */
static __always_inline void pt_frag_remember(const struct pt_pkt *p, __u8 dir, const struct pt_flow *fv, __u64 now)
{
	struct pt_frag_key k = {
		.saddr = p->saddr, .daddr = p->daddr, .id = p->ip_id, .proto = p->proto, .dir = dir,
	};
	struct pt_frag v = { .first_ns = now, .nat_addr = fv->nat_addr, .ifindex = fv->ifindex };
	/* Best effort: a failed update leaves the later fragments untranslated. */
	bpf_map_update_elem(&pt_frags, &k, &v, BPF_ANY);
}

/*
 * A first fragment starts a new datagram (saddr, daddr, id, proto): whatever
 * pt_frags remembers for that key belongs to an older datagram, and must not
 * steer this one's later fragments if this one is not translated (IP ids
 * repeat, RFC 4963). pt_frag_remember() puts it back if it is. First
 * fragments only: the common path pays nothing.
 */
static __always_inline void pt_frag_forget(const struct pt_pkt *p, __u8 dir)
{
	struct pt_frag_key k = {
		.saddr = p->saddr, .daddr = p->daddr, .id = p->ip_id, .proto = p->proto, .dir = dir,
	};
	bpf_map_delete_elem(&pt_frags, &k);
}

#include "redirect.h"

/* Returned by pt_forward() (and pt_open_flow()) for an inbound packet that
 * needs an ICMP "fragmentation needed", with the MTU in the low 16 bits: the
 * program calls pt_frag_needed() itself, where the stack has room for it
 * (BPF's 512 bytes are for the whole call chain). Not a TC_ACT_* value. */
#define PT_ACT_FRAG_NEEDED 0x10000

/*
 * A packet of a live flow: refresh the flow and, for an outbound packet
 * whose flow's session is live and held by the flow's host, the session
 * (SPEC 4.2); rewrite; redirect.
 */
static __always_inline int pt_forward(struct __sk_buff *skb, const struct pt_pkt *p,
				      const struct pt_flow_ref *ref, enum pt_direction dir)
{
	bool inbound = dir == PT_D_WAN;
	struct pt_flow *f = ref->f;

	if (p->ttl <= 1)   /* XXX: no ICMP time exceeded is sent (RFC 1812 5.3.1) */
		return pt_done(PT_F_IPV4, dir, PT_V_DROPPED, TC_ACT_SHOT);
	struct pt_egress eg = pt_egress_of(inbound, ref->fv.ifindex);
	if (!eg.ifindex)   /* the WAN interface is gone (pppd redialling) */
		return pt_done(PT_F_IPV4, dir, PT_V_DROPPED, TC_ACT_SHOT);
	/* Too big for the egress (mtu.h): checked before anything changes, so
	 * that the packet is still as its sender sent it. Outbound: the stack
	 * gets it untranslated, and ip_forward() answers (DF) or fragments
	 * (masquerade then translates the fragments). Inbound with DF: the
	 * ICMP error goes back from the WAN address. Inbound without DF: the
	 * LAN side is the narrower one, which only happens with a LAN MTU below
	 * the WAN's.
	 * XXX: such packets are dropped: the stack could fragment them only if
	 * they reached it translated, through a forward chain that (with
	 * "policy drop") refuses a connection that conntrack never saw. */
	__u32 mtu = pt_too_big(skb, p, eg.ifindex);
	if (mtu) {
		if (!inbound)
			return pt_done(PT_F_IPV4, dir, PT_V_PASS, TC_ACT_UNSPEC);
		if (!pt_df(skb, p))
			return pt_done(PT_F_IPV4, dir, PT_V_DROPPED, TC_ACT_SHOT);
		pt_done(PT_F_IPV4, dir, PT_V_DROPPED, 0);
		return PT_ACT_FRAG_NEEDED | (mtu & 0xffff);
	}

	eg.direct = !pt_neigh_due(ref->fv.created_ns, ref->fv.last_seen_ns, ref->now);
	pt_touch(&f->last_seen_ns, ref->now);
	__u32 seen = pt_seen_flags(p);
	if ((ref->fv.seen | seen) != ref->fv.seen)
		__sync_fetch_and_or(&f->seen, seen);
	if (!inbound && ref->s)
		pt_touch(&ref->s->last_seen_ns, ref->now);

	if (p->first_frag)
		pt_frag_remember(p, inbound ? PT_DIR_IN : PT_DIR_OUT, &ref->fv, ref->now);
	if (pt_rewrite(skb, p, inbound, ref->fv.nat_addr, ref->fv.nat_port))
		return pt_done(PT_F_IPV4, dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(PT_F_IPV4, dir, PT_V_TRANSLATED, 0);
	return pt_redirect(skb, p, eg);
}

/*
 * A non-first fragment (no L4 header): translated like its first fragment if
 * that one was translated within PT_FRAG_TIMEOUT_NS, else passed untouched.
 * Only the IP header changes (address, TTL, checksum): the L4 checksum, in
 * the first fragment, covers the whole datagram and was fixed there.
 */
static __noinline int pt_fragment(struct __sk_buff *skb, const struct pt_pkt *p, __u8 fdir,
				       enum pt_direction dir)
{
	struct pt_frag_key k = {
		.saddr = p->saddr, .daddr = p->daddr, .id = p->ip_id, .proto = p->proto, .dir = fdir,
	};
	struct pt_frag *fr = bpf_map_lookup_elem(&pt_frags, &k);
	/* XXX: a fragment that arrives before its first fragment (reordering)
	 * passes untranslated and is lost to the LAN host; holding it back would
	 * need a queue the data path does not have (or reassembly by the stack). */
	if (!fr)
		return pt_done(PT_F_IPV4, dir, PT_V_PASS, TC_ACT_UNSPEC);
	__u64 first_ns = fr->first_ns;
	__be32 nat_addr = fr->nat_addr;
	__u32 ifindex = fr->ifindex;
	if ((__s64)(pt_now() - first_ns) > (__s64)PT_FRAG_TIMEOUT_NS)
		return pt_done(PT_F_IPV4, dir, PT_V_PASS, TC_ACT_UNSPEC);
	/* What ip_rcv() would drop is not translated (and the incremental
	 * update would only carry the bad sum over). */
	if (!pt_ip_csum_ok(skb, p))
		return pt_done(PT_F_IPV4, dir, PT_V_MALFORMED, TC_ACT_UNSPEC);
	if (p->ttl <= 1)
		return pt_done(PT_F_IPV4, dir, PT_V_DROPPED, TC_ACT_SHOT);

	bool inbound = fdir == PT_DIR_IN;
	struct pt_egress eg = pt_egress_of(inbound, ifindex);
	if (!eg.ifindex)
		return pt_done(PT_F_IPV4, dir, PT_V_DROPPED, TC_ACT_SHOT);
	/* A fragment never has DF (RFC 791), so there is no one to tell; and
	 * neither side can fragment it again: the stack would hold an
	 * untranslated non-first fragment for reassembly with a first fragment
	 * that went out translated.
	 * XXX: dropped; only a sender that fragments for a larger MTU than the
	 * egress's sends such fragments. */
	if (pt_too_big(skb, p, eg.ifindex))
		return pt_done(PT_F_IPV4, dir, PT_V_DROPPED, TC_ACT_SHOT);
	if (pt_rewrite_l3(skb, p, inbound, inbound ? p->daddr : p->saddr, nat_addr))
		return pt_done(PT_F_IPV4, dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(PT_F_IPV4, dir, PT_V_TRANSLATED, 0);
	return pt_redirect(skb, p, eg);
}

/*
 * Translate an ICMP error about a flow (SPEC 5), as Linux NAT does
 * (nf_nat_icmp_reply_translation): the quoted datagram gets the address and
 * port it had on the other side, and the outer header the address of the
 * other side.
 *  inbound (from the WAN, quoting WAN:wanport -> remote): quoted source and
 *    outer destination become the LAN host, quoted source port its port;
 *  outbound (from the LAN host, quoting remote -> host:hostport): quoted
 *    destination and outer source become the WAN address, quoted destination
 *    port the WAN port.
 * Checksums, all incrementally (RFC 1624): the quoted IP header's; the quoted
 * L4 checksum when it is in the quote (UDP: always, its 0 "none" kept; TCP:
 * only when the quote reaches byte 18, which an 8-byte quote does not -- like
 * Linux, which fixes the TCP one only for a full quoted header); the ICMP
 * checksum over all of these changes; the outer IP header's (with the TTL).
 */
static __always_inline int pt_icmp_rewrite(struct __sk_buff *skb, const struct pt_pkt *p,
					   const struct pt_icmp_quote *q, bool inbound, __be32 addr, __be16 port)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 icmp_off = p->l4_off & 0x7f;
	__u32 ip_off = q->ip_off & 0xff;
	__u32 l4_off = q->l4_off & 0xff;   /* all <= 14 + 60 + 8 + 60: bounded for the verifier */

	struct pt_icmphdr *icmp = data + icmp_off;
	if ((void *)icmp + PT_ICMP_HLEN > data_end)
		return -1;
	struct iphdr *in = data + ip_off;
	if ((void *)(in + 1) > data_end)
		return -1;
	__be16 *ports = data + l4_off;
	if ((void *)ports + PT_ICMP_QUOTE_L4_MIN > data_end)
		return -1;

	__be32 *in_addr = inbound ? &in->saddr : &in->daddr;
	__be16 *in_port = inbound ? &ports[0] : &ports[1];
	__be32 old_addr = *in_addr;
	__be16 old_port = *in_port;
	__sum16 old_ipck = in->check;
	__sum16 new_ipck = pt_csum_update32(old_ipck, old_addr, addr);
	__sum16 ck = icmp->checksum;
	ck = pt_csum_update32(ck, old_addr, addr);
	ck = pt_csum_update16(ck, old_port, port);
	ck = pt_csum_update16(ck, old_ipck, new_ipck);

	__sum16 *l4ck = NULL;
	if (q->proto == IPPROTO_UDP)
		l4ck = (void *)ports + offsetof(struct udphdr, check);
	else if (q->l4_len >= offsetof(struct tcphdr, check) + sizeof(__sum16))
		l4ck = (void *)ports + offsetof(struct tcphdr, check);
	if (l4ck && (void *)(l4ck + 1) <= data_end && !(q->proto == IPPROTO_UDP && *l4ck == 0)) {
		__sum16 old_l4ck = *l4ck;
		__sum16 new_l4ck = pt_csum_update16(pt_csum_update32(old_l4ck, old_addr, addr), old_port, port);
		if (q->proto == IPPROTO_UDP && new_l4ck == 0)
			new_l4ck = (__sum16)0xffff;  /* RFC 768: a computed 0 is sent as all ones */
		ck = pt_csum_update16(ck, old_l4ck, new_l4ck);
		*l4ck = new_l4ck;
	}
	*in_addr = addr;
	*in_port = port;
	in->check = new_ipck;
	icmp->checksum = ck;
	return pt_rewrite_l3(skb, p, inbound, inbound ? p->daddr : p->saddr, addr);
}

/*
 * An ICMP packet: if it is an error quoting a packet of a live flow, in the
 * direction that the flow's entry `fdir` translates, translate and redirect it;
 * everything else passes untouched. Errors neither refresh the flow nor its
 * session: they are not the flow's own traffic.
 *  WAN (fdir IN): the quote is a reply WAN:wanport -> remote:rport; its flow
 *    entry is the inbound one, remote:rport -> WAN:wanport.
 *  LAN (fdir OUT): the quote is an inbound packet remote:rport -> host:hostport,
 *    and the error must come from that host and go to that remote; its flow
 *    entry is the outbound one, host:hostport -> remote:rport.
 */
static __noinline int pt_icmp(struct __sk_buff *skb, const struct pt_pkt *p, __u8 fdir,
				   enum pt_direction dir)
{
	struct pt_icmp_quote q;
	if (pt_parse_icmp_error(skb, p, &q))
		return pt_done(PT_F_IPV4, dir, PT_V_PASS, TC_ACT_UNSPEC);
	if (fdir == PT_DIR_OUT) {
		if (p->saddr != q.daddr || p->daddr != q.saddr)
			return pt_done(PT_F_IPV4, dir, PT_V_PASS, TC_ACT_UNSPEC);
		struct pt_port *port = pt_port_slot(q.proto, q.dport);
		if (!port || !port->lan_port_refs)
			return pt_done(PT_F_IPV4, dir, PT_V_PASS, TC_ACT_UNSPEC);
	}
	/* What ip_rcv() would drop creates, ends and translates nothing. */
	if (!pt_ip_csum_ok(skb, p))
		return pt_done(PT_F_IPV4, dir, PT_V_MALFORMED, TC_ACT_UNSPEC);
	struct pt_flow_key k = {
		.saddr = q.daddr,
		.daddr = q.saddr,
		.sport = q.dport,
		.dport = q.sport,
		.proto = q.proto,
		.dir = fdir,
	};
	struct pt_flow_ref ref;
	if (!pt_flow_get(&k, &ref, false))
		return pt_done(PT_F_IPV4, dir, PT_V_PASS, TC_ACT_UNSPEC);
	if (p->ttl <= 1)
		return pt_done(PT_F_IPV4, dir, PT_V_DROPPED, TC_ACT_SHOT);
	struct pt_egress eg = pt_egress_of(fdir == PT_DIR_IN, ref.fv.ifindex);
	if (!eg.ifindex)
		return pt_done(PT_F_IPV4, dir, PT_V_DROPPED, TC_ACT_SHOT);
	if (pt_icmp_rewrite(skb, p, &q, fdir == PT_DIR_IN, ref.fv.nat_addr, ref.fv.nat_port))
		return pt_done(PT_F_IPV4, dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(PT_F_IPV4, dir, PT_V_TRANSLATED, 0);
	return pt_redirect(skb, p, eg);
}

/* Is there a socket of the gateway's own for this packet? Then it is the
 * gateway's traffic and never forwarded (SPEC 5). */
static __always_inline bool pt_local_socket(struct __sk_buff *skb, const struct pt_pkt *p)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	t.ipv4.saddr = p->saddr;
	t.ipv4.daddr = p->daddr;
	t.ipv4.sport = p->sport;
	t.ipv4.dport = p->dport;
	if (p->proto == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return false;
	bpf_sk_release(sk);
	return true;
}

/* --- addresses -------------------------------------------------------------- */

/* Martian addresses (RFC 1812 5.3.7, RFC 6890): "this network" 0/8, loopback
 * 127/8, multicast 224/4, reserved 240/4 with the limited broadcast. Never a
 * remote peer, never a LAN host, never a trigger's destination. */
static __always_inline bool pt_martian(__be32 addr)
{
	__u32 a = bpf_ntohl(addr) >> 24;
	return a == 0 || a == 127 || a >= 224;
}

/* One of the gateway's own addresses? pt_config carries them inline while
 * they fit (pt_config.local_addrs_all); the hash map is the fallback. */
static __always_inline bool pt_local_addr(const struct pt_config *cfg, __be32 addr)
{
#pragma unroll
	for (int i = 0; i < PT_CONFIG_LOCAL_ADDRS; i++)
		if (cfg->local_addrs[i] == addr)
			return true;
	if (cfg->local_addrs_all)
		return false;
	return bpf_map_lookup_elem(&pt_local_addrs, &addr) != NULL;
}

/* Inside a LAN subnet (the LAN interfaces' own, and interfaces.lan_networks)? */
static __always_inline bool pt_lan_addr(__be32 addr)
{
	struct pt_lpm_v4 k = { .prefixlen = 32, .addr = addr };
	return bpf_map_lookup_elem(&pt_lan_nets, &k) != NULL;
}

/* A LAN host's address: inside a LAN subnet and not its directed broadcast
 * address (ip_rcv drops a packet from it as a martian, fib_validate_source;
 * `porttrig open` refuses it too). /31 and /32 have none (RFC 3021). */
static __always_inline bool pt_lan_host(__be32 addr)
{
	struct pt_lpm_v4 k = { .prefixlen = 32, .addr = addr };
	__u8 *plen = bpf_map_lookup_elem(&pt_lan_nets, &k);
	if (!plen)
		return false;
	__u32 len = *plen;
	if (len < 2 || len > 30)
		return true;
	__u32 hostmask = 0xffffffffU >> len;
	return (bpf_ntohl(addr) & hostmask) != hostmask;
}

/* SPEC 8: may a packet from `saddr` arriving on the WAN be translated? Not
 * from a martian source, one of the gateway's addresses or a LAN subnet: TC
 * ingress runs before the kernel's martian and rp_filter checks
 * (ip_route_input_slow), so the data path makes them itself. */
static __always_inline bool pt_wan_source_ok(const struct pt_config *cfg, __be32 saddr)
{
	return !pt_martian(saddr) && !pt_local_addr(cfg, saddr) && !pt_lan_addr(saddr);
}

/* SPEC 4.1: is this a LAN host talking to a remote host? The source inside a
 * LAN subnet and not the gateway's own; the destination neither the gateway's,
 * nor martian (multicast, broadcast, ...), nor inside the LAN (a LAN game
 * server must not open WAN ports). 0 (a free slot of pt_config) is martian. */
static __always_inline bool pt_trigger_addrs_ok(const struct pt_config *cfg, const struct pt_pkt *p)
{
	if (pt_martian(p->saddr) || pt_martian(p->daddr))
		return false;
	if (pt_local_addr(cfg, p->daddr) || pt_local_addr(cfg, p->saddr))
		return false;
	return pt_lan_host(p->saddr) && !pt_lan_addr(p->daddr);
}

/* A bare TCP SYN: the first packet of a connection. */
static __always_inline bool pt_is_bare_syn(__u8 proto, __u8 tcp_flags)
{
	return proto == IPPROTO_TCP && (tcp_flags & (PT_TCP_SYN | PT_TCP_ACK | PT_TCP_RST | PT_TCP_FIN)) == PT_TCP_SYN;
}

static __always_inline bool pt_bare_syn(const struct pt_pkt *p)
{
	return pt_is_bare_syn(p->proto, p->tcp_flags);
}

/*
 * First packet of an inbound connection to an open WAN port: if the port's
 * session is live, insert both directions of the flow (reply entry first, and
 * removed again if the inbound one cannot go in), then forward. Opening a
 * flow does not refresh the session (SPEC 4.2): a stranger's SYN must not
 * keep a LAN host's ports open. When the flow table is full and `may_retry`,
 * returns PT_ACT_RECLAIM: the caller clears the table of flows that are over
 * (pt_reclaim_flows(), called from the program itself, where the stack has room for
 * its callback) and tries once more; likewise PT_ACT_CLEAR_OUT.
 */
#define PT_ACT_RECLAIM 0x7f00   /* not a TC_ACT_* value */
/* The reply key (keys->out) is held by another entry: the caller ends it if
 * that flow is over (pt_flow_clear(), with the stack room for it) and tries
 * once more. */
#define PT_ACT_CLEAR_OUT 0x7f01

/* The two keys of a flow being opened: the caller's, so that it can act on
 * them between attempts. */
struct pt_open_keys {
	struct pt_flow_key in;   /* the inbound packet's, as it arrived */
	struct pt_flow_key out;  /* its replies', written by pt_open_flow() */
};

static __noinline int pt_open_flow(struct __sk_buff *skb, const struct pt_pkt *p,
				   const struct pt_config *cfg, struct pt_open_keys *keys, bool may_retry)
{
	struct pt_flow_key *in_key = &keys->in;
	__u64 now = pt_now();
	struct pt_port *port = pt_port_slot(p->proto, p->dport);
	if (!port)
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	__u32 rid = port->open_rule;
	__be16 lan_port = bpf_htons(port->open_lan_port);
	__be32 wan_addr = cfg->wan_addr;
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &rid);
	if (!rule)
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	__u32 rflags = rule->flags;
	__u64 idle = rule->idle_timeout_ns;
	if (!(rflags & PT_RULE_ENABLED))
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);

	struct pt_session_key skey = {
		.rule = rid,
		.peer = (rflags & PT_RULE_PEER_CONTACTED) ? p->saddr : 0,
	};
	struct pt_session *s = bpf_map_lookup_elem(&pt_sessions, &skey);
	if (!s)
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	__be32 host = s->host;
	__u32 lan_ifindex = s->ifindex;
	if (!pt_live_until(s->last_seen_ns, idle, now))
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* SPEC 8: a martian, LAN or own source on the WAN side; SPEC 5: the
	 * gateway's own socket. */
	if (!pt_wan_source_ok(cfg, p->saddr) || pt_local_socket(skb, p))
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* SPEC 5: the reply of a connection conntrack tracks (another LAN
	 * host's masqueraded traffic that kept this port) is its owner's:
	 * untouched, masquerade delivers it. */
	if (pt_ct_is_reply(skb, p))
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);

	if (p->ttl <= 1)  /* would be dropped by pt_forward: open no flow for it */
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_DROPPED, TC_ACT_SHOT);

	struct pt_flow_key *out_key = &keys->out;
	*out_key = (struct pt_flow_key){
		.saddr = host,
		.daddr = p->saddr,
		.sport = lan_port,
		.dport = p->sport,
		.proto = p->proto,
		.dir = PT_DIR_OUT,
	};
	struct pt_flow out = {
		.created_ns = now,
		.last_seen_ns = now,
		.nat_addr = wan_addr,
		.nat_port = p->dport,
		.rule = rid,
		.sess_peer = skey.peer,
		.ifindex = skb->ifindex,
	};
	struct pt_flow_ref ref = {
		.fv = {
			.created_ns = now,
			.last_seen_ns = now,
			.nat_addr = host,
			.nat_port = lan_port,
			.rule = rid,
			.sess_peer = skey.peer,
			.ifindex = lan_ifindex,
		},
		.now = now,
	};
	long err = bpf_map_update_elem(&pt_flows, out_key, &out, BPF_NOEXIST);
	/* The reply key may be held by a flow that is over (an orphan, or a
	 * dead flow of the same LAN port and remote through another WAN port):
	 * it must not block the new one. */
	if (err == -EEXIST && may_retry)
		return PT_ACT_CLEAR_OUT;
	if (err == -E2BIG && may_retry)
		return PT_ACT_RECLAIM;
	if (err) {
		pt_count(PT_F_IPV4, rid, PT_RC_FLOWS_REFUSED);
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	}
	err = bpf_map_update_elem(&pt_flows, in_key, &ref.fv, BPF_NOEXIST);
	if (err) {
		pt_flow_end(out_key, &out);
		if (err == -E2BIG && may_retry)
			return PT_ACT_RECLAIM;
		pt_count(PT_F_IPV4, rid, PT_RC_FLOWS_REFUSED);
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	}
	pt_count(PT_F_IPV4, rid, PT_RC_FLOWS_OPENED);

	ref.f = bpf_map_lookup_elem(&pt_flows, in_key);
	if (!ref.f)  /* ended by another CPU between insert and lookup */
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	return pt_forward(skb, p, &ref, PT_D_WAN);
}

/* --- IPv6 pinholes (SPEC 9), bpf/ipv6/: they share the IPv4 code above -- */
#include "ipv6/maps6.h"
#include "ipv6/ingress6.h"
/* --- the XDP fast path of established IPv4 flows (datapath.xdp) ---------- */
#include "xdp.h"

static __always_inline int pt_wan(struct __sk_buff *skb, const bool l3)
{
	struct pt_pkt p = {};
	int r = pt_parse(skb, &p, l3);
	if (r == PT_PARSE_SKIP || r == PT_PARSE_BAD)
		return pt_done(PT_F_IPV4, PT_D_WAN, r == PT_PARSE_BAD ? PT_V_MALFORMED : PT_V_PASS, TC_ACT_UNSPEC);

	__u32 zero = 0;
	struct pt_config *cfg = bpf_map_lookup_elem(&pt_config, &zero);
	if (!cfg || !cfg->wan_addr || p.daddr != cfg->wan_addr)
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* SPEC 8: only frames addressed to the gateway's link-layer address; a
	 * link-layer broadcast or multicast is never forwarded by the kernel. A
	 * layer-3 link has no such address: ppp and tun hand every packet up as
	 * PACKET_HOST (they never set pkt_type), and the destination check above
	 * is all there is to check. */
	if (!l3 && skb->pkt_type != PACKET_HOST)
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	if (r == PT_PARSE_ICMP) {
		if (!pt_wan_source_ok(cfg, p.saddr))
			return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
		return pt_icmp(skb, &p, PT_DIR_IN, PT_D_WAN);
	}
	if (p.nonfirst_frag)
		return pt_fragment(skb, &p, PT_DIR_IN, PT_D_WAN);
	if (p.first_frag)
		pt_frag_forget(&p, PT_DIR_IN);

	/* Only ports that an open spec holds can carry flows: this array load
	 * spares most WAN traffic (replies to masqueraded LAN traffic) the flow
	 * hash lookup, which costs more than the rest of the miss path (make
	 * bench). Like the reply filter of pt_lan_ingress, it ends the flows of
	 * a port that a reload takes out of the open specs, in both directions. */
	struct pt_port *port = pt_port_slot(p.proto, p.dport);
	if (!port || !port->open_rule)
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* What ip_rcv() would drop creates and refreshes nothing. */
	if (!pt_ip_csum_ok(skb, &p))
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_MALFORMED, TC_ACT_UNSPEC);

	bool syn = pt_bare_syn(&p);
	struct pt_open_keys keys = { .in = pt_flow_key_of(&p, PT_DIR_IN) };
	struct pt_flow_ref ref;
	if (pt_flow_get(&keys.in, &ref, syn)) {
		if (!syn || !pt_syn_reopens(&keys.in, &ref)) {
			int act = pt_forward(skb, &p, &ref, PT_D_WAN);
			if (act >= PT_ACT_FRAG_NEEDED)  /* not TC_ACT_UNSPEC (-1) */
				return pt_frag_needed(skb, &p, act & 0xffff);
			return act;
		}
		pt_flow_end(&keys.in, &ref.fv);
	}

	/* Only a connection's first packet opens a flow: a bare SYN for TCP,
	 * any datagram for UDP (pt_open_flow() leaves conntrack's replies alone). */
	if (p.proto == IPPROTO_TCP && !syn)
		return pt_done(PT_F_IPV4, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	int act = pt_open_flow(skb, &p, cfg, &keys, true);
	if (act == PT_ACT_RECLAIM) {
		pt_reclaim_flows(pt_now());
		act = pt_open_flow(skb, &p, cfg, &keys, false);
	} else if (act == PT_ACT_CLEAR_OUT) {
		pt_flow_clear(&keys.out, pt_now());
		act = pt_open_flow(skb, &p, cfg, &keys, false);
	}
	if (act >= PT_ACT_FRAG_NEEDED)  /* not TC_ACT_UNSPEC (-1) */
		return pt_frag_needed(skb, &p, act & 0xffff);
	return act;
}

/* IPv6 packets go on to the IPv6 programs (bpf/ipv6/ingress6.h) by a tail
 * call, so that the IPv4 program stays as it was (its body inlined, its
 * frame the first of its call chains) and the IPv6 path gets BPF's 512 bytes
 * of stack for its own chains: kernel 6.1 rounds every frame up to 32 bytes
 * and the IPv4 chains already reach 512 (the program's 224, pt_icmp()'s
 * 232, pt_flow_end()'s 16), so neither family's frame may lie under the
 * other's, and a dispatching frame above both would be one too many. */
static __always_inline int pt6_tail(struct __sk_buff *skb, __u32 idx, enum pt_direction dir)
{
	bpf_tail_call(skb, &pt6_progs, idx);
	/* Only if pt6_progs lacks the program (it never does once loaded). */
	return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
}

/*
 * A frame that still carries a VLAN tag (hardware-accelerated, in
 * skb->vlan_tci; QinQ too) belongs to a VLAN sub-interface of this device,
 * which takes it only after TC ingress here: it is another link's traffic,
 * with another link's addresses, and is left untouched, counted `pass`.
 * Without this a host on a guest VLAN over the LAN's parent device could
 * arm sessions with a LAN address as its source. A frame whose tag is still
 * in the packet (h_proto 802.1Q) is not parsed as IP either (pt_parse).
 * Only the Ethernet builds: a layer-3 device has no VLANs.
 */
static __always_inline bool pt_vlan_tagged(struct __sk_buff *skb, enum pt_direction dir)
{
	if (!skb->vlan_present)
		return false;
	pt_done(skb->protocol == bpf_htons(ETH_P_IPV6) ? PT_F_IPV6 : PT_F_IPV4, dir, PT_V_PASS, 0);
	return true;
}

SEC("tc")
int pt_wan_ingress(struct __sk_buff *skb)
{
	if (pt_vlan_tagged(skb, PT_D_WAN))
		return TC_ACT_UNSPEC;
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return pt6_tail(skb, PT6_PROG_WAN, PT_D_WAN);
	return pt_wan(skb, false);
}

SEC("tc")
int pt_wan_ingress_l3(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return pt6_tail(skb, PT6_PROG_WAN_L3, PT_D_WAN);
	return pt_wan(skb, true);
}

/* SPEC 4.1: a packet from a LAN host to a trigger port of a remote host arms
 * the port's rules (for a LAN source and a remote destination only:
 * pt_trigger_addrs_ok; never with a bad IP header checksum). Returns the
 * packet's verdict as a trigger: PT_V_TRIGGER, PT_V_MALFORMED, or PT_V_PASS
 * when it is none. */
static __always_inline enum pt_verdict pt_lan_trigger(struct __sk_buff *skb, const struct pt_pkt *p,
						      bool csum_checked)
{
	struct pt_port *dport = pt_port_slot(p->proto, p->dport);
	if (!dport || !dport->trigger[0])
		return PT_V_PASS;
	__u32 zero = 0;
	struct pt_config *cfg = bpf_map_lookup_elem(&pt_config, &zero);
	if (!cfg || !pt_trigger_addrs_ok(cfg, p))
		return PT_V_PASS;
	if (!csum_checked && !pt_ip_csum_ok(skb, p))
		return PT_V_MALFORMED;
	__u64 now = pt_now();
	__u32 ifindex = skb->ifindex;
#pragma unroll
	for (int i = 0; i < PT_TRIGGER_SLOTS; i++) {
		__u32 id = dport->trigger[i];
		if (!id)
			break;
		pt_arm(id, p, ifindex, cfg, now);
	}
	return PT_V_TRIGGER;
}

static __always_inline int pt_lan(struct __sk_buff *skb, const bool l3)
{
	struct pt_pkt p = {};
	int r = pt_parse(skb, &p, l3);
	if (r == PT_PARSE_SKIP || r == PT_PARSE_BAD)
		return pt_done(PT_F_IPV4, PT_D_LAN, r == PT_PARSE_BAD ? PT_V_MALFORMED : PT_V_PASS, TC_ACT_UNSPEC);
	/* SPEC 4.1, 8: only frames addressed to the gateway's link-layer address.
	 * A promiscuous br-lan (tcpdump) hands bridged LAN-to-LAN frames up as
	 * PACKET_OTHERHOST; a link-layer broadcast or multicast (a game's
	 * discovery datagram to 192.168.1.255) is not traffic to a remote host.
	 * A layer-3 LAN link has no link-layer destination (see pt_wan()); the
	 * trigger's destination checks still apply. */
	if (!l3 && skb->pkt_type != PACKET_HOST)
		return pt_done(PT_F_IPV4, PT_D_LAN, PT_V_PASS, TC_ACT_UNSPEC);
	if (r == PT_PARSE_ICMP)
		return pt_icmp(skb, &p, PT_DIR_OUT, PT_D_LAN);
	if (p.nonfirst_frag)
		return pt_fragment(skb, &p, PT_DIR_OUT, PT_D_LAN);
	if (p.first_frag)
		pt_frag_forget(&p, PT_DIR_OUT);

	/* Replies of accepted flows: only from ports that some open spec maps to.
	 * A reply never arms, even when the remote's port is a trigger port: the
	 * remote chose that port when it connected through an open pinhole, and
	 * arming on it would let any remote that reaches one rule open another
	 * rule's ports (and, connecting from many addresses in mode `contacted`,
	 * fill the host's sessions_per_host). SPEC 8: nothing reaches a LAN host
	 * that its own trigger did not ask for. */
	bool csum_checked = false;
	struct pt_port *sport = pt_port_slot(p.proto, p.sport);
	if (sport && sport->lan_port_refs) {
		if (!pt_ip_csum_ok(skb, &p))
			return pt_done(PT_F_IPV4, PT_D_LAN, PT_V_MALFORMED, TC_ACT_UNSPEC);
		csum_checked = true;
		bool syn = pt_bare_syn(&p);
		struct pt_flow_key out_key = pt_flow_key_of(&p, PT_DIR_OUT);
		struct pt_flow_ref ref;
		if (pt_flow_get(&out_key, &ref, syn)) {
			if (!syn || !pt_syn_reopens(&out_key, &ref)) {
				return pt_forward(skb, &p, &ref, PT_D_LAN);
			}
			pt_flow_end(&out_key, &ref.fv);
		}
	}
	return pt_done(PT_F_IPV4, PT_D_LAN, pt_lan_trigger(skb, &p, csum_checked), TC_ACT_UNSPEC);
}

SEC("tc")
int pt_lan_ingress(struct __sk_buff *skb)
{
	if (pt_vlan_tagged(skb, PT_D_LAN))
		return TC_ACT_UNSPEC;
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return pt6_tail(skb, PT6_PROG_LAN, PT_D_LAN);
	return pt_lan(skb, false);
}

SEC("tc")
int pt_lan_ingress_l3(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return pt6_tail(skb, PT6_PROG_LAN_L3, PT_D_LAN);
	return pt_lan(skb, true);
}

/*
 * The daemon's sweep (SEC("syscall"): run with BPF_PROG_TEST_RUN, never
 * attached). Removes expired sessions and flows that are over with the
 * callbacks and decisions the data path uses when a map is full, counts live
 * sessions per rule (pt_sweep_data.live) and live flows, and with
 * PT_SWEEP_RECOUNT sets every host's session count to its live sessions. The
 * tables never travel to user space. A syscall program runs in the daemon's
 * thread (a libuv worker: the event loop goes on), under RCU per hash bucket
 * only, so a walk of a million entries is preemptible. Needs only the maps
 * that sleepable programs may use (hash and array maps).
 */
/* The IPv6 walks of pt_sweep: the same as the IPv4 ones over the pt6_ maps.
 * Functions of their own (not inlined), so that their contexts are not on
 * pt_sweep's frame along with the IPv4 ones (BPF's 512 bytes of stack are
 * for the whole call chain, callback frames included). One callback per map,
 * each map walked once per run (kernel 6.1, see pt_sweep). */
static __noinline void pt6_sweep_sessions(struct pt_sweep *a, __u32 what)
{
	struct pt6_reclaim_ctx c = { .now = a->now, .sweep = what };
	bool counting = !(what & PT_SWEEP_HOST6);
	if (counting) {
		volatile __u32 *live = pt_sweep_data.live6;
		for (__u32 i = 0; i < PT_MAX_RULES; i++)
			live[i] = 0;
	} else {
		c.by_host = 1;
		pt6_copy(c.host, a->host6);
	}
	bpf_for_each_map_elem(&pt6_sessions, pt6_reclaim_session_cb, &c, 0);
	if (counting && (what & PT_SWEEP_RECOUNT))
		bpf_for_each_map_elem(&pt6_host_sessions, pt6_recount_apply_cb, &c, 0);
	if (!counting) {
		struct pt6_addr host;
		pt6_copy(host.a, c.host);
		struct pt_host *h = bpf_map_lookup_elem(&pt6_host_sessions, &host);
		if (h && h->sessions != c.live) {
			h->sessions = c.live;
			c.fixed++;
		}
		if (h)
			h->recheck_ns = c.host_next_ns;
	}
	a->sessions6_next_ns = c.next_ns;
	a->sessions6 = c.seen;
	a->sessions6_live = c.live;
	a->sessions6_expired = c.expired;
	a->sessions6_closed = c.closed;
	a->hosts6_fixed = c.fixed;
	a->hosts6 = c.hosts;
}

static __noinline void pt6_sweep_flows(struct pt_sweep *a, __u32 what)
{
	struct pt6_reclaim_ctx c = { .now = a->now, .sweep = what };
	bpf_for_each_map_elem(&pt6_flows, pt6_sweep_flow_cb, &c, 0);
	a->flows6_next_ns = c.next_ns;
	a->flow6_entries = c.seen;
	a->flows6_live = c.live;
	a->flow6_entries_removed = c.removed;
}

SEC("syscall")
int pt_sweep(void *ctx)
{
	/* The context is struct pt_sweep (in the object's BTF through
	 * pt_sweep_data). Kernel 6.1 refused this program while it walked
	 * pt_host_sessions twice (a reset pass before the count, then the
	 * apply: "tail_call abusing map_ptr" at the fixups); the recount's
	 * end now leaves pt_host.recount at 0 instead. */
	struct pt_sweep *a = ctx;
	__u32 what = a->what;
	struct pt_reclaim_ctx c = { .now = a->now, .host = a->host, .sweep = what };

	if (what & PT_SWEEP_SESSIONS) {
		bool counting = !c.host;
		if (counting) {
			/* volatile: clang would make this a memset, which BPF lacks */
			volatile __u32 *live = pt_sweep_data.live;
			for (__u32 i = 0; i < PT_MAX_RULES; i++)
				live[i] = 0;
		}
		bpf_for_each_map_elem(&pt_sessions, pt_reclaim_session_cb, &c, 0);
		if (counting && (what & PT_SWEEP_RECOUNT))
			bpf_for_each_map_elem(&pt_host_sessions, pt_recount_apply_cb, &c, 0);
		if (!counting) {
			/* One host's sessions (a manual open at its limit): its count
			 * becomes its live sessions, as in pt_reclaim_host(). */
			__be32 host = c.host;
			struct pt_host *h = bpf_map_lookup_elem(&pt_host_sessions, &host);
			if (h && h->sessions != c.live) {
				h->sessions = c.live;
				c.fixed++;
			}
			if (h)
				h->recheck_ns = c.host_next_ns;
		}
		a->sessions_next_ns = c.next_ns;
		a->sessions = c.seen;
		a->sessions_live = c.live;
		a->sessions_expired = c.expired;
		a->sessions_closed = c.closed;
		a->hosts_fixed = c.fixed;
		a->hosts = c.hosts;
	}
	if (what & PT_SWEEP_FLOWS) {
		struct pt_reclaim_ctx fc = { .now = a->now, .sweep = what };
		bpf_for_each_map_elem(&pt_flows, pt_sweep_flow_cb, &fc, 0);
		a->flows_next_ns = fc.next_ns;
		a->flow_entries = fc.seen;
		a->flows_live = fc.live;
		a->flow_entries_removed = fc.removed;
	}
	if (what & PT_SWEEP_SESSIONS6)
		pt6_sweep_sessions(a, what);
	if (what & PT_SWEEP_FLOWS6)
		pt6_sweep_flows(a, what);
	pt_sweep_data.last = *a;
	return 0;
}
