//! Compilation of the L7 rules into indexes, and the decision for one request.
//! See the module above for the precedence this implements.

use std::collections::HashMap;
use std::net::IpAddr;

use igw_core::addr::PortRange;
use igw_core::policy::{Action, Policy};
use ipnet::IpNet;
use regex::{RegexSet, RegexSetBuilder};

use super::normalize::{Host, normalize_path};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("l7 rule `{rule}`: regex `{pattern}`: {message}")]
    Regex {
        rule: String,
        pattern: String,
        message: String,
    },
    #[error("l7 rule `{rule}`: path prefix `{prefix}`: {message}")]
    Path {
        rule: String,
        prefix: String,
        message: String,
    },
    #[error("l7 regexes: {0}")]
    RegexSet(String),
}

/// What a compiled rule carries besides its conditions, for the proxy's later checks.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub id: String,
    pub action: Action,
    pub any_address: bool,
    pub cidrs: Vec<IpNet>,
}

#[derive(Debug)]
struct Rule {
    info: RuleInfo,
    /// Tenant indexes; empty: every tenant.
    tenants: Vec<u16>,
    has_domains: bool,
    has_regex: bool,
    path_prefixes: Vec<String>,
    methods: Vec<String>,
    ports: Vec<PortRange>,
    /// Destination condition (only for rules without domains and regex).
    dst_cidrs: Vec<IpNet>,
}

/// How a tunnel was opened: the method a rule may match (`CONNECT` or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    Connect,
    Sni,
}

/// One request to judge. `path` is the raw path (normalised here); `None` for tunnels.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub src: IpAddr,
    pub host: &'a Host,
    pub port: u16,
    /// `None`: a tunnel of this kind (no method, path or query visible).
    pub http: Option<HttpPart<'a>>,
    pub tunnel: TunnelKind,
    /// The destination address if known (IP literal, resolved, or original destination).
    pub dst: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy)]
pub struct HttpPart<'a> {
    pub method: &'a str,
    /// Already normalised with [`normalize_path`].
    pub path: &'a str,
    pub query: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    Rule(usize),
    Default,
    NoTenant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub by: DecidedBy,
    pub tenant: Option<u16>,
}

/// The compiled L7 policy. Immutable; share it with `Arc` and replace it whole.
#[derive(Debug)]
pub struct Matcher {
    tenant_names: Vec<String>,
    tenant_nets: Vec<(IpNet, u16)>,
    rules: Vec<Rule>,
    exact: HashMap<Box<str>, Vec<u32>>,
    suffix: HashMap<Box<str>, Vec<u32>>,
    /// Rules indexed by neither domain nor regex: always candidates.
    always: Vec<u32>,
    regex: Option<RegexSet>,
    /// Pattern index in `regex` -> rule index.
    regex_rule: Vec<u32>,
    /// Whether some rule without domains is found only through the regex set.
    regex_primary: bool,
    default: Action,
    resolve_check: bool,
}

impl Matcher {
    pub fn compile(p: &Policy) -> Result<Matcher, CompileError> {
        let tenant_names: Vec<String> = p.tenants.iter().map(|t| t.name.clone()).collect();
        let idx = |name: &str| tenant_names.iter().position(|t| t == name).unwrap_or(0) as u16;
        let mut tenant_nets = Vec::new();
        for (i, t) in p.tenants.iter().enumerate() {
            for n in &t.subnets {
                tenant_nets.push((n.trunc(), i as u16));
            }
        }
        let mut m = Matcher {
            tenant_names: tenant_names.clone(),
            tenant_nets,
            rules: Vec::with_capacity(p.l7_rules.len()),
            exact: HashMap::new(),
            suffix: HashMap::new(),
            always: Vec::new(),
            regex: None,
            regex_rule: Vec::new(),
            regex_primary: false,
            default: p.defaults.l7,
            resolve_check: p.defaults.resolve_check,
        };
        let mut patterns: Vec<&str> = Vec::new();
        for (ri, r) in p.l7_rules.iter().enumerate() {
            let ri32 = ri as u32;
            for d in &r.domains {
                let (map, key) = match d.strip_prefix("*.") {
                    Some(s) => (&mut m.suffix, s),
                    None => (&mut m.exact, d.as_str()),
                };
                let v = map.entry(key.into()).or_default();
                if v.last() != Some(&ri32) {
                    v.push(ri32);
                }
            }
            for re in &r.regex {
                patterns.push(re);
                m.regex_rule.push(ri32);
            }
            if r.domains.is_empty() {
                if r.regex.is_empty() {
                    m.always.push(ri32);
                } else {
                    m.regex_primary = true;
                }
            }
            let mut path_prefixes = Vec::new();
            for pp in &r.path_prefixes {
                let n = normalize_path(pp).map_err(|e| CompileError::Path {
                    rule: r.id.clone(),
                    prefix: pp.clone(),
                    message: e.to_string(),
                })?;
                path_prefixes.push(n);
            }
            m.rules.push(Rule {
                info: RuleInfo {
                    id: r.id.clone(),
                    action: r.action,
                    any_address: r.any_address,
                    cidrs: r.cidrs.clone(),
                },
                tenants: r.tenants.iter().map(|t| idx(t)).collect(),
                has_domains: !r.domains.is_empty(),
                has_regex: !r.regex.is_empty(),
                path_prefixes,
                methods: r.methods.clone(),
                ports: r.ports.clone(),
                dst_cidrs: if r.domains.is_empty() && r.regex.is_empty() {
                    r.cidrs.clone()
                } else {
                    Vec::new()
                },
            });
        }
        if !patterns.is_empty() {
            // Each pattern alone first, so an error names its rule.
            for (pi, pat) in patterns.iter().enumerate() {
                if let Err(e) = regex::RegexBuilder::new(pat).size_limit(1 << 22).build() {
                    return Err(CompileError::Regex {
                        rule: p.l7_rules[m.regex_rule[pi] as usize].id.clone(),
                        pattern: (*pat).to_string(),
                        message: e.to_string(),
                    });
                }
            }
            let set = RegexSetBuilder::new(&patterns)
                .size_limit(1 << 30)
                .dfa_size_limit(1 << 28)
                .build()
                .map_err(|e| CompileError::RegexSet(e.to_string()))?;
            m.regex = Some(set);
        }
        Ok(m)
    }

    pub fn tenant_of(&self, src: IpAddr) -> Option<u16> {
        let src = super::normalize::canonical_ip(src);
        self.tenant_nets
            .iter()
            .find(|(n, _)| n.contains(&src))
            .map(|(_, t)| *t)
    }

    pub fn tenant_name(&self, t: u16) -> &str {
        &self.tenant_names[t as usize]
    }

    pub fn tenant_names(&self) -> &[String] {
        &self.tenant_names
    }

    pub fn rule(&self, i: usize) -> &RuleInfo {
        &self.rules[i].info
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The policy's `defaults.resolve_check`.
    pub fn resolve_check(&self) -> bool {
        self.resolve_check
    }

    /// The rule id that decided, or `default` / `no-tenant`.
    pub fn decided_by_name(&self, d: &Decision) -> &str {
        match d.by {
            DecidedBy::Rule(i) => &self.rules[i].info.id,
            DecidedBy::Default => "default",
            DecidedBy::NoTenant => "no-tenant",
        }
    }

    /// The URL a regex is matched against (see the module documentation).
    pub fn url_for_regex(q: &Query<'_>) -> String {
        let mut s = String::with_capacity(64);
        match q.http {
            Some(h) => {
                s.push_str("http://");
                s.push_str(&q.host.to_string());
                if q.port != 80 {
                    s.push(':');
                    s.push_str(&q.port.to_string());
                }
                s.push_str(h.path);
                if let Some(qs) = h.query {
                    s.push('?');
                    s.push_str(qs);
                }
            }
            None => {
                s.push_str("https://");
                s.push_str(&q.host.to_string());
                if q.port != 443 {
                    s.push(':');
                    s.push_str(&q.port.to_string());
                }
            }
        }
        s
    }

    pub fn decide(&self, q: &Query<'_>) -> Decision {
        let Some(tenant) = self.tenant_of(q.src) else {
            return Decision {
                action: Action::Deny,
                by: DecidedBy::NoTenant,
                tenant: None,
            };
        };
        let key = q.host.key();
        let mut cand: Vec<u32> = Vec::new();
        if let Some(v) = self.exact.get(key.as_str()) {
            cand.extend_from_slice(v);
        }
        if matches!(q.host, Host::Name(_)) {
            // Suffix walk: `a.b.c` looks up `a.b.c`, `b.c`, `c`; one hash per label.
            let mut rest = key.as_str();
            loop {
                if let Some(v) = self.suffix.get(rest) {
                    cand.extend_from_slice(v);
                }
                match rest.split_once('.') {
                    Some((_, r)) => rest = r,
                    None => break,
                }
            }
        }
        let domain_hits = cand.len();
        cand.extend_from_slice(&self.always);
        let need_regex = self.regex.is_some()
            && (self.regex_primary
                || cand[..domain_hits]
                    .iter()
                    .any(|&i| self.rules[i as usize].has_regex));
        let mut regex_rules: Vec<u32> = Vec::new();
        if need_regex && let Some(set) = &self.regex {
            let url = Self::url_for_regex(q);
            // Most URLs match no pattern: `is_match` stops at the first match or at the
            // lazy DFA's dead state and allocates nothing, while `matches` fills a
            // per-pattern table (10k entries for 10k regexes) on every call.
            if set.is_match(&url) {
                for pi in set.matches(&url).iter() {
                    regex_rules.push(self.regex_rule[pi]);
                }
            }
            regex_rules.sort_unstable();
            regex_rules.dedup();
            for &r in &regex_rules {
                if !self.rules[r as usize].has_domains {
                    cand.push(r);
                }
            }
        }
        // Domain hits are exactly the rules whose domain condition holds.
        let mut domain_ok: Vec<u32> = cand[..domain_hits].to_vec();
        domain_ok.sort_unstable();
        cand.sort_unstable();
        cand.dedup();
        for &ri in &cand {
            let r = &self.rules[ri as usize];
            if r.has_domains && domain_ok.binary_search(&ri).is_err() {
                continue;
            }
            if r.has_regex && regex_rules.binary_search(&ri).is_err() {
                continue;
            }
            if self.holds(r, tenant, q) {
                return Decision {
                    action: r.info.action,
                    by: DecidedBy::Rule(ri as usize),
                    tenant: Some(tenant),
                };
            }
        }
        Decision {
            action: self.default,
            by: DecidedBy::Default,
            tenant: Some(tenant),
        }
    }

    fn holds(&self, r: &Rule, tenant: u16, q: &Query<'_>) -> bool {
        if !r.tenants.is_empty() && !r.tenants.contains(&tenant) {
            return false;
        }
        if !r.path_prefixes.is_empty() {
            let Some(h) = q.http else { return false };
            if !r
                .path_prefixes
                .iter()
                .any(|p| h.path.starts_with(p.as_str()))
            {
                return false;
            }
        }
        if !r.methods.is_empty() {
            let m = match (q.http, q.tunnel) {
                (Some(h), _) => h.method,
                (None, TunnelKind::Connect) => "CONNECT",
                (None, TunnelKind::Sni) => return false,
            };
            if !r.methods.iter().any(|x| x.eq_ignore_ascii_case(m)) {
                return false;
            }
        }
        if r.ports.is_empty() {
            let standard = if q.http.is_some() { 80 } else { 443 };
            if r.info.action == Action::Allow && q.port != standard {
                return false;
            }
        } else if !r.ports.iter().any(|p| p.contains(q.port)) {
            return false;
        }
        if !r.dst_cidrs.is_empty() {
            let Some(dst) = q.dst else { return false };
            let dst = super::normalize::canonical_ip(dst);
            if !r.dst_cidrs.iter().any(|n| n.contains(&dst)) {
                return false;
            }
        }
        true
    }
}
