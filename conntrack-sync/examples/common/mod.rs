//! The entries the bench helpers make: entry i is an established TCP flow from
//! 198.18.0.0/16 host (i % 60000 + 1):(10000 + i / 60000) to 203.0.113.(10 + i / 60000):5000,
//! source-NATed to <pool>:(1024 + i % 60000), so every reply tuple is unique (i < 14.7M).

use std::net::{IpAddr, Ipv4Addr};

use igw_conntrack_sync::ct::{CtEntry, ProtoInfo, TcpInfo, Tuple};

pub fn tuple(src: IpAddr, dst: IpAddr, sp: u16, dp: u16) -> Tuple {
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

pub fn entry(i: u32, pool: IpAddr) -> CtEntry {
    assert!(i < 60_000 * 245, "out of unique tuples");
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
}
