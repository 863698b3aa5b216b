//! Promise: the two arbiters of a pair steer both directions of traffic through one node,
//! with real FRR as the ToR and the upstream. The ToR's best path for 0.0.0.0/0 and the
//! upstream's best path for the NAT pool point at the active node; `igw failover` moves
//! both; killing the active's filter proxy demotes it; maintenance holds (the node stays
//! out, the peer's failover is refused) until it is turned off; `igw status` shows both
//! nodes' roles and the BGP view.
//!
//! Runs on the lab (`igw lab up` with a unique prefix): the real topology, real FRR in each
//! namespace, every igw daemon of both gateways.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use igw_testbed::{TempDir, require_root, wait_for};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_igw");

struct Lab {
    prefix: String,
    state: TempDir,
    /// Processes this test started besides the lab's (a restarted proxy), killed on drop.
    extra: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.extra {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(EXE)
            .args(["lab", "down", "--prefix", &self.prefix, "--state-dir"])
            .arg(self.state.path())
            .output();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Lab {
    fn up() -> Lab {
        require_root(&["ip", "vtysh", "nft", "curl", "python3", "openssl"]);
        let lab = Lab {
            prefix: format!("igwp{}", std::process::id() % 100_000),
            state: TempDir::new("arbpair"),
            extra: Vec::new(),
        };
        let out = Command::new(EXE)
            .args(["lab", "up", "--prefix", &lab.prefix, "--state-dir"])
            .arg(lab.state.path())
            .output()
            .expect("run igw lab up");
        assert!(out.status.success(), "igw lab up failed:\n{}", text(&out));
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn dir(&self) -> PathBuf {
        self.state.path().join(&self.prefix)
    }

    fn node(&self, gw: &str) -> PathBuf {
        self.dir().join(gw).join("node.toml")
    }

    /// `igw <args> --node <gw's node.toml>` inside the gateway's namespace.
    fn igw(&self, gw: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(gw), EXE])
            .args(args)
            .arg("--node")
            .arg(self.node(gw))
            .output()
            .expect("run igw")
    }

    fn status(&self, gw: &str) -> Value {
        let out = self.igw(gw, &["status", "--json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("igw status --json on {gw}: {e}\n{}", text(&out)))
    }

    fn role(&self, gw: &str) -> String {
        self.status(gw)["arbiter"]["role"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The best path's next hop for `prefix` on a lab router (tor, upstream).
    fn best(&self, router: &str, prefix: &str) -> Option<String> {
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
            .find(|p| p.pointer("/bestpath/overall").and_then(|b| b.as_bool()) == Some(true))?;
        best.pointer("/nexthops/0/ip")?.as_str().map(str::to_string)
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for gw in ["igw-a", "igw-b"] {
            let p = self.dir().join(format!("logs/{gw}-arbiter.log"));
            let log = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            s.push_str(&format!("=== {gw} arbiter log (tail)\n"));
            for l in tail.iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Waits (bounded) until `gw` is active and both routers' best paths go through it.
    fn wait_traffic_at(&self, gw: &str) {
        let (tor, up) = addrs(gw);
        let ok = wait_for(Duration::from_secs(30), || {
            (self.role(gw) == "active"
                && self.best("tor", "0.0.0.0/0").as_deref() == Some(tor)
                && self.best("upstream", "198.51.100.10/32").as_deref() == Some(up))
            .then_some(())
        });
        assert!(
            ok.is_some(),
            "{gw} should be active with the ToR's 0.0.0.0/0 via {tor} and the upstream's NAT \
             pool via {up}; roles: igw-a {}, igw-b {}; ToR best {:?}, upstream best {:?}\n{}",
            self.role("igw-a"),
            self.role("igw-b"),
            self.best("tor", "0.0.0.0/0"),
            self.best("upstream", "198.51.100.10/32"),
            self.logs()
        );
    }

    fn wait_role(&self, gw: &str, role: &str) {
        let ok = wait_for(Duration::from_secs(30), || {
            (self.role(gw) == role).then_some(())
        });
        assert!(
            ok.is_some(),
            "{gw} should be {role}: {}\n{}",
            self.status(gw),
            self.logs()
        );
    }

    /// The lab's PID of a gateway daemon (lab.json).
    fn pid(&self, name: &str) -> u32 {
        let j: Value =
            serde_json::from_slice(&std::fs::read(self.dir().join("lab.json")).unwrap()).unwrap();
        j["procs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["pid"].as_u64())
            .unwrap_or_else(|| panic!("no {name} in lab.json")) as u32
    }

    /// Starts the gateway's proxy again, as the lab does.
    fn restart_proxy(&mut self, gw: &str) {
        let dir = self.dir().join(gw);
        let hosts = Path::new("/etc/netns").join(self.ns(gw)).join("hosts");
        let log = std::fs::File::create(self.dir().join(format!("logs/{gw}-proxy-2.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(gw), EXE, "proxy", "--access-log"])
            .arg(dir.join("access.log"))
            .arg("--hosts")
            .arg(hosts)
            .arg("--node")
            .arg(dir.join("node.toml"))
            .arg("--policy")
            .arg(dir.join("policy.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start igw proxy");
        self.extra.push(child);
    }
}

/// A gateway's addresses toward the ToR and the upstream (examples/small, lab plan).
fn addrs(gw: &str) -> (&'static str, &'static str) {
    if gw == "igw-a" {
        ("198.19.1.1", "198.19.2.1")
    } else {
        ("198.19.1.3", "198.19.2.3")
    }
}

fn other(gw: &str) -> &'static str {
    if gw == "igw-a" { "igw-b" } else { "igw-a" }
}

fn kill(pid: u32) {
    let ok = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {pid}");
}

#[test]
fn arbiters_steer_the_pair() {
    let mut lab = Lab::up();

    // One active node; both routers send its direction of traffic to it.
    let roles = [lab.role("igw-a"), lab.role("igw-b")];
    let n_active = roles.iter().filter(|r| *r == "active").count();
    assert_eq!(n_active, 1, "roles after lab up: {roles:?}\n{}", lab.logs());
    let x = if roles[0] == "active" {
        "igw-a"
    } else {
        "igw-b"
    };
    let y = other(x);
    lab.wait_traffic_at(x);
    lab.wait_role(y, "standby");

    // igw status: this node's role, the peer's role, the BGP view.
    let out = lab.igw(x, &["status"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("ACTIVE"), "{t}");
    assert!(t.contains(&format!("peer {y}: standby")), "{t}");
    assert!(t.contains("Established"), "{t}");
    // A node that took over runs at 0 prepends until it sees its peer standby, then
    // settles at 1: wait for the steady state in FRR (bounded).
    let steady = wait_for(Duration::from_secs(30), || {
        let s = lab.status(x);
        (s["prepend_in_force"] == 1).then_some(s)
    });
    let s = steady.unwrap_or_else(|| panic!("{x} not at 1 prepend: {}", lab.status(x)));
    assert_eq!(s["arbiter"]["peer"]["role"], "standby", "{s}");
    assert_eq!(s["conntrack_sync"]["role"], "active", "{s}");
    assert!(
        s["bgp"]
            .as_array()
            .is_some_and(|b| !b.is_empty() && b.iter().all(|x| x["established"] == true)),
        "{s}"
    );
    assert_eq!(s["arbiter"]["peer"]["paths"]["sync"], true, "{s}");
    assert_eq!(s["arbiter"]["peer"]["paths"]["fabric"], true, "{s}");

    // Planned failover: both directions move to the peer.
    let out = lab.igw(x, &["failover"]);
    assert!(out.status.success(), "igw failover: {}", text(&out));
    lab.wait_traffic_at(y);
    lab.wait_role(x, "standby");
    // The node that is standby now cannot fail over.
    let out = lab.igw(x, &["failover"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not active"), "{}", text(&out));

    // Half-failure: the active's proxy dies, the node is alive. It demotes; the healthy
    // standby takes both directions.
    kill(lab.pid(&format!("{y}-proxy")));
    lab.wait_traffic_at(x);
    lab.wait_role(y, "fault");
    let s = lab.status(y);
    assert!(
        s["arbiter"]["last_change"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("proxy")),
        "{s}"
    );
    // A failover toward a node whose proxy is dead is refused, with the reason.
    let out = lab.igw(x, &["failover"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refused: the peer is not healthy"),
        "{}",
        text(&out)
    );

    // The proxy comes back: after the hold-down the node is a standby again (no
    // preemption: the traffic stays where it is).
    lab.restart_proxy(y);
    lab.wait_role(y, "standby");
    assert_eq!(lab.role(x), "active");

    // Maintenance on the active: it hands over, then stays out.
    let out = lab.igw(x, &["maintenance", "on"]);
    assert!(out.status.success(), "igw maintenance on: {}", text(&out));
    lab.wait_traffic_at(y);
    lab.wait_role(x, "maintenance");
    let out = lab.igw(y, &["failover"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refused"), "{}", text(&out));
    // It holds: still out of service, the traffic still at the peer.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.role(x), "maintenance");
    lab.wait_traffic_at(y);
    let s = lab.status(x);
    assert_eq!(s["prepend_in_force"], 3, "{s}");

    // Maintenance off: back as standby, no preemption.
    let out = lab.igw(x, &["maintenance", "off"]);
    assert!(out.status.success(), "igw maintenance off: {}", text(&out));
    lab.wait_role(x, "standby");
    lab.wait_traffic_at(y);
}

#[test]
fn status_says_when_the_arbiter_is_down() {
    require_root(&["ip"]);
    let dir = TempDir::new("arbdown");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/small/node-a.toml");
    let mut t = std::fs::read_to_string(src).unwrap();
    let psk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/small/psk");
    t = t.replace(
        "key_file = \"psk\"",
        &format!("key_file = \"{}\"", psk.display()),
    );
    t.push_str(&format!(
        "\n[control]\nrun_dir = \"{}\"\n\n[fabric]\nfrr_pathspace = \"igwnofrr{}\"\n",
        dir.path().display(),
        std::process::id()
    ));
    let node = dir.join("node.toml");
    std::fs::write(&node, t).unwrap();
    let out = Command::new(EXE)
        .args(["status", "--node"])
        .arg(&node)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("ARBITER NOT RUNNING"), "{t}");
    assert!(t.contains("the arbiter of igw-a is not running"), "{t}");
    let out = Command::new(EXE)
        .args(["failover", "--node"])
        .arg(&node)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is `igw arbiter` running?"),
        "{}",
        text(&out)
    );
}
