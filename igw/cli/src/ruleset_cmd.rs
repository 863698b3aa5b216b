//! `igw ruleset`: compile node.toml + policy.toml into `table inet igw`, and put it in the
//! kernel with `nft`. Only that table is ever listed, replaced or changed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, anyhow};
use igw_core::{ConfigError, Diagnostic, NodeConfig, Policy};
use igw_ruleset::nft::running::{Running, Snapshot};
use igw_ruleset::nft::{self, Compiled, Plan, batch, running, textdiff};

use crate::{CliError, Global, nft_netlink};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print the compiled table: nft text (what `nft list` shows), or with --json the
    /// exact transaction `apply` feeds to `nft -j -f -`. Changes nothing, needs no root.
    Render {
        /// The JSON transaction instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// Put the compiled table in the kernel, in ONE nft transaction.
    ///
    /// The transaction replaces `table inet igw` only (add table, delete table, the full
    /// content); other tables are never flushed, listed or parsed. If nft or the kernel
    /// refuses it, nothing changes, nft's error is printed and the exit code is 1. An
    /// invalid node or policy exits 2 before nft runs.
    ///
    /// When the running table has the same structure (chains, rules, set declarations:
    /// compared by the fingerprint on the first rule of chain `forward`) and only set
    /// elements differ — e.g. an object's member file changed — the transaction only
    /// deletes and adds those elements: no reload, counters keep counting. The first line
    /// of output says which kind of apply ran.
    Apply {
        /// Replace the whole table even if an element update would do.
        #[arg(long)]
        full: bool,
        /// Print the plan (and with --json the transaction) without running nft.
        #[arg(long)]
        dry_run: bool,
        /// Print the transaction as JSON with --dry-run.
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// Test hook: append a rule that jumps to a chain that does not exist, so the
        /// kernel refuses the whole transaction (proves a failed apply changes nothing).
        #[arg(long, hide = true)]
        fault_inject: bool,
    },
    /// Compare the running table with the compiled one: structure as a line diff of
    /// `nft list` output (set contents left out), then set elements added and removed.
    /// Needs root: the compiled table is loaded into a throwaway network namespace
    /// (`unshare -n`) so both sides are printed by the same nft.
    Diff,
    /// The running table with its counters (`nft list table inet igw`).
    Show {
        /// nft's JSON listing instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(g: &Global, a: &Args) -> Result<(), CliError> {
    match &a.cmd {
        Cmd::Render { json } => {
            let c = load(g)?;
            if *json {
                println!("{}", nft::to_json(&nft::full_replace(&c)));
            } else {
                print!("{}", nft::render_text(&c));
            }
            Ok(())
        }
        Cmd::Apply {
            full,
            dry_run,
            json,
            fault_inject,
        } => apply(g, *full, *dry_run, *json, *fault_inject),
        Cmd::Diff => diff(g),
        Cmd::Show { json } => {
            let args: &[&str] = if *json {
                &["-j", "list", "table", "inet", nft::TABLE]
            } else {
                &["list", "table", "inet", nft::TABLE]
            };
            let out = nft_cmd(args, None)?;
            if !out.0 {
                return Err(anyhow!("nft list table inet igw: {}", out.2.trim()).into());
            }
            print!("{}", out.1);
            Ok(())
        }
    }
}

/// Loads both files and compiles; every refusal is a configuration error (exit 2).
fn load(g: &Global) -> Result<Compiled, CliError> {
    load_with_node(g).map(|(_, c)| c)
}

fn load_with_node(g: &Global) -> Result<(NodeConfig, Compiled), CliError> {
    let node = NodeConfig::load(&g.node)?;
    let policy = Policy::load(&g.policy)?;
    let c = nft::compile(&node, &policy).map_err(|e| {
        let file = match e {
            nft::CompileError::LongId { .. } => g.policy.clone(),
            _ => g.node.clone(),
        };
        CliError::Config(ConfigError::single(Diagnostic {
            file,
            line: 0,
            col: 0,
            field: String::new(),
            message: e.to_string(),
        }))
    })?;
    Ok((node, c))
}

/// Runs nft; returns (success, stdout, stderr).
fn nft_cmd(args: &[&str], stdin: Option<&str>) -> anyhow::Result<(bool, String, String)> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `nft` (is the nftables package installed?)")?;
    if let Some(input) = stdin {
        // Take stdin so it is closed after writing and nft sees EOF.
        let mut w = child.stdin.take().context("nft stdin")?;
        w.write_all(input.as_bytes()).context("writing to nft")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The running table as JSON, or `None` if there is none.
fn running_json() -> anyhow::Result<Option<String>> {
    let (ok, out, err) = nft_cmd(&["-j", "list", "table", "inet", nft::TABLE], None)?;
    if ok {
        Ok(Some(out))
    } else if err.contains("No such file or directory") {
        Ok(None)
    } else {
        Err(anyhow!("nft -j list table inet igw: {}", err.trim()))
    }
}

/// Above this many changed prefixes an element update goes through `nft` (one big
/// transaction it handles well); below, through igw's own netlink batch, which does not
/// need the whole set listed first.
const NETLINK_MAX_PREFIXES: usize = 4096;

/// Where the last commit is remembered (see `running::Snapshot`).
fn snapshot_path(node: &NodeConfig) -> std::path::PathBuf {
    node.control.run_dir.join("ruleset.snapshot")
}

/// The running table: remembered from igw's last commit when the kernel's generation says
/// nothing changed since, else listed back with `nft -j`. Returns it and where it came from.
fn running_table(
    node: &NodeConfig,
    nl: Option<&mut nft_netlink::NfSock>,
) -> Result<(Option<Running>, &'static str, Option<u32>), CliError> {
    let genid = nl.and_then(|s| s.genid().ok());
    if let (Some(g), Ok(ns)) = (genid, nft_netlink::netns_id())
        && let Ok(text) = std::fs::read_to_string(snapshot_path(node))
        && let Some(snap) = Snapshot::parse(&text)
        && snap.genid == g
        && snap.netns == ns
    {
        return Ok((Some(snap.running), "known from igw's last commit", genid));
    }
    let running = match running_json()? {
        Some(j) => Some(running::parse(&j).context("reading the running table")?),
        None => None,
    };
    Ok((running, "listed back", genid))
}

/// Remembers what was just committed, if the generation proves the commit was the only
/// one since `before`; otherwise forgets (the next apply lists the table back).
fn remember(node: &NodeConfig, c: &Compiled, before: Option<u32>, after: Option<u32>) {
    let path = snapshot_path(node);
    let snap = match (before, after, nft_netlink::netns_id()) {
        (Some(b), Some(a), Ok(netns)) if a == b.wrapping_add(1) => Snapshot {
            netns,
            genid: a,
            running: Running {
                fingerprint: Some(c.fingerprint.clone()),
                sets: c
                    .table
                    .sets
                    .iter()
                    .map(|s| (s.name.clone(), s.elems.clone()))
                    .collect(),
            },
        },
        _ => {
            let _ = std::fs::remove_file(&path);
            return;
        }
    };
    let tmp = path.with_extension("snapshot.tmp");
    let res = std::fs::create_dir_all(&node.control.run_dir)
        .and_then(|()| std::fs::write(&tmp, snap.to_text()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = res {
        // Only speed is lost: the next apply lists the table back.
        eprintln!("note: cannot write {}: {e}", path.display());
        let _ = std::fs::remove_file(&tmp);
    }
}

fn apply(
    g: &Global,
    full: bool,
    dry_run: bool,
    json: bool,
    fault_inject: bool,
) -> Result<(), CliError> {
    let (node, c) = load_with_node(g)?;
    // Without netlink (no permission, old kernel) everything still works through nft.
    let mut nl = nft_netlink::NfSock::open().ok();
    let (running, source, gen_before) = running_table(&node, nl.as_mut())?;
    let plan = if full {
        Plan::Full
    } else {
        nft::plan(&c, running.as_ref())
    };
    if matches!(plan, Plan::Nothing) && !fault_inject {
        println!("{}", plan.describe());
        if !dry_run && source == "listed back" {
            remember(&node, &c, gen_before.map(|g| g.wrapping_sub(1)), gen_before);
        }
        return Ok(());
    }
    let via_netlink = match (&plan, &nl) {
        (Plan::Elements(d), Some(_)) => {
            d.iter()
                .map(|(_, x)| x.add.len() + x.remove.len())
                .sum::<usize>()
                <= NETLINK_MAX_PREFIXES
        }
        _ => false,
    };
    if dry_run {
        println!("would apply: {}", plan.describe());
        if json {
            let tx = match &plan {
                Plan::Elements(d) => nft::element_update(d),
                _ => nft::full_replace(&c),
            };
            println!("{}", nft::to_json(&tx));
        }
        return Ok(());
    }
    let t0 = Instant::now();
    if let (true, Plan::Elements(d), Some(sock)) = (via_netlink, &plan, nl.as_mut()) {
        let mut d = d.clone();
        if fault_inject {
            // A delete from a set that does not exist: the kernel aborts the whole batch.
            d.push((
                "igw-fault-inject-missing".to_string(),
                running::SetDelta {
                    remove: vec!["192.0.2.0/24".parse().context("fault prefix")?],
                    add: vec![],
                },
            ));
        }
        sock.commit(|seq| batch::element_batch(nft::TABLE, &d, seq))
            .map_err(|e| {
                anyhow!(
                    "the kernel refused the element update; the running ruleset is \
                     unchanged.\n{e:#}"
                )
            })?;
    } else {
        let mut tx = match &plan {
            Plan::Elements(d) => nft::element_update(d),
            _ => nft::full_replace(&c),
        };
        if fault_inject {
            tx = nft::with_fault(tx);
        }
        let (ok, _out, err) = nft_cmd(&["-j", "-f", "-"], Some(&nft::to_json(&tx)))?;
        if !ok {
            return Err(anyhow!(
                "nft refused the transaction; the running ruleset is unchanged.\n{}",
                err.trim_end()
            )
            .into());
        }
    }
    let took = t0.elapsed();
    let gen_after = nl.as_mut().and_then(|s| s.genid().ok());
    remember(&node, &c, gen_before, gen_after);
    println!(
        "applied: {} in {:.3} s (running table {source}; {})",
        plan.describe(),
        took.as_secs_f64(),
        if via_netlink {
            "netlink batch"
        } else {
            "nft -j -f"
        }
    );
    Ok(())
}

fn diff(g: &Global) -> Result<(), CliError> {
    let c = load(g)?;
    let tx = nft::to_json(&nft::full_replace(&c));
    // The compiled table, printed by nft itself from a throwaway namespace.
    let mut child = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            "nft -j -f - && nft -s -t list table inet igw",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `unshare` (util-linux); diff needs root")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(tx.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        return Err(anyhow!(
            "loading the compiled table into a scratch namespace failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let compiled_text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (ok, running_text, err) =
        nft_cmd(&["-s", "-t", "list", "table", "inet", nft::TABLE], None)?;
    let running_text = if ok {
        running_text
    } else if err.contains("No such file or directory") {
        println!("no running table inet igw: apply would create it");
        String::new()
    } else {
        return Err(anyhow!("nft list table inet igw: {}", err.trim()).into());
    };
    let lines = textdiff::diff_lines(&running_text, &compiled_text);
    let changed = lines.iter().filter(|l| !l.starts_with("  ")).count();
    if changed == 0 {
        println!("structure: identical");
    } else {
        println!("structure: {changed} lines differ (- running, + compiled)");
        // Show changed lines with one line of context.
        for (i, l) in lines.iter().enumerate() {
            let near = |k: usize| lines.get(k).is_some_and(|x| !x.starts_with("  "));
            if !l.starts_with("  ") || near(i + 1) || (i > 0 && near(i - 1)) {
                println!("{l}");
            }
        }
    }
    let running = match running_json()? {
        Some(j) => running::parse(&j).context("reading the running table")?,
        None => running::Running::default(),
    };
    let mut any = false;
    for set in &c.table.sets {
        let old = running.sets.get(&set.name).cloned().unwrap_or_default();
        let d = running::delta(&old, &set.elems);
        if d.add.is_empty() && d.remove.is_empty() {
            continue;
        }
        any = true;
        println!("set {}: +{} -{}", set.name, d.add.len(), d.remove.len());
        const SHOW: usize = 20;
        for n in d.remove.iter().take(SHOW) {
            println!("- {n}");
        }
        for n in d.add.iter().take(SHOW) {
            println!("+ {n}");
        }
        if d.add.len() > SHOW || d.remove.len() > SHOW {
            println!("  (first {SHOW} of each shown)");
        }
    }
    for name in running.sets.keys() {
        if c.table.set(name).is_none() {
            any = true;
            println!("set {name}: only in the running table");
        }
    }
    if !any {
        println!("set elements: identical");
    }
    Ok(())
}
