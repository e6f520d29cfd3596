/* SPDX-License-Identifier: Apache-2.0 */
/*
 * arp.h - the ARP responder of an endpoint's port.
 *
 * Every ARP request from a workload is answered with the host-side port's
 * MAC, whatever address it asks for: the workload reaches everything through
 * its gateway (169.254.1.1), and the node's stack is neither asked nor
 * flooded. The reply is crafted in place and sent back out of the same port.
 * Not answered, and dropped as ARP_OTHER: replies, malformed ARP, probes
 * (sender address 0.0.0.0, duplicate address detection) and announcements
 * (sender == target) - answering those would make the workload believe its
 * own address is taken.
 */
#ifndef PALISADE_ARP_H
#define PALISADE_ARP_H

#include "packet.h"
#include "drop.h"

#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

/* ARP for IPv4 over Ethernet (RFC 826), byte arrays keep it unaligned-safe. */
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
};

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

static __always_inline int arp_respond(struct __sk_buff *skb, const struct endpoint *ep)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp = data + ETH_HLEN;
	__u8 asked[4];

	if ((void *)(arp + 1) > data_end)
		return -DROP_ARP_OTHER;
	if (arp->htype != bpf_htons(ARPHRD_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != 6 || arp->plen != 4 || arp->op != bpf_htons(ARPOP_REQUEST))
		return -DROP_ARP_OTHER;
	if (!mac_equal(arp->sha, ep->mac))
		return -DROP_SPOOF_MAC;
	if (*(__u32 *)arp->spa == 0 || *(__u32 *)arp->spa == *(__u32 *)arp->tpa)
		return -DROP_ARP_OTHER;

	__builtin_memcpy(asked, arp->tpa, 4);
	arp->op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, 6);
	__builtin_memcpy(arp->tpa, arp->spa, 4);
	__builtin_memcpy(arp->sha, ep->host_mac, 6);
	__builtin_memcpy(arp->spa, asked, 4);
	__builtin_memcpy(eth->h_dest, ep->mac, 6);
	__builtin_memcpy(eth->h_source, ep->host_mac, 6);
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* PALISADE_ARP_H */
