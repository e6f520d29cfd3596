//! palisade's policy engine, the reference semantics of the product:
//!
//! - [`IdentityAllocator`] gives every (tenant, label set) and every policy
//!   CIDR prefix a small [`Identity`]; [`Identities`] also holds the ipcache.
//! - [`evaluate`] decides one [`Flow`] straight from the intent and returns an
//!   [`Explanation`] naming the rule or default that decided each side.
//! - [`Compiler`] turns intent and identities into [`CompiledTables`] that the
//!   datapath decides with at most four lookups per packet ([`lookup`] is the
//!   contract in Rust); [`diff`] tells the agent what to change.
//!
//! The compiled tables agree with the evaluator on every flow; the property
//! tests in `tests/properties.rs` check that on random intents.

#![warn(missing_docs)]

mod bitset;
mod compile;
mod cookies;
mod decide;
mod digest;
mod evaluate;
mod explain;
mod identity;
mod index;
mod prefixes;
mod request;
mod tables;

pub use compile::{CompileError, Compiler, Limits};
pub use cookies::{COOKIE_CROSS_TENANT, COOKIE_SELF_TRAFFIC};
pub use evaluate::{evaluate, Flow, FlowPeer};
pub use explain::{
    Attribution, AuditView, Explanation, FlowEnd, PolicyTrace, RuleTrace, SideExplanation,
    StepTrace, TierOutcome, TierTrace, Verdict,
};
pub use identity::{
    Identities, Identity, IdentityAllocator, IdentityError, IdentityInfo, IdentityKind, IpcacheKey,
};
pub use request::{protocol_number, FlowRequest, RequestError, WORLD_ADDRESS};
pub use tables::{diff, lookup, CompiledTables, IdentityTable, PolicyKey, PolicyValue, TablesDiff};
