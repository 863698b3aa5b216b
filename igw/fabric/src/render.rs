//! node.toml (+ the policy's tenant subnets) -> the node's `frr.conf`, and the FRR configs of
//! the other side (ToR, upstream) for tests and the lab. Pure text rendering, no I/O.
//!
//! What the gateway says, and to whom:
//! - to every ToR session: only the default route (0.0.0.0/0, and ::/0 on IPv6 sessions),
//!   originated with `default-originate route-map IGW-ROLE-FABRIC-<n>`;
//! - to every upstream session: only the NAT pool (`network <pool> route-map
//!   IGW-ROLE-UPSTREAM-<n>`, no import check, so the standby advertises it too, prepended),
//!   filtered on the way out by `route-map IGW-TO-UPSTREAM out`;
//! - accepted from the fabric: only tenant subnets and their more-specifics
//!   (`IGW-TENANTS`); from the upstream: only the default route (`IGW-DEFAULT`).
//!
//! # Role route-maps
//! The AS-path prepend is the role. The scheme (documented in `arbiter`): active in steady
//! state `bgp.prepend_active` (1), standby/maintenance/fault `bgp.prepend_standby` (3), a
//! standby that takes over from a dead active 0 until the peer is back as standby. The
//! steady-state prepend of the active is what lets a promoted standby win at once, before
//! the dead active's path is withdrawn by BFD or the hold timer.
//!
//! One route-map per prepend count the arbiter uses (`IGW-ROLE-FABRIC-0`, `-1`, `-3`, and
//! the same for `IGW-ROLE-UPSTREAM-`) is rendered up front; a role change *points* the
//! default-originate and the pool's `network` statements at another map ([`role_commands`])
//! instead of editing the map in use. Measured with FRR 8.4 (bench/arbiter): editing a
//! route-map in use is not re-advertised at all with `bgp route-map delay-timer 0` (FRR
//! then skips the route update), so it needs `clear bgp * soft out`, which FRR runs from a
//! 100 ms timer; re-pointing `default-originate` sends the new default route at once, and
//! re-pointing `network` goes through the normal best-path run (FRR's 50 ms queue hold),
//! with no clear. A count outside the rendered set (`igw fabric set-prepend 5`) gets its
//! maps defined in the same transaction.

use std::fmt::Write as _;
use std::net::IpAddr;

use igw_core::NodeConfig;
use igw_core::node::BgpPeer;
use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

/// Prefix of the route-maps whose prepend steers the fabric's default route
/// (`IGW-ROLE-FABRIC-<n>`, n prepends).
pub const RM_ROLE_FABRIC: &str = "IGW-ROLE-FABRIC-";
/// Prefix of the route-maps whose prepend steers the upstream's route to the NAT pool.
pub const RM_ROLE_UPSTREAM: &str = "IGW-ROLE-UPSTREAM-";
/// Outbound filter toward the upstream: the NAT pool only.
pub const RM_TO_UPSTREAM: &str = "IGW-TO-UPSTREAM";
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

/// The route-map names for `n` prepends: (fabric, upstream).
pub fn role_maps(n: u8) -> (String, String) {
    (
        format!("{RM_ROLE_FABRIC}{n}"),
        format!("{RM_ROLE_UPSTREAM}{n}"),
    )
}

/// The prepend counts whose role route-maps are in the rendered config: 0 (take-over),
/// `prepend_active` and `prepend_standby`, ascending, without repeats.
pub fn rendered_prepends(node: &NodeConfig) -> Vec<u8> {
    let mut v = vec![0, node.bgp.prepend_active, node.bgp.prepend_standby];
    v.sort_unstable();
    v.dedup();
    v
}

/// The definitions of both role route-maps for `n` prepends, as config lines (no leading
/// space); used by [`node_frr`] and, for a count outside the rendered set, by
/// [`role_commands`].
fn role_map_lines(asn: u32, n: u8) -> Vec<String> {
    let (f, u) = role_maps(n);
    let mut v = Vec::new();
    for rm in [f, u] {
        v.push(format!("route-map {rm} permit 10"));
        if let Some(l) = prepend_line(asn, n) {
            v.push(format!(" {l}"));
        }
        v.push("exit".to_string());
    }
    v
}

/// The configuration commands (inside `configure terminal`) that put `prepend` in force:
/// every ToR session's `default-originate` and every NAT pool `network` statement pointed at
/// the role route-maps for that count. All of them are `router bgp` commands, so the
/// transaction goes to bgpd alone. A count outside [`rendered_prepends`] is defined first.
pub fn role_commands(node: &NodeConfig, prepend: u8) -> Vec<String> {
    let mut v = Vec::new();
    if !rendered_prepends(node).contains(&prepend) {
        v.extend(
            role_map_lines(node.bgp.asn, prepend)
                .into_iter()
                .map(|l| l.trim().to_string()),
        );
    }
    let (fab, up) = role_maps(prepend);
    let nat = nat_prefixes(node);
    v.push(format!("router bgp {}", node.bgp.asn));
    for (af, v4) in [("ipv4", true), ("ipv6", false)] {
        let mut body = Vec::new();
        for n in nat.iter().filter(|n| matches!(n, IpNet::V4(_)) == v4) {
            body.push(format!("network {n} route-map {up}"));
        }
        for p in &node.bgp.tor {
            let (c4, c6) = families(p);
            if (v4 && c4) || (!v4 && c6) {
                body.push(format!(
                    "neighbor {} default-originate route-map {fab}",
                    neighbor_key(p)
                ));
            }
        }
        if !body.is_empty() {
            v.push(format!("address-family {af} unicast"));
            v.extend(body);
            v.push("exit-address-family".to_string());
        }
    }
    v.push("exit".to_string());
    v
}

/// The prepend count named by a role route-map (`IGW-ROLE-FABRIC-3` -> 3).
pub fn prepend_of_map(name: &str) -> Option<u8> {
    name.strip_prefix(RM_ROLE_FABRIC)
        .or_else(|| name.strip_prefix(RM_ROLE_UPSTREAM))?
        .parse()
        .ok()
}

/// The FRR neighbor key of a session: its address, or its interface (unnumbered).
pub fn neighbor_key(p: &BgpPeer) -> String {
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
    // Role route-maps, one per prepend count in use: the only place the prepend lives.
    let mut counts = rendered_prepends(node);
    if !counts.contains(&prepend) {
        counts.push(prepend);
        counts.sort_unstable();
    }
    for n in counts {
        for l in role_map_lines(bgp.asn, n) {
            let _ = writeln!(w, "{l}");
        }
    }
    let _ = writeln!(w, "route-map {RM_TO_UPSTREAM} permit 10");
    let _ = writeln!(w, " match ip address prefix-list IGW-NAT-POOL");
    let _ = writeln!(w, "exit");
    let _ = writeln!(w, "route-map {RM_TO_UPSTREAM} permit 20");
    let _ = writeln!(w, " match ipv6 address prefix-list IGW-NAT-POOL6");
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
    // Route-map edits are not batched for 5 s (role changes re-point, see the module doc).
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
    let (role_fab, role_up) = role_maps(prepend);
    for (af, v4) in [("ipv4", true), ("ipv6", false)] {
        let _ = writeln!(w, " !");
        let _ = writeln!(w, " address-family {af} unicast");
        for n in if v4 { &n4 } else { &n6 } {
            let _ = writeln!(w, "  network {n} route-map {role_up}");
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
                let _ = writeln!(w, "  neighbor {key} default-originate route-map {role_fab}");
                let _ = writeln!(w, "  neighbor {key} route-map IGW-FROM-FABRIC in");
                let _ = writeln!(w, "  neighbor {key} route-map IGW-DENY out");
            } else {
                let _ = writeln!(w, "  neighbor {key} route-map IGW-FROM-UPSTREAM in");
                let _ = writeln!(w, "  neighbor {key} route-map {RM_TO_UPSTREAM} out");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(extra: &str) -> NodeConfig {
        let text = format!(
            r#"
[node]
name = "igw-a"
id = 1
priority = 200
router_id = "198.19.0.1"
[interfaces]
fabric = ["tor0"]
upstream = ["up0"]
sync = "sync0"
[bgp]
asn = 65010
{extra}
[peer]
name = "igw-b"
sync_address = "198.19.255.2"
[sync]
address = "198.19.255.1"
key_file = "psk"
[nat]
pool = ["198.51.100.10", "2001:db8:100::10"]
"#
        );
        NodeConfig::parse(std::path::Path::new("node.toml"), &text).unwrap()
    }

    const PEERS: &str = r#"
[[bgp.tor]]
name = "tor-v4"
address = "198.19.1.0"
asn = 65000
[[bgp.tor]]
name = "tor-unnumbered"
interface = "tor1"
asn = 65000
[[bgp.upstream]]
name = "upstream"
address = "198.19.2.0"
asn = 65020
"#;

    #[test]
    fn role_commands_repoint_every_origination() {
        let n = node(PEERS);
        let table: &[(u8, &[&str])] = &[
            (
                0,
                &[
                    "router bgp 65010",
                    "address-family ipv4 unicast",
                    "network 198.51.100.10/32 route-map IGW-ROLE-UPSTREAM-0",
                    "neighbor 198.19.1.0 default-originate route-map IGW-ROLE-FABRIC-0",
                    "neighbor tor1 default-originate route-map IGW-ROLE-FABRIC-0",
                    "exit-address-family",
                    "address-family ipv6 unicast",
                    "network 2001:db8:100::10/128 route-map IGW-ROLE-UPSTREAM-0",
                    "neighbor tor1 default-originate route-map IGW-ROLE-FABRIC-0",
                    "exit-address-family",
                    "exit",
                ],
            ),
            (
                // Outside the rendered set (0, 1, 3): the maps are defined first.
                5,
                &[
                    "route-map IGW-ROLE-FABRIC-5 permit 10",
                    "set as-path prepend 65010 65010 65010 65010 65010",
                    "exit",
                    "route-map IGW-ROLE-UPSTREAM-5 permit 10",
                    "set as-path prepend 65010 65010 65010 65010 65010",
                    "exit",
                    "router bgp 65010",
                    "address-family ipv4 unicast",
                    "network 198.51.100.10/32 route-map IGW-ROLE-UPSTREAM-5",
                    "neighbor 198.19.1.0 default-originate route-map IGW-ROLE-FABRIC-5",
                    "neighbor tor1 default-originate route-map IGW-ROLE-FABRIC-5",
                    "exit-address-family",
                    "address-family ipv6 unicast",
                    "network 2001:db8:100::10/128 route-map IGW-ROLE-UPSTREAM-5",
                    "neighbor tor1 default-originate route-map IGW-ROLE-FABRIC-5",
                    "exit-address-family",
                    "exit",
                ],
            ),
        ];
        for (count, want) in table {
            assert_eq!(role_commands(&n, *count), *want, "prepend {count}");
        }
    }

    #[test]
    fn rendered_prepends_and_map_names() {
        let table: &[(&str, &[u8])] = &[
            ("", &[0, 1, 3]),
            ("prepend_active = 0\nprepend_standby = 2", &[0, 2]),
            ("prepend_active = 2\nprepend_standby = 5", &[0, 2, 5]),
        ];
        for (extra, want) in table {
            let n = node(&format!("{extra}\n{PEERS}"));
            assert_eq!(rendered_prepends(&n), *want, "{extra}");
        }
        for (name, want) in [
            ("IGW-ROLE-FABRIC-3", Some(3)),
            ("IGW-ROLE-UPSTREAM-0", Some(0)),
            ("IGW-ROLE-FABRIC-", None),
            ("IGW-ROLE-FABRIC", None),
            ("OTHER-1", None),
        ] {
            assert_eq!(prepend_of_map(name), want, "{name}");
        }
    }

    #[test]
    fn node_frr_renders_maps_for_every_count_it_points_at() {
        let n = node(PEERS);
        let text = node_frr(&n, &[], 3);
        for m in [
            "IGW-ROLE-FABRIC-0",
            "IGW-ROLE-FABRIC-1",
            "IGW-ROLE-FABRIC-3",
        ] {
            assert!(text.contains(&format!("route-map {m} permit 10")), "{m}");
        }
        assert!(text.contains("default-originate route-map IGW-ROLE-FABRIC-3"));
        assert!(text.contains("network 198.51.100.10/32 route-map IGW-ROLE-UPSTREAM-3"));
        // A start count outside the usual set still has its maps.
        let text = node_frr(&n, &[], 7);
        assert!(text.contains("route-map IGW-ROLE-UPSTREAM-7 permit 10"));
    }
}
