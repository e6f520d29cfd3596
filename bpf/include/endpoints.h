/* SPDX-License-Identifier: Apache-2.0 */
/*
 * endpoints.h - reading ENDPOINTS through its index.
 *
 * endpoint_get(ifindex, out) copies ENDPOINTS[ifindex] to `out` (the stack)
 * and returns 1, or returns 0 when the port is no endpoint. It reads the
 * port's slot in ENDPOINT_INDEX first: an array access the verifier inlines,
 * where a hash lookup is a helper call (~33 ns on the test machine, the
 * largest single cost of an established packet; bench/README.md). The slot
 * is a sequence lock written by user space (abi.h): the copy is used only if
 * `seq` was even before and unchanged after it, and the slot holds this very
 * port; otherwise (two ports sharing a slot, or a write in progress) the
 * hash is the authority. User space writes ENDPOINTS before the slot and
 * clears the slot before removing from ENDPOINTS, so both always agree with
 * ENDPOINTS as it was at some instant of the packet.
 */
#ifndef PALISADE_ENDPOINTS_H
#define PALISADE_ENDPOINTS_H

#include "packet.h"

static __always_inline int endpoint_get(__u32 ifindex, struct endpoint *out)
{
	__u32 index = ifindex & (ENDPOINT_INDEX_SLOTS - 1);
	const struct endpoint_slot *slot = bpf_map_lookup_elem(&ENDPOINT_INDEX, &index);
	const struct endpoint *ep;
	__u32 seq;

	/* 0 is no port (an IPCACHE entry of a local endpoint whose port is
	 * missing, e.g. while it moves here): an empty slot says ifindex 0 too. */
	if (!ifindex)
		return 0;
	if (slot) {
		seq = READ_ONCE(slot->seq);
		barrier();
		if (!(seq & 1) && slot->ifindex == ifindex) {
			__builtin_memcpy(out, &slot->ep, sizeof(*out));
			barrier();
			if (READ_ONCE(slot->seq) == seq)
				return 1;
		}
	}
	ep = bpf_map_lookup_elem(&ENDPOINTS, &ifindex);
	if (!ep)
		return 0;
	__builtin_memcpy(out, ep, sizeof(*out));
	return 1;
}

#endif /* PALISADE_ENDPOINTS_H */
