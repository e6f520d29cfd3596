// SPDX-License-Identifier: Apache-2.0
/*
 * test_overlay - what the kernel's VXLAN device does on receive, for
 * BPF_PROG_TEST_RUN tests of from_overlay (never loaded by the agent).
 *
 *   inject_tunnel - attaches the tunnel metadata in TEST_TUNNEL[0] to the
 *                   packet (as if a VXLAN device had decapsulated it: the
 *                   sending node, the VNI and, unless told not to, the GBP
 *                   option), then tail-calls TEST_TARGET[0], where the test
 *                   puts from_overlay. Returns TEST_NO_TARGET if that slot is
 *                   empty.
 *
 * bpf_skb_get_tunnel_key() reports the outer source of a received packet
 * from the key's source address, which bpf_skb_set_tunnel_key() fills from
 * local_ipv4: so the sending node goes there.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

#define TEST_NO_TARGET 99

struct test_tunnel {
	__u32 vni;
	__u32 sender;  /* the sending node's address, host order */
	__u32 gbp;     /* the GBP option's value */
	__u32 has_gbp; /* 0: no GBP option at all */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct test_tunnel);
} TEST_TUNNEL SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} TEST_TARGET SEC(".maps");

SEC("classifier")
int inject_tunnel(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct vxlan_gbp_opt opt = {};
	__u32 zero = 0;
	const struct test_tunnel *t = bpf_map_lookup_elem(&TEST_TUNNEL, &zero);

	if (!t)
		return TEST_NO_TARGET;
	key.tunnel_id = t->vni;
	key.local_ipv4 = t->sender;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return TEST_NO_TARGET;
	if (t->has_gbp) {
		opt.gbp = t->gbp;
		if (bpf_skb_set_tunnel_opt(skb, &opt, sizeof(opt)) < 0)
			return TEST_NO_TARGET;
	}
	bpf_tail_call(skb, &TEST_TARGET, 0);
	return TEST_NO_TARGET;
}

char LICENSE[] SEC("license") = "GPL";
