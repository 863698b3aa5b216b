//! `policy.toml`: named address objects, tenants, L3 (5-tuple) allow rules, L7 (URI) rules
//! and defaults. Loading validates everything and reads the list files the policy names;
//! the result is a [`Policy`] whose references are all resolved, ready to compile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::addr::{self, PortRange};
use crate::diag::{self, ConfigError, Diagnostic, Source};

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    objects: BTreeMap<String, RawObject>,
    #[serde(default)]
    tenants: Vec<RawTenant>,
    #[serde(default)]
    l3_rules: Vec<RawL3Rule>,
    #[serde(default)]
    l7_rules: Vec<RawL7Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObject {
    #[serde(default)]
    members: Vec<Spanned<String>>,
    /// Files with one address or CIDR per line (`#` starts a comment).
    #[serde(default)]
    files: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: Spanned<String>,
    subnets: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    divert_http: bool,
    #[serde(default = "yes")]
    divert_https: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawL3Rule {
    id: Spanned<String>,
    /// Tenants the rule applies to; empty means every tenant.
    #[serde(default)]
    tenants: Vec<Spanned<String>>,
    proto: Spanned<String>,
    /// Object names or CIDRs; empty means any destination.
    #[serde(default)]
    dst: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<PortValue>>,
    #[serde(default)]
    log: bool,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawL7Rule {
    id: Spanned<String>,
    #[serde(default)]
    tenants: Vec<Spanned<String>>,
    action: Action,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    /// Files with one domain (`example.com` or `*.example.com`) per line.
    #[serde(default)]
    domain_files: Vec<Spanned<String>>,
    #[serde(default)]
    path_prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    regex: Vec<Spanned<String>>,
    #[serde(default)]
    methods: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<PortValue>>,
    /// Transparent mode: allow the domain whatever address it resolves to (CDNs,
    /// round-robin DNS), skipping the check that the name resolves to the original
    /// destination.
    #[serde(default)]
    any_address: bool,
    /// Destinations in `cidrs` that are internal or reserved are allowed by this rule; the
    /// SSRF guard refuses them otherwise.
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortValue {
    Num(i64),
    Text(String),
}

fn yes() -> bool {
    true
}

// ---------------------------------------------------------------------------------------
// The validated policy.

/// What to do with a request or packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Decision for HTTP/HTTPS requests no L7 rule matches.
    #[serde(default = "deny")]
    pub l7: Action,
    /// Log dropped forward packets (rate limited, prefix names the tenant).
    #[serde(default = "yes")]
    pub log_drops: bool,
    /// Drop-log lines per minute, per tenant.
    #[serde(default = "default_log_rate")]
    pub log_rate_per_minute: u32,
    /// Transparent mode: require the requested name to resolve to the original destination.
    #[serde(default = "yes")]
    pub resolve_check: bool,
}

fn deny() -> Action {
    Action::Deny
}
fn default_log_rate() -> u32 {
    60
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            l7: Action::Deny,
            log_drops: true,
            log_rate_per_minute: 60,
            resolve_check: true,
        }
    }
}

/// A named group of networks, split by family (nftables sets are per family).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressObject {
    pub name: String,
    pub nets: Vec<IpNet>,
}

impl AddressObject {
    pub fn v4(&self) -> impl Iterator<Item = &IpNet> {
        self.nets.iter().filter(|n| matches!(n, IpNet::V4(_)))
    }
    pub fn v6(&self) -> impl Iterator<Item = &IpNet> {
        self.nets.iter().filter(|n| matches!(n, IpNet::V6(_)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    pub subnets: Vec<IpNet>,
    pub divert_http: bool,
    pub divert_https: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Any,
}

impl Proto {
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            "icmpv6" | "ipv6-icmp" => Proto::Icmpv6,
            "any" => Proto::Any,
            _ => {
                return Err(format!(
                    "unknown protocol `{s}` (tcp, udp, icmp, icmpv6, any)"
                ));
            }
        })
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
            Proto::Any => "any",
        })
    }
}

/// A destination of an L3 rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dst {
    Object(String),
    Net(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Rule {
    pub id: String,
    /// Empty: every tenant.
    pub tenants: Vec<String>,
    pub proto: Proto,
    /// Empty: any destination.
    pub dst: Vec<Dst>,
    /// Empty: any port.
    pub ports: Vec<PortRange>,
    pub log: bool,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Rule {
    pub id: String,
    /// Empty: every tenant.
    pub tenants: Vec<String>,
    pub action: Action,
    /// Lower-case, no trailing dot; `*.suffix` for a suffix match. Includes domain files.
    pub domains: Vec<String>,
    pub path_prefixes: Vec<String>,
    pub regex: Vec<String>,
    /// Upper-case method names; empty: any method.
    pub methods: Vec<String>,
    /// Empty: any port.
    pub ports: Vec<PortRange>,
    pub any_address: bool,
    pub cidrs: Vec<IpNet>,
    pub comment: Option<String>,
}

/// A validated policy: every reference resolves, every list file has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub source: PathBuf,
    /// The list files the policy names, as written (relative to the policy's directory),
    /// so a bundle can carry them along.
    pub list_files: Vec<PathBuf>,
    pub defaults: Defaults,
    pub objects: BTreeMap<String, AddressObject>,
    pub tenants: Vec<Tenant>,
    pub l3_rules: Vec<L3Rule>,
    pub l7_rules: Vec<L7Rule>,
}

impl Policy {
    /// Reads and validates a policy file and the list files it names (paths relative to the
    /// policy file's directory).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = diag::read_file(path).map_err(ConfigError::single)?;
        Self::parse(path, &text)
    }

    /// Parses policy text. List files are read relative to `path`'s directory.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source::new(path, text);
        let raw: RawPolicy = diag::from_toml(&src)?;
        Validator::new(&src).run(raw)
    }

    /// The tenant whose subnets contain `addr` (subnets never overlap).
    pub fn tenant_of(&self, addr: IpAddr) -> Option<&Tenant> {
        self.tenants
            .iter()
            .find(|t| t.subnets.iter().any(|n| n.contains(&addr)))
    }

    /// Every tenant subnet, of every tenant.
    pub fn tenant_subnets(&self) -> impl Iterator<Item = &IpNet> {
        self.tenants.iter().flat_map(|t| t.subnets.iter())
    }
}

// ---------------------------------------------------------------------------------------
// Validation.

struct Validator<'a> {
    src: &'a Source<'a>,
    dir: PathBuf,
    list_files: Vec<PathBuf>,
    errs: Vec<Diagnostic>,
}

impl<'a> Validator<'a> {
    fn new(src: &'a Source<'a>) -> Self {
        let dir = src.path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self {
            src,
            dir,
            list_files: Vec::new(),
            errs: Vec::new(),
        }
    }

    fn err<T>(&mut self, at: &Spanned<T>, field: impl Into<String>, msg: impl Into<String>) {
        let d = self.src.diag(Some(at.span()), field, msg);
        self.errs.push(d);
    }

    fn run(mut self, raw: RawPolicy) -> Result<Policy, ConfigError> {
        let objects = self.objects(&raw.objects);
        let tenants = self.tenants(&raw.tenants);
        let tenant_names: BTreeSet<&str> = tenants.iter().map(|t| t.name.as_str()).collect();

        let mut ids: HashMap<String, ()> = HashMap::new();
        let mut l3_rules = Vec::new();
        for (i, r) in raw.l3_rules.iter().enumerate() {
            let f = |s: &str| format!("l3_rules[{i}].{s}");
            self.check_id(&mut ids, &r.id, &f("id"));
            let t = self.tenant_refs(&r.tenants, &tenant_names, &f("tenants"));
            let proto = match r.proto.get_ref().parse::<Proto>() {
                Ok(p) => p,
                Err(e) => {
                    self.err(&r.proto, f("proto"), e);
                    Proto::Any
                }
            };
            let mut dst = Vec::new();
            for d in &r.dst {
                let s = d.get_ref().trim();
                if objects.contains_key(s) {
                    dst.push(Dst::Object(s.to_string()));
                } else if looks_like_address(s) {
                    match addr::parse_cidr(s) {
                        Ok(n) => dst.push(Dst::Net(n)),
                        Err(e) => self.err(d, f("dst"), e),
                    }
                } else {
                    let known: Vec<&str> = objects.keys().map(String::as_str).collect();
                    self.err(
                        d,
                        f("dst"),
                        format!("no object named `{s}` (objects: {})", list_or_none(&known)),
                    );
                }
            }
            let ports = self.ports(&r.ports, &f("ports"));
            if !ports.is_empty() && !proto.has_ports() {
                self.err(
                    &r.proto,
                    f("ports"),
                    format!("ports need proto tcp or udp, not {proto}"),
                );
            }
            l3_rules.push(L3Rule {
                id: r.id.get_ref().clone(),
                tenants: t,
                proto,
                dst,
                ports,
                log: r.log,
                comment: r.comment.clone(),
            });
        }

        let mut l7_rules = Vec::new();
        for (i, r) in raw.l7_rules.iter().enumerate() {
            let f = |s: &str| format!("l7_rules[{i}].{s}");
            self.check_id(&mut ids, &r.id, &f("id"));
            let t = self.tenant_refs(&r.tenants, &tenant_names, &f("tenants"));
            let mut domains = Vec::new();
            for d in &r.domains {
                match normalize_domain_pattern(d.get_ref()) {
                    Ok(n) => domains.push(n),
                    Err(e) => self.err(d, f("domains"), e),
                }
            }
            for file in &r.domain_files {
                self.read_list(file, &f("domain_files"), |line| {
                    normalize_domain_pattern(line).map(|n| domains.push(n))
                });
            }
            let mut path_prefixes = Vec::new();
            for p in &r.path_prefixes {
                if p.get_ref().starts_with('/') {
                    path_prefixes.push(p.get_ref().clone());
                } else {
                    self.err(p, f("path_prefixes"), "a path prefix starts with `/`");
                }
            }
            let mut regex = Vec::new();
            for re in &r.regex {
                // Compiled for real by the ruleset crate; here only emptiness is checked, so
                // the core stays free of the regex engine.
                if re.get_ref().is_empty() {
                    self.err(re, f("regex"), "empty regex matches everything; remove it");
                } else {
                    regex.push(re.get_ref().clone());
                }
            }
            let mut methods = Vec::new();
            for m in &r.methods {
                let s = m.get_ref();
                if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic()) {
                    methods.push(s.to_ascii_uppercase());
                } else {
                    self.err(m, f("methods"), format!("`{s}` is not an HTTP method"));
                }
            }
            let ports = self.ports(&r.ports, &f("ports"));
            let mut cidrs = Vec::new();
            for c in &r.cidrs {
                match addr::parse_cidr(c.get_ref()) {
                    Ok(n) => cidrs.push(n),
                    Err(e) => self.err(c, f("cidrs"), e),
                }
            }
            if domains.is_empty()
                && cidrs.is_empty()
                && path_prefixes.is_empty()
                && regex.is_empty()
                && methods.is_empty()
                && ports.is_empty()
                && r.action == Action::Allow
            {
                self.err(&r.id, f("id"), "an allow rule with no condition allows everything; set domains, cidrs, paths, regex, methods or ports");
            }
            l7_rules.push(L7Rule {
                id: r.id.get_ref().clone(),
                tenants: t,
                action: r.action,
                domains,
                path_prefixes,
                regex,
                methods,
                ports,
                any_address: r.any_address,
                cidrs,
                comment: r.comment.clone(),
            });
        }

        if self.errs.is_empty() {
            Ok(Policy {
                source: self.src.path.to_path_buf(),
                list_files: self.list_files,
                defaults: raw.defaults,
                objects,
                tenants,
                l3_rules,
                l7_rules,
            })
        } else {
            Err(ConfigError {
                diagnostics: self.errs,
            })
        }
    }

    fn objects(&mut self, raw: &BTreeMap<String, RawObject>) -> BTreeMap<String, AddressObject> {
        let mut out = BTreeMap::new();
        for (name, o) in raw {
            let field = format!("objects.{name}");
            if !valid_name(name) {
                let d = self.src.diag(
                    None,
                    field.clone(),
                    "names use letters, digits, `-` and `_`",
                );
                self.errs.push(d);
            }
            let mut nets = Vec::new();
            for m in &o.members {
                match addr::parse_cidr(m.get_ref()) {
                    Ok(n) => nets.push(n),
                    Err(e) => self.err(m, format!("{field}.members"), e),
                }
            }
            for file in &o.files {
                self.read_list(file, &format!("{field}.files"), |line| {
                    addr::parse_cidr(line).map(|n| nets.push(n))
                });
            }
            out.insert(
                name.clone(),
                AddressObject {
                    name: name.clone(),
                    nets,
                },
            );
        }
        out
    }

    fn tenants(&mut self, raw: &[RawTenant]) -> Vec<Tenant> {
        let mut out: Vec<Tenant> = Vec::new();
        let mut seen: Vec<(IpNet, String)> = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            let name = t.name.get_ref();
            if !valid_name(name) {
                self.err(
                    &t.name,
                    format!("tenants[{i}].name"),
                    "names use letters, digits, `-` and `_`",
                );
            }
            if out.iter().any(|o| &o.name == name) {
                self.err(
                    &t.name,
                    format!("tenants[{i}].name"),
                    format!("tenant `{name}` is defined twice"),
                );
            }
            if t.subnets.is_empty() {
                self.err(
                    &t.name,
                    format!("tenants[{i}].subnets"),
                    "a tenant needs at least one subnet",
                );
            }
            let mut subnets = Vec::new();
            for s in &t.subnets {
                match addr::parse_cidr(s.get_ref()) {
                    Ok(n) => {
                        if let Some((o, owner)) = seen
                            .iter()
                            .find(|(o, _)| o.contains(&n.network()) || n.contains(&o.network()))
                        {
                            self.err(
                                s,
                                format!("tenants[{i}].subnets"),
                                format!("{n} overlaps {o} of tenant `{owner}`"),
                            );
                        }
                        seen.push((n, name.clone()));
                        subnets.push(n);
                    }
                    Err(e) => self.err(s, format!("tenants[{i}].subnets"), e),
                }
            }
            out.push(Tenant {
                name: name.clone(),
                subnets,
                divert_http: t.divert_http,
                divert_https: t.divert_https,
            });
        }
        out
    }

    fn check_id(&mut self, ids: &mut HashMap<String, ()>, id: &Spanned<String>, field: &str) {
        let s = id.get_ref();
        if !valid_name(s) {
            self.err(
                id,
                field,
                format!("rule id `{s}`: use letters, digits, `-` and `_`"),
            );
        } else if ids.insert(s.clone(), ()).is_some() {
            self.err(id, field, format!("duplicate rule id `{s}`"));
        }
    }

    fn tenant_refs(
        &mut self,
        refs: &[Spanned<String>],
        known: &BTreeSet<&str>,
        field: &str,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for t in refs {
            if known.contains(t.get_ref().as_str()) {
                out.push(t.get_ref().clone());
            } else {
                let names: Vec<&str> = known.iter().copied().collect();
                self.err(
                    t,
                    field,
                    format!(
                        "no tenant named `{}` (tenants: {})",
                        t.get_ref(),
                        list_or_none(&names)
                    ),
                );
            }
        }
        out
    }

    fn ports(&mut self, raw: &[Spanned<PortValue>], field: &str) -> Vec<PortRange> {
        let mut out = Vec::new();
        for p in raw {
            let r = match p.get_ref() {
                PortValue::Num(n) => u16::try_from(*n)
                    .ok()
                    .filter(|n| *n > 0)
                    .map(PortRange::single)
                    .ok_or_else(|| format!("port {n} is out of range 1-65535")),
                PortValue::Text(s) => s.parse::<PortRange>(),
            };
            match r {
                Ok(r) => out.push(r),
                Err(e) => self.err(p, field, e),
            }
        }
        out
    }

    /// Reads a list file (one entry per line, `#` comments), reporting bad lines with the
    /// list file's own line and column.
    fn read_list(
        &mut self,
        file: &Spanned<String>,
        field: &str,
        mut add: impl FnMut(&str) -> Result<(), String>,
    ) {
        let path = self.dir.join(file.get_ref());
        if !self
            .list_files
            .iter()
            .any(|f| f.as_os_str() == file.get_ref().as_str())
        {
            self.list_files.push(PathBuf::from(file.get_ref()));
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.err(file, field, format!("cannot read {}: {e}", path.display()));
                return;
            }
        };
        let mut bad = 0usize;
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            if let Err(e) = add(entry) {
                bad += 1;
                // A broken 100k-line file should not print 100k lines.
                if bad <= 20 {
                    let col = line.find(entry).unwrap_or(0) + 1;
                    self.errs.push(Diagnostic {
                        file: path.clone(),
                        line: n + 1,
                        col,
                        field: field.to_string(),
                        message: e,
                    });
                }
            }
        }
        if bad > 20 {
            self.err(
                file,
                field,
                format!("{} more bad lines in {}", bad - 20, path.display()),
            );
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn looks_like_address(s: &str) -> bool {
    s.contains(':') || s.contains('/') || s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none defined".into()
    } else {
        names.join(", ")
    }
}

/// Lower-cases a domain pattern, strips one trailing dot, and checks its labels. `*.x.y`
/// is a suffix pattern (matches `x.y` itself and every name below it). Non-ASCII names
/// must be written in punycode (`xn--`), which is what clients put on the wire.
pub fn normalize_domain_pattern(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let (wild, name) = match t.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, t.as_str()),
    };
    if name.is_empty() || name.len() > 253 {
        return Err(format!("`{s}` is not a domain name"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "`{s}` is not a domain name (labels are a-z, 0-9, `-`; write non-ASCII names in punycode; `*.` only as the first label)"
            ));
        }
    }
    Ok(if wild {
        format!("*.{name}")
    } else {
        name.to_string()
    })
}
