//! The fabric of TESTBED.md in namespaces for the fabric and arbiter tests: a ToR and an
//! upstream on real FRR, each peering with igw-a and igw-b, whose FRR configs come from
//! `igw fabric render`; a sync link between the two nodes. Everything is torn down by the
//! harness guards (namespaces, FRR daemons by PID), also on panic.
#![allow(
    dead_code,
    reason = "each test file uses a different part of the topology"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use igw_fabric::render::{RouterSpec, router_frr};
use igw_testbed::frr::Frr;
use igw_testbed::{Netns, TempDir, veth, wait_for};

pub struct Gateway {
    pub ns: Netns,
    pub frr: Frr,
    pub node_toml: PathBuf,
    pub run_dir: PathBuf,
    pub name: &'static str,
}

pub struct Pair {
    pub dir: TempDir,
    pub tor_ns: Netns,
    pub up_ns: Netns,
    pub tor: Frr,
    pub up: Frr,
    pub a: Gateway,
    pub b: Gateway,
    pub policy: PathBuf,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn igw(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_igw"))
        .args(args)
        .output()
        .expect("run igw")
}

/// node.toml of the example node, pointed at this test's FRR pathspace and run directory.
fn node_toml(dir: &TempDir, example: &str, ns: &Netns, run_dir: &Path) -> PathBuf {
    let src = repo().join("examples/small").join(example);
    let mut text = std::fs::read_to_string(&src).expect("example node.toml");
    let psk = repo().join("examples/small/psk");
    text = text.replace(
        "key_file = \"psk\"",
        &format!("key_file = \"{}\"", psk.display()),
    );
    text.push_str(&format!(
        "\n[control]\nrun_dir = \"{}\"\n\n[fabric]\nfrr_pathspace = \"{}\"\n",
        run_dir.display(),
        ns.name()
    ));
    let out = dir.join(example);
    std::fs::write(&out, text).expect("write node.toml");
    out
}

fn spec(
    host: &str,
    asn: u32,
    rid: &str,
    n: [&str; 2],
    originate: &[&str],
    dflt: bool,
) -> RouterSpec {
    RouterSpec {
        hostname: host.into(),
        asn,
        router_id: rid.parse().unwrap(),
        neighbors: n.iter().map(|a| (a.parse().unwrap(), 65010)).collect(),
        originate: originate.iter().map(|p| p.parse().unwrap()).collect(),
        default_originate: dflt,
        bfd_interval_ms: 100,
        bfd_multiplier: 3,
    }
}

impl Pair {
    pub fn start() -> Pair {
        igw_testbed::require_root(&["ip", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/bfdd"]);
        let dir = TempDir::new("fab");
        let tor_ns = Netns::new("tor");
        let up_ns = Netns::new("up");
        let a_ns = Netns::new("gwa");
        let b_ns = Netns::new("gwb");
        veth(
            &tor_ns,
            "a0",
            "198.19.1.0/31",
            &a_ns,
            "tor0",
            "198.19.1.1/31",
        );
        veth(
            &tor_ns,
            "b0",
            "198.19.1.2/31",
            &b_ns,
            "tor0",
            "198.19.1.3/31",
        );
        veth(&up_ns, "a0", "198.19.2.0/31", &a_ns, "up0", "198.19.2.1/31");
        veth(&up_ns, "b0", "198.19.2.2/31", &b_ns, "up0", "198.19.2.3/31");
        veth(
            &a_ns,
            "sync0",
            "198.19.255.1/30",
            &b_ns,
            "sync0",
            "198.19.255.2/30",
        );
        // Second heartbeat path: through the ToR (inside the test's namespaces only).
        tor_ns.sysctl("net.ipv4.ip_forward=1");
        a_ns.ip(&["route", "add", "198.19.1.2/31", "via", "198.19.1.0"]);
        b_ns.ip(&["route", "add", "198.19.1.0/31", "via", "198.19.1.2"]);
        let policy = repo().join("examples/small/policy.toml");
        let mut gws = Vec::new();
        for (ns, ex, name) in [
            (a_ns, "node-a.toml", "igw-a"),
            (b_ns, "node-b.toml", "igw-b"),
        ] {
            let run_dir = dir.join(&format!("run-{name}"));
            std::fs::create_dir_all(&run_dir).unwrap();
            let node = node_toml(&dir, ex, &ns, &run_dir);
            let out = igw(&[
                "fabric",
                "render",
                "--node",
                node.to_str().unwrap(),
                "--policy",
                policy.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "igw fabric render: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let conf = String::from_utf8(out.stdout).unwrap();
            let frr = Frr::start(&ns, &conf, &["bfdd", "bgpd"]);
            gws.push(Gateway {
                ns,
                frr,
                node_toml: node,
                run_dir,
                name,
            });
        }
        let b = gws.pop().unwrap();
        let a = gws.pop().unwrap();
        let tor_conf = router_frr(&spec(
            "tor",
            65000,
            "198.19.0.254",
            ["198.19.1.1", "198.19.1.3"],
            &["198.18.1.0/24", "198.18.2.0/24", "198.19.200.0/24"],
            false,
        ));
        let up_conf = router_frr(&spec(
            "upstream",
            65020,
            "198.19.0.253",
            ["198.19.2.1", "198.19.2.3"],
            &["203.0.113.0/24", "192.0.2.0/24"],
            true,
        ));
        let tor = Frr::start(&tor_ns, &tor_conf, &["bfdd", "bgpd"]);
        let up = Frr::start(&up_ns, &up_conf, &["bfdd", "bgpd"]);
        Pair {
            dir,
            tor_ns,
            up_ns,
            tor,
            up,
            a,
            b,
            policy,
        }
    }

    pub fn logs(&self) -> String {
        format!(
            "=== tor\n{}\n=== upstream\n{}\n=== igw-a\n{}\n=== igw-b\n{}",
            self.tor.logs(),
            self.up.logs(),
            self.a.frr.logs(),
            self.b.frr.logs()
        )
    }

    /// Waits (bounded) until every BGP session of both routers is established.
    pub fn wait_established(&self) {
        for (r, n) in [(&self.tor, "tor"), (&self.up, "upstream")] {
            let ok = wait_for(Duration::from_secs(60), || {
                let s = igw_fabric::driver::parse_bgp_summary(&r.vtysh(&["show bgp summary json"]))
                    .ok()?;
                (s.len() >= 2 && s.iter().all(|x| x.established)).then_some(())
            });
            assert!(
                ok.is_some(),
                "{n}: BGP sessions not established\n{}",
                self.logs()
            );
        }
    }
}

/// The best path of `prefix` on a router: (next hop, AS path), if any.
pub fn best_path(r: &Frr, prefix: &str) -> Option<(String, String)> {
    let out = r.vtysh(&[&format!("show ip bgp {prefix} json")]);
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    let paths = v.get("paths")?.as_array()?;
    let best = paths
        .iter()
        .find(|p| p.pointer("/bestpath/overall").and_then(|b| b.as_bool()) == Some(true))?;
    let nh = best.pointer("/nexthops/0/ip")?.as_str()?.to_string();
    let asp = best
        .pointer("/aspath/string")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_string();
    Some((nh, asp))
}

/// Waits (bounded) until `prefix`'s best path on `r` goes via `nh`; returns the AS path.
pub fn wait_best(pair: &Pair, r: &Frr, prefix: &str, nh: &str, limit: Duration) -> String {
    match wait_for(limit, || best_path(r, prefix).filter(|(h, _)| h == nh)) {
        Some((_, asp)) => asp,
        None => panic!(
            "best path of {prefix} on {} is {:?}, expected via {nh}\n{}",
            r.name(),
            best_path(r, prefix),
            pair.logs()
        ),
    }
}

/// Waits (bounded) until `prefix`'s best path on `r` goes via `nh` with AS path `aspath`.
/// A prepend change is re-advertised after the driver returns: waiting for the next hop
/// alone can see the old advertisement (the same next hop, the old AS path).
pub fn wait_best_as(pair: &Pair, r: &Frr, prefix: &str, nh: &str, aspath: &str, limit: Duration) {
    let want = (nh.to_string(), aspath.to_string());
    if wait_for(limit, || best_path(r, prefix).filter(|b| *b == want)).is_none() {
        panic!(
            "best path of {prefix} on {} is {:?}, expected via {nh} with AS path `{aspath}`\n{}",
            r.name(),
            best_path(r, prefix),
            pair.logs()
        );
    }
}
