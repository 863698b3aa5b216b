//! Golden FRR configs for the shipped examples. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p igw-fabric --test golden` and review the diff.

use std::path::{Path, PathBuf};

use igw_core::{NodeConfig, Policy};
use igw_fabric::render::{RouterSpec, node_frr, router_frr};
use ipnet::IpNet;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test -p igw-fabric --test golden",
            path.display()
        )
    });
    assert_eq!(
        text, want,
        "{name} differs from the golden file; regenerate with UPDATE_GOLDEN=1 if intended"
    );
}

fn example(node: &str) -> (NodeConfig, Vec<IpNet>) {
    let dir = root().join("examples/small");
    let n = NodeConfig::load(&dir.join(node)).unwrap();
    let p = Policy::load(&dir.join("policy.toml")).unwrap();
    let t = p.tenant_subnets().copied().collect();
    (n, t)
}

/// The lab's ToR and upstream (TESTBED.md address plan).
pub fn lab_tor() -> RouterSpec {
    RouterSpec {
        hostname: "tor".into(),
        asn: 65000,
        router_id: "198.19.0.254".parse().unwrap(),
        neighbors: vec![
            ("198.19.1.1".parse().unwrap(), 65010),
            ("198.19.1.3".parse().unwrap(), 65010),
        ],
        originate: vec![
            "198.18.1.0/24".parse().unwrap(),
            "198.18.2.0/24".parse().unwrap(),
        ],
        default_originate: false,
        bfd_interval_ms: 100,
        bfd_multiplier: 3,
    }
}

pub fn lab_upstream() -> RouterSpec {
    RouterSpec {
        hostname: "upstream".into(),
        asn: 65020,
        router_id: "198.19.0.253".parse().unwrap(),
        neighbors: vec![
            ("198.19.2.1".parse().unwrap(), 65010),
            ("198.19.2.3".parse().unwrap(), 65010),
        ],
        originate: vec![
            "203.0.113.0/24".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ],
        default_originate: true,
        bfd_interval_ms: 100,
        bfd_multiplier: 3,
    }
}

#[test]
fn golden_node_configs() {
    for (file, golden) in [
        ("node-a.toml", "small-igw-a.frr.conf"),
        ("node-b.toml", "small-igw-b.frr.conf"),
    ] {
        let (n, t) = example(file);
        check(golden, &node_frr(&n, &t, n.bgp.prepend_standby));
    }
}

#[test]
fn golden_far_side_configs() {
    check("lab-tor.frr.conf", &router_frr(&lab_tor()));
    check("lab-upstream.frr.conf", &router_frr(&lab_upstream()));
}

#[test]
fn unnumbered_and_ipv6_sessions() {
    let (mut n, t) = example("node-a.toml");
    n.bgp.tor.push(igw_core::node::BgpPeer {
        name: "tor2".into(),
        address: None,
        interface: Some("tor1".into()),
        asn: 65001,
    });
    check("small-igw-a-unnumbered.frr.conf", &node_frr(&n, &t, 0));
}

/// FRR itself parses every golden file (`vtysh --dryrun`), so a typo in the renderer cannot
/// hide behind a matching golden.
#[test]
fn frr_accepts_golden_files() {
    assert!(
        igw_testbed_like_which("vtysh"),
        "vtysh (package frr) is needed to check the rendered configs"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("conf") {
            continue;
        }
        let out = std::process::Command::new("vtysh")
            .args(["--dryrun", "-f"])
            .arg(&p)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !text.contains("% "),
            "{}: FRR rejects it:\n{text}",
            p.display()
        );
    }
}

fn igw_testbed_like_which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
}
