//! Rendering from the example inventory: golden files (regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p igw-provisioning`), agreement with the hand-written
//! example node files the lab uses, FRR syntax checked by the real `vtysh --dryrun`, and
//! validation errors with positions.

use std::path::{Path, PathBuf};
use std::process::Command;

use igw_core::NodeConfig;
use igw_provisioning::{Inventory, render};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn inventory() -> Inventory {
    Inventory::load(&root().join("examples/site/inventory.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn golden(name: &str, got: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&p, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test -p igw-provisioning",
            p.display()
        )
    });
    assert_eq!(
        got, want,
        "{name} differs from its golden file; if intended, UPDATE_GOLDEN=1"
    );
}

#[test]
fn node_bundles_match_golden_files() {
    let inv = inventory();
    for g in ["igw-a", "igw-b"] {
        golden(
            &format!("node-{g}.toml"),
            &render::node_toml(&inv, g).unwrap(),
        );
    }
}

#[test]
fn rendered_nodes_agree_with_the_lab_example_nodes() {
    // The lab runs examples/small/node-*.toml; the inventory describes the same site, so
    // both must mean the same thing (key file location aside).
    let inv = inventory();
    for (g, file) in [("igw-a", "node-a.toml"), ("igw-b", "node-b.toml")] {
        let text = render::node_toml(&inv, g).unwrap();
        let mut rendered = NodeConfig::parse(Path::new("node.toml"), &text).unwrap();
        let example = NodeConfig::load(&root().join("examples/small").join(file)).unwrap();
        rendered.sync.key_file = example.sync.key_file.clone();
        assert_eq!(rendered.node, example.node, "{g} [node]");
        assert_eq!(rendered.interfaces, example.interfaces, "{g}");
        assert_eq!(rendered.bgp.tor, example.bgp.tor, "{g}");
        assert_eq!(rendered.bgp.upstream, example.bgp.upstream, "{g}");
        assert_eq!(rendered.peer, example.peer, "{g}");
        assert_eq!(rendered.sync, example.sync, "{g}");
        assert_eq!(rendered.nat, example.nat, "{g}");
        assert_eq!(rendered.management, example.management, "{g}");
    }
}

fn vtysh_dryrun(name: &str, conf: &str) {
    let vtysh = ["/usr/bin/vtysh", "/bin/vtysh"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let vtysh =
        vtysh.expect("this test checks FRR syntax with the real vtysh: install frr (make deps)");
    let dir = std::env::temp_dir().join(format!("igw-prov-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, conf).unwrap();
    let out = Command::new(vtysh)
        .arg("--dryrun")
        .arg("-f")
        .arg(&f)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "FRR refuses {name}:\n{}{}\n--- config:\n{conf}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tor_downlinks_accept_only_each_hosts_prefixes() {
    let inv = inventory();
    let conf = render::tor_downlinks(&inv, "tor").unwrap();
    golden("tor-tor.frr", &conf);
    // Each routed host's port gets its own inbound filter with exactly its prefixes.
    assert!(conf.contains("ip prefix-list HOST-a-web-01 seq 10 permit 198.18.1.21/32"));
    assert!(conf.contains("ip prefix-list HOST-a-k8s-01 seq 20 permit 198.18.1.64/27"));
    assert!(conf.contains("  neighbor swp1 route-map FROM-a-web-01 in"));
    assert!(conf.contains("  neighbor swp3 route-map FROM-a-k8s-01 in"));
    assert!(
        !conf.contains("neighbor swp10 "),
        "an L2 host has no BGP session"
    );
    vtysh_dryrun("tor.conf", &conf);
}

#[test]
fn routed_host_frr_configs() {
    let inv = inventory();
    let web = render::host_frr(&inv, "a-web-01").unwrap();
    golden("host-a-web-01.frr", &web);
    assert!(web.contains(" neighbor eth0 interface peer-group FABRIC"));
    assert!(web.contains(" neighbor eth1 interface peer-group FABRIC"));
    assert!(web.contains("  maximum-paths 2"));
    vtysh_dryrun("web.conf", &web);
    let k8s = render::host_frr(&inv, "a-k8s-01").unwrap();
    golden("host-a-k8s-01.frr", &k8s);
    assert!(k8s.contains("-p 20179"));
    assert!(k8s.contains("set local-preference 50"));
    vtysh_dryrun("k8s.conf", &k8s);
    assert!(
        render::host_frr(&inv, "b-db-01")
            .unwrap_err()
            .to_string()
            .contains("mode l2")
    );
}

#[test]
fn unknown_names_are_clear_errors() {
    let inv = inventory();
    let e = render::node_toml(&inv, "igw-c").unwrap_err().to_string();
    assert_eq!(
        e,
        "no gateway named `igw-c` in the inventory (gateways: igw-a, igw-b)"
    );
    assert!(
        render::tor_downlinks(&inv, "tor9")
            .unwrap_err()
            .to_string()
            .contains("(tors: tor)")
    );
}

#[test]
fn bad_inventories_are_refused_with_position() {
    let good = std::fs::read_to_string(root().join("examples/site/inventory.toml")).unwrap();
    let path = root().join("examples/site/inventory.toml");
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("[site]\n", "[site]\ncolour = 1\n"),
            "site.colour: unknown field `colour`",
        ),
        (
            good.replace(
                "neighbor = \"tor\", peer = \"198.19.1.2\"",
                "neighbor = \"tor2\", peer = \"198.19.1.2\"",
            ),
            "gateways[1].fabric[0].neighbor: no tors entry named `tor2`",
        ),
        (
            good.replace("tenant = \"tenant-b\"", "tenant = \"tenant-z\""),
            "hosts[2].tenant: no tenant `tenant-z` in the site policy",
        ),
        (
            good.replace(
                "prefixes = [\"198.18.1.21/32\"]",
                "prefixes = [\"198.18.2.21/32\"]",
            ),
            "hosts[0].prefixes: 198.18.2.21/32 is outside tenant `tenant-a`'s subnets",
        ),
        (
            good.replace(
                "prefixes = [\"198.18.1.22/32\", ",
                "prefixes = [\"198.18.1.21/32\", ",
            ),
            "hosts[1].prefixes: 198.18.1.21/32 overlaps 198.18.1.21/32 announced by host `a-web-01`",
        ),
        (
            good.replace(
                "nat_pool = [\"198.51.100.10\"]",
                "nat_pool = [\"198.51.100.x\"]",
            ),
            "site.nat_pool[0]: `198.51.100.x` is not",
        ),
        (
            good.replace(
                "policy = \"../small/policy.toml\"",
                "policy = \"nope.toml\"",
            ),
            "nope.toml: cannot read",
        ),
    ];
    for (text, want) in cases {
        let got = Inventory::parse(&path, &text).unwrap_err().to_string();
        assert!(got.contains(want), "want: {want}\ngot:  {got}");
        assert!(got.contains(".toml"), "names a file: {got}");
    }
}
