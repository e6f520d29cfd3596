/* SPDX-License-Identifier: Apache-2.0 */
/*
 * maps.h - every map of the datapath.
 *
 * All maps are pinned by name under the agent's bpffs directory (the loader
 * sets it), so every object file that includes this header shares the same
 * maps, and a restarted agent adopts them with their contents. The
 * max_entries below are defaults for tools that load an object directly; the
 * Rust loader sets every size from DatapathConfig.
 */
#ifndef PALISADE_MAPS_H
#define PALISADE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

/* Port ifindex -> endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ENDPOINTS SEC(".maps");

/* Copies of ENDPOINTS by ifindex & (ENDPOINT_INDEX_SLOTS - 1) (abi.h); mappable for user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ENDPOINT_INDEX_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct endpoint_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ENDPOINT_INDEX SEC(".maps");

/* (tenant, IPv4 prefix) -> identity and location. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} IPCACHE SEC(".maps");

/* Policy entries of one port or of all ports (prefixlen 96 or 80); see policy.h. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} POLICY SEC(".maps");

/* Policy entries of port ranges (prefixlen 81..95); see policy.h. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} POLICY_RANGES SEC(".maps");

/* Connections, keyed by the tuple of their first packet. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} CT SEC(".maps");

/* Tenant index -> uplink and overlay settings. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct tenant_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} TENANTS SEC(".maps");

/* VNI -> tenant: the reverse of TENANTS[*].vni (abi.h), for from_overlay. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct vni_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} VNIS SEC(".maps");

/* Uplink ifindex -> tenant. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct uplink_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} UPLINKS SEC(".maps");

/* The agent's settings: policy revision, timeouts, event interval. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} CONFIG SEC(".maps");

/*
 * Generation of the tables routes are resolved from (abi.h, ROUTE_GEN).
 * Mappable, so that user space bumps it with one atomic increment.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ROUTE_GEN SEC(".maps");

/* The datapath clock's calibration (abi.h, struct clock). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} CLOCK SEC(".maps");

/* struct flow_event records for the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} EVENTS SEC(".maps");

/* Packets and bytes dropped, by enum drop_reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASON_SLOTS);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} DROP_COUNTERS SEC(".maps");

/* Packets and bytes decided by each rule cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} RULE_COUNTERS SEC(".maps");

/* Datapath health counters, by enum stat_slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} STATS SEC(".maps");

/* Per-flow state of rate-limited events. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ratelimit_key);
	__type(value, struct ratelimit_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} RATELIMIT SEC(".maps");

/* Chained stages, by enum chain_slot (bpf/README.md, "Chain"). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, CHAIN_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} CHAIN SEC(".maps");

/* Verdict metadata handed to chained stages (one per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct verdict_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} META SEC(".maps");

#endif /* PALISADE_MAPS_H */
