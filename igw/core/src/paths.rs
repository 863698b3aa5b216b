//! Default locations of configuration and runtime files on a gateway node.

pub const NODE_CONFIG: &str = "/etc/igw/node.toml";
pub const POLICY_CONFIG: &str = "/etc/igw/policy.toml";
/// Directory of the daemons' control sockets.
pub const RUN_DIR: &str = "/run/igw";
