//! `igw provision render` writes bundles that `igw check` accepts, list files included,
//! and refuses a bad inventory with a positioned error and exit status 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use igw_testbed::TempDir;

fn igw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_igw"))
        .args(args)
        .output()
        .expect("run igw")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn example_inventory_bundles_pass_igw_check() {
    let tmp = TempDir::new("prov");
    let inv = root().join("examples/site/inventory.toml");
    for node in ["igw-a", "igw-b"] {
        let out = tmp.join(node);
        let o = out.to_str().unwrap();
        ok(&igw(&[
            "provision",
            "render",
            "--inventory",
            inv.to_str().unwrap(),
            "--node-name",
            node,
            "--out",
            o,
        ]));
        let checked = ok(&igw(&["check", o]));
        assert!(checked.contains(&format!("ok (node {node})")), "{checked}");
        assert!(checked.contains("policy.toml: ok"), "{checked}");
        assert!(
            std::fs::read_to_string(out.join("KEYFILE"))
                .unwrap()
                .contains("/etc/igw/psk")
        );
    }
}

#[test]
fn list_files_travel_with_the_bundle() {
    let tmp = TempDir::new("prov");
    let src = std::fs::read_to_string(root().join("examples/site/inventory.toml")).unwrap();
    let realistic = root()
        .join("examples/realistic/policy.toml")
        .canonicalize()
        .unwrap();
    // The realistic policy has other tenants: keep the site, drop the host catalog.
    let cut = src.find("[[hosts]]").unwrap();
    let text = src[..cut].replace(
        "\"../small/policy.toml\"",
        &format!("{:?}", realistic.to_str().unwrap()),
    );
    let inv = tmp.join("inventory.toml");
    std::fs::write(&inv, text).unwrap();
    let out = tmp.join("bundle");
    let o = out.to_str().unwrap();
    ok(&igw(&[
        "provision",
        "render",
        "--inventory",
        inv.to_str().unwrap(),
        "--node-name",
        "igw-b",
        "--out",
        o,
    ]));
    assert!(out.join("lists/blocklist.txt").exists());
    assert!(out.join("lists/office-nets.txt").exists());
    let checked = ok(&igw(&["check", o]));
    assert!(checked.contains("4 tenants"), "{checked}");
}

#[test]
fn bad_inventory_exits_2_with_position() {
    let tmp = TempDir::new("prov");
    let src = std::fs::read_to_string(root().join("examples/site/inventory.toml")).unwrap();
    let small = root()
        .join("examples/small/policy.toml")
        .canonicalize()
        .unwrap();
    let text = src
        .replace(
            "\"../small/policy.toml\"",
            &format!("{:?}", small.to_str().unwrap()),
        )
        .replace(
            "neighbor = \"upstream\", peer = \"198.19.2.2\"",
            "neighbor = \"upstrem\", peer = \"198.19.2.2\"",
        );
    let inv = tmp.join("inventory-broken.toml");
    std::fs::write(&inv, text).unwrap();
    let out = igw(&[
        "provision",
        "render",
        "--inventory",
        inv.to_str().unwrap(),
        "--node-name",
        "igw-a",
        "--out",
        tmp.join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inventory-broken.toml:"), "{err}");
    assert!(
        err.contains("gateways[1].upstream[0].neighbor: no upstreams entry named `upstrem`"),
        "{err}"
    );
    assert!(
        !tmp.join("x").exists(),
        "nothing written for a bad inventory"
    );
}
