//! Table-driven tests of the L7 matcher against policies written as operators write them.

use std::net::IpAddr;
use std::path::Path;

use igw_core::policy::{Action, Policy};
use igw_ruleset::l7::{
    Host, HttpPart, Matcher, Query, TunnelKind, normalize_path, parse_authority,
};

const POLICY: &str = r#"
[defaults]
l7 = "deny"

[[tenants]]
name = "tenant-a"
subnets = ["198.18.1.0/24", "fd00:198:18:1::/64"]

[[tenants]]
name = "tenant-b"
subnets = ["198.18.2.0/24"]

[[l7_rules]]
id = "deny-admin"
action = "deny"
domains = ["www.example.com"]
path_prefixes = ["/admin/"]

[[l7_rules]]
id = "allow-example"
action = "allow"
domains = ["www.example.com", "*.example.org", "xn--bcher-kva.example"]

[[l7_rules]]
id = "allow-b-api"
tenants = ["tenant-b"]
action = "allow"
domains = ["api.example.net"]
methods = ["GET", "HEAD"]

[[l7_rules]]
id = "deny-exe"
action = "deny"
regex = ['\.exe$', '^http://[^/]*/download/.*\.zip$']

[[l7_rules]]
id = "allow-files"
action = "allow"
domains = ["files.example.com"]
ports = ["80", "8080-8090", "443"]

[[l7_rules]]
id = "allow-internal"
action = "allow"
cidrs = ["10.1.0.0/16"]

[[l7_rules]]
id = "allow-ip"
action = "allow"
domains = ["192.168.0.1"]
cidrs = ["192.168.0.0/24"]

[[l7_rules]]
id = "regex-allow"
action = "allow"
regex = ['^http://cdn[0-9]+\.example\.io/']
"#;

fn matcher() -> Matcher {
    let p = Policy::parse(Path::new("/nonexistent/policy.toml"), POLICY).expect("policy");
    Matcher::compile(&p).expect("compile")
}

struct Case {
    src: &'static str,
    url: &'static str,
    method: &'static str,
    want: (Action, &'static str),
}

/// `url` is `http://authority/path?query`, or `connect://host:port` / `sni://host` for
/// tunnels.
fn judge(m: &Matcher, src: &str, url: &str, method: &str) -> (Action, String) {
    let src: IpAddr = src.parse().unwrap();
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, pathq) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let default_port = if scheme == "http" { 80 } else { 443 };
    let (host, port) = parse_authority(auth, default_port).expect("authority");
    let (path, query) = match pathq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pathq, None),
    };
    let npath = if scheme == "http" {
        normalize_path(path).expect("path")
    } else {
        String::new()
    };
    let q = Query {
        src,
        host: &host,
        port,
        http: (scheme == "http").then_some(HttpPart {
            method,
            path: &npath,
            query,
        }),
        tunnel: if scheme == "sni" {
            TunnelKind::Sni
        } else {
            TunnelKind::Connect
        },
        dst: host.ip(),
    };
    let d = m.decide(&q);
    (d.action, m.decided_by_name(&d).to_string())
}

#[test]
fn decisions() {
    use Action::{Allow, Deny};
    let a = "198.18.1.10";
    let b = "198.18.2.10";
    let cases = [
        // First match in file order: the deny above the broad allow wins.
        Case {
            src: a,
            url: "http://www.example.com/",
            method: "GET",
            want: (Allow, "allow-example"),
        },
        Case {
            src: a,
            url: "http://www.example.com/admin/x",
            method: "GET",
            want: (Deny, "deny-admin"),
        },
        Case {
            src: a,
            url: "http://www.example.com/x/../admin/",
            method: "GET",
            want: (Deny, "deny-admin"),
        },
        Case {
            src: a,
            url: "http://www.example.com/%61dmin/",
            method: "GET",
            want: (Deny, "deny-admin"),
        },
        Case {
            src: a,
            url: "http://www.example.com//admin/",
            method: "GET",
            want: (Deny, "deny-admin"),
        },
        Case {
            src: a,
            url: "http://www.example.com/x/%2e%2e/admin/",
            method: "GET",
            want: (Deny, "deny-admin"),
        },
        Case {
            src: a,
            url: "http://WWW.EXAMPLE.COM./admin/",
            method: "GET",
            want: (Deny, "deny-admin"),
        },
        Case {
            src: a,
            url: "http://www.example.com/administrator",
            method: "GET",
            want: (Allow, "allow-example"),
        },
        // Suffix rules: the name itself and below, not look-alikes.
        Case {
            src: a,
            url: "http://example.org/",
            method: "GET",
            want: (Allow, "allow-example"),
        },
        Case {
            src: a,
            url: "http://a.b.example.org/",
            method: "GET",
            want: (Allow, "allow-example"),
        },
        Case {
            src: a,
            url: "http://badexample.org/",
            method: "GET",
            want: (Deny, "default"),
        },
        Case {
            src: a,
            url: "http://example.org.evil.com/",
            method: "GET",
            want: (Deny, "default"),
        },
        // IDNA: the Unicode and the punycode spelling are one name.
        Case {
            src: a,
            url: "http://bücher.example/",
            method: "GET",
            want: (Allow, "allow-example"),
        },
        Case {
            src: a,
            url: "http://XN--BCHER-KVA.example/",
            method: "GET",
            want: (Allow, "allow-example"),
        },
        // Tenant-scoped rule with methods.
        Case {
            src: b,
            url: "http://api.example.net/v1",
            method: "GET",
            want: (Allow, "allow-b-api"),
        },
        Case {
            src: b,
            url: "http://api.example.net/v1",
            method: "POST",
            want: (Deny, "default"),
        },
        Case {
            src: a,
            url: "http://api.example.net/v1",
            method: "GET",
            want: (Deny, "default"),
        },
        // Source in no tenant.
        Case {
            src: "203.0.113.9",
            url: "http://www.example.com/",
            method: "GET",
            want: (Deny, "no-tenant"),
        },
        // IPv6 tenant source, and IPv4-mapped sources count as IPv4.
        Case {
            src: "fd00:198:18:1::10",
            url: "http://www.example.com/",
            method: "GET",
            want: (Allow, "allow-example"),
        },
        Case {
            src: "::ffff:198.18.2.10",
            url: "http://api.example.net/",
            method: "GET",
            want: (Allow, "allow-b-api"),
        },
        // Regex rules: one set over all rules, on the normalised URL.
        Case {
            src: a,
            url: "http://www.example.com/setup.exe",
            method: "GET",
            want: (Allow, "allow-example"),
        },
        Case {
            src: a,
            url: "http://other.example/setup.exe",
            method: "GET",
            want: (Deny, "deny-exe"),
        },
        Case {
            src: a,
            url: "http://other.example/download/a.zip",
            method: "GET",
            want: (Deny, "deny-exe"),
        },
        Case {
            src: a,
            url: "http://cdn42.example.io/lib.js",
            method: "GET",
            want: (Allow, "regex-allow"),
        },
        Case {
            src: a,
            url: "http://cdnx.example.io/lib.js",
            method: "GET",
            want: (Deny, "default"),
        },
        // Ports: an allow rule without ports allows the standard port only.
        Case {
            src: a,
            url: "http://www.example.com:8080/",
            method: "GET",
            want: (Deny, "default"),
        },
        Case {
            src: a,
            url: "http://files.example.com:8085/",
            method: "GET",
            want: (Allow, "allow-files"),
        },
        Case {
            src: a,
            url: "http://files.example.com:9000/",
            method: "GET",
            want: (Deny, "default"),
        },
        // ... but a deny rule without ports covers every port.
        Case {
            src: a,
            url: "http://www.example.com:8080/admin/",
            method: "GET",
            want: (Deny, "deny-admin"),
        },
        // Tunnels: no path, so path rules do not apply; CONNECT to 443 by default.
        Case {
            src: a,
            url: "connect://www.example.com:443",
            method: "",
            want: (Allow, "allow-example"),
        },
        Case {
            src: a,
            url: "connect://www.example.com:22",
            method: "",
            want: (Deny, "default"),
        },
        Case {
            src: a,
            url: "sni://www.example.com",
            method: "",
            want: (Allow, "allow-example"),
        },
        Case {
            src: b,
            url: "sni://api.example.net",
            method: "",
            want: (Deny, "default"),
        },
        Case {
            src: a,
            url: "connect://files.example.com:8080",
            method: "",
            want: (Allow, "allow-files"),
        },
        // IP literals in any spelling reach the rule written for the canonical address.
        Case {
            src: a,
            url: "http://192.168.0.1/",
            method: "GET",
            want: (Allow, "allow-ip"),
        },
        Case {
            src: a,
            url: "http://3232235521/",
            method: "GET",
            want: (Allow, "allow-ip"),
        },
        Case {
            src: a,
            url: "http://0300.0250.0.1/",
            method: "GET",
            want: (Allow, "allow-ip"),
        },
        Case {
            src: a,
            url: "http://0xc0a80001/",
            method: "GET",
            want: (Allow, "allow-ip"),
        },
        Case {
            src: a,
            url: "http://[::ffff:192.168.0.1]/",
            method: "GET",
            want: (Allow, "allow-ip"),
        },
        Case {
            src: a,
            url: "http://192.168.1/",
            method: "GET",
            want: (Allow, "allow-ip"),
        },
        Case {
            src: a,
            url: "http://192.168.0.2/",
            method: "GET",
            want: (Deny, "default"),
        },
        // cidrs as the destination condition of a rule without domains.
        Case {
            src: a,
            url: "http://10.1.2.3/",
            method: "GET",
            want: (Allow, "allow-internal"),
        },
        Case {
            src: a,
            url: "http://012.1.2.3/",
            method: "GET",
            want: (Allow, "allow-internal"),
        },
        Case {
            src: a,
            url: "http://10.2.2.3/",
            method: "GET",
            want: (Deny, "default"),
        },
    ];
    let m = matcher();
    for c in &cases {
        let got = judge(&m, c.src, c.url, c.method);
        assert_eq!(
            (got.0, got.1.as_str()),
            c.want,
            "{} {} from {}",
            c.method,
            c.url,
            c.src
        );
    }
}

#[test]
fn refused_spellings() {
    for auth in [
        "user@www.example.com",
        "www.example.com@evil",
        "[::1",
        "a[b]",
        "256.0.0.1",
        "[fe80::1%25lo]",
    ] {
        assert!(parse_authority(auth, 80).is_err(), "{auth} must be refused");
    }
    assert!(matches!(Host::parse("0x7f.1"), Ok(Host::Ip(ip)) if ip.to_string() == "127.0.0.1"));
}

#[test]
fn bad_regex_names_its_rule() {
    let text = POLICY.replace(r"'\.exe$'", "'(unclosed'");
    let p = Policy::parse(Path::new("/nonexistent/policy.toml"), &text).unwrap();
    let e = Matcher::compile(&p).unwrap_err().to_string();
    assert!(e.contains("deny-exe") && e.contains("(unclosed"), "{e}");
}

/// Many domains: the lookup is by hash, so 100k names still decide correctly (the bench
/// measures the cost; here only correctness at scale).
#[test]
fn large_lists() {
    let mut text = String::from("[[tenants]]\nname = \"t\"\nsubnets = [\"198.18.1.0/24\"]\n");
    text.push_str("[[l7_rules]]\nid = \"big\"\naction = \"deny\"\ndomains = [");
    for i in 0..100_000 {
        text.push_str(&format!("\"*.d{i}.example\","));
    }
    text.push_str("]\n[[l7_rules]]\nid = \"ok\"\naction = \"allow\"\ndomains = [\"*.example\"]\n");
    let p = Policy::parse(Path::new("/nonexistent/p.toml"), &text).unwrap();
    let m = Matcher::compile(&p).unwrap();
    assert_eq!(
        judge(&m, "198.18.1.1", "http://x.d99999.example/", "GET").1,
        "big"
    );
    assert_eq!(
        judge(&m, "198.18.1.1", "http://x.e99999.example/", "GET").1,
        "ok"
    );
}
