/* SPDX-License-Identifier: Apache-2.0 */
/*
 * overlay.h - the VXLAN overlay between nodes (bpf/README.md, "Overlay").
 *
 * Each node has one VXLAN device in collect-metadata mode with the Group
 * Policy extension (`external gbp`, UDP 4789), CONFIG.overlay_ifindex. The
 * VNI names the tenant (TENANTS[t].vni, VNIS[vni] back), the GBP option
 * carries the local part (low 16 bits) of the source identity: identities
 * are tenant_index << 16 | local, tenant indexes are the node's own
 * numbers, so only the local part travels.
 *
 * Sending (deliver.h, DELIVER_TUNNEL):
 *   tunnel_check_size() - whether the packet, or each segment of a GSO
 *                         packet, fits CONFIG.overlay_mtu once encapsulated;
 *                         if not and it has DF, icmp_frag_needed() turns it
 *                         into the ICMP "fragmentation needed" answer (type
 *                         3 code 4, the overlay MTU as next-hop MTU) for its
 *                         sender, which the hook sends back into the
 *                         workload (hook_exit() in drop.h);
 *   tunnel_encap()      - sets the tunnel key (the destination's node, the
 *                         VNI, this node's underlay address as outer source,
 *                         DF copied from the inner packet) and the GBP option,
 *                         and redirects to the VXLAN device, which adds the
 *                         outer headers (GSO packets stay GSO: the kernel
 *                         segments after encapsulation).
 *
 * Receiving (from_overlay.c):
 *   overlay_rx_read()   - the tunnel metadata of a received packet: outer
 *                         source, VNI, GBP.
 *   overlay_rx_verify() - the claimed identity (tenant << 16 | gbp) must be
 *                         the IPCACHE identity of the inner source, a remote
 *                         endpoint whose node is the outer source; else
 *                         FORGED_IDENTITY. A compromised node can send as
 *                         its own workloads only.
 *
 * Why the datapath answers "fragmentation needed" itself: the kernel's VXLAN
 * device answers oversized packets only when it is a bridge port
 * (skb_tunnel_check_pmtu() with reply = netif_is_any_bridge_port()); a
 * packet redirected to it by BPF would be encapsulated at full size and the
 * outer packet fragmented or, with DF, dropped - a black hole for TCP.
 */
#ifndef PALISADE_OVERLAY_H
#define PALISADE_OVERLAY_H

#include "packet.h"
#include "drop.h"

/* Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
#define OVERLAY_OVERHEAD 50
/* Low 16 bits of the GBP option: the group policy id (the kernel keeps flags above). */
#define GBP_ID_MASK 0xffff
#define VNI_MASK 0xffffff
#define IP_DF 0x4000
#define ICMP_FRAG_NEEDED_CODE 4
/* The original IPv4 header (at most 60 bytes) and the first 8 bytes after it. */
#define ICMP_QUOTE_MAX (60 + 8)
#define OVERLAY_TTL 64

/* What from_overlay learns from the tunnel metadata of a packet. */
struct overlay_rx {
	__be32 remote; /* outer source address: the node that sent it */
	__u32 vni;
	__u32 gbp;     /* group policy id: the local part of the claimed source identity */
};

/*
 * Whether the IPv4 packet in skb fits the overlay once encapsulated: its
 * length, or for a GSO packet the length of each segment (headers +
 * gso_size), is at most `mtu`. Sets *df when the packet may not be
 * fragmented. Returns 1 (fits), 0 (too big) or -DROP_*.
 */
static __always_inline int tunnel_fits(struct __sk_buff *skb, __u32 mtu, __u8 *df)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u32 hlen, len;

	if ((void *)(ip + 1) > data_end)
		return -DROP_TRUNCATED;
	*df = (ip->frag_off & bpf_htons(IP_DF)) != 0;
	hlen = ip->ihl * 4;
	len = bpf_ntohs(ip->tot_len);
	if (skb->gso_size) {
		__u8 *l4 = (void *)ip + hlen;
		__u32 l4_hlen = 8; /* UDP GSO: segments of gso_size payload bytes */

		if (ip->protocol == IPPROTO_TCP) {
			if ((void *)(l4 + 13) > data_end)
				return -DROP_TRUNCATED;
			l4_hlen = (l4[12] >> 4) * 4;
		}
		len = hlen + l4_hlen + skb->gso_size;
	}
	return !mtu || len <= mtu;
}

static __always_inline __u16 csum_fold_full(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/*
 * Rewrites the packet in skb into the ICMP "fragmentation needed" answer to
 * its sender: Ethernet addresses swapped, a new IPv4 header from `from` (the
 * node's underlay address) to the sender, ICMP type 3 code 4 with `mtu` as
 * next-hop MTU, quoting the original IPv4 header and the first 8 bytes after
 * it (RFC 792, RFC 1191). Only called for packets longer than the MTU, so
 * the frame always holds the quote and the new headers: they are written
 * over the start of the original and the rest is cut off.
 */
static __always_inline int icmp_frag_needed(struct __sk_buff *skb, __u32 mtu, __be32 from)
{
	struct {
		__u8 type;
		__u8 code;
		__be16 checksum;
		__be16 unused;
		__be16 mtu;
		__u8 quote[ICMP_QUOTE_MAX];
	} icmp = {};
	struct iphdr ip = {};
	__u8 eth[12];
	__u32 qlen;

	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, icmp.quote, sizeof(icmp.quote)) < 0)
		return -DROP_TRUNCATED;
	qlen = (icmp.quote[0] & 0x0f) * 4 + 8;
	if (qlen < 28 || qlen > ICMP_QUOTE_MAX)
		return -DROP_BAD_IP_HEADER;

	icmp.type = ICMP_DEST_UNREACH;
	icmp.code = ICMP_FRAG_NEEDED_CODE;
	icmp.mtu = bpf_htons(mtu);
	icmp.checksum = csum_fold_full(bpf_csum_diff(0, 0, (__be32 *)&icmp, 8 + qlen, 0));

	ip.version = 4;
	ip.ihl = 5;
	ip.tos = 0xc0; /* internetwork control, as routers send their errors */
	ip.tot_len = bpf_htons(sizeof(ip) + 8 + qlen);
	ip.ttl = OVERLAY_TTL;
	ip.protocol = IPPROTO_ICMP;
	ip.saddr = from;
	__builtin_memcpy(&ip.daddr, &icmp.quote[12], 4); /* the original source */
	ip.check = csum_fold_full(bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0));

	/* Back to the workload: destination = its MAC, source = its gateway (the port). */
	if (bpf_skb_store_bytes(skb, 0, &eth[6], 6, 0) < 0 || bpf_skb_store_bytes(skb, 6, eth, 6, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip), &icmp, 8 + qlen, 0) < 0 ||
	    bpf_skb_change_tail(skb, ETH_HLEN + sizeof(ip) + 8 + qlen, 0) < 0)
		return -DROP_TRUNCATED;
	return -DROP_FRAG_NEEDED;
}

/*
 * DELIVER_TUNNEL, first step: a DF packet too big for the overlay becomes
 * the ICMP answer for its sender (-DROP_FRAG_NEEDED, see hook_exit()).
 * Sets *df when the packet may not be fragmented. `cfg` is CONFIG[0].
 */
static __always_inline int tunnel_check_size(struct __sk_buff *skb, const struct config *cfg, __u8 *df)
{
	int fits = tunnel_fits(skb, cfg->overlay_mtu, df);

	if (fits < 0)
		return fits;
	if (!fits && *df)
		return icmp_frag_needed(skb, cfg->overlay_mtu, cfg->underlay_ipv4);
	return 0;
}

/*
 * DELIVER_TUNNEL, last step: the tunnel key and the GBP option, then the
 * redirect to the VXLAN device. DF is inherited: a packet that may be
 * fragmented and does not fit is fragmented outside (the outer packet); one
 * that may not never reaches here too big (tunnel_check_size()).
 */
static __always_inline int tunnel_encap(struct __sk_buff *skb, const struct verdict_meta *m,
					const struct config *cfg, __u8 df)
{
	struct bpf_tunnel_key key = {};
	struct vxlan_gbp_opt opt = {};

	key.tunnel_id = m->vni;
	key.remote_ipv4 = bpf_ntohl(m->nexthop);
	key.local_ipv4 = bpf_ntohl(cfg->underlay_ipv4);
	key.tunnel_ttl = OVERLAY_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), df ? BPF_F_DONT_FRAGMENT : 0) < 0)
		return -DROP_NO_TUNNEL;
	opt.gbp = m->src_identity & GBP_ID_MASK;
	if (bpf_skb_set_tunnel_opt(skb, &opt, sizeof(opt)) < 0)
		return -DROP_NO_TUNNEL;
	return bpf_redirect(m->target_ifindex, 0);
}

/* The tunnel metadata of a packet received on the VXLAN device. */
static __always_inline int overlay_rx_read(struct __sk_buff *skb, struct overlay_rx *rx)
{
	struct bpf_tunnel_key key = {};
	struct vxlan_gbp_opt opt = {};

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return -DROP_UNKNOWN_VNI;
	/* Without the GBP option the claimed local is 0, which no identity has. */
	if (bpf_skb_get_tunnel_opt(skb, &opt, sizeof(opt)) < 0)
		opt.gbp = 0;
	rx->remote = bpf_htonl(key.remote_ipv4);
	rx->vni = key.tunnel_id & VNI_MASK;
	rx->gbp = opt.gbp & GBP_ID_MASK;
	return 0;
}

/*
 * The source of a packet from another node, as IPCACHE knows it: it must be
 * a remote endpoint, hosted by the node the packet came from, with the
 * identity the GBP option claims (in the tenant the VNI names, p->tenant).
 * Fills p's source identity and flags.
 */
static __always_inline int overlay_rx_verify(struct packet *p, const struct overlay_rx *rx,
					     const struct ipcache_value *src)
{
	__u32 claimed = p->tenant << 16 | rx->gbp;

	if (!src || !(src->flags & IPCACHE_F_REMOTE_ENDPOINT) || src->identity != claimed ||
	    src->node_ipv4 != rx->remote || !rx->gbp)
		return -DROP_FORGED_IDENTITY;
	p->src_identity = claimed;
	p->src_flags = src->flags;
	return 0;
}

#endif /* PALISADE_OVERLAY_H */
