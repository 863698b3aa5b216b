//! Address and port notation used in the config files: CIDRs, bare addresses, address
//! ranges, ports and port ranges. Errors are plain strings; the loader adds file and field.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Parses `198.18.0.0/16`, `2001:db8::/32` or a bare address (taken as /32 or /128).
/// Host bits must be clear: `198.18.0.1/16` is refused, because it almost always means a
/// typo that would otherwise widen or narrow a rule silently.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4/IPv6 address or CIDR"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set; did you mean `{}`?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// An inclusive range of addresses of one family, e.g. a NAT pool `198.51.100.10-198.51.100.20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddrRange {
    pub fn single(addr: IpAddr) -> Self {
        Self {
            first: addr,
            last: addr,
        }
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        self.first.is_ipv4() == a.is_ipv4() && self.first <= a && a <= self.last
    }

    pub fn overlaps(&self, o: &AddrRange) -> bool {
        self.first.is_ipv4() == o.first.is_ipv4() && self.first <= o.last && o.first <= self.last
    }

    pub fn is_ipv4(&self) -> bool {
        self.first.is_ipv4()
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for AddrRange {
    type Err = String;

    /// `a`, `a-b` (same family, a <= b) or a CIDR (its whole block).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let first: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| format!("`{a}` is not an IP address"))?;
            let last: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| format!("`{b}` is not an IP address"))?;
            if first.is_ipv4() != last.is_ipv4() {
                return Err(format!("`{s}` mixes IPv4 and IPv6"));
            }
            if first > last {
                return Err(format!(
                    "`{s}` is empty: the first address is above the last"
                ));
            }
            return Ok(Self { first, last });
        }
        let net = parse_cidr(s)?;
        Ok(Self {
            first: net.network(),
            last: net.broadcast(),
        })
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(p: u16) -> Self {
        Self { first: p, last: p }
    }
    pub fn contains(&self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) => Err(format!("`{}` is not a port number", s.trim())),
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `443` or `8000-8100`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (parse_port(a)?, parse_port(b)?);
                if first > last {
                    return Err(format!("port range `{s}` is empty"));
                }
                Ok(Self { first, last })
            }
            None => parse_port(s).map(Self::single),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("198.18.0.0/16", Ok("198.18.0.0/16")),
            ("203.0.113.7", Ok("203.0.113.7/32")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("2001:db8::1", Ok("2001:db8::1/128")),
            ("198.18.0.1/16", Err("host bits set")),
            ("198.18.0.0/33", Err("not an IPv4/IPv6")),
            ("banana", Err("not an IPv4/IPv6")),
            ("", Err("not an IPv4/IPv6")),
        ];
        for (input, want) in cases {
            match (parse_cidr(input), want) {
                (Ok(n), Ok(w)) => assert_eq!(n.to_string(), *w, "{input}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn range_table() {
        let ok: &[(&str, &str, &str)] = &[
            ("198.51.100.10", "198.51.100.10", "198.51.100.10"),
            (
                "198.51.100.10-198.51.100.20",
                "198.51.100.10",
                "198.51.100.20",
            ),
            ("198.51.100.0/30", "198.51.100.0", "198.51.100.3"),
        ];
        for (s, a, b) in ok {
            let r: AddrRange = s.parse().unwrap();
            assert_eq!(
                (r.first.to_string(), r.last.to_string()),
                (a.to_string(), b.to_string())
            );
        }
        for bad in [
            "198.51.100.20-198.51.100.10",
            "198.51.100.1-2001:db8::1",
            "x-y",
        ] {
            assert!(bad.parse::<AddrRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_table() {
        assert_eq!("443".parse::<PortRange>(), Ok(PortRange::single(443)));
        assert_eq!(
            "8000-8100".parse::<PortRange>(),
            Ok(PortRange {
                first: 8000,
                last: 8100
            })
        );
        for bad in ["0", "65536", "100-10", "http", "-1"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }
}
