// SPDX-License-Identifier: Apache-2.0
/*
 * test_stages - chained stages used by the tests of the CHAIN contract
 * (bpf/README.md, "Chain"). Not loaded by the agent.
 *
 *   stage_drop_all - drops every packet it is given;
 *   stage_pass     - a well-behaved stage: checks META belongs to this packet,
 *                    counts the packet in STATS[STAT_SLOTS - 1] and hands it
 *                    to the delivery program.
 */
#include "packet.h"

SEC("classifier")
int stage_drop_all(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}

SEC("classifier")
int stage_pass(struct __sk_buff *skb)
{
	__u32 zero = 0, slot = STAT_SLOTS - 1;
	struct verdict_meta *m = bpf_map_lookup_elem(&META, &zero);
	__u64 *seen = bpf_map_lookup_elem(&STATS, &slot);

	if (!m || m->ifindex != skb->ifindex)
		return TC_ACT_SHOT;
	if (seen)
		*seen += 1;
	bpf_tail_call(skb, &CHAIN, CHAIN_DELIVER);
	return TC_ACT_SHOT; /* no delivery program: fail closed */
}

char LICENSE[] SEC("license") = "GPL";
