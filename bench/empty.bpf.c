// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The baseline of `make bench`: a TC program that does nothing but pass the
 * packet on. BPF_PROG_TEST_RUN of this program measures the harness itself
 * (skb set-up excluded, per-run loop and dispatch included), so the data
 * path's figures are reported as a ratio to it.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("tc")
int bench_empty(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}
