//! The original destination of a connection diverted by nftables `redirect`
//! (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST, answered by conntrack's NAT table).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

pub fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddr> {
    let local = s.local_addr()?;
    // An IPv4 client on the default dual-stack `[::]` listener arrives v4-mapped; its
    // NAT record is IPv4, which only the SOL_IP query finds.
    let v4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    if v4 {
        let a = getsockopt(s, sockopt::OriginalDst).map_err(std::io::Error::from)?;
        Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
            u16::from_be(a.sin_port),
        )))
    } else {
        let a = getsockopt(s, sockopt::Ip6tOriginalDst).map_err(std::io::Error::from)?;
        let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
        Ok(SocketAddr::V6(SocketAddrV6::new(
            ip,
            u16::from_be(a.sin6_port),
            0,
            0,
        )))
    }
}
