//! Canonical forms of what a client names, computed before any rule is consulted, so that
//! one resource has one spelling: host names (case, trailing dot, IDNA), IP literals in
//! every historical spelling, and paths (percent-decoding, dot segments, slashes).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a name or path was refused outright (answered 400 by the proxy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormError {
    #[error("empty host")]
    EmptyHost,
    #[error("userinfo (`@`) in the authority is refused")]
    Userinfo,
    #[error("malformed bracketed IPv6 literal")]
    Bracket,
    #[error("invalid host name")]
    BadHost,
    #[error("invalid port")]
    BadPort,
    #[error("NUL or control byte in the path")]
    ControlInPath,
    #[error("path does not start with `/`")]
    RelativePath,
}

/// A host after normalisation: either a lower-case ASCII (punycode) name without trailing
/// dot, or an IP address (IPv4-mapped IPv6 collapsed to IPv4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Normalises a bare host (no port): a name, an IPv4 literal in any spelling, or an
    /// IPv6 literal with or without brackets.
    pub fn parse(raw: &str) -> Result<Host, NormError> {
        if raw.is_empty() {
            return Err(NormError::EmptyHost);
        }
        if raw.contains('@') {
            return Err(NormError::Userinfo);
        }
        if let Some(inner) = raw.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(NormError::Bracket)?;
            // Zone ids (`%eth0`) and anything but a plain literal are refused.
            let v6: Ipv6Addr = inner.parse().map_err(|_| NormError::Bracket)?;
            return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
        }
        if raw.contains([']', '[']) {
            return Err(NormError::Bracket);
        }
        if raw.contains(':') {
            // A bare IPv6 literal (SNI never carries one, Host must bracket it; accepted
            // here for `--src`-style callers and refused if it is not a literal).
            let v6: Ipv6Addr = raw.parse().map_err(|_| NormError::BadHost)?;
            return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
        }
        if raw
            .bytes()
            .any(|b| b == b'%' || b.is_ascii_control() || b == b' ')
        {
            return Err(NormError::BadHost);
        }
        let trimmed = raw.strip_suffix('.').unwrap_or(raw);
        if trimmed.is_empty() || trimmed.ends_with('.') {
            return Err(NormError::BadHost);
        }
        if trimmed.is_ascii()
            && let Some(v4) = parse_ipv4_any(trimmed)?
        {
            return Ok(Host::Ip(IpAddr::V4(v4)));
        }
        // UTS 46 processing: maps case and Unicode to the punycode form clients send.
        let ascii = idna::domain_to_ascii(trimmed).map_err(|_| NormError::BadHost)?;
        let ascii = ascii.strip_suffix('.').unwrap_or(&ascii).to_string();
        if ascii.is_empty()
            || ascii.len() > 253
            || ascii.split('.').any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || !l
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        {
            return Err(NormError::BadHost);
        }
        // IDNA may have produced something that now looks numeric (full-width digits).
        if let Some(v4) = parse_ipv4_any(&ascii)? {
            return Ok(Host::Ip(IpAddr::V4(v4)));
        }
        Ok(Host::Name(ascii))
    }

    /// The form used as a key in the domain index: the name, or the IP's canonical text.
    pub fn key(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address: one address, one spelling.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Splits `host[:port]` (authority without userinfo) into a normalised host and port.
pub fn parse_authority(auth: &str, default_port: u16) -> Result<(Host, u16), NormError> {
    if auth.contains('@') {
        return Err(NormError::Userinfo);
    }
    let (h, p) = if auth.starts_with('[') {
        let end = auth.find(']').ok_or(NormError::Bracket)?;
        let rest = &auth[end + 1..];
        let port = match rest {
            "" => None,
            r => Some(r.strip_prefix(':').ok_or(NormError::Bracket)?),
        };
        (&auth[..=end], port)
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        }
    };
    let port = match p {
        None => default_port,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(NormError::BadPort),
            }
        }
        Some(_) => return Err(NormError::BadPort),
    };
    Ok((Host::parse(h)?, port))
}

/// WHATWG URL IPv4 parsing: 1 to 4 parts, each decimal, octal (`0` prefix) or hex (`0x`),
/// the last part filling the remaining bytes (`127.1`, `3232235777`, `0xc0a80001`).
/// `Ok(None)`: not an IPv4 literal (a name). `Err`: looks numeric but is out of range,
/// which browsers also refuse.
pub fn parse_ipv4_any(s: &str) -> Result<Option<Ipv4Addr>, NormError> {
    let parts: Vec<&str> = s.split('.').collect();
    // A name is an IPv4 literal only if its last label is numeric (WHATWG "ends in a number").
    let last = parts.last().copied().unwrap_or("");
    if last.is_empty()
        || (parse_ipv4_part(last).is_none() && !last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(None);
    }
    if parts.len() > 4 {
        return Err(NormError::BadHost);
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        nums.push(parse_ipv4_part(p).ok_or(NormError::BadHost)?);
    }
    let (head, tail) = nums.split_at(nums.len() - 1);
    if head.iter().any(|&n| n > 255) {
        return Err(NormError::BadHost);
    }
    let tail = tail[0];
    let room = 8 * (5 - nums.len()) as u32;
    if room < 64 && tail >= (1u64 << room) {
        return Err(NormError::BadHost);
    }
    let mut v: u64 = tail;
    for (i, &n) in head.iter().enumerate() {
        v += n << (8 * (3 - i));
    }
    Ok(Some(Ipv4Addr::from(v as u32)))
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() || p.len() > 32 {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // `0x` alone is 0 for WHATWG.
        return if radix == 16 { Some(0) } else { None };
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|n| *n <= u64::from(u32::MAX))
}

/// Normalises a request path for matching: percent-decodes every octet once (what the
/// origin will see), maps `\` to `/` and collapses `//` (servers that treat them as one
/// separator must not get past a prefix rule), removes dot segments (RFC 3986 5.2.4).
/// The query is not part of the path. NUL and control bytes are refused.
pub fn normalize_path(raw: &str) -> Result<String, NormError> {
    if !raw.starts_with('/') {
        return Err(NormError::RelativePath);
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if decoded.iter().any(|b| b.is_ascii_control()) {
        return Err(NormError::ControlInPath);
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = text.split('/').skip(1).collect();
    let n = segs.len();
    let mut trailing_slash = false;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == n;
        match *seg {
            "." => trailing_slash = last,
            ".." => {
                out.pop();
                trailing_slash = last;
            }
            "" => trailing_slash = last,
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut p = String::with_capacity(text.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if trailing_slash || p.is_empty() {
        p.push('/');
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }
    fn name(s: &str) -> Host {
        Host::Name(s.to_string())
    }

    #[test]
    fn hosts() {
        let cases: &[(&str, Result<Host, NormError>)] = &[
            ("www.Example.COM", Ok(name("www.example.com"))),
            ("www.example.com.", Ok(name("www.example.com"))),
            ("bücher.example", Ok(name("xn--bcher-kva.example"))),
            ("XN--BCHER-KVA.example", Ok(name("xn--bcher-kva.example"))),
            ("192.168.0.1", Ok(ip("192.168.0.1"))),
            ("3232235521", Ok(ip("192.168.0.1"))),
            ("3232235777", Ok(ip("192.168.1.1"))),
            ("0300.0250.0.1", Ok(ip("192.168.0.1"))),
            ("0xc0a80001", Ok(ip("192.168.0.1"))),
            ("0xC0.0xA8.0.1", Ok(ip("192.168.0.1"))),
            ("127.1", Ok(ip("127.0.0.1"))),
            ("127.0.1", Ok(ip("127.0.0.1"))),
            ("0", Ok(ip("0.0.0.0"))),
            ("127.0.0.1.", Ok(ip("127.0.0.1"))),
            ("[::1]", Ok(ip("::1"))),
            ("[::ffff:127.0.0.1]", Ok(ip("127.0.0.1"))),
            ("[::FFFF:7f00:1]", Ok(ip("127.0.0.1"))),
            ("[2001:DB8::1]", Ok(ip("2001:db8::1"))),
            ("2001:db8::1", Ok(ip("2001:db8::1"))),
            ("１２７.0.0.1", Ok(ip("127.0.0.1"))),
            ("256.1.1.1", Err(NormError::BadHost)),
            ("1.2.3.4.5", Err(NormError::BadHost)),
            ("4294967296", Err(NormError::BadHost)),
            ("1.2.3.09", Err(NormError::BadHost)),
            ("user@host", Err(NormError::Userinfo)),
            ("[::1", Err(NormError::Bracket)),
            ("[::1]x", Err(NormError::Bracket)),
            ("a[b]", Err(NormError::Bracket)),
            ("[fe80::1%25eth0]", Err(NormError::Bracket)),
            ("ex%61mple.com", Err(NormError::BadHost)),
            ("exa mple.com", Err(NormError::BadHost)),
            ("nul\0.com", Err(NormError::BadHost)),
            ("a..b", Err(NormError::BadHost)),
            ("", Err(NormError::EmptyHost)),
            ("1.2.3.com", Ok(name("1.2.3.com"))),
            ("0x.example", Ok(name("0x.example"))),
        ];
        for (raw, want) in cases {
            assert_eq!(&Host::parse(raw), want, "host {raw:?}");
        }
    }

    #[test]
    fn authorities() {
        type Want = Result<(Host, u16), NormError>;
        let cases: &[(&str, Want)] = &[
            ("example.com", Ok((name("example.com"), 80))),
            ("example.com:8080", Ok((name("example.com"), 8080))),
            ("[::1]:443", Ok((ip("::1"), 443))),
            ("[::1]", Ok((ip("::1"), 80))),
            ("evil.com@good.com", Err(NormError::Userinfo)),
            ("example.com:", Err(NormError::BadPort)),
            ("example.com:0", Err(NormError::BadPort)),
            ("example.com:65536", Err(NormError::BadPort)),
            ("example.com:+80", Err(NormError::BadPort)),
            ("[::1]:", Err(NormError::BadPort)),
            ("[::1]80", Err(NormError::Bracket)),
        ];
        for (raw, want) in cases {
            assert_eq!(&parse_authority(raw, 80), want, "authority {raw:?}");
        }
    }

    #[test]
    fn paths() {
        let cases: &[(&str, Result<&str, NormError>)] = &[
            ("/", Ok("/")),
            ("/admin/", Ok("/admin/")),
            ("/x/../admin/", Ok("/admin/")),
            ("/x/%2e%2e/admin/", Ok("/admin/")),
            ("/%61dmin/", Ok("/admin/")),
            ("/./admin/./", Ok("/admin/")),
            ("//admin//x", Ok("/admin/x")),
            ("/x\\..\\admin\\", Ok("/admin/")),
            ("/../../admin", Ok("/admin")),
            ("/a/b/..", Ok("/a/")),
            ("/a/.", Ok("/a/")),
            ("/admin%2Fx", Ok("/admin/x")),
            ("/a%00b", Err(NormError::ControlInPath)),
            ("/a%0d%0ab", Err(NormError::ControlInPath)),
            ("admin", Err(NormError::RelativePath)),
        ];
        for (raw, want) in cases {
            assert_eq!(
                normalize_path(raw),
                want.clone().map(String::from),
                "path {raw:?}"
            );
        }
    }
}
