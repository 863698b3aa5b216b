//! Bench helper, no kernel: the standby's receive path alone (verify and decode batch
//! frames, apply them to a cache) and the active's send path alone (encode batches), for
//! `n` compact IPv4 TCP SNAT entries as `ct_fill` makes them. Prints the time of each
//! step; run it under `perf record` to see where a path's time goes.
//!
//! `ct_apply [n] [rounds]` (default 500000 entries, 3 rounds).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use igw_conntrack_sync::proto::{self, Body, Key, NONCE_LEN, Update};
use igw_conntrack_sync::state::Cache;

fn pool() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(500_000, |s| s.parse().expect("n"));
    let rounds: u32 = args.next().map_or(3, |s| s.parse().expect("rounds"));
    let key = Key::from_file_bytes(b"0123456789abcdef0123456789abcdef-bench-psk\n").expect("key");
    let nonce = [5u8; NONCE_LEN];
    let updates: Vec<Update> = (0..n)
        .map(|i| Update::Upsert(common::entry(i, pool())))
        .collect();
    let deletes: Vec<Update> = (0..n)
        .map(|i| Update::Delete(common::entry(i, pool()).key()))
        .collect();
    for round in 0..rounds {
        // Active: encode frames of 256 updates.
        let t = Instant::now();
        let mut wire = Vec::new();
        let mut seq = 0;
        for chunk in updates.chunks(256) {
            seq += 1;
            proto::encode_batch(1, seq, chunk, &key, &nonce, &mut wire);
        }
        let enc = t.elapsed();
        let mut del_wire = Vec::new();
        for chunk in deletes.chunks(256) {
            seq += 1;
            proto::encode_batch(1, seq, chunk, &key, &nonce, &mut del_wire);
        }
        // Standby: verify, decode, apply (as new entries, as updates, as deletions).
        let mut cache = Cache::new(2_000_000);
        cache.begin_resync(n as usize);
        let mut items = Vec::new();
        let mut pass = |cache: &mut Cache, wire: &[u8]| {
            let (mut decode_t, mut apply_t) = (Duration::ZERO, Duration::ZERO);
            let mut at = 0;
            while at < wire.len() {
                let len = proto::frame_len(&wire[at..])
                    .expect("frame")
                    .expect("whole");
                let t = Instant::now();
                let f = proto::decode_items(&wire[at..at + len], &key, &nonce, &mut items)
                    .expect("decode");
                decode_t += t.elapsed();
                let t = Instant::now();
                if let Body::Batch(_) = f.body {
                    // As the daemon applies a frame: the batch at once (hashes and
                    // prefetches ahead).
                    assert_eq!(cache.apply_items(&mut items, 0), 0);
                }
                apply_t += t.elapsed();
                at += len;
            }
            (decode_t, apply_t)
        };
        let (d_new, a_new) = pass(&mut cache, &wire);
        let (d_upd, a_upd) = pass(&mut cache, &wire);
        let (d_del, a_del) = pass(&mut cache, &del_wire);
        assert!(cache.is_empty());
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "round {round}: {n} entries, {} bytes: encode {:.1} ms; new: decode {:.1} apply {:.1}; update: decode {:.1} apply {:.1}; delete ({} bytes): decode {:.1} apply {:.1} ms",
            wire.len(),
            ms(enc),
            ms(d_new),
            ms(a_new),
            ms(d_upd),
            ms(a_upd),
            del_wire.len(),
            ms(d_del),
            ms(a_del)
        );
    }
}
