/* SPDX-License-Identifier: Apache-2.0 */
/*
 * policy.h - the policy decision; the contract with the policy compiler.
 *
 * Policy entries are keyed by struct policy_key (abi.h): (subject, peer,
 * direction, proto) and a port prefix. prefixlen counts the bits after
 * itself: subject 32 + peer 32 + direction 8 + proto 8 = 80, plus 0..16 bits
 * of port prefix (port ranges are stored as prefixes). One side of a flow is
 * decided by four longest-prefix-match steps, first hit wins:
 *
 *   1. (subject, dir, peer, proto, port)  longest port prefix - rules naming the peer and protocol
 *   2. (subject, dir, peer, 0,     0)     prefixlen 80        - rules naming the peer, any protocol
 *   3. (subject, dir, 0,    proto, port)  longest port prefix - rules for any peer on the protocol
 *   4. (subject, dir, 0,    0,     0)     prefixlen 80        - the subject's default for the direction
 *   all miss -> drop NO_POLICY (fail closed).
 *
 * The entries live in two maps so that the cost of a step does not grow with
 * the number of entries (an LPM trie lookup does: ~30 ns at 10 entries, ~125
 * ns at 100k on the test machine, bench/README.md):
 *   - POLICY, a hash: entries of one exact port (prefixlen 96) and of all
 *     ports (prefixlen 80);
 *   - POLICY_RANGES, an LPM trie: port ranges (prefixlen 81..95).
 * A longest-prefix step (1 and 3) is then: the exact port in POLICY (the
 * longest prefix there is); else the group's prefixlen-80 entry in POLICY; if
 * that entry carries POLICY_F_PORT_RANGES, POLICY_RANGES first (a range is
 * longer than /80). A group with ranges but no /80 entry has a placeholder
 * flagged POLICY_F_NO_DECISION, which only points to the ranges. So no group
 * pays for the trie unless it has ranges, and the result is exactly the
 * longest prefix over all entries. The Rust handle (maps.rs, Policy) keeps
 * the flags and placeholders; the compiler's output and its guarantees
 * (crates/palisade-policy/src/tables.rs) are unchanged.
 *
 * port is the L4 destination port, for ICMP type << 8 | code (echo request
 * 8 << 8), 0 for other protocols. The compiler guarantees completeness:
 * every (subject, direction) has its step-4 entry, and once a (peer, proto)
 * is present its entries cover all ports, so a lookup never falls through to
 * a less specific step by accident. Peer 0 and proto 0 mean "any".
 *
 * A flow S -> D is allowed when the egress side of S (if S is a palisade
 * endpoint) and the ingress side of D (if D is one) both allow; the ingress
 * side of a destination is checked here at the source too. Each node decides
 * the sides it holds: the egress side of S where S runs (a local endpoint),
 * the ingress side of D at both ends. A packet from an endpoint of another
 * node (from_overlay) had its egress side decided by that node; here only
 * D's ingress is decided again (zero trust toward other nodes). A value with
 * POLICY_F_AUDIT_DENY emits a rate-limited AUDIT_WOULD_DENY event naming its
 * audit_cookie and never changes the verdict. RULE_COUNTERS counts every
 * packet decided here by the cookie that decided it.
 */
#ifndef PALISADE_POLICY_H
#define PALISADE_POLICY_H

#include "packet.h"
#include "drop.h"

/* The flags a rule reports (events); the others are the maps' bookkeeping. */
#define POLICY_F_REPORTED (POLICY_F_LOG | POLICY_F_AUDIT_DENY)

/* Steps 2 and 4: the entry of every port of `key`'s (subject, peer, dir, proto). */
static __always_inline const struct policy_value *policy_all_ports(struct policy_key *key)
{
	const struct policy_value *v;

	key->prefixlen = 80;
	key->port = 0;
	v = bpf_map_lookup_elem(&POLICY, key);
	if (v && (v->flags & POLICY_F_NO_DECISION))
		return NULL;
	return v;
}

/* Steps 1 and 3: the longest port prefix of `key` (see the top of this file). */
static __always_inline const struct policy_value *policy_longest(struct policy_key *key)
{
	const struct policy_value *v, *range;
	__be16 port = key->port;

	key->prefixlen = 96;
	v = bpf_map_lookup_elem(&POLICY, key);
	if (v)
		return v;
	key->prefixlen = 80;
	key->port = 0;
	v = bpf_map_lookup_elem(&POLICY, key);
	if (!v)
		return NULL;
	if (v->flags & POLICY_F_PORT_RANGES) {
		key->prefixlen = 96;
		key->port = port;
		range = bpf_map_lookup_elem(&POLICY_RANGES, key);
		if (range)
			return range;
	}
	if (v->flags & POLICY_F_NO_DECISION)
		return NULL;
	return v;
}

static __always_inline const struct policy_value *
policy_lookup(__u32 subject, __u8 dir, __u32 peer, __u8 proto, __be16 port)
{
	struct policy_key key = {
		.subject = subject,
		.peer = peer,
		.direction = dir,
		.proto = proto,
		.port = port,
	};
	const struct policy_value *v;

	v = policy_longest(&key);
	if (v)
		return v;
	key.proto = 0;
	v = policy_all_ports(&key);
	if (v)
		return v;
	key.peer = 0;
	key.proto = proto;
	key.port = port;
	v = policy_longest(&key);
	if (v)
		return v;
	key.proto = 0;
	return policy_all_ports(&key);
}

static __always_inline void rule_count(__u32 cookie, __u32 len)
{
	struct counter *c;

	if (!cookie)
		return;
	c = bpf_map_lookup_elem(&RULE_COUNTERS, &cookie);
	if (c) {
		c->packets += 1;
		c->bytes += len;
		return;
	}
	struct counter first = { .packets = 1, .bytes = len };

	bpf_map_update_elem(&RULE_COUNTERS, &cookie, &first, BPF_NOEXIST);
}

/* One side: `subject`'s policy in direction `dir` toward `peer`. */
static __always_inline int policy_side(struct packet *p, __u32 subject, __u8 dir, __u32 peer, __u32 *cookie)
{
	const struct policy_value *v = policy_lookup(subject, dir, peer, p->proto, p->policy_port);

	p->side = dir;
	if (!v)
		return -DROP_NO_POLICY;
	*cookie = v->cookie;
	p->rule_flags |= v->flags & POLICY_F_REPORTED;
	rule_count(v->cookie, p->len);
	if (v->flags & POLICY_F_AUDIT_DENY) {
		p->audit_cookie = v->audit_cookie;
		event_ratelimited(p, EVENT_AUDIT_WOULD_DENY, 0);
	}
	if (v->verdict != VERDICT_ALLOW)
		return -DROP_POLICY_DENIED;
	return 0;
}

/*
 * Decides p's flow (p->src_identity -> p->dst_identity on p->proto and
 * p->policy_port). On return p->egress_cookie / p->ingress_cookie hold the
 * deciding rules and, on a denial, p->side the side that denied.
 */
static __always_inline int policy_decide(struct packet *p)
{
	int ret;

	p->egress_cookie = 0;
	p->ingress_cookie = 0;
	p->audit_cookie = 0;
	p->rule_flags = 0;
	if (p->src_flags & IPCACHE_F_LOCAL_ENDPOINT) {
		ret = policy_side(p, p->src_identity, POLICY_EGRESS, p->dst_identity, &p->egress_cookie);
		if (ret < 0)
			return ret;
	}
	if (is_endpoint(p->dst_flags)) {
		ret = policy_side(p, p->dst_identity, POLICY_INGRESS, p->src_identity, &p->ingress_cookie);
		if (ret < 0)
			return ret;
	}
	p->side = 0;
	return 0;
}

#endif /* PALISADE_POLICY_H */
