// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Test fixture for test/e2e/vlan.test.ts (not part of porttrig): on a LAN
 * host's egress, tags the IPv4 packets from 10.77.0.9 with VLAN 20, held in
 * skb->vlan_tci (bpf_skb_vlan_push() with a device that offloads VLAN tags,
 * as veth does), the way a guest VLAN's frames reach a NIC with VLAN
 * offload. Needs no 802.1Q support in the kernel, which the development
 * machine lacks.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define GUEST 0x0a4d0009   /* 10.77.0.9 */
#define GUEST_VID 20

SEC("tc")
int vlan_tag(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->saddr != bpf_htonl(GUEST))
		return TC_ACT_OK;
	if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), GUEST_VID))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
