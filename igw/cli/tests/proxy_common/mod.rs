//! Shared pieces of the proxy tests: counting origins (plain and rustls), a running
//! `igw proxy` on loopback, and a raw client. Everything listens on 127.0.0.1 only.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// An HTTP/1.1 origin that answers `ok` to every request (keep-alive) and counts them.
pub struct Origin {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
}

impl Origin {
    pub fn start() -> Origin {
        Origin::start_with(usize::MAX)
    }

    /// An origin that closes each connection after one answer, without saying so
    /// (no `Connection: close`), as an origin closing an idle keep-alive connection does.
    pub fn start_closing() -> Origin {
        Origin::start_with(1)
    }

    fn start_with(per_conn: usize) -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(AtomicUsize::new(0));
        let (h, c) = (hits.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    serve(s, &h, per_conn)
                });
            }
        });
        Origin { port, hits, conns }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

/// Answers `ok` to up to `per_conn` requests, then closes.
fn serve<S: Read + Write>(s: S, hits: &AtomicUsize, per_conn: usize) {
    let mut answered = 0;
    let mut r = BufReader::new(s);
    loop {
        let mut clen = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first {
                first = false;
                continue;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                clen = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; clen];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let s = r.get_mut();
        if s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok",
        )
        .is_err()
        {
            return;
        }
        let _ = s.flush();
        answered += 1;
        if answered >= per_conn {
            return;
        }
    }
}

/// The same origin behind rustls, with a fresh rcgen certificate for the given names.
pub struct TlsOrigin {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
    pub ca_pem: String,
}

impl TlsOrigin {
    pub fn start(names: &[&str]) -> TlsOrigin {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert_der = ck.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![cert_der], key)
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let h = h.clone();
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    serve(rustls::StreamOwned::new(conn, s), &h, usize::MAX);
                });
            }
        });
        TlsOrigin {
            port,
            hits,
            ca_pem: ck.cert.pem(),
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `igw proxy` on loopback (explicit listener only), killed on drop.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub policy: PathBuf,
}

impl Proxy {
    pub fn start(dir: &Path, policy: &str, hosts: &str, extra: &[&str]) -> Proxy {
        std::fs::create_dir_all(dir).unwrap();
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, policy).unwrap();
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("proxy.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_igw"))
            .arg("--node")
            .arg(dir.join("no-node.toml"))
            .arg("--policy")
            .arg(&policy_path)
            .arg("proxy")
            .args(["--explicit", &format!("127.0.0.1:{port}")])
            .args(["--http", "off", "--https", "off", "--metrics", "off"])
            .arg("--run-dir")
            .arg(dir.join("run"))
            .arg("--hosts")
            .arg(dir.join("hosts"))
            .arg("--access-log")
            .arg(dir.join("access.log"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn igw proxy");
        let p = Proxy {
            child,
            port,
            dir: dir.to_path_buf(),
            policy: policy_path,
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "proxy did not start: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    pub fn igw(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_igw"))
            .arg("--policy")
            .arg(&self.policy)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes, then reads until the proxy closes or 5 s pass; returns what came back
/// (empty: closed without an answer).
pub fn raw(addr: SocketAddr, bytes: &[u8], close_write: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One answer is enough: stop at the end of a short body.
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.len() > 12 {
                    let text = String::from_utf8_lossy(&out);
                    if let Some(cl) = text.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    }) {
                        let head = text.find("\r\n\r\n").unwrap() + 4;
                        if out.len() >= head + cl {
                            break;
                        }
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Sends raw bytes and reads until the proxy closes (at most 5 s): every answer.
pub fn raw_until_close(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

pub fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

pub fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--noproxy", ""])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The test policy: tenant = loopback; `allowed.test` on the allowed origin's port(s);
/// a narrow deny above it.
pub fn policy(allowed_ports: &[u16]) -> String {
    let ports: Vec<String> = allowed_ports.iter().map(|p| p.to_string()).collect();
    format!(
        r#"
[[tenants]]
name = "lo"
subnets = ["127.0.0.0/8"]

[[l7_rules]]
id = "deny-admin"
action = "deny"
domains = ["allowed.test"]
path_prefixes = ["/admin/"]

[[l7_rules]]
id = "allow-test"
action = "allow"
domains = ["allowed.test"]
ports = [{}]
cidrs = ["127.0.0.0/8"]
"#,
        ports.join(", ")
    )
}

pub const HOSTS: &str = "127.0.0.1 allowed.test denied.test\n";

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("igw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
