//! FRR for the fabric: render the node's `frr.conf` from node.toml (BGP to ToRs and
//! upstream, role route-maps, BFD, prefix-lists) and drive the running FRR (role prepend,
//! session state). Rendering is pure ([`render`]); `vtysh` lives in [`driver`].
#![forbid(unsafe_code)]

pub mod driver;
pub mod render;

pub use driver::{BfdSession, BgpSession, FrrDriver, FrrError};
pub use render::{RouterSpec, node_frr, role_commands, router_frr};
