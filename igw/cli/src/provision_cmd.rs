//! `igw provision`: from the site inventory, each node's bundle and the fabric side's
//! configs. Rendering is pure (igw-provisioning); this module only reads and writes files.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use igw_provisioning::{Inventory, render};

use crate::{CliError, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Write one gateway node's bundle into DIR: node.toml, the site policy with its list
    /// files, and KEYFILE (where the pre-shared key must be installed; the key itself is
    /// never rendered). Validate it with `igw check DIR`.
    Render {
        /// The site inventory.
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        /// The gateway node, as named in the inventory (e.g. igw-a).
        #[arg(long = "node-name", visible_alias = "gateway", value_name = "NAME")]
        node_name: String,
        /// Output directory (created; existing files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print a ToR's downlink configuration (FRR syntax): one BGP session per routed
    /// host's port, each accepting only that host's own prefixes.
    Tor {
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        /// The ToR, as named in the inventory.
        #[arg(long, value_name = "NAME")]
        tor: String,
    },
    /// Print the FRR configuration of a routed-on-host tenant server (BGP unnumbered to
    /// its ToRs, ECMP; CaaS variant on port 20179 beside BIRD).
    Host {
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        /// The server, as named in the inventory's network catalog.
        #[arg(long, value_name = "NAME")]
        host: String,
    },
}

pub fn run(_g: &Global, a: &Args) -> Result<(), CliError> {
    match &a.cmd {
        Cmd::Render {
            inventory,
            node_name,
            out,
        } => {
            let inv = Inventory::load(inventory)?;
            let node = render::node_toml(&inv, node_name).map_err(anyhow::Error::from)?;
            write_bundle(&inv, &node, out)?;
            println!(
                "{}: bundle for {node_name} written; check it with `igw check {}`",
                out.display(),
                out.display()
            );
        }
        Cmd::Tor { inventory, tor } => {
            let inv = Inventory::load(inventory)?;
            print!(
                "{}",
                render::tor_downlinks(&inv, tor).map_err(anyhow::Error::from)?
            );
        }
        Cmd::Host { inventory, host } => {
            let inv = Inventory::load(inventory)?;
            print!(
                "{}",
                render::host_frr(&inv, host).map_err(anyhow::Error::from)?
            );
        }
    }
    Ok(())
}

fn write_bundle(inv: &Inventory, node: &str, out: &Path) -> anyhow::Result<()> {
    let policy = inv.policy.as_ref().context("inventory has no policy")?;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &Path, data: &[u8]| -> anyhow::Result<()> {
        let p = out.join(name);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d)?;
        }
        fs::write(&p, data).with_context(|| format!("cannot write {}", p.display()))
    };
    write(Path::new("node.toml"), node.as_bytes())?;
    // The policy and its list files travel as written, so the node validates exactly what
    // the operator reviewed.
    let src_dir = policy.source.parent().unwrap_or(Path::new("."));
    write(
        Path::new("policy.toml"),
        &fs::read(&policy.source)
            .with_context(|| format!("cannot read {}", policy.source.display()))?,
    )?;
    for f in &policy.list_files {
        if f.is_absolute()
            || f.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            anyhow::bail!(
                "list file {} must be inside the policy's directory to travel in a bundle",
                f.display()
            );
        }
        write(
            f,
            &fs::read(src_dir.join(f))
                .with_context(|| format!("cannot read {}", src_dir.join(f).display()))?,
        )?;
    }
    let keyfile = format!(
        "The pre-shared key of sync and heartbeats is not part of the bundle.\nInstall the site key (the same on both nodes, 32+ random bytes) at:\n{}\n",
        inv.site.key_file
    );
    write(Path::new("KEYFILE"), keyfile.as_bytes())?;
    Ok(())
}
