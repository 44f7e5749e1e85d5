/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * IPv6 flows (SPEC 9, 5): an inbound TCP SYN or UDP datagram to a LAN host's
 * own address (inside pt6_lan_nets, never the gateway's) on a port of a rule
 * whose session for that host is live opens a flow, two entries in pt6_flows
 * as IPv4's in pt_flows. No address translation: only the port (`A-B -> C`)
 * and the hop limit change. Flows are judged and ended with IPv4's timers
 * and decisions (pt_flow_timeout(), pt_flow_timer_fate(), pt_seen_of(),
 * pt_live_until(): address-independent, shared), and sent on with
 * bpf_redirect_neigh() like IPv4's, so that the forward chain's drop never
 * sees them.
 *
 * What IPv6 does differently from IPv4's pt_forward():
 *  - hop limit <= 1: the packet goes to the stack, which answers with ICMPv6
 *    Time Exceeded (RFC 4443 3.3) itself;
 *  - larger than the egress MTU: to the stack too (TC_ACT_UNSPEC), whose
 *    ip6_forward() sends Packet Too Big before the forward hook (IPv6
 *    routers never fragment, RFC 8200 5).
 */
#ifndef PORTTRIG_FLOW6_H
#define PORTTRIG_FLOW6_H

#include "addr6.h"
#include "parse6.h"
#include "session6.h"
#include "frag6.h"

static __always_inline struct pt6_flow_key pt6_flow_key_of(const struct pt6_pkt *p, __u8 dir)
{
	struct pt6_flow_key k = { .sport = p->sport, .dport = p->dport, .proto = p->proto, .dir = dir };
	pt6_copy(k.saddr, p->saddr);
	pt6_copy(k.daddr, p->daddr);
	return k;
}

/* The other direction's key: the addresses swap (no translation), the ports
 * swap with the LAN port (IN's nat_port) or the WAN port (OUT's) in place. */
static __always_inline void pt6_partner_key(struct pt6_flow_key *pk, const struct pt6_flow_key *k,
					    const struct pt6_flow *f)
{
	bool in = k->dir == PT_DIR_IN;
	*pk = (struct pt6_flow_key){
		.sport = in ? f->nat_port : k->dport,
		.dport = in ? k->sport : f->nat_port,
		.proto = k->proto,
		.dir = in ? PT_DIR_OUT : PT_DIR_IN,
	};
	pt6_copy(pk->saddr, k->daddr);
	pt6_copy(pk->daddr, k->saddr);
}

/* The LAN host of a flow entry: the inbound entry's destination, the
 * outbound one's source. */
static __always_inline const __be32 *pt6_flow_host(const struct pt6_flow_key *k)
{
	return k->dir == PT_DIR_IN ? k->daddr : k->saddr;
}

/*
 * pt_flow_judge() for IPv6: the rule must still hold the flow's WAN port and
 * map it to its LAN port; the session (rule, host, ::) or, in mode
 * contacted, (rule, ::, remote) must be live and held by the flow's host
 * when the fate depends on it (kill_flows_on_expiry) or the caller asks.
 */
static __always_inline enum pt_fate pt6_flow_judge(const struct pt6_flow_key *k, const struct pt6_flow *fv,
						   __u64 now, bool want_session, struct pt6_session **sp)
{
	__u32 rid = fv->rule;
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &rid);
	__u32 rflags = rule ? rule->flags : 0;
	__u64 idle = rule ? rule->idle_timeout_ns : 0;
	bool owned = false;
	bool in = k->dir == PT_DIR_IN;

	struct pt_port *pp = pt_port_slot(k->proto, in ? k->dport : fv->nat_port);
	if (!pp || pp->open_rule != rid || pp->open_lan_port != bpf_ntohs(in ? fv->nat_port : k->sport))
		rflags = 0;

	*sp = NULL;
	const __be32 *host = pt6_flow_host(k);
	if ((rflags & PT_RULE_ENABLED) && ((rflags & PT_RULE_KILL_FLOWS) || want_session)) {
		struct pt6_session_key skey = { .rule = rid };
		if (fv->flags & PT6_FLOW_CONTACTED)
			pt6_copy(skey.peer, in ? k->saddr : k->daddr);
		else
			pt6_copy(skey.host, host);
		struct pt6_session *s = bpf_map_lookup_elem(&pt6_sessions, &skey);
		if (s) {
			owned = pt6_eq(s->host, host) && pt_live_until(s->last_seen_ns, idle, now);
			if (owned)
				*sp = s;
		}
	}
	/* pt_flow_fate(), with the partner in pt6_flows. */
	if (!(rflags & PT_RULE_ENABLED))
		return PT_FATE_KILLED;
	if ((rflags & PT_RULE_KILL_FLOWS) && !owned)
		return PT_FATE_KILLED;
	if ((__s64)(now - fv->last_seen_ns) <= (__s64)PT_FLOW_ORPHAN_NS)
		return PT_FATE_LIVE;
	struct pt6_flow_key pk;
	pt6_partner_key(&pk, k, fv);
	struct pt6_flow *pf = bpf_map_lookup_elem(&pt6_flows, &pk);
	if (!pf)
		return PT_FATE_ORPHAN;
	return pt_flow_timer_fate(k->proto, in, fv->last_seen_ns, fv->seen, pf->last_seen_ns, pf->seen, now);
}

/* pt_flow_end() for IPv6: both entries, each only if it is still the one judged. */
static __noinline int pt6_flow_end(const struct pt6_flow_key *k, const struct pt6_flow *fv)
{
	int removed = 0;
	struct pt6_flow_key pk;
	pt6_partner_key(&pk, k, fv);
	struct pt6_flow *f = bpf_map_lookup_elem(&pt6_flows, &pk);
	if (f && f->created_ns == fv->created_ns && !bpf_map_delete_elem(&pt6_flows, &pk))
		removed++;
	f = bpf_map_lookup_elem(&pt6_flows, k);
	if (f && f->created_ns == fv->created_ns && f->nat_port == fv->nat_port && !bpf_map_delete_elem(&pt6_flows, k))
		removed++;
	return removed;
}

/* struct pt_flow_ref for IPv6. */
struct pt6_flow_ref {
	struct pt6_flow *f;
	struct pt6_flow fv;
	struct pt6_session *s;
	__u64 now;
};

/* pt_flow_get() for IPv6: a flow that is over is absent at once (and ended).
 * Not inlined, nor pt6_forward(): the IPv6 keys are 40 bytes, and the frames
 * of a call chain share BPF's 512 bytes of stack. */
static __noinline bool pt6_flow_get(const struct pt6_flow_key *k, struct pt6_flow_ref *ref, bool want_session)
{
	struct pt6_flow *f = bpf_map_lookup_elem(&pt6_flows, k);
	if (!f)
		return false;
	ref->fv = *f;
	__u64 now = pt_now();
	bool out = k->dir == PT_DIR_OUT;
	want_session |= out && (pt_stale(ref->fv.last_seen_ns, now) || ref->fv.last_seen_ns == ref->fv.created_ns);
	if (pt6_flow_judge(k, &ref->fv, now, want_session, &ref->s) != PT_FATE_LIVE) {
		pt6_flow_end(k, &ref->fv);
		return false;
	}
	ref->f = f;
	ref->now = now;
	return true;
}

/* pt_flow_clear() for IPv6. */
static __noinline bool pt6_flow_clear(const struct pt6_flow_key *k, __u64 now)
{
	struct pt6_flow *f = bpf_map_lookup_elem(&pt6_flows, k);
	if (!f)
		return true;
	struct pt6_flow fv = *f;
	struct pt6_session *s;
	if (pt6_flow_judge(k, &fv, now, false, &s) == PT_FATE_LIVE)
		return false;
	pt6_flow_end(k, &fv);
	return true;
}

/* pt_syn_reopens() for IPv6. */
static __noinline bool pt6_syn_reopens(const struct pt6_flow_key *k, const struct pt6_flow_ref *ref)
{
	if (!ref->s)
		return true;
	if (ref->fv.seen & (PT_SEEN_FIN | PT_SEEN_RST))
		return true;
	struct pt6_flow_key pk;
	pt6_partner_key(&pk, k, &ref->fv);
	struct pt6_flow *pf = bpf_map_lookup_elem(&pt6_flows, &pk);
	return pf && (pf->seen & (PT_SEEN_FIN | PT_SEEN_RST));
}

/* Decrement the hop limit. No IPv6 header checksum: a CHECKSUM_COMPLETE
 * skb->csum is kept right by BPF_F_RECOMPUTE_CSUM. */
static __always_inline int pt6_dec_hop_limit(struct __sk_buff *skb, const struct pt6_pkt *p)
{
	__u8 hl = p->hop_limit - 1;
	return bpf_skb_store_bytes(skb, PT_L3_OFF(p) + PT6_OFF_HOP_LIMIT, &hl, 1, BPF_F_RECOMPUTE_CSUM);
}

/*
 * Rewrite the destination port (inbound) or the source port (outbound) to
 * `port` and decrement the hop limit. The L4 checksum follows the port
 * through bpf_l4_csum_replace() (a port is no pseudo-header field; a
 * CHECKSUM_PARTIAL skb needs nothing); a UDP checksum that comes out 0 is
 * sent as 0xffff (BPF_F_MARK_MANGLED_0; 0 means "none", which IPv6 forbids,
 * RFC 8200 8.1). A non-first fragment has no L4 header.
 */
static __always_inline int pt6_rewrite(struct __sk_buff *skb, const struct pt6_pkt *p, bool inbound, __be16 port)
{
	__be16 old = inbound ? p->dport : p->sport;
	if (!p->nonfirst_frag && port != old) {
		bool udp = p->proto == IPPROTO_UDP;
		__u32 l4_off = p->l4_off;
		__u32 csum_off = l4_off + (udp ? offsetof(struct udphdr, check) : offsetof(struct tcphdr, check));
		if (bpf_l4_csum_replace(skb, csum_off, old, port, sizeof(port) | (udp ? BPF_F_MARK_MANGLED_0 : 0)))
			return -1;
		if (bpf_skb_store_bytes(skb, l4_off + (inbound ? 2 : 0), &port, sizeof(port), 0))
			return -1;
	}
	return pt6_dec_hop_limit(skb, p);
}

/* A packet of a live flow: pt_forward() for IPv6. */
static __noinline int pt6_forward(struct __sk_buff *skb, const struct pt6_pkt *p,
				       const struct pt6_flow_ref *ref, enum pt_direction dir)
{
	bool inbound = dir == PT_D_WAN;
	struct pt6_flow *f = ref->f;

	/* The stack sends Time Exceeded (ip6_forward()), and conntrack's
	 * RELATED does not apply to it: it is the router's own message. */
	if (p->hop_limit <= 1)
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	struct pt_egress eg = pt_egress_of(inbound, ref->fv.ifindex);
	if (!eg.ifindex)
		return pt_done(PT_F_IPV6, dir, PT_V_DROPPED, TC_ACT_SHOT);
	if (pt_too_big_len(skb, (__u32)p->ip_end - PT_L3_OFF(p), eg.ifindex))
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);

	eg.direct = !pt_neigh_due(ref->fv.created_ns, ref->fv.last_seen_ns, ref->now);
	pt_touch(&f->last_seen_ns, ref->now);
	__u32 seen = pt_seen_of(p->proto, p->tcp_flags);
	if ((ref->fv.seen | seen) != ref->fv.seen)
		__sync_fetch_and_or(&f->seen, seen);
	if (!inbound && ref->s)
		pt_touch(&ref->s->last_seen_ns, ref->now);

	if (p->first_frag)
		pt6_frag_remember(p, inbound ? PT_DIR_IN : PT_DIR_OUT, ref->fv.ifindex, ref->now);
	if (pt6_rewrite(skb, p, inbound, ref->fv.nat_port))
		return pt_done(PT_F_IPV6, dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(PT_F_IPV6, dir, PT_V_TRANSLATED, 0);
	return pt_redirect_proto(skb, PT_L3_OFF(p), ETH_P_IPV6, eg);
}

/* SPEC 9, 8: may a packet from `saddr` arriving on the WAN open a flow? Not
 * from a martian (::, loopback, link-local, multicast), the LAN's prefixes or
 * the gateway's own addresses. */
static __always_inline bool pt6_wan_source_ok(const __be32 *saddr)
{
	return !pt6_martian(saddr) && !pt6_lan_addr(saddr) && !pt6_local_addr(saddr);
}

/* struct pt_open_keys for IPv6. */
struct pt6_open_keys {
	struct pt6_flow_key in;
	struct pt6_flow_key out;
};

/* Returned by pt6_open_flow() when the flow is in and `ref` holds its
 * inbound entry: the caller forwards the packet. Not a TC action. */
#define PT6_ACT_FORWARD 0x7f11

/*
 * pt_open_flow() for IPv6: the first packet of an inbound connection to the
 * LAN host `p->daddr` on an open port. The session: mode any (rule, host, ::),
 * mode contacted (rule, ::, remote) held by that host; live. Returns
 * PT6_ACT_FORWARD, a counted TC action, or PT_ACT_RECLAIM / PT_ACT_CLEAR_OUT
 * under `may_retry` as IPv4's does.
 */
static __noinline int pt6_open_flow(struct __sk_buff *skb, const struct pt6_pkt *p, struct pt6_open_keys *keys,
				    struct pt6_flow_ref *ref, bool may_retry)
{
	__u64 now = pt_now();
	struct pt_port *port = pt_port_slot(p->proto, p->dport);
	if (!port)
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	__u32 rid = port->open_rule;
	__be16 lan_port = bpf_htons(port->open_lan_port);
	struct pt_rule *rule = bpf_map_lookup_elem(&pt_rules, &rid);
	if (!rule)
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	__u32 rflags = rule->flags;
	__u64 idle = rule->idle_timeout_ns;
	if (!(rflags & PT_RULE_ENABLED))
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);

	bool contacted = rflags & PT_RULE_PEER_CONTACTED;
	struct pt6_session_key skey = { .rule = rid };
	if (contacted)
		pt6_copy(skey.peer, p->saddr);
	else
		pt6_copy(skey.host, p->daddr);
	struct pt6_session *s = bpf_map_lookup_elem(&pt6_sessions, &skey);
	if (!s)
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	__u32 lan_ifindex = s->ifindex;
	if (!pt6_eq(s->host, p->daddr) || !pt_live_until(s->last_seen_ns, idle, now))
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* SPEC 9, 8: only to a LAN host's address (the session's host is one,
	 * but the LAN's prefixes may have moved since), never to the gateway's;
	 * only from a remote source. */
	if (!pt6_lan_host(p->daddr) || pt6_local_addr(p->daddr) || !pt6_wan_source_ok(p->saddr))
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	/* The reply of a connection conntrack tracks (the host's own
	 * connection out from this port) is conntrack's. */
	if (pt6_ct_is_reply(skb, p->saddr, p->daddr, p->sport, p->dport, p->proto))
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	if (p->hop_limit <= 1)  /* the stack answers with Time Exceeded; no flow */
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);

	__u32 fflags = contacted ? PT6_FLOW_CONTACTED : 0;
	/* The replies' key: pt6_partner_key() of the inbound entry. */
	struct pt6_flow_key *out_key = &keys->out;
	*out_key = (struct pt6_flow_key){ .sport = lan_port, .dport = p->sport, .proto = p->proto, .dir = PT_DIR_OUT };
	pt6_copy(out_key->saddr, p->daddr);
	pt6_copy(out_key->daddr, p->saddr);
	struct pt6_flow out = {
		.created_ns = now, .last_seen_ns = now, .nat_port = p->dport, .rule = rid,
		.ifindex = skb->ifindex, .flags = fflags,
	};
	*ref = (struct pt6_flow_ref){
		.fv = {
			.created_ns = now, .last_seen_ns = now, .nat_port = lan_port, .rule = rid,
			.ifindex = lan_ifindex, .flags = fflags,
		},
		.now = now,
	};
	long err = bpf_map_update_elem(&pt6_flows, out_key, &out, BPF_NOEXIST);
	if (err == -EEXIST && may_retry)
		return PT_ACT_CLEAR_OUT;
	if (err == -E2BIG && may_retry)
		return PT_ACT_RECLAIM;
	if (err) {
		pt_count(PT_F_IPV6, rid, PT_RC_FLOWS_REFUSED);
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	}
	err = bpf_map_update_elem(&pt6_flows, &keys->in, &ref->fv, BPF_NOEXIST);
	if (err) {
		pt6_flow_end(out_key, &out);
		if (err == -E2BIG && may_retry)
			return PT_ACT_RECLAIM;
		pt_count(PT_F_IPV6, rid, PT_RC_FLOWS_REFUSED);
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	}
	pt_count(PT_F_IPV6, rid, PT_RC_FLOWS_OPENED);
	ref->f = bpf_map_lookup_elem(&pt6_flows, &keys->in);
	if (!ref->f)
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	return PT6_ACT_FORWARD;
}

/* --- walks of pt6_flows ------------------------------------------------------ */

/* pt_reclaim_flow_cb() for IPv6. */
static long pt6_reclaim_flow_cb(struct bpf_map *map, const struct pt6_flow_key *k, struct pt6_flow *f,
				struct pt6_reclaim_ctx *c)
{
	if ((__s64)(c->now - f->last_seen_ns) <= (__s64)PT_FLOW_TIMEOUT_TCP_TRANS_NS)
		return 0;
	struct pt6_flow_key key = *k;
	struct pt6_flow fv = *f;
	struct pt6_session *s;
	if (pt6_flow_judge(&key, &fv, c->now, false, &s) == PT_FATE_LIVE)
		return 0;
	pt6_flow_end(&key, &fv);
	return pt_reclaim_spend(c->st, &c->freed);
}

/* pt6_flows is full: pt_reclaim_flows() for IPv6. */
static __noinline bool pt6_reclaim_flows(__u64 now)
{
	struct pt_reclaim *st = pt_reclaim_due_st(&pt6_reclaim[PT_RECLAIM_FLOWS], PT_RECLAIM_FLOWS, now);
	if (!st)
		return false;
	struct pt6_reclaim_ctx c = { .now = now, .st = st };
	bpf_for_each_map_elem(&pt6_flows, pt6_reclaim_flow_cb, &c, 0);
	return c.freed;
}

/* pt_sweep_flow_cb() for IPv6: the daemon's sweep over pt6_flows. */
static long pt6_sweep_flow_cb(struct bpf_map *map, const struct pt6_flow_key *k, struct pt6_flow *f,
			      struct pt6_reclaim_ctx *c)
{
	struct pt6_flow_key key = *k;
	struct pt6_flow fv = *f;
	struct pt6_session *s;
	if (pt6_flow_judge(&key, &fv, c->now, false, &s) != PT_FATE_LIVE) {
		c->removed += pt6_flow_end(&key, &fv);
		return 0;
	}
	c->seen++;
	if (key.dir == PT_DIR_IN)
		c->live++;
	__u64 until = fv.last_seen_ns +
		      (key.proto == IPPROTO_TCP ? PT_FLOW_TIMEOUT_TCP_TRANS_NS : PT_FLOW_TIMEOUT_UDP_NS);
	if (!c->next_ns || (__s64)(until - c->next_ns) < 0)
		c->next_ns = until;
	return 0;
}

#endif /* PORTTRIG_FLOW6_H */
