/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline.h - the part of the per-packet pipeline every hook shares.
 *
 * A hook checks the port the packet came in on and parses it, then:
 *
 *   pipeline_established() - conntrack lookup; a packet of a live connection
 *                            whose route for this direction is cached and
 *                            valid (deliver.h) is updated in CT and delivered
 *                            right away: no IPCACHE, ENDPOINTS or policy
 *                            lookup. Returns 1 when it handled the packet.
 *                            from_overlay passes the packet's tunnel
 *                            metadata (`rx`; NULL elsewhere): the route is
 *                            used only for packets from the node, with the
 *                            VNI and GBP identity it was verified for.
 *   (the hook's own checks: where the packet may come from and go to, the
 *    source and destination resolved into struct packet - identities,
 *    ipcache flags, the destination's ENDPOINTS entry if local)
 *   pipeline_ipv4()        - the rest, in this order:
 *     1. ICMP errors: pass only when related to a tracked connection;
 *     2. conntrack hit: revalidate if the policy revision moved or the
 *        identities changed, update the entry, cache the route - no policy
 *        decision for established traffic;
 *     3. new connection: policy decision (both sides), destination resolved,
 *        CT entry created with its route, NEW_ALLOWED event;
 *     4. the chain point (CHAIN_POST_VERDICT), then delivery.
 *
 * The cached route was resolved by the same hook on the same interface
 * under the same tables (ROUTE_GEN), so skipping the hook's checks gives the
 * verdict they would give. Both functions return a TC action, or -DROP_* for
 * the hook's drop_packet().
 */
#ifndef PALISADE_PIPELINE_H
#define PALISADE_PIPELINE_H

#include "packet.h"
#include "drop.h"
#include "conntrack.h"
#include "deliver.h"
#include "policy.h"

/* The packet's connection, carried from pipeline_established() to pipeline_ipv4(). */
struct flow {
	struct ct_key key; /* the connection's key (the packet's tuple when new) */
	struct ct_entry *ct; /* NULL: a new connection (or an ICMP error) */
	__u8 dir;            /* enum ct_dir of the packet */
};

static __always_inline int pipeline_established(struct __sk_buff *skb, struct packet *p, struct flow *f,
						int *ret, const struct overlay_rx *rx)
{
	struct verdict_meta *m;
	struct ct_route route;
	struct ct_entry *ct;

	f->ct = NULL;
	f->dir = CT_DIR_FWD;
	if (p->icmp_error)
		return 0;
	ct = ct_lookup(p, &f->key, &f->dir);
	f->ct = ct;
	if (!ct || (p->cfg && ct->revision != p->revision))
		return 0;
	if (!route_load(p, f->dir == CT_DIR_FWD ? &ct->route_fwd : &ct->route_rev, &route))
		return 0;
	/* From the overlay: the same node, VNI and source identity as the
	 * packet the route was verified with; anything else is verified in
	 * full (and dropped there if forged). */
	if (rx && (route.nexthop != rx->remote || route.vni != rx->vni ||
		   ((f->dir == CT_DIR_FWD ? ct->src_identity : ct->dst_identity) & GBP_ID_MASK) != rx->gbp))
		return 0;

	ct_load_identities(p, ct, f->dir);
	if (ct_update(p, ct, f->dir))
		event_conn(p, EVENT_CONN_CLOSED, 0, &f->key, ct);
	*ret = deliver_cached(p, &route, &m);
	if (*ret < 0)
		return 1;
	*ret = chain_and_deliver(skb, m);
	return 1;
}

static __always_inline int pipeline_ipv4(struct __sk_buff *skb, struct packet *p, struct flow *f,
					 const struct endpoint *dst_ep)
{
	struct ct_entry *ct = f->ct;
	struct verdict_meta *m;
	int ret;

	if (p->icmp_error) {
		ret = ct_related(p);
		if (ret < 0)
			return ret;
		ret = deliver_prepare(p, dst_ep, 0, &m);
		if (ret < 0)
			return ret;
		return chain_and_deliver(skb, m);
	}

	if (ct) {
		if ((p->cfg && ct->revision != p->revision) || !ct_same_identities(p, ct, f->dir)) {
			ret = ct_revalidate(p, &f->key, ct, f->dir);
			if (ret < 0)
				return ret;
		} else {
			p->egress_cookie = ct->egress_cookie;
			p->ingress_cookie = ct->ingress_cookie;
		}
		if (ct_update(p, ct, f->dir))
			event_conn(p, EVENT_CONN_CLOSED, 0, &f->key, ct);
		ret = deliver_prepare(p, dst_ep, 0, &m);
		if (ret < 0)
			return ret;
		route_store(p, f->dir == CT_DIR_FWD ? &ct->route_fwd : &ct->route_rev, m);
		return chain_and_deliver(skb, m);
	}

	ret = policy_decide(p);
	if (ret < 0)
		return ret;
	ret = deliver_prepare(p, dst_ep, 1, &m);
	if (ret < 0)
		return ret;
	ret = ct_create(p, &f->key, m);
	if (ret < 0)
		return ret;
	event_emit(p, EVENT_NEW_ALLOWED, 0, 0);
	return chain_and_deliver(skb, m);
}

#endif /* PALISADE_PIPELINE_H */
