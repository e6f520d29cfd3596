// SPDX-License-Identifier: Apache-2.0
/*
 * to_endpoint - TC egress of an endpoint's host-side port: packets the node's
 * own stack sends to the workload (traffic between endpoints and from the
 * uplink is redirected straight into the workload and never passes here).
 *
 * ARP passes (the node resolving the workload, and the replies arp.h sends
 * back out of this port). IPv4: the destination must be this port's endpoint
 * (NOT_LOCAL_DESTINATION), the source is looked up in IPCACHE (else
 * UNKNOWN_SOURCE; an endpoint's address coming from the node's stack is
 * SPOOF_IP since the node does not forward), then the shared pipeline:
 * conntrack replies pass, new connections need the endpoint's ingress policy.
 * A packet of an established connection whose route is cached skips the
 * address checks and lookups (pipeline.h).
 */
#include "packet.h"
#include "drop.h"
#include "ipcache.h"
#include "parse.h"
#include "pipeline.h"

static __always_inline int to_endpoint_ipv4(struct __sk_buff *skb, struct packet *p, const struct endpoint *ep)
{
	const struct ipcache_value *src, *dst;
	struct flow flow;
	int ret;

	ret = parse_ipv4(skb, p);
	if (ret < 0)
		return ret;
	if (pipeline_established(skb, p, &flow, &ret, NULL))
		return ret;

	dst = ipcache_lookup(p->tenant, p->daddr);
	if (!dst || !(dst->flags & IPCACHE_F_LOCAL_ENDPOINT) || dst->ifindex != p->ifindex)
		return -DROP_NOT_LOCAL_DESTINATION;
	p->dst_identity = ep->identity;
	p->dst_flags = dst->flags;
	p->dst_ifindex = p->ifindex;

	src = ipcache_lookup(p->tenant, p->saddr);
	if (!src)
		return -DROP_UNKNOWN_SOURCE;
	/* The node does not forward: an endpoint's address (local, or of another
	 * node: those arrive through from_overlay) from its stack is spoofed. */
	if (src->flags & (IPCACHE_F_LOCAL_ENDPOINT | IPCACHE_F_REMOTE_ENDPOINT))
		return -DROP_SPOOF_IP;
	p->src_identity = src->identity;
	p->src_flags = src->flags;

	return pipeline_ipv4(skb, p, &flow, ep);
}

static __always_inline int to_endpoint_handle(struct __sk_buff *skb, struct packet *p)
{
	struct endpoint ep;
	struct ethhdr *eth;

	if (!endpoint_get(p->ifindex, &ep))
		return -DROP_UNKNOWN_ENDPOINT;
	p->tenant = ep.tenant;
	if (skb->vlan_present)
		return -DROP_UNSUPPORTED_L3;

	parse_pull(skb);
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return -DROP_TRUNCATED;

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return to_endpoint_ipv4(skb, p, &ep);
	case bpf_htons(ETH_P_ARP):
		return TC_ACT_OK;
	case bpf_htons(ETH_P_IPV6):
		return -DROP_IPV6_UNSUPPORTED;
	default:
		return -DROP_UNSUPPORTED_L3;
	}
}

SEC("classifier")
int to_endpoint(struct __sk_buff *skb)
{
	struct packet p;
	int ret;

	packet_init(&p, skb, HOOK_TO_ENDPOINT);
	ret = to_endpoint_handle(skb, &p);
	return hook_exit(skb, &p, ret);
}

char LICENSE[] SEC("license") = "GPL";
