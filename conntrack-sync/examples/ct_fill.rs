//! Bench helper: creates N established, source-NATed TCP entries in this network
//! namespace's conntrack table with batched CT_NEW (what `conntrack -I` does one process
//! per entry). Each creation is a NEW event for a sync daemon running in the namespace.
//!
//! `ct_fill <count> [pool] [batch]`; prints `created <n> failed <m> in <seconds>`.
//! Entry i: 198.18.0.0/16 host (i % 60000 + 1):(10000 + i / 60000) -> 203.0.113.(10 +
//! i / 60000):5000, SNAT to <pool>:(1024 + i % 60000), so every reply tuple is unique.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use igw_conntrack_sync::ct::{CtEntry, ProtoInfo, TcpInfo, Tuple};
use igw_conntrack_sync::netlink::CtSocket;

fn tuple(src: IpAddr, dst: IpAddr, sp: u16, dp: u16) -> Tuple {
    Tuple {
        src,
        dst,
        proto: 6,
        src_port: Some(sp),
        dst_port: Some(dp),
        icmp_id: None,
        icmp_type: None,
        icmp_code: None,
        zone: None,
        other: vec![],
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u32 = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("usage: ct_fill <count> [pool] [batch]");
    let pool: IpAddr = args.next().map_or("198.51.100.10".parse().unwrap(), |s| {
        s.parse().expect("pool address")
    });
    let batch: usize = args.next().map_or(256, |s| s.parse().expect("batch"));
    let entries: Vec<CtEntry> = (0..count)
        .map(|i| {
            let host = i % 60_000 + 1;
            let round = (i / 60_000) as u16;
            let src = IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(198, 18, 0, 0)) + host,
            ));
            let dst = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10 + round as u8));
            let sport = 10_000 + round;
            let nport = 1024 + (i % 60_000) as u16;
            CtEntry {
                orig: tuple(src, dst, sport, 5000),
                reply: tuple(dst, pool, 5000, nport),
                // SEEN_REPLY | ASSURED | CONFIRMED | SRC_NAT | SRC_NAT_DONE | DST_NAT_DONE
                status: 0x19e,
                timeout: 3600,
                mark: 0,
                zone: 0,
                protoinfo: Some(ProtoInfo {
                    tcp: Some(TcpInfo {
                        state: Some(3),
                        wscale_orig: Some(7),
                        wscale_reply: Some(7),
                        flags_orig: Some([0x23, 0x23]),
                        flags_reply: Some([0x23, 0x23]),
                    }),
                    other: vec![],
                }),
                labels: None,
            }
        })
        .collect();
    let started = Instant::now();
    let mut s = CtSocket::open().expect("ctnetlink");
    let r = s
        .commit(entries.iter().map(|e| (e, 3600)), batch)
        .expect("commit");
    println!(
        "created {} failed {} in {:.3} errors {:?}",
        r.committed,
        r.failed,
        started.elapsed().as_secs_f64(),
        r.errors
    );
}
