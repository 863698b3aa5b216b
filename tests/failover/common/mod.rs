//! What every failover promise needs: the whole lab (`igw lab up` with a unique prefix and
//! a temporary state directory, taken down on drop, panics included), the data-plane
//! measurement from tenant-a (`igw lab traffic`: 100 long-lived TCP flows and a UDP probe
//! every 10 ms, in the background while the test injects a failure), and the checks each
//! promise ends with: the flows still carry data both ways, filtering still holds on the
//! node that now carries the traffic, exactly one active node (`igw status --json` on both).
//! Figures are printed, never asserted against a time.

#![allow(
    dead_code,
    reason = "each promise's test uses a different part of this module"
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use igw_testbed::{TempDir, require_root, wait_for};
use serde_json::Value;

pub const EXE: &str = env!("CARGO_BIN_EXE_igw");
/// Long-lived TCP flows per run (the issue: at least 100).
pub const FLOWS: usize = 100;
pub const GATEWAYS: [&str; 2] = ["igw-a", "igw-b"];

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn other(gw: &str) -> &'static str {
    if gw == "igw-a" { "igw-b" } else { "igw-a" }
}

/// A running lab; `igw lab down` on drop.
pub struct Lab {
    pub prefix: String,
    state: TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Whatever a test froze or cut must not keep `down` from reaching its processes.
        for gw in GATEWAYS {
            let _ = self.lab(&["restore", gw]);
        }
        let _ = self.lab(&["down"]);
    }
}

impl Lab {
    /// `igw lab up` under a prefix unique to this test process (`tag`: 2-4 letters naming the
    /// promise, so parallel tests never share a namespace).
    pub fn up(tag: &str) -> Lab {
        require_root(&[
            "ip",
            "nft",
            "vtysh",
            "curl",
            "python3",
            "openssl",
            "conntrack",
        ]);
        let mut prefix = format!("igw{tag}{}", std::process::id() % 100_000);
        prefix.truncate(12);
        let lab = Lab {
            prefix,
            state: TempDir::new("failover"),
        };
        let out = lab.lab(&["up"]);
        assert!(out.status.success(), "igw lab up failed:\n{}", text(&out));
        lab
    }

    /// `igw lab <args> --prefix .. --state-dir ..`.
    pub fn lab(&self, args: &[&str]) -> Output {
        Command::new(EXE)
            .arg("lab")
            .args(args)
            .args(["--prefix", &self.prefix, "--state-dir"])
            .arg(self.state.path())
            .output()
            .expect("run igw lab")
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn dir(&self) -> PathBuf {
        self.state.path().join(&self.prefix)
    }

    pub fn node(&self, gw: &str) -> PathBuf {
        self.dir().join(gw).join("node.toml")
    }

    /// `<argv>` inside a lab host's namespace.
    pub fn exec(&self, host: &str, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(argv)
            .output()
            .expect("run ip netns exec")
    }

    /// `igw <args> --node <gw's node.toml>` inside the gateway's namespace.
    pub fn igw(&self, gw: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(gw), EXE])
            .args(args)
            .arg("--node")
            .arg(self.node(gw))
            .output()
            .expect("run igw")
    }

    pub fn status(&self, gw: &str) -> Option<Value> {
        serde_json::from_slice(&self.igw(gw, &["status", "--json"]).stdout).ok()
    }

    /// The arbiter's role on `gw` ("" when its status cannot be read, e.g. frozen).
    pub fn role(&self, gw: &str) -> String {
        self.status(gw)
            .and_then(|v| v["arbiter"]["role"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The gateway a lab router's best path for `prefix` goes through.
    pub fn best(&self, router: &str, prefix: &str) -> Option<&'static str> {
        let ns = self.ns(router);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "vtysh", "-N", &ns, "-c"])
            .arg(format!("show ip bgp {prefix} json"))
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let best = v["paths"]
            .as_array()?
            .iter()
            .find(|p| p.pointer("/bestpath/overall").and_then(Value::as_bool) == Some(true))?;
        match best.pointer("/nexthops/0/ip")?.as_str()? {
            "198.19.1.1" | "198.19.2.1" => Some("igw-a"),
            "198.19.1.3" | "198.19.2.3" => Some("igw-b"),
            _ => None,
        }
    }

    /// Where the traffic goes: the gateway both the ToR and the upstream route through.
    pub fn carrier(&self) -> Option<&'static str> {
        let t = self.best("tor", "0.0.0.0/0")?;
        (self.best("upstream", "198.51.100.10/32") == Some(t)).then_some(t)
    }

    /// Waits (bounded) for the pair's steady state and returns the active node: exactly one
    /// node says `active`, the other something else, and both routers send the traffic
    /// through the active one. Panics with both nodes' status and arbiter logs otherwise.
    pub fn one_active(&self) -> &'static str {
        let got = wait_for(Duration::from_secs(45), || {
            let roles: Vec<String> = GATEWAYS.iter().map(|g| self.role(g)).collect();
            let actives: Vec<&str> = GATEWAYS
                .iter()
                .zip(&roles)
                .filter(|(_, r)| r.as_str() == "active")
                .map(|(g, _)| *g)
                .collect();
            let settled = roles.iter().all(|r| !r.is_empty());
            match actives.as_slice() {
                [a] if settled && self.carrier() == Some(*a) => Some(*a),
                _ => None,
            }
        });
        got.unwrap_or_else(|| {
            panic!(
                "no single active node carrying the traffic: roles igw-a {:?}, igw-b {:?}; \
                 ToR via {:?}, upstream via {:?}\n{}",
                self.role("igw-a"),
                self.role("igw-b"),
                self.best("tor", "0.0.0.0/0"),
                self.best("upstream", "198.51.100.10/32"),
                self.logs()
            )
        })
    }

    /// curl from tenant-a (no proxy settings: transparent interception); (status, body).
    pub fn curl(&self, url: &str) -> (u16, String) {
        let out = self.exec(
            "tenant-a",
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "-w",
                "\n%{http_code}",
                url,
            ],
        );
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = t.rsplit_once('\n').unwrap_or(("", &t));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Filtering still holds, and on `gw`: an allowed URL answers 200, a denied one 403
    /// naming its rule, and `gw`'s proxy is the one that judged both (its access log).
    pub fn assert_filtering_on(&self, gw: &str) {
        let log = self.dir().join(gw).join("access.log");
        let before = std::fs::read_to_string(&log).unwrap_or_default().len();
        let tag = format!("failover-{}", std::process::id());
        let (code, body) = self.curl(&format!("http://www.example.com/{tag}"));
        assert_eq!(code, 200, "allowed URL through {gw}: {body}");
        assert!(body.starts_with("origin www.example.com"), "{body}");
        let (code, body) = self.curl(&format!("http://www.example.com/admin/{tag}"));
        assert_eq!(code, 403, "denied URL through {gw}: {body}");
        assert!(body.contains("deny-admin"), "403 names the rule: {body}");
        let ok = wait_for(Duration::from_secs(5), || {
            let now = std::fs::read_to_string(&log).unwrap_or_default();
            let new = now.get(before..).unwrap_or("");
            (new.contains(&format!("/{tag}")) && new.contains(&format!("/admin/{tag}")))
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "{gw}'s proxy did not log both requests ({})",
            log.display()
        );
    }

    /// Packets with a tenant source address arriving at the upstream from either gateway
    /// (NAT skipped) are counted from here on; read with [`Lab::unnatted`].
    pub fn watch_unnatted(&self) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns("upstream"), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(
                b"table inet failoverwatch {\n chain pre {\n  type filter hook prerouting \
                  priority -300; policy accept;\n  iifname { \"a0\", \"b0\" } ip saddr \
                  { 198.18.1.0/24, 198.18.2.0/24 } counter\n }\n}\n",
            )
            .expect("write");
        assert!(child.wait().expect("nft").success(), "watch table");
    }

    pub fn unnatted(&self) -> u64 {
        let out = self.exec(
            "upstream",
            &["nft", "list", "table", "inet", "failoverwatch"],
        );
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        t.split("packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Starts the measurement from tenant-a for `secs`; returns once the flows are
    /// established and the probe stream runs.
    pub fn traffic(&self, secs: u64) -> Traffic {
        let mut child = Command::new(EXE)
            .args(["lab", "traffic", "--from", "tenant-a", "--flows"])
            .arg(FLOWS.to_string())
            .args(["--interval-ms", "10", "--duration-s"])
            .arg(secs.to_string())
            .args(["--prefix", &self.prefix, "--state-dir"])
            .arg(self.state.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run igw lab traffic");
        let (tx, rx) = mpsc::channel();
        let stderr: ChildStderr = child.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("stream started") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let started = rx.recv_timeout(Duration::from_secs(30)).is_ok();
        if !started {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "igw lab traffic did not start:\n{}",
                reader.join().unwrap_or_default()
            );
        }
        Traffic {
            child: Some(child),
            reader: Some(reader),
            started: Instant::now(),
        }
    }

    /// The tail of both arbiters' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for gw in GATEWAYS {
            let p = self.dir().join(format!("logs/{gw}-arbiter.log"));
            let log = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            s.push_str(&format!("=== {gw} arbiter log (tail)\n"));
            for l in tail.iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// The PID the lab recorded for a process (`igw-a-proxy`, ...).
    pub fn pid(&self, name: &str) -> u32 {
        let v: Value =
            serde_json::from_slice(&std::fs::read(self.dir().join("lab.json")).expect("lab.json"))
                .expect("lab.json parses");
        v["procs"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .and_then(|p| p["pid"].as_u64())
            .unwrap_or_else(|| panic!("no process {name} in lab.json")) as u32
    }
}

/// The measurement running in the background.
pub struct Traffic {
    child: Option<Child>,
    reader: Option<std::thread::JoinHandle<String>>,
    pub started: Instant,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Traffic {
    /// Waits for the run's end and returns its report (`igw lab traffic`'s JSON).
    pub fn finish(mut self) -> Value {
        let child = self.child.take().expect("running");
        let out = child.wait_with_output().expect("wait igw lab traffic");
        let err = self.reader.take().map(|r| r.join().unwrap_or_default());
        assert!(
            out.status.success(),
            "igw lab traffic failed: {}",
            err.unwrap_or_default()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "igw lab traffic report: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// Prints the run's figures (the outage the probe stream saw, the flows) under `what`.
pub fn print_figures(what: &str, r: &Value) {
    println!(
        "{what}: probes sent {} lost {} outage {} ms; flows {} alive at the end {}, longest \
         stall {} ms, errors {}",
        r["stream"]["sent"],
        r["stream"]["lost"],
        r["stream"]["max_gap_ms"],
        r["flows"]["opened"],
        r["flows"]["alive_at_end"],
        r["flows"]["max_stall_ms"],
        r["flows"]["failed"]
    );
}

/// Every established flow survived: none failed, each still echoed both ways at the end.
pub fn assert_flows_survived(r: &Value) {
    assert_eq!(
        r["flows"]["opened"].as_u64(),
        Some(FLOWS as u64),
        "flows opened: {r}"
    );
    assert_eq!(
        r["flows"]["failed"].as_array().map(Vec::len),
        Some(0),
        "flows failed: {r}"
    );
    assert_eq!(
        r["flows"]["alive_at_end"].as_u64(),
        Some(FLOWS as u64),
        "every flow still carries data both ways at the end: {r}"
    );
    assert!(
        r["stream"]["answered"].as_u64().unwrap_or(0) > 0,
        "the probe stream got answers: {r}"
    );
}
