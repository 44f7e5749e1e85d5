// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The XDP fast path (datapath.xdp, issue 11): inbound IPv4 packets of
 * established flows, translated and redirected to the LAN host from the WAN
 * driver's receive loop, before the kernel builds an skb.
 *
 * pt_wan_xdp runs on the WAN device (native XDP only) in front of
 * pt_wan_ingress, which stays attached and does everything else: this program
 * forwards only what that one would forward the same way, and passes
 * (XDP_PASS, packet untouched, no state changed) whatever it would decide
 * otherwise or cannot do here:
 *  - anything but a plain IPv4 TCP/UDP packet to the WAN address and the WAN
 *    device's own MAC (IP options, fragments, ICMP, IPv6, a VLAN tag, a bad
 *    header checksum or length, TTL <= 1);
 *  - a TCP SYN (it may reopen the flow: pt_syn_reopens());
 *  - a packet without a live flow (a flow's first packet, a flow that is over);
 *  - a packet too big for the LAN egress (pt_wan_ingress builds the ICMP
 *    error), a next hop whose MAC is not known and valid, a route out of
 *    another device than the flow's, and the neighbour upkeep's one packet per
 *    flow and epoch (pt_neigh_due(), redirect.h);
 *  - a packet whose L4 checksum field holds only the pseudo-header's sum (a
 *    veth peer's CHECKSUM_PARTIAL skb: pt_xdp_csum_partial());
 *  - a packet to a LAN interface that XDP cannot or must not transmit to
 *    (below; the daemon also marks bridges, and LANs whose qdisc or egress
 *    filters XDP frames would bypass).
 * The flow's state is judged and refreshed by the same functions as on TC
 * (pt_flow_get(), pt_touch(), pt_seen_flags()), and counted as the same
 * verdict (pt_done(): translated on the WAN).
 *
 * The LAN device must accept XDP frames (ndo_xdp_xmit): a bridge does not, a
 * veth only while its peer runs NAPI (an XDP program or GRO on it), some NIC
 * drivers only with an XDP program of their own. Kernel 6.1 cannot tell in
 * advance (XDP feature flags came in 6.3), and a refused frame is dropped
 * after the program returned. So the two tracepoint programs below watch for
 * the kernel's own report of such a failure and take that LAN interface out
 * of the XDP path at once (pt_xdp_tx): the frames of that one failure are
 * lost, later packets take the TC path (for a second only, after an error
 * that may pass). The daemon logs it, attaches pt_lan_xdp_pass to a NIC
 * that answered ENXIO, and clears the failures on reload.
 */
#ifndef PORTTRIG_XDP_H
#define PORTTRIG_XDP_H

#include <bpf/bpf_tracing.h>

/* Only the fields the tracepoints need; CO-RE finds their offsets in the kernel's BTF. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));
struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));
struct pt_possible_net {
	struct net *net;
} __attribute__((preserve_access_index));
struct net_device {
	int ifindex;
	struct pt_possible_net nd_net;
} __attribute__((preserve_access_index));
struct bpf_prog;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pt_xdp_config);
} pt_xdp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PT_XDP_TX_MAX);
	__type(key, __u32);
	__type(value, struct pt_xdp_tx);
} pt_xdp_tx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PT_XDP__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} pt_xdp_stats SEC(".maps");

static __always_inline int pt_xdp_count(enum pt_xdp_counter c, int act)
{
	__u32 idx = c;
	__u64 *n = bpf_map_lookup_elem(&pt_xdp_stats, &idx);
	if (n)
		*n += 1;
	return act;
}

/* The IPv4 header (20 bytes, no options) sums to 0xffff (pt_ip_csum_ok()). */
static __always_inline bool pt_xdp_ip_csum_ok(const struct iphdr *ip)
{
	const __u32 *w = (const __u32 *)ip;
	__u64 sum = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/*
 * Does the L4 checksum field hold only the pseudo-header's sum (a
 * CHECKSUM_PARTIAL packet of a local sender, whose checksum the device would
 * have completed)? A frame off the wire never does, but a veth hands XDP its
 * peer's skbs, and the incremental update below is wrong for such a field
 * (bpf_l4_csum_replace() on TC knows the difference). A complete checksum
 * equal to that sum by chance (1 in 65536) also goes to TC, which is right
 * for both.
 */
static __always_inline bool pt_xdp_csum_partial(const struct iphdr *ip, __u32 tot_len, void *data_end)
{
	const __u16 *w = (const __u16 *)&ip->saddr;   /* saddr, daddr: 4 words */
	__u32 l4_len = tot_len - sizeof(*ip);
	__u32 sum = (__u32)w[0] + w[1] + w[2] + w[3] + bpf_htons(ip->protocol) + bpf_htons((__u16)l4_len);
	__u16 pseudo = pt_csum_fold(sum);
	__sum16 *check;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > data_end)
			return true;
		check = &tcp->check;
	} else {
		struct udphdr *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return true;
		if (!udp->check)   /* "no checksum": nothing to get wrong */
			return false;
		check = &udp->check;
	}
	return *check == pseudo;
}

/*
 * Parse a frame as pt_parse() would, into `p`, for the fast path only: true
 * for a plain IPv4 TCP/UDP packet (no options, not a fragment) with a sane
 * total length and L4 header, to the WAN address and MAC, TTL > 1, header
 * checksum right. Anything else is the TC program's to judge.
 */
static __always_inline bool pt_xdp_parse(struct xdp_md *ctx, struct pt_pkt *p, __be32 wan_addr,
					 const struct pt_xdp_config *xc)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return false;
	/* To this device's unicast address only (PACKET_HOST). In 16-bit
	 * words: the Ethernet header may be only 2-byte aligned (NET_IP_ALIGN). */
	const __u16 *d = (const __u16 *)eth->h_dest, *m = (const __u16 *)xc->wan_mac;
	if (((d[0] ^ m[0]) | (d[1] ^ m[1]) | (d[2] ^ m[2])) != 0)
		return false;
	if (ip->version != 4 || ip->ihl != 5 || ip->daddr != wan_addr || !wan_addr)
		return false;
	if (ip->frag_off & bpf_htons(PT_IP_MF | PT_IP_OFFSET))
		return false;
	if (ip->ttl <= 1)
		return false;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len > (__u32)(data_end - (void *)ip))
		return false;
	if ((ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP) || tot_len < sizeof(*ip))
		return false;
	if (!pt_parse_ports(ip + 1, data_end, ip->protocol, tot_len - sizeof(*ip), false, p))
		return false;
	if (!pt_xdp_ip_csum_ok(ip))
		return false;
	if (pt_xdp_csum_partial(ip, tot_len, data_end))
		return false;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ttl = ip->ttl;
	p->l3_off = ETH_HLEN;
	p->l4_off = ETH_HLEN + sizeof(*ip);
	p->ip_end = ETH_HLEN + tot_len;
	p->ip_id = ip->id;
	p->nonfirst_frag = 0;
	p->first_frag = 0;
	return true;
}

/*
 * The next hop of a packet from `saddr` to `daddr` out of `ifindex`, as
 * pt_redirect_direct() looks it up (an output route through the egress), with
 * the packet's length checked against the route's MTU: the MACs into `fib`;
 * false when the TC path must send it.
 */
static __always_inline bool pt_xdp_next_hop(struct xdp_md *ctx, struct bpf_fib_lookup *fib, const struct pt_pkt *p,
					    __u8 tos, __be32 daddr, __u32 ifindex)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = PT_AF_INET;
	fib->tos = tos;
	fib->l4_protocol = p->proto;
	fib->tot_len = p->ip_end - ETH_HLEN;
	fib->ipv4_src = p->saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = ifindex;
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS ||
	    fib->ifindex != ifindex)
		return false;
	__u16 *d = (__u16 *)fib->dmac;   /* never resolved (see pt_redirect_direct()) */
	return (d[0] | d[1] | d[2]) != 0;
}

/*
 * Rewrite the destination address and port, decrement the TTL, and fix both
 * checksums incrementally (RFC 1624). An XDP frame is as it came off the wire:
 * its L4 checksum is complete (a field holding only the pseudo-header's sum
 * went to TC: pt_xdp_csum_partial()), and the pseudo-header's address is
 * updated like any covered word. UDP checksum 0
 * ("none", RFC 768) stays 0; a computed 0 is sent as 0xffff.
 */
static __always_inline bool pt_xdp_rewrite(struct xdp_md *ctx, const struct pt_pkt *p, __be32 addr, __be16 port,
					   const struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return false;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > data_end)
			return false;
		__sum16 c = pt_csum_update32(tcp->check, ip->daddr, addr);
		tcp->check = pt_csum_update16(c, tcp->dest, port);
		tcp->dest = port;
	} else {
		struct udphdr *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return false;
		if (udp->check) {
			__sum16 c = pt_csum_update32(udp->check, ip->daddr, addr);
			c = pt_csum_update16(c, udp->dest, port);
			udp->check = c ? c : (__sum16)0xffff;
		}
		udp->dest = port;
	}
	__u16 *ttl_word = (void *)&ip->ttl;   /* TTL and protocol share a word */
	__u16 old_ttl_word = *ttl_word;
	ip->ttl -= 1;
	__sum16 check = pt_csum_update16(ip->check, old_ttl_word, *ttl_word);
	ip->check = pt_csum_update32(check, ip->daddr, addr);
	ip->daddr = addr;
	__u16 *dst = (__u16 *)eth->h_dest, *src = (__u16 *)eth->h_source;
	const __u16 *dmac = (const __u16 *)fib->dmac, *smac = (const __u16 *)fib->smac;
	dst[0] = dmac[0]; dst[1] = dmac[1]; dst[2] = dmac[2];
	src[0] = smac[0]; src[1] = smac[1]; src[2] = smac[2];
	return true;
}

/* Is `ifindex` out of the XDP path (pt_xdp_tx)? For good after a failure
 * that says the device cannot take XDP frames, or a daemon's mark; for
 * PT_XDP_TX_RETRY_NS after any other failure. */
static __always_inline bool pt_xdp_tx_off(const struct pt_xdp_config *xc, __u32 ifindex, __u64 now)
{
	if (xc->all_off)
		return true;
	struct pt_xdp_tx *t = bpf_map_lookup_elem(&pt_xdp_tx, &ifindex);
	if (!t)
		return false;
	__s32 err = t->err;
	return err > 0 || err == -EOPNOTSUPP || err == -ENXIO || (__s64)(now - t->last_ns) < (__s64)PT_XDP_TX_RETRY_NS;
}

SEC("xdp")
int pt_wan_xdp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct pt_config *cfg = bpf_map_lookup_elem(&pt_config, &zero);
	struct pt_xdp_config *xc = bpf_map_lookup_elem(&pt_xdp_config, &zero);
	struct pt_pkt p = {};
	if (!cfg || !xc || !pt_xdp_parse(ctx, &p, cfg->wan_addr, xc))
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);
	struct pt_port *port = pt_port_slot(p.proto, p.dport);
	if (!port || !port->open_rule || (p.tcp_flags & PT_TCP_SYN))
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);

	struct pt_flow_key key = pt_flow_key_of(&p, PT_DIR_IN);
	struct pt_flow_ref ref;
	if (!pt_flow_get(&key, &ref, false))
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);
	__u32 ifindex = ref.fv.ifindex;
	if (pt_xdp_tx_off(xc, ifindex, ref.now))
		return pt_xdp_count(PT_XDP_FALLBACK, XDP_PASS);
	if (pt_neigh_due(ref.fv.created_ns, ref.fv.last_seen_ns, ref.now))
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);
	struct bpf_fib_lookup *fib = bpf_map_lookup_elem(&pt_fib_scratch, &zero);
	if (!fib)
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);
	if (!pt_xdp_next_hop(ctx, fib, &p, ip->tos, ref.fv.nat_addr, ifindex))
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);
	/* Bytes past the IP datagram (Ethernet padding, or anything a sender
	 * appends) go, as ip_rcv() trims them: they would count against the
	 * LAN device's MTU in the redirect (xdp_ok_fwd_dev()), not the route's. */
	long excess = (long)(data_end - data) - (long)p.ip_end;   /* 64-bit: packet pointers */
	if (excess > 0 && bpf_xdp_adjust_tail(ctx, -(int)excess))
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);

	/* From here on the packet is this program's: as pt_forward() does it. */
	pt_touch(&ref.f->last_seen_ns, ref.now);
	__u32 seen = pt_seen_flags(&p);
	if ((ref.fv.seen | seen) != ref.fv.seen)
		__sync_fetch_and_or(&ref.f->seen, seen);
	if (!pt_xdp_rewrite(ctx, &p, ref.fv.nat_addr, ref.fv.nat_port, fib))
		return pt_xdp_count(PT_XDP_PASSED, XDP_PASS);  /* not reached: parsed above */
	pt_done(PT_F_IPV4, PT_D_WAN, PT_V_TRANSLATED, 0);
	return pt_xdp_count(PT_XDP_REDIRECTED, bpf_redirect(ifindex, 0));
}

/*
 * The LAN side's XDP program, attached by the daemon to a LAN device whose
 * driver takes XDP frames only while an XDP program of its own is loaded
 * (virtio_net, ixgbe and others answer ENXIO otherwise): it passes every
 * frame, so the device receives as before.
 */
SEC("xdp")
int pt_lan_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Take `ifindex` out of the XDP path: the kernel could not transmit a frame
 * that pt_wan_xdp redirected there (error `err`). Only failures of frames
 * received on the WAN device count (`rx`: that device, in its namespace, as
 * the daemon wrote them): an ifindex means nothing in another namespace,
 * and other XDP programs' failures are not porttrig's. */
static __always_inline void pt_xdp_tx_failed(const struct net_device *rx, __u32 ifindex, int err)
{
	__u32 zero = 0;
	struct pt_xdp_config *xc = bpf_map_lookup_elem(&pt_xdp_config, &zero);
	if (!xc || !xc->wan_ifindex || rx->ifindex != xc->wan_ifindex || rx->nd_net.net->ns.inum != xc->netns_ino)
		return;
	/* The map clock, read as tracing programs may (not the coarse clock). */
	__u64 now = bpf_ktime_get_ns() + PT_CLOCK_BIAS_NS;
	struct pt_xdp_tx *t = bpf_map_lookup_elem(&pt_xdp_tx, &ifindex);
	if (t) {
		t->last_ns = now;
		__sync_fetch_and_add(&t->failures, 1);
		return;
	}
	struct pt_xdp_tx fresh = { .since_ns = now, .last_ns = now, .err = err, .failures = 1 };
	if (bpf_map_update_elem(&pt_xdp_tx, &ifindex, &fresh, BPF_NOEXIST) == -E2BIG)
		xc->all_off = 1;   /* more failing interfaces than slots: TC for all */
}

/* A redirect refused before queueing (the device has no ndo_xdp_xmit, is
 * down, or the frame exceeds its MTU): map_type 0 is a plain bpf_redirect(),
 * whose target ifindex is `index`. */
SEC("tp_btf/xdp_redirect_err")
int BPF_PROG(pt_xdp_redirect_err, const struct net_device *dev, const struct bpf_prog *xdp, const void *tgt,
	     int err, enum bpf_map_type map_type, __u32 map_id, __u32 index)
{
	if (map_type == BPF_MAP_TYPE_UNSPEC && err)
		pt_xdp_tx_failed(dev, index, err);
	return 0;
}

/* A batch the driver refused as a whole (err < 0: veth without NAPI on its
 * peer, -ENXIO; a driver without XDP transmit queues). A partial send with
 * err 0 is a full ring, which the kernel's own forwarding would drop too. */
SEC("tp_btf/xdp_devmap_xmit")
int BPF_PROG(pt_xdp_devmap_xmit, const struct net_device *from_dev, const struct net_device *to_dev,
	     int sent, int drops, int err)
{
	if (err && drops > 0)
		pt_xdp_tx_failed(from_dev, to_dev->ifindex, err);
	return 0;
}

#endif /* PORTTRIG_XDP_H */
