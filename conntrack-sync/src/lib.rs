//! Conntrack replication with NAT bindings between the two gateway nodes, over ctnetlink.
//!
//! Pure parts: [`nla`] and [`ct`] (ctnetlink codec), [`proto`] (the authenticated sync
//! protocol), [`state`] (filter, coalescer, standby cache). I/O at the edges: [`netlink`]
//! (the kernel's table) and [`daemon`] (the sync link, control socket, metrics).
//!
//! Memory: the standby's cache costs [`state::Cache::bytes_per_entry`] bytes per entry
//! (static size of one slot of its entry array and of its index cell; plain IPv4/IPv6 TCP and
//! UDP entries have no further heap parts), measured as the standby's RSS growth per cached entry in
//! `bench/conntrack/RESULTS.md`. Why the commit sends an un-NATed reply tuple, the
//! direct-inject trade-offs and the filters: see `README.md` next to this crate.

pub mod ct;
pub mod daemon;
pub mod netlink;
pub mod nla;
pub mod proto;
pub mod state;

/// Why bytes could not be decoded (ctnetlink or sync protocol).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("attribute {kind} has a bad length {len}")]
    BadLength { kind: u16, len: usize },
    #[error("unexpected {0} {1}")]
    Unexpected(&'static str, u16),
    #[error("missing {0}")]
    Missing(&'static str),
}
