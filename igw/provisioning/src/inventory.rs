//! `inventory.toml`: one site — the gateway pair, its BGP neighbours, the sync link, the NAT
//! pool, and the network catalog of bare-metal tenant servers (which ports are routed on the
//! host, which are L2). Validated like every igw config: `file:line:col: field: problem`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use igw_core::Policy;
use igw_core::addr::{self, AddrRange};
use igw_core::diag::{self, ConfigError, Diagnostic, Source};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub site: Site,
    pub gateways: Vec<Gateway>,
    #[serde(default)]
    pub tors: Vec<Tor>,
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// The site policy, loaded from `site.policy` (not part of the file).
    #[serde(skip)]
    pub policy: Option<Policy>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    /// The site policy (objects, tenants, rules), relative to the inventory.
    pub policy: Spanned<String>,
    /// Where the pre-shared key of sync and heartbeats lives on the nodes. The key itself is
    /// never in the inventory or the bundle.
    #[serde(default = "default_key_file")]
    pub key_file: String,
    /// The gateway pair's ASN.
    pub asn: u32,
    pub nat_pool: Vec<Spanned<String>>,
    #[serde(default = "one")]
    pub prepend_active: u8,
    #[serde(default = "three")]
    pub prepend_standby: u8,
    /// Management networks allowed to reach SSH and the control ports of the nodes.
    #[serde(default)]
    pub management: Vec<Spanned<String>>,
}

fn default_key_file() -> String {
    "/etc/igw/psk".into()
}
fn one() -> u8 {
    1
}
fn three() -> u8 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub name: Spanned<String>,
    pub id: u8,
    #[serde(default = "default_priority")]
    pub priority: u8,
    pub router_id: Ipv4Addr,
    /// Links toward the ToRs.
    pub fabric: Vec<GatewayLink>,
    /// Links toward the upstream routers.
    pub upstream: Vec<GatewayLink>,
    pub sync: SyncLink,
}

fn default_priority() -> u8 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayLink {
    pub interface: String,
    /// This node's address on the link (CIDR); absent for BGP unnumbered.
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    /// The neighbour: a `tors` or `upstreams` entry.
    pub neighbor: Spanned<String>,
    /// The neighbour's address; absent for BGP unnumbered (IPv6 link-local).
    #[serde(default)]
    pub peer: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncLink {
    pub interface: String,
    /// CIDR on the point-to-point sync link.
    pub address: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tor {
    pub name: Spanned<String>,
    pub asn: u32,
    pub router_id: Ipv4Addr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: Spanned<String>,
    pub asn: u32,
}

/// How a bare-metal server attaches to the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostMode {
    /// Routing on the host: BGP unnumbered to each ToR, ECMP, announces its own prefixes.
    Routed,
    /// A plain L2 port in the tenant's VLAN; the ToR owns the subnet.
    L2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: Spanned<String>,
    /// A tenant of the site policy.
    pub tenant: Spanned<String>,
    pub mode: HostMode,
    /// Routed hosts: their ASN (private 4-byte ASNs are usual).
    #[serde(default)]
    pub asn: Option<u32>,
    #[serde(default)]
    pub router_id: Option<Ipv4Addr>,
    /// Prefixes this host may announce (routed) or is addressed from (L2).
    pub prefixes: Vec<Spanned<String>>,
    pub uplinks: Vec<Uplink>,
    /// Container host: FRR's bgpd listens on 20179 beside a local BIRD on 179, and the
    /// gateways' default route is ranked by local-preference toward BIRD.
    #[serde(default)]
    pub caas: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    pub tor: Spanned<String>,
    /// The ToR's port facing the host.
    pub port: String,
    /// The host's interface facing the ToR.
    pub interface: String,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = diag::read_file(path).map_err(ConfigError::single)?;
        Self::parse(path, &text)
    }

    /// Parses and validates; the policy the site names is loaded relative to `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source::new(path, text);
        let mut inv: Inventory = diag::from_toml(&src)?;
        inv.path = path.to_path_buf();
        let policy_path = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(inv.site.policy.get_ref());
        let mut errs = Vec::new();
        match Policy::load(&policy_path) {
            Ok(p) => inv.policy = Some(p),
            Err(e) => errs.extend(e.diagnostics),
        }
        inv.validate(&src, &mut errs);
        if errs.is_empty() {
            Ok(inv)
        } else {
            Err(ConfigError { diagnostics: errs })
        }
    }

    fn validate(&self, src: &Source<'_>, errs: &mut Vec<Diagnostic>) {
        let mut err = |span: std::ops::Range<usize>, field: String, msg: String| {
            errs.push(src.diag(Some(span), field, msg));
        };
        if self.gateways.len() != 2 {
            err(
                0..0,
                "gateways".into(),
                format!(
                    "a site has exactly two gateway nodes, found {}",
                    self.gateways.len()
                ),
            );
        }
        for (i, p) in self.site.nat_pool.iter().enumerate() {
            if let Err(e) = p.get_ref().parse::<AddrRange>() {
                err(p.span(), format!("site.nat_pool[{i}]"), e);
            }
        }
        for (i, m) in self.site.management.iter().enumerate() {
            if let Err(e) = addr::parse_cidr(m.get_ref()) {
                err(m.span(), format!("site.management[{i}]"), e);
            }
        }
        if self.site.prepend_standby <= self.site.prepend_active {
            err(
                0..0,
                "site.prepend_standby".into(),
                "must be greater than prepend_active, or the standby attracts traffic".into(),
            );
        }
        let tors: BTreeSet<&str> = self
            .tors
            .iter()
            .map(|t| t.name.get_ref().as_str())
            .collect();
        let ups: BTreeSet<&str> = self
            .upstreams
            .iter()
            .map(|u| u.name.get_ref().as_str())
            .collect();
        let mut names = BTreeMap::new();
        let mut ids = BTreeMap::new();
        for (i, g) in self.gateways.iter().enumerate() {
            let f = |s: &str| format!("gateways[{i}].{s}");
            if names.insert(g.name.get_ref().clone(), ()).is_some() {
                err(
                    g.name.span(),
                    f("name"),
                    format!("gateway `{}` is listed twice", g.name.get_ref()),
                );
            }
            if g.id == 0 || ids.insert(g.id, ()).is_some() {
                err(
                    g.name.span(),
                    f("id"),
                    format!("id {} must be 1-255 and distinct", g.id),
                );
            }
            if g.fabric.is_empty() || g.upstream.is_empty() {
                err(
                    g.name.span(),
                    f("fabric"),
                    "a gateway needs fabric and upstream links".into(),
                );
            }
            for (side, links, known) in [
                ("fabric", &g.fabric, &tors),
                ("upstream", &g.upstream, &ups),
            ] {
                for (j, l) in links.iter().enumerate() {
                    if !known.contains(l.neighbor.get_ref().as_str()) {
                        let kind = if side == "fabric" {
                            "tors"
                        } else {
                            "upstreams"
                        };
                        err(
                            l.neighbor.span(),
                            format!("gateways[{i}].{side}[{j}].neighbor"),
                            format!("no {kind} entry named `{}`", l.neighbor.get_ref()),
                        );
                    }
                    if let Some(a) = &l.address
                        && let Err(e) = parse_if_addr(a.get_ref())
                    {
                        err(a.span(), format!("gateways[{i}].{side}[{j}].address"), e);
                    }
                    if l.address.is_some() != l.peer.is_some() {
                        err(
                            l.neighbor.span(),
                            format!("gateways[{i}].{side}[{j}]"),
                            "set both `address` and `peer` (numbered) or neither (unnumbered)"
                                .into(),
                        );
                    }
                }
            }
            if let Err(e) = parse_if_addr(g.sync.address.get_ref()) {
                err(g.sync.address.span(), f("sync.address"), e);
            }
        }
        let tenants: BTreeSet<&str> = self
            .policy
            .as_ref()
            .map(|p| p.tenants.iter().map(|t| t.name.as_str()).collect())
            .unwrap_or_default();
        let mut host_names = BTreeSet::new();
        let mut claimed: Vec<(IpNet, String)> = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let f = |s: &str| format!("hosts[{i}].{s}");
            let name = h.name.get_ref();
            if !host_names.insert(name.clone()) {
                err(
                    h.name.span(),
                    f("name"),
                    format!("host `{name}` is listed twice"),
                );
            }
            if self.policy.is_some() && !tenants.contains(h.tenant.get_ref().as_str()) {
                err(
                    h.tenant.span(),
                    f("tenant"),
                    format!("no tenant `{}` in the site policy", h.tenant.get_ref()),
                );
            }
            let subnets: Vec<IpNet> = self
                .policy
                .as_ref()
                .and_then(|p| p.tenants.iter().find(|t| &t.name == h.tenant.get_ref()))
                .map(|t| t.subnets.clone())
                .unwrap_or_default();
            for p in &h.prefixes {
                match addr::parse_cidr(p.get_ref()) {
                    Ok(n) => {
                        if !subnets.is_empty() && !subnets.iter().any(|s| s.contains(&n)) {
                            err(
                                p.span(),
                                f("prefixes"),
                                format!("{n} is outside tenant `{}`'s subnets", h.tenant.get_ref()),
                            );
                        }
                        let overlap = claimed
                            .iter()
                            .find(|(o, _)| o.contains(&n.network()) || n.contains(&o.network()));
                        if let Some((o, owner)) = overlap
                            && h.mode == HostMode::Routed
                        {
                            err(
                                p.span(),
                                f("prefixes"),
                                format!("{n} overlaps {o} announced by host `{owner}`"),
                            );
                        }
                        claimed.push((n, name.clone()));
                    }
                    Err(e) => err(p.span(), f("prefixes"), e),
                }
            }
            if h.mode == HostMode::Routed && (h.asn.is_none() || h.router_id.is_none()) {
                err(
                    h.name.span(),
                    f("asn"),
                    "a routed host needs `asn` and `router_id`".into(),
                );
            }
            if h.caas && h.mode != HostMode::Routed {
                err(
                    h.name.span(),
                    f("caas"),
                    "only a routed host can be a CaaS node".into(),
                );
            }
            if h.uplinks.is_empty() {
                err(
                    h.name.span(),
                    f("uplinks"),
                    "a host needs at least one uplink".into(),
                );
            }
            for (j, u) in h.uplinks.iter().enumerate() {
                if !tors.contains(u.tor.get_ref().as_str()) {
                    err(
                        u.tor.span(),
                        format!("hosts[{i}].uplinks[{j}].tor"),
                        format!("no tors entry named `{}`", u.tor.get_ref()),
                    );
                }
            }
        }
    }

    pub fn gateway(&self, name: &str) -> Option<&Gateway> {
        self.gateways.iter().find(|g| g.name.get_ref() == name)
    }

    pub fn tor(&self, name: &str) -> Option<&Tor> {
        self.tors.iter().find(|t| t.name.get_ref() == name)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name.get_ref() == name)
    }

    /// The other gateway of the pair.
    pub fn peer_of(&self, name: &str) -> Option<&Gateway> {
        self.gateways.iter().find(|g| g.name.get_ref() != name)
    }
}

/// An interface address: `198.19.1.1/31` (host bits allowed: it names an address on a
/// subnet, unlike a policy CIDR).
pub fn parse_if_addr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map_err(|_| format!("`{s}` is not an interface address like 198.19.1.1/31"))
}
