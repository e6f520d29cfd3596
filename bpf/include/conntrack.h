/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conntrack.h - connection tracking in the CT map.
 *
 * One entry per connection, keyed by the tuple of its first packet (the
 * originator's direction). ct_lookup() tries the packet's tuple, then the
 * reversed one: a hit is "forward" (originator -> responder) or "reverse"
 * (a reply). Entries idle longer than their timeout (by protocol and TCP
 * state, CONFIG.ct_*_ms) are treated as absent; the agent's ct_gc deletes
 * them. A TCP SYN on a CLOSED entry starts a new connection on the tuple.
 *
 * TCP states: SYN_SENT (SYN from the originator), SYN_RECV (SYN+ACK back),
 * ESTABLISHED (ACK from the originator; also a connection picked up
 * mid-stream, e.g. after LRU eviction), FIN_WAIT (FIN from one side), CLOSED
 * (FIN from both sides, or RST) - the moment an entry becomes CLOSED a
 * CONN_CLOSED event is emitted once. UDP, ICMP and other protocols stay
 * ESTABLISHED until they expire.
 *
 * Revocation: an entry records CONFIG.policy_revision at admission. On a hit
 * with another revision, or when the identities resolved for the packet are
 * no longer those recorded (an address or port now belongs to another
 * identity), ct_revalidate() re-runs the policy decision of the original
 * direction (identities as they are now): still allowed -> record the new
 * revision, identities and rules; denied -> CONN_CUT event, entry deleted,
 * packet dropped with POLICY_REVOKED.
 *
 * Each entry also caches where each direction is delivered (struct ct_route,
 * deliver.h), so established packets need no IPCACHE or ENDPOINTS lookup.
 */
#ifndef PALISADE_CONNTRACK_H
#define PALISADE_CONNTRACK_H

#include "packet.h"
#include "drop.h"
#include "policy.h"
#include "deliver.h"

enum ct_dir {
	CT_DIR_FWD = 0,
	CT_DIR_REV = 1,
};

static __always_inline __u64 ct_timeout_ns(const struct config *cfg, __u8 proto, __u8 state)
{
	__u32 ms;

	if (!cfg)
		return 0;
	if (proto == IPPROTO_TCP) {
		switch (state) {
		case CT_ESTABLISHED:
			ms = cfg->ct_tcp_established_ms;
			break;
		case CT_FIN_WAIT:
			ms = cfg->ct_tcp_fin_ms;
			break;
		case CT_CLOSED:
			ms = cfg->ct_tcp_close_ms;
			break;
		default:
			ms = cfg->ct_tcp_syn_ms;
			break;
		}
	} else if (proto == IPPROTO_UDP) {
		ms = cfg->ct_udp_ms;
	} else if (proto == IPPROTO_ICMP) {
		ms = cfg->ct_icmp_ms;
	} else {
		ms = cfg->ct_other_ms;
	}
	return (__u64)ms * NSEC_PER_MSEC;
}

static __always_inline int ct_live(const struct packet *p, const struct ct_entry *ct, __u8 proto)
{
	__u64 timeout = ct_timeout_ns(p->cfg, proto, ct->state);

	if (!timeout)
		return 0;
	/* last_seen may be ahead of our clock read when another CPU just updated it. */
	if (ct->last_seen_ns >= p->now)
		return 1;
	return p->now - ct->last_seen_ns < timeout;
}

static __always_inline void ct_key_reverse(struct ct_key *key)
{
	__be32 addr = key->saddr;
	__be16 port = key->sport;

	key->saddr = key->daddr;
	key->daddr = addr;
	key->sport = key->dport;
	key->dport = port;
}

/*
 * Finds the live entry of `key` in either direction. On a reverse hit `key`
 * is left reversed, i.e. it always ends as the entry's (originator's) key.
 */
static __always_inline struct ct_entry *ct_find(const struct packet *p, struct ct_key *key, __u8 *dir)
{
	struct ct_entry *ct = bpf_map_lookup_elem(&CT, key);

	if (ct && ct_live(p, ct, key->proto)) {
		*dir = CT_DIR_FWD;
		return ct;
	}
	ct_key_reverse(key);
	ct = bpf_map_lookup_elem(&CT, key);
	if (ct && ct_live(p, ct, key->proto)) {
		*dir = CT_DIR_REV;
		return ct;
	}
	ct_key_reverse(key);
	return NULL;
}

/* The connection of the packet; on a miss `key` is the packet's own tuple. */
static __always_inline struct ct_entry *ct_lookup(const struct packet *p, struct ct_key *key, __u8 *dir)
{
	struct ct_entry *ct;

	__builtin_memset(key, 0, sizeof(*key));
	key->tenant = p->tenant;
	key->saddr = p->saddr;
	key->daddr = p->daddr;
	key->sport = p->sport;
	key->dport = p->dport;
	key->proto = p->proto;
	ct = ct_find(p, key, dir);
	/* A new SYN on a closed connection re-opens the tuple: decide it anew. */
	if (ct && *dir == CT_DIR_FWD && ct->state == CT_CLOSED &&
	    (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		return NULL;
	return ct;
}

/* An ICMP error is related when it reaches the sender of a tracked flow. */
static __always_inline int ct_related(const struct packet *p)
{
	struct ct_key key = p->inner;
	__u8 dir;

	key.tenant = p->tenant;
	if (p->inner.saddr != p->daddr || !ct_find(p, &key, &dir))
		return -DROP_ICMP_UNRELATED;
	return 0;
}

/* Counters, last-seen and TCP state; returns 1 when the connection just closed. */
static __always_inline int ct_update(const struct packet *p, struct ct_entry *ct, __u8 dir)
{
	__u8 flags = p->tcp_flags;

	ct->last_seen_ns = p->now;
	if (dir == CT_DIR_FWD) {
		__sync_fetch_and_add(&ct->packets_fwd, 1);
		__sync_fetch_and_add(&ct->bytes_fwd, p->len);
	} else {
		__sync_fetch_and_add(&ct->packets_rev, 1);
		__sync_fetch_and_add(&ct->bytes_rev, p->len);
		if (!(ct->flags & CT_F_SEEN_REPLY))
			ct->flags |= CT_F_SEEN_REPLY;
	}
	if (p->proto != IPPROTO_TCP)
		return 0;

	if (flags & TCP_FLAG_RST) {
		ct->state = CT_CLOSED;
	} else if (flags & TCP_FLAG_FIN) {
		ct->flags |= dir == CT_DIR_FWD ? CT_F_FIN_FWD : CT_F_FIN_REV;
		if ((ct->flags & (CT_F_FIN_FWD | CT_F_FIN_REV)) == (CT_F_FIN_FWD | CT_F_FIN_REV))
			ct->state = CT_CLOSED;
		else if (ct->state != CT_CLOSED)
			ct->state = CT_FIN_WAIT;
	} else if (ct->state == CT_SYN_SENT && dir == CT_DIR_REV &&
		   (flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK)) {
		ct->state = CT_SYN_RECV;
	} else if (ct->state == CT_SYN_RECV && dir == CT_DIR_FWD &&
		   (flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_ACK) {
		ct->state = CT_ESTABLISHED;
	}
	if (ct->state == CT_CLOSED && !(ct->flags & CT_F_CLOSE_REPORTED)) {
		ct->flags |= CT_F_CLOSE_REPORTED;
		return 1;
	}
	return 0;
}

/* The connection's identities and rules, oriented as the packet travels. */
static __always_inline void ct_load_identities(struct packet *p, const struct ct_entry *ct, __u8 dir)
{
	p->src_identity = dir == CT_DIR_FWD ? ct->src_identity : ct->dst_identity;
	p->dst_identity = dir == CT_DIR_FWD ? ct->dst_identity : ct->src_identity;
	p->egress_cookie = ct->egress_cookie;
	p->ingress_cookie = ct->ingress_cookie;
}

/* Whether the identities p resolved are those the connection was decided for. */
static __always_inline int ct_same_identities(const struct packet *p, const struct ct_entry *ct, __u8 dir)
{
	if (dir == CT_DIR_FWD)
		return p->src_identity == ct->src_identity && p->dst_identity == ct->dst_identity;
	return p->src_identity == ct->dst_identity && p->dst_identity == ct->src_identity;
}

/*
 * Records the first packet of an admitted connection under the packet's
 * tuple, with the delivery resolved for it in `m` as the forward route.
 */
static __always_inline int ct_create(const struct packet *p, const struct ct_key *key,
				     const struct verdict_meta *m)
{
	struct ct_entry ct;

	__builtin_memset(&ct, 0, sizeof(ct));
	ct.state = CT_ESTABLISHED;
	if (p->proto == IPPROTO_TCP) {
		/* A lone RST ends whatever it belonged to: nothing to track. */
		if (p->tcp_flags & TCP_FLAG_RST)
			return 0;
		if ((p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
			ct.state = CT_SYN_SENT;
		if (p->tcp_flags & TCP_FLAG_FIN) {
			ct.state = CT_FIN_WAIT;
			ct.flags |= CT_F_FIN_FWD;
		}
	}
	ct.created_ns = p->now;
	ct.last_seen_ns = p->now;
	ct.packets_fwd = 1;
	ct.bytes_fwd = p->len;
	ct.revision = p->revision;
	ct.src_identity = p->src_identity;
	ct.dst_identity = p->dst_identity;
	ct.egress_cookie = p->egress_cookie;
	ct.ingress_cookie = p->ingress_cookie;
	ct.ifindex = p->ifindex;
	ct.policy_port = p->policy_port;
	ct.hook = p->hook;
	if (is_endpoint(p->src_flags))
		ct.flags |= CT_F_SRC_ENDPOINT;
	if (is_endpoint(p->dst_flags))
		ct.flags |= CT_F_DST_ENDPOINT;
	route_fill(p, &ct.route_fwd, m);
	ct.route_fwd.gen = p->route_gen;
	if (bpf_map_update_elem(&CT, key, &ct, BPF_ANY)) {
		stat_inc(STAT_CT_CREATE_FAILED);
		return -DROP_CT_CREATE_FAILED;
	}
	return 0;
}

/* Turns p into the view of the connection's original direction and back. */
static __always_inline void packet_swap(struct packet *p)
{
	__be32 addr = p->saddr;
	__be16 port = p->sport;
	__u32 v = p->src_identity;

	p->saddr = p->daddr;
	p->daddr = addr;
	p->sport = p->dport;
	p->dport = port;
	p->src_identity = p->dst_identity;
	p->dst_identity = v;
	v = p->src_flags;
	p->src_flags = p->dst_flags;
	p->dst_flags = v;
}

/* Re-decides a connection admitted under an older policy revision. */
static __always_inline int ct_revalidate(struct packet *p, const struct ct_key *key, struct ct_entry *ct, __u8 dir)
{
	__be16 port = p->policy_port;
	int ret;

	if (dir == CT_DIR_REV)
		packet_swap(p);
	p->policy_port = ct->policy_port;
	ret = policy_decide(p);
	p->policy_port = port;
	if (ret < 0) {
		event_conn(p, EVENT_CONN_CUT, DROP_POLICY_REVOKED, key, ct);
		bpf_map_delete_elem(&CT, key);
		ret = -DROP_POLICY_REVOKED;
	} else {
		ct->revision = p->revision;
		ct->src_identity = p->src_identity;
		ct->dst_identity = p->dst_identity;
		ct->egress_cookie = p->egress_cookie;
		ct->ingress_cookie = p->ingress_cookie;
	}
	if (dir == CT_DIR_REV)
		packet_swap(p);
	return ret;
}

#endif /* PALISADE_CONNTRACK_H */
