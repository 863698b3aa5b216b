//! Name resolution for the proxy: hickory's async resolver (caching, timeouts) against
//! the system's or configured name servers, with static entries consulted first (tests,
//! and sites that pin a name).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};

#[derive(Debug, Clone, Default)]
pub struct DnsConfig {
    /// Name servers (`ip:port`); empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Names answered without asking DNS (lower-case, no trailing dot).
    pub static_hosts: HashMap<String, Vec<IpAddr>>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("resolver setup: {0}")]
    Setup(String),
    #[error("{name}: {msg}")]
    Lookup { name: String, msg: String },
}

#[derive(Debug, Clone)]
pub struct Dns {
    resolver: TokioResolver,
    static_hosts: HashMap<String, Vec<IpAddr>>,
}

impl Dns {
    pub fn new(cfg: &DnsConfig) -> Result<Dns, DnsError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = cfg.timeout.unwrap_or(Duration::from_secs(3));
        opts.attempts = 2;
        opts.cache_size = 4096;
        let builder = if cfg.servers.is_empty() {
            Resolver::builder(TokioRuntimeProvider::default())
                .map_err(|e| DnsError::Setup(e.to_string()))?
        } else {
            let servers = cfg
                .servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Dns {
            resolver,
            static_hosts: cfg.static_hosts.clone(),
        })
    }

    /// Addresses of a normalised name (FQDN lookup: no search domains).
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(a) = self.static_hosts.get(name) {
            return Ok(a.clone());
        }
        let fqdn = format!("{name}.");
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(l) => {
                let v: Vec<IpAddr> = l.iter().collect();
                if v.is_empty() {
                    Err(DnsError::Lookup {
                        name: name.into(),
                        msg: "no address".into(),
                    })
                } else {
                    Ok(v)
                }
            }
            Err(e) => Err(DnsError::Lookup {
                name: name.into(),
                msg: e.to_string(),
            }),
        }
    }
}

/// Parses `/etc/hosts`-style text: `address name [name...]`, `#` comments.
pub fn parse_hosts(text: &str) -> Result<HashMap<String, Vec<IpAddr>>, String> {
    let mut out: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let ip: IpAddr = it
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| format!("line {}: not an address", n + 1))?;
        for name in it {
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            out.entry(key).or_default().push(ip);
        }
    }
    Ok(out)
}
