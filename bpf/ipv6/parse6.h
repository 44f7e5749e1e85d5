/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * IPv6 packet parsing (RFC 8200): the fixed header, the extension headers
 * (hop-by-hop, routing, destination options, fragment) walked with a bounded
 * loop, and the ports of TCP and UDP. Like parsing.h for IPv4: a packet that
 * does not parse cleanly is never let through by the data path; the caller
 * passes it on untouched (and counts it as malformed).
 *
 * The fixed header is read in place (constant offsets); everything after it
 * lies at an offset known only at run time, and is read with
 * bpf_skb_load_bytes() (bounded by skb->len at run time, and in the frags of a
 * non-linear skb too), which keeps the verifier's work per header small.
 */
#ifndef PORTTRIG_PARSE6_H
#define PORTTRIG_PARSE6_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parsing.h"
#include "addr6.h"

/* The fixed IPv6 header (RFC 8200 section 3). Declared here: <linux/ipv6.h>
 * drags in more than the data path needs. */
struct pt6_hdr {
	__be32 vtc_flow;        /* version 4 bits, traffic class 8, flow label 20 */
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__be32 saddr[4];
	__be32 daddr[4];
};
#define PT6_HLEN 40
_Static_assert(sizeof(struct pt6_hdr) == PT6_HLEN, "IPv6 header is 40 bytes");

/* RFC 8200 section 4.5. */
struct pt6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;        /* offset in 8-octet units << 3 | M */
	__be32 id;
};

#define PT6_NH_HOP 0
#define PT6_NH_ROUTING 43
#define PT6_NH_FRAGMENT 44
#define PT6_NH_ICMPV6 58
#define PT6_NH_DSTOPTS 60
/* Extension headers walked before the upper-layer header; a chain longer
 * than this is passed untouched and counted as malformed. RFC 8200 4.1 has
 * at most 6 kinds, each once (destination options twice). */
#define PT6_MAX_EXT 8
/* The fixed header must be in the linear area: it is read in place. */
#define PT6_PULL_LEN (ETH_HLEN + PT6_HLEN)
#define PT6_OFF_HOP_LIMIT 7

/* What the data path needs of an IPv6 packet (offsets, not pointers, as
 * struct pt_pkt). */
struct pt6_pkt {
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 frag_id;      /* fragment header's identification (fragments only) */
	__be16 sport;        /* 0 for non-first fragments and ICMPv6 */
	__be16 dport;
	__u16 l4_off;        /* from skb->data: the upper-layer header (non-first fragment: after the fragment header) */
	__u16 ip_end;        /* from skb->data: l3_off + 40 + payload length */
	__u8 proto;          /* TCP, UDP or ICMPv6 (a non-first fragment: frag_nh) */
	__u8 frag_nh;        /* fragment header's next header: the pt6_frags key's protocol */
	__u8 hop_limit;
	__u8 tcp_flags;      /* byte 13 of the TCP header; 0 otherwise */
	__u8 nonfirst_frag;  /* fragment offset != 0: no upper-layer header */
	__u8 first_frag;     /* offset 0 and M set: more fragments follow */
	__u8 l3_off;         /* 0 (layer-3 device) or ETH_HLEN */
	__u8 _pad;
};

/* The end of an extension header chain. */
struct pt6_chain {
	__be32 frag_id;
	__u16 l4_off;        /* the upper-layer header; after the fragment header for a non-first fragment */
	__u8 proto;          /* the upper-layer protocol (non-first fragment: the fragment header's next header) */
	__u8 frag;           /* a fragment header was seen */
	__u8 nonfirst;       /* ... with an offset != 0 */
	__u8 more;           /* ... with M set */
	__u8 frag_nh;        /* ... whose next header is this */
	__u8 _pad;
};

/*
 * Walk the extension headers that start with next header `nh` at `off`
 * (from skb->data) and must end by `end` (the packet's payload length says
 * where): hop-by-hop (only as the first, RFC 8200 4.3), routing and
 * destination options ((len + 1) * 8 bytes), fragment (8 bytes, once). Stops
 * at TCP, UDP or ICMPv6 (PT_PARSE_OK), and at a non-first fragment (its
 * fragmentable part is not parsed). Any other next header (AH, ESP, no next
 * header, anything unknown) is not ours: PT_PARSE_SKIP. A header cut short,
 * a second fragment header, a late hop-by-hop header, or more than
 * PT6_MAX_EXT headers: PT_PARSE_BAD.
 * Not inlined: the ICMPv6 error path walks the quoted packet with it too.
 */
static __noinline int pt6_walk(struct __sk_buff *skb, __u32 off, __u32 end, __u32 nh, struct pt6_chain *c)
{
	__u32 first = off;
	c->frag = 0;
	c->nonfirst = 0;
	c->more = 0;
	c->frag_nh = 0;
	c->frag_id = 0;
	for (int i = 0; i < PT6_MAX_EXT + 1; i++) {
		if (nh == IPPROTO_TCP || nh == IPPROTO_UDP || nh == PT6_NH_ICMPV6) {
			c->proto = nh;
			c->l4_off = off;
			return PT_PARSE_OK;
		}
		if (i == PT6_MAX_EXT)
			break;
		if (nh == PT6_NH_HOP || nh == PT6_NH_ROUTING || nh == PT6_NH_DSTOPTS) {
			__u8 h[2];
			if (nh == PT6_NH_HOP && off != first)
				return PT_PARSE_BAD;
			if (off + 8 > end || bpf_skb_load_bytes(skb, off, h, sizeof(h)))
				return PT_PARSE_BAD;
			__u32 len = ((__u32)h[1] + 1) * 8;
			if (off + len > end)
				return PT_PARSE_BAD;
			nh = h[0];
			off += len;
			continue;
		}
		if (nh == PT6_NH_FRAGMENT) {
			struct pt6_frag_hdr fh;
			if (c->frag)
				return PT_PARSE_BAD;
			if (off + sizeof(fh) > end || bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)))
				return PT_PARSE_BAD;
			__u16 fo = bpf_ntohs(fh.frag_off);
			c->frag = 1;
			c->frag_nh = fh.nexthdr;
			c->frag_id = fh.id;
			c->more = fo & 1;
			off += sizeof(fh);
			if (fo >> 3) {
				c->nonfirst = 1;
				c->proto = fh.nexthdr;
				c->l4_off = off;
				return PT_PARSE_OK;
			}
			nh = fh.nexthdr;
			continue;
		}
		return PT_PARSE_SKIP;
	}
	return PT_PARSE_BAD;
}

/*
 * Parse Ethernet (or nothing, `l3`: then skb->protocol says IPv6), the IPv6
 * header, its extension headers and the TCP/UDP ports. PT_PARSE_BAD: a
 * version other than 6, a payload length of 0 (a jumbogram, RFC 2675: not
 * handled) or beyond what arrived, a header cut short, a TCP data offset
 * below 5 words or past the segment, a UDP length below 8 or past the
 * datagram, a UDP checksum of 0 (mandatory over IPv6, RFC 8200 8.1), a first
 * fragment without its whole upper-layer header (RFC 7112).
 * PT_PARSE_ICMP: an unfragmented ICMPv6 message.
 */
static __always_inline int pt6_parse(struct __sk_buff *skb, struct pt6_pkt *p, const bool l3)
{
	const __u32 l3_off = l3 ? 0 : ETH_HLEN;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	__u32 want = skb->len < PT6_PULL_LEN ? skb->len : PT6_PULL_LEN;
	if (data + want > data_end) {
		if (bpf_skb_pull_data(skb, want))
			return PT_PARSE_BAD;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	if (l3) {
		if (skb->protocol != bpf_htons(ETH_P_IPV6))
			return PT_PARSE_SKIP;
	} else {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > data_end)
			return PT_PARSE_SKIP;
		if (eth->h_proto != bpf_htons(ETH_P_IPV6))
			return PT_PARSE_SKIP;
	}

	struct pt6_hdr *ip6 = data + l3_off;
	if ((void *)(ip6 + 1) > data_end)
		return PT_PARSE_BAD;
	if ((bpf_ntohl(ip6->vtc_flow) >> 28) != 6)
		return PT_PARSE_BAD;
	__u32 plen = bpf_ntohs(ip6->payload_len);
	if (plen == 0 || plen > skb->len - l3_off - PT6_HLEN)
		return PT_PARSE_BAD;
	__u32 end = l3_off + PT6_HLEN + plen;
	pt6_copy(p->saddr, ip6->saddr);
	pt6_copy(p->daddr, ip6->daddr);
	p->hop_limit = ip6->hop_limit;
	p->l3_off = l3_off;
	p->ip_end = end;
	__u32 nh = ip6->nexthdr;

	struct pt6_chain c = {};
	int r = pt6_walk(skb, l3_off + PT6_HLEN, end, nh, &c);
	if (r != PT_PARSE_OK)
		return r;
	p->l4_off = c.l4_off;
	p->proto = c.proto;
	p->frag_nh = c.frag_nh;
	p->frag_id = c.frag_id;
	p->nonfirst_frag = c.nonfirst;
	p->first_frag = c.frag && !c.nonfirst && c.more;
	p->sport = 0;
	p->dport = 0;
	p->tcp_flags = 0;
	if (p->nonfirst_frag)
		return PT_PARSE_OK;
	if (p->proto == PT6_NH_ICMPV6)
		/* A fragmented ICMPv6 error is not worth reassembling (RFC 4443
		 * 2.4: errors fit the minimum MTU). */
		return p->first_frag ? PT_PARSE_SKIP : PT_PARSE_ICMP;

	__u32 l4_off = c.l4_off;
	__u32 room = end - l4_off;   /* the walk keeps l4_off <= end */
	if (p->proto == IPPROTO_TCP) {
		__u8 t[14];
		if (room < sizeof(struct tcphdr) || bpf_skb_load_bytes(skb, l4_off, t, sizeof(t)))
			return PT_PARSE_BAD;
		__u32 doff = (t[12] >> 4) * 4;
		if (doff < sizeof(struct tcphdr) || (!p->first_frag && doff > room))
			return PT_PARSE_BAD;
		p->sport = *(__be16 *)&t[0];
		p->dport = *(__be16 *)&t[2];
		p->tcp_flags = t[13];
	} else {
		struct udphdr u;
		if (room < sizeof(u) || bpf_skb_load_bytes(skb, l4_off, &u, sizeof(u)))
			return PT_PARSE_BAD;
		__u32 ulen = bpf_ntohs(u.len);
		if (ulen < sizeof(u) || (!p->first_frag && ulen > room) || u.check == 0)
			return PT_PARSE_BAD;
		p->sport = u.source;
		p->dport = u.dest;
	}
	return PT_PARSE_OK;
}

#endif /* PORTTRIG_PARSE6_H */
