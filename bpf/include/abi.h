/* SPDX-License-Identifier: Apache-2.0 */
/*
 * abi.h - every layout shared between the BPF programs and user space.
 *
 * This is the one place where map keys, map values, the event record and the
 * verdict metadata handed to chained stages are defined. The Rust mirror is
 * crates/palisade-datapath/src/abi.rs. Both sides assert sizes and offsets
 * (_Static_assert here, const asserts there), and a test compares the Rust
 * mirror with the BTF of the compiled objects, so a drift fails a build or a
 * test instead of corrupting a map.
 *
 * Rules for editing:
 *   - fields keep natural alignment and padding is spelled out as `pad`
 *     fields, so user space never reads uninitialised bytes;
 *   - network-order fields are __be16/__be32 (byte arrays on the Rust side);
 *   - a change to a pinned map's key or value size makes Datapath::open
 *     refuse the old pins with a clear error: bump PALISADE_ABI_VERSION and
 *     say so in the release notes.
 */
#ifndef PALISADE_ABI_H
#define PALISADE_ABI_H

#include <linux/types.h>

#define PALISADE_ABI_VERSION 3

/* Version stamped in every flow_event; user space rejects other versions. */
#define EVENT_VERSION 1

/* Sizes of the fixed tables. */
enum abi_limits {
	DROP_REASON_SLOTS = 64, /* entries of DROP_COUNTERS (drop_reason < this) */
	STAT_SLOTS = 8,         /* entries of STATS */
	CHAIN_SLOTS = 8,        /* entries of the CHAIN program array */
	ENDPOINT_INDEX_SLOTS = 16384, /* entries of ENDPOINT_INDEX (a power of two) */
};

/* ---- ENDPOINTS: hash, key = __u32 ifindex of the host-side port ---------- */

struct endpoint {
	__u32 identity;   /* identity of the workload (tenant_index << 16 | local) */
	__u32 tenant;     /* tenant index */
	__u32 flags;      /* reserved, 0 */
	__be32 ipv4;      /* primary IPv4 address (also in IPCACHE); 0 = none */
	__u8 mac[6];      /* the workload's own MAC (its eth0) */
	__u8 host_mac[6]; /* MAC of the host-side port (the workload's gateway) */
};
_Static_assert(sizeof(struct endpoint) == 28, "endpoint size");
_Static_assert(__builtin_offsetof(struct endpoint, ipv4) == 12, "endpoint.ipv4");
_Static_assert(__builtin_offsetof(struct endpoint, mac) == 16, "endpoint.mac");
_Static_assert(__builtin_offsetof(struct endpoint, host_mac) == 22, "endpoint.host_mac");

/*
 * ---- ENDPOINT_INDEX: array, an index of ENDPOINTS -------------------------
 *
 * Slot ifindex & (ENDPOINT_INDEX_SLOTS - 1) holds a copy of ENDPOINTS[ifindex], so
 * that the datapath reads an endpoint with an inlined array access instead
 * of a hash lookup (a helper call). Written by user space through a shared
 * mapping (BPF_F_MMAPABLE) as a sequence lock: `seq` is odd while a writer
 * changes the slot; a reader copies the slot, checks `seq` was even and
 * unchanged and `ifindex` is the port it wants, and otherwise looks in
 * ENDPOINTS (two ports on one slot, or a write in progress).
 */
struct endpoint_slot {
	__u32 seq;     /* even: stable; odd: being written */
	__u32 ifindex; /* the port whose endpoint this is; 0 = empty */
	struct endpoint ep;
	__u32 pad;     /* to 8 bytes: the array's element stride */
};
_Static_assert(sizeof(struct endpoint_slot) == 40, "endpoint_slot size");
_Static_assert(__builtin_offsetof(struct endpoint_slot, ep) == 8, "endpoint_slot.ep");

/* ---- IPCACHE: LPM trie (tenant, IPv4 prefix) -> identity ----------------- */

struct ipcache_key {
	__u32 prefixlen; /* bits after this field: 32 (tenant) + prefix length */
	__u32 tenant;
	__be32 addr;
};
_Static_assert(sizeof(struct ipcache_key) == 12, "ipcache_key size");
_Static_assert(__builtin_offsetof(struct ipcache_key, tenant) == 4, "ipcache_key.tenant");
_Static_assert(__builtin_offsetof(struct ipcache_key, addr) == 8, "ipcache_key.addr");

enum ipcache_flags {
	IPCACHE_F_LOCAL_ENDPOINT = 1 << 0,  /* endpoint on this node, `ifindex` is its port */
	IPCACHE_F_REMOTE_ENDPOINT = 1 << 1, /* endpoint on another node, `node_ipv4` */
	IPCACHE_F_HOST = 1 << 2,            /* this node's own stack */
	IPCACHE_F_WORLD = 1 << 3,           /* outside palisade (world or a CIDR identity) */
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;      /* enum ipcache_flags */
	__u32 ifindex;    /* IPCACHE_F_LOCAL_ENDPOINT: host-side port */
	__be32 node_ipv4; /* IPCACHE_F_REMOTE_ENDPOINT: node hosting it */
};
_Static_assert(sizeof(struct ipcache_value) == 16, "ipcache_value size");

/*
 * ---- POLICY (hash) and POLICY_RANGES (LPM trie), see policy.h ------------
 *
 * Both maps use struct policy_key. POLICY holds the entries of one exact
 * port (prefixlen 96) and those of every port (prefixlen 80); POLICY_RANGES
 * holds the port ranges (prefixlen 81..95). The Rust handle (maps.rs, Policy)
 * puts each entry where it belongs and keeps the internal flags below.
 */

enum policy_direction {
	POLICY_INGRESS = 1,
	POLICY_EGRESS = 2,
};

struct policy_key {
	__u32 prefixlen; /* 80 (subject+peer+direction+proto) + 0..16 port bits */
	__u32 subject;   /* identity whose policy this is */
	__u32 peer;      /* identity on the other side, 0 = any peer */
	__u8 direction;  /* enum policy_direction */
	__u8 proto;      /* IPPROTO_*, 0 = any protocol */
	__be16 port;     /* L4 destination port; ICMP: type << 8 | code */
};
_Static_assert(sizeof(struct policy_key) == 16, "policy_key size");
_Static_assert(__builtin_offsetof(struct policy_key, subject) == 4, "policy_key.subject");
_Static_assert(__builtin_offsetof(struct policy_key, peer) == 8, "policy_key.peer");
_Static_assert(__builtin_offsetof(struct policy_key, direction) == 12, "policy_key.direction");
_Static_assert(__builtin_offsetof(struct policy_key, proto) == 13, "policy_key.proto");
_Static_assert(__builtin_offsetof(struct policy_key, port) == 14, "policy_key.port");

enum policy_verdict {
	VERDICT_DENY = 0, /* zero: a zeroed value fails closed */
	VERDICT_ALLOW = 1,
};

enum policy_flags {
	POLICY_F_LOG = 1 << 0,        /* the rule asks for its flows to be logged */
	POLICY_F_AUDIT_DENY = 1 << 1, /* an audit-mode rule would deny: report audit_cookie */
	/* Internal, kept by the loader on prefixlen-80 entries of POLICY, never reported: */
	POLICY_F_PORT_RANGES = 1 << 6, /* POLICY_RANGES has entries for this (subject, peer, dir, proto) */
	POLICY_F_NO_DECISION = 1 << 7, /* placeholder carrying PORT_RANGES only: not an entry */
};

struct policy_value {
	__u8 verdict; /* enum policy_verdict */
	__u8 flags;   /* enum policy_flags */
	__u16 pad;
	__u32 cookie;       /* the rule that decided (attribution) */
	__u32 audit_cookie; /* POLICY_F_AUDIT_DENY: the audit rule that would deny */
};
_Static_assert(sizeof(struct policy_value) == 12, "policy_value size");

/* ---- CT: LRU hash, one entry per connection keyed by its first packet ---- */

struct ct_key {
	__u32 tenant;
	__be32 saddr;
	__be32 daddr;
	__be16 sport; /* ICMP echo request: the echo id (dport 0) */
	__be16 dport; /* ICMP echo reply: the echo id (sport 0) */
	__u8 proto;
	__u8 pad[3];
};
_Static_assert(sizeof(struct ct_key) == 20, "ct_key size");
_Static_assert(__builtin_offsetof(struct ct_key, saddr) == 4, "ct_key.saddr");
_Static_assert(__builtin_offsetof(struct ct_key, sport) == 12, "ct_key.sport");
_Static_assert(__builtin_offsetof(struct ct_key, proto) == 16, "ct_key.proto");

enum ct_state {
	CT_SYN_SENT = 1,
	CT_SYN_RECV = 2,
	CT_ESTABLISHED = 3, /* also the only state of UDP, ICMP and other protocols */
	CT_FIN_WAIT = 4,
	CT_CLOSED = 5, /* FIN seen both ways, or RST */
};

/*
 * Where one direction of a connection is delivered, cached at its first
 * packet so that established packets skip the IPCACHE, ENDPOINTS and TENANTS
 * lookups. Valid only while `gen` equals ROUTE_GEN[0] (bumped by the Rust map
 * handles after every write to those tables and UPLINKS) and for packets on the same
 * interface and hook; deliver.h documents the update protocol.
 */
enum route_gen_value {
	ROUTE_GEN_UNRESOLVED = 0, /* ct_route.gen: never resolved */
	ROUTE_GEN_BUSY = 1,       /* ct_route.gen: being rewritten by one CPU */
	ROUTE_GEN_FIRST = 2,      /* ROUTE_GEN[0] counts from here and skips 0 and 1 */
};

struct ct_route {
	__u32 gen;            /* ROUTE_GEN[0] the route was resolved under, or enum route_gen_value */
	__u32 in_ifindex;     /* interface the packets of this direction arrive on */
	__u32 target_ifindex; /* verdict_meta.target_ifindex */
	__be32 nexthop;       /* verdict_meta.nexthop; HOOK_FROM_OVERLAY: the node they must come from */
	__u8 src_mac[6];      /* verdict_meta.src_mac */
	__u8 dst_mac[6];      /* verdict_meta.dst_mac */
	__u8 hook;            /* enum hook the packets of this direction run in */
	__u8 action;          /* enum deliver_action */
	__u8 pad[2];
	__u32 vni;            /* DELIVER_TUNNEL: VNI to send with; HOOK_FROM_OVERLAY: VNI they must carry */
};
_Static_assert(sizeof(struct ct_route) == 36, "ct_route size");
_Static_assert(__builtin_offsetof(struct ct_route, target_ifindex) == 8, "ct_route.target_ifindex");
_Static_assert(__builtin_offsetof(struct ct_route, src_mac) == 16, "ct_route.src_mac");
_Static_assert(__builtin_offsetof(struct ct_route, hook) == 28, "ct_route.hook");
_Static_assert(__builtin_offsetof(struct ct_route, vni) == 32, "ct_route.vni");

enum ct_flags {
	CT_F_SRC_ENDPOINT = 1 << 0, /* originator is a palisade endpoint (egress side applies) */
	CT_F_DST_ENDPOINT = 1 << 1, /* responder is a palisade endpoint (ingress side applies) */
	CT_F_FIN_FWD = 1 << 2,      /* FIN seen from the originator */
	CT_F_FIN_REV = 1 << 3,      /* FIN seen from the responder */
	CT_F_SEEN_REPLY = 1 << 4,   /* at least one reply packet */
	CT_F_CLOSE_REPORTED = 1 << 5, /* a CONN_CLOSED event was emitted */
};

struct ct_entry {
	__u64 created_ns;   /* datapath clock (CLOCK_MONOTONIC, tick resolution) */
	__u64 last_seen_ns;
	__u64 packets_fwd;  /* originator -> responder */
	__u64 bytes_fwd;
	__u64 packets_rev;  /* responder -> originator */
	__u64 bytes_rev;
	__u32 revision;     /* CONFIG.policy_revision the connection was admitted under */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 egress_cookie;  /* rule of the originator's egress side, 0 if none */
	__u32 ingress_cookie; /* rule of the responder's ingress side, 0 if none */
	__u32 ifindex;        /* interface of the hook that admitted it */
	__be16 policy_port;   /* port used by the policy decision (ICMP: type << 8 | code) */
	__u8 state;           /* enum ct_state */
	__u8 flags;           /* enum ct_flags */
	__u8 hook;            /* enum hook that admitted it */
	__u8 pad[3];
	struct ct_route route_fwd; /* delivery of originator -> responder packets */
	struct ct_route route_rev; /* delivery of replies */
};
_Static_assert(sizeof(struct ct_entry) == 152, "ct_entry size");
_Static_assert(__builtin_offsetof(struct ct_entry, revision) == 48, "ct_entry.revision");
_Static_assert(__builtin_offsetof(struct ct_entry, policy_port) == 72, "ct_entry.policy_port");
_Static_assert(__builtin_offsetof(struct ct_entry, route_fwd) == 80, "ct_entry.route_fwd");
_Static_assert(__builtin_offsetof(struct ct_entry, route_rev) == 116, "ct_entry.route_rev");

/* ---- TENANTS (key = tenant index) and UPLINKS (key = uplink ifindex) ----- */

struct tenant_info {
	__u32 uplink_ifindex; /* 0 = no uplink: world-bound traffic is dropped (NO_ROUTE) */
	__be32 nexthop;       /* IPv4 next hop on the uplink, resolved by the kernel */
	__u32 vni;            /* VXLAN VNI of the tenant on the overlay (1..2^24-1; 0 = none) */
	__u32 flags;          /* reserved, 0 */
};
_Static_assert(sizeof(struct tenant_info) == 16, "tenant_info size");

/*
 * ---- VNIS: hash, key = __u32 VNI -> the tenant it names on this node ------
 *
 * The reverse of TENANTS[*].vni, kept in step by the Rust Tenants handle:
 * from_overlay reads the tenant of a received packet from its VNI (tenant
 * indexes are local numbers, the VNI is what every node agrees on).
 */
struct vni_info {
	__u32 tenant; /* tenant index on this node */
	__u32 flags;  /* reserved, 0 */
};
_Static_assert(sizeof(struct vni_info) == 8, "vni_info size");

/* The VXLAN Group Policy option as bpf_skb_{set,get}_tunnel_opt exchange it
 * with a VXLAN device created with `external gbp` (the kernel's struct
 * vxlan_metadata): the low 16 bits are the group policy id, which palisade
 * fills with the local part of the source identity; bits above are the
 * kernel's flags (don't learn, policy applied) and are ignored. */
struct vxlan_gbp_opt {
	__u32 gbp;
};
_Static_assert(sizeof(struct vxlan_gbp_opt) == 4, "vxlan_gbp_opt size");

struct uplink_info {
	__u32 tenant;
	__u32 flags; /* reserved, 0 */
};
_Static_assert(sizeof(struct uplink_info) == 8, "uplink_info size");

/* ---- CONFIG: array of one entry, written by the agent --------------------- */

struct config {
	__u32 policy_revision; /* bumped by the agent on every policy change */
	__u32 flags;           /* reserved, 0 */
	/* Conntrack idle timeouts in milliseconds; 0 expires at once. */
	__u32 ct_tcp_syn_ms;
	__u32 ct_tcp_established_ms;
	__u32 ct_tcp_fin_ms;
	__u32 ct_tcp_close_ms;
	__u32 ct_udp_ms;
	__u32 ct_icmp_ms;
	__u32 ct_other_ms;
	__u32 event_interval_ms; /* at most one rate-limited event per flow per interval */
	/* The overlay (bpf/README.md, "Overlay"), written through the Rust ConfigMap handle: */
	__u32 overlay_ifindex;  /* the node's VXLAN device (external, gbp); 0 = none: remote destinations drop (NO_TUNNEL) */
	__u32 overlay_mtu;      /* largest inner IPv4 packet the underlay carries (underlay MTU - 50); 0 = no check */
	__be32 underlay_ipv4;   /* this node's underlay address: outer source of what it encapsulates */
	__u32 reserved;
};
_Static_assert(sizeof(struct config) == 56, "config size");
_Static_assert(__builtin_offsetof(struct config, event_interval_ms) == 36, "config.event_interval_ms");
_Static_assert(__builtin_offsetof(struct config, overlay_ifindex) == 40, "config.overlay_ifindex");

/* ---- CLOCK: array of one entry, written by the loader ---------------------- */

/*
 * The datapath's clock: CLOCK_MONOTONIC nanoseconds at tick resolution,
 * computed as jiffies * ns_per_jiffy + offset_ns (u64, wrapping). Reading
 * jiffies is inlined by the verifier, where bpf_ktime_get_ns() is a helper
 * call costing as much as a map lookup; conntrack timeouts and event rates
 * are milliseconds and more, so a tick (1-10 ms) is precise enough. The
 * loader measures HZ and the offset at every open (Datapath::open).
 */
struct clock {
	__u64 offset_ns;    /* CLOCK_MONOTONIC ns minus jiffies * ns_per_jiffy */
	__u32 ns_per_jiffy; /* 1e9 / HZ; 0 = not calibrated */
	__u32 hz;           /* the kernel's tick rate, for reference */
};
_Static_assert(sizeof(struct clock) == 16, "clock size");

/*
 * ---- ROUTE_GEN: array of one __u32, written by the Rust map handles -------
 *
 * A new value (>= ROUTE_GEN_FIRST) after every write to ENDPOINTS, IPCACHE,
 * TENANTS or UPLINKS, so that the routes cached in CT entries (struct
 * ct_route) are resolved again. A tool that writes those maps directly must
 * bump it too.
 */

/* ---- counters -------------------------------------------------------------- */

/* DROP_COUNTERS (per-CPU array by drop reason), RULE_COUNTERS (per-CPU hash by cookie). */
struct counter {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct counter) == 16, "counter size");

/* Slots of STATS (per-CPU array of __u64). */
enum stat_slot {
	STAT_EVENTS_LOST = 0, /* ring buffer full: an event could not be emitted */
	STAT_CT_CREATE_FAILED = 1,
};

/* ---- RATELIMIT: LRU hash, one entry per (flow, event type, reason) -------- */

struct ratelimit_key {
	__u32 tenant;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 type;   /* enum event_type */
	__u8 reason; /* enum drop_reason */
	__u8 side;   /* enum policy_direction */
	__u32 ifindex;
};
_Static_assert(sizeof(struct ratelimit_key) == 24, "ratelimit_key size");

struct ratelimit_value {
	__u64 last_ns;    /* time of the last emitted event */
	__u32 suppressed; /* events not emitted since */
	__u32 pad;
};
_Static_assert(sizeof(struct ratelimit_value) == 16, "ratelimit_value size");

/* ---- EVENTS: ring buffer of struct flow_event ------------------------------ */

enum event_type {
	EVENT_NEW_ALLOWED = 1,      /* first packet of a connection admitted */
	EVENT_DENIED = 2,           /* a packet dropped, drop_reason says why (rate-limited) */
	EVENT_AUDIT_WOULD_DENY = 3, /* an audit rule would deny this flow (rate-limited) */
	EVENT_CONN_CLOSED = 4,      /* TCP FIN both ways or RST; counters are final */
	EVENT_CONN_CUT = 5,         /* policy revoked: connection deleted, packet dropped */
};

enum hook {
	HOOK_FROM_ENDPOINT = 1, /* TC ingress of an endpoint's host-side port */
	HOOK_TO_ENDPOINT = 2,   /* TC egress of an endpoint's host-side port */
	HOOK_FROM_UPLINK = 3,   /* TC ingress of a tenant's uplink */
	HOOK_DELIVER = 4,       /* the delivery program in CHAIN_DELIVER */
	HOOK_FROM_OVERLAY = 5,  /* TC ingress of the node's VXLAN device: packets from other nodes */
};

struct flow_event {
	__u8 version; /* EVENT_VERSION */
	__u8 type;    /* enum event_type */
	__u8 hook;    /* enum hook */
	__u8 proto;
	__u16 drop_reason; /* enum drop_reason, 0 when nothing was dropped */
	__u8 side;         /* enum policy_direction of the deciding side, 0 if none */
	__u8 flags;        /* enum policy_flags of the deciding rule(s) */
	__u32 tenant;
	__u32 src_identity;
	__u32 dst_identity;
	__be32 saddr; /* CONN_CLOSED/CONN_CUT: the originator's tuple */
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 ifindex;
	__u32 egress_cookie;
	__u32 ingress_cookie;
	__u32 audit_cookie;
	__u32 suppressed; /* rate-limited events of this flow not emitted before this one */
	__u32 pad;
	__u64 timestamp_ns; /* datapath clock (CLOCK_MONOTONIC, tick resolution) */
	__u64 packets_fwd;  /* CONN_CLOSED/CONN_CUT: counters of the connection */
	__u64 bytes_fwd;
	__u64 packets_rev;
	__u64 bytes_rev;
};
_Static_assert(sizeof(struct flow_event) == 96, "flow_event size");
_Static_assert(__builtin_offsetof(struct flow_event, tenant) == 8, "flow_event.tenant");
_Static_assert(__builtin_offsetof(struct flow_event, timestamp_ns) == 56, "flow_event.timestamp_ns");

/* ---- CHAIN and META: the contract with chained stages (bpf/README.md) ---- */

enum chain_slot {
	CHAIN_POST_VERDICT = 0, /* optional stage run after an allow verdict */
	CHAIN_DELIVER = 1,      /* the delivery program; a stage finishes by tail-calling it */
};

enum deliver_action {
	DELIVER_LOCAL = 1, /* rewrite MACs, TTL-1, bpf_redirect_peer(target_ifindex) */
	DELIVER_WORLD = 2, /* TTL-1, bpf_redirect_neigh(target_ifindex, nexthop) */
	DELIVER_STACK = 3, /* TC_ACT_OK: continue in the kernel (node stack / workload) */
	DELIVER_TUNNEL = 4, /* TTL-1, tunnel key (nexthop, vni) + GBP, bpf_redirect(target_ifindex) */
};

/* META (per-CPU array of one entry): verdict metadata of the packet being processed. */
struct verdict_meta {
	__u32 ifindex; /* interface the hook runs on; deliver checks it */
	__u8 hook;     /* enum hook */
	__u8 action;   /* enum deliver_action */
	__u8 proto;
	__u8 ct_new;   /* 1 on the first packet of a connection */
	__u32 tenant;
	__u32 src_identity;
	__u32 dst_identity;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 target_ifindex; /* DELIVER_LOCAL: destination host-side port; DELIVER_WORLD: uplink;
			       * DELIVER_TUNNEL: the VXLAN device */
	__be32 nexthop;       /* DELIVER_WORLD: next hop; DELIVER_TUNNEL: the destination's node */
	__u8 src_mac[6];      /* DELIVER_LOCAL: new source MAC (destination's host-side port) */
	__u8 dst_mac[6];      /* DELIVER_LOCAL: new destination MAC (destination workload) */
	__u32 egress_cookie;
	__u32 ingress_cookie;
	__u32 vni;            /* DELIVER_TUNNEL: the tenant's VNI */
};
_Static_assert(sizeof(struct verdict_meta) == 64, "verdict_meta size");
_Static_assert(__builtin_offsetof(struct verdict_meta, target_ifindex) == 32, "verdict_meta.target_ifindex");

#endif /* PALISADE_ABI_H */
