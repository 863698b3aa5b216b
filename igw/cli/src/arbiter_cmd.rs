//! `igw arbiter` (the daemon) and the operator's commands around it: `igw status`,
//! `igw failover`, `igw maintenance on|off`. The logic is in the `igw-arbiter` crate; this
//! module parses arguments, asks the daemons over their control sockets and prints.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use igw_arbiter::edges::{ServeOptions, serve};
use igw_core::NodeConfig;
use igw_core::control::{self, Daemon, Request};
use igw_fabric::FrrDriver;
use serde_json::{Value, json};

use crate::{CliError, Global};

/// Options of the daemon.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// No metrics endpoint.
    #[arg(long)]
    pub no_metrics: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Everything as one JSON object: `arbiter`, `conntrack_sync`, `bgp`, `bfd`,
    /// `prepend_in_force` (each an `{"error": ...}` object when unavailable).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Return once the arbiter accepted the request, without waiting for the peer to
    /// take over.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct MaintenanceArgs {
    /// `on`: hand the traffic to the peer (if this node is active and the peer can take
    /// it) and stay standby whatever happens; `off`: back in the election (standby).
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
    /// Return once the arbiter accepted the request, without waiting for the role change.
    #[arg(long)]
    pub no_wait: bool,
}

/// Puts this process (and the threads it starts from now on) in SCHED_RR at `prio`, with
/// SCHED_RESET_ON_FORK so the commands it runs (vtysh, nft) are ordinary processes. A
/// refusal (no CAP_SYS_NICE, RestrictRealtime) is a warning: the arbiter still works, only
/// less safe from CPU starvation.
#[expect(
    unsafe_code,
    reason = "sched_setscheduler(2) has no safe wrapper in std or nix"
)]
fn realtime(prio: u8) {
    // What the service manager may already have set (the image's unit sets SCHED_RR with
    // CPUSchedulingPolicy=, and forbids the daemon to set it itself with RestrictRealtime=).
    // SAFETY: plain syscalls on this thread; sched_param is initialised and outlives them.
    let (policy, current) = unsafe {
        let mut p = libc::sched_param { sched_priority: 0 };
        let policy = libc::sched_getscheduler(0) & !libc::SCHED_RESET_ON_FORK;
        libc::sched_getparam(0, &mut p);
        (policy, p.sched_priority)
    };
    let is_rt = policy == libc::SCHED_RR || policy == libc::SCHED_FIFO;
    if prio == 0 {
        if is_rt {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as above; lowering to SCHED_OTHER needs no privilege.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
            tracing::info!("realtime_priority = 0: arbiter runs as a normal process");
        }
        return;
    }
    if is_rt && current == i32::from(prio) {
        tracing::info!(
            priority = prio,
            "arbiter runs with real-time priority (set by the service manager)"
        );
        return;
    }
    let param = libc::sched_param {
        sched_priority: i32::from(prio),
    };
    // SAFETY: plain syscall on this thread with a valid, initialised sched_param.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        tracing::info!(
            priority = prio,
            "arbiter runs with real-time priority (SCHED_RR)"
        );
    } else {
        tracing::warn!(
            priority = prio,
            already = is_rt.then_some(current),
            error = %std::io::Error::last_os_error(),
            "cannot set real-time priority (needs CAP_SYS_NICE, or CPUSchedulingPolicy=rr in the unit); heartbeats may be delayed under CPU load"
        );
    }
}

pub fn run_daemon(g: &Global, a: &DaemonArgs) -> Result<(), CliError> {
    let node = NodeConfig::load(&g.node)?;
    // Before the runtime starts: its threads inherit the policy.
    realtime(node.arbiter.realtime_priority);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let state = rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        serve(
            node,
            ServeOptions {
                no_metrics: a.no_metrics,
            },
            stop,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    tracing::info!(role = state.role.as_str(), prepend = state.prepend, "exit");
    Ok(())
}

fn arbiter(node: &NodeConfig, req: &Request) -> Result<Value, String> {
    let r = control::call(
        &node.control.run_dir,
        Daemon::Arbiter,
        req,
        Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    if r.ok {
        Ok(r.data)
    } else {
        Err(r.error.unwrap_or_else(|| "refused".into()))
    }
}

fn or_error<T: serde::Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(v) => serde_json::to_value(v).unwrap_or(Value::Null),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

pub fn status(g: &Global, a: &StatusArgs) -> Result<(), CliError> {
    let node = NodeConfig::load(&g.node)?;
    let arb = arbiter(&node, &Request::new("status"));
    let ct = control::call(
        &node.control.run_dir,
        Daemon::ConntrackSync,
        &Request::new("status"),
        Duration::from_secs(2),
    )
    .map_err(|e| e.to_string())
    .and_then(|r| {
        if r.ok {
            Ok(r.data)
        } else {
            Err(r.error.unwrap_or_default())
        }
    });
    let frr = FrrDriver::for_node(&node);
    let bgp = frr.bgp_sessions();
    let bfd = frr.bfd_sessions();
    let prepend = frr.prepend_in_force(&node);
    let arbiter_down = arb.is_err();
    if a.json {
        let v = json!({
            "node": node.node.name,
            "arbiter": or_error(arb),
            "conntrack_sync": or_error(ct),
            "bgp": or_error(bgp),
            "bfd": or_error(bfd),
            "prepend_in_force": or_error(prepend),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_status(&node, &arb, &ct, &bgp, &bfd, &prepend);
    }
    if arbiter_down {
        return Err(anyhow!(
            "the arbiter of {} is not running: its role is unknown",
            node.node.name
        )
        .into());
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_status(
    node: &NodeConfig,
    arb: &Result<Value, String>,
    ct: &Result<Value, String>,
    bgp: &Result<Vec<igw_fabric::BgpSession>, igw_fabric::FrrError>,
    bfd: &Result<Vec<igw_fabric::BfdSession>, igw_fabric::FrrError>,
    prepend: &Result<u8, igw_fabric::FrrError>,
) {
    let in_force = match prepend {
        Ok(n) => n.to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    match arb {
        Ok(d) => {
            println!(
                "node {} (id {}, priority {}): {} — {}",
                node.node.name,
                d["id"],
                d["priority"],
                s(&d["role"]).to_uppercase(),
                s(&d["reason"])
            );
            println!(
                "  in this role for {:.1} s; prepend ordered {}, in force in FRR {}{}{}",
                d["role_since_s"].as_f64().unwrap_or(0.0),
                d["prepend"],
                in_force,
                if d["takeover"] == true {
                    " (take-over)"
                } else {
                    ""
                },
                if d["maintenance"] == true {
                    "; maintenance on"
                } else {
                    ""
                },
            );
            let problems: Vec<String> = d["problems"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            if problems.is_empty() {
                println!("  health: ok (proxy, nft table, BGP sessions, upstream route)");
            } else {
                println!("  health: FAILING: {}", problems.join("; "));
            }
            let p = &d["peer"];
            if p.is_null() {
                println!("peer {}: never heard", node.peer.name);
            } else {
                let path = |n: &str| {
                    format!(
                        "{} {}",
                        n,
                        if p["paths"][n] == true {
                            format!("ok ({} ms ago)", p["last_seen_ms"][n])
                        } else {
                            "DOWN".to_string()
                        }
                    )
                };
                println!(
                    "peer {}: {}{}, {}, {}, prepend {}; heartbeats {}, {}",
                    node.peer.name,
                    if p["alive"] == true {
                        ""
                    } else {
                        "LOST, last seen "
                    },
                    s(&p["role"]),
                    if p["failing"].as_str().unwrap_or("").is_empty() {
                        "healthy".to_string()
                    } else {
                        format!("failing: {}", s(&p["failing"]))
                    },
                    if p["eligible"] == true {
                        "eligible"
                    } else {
                        "not eligible"
                    },
                    p["prepend"],
                    path("sync"),
                    path("fabric"),
                );
            }
            let h = &d["heartbeats"];
            let dropped: Vec<String> = h["dropped"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "  heartbeats: sent {}/{} received {}/{} (sync/fabric), dropped: {}",
                h["sent"]["sync"],
                h["sent"]["fabric"],
                h["received"]["sync"],
                h["received"]["fabric"],
                if dropped.is_empty() {
                    "none".into()
                } else {
                    dropped.join(", ")
                }
            );
            let ac = &d["actions"];
            if !ac["last_error"].is_null() {
                println!(
                    "  last failed action: {} — {}",
                    s(&ac["last_error"]["action"]),
                    s(&ac["last_error"]["error"])
                );
            }
        }
        Err(e) => {
            println!(
                "node {}: ARBITER NOT RUNNING ({e}); prepend in force in FRR {in_force}",
                node.node.name
            );
        }
    }
    match bgp {
        Ok(v) => {
            println!("BGP sessions:");
            for x in v {
                println!(
                    "  {:<18} {:<14} {:<12} {} prefixes received",
                    x.peer, x.family, x.state, x.prefixes_received
                );
            }
        }
        Err(e) => println!("BGP sessions: unavailable ({e})"),
    }
    match bfd {
        Ok(v) => {
            println!("BFD sessions:");
            for x in v {
                println!("  {:<18} {}", x.peer, x.status);
            }
        }
        Err(e) => println!("BFD sessions: unavailable ({e})"),
    }
    match ct {
        Ok(c) => {
            let inject = if c["inject"].is_object() {
                format!(
                    ", direct inject: {} in this kernel, {} owed",
                    c["inject"]["in_kernel"], c["inject"]["owed"]
                )
            } else {
                String::new()
            };
            println!(
                "conntrack-sync: {}, peer {} connected={}, {} entries cached, lag {} ms{inject}",
                s(&c["role"]),
                s(&c["peer"]),
                c["peer_connected"],
                c["entries_cached"],
                c["replication_lag_ms"]
            )
        }
        Err(e) => println!("conntrack-sync: NOT RUNNING ({e})"),
    }
}

/// Polls the arbiter's status until `done` says so, at most `limit`.
fn wait_for(node: &NodeConfig, limit: Duration, done: impl Fn(&Value) -> bool) -> Option<Value> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        if let Ok(v) = arbiter(node, &Request::new("status")) {
            if done(&v) {
                return Some(v);
            }
            last = Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    last.filter(|v| done(v))
}

fn handover_limit(v: &Value) -> Duration {
    let ms = v["timers_ms"]["handover_timeout"].as_u64().unwrap_or(2000)
        + v["timers_ms"]["detect"].as_u64().unwrap_or(150);
    Duration::from_millis(ms) + Duration::from_secs(1)
}

pub fn failover(g: &Global, a: &FailoverArgs) -> Result<(), CliError> {
    let node = NodeConfig::load(&g.node)?;
    let before = arbiter(&node, &Request::new("status")).map_err(|e| anyhow!(e))?;
    let r = arbiter(&node, &Request::new("failover")).map_err(|e| anyhow!("failover: {e}"))?;
    println!("{}: {}", node.node.name, s(&r["message"]));
    if a.no_wait {
        return Ok(());
    }
    let done = |v: &Value| {
        v["role"] != "active"
            || v["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("failover cancelled"))
    };
    match wait_for(&node, handover_limit(&before), done) {
        Some(v) if v["role"] != "active" => {
            println!(
                "{}: {} — {}",
                node.node.name,
                s(&v["role"]),
                s(&v["reason"])
            );
            Ok(())
        }
        Some(v) => Err(anyhow!("{}: {}", node.node.name, s(&v["reason"])).into()),
        None => Err(anyhow!(
            "{}: still active after the handover timeout; see `igw status`",
            node.node.name
        )
        .into()),
    }
}

pub fn maintenance(g: &Global, a: &MaintenanceArgs) -> Result<(), CliError> {
    let node = NodeConfig::load(&g.node)?;
    let on = a.state == "on";
    let before = arbiter(&node, &Request::new("status")).map_err(|e| anyhow!(e))?;
    let r = arbiter(
        &node,
        &Request::with_args("maintenance", json!({ "on": on })),
    )
    .map_err(|e| anyhow!("maintenance: {e}"))?;
    println!("{}: {}", node.node.name, s(&r["message"]));
    if a.no_wait {
        return Ok(());
    }
    let done = |v: &Value| (v["role"] == "maintenance") == on;
    match wait_for(&node, handover_limit(&before), done) {
        Some(v) => {
            println!(
                "{}: {} — {}",
                node.node.name,
                s(&v["role"]),
                s(&v["reason"])
            );
            Ok(())
        }
        None => Err(anyhow!(
            "{}: the role did not change in time; see `igw status`",
            node.node.name
        )
        .into()),
    }
}
