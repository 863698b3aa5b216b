//! The nftables compiler: table-driven cases over small policies, golden files of the
//! shipped examples, and real `nft -c` accepting what is rendered.
//!
//! Regenerate the golden files: `UPDATE_GOLDEN=1 cargo test -p igw-ruleset --test nft_compile`
//! (or `ruleset/testdata/nft/regenerate.sh`).

use std::path::{Path, PathBuf};

use igw_core::{NodeConfig, Policy};
use igw_ruleset::nft::{self, Plan, compile, running};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn node_a() -> NodeConfig {
    NodeConfig::load(&root().join("examples/small/node-a.toml")).expect("node-a loads")
}

fn policy(text: &str) -> Policy {
    Policy::parse(&root().join("examples/small/test-policy.toml"), text)
        .unwrap_or_else(|e| panic!("policy: {e}"))
}

const BASE: &str = r#"
[objects.web]
members = ["203.0.113.80", "203.0.113.81", "2001:db8::80"]
[[tenants]]
name = "a"
subnets = ["198.18.1.0/24"]
[[tenants]]
name = "b"
subnets = ["198.18.2.0/24"]
divert_https = false
"#;

/// (what, extra policy text, lines that must appear, lines that must not appear)
#[test]
fn compile_cases() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "tcp rule to an object: one rule per family, counter, id comment",
            "[[l3_rules]]\nid = \"r1\"\ntenants = [\"a\"]\nproto = \"tcp\"\ndst = [\"web\"]\nports = [80, \"8000-8100\"]\n",
            &[
                "ip daddr @obj_web_v4 tcp dport { 80, 8000-8100 } counter accept comment \"r1\"",
                "ip6 daddr @obj_web_v6 tcp dport { 80, 8000-8100 } counter accept comment \"r1\"",
                "elements = { 203.0.113.80/31 }",
            ],
            &[],
        ),
        (
            "literal CIDR destination: only its family",
            "[[l3_rules]]\nid = \"r2\"\nproto = \"udp\"\ndst = [\"192.0.2.0/24\"]\nports = [53]\n",
            &["ip daddr 192.0.2.0/24 udp dport 53 counter accept comment \"r2\""],
            &["ip6 daddr 192.0.2.0/24"],
        ),
        (
            "icmp: v4 only, any destination",
            "[[l3_rules]]\nid = \"ping\"\nproto = \"icmp\"\n",
            &["meta l4proto icmp counter accept comment \"ping\""],
            &[],
        ),
        (
            "any protocol, any destination",
            "[[l3_rules]]\nid = \"all\"\ntenants = [\"b\"]\nproto = \"any\"\n",
            &["counter accept comment \"all\""],
            &[],
        ),
        (
            "logged rule: rate-limited log before the accept",
            "[[l3_rules]]\nid = \"lg\"\nproto = \"tcp\"\nports = [22]\nlog = true\n",
            &[
                "tcp dport 22 limit rate 60/minute burst 5 packets log prefix \"igw allow lg: \"",
                "tcp dport 22 counter accept comment \"lg\"",
            ],
            &[],
        ),
        (
            "diversion per tenant and per port",
            "",
            &[
                "iifname \"tor0\" ip saddr @tenant_a_v4 tcp dport 80 counter redirect to :3129 comment \"divert http of tenant a\"",
                "iifname \"tor0\" ip saddr @tenant_a_v4 tcp dport 443 counter redirect to :3130 comment \"divert https of tenant a\"",
                "iifname \"tor0\" ip saddr @tenant_b_v4 tcp dport 80 counter redirect to :3129",
            ],
            &["divert https of tenant b"],
        ),
        (
            "drop log names the tenant; default drop counted",
            "[defaults]\nlog_rate_per_minute = 7\n",
            &[
                "limit rate 7/minute burst 5 packets log prefix \"igw drop a: \"",
                "counter drop comment \"default drop a\"",
                "log prefix \"igw drop b: \"",
            ],
            &[],
        ),
        (
            "no drop log when log_drops = false",
            "[defaults]\nlog_drops = false\n",
            &["counter drop comment \"default drop a\""],
            &["log prefix \"igw drop"],
        ),
        (
            "forward, input, NAT and guard skeleton",
            "",
            &[
                "type filter hook forward priority 0; policy drop;",
                "ct state invalid counter drop comment \"invalid packets never leave, NATed or not\"",
                "iifname \"tor0\" ip saddr @tenant_a_v4 jump tenant_a",
                "type filter hook input priority 0; policy drop;",
                "ip saddr @bgp_peers_v4 tcp dport 179 accept comment \"bgp from configured peers\"",
                "ip saddr @bgp_peers_v4 udp dport { 3784, 3785, 4784 } accept comment \"bfd from configured peers\"",
                "ip saddr @peer_node_v4 meta l4proto { tcp, udp } th dport { 7400, 7401 } accept",
                "ip saddr @mgmt_sources_v4 tcp dport { 22, 9184, 9185, 9186 } accept",
                "iifname \"tor0\" ip saddr @all_tenants_v4 tcp dport { 3128, 3129, 3130 } counter accept",
                "oifname \"up0\" ip daddr @bgp_peers_v4 tcp dport 179 accept comment \"bgp to peers: no NAT\"",
                "oifname \"up0\" counter snat ip to 198.51.100.10 comment \"egress to the NAT pool\"",
                "type filter hook postrouting priority 110; policy accept;",
                "oifname \"up0\" ip saddr @all_tenants_v4 counter drop",
                "elements = { 198.19.1.0,",
                "elements = { 198.19.1.3,",
            ],
            &["masquerade"],
        ),
    ];
    for (what, extra, want, not) in cases {
        let p = policy(&format!("{BASE}\n{extra}"));
        let c = compile(&node_a(), &p).unwrap_or_else(|e| panic!("{what}: {e}"));
        let text = nft::render_text(&c);
        for w in *want {
            assert!(text.contains(w), "{what}: missing `{w}` in\n{text}");
        }
        for n in *not {
            assert!(!text.contains(n), "{what}: unexpected `{n}` in\n{text}");
        }
    }
}

#[test]
fn refusals() {
    let mut node = node_a();
    node.nat.pool = vec!["198.51.100.10".into(), "198.51.100.20".into()];
    let e = compile(&node, &policy(BASE)).expect_err("two disjoint pool ranges");
    assert!(e.to_string().contains("one contiguous range"), "{e}");
    let mut node = node_a();
    node.nat.pool = vec!["198.51.100.10".into(), "198.51.100.11-198.51.100.12".into()];
    let c = compile(&node, &policy(BASE)).expect("adjacent ranges merge");
    assert!(nft::render_text(&c).contains("snat ip to 198.51.100.10-198.51.100.12"));
    let mut node = node_a();
    node.interfaces.fabric = vec!["averyverylongname0".into()];
    assert!(compile(&node, &policy(BASE)).is_err());
    let long = "x".repeat(130);
    let p = policy(&format!(
        "{BASE}\n[[l3_rules]]\nid = \"{long}\"\nproto = \"icmp\"\n"
    ));
    assert!(compile(&node_a(), &p).is_err());
}

/// Changing only members keeps the fingerprint (element update); a new rule changes it.
#[test]
fn fingerprint_and_plan() {
    let node = node_a();
    let a = compile(&node, &policy(BASE)).expect("compiles");
    let b = compile(
        &node,
        &policy(&BASE.replace("\"203.0.113.81\"", "\"203.0.113.99\", \"2001:db8::1\"")),
    )
    .expect("compiles");
    assert_eq!(a.fingerprint, b.fingerprint);
    let c = compile(
        &node,
        &policy(&format!(
            "{BASE}\n[[l3_rules]]\nid = \"n\"\nproto = \"icmp\"\n"
        )),
    )
    .expect("compiles");
    assert_ne!(a.fingerprint, c.fingerprint);

    // The running table as nft lists it, reduced to what plan() reads.
    let mut run = running::Running {
        fingerprint: Some(a.fingerprint.clone()),
        sets: a
            .table
            .sets
            .iter()
            .map(|s| (s.name.clone(), s.elems.clone()))
            .collect(),
    };
    assert_eq!(nft::plan(&a, Some(&run)), Plan::Nothing);
    assert_eq!(nft::plan(&c, Some(&run)), Plan::Full);
    assert_eq!(nft::plan(&a, None), Plan::Full);
    match nft::plan(&b, Some(&run)) {
        Plan::Elements(d) => {
            let names: Vec<&str> = d.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["obj_web_v4", "obj_web_v6"]);
            assert_eq!(d[0].1.remove.len(), 1, "203.0.113.80/31 goes");
            assert_eq!(d[0].1.add.len(), 2, "203.0.113.80 and .99 come");
        }
        p => panic!("want an element update, got {p:?}"),
    }
    run.fingerprint = None;
    assert_eq!(nft::plan(&a, Some(&run)), Plan::Full);
}

/// Element forms of `nft -j list` (captured from nft 1.0.6: `nft -j list table inet igw`
/// after adding 10.0.0.0/24, 10.0.1.5 and the range 10.0.2.1-10.0.2.2).
#[test]
fn running_parse() {
    let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "igw", "handle": 1}},
      {"set": {"family": "inet", "name": "obj_x_v4", "table": "igw", "type": "ipv4_addr", "handle": 2, "flags": ["interval"],
        "elem": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "10.0.1.5", {"range": ["10.0.2.1", "10.0.2.2"]},
                 {"elem": {"val": "10.0.3.3", "counter": {"packets": 0, "bytes": 0}}}]}},
      {"rule": {"family": "inet", "table": "igw", "chain": "forward", "handle": 9, "comment": "igw structure 00112233aabbccdd",
        "expr": [{"accept": null}]}}]}"#;
    let r = running::parse(json).expect("parses");
    assert_eq!(r.fingerprint.as_deref(), Some("00112233aabbccdd"));
    let got: Vec<String> = r.sets["obj_x_v4"].iter().map(|n| n.to_string()).collect();
    assert_eq!(
        got,
        [
            "10.0.0.0/24",
            "10.0.1.5/32",
            "10.0.2.1/32",
            "10.0.2.2/32",
            "10.0.3.3/32"
        ]
    );
    assert!(running::parse("not json").is_err());
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/nft")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with UPDATE_GOLDEN=1 cargo test -p igw-ruleset --test nft_compile",
            path.display()
        )
    });
    assert!(
        want == actual,
        "{} differs from the compiled ruleset; if the change is intended, regenerate with UPDATE_GOLDEN=1 cargo test -p igw-ruleset --test nft_compile",
        path.display()
    );
}

fn examples() -> Vec<(&'static str, nft::Compiled)> {
    let node = node_a();
    [
        ("small", "examples/small/policy.toml"),
        ("realistic", "examples/realistic/policy.toml"),
    ]
    .into_iter()
    .map(|(name, p)| {
        let policy = Policy::load(&root().join(p)).expect("example policy loads");
        (name, compile(&node, &policy).expect("example compiles"))
    })
    .collect()
}

#[test]
fn golden_examples() {
    for (name, c) in examples() {
        golden(&format!("{name}-node-a.nft"), &nft::render_text(&c));
        let json: serde_json::Value =
            serde_json::from_str(&nft::to_json(&nft::full_replace(&c))).expect("json");
        golden(
            &format!("{name}-node-a.json"),
            &(serde_json::to_string_pretty(&json).expect("json") + "\n"),
        );
    }
}

/// Real nft (1.0.6 here) checks the rendered text and the JSON transaction against the
/// kernel, in a throwaway network namespace (`unshare -n`), so nothing on the host changes.
#[test]
fn nft_accepts_rendered_examples() {
    igw_testbed::require_root(&["nft", "unshare"]);
    let dir = igw_testbed::TempDir::new("rscheck");
    for (name, c) in examples() {
        let text = dir.join(&format!("{name}.nft"));
        std::fs::write(&text, nft::render_text(&c)).expect("write");
        let json = dir.join(&format!("{name}.json"));
        std::fs::write(&json, nft::to_json(&nft::full_replace(&c))).expect("write");
        for args in [
            vec!["-c", "-f", text.to_str().expect("utf8")],
            vec!["-j", "-c", "-f", json.to_str().expect("utf8")],
        ] {
            let mut argv = vec!["unshare", "-n", "nft"];
            argv.extend(args);
            igw_testbed::run(&argv);
        }
    }
}
