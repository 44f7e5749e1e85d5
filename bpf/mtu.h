/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The MTU of translated packets (issue 12).
 *
 * bpf_redirect_neigh() and bpf_redirect() hand a packet to the egress device
 * without ip_forward()'s MTU check: a translated packet larger than the
 * egress MTU (a 1500-byte LAN behind a 1492-byte PPPoE WAN) would be dropped
 * by the driver (veth: is_skb_forwardable()) or the link, silently, and path
 * MTU discovery (RFC 1191) through a triggered port would never converge.
 * So every translated packet is checked against its egress device first
 * (pt_too_big()), and one that does not fit is handled as a router must
 * (RFC 1812 5.2.7.1, 4.3.2.3):
 *
 *  - Outbound (LAN -> WAN): passed to the stack untranslated (the caller's
 *    business, see pt_forward()). ip_forward() runs its MTU check before the
 *    forward hook: with DF it answers the LAN host with ICMP fragmentation
 *    needed, from the gateway's LAN address, quoting the host's packet as
 *    sent, with the route's MTU; without DF it forwards and fragments it,
 *    and masquerade gives the fragments the WAN address.
 *  - Inbound (WAN -> LAN), DF set: the packet is addressed to the gateway's
 *    own WAN address, so the stack would deliver it locally (no ip_forward(),
 *    no ICMP; a TCP RST from the gateway instead). pt_frag_needed() turns the
 *    packet itself into the ICMP error and sends it back out of the WAN.
 */
#ifndef PORTTRIG_MTU_H
#define PORTTRIG_MTU_H

#include "parsing.h"
#include "csum.h"

#define PT_IP_DF 0x4000
#define PT_ICMP_FRAG_NEEDED 4    /* code of PT_ICMP_DEST_UNREACH (RFC 792, RFC 1191) */
/* Bytes of the offending datagram's payload quoted after its IP header. RFC
 * 792 asks for 8 (the ports); RFC 1812 4.3.2.3 would quote up to 576 bytes in
 * all. 64 cover TCP's header with options, which is all a sender's PMTUD
 * (Linux: icmp_unreach() -> tcp_v4_err()) reads, and keep the checksum
 * below to one bounded copy. */
#define PT_FN_QUOTE_L4_MAX 64
#define PT_FN_QUOTE_MAX (PT_IPV4_MAX_HLEN + PT_FN_QUOTE_L4_MAX)
#define PT_FN_TTL 64

/* The IPv4 header and the ICMP header that pt_frag_needed() puts in front of
 * the quote. */
struct pt_fn_hdr {
	struct iphdr ip;
	struct pt_icmphdr icmp;
};
_Static_assert(sizeof(struct pt_fn_hdr) == 28, "IPv4 header without options + ICMP header");

/*
 * The MTU of `ifindex` if the packet `p` does not fit it, else 0.
 * bpf_check_mtu() (kernel 5.12) compares against the device's MTU, which is
 * what the driver enforces; a smaller route MTU is the stack's business.
 *  - A GSO packet (skb->gso_size: GRO on the ingress device, or TSO from a
 *    local sender on a veth) is re-segmented on transmit: only its segments
 *    must fit, as in ip_forward()'s ip_exceeds_mtu(). BPF_MTU_CHK_SEGS asks
 *    skb_gso_validate_network_len() exactly that.
 *  - Any other packet: its L3 length (`l3_len`) against the MTU, so that
 *    the link-layer headers of the ingress and the egress device (Ethernet,
 *    none on PPP/TUN) do not enter the comparison.
 * An egress that has vanished (-ENODEV) counts as fitting: the redirect
 * fails on its own.
 */
static __always_inline __u32 pt_too_big_len(struct __sk_buff *skb, __u32 l3_len, __u32 ifindex)
{
	__u32 mtu = 0;
	if (skb->gso_size)
		return bpf_check_mtu(skb, ifindex, &mtu, 0, BPF_MTU_CHK_SEGS) == BPF_MTU_CHK_RET_SEGS_TOOBIG ? mtu : 0;
	mtu = l3_len;
	return bpf_check_mtu(skb, ifindex, &mtu, 0, 0) == BPF_MTU_CHK_RET_FRAG_NEEDED ? mtu : 0;
}

/* The same for an IPv4 packet; l3_len is its tot_len. (IPv6: the payload
 * length plus 40, bpf/ipv6/flow6.h.) */
static __always_inline __u32 pt_too_big(struct __sk_buff *skb, const struct pt_pkt *p, __u32 ifindex)
{
	return pt_too_big_len(skb, (__u32)p->ip_end - PT_L3_OFF(p), ifindex);
}

/* Whether the packet's IPv4 header has DF (don't fragment) set. */
static __always_inline bool pt_df(struct __sk_buff *skb, const struct pt_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + PT_L3_OFF(p);
	if ((void *)(ip + 1) > data_end)
		return false;
	return ip->frag_off & bpf_htons(PT_IP_DF);
}

/*
 * Whether the skb is CHECKSUM_PARTIAL: its L4 checksum is still to be
 * computed, by the egress device or skb_checksum_help(), over
 * [csum_start, end) into csum_start + csum_offset. Packets of local senders
 * on a veth and GRO packets are. Kernel 6.1 lets a TC program read
 * ip_summed only through this: bpf_l4_csum_replace() with BPF_F_PSEUDO_HDR
 * and a difference of 1 adds it to the field when the skb is
 * CHECKSUM_PARTIAL (inet_proto_csum_replace_by_diff(): the field then holds
 * the pseudo-header's sum) and subtracts it otherwise (keeping skb->csum of
 * CHECKSUM_COMPLETE in step). `off` is a 16-bit field that the caller
 * overwrites afterwards.
 * XXX: read ip_summed through bpf_cast_to_kern_ctx() once kernels before 6.3
 * are no longer supported.
 */
static __always_inline int pt_csum_partial(struct __sk_buff *skb, __u32 off)
{
	__u16 probe = 0x1000;
	if (bpf_skb_store_bytes(skb, off, &probe, sizeof(probe), BPF_F_RECOMPUTE_CSUM))
		return -1;
	if (bpf_l4_csum_replace(skb, off, 0, 1, BPF_F_PSEUDO_HDR))
		return -1;
	if (bpf_skb_load_bytes(skb, off, &probe, sizeof(probe)))
		return -1;
	return probe == 0x1001;
}

/*
 * Answer an inbound packet that is too big for its LAN egress, with DF set,
 * with ICMP destination unreachable, fragmentation needed (RFC 792, RFC
 * 1191 section 4: the next-hop MTU in the low 16 bits of the second word),
 * and send it to the remote sender out of the WAN interface it came in by.
 * The packet itself becomes the error, as it arrived (before translation, TTL
 * not decremented): the sender's PMTUD matches the quote against what it
 * sent, remote -> WAN address:WAN port. The error comes from the WAN address,
 * which the packet was sent to.
 *
 *   before:  [L2][IP  ihl][L4 ...................]
 *   trim:    [L2][IP  ihl][L4 <= 64]                        (bpf_skb_change_tail)
 *   grow:    [L2][IP 20][ICMP 8][IP  ihl][L4 <= 64]         (bpf_skb_adjust_room, MAC)
 *
 * Trimming first drops GSO (the helper resets it) before the room is added.
 * A GSO packet is quoted as its first segment was sent: the quoted tot_len
 * is that segment's (header + gso_size).
 * Checksums: the new IP header's; the ICMP one over the ICMP header and the
 * quote. A CHECKSUM_PARTIAL skb keeps csum_start on the quoted L4 header
 * (the helpers move only what lies in front of it), and its L4 checksum gets
 * filled in on transmit: the quote from there on then sums to ~seed (the
 * field's current value; RFC 1071 arithmetic), which the ICMP checksum
 * accounts for in advance. Such a packet must quote the whole L4 checksum
 * field (the trim refuses otherwise: __bpf_skb_min_len()).
 * Returns the TC action (the redirect), or TC_ACT_SHOT if the error cannot
 * be built.
 * XXX: no rate limit of its own (RFC 1812 4.3.2.8): one error per packet too
 * big, never larger than that packet.
 */
static __noinline int pt_frag_needed(struct __sk_buff *skb, const struct pt_pkt *p, __u32 mtu)
{
	__u32 l3_off = PT_L3_OFF(p);
	__u32 ihl = ((__u32)p->l4_off - l3_off) & 0x3c;
	__u32 tot = (__u32)p->ip_end - l3_off;
	if (ihl < sizeof(struct iphdr) || tot <= ihl)
		return TC_ACT_SHOT;
	__u32 l4 = tot - ihl;
	__u32 quote = ihl + (l4 < PT_FN_QUOTE_L4_MAX ? l4 : PT_FN_QUOTE_L4_MAX);
	__u32 ck_off = p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check);

	/* A GSO packet's first segment: its tot_len, for the quote. */
	__u16 seg_tot = 0;
	if (skb->gso_size) {
		__u32 l4_hlen = sizeof(struct udphdr);
		if (p->proto == IPPROTO_TCP) {
			__u8 doff = 0;
			if (bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1))
				return TC_ACT_SHOT;
			l4_hlen = (doff >> 4) * 4;
		}
		__u32 seg = ihl + l4_hlen + skb->gso_size;
		if (seg < tot)
			seg_tot = seg;
	}
	__be32 remote = p->saddr;
	__be32 wan = p->daddr;
	__u8 tos = 0;
	if (bpf_skb_load_bytes(skb, l3_off + offsetof(struct iphdr, tos), &tos, 1))
		return TC_ACT_SHOT;

	if (bpf_skb_change_tail(skb, l3_off + quote, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_adjust_room(skb, sizeof(struct pt_fn_hdr), BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	__u32 icmp_off = l3_off + sizeof(struct iphdr);
	__u32 q_off = l3_off + sizeof(struct pt_fn_hdr);

	if (seg_tot) {
		struct iphdr in;
		if (bpf_skb_load_bytes(skb, q_off, &in, sizeof(in)))
			return TC_ACT_SHOT;
		__be16 new_tot = bpf_htons(seg_tot);
		__sum16 ck = pt_csum_update16(in.check, in.tot_len, new_tot);
		if (bpf_skb_store_bytes(skb, q_off + offsetof(struct iphdr, tot_len), &new_tot, 2, BPF_F_RECOMPUTE_CSUM) ||
		    bpf_skb_store_bytes(skb, q_off + offsetof(struct iphdr, check), &ck, 2, BPF_F_RECOMPUTE_CSUM))
			return TC_ACT_SHOT;
	}

	int partial = pt_csum_partial(skb, icmp_off + offsetof(struct pt_icmphdr, checksum));
	if (partial < 0)
		return TC_ACT_SHOT;
	/* The quote's sum: all of it, or (CHECKSUM_PARTIAL) its IP header and
	 * what its L4 part will sum to once its checksum is filled in. Word by
	 * word from the packet (the trim left it linear), the odd bytes at the
	 * end padded with zeros (RFC 1071). */
	__u32 sum_len = partial ? ihl : quote;
	__u32 sum = 0;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *q = data + q_off;
	for (__u32 i = 0; i < PT_FN_QUOTE_MAX; i += 2) {
		if (i + 2 > sum_len || (void *)(q + i + 2) > data_end)
			break;
		sum += *(__u16 *)(q + i);
	}
	if (sum_len & 1) {
		__u32 last = (sum_len - 1) & 0x7f;
		if ((void *)(q + last + 1) > data_end)
			return TC_ACT_SHOT;
		__u8 pad[2] = { q[last], 0 };
		sum += *(__u16 *)pad;
	}
	sum = pt_csum_fold(sum);
	if (partial) {
		__u16 seed = 0;
		if (bpf_skb_load_bytes(skb, q_off + ihl + ck_off, &seed, sizeof(seed)))
			return TC_ACT_SHOT;
		sum += (__u16)~seed;
	}

	struct pt_fn_hdr h = {
		.ip = {
			.version = 4,
			.ihl = 5,
			/* RFC 1812 4.3.2.5: the precedence of ICMP errors is internetwork control */
			.tos = (tos & 0x3f) | 0xc0,
			.tot_len = bpf_htons(sizeof(struct pt_fn_hdr) + quote),
			/* RFC 6864: DF set, an atomic datagram, whose ID means nothing */
			.frag_off = bpf_htons(PT_IP_DF),
			.ttl = PT_FN_TTL,
			.protocol = IPPROTO_ICMP,
			.saddr = wan,
			.daddr = remote,
		},
		.icmp = {
			.type = PT_ICMP_DEST_UNREACH,
			.code = PT_ICMP_FRAG_NEEDED,
			.rest = bpf_htonl(mtu & 0xffff),
		},
	};
	h.ip.check = (__sum16)~pt_csum_fold((__u32)bpf_csum_diff(NULL, 0, (__be32 *)&h.ip, sizeof(h.ip), 0));
	sum += pt_csum_fold((__u32)bpf_csum_diff(NULL, 0, (__be32 *)&h.icmp, sizeof(h.icmp), 0));
	h.icmp.checksum = (__sum16)~pt_csum_fold(sum);
	if (bpf_skb_store_bytes(skb, l3_off, &h, sizeof(h), BPF_F_RECOMPUTE_CSUM))
		return TC_ACT_SHOT;

	/* Back out of the WAN device it came in by: on a layer-3 link there is
	 * no next hop to resolve; on Ethernet, bpf_redirect_neigh() routes to
	 * the sender as icmp_send() would (the packet's link-layer source may
	 * not be the route back). */
	if (l3_off == 0)
		return bpf_redirect(skb->ifindex, 0);
	return bpf_redirect_neigh(skb->ifindex, NULL, 0, 0);
}

#endif /* PORTTRIG_MTU_H */
