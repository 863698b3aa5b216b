//! The arbiter: decides whether this node is active or standby from real health and the
//! peer's authenticated heartbeats, and says it through FRR (AS-path prepend) in the right
//! order against conntrack-sync. [`machine`] is the pure election state machine,
//! [`heartbeat`] the wire format; the daemon (sockets, probes, FRR) lives in the `igw`
//! binary (`igw arbiter`).
#![forbid(unsafe_code)]

pub mod heartbeat;
pub mod machine;

pub use machine::{Action, Config, Event, HbPath, Health, PeerStatus, Role, State};
