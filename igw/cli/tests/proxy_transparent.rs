//! Promise: a tenant that knows nothing of a proxy has its tcp/80 and tcp/443 diverted on
//! the gateway to `igw proxy`, which lets allowed names through to the original
//! destination (HTTP by Host, HTTPS by SNI, bytes relayed untouched) and refuses the rest
//! (403 with the rule id, TLS closed), including an allowed name aimed at another address
//! (resolve check).
//!
//! Diversion is the real one: `igw ruleset apply` of the node file of examples/small
//! (interfaces tor0/up0, proxy ports 3129/3130) and the test policy, in the gateway
//! namespace; the proxy starts from the same node file. Nothing else is forwarded: the
//! policy has no L3 rule, so the tenant reaches the origins only through the proxy, whose
//! own connections leave SNATed to the pool.

use std::path::Path;
use std::time::Duration;

use igw_testbed::{Netns, require_root, veth, wait_for};

const POLICY: &str = r#"
[defaults]
l7 = "deny"
resolve_check = true

[[tenants]]
name = "tenant-a"
subnets = ["198.18.1.0/24"]
divert_http = true
divert_https = true

[[l7_rules]]
id = "deny-admin"
action = "deny"
domains = ["allowed.test"]
path_prefixes = ["/admin/"]

[[l7_rules]]
id = "allow-test"
action = "allow"
domains = ["allowed.test"]
"#;

fn curl(ns: &Netns, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["curl", "-sS", "--max-time", "10", "-w", " %{http_code}"];
    argv.extend_from_slice(args);
    let out = ns.try_exec(&argv);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn tenant_reaches_allowed_and_is_refused_denied_without_proxy_settings() {
    require_root(&["ip", "nft", "curl", "python3", "openssl"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tenant = Netns::new("pxt");
    let gw = Netns::new("pxg");
    let inet = Netns::new("pxi");
    // Interface names as in examples/small/node-a.toml: tor0 (tenants), up0 (upstream).
    veth(
        &tenant,
        "t0",
        "198.18.1.10/24",
        &gw,
        "tor0",
        "198.18.1.1/24",
    );
    veth(
        &gw,
        "up0",
        "203.0.113.1/24",
        &inet,
        "i0",
        "203.0.113.10/24,203.0.113.11/24",
    );
    tenant.ip(&["route", "add", "default", "via", "198.18.1.1"]);
    // The "Internet" routes the NAT pool back to the gateway (inside our namespace).
    inet.ip(&["route", "add", "198.51.100.0/24", "via", "203.0.113.1"]);
    gw.sysctl("net.ipv4.ip_forward=1");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/small");
    for f in ["node-a.toml", "psk"] {
        std::fs::copy(examples.join(f), d.join(f)).unwrap();
    }
    let node = d.join("node-a.toml");
    let node = node.to_str().unwrap();
    std::fs::write(d.join("policy.toml"), POLICY).unwrap();
    let policy = d.join("policy.toml");
    let policy = policy.to_str().unwrap();
    let igw = env!("CARGO_BIN_EXE_igw");
    let applied = gw.try_exec(&[igw, "--node", node, "--policy", policy, "ruleset", "apply"]);
    assert!(
        applied.status.success(),
        "igw ruleset apply: {}{}",
        String::from_utf8_lossy(&applied.stdout),
        String::from_utf8_lossy(&applied.stderr)
    );

    // Origins: HTTP on .10 (allowed.test) and .11 (denied.test), TLS on .10 and .11.
    let ck = rcgen::generate_simple_self_signed(vec!["allowed.test".into(), "denied.test".into()])
        .unwrap();
    std::fs::write(d.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(d.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    std::fs::create_dir_all(d.join("www")).unwrap();
    std::fs::write(d.join("www/index.html"), "hello from origin\n").unwrap();
    let www = d.join("www");
    let www = www.to_str().unwrap();
    let mut procs = Vec::new();
    for ip in ["203.0.113.10", "203.0.113.11"] {
        procs.push(inet.spawn(
            &[
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                ip,
                "--directory",
                www,
            ],
            Some(&d.join(format!("http-{ip}.log"))),
        ));
        procs.push(inet.spawn(
            &[
                "openssl",
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                &format!("{ip}:443"),
                "-cert",
                d.join("cert.pem").to_str().unwrap(),
                "-key",
                d.join("key.pem").to_str().unwrap(),
            ],
            Some(&d.join(format!("tls-{ip}.log"))),
        ));
    }
    std::fs::write(
        d.join("hosts"),
        "203.0.113.10 allowed.test\n203.0.113.11 denied.test\n",
    )
    .unwrap();
    let proxy_log = d.join("proxy.log");
    // Listeners from the node file ([proxy] http_port/https_port, dual-stack [::]).
    let _proxy = gw.spawn(
        &[
            igw,
            "--node",
            node,
            "--policy",
            policy,
            "proxy",
            "--explicit",
            "off",
            "--metrics",
            "off",
            "--run-dir",
            d.join("run").to_str().unwrap(),
            "--hosts",
            d.join("hosts").to_str().unwrap(),
            "--access-log",
            d.join("access.log").to_str().unwrap(),
        ],
        Some(&proxy_log),
    );
    let log = || std::fs::read_to_string(&proxy_log).unwrap_or_default();
    wait_for(Duration::from_secs(20), || {
        let o = gw.try_exec(&["sh", "-c", "ss -ltn | grep -q ':3130 '"]);
        o.status.success().then_some(())
    })
    .unwrap_or_else(|| panic!("proxy did not listen: {}", log()));
    wait_for(Duration::from_secs(20), || {
        let o = inet.try_exec(&["sh", "-c", "ss -ltn | grep -c ':443 \\|:80 ' | grep -q 4"]);
        o.status.success().then_some(())
    })
    .expect("origins did not start");

    // HTTP: allowed, refused by the narrow deny, refused by default, resolve check.
    let (code, out) = curl(
        &tenant,
        &[
            "--resolve",
            "allowed.test:80:203.0.113.10",
            "http://allowed.test/index.html",
        ],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "hello from origin\n 200"),
        "{}",
        log()
    );
    let (_, out) = curl(
        &tenant,
        &[
            "--path-as-is",
            "--resolve",
            "allowed.test:80:203.0.113.10",
            "http://allowed.test/x/../admin/",
        ],
    );
    assert_eq!(out, "denied by rule deny-admin\n 403");
    let (_, out) = curl(
        &tenant,
        &[
            "--resolve",
            "denied.test:80:203.0.113.11",
            "http://denied.test/",
        ],
    );
    assert_eq!(out, "denied by rule default\n 403");
    let (_, out) = curl(
        &tenant,
        &[
            "--resolve",
            "allowed.test:80:203.0.113.11",
            "http://allowed.test/",
        ],
    );
    assert_eq!(
        out, "denied by rule resolve-check\n 403",
        "an allowed name aimed at another address"
    );
    let denied_hits = std::fs::read_to_string(d.join("http-203.0.113.11.log")).unwrap_or_default();
    assert!(
        !denied_hits.contains("GET"),
        "the denied origin was reached: {denied_hits}"
    );

    // HTTPS by SNI: allowed passes untouched (curl verifies the origin's certificate).
    let ca = d.join("cert.pem");
    let ca = ca.to_str().unwrap();
    let (code, out) = curl(
        &tenant,
        &[
            "--cacert",
            ca,
            "--resolve",
            "allowed.test:443:203.0.113.10",
            "https://allowed.test/",
        ],
    );
    assert!(
        code == 0 && out.ends_with(" 200"),
        "allowed TLS: {code} {out}\n{}",
        log()
    );
    let (code, _) = curl(
        &tenant,
        &[
            "--cacert",
            ca,
            "--resolve",
            "denied.test:443:203.0.113.11",
            "https://denied.test/",
        ],
    );
    assert_ne!(code, 0, "denied TLS must be closed");
    let (code, _) = curl(
        &tenant,
        &[
            "--cacert",
            ca,
            "--resolve",
            "allowed.test:443:203.0.113.11",
            "https://allowed.test/",
        ],
    );
    assert_ne!(code, 0, "allowed SNI toward another address must be closed");

    // The diversion rules of the igw ruleset carried it, and the origins saw the pool
    // address, never the tenant's.
    let table: serde_json::Value =
        serde_json::from_str(&gw.stdout(&["nft", "-j", "list", "table", "inet", "igw"]))
            .expect("nft json");
    let diverted = |comment: &str| -> u64 {
        table["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|o| o.get("rule"))
            .filter(|r| r["comment"] == comment)
            .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.get("counter").and_then(|c| c["packets"].as_u64()))
            .sum()
    };
    assert!(diverted("divert http of tenant tenant-a") > 0, "{table}");
    assert!(diverted("divert https of tenant tenant-a") > 0, "{table}");
    let seen = std::fs::read_to_string(d.join("http-203.0.113.10.log")).unwrap_or_default();
    assert!(
        seen.contains("198.51.100.10") && !seen.contains("198.18.1.10"),
        "the origin must see the pool address: {seen}"
    );

    let access = std::fs::read_to_string(d.join("access.log")).unwrap_or_default();
    assert!(
        access.contains("\"mode\":\"transparent-tls\"")
            && access.contains("\"sni\":\"allowed.test\""),
        "{access}"
    );
    drop(procs);
}
