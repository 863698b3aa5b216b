//! igw's shared core: the node and policy configuration files, their validation, and the
//! default paths. Pure: no runtime, no sockets. Loading reads files, nothing else; a config
//! that fails validation never yields a value, so nothing downstream can apply half of it.
#![forbid(unsafe_code)]

pub mod addr;
pub mod control;
pub mod diag;
pub mod node;
pub mod paths;
pub mod policy;

pub use diag::{ConfigError, Diagnostic};
pub use node::NodeConfig;
pub use policy::Policy;
