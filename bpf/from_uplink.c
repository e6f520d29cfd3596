// SPDX-License-Identifier: Apache-2.0
/*
 * from_uplink - TC ingress of a tenant's uplink: packets from the tenant's
 * world.
 *
 * Interface -> tenant (UPLINKS, else UNKNOWN_UPLINK). ARP passes to the node's
 * stack (it owns the uplink's address and resolves next hops). IPv4: the
 * source must be outside palisade (a world/CIDR entry in IPCACHE; a palisade
 * or host address arriving from outside is SPOOF_IP; no entry is
 * UNKNOWN_SOURCE), the destination must be a local endpoint
 * (NOT_LOCAL_DESTINATION), then the shared pipeline: replies of connections
 * the endpoints opened pass, new connections need the endpoint's ingress
 * policy toward the world identity; delivery goes straight into the
 * workload. A packet of an established connection whose route is cached
 * skips the address checks and lookups (pipeline.h).
 */
#include "packet.h"
#include "drop.h"
#include "ipcache.h"
#include "parse.h"
#include "pipeline.h"

static __always_inline int from_uplink_ipv4(struct __sk_buff *skb, struct packet *p)
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

	src = ipcache_lookup(p->tenant, p->saddr);
	if (!src)
		return -DROP_UNKNOWN_SOURCE;
	if (src->flags & (IPCACHE_F_LOCAL_ENDPOINT | IPCACHE_F_REMOTE_ENDPOINT | IPCACHE_F_HOST))
		return -DROP_SPOOF_IP;
	p->src_identity = src->identity;
	p->src_flags = src->flags;

	dst = ipcache_lookup(p->tenant, p->daddr);
	if (!dst || !(dst->flags & IPCACHE_F_LOCAL_ENDPOINT))
		return -DROP_NOT_LOCAL_DESTINATION;
	p->dst_flags = dst->flags;
	p->dst_ifindex = dst->ifindex;
	ret = peer_resolve(p, dst, &p->dst_identity, &dst_buf, &dst_ep);
	if (ret < 0)
		return ret;

	return pipeline_ipv4(skb, p, &flow, dst_ep);
}

static __always_inline int from_uplink_handle(struct __sk_buff *skb, struct packet *p)
{
	const struct uplink_info *up;
	struct ethhdr *eth;

	up = bpf_map_lookup_elem(&UPLINKS, &p->ifindex);
	if (!up)
		return -DROP_UNKNOWN_UPLINK;
	p->tenant = up->tenant;
	if (skb->vlan_present)
		return -DROP_UNSUPPORTED_L3;

	parse_pull(skb);
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return -DROP_TRUNCATED;

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return from_uplink_ipv4(skb, p);
	case bpf_htons(ETH_P_ARP):
		return TC_ACT_OK;
	case bpf_htons(ETH_P_IPV6):
		return -DROP_IPV6_UNSUPPORTED;
	default:
		return -DROP_UNSUPPORTED_L3;
	}
}

SEC("classifier")
int from_uplink(struct __sk_buff *skb)
{
	struct packet p;
	int ret;

	packet_init(&p, skb, HOOK_FROM_UPLINK);
	ret = from_uplink_handle(skb, &p);
	return hook_exit(skb, &p, ret);
}

char LICENSE[] SEC("license") = "GPL";
