// SPDX-License-Identifier: Apache-2.0
/*
 * bench_empty - the baseline of bench/src/bin/packet.rs: a TC program that
 * does nothing, so per-packet costs are reported as ratios to the cost of
 * running any program at all through BPF_PROG_TEST_RUN.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("classifier")
int bench_empty(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
