/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The IPv6 pinholes' maps (SPEC 9; structs in porttrig_abi.h). Sized like
 * their IPv4 counterparts; the daemon sets pt6_sessions, pt6_host_sessions
 * and pt6_flows from `limits` as it does the IPv4 ones.
 */
#ifndef PORTTRIG_MAPS6_H
#define PORTTRIG_MAPS6_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "porttrig_abi.h"

/* Open sessions. max_entries = limits.sessions. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pt6_session_key);
	__type(value, struct pt6_session);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt6_sessions SEC(".maps");

/* Sessions per LAN host address, for limits.sessions_per_host (per family). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pt6_addr);
	__type(value, struct pt_host);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt6_host_sessions SEC(".maps");

/* Accepted flows, one entry per direction. max_entries = 2 * limits.flows. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * 262144);
	__type(key, struct pt6_flow_key);
	__type(value, struct pt6_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt6_flows SEC(".maps");

/* First fragments passed recently (frag6.h). LRU, like pt_frags. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PT_FRAG_SLOTS);
	__type(key, struct pt6_frag_key);
	__type(value, struct pt6_frag);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt6_frags SEC(".maps");

/* The LAN's IPv6 prefixes; value: the prefix length. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pt_lpm_v6);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt6_lan_nets SEC(".maps");

/* The gateway's own IPv6 addresses: never triggers, never pinhole targets. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct pt6_addr);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pt6_local_addrs SEC(".maps");

_Static_assert(sizeof(struct pt6_session_key) == 40, "pt6_session_key has no implicit padding");
_Static_assert(sizeof(struct pt6_session) == 40, "pt6_session has no implicit padding");
_Static_assert(sizeof(struct pt6_flow_key) == 40, "pt6_flow_key has no implicit padding");
_Static_assert(sizeof(struct pt6_flow) == 32, "pt6_flow has no implicit padding");
_Static_assert(sizeof(struct pt6_frag_key) == 40, "pt6_frag_key has no implicit padding");
_Static_assert(sizeof(struct pt6_frag) == 16, "pt6_frag has no implicit padding");

#endif /* PORTTRIG_MAPS6_H */
