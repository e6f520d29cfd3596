/* SPDX-License-Identifier: Apache-2.0 */
/*
 * parse.h - IPv4 and L4 parsing into struct packet.
 *
 * parse_ipv4() validates what the rest of the datapath relies on and returns
 * -DROP_* for anything else (bpf/README.md, "Malformed packets"):
 *   - IPv4 header: version 4, IHL >= 5, options present in the packet
 *     (skipped, never interpreted), total length >= header length and not
 *     longer than the packet (Ethernet padding after it is fine);
 *   - fragments (MF set or offset != 0) are dropped: palisade does not
 *     reassemble, and a non-first fragment carries no ports to decide on;
 *   - TCP (20 bytes, data offset >= 5 and within the IP packet), UDP (8),
 *     SCTP (12, the common header) and ICMP (8) headers must be complete;
 *     TCP, UDP and SCTP are decided and tracked by their ports, other
 *     protocols have port 0;
 *   - ICMP echo: the echo id is the request's source port and the reply's
 *     destination port (0 on the other side), so a reply matches its
 *     request's entry reversed but a request from the other side does not;
 *     other informational types use type << 8 | code as both ports (each
 *     type is tracked, and decided, on its own); ICMP errors (destination unreachable incl. fragmentation needed, time
 *     exceeded, parameter problem) carry the embedded IPv4 header + 8 bytes,
 *     whose tuple goes to p->inner for the "related" check.
 * The policy port is the destination port, ICMP type << 8 | code for ICMP,
 * 0 for other protocols.
 */
#ifndef PALISADE_PARSE_H
#define PALISADE_PARSE_H

#include "packet.h"
#include "drop.h"

/* Ethernet + IPv4 with options + ICMP + embedded IPv4 with options + 8 bytes. */
#define PARSE_PULL_LEN (ETH_HLEN + 60 + 8 + 60 + 8)

struct l4_ports {
	__be16 sport;
	__be16 dport;
};

struct icmp_head {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be16 id;
	__be16 sequence;
};

/* Makes the headers parse.h reads directly accessible (GSO/paged skbs). */
static __always_inline void parse_pull(struct __sk_buff *skb)
{
	__u64 want = skb->len < PARSE_PULL_LEN ? skb->len : PARSE_PULL_LEN;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + want > data_end)
		bpf_skb_pull_data(skb, want);
}

static __always_inline __be16 icmp_policy_port(__u8 type, __u8 code)
{
	return bpf_htons(((__u16)type << 8) | code);
}

/*
 * The embedded header of an ICMP error: the packet it reports on, as sent by
 * the receiver of the error. Read with bpf_skb_load_bytes (bounded copies),
 * `off` is where the embedded IPv4 header starts, `limit` the end of the
 * outer IPv4 packet.
 */
static __always_inline int parse_icmp_inner(struct __sk_buff *skb, struct packet *p, __u32 off, __u32 limit)
{
	struct iphdr ip;
	struct icmp_head ih;
	__u32 hlen;

	if (off + sizeof(ip) > limit || bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return -DROP_TRUNCATED;
	if (ip.version != 4 || ip.ihl < 5)
		return -DROP_BAD_IP_HEADER;
	hlen = ip.ihl * 4;
	if (off + hlen + 8 > limit || bpf_skb_load_bytes(skb, off + hlen, &ih, sizeof(ih)) < 0)
		return -DROP_TRUNCATED;

	p->inner.saddr = ip.saddr;
	p->inner.daddr = ip.daddr;
	p->inner.proto = ip.protocol;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		struct l4_ports *ports = (void *)&ih;

		p->inner.sport = ports->sport;
		p->inner.dport = ports->dport;
		break;
	}
	case IPPROTO_ICMP:
		if (ih.type == ICMP_ECHO)
			p->inner.sport = ih.id;
		else if (ih.type == ICMP_ECHOREPLY)
			p->inner.dport = ih.id;
		else
			return -DROP_ICMP_UNRELATED;
		break;
	default:
		break;
	}
	return 0;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u32 hlen, tot, l4_len;
	void *l4;

	if ((void *)(ip + 1) > data_end)
		return -DROP_TRUNCATED;
	if (ip->version != 4 || ip->ihl < 5)
		return -DROP_BAD_IP_HEADER;
	hlen = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	if (tot < hlen || ETH_HLEN + tot > skb->len)
		return -DROP_BAD_IP_HEADER;
	if ((void *)ip + hlen > data_end)
		return -DROP_TRUNCATED;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ttl = ip->ttl;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return -DROP_FRAGMENT;

	l4 = (void *)ip + hlen;
	l4_len = tot - hlen;
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		__u8 *tcp = l4;

		if (l4_len < 20 || (void *)(tcp + 20) > data_end)
			return -DROP_TRUNCATED;
		if ((tcp[12] >> 4) < 5)
			return -DROP_BAD_L4_HEADER;
		if ((__u32)(tcp[12] >> 4) * 4 > l4_len)
			return -DROP_TRUNCATED;
		p->sport = ((struct l4_ports *)tcp)->sport;
		p->dport = ((struct l4_ports *)tcp)->dport;
		p->policy_port = p->dport;
		p->tcp_flags = tcp[13];
		break;
	}
	case IPPROTO_UDP: {
		struct l4_ports *udp = l4;

		if (l4_len < 8 || (void *)udp + 8 > data_end)
			return -DROP_TRUNCATED;
		p->sport = udp->sport;
		p->dport = udp->dport;
		p->policy_port = p->dport;
		break;
	}
	case IPPROTO_SCTP: {
		/* Policy names SCTP ports like TCP and UDP ones: without them a
		 * rule on an SCTP port would never match. */
		struct l4_ports *sctp = l4;

		if (l4_len < 12 || (void *)sctp + 12 > data_end)
			return -DROP_TRUNCATED;
		p->sport = sctp->sport;
		p->dport = sctp->dport;
		p->policy_port = p->dport;
		break;
	}
	case IPPROTO_ICMP: {
		struct icmp_head *icmp = l4;

		if (l4_len < 8 || (void *)(icmp + 1) > data_end)
			return -DROP_TRUNCATED;
		p->policy_port = icmp_policy_port(icmp->type, icmp->code);
		switch (icmp->type) {
		case ICMP_ECHO:
			p->sport = icmp->id;
			break;
		case ICMP_ECHOREPLY:
			p->dport = icmp->id;
			break;
		case ICMP_DEST_UNREACH:
		case ICMP_TIME_EXCEEDED:
		case ICMP_PARAMETERPROB:
			p->icmp_error = 1;
			return parse_icmp_inner(skb, p, ETH_HLEN + hlen + 8, ETH_HLEN + tot);
		default:
			/* Type and code in the conntrack ports: admitting one ICMP
			 * type must not let every other type of the pair through. */
			p->sport = p->policy_port;
			p->dport = p->policy_port;
			break;
		}
		break;
	}
	default:
		break;
	}
	return 0;
}

#endif /* PALISADE_PARSE_H */
