/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ipcache.h - what an address is, per tenant.
 *
 * ipcache_lookup(tenant, addr) returns the longest-prefix IPCACHE entry for
 * the address inside the tenant (NULL if none: the agent installs a 0.0.0.0/0
 * world entry per tenant, so a miss means "unknown" and fails closed). Keys
 * carry the tenant, never the node's routing table, so tenants may reuse
 * addresses.
 *
 * peer_resolve() turns an entry into the identity the policy uses. A local
 * endpoint's identity, MACs and tenant come from its ENDPOINTS entry (the
 * port is the authority for the workload behind it); every other identity
 * comes from IPCACHE.
 */
#ifndef PALISADE_IPCACHE_H
#define PALISADE_IPCACHE_H

#include "packet.h"
#include "drop.h"
#include "endpoints.h"

static __always_inline struct ipcache_value *ipcache_lookup(__u32 tenant, __be32 addr)
{
	struct ipcache_key key = {
		.prefixlen = 64,
		.tenant = tenant,
		.addr = addr,
	};

	return bpf_map_lookup_elem(&IPCACHE, &key);
}

/*
 * Identity of an IPCACHE entry; for a local endpoint also its ENDPOINTS
 * entry, copied to `buf`, in *ep (else *ep is NULL). Fails when the tables
 * point at a port that is not an endpoint, or at an endpoint of another
 * tenant.
 */
static __always_inline int peer_resolve(const struct packet *p, const struct ipcache_value *v,
					__u32 *identity, struct endpoint *buf, const struct endpoint **ep)
{
	*ep = NULL;
	if (!(v->flags & IPCACHE_F_LOCAL_ENDPOINT)) {
		*identity = v->identity;
		return 0;
	}
	if (!endpoint_get(v->ifindex, buf))
		return -DROP_NO_ROUTE;
	if (buf->tenant != p->tenant)
		return -DROP_TENANT_MISMATCH;
	*identity = buf->identity;
	*ep = buf;
	return 0;
}

#endif /* PALISADE_IPCACHE_H */
