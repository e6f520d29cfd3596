/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline.h - the part of the per-packet pipeline every hook shares.
 *
 * A hook parses the packet, checks where it may come from, and resolves the
 * source and destination (tenant, identities, ipcache flags, the
 * destination's ENDPOINTS entry if local) into struct packet. Then
 * pipeline_ipv4() runs, in this order:
 *   1. ICMP errors: pass only when related to a tracked connection;
 *   2. conntrack hit: revalidate if the policy revision moved, update the
 *      entry, deliver - no policy decision for established traffic;
 *   3. new connection: policy decision (both sides), destination resolved,
 *      CT entry created, NEW_ALLOWED event;
 *   4. the chain point (CHAIN_POST_VERDICT), then delivery.
 * It returns a TC action, or -DROP_* for the hook's drop_packet().
 */
#ifndef PALISADE_PIPELINE_H
#define PALISADE_PIPELINE_H

#include "packet.h"
#include "drop.h"
#include "conntrack.h"
#include "deliver.h"
#include "policy.h"

static __always_inline int pipeline_ipv4(struct __sk_buff *skb, struct packet *p, const struct endpoint *dst_ep)
{
	struct verdict_meta *m;
	struct ct_entry *ct;
	struct ct_key key;
	__u8 dir = CT_DIR_FWD;
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

	ct = ct_lookup(p, &key, &dir);
	if (ct) {
		if (p->cfg && ct->revision != p->cfg->policy_revision) {
			ret = ct_revalidate(p, &key, ct, dir);
			if (ret < 0)
				return ret;
		} else {
			p->egress_cookie = ct->egress_cookie;
			p->ingress_cookie = ct->ingress_cookie;
		}
		if (ct_update(p, ct, dir))
			event_conn(p, EVENT_CONN_CLOSED, 0, &key, ct);
		ret = deliver_prepare(p, dst_ep, 0, &m);
		if (ret < 0)
			return ret;
		return chain_and_deliver(skb, m);
	}

	ret = policy_decide(p);
	if (ret < 0)
		return ret;
	ret = deliver_prepare(p, dst_ep, 1, &m);
	if (ret < 0)
		return ret;
	ret = ct_create(p, &key);
	if (ret < 0)
		return ret;
	event_emit(p, EVENT_NEW_ALLOWED, 0, 0);
	return chain_and_deliver(skb, m);
}

#endif /* PALISADE_PIPELINE_H */
