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
 * bpf_redirect_neigh(): they never meet netfilter's forward chain or conntrack,
 * so a gateway with a "forward policy drop" firewall needs no extra rule.
 * Everything else leaves with TC_ACT_UNSPEC, untouched byte for byte, so that
 * other TC filters still see it.
 *
 * The rare paths (ICMP errors, non-first fragments, a flow's first packet) are
 * BPF-to-BPF calls (__noinline), not inlined: inlined, they made the compiler
 * keep their values alive through the whole program, and the miss path paid
 * for it in stack spills (make bench: WAN miss 32 -> 26 ns).
 */
#include <linux/bpf.h>
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

/* Live sessions per LAN host, for limits.sessions_per_host. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __be32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_host_sessions SEC(".maps");

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

/* LAN subnets: packets arriving on the WAN from these are never translated. */
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

/* Per-rule counters (enum pt_rule_counter). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PT_MAX_RULES * PT_RC__COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_rule_stats SEC(".maps");

/* Packets by direction and verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PT_D__COUNT * PT_V__COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt_pkt_stats SEC(".maps");

_Static_assert(sizeof(struct pt_port) == 16, "pt_port is read on every packet: keep it small");
_Static_assert(sizeof(struct pt_flow_key) == 16, "pt_flow_key must stay 16 bytes");
_Static_assert(sizeof(struct pt_session_key) == 8, "pt_session_key must stay 8 bytes");
_Static_assert(sizeof(struct pt_frag_key) == 12, "pt_frag_key must have no padding");
/* pt_flow_fate() skips the partner lookup for a flow idle no longer than
 * PT_FLOW_ORPHAN_NS: exact only while no flow timer is shorter. */
_Static_assert(PT_FLOW_ORPHAN_NS <= PT_FLOW_TIMEOUT_TCP_TRANS_NS &&
	       PT_FLOW_ORPHAN_NS <= PT_FLOW_TIMEOUT_UDP_NS &&
	       PT_FLOW_ORPHAN_NS <= PT_FLOW_TIMEOUT_TCP_EST_NS, "orphan timeout must be the shortest");

static __always_inline int pt_done(enum pt_direction dir, enum pt_verdict v, int act)
{
	__u32 idx = dir * PT_V__COUNT + v;
	__u64 *n = bpf_map_lookup_elem(&pt_pkt_stats, &idx);
	if (n)
		*n += 1;
	return act;
}

static __always_inline void pt_count(__u32 rule, enum pt_rule_counter c)
{
	__u32 idx = rule * PT_RC__COUNT + c;
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
	return bpf_ktime_get_coarse_ns() + PT_CLOCK_BIAS_NS;
}

static __always_inline struct pt_port *pt_port_slot(__u8 proto, __be16 port)
{
	__u32 idx = (proto == IPPROTO_UDP ? PT_PROTO_IDX_UDP : PT_PROTO_IDX_TCP) * PT_PORTS_PER_PROTO +
		    bpf_ntohs(port);
	return bpf_map_lookup_elem(&pt_ports, &idx);
}

/* A session is live while its idle time is within the rule's timeout. Signed:
 * another CPU may have stamped last_seen a hair after our `now`. */
static __always_inline bool pt_live(const struct pt_session *s, const struct pt_rule *r, __u64 now)
{
	return (__s64)(now - s->last_seen_ns) <= (__s64)r->idle_timeout_ns;
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

enum pt_take {
	PT_TAKE_OK = 0,
	PT_TAKE_LIMIT,      /* the host holds sessions_per_host sessions */
	PT_TAKE_FULL,       /* pt_host_sessions itself is full */
};

/* Take one session slot for `host`. */
static __always_inline enum pt_take pt_host_take(__be32 host, __u32 limit)
{
	__u32 *n = bpf_map_lookup_elem(&pt_host_sessions, &host);
	if (!n) {
		__u32 one = 1;
		if (limit < 1)
			return PT_TAKE_LIMIT;
		if (!bpf_map_update_elem(&pt_host_sessions, &host, &one, BPF_NOEXIST))
			return PT_TAKE_OK;
		/* Lost a race with another CPU (EEXIST), or the map is full. */
		n = bpf_map_lookup_elem(&pt_host_sessions, &host);
		if (!n)
			return PT_TAKE_FULL;
	}
	if (__sync_fetch_and_add(n, 1) >= limit) {
		__sync_fetch_and_sub(n, 1);
		return PT_TAKE_LIMIT;
	}
	return PT_TAKE_OK;
}

/* Give a slot back; the entry goes when it reaches zero, so that hosts that
 * hold nothing never fill pt_host_sessions. A take racing the delete can lose
 * one count; the daemon's sweep recounts every second. */
static __always_inline void pt_host_release(__be32 host)
{
	__u32 *n = bpf_map_lookup_elem(&pt_host_sessions, &host);
	if (n && *n > 0 && __sync_fetch_and_sub(n, 1) == 1)
		bpf_map_delete_elem(&pt_host_sessions, &host);
}

/*
 * Open or refresh the session (rule, host[, peer]) for a trigger packet, per
 * SPEC 4.1-4.6. New values go in with one map update, so a reader on another
 * CPU sees either the old session or the new one, never a mix.
 */
static __always_inline void pt_arm(__u32 id, const struct pt_pkt *p, __u32 ifindex,
				   const struct pt_config *cfg, __u64 now)
{
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &id);
	if (!rule || !(rule->flags & PT_RULE_ENABLED))
		return;
	pt_count(id, PT_RC_TRIGGER_HITS);

	struct pt_session_key key = {
		.rule = id,
		.peer = (rule->flags & PT_RULE_PEER_CONTACTED) ? p->daddr : 0,
	};
	struct pt_session fresh = {
		.opened_ns = now,
		.last_seen_ns = now,
		.host = p->saddr,
		.ifindex = ifindex,
	};
	struct pt_session *s = bpf_map_lookup_elem(&pt_sessions, &key);
	__be32 old_host = 0;
	bool keep_slot = false;  /* the host already holds this session's slot */

	if (s && pt_live(s, rule, now)) {
		if (s->host == p->saddr) {
			pt_touch(&s->last_seen_ns, now);
			if (s->ifindex != ifindex)
				s->ifindex = ifindex;
			return;
		}
		if (!(rule->flags & PT_RULE_CONFLICT_LAST)) {
			pt_count(id, PT_RC_REFUSED_CONFLICT);
			return;
		}
		old_host = s->host;      /* conflict: last -> take it over */
	} else if (s) {
		/* Expired but not swept yet: as good as absent (SPEC 4.3). */
		if (s->host == p->saddr)
			keep_slot = true;
		else
			old_host = s->host;
	}

	if (!keep_slot) {
		enum pt_take t = pt_host_take(p->saddr, cfg->sessions_per_host);
		if (t != PT_TAKE_OK) {
			pt_count(id, t == PT_TAKE_LIMIT ? PT_RC_REFUSED_HOST_LIMIT : PT_RC_REFUSED_MAP_FULL);
			return;
		}
	}
	if (bpf_map_update_elem(&pt_sessions, &key, &fresh, BPF_ANY)) {
		if (!keep_slot)
			pt_host_release(p->saddr);
		pt_count(id, PT_RC_REFUSED_MAP_FULL);
		return;
	}
	if (old_host)
		pt_host_release(old_host);
	pt_count(id, PT_RC_SESSIONS_OPENED);
}

/*
 * Rewrite the destination (dst = true) or source address of the IPv4 header
 * and decrement the TTL, fixing the header checksum incrementally (RFC 1624).
 * Direct writes: the header checksum compensates them, so a CHECKSUM_COMPLETE
 * skb->csum stays right.
 */
static __always_inline int pt_rewrite_l3(struct __sk_buff *skb, bool dst, __be32 old_addr, __be32 addr)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
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
	if (pt_rewrite_l3(skb, dst, old_addr, addr))
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

static __always_inline __u32 pt_seen_flags(const struct pt_pkt *p)
{
	__u8 f = p->tcp_flags;
	__u32 seen = 0;
	if (p->proto != IPPROTO_TCP)
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

/*
 * What becomes of the flow of entry `f` (key `k`): the decision of
 * flowFate() in src/core/sweep.ts, which the daemon's sweeper makes, to the
 * letter (test/bpf/datapath.test.ts compares both on a table). `owned`: the
 * flow's session is live and held by the flow's LAN host.
 */
static __always_inline enum pt_fate pt_flow_fate(const struct pt_flow_key *k, const struct pt_flow *f,
						 const struct pt_rule *rule, bool owned, __u64 now)
{
	/* A reload that removed or disabled the rule closed its ports: its flows
	 * end with it (the sweeper decides the same, flowFate()). */
	if (!rule || !(rule->flags & PT_RULE_ENABLED))
		return PT_FATE_KILLED;
	if ((rule->flags & PT_RULE_KILL_FLOWS) && !owned)
		return PT_FATE_KILLED;
	/* Busy flows stop here: every timer is at least PT_FLOW_ORPHAN_NS and the
	 * flow's last packet is at least as recent as this entry's. */
	if ((__s64)(now - f->last_seen_ns) <= (__s64)PT_FLOW_ORPHAN_NS)
		return PT_FATE_LIVE;
	struct pt_flow_key pk = pt_partner_key(k, f);
	struct pt_flow *pf = bpf_map_lookup_elem(&pt_flows, &pk);
	if (!pf)
		return PT_FATE_ORPHAN;
	__u64 last = f->last_seen_ns > pf->last_seen_ns ? f->last_seen_ns : pf->last_seen_ns;
	bool in = k->dir == PT_DIR_IN;
	__u64 timeout = pt_flow_timeout(k->proto, in ? f->seen : pf->seen, in ? pf->seen : f->seen);
	return (__s64)(now - last) > (__s64)timeout ? PT_FATE_EXPIRED : PT_FATE_LIVE;
}

/* A flow entry found for a packet, with what forwarding on it needs. */
struct pt_flow_ref {
	struct pt_flow *f;
	/* The flow's session to refresh, if pt_flow_get looked it up and it is
	 * live and owned by the flow's host; else NULL. */
	struct pt_session *s;
	__u64 now;
};

/*
 * Look up the flow entry `k`. A flow that is over (pt_flow_fate) is absent
 * at once, whether or not a daemon runs to sweep it (SPEC 5, 6): both its
 * entries are deleted here, so that the same 5-tuple may open a new flow.
 * The clock is read only on a hit, so a miss costs one hash lookup.
 *
 * The session is looked up only when its state decides the flow's fate
 * (kill_flows_on_expiry) or when the flow's stamp is due a refresh, which
 * then refreshes the session too (SPEC 4.2): a busy flow pays the session's
 * hash lookup once per PT_REFRESH_GRANULARITY_NS, not per packet, and its
 * session's stamp lags its last packet by at most twice that (the flow's
 * granularity, then the session's own), far below the 1 s minimum timeout.
 */
static __always_inline bool pt_flow_get(const struct pt_flow_key *k, struct pt_flow_ref *ref)
{
	struct pt_flow *f = bpf_map_lookup_elem(&pt_flows, k);
	if (!f)
		return false;
	__u64 now = pt_now();
	__u32 rid = f->rule;
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &rid);
	struct pt_session *s = NULL;
	if (rule && (rule->flags & PT_RULE_ENABLED) &&
	    ((rule->flags & PT_RULE_KILL_FLOWS) || pt_stale(f->last_seen_ns, now))) {
		struct pt_session_key skey = { .rule = rid, .peer = f->sess_peer };
		s = bpf_map_lookup_elem(&pt_sessions, &skey);
	}
	__be32 host = k->dir == PT_DIR_IN ? f->nat_addr : k->saddr;
	bool owned = s && s->host == host && pt_live(s, rule, now);

	if (pt_flow_fate(k, f, rule, owned, now) != PT_FATE_LIVE) {
		struct pt_flow_key pk = pt_partner_key(k, f);
		bpf_map_delete_elem(&pt_flows, &pk);
		bpf_map_delete_elem(&pt_flows, k);
		return false;
	}
	ref->f = f;
	ref->s = owned ? s : NULL;
	ref->now = now;
	return true;
}

/* Remember where the rest of a fragmented datagram goes (see pt_frags). */
static __always_inline void pt_frag_remember(const struct pt_pkt *p, __u8 dir, const struct pt_flow *f, __u64 now)
{
	struct pt_frag_key k = {
		.saddr = p->saddr, .daddr = p->daddr, .id = p->ip_id, .proto = p->proto, .dir = dir,
	};
	struct pt_frag v = { .first_ns = now, .nat_addr = f->nat_addr, .ifindex = f->ifindex };
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

/*
 * A packet of a live flow: refresh the flow and, while it is live and still
 * owned by the flow's host, its session (SPEC 4.2); rewrite; redirect.
 */
static __always_inline int pt_forward(struct __sk_buff *skb, const struct pt_pkt *p,
				      const struct pt_flow_ref *ref, enum pt_direction dir)
{
	bool inbound = dir == PT_D_WAN;
	struct pt_flow *f = ref->f;

	if (p->ttl <= 1)   /* XXX: no ICMP time exceeded is sent (RFC 1812 5.3.1) */
		return pt_done(dir, PT_V_DROPPED, TC_ACT_SHOT);

	pt_touch(&f->last_seen_ns, ref->now);
	__u32 seen = pt_seen_flags(p);
	if ((f->seen | seen) != f->seen)
		__sync_fetch_and_or(&f->seen, seen);
	if (ref->s)
		pt_touch(&ref->s->last_seen_ns, ref->now);

	__u32 ifindex = f->ifindex;
	if (p->first_frag)
		pt_frag_remember(p, inbound ? PT_DIR_IN : PT_DIR_OUT, f, ref->now);
	if (pt_rewrite(skb, p, inbound, f->nat_addr, f->nat_port))
		return pt_done(dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(dir, PT_V_TRANSLATED, 0);
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
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
		return pt_done(dir, PT_V_PASS, TC_ACT_UNSPEC);
	if ((__s64)(pt_now() - fr->first_ns) > (__s64)PT_FRAG_TIMEOUT_NS)
		return pt_done(dir, PT_V_PASS, TC_ACT_UNSPEC);
	if (p->ttl <= 1)
		return pt_done(dir, PT_V_DROPPED, TC_ACT_SHOT);

	bool inbound = fdir == PT_DIR_IN;
	__u32 ifindex = fr->ifindex;
	if (pt_rewrite_l3(skb, inbound, inbound ? p->daddr : p->saddr, fr->nat_addr))
		return pt_done(dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(dir, PT_V_TRANSLATED, 0);
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
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
	return pt_rewrite_l3(skb, inbound, inbound ? p->daddr : p->saddr, addr);
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
		return pt_done(dir, PT_V_PASS, TC_ACT_UNSPEC);
	if (fdir == PT_DIR_OUT) {
		if (p->saddr != q.daddr || p->daddr != q.saddr)
			return pt_done(dir, PT_V_PASS, TC_ACT_UNSPEC);
		struct pt_port *port = pt_port_slot(q.proto, q.dport);
		if (!port || !port->lan_port_refs)
			return pt_done(dir, PT_V_PASS, TC_ACT_UNSPEC);
	}
	struct pt_flow_key k = {
		.saddr = q.daddr,
		.daddr = q.saddr,
		.sport = q.dport,
		.dport = q.sport,
		.proto = q.proto,
		.dir = fdir,
	};
	struct pt_flow_ref ref;
	if (!pt_flow_get(&k, &ref))
		return pt_done(dir, PT_V_PASS, TC_ACT_UNSPEC);
	if (p->ttl <= 1)
		return pt_done(dir, PT_V_DROPPED, TC_ACT_SHOT);
	__u32 ifindex = ref.f->ifindex;
	if (pt_icmp_rewrite(skb, p, &q, fdir == PT_DIR_IN, ref.f->nat_addr, ref.f->nat_port))
		return pt_done(dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(dir, PT_V_TRANSLATED, 0);
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
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

static __always_inline bool pt_from_lan_net(__be32 addr)
{
	struct pt_lpm_v4 k = { .prefixlen = 32, .addr = addr };
	return bpf_map_lookup_elem(&pt_lan_nets, &k) != NULL;
}

/*
 * First packet of an inbound connection to an open WAN port: if the port's
 * session is live, insert both directions of the flow (reply entry first, and
 * removed again if the inbound one cannot go in), then forward.
 */
static __noinline int pt_open_flow(struct __sk_buff *skb, const struct pt_pkt *p,
					const struct pt_port *port, const struct pt_config *cfg,
					struct pt_flow_key *in_key)
{
	__u64 now = pt_now();
	__u32 rid = port->open_rule;
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &rid);
	if (!rule || !(rule->flags & PT_RULE_ENABLED))
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);

	struct pt_session_key skey = {
		.rule = rid,
		.peer = (rule->flags & PT_RULE_PEER_CONTACTED) ? p->saddr : 0,
	};
	struct pt_session *s = bpf_map_lookup_elem(&pt_sessions, &skey);
	if (!s || !pt_live(s, rule, now))
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* SPEC 8: a LAN source on the WAN side, or the gateway's own socket. */
	if (pt_from_lan_net(p->saddr) || pt_local_socket(skb, p))
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* SPEC 5: the reply of a connection conntrack tracks (another LAN
	 * host's masqueraded traffic that kept this port) is its owner's:
	 * untouched, masquerade delivers it. */
	if (pt_ct_is_reply(skb, p))
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);

	if (p->ttl <= 1)  /* would be dropped by pt_forward: open no flow for it */
		return pt_done(PT_D_WAN, PT_V_DROPPED, TC_ACT_SHOT);

	__be32 host = s->host;
	__be16 lan_port = bpf_htons(port->open_lan_port);
	struct pt_flow_key out_key = {
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
		.nat_addr = cfg->wan_addr,
		.nat_port = p->dport,
		.rule = rid,
		.sess_peer = skey.peer,
		.ifindex = skb->ifindex,
	};
	struct pt_flow in = {
		.created_ns = now,
		.last_seen_ns = now,
		.nat_addr = host,
		.nat_port = lan_port,
		.rule = rid,
		.sess_peer = skey.peer,
		.ifindex = s->ifindex,
	};
	if (bpf_map_update_elem(&pt_flows, &out_key, &out, BPF_NOEXIST)) {
		pt_count(rid, PT_RC_FLOWS_REFUSED);
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	}
	if (bpf_map_update_elem(&pt_flows, in_key, &in, BPF_NOEXIST)) {
		bpf_map_delete_elem(&pt_flows, &out_key);
		pt_count(rid, PT_RC_FLOWS_REFUSED);
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	}
	pt_count(rid, PT_RC_FLOWS_OPENED);

	struct pt_flow_ref ref = { .s = s, .now = now };
	ref.f = bpf_map_lookup_elem(&pt_flows, in_key);
	if (!ref.f)  /* swept between insert and lookup: cannot happen with live timers */
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	return pt_forward(skb, p, &ref, PT_D_WAN);
}

SEC("tc")
int pt_wan_ingress(struct __sk_buff *skb)
{
	struct pt_pkt p = {};
	int r = pt_parse(skb, &p);
	if (r == PT_PARSE_SKIP || r == PT_PARSE_BAD)
		return pt_done(PT_D_WAN, r == PT_PARSE_BAD ? PT_V_MALFORMED : PT_V_PASS, TC_ACT_UNSPEC);

	__u32 zero = 0;
	struct pt_config *cfg = bpf_map_lookup_elem(&pt_config, &zero);
	if (!cfg || !cfg->wan_addr || p.daddr != cfg->wan_addr)
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	if (r == PT_PARSE_ICMP) {
		/* SPEC 8: nothing from a LAN source on the WAN side is translated. */
		if (pt_from_lan_net(p.saddr))
			return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
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
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);

	struct pt_flow_key in_key = pt_flow_key_of(&p, PT_DIR_IN);
	struct pt_flow_ref ref;
	if (pt_flow_get(&in_key, &ref))
		return pt_forward(skb, &p, &ref, PT_D_WAN);

	/* Only a connection's first packet opens a flow: a bare SYN for TCP,
	 * any datagram for UDP (pt_open_flow() leaves conntrack's replies). */
	if (p.proto == IPPROTO_TCP &&
	    (p.tcp_flags & (PT_TCP_SYN | PT_TCP_ACK | PT_TCP_RST | PT_TCP_FIN)) != PT_TCP_SYN)
		return pt_done(PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	return pt_open_flow(skb, &p, port, cfg, &in_key);
}

/* Destinations that are never "non-local" unicast: the gateway's own
 * addresses, multicast/reserved (224/3) and the limited broadcast. The
 * addresses are in pt_config while they fit (pt_config.local_addrs_all); the
 * hash map is the fallback. */
static __always_inline bool pt_local_dest(const struct pt_config *cfg, __be32 daddr)
{
	if ((bpf_ntohl(daddr) >> 29) == 7)  /* 224.0.0.0/3 */
		return true;
	if (daddr) {  /* 0 marks a free slot */
#pragma unroll
		for (int i = 0; i < PT_CONFIG_LOCAL_ADDRS; i++)
			if (cfg->local_addrs[i] == daddr)
				return true;
	}
	if (cfg->local_addrs_all)
		return false;
	return bpf_map_lookup_elem(&pt_local_addrs, &daddr) != NULL;
}

SEC("tc")
int pt_lan_ingress(struct __sk_buff *skb)
{
	struct pt_pkt p = {};
	int r = pt_parse(skb, &p);
	if (r == PT_PARSE_ICMP)
		return pt_icmp(skb, &p, PT_DIR_OUT, PT_D_LAN);
	if (r != PT_PARSE_OK)
		return pt_done(PT_D_LAN, r == PT_PARSE_BAD ? PT_V_MALFORMED : PT_V_PASS, TC_ACT_UNSPEC);
	if (p.nonfirst_frag)
		return pt_fragment(skb, &p, PT_DIR_OUT, PT_D_LAN);
	if (p.first_frag)
		pt_frag_forget(&p, PT_DIR_OUT);

	/* Replies of accepted flows: only from ports that some open spec maps to. */
	struct pt_port *sport = pt_port_slot(p.proto, p.sport);
	if (sport && sport->lan_port_refs) {
		struct pt_flow_key out_key = pt_flow_key_of(&p, PT_DIR_OUT);
		struct pt_flow_ref ref;
		if (pt_flow_get(&out_key, &ref))
			return pt_forward(skb, &p, &ref, PT_D_LAN);
	}

	struct pt_port *dport = pt_port_slot(p.proto, p.dport);
	if (!dport || !dport->trigger[0])
		return pt_done(PT_D_LAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* A link-layer broadcast or multicast (e.g. a game's discovery datagram
	 * to 192.168.1.255) is not traffic to a remote host: it never triggers,
	 * whatever its IP destination (SPEC 4.1, "non-local destination"). */
	if (skb->pkt_type == PACKET_BROADCAST || skb->pkt_type == PACKET_MULTICAST)
		return pt_done(PT_D_LAN, PT_V_PASS, TC_ACT_UNSPEC);
	__u32 zero = 0;
	struct pt_config *cfg = bpf_map_lookup_elem(&pt_config, &zero);
	if (!cfg || !p.saddr || pt_local_dest(cfg, p.daddr))
		return pt_done(PT_D_LAN, PT_V_PASS, TC_ACT_UNSPEC);
	__u64 now = pt_now();
	__u32 ifindex = skb->ifindex;
#pragma unroll
	for (int i = 0; i < PT_TRIGGER_SLOTS; i++) {
		__u32 id = dport->trigger[i];
		if (!id)
			break;
		pt_arm(id, &p, ifindex, cfg, now);
	}
	return pt_done(PT_D_LAN, PT_V_TRIGGER, TC_ACT_UNSPEC);
}
