/* SPDX-License-Identifier: Apache-2.0 */
/*
 * packet.h - the per-packet context every header works on, and the kernel
 * constants the datapath needs.
 *
 * A hook fills a struct packet on its stack as it learns about the packet
 * (parse.h fills the tuple, the hook the tenant and identities, policy.h the
 * deciding rules) and passes it down; events and drops report from it.
 */
#ifndef PALISADE_PACKET_H
#define PALISADE_PACKET_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "maps.h"

#define AF_INET 2
#define NSEC_PER_MSEC 1000000ULL

/* One load, neither merged with nor moved across other memory accesses. */
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
/* Keeps the compiler from moving memory accesses across this point. */
#define barrier() asm volatile("" ::: "memory")

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

struct packet {
	__u64 now;                 /* datapath clock at entry (clock_now()) */
	const struct config *cfg;  /* CONFIG[0] */
	/* Read once at entry, before any table lookup: what is recorded under
	 * them (CT revision, cached routes) was decided from tables at least as
	 * new, so a change made meanwhile is seen by the next packet. */
	__u32 revision;            /* CONFIG.policy_revision */
	__u32 route_gen;           /* ROUTE_GEN[0] */
	__u32 ifindex;             /* interface the hook runs on */
	__u32 len;                 /* skb->len */
	__u32 tenant;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 src_flags;           /* enum ipcache_flags of the source */
	__u32 dst_flags;           /* enum ipcache_flags of the destination */
	__u32 dst_ifindex;         /* IPCACHE_F_LOCAL_ENDPOINT: destination's port */
	__be32 dst_node;           /* IPCACHE_F_REMOTE_ENDPOINT: the node hosting the destination */
	__be32 overlay_src;        /* HOOK_FROM_OVERLAY: the node the packet came from (outer source) */
	__u32 overlay_vni;         /* HOOK_FROM_OVERLAY: the VNI it carried */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;              /* conntrack ports (ICMP echo: id, id) */
	__be16 dport;
	__be16 policy_port;        /* port of the policy lookup (ICMP: type << 8 | code) */
	__u8 proto;
	__u8 hook;                 /* enum hook */
	__u8 tcp_flags;
	__u8 ttl;
	__u8 icmp_error;           /* 1: ICMP error, `inner` holds the original flow */
	/* Results of the policy decision, reported in events. */
	__u8 side;                 /* enum policy_direction that decided, 0 if none */
	__u8 rule_flags;           /* enum policy_flags of the matched rules */
	__u8 pad[3];
	__u32 egress_cookie;
	__u32 ingress_cookie;
	__u32 audit_cookie;
	struct ct_key inner;       /* ICMP error: tuple of the packet it reports on */
};

/* CLOCK_MONOTONIC nanoseconds at tick resolution (abi.h, struct clock). */
static __always_inline __u64 clock_now(void)
{
	__u32 zero = 0;
	const struct clock *c = bpf_map_lookup_elem(&CLOCK, &zero);

	if (!c)
		return 0;
	return bpf_jiffies64() * c->ns_per_jiffy + c->offset_ns;
}

static __always_inline void packet_init(struct packet *p, struct __sk_buff *skb, __u8 hook)
{
	__u32 zero = 0;
	const __u32 *gen;

	__builtin_memset(p, 0, sizeof(*p));
	p->now = clock_now();
	p->cfg = bpf_map_lookup_elem(&CONFIG, &zero);
	if (p->cfg)
		p->revision = READ_ONCE(p->cfg->policy_revision);
	gen = bpf_map_lookup_elem(&ROUTE_GEN, &zero);
	if (gen)
		p->route_gen = READ_ONCE(*gen);
	p->ifindex = skb->ifindex;
	p->len = skb->len;
	p->hook = hook;
}

static __always_inline int is_endpoint(__u32 ipcache_flags)
{
	return (ipcache_flags & (IPCACHE_F_LOCAL_ENDPOINT | IPCACHE_F_REMOTE_ENDPOINT)) != 0;
}

#endif /* PALISADE_PACKET_H */
