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
 * Functions return -DROP_* up the call chain; the hook's entry point hands a
 * negative result to drop_packet(), which counts the drop and emits a
 * rate-limited DENIED event. Nothing else returns TC_ACT_SHOT.
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
	DROP_REMOTE_UNSUPPORTED = 18, /* destination on another node (until the overlay issue) */
	DROP_NO_ROUTE = 19,           /* world-bound but the tenant has no uplink, or stale IPCACHE */
	DROP_UNKNOWN_UPLINK = 20,     /* no UPLINKS entry for the interface */
	DROP_NOT_LOCAL_DESTINATION = 21, /* destination is not the local endpoint this path serves */
	DROP_TENANT_MISMATCH = 22,    /* tables point to an endpoint of another tenant */
	DROP_CT_CREATE_FAILED = 23,   /* the conntrack entry could not be created */
	DROP_BAD_META = 24,           /* the delivery program found no valid verdict metadata */
};

#include "events.h"

/*
 * The one exit point for drops: count the packet by reason and emit a DENIED
 * event (rate-limited per flow, carrying the suppressed count). `reason` is
 * positive here (callers pass -ret).
 */
static __always_inline int drop_packet(struct __sk_buff *skb, struct packet *p, __u32 reason)
{
	__u32 slot = reason < DROP_REASON_SLOTS ? reason : 0;
	struct counter *c = bpf_map_lookup_elem(&DROP_COUNTERS, &slot);

	if (c) {
		c->packets += 1;
		c->bytes += skb->len;
	}
	event_ratelimited(p, EVENT_DENIED, reason);
	return TC_ACT_SHOT;
}

#endif /* PALISADE_DROP_H */
