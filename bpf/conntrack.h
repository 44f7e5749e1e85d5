/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Asking netfilter conntrack about a packet, from TC ingress (which runs
 * before conntrack sees the packet).
 *
 * The data path is built twice from the same source (Makefile):
 *  build/porttrig.bpf.o       with the check: it calls the kfuncs
 *                             bpf_skb_ct_lookup() / bpf_ct_release()
 *                             (kernel 5.18+, in vmlinux or the nf_conntrack
 *                             module's BTF);
 *  build/porttrig-noct.bpf.o  -DPT_NO_CONNTRACK: no kfunc is referenced, so
 *                             the object loads where conntrack's kfuncs are
 *                             not there (module not loaded, older kernel).
 *                             libbpf 1.1 fails the whole load on an
 *                             unresolvable kfunc extern, and makes an
 *                             unresolved __weak one a call to BTF id 0, which
 *                             kernel 6.1's verifier refuses anywhere in a
 *                             program: one program cannot serve both.
 * The daemon picks one (src/bpf/conntrack.ts).
 */
#ifndef PORTTRIG_CONNTRACK_H
#define PORTTRIG_CONNTRACK_H

#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

#include "parsing.h"

#ifndef PT_NO_CONNTRACK

/*
 * struct bpf_ct_opts as kernel 6.1 defines it (12 bytes). Later kernels
 * grew it to 16 (ct_zone_id, ct_zone_dir) and still accept the old size
 * (NF_BPF_CT_OPTS_OLD_SZ) with the bytes after `dir` zero, i.e. the default
 * zone; 6.1 accepts exactly 12.
 */
struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;           /* out: the direction of the tuple that matched */
	__u8 reserved[2];
};
#define PT_CT_OPTS_SZ 12
_Static_assert(sizeof(struct bpf_ct_opts) == PT_CT_OPTS_SZ, "bpf_ct_opts must keep kernel 6.1's size");

/* enum ip_conntrack_dir (linux/netfilter/nf_conntrack_tuple_common.h). */
#define PT_IP_CT_DIR_REPLY 1

/*
 * A complete (empty) struct, not a forward declaration: libbpf compares the
 * extern's prototype with the kernel's before it resolves a kfunc, and a
 * pointer to a FWD does not match the kernel's pointer to a STRUCT. Only the
 * pointer is used.
 */
struct nf_conn {
};

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple__sz,
					 struct bpf_ct_opts *opts, __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

/*
 * Is this packet, as it arrives, the reply of a connection that conntrack
 * tracks (its tuple is the entry's REPLY tuple)? E.g. a server's answer to
 * another LAN host's masqueraded datagram that kept its source port: the
 * entry's reply tuple is server -> WAN:port. An entry in the ORIGINAL
 * direction (the remote sent the same tuple earlier, nobody answered) is not
 * a reply: false. No entry, or a lookup error (opts.error), is false too.
 * The entry is a reference and is always released.
 */
static __always_inline bool pt_ct_is_reply(struct __sk_buff *skb, const struct pt_pkt *p)
{
	struct bpf_sock_tuple t = {};
	struct bpf_ct_opts opts = {
		.netns_id = BPF_F_CURRENT_NETNS,
		.l4proto = p->proto,
	};

	t.ipv4.saddr = p->saddr;
	t.ipv4.daddr = p->daddr;
	t.ipv4.sport = p->sport;
	t.ipv4.dport = p->dport;
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, PT_CT_OPTS_SZ);
	if (!ct)
		return false;
	bool reply = opts.dir == PT_IP_CT_DIR_REPLY;
	bpf_ct_release(ct);
	return reply;
}

/* pt_ct_is_reply() for an IPv6 packet (IPv6 pinholes: no masquerade, but a
 * LAN host's own connection out may use a port that a pinhole opens, and its
 * replies are conntrack's). */
static __always_inline bool pt6_ct_is_reply(struct __sk_buff *skb, const __be32 *saddr, const __be32 *daddr,
					    __be16 sport, __be16 dport, __u8 proto)
{
	struct bpf_sock_tuple t = {};
	struct bpf_ct_opts opts = {
		.netns_id = BPF_F_CURRENT_NETNS,
		.l4proto = proto,
	};

	for (int i = 0; i < 4; i++) {
		t.ipv6.saddr[i] = saddr[i];
		t.ipv6.daddr[i] = daddr[i];
	}
	t.ipv6.sport = sport;
	t.ipv6.dport = dport;
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv6), &opts, PT_CT_OPTS_SZ);
	if (!ct)
		return false;
	bool reply = opts.dir == PT_IP_CT_DIR_REPLY;
	bpf_ct_release(ct);
	return reply;
}

#else /* PT_NO_CONNTRACK */

/* Built without conntrack's kfuncs: nothing is known to be a reply. */
static __always_inline bool pt_ct_is_reply(struct __sk_buff *skb, const struct pt_pkt *p)
{
	(void)skb;
	(void)p;
	return false;
}

static __always_inline bool pt6_ct_is_reply(struct __sk_buff *skb, const __be32 *saddr, const __be32 *daddr,
					    __be16 sport, __be16 dport, __u8 proto)
{
	(void)skb; (void)saddr; (void)daddr; (void)sport; (void)dport; (void)proto;
	return false;
}

#endif /* PT_NO_CONNTRACK */

#endif /* PORTTRIG_CONNTRACK_H */
