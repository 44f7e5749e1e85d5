/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Incremental Internet checksum updates (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
 * The arithmetic is done on the words as they lie in the packet, so it is
 * independent of byte order.
 */
#ifndef PORTTRIG_CSUM_H
#define PORTTRIG_CSUM_H

#include <linux/types.h>

static __always_inline __u16 pt_csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Checksum after a 32-bit word of the covered data changed from `from` to `to`. */
static __always_inline __sum16 pt_csum_update32(__sum16 check, __be32 from, __be32 to)
{
	__u32 s = (__u16)~check;
	__u32 nf = ~from;
	s += (nf & 0xffff) + (nf >> 16) + (to & 0xffff) + (to >> 16);
	return (__sum16)~pt_csum_fold(s);
}

/* Checksum after a 16-bit word of the covered data changed from `from` to `to`. */
static __always_inline __sum16 pt_csum_update16(__sum16 check, __u16 from, __u16 to)
{
	__u32 s = (__u16)~check;
	s += (__u16)~from + to;
	return (__sum16)~pt_csum_fold(s);
}

#endif /* PORTTRIG_CSUM_H */
