//! Promise: a half-failure — the active node alive but its filter proxy dead — hands the
//! traffic to the peer: established non-HTTP flows keep running (all 100 still echo both
//! ways), web traffic is filtered by the peer's proxy (allowed 200, denied 403 with the
//! rule), and there is exactly one active node, the peer.

mod common;

use std::process::Command;

use common::{Lab, assert_flows_survived, other, print_figures};

#[test]
fn proxy_killed_on_the_active() {
    let lab = Lab::up("hp");
    let active = lab.one_active();
    let peer = other(active);
    let proxy = lab.pid(&format!("{active}-proxy"));
    let t = lab.traffic(15);
    std::thread::sleep(std::time::Duration::from_secs(3));
    // The lab started the proxy in its own process group: kill that group, by PID.
    let ok = Command::new("kill")
        .args(["-KILL", "--", &format!("-{proxy}")])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill the proxy of {active} (pid {proxy})");
    let r = t.finish();
    print_figures(&format!("proxy of {active} killed"), &r);
    assert_flows_survived(&r);
    assert_eq!(lab.one_active(), peer, "the peer took over\n{}", lab.logs());
    lab.assert_filtering_on(peer);
    let why = lab
        .status(active)
        .map(|s| s["arbiter"]["last_change"]["reason"].to_string())
        .unwrap_or_default();
    println!(
        "{active} after its proxy died: {} ({why})",
        lab.role(active)
    );
}
