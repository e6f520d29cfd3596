// SPDX-License-Identifier: Apache-2.0
/*
 * abi_btf - never loaded: one global of every type in abi.h and drop.h, so
 * their layouts and enum values appear in this object's BTF. The Rust layout
 * test (crates/palisade-datapath/tests/abi_layout.rs) compares them with the
 * mirror in abi.rs, member by member.
 */
#include "abi.h"
#include "drop.h"

struct endpoint abi_endpoint;
struct endpoint_slot abi_endpoint_slot;
struct ipcache_key abi_ipcache_key;
struct ipcache_value abi_ipcache_value;
struct policy_key abi_policy_key;
struct policy_value abi_policy_value;
struct ct_key abi_ct_key;
struct ct_route abi_ct_route;
struct ct_entry abi_ct_entry;
struct tenant_info abi_tenant_info;
struct uplink_info abi_uplink_info;
struct vni_info abi_vni_info;
struct vxlan_gbp_opt abi_vxlan_gbp_opt;
struct config abi_config;
struct clock abi_clock;
struct counter abi_counter;
struct ratelimit_key abi_ratelimit_key;
struct ratelimit_value abi_ratelimit_value;
struct flow_event abi_flow_event;
struct verdict_meta abi_verdict_meta;

enum abi_limits abi_limits;
enum ipcache_flags abi_ipcache_flags;
enum policy_direction abi_policy_direction;
enum policy_verdict abi_policy_verdict;
enum policy_flags abi_policy_flags;
enum ct_state abi_ct_state;
enum ct_flags abi_ct_flags;
enum route_gen_value abi_route_gen_value;
enum stat_slot abi_stat_slot;
enum event_type abi_event_type;
enum hook abi_hook;
enum chain_slot abi_chain_slot;
enum deliver_action abi_deliver_action;
enum drop_reason abi_drop_reason;
