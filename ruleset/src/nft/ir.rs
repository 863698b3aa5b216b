//! The compiled table as a small typed model, rendered two ways: nft JSON (through the
//! `nftables` crate's schema types, what `igw ruleset apply` feeds to `nft -j -f -`) and
//! nft text (what operators read in `igw ruleset render`). Both come from this one model,
//! and a netns test loads both and checks the kernel ends up with the same table.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use igw_core::addr::{AddrRange, PortRange};
use ipnet::IpNet;
use nftables::expr::{self, Expression, NamedExpression};
use nftables::schema::{self, NfListObject, NfObject};
use nftables::stmt::{self, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// The one table igw owns: `table inet igw`.
pub const TABLE: &str = "igw";

/// IPv4 or IPv6: nftables sets and NAT statements are per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fam {
    V4,
    V6,
}

impl Fam {
    pub const BOTH: [Fam; 2] = [Fam::V4, Fam::V6];

    /// The payload protocol of addresses: `ip` / `ip6`.
    pub fn proto(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }
    pub fn suffix(self) -> &'static str {
        match self {
            Fam::V4 => "v4",
            Fam::V6 => "v6",
        }
    }
    fn set_type(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4_addr",
            Fam::V6 => "ipv6_addr",
        }
    }
    pub fn of(net: &IpNet) -> Fam {
        match net {
            IpNet::V4(_) => Fam::V4,
            IpNet::V6(_) => Fam::V6,
        }
    }
}

/// A named interval set of addresses of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub name: String,
    pub fam: Fam,
    pub comment: String,
    /// Aggregated (no overlaps, no adjacent blocks), sorted: interval sets refuse overlaps,
    /// and one canonical form makes element deltas exact.
    pub elems: Vec<IpNet>,
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base {
    pub nat: bool,
    pub hook: NfHook,
    pub prio: i32,
    pub drop: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDef {
    pub name: String,
    pub base: Option<Base>,
    pub rules: Vec<RuleDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleDef {
    pub stmts: Vec<Stmt>,
    pub comment: Option<String>,
}

impl RuleDef {
    pub fn new(stmts: Vec<Stmt>) -> Self {
        Self {
            stmts,
            comment: None,
        }
    }
    pub fn comment(mut self, c: impl Into<String>) -> Self {
        self.comment = Some(c.into());
        self
    }
}

/// Addresses a rule matches: a named set or literal networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addrs {
    Set(String),
    Nets(Vec<IpNet>),
}

/// The statements the compiler uses; each renders to JSON and to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    IifName(Vec<String>),
    OifName(Vec<String>),
    Saddr(Fam, Addrs),
    Daddr(Fam, Addrs),
    /// `meta l4proto` (one or a set): `tcp`, `udp`, `icmp`, `ipv6-icmp`.
    L4Proto(Vec<&'static str>),
    /// `<proto> dport`, proto `tcp`, `udp` or `th` (either, after an l4proto match).
    Dport(&'static str, Vec<PortRange>),
    /// `<proto> sport`, as [`Stmt::Dport`].
    Sport(&'static str, Vec<PortRange>),
    CtState(Vec<&'static str>),
    /// `icmp type` / `icmpv6 type`.
    IcmpType(Fam, Vec<&'static str>),
    Counter,
    /// Rate limit, per minute, with a small burst.
    LimitPerMinute(u32),
    Log(String),
    Accept,
    Drop,
    Jump(String),
    /// Redirect to a local port (the proxy), keeping the original destination in conntrack.
    Redirect(u16),
    Snat(Fam, AddrRange),
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub sets: Vec<SetDef>,
    pub chains: Vec<ChainDef>,
}

// ---------------------------------------------------------------------------------------
// JSON.

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn addr_expr(n: &IpNet) -> Expression<'static> {
    if n.prefix_len() == n.max_prefix_len() {
        s(n.addr().to_string())
    } else {
        Expression::Named(NamedExpression::Prefix(expr::Prefix {
            addr: Box::new(s(n.network().to_string())),
            len: u32::from(n.prefix_len()),
        }))
    }
}

fn port_expr(p: &PortRange) -> Expression<'static> {
    if p.first == p.last {
        Expression::Number(u32::from(p.first))
    } else {
        Expression::Range(Box::new(expr::Range {
            range: [
                Expression::Number(u32::from(p.first)),
                Expression::Number(u32::from(p.last)),
            ],
        }))
    }
}

/// One value as is, several as an anonymous set.
fn one_or_set(mut v: Vec<Expression<'static>>) -> Expression<'static> {
    if v.len() == 1 {
        v.remove(0)
    } else {
        Expression::Named(NamedExpression::Set(
            v.into_iter().map(expr::SetItem::Element).collect(),
        ))
    }
}

fn payload(proto: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(expr::Payload::PayloadField(
        expr::PayloadField {
            protocol: Cow::Owned(proto.to_string()),
            field: Cow::Owned(field.to_string()),
        },
    )))
}

fn meta(key: expr::MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(expr::Meta { key }))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(stmt::Match {
        left,
        right,
        op: stmt::Operator::EQ,
    })
}

fn addrs_expr(a: &Addrs) -> Expression<'static> {
    match a {
        Addrs::Set(name) => s(format!("@{name}")),
        Addrs::Nets(nets) => one_or_set(nets.iter().map(addr_expr).collect()),
    }
}

impl Stmt {
    fn json(&self) -> Statement<'static> {
        use expr::MetaKey;
        match self {
            Stmt::IifName(v) => eq(
                meta(MetaKey::Iifname),
                one_or_set(v.iter().map(|n| s(n.clone())).collect()),
            ),
            Stmt::OifName(v) => eq(
                meta(MetaKey::Oifname),
                one_or_set(v.iter().map(|n| s(n.clone())).collect()),
            ),
            Stmt::Saddr(f, a) => eq(payload(f.proto(), "saddr"), addrs_expr(a)),
            Stmt::Daddr(f, a) => eq(payload(f.proto(), "daddr"), addrs_expr(a)),
            Stmt::L4Proto(v) => eq(
                meta(MetaKey::L4proto),
                one_or_set(v.iter().map(|p| s(*p)).collect()),
            ),
            Stmt::Dport(p, ports) => eq(
                payload(p, "dport"),
                one_or_set(ports.iter().map(port_expr).collect()),
            ),
            Stmt::Sport(p, ports) => eq(
                payload(p, "sport"),
                one_or_set(ports.iter().map(port_expr).collect()),
            ),
            Stmt::CtState(v) => Statement::Match(stmt::Match {
                left: Expression::Named(NamedExpression::CT(expr::CT {
                    key: Cow::Borrowed("state"),
                    family: None,
                    dir: None,
                })),
                right: if v.len() == 1 {
                    s(v[0])
                } else {
                    Expression::List(v.iter().map(|x| s(*x)).collect())
                },
                op: stmt::Operator::IN,
            }),
            Stmt::IcmpType(f, v) => eq(
                payload(
                    match f {
                        Fam::V4 => "icmp",
                        Fam::V6 => "icmpv6",
                    },
                    "type",
                ),
                one_or_set(v.iter().map(|x| s(*x)).collect()),
            ),
            Stmt::Counter => Statement::Counter(stmt::Counter::Anonymous(Some(
                stmt::AnonymousCounter::default(),
            ))),
            Stmt::LimitPerMinute(r) => Statement::Limit(stmt::Limit {
                rate: *r,
                rate_unit: None,
                per: Some(Cow::Borrowed("minute")),
                burst: Some(LOG_BURST),
                burst_unit: Some(Cow::Borrowed("packets")),
                inv: None,
            }),
            Stmt::Log(prefix) => Statement::Log(Some(stmt::Log {
                prefix: Some(Cow::Owned(prefix.clone())),
                ..stmt::Log::new(None)
            })),
            Stmt::Accept => Statement::Accept(None),
            Stmt::Drop => Statement::Drop(None),
            Stmt::Jump(t) => Statement::Jump(stmt::JumpTarget {
                target: Cow::Owned(t.clone()),
            }),
            Stmt::Redirect(port) => Statement::Redirect(Some(stmt::NAT {
                addr: None,
                family: None,
                port: Some(Expression::Number(u32::from(*port))),
                flags: None,
            })),
            Stmt::Snat(f, r) => Statement::SNAT(Some(stmt::NAT {
                addr: Some(if r.first == r.last {
                    s(r.first.to_string())
                } else {
                    Expression::Range(Box::new(expr::Range {
                        range: [s(r.first.to_string()), s(r.last.to_string())],
                    }))
                }),
                family: Some(match f {
                    Fam::V4 => stmt::NATFamily::IP,
                    Fam::V6 => stmt::NATFamily::IP6,
                }),
                port: None,
                flags: None,
            })),
        }
    }

    fn text(&self) -> String {
        fn names(v: &[String]) -> String {
            let q: Vec<String> = v.iter().map(|n| format!("\"{n}\"")).collect();
            braces(&q)
        }
        fn addrs(a: &Addrs) -> String {
            match a {
                Addrs::Set(n) => format!("@{n}"),
                Addrs::Nets(v) => braces(&v.iter().map(net_text).collect::<Vec<_>>()),
            }
        }
        match self {
            Stmt::IifName(v) => format!("iifname {}", names(v)),
            Stmt::OifName(v) => format!("oifname {}", names(v)),
            Stmt::Saddr(f, a) => format!("{} saddr {}", f.proto(), addrs(a)),
            Stmt::Daddr(f, a) => format!("{} daddr {}", f.proto(), addrs(a)),
            Stmt::L4Proto(v) => format!(
                "meta l4proto {}",
                braces(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>())
            ),
            Stmt::Dport(p, ports) => format!(
                "{p} dport {}",
                braces(&ports.iter().map(|p| p.to_string()).collect::<Vec<_>>())
            ),
            Stmt::Sport(p, ports) => format!(
                "{p} sport {}",
                braces(&ports.iter().map(|p| p.to_string()).collect::<Vec<_>>())
            ),
            Stmt::CtState(v) => format!("ct state {}", v.join(",")),
            Stmt::IcmpType(f, v) => format!(
                "{} type {}",
                match f {
                    Fam::V4 => "icmp",
                    Fam::V6 => "icmpv6",
                },
                braces(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>())
            ),
            Stmt::Counter => "counter".into(),
            Stmt::LimitPerMinute(r) => {
                format!("limit rate {r}/minute burst {LOG_BURST} packets")
            }
            Stmt::Log(p) => format!("log prefix \"{p}\""),
            Stmt::Accept => "accept".into(),
            Stmt::Drop => "drop".into(),
            Stmt::Jump(t) => format!("jump {t}"),
            Stmt::Redirect(p) => format!("redirect to :{p}"),
            Stmt::Snat(f, r) => format!("snat {} to {r}", f.proto()),
        }
    }
}

/// Burst of the drop-log limit: a short scan is still visible, a flood is not.
const LOG_BURST: u32 = 5;

fn braces(v: &[String]) -> String {
    if v.len() == 1 {
        v[0].clone()
    } else {
        format!("{{ {} }}", v.join(", "))
    }
}

fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.trunc().to_string()
    }
}

fn hook_name(h: NfHook) -> &'static str {
    match h {
        NfHook::Ingress => "ingress",
        NfHook::Prerouting => "prerouting",
        NfHook::Forward => "forward",
        NfHook::Input => "input",
        NfHook::Output => "output",
        NfHook::Postrouting => "postrouting",
        NfHook::Egress => "egress",
    }
}

impl SetDef {
    fn json(&self, with_elems: bool) -> schema::Set<'static> {
        schema::Set {
            family: NfFamily::INet,
            table: Cow::Borrowed(TABLE),
            name: Cow::Owned(self.name.clone()),
            handle: None,
            set_type: schema::SetTypeValue::Single(match self.fam {
                Fam::V4 => schema::SetType::Ipv4Addr,
                Fam::V6 => schema::SetType::Ipv6Addr,
            }),
            policy: None,
            flags: Some([schema::SetFlag::Interval].into_iter().collect()),
            elem: (with_elems && !self.elems.is_empty())
                .then(|| Cow::Owned(self.elems.iter().map(addr_expr).collect())),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: Some(Cow::Owned(self.comment.clone())),
        }
    }
}

/// `add element` / `delete element` objects for one set.
pub fn element_obj(set: &str, elems: &[IpNet]) -> NfListObject<'static> {
    NfListObject::Element(schema::Element {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(set.to_string()),
        elem: Cow::Owned(elems.iter().map(addr_expr).collect()),
    })
}

/// The table object itself (for `add table` / `delete table`).
pub fn table_obj() -> NfListObject<'static> {
    NfListObject::Table(schema::Table {
        family: NfFamily::INet,
        name: Cow::Borrowed(TABLE),
        handle: None,
    })
}

impl Table {
    /// `add` commands that create the table and its content (no delete: see
    /// [`crate::nft::full_replace`]). `with_elems = false` leaves sets empty, for the
    /// structure fingerprint.
    pub fn add_objects(&self, with_elems: bool) -> Vec<NfObject<'static>> {
        let add = |o| NfObject::CmdObject(schema::NfCmd::Add(o));
        let mut out = vec![add(table_obj())];
        for set in &self.sets {
            out.push(add(NfListObject::Set(Box::new(set.json(with_elems)))));
        }
        for c in &self.chains {
            let base = c.base;
            out.push(add(NfListObject::Chain(schema::Chain {
                family: NfFamily::INet,
                table: Cow::Borrowed(TABLE),
                name: Cow::Owned(c.name.clone()),
                newname: None,
                handle: None,
                _type: base.map(|b| {
                    if b.nat {
                        NfChainType::NAT
                    } else {
                        NfChainType::Filter
                    }
                }),
                hook: base.map(|b| b.hook),
                prio: base.map(|b| b.prio),
                dev: None,
                policy: base.map(|b| {
                    if b.drop {
                        NfChainPolicy::Drop
                    } else {
                        NfChainPolicy::Accept
                    }
                }),
            })));
        }
        for c in &self.chains {
            for r in &c.rules {
                out.push(add(NfListObject::Rule(schema::Rule {
                    family: NfFamily::INet,
                    table: Cow::Borrowed(TABLE),
                    chain: Cow::Owned(c.name.clone()),
                    expr: Cow::Owned(r.stmts.iter().map(Stmt::json).collect()),
                    handle: None,
                    index: None,
                    comment: r.comment.clone().map(Cow::Owned),
                })));
            }
        }
        out
    }

    /// nft text of the table, in the layout of `nft list table`.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "table inet {TABLE} {{");
        for set in &self.sets {
            let _ = writeln!(o, "\tset {} {{", set.name);
            let _ = writeln!(o, "\t\ttype {}", set.fam.set_type());
            let _ = writeln!(o, "\t\tflags interval");
            let _ = writeln!(o, "\t\tcomment \"{}\"", set.comment);
            if !set.elems.is_empty() {
                let e: Vec<String> = set.elems.iter().map(net_text).collect();
                let _ = writeln!(o, "\t\telements = {{ {} }}", e.join(",\n\t\t\t     "));
            }
            let _ = writeln!(o, "\t}}\n");
        }
        for (i, c) in self.chains.iter().enumerate() {
            let _ = writeln!(o, "\tchain {} {{", c.name);
            if let Some(b) = c.base {
                let _ = writeln!(
                    o,
                    "\t\ttype {} hook {} priority {}; policy {};",
                    if b.nat { "nat" } else { "filter" },
                    hook_name(b.hook),
                    b.prio,
                    if b.drop { "drop" } else { "accept" }
                );
            }
            for r in &c.rules {
                let mut line: Vec<String> = r.stmts.iter().map(Stmt::text).collect();
                if let Some(cm) = &r.comment {
                    line.push(format!("comment \"{cm}\""));
                }
                let _ = writeln!(o, "\t\t{}", line.join(" "));
            }
            let _ = writeln!(o, "\t}}");
            if i + 1 < self.chains.len() {
                o.push('\n');
            }
        }
        o.push_str("}\n");
        o
    }

    pub fn set(&self, name: &str) -> Option<&SetDef> {
        self.sets.iter().find(|s| s.name == name)
    }
}

/// An address as the network it denotes (`/32` or `/128`).
pub fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}
