//! Loads every example the project ships, and proves that bad input is refused with a
//! `file:line:col: field: message` diagnostic.

use std::path::{Path, PathBuf};

use igw_core::{NodeConfig, Policy};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn files(pattern: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(examples()).unwrap() {
        let dir = dir.unwrap().path();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with(pattern) && name.ends_with(".toml") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_example_node_loads() {
    let nodes = files("node");
    assert!(nodes.len() >= 2, "examples have node files: {nodes:?}");
    for f in nodes {
        NodeConfig::load(&f).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn every_example_policy_loads() {
    let policies = files("policy");
    assert!(policies.len() >= 2, "examples have policies: {policies:?}");
    for f in &policies {
        Policy::load(f).unwrap_or_else(|e| panic!("{e}"));
    }
    let realistic = Policy::load(&examples().join("realistic/policy.toml")).unwrap();
    let blocklist = realistic
        .l7_rules
        .iter()
        .find(|r| r.id == "blocklist")
        .unwrap();
    assert_eq!(blocklist.domains.len(), 10_000);
    assert_eq!(realistic.objects["office"].nets.len(), 3);
}

#[test]
fn node_relative_key_file_resolves_next_to_node_file() {
    let n = NodeConfig::load(&examples().join("small/node-a.toml")).unwrap();
    assert!(
        n.sync.key_file.ends_with("small/psk"),
        "{:?}",
        n.sync.key_file
    );
}

fn policy_err(text: &str) -> String {
    Policy::parse(Path::new("/nonexistent/p.toml"), text)
        .unwrap_err()
        .to_string()
}

const TENANT: &str = "[[tenants]]\nname = \"t\"\nsubnets = [\"198.18.1.0/24\"]\n";

#[test]
fn bad_policies_are_refused_with_position() {
    // (policy text, expected substring of the diagnostic)
    let cases: Vec<(String, &str)> = vec![
        (
            "bogus = 1\n".into(),
            "p.toml:1:1: bogus: unknown field `bogus`",
        ),
        (
            format!("{TENANT}colour = \"red\"\n"),
            "p.toml:4:1: tenants[0].colour: unknown field `colour`",
        ),
        (
            "[[tenants]]\nname = \"t\"\nsubnets = [\"198.18.1.0/33\"]\n".into(),
            "p.toml:3:12: tenants[0].subnets: `198.18.1.0/33` is not an IPv4/IPv6 address or CIDR",
        ),
        (
            "[[tenants]]\nname = \"t\"\nsubnets = [\"198.18.1.1/24\"]\n".into(),
            "p.toml:3:12: tenants[0].subnets: `198.18.1.1/24` has host bits set",
        ),
        (
            format!("{TENANT}[[tenants]]\nname = \"u\"\nsubnets = [\"198.18.1.128/25\"]\n"),
            "p.toml:6:12: tenants[1].subnets: 198.18.1.128/25 overlaps 198.18.1.0/24 of tenant `t`",
        ),
        (
            format!("{TENANT}[[l3_rules]]\nid = \"r\"\nproto = \"tcp\"\ndst = [\"nope\"]\n"),
            "p.toml:7:8: l3_rules[0].dst: no object named `nope` (objects: none defined)",
        ),
        (
            format!("{TENANT}[[l3_rules]]\nid = \"r\"\nproto = \"tcp\"\nports = [70000]\n"),
            "p.toml:7:10: l3_rules[0].ports: port 70000 is out of range 1-65535",
        ),
        (
            format!("{TENANT}[[l3_rules]]\nid = \"r\"\nproto = \"tcp\"\nports = [\"90-80\"]\n"),
            "p.toml:7:10: l3_rules[0].ports: port range `90-80` is empty",
        ),
        (
            format!(
                "{TENANT}[[l3_rules]]\nid = \"r\"\nproto = \"tcp\"\n[[l3_rules]]\nid = \"r\"\nproto = \"udp\"\n"
            ),
            "p.toml:8:6: l3_rules[1].id: duplicate rule id `r`",
        ),
        (
            format!(
                "{TENANT}[[l3_rules]]\nid = \"r\"\nproto = \"tcp\"\n[[l7_rules]]\nid = \"r\"\naction = \"deny\"\n"
            ),
            "p.toml:8:6: l7_rules[0].id: duplicate rule id `r`",
        ),
        (
            format!("{TENANT}[[l3_rules]]\nid = \"r\"\nproto = \"sctp\"\n"),
            "l3_rules[0].proto: unknown protocol `sctp`",
        ),
        (
            format!("{TENANT}[[l3_rules]]\nid = \"r\"\ntenants = [\"x\"]\nproto = \"tcp\"\n"),
            "l3_rules[0].tenants: no tenant named `x` (tenants: t)",
        ),
        (
            format!(
                "{TENANT}[[l7_rules]]\nid = \"r\"\naction = \"allow\"\ndomains = [\"bad..name\"]\n"
            ),
            "l7_rules[0].domains: `bad..name` is not a domain name",
        ),
        (
            format!("{TENANT}[[l7_rules]]\nid = \"r\"\naction = \"maybe\"\n"),
            "p.toml:6:10: l7_rules[0].action: unknown variant `maybe`",
        ),
        (
            "[objects.o]\nfiles = [\"missing.txt\"]\n".into(),
            "objects.o.files: cannot read /nonexistent/missing.txt",
        ),
    ];
    for (text, want) in cases {
        let got = policy_err(&text);
        assert!(
            got.contains(want),
            "policy:\n{text}\nwant: {want}\ngot:  {got}"
        );
    }
}

#[test]
fn list_file_errors_name_the_list_file_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nets.txt"),
        "# c\n203.0.113.0/24\n  banana\n",
    )
    .unwrap();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, "[objects.o]\nfiles = [\"nets.txt\"]\n").unwrap();
    let e = Policy::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("nets.txt:3:3: objects.o.files: `banana` is not"),
        "{e}"
    );
}

#[test]
fn bad_nodes_are_refused_with_position() {
    let good = std::fs::read_to_string(examples().join("small/node-a.toml")).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("[node]\n", "[node]\ncolour = 1\n"),
            "node.colour: unknown field `colour`",
        ),
        (
            good.replace("pool = [\"198.51.100.10\"]", "pool = [\"198.51.100.300\"]"),
            "nat.pool: `198.51.100.300` is not",
        ),
        (
            good.replace(
                "pool = [\"198.51.100.10\"]",
                "pool = [\"198.51.100.20-198.51.100.10\"]",
            ),
            "nat.pool: `198.51.100.20-198.51.100.10` is empty",
        ),
        (
            good.replace(
                "pool = [\"198.51.100.10\"]",
                "pool = [\"198.51.100.0/30\", \"198.51.100.2\"]",
            ),
            "nat.pool: `198.51.100.2` overlaps",
        ),
        (
            good.replace("prepend_standby = 3", "prepend_standby = 1"),
            "bgp.prepend_standby: must be greater",
        ),
        (
            good.replace("router_id = \"198.19.0.1\"", "router_id = \"x\""),
            "node.router_id: invalid IPv4 address syntax",
        ),
        (
            good.replace("[arbiter]", "[arbiter]\nrealtime_priority = 100"),
            "arbiter.realtime_priority: must be 0 (off) or a SCHED_RR priority 1-99",
        ),
    ];
    for (text, want) in cases {
        let got = NodeConfig::parse(Path::new("n.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(got.starts_with("n.toml:"), "{got}");
        assert!(got.contains(want), "want: {want}\ngot:  {got}");
    }
}
