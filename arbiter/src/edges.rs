//! The arbiter's edges on a real node: health probes (the proxy's `health` command, the
//! `inet igw` table, BGP sessions and the upstream's default route through FRR), the
//! actions (conntrack-sync `commit` / `set-role`, FRR role prepend), heartbeats over UDP on
//! the sync link and the fabric, the control socket and the metrics endpoint; [`serve`]
//! wires them to [`daemon::run`].

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::Duration;

use igw_core::NodeConfig;
use igw_core::control::{self, Daemon, Request, Response};
use igw_fabric::{BgpSession, FrrDriver};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::daemon::{self, Command, Effects, InForce, Input, Outbox, Probe, Settings};
use crate::machine::{Action, HbPath, Health, State};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("heartbeat key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("cannot bind the heartbeat socket {addr}: {source}")]
    Heartbeat {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind the metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Reads the pre-shared key: the file's bytes without trailing whitespace (the same rule as
/// conntrack-sync, so one file serves both), at least 16 bytes.
pub fn load_key(path: &Path) -> Result<Vec<u8>, ServeError> {
    let err = |detail: String| ServeError::Key {
        path: path.to_path_buf(),
        detail,
    };
    let b = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end < 16 {
        return Err(err("a key of at least 16 bytes is required".into()));
    }
    Ok(b[..end].to_vec())
}

/// The real node: FRR through `vtysh`, conntrack-sync and the proxy over their control
/// sockets, `nft` for the table. Every call runs on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct NodeEffects {
    node: Arc<NodeConfig>,
    frr: FrrDriver,
}

impl NodeEffects {
    pub fn new(node: NodeConfig) -> Self {
        let frr = FrrDriver::for_node(&node);
        Self {
            node: Arc::new(node),
            frr,
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static, or: T) -> T {
    tokio::task::spawn_blocking(f).await.unwrap_or(or)
}

fn session_key(p: &igw_core::node::BgpPeer) -> String {
    match (&p.address, &p.interface) {
        (Some(a), _) => a.to_string(),
        (None, Some(i)) => i.clone(),
        (None, None) => String::new(),
    }
}

/// Judges BGP health from `show bgp summary`: every configured session (ToRs and upstreams)
/// established; the upstream probe passes when some upstream session is established and
/// has a route accepted from it (the inbound filter accepts only the default route, so that
/// is the default route). With no upstream session configured there is nothing to probe
/// and the check passes. Pure, for tests.
pub fn judge_bgp(node: &NodeConfig, sessions: &[BgpSession]) -> (bool, bool, Vec<String>) {
    let mut problems = Vec::new();
    let mut bgp = true;
    for p in node.bgp.tor.iter().chain(&node.bgp.upstream) {
        let key = session_key(p);
        let mine: Vec<&BgpSession> = sessions.iter().filter(|s| s.peer == key).collect();
        if !mine.iter().any(|s| s.established) {
            bgp = false;
            let state = mine
                .first()
                .map(|s| s.state.clone())
                .unwrap_or_else(|| "not configured in FRR".into());
            problems.push(format!("bgp: {} ({key}) {state}", p.name));
        }
    }
    let upstream = node.bgp.upstream.is_empty()
        || node.bgp.upstream.iter().any(|p| {
            let key = session_key(p);
            sessions
                .iter()
                .any(|s| s.peer == key && s.established && s.prefixes_received > 0)
        });
    if !upstream {
        problems.push("upstream: no default route received from any upstream".into());
    }
    (bgp, upstream, problems)
}

/// Whether `nft list tables` shows `table inet igw`. Listing names only: listing the table
/// itself would print every set element (100k+ with a large object table).
pub fn has_igw_table(list: &str) -> bool {
    list.lines().any(|l| l.trim() == "table inet igw")
}

fn probe_now(node: &NodeConfig, frr: &FrrDriver) -> Probe {
    let mut problems = Vec::new();
    let run_dir = &node.control.run_dir;
    let proxy = match control::call(
        run_dir,
        Daemon::Proxy,
        &Request::new("health"),
        Duration::from_secs(1),
    ) {
        Ok(r) if r.ok && r.data.get("healthy").and_then(|h| h.as_bool()) == Some(true) => true,
        Ok(r) => {
            problems.push(format!(
                "proxy: unhealthy ({})",
                r.error.unwrap_or_else(|| r.data.to_string())
            ));
            false
        }
        Err(e) => {
            problems.push(format!("proxy: {e}"));
            false
        }
    };
    let nft = match Process::new("nft")
        .args(["list", "tables"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() && has_igw_table(&String::from_utf8_lossy(&o.stdout)) => true,
        Ok(o) if o.status.success() => {
            problems.push("nft: table inet igw is missing".into());
            false
        }
        Ok(o) => {
            problems.push(format!(
                "nft: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            false
        }
        Err(e) => {
            problems.push(format!("nft: cannot run: {e}"));
            false
        }
    };
    let (bgp, upstream) = match frr.bgp_sessions() {
        Ok(s) => {
            let (b, u, p) = judge_bgp(node, &s);
            problems.extend(p);
            (b, u)
        }
        Err(e) => {
            problems.push(format!("frr: {e}"));
            (false, false)
        }
    };
    Probe {
        health: Health {
            proxy,
            nft,
            bgp,
            upstream,
        },
        problems,
    }
}

fn call_ok(run_dir: &Path, d: Daemon, req: &Request, t: Duration) -> Result<Response, String> {
    let r = control::call(run_dir, d, req, t).map_err(|e| e.to_string())?;
    if r.ok {
        Ok(r)
    } else {
        Err(r.error.unwrap_or_else(|| "refused".into()))
    }
}

fn perform_now(node: &NodeConfig, frr: &FrrDriver, a: &Action) -> Result<String, String> {
    let run_dir = &node.control.run_dir;
    match a {
        Action::CommitConntrack => {
            // Bounded: a huge cache takes seconds; past this the promotion goes on.
            let r = call_ok(
                run_dir,
                Daemon::ConntrackSync,
                &Request::new("commit"),
                Duration::from_secs(30),
            )?;
            Ok(format!(
                "conntrack {} commit: wrote {} of {} cached entries ({} already in the kernel, {} failed) in {} ms",
                r.data["mode"].as_str().unwrap_or("?"),
                r.data["written"],
                r.data["entries_cached"],
                r.data["already_in_kernel"],
                r.data["failed"],
                r.data["duration_ms"]
            ))
        }
        Action::ConntrackRole(active) => {
            let role = if *active { "active" } else { "standby" };
            call_ok(
                run_dir,
                Daemon::ConntrackSync,
                &Request::with_args("set-role", serde_json::json!({ "role": role })),
                Duration::from_secs(5),
            )?;
            Ok(format!("conntrack-sync {role}"))
        }
        Action::SetPrepend(n) => {
            let (took, path) = frr.set_prepend(node, *n).map_err(|e| e.to_string())?;
            Ok(format!(
                "prepend {n} in {:.3} s ({})",
                took.as_secs_f64(),
                match path {
                    igw_fabric::driver::Path::VtySocket => "bgpd vty socket",
                    igw_fabric::driver::Path::Vtysh => "vtysh",
                }
            ))
        }
        other => Err(format!("{other:?} is not an action for the node")),
    }
}

impl Effects for NodeEffects {
    fn probe(&self) -> impl Future<Output = Probe> + Send {
        let (node, frr) = (self.node.clone(), self.frr.clone());
        let failed = Probe {
            health: Health {
                proxy: false,
                nft: false,
                bgp: false,
                upstream: false,
            },
            problems: vec!["probe task failed".into()],
        };
        blocking(move || probe_now(&node, &frr), failed)
    }

    fn perform(&self, a: Action) -> impl Future<Output = Result<String, String>> + Send {
        let (node, frr) = (self.node.clone(), self.frr.clone());
        blocking(
            move || perform_now(&node, &frr, &a),
            Err("action task failed".into()),
        )
    }

    fn in_force(&self) -> impl Future<Output = InForce> + Send {
        let (node, frr) = (self.node.clone(), self.frr.clone());
        let failed = InForce {
            prepend: Err("task failed".into()),
            conntrack_active: Err("task failed".into()),
        };
        blocking(
            move || InForce {
                prepend: frr.prepend_in_force(&node).map_err(|e| e.to_string()),
                conntrack_active: call_ok(
                    &node.control.run_dir,
                    Daemon::ConntrackSync,
                    &Request::new("status"),
                    Duration::from_secs(2),
                )
                .map(|r| r.data["role"].as_str() == Some("active")),
            },
            failed,
        )
    }
}

/// Heartbeats over UDP: one socket on the heartbeat port; the destination is the peer's
/// sync or fabric address, and the kernel's routing picks the interface and source.
#[derive(Debug)]
pub struct UdpOutbox {
    sock: Arc<UdpSocket>,
    sync: SocketAddr,
    fabric: Option<SocketAddr>,
}

impl Outbox for UdpOutbox {
    fn send(&self, path: HbPath, msg: &[u8]) -> std::io::Result<()> {
        let to = match path {
            HbPath::Sync => self.sync,
            HbPath::Fabric => self.fabric.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no peer.fabric_address")
            })?,
        };
        self.sock.try_send_to(msg, to).map(|_| ())
    }
}

/// Which heartbeat path a datagram's source belongs to.
fn classify(node: &NodeConfig, src: IpAddr) -> Option<HbPath> {
    let src = src.to_canonical();
    if src == node.peer.sync_address {
        Some(HbPath::Sync)
    } else if node.peer.fabric_address == Some(src) {
        Some(HbPath::Fabric)
    } else {
        None
    }
}

async fn receive(
    sock: Arc<UdpSocket>,
    node: Arc<NodeConfig>,
    tx: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "heartbeat socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let path = classify(&node, src.ip());
        match tx.try_send(Input::Datagram(path, buf[..n].to_vec())) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => metrics.hb_dropped("overload"),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

fn parse_command(req: &Request) -> Result<Command, String> {
    match req.cmd.as_str() {
        "status" => Ok(Command::Status),
        "failover" => Ok(Command::Failover),
        "maintenance" => match req.args.get("on").and_then(|v| v.as_bool()) {
            Some(on) => Ok(Command::Maintenance(on)),
            None => Err("maintenance needs {\"on\": true|false}".into()),
        },
        other => Err(format!(
            "unknown command {other:?}; the arbiter knows status, failover, maintenance"
        )),
    }
}

async fn control_server(l: UnixListener, tx: mpsc::Sender<Input>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r).take(64 * 1024);
            let read = r.read_line(&mut line);
            if !matches!(
                tokio::time::timeout(Duration::from_secs(5), read).await,
                Ok(Ok(_))
            ) {
                return;
            }
            let resp = match serde_json::from_str::<Request>(&line)
                .map_err(|e| format!("bad request: {e}"))
                .and_then(|r| parse_command(&r))
            {
                Err(e) => Response::err(e),
                Ok(c) => {
                    let (rtx, rrx) = oneshot::channel();
                    if tx.send(Input::Control(c, rtx)).await.is_err() {
                        Response::err("the arbiter is stopping")
                    } else {
                        match rrx.await {
                            Ok(Ok(v)) => Response::ok(v),
                            Ok(Err(e)) => Response::err(e),
                            Err(_) => Response::err("the arbiter is stopping"),
                        }
                    }
                }
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
}

async fn metrics_server(l: TcpListener, m: Arc<Metrics>) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let m = m.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            // Read the request head (bounded), whatever it asks: there is one page.
            while got < buf.len() {
                match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf[got..])).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => got += n,
                }
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let body = m.encode();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

/// Options of `igw arbiter` beyond node.toml.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub no_metrics: bool,
}

/// Runs the arbiter of `node` until `shutdown`; returns the final state.
pub async fn serve(
    node: NodeConfig,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<State, ServeError> {
    let key = load_key(&node.sync.key_file)?;
    let set = Settings::from_node(&node, key);
    let port = node.sync.heartbeat_port;
    let bind = match node.sync.address {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    };
    let sock = Arc::new(
        UdpSocket::bind(bind)
            .await
            .map_err(|source| ServeError::Heartbeat { addr: bind, source })?,
    );
    let fabric = node.peer.fabric_address.and_then(|a| {
        if a.is_ipv4() == node.sync.address.is_ipv4() {
            Some(SocketAddr::new(a, port))
        } else {
            warn!(%a, "peer.fabric_address is not of the sync link's address family: no fabric heartbeat path");
            None
        }
    });
    let mut set = set;
    if fabric.is_none() {
        set.paths.retain(|p| *p == HbPath::Sync);
    }
    let out = UdpOutbox {
        sock: sock.clone(),
        sync: SocketAddr::new(node.peer.sync_address, port),
        fabric,
    };
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = daemon::channel();
    let node_arc = Arc::new(node.clone());
    tokio::spawn(receive(sock, node_arc, tx.clone(), metrics.clone()));

    let path = Daemon::Arbiter.socket(&node.control.run_dir);
    let cerr = |source| ServeError::Control {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&node.control.run_dir).map_err(cerr)?;
    // A socket file left by a previous run would make bind fail.
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).map_err(cerr)?;
    tokio::spawn(control_server(l, tx.clone()));

    if !opts.no_metrics {
        let mut addr = node.control.metrics;
        addr.set_port(addr.port() + Daemon::Arbiter.metrics_port_offset());
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Metrics { addr, source })?;
        info!(%addr, "metrics");
        tokio::spawn(metrics_server(l, metrics.clone()));
    }
    info!(socket = %path.display(), heartbeat = %bind, "arbiter listening");
    let effects = Arc::new(NodeEffects::new(node));
    let state = daemon::run(set, effects, out, (tx, rx), metrics, shutdown).await;
    let _ = std::fs::remove_file(&path);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn node() -> NodeConfig {
        let text = include_str!("../../examples/small/node-a.toml");
        NodeConfig::parse(Path::new("examples/small/node-a.toml"), text).unwrap()
    }

    fn s(peer: &str, state: &str, pfx: u64) -> BgpSession {
        BgpSession {
            peer: peer.into(),
            family: "ipv4Unicast".into(),
            state: state.into(),
            established: state == "Established",
            prefixes_received: pfx,
        }
    }

    #[test]
    fn bgp_judgement() {
        let n = node();
        // (sessions, bgp ok, upstream ok)
        let cases: Vec<(Vec<BgpSession>, bool, bool)> = vec![
            (
                vec![
                    s("198.19.1.0", "Established", 2),
                    s("198.19.2.0", "Established", 1),
                ],
                true,
                true,
            ),
            (
                vec![
                    s("198.19.1.0", "Established", 2),
                    s("198.19.2.0", "Established", 0),
                ],
                true,
                false,
            ),
            (
                vec![
                    s("198.19.1.0", "Active", 0),
                    s("198.19.2.0", "Established", 1),
                ],
                false,
                true,
            ),
            (vec![s("198.19.1.0", "Established", 2)], false, false),
            (vec![], false, false),
        ];
        for (sessions, b, u) in cases {
            let (gb, gu, problems) = judge_bgp(&n, &sessions);
            assert_eq!((gb, gu), (b, u), "{sessions:?}: {problems:?}");
            assert_eq!(problems.is_empty(), b && u);
        }
    }

    #[test]
    fn igw_table_in_listing() {
        assert!(has_igw_table("table ip nat\ntable inet igw\n"));
        assert!(!has_igw_table("table inet igwlab-freeze\n"));
        assert!(!has_igw_table(""));
    }

    #[test]
    fn source_classification() {
        let n = node();
        assert_eq!(
            classify(&n, "198.19.255.2".parse().unwrap()),
            Some(HbPath::Sync)
        );
        assert_eq!(
            classify(&n, "198.19.1.3".parse().unwrap()),
            Some(HbPath::Fabric)
        );
        assert_eq!(
            classify(&n, "::ffff:198.19.255.2".parse().unwrap()),
            Some(HbPath::Sync)
        );
        assert_eq!(classify(&n, "198.19.1.0".parse().unwrap()), None);
    }

    #[test]
    fn control_commands() {
        let ok = |j: &str| parse_command(&serde_json::from_str(j).unwrap());
        assert_eq!(ok(r#"{"cmd":"status"}"#), Ok(Command::Status));
        assert_eq!(ok(r#"{"cmd":"failover"}"#), Ok(Command::Failover));
        assert_eq!(
            ok(r#"{"cmd":"maintenance","args":{"on":true}}"#),
            Ok(Command::Maintenance(true))
        );
        assert!(ok(r#"{"cmd":"maintenance"}"#).is_err());
        assert!(ok(r#"{"cmd":"reboot"}"#).is_err());
    }
}
