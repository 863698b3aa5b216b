//! `igw check`: validate node and policy files, changing nothing.

use std::path::{Path, PathBuf};

use igw_core::{ConfigError, NodeConfig, Policy};

use crate::{CliError, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to check; default: --node and --policy. Files named node*,
    /// inventory* or anything else (a policy).
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Policy,
    Inventory,
}

fn kind_of(p: &Path) -> Kind {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name.starts_with("node") {
        Kind::Node
    } else if name.starts_with("inventory") {
        Kind::Inventory
    } else {
        Kind::Policy
    }
}

fn expand(paths: &[PathBuf]) -> Result<Vec<(Kind, PathBuf)>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("cannot read directory {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let n = f.file_name().unwrap_or_default().to_string_lossy();
                    n.ends_with(".toml")
                        && ["node", "policy", "inventory"]
                            .iter()
                            .any(|k| n.starts_with(k))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(anyhow::anyhow!(
                    "{}: no node*.toml, policy*.toml or inventory*.toml here",
                    p.display()
                )
                .into());
            }
            out.extend(found.into_iter().map(|f| (kind_of(&f), f)));
        } else {
            out.push((kind_of(p), p.clone()));
        }
    }
    Ok(out)
}

pub fn run(g: &Global, a: &Args) -> Result<(), CliError> {
    let targets = if a.paths.is_empty() {
        vec![
            (Kind::Node, g.node.clone()),
            (Kind::Policy, g.policy.clone()),
        ]
    } else {
        expand(&a.paths)?
    };
    let mut diagnostics = Vec::new();
    for (kind, path) in targets {
        let r = match kind {
            Kind::Node => NodeConfig::load(&path).map(|n| format!("node {}", n.node.name)),
            Kind::Inventory => igw_provisioning::Inventory::load(&path).map(|i| {
                format!(
                    "inventory of site {}: {} gateways, {} hosts",
                    i.site.name,
                    i.gateways.len(),
                    i.hosts.len()
                )
            }),
            Kind::Policy => Policy::load(&path).map(|p| {
                format!(
                    "policy: {} tenants, {} objects, {} L3 rules, {} L7 rules",
                    p.tenants.len(),
                    p.objects.len(),
                    p.l3_rules.len(),
                    p.l7_rules.len()
                )
            }),
        };
        match r {
            Ok(summary) => println!("{}: ok ({summary})", path.display()),
            Err(e) => diagnostics.extend(e.diagnostics),
        }
    }
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { diagnostics }.into())
    }
}
