//! The HTTP/HTTPS URI-filtering proxy: transparent (diverted tcp/80, tcp/443 by SNI) and
//! explicit (absolute-form, CONNECT). Decisions come from the pure matcher in
//! `igw_ruleset::l7`; this crate does the I/O around it.

pub mod access;
pub mod clienthello;
pub mod control;
pub mod dns;
pub mod framing;
mod idle;
pub mod metrics;
mod origdst;
pub mod ratelimit;
pub mod server;
mod splice;
pub mod ssrf;
mod upstream;

pub use server::{Limits, Listeners, ProxyConfig, ProxyError, Shared, load_matcher, serve};
