//! The EVENTS ring buffer: [`EventReader`] waits for and parses the records
//! the programs emit into [`FlowEvent`]s.
//!
//! The reader is blocking with a timeout (poll(2) on the ring buffer's fd);
//! it also implements `AsFd`, so an async agent can register it with tokio's
//! `AsyncFd` and call [`EventReader::try_next`] when it is readable.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, RingBuf};

use crate::abi::{policy_flags, Direction, EventType, FlowEventRaw, Hook, EVENT_VERSION};
use crate::drop_reason::DropReason;
use crate::error::{Error, Result};

/// The flow an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    /// Where the packet was seen.
    pub hook: Hook,
    /// Interface of the hook.
    pub ifindex: u32,
    /// Tenant index.
    pub tenant: u32,
    /// IP protocol.
    pub proto: u8,
    /// Source address (for connection events: the originator).
    pub saddr: Ipv4Addr,
    /// Source port (ICMP echo request: the echo id; other ICMP: type << 8 | code).
    pub sport: u16,
    /// Destination address.
    pub daddr: Ipv4Addr,
    /// Destination port (ICMP echo reply: the echo id).
    pub dport: u16,
    /// Source identity (0 when not resolved yet, e.g. a malformed packet).
    pub src_identity: u32,
    /// Destination identity (0 when not resolved yet).
    pub dst_identity: u32,
    /// CLOCK_MONOTONIC time of the event (see [`crate::maps::monotonic_now`]).
    pub timestamp: Duration,
}

/// Packets and bytes of a connection in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    /// Originator -> responder packets.
    pub packets_fwd: u64,
    /// Originator -> responder bytes.
    pub bytes_fwd: u64,
    /// Responder -> originator packets.
    pub packets_rev: u64,
    /// Responder -> originator bytes.
    pub bytes_rev: u64,
}

/// One event of the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// The first packet of a connection was admitted.
    NewAllowed {
        /// The connection.
        flow: FlowInfo,
        /// Rule of the source's egress side (0 if the source is not an endpoint).
        egress_cookie: u32,
        /// Rule of the destination's ingress side (0 if not an endpoint).
        ingress_cookie: u32,
        /// A deciding rule carries the LOG flag.
        log: bool,
    },
    /// A packet was dropped (rate-limited per flow).
    Denied {
        /// The packet's flow, as far as it was parsed.
        flow: FlowInfo,
        /// Why.
        reason: DropReason,
        /// The policy side that denied (POLICY_DENIED, NO_POLICY).
        side: Option<Direction>,
        /// The rule that denied, 0 when no rule decided.
        cookie: u32,
        /// Drops of this flow not reported since the previous event.
        suppressed: u32,
    },
    /// An audit-mode rule would deny this flow; the verdict did not change.
    AuditWouldDeny {
        /// The flow.
        flow: FlowInfo,
        /// The side whose audit rule would deny.
        side: Option<Direction>,
        /// The audit rule.
        audit_cookie: u32,
        /// Audit events of this flow not reported since the previous one.
        suppressed: u32,
    },
    /// A TCP connection closed (FIN both ways, or RST).
    ConnClosed {
        /// The connection (originator's tuple).
        flow: FlowInfo,
        /// Rule that admitted it on the egress side.
        egress_cookie: u32,
        /// Rule that admitted it on the ingress side.
        ingress_cookie: u32,
        /// Final counters.
        counters: ConnCounters,
    },
    /// A policy change no longer allows the connection: it was cut.
    ConnCut {
        /// The connection (originator's tuple).
        flow: FlowInfo,
        /// The side that now denies.
        side: Option<Direction>,
        /// The rule that now denies (0 for NO_POLICY).
        cookie: u32,
        /// Counters until the cut.
        counters: ConnCounters,
    },
}

impl FlowEvent {
    /// The flow of any event.
    pub fn flow(&self) -> &FlowInfo {
        match self {
            FlowEvent::NewAllowed { flow, .. }
            | FlowEvent::Denied { flow, .. }
            | FlowEvent::AuditWouldDeny { flow, .. }
            | FlowEvent::ConnClosed { flow, .. }
            | FlowEvent::ConnCut { flow, .. } => flow,
        }
    }

    /// Parses one ring buffer record.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::BadEvent { reason };
        if bytes.len() < std::mem::size_of::<FlowEventRaw>() {
            return Err(bad(format!(
                "{} bytes, expected {}",
                bytes.len(),
                std::mem::size_of::<FlowEventRaw>()
            )));
        }
        // SAFETY: the slice holds at least size_of::<FlowEventRaw>() bytes,
        // read_unaligned has no alignment requirement, and FlowEventRaw is
        // plain integers valid for any bit pattern.
        let raw: FlowEventRaw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if raw.version != EVENT_VERSION {
            return Err(bad(format!(
                "version {}, this build reads {EVENT_VERSION}",
                raw.version
            )));
        }
        let hook =
            Hook::from_raw(raw.hook).ok_or_else(|| bad(format!("unknown hook {}", raw.hook)))?;
        let flow = FlowInfo {
            hook,
            ifindex: raw.ifindex,
            tenant: raw.tenant,
            proto: raw.proto,
            saddr: Ipv4Addr::from(raw.saddr),
            sport: u16::from_be_bytes(raw.sport),
            daddr: Ipv4Addr::from(raw.daddr),
            dport: u16::from_be_bytes(raw.dport),
            src_identity: raw.src_identity,
            dst_identity: raw.dst_identity,
            timestamp: Duration::from_nanos(raw.timestamp_ns),
        };
        let side = Direction::from_raw(raw.side);
        let side_cookie = match side {
            Some(Direction::Egress) => raw.egress_cookie,
            Some(Direction::Ingress) => raw.ingress_cookie,
            None => 0,
        };
        let counters = ConnCounters {
            packets_fwd: raw.packets_fwd,
            bytes_fwd: raw.bytes_fwd,
            packets_rev: raw.packets_rev,
            bytes_rev: raw.bytes_rev,
        };
        let kind = EventType::from_raw(raw.r#type)
            .ok_or_else(|| bad(format!("unknown event type {}", raw.r#type)))?;
        Ok(match kind {
            EventType::NewAllowed => FlowEvent::NewAllowed {
                flow,
                egress_cookie: raw.egress_cookie,
                ingress_cookie: raw.ingress_cookie,
                log: raw.flags & policy_flags::LOG != 0,
            },
            EventType::Denied => FlowEvent::Denied {
                flow,
                reason: DropReason::from_raw(raw.drop_reason)
                    .ok_or_else(|| bad(format!("unknown drop reason {}", raw.drop_reason)))?,
                side,
                cookie: side_cookie,
                suppressed: raw.suppressed,
            },
            EventType::AuditWouldDeny => FlowEvent::AuditWouldDeny {
                flow,
                side,
                audit_cookie: raw.audit_cookie,
                suppressed: raw.suppressed,
            },
            EventType::ConnClosed => FlowEvent::ConnClosed {
                flow,
                egress_cookie: raw.egress_cookie,
                ingress_cookie: raw.ingress_cookie,
                counters,
            },
            EventType::ConnCut => FlowEvent::ConnCut {
                flow,
                side,
                cookie: side_cookie,
                counters,
            },
        })
    }
}

/// Reads the EVENTS ring buffer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("fd", &self.ring.as_raw_fd())
            .finish()
    }
}

impl EventReader {
    pub(crate) fn new(map: Map) -> Result<Self> {
        let ring = RingBuf::try_from(map).map_err(|e| Error::map("EVENTS", "open", e))?;
        Ok(Self { ring })
    }

    /// The next event if one is waiting, without blocking.
    pub fn try_next(&mut self) -> Result<Option<FlowEvent>> {
        match self.ring.next() {
            Some(item) => FlowEvent::parse(&item).map(Some),
            None => Ok(None),
        }
    }

    /// The next event, waiting up to `timeout` for one.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<FlowEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.try_next()? {
                return Ok(Some(event));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.wait(left)?;
        }
    }

    /// Every event waiting now.
    pub fn drain(&mut self) -> Result<Vec<FlowEvent>> {
        let mut events = Vec::new();
        while let Some(event) = self.try_next()? {
            events.push(event);
        }
        Ok(events)
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for a fd owned by self.ring, count 1.
        let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ret < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::PollEvents { source: e });
            }
        }
        Ok(())
    }
}

impl AsFd for EventReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> FlowEventRaw {
        FlowEventRaw {
            version: EVENT_VERSION,
            r#type: EventType::Denied as u8,
            hook: Hook::FromEndpoint as u8,
            proto: 6,
            drop_reason: DropReason::PolicyDenied as u16,
            side: Direction::Ingress as u8,
            saddr: [10, 0, 0, 1],
            sport: 40000u16.to_be_bytes(),
            dport: 80u16.to_be_bytes(),
            ingress_cookie: 42,
            suppressed: 3,
            ..FlowEventRaw::default()
        }
    }

    fn bytes(raw: &FlowEventRaw) -> Vec<u8> {
        // SAFETY: FlowEventRaw is repr(C) plain data without padding holes.
        unsafe {
            std::slice::from_raw_parts(
                (raw as *const FlowEventRaw).cast::<u8>(),
                size_of::<FlowEventRaw>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn a_denied_record_names_the_deciding_side_and_cookie() {
        let event = FlowEvent::parse(&bytes(&raw())).unwrap();
        match event {
            FlowEvent::Denied {
                flow,
                reason,
                side,
                cookie,
                suppressed,
            } => {
                assert_eq!(
                    (reason, side, cookie, suppressed),
                    (DropReason::PolicyDenied, Some(Direction::Ingress), 42, 3)
                );
                assert_eq!(
                    (flow.saddr, flow.sport, flow.dport),
                    (Ipv4Addr::new(10, 0, 0, 1), 40000, 80)
                );
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn records_of_another_version_or_kind_are_refused() {
        let mut other_version = raw();
        other_version.version = EVENT_VERSION + 1;
        assert!(matches!(
            FlowEvent::parse(&bytes(&other_version)),
            Err(Error::BadEvent { .. })
        ));
        let mut unknown_type = raw();
        unknown_type.r#type = 99;
        assert!(matches!(
            FlowEvent::parse(&bytes(&unknown_type)),
            Err(Error::BadEvent { .. })
        ));
        assert!(matches!(
            FlowEvent::parse(&bytes(&raw())[..50]),
            Err(Error::BadEvent { .. })
        ));
    }
}
