/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * ICMPv6 errors about a flow (RFC 4443: destination unreachable 1, packet
 * too big 2, time exceeded 3, parameter problem 4). An error quotes as much
 * of the offending packet as fits; its quote is walked like a packet (its
 * extension headers too, with pt6_walk()) down to the ports, and if they
 * belong to a live flow in the direction the error travels, the error is
 * sent on like the flow's packets (hop limit decremented, redirected), so
 * that it too never meets the forward chain (which would take it for
 * RELATED only if conntrack had seen the flow). With port translation the
 * quoted port is put back as the other side sent it, and the quoted L4
 * checksum (when quoted) and the ICMPv6 checksum follow (RFC 1624). No
 * address changes: the ICMPv6 pseudo-header stays as it is.
 *
 *  WAN (flow entry IN): a router or the remote about a packet the LAN host
 *    sent, quoting host:WAN port -> remote:rport; to the host. The quoted
 *    source port becomes the LAN port.
 *  LAN (flow entry OUT): the LAN host about an inbound packet, quoting
 *    remote:rport -> host:LAN port, from that host to that remote. The
 *    quoted destination port becomes the WAN port.
 *
 * Everything else of ICMPv6 (neighbour discovery, echo, errors about other
 * traffic) passes untouched. Errors refresh neither the flow nor its session.
 */
#ifndef PORTTRIG_ICMP6_H
#define PORTTRIG_ICMP6_H

#include "addr6.h"
#include "parse6.h"
#include "flow6.h"

#define PT6_ICMP_DEST_UNREACH 1
#define PT6_ICMP_PKT_TOOBIG 2
#define PT6_ICMP_TIME_EXCEED 3
#define PT6_ICMP_PARAMPROB 4
#define PT6_ICMP_HLEN 8
/* The quoted packet's ports (and UDP's checksum): the least a quote must hold. */
#define PT6_ICMP_QUOTE_L4_MIN 8

/* The packet an ICMPv6 error quotes. */
struct pt6_icmp_quote {
	struct pt6_flow_key k;  /* the flow entry the error belongs to */
	__u16 l4_off;           /* from skb->data: the quoted L4 header */
	__u16 l4_len;           /* bytes of it quoted (>= 8) */
};

/* Parse the error of a PT_PARSE_ICMP packet down to the quoted ports and
 * build the key of its flow entry (direction `fdir`). 0 or -1. */
static __always_inline int pt6_parse_icmp_error(struct __sk_buff *skb, const struct pt6_pkt *p, __u8 fdir,
						struct pt6_icmp_quote *q)
{
	__u32 icmp_off = p->l4_off;
	__u32 end = p->ip_end;
	__u8 type;
	if (icmp_off + PT6_ICMP_HLEN + PT6_HLEN > end || bpf_skb_load_bytes(skb, icmp_off, &type, 1))
		return -1;
	if (type < PT6_ICMP_DEST_UNREACH || type > PT6_ICMP_PARAMPROB)
		return -1;
	__u32 ip_off = icmp_off + PT6_ICMP_HLEN;
	struct pt6_hdr in;
	if (bpf_skb_load_bytes(skb, ip_off, &in, sizeof(in)))
		return -1;
	if ((bpf_ntohl(in.vtc_flow) >> 28) != 6)
		return -1;
	struct pt6_chain c = {};
	if (pt6_walk(skb, ip_off + PT6_HLEN, end, in.nexthdr, &c) != PT_PARSE_OK || c.nonfirst)
		return -1;
	if (c.proto != IPPROTO_TCP && c.proto != IPPROTO_UDP)
		return -1;
	__u32 l4_off = c.l4_off;
	__be16 ports[2];
	if (l4_off + PT6_ICMP_QUOTE_L4_MIN > end || bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)))
		return -1;
	/* The flow entry of the quoted packet's answer: quoted dst -> quoted src. */
	q->k = (struct pt6_flow_key){ .sport = ports[1], .dport = ports[0], .proto = c.proto, .dir = fdir };
	pt6_copy(q->k.saddr, in.daddr);
	pt6_copy(q->k.daddr, in.saddr);
	q->l4_off = l4_off;
	q->l4_len = end - l4_off;
	return 0;
}

/* Put `port` in the quote (the source port inbound, the destination port
 * outbound) and fix the quoted L4 checksum, if quoted, and the ICMPv6 one. */
static __always_inline int pt6_icmp_rewrite(struct __sk_buff *skb, const struct pt6_pkt *p,
					    const struct pt6_icmp_quote *q, bool inbound, __be16 port)
{
	__u32 l4_off = q->l4_off;
	__u32 port_off = l4_off + (inbound ? 0 : 2);
	__be16 old_port;
	__sum16 ck;
	if (bpf_skb_load_bytes(skb, port_off, &old_port, 2) ||
	    bpf_skb_load_bytes(skb, p->l4_off + 2, &ck, 2))
		return -1;
	if (old_port == port)
		return 0;
	ck = pt_csum_update16(ck, old_port, port);

	bool udp = q->k.proto == IPPROTO_UDP;
	__u32 l4ck_off = l4_off + (udp ? offsetof(struct udphdr, check) : offsetof(struct tcphdr, check));
	if (l4ck_off + sizeof(__sum16) <= l4_off + q->l4_len) {
		__sum16 old_l4ck;
		if (bpf_skb_load_bytes(skb, l4ck_off, &old_l4ck, 2))
			return -1;
		if (!(udp && old_l4ck == 0)) {
			__sum16 new_l4ck = pt_csum_update16(old_l4ck, old_port, port);
			if (udp && new_l4ck == 0)
				new_l4ck = (__sum16)0xffff;
			ck = pt_csum_update16(ck, old_l4ck, new_l4ck);
			if (bpf_skb_store_bytes(skb, l4ck_off, &new_l4ck, 2, 0))
				return -1;
		}
	}
	if (bpf_skb_store_bytes(skb, port_off, &port, 2, 0) || bpf_skb_store_bytes(skb, p->l4_off + 2, &ck, 2, 0))
		return -1;
	return 0;
}

/* An ICMPv6 message arriving in direction `dir` (flow entries `fdir`). */
static __noinline int pt6_icmp(struct __sk_buff *skb, const struct pt6_pkt *p, __u8 fdir, enum pt_direction dir)
{
	struct pt6_icmp_quote q;
	if (pt6_parse_icmp_error(skb, p, fdir, &q))
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	bool inbound = fdir == PT_DIR_IN;
	if (inbound) {
		/* To the host that sent the quoted packet, from a remote source. */
		if (!pt6_eq(p->daddr, q.k.daddr) || !pt6_wan_source_ok(p->saddr))
			return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	} else {
		/* From the host the quoted packet went to, back to its sender. */
		if (!pt6_eq(p->saddr, q.k.saddr) || !pt6_eq(p->daddr, q.k.daddr))
			return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
		struct pt_port *port = pt_port_slot(q.k.proto, q.k.sport);
		if (!port || !port->lan_port_refs)
			return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	}
	struct pt6_flow_ref ref;
	if (!pt6_flow_get(&q.k, &ref, false))
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	if (p->hop_limit <= 1)
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	struct pt_egress eg = pt_egress_of(inbound, ref.fv.ifindex);
	if (!eg.ifindex)
		return pt_done(PT_F_IPV6, dir, PT_V_DROPPED, TC_ACT_SHOT);
	if (pt6_icmp_rewrite(skb, p, &q, inbound, ref.fv.nat_port) || pt6_dec_hop_limit(skb, p))
		return pt_done(PT_F_IPV6, dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(PT_F_IPV6, dir, PT_V_TRANSLATED, 0);
	return pt_redirect_proto(skb, PT_L3_OFF(p), ETH_P_IPV6, eg);
}

#endif /* PORTTRIG_ICMP6_H */
