//! Why the datapath drops a packet: the Rust mirror of `enum drop_reason` in
//! `bpf/include/drop.h`, with a stable name and a human description for each
//! reason. Numbers are stable (stored in counters and events); the BTF test
//! checks this table against the C enum.

use std::fmt;

macro_rules! drop_reasons {
    ( $( $(#[$meta:meta])* $variant:ident = $value:literal, $cname:literal, $name:literal, $description:literal; )* ) => {
        /// A drop reason (`enum drop_reason`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum DropReason {
            $( $(#[$meta])* $variant = $value, )*
        }

        impl DropReason {
            /// Every reason, in numeric order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )* ];

            /// The C enum and its enumerators, for the BTF check.
            pub const C_ENUM: crate::abi::CEnum = ("drop_reason", &[ $( ($cname, $value), )* ]);

            /// The reason with this number, if any.
            pub fn from_raw(raw: u16) -> Option<Self> {
                match raw {
                    $( $value => Some(Self::$variant), )*
                    _ => None,
                }
            }

            /// Stable name, as in logs and metrics (`POLICY_DENIED`).
            pub fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )*
                }
            }

            /// What happened, for a person reading a log.
            pub fn description(self) -> &'static str {
                match self {
                    $( Self::$variant => $description, )*
                }
            }
        }
    };
}

drop_reasons! {
    /// No ENDPOINTS entry for the port.
    UnknownEndpoint = 1, "DROP_UNKNOWN_ENDPOINT", "UNKNOWN_ENDPOINT",
        "packet on a port that is not a known endpoint";
    /// Ethertype other than IPv4, ARP and IPv6, or a VLAN-tagged frame.
    UnsupportedL3 = 2, "DROP_UNSUPPORTED_L3", "UNSUPPORTED_L3",
        "ethertype other than IPv4/ARP, or VLAN-tagged frame";
    /// IPv6 (not supported yet).
    Ipv6Unsupported = 3, "DROP_IPV6_UNSUPPORTED", "IPV6_UNSUPPORTED",
        "IPv6 is not supported yet";
    /// ARP that is not a request palisade answers.
    ArpOther = 4, "DROP_ARP_OTHER", "ARP_OTHER",
        "ARP reply, probe, announcement or malformed ARP from a workload";
    /// Source MAC is not the endpoint's.
    SpoofMac = 5, "DROP_SPOOF_MAC", "SPOOF_MAC",
        "source MAC is not the endpoint's own";
    /// Source IP does not belong to the sender.
    SpoofIp = 6, "DROP_SPOOF_IP", "SPOOF_IP",
        "source IP address does not belong to the sender";
    /// A header is incomplete.
    Truncated = 7, "DROP_TRUNCATED", "TRUNCATED",
        "Ethernet, IPv4 or L4 header incomplete";
    /// IPv4 header invalid.
    BadIpHeader = 8, "DROP_BAD_IP_HEADER", "BAD_IP_HEADER",
        "IPv4 version, header length (IHL < 5) or total length invalid";
    /// IPv4 fragment.
    Fragment = 9, "DROP_FRAGMENT", "FRAGMENT",
        "IPv4 fragment (palisade does not reassemble)";
    /// TTL too low to route.
    TtlExceeded = 10, "DROP_TTL_EXCEEDED", "TTL_EXCEEDED",
        "TTL <= 1 on a routed delivery";
    /// TCP data offset < 5.
    BadL4Header = 11, "DROP_BAD_L4_HEADER", "BAD_L4_HEADER",
        "TCP data offset below 5";
    /// ICMP error about no known connection.
    IcmpUnrelated = 12, "DROP_ICMP_UNRELATED", "ICMP_UNRELATED",
        "ICMP error not related to a tracked connection";
    /// IPCACHE has no entry for the destination.
    UnknownDestination = 13, "DROP_UNKNOWN_DESTINATION", "UNKNOWN_DESTINATION",
        "destination address unknown in the tenant (no IPCACHE entry)";
    /// IPCACHE has no entry for the source.
    UnknownSource = 14, "DROP_UNKNOWN_SOURCE", "UNKNOWN_SOURCE",
        "source address unknown in the tenant (no IPCACHE entry)";
    /// A rule denied the flow.
    PolicyDenied = 15, "DROP_POLICY_DENIED", "POLICY_DENIED",
        "denied by policy";
    /// No policy entry at all for the subject.
    NoPolicy = 16, "DROP_NO_POLICY", "NO_POLICY",
        "no policy entry for the identity (fail closed)";
    /// The connection's policy was revoked.
    PolicyRevoked = 17, "DROP_POLICY_REVOKED", "POLICY_REVOKED",
        "policy changed and no longer allows this connection: it was cut";
    /// Retired: before the overlay, a destination on another node.
    RemoteUnsupported = 18, "DROP_REMOTE_UNSUPPORTED", "REMOTE_UNSUPPORTED",
        "destination on another node (datapaths before the overlay; no longer used)";
    /// Nowhere to send the packet.
    NoRoute = 19, "DROP_NO_ROUTE", "NO_ROUTE",
        "no uplink for world-bound traffic, or IPCACHE points to a missing endpoint";
    /// No UPLINKS entry for the interface.
    UnknownUplink = 20, "DROP_UNKNOWN_UPLINK", "UNKNOWN_UPLINK",
        "packet on an interface that is not a known uplink";
    /// The destination is not the local endpoint this path serves.
    NotLocalDestination = 21, "DROP_NOT_LOCAL_DESTINATION", "NOT_LOCAL_DESTINATION",
        "destination is not a local endpoint reachable this way";
    /// Tables point at an endpoint of another tenant.
    TenantMismatch = 22, "DROP_TENANT_MISMATCH", "TENANT_MISMATCH",
        "IPCACHE points to an endpoint of another tenant (inconsistent tables)";
    /// The conntrack entry could not be created.
    CtCreateFailed = 23, "DROP_CT_CREATE_FAILED", "CT_CREATE_FAILED",
        "conntrack entry could not be created";
    /// The delivery program found no valid verdict metadata.
    BadMeta = 24, "DROP_BAD_META", "BAD_META",
        "delivery program entered without verdict metadata for this packet";
    /// A packet from the overlay without tunnel metadata or with a VNI of no tenant here.
    UnknownVni = 25, "DROP_UNKNOWN_VNI", "UNKNOWN_VNI",
        "overlay packet with a VNI that names no tenant on this node";
    /// A packet from the overlay whose claimed identity or sending node is not its source's.
    ForgedIdentity = 26, "DROP_FORGED_IDENTITY", "FORGED_IDENTITY",
        "overlay packet whose GBP identity or sending node is not that of its source address";
    /// A DF packet too big for the overlay, answered with ICMP fragmentation needed.
    FragNeeded = 27, "DROP_FRAG_NEEDED", "FRAG_NEEDED",
        "packet with DF too big for the overlay: answered with ICMP fragmentation needed";
    /// A remote destination without an overlay device or an address of its node.
    NoTunnel = 28, "DROP_NO_TUNNEL", "NO_TUNNEL",
        "destination on another node, but no overlay device or no underlay address of that node";
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_fit_the_counter_table() {
        for &reason in DropReason::ALL {
            assert_eq!(DropReason::from_raw(reason as u16), Some(reason));
            assert!((reason as u32) < crate::abi::limits::DROP_REASON_SLOTS);
            assert_eq!(
                DropReason::C_ENUM
                    .1
                    .iter()
                    .find(|(_, v)| *v == reason as u32)
                    .map(|(n, _)| &n[5..]),
                Some(reason.name())
            );
        }
        assert_eq!(DropReason::from_raw(0), None);
    }
}
