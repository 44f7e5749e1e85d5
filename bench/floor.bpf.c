// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The floor of `make bench-e2e`: the least a BPF forwarder can do for an
 * IPv4 packet, as a TC program and as an XDP program, from one source.
 * Parse Ethernet and IPv4, look the route and the next hop's MAC up with
 * bpf_fib_lookup(), decrement the TTL (incremental header checksum), write
 * the MACs, redirect. No state, no translation, no checks beyond what the
 * lookup needs: whatever else passes to the stack untouched.
 *
 * The bench attaches it to a routing-only gateway (its "tc floor" and "xdp
 * floor" beds): what is left of a packet's cost there is what any TC (or
 * XDP) forwarder pays on that link, so porttrig's distance to the floor is
 * what its own work costs, and the floor's distance to plain forwarding is
 * what the hook itself can save.
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "csum.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define FLOOR_AF_INET 2

/* Forward the frame [data, end) that arrived on `ifindex`: the egress
 * ifindex, or 0 to leave it to the stack. `xdp`: a frame, whose length the
 * lookup checks against the egress MTU from the IP header; an skb (TC) may
 * be a GRO train, which the lookup checks itself (is_skb_forwardable(),
 * GSO-aware) when tot_len is 0. */
static __always_inline __u32 floor_forward(void *ctx, void *data, void *end, __u32 ifindex, bool xdp)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if (ip->ihl != 5 || ip->ttl <= 1)
		return 0;
	struct bpf_fib_lookup fib = {
		.family = FLOOR_AF_INET,
		.tos = ip->tos,
		.l4_protocol = ip->protocol,
		.tot_len = xdp ? bpf_ntohs(ip->tot_len) : 0,
		.ipv4_src = ip->saddr,
		.ipv4_dst = ip->daddr,
		.ifindex = ifindex,
	};
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	/* The TTL shares its 16-bit word with the protocol. */
	__u16 *ttl_word = (__u16 *)&ip->ttl;
	__u16 old = *ttl_word;
	ip->ttl--;
	ip->check = pt_csum_update16(ip->check, old, *ttl_word);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return fib.ifindex;
}

SEC("tc")
int floor_tc(struct __sk_buff *skb)
{
	__u32 out = floor_forward(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->ingress_ifindex, false);
	return out ? bpf_redirect(out, 0) : TC_ACT_OK;
}

SEC("xdp")
int floor_xdp(struct xdp_md *ctx)
{
	__u32 out = floor_forward(ctx, (void *)(long)ctx->data, (void *)(long)ctx->data_end, ctx->ingress_ifindex, true);
	return out ? bpf_redirect(out, 0) : XDP_PASS;
}
