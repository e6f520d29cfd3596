/* SPDX-License-Identifier: Apache-2.0 */
/*
 * drop.h - the table of drop reasons and the one exit point for drops.
 *
 * Numbers are stable: they are stored in DROP_COUNTERS and events and shown to
 * users, so a reason is never renumbered or reused; new reasons take the next
 * free number below DROP_REASON_SLOTS. The Rust mirror (DropReason in
 * crates/palisade-datapath/src/drop_reason.rs) carries the human description
 * and a test checks it against this enum in the object's BTF.
 *
 * Functions return -DROP_* up the call chain; the hook's entry point hands
 * its result to hook_exit(), which gives a negative one to drop_packet(): it
 * counts the drop and emits a rate-limited DENIED event. Nothing else returns
 * TC_ACT_SHOT.
 */
#ifndef PALISADE_DROP_H
#define PALISADE_DROP_H

#include "abi.h"

enum drop_reason {
	DROP_UNKNOWN_ENDPOINT = 1,    /* no ENDPOINTS entry for the port */
	DROP_UNSUPPORTED_L3 = 2,      /* ethertype other than IPv4, ARP, IPv6 */
	DROP_IPV6_UNSUPPORTED = 3,    /* IPv6 (until the IPv6 issue) */
	DROP_ARP_OTHER = 4,           /* ARP that is not a request we answer (reply, probe, malformed) */
	DROP_SPOOF_MAC = 5,           /* source MAC is not the endpoint's */
	DROP_SPOOF_IP = 6,            /* source IP does not belong to the sender */
	DROP_TRUNCATED = 7,           /* Ethernet, IPv4 or L4 header incomplete */
	DROP_BAD_IP_HEADER = 8,       /* version != 4, IHL < 5 or total length inconsistent */
	DROP_FRAGMENT = 9,            /* IPv4 fragment: palisade does not reassemble */
	DROP_TTL_EXCEEDED = 10,       /* TTL <= 1 on a routed delivery */
	DROP_BAD_L4_HEADER = 11,      /* TCP data offset < 5 */
	DROP_ICMP_UNRELATED = 12,     /* ICMP error not related to a known connection */
	DROP_UNKNOWN_DESTINATION = 13, /* IPCACHE has no entry for the destination */
	DROP_UNKNOWN_SOURCE = 14,     /* IPCACHE has no entry for the source */
	DROP_POLICY_DENIED = 15,      /* a rule denied the flow (cookie names it) */
	DROP_NO_POLICY = 16,          /* no POLICY entry at all for the subject (fail closed) */
	DROP_POLICY_REVOKED = 17,     /* policy changed: the connection is now denied and was cut */
	DROP_REMOTE_UNSUPPORTED = 18, /* retired: remote destinations go over the overlay now */
	DROP_NO_ROUTE = 19,           /* world-bound but the tenant has no uplink, or stale IPCACHE */
	DROP_UNKNOWN_UPLINK = 20,     /* no UPLINKS entry for the interface */
	DROP_NOT_LOCAL_DESTINATION = 21, /* destination is not the local endpoint this path serves */
	DROP_TENANT_MISMATCH = 22,    /* tables point to an endpoint of another tenant */
	DROP_CT_CREATE_FAILED = 23,   /* the conntrack entry could not be created */
	DROP_BAD_META = 24,           /* the delivery program found no valid verdict metadata */
	DROP_UNKNOWN_VNI = 25,        /* overlay packet without tunnel metadata, or a VNI of no tenant here */
	DROP_FORGED_IDENTITY = 26,    /* overlay packet whose GBP identity or outer source is not its source's */
	DROP_FRAG_NEEDED = 27,        /* DF packet too big for the overlay: answered with ICMP frag needed */
	DROP_NO_TUNNEL = 28,          /* remote destination, but no overlay device or no address of its node */
};

#include "events.h"

/*
 * Counts a packet that will not reach its destination under `reason` and
 * emits a DENIED event (rate-limited per flow, carrying the suppressed
 * count). `reason` is positive here (callers pass -ret).
 */
static __always_inline void drop_count(struct __sk_buff *skb, struct packet *p, __u32 reason)
{
	__u32 slot = reason < DROP_REASON_SLOTS ? reason : 0;
	struct counter *c = bpf_map_lookup_elem(&DROP_COUNTERS, &slot);

	if (c) {
		c->packets += 1;
		c->bytes += p->len; /* as it arrived (the ICMP answer rewrites it) */
	}
	event_ratelimited(p, EVENT_DENIED, reason);
}

/*
 * The one exit point for drops: drop_count(), then TC_ACT_SHOT. (The only
 * other caller of drop_count() is the overlay's ICMP "fragmentation needed"
 * answer, which replaces the packet instead of dropping it.)
 */
static __always_inline int drop_packet(struct __sk_buff *skb, struct packet *p, __u32 reason)
{
	drop_count(skb, p, reason);
	return TC_ACT_SHOT;
}

/*
 * The end of every hook: a TC action passes through, -DROP_* is dropped by
 * drop_packet(), except -DROP_FRAG_NEEDED: deliver() turned that packet into
 * the ICMP "fragmentation needed" answer for its sender (overlay.h), which is
 * counted like a drop and sent back into the workload behind the port.
 */
static __always_inline int hook_exit(struct __sk_buff *skb, struct packet *p, int ret)
{
	if (ret >= 0)
		return ret;
	if (ret == -DROP_FRAG_NEEDED) {
		drop_count(skb, p, DROP_FRAG_NEEDED);
		return bpf_redirect_peer(p->ifindex, 0);
	}
	return drop_packet(skb, p, -ret);
}

#endif /* PALISADE_DROP_H */
