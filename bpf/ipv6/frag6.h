/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * IPv6 fragments (RFC 8200 4.5). The first fragment carries the whole header
 * chain and the ports (RFC 7112; parse6.h refuses one that does not), so it
 * is judged like any packet of its flow; when it is sent on, pt6_frags
 * remembers where, by (source, destination, identification, the fragment
 * header's next header, direction), and the later fragments, which carry no
 * ports, follow it there for PT_FRAG_TIMEOUT_NS. A later fragment without a
 * remembered first one passes untouched (to the stack, whose firewall
 * decides). Port translation changes only the first fragment: the L4
 * checksum it carries covers the whole datagram and is fixed there.
 */
#ifndef PORTTRIG_FRAG6_H
#define PORTTRIG_FRAG6_H

#include "addr6.h"
#include "parse6.h"

static __always_inline void pt6_frag_key_of(struct pt6_frag_key *k, const struct pt6_pkt *p, __u8 dir)
{
	*k = (struct pt6_frag_key){ .id = p->frag_id, .proto = p->frag_nh, .dir = dir };
	pt6_copy(k->saddr, p->saddr);
	pt6_copy(k->daddr, p->daddr);
}

/* A first fragment was sent on to `ifindex`: its datagram's later fragments follow it. */
static __always_inline void pt6_frag_remember(const struct pt6_pkt *p, __u8 dir, __u32 ifindex, __u64 now)
{
	struct pt6_frag_key k;
	pt6_frag_key_of(&k, p, dir);
	struct pt6_frag v = { .first_ns = now, .ifindex = ifindex };
	bpf_map_update_elem(&pt6_frags, &k, &v, BPF_ANY);  /* best effort, as pt_frag_remember() */
}

/* A first fragment starts a new datagram: an older one's entry under the
 * same key must not steer it (pt_frag_forget()). */
static __noinline void pt6_frag_forget(const struct pt6_pkt *p, __u8 dir)
{
	struct pt6_frag_key k;
	pt6_frag_key_of(&k, p, dir);
	bpf_map_delete_elem(&pt6_frags, &k);
}

/*
 * A non-first fragment: sent where its first fragment went within
 * PT_FRAG_TIMEOUT_NS, with the hop limit decremented, else passed untouched.
 * Hop limit <= 1 or too big for the egress: to the stack (Time Exceeded,
 * Packet Too Big), as any IPv6 packet of a flow.
 */
static __noinline int pt6_fragment(struct __sk_buff *skb, const struct pt6_pkt *p, __u8 fdir,
				   enum pt_direction dir)
{
	struct pt6_frag_key k;
	pt6_frag_key_of(&k, p, fdir);
	struct pt6_frag *fr = bpf_map_lookup_elem(&pt6_frags, &k);
	if (!fr)
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	__u64 first_ns = fr->first_ns;
	__u32 ifindex = fr->ifindex;
	if ((__s64)(pt_now() - first_ns) > (__s64)PT_FRAG_TIMEOUT_NS)
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	if (p->hop_limit <= 1)
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	bool inbound = fdir == PT_DIR_IN;
	struct pt_egress eg = pt_egress_of(inbound, ifindex);
	if (!eg.ifindex)
		return pt_done(PT_F_IPV6, dir, PT_V_DROPPED, TC_ACT_SHOT);
	if (pt_too_big_len(skb, (__u32)p->ip_end - PT_L3_OFF(p), eg.ifindex))
		return pt_done(PT_F_IPV6, dir, PT_V_PASS, TC_ACT_UNSPEC);
	__u8 hl = p->hop_limit - 1;
	if (bpf_skb_store_bytes(skb, PT_L3_OFF(p) + PT6_OFF_HOP_LIMIT, &hl, 1, BPF_F_RECOMPUTE_CSUM))
		return pt_done(PT_F_IPV6, dir, PT_V_MALFORMED, TC_ACT_SHOT);
	pt_done(PT_F_IPV6, dir, PT_V_TRANSLATED, 0);
	return pt_redirect_proto(skb, PT_L3_OFF(p), ETH_P_IPV6, eg);
}

#endif /* PORTTRIG_FRAG6_H */
