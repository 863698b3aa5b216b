//! `igw fabric`: render this node's FRR configuration, and look at or steer the running FRR.

use anyhow::Context;
use igw_core::{NodeConfig, Policy};
use igw_fabric::{FrrDriver, node_frr};

use crate::{CliError, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print this node's frr.conf (BGP to ToRs and upstream, role route-maps, BFD,
    /// prefix-lists) rendered from --node and the tenant subnets of --policy.
    Render {
        /// Prepend count the role route-maps start with (default: bgp.prepend_standby, as
        /// every node starts standby until the arbiter decides).
        #[arg(long)]
        prepend: Option<u8>,
    },
    /// BGP and BFD sessions of the running FRR, as JSON.
    Sessions,
    /// Set the role prepend on the running FRR by hand (the arbiter normally does this).
    SetPrepend { count: u8 },
}

pub fn run(g: &Global, a: &Args) -> Result<(), CliError> {
    let node = NodeConfig::load(&g.node)?;
    match &a.cmd {
        Cmd::Render { prepend } => {
            let policy = Policy::load(&g.policy)?;
            let tenants: Vec<_> = policy.tenant_subnets().copied().collect();
            print!(
                "{}",
                node_frr(&node, &tenants, prepend.unwrap_or(node.bgp.prepend_standby))
            );
        }
        Cmd::Sessions => {
            let d = FrrDriver::for_node(&node);
            let bgp = d.bgp_sessions().context("reading BGP sessions")?;
            let bfd = d.bfd_sessions().context("reading BFD sessions")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"bgp": bgp, "bfd": bfd}))
                    .context("encoding")?
            );
        }
        Cmd::SetPrepend { count } => {
            let (took, path) = FrrDriver::for_node(&node)
                .set_prepend(&node, *count)
                .context("setting the role prepend")?;
            let via = match path {
                igw_fabric::driver::Path::VtySocket => "bgpd's vty socket",
                igw_fabric::driver::Path::Vtysh => "vtysh",
            };
            println!(
                "prepend {count} set in {:.3} s (via {via})",
                took.as_secs_f64()
            );
        }
    }
    Ok(())
}
