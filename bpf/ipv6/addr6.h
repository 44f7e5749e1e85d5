/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * IPv6 addresses (network order, four __be32 words): comparisons, scopes,
 * and the gateway's view of them (LAN prefixes, own addresses).
 */
#ifndef PORTTRIG_ADDR6_H
#define PORTTRIG_ADDR6_H

#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include "maps6.h"

static __always_inline void pt6_copy(__be32 *d, const __be32 *s)
{
	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

static __always_inline bool pt6_eq(const __be32 *a, const __be32 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

/* Global unicast (2000::/3) or unique local (fc00::/7, RFC 4193): the only
 * sources that arm (SPEC 9: never link-local, multicast, ::, loopback). */
static __always_inline bool pt6_global_or_ula(const __be32 *a)
{
	__u8 b = bpf_ntohl(a[0]) >> 24;
	return (b & 0xe0) == 0x20 || (b & 0xfe) == 0xfc;
}

/* Never a remote peer nor a trigger's destination: :: and ::1 (and the rest
 * of ::/96 and ::ffff:0:0/96, which no IPv6 packet carries on the wire,
 * RFC 4291 2.5.5), link-local fe80::/10 and multicast ff00::/8. */
static __always_inline bool pt6_martian(const __be32 *a)
{
	__u32 w0 = bpf_ntohl(a[0]);
	if ((w0 >> 24) == 0xff || (w0 >> 22) == (0xfe80 >> 6))
		return true;
	return w0 == 0 && a[1] == 0 && (a[2] == 0 || a[2] == bpf_htonl(0xffff));
}

/* Inside one of the LAN's prefixes (pt6_lan_nets)? */
static __always_inline bool pt6_lan_addr(const __be32 *a)
{
	struct pt_lpm_v6 k = { .prefixlen = 128 };
	pt6_copy(k.addr, a);
	return bpf_map_lookup_elem(&pt6_lan_nets, &k) != NULL;
}

/* A LAN host's address: inside one of the LAN's prefixes and not the
 * prefix's Subnet-Router anycast address (RFC 4291 2.6.1: the interface
 * identifier all zero; a forwarding Linux gateway joins it for each of its
 * prefixes up to /126, RFC 6164). The IPv6 counterpart of pt_lan_host(),
 * which keeps a subnet's broadcast address out; the control plane refuses
 * the same address for `open` (checkLanHost6). */
static __always_inline bool pt6_lan_host(const __be32 *a)
{
	struct pt_lpm_v6 k = { .prefixlen = 128 };
	pt6_copy(k.addr, a);
	__u8 *plen = bpf_map_lookup_elem(&pt6_lan_nets, &k);
	if (!plen)
		return false;
	__u32 len = *plen;
	if (len > 126)
		return true;
	__u32 iid = 0;  /* the bits after the prefix, or'ed */
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 lo = i * 32;
		if (len >= lo + 32)
			continue;
		__u32 w = bpf_ntohl(a[i]);
		iid |= len > lo ? w & (0xffffffffU >> (len - lo)) : w;
	}
	return iid != 0;
}

/* One of the gateway's own addresses (pt6_local_addrs)? */
static __always_inline bool pt6_local_addr(const __be32 *a)
{
	struct pt6_addr k;
	pt6_copy(k.a, a);
	return bpf_map_lookup_elem(&pt6_local_addrs, &k) != NULL;
}

#endif /* PORTTRIG_ADDR6_H */
