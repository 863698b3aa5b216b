//! `igw`: one binary for the operator commands and the gateway's daemons.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration (nothing was changed).

mod arbiter_cmd;
mod check;
mod conntrack_cmd;
mod exit;
mod fabric_cmd;
mod lab;
mod memory;
mod nft_netlink;
mod policy_cmd;
mod provision_cmd;
mod proxy_cmd;
mod ruleset_cmd;
mod sysctl_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use exit::CliError;

/// igw — Internet gateway appliance: URI-filtering proxy, nftables policy, conntrack state
/// sync and active/standby BGP arbitration, driven from one CLI.
///
/// Configuration lives in two files: node.toml (this node's identity, interfaces, BGP
/// peers, sync link, NAT pool) and policy.toml (objects, tenants, L3 and L7 rules).
/// Every command validates them first; an invalid file changes nothing and exits 2.
#[derive(Debug, Parser)]
#[command(name = "igw", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// This node's configuration.
    #[arg(long, global = true, value_name = "FILE", env = "IGW_NODE", default_value = igw_core::paths::NODE_CONFIG)]
    pub node: PathBuf,
    /// The policy: objects, tenants, L3 and L7 rules.
    #[arg(long, global = true, value_name = "FILE", env = "IGW_POLICY", default_value = igw_core::paths::POLICY_CONFIG)]
    pub policy: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The arbiter daemon: elects this node active or standby from local health (proxy,
    /// nftables table, BGP sessions, upstream route) and the peer's authenticated
    /// heartbeats (sync link and fabric), and says it through FRR's AS-path prepend, in
    /// order with conntrack-sync. Stops on SIGTERM: hands over if active, then prepends.
    Arbiter(arbiter_cmd::DaemonArgs),
    /// This node's role and why, the peer's role and health, BGP and BFD sessions, the
    /// prepend in force and conntrack-sync. Exits 1 if the arbiter is not running.
    Status(arbiter_cmd::StatusArgs),
    /// Planned switchover: hand the active role to the peer (make before break). Refused,
    /// with the reason, if this node is not active or the peer is not healthy; exits 1.
    Failover(arbiter_cmd::FailoverArgs),
    /// `on`: drain this node (hand over if active) and keep it standby; `off`: back in the
    /// election.
    Maintenance(arbiter_cmd::MaintenanceArgs),
    /// Validate configuration files without changing anything.
    ///
    /// With no PATH, checks --node and --policy. A PATH may be a file (node*.toml or any
    /// other .toml, taken as a policy) or a directory (every node*.toml and policy*.toml in
    /// it). Prints `file:line:col: field: problem` for each error and exits 2 on any.
    Check(check::Args),
    /// The conntrack-sync daemon: replicates conntrack state (with NAT bindings) to the
    /// peer while active, caches the peer's while standby. Stops on SIGTERM.
    ConntrackSync(conntrack_cmd::SyncArgs),
    /// Conntrack sync: `status [--json]`, `commit`, `set-role`, `dump`.
    Conntrack(conntrack_cmd::Args),
    /// The gateway pair in network namespaces: `up`, `status`, `down`.
    ///
    /// Builds the topology of TESTBED.md (two tenants, a ToR and an upstream on FRR, igw-a
    /// and igw-b, an Internet namespace with origins) on this machine. Needs root.
    Lab(lab::Args),
    /// From a site inventory: node bundles, ToR downlink filters, tenant-server FRR.
    Provision(provision_cmd::Args),
    /// L7 policy: `explain` a decision, `reload` the running proxy's policy.
    Policy(policy_cmd::Args),
    /// The filtering proxy daemon: explicit, transparent HTTP and TLS (by SNI).
    Proxy(proxy_cmd::Args),
    /// FRR: `render` this node's frr.conf, show `sessions`, `set-prepend` by hand.
    Fabric(fabric_cmd::Args),
    /// nftables: `render` the compiled table, `apply` it atomically, `diff` it against the
    /// running one, `show` the running one with counters.
    Ruleset(ruleset_cmd::Args),
    /// Kernel settings the gateway needs: `show` them, `apply` them (at boot).
    Sysctl(sysctl_cmd::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Arbiter(_) | Command::ConntrackSync(_) | Command::Proxy(_)
    ) {
        default_sigpipe();
    }
    init_tracing(cli.global.log_format);
    let result = match &cli.command {
        Command::Arbiter(a) => arbiter_cmd::run_daemon(&cli.global, a),
        Command::Status(a) => arbiter_cmd::status(&cli.global, a),
        Command::Failover(a) => arbiter_cmd::failover(&cli.global, a),
        Command::Maintenance(a) => arbiter_cmd::maintenance(&cli.global, a),
        Command::Check(a) => check::run(&cli.global, a),
        Command::ConntrackSync(a) => conntrack_cmd::run_daemon(&cli.global, a),
        Command::Conntrack(a) => conntrack_cmd::run(&cli.global, a),
        Command::Lab(a) => lab::run(&cli.global, a),
        Command::Provision(a) => provision_cmd::run(&cli.global, a),
        Command::Policy(a) => policy_cmd::run(&cli.global, a),
        Command::Proxy(a) => proxy_cmd::run(&cli.global, a),
        Command::Fabric(a) => fabric_cmd::run(&cli.global, a),
        Command::Ruleset(a) => ruleset_cmd::run(&cli.global, a),
        Command::Sysctl(a) => sysctl_cmd::run(&cli.global, a),
    };
    exit::report(result)
}

/// `igw status | head` must end quietly, like any Unix tool: commands that print get the
/// default SIGPIPE back (Rust ignores it, which turns a closed pipe into a panic in
/// `println!`). Daemons keep it ignored: a peer closing a socket is an error they handle.
#[expect(unsafe_code, reason = "signal(2) has no safe wrapper in std")]
fn default_sigpipe() {
    // SAFETY: called at startup before any thread exists; SIG_DFL is a valid disposition
    // for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("IGW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every subcommand (duplicate ids, a positional
    /// that shadows a global option, ...), which otherwise fail only when invoked.
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
