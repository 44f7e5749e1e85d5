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
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define PT_IP_MF 0x2000
#define PT_IP_OFFSET 0x1fff
/* Ethernet + the largest IPv4 header + a TCP header without options: all that
 * the data path reads. Pulled into the linear area when it is not there yet. */
#define PT_PULL_LEN (ETH_HLEN + 60 + sizeof(struct tcphdr))

enum pt_parse_result {
	PT_PARSE_OK = 0,     /* IPv4 TCP/UDP with ports (or a non-first fragment) */
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
	__u16 l4_off;        /* from skb->data; ETH_HLEN + IHL * 4 */
	__u8 proto;
	__u8 ttl;
	__u8 tcp_flags;      /* byte 13 of the TCP header; 0 for UDP */
	__u8 nonfirst_frag;  /* fragment offset != 0: no L4 header */
	__u8 _pad[2];
};

#define PT_TCP_FIN 0x01
#define PT_TCP_SYN 0x02
#define PT_TCP_RST 0x04
#define PT_TCP_ACK 0x10

/*
 * Parse Ethernet, IPv4 (any header length, RFC 791 options skipped by byte
 * arithmetic) and the TCP/UDP ports. A bogus total length (shorter than the
 * header, or longer than what arrived), IHL < 5, or an L4 header cut short
 * count as PT_PARSE_BAD.
 */
static __always_inline int pt_parse(struct __sk_buff *skb, struct pt_pkt *p)
{
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

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return PT_PARSE_SKIP;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PT_PARSE_SKIP;

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PT_PARSE_BAD;
	if (ip->version != 4 || ip->ihl < 5)
		return PT_PARSE_BAD;
	__u32 hlen = ip->ihl * 4;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < hlen || tot_len > skb->len - ETH_HLEN)
		return PT_PARSE_BAD;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return PT_PARSE_SKIP;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ttl = ip->ttl;
	p->l4_off = ETH_HLEN + hlen;
	p->tcp_flags = 0;
	p->sport = 0;
	p->dport = 0;
	p->nonfirst_frag = (ip->frag_off & bpf_htons(PT_IP_OFFSET)) != 0;
	if (p->nonfirst_frag)
		return PT_PARSE_OK;

	void *l4 = (void *)ip + hlen;
	__u32 l4_min = ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
	if (tot_len < hlen + l4_min)
		return PT_PARSE_BAD;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return PT_PARSE_BAD;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
	} else {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return PT_PARSE_BAD;
		p->sport = udp->source;
		p->dport = udp->dest;
	}
	return PT_PARSE_OK;
}

#endif /* PORTTRIG_PARSING_H */
