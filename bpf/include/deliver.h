/* SPDX-License-Identifier: Apache-2.0 */
/*
 * deliver.h - where an admitted packet goes, the chain point, and delivery.
 *
 *   deliver_prepare()  - resolves the destination into META (struct
 *                        verdict_meta): DELIVER_LOCAL (a local endpoint),
 *                        DELIVER_TUNNEL (an endpoint on another node, over
 *                        the overlay: overlay.h), DELIVER_WORLD (the
 *                        tenant's uplink) or DELIVER_STACK (the node's stack
 *                        / on to the workload); fails with NO_TUNNEL,
 *                        NO_ROUTE, TTL_EXCEEDED, ...
 *   chain_and_deliver() - tail-calls CHAIN[CHAIN_POST_VERDICT]; an empty slot
 *                        falls through to deliver(). A stage in the slot reads
 *                        META and finishes by tail-calling CHAIN[CHAIN_DELIVER]
 *                        (bpf/README.md, "Chain").
 *   deliver()          - performs META's action on the packet.
 *
 * The delivery of an established connection is cached per direction in its
 * CT entry (struct ct_route, abi.h), so that its packets skip the lookups
 * deliver_prepare() and the hooks' source and destination checks make:
 *   route_fill()       - copies META's delivery into a route;
 *   route_store()      - records it in a live CT entry;
 *   route_load()       - reads a valid route (same ROUTE_GEN, interface and
 *                        hook as when it was resolved) into a stack copy;
 *   deliver_cached()   - fills META from it.
 * A route is valid only while ROUTE_GEN[0] equals the value read at the start
 * of the packet that resolved it: user space bumps ROUTE_GEN after every
 * write to a table a route or those checks depend on, so a cached route
 * always equals what the lookups would give. Rewrites race with readers on
 * other CPUs, so a writer claims the route (cmpxchg of `gen` to
 * ROUTE_GEN_BUSY; a loser leaves it alone), writes the fields and publishes
 * `gen` last (xchg: ordered after the fields); a reader checks `gen` before
 * and after copying the fields and falls back to the full lookups when it
 * changed. Loads are not reordered with loads, nor stores with stores, on
 * x86-64, the architecture this is built and tested on.
 *
 * Routes of packets from the overlay (HOOK_FROM_OVERLAY) also record where
 * such packets must come from: `nexthop` is the node (outer source) and `vni`
 * the VNI they were verified with; from_overlay checks both, and the GBP
 * identity, before it uses the route (pipeline.h).
 *
 * Routed deliveries (LOCAL, TUNNEL, WORLD) are an IP hop: TTL is decremented
 * with an incremental checksum update, and a packet with TTL <= 1 is dropped
 * (TTL_EXCEEDED; no ICMP time-exceeded is generated). A packet between nodes
 * makes two hops, one on each node.
 */
#ifndef PALISADE_DELIVER_H
#define PALISADE_DELIVER_H

#include "packet.h"
#include "drop.h"
#include "overlay.h"

static __always_inline struct verdict_meta *meta_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&META, &zero);
}

/* META's description of the packet and its verdict; the delivery is zeroed. */
static __always_inline struct verdict_meta *meta_fill(const struct packet *p, __u8 ct_new)
{
	struct verdict_meta *m = meta_get();

	if (!m)
		return NULL;
	__builtin_memset(m, 0, sizeof(*m));
	m->ifindex = p->ifindex;
	m->hook = p->hook;
	m->proto = p->proto;
	m->ct_new = ct_new;
	m->tenant = p->tenant;
	m->src_identity = p->src_identity;
	m->dst_identity = p->dst_identity;
	m->saddr = p->saddr;
	m->daddr = p->daddr;
	m->sport = p->sport;
	m->dport = p->dport;
	m->egress_cookie = p->egress_cookie;
	m->ingress_cookie = p->ingress_cookie;
	return m;
}

/*
 * Fills META for p. `dst_ep` is the destination's ENDPOINTS entry when it is
 * a local endpoint (peer_resolve), `ct_new` marks a connection's first packet.
 */
static __always_inline int deliver_prepare(const struct packet *p, const struct endpoint *dst_ep,
					   __u8 ct_new, struct verdict_meta **out)
{
	struct verdict_meta *m = meta_fill(p, ct_new);

	if (!m)
		return -DROP_BAD_META;
	*out = m;

	/* to_endpoint: the packet is already on its way to the workload. */
	if (p->hook == HOOK_TO_ENDPOINT) {
		m->action = DELIVER_STACK;
		return 0;
	}
	if (p->dst_flags & IPCACHE_F_LOCAL_ENDPOINT) {
		if (!dst_ep)
			return -DROP_NO_ROUTE;
		if (p->ttl <= 1)
			return -DROP_TTL_EXCEEDED;
		m->action = DELIVER_LOCAL;
		m->target_ifindex = p->dst_ifindex;
		__builtin_memcpy(m->src_mac, dst_ep->host_mac, 6);
		__builtin_memcpy(m->dst_mac, dst_ep->mac, 6);
		return 0;
	}
	if (p->dst_flags & IPCACHE_F_REMOTE_ENDPOINT) {
		/* Over the overlay to the node hosting it (overlay.h). */
		const struct tenant_info *t = bpf_map_lookup_elem(&TENANTS, &p->tenant);

		if (!p->cfg || !p->cfg->overlay_ifindex || !p->dst_node || !t || !t->vni)
			return -DROP_NO_TUNNEL;
		if (p->ttl <= 1)
			return -DROP_TTL_EXCEEDED;
		m->action = DELIVER_TUNNEL;
		m->target_ifindex = p->cfg->overlay_ifindex;
		m->nexthop = p->dst_node;
		m->vni = t->vni;
		return 0;
	}
	if (p->hook == HOOK_FROM_UPLINK)
		return -DROP_NOT_LOCAL_DESTINATION;
	if (p->dst_flags & IPCACHE_F_HOST) {
		m->action = DELIVER_STACK;
		return 0;
	}

	/* World or a CIDR identity: out through the tenant's uplink. */
	struct tenant_info *t = bpf_map_lookup_elem(&TENANTS, &p->tenant);

	if (!t || !t->uplink_ifindex || !t->nexthop)
		return -DROP_NO_ROUTE;
	if (p->ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	m->action = DELIVER_WORLD;
	m->target_ifindex = t->uplink_ifindex;
	m->nexthop = t->nexthop;
	return 0;
}

/* The delivery META describes, as a route for packets like p (gen left to the caller). */
static __always_inline void route_fill(const struct packet *p, struct ct_route *r,
				       const struct verdict_meta *m)
{
	r->in_ifindex = p->ifindex;
	r->target_ifindex = m->target_ifindex;
	__builtin_memcpy(r->src_mac, m->src_mac, 6);
	__builtin_memcpy(r->dst_mac, m->dst_mac, 6);
	r->hook = p->hook;
	r->action = m->action;
	if (p->hook == HOOK_FROM_OVERLAY) {
		/* Where packets of this direction must come from (see the top). */
		r->nexthop = p->overlay_src;
		r->vni = p->overlay_vni;
	} else {
		r->nexthop = m->nexthop;
		r->vni = m->vni;
	}
}

/* Caches META's delivery in `r`, a route of a live CT entry, unless another CPU is at it. */
static __always_inline void route_store(const struct packet *p, struct ct_route *r,
					const struct verdict_meta *m)
{
	__u32 gen = READ_ONCE(r->gen);

	if (p->route_gen < ROUTE_GEN_FIRST || gen == p->route_gen || gen == ROUTE_GEN_BUSY)
		return;
	if (__sync_val_compare_and_swap(&r->gen, gen, ROUTE_GEN_BUSY) != gen)
		return;
	route_fill(p, r, m);
	__sync_lock_test_and_set(&r->gen, p->route_gen);
}

/* Copies `r` into `out` when it is valid for p; 0 when p must be resolved in full. */
static __always_inline int route_load(const struct packet *p, const struct ct_route *r,
				      struct ct_route *out)
{
	__u32 gen = READ_ONCE(r->gen);

	if (gen != p->route_gen || gen < ROUTE_GEN_FIRST)
		return 0;
	__builtin_memcpy(out, r, sizeof(*out));
	barrier();
	if (READ_ONCE(r->gen) != gen)
		return 0;
	return out->in_ifindex == p->ifindex && out->hook == p->hook;
}

/* deliver_prepare() for a packet whose delivery is the cached route `r`. */
static __always_inline int deliver_cached(const struct packet *p, const struct ct_route *r,
					  struct verdict_meta **out)
{
	struct verdict_meta *m = meta_fill(p, 0);

	if (!m)
		return -DROP_BAD_META;
	*out = m;
	m->action = r->action;
	m->target_ifindex = r->target_ifindex;
	if (p->hook != HOOK_FROM_OVERLAY) {
		m->nexthop = r->nexthop;
		m->vni = r->vni;
	}
	__builtin_memcpy(m->src_mac, r->src_mac, 6);
	__builtin_memcpy(m->dst_mac, r->dst_mac, 6);
	/* Routed deliveries are an IP hop (deliver_prepare() checks the same). */
	if (r->action != DELIVER_STACK && p->ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	return 0;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* TTL - 1 with the checksum updated incrementally (RFC 1624: HC' = ~(~HC + ~m + m')). */
static __always_inline int ttl_decrement(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u16 old, new;

	if ((void *)(ip + 1) > data_end)
		return -DROP_TRUNCATED;
	if (ip->ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	old = *(__u16 *)&ip->ttl; /* ttl and protocol form one 16-bit word */
	ip->ttl--;
	new = *(__u16 *)&ip->ttl;
	ip->check = ~csum_fold((__u16)~ip->check + (__u16)~old + new);
	return 0;
}

static __always_inline int deliver(struct __sk_buff *skb, const struct verdict_meta *m)
{
	int ret;

	switch (m->action) {
	case DELIVER_STACK:
		return TC_ACT_OK;
	case DELIVER_LOCAL: {
		ret = ttl_decrement(skb);
		if (ret < 0)
			return ret;
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct ethhdr *eth = data;

		if ((void *)(eth + 1) > data_end)
			return -DROP_TRUNCATED;
		__builtin_memcpy(eth->h_dest, m->dst_mac, 6);
		__builtin_memcpy(eth->h_source, m->src_mac, 6);
		return bpf_redirect_peer(m->target_ifindex, 0);
	}
	case DELIVER_WORLD: {
		struct bpf_redir_neigh nh = {
			.nh_family = AF_INET,
			.ipv4_nh = m->nexthop,
		};

		ret = ttl_decrement(skb);
		if (ret < 0)
			return ret;
		return bpf_redirect_neigh(m->target_ifindex, &nh, sizeof(nh), 0);
	}
	case DELIVER_TUNNEL: {
		__u32 zero = 0;
		const struct config *cfg = bpf_map_lookup_elem(&CONFIG, &zero);
		__u8 df = 0;

		if (!cfg)
			return -DROP_NO_TUNNEL;
		/* Before the TTL: the ICMP answer quotes the packet as it was sent. */
		ret = tunnel_check_size(skb, cfg, &df);
		if (ret < 0)
			return ret;
		ret = ttl_decrement(skb);
		if (ret < 0)
			return ret;
		return tunnel_encap(skb, m, cfg, df);
	}
	default:
		return -DROP_BAD_META;
	}
}

/* The chain point: a stage in CHAIN_POST_VERDICT takes over; else deliver. */
static __always_inline int chain_and_deliver(struct __sk_buff *skb, const struct verdict_meta *m)
{
	bpf_tail_call(skb, &CHAIN, CHAIN_POST_VERDICT);
	return deliver(skb, m);
}

#endif /* PALISADE_DELIVER_H */
