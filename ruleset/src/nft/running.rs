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

/// What igw committed last, remembered so the next apply need not list the table back
/// (0.8 s for 100k elements). Trusted only while the kernel's ruleset generation is still
/// the one igw's own commit produced, in the same network namespace: any other change to
/// any nftables table bumps the generation and the table is read back instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Identity of the network namespace (`st_dev:st_ino` of /proc/self/ns/net).
    pub netns: String,
    /// nf_tables ruleset generation right after igw's commit.
    pub genid: u32,
    pub running: Running,
}

const SNAPSHOT_MAGIC: &str = "igw-ruleset-snapshot 1";

impl Snapshot {
    /// Line format: magic, `netns`, `genid`, `fingerprint`, then per set a `set NAME`
    /// line followed by one prefix per line.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::with_capacity(
            64 + 20 * self.running.sets.values().map(Vec::len).sum::<usize>(),
        );
        let _ = writeln!(o, "{SNAPSHOT_MAGIC}");
        let _ = writeln!(o, "netns {}", self.netns);
        let _ = writeln!(o, "genid {}", self.genid);
        let _ = writeln!(
            o,
            "fingerprint {}",
            self.running.fingerprint.as_deref().unwrap_or("-")
        );
        for (name, elems) in &self.running.sets {
            let _ = writeln!(o, "set {name}");
            for e in elems {
                let _ = writeln!(o, "{e}");
            }
        }
        o
    }

    /// `None` for anything that is not a complete snapshot (then the table is read back).
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut lines = text.lines();
        if lines.next()? != SNAPSHOT_MAGIC {
            return None;
        }
        let netns = lines.next()?.strip_prefix("netns ")?.to_string();
        let genid = lines.next()?.strip_prefix("genid ")?.parse().ok()?;
        let fp = lines.next()?.strip_prefix("fingerprint ")?;
        let mut running = Running {
            fingerprint: (fp != "-").then(|| fp.to_string()),
            sets: BTreeMap::new(),
        };
        let mut cur: Option<&mut Vec<IpNet>> = None;
        for l in lines {
            if let Some(name) = l.strip_prefix("set ") {
                cur = Some(running.sets.entry(name.to_string()).or_default());
            } else {
                cur.as_mut()?.push(l.parse().ok()?);
            }
        }
        Some(Snapshot {
            netns,
            genid,
            running,
        })
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_refuses_damage() {
        let mut sets = BTreeMap::new();
        sets.insert(
            "obj_a_v4".to_string(),
            vec![
                "10.0.0.0/24".parse().unwrap(),
                "10.0.2.1/32".parse().unwrap(),
            ],
        );
        sets.insert("obj_a_v6".to_string(), vec![]);
        sets.insert(
            "obj_b_v6".to_string(),
            vec!["2001:db8::/48".parse().unwrap()],
        );
        let s = Snapshot {
            netns: "4:4026531840".into(),
            genid: 17,
            running: Running {
                fingerprint: Some("abc123".into()),
                sets,
            },
        };
        let t = s.to_text();
        assert_eq!(Snapshot::parse(&t), Some(s.clone()));
        let no_fp = Snapshot {
            running: Running {
                fingerprint: None,
                ..s.running.clone()
            },
            ..s.clone()
        };
        assert_eq!(Snapshot::parse(&no_fp.to_text()), Some(no_fp));
        for bad in [
            String::new(),
            t.replace("igw-ruleset-snapshot 1", "igw-ruleset-snapshot 2"),
            t.replace("genid 17", "genid x"),
            t.replace("10.0.2.1/32", "10.0.2.1/33"),
            t.lines().take(3).collect::<Vec<_>>().join("\n"),
            format!("{SNAPSHOT_MAGIC}\nnetns 1\ngenid 1\nfingerprint -\n10.0.0.0/8\n"),
        ] {
            assert_eq!(Snapshot::parse(&bad), None, "{bad:?}");
        }
    }
}
