//! Pure state of replication: the filter that picks gateway traffic, the coalescer on the
//! sending side, and the bounded cache on the standby. No I/O; time is passed in.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use ipnet::IpNet;

use crate::ct::{CtEntry, CtKey, PlainEntry, PlainKey, Tuple, status};
use crate::proto::{Item, Update};

// Every table here hashes peer-supplied tuples: foldhash, seeded at random per table (the
// peer is authenticated, but a flood of crafted tuples must still not degrade the table),
// several times faster than SipHash on these ~90-byte keys.
type HashMap<K, V> = hashbrown::HashMap<K, V, RandomState>;
type HashSet<K> = hashbrown::HashSet<K, RandomState>;

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
        self.admits([e.orig.src, e.orig.dst, e.reply.src, e.reply.dst], e.status)
    }

    /// [`Filter::accepts`] of the entry a plain one stands for (the event reader's form).
    pub fn accepts_plain(&self, e: &PlainEntry) -> bool {
        self.admits(e.addrs(), e.status)
    }

    /// The decision, on what it reads of an entry: original source and destination, reply
    /// source and destination, status.
    fn admits(&self, [orig_src, orig_dst, reply_src, reply_dst]: [IpAddr; 4], st: u32) -> bool {
        let touches = |a: &IpAddr| self.exclude.contains(a);
        if touches(&orig_src) || touches(&orig_dst) || touches(&reply_src) {
            return false;
        }
        // A reply destined to an excluded address that is not a NAT binding is a local
        // socket of this node (e.g. the proxy's own upstream connection).
        if touches(&reply_dst) && st & status::SRC_NAT == 0 {
            return false;
        }
        (self.snat && st & status::SRC_NAT != 0)
            || self.sources.iter().any(|n| n.contains(&orig_src))
    }
}

/// Pending updates not yet sent; a later update of an entry replaces the earlier one, in
/// its place. The updates sit in arrival order in one array that the sender takes whole
/// (no copy per update on the way out), as [`Item`]s: a plain entry in fixed fields (less
/// than half a [`CtEntry`] to move) that the sender encodes as it is. The index holds
/// positions, found by the key's hash (a plain key hashed as machine words).
#[derive(Debug, Default)]
pub struct Coalescer {
    index: HashTable<u32>,
    hasher: RandomState,
    /// The hash of each pending update's key: the index grows without rehashing keys.
    hashes: Vec<u64>,
    pending: Vec<Item>,
    /// Updates folded into an earlier pending one (not sent separately).
    pub coalesced: u64,
}

impl Coalescer {
    pub fn push(&mut self, u: Update) {
        self.push_item(Item::from(u));
    }

    pub fn push_item(&mut self, it: Item) {
        let probe = Probe::of_item(&it);
        let h = probe.hash(&self.hasher);
        let (pending, hashes) = (&self.pending, &self.hashes);
        let found = self.index.find(h, |&i| {
            hashes[i as usize] == h && Probe::of_item(&pending[i as usize]).same(&probe)
        });
        match found {
            Some(&i) => {
                self.pending[i as usize] = it;
                self.coalesced += 1;
            }
            None => {
                let at = self.pending.len() as u32;
                self.index.insert_unique(h, at, |&i| hashes[i as usize]);
                self.pending.push(it);
                self.hashes.push(h);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes every pending update, in the order their entries first became pending.
    pub fn take_all(&mut self) -> Vec<Item> {
        self.index.clear();
        self.hashes.clear();
        // The next burst is likely the size of this one: no regrowth (and copies) on the way.
        let room = self.pending.capacity();
        std::mem::replace(&mut self.pending, Vec::with_capacity(room))
    }
}

/// One cached entry; it is also its own key (the entry's zone and original tuple), so the
/// cache holds the tuple once.
#[derive(Debug, Clone)]
pub struct Cached {
    stored: Stored,
    /// Hash of the key under the cache's seed: the index grows without rehashing tuples.
    hash: u64,
    /// When the entry was last received (ms on the caller's clock): its timeout counts
    /// from there.
    pub at_ms: u64,
    generation: u32,
    /// Bumped by every upsert of the entry: tells a kernel copy of an older state apart.
    version: u32,
    /// Direct inject: the version written into this node's kernel, and when that copy
    /// expires there (ms on the caller's clock; the standby sees no packet of the flow, so
    /// nothing refreshes it).
    kernel: Option<(u32, u64)>,
}

impl Cached {
    /// The entry as it was received.
    pub fn entry(&self) -> CtEntry {
        self.stored.entry()
    }

    pub fn key(&self) -> CtKey {
        match &self.stored {
            Stored::Plain(p) => p.key().key(),
            Stored::Boxed(e) => e.key(),
        }
    }

    /// Seconds left when the entry was received.
    pub fn timeout(&self) -> u32 {
        match &self.stored {
            Stored::Plain(p) => p.timeout,
            Stored::Boxed(e) => e.timeout,
        }
    }

    fn is_key(&self, probe: &Probe<'_>) -> bool {
        match (&self.stored, probe) {
            (Stored::Plain(p), Probe::Plain(k)) => p.key() == *k,
            (Stored::Plain(_), Probe::Full(..)) => false,
            (Stored::Boxed(e), Probe::Full(zone, orig)) => e.zone == *zone && e.orig == **orig,
            // A boxed entry (labels, say) whose tuple is plain.
            (Stored::Boxed(e), Probe::Plain(k)) => PlainKey::of(e.zone, &e.orig) == Some(*k),
        }
    }
}

/// A key as the cache looks it up: a plain one (nearly all) in fixed fields, hashed as a
/// few machine words and compared field by field; any other as its zone and tuple, hashed
/// and compared through the derived traits. Plainness is a property of the tuple, so a key
/// always takes the same form and equal keys hash equal.
#[derive(Debug, Clone, Copy)]
enum Probe<'a> {
    Plain(PlainKey),
    Full(u16, &'a Tuple),
}

impl<'a> Probe<'a> {
    fn of_item(it: &'a Item) -> Self {
        match it {
            Item::Upsert(p) => Probe::Plain(p.key()),
            Item::Delete(k) => Probe::Plain(*k),
            Item::Other(u) => match &**u {
                Update::Upsert(e) => Probe::of(e.zone, &e.orig),
                Update::Delete(k) => Probe::of(k.zone, &k.orig),
            },
        }
    }

    fn same(&self, other: &Probe<'_>) -> bool {
        match (self, other) {
            (Probe::Plain(a), Probe::Plain(b)) => a == b,
            (Probe::Full(z, t), Probe::Full(y, u)) => z == y && t == u,
            _ => false,
        }
    }

    fn of(zone: u16, orig: &'a Tuple) -> Self {
        match PlainKey::of(zone, orig) {
            Some(k) => Probe::Plain(k),
            None => Probe::Full(zone, orig),
        }
    }

    fn hash(&self, s: &RandomState) -> u64 {
        match self {
            Probe::Plain(k) => {
                let mut h = s.build_hasher();
                k.hash_into(&mut h);
                h.finish()
            }
            Probe::Full(zone, orig) => s.hash_one((zone, orig)),
        }
    }
}

/// How the cache holds an entry: a plain one ([`CtEntry::is_plain`], nearly all) as a
/// [`PlainEntry`] in fixed fields; any other boxed whole. Memory per entry is what a resync
/// costs the standby (first-touch page faults) besides its RSS.
#[derive(Debug, Clone)]
enum Stored {
    Plain(PlainEntry),
    Boxed(Box<CtEntry>),
}

impl Stored {
    fn of(e: CtEntry) -> Self {
        match PlainEntry::of(&e) {
            Some(p) => Stored::Plain(p),
            None => Stored::Boxed(Box::new(e)),
        }
    }

    fn entry(&self) -> CtEntry {
        match self {
            Stored::Plain(p) => p.entry(),
            Stored::Boxed(e) => (**e).clone(),
        }
    }

    fn probe(&self) -> Probe<'_> {
        match self {
            Stored::Plain(p) => Probe::Plain(p.key()),
            Stored::Boxed(e) => Probe::of(e.zone, &e.orig),
        }
    }
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

/// A write into the kernel that direct inject owes.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// Create the entry (or update it when the kernel has it already) with `timeout`;
    /// acknowledge with [`Cache::injected`] and `version`.
    Write {
        entry: CtEntry,
        timeout: u32,
        version: u32,
    },
    /// Delete the entry (gone from the active, or dropped by a resync).
    Remove(CtEntry),
}

impl Injection {
    pub fn key(&self) -> CtKey {
        match self {
            Injection::Write { entry, .. } | Injection::Remove(entry) => entry.key(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Write,
    Remove,
}

/// The standby's copy of the active's table, bounded by `max` entries.
///
/// With direct inject on, the cache also tracks which entries this node's kernel holds
/// (and in which version), and queues the writes still owed ([`Cache::take_injections`]).
/// A promotion commit then needs only [`Cache::commit_set`]: entries never written, written
/// in an older version, or whose kernel copy has expired. When inject keeps up, that set is
/// empty and promotion commits nothing. The set is found without a pass over the cache
/// (which takes ~25 ms at 1M entries): the entries not acknowledged are tracked as they
/// change, and those whose kernel copy nears expiry are gathered ahead of time by
/// [`Cache::sweep`], which the inject thread runs every few seconds.
#[derive(Debug)]
pub struct Cache {
    map: Slots,
    hasher: RandomState,
    max: usize,
    generation: u32,
    resyncing: bool,
    inject: bool,
    owed: HashMap<CtKey, Owed>,
    /// Entries removed from the map whose deletion is still owed to the kernel.
    removed: HashMap<CtKey, CtEntry>,
    /// Entries whose current version the kernel has not acknowledged.
    unacked: HashSet<CtKey>,
    /// Entries whose kernel copy expires before `swept_until` (ms), as of the last sweep
    /// and the acknowledgements since.
    expiring: HashSet<CtKey>,
    swept_until: u64,
    /// Entries whose kernel copy is the current version.
    current: usize,
    /// [`Cache::apply_items`]'s hashes of a batch's keys (kept for its capacity).
    hashes: Vec<u64>,
}

/// A kernel copy this close to expiry is written again by a commit.
pub const EXPIRY_MARGIN_MS: u64 = 2_000;

impl Cache {
    pub fn new(max: usize) -> Self {
        Self::with_inject(max, false)
    }

    /// A cache that tracks direct inject into this node's kernel.
    pub fn with_inject(max: usize, inject: bool) -> Self {
        Cache {
            map: Slots::default(),
            hasher: RandomState::default(),
            max: max.min(MAX_ENTRIES),
            generation: 0,
            resyncing: false,
            inject,
            owed: HashMap::default(),
            removed: HashMap::default(),
            unacked: HashSet::default(),
            expiring: HashSet::default(),
            swept_until: 0,
            current: 0,
            hashes: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The position of the entry with this key, and the key's hash.
    fn position(&self, probe: &Probe<'_>) -> (u64, Option<usize>) {
        let h = probe.hash(&self.hasher);
        (h, self.map.position(h, probe))
    }

    fn find(&self, key: &CtKey) -> Option<&Cached> {
        let i = self.position(&Probe::of(key.zone, &key.orig)).1?;
        Some(self.map.get(i))
    }

    fn find_mut(&mut self, key: &CtKey) -> Option<&mut Cached> {
        let i = self.position(&Probe::of(key.zone, &key.orig)).1?;
        Some(self.map.get_mut(i))
    }

    /// Room for `n` entries in all (at most the bound), so that a resync of a known size
    /// fills storage allocated once instead of doubling it ~20 times on the way.
    pub fn reserve(&mut self, n: usize) {
        let want = n.min(self.max).saturating_sub(self.map.len());
        self.map.reserve(want);
    }

    /// Writes owed to the kernel (direct inject).
    pub fn owed(&self) -> usize {
        self.owed.len()
    }

    /// Entries whose kernel copy is the current version (direct inject).
    pub fn in_kernel(&self) -> usize {
        self.current
    }

    fn is_current(c: &Cached) -> bool {
        matches!(c.kernel, Some((v, _)) if v == c.version)
    }

    /// An entry left the cache.
    fn gone(&mut self, c: Cached) {
        if Self::is_current(&c) {
            self.current -= 1;
        }
        if self.inject {
            let key = c.key();
            self.unacked.remove(&key);
            self.expiring.remove(&key);
            // Owed even if no write was acknowledged yet: one may be in flight.
            self.owed.insert(key.clone(), Owed::Remove);
            self.removed.insert(key, c.entry());
        }
    }

    pub fn apply(&mut self, u: Update, now_ms: u64) -> Applied {
        match u {
            Update::Delete(key) => self.delete(&Probe::of(key.zone, &key.orig)),
            Update::Upsert(e) => self.upsert(Stored::of(e), now_ms),
        }
    }

    /// [`Cache::apply`] of a batch item as the sync protocol's fast decoder gives it: a
    /// plain entry or key goes in as it is, without a [`CtEntry`] on the way.
    pub fn apply_item(&mut self, it: Item, now_ms: u64) -> Applied {
        match it {
            Item::Upsert(p) => self.upsert(Stored::Plain(p), now_ms),
            Item::Delete(k) => self.delete(&Probe::Plain(k)),
            Item::Other(u) => self.apply(*u, now_ms),
        }
    }

    /// [`Cache::apply_item`] of a whole batch, in order (the batch is left empty); returns
    /// how many items the cache refused because it is full. The batch's keys are hashed
    /// first, so that the index cells of each lookup, and then the entry it will compare,
    /// are asked of memory a few items before their turn: applied one by one, the standby
    /// spent most of its time under churn waiting on those cache misses one at a time.
    pub fn apply_items(&mut self, items: &mut Vec<Item>, now_ms: u64) -> usize {
        /// Items ahead whose index cells are fetched, and whose entry is.
        const CELLS_AHEAD: usize = 8;
        const ENTRY_AHEAD: usize = 4;
        let mut hashes = std::mem::take(&mut self.hashes);
        hashes.clear();
        hashes.extend(items.iter().map(|it| Probe::of_item(it).hash(&self.hasher)));
        for &h in hashes.iter().take(CELLS_AHEAD) {
            self.map.prefetch_index(h);
        }
        let mut full = 0;
        for (k, it) in items.drain(..).enumerate() {
            if let Some(&h) = hashes.get(k + CELLS_AHEAD) {
                self.map.prefetch_index(h);
            }
            if let Some(&h) = hashes.get(k + ENTRY_AHEAD) {
                self.map.prefetch_entry(h);
            }
            let h = hashes[k];
            let applied = match it {
                Item::Upsert(p) => self.upsert_hashed(Stored::Plain(p), h, now_ms),
                Item::Delete(key) => self.delete_hashed(&Probe::Plain(key), h),
                Item::Other(u) => self.apply(*u, now_ms),
            };
            if applied == Applied::Full {
                full += 1;
            }
        }
        self.hashes = hashes;
        full
    }

    fn delete(&mut self, probe: &Probe<'_>) -> Applied {
        let h = probe.hash(&self.hasher);
        self.delete_hashed(probe, h)
    }

    /// [`Cache::delete`] of a key whose hash is `h`.
    fn delete_hashed(&mut self, probe: &Probe<'_>, h: u64) -> Applied {
        match self.map.position(h, probe) {
            Some(i) => {
                let c = self.map.remove_at(i);
                self.gone(c);
                Applied::Deleted
            }
            None => Applied::Absent,
        }
    }

    fn upsert(&mut self, stored: Stored, now_ms: u64) -> Applied {
        let h = stored.probe().hash(&self.hasher);
        self.upsert_hashed(stored, h, now_ms)
    }

    /// [`Cache::upsert`] of an entry whose key's hash is `h`.
    fn upsert_hashed(&mut self, stored: Stored, h: u64, now_ms: u64) -> Applied {
        match self.map.position(h, &stored.probe()) {
            Some(i) => {
                let slot = self.map.get_mut(i);
                if Self::is_current(slot) {
                    self.current -= 1;
                }
                slot.stored = stored;
                slot.at_ms = now_ms;
                slot.generation = self.generation;
                slot.version = slot.version.wrapping_add(1);
                if self.inject {
                    let key = slot.key();
                    self.unacked.insert(key.clone());
                    self.owed.insert(key, Owed::Write);
                }
                Applied::Updated
            }
            None if self.map.len() >= self.max => Applied::Full,
            None => {
                let i = self.map.push(Cached {
                    stored,
                    hash: h,
                    at_ms: now_ms,
                    generation: self.generation,
                    version: 0,
                    kernel: None,
                });
                if self.inject {
                    let key = self.map.get(i).key();
                    self.owed.insert(key.clone(), Owed::Write);
                    self.unacked.insert(key.clone());
                    self.removed.remove(&key);
                }
                Applied::Inserted
            }
        }
    }

    /// A full resync starts: entries not sent again before [`Cache::end_resync`] go.
    /// `expected`: the sender's count, to size the table once (bounded by `max`).
    pub fn begin_resync(&mut self, expected: usize) {
        self.generation = self.generation.wrapping_add(1);
        self.resyncing = true;
        self.reserve(expected);
    }

    /// Ends a resync; returns how many stale entries were removed.
    pub fn end_resync(&mut self) -> usize {
        if !self.resyncing {
            return 0;
        }
        self.resyncing = false;
        let g = self.generation;
        let stale = self.map.extract(|c| c.generation != g);
        let n = stale.len();
        for c in stale {
            self.gone(c);
        }
        n
    }

    pub fn entries(&self) -> impl Iterator<Item = &Cached> {
        self.map.iter()
    }

    /// Takes up to `max` owed kernel writes (direct inject); a later change of an entry
    /// replaces an earlier owed one, so a burst of updates costs one write per entry.
    pub fn take_injections(&mut self, max: usize, now_ms: u64) -> Vec<Injection> {
        let keys: Vec<CtKey> = self.owed.keys().take(max).cloned().collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match self.owed.remove(&k) {
                Some(Owed::Write) => {
                    if let Some(c) = self.find(&k) {
                        out.push(Injection::Write {
                            entry: c.entry(),
                            timeout: remaining_timeout(c, now_ms),
                            version: c.version,
                        });
                    }
                }
                Some(Owed::Remove) => {
                    if let Some(e) = self.removed.remove(&k) {
                        out.push(Injection::Remove(e));
                    }
                }
                None => {}
            }
        }
        out
    }

    /// The kernel acknowledged a write of `version` with `timeout` (seconds) at `now_ms`.
    /// An acknowledgement of a version older than the cached one changes nothing.
    pub fn injected(&mut self, key: &CtKey, version: u32, timeout: u32, now_ms: u64) {
        let swept_until = self.swept_until;
        if let Some(c) = self.find_mut(key)
            && c.version == version
        {
            let was_current = Self::is_current(c);
            let expires = now_ms + u64::from(timeout) * 1000;
            c.kernel = Some((version, expires));
            if !was_current {
                self.current += 1;
            }
            self.unacked.remove(key);
            if expires < swept_until {
                self.expiring.insert(key.clone());
            }
        }
    }

    /// Gathers the entries whose kernel copy expires within `horizon_ms` of `now_ms`, so
    /// that a commit before `now_ms + horizon_ms - EXPIRY_MARGIN_MS` finds them without a
    /// pass over the cache. One pass; run it every few seconds (direct inject).
    pub fn sweep(&mut self, now_ms: u64, horizon_ms: u64) {
        let until = now_ms + horizon_ms;
        let mut expiring = HashSet::with_hasher(self.hasher.clone());
        expiring.extend(
            self.map
                .iter()
                .filter(|c| matches!(c.kernel, Some((_, e)) if e < until))
                .map(|c| c.key()),
        );
        self.expiring = expiring;
        self.swept_until = until;
    }

    /// What a commit must write at `now_ms`: without direct inject (or with `full`) every
    /// entry; with it, only entries the kernel lacks in their current version, or holds
    /// but close to expiry. Owed writes are dropped (the commit covers them); owed deletions are
    /// returned too. Acknowledge the writes with [`Cache::injected`].
    pub fn commit_set(&mut self, now_ms: u64, full: bool) -> Vec<Injection> {
        let fresh = |c: &Cached| match c.kernel {
            Some((v, expires)) => v == c.version && expires > now_ms + EXPIRY_MARGIN_MS,
            None => false,
        };
        let write = |c: &Cached| Injection::Write {
            entry: c.entry(),
            timeout: remaining_timeout(c, now_ms),
            version: c.version,
        };
        let mut out: Vec<Injection> = if full || !self.inject {
            self.map.iter().map(write).collect()
        } else if now_ms + EXPIRY_MARGIN_MS <= self.swept_until {
            // Every entry not fresh is unacknowledged or was gathered as expiring.
            self.unacked
                .iter()
                .chain(self.expiring.iter().filter(|k| !self.unacked.contains(*k)))
                .filter_map(|k| self.find(k))
                .filter(|c| !fresh(c))
                .map(write)
                .collect()
        } else {
            self.map.iter().filter(|c| !fresh(c)).map(write).collect()
        };
        self.owed.clear();
        out.extend(self.removed.drain().map(|(_, e)| Injection::Remove(e)));
        out
    }

    /// Memory of one cached entry, excluding heap parts of optional fields (labels, raw
    /// unknown attributes), with the hash table's control byte and 7/8 load factor.
    pub fn bytes_per_entry() -> usize {
        // The entry in the array and its 8-byte index cell at the index's 3/4 load.
        std::mem::size_of::<Option<Cached>>() + 8 * 4 / 3
    }
}

/// The cache's storage: the entries in one array, found through an [`Index`] of positions.
/// A removed entry leaves a free slot that the next insertion takes (most recently freed
/// first, still in the CPU's cache under churn), so a removal moves no other entry and
/// rewrites no other index cell; when free slots outnumber the entries (a mass removal),
/// the array is compacted. An index cell is 8 bytes, so the index's spare capacity costs a
/// few bytes per entry instead of a whole entry: the memory, and the first-touch page
/// faults that dominate a resync on the standby, follow the entries.
#[derive(Debug, Default)]
struct Slots {
    index: Index,
    slots: Vec<Option<Cached>>,
    /// Positions of the free slots.
    free: Vec<u32>,
    live: usize,
}

/// Free slots tolerated before a removal compacts the array (and then only when they
/// outnumber the entries).
const COMPACT_AFTER: usize = 4096;

impl Slots {
    fn len(&self) -> usize {
        self.live
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn iter(&self) -> impl Iterator<Item = &Cached> {
        self.slots.iter().flatten()
    }

    fn get(&self, i: usize) -> &Cached {
        self.slots[i]
            .as_ref()
            .expect("the index points at entries only")
    }

    fn get_mut(&mut self, i: usize) -> &mut Cached {
        self.slots[i]
            .as_mut()
            .expect("the index points at entries only")
    }

    fn position(&self, hash: u64, probe: &Probe<'_>) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |i| {
                slots[i as usize].as_ref().is_some_and(|c| c.is_key(probe))
            })
            .map(|i| i as usize)
    }

    fn reserve(&mut self, additional: usize) {
        self.index.reserve(self.live + additional);
        self.slots
            .reserve(additional.saturating_sub(self.free.len()));
    }

    /// Stores an entry whose key is not present; its position (positions are u32: the
    /// cache's bound is kept below [`MAX_ENTRIES`] by [`Cache::with_inject`]).
    fn push(&mut self, c: Cached) -> usize {
        let i = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.index.insert(c.hash, i as u32);
        self.slots[i] = Some(c);
        self.live += 1;
        i
    }

    /// Removes the entry at `i` (positions of other entries may change).
    fn remove_at(&mut self, i: usize) -> Cached {
        let c = self.take_at(i);
        self.compact_if_sparse();
        c
    }

    /// Removes the entry at `i`, leaving its slot free; no other entry moves.
    fn take_at(&mut self, i: usize) -> Cached {
        let c = self.slots[i]
            .take()
            .expect("the index points at entries only");
        self.index.remove(c.hash, i as u32);
        self.live -= 1;
        self.free.push(i as u32);
        c
    }

    fn compact_if_sparse(&mut self) {
        if self.live == 0 {
            self.slots.clear();
            self.free.clear();
        } else if self.free.len() > COMPACT_AFTER && self.free.len() > self.live {
            self.compact();
        }
    }

    /// Moves the entries together (no free slot left) and indexes them again.
    fn compact(&mut self) {
        let entries: Vec<Option<Cached>> = std::mem::take(&mut self.slots)
            .into_iter()
            .filter(Option::is_some)
            .collect();
        self.slots = entries;
        self.free.clear();
        self.index = Index::default();
        self.index.reserve(self.live);
        for (i, c) in self.slots.iter().enumerate() {
            let hash = c.as_ref().expect("compacted: entries only").hash;
            self.index.insert(hash, i as u32);
        }
    }

    /// Asks the CPU to bring in, ahead of its use, the index cells where a key of this hash
    /// is looked up.
    fn prefetch_index(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Asks the CPU to bring in the entry that a lookup of this hash would most likely
    /// compare (the first whose hash tag matches), if the index has one.
    fn prefetch_entry(&self, hash: u64) {
        if let Some(i) = self.index.first_candidate(hash)
            && let Some(c) = self.slots.get(i as usize)
        {
            // The key an entry is compared by spans its first two cache lines.
            let p: *const u8 = std::ptr::from_ref(c).cast();
            prefetch(p);
            prefetch(p.wrapping_add(64));
        }
    }

    /// Removes and returns the entries for which `stale` holds.
    fn extract(&mut self, stale: impl Fn(&Cached) -> bool) -> Vec<Cached> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].as_ref().is_some_and(&stale) {
                out.push(self.take_at(i));
            }
            i += 1;
        }
        self.compact_if_sparse();
        out
    }
}

/// The most entries a cache holds, whatever its configured bound: positions and the
/// index's home cells come from 32 bits.
pub const MAX_ENTRIES: usize = 1 << 30;

/// The cache's index: a key's hash -> the entry's position in the entry array.
///
/// Open addressing with linear probing over one array of 8-byte cells, each holding the
/// upper 32 bits of the key's hash (its tag, which also gives the home cell) and the
/// position + 1 (0: an empty cell). A lookup reads the cells from the home one on, comparing
/// tags, and reads an entry only for a matching tag (a false match is one in 2^32 per cell
/// read): a key that is absent costs no entry read, and the cells a lookup reads are
/// usually one cache line, whose address the hash alone gives, so that a batch can prefetch
/// the lines of the keys it applies next ([`Index::prefetch`]). hashbrown's table needs two
/// dependent reads (control bytes, then the slot) that no prefetch can be issued for: under
/// churn those misses were most of the standby's time. A deletion shifts the rest of the
/// run back instead of leaving a tombstone, so churn never lengthens the probes. Grows at
/// 3/4 load (an absent key reads ~8 cells at that load, ~2 at 1/2).
#[derive(Debug, Default, Clone)]
struct Index {
    cells: Vec<u64>,
    len: usize,
}

impl Index {
    fn tag(hash: u64) -> u32 {
        (hash >> 32) as u32
    }

    fn mask(&self) -> usize {
        self.cells.len() - 1
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    fn cell(tag: u32, pos: u32) -> u64 {
        (u64::from(tag) << 32) | u64::from(pos + 1)
    }

    fn pos(cell: u64) -> u32 {
        (cell as u32).wrapping_sub(1)
    }

    /// The position of the first entry whose hash tag matches and for which `is` holds.
    fn find(&self, hash: u64, is: impl Fn(u32) -> bool) -> Option<u32> {
        if self.cells.is_empty() {
            return None;
        }
        let tag = Self::tag(hash);
        let mask = self.mask();
        let mut i = self.home(tag);
        loop {
            let c = self.cells[i];
            if c == 0 {
                return None;
            }
            if (c >> 32) as u32 == tag && is(Self::pos(c)) {
                return Some(Self::pos(c));
            }
            i = (i + 1) & mask;
        }
    }

    /// The position of the first entry whose hash tag matches.
    fn first_candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// The index of the cell holding `pos` under `hash`.
    fn cell_of(&self, hash: u64, pos: u32) -> Option<usize> {
        if self.cells.is_empty() {
            return None;
        }
        let want = Self::cell(Self::tag(hash), pos);
        let mask = self.mask();
        let mut i = self.home(Self::tag(hash));
        loop {
            match self.cells[i] {
                0 => return None,
                c if c == want => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Room for `n` entries in all without growing.
    fn reserve(&mut self, n: usize) {
        let want = (n.max(1) * 4).div_ceil(3).next_power_of_two().max(8);
        if want > self.cells.len() {
            self.resize(want);
        }
    }

    fn resize(&mut self, cells: usize) {
        let old = std::mem::replace(&mut self.cells, vec![0; cells]);
        let mask = cells - 1;
        for c in old.into_iter().filter(|&c| c != 0) {
            let mut i = (c >> 32) as usize & mask;
            while self.cells[i] != 0 {
                i = (i + 1) & mask;
            }
            self.cells[i] = c;
        }
    }

    /// Adds `pos` under `hash` (the caller knows its key is not present).
    fn insert(&mut self, hash: u64, pos: u32) {
        if (self.len + 1) * 4 > self.cells.len() * 3 {
            self.resize((self.cells.len() * 2).max(8));
        }
        let tag = Self::tag(hash);
        let mask = self.mask();
        let mut i = self.home(tag);
        while self.cells[i] != 0 {
            i = (i + 1) & mask;
        }
        self.cells[i] = Self::cell(tag, pos);
        self.len += 1;
    }

    /// Removes `pos` under `hash`; the cells after it in its run move back where they may.
    fn remove(&mut self, hash: u64, pos: u32) {
        let Some(mut hole) = self.cell_of(hash, pos) else {
            return;
        };
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let c = self.cells[j];
            if c == 0 {
                break;
            }
            // The cell at j may fill the hole unless its home lies after the hole (cyclically
            // within (hole, j]): it would then be found before reaching its home.
            let home = (c >> 32) as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.cells[hole] = c;
                hole = j;
            }
        }
        self.cells[hole] = 0;
        self.len -= 1;
    }

    fn prefetch(&self, hash: u64) {
        if !self.cells.is_empty() {
            prefetch(std::ptr::from_ref(&self.cells[self.home(Self::tag(hash))]).cast());
        }
    }
}

/// A hint to the CPU to load the cache line at `p` (never faults, changes nothing).
#[cfg(target_arch = "x86_64")]
#[expect(
    unsafe_code,
    reason = "_mm_prefetch requires an unsafe call outside a #[target_feature] function"
)]
fn prefetch(p: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: a prefetch does not dereference `p` (an invalid address is ignored, never a
    // fault), and SSE is part of the x86_64 baseline.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch(_p: *const u8) {}

/// The remaining timeout to give an entry committed at `now_ms`: what the active reported,
/// minus the time since, at least one second.
pub fn remaining_timeout(c: &Cached, now_ms: u64) -> u32 {
    let elapsed = (now_ms.saturating_sub(c.at_ms) / 1000) as u32;
    c.timeout().saturating_sub(elapsed).max(1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ct::{ProtoInfo, TcpInfo, Tuple};

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

    /// xorshift64: a fixed sequence per seed, no dependency.
    fn xorshift(mut rng: u64) -> impl FnMut() -> u64 {
        move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        }
    }

    /// Tenant sources with SNAT, excluding the sync link's and a local socket's address.
    pub(crate) fn tenant_filter() -> Filter {
        Filter {
            sources: vec!["198.18.0.0/16".parse().unwrap()],
            snat: true,
            exclude: vec![
                "198.19.255.1".parse().unwrap(),
                "198.19.2.1".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn filter_table() {
        let f = tenant_filter();
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
            // The event reader's form of the entry: the same decision.
            let p = PlainEntry::of(&e).unwrap();
            assert_eq!(f.accepts_plain(&p), want, "{what} (plain)");
        }
        let no_snat = Filter {
            snat: false,
            ..f.clone()
        };
        assert!(!no_snat.accepts(&entry("10.9.9.9", 1, status::SRC_NAT)));
        assert!(
            !no_snat
                .accepts_plain(&PlainEntry::of(&entry("10.9.9.9", 1, status::SRC_NAT)).unwrap())
        );
    }

    #[test]
    fn coalescing() {
        let mut c = Coalescer::default();
        c.push(Update::Upsert(entry("198.18.1.10", 1, 0)));
        c.push(Update::Upsert(entry("198.18.1.10", 1, 2)));
        c.push(Update::Delete(entry("198.18.1.10", 1, 2).key()));
        c.push(Update::Upsert(entry("198.18.1.10", 2, 0)));
        assert_eq!(c.len(), 2);
        assert_eq!(c.coalesced, 2);
        let all: Vec<Update> = c.take_all().into_iter().map(Item::into_update).collect();
        assert_eq!(all.len(), 2);
        assert!(c.is_empty());
        // The latest update of an entry, in the place of its first.
        assert_eq!(all[0], Update::Delete(entry("198.18.1.10", 1, 2).key()));
        c.push(Update::Upsert(entry("198.18.1.10", 3, 0)));
        assert_eq!(
            c.take_all(),
            vec![Item::Upsert(
                PlainEntry::of(&entry("198.18.1.10", 3, 0)).unwrap()
            )]
        );
        assert!(all.contains(&Update::Delete(entry("198.18.1.10", 1, 2).key())));
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
            c.apply(Update::Delete(entry("198.18.1.10", 2, 0).key()), 0),
            Applied::Deleted
        );
        assert_eq!(
            c.apply(Update::Delete(entry("198.18.1.10", 2, 0).key()), 0),
            Applied::Absent
        );
        c.begin_resync(0);
        c.apply(Update::Upsert(entry("198.18.1.10", 4, 0)), 0);
        assert_eq!(c.end_resync(), 1);
        assert_eq!(c.len(), 1);
        let cached = c.entries().next().unwrap().clone();
        assert_eq!(remaining_timeout(&cached, 10_000), 20);
        assert_eq!(remaining_timeout(&cached, 100_000), 1);
        assert!(Cache::bytes_per_entry() > 0);
    }

    fn key_of(i: &Injection) -> (CtKey, bool) {
        (i.key(), matches!(i, Injection::Write { .. }))
    }

    #[test]
    fn inject_tracks_the_kernel_copy() {
        let a = entry("198.18.1.10", 1, 0);
        let b = entry("198.18.1.10", 2, 0);
        let mut c = Cache::with_inject(10, true);
        c.apply(Update::Upsert(a.clone()), 0);
        c.apply(Update::Upsert(b.clone()), 0);
        // Two writes owed; nothing in the kernel yet, so a commit would write both.
        assert_eq!(c.owed(), 2);
        let mut writes = c.take_injections(10, 0);
        writes.sort_by_key(|w| w.key());
        assert_eq!(writes.len(), 2);
        assert_eq!(c.owed(), 0);
        for w in &writes {
            if let Injection::Write {
                entry,
                timeout,
                version,
            } = w
            {
                assert_eq!((*timeout, *version), (30, 0));
                c.injected(&entry.key(), *version, *timeout, 0);
            }
        }
        assert_eq!(c.in_kernel(), 2);
        // Kernel up to date: the promotion commit is empty.
        assert!(c.commit_set(1_000, false).is_empty());
        assert_eq!(c.commit_set(1_000, true).len(), 2, "full writes everything");

        // An update while its older write is in flight: the stale ack changes nothing,
        // the entry is owed again and is part of a commit.
        let mut a2 = a.clone();
        a2.status = status::SRC_NAT;
        c.apply(Update::Upsert(a2.clone()), 2_000);
        c.injected(&a.key(), 0, 30, 2_000);
        assert_eq!(c.in_kernel(), 1);
        let set = c.commit_set(2_000, false);
        assert_eq!(set.len(), 1);
        assert_eq!(
            set[0],
            Injection::Write {
                entry: a2.clone(),
                timeout: 30,
                version: 1
            }
        );
        assert_eq!(c.owed(), 0, "a commit covers the owed writes");
        c.injected(&a.key(), 1, 30, 2_000);

        // Kernel copies near their expiry are written again (b expires at 30 s).
        let set = c.commit_set(29_000, false);
        assert_eq!(
            set.iter().map(key_of).collect::<Vec<_>>(),
            vec![(b.key(), true)]
        );

        // A delete is owed to the kernel; a delete of an entry never seen is not.
        c.apply(Update::Delete(a.key()), 3_000);
        c.apply(Update::Delete(entry("198.18.1.10", 9, 0).key()), 3_000);
        assert_eq!(c.take_injections(10, 3_000), vec![Injection::Remove(a2)]);
        // Upsert then delete before the write was taken: only the delete goes.
        let d = entry("198.18.1.10", 4, 0);
        c.apply(Update::Upsert(d.clone()), 3_000);
        c.apply(Update::Delete(d.key()), 3_000);
        assert_eq!(
            c.take_injections(10, 3_000)
                .iter()
                .map(key_of)
                .collect::<Vec<_>>(),
            vec![(d.key(), false)]
        );
    }

    /// After a sweep the commit finds the same set as a full pass, without one.
    #[test]
    fn sweep_finds_what_a_pass_finds() {
        let mut swept = Cache::with_inject(100, true);
        let mut plain = Cache::with_inject(100, true);
        for c in [&mut swept, &mut plain] {
            for port in 1..=6 {
                c.apply(Update::Upsert(entry("198.18.1.10", port, 0)), 0);
            }
            // Ports 1-3 written with 30 s, port 4 with 300 s; 5 written in an old version;
            // 6 never written.
            for port in 1..=4u16 {
                let t = if port == 4 { 300 } else { 30 };
                c.injected(&entry("198.18.1.10", port, 0).key(), 0, t, 0);
            }
            c.injected(&entry("198.18.1.10", 5, 0).key(), 0, 30, 0);
            c.apply(Update::Upsert(entry("198.18.1.10", 5, 2)), 0);
        }
        swept.sweep(1_000, 60_000);
        // Acknowledged after the sweep with a short timeout: found all the same.
        for c in [&mut swept, &mut plain] {
            c.apply(Update::Upsert(entry("198.18.1.10", 7, 0)), 1_000);
            c.injected(&entry("198.18.1.10", 7, 0).key(), 0, 5, 1_000);
        }
        let ports = |c: &mut Cache, now| {
            let mut v: Vec<_> = c
                .commit_set(now, false)
                .iter()
                .map(|i| i.key().orig.src_port.unwrap())
                .collect();
            v.sort();
            v
        };
        // At 5 s: 5 and 6 lack their current version, 7's copy expires within the margin.
        assert_eq!(ports(&mut swept, 5_000), vec![5, 6, 7]);
        assert_eq!(ports(&mut plain, 5_000), vec![5, 6, 7]);
        // At 29 s (swept, no pass): 1-3 and 7 expire within the margin.
        for c in [&mut swept, &mut plain] {
            for port in [5u16, 6] {
                let v = if port == 5 { 1 } else { 0 };
                c.injected(&entry("198.18.1.10", port, 0).key(), v, 300, 5_000);
            }
        }
        assert_eq!(ports(&mut swept, 29_000), vec![1, 2, 3, 7]);
        assert_eq!(ports(&mut plain, 29_000), vec![1, 2, 3, 7]);
        assert_eq!(swept.in_kernel(), 7);
        // A deleted entry leaves every set; its deletion is owed instead.
        swept.apply(Update::Delete(entry("198.18.1.10", 1, 0).key()), 29_000);
        assert_eq!(swept.in_kernel(), 6);
        let set = swept.commit_set(29_000, false);
        assert!(set.contains(&Injection::Remove(entry("198.18.1.10", 1, 0))));
        assert_eq!(
            set.iter()
                .filter(|i| matches!(i, Injection::Write { .. }))
                .count(),
            3
        );
    }

    #[test]
    fn inject_resync_removes_stale_from_the_kernel() {
        let mut c = Cache::with_inject(10, true);
        c.apply(Update::Upsert(entry("198.18.1.10", 1, 0)), 0);
        c.apply(Update::Upsert(entry("198.18.1.10", 2, 0)), 0);
        c.take_injections(10, 0);
        c.begin_resync(0);
        c.apply(Update::Upsert(entry("198.18.1.10", 2, 0)), 0);
        assert_eq!(c.end_resync(), 1);
        let mut got: Vec<_> = c.take_injections(10, 0).iter().map(key_of).collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (entry("198.18.1.10", 1, 0).key(), false),
                (entry("198.18.1.10", 2, 0).key(), true)
            ]
        );
    }

    /// Plain entries are held in fixed fields and come back the same; others boxed whole.
    /// The index hashes a plain key's raw bytes and any other key field by field: an entry
    /// is found again under its key whichever form it is stored in, and keys that differ
    /// only where the raw form could blur them (family, zone, proto) stay apart.
    #[test]
    fn keys_of_every_form_find_their_entry() {
        let plain = entry("198.18.1.10", 7, 0);
        let mut labelled = plain.clone();
        labelled.labels = Some(vec![1; 16]);
        let mut icmp = entry("198.18.1.10", 8, 0);
        icmp.orig.src_port = None;
        icmp.orig.icmp_id = Some(9);
        let mut mapped = plain.clone();
        for t in [&mut mapped.orig, &mut mapped.reply] {
            t.src = "::c612:10a".parse().unwrap();
            t.dst = "::cb00:710a".parse().unwrap();
        }
        let mut zoned = plain.clone();
        zoned.zone = 1;
        let mut tcp = plain.clone();
        tcp.orig.proto = 6;
        tcp.reply.proto = 6;
        // (update applied in order, outcome, entries cached after it)
        let cases = [
            (Update::Upsert(plain.clone()), Applied::Inserted, 1),
            // The same key, now stored boxed: an update in place, not a second entry.
            (Update::Upsert(labelled.clone()), Applied::Updated, 1),
            (Update::Upsert(plain.clone()), Applied::Updated, 1),
            (Update::Upsert(icmp.clone()), Applied::Inserted, 2),
            (Update::Upsert(icmp.clone()), Applied::Updated, 2),
            (Update::Upsert(mapped.clone()), Applied::Inserted, 3),
            (Update::Upsert(zoned.clone()), Applied::Inserted, 4),
            (Update::Upsert(tcp.clone()), Applied::Inserted, 5),
            (Update::Delete(labelled.key()), Applied::Deleted, 4),
            (Update::Delete(plain.key()), Applied::Absent, 4),
            (Update::Delete(icmp.key()), Applied::Deleted, 3),
            (Update::Delete(mapped.key()), Applied::Deleted, 2),
            (Update::Delete(zoned.key()), Applied::Deleted, 1),
            (Update::Delete(tcp.key()), Applied::Deleted, 0),
        ];
        let mut c = Cache::new(10);
        for (i, (u, want, len)) in cases.into_iter().enumerate() {
            assert_eq!(c.apply(u, 0), want, "case {i}");
            assert_eq!(c.len(), len, "case {i}");
        }
    }

    #[test]
    fn stored_forms_give_back_the_entry() {
        let tcp = {
            let mut e = entry("198.18.1.10", 1, status::SRC_NAT);
            e.orig.proto = 6;
            e.reply.proto = 6;
            e.protoinfo = Some(ProtoInfo {
                tcp: Some(TcpInfo {
                    state: Some(3),
                    wscale_orig: Some(7),
                    wscale_reply: None,
                    flags_orig: Some([0x23, 0]),
                    flags_reply: None,
                }),
                other: vec![],
            });
            e.mark = 5;
            e.zone = 2;
            e
        };
        let mut v6 = entry("198.18.1.10", 2, 0);
        for t in [&mut v6.orig, &mut v6.reply] {
            t.src = "fd00:198:18::10".parse().unwrap();
            t.dst = "2001:db8::10".parse().unwrap();
        }
        let mut labelled = entry("198.18.1.10", 3, 0);
        labelled.labels = Some(vec![1; 16]);
        let mut icmp = entry("198.18.1.10", 4, 0);
        icmp.orig.src_port = None;
        icmp.orig.icmp_id = Some(9);
        let cases = [
            (entry("198.18.1.10", 5, 0), true),
            (tcp, true),
            (v6, true),
            (labelled, false),
            (icmp, false),
        ];
        let mut c = Cache::new(10);
        for (e, plain) in cases {
            let s = Stored::of(e.clone());
            assert_eq!(matches!(s, Stored::Plain(_)), plain, "{e:?}");
            assert_eq!(s.entry(), e);
            c.apply(Update::Upsert(e.clone()), 0);
            let got = c.find(&e.key()).expect("found by its key");
            assert_eq!((got.entry(), got.key()), (e.clone(), e.key()));
        }
        // A plain slot never answers for a key that differs only where plain ones agree.
        let mut other_zone = entry("198.18.1.10", 5, 0).key();
        other_zone.zone = 1;
        assert!(c.find(&other_zone).is_none());
        let mut icmp_key = entry("198.18.1.10", 5, 0).key();
        icmp_key.orig.icmp_id = Some(1);
        assert!(c.find(&icmp_key).is_none());
        assert!(
            std::mem::size_of::<Cached>() <= 160,
            "{}",
            std::mem::size_of::<Cached>()
        );
        // A free slot costs no tag of its own.
        assert_eq!(
            std::mem::size_of::<Option<Cached>>(),
            std::mem::size_of::<Cached>()
        );
    }

    /// The storage (free slots reused, extraction at a resync's end, the index)
    /// behaves as a plain map under a long random sequence of upserts, deletes and resyncs.
    #[test]
    fn cache_matches_a_plain_map() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut c = Cache::with_inject(300, true);
        let mut model: std::collections::HashMap<CtKey, CtEntry> = Default::default();
        let mut resent = std::collections::HashSet::new();
        let mut resyncing = false;
        for step in 0..20_000 {
            let port = (next() % 400) as u16;
            let mut e = entry("198.18.1.10", port, 0);
            e.timeout = (next() % 1000) as u32;
            match next() % 100 {
                0 if !resyncing => {
                    c.begin_resync((next() % 500) as usize);
                    resyncing = true;
                    resent.clear();
                }
                1 if resyncing => {
                    let n = c.end_resync();
                    let before = model.len();
                    model.retain(|k, _| resent.contains(k));
                    assert_eq!(n, before - model.len(), "step {step}");
                    resyncing = false;
                }
                2..=30 => {
                    // Half through each entry point: the fixed form and the update.
                    let u = Update::Delete(e.key());
                    let got = if step % 2 == 0 {
                        c.apply(u, 0)
                    } else {
                        c.apply_item(Item::from(u), 0)
                    };
                    let want = if model.remove(&e.key()).is_some() {
                        Applied::Deleted
                    } else {
                        Applied::Absent
                    };
                    assert_eq!(got, want, "step {step}");
                }
                _ => {
                    let u = Update::Upsert(e.clone());
                    let got = if step % 2 == 0 {
                        c.apply(u, 0)
                    } else {
                        c.apply_item(Item::from(u), 0)
                    };
                    let want = if model.contains_key(&e.key()) {
                        Applied::Updated
                    } else if model.len() >= 300 {
                        Applied::Full
                    } else {
                        Applied::Inserted
                    };
                    assert_eq!(got, want, "step {step}");
                    if got != Applied::Full {
                        model.insert(e.key(), e.clone());
                        resent.insert(e.key());
                    }
                }
            }
            assert_eq!(c.len(), model.len(), "step {step}");
            if step % 1000 == 0 {
                for (k, v) in &model {
                    assert_eq!(
                        c.find(k).map(|c| c.entry()).as_ref(),
                        Some(v),
                        "step {step}"
                    );
                }
                let keys: std::collections::HashSet<_> = c.entries().map(|c| c.key()).collect();
                assert_eq!(keys.len(), c.len(), "no duplicates");
            }
        }
    }

    /// The index against a list of (hash, position): hashes from a few tags whose home
    /// cells crowd together (long runs, wrapping round the end of a small table), so
    /// that the probe, the backward shift of a removal and growth are all exercised.
    #[test]
    fn index_matches_a_list() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut ix = Index::default();
        let mut model: Vec<(u64, u32)> = Vec::new();
        let mut pos = 0u32;
        for step in 0..40_000 {
            // Tags 0..24 and near the top: homes at both ends of the table.
            let tag = match next() % 3 {
                0 => next() % 24,
                1 => u64::from(u32::MAX) - next() % 8,
                _ => next() % 1_000_000,
            };
            let hash = (tag << 32) | (next() & 0xffff_ffff);
            match next() % 10 {
                0..=4 if model.len() < 3000 => {
                    ix.insert(hash, pos);
                    model.push((hash, pos));
                    pos += 1;
                }
                5..=7 if !model.is_empty() => {
                    let (h, p) = model.swap_remove((next() % model.len() as u64) as usize);
                    ix.remove(h, p);
                }
                _ => {
                    // An absent position under a present or new hash: not found.
                    assert_eq!(ix.find(hash, |p| p == pos), None, "step {step}");
                }
            }
            assert_eq!(ix.len, model.len(), "step {step}");
            if step % 97 == 0 || model.len() < 40 {
                for &(h, p) in &model {
                    assert_eq!(ix.find(h, |q| q == p), Some(p), "step {step}");
                }
                let filled = ix.cells.iter().filter(|&&c| c != 0).count();
                assert_eq!(filled, model.len(), "step {step}: no stale cell");
            }
        }
    }

    /// A batch applied with `apply_items` (hashes and prefetches ahead) ends as the same
    /// items applied one by one: same refusals, same entries; through mass removals that
    /// compact the storage, and reuse of free slots under churn.
    #[test]
    fn batches_apply_as_items_one_by_one() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let max = 12_000;
        let mut batched = Cache::with_inject(max, true);
        let mut single = Cache::with_inject(max, true);
        let mut live = 0u32;
        let mut compacted = 0;
        for round in 0..60 {
            let mut items = Vec::new();
            // Mostly churn; every 10th round deletes nearly everything (compaction).
            let mass = round % 10 == 9;
            let n = if mass {
                16_000
            } else {
                (next() % 6000) as usize
            };
            for k in 0..n {
                let port = if mass {
                    k as u16
                } else {
                    (next() % 16_000) as u16
                };
                let mut e = entry(
                    if port % 7 == 0 {
                        "198.18.2.10"
                    } else {
                        "198.18.1.10"
                    },
                    port,
                    0,
                );
                e.timeout = (next() % 1000) as u32;
                let del = if mass {
                    !next().is_multiple_of(20)
                } else {
                    next().is_multiple_of(4)
                };
                let u = if del {
                    Update::Delete(e.key())
                } else {
                    Update::Upsert(e)
                };
                items.push(Item::from(u));
            }
            let want_full = items
                .iter()
                .filter(|it| single.apply_item((*it).clone(), round) == Applied::Full)
                .count();
            let got_full = batched.apply_items(&mut items, round);
            assert!(items.is_empty());
            assert_eq!(got_full, want_full, "round {round}");
            assert_eq!(batched.len(), single.len(), "round {round}");
            for c in single.entries() {
                let b = batched.find(&c.key()).expect("entry in both");
                assert_eq!(b.entry(), c.entry(), "round {round}");
                assert_eq!(b.version, c.version, "round {round}");
            }
            assert_eq!(batched.owed(), single.owed(), "round {round}");
            // Free slots stay bounded; a mass removal shrinks the storage.
            let free = batched.map.free.len();
            assert!(free <= COMPACT_AFTER.max(batched.len()), "round {round}");
            assert_eq!(
                batched.map.slots.len(),
                batched.len() + free,
                "round {round}"
            );
            if mass && live as usize > 2 * COMPACT_AFTER + 1000 {
                assert!(
                    batched.map.slots.len() < live as usize,
                    "round {round}: shrunk"
                );
                compacted += 1;
            }
            live = batched.len() as u32;
        }
        assert!(compacted > 0, "a mass removal compacted the storage");
    }

    #[test]
    fn without_inject_commit_is_everything_and_nothing_is_owed() {
        let mut c = Cache::new(10);
        c.apply(Update::Upsert(entry("198.18.1.10", 1, 0)), 0);
        c.apply(Update::Delete(entry("198.18.1.10", 1, 0).key()), 0);
        c.apply(Update::Upsert(entry("198.18.1.10", 2, 0)), 0);
        assert_eq!(c.owed(), 0);
        assert!(c.take_injections(10, 0).is_empty());
        assert_eq!(c.commit_set(0, false).len(), 1);
        assert_eq!(
            c.commit_set(0, false).len(),
            1,
            "commit does not consume the cache"
        );
    }
}
