//! The Rust mirror of `bpf/include/abi.h`: every map key and value, the event
//! record and the verdict metadata, as `#[repr(C)]` types, plus the enums and
//! flag values the C side uses.
//!
//! Sizes and field offsets are asserted at compile time (each field carries
//! its expected offset), and `tests/abi_layout.rs` compares every struct and
//! enum here with the BTF of the compiled objects, so a drift between C and
//! Rust fails a build or a test instead of corrupting a map. Network-order
//! fields (`__be32`, `__be16`) are byte arrays here, so no conversion can be
//! forgotten: use the accessors that take and return `Ipv4Addr` / `u16`.

use std::net::Ipv4Addr;

/// `PALISADE_ABI_VERSION` of abi.h: bumped when a pinned map's layout changes.
pub const ABI_VERSION: u32 = 3;
/// `EVENT_VERSION`: the version stamped in every [`FlowEventRaw`].
pub const EVENT_VERSION: u8 = 1;

/// A struct shared with the C side, with the layout the C side must have.
pub trait AbiStruct: aya::Pod {
    /// Its name in abi.h (`struct NAME`).
    const C_NAME: &'static str;
    /// Every field as (C member name, byte offset), in declaration order.
    const FIELDS: &'static [(&'static str, usize)];
}

/// Defines a `#[repr(C)]` ABI struct whose fields each state their offset;
/// the size and every offset are asserted at compile time.
macro_rules! abi_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident ($cname:literal, size $size:literal) {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $offset:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        const _: () = assert!(core::mem::size_of::<$name>() == $size);
        $( const _: () = assert!(core::mem::offset_of!($name, $field) == $offset); )*

        // SAFETY: repr(C), every byte belongs to a field (padding is spelled
        // out as `pad` fields, checked by the size assert above), and all
        // fields are integers or byte arrays, valid for any bit pattern.
        unsafe impl aya::Pod for $name {}

        impl AbiStruct for $name {
            const C_NAME: &'static str = $cname;
            const FIELDS: &'static [(&'static str, usize)] = &[ $( (stringify!($field), $offset), )* ];
        }
    };
}

/// A C enum mirrored as constants: (C enumerator, value) pairs for the BTF check.
pub type CEnum = (&'static str, &'static [(&'static str, u32)]);

/// Defines a Rust enum mirroring a C enum, with a lossless conversion from the raw value.
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($cname:literal, $repr:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $cvariant:literal $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// The C enum and its enumerators, for the BTF check.
            pub const C_ENUM: CEnum = ($cname, &[ $( ($cvariant, $value), )* ]);

            /// The variant with this raw value, if any.
            pub fn from_raw(raw: $repr) -> Option<Self> {
                match raw {
                    $( $value => Some(Self::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

/// Defines constants mirroring a C enum (flags, limits), with the table for the BTF check.
macro_rules! abi_flags {
    (
        $(#[$meta:meta])*
        pub mod $module:ident ($cname:literal, $repr:ty) {
            $( $(#[$fmeta:meta])* $flag:ident = $cflag:literal $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        pub mod $module {
            $( $(#[$fmeta])* pub const $flag: $repr = $value; )*
            /// The C enum and its enumerators, for the BTF check.
            pub const C_ENUM: super::CEnum = ($cname, &[ $( ($cflag, $value as u32), )* ]);
        }
    };
}

// ---- ENDPOINTS -------------------------------------------------------------

abi_struct! {
    /// ENDPOINTS value (key: `u32` ifindex of the host-side port).
    pub struct Endpoint ("endpoint", size 28) {
        /// Identity of the workload (`tenant_index << 16 | local`).
        pub identity: u32 = 0,
        /// Tenant index.
        pub tenant: u32 = 4,
        /// Reserved, 0.
        pub flags: u32 = 8,
        /// Primary IPv4 address, network order (0 = none). Anti-spoofing
        /// accepts it without an IPCACHE lookup; it must also be in IPCACHE
        /// as this port's local endpoint, like any further address.
        pub ipv4: [u8; 4] = 12,
        /// The workload's own MAC (its `eth0`).
        pub mac: [u8; 6] = 16,
        /// MAC of the host-side port: the workload's gateway.
        pub host_mac: [u8; 6] = 22,
    }
}

abi_struct! {
    /// ENDPOINT_INDEX value: a copy of `ENDPOINTS[ifindex]` in slot
    /// `ifindex & (ENDPOINT_INDEX_SLOTS - 1)`, kept by [`crate::Endpoints`]
    /// (see `bpf/include/endpoints.h`).
    pub struct EndpointSlot ("endpoint_slot", size 40) {
        /// Even: stable; odd: being written.
        pub seq: u32 = 0,
        /// The port whose endpoint this is; 0 = empty.
        pub ifindex: u32 = 4,
        /// Its endpoint.
        pub ep: Endpoint = 8,
        /// Padding to the array's 8-byte element stride.
        pub pad: u32 = 36,
    }
}

// ---- IPCACHE ---------------------------------------------------------------

abi_struct! {
    /// IPCACHE key: (tenant, IPv4 prefix).
    pub struct IpcacheKey ("ipcache_key", size 12) {
        /// Bits after this field that must match: 32 (tenant) + prefix length.
        pub prefixlen: u32 = 0,
        /// Tenant index.
        pub tenant: u32 = 4,
        /// IPv4 address, network order.
        pub addr: [u8; 4] = 8,
    }
}

impl IpcacheKey {
    /// The key of `addr/prefix_len` in `tenant` (host bits are masked off).
    pub fn new(tenant: u32, addr: Ipv4Addr, prefix_len: u8) -> Self {
        let prefix_len = prefix_len.min(32);
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len))
        };
        Self {
            prefixlen: 32 + u32::from(prefix_len),
            tenant,
            addr: (u32::from(addr) & mask).to_be_bytes(),
        }
    }

    /// The address part.
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The IPv4 prefix length (0..=32).
    pub fn prefix_len(&self) -> u8 {
        self.prefixlen.saturating_sub(32).min(32) as u8
    }
}

abi_flags! {
    /// `enum ipcache_flags`: what an IPCACHE entry is.
    pub mod ipcache_flags ("ipcache_flags", u32) {
        /// An endpoint on this node; `ifindex` is its host-side port.
        LOCAL_ENDPOINT = "IPCACHE_F_LOCAL_ENDPOINT" 1,
        /// An endpoint on another node; `node_ipv4` is that node.
        REMOTE_ENDPOINT = "IPCACHE_F_REMOTE_ENDPOINT" 2,
        /// This node's own stack.
        HOST = "IPCACHE_F_HOST" 4,
        /// Outside palisade: the world or a CIDR identity.
        WORLD = "IPCACHE_F_WORLD" 8,
    }
}

abi_struct! {
    /// IPCACHE value.
    pub struct IpcacheValue ("ipcache_value", size 16) {
        /// Identity of the address.
        pub identity: u32 = 0,
        /// [`ipcache_flags`].
        pub flags: u32 = 4,
        /// Local endpoint: its host-side port.
        pub ifindex: u32 = 8,
        /// Remote endpoint: the node hosting it, network order.
        pub node_ipv4: [u8; 4] = 12,
    }
}

impl IpcacheValue {
    /// An endpoint on this node behind host-side port `ifindex`.
    pub fn local_endpoint(identity: u32, ifindex: u32) -> Self {
        Self {
            identity,
            flags: ipcache_flags::LOCAL_ENDPOINT,
            ifindex,
            node_ipv4: [0; 4],
        }
    }

    /// An endpoint on node `node`.
    pub fn remote_endpoint(identity: u32, node: Ipv4Addr) -> Self {
        Self {
            identity,
            flags: ipcache_flags::REMOTE_ENDPOINT,
            ifindex: 0,
            node_ipv4: node.octets(),
        }
    }

    /// This node's own stack.
    pub fn host(identity: u32) -> Self {
        Self {
            identity,
            flags: ipcache_flags::HOST,
            ..Self::default()
        }
    }

    /// The world or a CIDR identity.
    pub fn world(identity: u32) -> Self {
        Self {
            identity,
            flags: ipcache_flags::WORLD,
            ..Self::default()
        }
    }
}

// ---- POLICY ----------------------------------------------------------------

abi_enum! {
    /// `enum policy_direction`: which side of a flow a policy entry decides.
    pub enum Direction ("policy_direction", u8) {
        /// Traffic into the subject.
        Ingress = "POLICY_INGRESS" 1,
        /// Traffic out of the subject.
        Egress = "POLICY_EGRESS" 2,
    }
}

abi_enum! {
    /// `enum policy_verdict`.
    pub enum Verdict ("policy_verdict", u8) {
        /// Drop (zero, so a zeroed value fails closed).
        Deny = "VERDICT_DENY" 0,
        /// Let the flow through.
        Allow = "VERDICT_ALLOW" 1,
    }
}

abi_flags! {
    /// `enum policy_flags`.
    pub mod policy_flags ("policy_flags", u8) {
        /// The rule asks for its flows to be logged (carried in events).
        LOG = "POLICY_F_LOG" 1,
        /// An audit-mode rule would deny this: report `audit_cookie`.
        AUDIT_DENY = "POLICY_F_AUDIT_DENY" 2,
        /// Internal, kept by [`crate::Policy`] on prefixlen-80 entries: the
        /// (subject, peer, direction, proto) has port ranges in POLICY_RANGES.
        /// Never returned by [`crate::Policy::entries`].
        PORT_RANGES = "POLICY_F_PORT_RANGES" 64,
        /// Internal: a placeholder that only carries [`PORT_RANGES`], not an
        /// entry. Never returned by [`crate::Policy::entries`].
        NO_DECISION = "POLICY_F_NO_DECISION" 128,
    }
}

/// Bits of a POLICY key before the port: subject, peer, direction, protocol.
pub const POLICY_PREFIX_BITS: u32 = 80;

abi_struct! {
    /// POLICY key; see `bpf/include/policy.h` for the lookup order.
    pub struct PolicyKey ("policy_key", size 16) {
        /// 80 + number of leading port bits that must match (0..=16).
        pub prefixlen: u32 = 0,
        /// Identity whose policy this is.
        pub subject: u32 = 4,
        /// Identity on the other side; 0 = any peer.
        pub peer: u32 = 8,
        /// [`Direction`] as u8.
        pub direction: u8 = 12,
        /// IP protocol number; 0 = any protocol.
        pub proto: u8 = 13,
        /// Destination port (ICMP: `type << 8 | code`), network order.
        pub port: [u8; 2] = 14,
    }
}

impl PolicyKey {
    /// The entry for `port`'s first `port_bits` bits (0 = all ports, 16 = exactly `port`).
    pub fn new(
        subject: u32,
        direction: Direction,
        peer: u32,
        proto: u8,
        port: u16,
        port_bits: u8,
    ) -> Self {
        let port_bits = port_bits.min(16);
        let mask = if port_bits == 0 {
            0
        } else {
            u16::MAX << (16 - u16::from(port_bits))
        };
        Self {
            prefixlen: POLICY_PREFIX_BITS + u32::from(port_bits),
            subject,
            peer,
            direction: direction as u8,
            proto,
            port: (port & mask).to_be_bytes(),
        }
    }

    /// The (subject, direction) default entry: any peer, any protocol.
    pub fn default_for(subject: u32, direction: Direction) -> Self {
        Self::new(subject, direction, 0, 0, 0, 0)
    }

    /// The port in host order.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

/// The ICMP "port" of a policy entry: `type << 8 | code`.
pub fn icmp_port(icmp_type: u8, code: u8) -> u16 {
    u16::from(icmp_type) << 8 | u16::from(code)
}

abi_struct! {
    /// POLICY value.
    pub struct PolicyValue ("policy_value", size 12) {
        /// [`Verdict`] as u8.
        pub verdict: u8 = 0,
        /// [`policy_flags`].
        pub flags: u8 = 1,
        /// Padding.
        pub pad: u16 = 2,
        /// The rule that decides (attribution in events and counters).
        pub cookie: u32 = 4,
        /// With [`policy_flags::AUDIT_DENY`]: the audit rule that would deny.
        pub audit_cookie: u32 = 8,
    }
}

impl PolicyValue {
    /// A plain allow by rule `cookie`.
    pub fn allow(cookie: u32) -> Self {
        Self {
            verdict: Verdict::Allow as u8,
            cookie,
            ..Self::default()
        }
    }

    /// A plain deny by rule `cookie`.
    pub fn deny(cookie: u32) -> Self {
        Self {
            verdict: Verdict::Deny as u8,
            cookie,
            ..Self::default()
        }
    }
}

// ---- CT --------------------------------------------------------------------

abi_struct! {
    /// CT key: the tuple of a connection's first packet.
    pub struct CtKey ("ct_key", size 20) {
        /// Tenant index.
        pub tenant: u32 = 0,
        /// Originator's address, network order.
        pub saddr: [u8; 4] = 4,
        /// Responder's address, network order.
        pub daddr: [u8; 4] = 8,
        /// Originator's port (ICMP echo request: the echo id), network order.
        pub sport: [u8; 2] = 12,
        /// Responder's port (ICMP echo request: 0), network order.
        pub dport: [u8; 2] = 14,
        /// IP protocol number.
        pub proto: u8 = 16,
        /// Padding.
        pub pad: [u8; 3] = 17,
    }
}

impl CtKey {
    /// The key of a connection from `saddr:sport` to `daddr:dport`.
    pub fn new(
        tenant: u32,
        proto: u8,
        saddr: Ipv4Addr,
        sport: u16,
        daddr: Ipv4Addr,
        dport: u16,
    ) -> Self {
        Self {
            tenant,
            saddr: saddr.octets(),
            daddr: daddr.octets(),
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto,
            pad: [0; 3],
        }
    }

    /// Originator's address.
    pub fn saddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.saddr)
    }

    /// Responder's address.
    pub fn daddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.daddr)
    }

    /// Originator's port.
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes(self.sport)
    }

    /// Responder's port.
    pub fn dport(&self) -> u16 {
        u16::from_be_bytes(self.dport)
    }
}

abi_enum! {
    /// `enum ct_state`.
    pub enum CtState ("ct_state", u8) {
        /// TCP SYN seen from the originator.
        SynSent = "CT_SYN_SENT" 1,
        /// TCP SYN+ACK seen from the responder.
        SynRecv = "CT_SYN_RECV" 2,
        /// TCP handshake done (or picked up mid-stream); every UDP/ICMP/other connection.
        Established = "CT_ESTABLISHED" 3,
        /// TCP FIN seen from one side.
        FinWait = "CT_FIN_WAIT" 4,
        /// TCP FIN seen from both sides, or RST.
        Closed = "CT_CLOSED" 5,
    }
}

abi_flags! {
    /// `enum ct_flags`.
    pub mod ct_flags ("ct_flags", u8) {
        /// The originator is a palisade endpoint (its egress side decided).
        SRC_ENDPOINT = "CT_F_SRC_ENDPOINT" 1,
        /// The responder is a palisade endpoint (its ingress side decided).
        DST_ENDPOINT = "CT_F_DST_ENDPOINT" 2,
        /// FIN seen from the originator.
        FIN_FWD = "CT_F_FIN_FWD" 4,
        /// FIN seen from the responder.
        FIN_REV = "CT_F_FIN_REV" 8,
        /// At least one reply seen.
        SEEN_REPLY = "CT_F_SEEN_REPLY" 16,
        /// A CONN_CLOSED event was already emitted for this entry.
        CLOSE_REPORTED = "CT_F_CLOSE_REPORTED" 32,
    }
}

abi_flags! {
    /// `enum route_gen_value`: the values of [`CtRoute::gen`] that are not a
    /// ROUTE_GEN value, and the first ROUTE_GEN value.
    pub mod route_gen ("route_gen_value", u32) {
        /// The route was never resolved.
        UNRESOLVED = "ROUTE_GEN_UNRESOLVED" 0,
        /// One CPU is rewriting the route.
        BUSY = "ROUTE_GEN_BUSY" 1,
        /// ROUTE_GEN counts from here (and skips 0 and 1 when it wraps).
        FIRST = "ROUTE_GEN_FIRST" 2,
    }
}

abi_struct! {
    /// Where one direction of a connection is delivered, cached in its CT
    /// entry by the datapath (bpf/include/deliver.h). User space only needs
    /// it to be zero ([`route_gen::UNRESOLVED`]) in entries it writes.
    pub struct CtRoute ("ct_route", size 36) {
        /// ROUTE_GEN value the route was resolved under, or a [`route_gen`] value.
        pub gen: u32 = 0,
        /// Interface the packets of this direction arrive on.
        pub in_ifindex: u32 = 4,
        /// [`VerdictMeta::target_ifindex`].
        pub target_ifindex: u32 = 8,
        /// [`VerdictMeta::nexthop`], network order.
        pub nexthop: [u8; 4] = 12,
        /// [`VerdictMeta::src_mac`].
        pub src_mac: [u8; 6] = 16,
        /// [`VerdictMeta::dst_mac`].
        pub dst_mac: [u8; 6] = 22,
        /// [`Hook`] as u8 the packets of this direction run in.
        pub hook: u8 = 28,
        /// [`DeliverAction`] as u8.
        pub action: u8 = 29,
        /// Padding.
        pub pad: [u8; 2] = 30,
        /// Tunnel routes: the VNI to send with; routes of packets from the
        /// overlay: the VNI they must carry (and `nexthop`, the node they
        /// must come from).
        pub vni: u32 = 32,
    }
}

abi_struct! {
    /// CT value: one connection.
    pub struct CtEntry ("ct_entry", size 152) {
        /// Creation time, CLOCK_MONOTONIC nanoseconds (tick resolution).
        pub created_ns: u64 = 0,
        /// Last packet, CLOCK_MONOTONIC nanoseconds (tick resolution).
        pub last_seen_ns: u64 = 8,
        /// Packets originator -> responder.
        pub packets_fwd: u64 = 16,
        /// Bytes originator -> responder.
        pub bytes_fwd: u64 = 24,
        /// Packets responder -> originator.
        pub packets_rev: u64 = 32,
        /// Bytes responder -> originator.
        pub bytes_rev: u64 = 40,
        /// Policy revision the connection was admitted (or last revalidated) under.
        pub revision: u32 = 48,
        /// Originator's identity.
        pub src_identity: u32 = 52,
        /// Responder's identity.
        pub dst_identity: u32 = 56,
        /// Rule of the originator's egress side, 0 if none.
        pub egress_cookie: u32 = 60,
        /// Rule of the responder's ingress side, 0 if none.
        pub ingress_cookie: u32 = 64,
        /// Interface of the hook that admitted it.
        pub ifindex: u32 = 68,
        /// Port of the policy decision (ICMP: `type << 8 | code`), network order.
        pub policy_port: [u8; 2] = 72,
        /// [`CtState`] as u8.
        pub state: u8 = 74,
        /// [`ct_flags`].
        pub flags: u8 = 75,
        /// [`Hook`] as u8 that admitted it.
        pub hook: u8 = 76,
        /// Padding.
        pub pad: [u8; 3] = 77,
        /// Delivery of originator -> responder packets (datapath cache).
        pub route_fwd: CtRoute = 80,
        /// Delivery of replies (datapath cache).
        pub route_rev: CtRoute = 116,
    }
}

// ---- TENANTS / UPLINKS -----------------------------------------------------

abi_struct! {
    /// TENANTS value (key: `u32` tenant index).
    pub struct TenantInfo ("tenant_info", size 16) {
        /// Uplink interface; 0 = none (world-bound traffic drops with NO_ROUTE).
        pub uplink_ifindex: u32 = 0,
        /// IPv4 next hop on the uplink, network order.
        pub nexthop: [u8; 4] = 4,
        /// The tenant's VXLAN VNI on the overlay (1..=2^24-1; 0 = none:
        /// its traffic to other nodes drops with NO_TUNNEL). The
        /// [`crate::Tenants`] handle keeps VNIS, the reverse map, in step.
        pub vni: u32 = 8,
        /// Reserved, 0.
        pub flags: u32 = 12,
    }
}

abi_struct! {
    /// VNIS value (key: `u32` VNI): the tenant a VNI names on this node.
    /// Written only by [`crate::Tenants`], from TENANTS.
    pub struct VniInfo ("vni_info", size 8) {
        /// Tenant index on this node.
        pub tenant: u32 = 0,
        /// Reserved, 0.
        pub flags: u32 = 4,
    }
}

abi_struct! {
    /// The VXLAN Group Policy option as the programs exchange it with the
    /// VXLAN device (the kernel's `struct vxlan_metadata`): the low 16 bits
    /// are the group policy id, the local part of the source identity.
    pub struct VxlanGbpOpt ("vxlan_gbp_opt", size 4) {
        /// Group policy id (low 16 bits) and the kernel's flags above.
        pub gbp: u32 = 0,
    }
}

abi_struct! {
    /// UPLINKS value (key: `u32` ifindex of the uplink).
    pub struct UplinkInfo ("uplink_info", size 8) {
        /// Tenant index the uplink belongs to.
        pub tenant: u32 = 0,
        /// Reserved, 0.
        pub flags: u32 = 4,
    }
}

// ---- CONFIG ----------------------------------------------------------------

abi_struct! {
    /// CONFIG[0]: the agent's settings read by every program.
    pub struct Config ("config", size 56) {
        /// Bumped on every policy change; connections admitted under another
        /// revision are re-decided on their next packet.
        pub policy_revision: u32 = 0,
        /// Reserved, 0.
        pub flags: u32 = 4,
        /// TCP SYN_SENT / SYN_RECV idle timeout, milliseconds (0 expires at once).
        pub ct_tcp_syn_ms: u32 = 8,
        /// TCP ESTABLISHED idle timeout, milliseconds.
        pub ct_tcp_established_ms: u32 = 12,
        /// TCP FIN_WAIT idle timeout, milliseconds.
        pub ct_tcp_fin_ms: u32 = 16,
        /// TCP CLOSED linger, milliseconds.
        pub ct_tcp_close_ms: u32 = 20,
        /// UDP idle timeout, milliseconds.
        pub ct_udp_ms: u32 = 24,
        /// ICMP idle timeout, milliseconds.
        pub ct_icmp_ms: u32 = 28,
        /// Other protocols' idle timeout, milliseconds.
        pub ct_other_ms: u32 = 32,
        /// At most one rate-limited event per flow per this many milliseconds.
        pub event_interval_ms: u32 = 36,
        /// The node's VXLAN device (collect metadata, GBP); 0 = none:
        /// remote destinations drop with NO_TUNNEL. Set through
        /// [`crate::ConfigMap::set_overlay`].
        pub overlay_ifindex: u32 = 40,
        /// Largest inner IPv4 packet the underlay carries once encapsulated
        /// (underlay MTU - 50); 0 = no check.
        pub overlay_mtu: u32 = 44,
        /// This node's underlay address (outer source), network order.
        pub underlay_ipv4: [u8; 4] = 48,
        /// Reserved, 0.
        pub reserved: u32 = 52,
    }
}

impl Config {
    /// Production defaults: TCP established 6 h, SYN 60 s, FIN 60 s, close
    /// 10 s, UDP 60 s, ICMP 30 s, other 60 s, one rate-limited event per flow
    /// per second.
    pub const DEFAULT: Self = Self {
        policy_revision: 0,
        flags: 0,
        ct_tcp_syn_ms: 60_000,
        ct_tcp_established_ms: 6 * 3600 * 1000,
        ct_tcp_fin_ms: 60_000,
        ct_tcp_close_ms: 10_000,
        ct_udp_ms: 60_000,
        ct_icmp_ms: 30_000,
        ct_other_ms: 60_000,
        event_interval_ms: 1000,
        overlay_ifindex: 0,
        overlay_mtu: 0,
        underlay_ipv4: [0; 4],
        reserved: 0,
    };

    /// The idle timeout of a connection in `state` on `proto`, milliseconds
    /// (the same choice as `ct_timeout_ns` in conntrack.h).
    pub fn ct_timeout_ms(&self, proto: u8, state: u8) -> u32 {
        match proto {
            ip_proto::TCP => match CtState::from_raw(state) {
                Some(CtState::Established) => self.ct_tcp_established_ms,
                Some(CtState::FinWait) => self.ct_tcp_fin_ms,
                Some(CtState::Closed) => self.ct_tcp_close_ms,
                _ => self.ct_tcp_syn_ms,
            },
            ip_proto::UDP => self.ct_udp_ms,
            ip_proto::ICMP => self.ct_icmp_ms,
            _ => self.ct_other_ms,
        }
    }
}

/// IP protocol numbers the datapath distinguishes.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

abi_struct! {
    /// CLOCK[0]: calibration of the datapath clock, written by the loader.
    /// The programs compute CLOCK_MONOTONIC nanoseconds at tick resolution
    /// as `jiffies * ns_per_jiffy + offset_ns` (wrapping).
    pub struct Clock ("clock", size 16) {
        /// CLOCK_MONOTONIC nanoseconds minus `jiffies * ns_per_jiffy`, wrapping.
        pub offset_ns: u64 = 0,
        /// 1e9 / HZ; 0 = not calibrated.
        pub ns_per_jiffy: u32 = 8,
        /// The kernel's tick rate.
        pub hz: u32 = 12,
    }
}

// ---- counters and stats ----------------------------------------------------

abi_struct! {
    /// DROP_COUNTERS and RULE_COUNTERS value (per CPU; readers sum them).
    pub struct Counter ("counter", size 16) {
        /// Packets.
        pub packets: u64 = 0,
        /// Bytes (of the frame as the hook saw it).
        pub bytes: u64 = 8,
    }
}

abi_enum! {
    /// `enum stat_slot`: slots of STATS.
    pub enum StatSlot ("stat_slot", u32) {
        /// Events not emitted because the ring buffer was full.
        EventsLost = "STAT_EVENTS_LOST" 0,
        /// Conntrack entries that could not be created (packet dropped).
        CtCreateFailed = "STAT_CT_CREATE_FAILED" 1,
    }
}

abi_flags! {
    /// `enum abi_limits`: sizes of the fixed tables.
    pub mod limits ("abi_limits", u32) {
        /// Entries of DROP_COUNTERS (every drop reason is below this).
        DROP_REASON_SLOTS = "DROP_REASON_SLOTS" 64,
        /// Entries of STATS.
        STAT_SLOTS = "STAT_SLOTS" 8,
        /// Entries of CHAIN.
        CHAIN_SLOTS = "CHAIN_SLOTS" 8,
        /// Entries of ENDPOINT_INDEX (a power of two).
        ENDPOINT_INDEX_SLOTS = "ENDPOINT_INDEX_SLOTS" 16384,
    }
}

// ---- RATELIMIT -------------------------------------------------------------

abi_struct! {
    /// RATELIMIT key: one rate-limited event stream.
    pub struct RatelimitKey ("ratelimit_key", size 24) {
        /// Tenant index.
        pub tenant: u32 = 0,
        /// Source address, network order.
        pub saddr: [u8; 4] = 4,
        /// Destination address, network order.
        pub daddr: [u8; 4] = 8,
        /// Source port, network order.
        pub sport: [u8; 2] = 12,
        /// Destination port, network order.
        pub dport: [u8; 2] = 14,
        /// IP protocol.
        pub proto: u8 = 16,
        /// [`EventType`] as u8.
        pub r#type: u8 = 17,
        /// Drop reason.
        pub reason: u8 = 18,
        /// [`Direction`] of the deciding side.
        pub side: u8 = 19,
        /// Interface of the hook.
        pub ifindex: u32 = 20,
    }
}

abi_struct! {
    /// RATELIMIT value.
    pub struct RatelimitValue ("ratelimit_value", size 16) {
        /// Time of the last emitted event, CLOCK_MONOTONIC nanoseconds.
        pub last_ns: u64 = 0,
        /// Events suppressed since.
        pub suppressed: u32 = 8,
        /// Padding.
        pub pad: u32 = 12,
    }
}

// ---- EVENTS ----------------------------------------------------------------

abi_enum! {
    /// `enum event_type`.
    pub enum EventType ("event_type", u8) {
        /// First packet of a connection admitted.
        NewAllowed = "EVENT_NEW_ALLOWED" 1,
        /// A packet dropped (rate-limited).
        Denied = "EVENT_DENIED" 2,
        /// An audit rule would deny the flow (rate-limited).
        AuditWouldDeny = "EVENT_AUDIT_WOULD_DENY" 3,
        /// TCP connection closed by FIN both ways or RST.
        ConnClosed = "EVENT_CONN_CLOSED" 4,
        /// Connection cut because the policy no longer allows it.
        ConnCut = "EVENT_CONN_CUT" 5,
    }
}

abi_enum! {
    /// `enum hook`: where a program runs.
    pub enum Hook ("hook", u8) {
        /// TC ingress of an endpoint's host-side port (packets from the workload).
        FromEndpoint = "HOOK_FROM_ENDPOINT" 1,
        /// TC egress of an endpoint's host-side port (packets from the node's stack).
        ToEndpoint = "HOOK_TO_ENDPOINT" 2,
        /// TC ingress of a tenant's uplink (packets from the tenant's world).
        FromUplink = "HOOK_FROM_UPLINK" 3,
        /// The delivery program in the CHAIN (never attached to an interface).
        Deliver = "HOOK_DELIVER" 4,
        /// TC ingress of the node's VXLAN device (packets from other nodes).
        FromOverlay = "HOOK_FROM_OVERLAY" 5,
    }
}

abi_struct! {
    /// One record of the EVENTS ring buffer, as the kernel writes it.
    /// [`crate::events::FlowEvent`] is the parsed form.
    pub struct FlowEventRaw ("flow_event", size 96) {
        /// [`EVENT_VERSION`].
        pub version: u8 = 0,
        /// [`EventType`] as u8.
        pub r#type: u8 = 1,
        /// [`Hook`] as u8.
        pub hook: u8 = 2,
        /// IP protocol.
        pub proto: u8 = 3,
        /// [`crate::DropReason`] as u16, 0 if nothing was dropped.
        pub drop_reason: u16 = 4,
        /// [`Direction`] of the deciding side, 0 if none.
        pub side: u8 = 6,
        /// [`policy_flags`] of the deciding rules.
        pub flags: u8 = 7,
        /// Tenant index.
        pub tenant: u32 = 8,
        /// Source identity.
        pub src_identity: u32 = 12,
        /// Destination identity.
        pub dst_identity: u32 = 16,
        /// Source address, network order.
        pub saddr: [u8; 4] = 20,
        /// Destination address, network order.
        pub daddr: [u8; 4] = 24,
        /// Source port, network order.
        pub sport: [u8; 2] = 28,
        /// Destination port, network order.
        pub dport: [u8; 2] = 30,
        /// Interface of the hook.
        pub ifindex: u32 = 32,
        /// Rule of the source's egress side.
        pub egress_cookie: u32 = 36,
        /// Rule of the destination's ingress side.
        pub ingress_cookie: u32 = 40,
        /// Audit rule that would deny.
        pub audit_cookie: u32 = 44,
        /// Rate-limited events of this flow suppressed before this one.
        pub suppressed: u32 = 48,
        /// Padding.
        pub pad: u32 = 52,
        /// CLOCK_MONOTONIC nanoseconds (tick resolution).
        pub timestamp_ns: u64 = 56,
        /// Connection counters (CONN_CLOSED, CONN_CUT).
        pub packets_fwd: u64 = 64,
        /// Connection counters (CONN_CLOSED, CONN_CUT).
        pub bytes_fwd: u64 = 72,
        /// Connection counters (CONN_CLOSED, CONN_CUT).
        pub packets_rev: u64 = 80,
        /// Connection counters (CONN_CLOSED, CONN_CUT).
        pub bytes_rev: u64 = 88,
    }
}

// ---- CHAIN / META ----------------------------------------------------------

abi_enum! {
    /// `enum chain_slot`: slots of the CHAIN program array.
    pub enum ChainSlot ("chain_slot", u32) {
        /// Optional stage run after an allow verdict, before delivery.
        PostVerdict = "CHAIN_POST_VERDICT" 0,
        /// The delivery program; a stage finishes by tail-calling it.
        Deliver = "CHAIN_DELIVER" 1,
    }
}

abi_enum! {
    /// `enum deliver_action`: what delivery does with an admitted packet.
    pub enum DeliverAction ("deliver_action", u8) {
        /// Rewrite MACs, TTL-1, `bpf_redirect_peer` into the destination workload.
        Local = "DELIVER_LOCAL" 1,
        /// TTL-1, `bpf_redirect_neigh` out of the tenant's uplink.
        World = "DELIVER_WORLD" 2,
        /// `TC_ACT_OK`: on to the node's stack, or to the workload (to_endpoint).
        Stack = "DELIVER_STACK" 3,
        /// TTL-1, tunnel key (`nexthop`, `vni`) and GBP option, `bpf_redirect`
        /// to the VXLAN device (`target_ifindex`).
        Tunnel = "DELIVER_TUNNEL" 4,
    }
}

abi_struct! {
    /// META[0] (per CPU): verdict metadata handed to a chained stage.
    pub struct VerdictMeta ("verdict_meta", size 64) {
        /// Interface the hook runs on.
        pub ifindex: u32 = 0,
        /// [`Hook`] as u8.
        pub hook: u8 = 4,
        /// [`DeliverAction`] as u8.
        pub action: u8 = 5,
        /// IP protocol.
        pub proto: u8 = 6,
        /// 1 on the first packet of a connection.
        pub ct_new: u8 = 7,
        /// Tenant index.
        pub tenant: u32 = 8,
        /// Source identity.
        pub src_identity: u32 = 12,
        /// Destination identity.
        pub dst_identity: u32 = 16,
        /// Source address, network order.
        pub saddr: [u8; 4] = 20,
        /// Destination address, network order.
        pub daddr: [u8; 4] = 24,
        /// Source port, network order.
        pub sport: [u8; 2] = 28,
        /// Destination port, network order.
        pub dport: [u8; 2] = 30,
        /// Redirect target: destination's host-side port, the uplink, or the
        /// VXLAN device.
        pub target_ifindex: u32 = 32,
        /// World delivery: IPv4 next hop; tunnel delivery: the destination's
        /// node; network order.
        pub nexthop: [u8; 4] = 36,
        /// Local delivery: new source MAC.
        pub src_mac: [u8; 6] = 40,
        /// Local delivery: new destination MAC.
        pub dst_mac: [u8; 6] = 46,
        /// Rule of the source's egress side.
        pub egress_cookie: u32 = 52,
        /// Rule of the destination's ingress side.
        pub ingress_cookie: u32 = 56,
        /// Tunnel delivery: the tenant's VNI.
        pub vni: u32 = 60,
    }
}

/// An ABI struct's layout: (C name, size, fields as (name, offset)).
pub type StructLayout = (&'static str, usize, &'static [(&'static str, usize)]);

/// Every ABI struct, for the layout checks.
pub const STRUCTS: &[StructLayout] = &[
    entry::<Endpoint>(),
    entry::<EndpointSlot>(),
    entry::<IpcacheKey>(),
    entry::<IpcacheValue>(),
    entry::<PolicyKey>(),
    entry::<PolicyValue>(),
    entry::<CtKey>(),
    entry::<CtRoute>(),
    entry::<CtEntry>(),
    entry::<TenantInfo>(),
    entry::<UplinkInfo>(),
    entry::<VniInfo>(),
    entry::<VxlanGbpOpt>(),
    entry::<Config>(),
    entry::<Clock>(),
    entry::<Counter>(),
    entry::<RatelimitKey>(),
    entry::<RatelimitValue>(),
    entry::<FlowEventRaw>(),
    entry::<VerdictMeta>(),
];

const fn entry<T: AbiStruct>() -> StructLayout {
    (T::C_NAME, core::mem::size_of::<T>(), T::FIELDS)
}

/// Every C enum mirrored here (drop reasons are in [`crate::DropReason`]).
pub const ENUMS: &[CEnum] = &[
    limits::C_ENUM,
    ipcache_flags::C_ENUM,
    Direction::C_ENUM,
    Verdict::C_ENUM,
    policy_flags::C_ENUM,
    CtState::C_ENUM,
    ct_flags::C_ENUM,
    route_gen::C_ENUM,
    StatSlot::C_ENUM,
    EventType::C_ENUM,
    Hook::C_ENUM,
    ChainSlot::C_ENUM,
    DeliverAction::C_ENUM,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipcache_key_masks_host_bits_and_counts_tenant_bits() {
        let key = IpcacheKey::new(7, Ipv4Addr::new(10, 1, 2, 3), 16);
        assert_eq!(key.prefixlen, 48);
        assert_eq!(key.addr(), Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(key.prefix_len(), 16);
        assert_eq!(
            IpcacheKey::new(7, Ipv4Addr::new(1, 2, 3, 4), 0).addr,
            [0; 4]
        );
    }

    #[test]
    fn policy_key_port_prefix() {
        let key = PolicyKey::new(1, Direction::Egress, 2, 6, 8080, 12);
        assert_eq!(key.prefixlen, 92);
        assert_eq!(key.port(), 8080 & 0xfff0);
        assert_eq!(PolicyKey::default_for(1, Direction::Ingress).prefixlen, 80);
        assert_eq!(icmp_port(8, 0), 0x0800);
    }
}
