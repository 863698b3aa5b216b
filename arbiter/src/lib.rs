//! The arbiter: decides whether this node is active or standby from real health and the
//! peer's authenticated heartbeats, and says it through FRR (AS-path prepend) in the right
//! order against conntrack-sync. [`machine`] is the pure election state machine,
//! [`heartbeat`] the wire format; with the `daemon` feature (default), [`daemon`] runs the
//! machine on tokio and [`edges`] connects it to the node (probes, FRR, conntrack-sync,
//! UDP heartbeats, control socket, metrics). `igw arbiter` is a thin wrapper around
//! [`edges::serve`].
#![forbid(unsafe_code)]

#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod edges;
pub mod heartbeat;
pub mod machine;
#[cfg(feature = "daemon")]
pub mod metrics;

pub use machine::{Action, Config, Event, HbPath, Health, PeerStatus, Role, State};
