//! `node.toml`: this node's identity, interfaces, BGP peers, peer node, sync link, NAT pool
//! and local ports. One file per node; the two nodes of a pair differ in identity and
//! addresses only.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addr::{self, AddrRange};
use crate::diag::{self, ConfigError, Source};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: Identity,
    pub interfaces: Interfaces,
    pub bgp: Bgp,
    #[serde(default)]
    pub bfd: Bfd,
    pub peer: Peer,
    pub sync: Sync,
    pub nat: Nat,
    #[serde(default)]
    pub proxy: ProxyPorts,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub management: Management,
    #[serde(default)]
    pub conntrack: Conntrack,
    #[serde(default)]
    pub arbiter: ArbiterTimers,
    #[serde(default)]
    pub fabric: Fabric,
}

/// How igw reaches this node's FRR.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fabric {
    /// FRR pathspace (`vtysh -N <name>`); empty for the system's single FRR instance.
    /// Tests run one FRR per network namespace, each with its own pathspace.
    #[serde(default)]
    pub frr_pathspace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Host name of this gateway node, e.g. `igw-a`.
    pub name: String,
    /// 1-255, distinct from the peer's; the lower id wins an election tie.
    pub id: u8,
    /// Higher wins the first election; no preemption afterwards.
    #[serde(default = "default_priority")]
    pub priority: u8,
    pub router_id: std::net::Ipv4Addr,
}

fn default_priority() -> u8 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interfaces {
    /// Interfaces toward the ToRs: tenant traffic enters here.
    pub fabric: Vec<String>,
    /// Interfaces toward the upstream routers: the Internet side, where SNAT applies.
    pub upstream: Vec<String>,
    /// The point-to-point link to the peer node (state sync and heartbeats).
    pub sync: String,
    /// Out-of-band management interface, if any.
    #[serde(default)]
    pub management: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    pub asn: u32,
    /// AS-path prepend count while active. One prepend in steady state lets a promoted
    /// standby (zero prepends) win at once, before the dead active's path is withdrawn.
    #[serde(default = "default_prepend_active")]
    pub prepend_active: u8,
    /// AS-path prepend count while standby, maintenance or fault.
    #[serde(default = "default_prepend_standby")]
    pub prepend_standby: u8,
    #[serde(default = "default_keepalive")]
    pub keepalive_s: u16,
    #[serde(default = "default_holdtime")]
    pub holdtime_s: u16,
    /// eBGP sessions toward the fabric: the default route is advertised to them.
    #[serde(default)]
    pub tor: Vec<BgpPeer>,
    /// eBGP sessions toward the Internet: the NAT pool is advertised to them.
    #[serde(default)]
    pub upstream: Vec<BgpPeer>,
}

fn default_prepend_active() -> u8 {
    1
}
fn default_prepend_standby() -> u8 {
    3
}
fn default_keepalive() -> u16 {
    3
}
fn default_holdtime() -> u16 {
    9
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    pub name: String,
    /// Numbered session: the peer's address.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// Unnumbered session (IPv6 link-local): the interface.
    #[serde(default)]
    pub interface: Option<String>,
    pub asn: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bfd {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_bfd_interval")]
    pub interval_ms: u32,
    #[serde(default = "default_bfd_multiplier")]
    pub multiplier: u8,
}

impl Default for Bfd {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: default_bfd_interval(),
            multiplier: default_bfd_multiplier(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_bfd_interval() -> u32 {
    100
}
fn default_bfd_multiplier() -> u8 {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    /// The peer's address on the sync link (sync and first heartbeat path).
    pub sync_address: IpAddr,
    /// The peer's address on the fabric side (second heartbeat path).
    #[serde(default)]
    pub fabric_address: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    /// This node's address on the sync link.
    pub address: IpAddr,
    #[serde(default = "default_sync_port")]
    pub port: u16,
    #[serde(default = "default_heartbeat_port")]
    pub heartbeat_port: u16,
    /// File holding the pre-shared key (HMAC-SHA256) of sync and heartbeats.
    pub key_file: PathBuf,
}

fn default_sync_port() -> u16 {
    7400
}
fn default_heartbeat_port() -> u16 {
    7401
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nat {
    /// Public source addresses for tenant egress: addresses, `a-b` ranges or CIDRs.
    pub pool: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPorts {
    /// Transparent HTTP (diverted tenant tcp/80).
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Transparent HTTPS (diverted tenant tcp/443), judged by SNI.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// Explicit forward proxy (absolute-form and CONNECT).
    #[serde(default = "default_explicit_port")]
    pub explicit_port: u16,
}

impl Default for ProxyPorts {
    fn default() -> Self {
        Self {
            http_port: default_http_port(),
            https_port: default_https_port(),
            explicit_port: default_explicit_port(),
        }
    }
}

fn default_http_port() -> u16 {
    3129
}
fn default_https_port() -> u16 {
    3130
}
fn default_explicit_port() -> u16 {
    3128
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Directory of the daemons' local control sockets.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// Prometheus metrics of the proxy, the arbiter and conntrack-sync (one port each,
    /// counting up from this one).
    #[serde(default = "default_metrics")]
    pub metrics: SocketAddr,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            run_dir: default_run_dir(),
            metrics: default_metrics(),
        }
    }
}

fn default_run_dir() -> PathBuf {
    PathBuf::from(crate::paths::RUN_DIR)
}
fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9184))
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Management {
    /// Sources allowed to reach SSH and the control ports of the node itself.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
}

fn default_ssh_port() -> u16 {
    22
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conntrack {
    /// `net.netfilter.nf_conntrack_max`.
    #[serde(default = "default_ct_max")]
    pub max_entries: u32,
    /// The standby writes each replicated entry into its own kernel table as it arrives
    /// (and tracks what the kernel holds), so a promotion commits only what is not there
    /// yet instead of the whole cache: the commit leaves the failover's critical path.
    /// Costs the standby kernel entries (counted against `max_entries`) and CPU while the
    /// active's table churns. `false` keeps entries in the daemon's cache until promotion
    /// (the conntrackd way). See conntrack-sync/README.md.
    #[serde(default = "default_true")]
    pub direct_inject: bool,
}

impl Default for Conntrack {
    fn default() -> Self {
        Self {
            max_entries: default_ct_max(),
            direct_inject: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_ct_max() -> u32 {
    2_097_152
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArbiterTimers {
    #[serde(default = "default_hb_interval")]
    pub heartbeat_interval_ms: u32,
    /// Missed heartbeats on every path before the peer is declared dead.
    #[serde(default = "default_hb_misses")]
    pub heartbeat_misses: u32,
    /// Local health must stay good this long before a node may become active again.
    #[serde(default = "default_hold_down")]
    pub hold_down_ms: u32,
    /// How often local health is probed (proxy, `inet igw` table, BGP sessions, upstream
    /// route). Each probe runs `nft` and `vtysh`, so it is slower than the heartbeats; it
    /// bounds how fast a half-failure (proxy dead, node alive) is seen.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_ms: u32,
    /// Real-time priority (SCHED_RR, 1-99) of the arbiter daemon, so that CPU starvation on
    /// a busy node does not delay its heartbeats past the peer's detection time (a false
    /// take-over); 0 runs it as a normal process. Commands it runs (vtysh, nft) are not
    /// real-time. Needs CAP_SYS_NICE; without it the daemon warns and runs normally.
    #[serde(default = "default_rt_priority")]
    pub realtime_priority: u8,
}

impl Default for ArbiterTimers {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: default_hb_interval(),
            heartbeat_misses: default_hb_misses(),
            hold_down_ms: default_hold_down(),
            probe_interval_ms: default_probe_interval(),
            realtime_priority: default_rt_priority(),
        }
    }
}

fn default_hb_interval() -> u32 {
    20
}
fn default_hb_misses() -> u32 {
    3
}
fn default_rt_priority() -> u8 {
    10
}
fn default_hold_down() -> u32 {
    2000
}
fn default_probe_interval() -> u32 {
    200
}

impl NodeConfig {
    /// Reads and validates a node file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = diag::read_file(path).map_err(ConfigError::single)?;
        Self::parse(path, &text)
    }

    /// Parses and validates node text; `path` is only used in diagnostics.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source::new(path, text);
        let mut cfg: NodeConfig = diag::from_toml(&src)?;
        cfg.validate(&src)?;
        // Relative paths in node.toml are relative to the file itself, so a bundle can be
        // checked where it was rendered and installed unchanged.
        if let Some(dir) = path.parent().filter(|_| cfg.sync.key_file.is_relative()) {
            cfg.sync.key_file = dir.join(&cfg.sync.key_file);
        }
        Ok(cfg)
    }

    fn validate(&self, src: &Source<'_>) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        // Node values carry no spans (they are few and named); point at the key instead.
        let mut err = |field: &str, msg: String| {
            let span = find_key(src.text, field.rsplit('.').next().unwrap_or(field));
            errs.push(src.diag(span, field, msg));
        };
        if self.node.name.trim().is_empty() {
            err("node.name", "must not be empty".into());
        }
        if self.node.id == 0 {
            err("node.id", "must be 1-255".into());
        }
        if self.interfaces.fabric.is_empty() {
            err(
                "interfaces.fabric",
                "at least one fabric interface is required".into(),
            );
        }
        if self.interfaces.upstream.is_empty() {
            err(
                "interfaces.upstream",
                "at least one upstream interface is required".into(),
            );
        }
        if self.bgp.prepend_standby <= self.bgp.prepend_active {
            err(
                "bgp.prepend_standby",
                format!(
                    "must be greater than prepend_active ({}), or the standby attracts traffic",
                    self.bgp.prepend_active
                ),
            );
        }
        if self.bgp.holdtime_s < 3 * self.bgp.keepalive_s {
            err("bgp.holdtime_s", "must be at least 3 x keepalive_s".into());
        }
        for (i, p) in self
            .bgp
            .tor
            .iter()
            .chain(self.bgp.upstream.iter())
            .enumerate()
        {
            if p.address.is_some() == p.interface.is_some() {
                err(
                    &format!("bgp peer {} ({i})", p.name),
                    "set exactly one of `address` (numbered) or `interface` (unnumbered)".into(),
                );
            }
        }
        if self.bfd.interval_ms < 10 || self.bfd.multiplier == 0 {
            err(
                "bfd.interval_ms",
                "interval must be >= 10 ms and multiplier >= 1".into(),
            );
        }
        if self.peer.sync_address == self.sync.address {
            err(
                "peer.sync_address",
                "equals this node's sync.address".into(),
            );
        }
        if self.nat.pool.is_empty() {
            err("nat.pool", "at least one public address is required".into());
        }
        let mut ranges: Vec<AddrRange> = Vec::new();
        for s in &self.nat.pool {
            match s.parse::<AddrRange>() {
                Ok(r) => {
                    if let Some(o) = ranges.iter().find(|o| o.overlaps(&r)) {
                        err("nat.pool", format!("`{s}` overlaps `{o}`"));
                    }
                    ranges.push(r);
                }
                Err(e) => err("nat.pool", e),
            }
        }
        for s in &self.management.sources {
            if let Err(e) = addr::parse_cidr(s) {
                err("management.sources", e);
            }
        }
        let p = &self.proxy;
        let ports = [
            p.http_port,
            p.https_port,
            p.explicit_port,
            self.sync.port,
            self.sync.heartbeat_port,
        ];
        for (i, a) in ports.iter().enumerate() {
            if *a == 0 {
                err("proxy", "port 0 is not a valid port".into());
            }
            if ports[..i].contains(a) {
                err(
                    "proxy",
                    format!("port {a} is used twice among proxy and sync ports"),
                );
            }
        }
        if self.arbiter.realtime_priority > 99 {
            err(
                "arbiter.realtime_priority",
                "must be 0 (off) or a SCHED_RR priority 1-99".into(),
            );
        }
        if self.arbiter.probe_interval_ms == 0 {
            err("arbiter.probe_interval_ms", "must be >= 1".into());
        }
        if self.arbiter.heartbeat_misses == 0 || self.arbiter.heartbeat_interval_ms == 0 {
            err(
                "arbiter.heartbeat_misses",
                "interval and misses must be >= 1".into(),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { diagnostics: errs })
        }
    }

    /// The NAT pool as address ranges (validated at load).
    pub fn nat_pool(&self) -> Vec<AddrRange> {
        self.nat
            .pool
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// Management sources as networks (validated at load).
    pub fn management_sources(&self) -> Vec<IpNet> {
        self.management
            .sources
            .iter()
            .filter_map(|s| addr::parse_cidr(s).ok())
            .collect()
    }

    /// Addresses of every configured BGP peer with a numbered session.
    pub fn bgp_peer_addresses(&self) -> Vec<IpAddr> {
        self.bgp
            .tor
            .iter()
            .chain(&self.bgp.upstream)
            .filter_map(|p| p.address)
            .collect()
    }
}

/// Span of the first `key =` in the text, so node-level errors still point at a line.
fn find_key(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let start = off + (line.len() - t.len());
            return Some(start..start + key.len());
        }
        off += line.len();
    }
    None
}
