//! The running table as `nft -j list table inet igw` prints it, read just enough to decide
//! how to apply: its structure fingerprint and the elements of its sets. Everything else
//! in the listing is ignored; other tables are never listed or parsed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::compile::{FINGERPRINT_PREFIX, aggregate};
use super::ir::{Fam, TABLE};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("nft's JSON listing is not JSON: {0}")]
    Json(String),
    #[error("set {set}: element `{elem}` is not an address, prefix or range")]
    Element { set: String, elem: String },
}

/// What igw needs to know about the running table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Running {
    /// From the comment igw puts on the first rule of `forward`; `None` when absent (a
    /// table not made by igw, or by an older igw).
    pub fingerprint: Option<String>,
    /// Set name -> aggregated elements.
    pub sets: BTreeMap<String, Vec<IpNet>>,
}

fn parse_addr(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}

/// One element of a listing: `"a"`, `{"prefix": {...}}`, `{"range": [a, b]}`, or any of
/// these wrapped in `{"elem": {"val": ...}}` (elements with counters or comments).
fn parse_elem(v: &Value, out: &mut Vec<IpNet>) -> Option<()> {
    if let Some(a) = parse_addr(v) {
        out.push(IpNet::from(a));
        return Some(());
    }
    let o = v.as_object()?;
    if let Some(p) = o.get("prefix") {
        let a = parse_addr(p.get("addr")?)?;
        let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
        out.push(IpNet::new(a, len).ok()?.trunc());
        return Some(());
    }
    if let Some(r) = o.get("range") {
        let a = parse_addr(r.get(0)?)?;
        let b = parse_addr(r.get(1)?)?;
        out.extend(range_to_nets(a, b)?);
        return Some(());
    }
    if let Some(e) = o.get("elem") {
        return parse_elem(e.get("val")?, out);
    }
    None
}

/// The fewest prefixes covering `a..=b` exactly.
pub fn range_to_nets(a: IpAddr, b: IpAddr) -> Option<Vec<IpNet>> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => {
            Some(ipnet::Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect())
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => {
            Some(ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect())
        }
        _ => None,
    }
}

/// Parses `nft -j list table inet igw`.
pub fn parse(json: &str) -> Result<Running, ParseError> {
    let v: Value = serde_json::from_str(json).map_err(|e| ParseError::Json(e.to_string()))?;
    let mut out = Running::default();
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for item in &items {
        if let Some(set) = item.get("set") {
            if set.get("table").and_then(Value::as_str) != Some(TABLE) {
                continue;
            }
            let name = set
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let fam = match set.get("type").and_then(Value::as_str) {
                Some("ipv6_addr") => Fam::V6,
                _ => Fam::V4,
            };
            let mut elems = Vec::new();
            if let Some(list) = set.get("elem").and_then(Value::as_array) {
                for e in list {
                    if parse_elem(e, &mut elems).is_none() {
                        return Err(ParseError::Element {
                            set: name,
                            elem: e.to_string(),
                        });
                    }
                }
            }
            out.sets.insert(name, aggregate(&elems, fam));
        } else if let Some(rule) = item.get("rule") {
            let fp = rule
                .get("comment")
                .and_then(Value::as_str)
                .and_then(|c| c.strip_prefix(FINGERPRINT_PREFIX));
            if rule.get("chain").and_then(Value::as_str) == Some("forward")
                && out.fingerprint.is_none()
                && let Some(fp) = fp
            {
                out.fingerprint = Some(fp.to_string());
            }
        }
    }
    Ok(out)
}

/// Elements to delete and to add in one set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetDelta {
    pub remove: Vec<IpNet>,
    pub add: Vec<IpNet>,
}

/// `old` and `new` are sorted and aggregated; the delta is computed by a merge walk,
/// O(n), so a 1M-element set costs milliseconds.
pub fn delta(old: &[IpNet], new: &[IpNet]) -> SetDelta {
    let mut d = SetDelta::default();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                d.remove.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) => {
                d.add.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                d.remove.push(*a);
                i += 1;
            }
            (None, Some(b)) => {
                d.add.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    d
}
