//! Policy compiler: policy.toml -> nftables ruleset (L3/L4, NAT, diversion) and the proxy's L7 matcher. Pure: no runtime.

pub mod l7;
pub mod nft;
