/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Packet parsing for the porttrig data path. Each step bounds-checks against
 * data_end before it reads, and a packet that does not parse cleanly is never
 * translated: the caller passes it on untouched.
 */
#ifndef PORTTRIG_PARSING_H
#define PORTTRIG_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define PT_IP_MF 0x2000
#define PT_IP_OFFSET 0x1fff
/* Ethernet + the largest IPv4 header + a TCP header without options: all that
 * the data path reads. Pulled into the linear area when it is not there yet
 * (on a layer-3 device, 14 bytes more than needed: harmless, the pull is
 * bounded by skb->len). */
#define PT_IPV4_MAX_HLEN 60
#define PT_PULL_LEN (ETH_HLEN + PT_IPV4_MAX_HLEN + sizeof(struct tcphdr))

/* ICMP header (RFC 792): type, code, checksum and 4 bytes that depend on the
 * type. Declared here: <linux/icmp.h> drags in the C library's headers. */
struct pt_icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};
#define PT_ICMP_HLEN 8
_Static_assert(sizeof(struct pt_icmphdr) == PT_ICMP_HLEN, "ICMP header is 8 bytes");
#define PT_ICMP_DEST_UNREACH 3   /* incl. code 4, fragmentation needed (RFC 1191) */
#define PT_ICMP_TIME_EXCEEDED 11
#define PT_ICMP_PARAMETERPROB 12
/* RFC 792: an ICMP error quotes the IP header and at least the first 64 bits
 * of the offending datagram's payload: the ports, for TCP and UDP. */
#define PT_ICMP_QUOTE_L4_MIN 8
/* Everything an ICMP error's translation reads: outer headers, the quoted IP
 * header and the quoted L4 header up to the TCP checksum. */
#define PT_ICMP_PULL_LEN (ETH_HLEN + PT_IPV4_MAX_HLEN + PT_ICMP_HLEN + PT_IPV4_MAX_HLEN + sizeof(struct tcphdr))

enum pt_parse_result {
	PT_PARSE_OK = 0,     /* IPv4 TCP/UDP with ports (or a non-first fragment) */
	PT_PARSE_ICMP,       /* IPv4 ICMP, unfragmented: maybe an error about a flow */
	PT_PARSE_SKIP,       /* not for us (not IPv4, not TCP/UDP): pass untouched */
	PT_PARSE_BAD,        /* malformed: pass untouched, count */
};

/* What the data path needs to know of a packet. Offsets, not pointers: any
 * helper that may change the packet invalidates pointers into it. */
struct pt_pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;        /* 0 for non-first fragments */
	__be16 dport;
	__u16 l4_off;        /* from skb->data; l3_off + IHL * 4 */
	__u16 ip_end;        /* from skb->data; l3_off + tot_len */
	__be16 ip_id;        /* IP identification, to match fragments */
	__u8 proto;
	__u8 ttl;
	__u8 tcp_flags;      /* byte 13 of the TCP header; 0 for UDP */
	__u8 nonfirst_frag;  /* fragment offset != 0: no L4 header */
	__u8 first_frag;     /* offset 0 and MF set: more fragments follow */
	__u8 l3_off;         /* from skb->data: the IPv4 header. ETH_HLEN on an Ethernet
			      * device; 0 on a layer-3 device (PPP, TUN, WireGuard),
			      * whose skb has no link-layer header at TC ingress */
};

/* The packet quoted by an ICMP error (RFC 792): its addresses and ports as
 * they appear in the quote, and where its headers lie. */
struct pt_icmp_quote {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u16 ip_off;        /* from skb->data: the quoted IP header */
	__u16 l4_off;        /* from skb->data: the quoted L4 header */
	__u16 l4_len;        /* bytes of the quoted L4 header present (>= 8) */
	__u8 proto;          /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 _pad;
};

#define PT_TCP_FIN 0x01
#define PT_TCP_SYN 0x02
#define PT_TCP_RST 0x04
#define PT_TCP_ACK 0x10

/* Bounds an offset read back from struct pt_pkt for the verifier: l3_off is
 * 0 or ETH_HLEN. */
#define PT_L3_OFF(p) ((__u32)(p)->l3_off & 0xf)

/*
 * The TCP or UDP header at `l4` (`proto`) of an L4 datagram of `l4_len`
 * bytes (as the IP header says): its ports, and TCP's flags, into `p`. False
 * for a header the receiver drops: cut short, a data offset below 5 words or
 * past the segment (tcp_v4_rcv; conntrack calls it invalid), a UDP length
 * (RFC 768) below the header or beyond the datagram (udp_rcv). A first
 * fragment (`first_frag`) may end inside the TCP options, and its UDP length
 * is the whole datagram's: only its first bytes are checked. Shared by
 * pt_parse() and the XDP path (xdp.h).
 */
static __always_inline bool pt_parse_ports(void *l4, void *data_end, __u8 proto, __u32 l4_len, bool first_frag,
					   struct pt_pkt *p)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if (l4_len < sizeof(*tcp) || (void *)(tcp + 1) > data_end)
			return false;
		__u32 doff = tcp->doff * 4;
		if (doff < sizeof(*tcp) || (!first_frag && doff > l4_len))
			return false;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
	} else {
		struct udphdr *udp = l4;
		if (l4_len < sizeof(*udp) || (void *)(udp + 1) > data_end)
			return false;
		__u32 ulen = bpf_ntohs(udp->len);
		if (ulen < sizeof(*udp) || (!first_frag && ulen > l4_len))
			return false;
		p->sport = udp->source;
		p->dport = udp->dest;
		p->tcp_flags = 0;
	}
	return true;
}

/*
 * Parse Ethernet (or nothing, `l3`), IPv4 (any header length, RFC 791 options
 * skipped by byte arithmetic) and the TCP/UDP ports. A bogus total length
 * (shorter than the header, or longer than what arrived), IHL < 5, or an L4
 * header cut short count as PT_PARSE_BAD.
 *
 * `l3` (a constant of each program): the device has no link-layer header.
 * At TC ingress cls_bpf pushes back skb->mac_len bytes, which is 0 on a
 * device without header_ops (ppp, tun, wireguard): skb->data is the network
 * header, and only skb->protocol (set by the driver from the PPP protocol
 * field, or from the version nibble / tun_pi) says what it is. IPv6, MPLS and
 * anything else on such a link pass untouched: an MPLS label that happens to
 * start with nibble 4 must not be read as IPv4.
 */
static __always_inline int pt_parse(struct __sk_buff *skb, struct pt_pkt *p, const bool l3)
{
	const __u32 l3_off = l3 ? 0 : ETH_HLEN;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* Headers of a non-linear skb may lie partly in its frags. */
	__u32 want = skb->len < PT_PULL_LEN ? skb->len : PT_PULL_LEN;
	if (data + want > data_end) {
		if (bpf_skb_pull_data(skb, want))
			return PT_PARSE_BAD;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	if (l3) {
		if (skb->protocol != bpf_htons(ETH_P_IP))
			return PT_PARSE_SKIP;
	} else {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > data_end)
			return PT_PARSE_SKIP;
		if (eth->h_proto != bpf_htons(ETH_P_IP))
			return PT_PARSE_SKIP;
	}

	struct iphdr *ip = data + l3_off;
	if ((void *)(ip + 1) > data_end)
		return PT_PARSE_BAD;
	if (ip->version != 4 || ip->ihl < 5)
		return PT_PARSE_BAD;
	__u32 hlen = ip->ihl * 4;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < hlen || tot_len > skb->len - l3_off)
		return PT_PARSE_BAD;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_ICMP)
		return PT_PARSE_SKIP;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ttl = ip->ttl;
	p->l3_off = l3_off;
	p->l4_off = l3_off + hlen;
	p->ip_end = l3_off + tot_len;
	p->ip_id = ip->id;
	p->tcp_flags = 0;
	p->sport = 0;
	p->dport = 0;
	p->nonfirst_frag = (ip->frag_off & bpf_htons(PT_IP_OFFSET)) != 0;
	p->first_frag = !p->nonfirst_frag && (ip->frag_off & bpf_htons(PT_IP_MF)) != 0;
	if (ip->protocol == IPPROTO_ICMP)
		/* A fragmented ICMP error is not worth reassembling: RFC 1812 4.3.2.3
		 * keeps errors within 576 bytes, so it never happens in practice. */
		return p->nonfirst_frag || p->first_frag ? PT_PARSE_SKIP : PT_PARSE_ICMP;
	if (p->nonfirst_frag)
		return PT_PARSE_OK;

	if (!pt_parse_ports((void *)ip + hlen, data_end, ip->protocol, tot_len - hlen, p->first_frag, p))
		return PT_PARSE_BAD;
	return PT_PARSE_OK;
}

/*
 * Is the IPv4 header checksum right (RFC 791, RFC 1071)? ip_rcv() drops a
 * packet whose header does not sum to 0xffff, so such a packet must create
 * and refresh nothing. Checked only where the data path acts on a packet, not
 * on the miss path. The header is IHL words (5..15), summed as 32-bit words
 * with the carries folded back: the one's complement sum is independent of
 * byte order and word size.
 */
static __always_inline bool pt_ip_csum_ok(struct __sk_buff *skb, const struct pt_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l3_off = PT_L3_OFF(p);
	__u32 *w = data + l3_off;
	__u32 words = ((__u32)p->l4_off - l3_off) / 4;
	if ((void *)(w + 5) > data_end)
		return false;
	__u64 sum = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];
	/* Options (IHL > 5): word by word with constant offsets, which the
	 * verifier can bound (a loop gets its bounds check folded away by the
	 * compiler); most packets skip them all at the first test. */
#define PT_IP_OPT_WORD(i)						\
	if (words > (i)) {						\
		if ((void *)(w + (i) + 1) > data_end)			\
			return false;					\
		sum += w[i];						\
	}
	if (words > 5) {
		PT_IP_OPT_WORD(5) PT_IP_OPT_WORD(6) PT_IP_OPT_WORD(7) PT_IP_OPT_WORD(8) PT_IP_OPT_WORD(9)
		PT_IP_OPT_WORD(10) PT_IP_OPT_WORD(11) PT_IP_OPT_WORD(12) PT_IP_OPT_WORD(13) PT_IP_OPT_WORD(14)
	}
#undef PT_IP_OPT_WORD
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/* ICMP error types whose body quotes the offending datagram (RFC 792). */
static __always_inline bool pt_icmp_is_error(__u8 type)
{
	return type == PT_ICMP_DEST_UNREACH || type == PT_ICMP_TIME_EXCEEDED || type == PT_ICMP_PARAMETERPROB;
}

/*
 * Parse the ICMP error of a PT_PARSE_ICMP packet down to the ports of the
 * datagram it quotes. The quote must be a TCP or UDP datagram with an IPv4
 * header (options allowed) and at least PT_ICMP_QUOTE_L4_MIN bytes of L4
 * header, all inside the ICMP message (outer tot_len) and the frame; a quote
 * of a non-first fragment has no ports and does not count. Returns 0 or -1.
 */
static __always_inline int pt_parse_icmp_error(struct __sk_buff *skb, const struct pt_pkt *p,
					       struct pt_icmp_quote *q)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 want = skb->len < PT_ICMP_PULL_LEN ? skb->len : PT_ICMP_PULL_LEN;
	if (data + want > data_end) {
		if (bpf_skb_pull_data(skb, want))
			return -1;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	__u32 icmp_off = p->l4_off & 0x7f;   /* <= ETH_HLEN + 60: bounded for the verifier */
	struct pt_icmphdr *icmp = data + icmp_off;
	if ((void *)icmp + PT_ICMP_HLEN > data_end)
		return -1;
	if (!pt_icmp_is_error(icmp->type))
		return -1;

	__u32 ip_off = icmp_off + PT_ICMP_HLEN;
	struct iphdr *in = data + ip_off;
	if ((void *)(in + 1) > data_end)
		return -1;
	if (in->version != 4 || in->ihl < 5)
		return -1;
	if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
		return -1;
	if (in->frag_off & bpf_htons(PT_IP_OFFSET))
		return -1;
	__u32 l4_off = ip_off + in->ihl * 4;
	if (l4_off + PT_ICMP_QUOTE_L4_MIN > p->ip_end)
		return -1;
	__be16 *ports = data + l4_off;
	if ((void *)ports + PT_ICMP_QUOTE_L4_MIN > data_end)
		return -1;

	q->saddr = in->saddr;
	q->daddr = in->daddr;
	q->sport = ports[0];
	q->dport = ports[1];
	q->proto = in->protocol;
	q->ip_off = ip_off;
	q->l4_off = l4_off;
	q->l4_len = p->ip_end - l4_off;
	return 0;
}

#endif /* PORTTRIG_PARSING_H */
