//! Pure state of replication: the filter that picks gateway traffic, the coalescer on the
//! sending side, and the bounded cache on the standby. No I/O; time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ct::{CtEntry, CtKey, status};
use crate::proto::Update;

/// Which entries are gateway traffic worth replicating.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Original source inside one of these (tenant subnets) makes an entry eligible.
    pub sources: Vec<IpNet>,
    /// Entries with SNAT status are eligible too (egress through the node's NAT).
    pub snat: bool,
    /// Never replicated: entries touching these addresses (sync link, BGP peers, the
    /// node's own addresses: local sockets such as the proxy's upstream connections).
    pub exclude: Vec<IpAddr>,
}

impl Filter {
    pub fn accepts(&self, e: &CtEntry) -> bool {
        let touches = |a: &IpAddr| self.exclude.contains(a);
        if touches(&e.orig.src) || touches(&e.orig.dst) || touches(&e.reply.src) {
            return false;
        }
        // A reply destined to an excluded address that is not a NAT binding is a local
        // socket of this node (e.g. the proxy's own upstream connection).
        if touches(&e.reply.dst) && e.status & status::SRC_NAT == 0 {
            return false;
        }
        (self.snat && e.status & status::SRC_NAT != 0)
            || self.sources.iter().any(|n| n.contains(&e.orig.src))
    }
}

/// Pending updates not yet sent; a later update of an entry replaces the earlier one.
#[derive(Debug, Default)]
pub struct Coalescer {
    pending: HashMap<CtKey, Update>,
    /// Updates folded into an earlier pending one (not sent separately).
    pub coalesced: u64,
}

impl Coalescer {
    pub fn push(&mut self, u: Update) {
        if self.pending.insert(u.entry().key(), u).is_some() {
            self.coalesced += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes up to `max` updates.
    pub fn take(&mut self, max: usize) -> Vec<Update> {
        if self.pending.len() <= max {
            return self.pending.drain().map(|(_, u)| u).collect();
        }
        let keys: Vec<CtKey> = self.pending.keys().take(max).cloned().collect();
        keys.iter().filter_map(|k| self.pending.remove(k)).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Cached {
    pub entry: CtEntry,
    /// When the entry was last received (ms on the caller's clock): its timeout counts
    /// from there.
    pub at_ms: u64,
    generation: u32,
}

/// Outcome of applying an update to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Inserted,
    Updated,
    Deleted,
    /// A delete of an entry the cache did not hold.
    Absent,
    /// The cache is at its bound: the entry was refused.
    Full,
}

/// The standby's copy of the active's table, bounded by `max` entries.
#[derive(Debug)]
pub struct Cache {
    map: HashMap<CtKey, Cached>,
    max: usize,
    generation: u32,
    resyncing: bool,
}

impl Cache {
    pub fn new(max: usize) -> Self {
        Cache {
            map: HashMap::new(),
            max,
            generation: 0,
            resyncing: false,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn apply(&mut self, u: Update, now_ms: u64) -> Applied {
        match u {
            Update::Delete(e) => match self.map.remove(&e.key()) {
                Some(_) => Applied::Deleted,
                None => Applied::Absent,
            },
            Update::Upsert(e) => {
                let key = e.key();
                let c = Cached {
                    entry: e,
                    at_ms: now_ms,
                    generation: self.generation,
                };
                if let Some(slot) = self.map.get_mut(&key) {
                    *slot = c;
                    return Applied::Updated;
                }
                if self.map.len() >= self.max {
                    return Applied::Full;
                }
                self.map.insert(key, c);
                Applied::Inserted
            }
        }
    }

    /// A full resync starts: entries not sent again before [`Cache::end_resync`] go.
    pub fn begin_resync(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.resyncing = true;
    }

    /// Ends a resync; returns how many stale entries were removed.
    pub fn end_resync(&mut self) -> usize {
        if !self.resyncing {
            return 0;
        }
        self.resyncing = false;
        let g = self.generation;
        let before = self.map.len();
        self.map.retain(|_, c| c.generation == g);
        before - self.map.len()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Cached> {
        self.map.values()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Memory of one cached entry, excluding heap parts of optional fields (labels, raw
    /// unknown attributes), with the hash table's control byte and 7/8 load factor.
    pub fn bytes_per_entry() -> usize {
        let slot = std::mem::size_of::<(CtKey, Cached)>() + 1;
        slot * 8 / 7
    }
}

/// The remaining timeout to give an entry committed at `now_ms`: what the active reported,
/// minus the time since, at least one second.
pub fn remaining_timeout(c: &Cached, now_ms: u64) -> u32 {
    let elapsed = (now_ms.saturating_sub(c.at_ms) / 1000) as u32;
    c.entry.timeout.saturating_sub(elapsed).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ct::Tuple;

    fn entry(src: &str, sport: u16, st: u32) -> CtEntry {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let t = |s: &str, d: &str, sp, dp| Tuple {
            src: a(s),
            dst: a(d),
            proto: 17,
            src_port: Some(sp),
            dst_port: Some(dp),
            icmp_id: None,
            icmp_type: None,
            icmp_code: None,
            zone: None,
            other: vec![],
        };
        CtEntry {
            orig: t(src, "203.0.113.10", sport, 53),
            reply: t("203.0.113.10", "198.51.100.10", 53, sport),
            status: st,
            timeout: 30,
            mark: 0,
            zone: 0,
            protoinfo: None,
            labels: None,
        }
    }

    #[test]
    fn filter_table() {
        let f = Filter {
            sources: vec!["198.18.0.0/16".parse().unwrap()],
            snat: true,
            exclude: vec![
                "198.19.255.1".parse().unwrap(),
                "198.19.2.1".parse().unwrap(),
            ],
        };
        let mut sync = entry("198.19.255.1", 1, 0);
        sync.reply.dst = "198.19.255.1".parse().unwrap();
        let mut local = entry("198.19.2.1", 2, 0);
        local.reply.dst = "198.19.2.1".parse().unwrap();
        let cases = [
            (
                entry("198.18.1.10", 1, status::SRC_NAT),
                true,
                "tenant with snat",
            ),
            (entry("198.18.1.10", 1, 0), true, "tenant without nat"),
            (
                entry("10.9.9.9", 1, status::SRC_NAT),
                true,
                "snat from elsewhere",
            ),
            (entry("10.9.9.9", 1, 0), false, "neither"),
            (sync, false, "sync link"),
            (local, false, "local socket"),
        ];
        for (e, want, what) in cases {
            assert_eq!(f.accepts(&e), want, "{what}");
        }
        let no_snat = Filter {
            snat: false,
            ..f.clone()
        };
        assert!(!no_snat.accepts(&entry("10.9.9.9", 1, status::SRC_NAT)));
    }

    #[test]
    fn coalescing() {
        let mut c = Coalescer::default();
        c.push(Update::Upsert(entry("198.18.1.10", 1, 0)));
        c.push(Update::Upsert(entry("198.18.1.10", 1, 2)));
        c.push(Update::Delete(entry("198.18.1.10", 1, 2)));
        c.push(Update::Upsert(entry("198.18.1.10", 2, 0)));
        assert_eq!(c.len(), 2);
        assert_eq!(c.coalesced, 2);
        let first = c.take(1);
        assert_eq!(first.len(), 1);
        let rest = c.take(10);
        assert_eq!(rest.len(), 1);
        assert!(c.is_empty());
        let all: Vec<_> = first.into_iter().chain(rest).collect();
        assert!(all.contains(&Update::Delete(entry("198.18.1.10", 1, 2))));
    }

    #[test]
    fn cache_bound_delete_and_resync() {
        let mut c = Cache::new(2);
        assert_eq!(
            c.apply(Update::Upsert(entry("198.18.1.10", 1, 0)), 0),
            Applied::Inserted
        );
        assert_eq!(
            c.apply(Update::Upsert(entry("198.18.1.10", 1, 2)), 0),
            Applied::Updated
        );
        assert_eq!(
            c.apply(Update::Upsert(entry("198.18.1.10", 2, 0)), 0),
            Applied::Inserted
        );
        assert_eq!(
            c.apply(Update::Upsert(entry("198.18.1.10", 3, 0)), 0),
            Applied::Full
        );
        assert_eq!(
            c.apply(Update::Delete(entry("198.18.1.10", 2, 0)), 0),
            Applied::Deleted
        );
        assert_eq!(
            c.apply(Update::Delete(entry("198.18.1.10", 2, 0)), 0),
            Applied::Absent
        );
        c.begin_resync();
        c.apply(Update::Upsert(entry("198.18.1.10", 4, 0)), 0);
        assert_eq!(c.end_resync(), 1);
        assert_eq!(c.len(), 1);
        let cached = c.entries().next().unwrap().clone();
        assert_eq!(remaining_timeout(&cached, 10_000), 20);
        assert_eq!(remaining_timeout(&cached, 100_000), 1);
        assert!(Cache::bytes_per_entry() > 0);
    }
}
