// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Where a translated packet leaves, and how it is sent there.
 *
 * Every translated packet is redirected from TC ingress straight to its
 * egress device (never through ip_forward() and netfilter): bpf_redirect()
 * to a layer-3 device, bpf_redirect_neigh() to an Ethernet one, which looks
 * the route up (ip_route_output_key()) and resolves the next hop through
 * the neighbour subsystem (ARP/ND) as ip_finish_output2() would.
 *
 * The fast path (issue 11): most packets of an established flow skip both.
 * bpf_fib_lookup() gives the next hop's MAC from the FIB and the neighbour
 * table in one lookup without taking a route reference (the same route:
 * see pt_redirect_direct()), the program writes the Ethernet header itself
 * and bpf_redirect() transmits. A profile on veth had the route lookup and
 * the neighbour output inside bpf_redirect_neigh() about as costly as the
 * porttrig program; end to end the fast path measured 0.94-1.04 of the slow
 * one (bench/RESULTS.md): the FIB walk remains, what goes is the route
 * reference (an atomic on a dst shared by the CPUs forwarding to one host)
 * and the neighbour output. Whatever the fast path cannot do as the slow path
 * would falls back to it: a next hop whose MAC is not known and valid
 * (NUD_VALID; bpf_redirect_neigh() then resolves it, queueing the packet),
 * a route out of another device than the flow's egress, a packet too big
 * for the egress, a packet with a mark (policy routing by fwmark: the FIB
 * lookup does not see marks on 6.1), a layer-3 ingress (no Ethernet header
 * to rewrite).
 *
 * The neighbour subsystem keeps its say: a MAC that the fast path uses
 * without the kernel seeing the traffic would never be probed again, so
 * the neighbour state machine (REACHABLE, STALE, DELAY, PROBE, FAILED)
 * would not notice a host that went away or changed its NIC. Each flow
 * therefore sends its first packets (until its entry's first refresh) and
 * then one packet per epoch of about 1 s by the slow path (pt_neigh_due()):
 * as kernel forwarding would, that packet marks the entry used, a STALE
 * entry goes to DELAY and is probed, and a FAILED one stops the fast path
 * (the lookup no longer finds it valid) until ARP/ND has the MAC again. The
 * epoch (about 1 s) is well inside the state machine's timers
 * (delay_first_probe_time 5 s, base_reachable_time 30 s).
 */
#ifndef PORTTRIG_REDIRECT_H
#define PORTTRIG_REDIRECT_H

#define PT_AF_INET 2
#define PT_AF_INET6 10
#define PT_IPV6_FLOWINFO_MASK 0x0fffffff

/* A flow's packet takes the slow path at most once per epoch (2^30 ns, about 1.07 s). */
#define PT_NEIGH_EPOCH_SHIFT 30

/* The FIB lookup's 64-byte argument: per CPU, off the stack (BPF's 512
 * bytes are for the whole call chain, and the WAN program's is deep). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_fib_lookup);
} pt_fib_scratch SEC(".maps");

/* Where a translated packet leaves. */
struct pt_egress {
	__u32 ifindex;          /* 0: nowhere (the WAN interface is gone) */
	bool l3;                /* a layer-3 device: bpf_redirect(), not bpf_redirect_neigh() */
	bool direct;            /* the caller allows the fast path (pt_neigh_due()) */
};

/*
 * The egress of a packet translated in direction `inbound`. Inbound (to the
 * LAN): `lan_ifindex`, the LAN interface that the flow's (or fragment's)
 * entry names. Outbound (to the WAN): the WAN interface as pt_config has it
 * now, not the ifindex stored in the entry when the flow opened: pppd creates
 * a new ppp0 (a new ifindex) on every reconnect, and flows that outlive the
 * old one must leave by the new one.
 */
static __always_inline struct pt_egress pt_egress_of(bool inbound, __u32 lan_ifindex)
{
	struct pt_egress eg = { .ifindex = lan_ifindex, .l3 = false, .direct = false };
	if (inbound)
		return eg;
	__u32 zero = 0;
	struct pt_config *cfg = bpf_map_lookup_elem(&pt_config, &zero);
	eg.ifindex = cfg ? cfg->wan_ifindex : 0;
	eg.l3 = cfg && (cfg->wan_flags & PT_WAN_L3);
	return eg;
}

/*
 * Should this packet of a flow entry created at `created` and stamped at
 * `stamp` take the slow path, for the neighbour subsystem's sake (see the
 * top of this file)? Yes
 *  - while the entry has not been refreshed since it was made (its first
 *    PT_REFRESH_GRANULARITY_NS: the flow's first packets), so that every
 *    flow, however short, shows the kernel its next hop in use;
 *  - for the packet that refreshes the stamp (pt_touch(), at most every
 *    PT_REFRESH_GRANULARITY_NS) when the refresh crosses into a new epoch:
 *    one packet per flow and epoch while the flow is busy.
 */
static __always_inline bool pt_neigh_due(__u64 created, __u64 stamp, __u64 now)
{
	if (stamp == created)
		return true;
	return pt_stale(stamp, now) && (stamp >> PT_NEIGH_EPOCH_SHIFT) != (now >> PT_NEIGH_EPOCH_SHIFT);
}

/*
 * The fast path: look the next hop up in the FIB (IPv4: an output route
 * through `ifindex`; IPv6: the route from the ingress device), and if it
 * leaves by `ifindex` with a valid neighbour, write its MACs into the
 * Ethernet header and bpf_redirect(). Returns the TC action, or -1
 * when the slow path must send the packet (nothing has changed then). The
 * packet has an Ethernet header (l3_off == ETH_HLEN) and its final
 * addresses. tot_len 0: the helper checks the skb against the egress MTU
 * itself (is_skb_forwardable(), GSO-aware), as the caller already did.
 */
static __noinline long pt_redirect_direct(struct __sk_buff *skb, bool ipv6, __u32 ifindex)
{
	if (skb->mark)
		return -1;
	__u32 zero = 0;
	struct bpf_fib_lookup *fib = bpf_map_lookup_elem(&pt_fib_scratch, &zero);
	if (!fib)
		return -1;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 flags;
	__builtin_memset(fib, 0, sizeof(*fib));
	if (ipv6) {
		/* RFC 8200's header (struct pt6_hdr, declared with the IPv6
		 * code): flow word at 0, next header at 6, addresses at 8 and 24. */
		__u8 *ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 40) > data_end)
			return -1;
		fib->family = PT_AF_INET6;
		fib->flowinfo = *(__be32 *)ip6 & bpf_htonl(PT_IPV6_FLOWINFO_MASK);
		fib->l4_protocol = ip6[6];
		__builtin_memcpy(fib->ipv6_src, ip6 + 8, sizeof(fib->ipv6_src));
		__builtin_memcpy(fib->ipv6_dst, ip6 + 24, sizeof(fib->ipv6_dst));
		/* As ip6_forward() would route it: an input lookup from the
		 * ingress device. An output lookup here would not be the slow
		 * path's: bpf_ipv6_fib_lookup() matches `from PREFIX` rules only
		 * with RT6_LOOKUP_F_HAS_SADDR, which it sets for input lookups
		 * alone, and with an oif it takes a multipath route's first
		 * next hop instead of hashing the flow. */
		fib->ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
		flags = 0;
	} else {
		struct iphdr *ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > data_end)
			return -1;
		fib->family = PT_AF_INET;
		fib->tos = ip->tos;
		fib->l4_protocol = ip->protocol;
		fib->ipv4_src = ip->saddr;
		fib->ipv4_dst = ip->daddr;
		/* An output route through the egress, as bpf_redirect_neigh()
		 * takes it (ip_route_output_flow() with that oif; IPv4's rules
		 * match the source address either way, and with an oif neither
		 * lookup hashes a multipath route). */
		fib->ifindex = ifindex;
		flags = BPF_FIB_LOOKUP_OUTPUT;
	}
	if (bpf_fib_lookup(skb, fib, sizeof(*fib), flags) != BPF_FIB_LKUP_RET_SUCCESS ||
	    fib->ifindex != ifindex)
		return -1;
	/* Kernels before 6.1.15 / 5.15.97 (stable: "bpf_fib_lookup should
	 * not return neigh in NUD_FAILED state") return an entry that is not
	 * valid: one never resolved has a zero MAC, caught here; one that
	 * failed keeps its old MAC, not caught (README, Known gaps). */
	__u16 *d = (__u16 *)fib->dmac;
	if ((d[0] | d[1] | d[2]) == 0)
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	return bpf_redirect(ifindex, 0);
}

/*
 * Send a translated packet out of `eg`; the TC action.
 *  - A layer-3 egress (PPP, TUN): bpf_redirect(). A point-to-point link has
 *    no next hop to resolve; __bpf_redirect_no_mac() strips the Ethernet
 *    header the packet may have come with and the driver takes skb->protocol.
 *  - An Ethernet egress: bpf_redirect_neigh(), the FIB lookup and ARP that
 *    ip_finish_output2() would do. (On a LAN device without header_ops it
 *    also works: arp_constructor() gives such a device a NUD_NOARP neighbour
 *    whose output is neigh_direct_output(), so the LAN side always uses it.)
 *    __bpf_redirect_neigh() drops a packet that has no MAC header in front of
 *    its network header, and pulls ETH_HLEN bytes off: a packet from a
 *    layer-3 device gets one pushed first with bpf_skb_change_head(), as that
 *    helper is meant for ("an L3 skb that needs to push mac header for
 *    redirection into L2 device"). Zeroed but for h_proto: only h_dest's
 *    multicast bit is looked at before the header is pulled again.
 */
static __always_inline int pt_redirect_proto(struct __sk_buff *skb, __u32 l3_off, __u16 eth_proto, struct pt_egress eg)
{
	if (eg.l3)
		return bpf_redirect(eg.ifindex, 0);
	if (l3_off == ETH_HLEN && eg.direct) {
		long act = pt_redirect_direct(skb, eth_proto == ETH_P_IPV6, eg.ifindex);
		if (act >= 0)
			return act;
	}
	if (l3_off == 0) {
		if (bpf_skb_change_head(skb, ETH_HLEN, 0))
			return TC_ACT_SHOT;
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > data_end)
			return TC_ACT_SHOT;
		eth->h_proto = bpf_htons(eth_proto);
	}
	return bpf_redirect_neigh(eg.ifindex, NULL, 0, 0);
}

static __always_inline int pt_redirect(struct __sk_buff *skb, const struct pt_pkt *p, struct pt_egress eg)
{
	return pt_redirect_proto(skb, p->l3_off, ETH_P_IP, eg);
}

#endif /* PORTTRIG_REDIRECT_H */
