//! node.toml + policy.toml -> the [`Table`] model of `table inet igw`.
//!
//! Chains, in packet order:
//! - `prerouting` (nat, dstnat): tenant tcp/80 and tcp/443 are redirected to the proxy's
//!   local ports, per tenant (`divert_http`, `divert_https`).
//! - `input` (filter, policy drop): what may reach the node itself.
//! - `forward` (filter, policy drop): established/related accepted, invalid dropped, then
//!   each tenant's packets jump to that tenant's chain of 5-tuple allow rules, which ends
//!   in a rate-limited log and a counted drop.
//! - `postrouting` (nat, srcnat): everything new that leaves on an upstream interface is
//!   SNATed to the pool, except BGP/BFD to the configured upstream peers.
//! - `egress_guard` (filter, after srcnat): drops any packet that would still leave on an
//!   upstream interface with a tenant source address.

use std::collections::BTreeSet;
use std::net::IpAddr;

use igw_core::addr::{AddrRange, PortRange};
use igw_core::policy::{Dst, L3Rule, Proto};
use igw_core::{NodeConfig, Policy};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftables::types::NfHook;

use super::ir::{Addrs, Base, ChainDef, Fam, RuleDef, SetDef, Stmt, Table, host};

/// BGP's TCP port.
pub const BGP_PORT: u16 = 179;
/// BFD: single-hop control (3784), echo (3785), multi-hop control (4784).
pub const BFD_PORTS: [u16; 3] = [3784, 3785, 4784];

/// nft refuses longer rule comments and interface names; say so before nft does.
const MAX_COMMENT: usize = 128;
const MAX_IFNAME: usize = 15;

/// Priorities of the base chains (nft's named priorities as numbers).
const PRIO_DSTNAT: i32 = -100;
const PRIO_FILTER: i32 = 0;
const PRIO_SRCNAT: i32 = 100;
/// After srcnat: the guard sees the translated source address.
const PRIO_GUARD: i32 = PRIO_SRCNAT + 10;

/// ICMP types the node answers or needs: PMTU discovery (fragmentation needed /
/// packet too big), errors, ping; for IPv6 also neighbour discovery.
const ICMP_TYPES: [&str; 4] = [
    "destination-unreachable",
    "time-exceeded",
    "parameter-problem",
    "echo-request",
];
const ICMPV6_TYPES: [&str; 9] = [
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "echo-request",
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
];

/// What the compiler refuses that the config loaders accept (limits of nftables itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "nat.pool: {fam} has {n} disjoint ranges; `snat to` takes one range per family, write the pool as one contiguous range"
    )]
    PoolNotContiguous { fam: &'static str, n: usize },
    #[error("{field}: interface name `{name}` is longer than {MAX_IFNAME} characters")]
    IfName { field: &'static str, name: String },
    #[error(
        "l3 rule `{id}`: the id is longer than {MAX_COMMENT} bytes, nft cannot carry it as a rule comment"
    )]
    LongId { id: String },
}

/// A compiled ruleset: the table, and the fingerprint of its structure (everything except
/// set elements), which decides whether an apply can be an element-only update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub table: Table,
    pub fingerprint: String,
}

/// The comment on the first rule of `forward` that carries the structure fingerprint, so
/// the running table says which structure it was built from.
pub const FINGERPRINT_PREFIX: &str = "igw structure ";

pub fn set_name(kind: &str, name: &str, fam: Fam) -> String {
    format!("{kind}_{name}_{}", fam.suffix())
}

fn tenant_chain(name: &str) -> String {
    format!("tenant_{name}")
}

/// Sorted, merged networks of one family (interval sets refuse overlaps).
pub fn aggregate(nets: &[IpNet], fam: Fam) -> Vec<IpNet> {
    match fam {
        Fam::V4 => {
            let v: Vec<Ipv4Net> = nets
                .iter()
                .filter_map(|n| match n {
                    IpNet::V4(n) => Some(n.trunc()),
                    IpNet::V6(_) => None,
                })
                .collect();
            let mut out: Vec<IpNet> = Ipv4Net::aggregate(&v).into_iter().map(IpNet::V4).collect();
            out.sort();
            out
        }
        Fam::V6 => {
            let v: Vec<Ipv6Net> = nets
                .iter()
                .filter_map(|n| match n {
                    IpNet::V6(n) => Some(n.trunc()),
                    IpNet::V4(_) => None,
                })
                .collect();
            let mut out: Vec<IpNet> = Ipv6Net::aggregate(&v).into_iter().map(IpNet::V6).collect();
            out.sort();
            out
        }
    }
}

/// Compiles a validated node and policy into `table inet igw`.
pub fn compile(node: &NodeConfig, policy: &Policy) -> Result<Compiled, CompileError> {
    check_limits(node, policy)?;
    let fabric = node.interfaces.fabric.clone();
    let upstream = node.interfaces.upstream.clone();
    let mut sets = Vec::new();
    let mut add_sets = |kind: &str, name: &str, what: &str, nets: &[IpNet]| {
        for fam in Fam::BOTH {
            sets.push(SetDef {
                name: set_name(kind, name, fam),
                fam,
                comment: format!("{what} ({})", fam.suffix()),
                elems: aggregate(nets, fam),
            });
        }
    };

    // Sets: every object and tenant gets both families, even when one is empty, so adding
    // the first IPv6 member later is an element update, not a new structure.
    for (name, obj) in &policy.objects {
        add_sets("obj", name, &format!("object {name}"), &obj.nets);
    }
    for t in &policy.tenants {
        add_sets("tenant", &t.name, &format!("tenant {}", t.name), &t.subnets);
    }
    let all_tenants: Vec<IpNet> = policy.tenant_subnets().copied().collect();
    add_sets("all", "tenants", "every tenant subnet", &all_tenants);
    let peers: Vec<IpNet> = node.bgp_peer_addresses().into_iter().map(host).collect();
    add_sets("bgp", "peers", "configured BGP peers", &peers);
    let mut node_peer = vec![host(node.peer.sync_address)];
    node_peer.extend(node.peer.fabric_address.map(host));
    add_sets(
        "peer",
        "node",
        &format!("peer node {}", node.peer.name),
        &node_peer,
    );
    add_sets(
        "mgmt",
        "sources",
        "management sources",
        &node.management_sources(),
    );

    let pool = pool_by_family(&node.nat_pool())?;
    let mut chains = vec![
        prerouting(node, policy, &fabric),
        input(node, policy, &fabric),
    ];
    let (forward, tenant_chains) = forward(policy, &fabric);
    chains.push(forward);
    chains.extend(tenant_chains);
    chains.push(postrouting(&upstream, &pool));
    chains.push(egress_guard(&upstream));

    let mut table = Table { sets, chains };
    let fingerprint = fingerprint(&table);
    table.chains[2].rules[0].comment = Some(format!("{FINGERPRINT_PREFIX}{fingerprint}"));
    Ok(Compiled { table, fingerprint })
}

fn check_limits(node: &NodeConfig, policy: &Policy) -> Result<(), CompileError> {
    let ifs = [
        ("interfaces.fabric", &node.interfaces.fabric),
        ("interfaces.upstream", &node.interfaces.upstream),
    ];
    for (field, list) in ifs {
        for name in list {
            if name.len() > MAX_IFNAME {
                return Err(CompileError::IfName {
                    field,
                    name: name.clone(),
                });
            }
        }
    }
    for p in node.bgp.tor.iter().chain(&node.bgp.upstream) {
        if let Some(i) = p.interface.as_ref().filter(|i| i.len() > MAX_IFNAME) {
            return Err(CompileError::IfName {
                field: "bgp peer interface",
                name: i.clone(),
            });
        }
    }
    for r in &policy.l3_rules {
        if r.id.len() > MAX_COMMENT {
            return Err(CompileError::LongId { id: r.id.clone() });
        }
    }
    Ok(())
}

/// The pool as at most one range per family.
fn pool_by_family(pool: &[AddrRange]) -> Result<Vec<(Fam, AddrRange)>, CompileError> {
    let mut out = Vec::new();
    for fam in Fam::BOTH {
        let mut r: Vec<AddrRange> = pool
            .iter()
            .filter(|r| r.is_ipv4() == (fam == Fam::V4))
            .copied()
            .collect();
        r.sort();
        // Adjacent ranges are one range.
        let mut merged: Vec<AddrRange> = Vec::new();
        for x in r {
            match merged.last_mut() {
                Some(m) if next(m.last) == Some(x.first) => m.last = x.last,
                _ => merged.push(x),
            }
        }
        match merged.len() {
            0 => {}
            1 => out.push((fam, merged[0])),
            n => {
                return Err(CompileError::PoolNotContiguous {
                    fam: fam.suffix(),
                    n,
                });
            }
        }
    }
    Ok(out)
}

fn next(a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

fn set(kind: &str, name: &str, fam: Fam) -> Addrs {
    Addrs::Set(set_name(kind, name, fam))
}

/// Tenant tcp/80 and tcp/443 -> the proxy's local ports.
///
/// Why `redirect` and not TPROXY: redirect is a destination NAT to the node's own address
/// on the ingress interface; conntrack keeps the original destination, which the proxy
/// reads with `SO_ORIGINAL_DST`. It needs no policy routing (TPROXY needs an `fwmark`
/// rule and a local route table), no `IP_TRANSPARENT` socket, and the proxy's reply
/// traffic is plain conntrack-reversed NAT, which also survives a table reload.
fn prerouting(node: &NodeConfig, policy: &Policy, fabric: &[String]) -> ChainDef {
    let mut rules = Vec::new();
    for t in &policy.tenants {
        let diverts = [
            (t.divert_http, 80u16, node.proxy.http_port, "http"),
            (t.divert_https, 443, node.proxy.https_port, "https"),
        ];
        for (on, port, to, what) in diverts {
            if !on {
                continue;
            }
            for fam in Fam::BOTH {
                rules.push(
                    RuleDef::new(vec![
                        Stmt::IifName(fabric.to_vec()),
                        Stmt::Saddr(fam, set("tenant", &t.name, fam)),
                        Stmt::Dport("tcp", vec![PortRange::single(port)]),
                        Stmt::Counter,
                        Stmt::Redirect(to),
                    ])
                    .comment(format!("divert {what} of tenant {}", t.name)),
                );
            }
        }
    }
    ChainDef {
        name: "prerouting".into(),
        base: Some(Base {
            nat: true,
            hook: NfHook::Prerouting,
            prio: PRIO_DSTNAT,
            drop: false,
        }),
        rules,
    }
}

fn ports(v: &[u16]) -> Vec<PortRange> {
    v.iter().copied().map(PortRange::single).collect()
}

fn input(node: &NodeConfig, policy: &Policy, fabric: &[String]) -> ChainDef {
    let mut r = vec![
        RuleDef::new(vec![Stmt::IifName(vec!["lo".into()]), Stmt::Accept]),
        RuleDef::new(vec![
            Stmt::CtState(vec!["established", "related"]),
            Stmt::Accept,
        ]),
        RuleDef::new(vec![
            Stmt::CtState(vec!["invalid"]),
            Stmt::Counter,
            Stmt::Drop,
        ]),
        RuleDef::new(vec![
            Stmt::IcmpType(Fam::V4, ICMP_TYPES.to_vec()),
            Stmt::Accept,
        ])
        .comment("icmp: errors (PMTU), ping"),
        RuleDef::new(vec![
            Stmt::IcmpType(Fam::V6, ICMPV6_TYPES.to_vec()),
            Stmt::Accept,
        ])
        .comment("icmpv6: errors (PMTU), ping, neighbour discovery"),
    ];
    for fam in Fam::BOTH {
        r.push(
            RuleDef::new(vec![
                Stmt::Saddr(fam, set("bgp", "peers", fam)),
                Stmt::Dport("tcp", ports(&[BGP_PORT])),
                Stmt::Accept,
            ])
            .comment("bgp from configured peers"),
        );
        r.push(
            RuleDef::new(vec![
                Stmt::Saddr(fam, set("bgp", "peers", fam)),
                Stmt::Dport("udp", ports(&BFD_PORTS)),
                Stmt::Accept,
            ])
            .comment("bfd from configured peers"),
        );
    }
    // Unnumbered sessions: the peer is whoever sits on that interface, by link-local.
    let unnumbered: BTreeSet<String> = node
        .bgp
        .tor
        .iter()
        .chain(&node.bgp.upstream)
        .filter_map(|p| p.interface.clone())
        .collect();
    if !unnumbered.is_empty() {
        let ifs: Vec<String> = unnumbered.into_iter().collect();
        let ll: IpNet = "fe80::/10".parse().unwrap_or_else(|_| unreachable!());
        for (p, ports_, what) in [
            ("tcp", ports(&[BGP_PORT]), "bgp"),
            ("udp", ports(&BFD_PORTS), "bfd"),
        ] {
            r.push(
                RuleDef::new(vec![
                    Stmt::IifName(ifs.clone()),
                    Stmt::Saddr(Fam::V6, Addrs::Nets(vec![ll])),
                    Stmt::Dport(p, ports_),
                    Stmt::Accept,
                ])
                .comment(format!("{what} from unnumbered peers (link-local)")),
            );
        }
    }
    let metrics = node.control.metrics.port();
    let mgmt_ports: Vec<u16> = [node.management.ssh_port]
        .into_iter()
        .chain((0..3).filter_map(|i| metrics.checked_add(i)))
        .collect();
    for fam in Fam::BOTH {
        r.push(
            RuleDef::new(vec![
                Stmt::Saddr(fam, set("peer", "node", fam)),
                Stmt::L4Proto(vec!["tcp", "udp"]),
                Stmt::Dport("th", ports(&[node.sync.port, node.sync.heartbeat_port])),
                Stmt::Accept,
            ])
            .comment(format!("sync and heartbeats from {}", node.peer.name)),
        );
        r.push(
            RuleDef::new(vec![
                Stmt::Saddr(fam, set("mgmt", "sources", fam)),
                Stmt::Dport("tcp", ports(&mgmt_ports)),
                Stmt::Accept,
            ])
            .comment("ssh and metrics from management sources"),
        );
        let p = &node.proxy;
        r.push(
            RuleDef::new(vec![
                Stmt::IifName(fabric.to_vec()),
                Stmt::Saddr(fam, set("all", "tenants", fam)),
                Stmt::Dport("tcp", ports(&[p.explicit_port, p.http_port, p.https_port])),
                Stmt::Counter,
                Stmt::Accept,
            ])
            .comment("proxy ports (explicit and diverted) from tenants"),
        );
    }
    if policy.defaults.log_drops {
        r.push(RuleDef::new(vec![
            Stmt::LimitPerMinute(policy.defaults.log_rate_per_minute.max(1)),
            Stmt::Log("igw drop input: ".into()),
        ]));
    }
    r.push(RuleDef::new(vec![Stmt::Counter, Stmt::Drop]).comment("default drop input"));
    ChainDef {
        name: "input".into(),
        base: Some(Base {
            nat: false,
            hook: NfHook::Input,
            prio: PRIO_FILTER,
            drop: true,
        }),
        rules: r,
    }
}

fn forward(policy: &Policy, fabric: &[String]) -> (ChainDef, Vec<ChainDef>) {
    let mut r = vec![
        RuleDef::new(vec![
            Stmt::CtState(vec!["established", "related"]),
            Stmt::Accept,
        ]),
        RuleDef::new(vec![
            Stmt::CtState(vec!["invalid"]),
            Stmt::Counter,
            Stmt::Drop,
        ])
        .comment("invalid packets never leave, NATed or not"),
    ];
    let mut tenant_chains = Vec::new();
    for t in &policy.tenants {
        for fam in Fam::BOTH {
            r.push(RuleDef::new(vec![
                Stmt::IifName(fabric.to_vec()),
                Stmt::Saddr(fam, set("tenant", &t.name, fam)),
                Stmt::Jump(tenant_chain(&t.name)),
            ]));
        }
        tenant_chains.push(tenant(policy, &t.name));
    }
    if policy.defaults.log_drops {
        r.push(RuleDef::new(vec![
            Stmt::LimitPerMinute(policy.defaults.log_rate_per_minute.max(1)),
            Stmt::Log("igw drop no-tenant: ".into()),
        ]));
    }
    r.push(RuleDef::new(vec![Stmt::Counter, Stmt::Drop]).comment("not from a tenant"));
    let chain = ChainDef {
        name: "forward".into(),
        base: Some(Base {
            nat: false,
            hook: NfHook::Forward,
            prio: PRIO_FILTER,
            drop: true,
        }),
        rules: r,
    };
    (chain, tenant_chains)
}

/// A tenant's chain: its allow rules in file order, then log and drop.
fn tenant(policy: &Policy, name: &str) -> ChainDef {
    let mut rules = Vec::new();
    for rule in policy
        .l3_rules
        .iter()
        .filter(|r| r.tenants.is_empty() || r.tenants.iter().any(|t| t == name))
    {
        for m in rule_matches(policy, rule) {
            if rule.log {
                let mut s = m.clone();
                s.push(Stmt::LimitPerMinute(
                    policy.defaults.log_rate_per_minute.max(1),
                ));
                s.push(Stmt::Log(format!("igw allow {}: ", rule.id)));
                rules.push(RuleDef::new(s));
            }
            let mut s = m;
            s.push(Stmt::Counter);
            s.push(Stmt::Accept);
            rules.push(RuleDef::new(s).comment(rule.id.clone()));
        }
    }
    if policy.defaults.log_drops {
        rules.push(RuleDef::new(vec![
            Stmt::LimitPerMinute(policy.defaults.log_rate_per_minute.max(1)),
            Stmt::Log(format!("igw drop {name}: ")),
        ]));
    }
    rules.push(
        RuleDef::new(vec![Stmt::Counter, Stmt::Drop]).comment(format!("default drop {name}")),
    );
    ChainDef {
        name: tenant_chain(name),
        base: None,
        rules,
    }
}

/// The match parts of one L3 rule: one nft rule per destination group and family.
fn rule_matches(policy: &Policy, rule: &L3Rule) -> Vec<Vec<Stmt>> {
    let proto: Vec<Stmt> = match rule.proto {
        Proto::Tcp | Proto::Udp => {
            let p = if rule.proto == Proto::Tcp {
                "tcp"
            } else {
                "udp"
            };
            if rule.ports.is_empty() {
                vec![Stmt::L4Proto(vec![p])]
            } else {
                vec![Stmt::Dport(p, rule.ports.clone())]
            }
        }
        Proto::Icmp => vec![Stmt::L4Proto(vec!["icmp"])],
        Proto::Icmpv6 => vec![Stmt::L4Proto(vec!["ipv6-icmp"])],
        Proto::Any => vec![],
    };
    // ICMP lives in one family only; do not emit rules that can never match.
    let fams: Vec<Fam> = match rule.proto {
        Proto::Icmp => vec![Fam::V4],
        Proto::Icmpv6 => vec![Fam::V6],
        _ => Fam::BOTH.to_vec(),
    };
    let mut out = Vec::new();
    if rule.dst.is_empty() {
        out.push(proto);
        return out;
    }
    for fam in fams {
        let mut literal = Vec::new();
        for d in &rule.dst {
            match d {
                // Object rules exist for both families even while a family is empty, so
                // adding members stays an element update.
                Dst::Object(name) if policy.objects.contains_key(name) => {
                    let mut m = vec![Stmt::Daddr(fam, set("obj", name, fam))];
                    m.extend(proto.iter().cloned());
                    out.push(m);
                }
                Dst::Object(_) => {}
                Dst::Net(n) if Fam::of(n) == fam => literal.push(*n),
                Dst::Net(_) => {}
            }
        }
        if !literal.is_empty() {
            let mut m = vec![Stmt::Daddr(fam, Addrs::Nets(aggregate(&literal, fam)))];
            m.extend(proto.iter().cloned());
            out.push(m);
        }
    }
    out
}

fn postrouting(upstream: &[String], pool: &[(Fam, AddrRange)]) -> ChainDef {
    let mut rules = Vec::new();
    // BGP and BFD to the upstream peers keep the interface address: the sessions are
    // configured on it, and the pool moves between nodes with the active role.
    for fam in Fam::BOTH {
        for (p, ports_, what) in [
            ("tcp", ports(&[BGP_PORT]), "bgp"),
            ("udp", ports(&BFD_PORTS), "bfd"),
        ] {
            rules.push(
                RuleDef::new(vec![
                    Stmt::OifName(upstream.to_vec()),
                    Stmt::Daddr(fam, set("bgp", "peers", fam)),
                    Stmt::Dport(p, ports_),
                    Stmt::Accept,
                ])
                .comment(format!("{what} to peers: no NAT")),
            );
        }
        // Our side of a session the peer opened. Only the first packet of a connection
        // is NATed, but a session already up when the ruleset is first applied is picked
        // up mid-stream by conntrack from our reply (source port 179): without this rule
        // that packet was SNATed to the pool and the session died at the hold timer.
        rules.push(
            RuleDef::new(vec![
                Stmt::OifName(upstream.to_vec()),
                Stmt::Daddr(fam, set("bgp", "peers", fam)),
                Stmt::Sport("tcp", ports(&[BGP_PORT])),
                Stmt::Accept,
            ])
            .comment("bgp replies to peers: no NAT"),
        );
    }
    // Everything else new on the upstream side: tenant egress and the node's own proxy
    // connections. `snat to` a fixed pool, never masquerade: masquerade bindings are
    // flushed when their interface goes down, which breaks the synced state of a failover.
    for (fam, range) in pool {
        rules.push(
            RuleDef::new(vec![
                Stmt::OifName(upstream.to_vec()),
                Stmt::Counter,
                Stmt::Snat(*fam, *range),
            ])
            .comment("egress to the NAT pool"),
        );
    }
    ChainDef {
        name: "postrouting".into(),
        base: Some(Base {
            nat: true,
            hook: NfHook::Postrouting,
            prio: PRIO_SRCNAT,
            drop: false,
        }),
        rules,
    }
}

/// Runs after srcnat: a packet that still carries a tenant source on the upstream side
/// skipped NAT (a flow older than the ruleset, a synced flow without its binding, a
/// family without a pool) and must not leave.
fn egress_guard(upstream: &[String]) -> ChainDef {
    let rules = Fam::BOTH
        .into_iter()
        .map(|fam| {
            RuleDef::new(vec![
                Stmt::OifName(upstream.to_vec()),
                Stmt::Saddr(fam, set("all", "tenants", fam)),
                Stmt::Counter,
                Stmt::Drop,
            ])
            .comment("tenant source un-NATed on the upstream side")
        })
        .collect();
    ChainDef {
        name: "egress_guard".into(),
        base: Some(Base {
            nat: false,
            hook: NfHook::Postrouting,
            prio: PRIO_GUARD,
            drop: false,
        }),
        rules,
    }
}

/// FNV-1a of the table's JSON without set elements: stable across builds and Rust
/// versions, so the golden files and the running table agree.
fn fingerprint(table: &Table) -> String {
    let json = serde_json::to_string(&table.add_objects(false)).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
