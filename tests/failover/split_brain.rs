//! Promise: split brain — the sync link and the fabric heartbeat path cut while both nodes
//! stay healthy — has one defined outcome and ends with exactly one active node once the
//! paths are back; established flows survive it (all 100 still echo both ways) and
//! filtering holds on the node left active.

mod common;

use std::time::Duration;

use common::{GATEWAYS, Lab, assert_flows_survived, print_figures};

/// Drops everything between the two gateways' fabric addresses at the ToR (the heartbeat
/// path through the fabric); BGP and BFD with the ToR itself are untouched.
const CUT: &str = "table inet splitbrain {
  chain forward {
    type filter hook forward priority -300; policy accept;
    ip saddr 198.19.1.1 ip daddr 198.19.1.3 drop
    ip saddr 198.19.1.3 ip daddr 198.19.1.1 drop
  }
}
";

#[test]
fn sync_and_fabric_heartbeats_cut_then_restored() {
    let lab = Lab::up("sb");
    let before = lab.one_active();
    let t = lab.traffic(20);
    std::thread::sleep(Duration::from_secs(3));
    let out = lab.exec("igw-a", &["ip", "link", "set", "sync0", "down"]);
    assert!(out.status.success(), "sync0 down: {}", common::text(&out));
    let mut nft = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns("tor"), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    use std::io::Write as _;
    nft.stdin
        .take()
        .expect("stdin")
        .write_all(CUT.as_bytes())
        .expect("write");
    assert!(nft.wait().expect("nft").success(), "cut the fabric path");
    std::thread::sleep(Duration::from_secs(5));
    let during: Vec<String> = GATEWAYS.iter().map(|g| lab.role(g)).collect();
    let carrier = lab.carrier();
    println!(
        "split brain (active before: {before}): roles igw-a {}, igw-b {}; traffic via {carrier:?}",
        during[0], during[1]
    );
    let out = lab.exec("tor", &["nft", "delete", "table", "inet", "splitbrain"]);
    assert!(
        out.status.success(),
        "restore fabric: {}",
        common::text(&out)
    );
    let out = lab.exec("igw-a", &["ip", "link", "set", "sync0", "up"]);
    assert!(out.status.success(), "sync0 up: {}", common::text(&out));
    let r = t.finish();
    print_figures("split brain, then healed", &r);
    assert_flows_survived(&r);
    let after = lab.one_active();
    println!("after healing: {after} active");
    lab.assert_filtering_on(after);
}
