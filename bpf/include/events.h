/* SPDX-License-Identifier: Apache-2.0 */
/*
 * events.h - the one output path for flow events.
 *
 *   event_emit()        - one struct flow_event into the EVENTS ring buffer;
 *                         when the ring is full the event is counted in
 *                         STATS[STAT_EVENTS_LOST] instead.
 *   event_ratelimited() - at most one event per (flow, type, reason, side) per
 *                         CONFIG.event_interval_ms; the next event emitted
 *                         carries how many were suppressed in between.
 *   event_conn()        - CONN_CLOSED / CONN_CUT from a conntrack entry, with
 *                         the originator's tuple and the final counters.
 */
#ifndef PALISADE_EVENTS_H
#define PALISADE_EVENTS_H

#include "packet.h"

static __always_inline void stat_inc(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&STATS, &slot);

	if (v)
		*v += 1;
}

static __always_inline struct flow_event *event_reserve(struct packet *p, __u8 type, __u16 reason)
{
	struct flow_event *e = bpf_ringbuf_reserve(&EVENTS, sizeof(*e), 0);

	if (!e) {
		stat_inc(STAT_EVENTS_LOST);
		return NULL;
	}
	e->version = EVENT_VERSION;
	e->type = type;
	e->hook = p->hook;
	e->proto = p->proto;
	e->drop_reason = reason;
	e->side = p->side;
	e->flags = p->rule_flags;
	e->tenant = p->tenant;
	e->src_identity = p->src_identity;
	e->dst_identity = p->dst_identity;
	e->saddr = p->saddr;
	e->daddr = p->daddr;
	e->sport = p->sport;
	e->dport = p->dport;
	e->ifindex = p->ifindex;
	e->egress_cookie = p->egress_cookie;
	e->ingress_cookie = p->ingress_cookie;
	e->audit_cookie = p->audit_cookie;
	e->suppressed = 0;
	e->pad = 0;
	e->timestamp_ns = p->now;
	e->packets_fwd = 0;
	e->bytes_fwd = 0;
	e->packets_rev = 0;
	e->bytes_rev = 0;
	return e;
}

static __always_inline void event_emit(struct packet *p, __u8 type, __u16 reason, __u32 suppressed)
{
	struct flow_event *e = event_reserve(p, type, reason);

	if (!e)
		return;
	e->suppressed = suppressed;
	bpf_ringbuf_submit(e, 0);
}

/*
 * Emits unless an event with the same key went out less than the configured
 * interval ago; then only counts it. Keyed by flow, type, reason and side, so a
 * flood of one denied flow costs one event per interval and does not hide
 * the events of other flows.
 */
static __always_inline void event_ratelimited(struct packet *p, __u8 type, __u8 reason)
{
	struct ratelimit_key key = {
		.tenant = p->tenant,
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.type = type,
		.reason = reason,
		.side = p->side,
		.ifindex = p->ifindex,
	};
	__u64 interval = p->cfg ? (__u64)p->cfg->event_interval_ms * NSEC_PER_MSEC : 0;
	struct ratelimit_value *v;
	__u32 suppressed;

	v = bpf_map_lookup_elem(&RATELIMIT, &key);
	if (!v) {
		struct ratelimit_value fresh = { .last_ns = p->now };

		bpf_map_update_elem(&RATELIMIT, &key, &fresh, BPF_ANY);
		event_emit(p, type, reason, 0);
		return;
	}
	/* last_ns may be ahead of our clock read when another CPU just emitted. */
	if (interval && (v->last_ns >= p->now || p->now - v->last_ns < interval)) {
		__sync_fetch_and_add(&v->suppressed, 1);
		return;
	}
	v->last_ns = p->now;
	suppressed = __sync_lock_test_and_set(&v->suppressed, 0);
	event_emit(p, type, reason, suppressed);
}

/* A connection event: the originator's tuple and the connection's counters. */
static __always_inline void event_conn(struct packet *p, __u8 type, __u16 reason,
				       const struct ct_key *key, const struct ct_entry *ct)
{
	struct flow_event *e = event_reserve(p, type, reason);

	if (!e)
		return;
	e->proto = key->proto;
	e->saddr = key->saddr;
	e->daddr = key->daddr;
	e->sport = key->sport;
	e->dport = key->dport;
	/* CONN_CUT keeps the identities and deciding rule of the re-decision in p. */
	if (type == EVENT_CONN_CLOSED) {
		e->src_identity = ct->src_identity;
		e->dst_identity = ct->dst_identity;
		e->egress_cookie = ct->egress_cookie;
		e->ingress_cookie = ct->ingress_cookie;
	}
	e->packets_fwd = ct->packets_fwd;
	e->bytes_fwd = ct->bytes_fwd;
	e->packets_rev = ct->packets_rev;
	e->bytes_rev = ct->bytes_rev;
	bpf_ringbuf_submit(e, 0);
}

#endif /* PALISADE_EVENTS_H */
