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

/// A parked connection still ends at the idle timeout: the proxy closes a keep-alive
/// client that sends nothing for `--idle-timeout` seconds (parked after 500 ms, then
/// closed by the I/O wrapper's own deadline, not kept for ever).
#[test]
fn parked_connection_closes_at_idle_timeout() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let plain = Origin::start();
    let dir = tempdir("proxy-park-idle");
    let proxy = Proxy::start(
        &dir,
        &policy(&[plain.port]),
        HOSTS,
        &["--idle-timeout", "2"],
    );
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let get = format!(
        "GET http://allowed.test:{0}/ HTTP/1.1\r\nHost: allowed.test:{0}\r\n\r\n",
        plain.port
    );
    s.write_all(get.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\nok") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    // The next read sees the proxy's close (EOF or reset), not the 10 s read timeout.
    let end = s.read(&mut buf);
    let waited = answered.elapsed();
    assert!(
        matches!(end, Ok(0))
            || matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected the proxy to close the idle connection, got {end:?} after {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(9),
        "closed after {waited:?}, idle timeout is 2 s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An idle keep-alive client is parked (hyper's state freed, the socket kept) and served
/// again on the same connection when it sends: a plain request, a pipelined pair, and a
/// CONNECT after the pause all work, without the proxy closing the connection.
#[test]
fn parked_keep_alive_connection_serves_again() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let plain = Origin::start();
    let tls = TlsOrigin::start(&["allowed.test"]);
    let dir = tempdir("proxy-park");
    let proxy = Proxy::start(&dir, &policy(&[plain.port, tls.port]), HOSTS, &[]);
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let get = format!(
        "GET http://allowed.test:{0}/ HTTP/1.1\r\nHost: allowed.test:{0}\r\n\r\n",
        plain.port
    );
    // Reads until `n` answers of body "ok" arrived (bounded by the read timeout).
    let read_answers = |s: &mut std::net::TcpStream, n: usize| -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&out).matches("\r\n\r\nok").count() < n {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => out.extend_from_slice(&buf[..k]),
            }
        }
        String::from_utf8_lossy(&out).to_string()
    };
    s.write_all(get.as_bytes()).unwrap();
    let a = read_answers(&mut s, 1);
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    // Longer than the parking delay (500 ms), twice: each time a new hyper connection
    // takes the same socket.
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        s.write_all(format!("{get}{get}").as_bytes()).unwrap();
        let a = read_answers(&mut s, 2);
        assert_eq!(a.matches("HTTP/1.1 200").count(), 2, "round {round}: {a}");
        assert!(!a.to_ascii_lowercase().contains("connection: close"), "{a}");
    }
    assert_eq!(plain.hits(), 5);
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(
        format!(
            "CONNECT allowed.test:{0} HTTP/1.1\r\nHost: allowed.test:{0}\r\n\r\n",
            tls.port
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client connection's keep-alive requests share one upstream connection, and an
/// origin that closes its side after each answer (as origins close idle keep-alive
/// connections, without a `Connection: close`) costs no request: each one that finds the
/// upstream connection closed goes out on a new one.
#[test]
fn upstream_connection_reused_and_origin_close_survived() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let plain = Origin::start();
    let closing = Origin::start_closing();
    let dir = tempdir("proxy-upstream");
    let proxy = Proxy::start(&dir, &policy(&[plain.port, closing.port]), HOSTS, &[]);
    for (origin, conns) in [(&plain, 1), (&closing, 20)] {
        let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let get = format!(
            "GET http://allowed.test:{0}/ HTTP/1.1\r\nHost: allowed.test:{0}\r\n\r\n",
            origin.port
        );
        for i in 0..20 {
            s.write_all(get.as_bytes()).unwrap();
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&out).contains("\r\n\r\n")
                || !out.ends_with(b"ok") && !out.ends_with(b"\n")
            {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => out.extend_from_slice(&buf[..k]),
                }
            }
            let a = String::from_utf8_lossy(&out);
            assert!(
                a.starts_with("HTTP/1.1 200") && a.ends_with("\r\n\r\nok"),
                "request {i} to the origin on port {}: {a}\n{}",
                origin.port,
                proxy.log()
            );
        }
        assert_eq!(origin.hits(), 20);
        assert_eq!(
            origin.conns(),
            conns,
            "upstream connections for 20 requests on one client connection"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
