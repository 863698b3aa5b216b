//! Bench helper: creates N established, source-NATed TCP entries in this network
//! namespace's conntrack table with batched CT_NEW (what `conntrack -I` does one process
//! per entry). Each creation is a NEW event for a sync daemon running in the namespace.
//!
//! `ct_fill <count> [pool] [batch]`; prints `created <n> failed <m> in <seconds>`.
//!
//! `ct_fill churn <live> <seconds> [pool] [batch]`: creates `live` entries, then for
//! `seconds` (bounded) replaces the oldest `batch` entries by `batch` new ones as fast as
//! the kernel takes them (DESTROY + NEW events), and ends with `live` entries in the table;
//! prints `churn created <c> deleted <d> in <seconds> live <live> failed <f>`.
//!
//! `ct_fill dump`: dumps the namespace's table once with the decoder the sync daemon uses,
//! and prints `dumped <n> in <seconds>`: the floor of a session-start resync's time.
//!
//! The entries: `common/mod.rs`.

mod common;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use igw_conntrack_sync::netlink::{CtSocket, errno_counts};
use igw_conntrack_sync::state::Injection;

fn write(s: &mut CtSocket, items: &[Injection], batch: usize) -> u64 {
    s.inject(items, batch)
        .expect("ctnetlink")
        .iter()
        .filter(|&&r| r != 0)
        .count() as u64
}

fn churn(mut args: impl Iterator<Item = String>) {
    let usage = "usage: ct_fill churn <live> <seconds> [pool] [batch]";
    let live: u32 = args.next().and_then(|s| s.parse().ok()).expect(usage);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).expect(usage);
    let pool: IpAddr = args.next().map_or("198.51.100.10".parse().unwrap(), |s| {
        s.parse().expect(usage)
    });
    let batch: usize = args.next().map_or(256, |s| s.parse().expect(usage));
    let mut s = CtSocket::open().expect("ctnetlink");
    let started = Instant::now();
    let mut next = 0u32;
    let mut table = VecDeque::new();
    let mut failed = 0;
    while next < live {
        let n = batch.min((live - next) as usize) as u32;
        let items: Vec<Injection> = (next..next + n)
            .map(|i| Injection::Write {
                entry: common::entry(i, pool),
                timeout: 3600,
                version: 0,
            })
            .collect();
        failed += write(&mut s, &items, batch);
        table.extend(next..next + n);
        next += n;
    }
    let (mut created, mut deleted) = (u64::from(live), 0u64);
    let deadline = started + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let mut items = Vec::with_capacity(2 * batch);
        for _ in 0..batch.min(table.len()) {
            let old = table.pop_front().expect("non-empty");
            items.push(Injection::Remove(common::entry(old, pool)));
        }
        deleted += items.len() as u64;
        for i in next..next + batch as u32 {
            items.push(Injection::Write {
                entry: common::entry(i, pool),
                timeout: 3600,
                version: 0,
            });
            table.push_back(i);
        }
        next += batch as u32;
        created += batch as u64;
        failed += write(&mut s, &items, batch);
    }
    println!(
        "churn created {created} deleted {deleted} in {:.3} live {} failed {failed}",
        started.elapsed().as_secs_f64(),
        table.len()
    );
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("churn") {
        args.next();
        return churn(args);
    }
    if args.peek().map(String::as_str) == Some("dump") {
        let started = Instant::now();
        let mut n = 0u64;
        CtSocket::open()
            .and_then(|mut s| s.dump_each(|_| n += 1))
            .expect("ctnetlink");
        println!("dumped {n} in {:.3}", started.elapsed().as_secs_f64());
        return;
    }
    let count: u32 = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("usage: ct_fill <count> [pool] [batch]");
    let pool: IpAddr = args.next().map_or("198.51.100.10".parse().unwrap(), |s| {
        s.parse().expect("pool address")
    });
    let batch: usize = args.next().map_or(256, |s| s.parse().expect("batch"));
    let items: Vec<Injection> = (0..count)
        .map(|i| Injection::Write {
            entry: common::entry(i, pool),
            timeout: 3600,
            version: 0,
        })
        .collect();
    let started = Instant::now();
    let mut s = CtSocket::open().expect("ctnetlink");
    let results = s.inject(&items, batch).expect("ctnetlink");
    let errors = errno_counts(&results);
    let failed: u64 = errors.values().sum();
    println!(
        "created {} failed {failed} in {:.3} errors {errors:?}",
        results.len() as u64 - failed,
        started.elapsed().as_secs_f64(),
    );
}
