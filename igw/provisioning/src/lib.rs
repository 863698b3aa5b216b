//! Provisioning: from one site inventory, everything each node needs — its node.toml (the
//! policy is the site's, shared), and for the fabric side the ToRs' downlink filters and
//! the FRR config of routed-on-host tenant servers. Loading validates; rendering is pure.
#![forbid(unsafe_code)]

pub mod inventory;
pub mod render;

pub use inventory::Inventory;
pub use render::RenderError;
