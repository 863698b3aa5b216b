//! `igw policy explain` (which rule decides a request, from the policy file alone) and
//! `igw policy reload` (ask the running proxy to re-read and swap its policy).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, anyhow};
use igw_core::control::{self, Daemon, Request};
use igw_core::{NodeConfig, Policy};
use igw_ruleset::l7::{HttpPart, Matcher, Query, TunnelKind, normalize_path, parse_authority};

use crate::{CliError, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print the decision for one request and the rule (and tenant) that made it.
    ///
    /// `http://` URLs are judged as an HTTP request (method, normalised path, query);
    /// `https://` URLs as a tunnel (CONNECT in explicit mode), whose path is not visible;
    /// with --sni, as a transparent TLS connection judged by that server name.
    Explain(ExplainArgs),
    /// Ask the running proxy to re-read the policy; an invalid policy is refused and the
    /// running one stays.
    Reload {
        /// Directory of the proxy's control socket; default: [control] run_dir of --node.
        #[arg(long)]
        run_dir: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Source address of the client (selects the tenant).
    #[arg(long)]
    pub src: IpAddr,
    /// The URL as the client asked for it.
    #[arg(long)]
    pub url: String,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Judge as transparent TLS with this SNI (the URL's host is then ignored).
    #[arg(long)]
    pub sni: Option<String>,
}

pub fn run(g: &Global, a: &Args) -> Result<(), CliError> {
    match &a.cmd {
        Cmd::Explain(e) => explain(g, e),
        Cmd::Reload { run_dir } => reload(g, run_dir.as_deref()),
    }
}

fn explain(g: &Global, a: &ExplainArgs) -> Result<(), CliError> {
    let policy = Policy::load(&g.policy)?;
    let m = Matcher::compile(&policy).map_err(|e| anyhow!("{}: {e}", g.policy.display()))?;
    let (scheme, rest) = a
        .url
        .split_once("://")
        .ok_or_else(|| anyhow!("`{}`: expected http://... or https://...", a.url))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        s => return Err(anyhow!("scheme `{s}`: expected http or https").into()),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, pathq) = rest.split_at(end);
    let pathq = pathq.split('#').next().unwrap_or("");
    let (raw_path, query) = match pathq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pathq, None),
    };
    let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
    let (mut host, port) =
        parse_authority(auth, default_port).map_err(|e| anyhow!("refused (400): {e}"))?;
    let tunnel = if let Some(sni) = &a.sni {
        host = igw_ruleset::l7::Host::parse(sni).map_err(|e| anyhow!("refused: SNI: {e}"))?;
        TunnelKind::Sni
    } else {
        TunnelKind::Connect
    };
    let path = normalize_path(raw_path).map_err(|e| anyhow!("refused (400): {e}"))?;
    let http = (scheme == "http" && a.sni.is_none()).then_some(HttpPart {
        method: &a.method,
        path: &path,
        query,
    });
    let q = Query {
        src: a.src,
        host: &host,
        port,
        http,
        tunnel,
        dst: host.ip(),
    };
    let d = m.decide(&q);
    let tenant = d.tenant.map(|t| m.tenant_name(t)).unwrap_or("(none)");
    let kind = match (http.is_some(), tunnel) {
        (true, _) => format!(
            "{} {}",
            a.method.to_ascii_uppercase(),
            Matcher::url_for_regex(&q)
        ),
        (false, TunnelKind::Sni) => format!("TLS SNI {host} port {port}"),
        (false, TunnelKind::Connect) => format!("CONNECT {host}:{port}"),
    };
    println!("{} {kind}", d.action);
    println!("  rule:   {}", m.decided_by_name(&d));
    println!("  tenant: {tenant}");
    Ok(())
}

fn reload(g: &Global, run_dir: Option<&std::path::Path>) -> Result<(), CliError> {
    let dir = match run_dir {
        Some(d) => d.to_path_buf(),
        None => NodeConfig::load(&g.node)?.control.run_dir,
    };
    let r = control::call(
        &dir,
        Daemon::Proxy,
        &Request::new("reload"),
        Duration::from_secs(30),
    )
    .context("reload")?;
    if r.ok {
        println!("proxy: policy reloaded {}", r.data);
        Ok(())
    } else {
        Err(anyhow!("proxy refused the reload: {}", r.error.unwrap_or_default()).into())
    }
}
