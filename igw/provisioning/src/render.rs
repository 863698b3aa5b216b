//! Pure rendering from a validated inventory: each gateway's node.toml, the ToRs' downlink
//! filters (each bare-metal host may announce only its own prefixes), and the FRR config of
//! a routed-on-host tenant server. No I/O: the CLI writes what these return.

use std::fmt::Write as _;
use std::path::Path;

use igw_core::NodeConfig;

use crate::inventory::{HostMode, Inventory, parse_if_addr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("no gateway named `{0}` in the inventory (gateways: {1})")]
    NoGateway(String, String),
    #[error("no ToR named `{0}` in the inventory (tors: {1})")]
    NoTor(String, String),
    #[error("no host named `{0}` in the inventory")]
    NoHost(String),
    #[error("host `{0}` is not routed on the host (mode l2): it runs no FRR")]
    NotRouted(String),
    #[error("the rendered node.toml for `{0}` does not validate (an igw bug):\n{1}")]
    Invalid(String, String),
}

/// TOML string literal.
fn q(s: &str) -> String {
    toml::Value::from(s).to_string()
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    format!(
        "[{}]",
        items
            .into_iter()
            .map(|s| q(&s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// This gateway's node.toml, validated by the same loader the node runs.
pub fn node_toml(inv: &Inventory, name: &str) -> Result<String, RenderError> {
    let names = || {
        inv.gateways
            .iter()
            .map(|g| g.name.get_ref().clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let g = inv
        .gateway(name)
        .ok_or_else(|| RenderError::NoGateway(name.into(), names()))?;
    let peer = inv
        .peer_of(name)
        .ok_or_else(|| RenderError::NoGateway("(peer)".into(), names()))?;
    let addr = |s: &str| {
        parse_if_addr(s)
            .map(|n| n.addr().to_string())
            .unwrap_or_default()
    };

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# node.toml of {name}, rendered by `igw provision render` from the inventory of site {}.",
        q(&inv.site.name)
    );
    let _ = writeln!(
        t,
        "# Do not edit on the node: change the inventory and render again.\n"
    );
    let _ = writeln!(
        t,
        "[node]\nname = {}\nid = {}\npriority = {}\nrouter_id = {}\n",
        q(name),
        g.id,
        g.priority,
        q(&g.router_id.to_string())
    );
    let _ = writeln!(
        t,
        "[interfaces]\nfabric = {}\nupstream = {}\nsync = {}\n",
        list(g.fabric.iter().map(|l| l.interface.clone())),
        list(g.upstream.iter().map(|l| l.interface.clone())),
        q(&g.sync.interface)
    );
    let _ = writeln!(
        t,
        "[bgp]\nasn = {}\nprepend_active = {}\nprepend_standby = {}\n",
        inv.site.asn, inv.site.prepend_active, inv.site.prepend_standby
    );
    for (section, links) in [("tor", &g.fabric), ("upstream", &g.upstream)] {
        for l in links {
            let n = l.neighbor.get_ref();
            let asn = inv
                .tors
                .iter()
                .find(|x| x.name.get_ref() == n)
                .map(|x| x.asn)
                .or_else(|| {
                    inv.upstreams
                        .iter()
                        .find(|x| x.name.get_ref() == n)
                        .map(|x| x.asn)
                })
                .unwrap_or(0);
            let _ = writeln!(t, "[[bgp.{section}]]\nname = {}\nasn = {asn}", q(n));
            match l.peer {
                Some(p) => {
                    let _ = writeln!(t, "address = {}\n", q(&p.to_string()));
                }
                None => {
                    let _ = writeln!(t, "interface = {}\n", q(&l.interface));
                }
            }
        }
    }
    let _ = writeln!(
        t,
        "[peer]\nname = {}\nsync_address = {}",
        q(peer.name.get_ref()),
        q(&addr(peer.sync.address.get_ref()))
    );
    if let Some(a) = peer.fabric.iter().find_map(|l| l.address.as_ref()) {
        let _ = writeln!(t, "fabric_address = {}", q(&addr(a.get_ref())));
    }
    let _ = writeln!(
        t,
        "\n[sync]\naddress = {}\nkey_file = {}\n",
        q(&addr(g.sync.address.get_ref())),
        q(&inv.site.key_file)
    );
    let _ = writeln!(
        t,
        "[nat]\npool = {}\n",
        list(inv.site.nat_pool.iter().map(|p| p.get_ref().clone()))
    );
    let _ = writeln!(
        t,
        "[management]\nsources = {}",
        list(inv.site.management.iter().map(|m| m.get_ref().clone()))
    );

    // Render, then load back with the node's own loader: a bundle that `igw check` would
    // refuse is never written.
    NodeConfig::parse(Path::new("node.toml"), &t)
        .map_err(|e| RenderError::Invalid(name.into(), e.to_string()))?;
    Ok(t)
}

/// FRR configuration fragment for a ToR: one BGP unnumbered session per routed host's
/// port, each with an inbound filter that accepts only that host's own prefixes (route
/// hijack protection), and L2 hosts' subnets noted for the operator.
pub fn tor_downlinks(inv: &Inventory, tor: &str) -> Result<String, RenderError> {
    let names = || {
        inv.tors
            .iter()
            .map(|t| t.name.get_ref().clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let t = inv
        .tor(tor)
        .ok_or_else(|| RenderError::NoTor(tor.into(), names()))?;
    let mut lists = String::new();
    let mut neighbors = String::new();
    let mut afi = String::new();
    let _ = writeln!(
        lists,
        "! ToR {tor}: downlink filters, rendered by `igw provision tor` from site {}.",
        q(&inv.site.name)
    );
    let _ = writeln!(
        lists,
        "! Each routed host may announce only its own prefixes; nothing else is accepted."
    );
    for h in &inv.hosts {
        let ports: Vec<&str> = h
            .uplinks
            .iter()
            .filter(|u| u.tor.get_ref() == tor)
            .map(|u| u.port.as_str())
            .collect();
        if ports.is_empty() {
            continue;
        }
        let host = h.name.get_ref();
        if h.mode == HostMode::L2 {
            let _ = writeln!(
                lists,
                "! {host} on {}: L2 port, tenant {} (no BGP)",
                ports.join(", "),
                h.tenant.get_ref()
            );
            continue;
        }
        // One filter per host, applied on every port the host uses (ECMP over them).
        let (v4, v6): (Vec<_>, Vec<_>) = h
            .prefixes
            .iter()
            .map(|p| p.get_ref())
            .partition(|p| !p.contains(':'));
        for (fam, name, prefixes) in [
            ("ip", format!("HOST-{host}"), &v4),
            ("ipv6", format!("HOST6-{host}"), &v6),
        ] {
            for (i, p) in prefixes.iter().enumerate() {
                let _ = writeln!(
                    lists,
                    "{fam} prefix-list {name} seq {} permit {p}",
                    (i + 1) * 10
                );
            }
        }
        if !v4.is_empty() {
            let _ = writeln!(
                lists,
                "route-map FROM-{host} permit 10\n match ip address prefix-list HOST-{host}\nexit"
            );
        }
        if !v6.is_empty() {
            let _ = writeln!(
                lists,
                "route-map FROM-{host} permit 20\n match ipv6 address prefix-list HOST6-{host}\nexit"
            );
        }
        let _ = writeln!(lists, "route-map FROM-{host} deny 100\nexit");
        for port in ports {
            let _ = writeln!(
                neighbors,
                " neighbor {port} interface remote-as {}",
                h.asn.unwrap_or(0)
            );
            let _ = writeln!(
                neighbors,
                " neighbor {port} description {host} (tenant {})",
                h.tenant.get_ref()
            );
            let _ = writeln!(neighbors, " neighbor {port} bfd");
            let _ = writeln!(afi, "  neighbor {port} route-map FROM-{host} in");
        }
    }
    let mut out = lists;
    let _ = writeln!(out, "router bgp {}\n bgp router-id {}", t.asn, t.router_id);
    out.push_str(&neighbors);
    let _ = writeln!(out, " address-family ipv4 unicast");
    out.push_str(&afi);
    let _ = writeln!(out, " exit-address-family\nexit");
    Ok(out)
}

/// FRR configuration of a routed-on-host tenant server: BGP unnumbered to each of its ToRs
/// with ECMP over them, announcing only its own prefixes and accepting only the default
/// route. A CaaS node's bgpd listens on 20179 (BIRD keeps 179) and ranks the gateways'
/// default routes by local-preference (the standby's longer AS path gets the lower one),
/// because the local BIRD session is iBGP and compares local-preference first.
pub fn host_frr(inv: &Inventory, host: &str) -> Result<String, RenderError> {
    let h = inv
        .host(host)
        .ok_or_else(|| RenderError::NoHost(host.into()))?;
    if h.mode != HostMode::Routed {
        return Err(RenderError::NotRouted(host.into()));
    }
    let asn = h.asn.unwrap_or(0);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "! FRR of tenant server {host} (tenant {}), rendered by `igw provision host`.",
        h.tenant.get_ref()
    );
    if h.caas {
        let _ = writeln!(
            o,
            "! /etc/frr/daemons: bgpd_options=\"-A 127.0.0.1 -p 20179\"  (BIRD keeps port 179)"
        );
    }
    let _ = writeln!(o, "frr defaults datacenter\nhostname {host}\n!");
    for (i, p) in h.prefixes.iter().enumerate() {
        let fam = if p.get_ref().contains(':') {
            "ipv6"
        } else {
            "ip"
        };
        let _ = writeln!(
            o,
            "{fam} prefix-list OWN seq {} permit {}",
            (i + 1) * 10,
            p.get_ref()
        );
    }
    let _ = writeln!(o, "ip prefix-list DEFAULT seq 10 permit 0.0.0.0/0");
    let _ = writeln!(
        o,
        "route-map TO-FABRIC permit 10\n match ip address prefix-list OWN\nexit"
    );
    let _ = writeln!(o, "route-map TO-FABRIC deny 100\nexit");
    if h.caas {
        let asn_gw = inv.site.asn;
        let _ = writeln!(
            o,
            "bgp as-path access-list GW-STANDBY seq 10 permit _{asn_gw}_{asn_gw}_"
        );
        let _ = writeln!(
            o,
            "route-map FROM-FABRIC deny 5\n match ip address prefix-list OWN\nexit"
        );
        let _ = writeln!(
            o,
            "route-map FROM-FABRIC permit 10\n match ip address prefix-list DEFAULT\n match as-path GW-STANDBY\n set local-preference 50\nexit"
        );
        let _ = writeln!(
            o,
            "route-map FROM-FABRIC permit 20\n match ip address prefix-list DEFAULT\n set local-preference 200\nexit"
        );
    } else {
        let _ = writeln!(
            o,
            "route-map FROM-FABRIC permit 10\n match ip address prefix-list DEFAULT\nexit"
        );
    }
    let _ = writeln!(o, "route-map FROM-FABRIC deny 100\nexit\n!");
    let _ = writeln!(
        o,
        "router bgp {asn}\n bgp router-id {}",
        h.router_id.map(|r| r.to_string()).unwrap_or_default()
    );
    let _ = writeln!(
        o,
        " bgp bestpath as-path multipath-relax\n neighbor FABRIC peer-group\n neighbor FABRIC remote-as external\n neighbor FABRIC bfd"
    );
    for u in &h.uplinks {
        let _ = writeln!(o, " neighbor {} interface peer-group FABRIC", u.interface);
    }
    if h.caas {
        let _ = writeln!(
            o,
            " neighbor 127.0.0.1 remote-as {asn}\n neighbor 127.0.0.1 port 179\n neighbor 127.0.0.1 description local BIRD"
        );
    }
    let _ = writeln!(o, " address-family ipv4 unicast");
    for p in h.prefixes.iter().filter(|p| !p.get_ref().contains(':')) {
        let _ = writeln!(o, "  network {}", p.get_ref());
    }
    let _ = writeln!(
        o,
        "  neighbor FABRIC route-map TO-FABRIC out\n  neighbor FABRIC route-map FROM-FABRIC in\n  maximum-paths {}",
        h.uplinks.len().max(2)
    );
    let _ = writeln!(o, " exit-address-family\nexit");
    Ok(o)
}
