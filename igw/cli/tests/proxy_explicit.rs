//! Promise: through the explicit proxy, curl reaches allowed origins (HTTP absolute-form
//! and CONNECT to a rustls origin) and is refused for denied ones, with the rule id, and
//! a refused request never reaches the origin.

mod proxy_common;
use proxy_common::*;

#[test]
fn curl_http_and_connect_allowed_and_denied() {
    let plain = Origin::start();
    let tls = TlsOrigin::start(&["allowed.test", "denied.test"]);
    let dir = tempdir("proxy-explicit");
    let proxy = Proxy::start(&dir, &policy(&[plain.port, tls.port]), HOSTS, &[]);
    let px = format!("http://127.0.0.1:{}", proxy.port);

    // Allowed HTTP, twice on one connection (keep-alive through the proxy).
    let url = format!("http://allowed.test:{}/index.html", plain.port);
    let (code, out) = curl(&["-x", &px, &url, &url]);
    assert_eq!((code, out.as_str()), (0, "okok"), "{}", proxy.log());
    assert_eq!(plain.hits(), 2);

    // Denied: default rule, and the narrow deny above the allow (dot segments removed).
    let (_, out) = curl(&[
        "-x",
        &px,
        "-w",
        " %{http_code}",
        &format!("http://denied.test:{}/", plain.port),
    ]);
    assert_eq!(out, "denied by rule default\n 403");
    let (_, out) = curl(&[
        "-x",
        &px,
        "--path-as-is",
        "-w",
        " %{http_code}",
        &format!("http://allowed.test:{}/x/../admin/", plain.port),
    ]);
    assert_eq!(out, "denied by rule deny-admin\n 403");
    let (_, out) = curl(&[
        "-x",
        &px,
        "-w",
        " %{http_code}",
        &format!("http://allowed.test:{}/%61dmin/", plain.port),
    ]);
    assert_eq!(out, "denied by rule deny-admin\n 403");
    assert_eq!(plain.hits(), 2, "a denied request reached the origin");

    // HTTPS through CONNECT to the rustls origin, certificate checked by curl.
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let ca = ca.to_str().unwrap();
    let (code, out) = curl(&[
        "-x",
        &px,
        "--cacert",
        ca,
        &format!("https://allowed.test:{}/", tls.port),
    ]);
    assert_eq!((code, out.as_str()), (0, "ok"), "{}", proxy.log());
    assert_eq!(tls.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let (code, out) = curl(&[
        "-x",
        &px,
        "--cacert",
        ca,
        &format!("https://denied.test:{}/", tls.port),
    ]);
    assert_ne!(code, 0);
    assert!(out.contains("403"), "{out}");
    assert_eq!(tls.hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The access log has one JSON line per request with the deciding rule.
    let log = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["rule"] == "deny-admin" && v["status"] == 403 && v["tenant"] == "lo"),
        "{log}"
    );
    assert!(
        lines.iter().any(|v| v["mode"] == "connect"
            && v["decision"] == "allow"
            && v["bytes_out"].as_u64().unwrap_or(0) > 0),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
