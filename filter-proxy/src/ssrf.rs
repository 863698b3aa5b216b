//! The SSRF guard's classification: destinations a tenant must not reach through the
//! proxy unless a rule names them (loopback, private, link-local, CGNAT, multicast,
//! reserved, the benchmarking range the tenants live in, and the gateway's own addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is internal, or `None` if it is a public destination.
pub fn internal_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            let s = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                // NAT64: judge the embedded IPv4 address.
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                v4_reason(Ipv4Addr::new(a, b, c, d))
            } else if s[0] == 0x100 && s[1..4] == [0, 0, 0] {
                Some("discard-only")
            } else if v6 == Ipv6Addr::from(0u128) || s[0] == 0 && s[1..6] == [0, 0, 0, 0, 0] {
                // IPv4-compatible (deprecated) and other ::/96 forms.
                Some("reserved")
            } else {
                None
            }
        }
    }
}

fn v4_reason(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    Some(match o {
        [0, ..] => "this-network",
        [127, ..] => "loopback",
        [10, ..] => "private",
        [172, b, ..] if (16..32).contains(&b) => "private",
        [192, 168, ..] => "private",
        [169, 254, ..] => "link-local",
        [100, b, ..] if (64..128).contains(&b) => "cgnat",
        [192, 0, 0, _] => "ietf-protocol",
        [198, 18 | 19, ..] => "benchmarking",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("8.8.8.8", None),
            ("203.0.113.10", None),
            ("192.0.2.1", None),
            ("0.0.0.0", Some("this-network")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.1", Some("loopback")),
            ("10.0.0.1", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("cgnat")),
            ("100.128.0.1", None),
            ("198.18.1.10", Some("benchmarking")),
            ("224.0.0.1", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("reserved")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("reserved")),
            ("fd00::1", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("64:ff9b::a00:1", Some("private")),
            ("64:ff9b::808:808", None),
            ("2001:db8::1", None),
            ("2606:4700::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(internal_reason(ip.parse().unwrap()), *want, "{ip}");
        }
    }
}
