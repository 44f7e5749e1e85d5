/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The IPv6 half of pt_lan_ingress and pt_wan_ingress (and their _l3
 * builds): what each does with an IPv6 packet. The programs tail-call these
 * through pt6_progs when skb->protocol says IPv6, so that the IPv4 programs
 * keep their own frames and verifier work (kernel 6.1's 512-byte stack).
 */
#ifndef PORTTRIG_INGRESS6_H
#define PORTTRIG_INGRESS6_H

#include "parse6.h"
#include "session6.h"
#include "frag6.h"
#include "flow6.h"
#include "icmp6.h"

/* Returned by pt6_lan_reply() for a packet of no flow: not a TC action. */
#define PT6_NO_FLOW 0x7f10

/* A TCP or UDP packet (or first fragment) arriving on the WAN: a packet of a
 * flow, or the first of a new one. Its own frame (see the programs' dispatch
 * in porttrig.bpf.c): the keys and the flow reference stay off the frames of
 * the ICMPv6 and fragment paths. Returns PT_ACT_RECLAIM under `may_retry`
 * when pt6_flows is full: the caller walks it (pt6_reclaim_flows(), whose
 * callback's frame would not fit under this one's) and calls again. */
static __noinline int pt6_wan_l4(struct __sk_buff *skb, const struct pt6_pkt *p, bool may_retry)
{
	/* Only ports that an open spec holds carry flows (as IPv4's). */
	struct pt_port *port = pt_port_slot(p->proto, p->dport);
	if (!port || !port->open_rule)
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);

	bool syn = pt_is_bare_syn(p->proto, p->tcp_flags);
	struct pt6_open_keys keys = { .in = pt6_flow_key_of(p, PT_DIR_IN) };
	struct pt6_flow_ref ref;
	if (pt6_flow_get(&keys.in, &ref, syn)) {
		if (!syn || !pt6_syn_reopens(&keys.in, &ref))
			return pt6_forward(skb, p, &ref, PT_D_WAN);
		pt6_flow_end(&keys.in, &ref.fv);
	}
	if (p->proto == IPPROTO_TCP && !syn)
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	int act = pt6_open_flow(skb, p, &keys, &ref, may_retry);
	if (act == PT_ACT_CLEAR_OUT) {
		pt6_flow_clear(&keys.out, pt_now());
		act = pt6_open_flow(skb, p, &keys, &ref, false);
	}
	if (act == PT6_ACT_FORWARD)
		return pt6_forward(skb, p, &ref, PT_D_WAN);
	return act;
}

/* An IPv6 packet on pt_wan_ingress(_l3). */
static __always_inline int pt6_wan(struct __sk_buff *skb, const bool l3)
{
	struct pt6_pkt p = {};
	int r = pt6_parse(skb, &p, l3);
	if (r == PT_PARSE_SKIP || r == PT_PARSE_BAD)
		return pt_done(PT_F_IPV6, PT_D_WAN, r == PT_PARSE_BAD ? PT_V_MALFORMED : PT_V_PASS, TC_ACT_UNSPEC);
	/* SPEC 8: only frames addressed to the gateway's link-layer address
	 * (a layer-3 link has none: see pt_wan()). */
	if (!l3 && skb->pkt_type != PACKET_HOST)
		return pt_done(PT_F_IPV6, PT_D_WAN, PT_V_PASS, TC_ACT_UNSPEC);
	if (r == PT_PARSE_ICMP)
		return pt6_icmp(skb, &p, PT_DIR_IN, PT_D_WAN);
	if (p.nonfirst_frag)
		return pt6_fragment(skb, &p, PT_DIR_IN, PT_D_WAN);
	if (p.first_frag)
		pt6_frag_forget(&p, PT_DIR_IN);
	int act = pt6_wan_l4(skb, &p, true);
	if (act == PT_ACT_RECLAIM) {
		pt6_reclaim_flows(pt_now());
		act = pt6_wan_l4(skb, &p, false);
	}
	return act;
}

/* A LAN host's packet from a port that some open spec maps to: a reply on
 * an accepted flow, forwarded; PT6_NO_FLOW if it is none. */
static __noinline int pt6_lan_reply(struct __sk_buff *skb, const struct pt6_pkt *p)
{
	bool syn = pt_is_bare_syn(p->proto, p->tcp_flags);
	struct pt6_flow_key out_key = pt6_flow_key_of(p, PT_DIR_OUT);
	struct pt6_flow_ref ref;
	if (pt6_flow_get(&out_key, &ref, syn)) {
		if (!syn || !pt6_syn_reopens(&out_key, &ref))
			return pt6_forward(skb, p, &ref, PT_D_LAN);
		pt6_flow_end(&out_key, &ref.fv);
	}
	return PT6_NO_FLOW;
}

/* An IPv6 packet on pt_lan_ingress(_l3). */
static __always_inline int pt6_lan(struct __sk_buff *skb, const bool l3)
{
	struct pt6_pkt p = {};
	int r = pt6_parse(skb, &p, l3);
	if (r == PT_PARSE_SKIP || r == PT_PARSE_BAD)
		return pt_done(PT_F_IPV6, PT_D_LAN, r == PT_PARSE_BAD ? PT_V_MALFORMED : PT_V_PASS, TC_ACT_UNSPEC);
	if (!l3 && skb->pkt_type != PACKET_HOST)
		return pt_done(PT_F_IPV6, PT_D_LAN, PT_V_PASS, TC_ACT_UNSPEC);
	if (r == PT_PARSE_ICMP)
		return pt6_icmp(skb, &p, PT_DIR_OUT, PT_D_LAN);
	if (p.nonfirst_frag)
		return pt6_fragment(skb, &p, PT_DIR_OUT, PT_D_LAN);
	if (p.first_frag)
		pt6_frag_forget(&p, PT_DIR_OUT);

	/* Replies of accepted flows. As IPv4's (pt_lan()), such a packet never
	 * arms, even to a trigger port: a remote could otherwise open a second
	 * rule by connecting in from a trigger port (SPEC 8). */
	struct pt_port *sport = pt_port_slot(p.proto, p.sport);
	if (sport && sport->lan_port_refs) {
		int act = pt6_lan_reply(skb, &p);
		if (act != PT6_NO_FLOW)
			return act;
	}
	return pt_done(PT_F_IPV6, PT_D_LAN, pt6_lan_trigger(skb, &p), TC_ACT_UNSPEC);
}

/* The IPv6 programs, one per program and build; pt_lan_ingress and
 * pt_wan_ingress (and their _l3 builds) tail-call them through pt6_progs,
 * which libbpf fills when it loads the object (each object has its own,
 * with its own programs). The object does not pin it; the daemon does, once
 * its programs are attached (Datapath.pinTailCalls): the kernel empties a
 * prog array when its last user reference goes, which would cut IPv6 while
 * no daemon runs. Never attached by themselves. */
#define PT6_PROG_LAN 0
#define PT6_PROG_LAN_L3 1
#define PT6_PROG_WAN 2
#define PT6_PROG_WAN_L3 3

SEC("tc")
int pt6_lan_ingress(struct __sk_buff *skb)
{
	return pt6_lan(skb, false);
}

SEC("tc")
int pt6_lan_ingress_l3(struct __sk_buff *skb)
{
	return pt6_lan(skb, true);
}

SEC("tc")
int pt6_wan_ingress(struct __sk_buff *skb)
{
	return pt6_wan(skb, false);
}

SEC("tc")
int pt6_wan_ingress_l3(struct __sk_buff *skb)
{
	return pt6_wan(skb, true);
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__array(values, int(struct __sk_buff *));
} pt6_progs SEC(".maps") = {
	.values = {
		[PT6_PROG_LAN] = (void *)&pt6_lan_ingress,
		[PT6_PROG_LAN_L3] = (void *)&pt6_lan_ingress_l3,
		[PT6_PROG_WAN] = (void *)&pt6_wan_ingress,
		[PT6_PROG_WAN_L3] = (void *)&pt6_wan_ingress_l3,
	},
};

#endif /* PORTTRIG_INGRESS6_H */
