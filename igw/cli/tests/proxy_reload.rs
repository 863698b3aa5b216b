//! Promise: `igw policy reload` and SIGHUP swap the policy atomically under load: no
//! request is lost, the listener stays open, an invalid policy is refused and the old
//! one keeps deciding.

mod proxy_common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proxy_common::*;

/// Keep-alive client: `n` requests on one connection (reconnecting if the proxy closes
/// it), counting 200s and anything else.
fn client(
    addr: std::net::SocketAddr,
    port: u16,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    bad: Arc<AtomicUsize>,
) {
    let req =
        format!("GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n");
    let t0 = Instant::now();
    let mut done = 0;
    'outer: while !stop.load(Ordering::SeqCst)
        && done < 5000
        && t0.elapsed() < Duration::from_secs(60)
    {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        while !stop.load(Ordering::SeqCst) && done < 5000 {
            if w.write_all(req.as_bytes()).is_err() {
                bad.fetch_add(1, Ordering::SeqCst);
                continue 'outer;
            }
            let mut status = String::new();
            if r.read_line(&mut status).unwrap_or(0) == 0 {
                bad.fetch_add(1, Ordering::SeqCst);
                continue 'outer;
            }
            let mut clen = 0;
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                if l == "\r\n" {
                    break;
                }
                if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                    clen = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; clen];
            r.read_exact(&mut body).unwrap();
            done += 1;
            if status.starts_with("HTTP/1.1 200") {
                ok.fetch_add(1, Ordering::SeqCst);
            } else {
                bad.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[test]
fn reload_under_load_loses_nothing_and_refuses_invalid() {
    let origin = Origin::start();
    let dir = tempdir("proxy-reload");
    let pol = policy(&[origin.port]);
    let proxy = Proxy::start(&dir, &pol, HOSTS, &[]);
    let run = dir.join("run");
    let run = run.to_str().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
            let (addr, port) = (proxy.addr(), origin.port);
            std::thread::spawn(move || client(addr, port, stop, ok, bad))
        })
        .collect();
    // Reloads while the clients run: valid ones (also by SIGHUP), and an invalid one.
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        if i == 5 {
            std::fs::write(
                &proxy.policy,
                "[[l7_rules]]\nid = \"x\"\naction = \"allow\"\n",
            )
            .unwrap();
            let out = proxy.igw(&["policy", "reload", "--run-dir", run]);
            assert!(!out.status.success(), "an invalid policy was accepted");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("refused"),
                "{out:?}"
            );
            std::fs::write(&proxy.policy, &pol).unwrap();
        } else if i % 2 == 0 {
            let out = proxy.igw(&["policy", "reload", "--run-dir", run]);
            assert!(out.status.success(), "{out:?}");
        } else {
            let r = std::process::Command::new("kill")
                .args(["-HUP", &proxy.child.id().to_string()])
                .status()
                .unwrap();
            assert!(r.success());
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "requests lost or refused during reloads: {}",
        proxy.log()
    );
    assert_eq!(origin.hits(), ok.load(Ordering::SeqCst));
    let st = igw_core::control::call(
        std::path::Path::new(run),
        igw_core::control::Daemon::Proxy,
        &igw_core::control::Request::new("status"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(st.ok);
    assert_eq!(st.data["reloads_ok"], 9, "{st:?}");
    assert_eq!(st.data["reloads_failed"], 1, "{st:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
