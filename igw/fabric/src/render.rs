//! node.toml (+ the policy's tenant subnets) -> the node's `frr.conf`, and the FRR configs of
//! the other side (ToR, upstream) for tests and the lab. Pure text rendering, no I/O.
//!
//! What the gateway says, and to whom:
//! - to every ToR session: only the default route (0.0.0.0/0, and ::/0 on IPv6 sessions),
//!   originated with `default-originate route-map IGW-ROLE-FABRIC`;
//! - to every upstream session: only the NAT pool (`network` statements, no import check,
//!   so the standby advertises it too, prepended), through `route-map IGW-ROLE-UPSTREAM out`;
//! - accepted from the fabric: only tenant subnets and their more-specifics
//!   (`IGW-TENANTS`); from the upstream: only the default route (`IGW-DEFAULT`).
//!
//! The two `IGW-ROLE-*` route-maps carry the AS-path prepend the arbiter sets (see
//! [`role_commands`]). The scheme (documented in `arbiter`): active in steady state
//! `bgp.prepend_active` (1), standby/maintenance/fault `bgp.prepend_standby` (3), a standby
//! that takes over from a dead active 0 until the peer is back as standby. The steady-state
//! prepend of the active is what lets a promoted standby win at once, before the dead
//! active's path is withdrawn by BFD or the hold timer.

use std::fmt::Write as _;
use std::net::IpAddr;

use igw_core::NodeConfig;
use igw_core::node::BgpPeer;
use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

/// Route-map whose prepend steers the fabric's default route.
pub const RM_ROLE_FABRIC: &str = "IGW-ROLE-FABRIC";
/// Route-map whose prepend steers the upstream's route to the NAT pool.
pub const RM_ROLE_UPSTREAM: &str = "IGW-ROLE-UPSTREAM";
/// BFD profile every session uses.
pub const BFD_PROFILE: &str = "igw";

/// The NAT pool as CIDRs (ranges split into the fewest prefixes).
pub fn nat_prefixes(node: &NodeConfig) -> Vec<IpNet> {
    let mut out = Vec::new();
    for r in node.nat_pool() {
        match (r.first, r.last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => out.extend(Ipv4Subnets::new(a, b, 0).map(IpNet::V4)),
            (IpAddr::V6(a), IpAddr::V6(b)) => out.extend(Ipv6Subnets::new(a, b, 0).map(IpNet::V6)),
            _ => {} // mixed families are refused when node.toml is loaded
        }
    }
    out
}

fn prepend_line(asn: u32, n: u8) -> Option<String> {
    (n > 0).then(|| {
        let v: Vec<String> = (0..n).map(|_| asn.to_string()).collect();
        format!("set as-path prepend {}", v.join(" "))
    })
}

/// The `vtysh` configuration commands that set both role route-maps to `prepend` copies of
/// this node's ASN: one `configure terminal` transaction for the driver. `no set as-path
/// prepend` first, so the count replaces (not extends) what is in force.
pub fn role_commands(node: &NodeConfig, prepend: u8) -> Vec<String> {
    let mut v = Vec::new();
    for (rm, seqs) in [
        (RM_ROLE_FABRIC, &[10u16][..]),
        (RM_ROLE_UPSTREAM, &[10, 20][..]),
    ] {
        for seq in seqs {
            v.push(format!("route-map {rm} permit {seq}"));
            v.push("no set as-path prepend".to_string());
            if let Some(l) = prepend_line(node.bgp.asn, prepend) {
                v.push(l);
            }
            v.push("exit".to_string());
        }
    }
    v
}

fn neighbor_key(p: &BgpPeer) -> String {
    match (&p.address, &p.interface) {
        (Some(a), _) => a.to_string(),
        (None, Some(i)) => i.clone(),
        (None, None) => String::new(), // refused when node.toml is loaded
    }
}

/// Which address families a session carries: numbered sessions their own family, unnumbered
/// (IPv6 link-local, extended next hop) both.
fn families(p: &BgpPeer) -> (bool, bool) {
    match p.address {
        Some(IpAddr::V4(_)) => (true, false),
        Some(IpAddr::V6(_)) => (false, true),
        None => (true, true),
    }
}

/// Renders this node's `frr.conf`. `tenants` are the policy's tenant subnets (what the
/// fabric may announce to the gateway); `prepend` the count the role route-maps start with
/// (the arbiter starts every node as standby: `bgp.prepend_standby`).
pub fn node_frr(node: &NodeConfig, tenants: &[IpNet], prepend: u8) -> String {
    let mut s = String::new();
    let bgp = &node.bgp;
    let w = &mut s;
    let _ = writeln!(
        w,
        "! frr.conf of {} rendered by igw from node.toml; do not edit",
        node.node.name
    );
    let _ = writeln!(w, "frr defaults datacenter");
    let _ = writeln!(w, "hostname {}", node.node.name);
    let _ = writeln!(w, "service integrated-vtysh-config");
    let _ = writeln!(w, "!");
    // Prefix-lists. Tenant subnets allow more-specifics (host routes of routed hosts).
    let (t4, t6): (Vec<&IpNet>, Vec<&IpNet>) =
        tenants.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let _ = writeln!(w, "ip prefix-list IGW-DEFAULT seq 5 permit 0.0.0.0/0");
    let _ = writeln!(w, "ipv6 prefix-list IGW-DEFAULT6 seq 5 permit ::/0");
    for (i, n) in t4.iter().enumerate() {
        let _ = writeln!(
            w,
            "ip prefix-list IGW-TENANTS seq {} permit {n} le 32",
            (i + 1) * 5
        );
    }
    if t4.is_empty() {
        let _ = writeln!(w, "ip prefix-list IGW-TENANTS seq 5 deny any");
    }
    for (i, n) in t6.iter().enumerate() {
        let _ = writeln!(
            w,
            "ipv6 prefix-list IGW-TENANTS6 seq {} permit {n} le 128",
            (i + 1) * 5
        );
    }
    if t6.is_empty() {
        let _ = writeln!(w, "ipv6 prefix-list IGW-TENANTS6 seq 5 deny any");
    }
    let nat = nat_prefixes(node);
    let (n4, n6): (Vec<&IpNet>, Vec<&IpNet>) = nat.iter().partition(|n| matches!(n, IpNet::V4(_)));
    for (i, n) in n4.iter().enumerate() {
        let _ = writeln!(
            w,
            "ip prefix-list IGW-NAT-POOL seq {} permit {n}",
            (i + 1) * 5
        );
    }
    if n4.is_empty() {
        let _ = writeln!(w, "ip prefix-list IGW-NAT-POOL seq 5 deny any");
    }
    for (i, n) in n6.iter().enumerate() {
        let _ = writeln!(
            w,
            "ipv6 prefix-list IGW-NAT-POOL6 seq {} permit {n}",
            (i + 1) * 5
        );
    }
    if n6.is_empty() {
        let _ = writeln!(w, "ipv6 prefix-list IGW-NAT-POOL6 seq 5 deny any");
    }
    let _ = writeln!(w, "!");
    // Role route-maps: the only place the prepend lives.
    let pre = prepend_line(bgp.asn, prepend);
    let _ = writeln!(w, "route-map {RM_ROLE_FABRIC} permit 10");
    if let Some(l) = &pre {
        let _ = writeln!(w, " {l}");
    }
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "route-map {RM_ROLE_UPSTREAM} permit 10");
    let _ = writeln!(w, " match ip address prefix-list IGW-NAT-POOL");
    if let Some(l) = &pre {
        let _ = writeln!(w, " {l}");
    }
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "route-map {RM_ROLE_UPSTREAM} permit 20");
    let _ = writeln!(w, " match ipv6 address prefix-list IGW-NAT-POOL6");
    if let Some(l) = &pre {
        let _ = writeln!(w, " {l}");
    }
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "route-map IGW-FROM-FABRIC permit 10");
    let _ = writeln!(w, " match ip address prefix-list IGW-TENANTS");
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "route-map IGW-FROM-FABRIC permit 20");
    let _ = writeln!(w, " match ipv6 address prefix-list IGW-TENANTS6");
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "route-map IGW-FROM-UPSTREAM permit 10");
    let _ = writeln!(w, " match ip address prefix-list IGW-DEFAULT");
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "route-map IGW-FROM-UPSTREAM permit 20");
    let _ = writeln!(w, " match ipv6 address prefix-list IGW-DEFAULT6");
    let _ = writeln!(w, "exit");
    // The default route goes to the fabric by default-originate only: nothing from the
    // BGP table is advertised to a ToR.
    let _ = writeln!(w, "route-map IGW-DENY deny 10");
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "!");
    if node.bfd.enabled {
        let _ = writeln!(w, "bfd");
        let _ = writeln!(w, " profile {BFD_PROFILE}");
        let _ = writeln!(w, "  detect-multiplier {}", node.bfd.multiplier);
        let _ = writeln!(w, "  receive-interval {}", node.bfd.interval_ms);
        let _ = writeln!(w, "  transmit-interval {}", node.bfd.interval_ms);
        let _ = writeln!(w, " exit");
        let _ = writeln!(w, "exit");
        let _ = writeln!(w, "!");
    }
    let _ = writeln!(w, "router bgp {}", bgp.asn);
    let _ = writeln!(w, " bgp router-id {}", node.node.router_id);
    let _ = writeln!(w, " bgp log-neighbor-changes");
    // Route-map edits apply at once instead of after FRR's 5 s batching delay.
    let _ = writeln!(w, " bgp route-map delay-timer 0");
    // The NAT pool is advertised by both nodes whether or not the address is local now.
    let _ = writeln!(w, " no bgp network import-check");
    let _ = writeln!(w, " timers bgp {} {}", bgp.keepalive_s, bgp.holdtime_s);
    let sessions = bgp
        .tor
        .iter()
        .map(|p| (p, true))
        .chain(bgp.upstream.iter().map(|p| (p, false)));
    for (p, _) in sessions.clone() {
        let key = neighbor_key(p);
        if p.address.is_some() {
            let _ = writeln!(w, " neighbor {key} remote-as {}", p.asn);
        } else {
            let _ = writeln!(w, " neighbor {key} interface remote-as {}", p.asn);
        }
        let _ = writeln!(w, " neighbor {key} description {}", p.name);
        if node.bfd.enabled {
            let _ = writeln!(w, " neighbor {key} bfd profile {BFD_PROFILE}");
        }
    }
    for (af, v4) in [("ipv4", true), ("ipv6", false)] {
        let _ = writeln!(w, " !");
        let _ = writeln!(w, " address-family {af} unicast");
        for n in if v4 { &n4 } else { &n6 } {
            let _ = writeln!(w, "  network {n}");
        }
        for (p, tor) in sessions.clone() {
            let (c4, c6) = families(p);
            if (v4 && !c4) || (!v4 && !c6) {
                continue;
            }
            let key = neighbor_key(p);
            if !v4 {
                let _ = writeln!(w, "  neighbor {key} activate");
            }
            if tor {
                let _ = writeln!(
                    w,
                    "  neighbor {key} default-originate route-map {RM_ROLE_FABRIC}"
                );
                let _ = writeln!(w, "  neighbor {key} route-map IGW-FROM-FABRIC in");
                let _ = writeln!(w, "  neighbor {key} route-map IGW-DENY out");
            } else {
                let _ = writeln!(w, "  neighbor {key} route-map IGW-FROM-UPSTREAM in");
                let _ = writeln!(w, "  neighbor {key} route-map {RM_ROLE_UPSTREAM} out");
            }
        }
        let _ = writeln!(w, " exit-address-family");
    }
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "!");
    s
}

/// The far side of a gateway's sessions (a ToR or an upstream router), for tests and the lab.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSpec {
    pub hostname: String,
    pub asn: u32,
    pub router_id: std::net::Ipv4Addr,
    /// Sessions to the gateway nodes: (neighbor address, the gateway's ASN).
    pub neighbors: Vec<(IpAddr, u32)>,
    /// Prefixes this router originates (tenant subnets on a ToR, servers on an upstream).
    pub originate: Vec<IpNet>,
    /// Send the gateways a default route (the upstream does).
    pub default_originate: bool,
    pub bfd_interval_ms: u32,
    pub bfd_multiplier: u8,
}

/// Renders a ToR's or an upstream's `frr.conf`. One best path only (`maximum-paths 1`):
/// with ECMP over both gateways the ToR kept a dead node in its multipath set until the
/// hold timer fired (37 s measured), and the pair must draw traffic to one node for NAT
/// and conntrack. `compare-routerid` makes equal-length paths resolve the same way on
/// every router, whatever the arrival order.
pub fn router_frr(r: &RouterSpec) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "! frr.conf of {} (fabric side) rendered by igw for tests and the lab",
        r.hostname
    );
    let _ = writeln!(w, "frr defaults datacenter");
    let _ = writeln!(w, "hostname {}", r.hostname);
    let _ = writeln!(w, "service integrated-vtysh-config");
    let _ = writeln!(w, "!");
    let _ = writeln!(w, "route-map IGW-ALL permit 10");
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "!");
    let _ = writeln!(w, "bfd");
    let _ = writeln!(w, " profile {BFD_PROFILE}");
    let _ = writeln!(w, "  detect-multiplier {}", r.bfd_multiplier);
    let _ = writeln!(w, "  receive-interval {}", r.bfd_interval_ms);
    let _ = writeln!(w, "  transmit-interval {}", r.bfd_interval_ms);
    let _ = writeln!(w, " exit");
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "!");
    let _ = writeln!(w, "router bgp {}", r.asn);
    let _ = writeln!(w, " bgp router-id {}", r.router_id);
    let _ = writeln!(w, " bgp log-neighbor-changes");
    let _ = writeln!(w, " bgp bestpath compare-routerid");
    let _ = writeln!(w, " bgp route-map delay-timer 0");
    let _ = writeln!(w, " no bgp network import-check");
    for (a, asn) in &r.neighbors {
        let _ = writeln!(w, " neighbor {a} remote-as {asn}");
        let _ = writeln!(w, " neighbor {a} bfd profile {BFD_PROFILE}");
    }
    for (af, v4) in [("ipv4", true), ("ipv6", false)] {
        let _ = writeln!(w, " !");
        let _ = writeln!(w, " address-family {af} unicast");
        let _ = writeln!(w, "  maximum-paths 1");
        for n in r
            .originate
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)) == v4)
        {
            let _ = writeln!(w, "  network {n}");
        }
        for (a, _) in r.neighbors.iter().filter(|(a, _)| a.is_ipv4() == v4) {
            if !v4 {
                let _ = writeln!(w, "  neighbor {a} activate");
            }
            if r.default_originate {
                let _ = writeln!(w, "  neighbor {a} default-originate");
            }
            let _ = writeln!(w, "  neighbor {a} route-map IGW-ALL in");
            let _ = writeln!(w, "  neighbor {a} route-map IGW-ALL out");
        }
        let _ = writeln!(w, " exit-address-family");
    }
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "!");
    s
}
