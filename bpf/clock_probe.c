// SPDX-License-Identifier: Apache-2.0
/*
 * clock_probe - run by the loader through BPF_PROG_TEST_RUN to calibrate the
 * datapath clock (abi.h, struct clock): writes jiffies and
 * bpf_ktime_get_ns() (CLOCK_MONOTONIC), read at the same instant, into the
 * first 16 bytes of the packet it is given.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("classifier")
int clock_probe(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u64 *out = data;

	if ((void *)(out + 2) > data_end)
		return TC_ACT_SHOT;
	out[0] = bpf_jiffies64();
	out[1] = bpf_ktime_get_ns();
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
