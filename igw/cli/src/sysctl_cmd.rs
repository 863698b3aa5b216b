//! `igw sysctl`: the kernel settings the gateway needs (declared once, in
//! `igw_ruleset::nft::sysctl`), compared with or written to the running kernel.

use anyhow::anyhow;
use igw_core::NodeConfig;
use igw_ruleset::nft::sysctl::{Sysctl, sysctls};

use crate::{CliError, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Each setting igw needs, its wanted and current value, and why it is needed.
    Show,
    /// Write every setting to /proc/sys (needs root). Run it once at boot, before
    /// `igw ruleset apply`: forwarding, conntrack table size (node.toml
    /// conntrack.max_entries), liberal TCP window tracking for synced flows, conntrack
    /// events for conntrack-sync, loose rp_filter. Exit 1 if any write fails.
    Apply,
}

fn current(s: &Sysctl) -> Option<String> {
    std::fs::read_to_string(s.proc_path())
        .ok()
        .map(|v| v.trim().to_string())
}

pub fn run(g: &Global, a: &Args) -> Result<(), CliError> {
    let node = NodeConfig::load(&g.node)?;
    let list = sysctls(&node);
    match a.cmd {
        Cmd::Show => {
            for s in &list {
                let cur = current(s).unwrap_or_else(|| "(absent)".into());
                let mark = if cur == s.value { "ok" } else { "DIFFERS" };
                println!(
                    "{:<7} {} = {} (now {cur})\n        {}",
                    mark, s.key, s.value, s.why
                );
            }
            Ok(())
        }
        Cmd::Apply => {
            let mut failed = Vec::new();
            for s in &list {
                if current(s).as_deref() == Some(s.value.as_str()) {
                    println!("{} = {} (already)", s.key, s.value);
                    continue;
                }
                match std::fs::write(s.proc_path(), &s.value) {
                    Ok(()) => println!("{} = {}", s.key, s.value),
                    Err(e) => failed.push(format!("{}: {e}", s.key)),
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(anyhow!("could not set: {}", failed.join("; ")).into())
            }
        }
    }
}
