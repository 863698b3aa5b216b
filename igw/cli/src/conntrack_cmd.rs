//! `igw conntrack-sync` (the daemon) and `igw conntrack status|commit|set-role|dump` (the
//! operator's view of it and of the kernel table).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use igw_conntrack_sync::ct::{CtEntry, CtMessage, split_messages};
use igw_conntrack_sync::daemon::{self, DaemonConfig};
use igw_conntrack_sync::netlink::CtSocket;
use igw_conntrack_sync::proto::{Key, Role};
use igw_conntrack_sync::state::Filter;
use igw_core::control::{self, Daemon, Request};
use igw_core::{NodeConfig, Policy};

use crate::{CliError, Global};

/// Options of the daemon.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Role at start; the arbiter changes it with `set-role`.
    #[arg(long, default_value = "standby", value_parser = ["active", "standby"])]
    pub role: String,
    /// Bound of the standby cache, in entries.
    #[arg(long, default_value_t = 2_000_000)]
    pub cache_max: usize,
    /// Write every received entry into this node's kernel table at once, so that a
    /// promotion commits only what is not there yet (the default, from node.toml's
    /// `[conntrack] direct_inject`; see conntrack-sync/README.md).
    #[arg(long, conflicts_with = "no_direct_inject")]
    pub direct_inject: bool,
    /// Keep received entries in the cache only, until `commit` writes them all.
    #[arg(long)]
    pub no_direct_inject: bool,
    /// Replicate only entries whose original source is a tenant subnet of the policy;
    /// by default entries with SNAT status are replicated too.
    #[arg(long)]
    pub tenants_only: bool,
    /// Updates per sync frame and CT_NEW messages per netlink datagram.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Event socket receive buffer, MiB.
    #[arg(long, default_value_t = 64)]
    pub rcvbuf_mib: usize,
    /// No metrics endpoint.
    #[arg(long)]
    pub no_metrics: bool,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Role, peer session, entries cached, replication lag, message counters, last resync
    /// and last commit of the running `igw conntrack-sync`.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Commit the standby cache into this node's kernel (batched CT_NEW with the NAT
    /// bindings); waits until done and prints counts and duration. With direct inject
    /// only the entries the kernel does not hold in their latest state are written.
    Commit {
        /// Write every cached entry, whatever direct inject has written already.
        #[arg(long)]
        full: bool,
    },
    /// Set the daemon's role (normally the arbiter's job).
    SetRole {
        #[arg(value_parser = ["active", "standby"])]
        role: String,
    },
    /// Dump this node's kernel conntrack table as ctnetlink decodes it (no daemon needed).
    Dump {
        /// Print each message's bytes in hex as well (captures for codec tests).
        #[arg(long)]
        hex: bool,
    },
}

fn run_dir(g: &Global) -> Result<PathBuf, CliError> {
    Ok(NodeConfig::load(&g.node)?.control.run_dir)
}

fn call(g: &Global, req: &Request, timeout: Duration) -> Result<serde_json::Value, CliError> {
    let dir = run_dir(g)?;
    let r =
        control::call(&dir, Daemon::ConntrackSync, req, timeout).map_err(anyhow::Error::from)?;
    if !r.ok {
        return Err(anyhow!(r.error.unwrap_or_else(|| "refused".into())).into());
    }
    Ok(r.data)
}

pub fn run(g: &Global, a: &Args) -> Result<(), CliError> {
    match &a.cmd {
        Cmd::Status { json } => {
            let d = call(g, &Request::new("status"), Duration::from_secs(5))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
            } else {
                print_status(&d);
            }
        }
        Cmd::Commit { full } => {
            let req = Request::with_args("commit", serde_json::json!({ "full": full }));
            let d = call(g, &req, Duration::from_secs(600))?;
            println!(
                "{} commit: wrote {} and removed {} of {} cached entries ({} already in the kernel, {} failed) in {:.1} ms",
                d["mode"].as_str().unwrap_or("?"),
                d["written"],
                d["removed"],
                d["entries_cached"],
                d["already_in_kernel"],
                d["failed"],
                d["duration_ms"].as_f64().unwrap_or(0.0)
            );
            if d["failed"].as_u64().unwrap_or(0) > 0 {
                println!("failures by errno: {}", d["errors"]);
            }
        }
        Cmd::SetRole { role } => {
            let d = call(
                g,
                &Request::with_args("set-role", serde_json::json!({ "role": role })),
                Duration::from_secs(5),
            )?;
            println!("role: {}", d["role"].as_str().unwrap_or("?"));
        }
        Cmd::Dump { hex } => dump(*hex)?,
    }
    Ok(())
}

fn print_status(d: &serde_json::Value) {
    let m = &d["messages"];
    println!("node:            {}", d["node"].as_str().unwrap_or("?"));
    println!("role:            {}", d["role"].as_str().unwrap_or("?"));
    println!(
        "peer:            {} connected={}",
        d["peer"].as_str().unwrap_or("?"),
        d["peer_connected"]
    );
    println!(
        "entries cached:  {} (max {})",
        d["entries_cached"], d["cache_max"]
    );
    println!("replication lag: {} ms", d["replication_lag_ms"]);
    let i = &d["inject"];
    if i.is_object() {
        println!(
            "direct inject:   {} in the kernel, {} owed, {} writes, {} failed {}",
            i["in_kernel"], i["owed"], i["written"], i["failed"], i["errors"]
        );
    } else {
        println!("direct inject:   off (promotion commits the whole cache)");
    }
    println!(
        "messages:        sent {} ({} updates), received {} ({} updates), retransmitted {}, coalesced {}",
        m["sent"],
        m["updates_sent"],
        m["received"],
        m["updates_received"],
        m["retransmitted"],
        m["coalesced"]
    );
    println!("dropped:         {}", m["dropped"]);
    println!(
        "event overruns:  {}   resyncs: {}",
        d["event_overruns"], d["resyncs"]
    );
    println!("last resync:     {}", d["last_resync_unix"]);
    println!("last commit:     {}", d["last_commit"]);
}

fn dump(hex: bool) -> Result<(), CliError> {
    let mut s = CtSocket::open().context("opening ctnetlink")?;
    for raw in s.dump_raw().context("dumping conntrack")? {
        if hex {
            let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            println!("{h}");
        }
        for (h, body) in split_messages(&raw).map_err(|e| anyhow!("{e}"))? {
            let m = CtMessage::parse(h, body).map_err(|e| anyhow!("{e}"))?;
            if let Some(e) = CtEntry::from_attrs(&m.attrs) {
                println!("{}", describe(&e));
            }
        }
    }
    Ok(())
}

fn describe(e: &CtEntry) -> String {
    let port = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "proto={} {}{} -> {}{} | reply {}{} -> {}{} status={:#x} timeout={} mark={} zone={}{}{}",
        e.orig.proto,
        e.orig.src,
        port(e.orig.src_port),
        e.orig.dst,
        port(e.orig.dst_port),
        e.reply.src,
        port(e.reply.src_port),
        e.reply.dst,
        port(e.reply.dst_port),
        e.status,
        e.timeout,
        e.mark,
        e.zone,
        e.snat()
            .map(|n| format!(" snat={}", n.min_ip))
            .unwrap_or_default(),
        e.dnat()
            .map(|n| format!(" dnat={}", n.min_ip))
            .unwrap_or_default(),
    )
}

/// Puts this process (and every thread it starts from now on) in SCHED_BATCH, unless the
/// service manager chose a policy already. The daemon is a throughput consumer: events and
/// frames wait in socket buffers sized for seconds of them, and a few milliseconds more
/// lag costs nothing. Under the normal policy each burst of kernel events (or each frame
/// on the standby) woke its threads and preempted whatever ran (the proxy, the kernel's
/// own work); batch threads wait for the running task's turn to end and then take a
/// larger burst at once. Measured with bench/conntrack's churn (RESULTS.md, fourth pass):
/// context switches of the event reader 5.6-6.2k -> 2.3-3.3k and of the runtime thread
/// 7.5-8.1k -> 2.5-5.1k in 9 s; medians of 5 runs, CPU per event: active -7 %, standby -16 %.
#[expect(
    unsafe_code,
    reason = "sched_setscheduler(2) has no safe wrapper in std or nix"
)]
fn batch_scheduling() {
    // SAFETY: plain syscalls on this thread; sched_param is initialised and outlives them.
    let policy = unsafe { libc::sched_getscheduler(0) } & !libc::SCHED_RESET_ON_FORK;
    if policy != libc::SCHED_OTHER {
        tracing::info!(policy, "scheduling policy set by the service manager: kept");
        return;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above; SCHED_BATCH at priority 0 needs no privilege.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "SCHED_BATCH refused: the daemon runs under the normal policy"
        );
    }
}

pub fn run_daemon(g: &Global, a: &SyncArgs) -> Result<(), CliError> {
    // No transparent huge pages for this process (the allocator asks for them on its
    // arenas): the standby's cache grows by hundreds of MiB in one resync, and each first
    // touch of a huge page zeroes 2 MiB in the receive path. Measured on the bench VM
    // (500k-entry resync): the standby's CPU 1.45 s with them, 0.58 s without; the cache's
    // lookups are random either way.
    crate::memory::no_huge_pages();
    batch_scheduling();
    let node = NodeConfig::load(&g.node)?;
    let key_path = if node.sync.key_file.is_relative() {
        g.node
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(&node.sync.key_file)
    } else {
        node.sync.key_file.clone()
    };
    let key_bytes = std::fs::read(&key_path)
        .with_context(|| format!("reading the sync key {}", key_path.display()))?;
    let key = Key::from_file_bytes(&key_bytes)
        .map_err(|e| anyhow!("sync key {}: {e}", key_path.display()))?;
    // Tenant subnets come from the policy; without a readable policy only SNAT entries
    // qualify (and --tenants-only then replicates nothing: refuse that).
    let sources = match Policy::load(&g.policy) {
        Ok(p) => p.tenants.iter().flat_map(|t| t.subnets.clone()).collect(),
        Err(e) if a.tenants_only => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "no policy: replicating SNAT entries only");
            Vec::new()
        }
    };
    let mut exclude: Vec<IpAddr> = vec![node.sync.address, node.peer.sync_address];
    exclude.extend(node.peer.fabric_address);
    exclude.extend(node.bgp.tor.iter().filter_map(|p| p.address));
    exclude.extend(node.bgp.upstream.iter().filter_map(|p| p.address));
    let metrics = (!a.no_metrics).then(|| {
        let mut m = node.control.metrics;
        m.set_port(m.port() + Daemon::ConntrackSync.metrics_port_offset());
        m
    });
    let cfg = DaemonConfig {
        node: node.node.name.clone(),
        listen: SocketAddr::new(node.sync.address, node.sync.port),
        peer: SocketAddr::new(node.peer.sync_address, node.sync.port),
        key,
        filter: Filter {
            sources,
            snat: !a.tenants_only,
            exclude,
        },
        role: a.role.parse::<Role>().map_err(|e| anyhow!(e))?,
        control_socket: Daemon::ConntrackSync.socket(&node.control.run_dir),
        metrics,
        cache_max: a.cache_max,
        direct_inject: if a.direct_inject {
            true
        } else if a.no_direct_inject {
            false
        } else {
            node.conntrack.direct_inject
        },
        batch: a.batch.max(1),
        rcvbuf: a.rcvbuf_mib << 20,
    };
    // One runtime thread: the kernel event reader, the direct-inject writer and the dumps
    // run on threads of their own, and what is left (the session, the standby's apply, the
    // control socket, metrics) is short work per wake-up. A second worker only added a
    // wake-up of each thread per burst of events (measured under churn: each context switch
    // costs the active and the standby more than the work it hands over).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        daemon::run(cfg, stop).await.map_err(anyhow::Error::from)
    })?;
    // The event thread blocks in recv(); leave without waiting for it.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
