// SPDX-License-Identifier: Apache-2.0
/*
 * deliver - the delivery program, installed by the loader in
 * CHAIN[CHAIN_DELIVER]. A stage in CHAIN_POST_VERDICT finishes by
 * tail-calling it; it performs the action recorded in META by the hook
 * (deliver.h). META written for another interface means the stage was
 * entered out of contract: BAD_META.
 */
#include "packet.h"
#include "drop.h"
#include "deliver.h"

SEC("classifier")
int deliver_prog(struct __sk_buff *skb)
{
	const struct verdict_meta *m = meta_get();
	struct packet p;
	int ret;

	packet_init(&p, skb, HOOK_DELIVER);
	if (!m || m->ifindex != skb->ifindex)
		return drop_packet(skb, &p, DROP_BAD_META);
	p.tenant = m->tenant;
	p.src_identity = m->src_identity;
	p.dst_identity = m->dst_identity;
	p.saddr = m->saddr;
	p.daddr = m->daddr;
	p.sport = m->sport;
	p.dport = m->dport;
	p.proto = m->proto;
	p.egress_cookie = m->egress_cookie;
	p.ingress_cookie = m->ingress_cookie;

	ret = deliver(skb, m);
	return hook_exit(skb, &p, ret);
}

char LICENSE[] SEC("license") = "GPL";
