//! `igw proxy`: the filtering proxy daemon (explicit, transparent HTTP, transparent TLS),
//! systemd-friendly: logs to stderr, access log as JSON lines, reload on SIGHUP or
//! `igw policy reload`, drains on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use igw_core::NodeConfig;
use igw_core::control::Daemon;
use igw_filter_proxy::access::AccessLog;
use igw_filter_proxy::dns::{DnsConfig, parse_hosts};
use igw_filter_proxy::{Limits, ProxyConfig, Shared};

use crate::{CliError, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Explicit proxy listener (`off` to disable); default 0.0.0.0:<[proxy] explicit_port>.
    #[arg(long)]
    pub explicit: Option<String>,
    /// Transparent HTTP listener (`off`); default [::]:<[proxy] http_port>.
    #[arg(long)]
    pub http: Option<String>,
    /// Transparent TLS listener (`off`); default [::]:<[proxy] https_port>.
    #[arg(long)]
    pub https: Option<String>,
    /// Prometheus metrics address (`off`); default [control] metrics.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Directory of the control socket; default [control] run_dir.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Name server `ip:port` (repeatable); default: the system's.
    #[arg(long = "dns")]
    pub dns: Vec<SocketAddr>,
    /// Static name entries, /etc/hosts format, consulted before DNS.
    #[arg(long)]
    pub hosts: Option<PathBuf>,
    /// Access log: `-` (stdout), a file path, or `off`.
    #[arg(long, default_value = "-")]
    pub access_log: String,
    /// Seconds a request head (or TLS ClientHello) may take to arrive in full.
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds without a byte either way before a connection is closed.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout: u64,
    /// Largest request head in bytes.
    #[arg(long, default_value_t = 16384)]
    pub max_header_bytes: usize,
    /// Client connections open at once, all tenants; a new one past it is closed at
    /// once and counted in igw_proxy_refused_connections{reason="limit-total"}.
    #[arg(long, default_value_t = 20000)]
    pub max_connections: usize,
    /// Client connections open at once from one tenant, so that one tenant cannot take
    /// them all; counted with reason="limit-tenant".
    #[arg(long, default_value_t = 10000)]
    pub max_connections_per_tenant: usize,
    /// Seconds a shutdown waits for open connections.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
    /// Worker threads (default: one per core); 1 runs a single-threaded scheduler.
    #[arg(long)]
    pub threads: Option<usize>,
}

fn addr(v: &Option<String>, default: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    match v.as_deref() {
        None => Ok(Some(default)),
        Some("off") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| anyhow!("`{s}` is not ip:port or off")),
    }
}

pub fn run(g: &Global, a: &Args) -> Result<(), CliError> {
    crate::memory::returns_promptly();
    // The node file gives ports and the control directory; without one (a lab or a test
    // run) the documented defaults apply.
    let node = if g.node.exists() {
        Some(NodeConfig::load(&g.node)?)
    } else {
        tracing::warn!(node = %g.node.display(), "no node file; using default ports and run dir");
        None
    };
    let ports = node.as_ref().map(|n| n.proxy.clone()).unwrap_or_default();
    let control = node.as_ref().map(|n| n.control.clone()).unwrap_or_default();
    let metrics_default = SocketAddr::new(
        control.metrics.ip(),
        control.metrics.port() + Daemon::Proxy.metrics_port_offset(),
    );
    let static_hosts = match &a.hosts {
        None => Default::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            parse_hosts(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?
        }
    };
    let run_dir = a.run_dir.clone().unwrap_or(control.run_dir);
    let cfg = ProxyConfig {
        policy_path: g.policy.clone(),
        explicit: addr(
            &a.explicit,
            SocketAddr::from(([0, 0, 0, 0], ports.explicit_port)),
        )?,
        transparent_http: addr(&a.http, SocketAddr::from(([0u16; 8], ports.http_port)))?,
        transparent_tls: addr(&a.https, SocketAddr::from(([0u16; 8], ports.https_port)))?,
        metrics: addr(&a.metrics, metrics_default)?,
        control_socket: Some(Daemon::Proxy.socket(&run_dir)),
        dns: DnsConfig {
            servers: a.dns.clone(),
            static_hosts,
            timeout: None,
        },
        limits: Limits {
            max_header_bytes: a.max_header_bytes,
            header_timeout: Duration::from_secs(a.header_timeout),
            idle_timeout: Duration::from_secs(a.idle_timeout),
            max_connections: a.max_connections,
            max_connections_per_tenant: a.max_connections_per_tenant,
            drain_timeout: Duration::from_secs(a.drain_timeout),
            ..Limits::default()
        },
    };
    // Validate the policy before anything starts: a bad one exits 2, as `igw check` does.
    igw_core::Policy::load(&g.policy)?;
    // One thread asked for: a single-threaded scheduler (no work stealing, no atomics on
    // every wake-up); a reload still compiles on the blocking pool, off this thread.
    let mut rt = match a.threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = rt.enable_all().build().context("tokio runtime")?;
    rt.block_on(async {
        let access = match a.access_log.as_str() {
            "off" => AccessLog::off(),
            "-" => AccessLog::start(Box::new(std::io::stdout())),
            p => AccessLog::start(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| p.to_string())?,
            )),
        };
        let shared = Shared::new(&cfg, access)?;
        igw_filter_proxy::control::run(cfg, shared).await?;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
