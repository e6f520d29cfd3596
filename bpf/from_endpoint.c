// SPDX-License-Identifier: Apache-2.0
/*
 * from_endpoint - TC ingress of an endpoint's host-side port: every packet a
 * workload sends.
 *
 * Port -> endpoint (ENDPOINTS, read through its index: endpoints.h; else
 * UNKNOWN_ENDPOINT); source MAC must be the endpoint's (SPOOF_MAC); ARP
 * requests are answered (arp.h); IPv6 and other ethertypes are dropped. IPv4: parsed (parse.h), source address must be one
 * of this endpoint's (its primary address in ENDPOINTS, or an IPCACHE entry
 * flagged local with this port; else SPOOF_IP), destination resolved in
 * IPCACHE (else UNKNOWN_DESTINATION), then the shared pipeline: conntrack, the
 * egress policy of the source and the ingress policy of a palisade
 * destination (local, or on another node), chain, delivery: straight into a
 * local workload, over the overlay to another node, or out of the uplink. A packet of an established connection whose
 * route is cached skips the address checks and lookups (pipeline.h).
 */
#include "packet.h"
#include "drop.h"
#include "arp.h"
#include "ipcache.h"
#include "parse.h"
#include "pipeline.h"

static __always_inline int from_endpoint_ipv4(struct __sk_buff *skb, struct packet *p, const struct endpoint *ep)
{
	const struct ipcache_value *src, *dst;
	const struct endpoint *dst_ep;
	struct endpoint dst_buf;
	struct flow flow;
	int ret;

	ret = parse_ipv4(skb, p);
	if (ret < 0)
		return ret;
	if (pipeline_established(skb, p, &flow, &ret, NULL))
		return ret;

	/* The primary address needs no lookup; others must be in IPCACHE as ours. */
	if (!ep->ipv4 || p->saddr != ep->ipv4) {
		src = ipcache_lookup(p->tenant, p->saddr);
		if (!src || !(src->flags & IPCACHE_F_LOCAL_ENDPOINT) || src->ifindex != p->ifindex)
			return -DROP_SPOOF_IP;
	}
	p->src_identity = ep->identity;
	p->src_flags = IPCACHE_F_LOCAL_ENDPOINT;

	dst = ipcache_lookup(p->tenant, p->daddr);
	if (!dst)
		return -DROP_UNKNOWN_DESTINATION;
	p->dst_flags = dst->flags;
	p->dst_ifindex = dst->ifindex;
	p->dst_node = dst->node_ipv4;
	ret = peer_resolve(p, dst, &p->dst_identity, &dst_buf, &dst_ep);
	if (ret < 0)
		return ret;

	return pipeline_ipv4(skb, p, &flow, dst_ep);
}

static __always_inline int from_endpoint_handle(struct __sk_buff *skb, struct packet *p)
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
	if (!mac_equal(eth->h_source, ep.mac))
		return -DROP_SPOOF_MAC;

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return from_endpoint_ipv4(skb, p, &ep);
	case bpf_htons(ETH_P_ARP):
		return arp_respond(skb, &ep);
	case bpf_htons(ETH_P_IPV6):
		return -DROP_IPV6_UNSUPPORTED;
	default:
		return -DROP_UNSUPPORTED_L3;
	}
}

SEC("classifier")
int from_endpoint(struct __sk_buff *skb)
{
	struct packet p;
	int ret;

	packet_init(&p, skb, HOOK_FROM_ENDPOINT);
	ret = from_endpoint_handle(skb, &p);
	return hook_exit(skb, &p, ret);
}

char LICENSE[] SEC("license") = "GPL";
