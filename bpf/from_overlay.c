// SPDX-License-Identifier: Apache-2.0
/*
 * from_overlay - TC ingress of the node's VXLAN device (collect metadata,
 * GBP): packets other nodes encapsulated toward this one, already decapsulated
 * by the kernel, with the tunnel metadata attached (overlay.h).
 *
 * Tunnel metadata (else UNKNOWN_VNI), VNI -> tenant (VNIS, else
 * UNKNOWN_VNI), inner IPv4 parsed (parse.h; ARP, IPv6 and other ethertypes
 * are dropped with their reasons: nothing but IPv4 between endpoints crosses
 * the overlay). Then, unless an established connection's route verified for
 * this very node, VNI and identity applies (pipeline.h): the source must be a
 * remote endpoint of that node with the identity the GBP option claims
 * (FORGED_IDENTITY), the destination a local endpoint
 * (NOT_LOCAL_DESTINATION), then the shared pipeline: replies of connections
 * the local endpoint opened pass, new connections need the destination's
 * ingress policy toward the claimed identity (decided again here: zero
 * trust toward other nodes), CT, delivery straight into the workload.
 */
#include "packet.h"
#include "drop.h"
#include "ipcache.h"
#include "overlay.h"
#include "parse.h"
#include "pipeline.h"

static __always_inline int from_overlay_ipv4(struct __sk_buff *skb, struct packet *p,
					     const struct overlay_rx *rx)
{
	const struct ipcache_value *dst;
	const struct vni_info *vni;
	const struct endpoint *dst_ep;
	struct endpoint dst_buf;
	struct flow flow;
	int ret;

	ret = parse_ipv4(skb, p);
	if (ret < 0)
		return ret;
	vni = bpf_map_lookup_elem(&VNIS, &rx->vni);
	if (!vni)
		return -DROP_UNKNOWN_VNI;
	p->tenant = vni->tenant;
	p->overlay_src = rx->remote;
	p->overlay_vni = rx->vni;
	if (pipeline_established(skb, p, &flow, &ret, rx))
		return ret;

	ret = overlay_rx_verify(p, rx, ipcache_lookup(p->tenant, p->saddr));
	if (ret < 0)
		return ret;

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

static __always_inline int from_overlay_handle(struct __sk_buff *skb, struct packet *p)
{
	struct overlay_rx rx = {};
	struct ethhdr *eth;
	int ret;

	ret = overlay_rx_read(skb, &rx);
	if (ret < 0)
		return ret;
	if (skb->vlan_present)
		return -DROP_UNSUPPORTED_L3;

	parse_pull(skb);
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return -DROP_TRUNCATED;

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return from_overlay_ipv4(skb, p, &rx);
	case bpf_htons(ETH_P_ARP):
		return -DROP_ARP_OTHER;
	case bpf_htons(ETH_P_IPV6):
		return -DROP_IPV6_UNSUPPORTED;
	default:
		return -DROP_UNSUPPORTED_L3;
	}
}

SEC("classifier")
int from_overlay(struct __sk_buff *skb)
{
	struct packet p;
	int ret;

	packet_init(&p, skb, HOOK_FROM_OVERLAY);
	ret = from_overlay_handle(skb, &p);
	return hook_exit(skb, &p, ret);
}

char LICENSE[] SEC("license") = "GPL";
