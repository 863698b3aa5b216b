//! The lab topology of ../shared/TESTBED.md as data: hosts (one network namespace each),
//! links (veth pairs) with addresses, and static routes. Pure: `up` turns it into commands.
//!
//! ```text
//!  tenant-a ---\                       /--- igw-a ---\
//!               tor (FRR, BFD) -------+               upstream (FRR) --- inet (origins)
//!  tenant-b ---/                       \--- igw-b ---/
//!                                  igw-a <= sync => igw-b
//! ```

/// One end of a link: host role, interface name, addresses (CIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    pub host: &'static str,
    pub ifname: &'static str,
    pub addrs: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub a: End,
    pub b: End,
}

/// A static route installed at `up` (everything else is learnt over BGP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub host: &'static str,
    pub dst: &'static str,
    pub via: &'static str,
}

/// Host roles, in creation order.
pub const HOSTS: &[&str] = &[
    "tenant-a", "tenant-b", "tor", "igw-a", "igw-b", "upstream", "inet",
];
/// Hosts that route between their interfaces.
pub const ROUTERS: &[&str] = &["tor", "igw-a", "igw-b", "upstream"];

const fn end(host: &'static str, ifname: &'static str, addrs: &'static [&'static str]) -> End {
    End {
        host,
        ifname,
        addrs,
    }
}

pub const LINKS: &[Link] = &[
    Link {
        a: end(
            "tenant-a",
            "eth0",
            &["198.18.1.10/24", "fd00:198:18:1::10/64"],
        ),
        b: end("tor", "ten-a", &["198.18.1.1/24", "fd00:198:18:1::1/64"]),
    },
    Link {
        a: end("tenant-b", "eth0", &["198.18.2.10/24"]),
        b: end("tor", "ten-b", &["198.18.2.1/24"]),
    },
    Link {
        a: end("tor", "a0", &["198.19.1.0/31"]),
        b: end("igw-a", "tor0", &["198.19.1.1/31"]),
    },
    Link {
        a: end("tor", "b0", &["198.19.1.2/31"]),
        b: end("igw-b", "tor0", &["198.19.1.3/31"]),
    },
    Link {
        a: end("igw-a", "up0", &["198.19.2.1/31"]),
        b: end("upstream", "a0", &["198.19.2.0/31"]),
    },
    Link {
        a: end("igw-b", "up0", &["198.19.2.3/31"]),
        b: end("upstream", "b0", &["198.19.2.2/31"]),
    },
    Link {
        a: end("igw-a", "sync0", &["198.19.255.1/30"]),
        b: end("igw-b", "sync0", &["198.19.255.2/30"]),
    },
    Link {
        a: end("upstream", "inet0", &["203.0.113.1/24", "192.0.2.1/24"]),
        b: end(
            "inet",
            "eth0",
            &[
                "203.0.113.10/24",
                "203.0.113.11/24",
                "203.0.113.12/24",
                "203.0.113.13/24",
                "203.0.113.7/24",
                "203.0.113.53/24",
                "192.0.2.123/24",
            ],
        ),
    },
];

pub const ROUTES: &[Route] = &[
    Route {
        host: "tenant-a",
        dst: "default",
        via: "198.18.1.1",
    },
    Route {
        host: "tenant-a",
        dst: "default",
        via: "fd00:198:18:1::1",
    },
    Route {
        host: "tenant-b",
        dst: "default",
        via: "198.18.2.1",
    },
    Route {
        host: "inet",
        dst: "default",
        via: "203.0.113.1",
    },
    // The arbiters' second heartbeat path runs through the ToR (peer.fabric_address): each
    // gateway reaches the other's fabric link address via the ToR, which BGP does not
    // carry (only the default route and tenant prefixes are exchanged).
    Route {
        host: "igw-a",
        dst: "198.19.1.2/31",
        via: "198.19.1.0",
    },
    Route {
        host: "igw-b",
        dst: "198.19.1.0/31",
        via: "198.19.1.2",
    },
];

/// The lab's Internet names: (name, address, what the example policy says about it).
pub const ORIGINS: &[(&str, &str, &str)] = &[
    (
        "www.example.com",
        "203.0.113.10",
        "allowed (allow-example); /admin/ denied (deny-admin)",
    ),
    (
        "www.example.org",
        "203.0.113.11",
        "allowed (allow-example, *.example.org)",
    ),
    (
        "api.example.net",
        "203.0.113.12",
        "tenant-b only, GET/HEAD (allow-b-api)",
    ),
    (
        "ads.example.net",
        "203.0.113.13",
        "denied: no rule allows it (default deny)",
    ),
];

/// The TCP/UDP echo service (port 7): the probe stream and the long-lived flows.
pub const ECHO: &str = "203.0.113.7";

/// Namespace name of a role under a lab prefix.
pub fn ns(prefix: &str, host: &str) -> String {
    format!("{prefix}-{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_link_end_is_a_known_host_and_names_fit() {
        for l in LINKS {
            for e in [l.a, l.b] {
                assert!(HOSTS.contains(&e.host), "{e:?}");
                assert!(e.ifname.len() <= 15);
            }
        }
        for r in ROUTES {
            assert!(HOSTS.contains(&r.host));
        }
    }

    #[test]
    fn interface_names_are_unique_per_host() {
        let mut seen = HashSet::new();
        for l in LINKS {
            for e in [l.a, l.b] {
                assert!(seen.insert((e.host, e.ifname)), "{e:?} twice");
            }
        }
    }

    #[test]
    fn lab_addresses_stay_in_the_testbed_plan() {
        // TESTBED.md: only these ranges, so a lab address can never be a real host.
        let plan: [ipnet::IpNet; 7] = [
            "198.18.0.0/15".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
            "fd00:198:18::/48".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
            "fe80::/10".parse().unwrap(),
        ];
        for l in LINKS {
            for a in l.a.addrs.iter().chain(l.b.addrs) {
                let n: ipnet::IpNet = a.parse().unwrap();
                assert!(
                    plan.iter().any(|p| p.contains(&n.addr())),
                    "{a} outside the plan"
                );
            }
        }
        for (_, a, _) in ORIGINS {
            let a: std::net::IpAddr = a.parse().unwrap();
            assert!(plan.iter().any(|p| p.contains(&a)));
        }
    }

    #[test]
    fn the_lab_matches_the_example_node_files() {
        // The lab runs examples/small; its addresses must be the ones those files name.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/small");
        for (host, file) in [("igw-a", "node-a.toml"), ("igw-b", "node-b.toml")] {
            let n = igw_core::NodeConfig::load(&dir.join(file)).unwrap();
            let mine: Vec<&str> = LINKS
                .iter()
                .flat_map(|l| [l.a, l.b])
                .filter(|e| e.host == host)
                .flat_map(|e| e.addrs.iter().map(|a| a.split('/').next().unwrap()))
                .collect();
            assert!(
                mine.contains(&n.sync.address.to_string().as_str()),
                "{host} sync"
            );
            for p in n.bgp_peer_addresses() {
                let peer_end = LINKS.iter().flat_map(|l| [l.a, l.b]).any(|e| {
                    e.addrs
                        .iter()
                        .any(|a| a.split('/').next() == Some(p.to_string().as_str()))
                });
                assert!(peer_end, "{host}: BGP peer {p} is not on any lab link");
            }
        }
    }
}
