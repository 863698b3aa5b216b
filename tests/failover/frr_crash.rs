//! Promise: a crash of the active's routing plane (FRR's zebra, bfdd and bgpd killed, the
//! node and every igw daemon still up) hands the traffic to the peer: the ToR and the
//! upstream lose the dead node's sessions (BFD), the active's arbiter sees its BGP sessions
//! gone and steps down while the peer is healthy, the peer promotes; established non-HTTP
//! flows keep running both ways, NEW connections work (the stock script left the active
//! holding the NAT address with nothing routed to it: new connections failed for good),
//! filtering holds on the peer, and exactly one node is active.

mod common;

use std::process::Command;

use common::{Lab, assert_flows_survived, other, print_figures};

#[test]
fn frr_killed_on_the_active() {
    let lab = Lab::up("fc");
    let active = lab.one_active();
    let peer = other(active);
    let daemons: Vec<(String, u32)> = ["zebra", "bfdd", "bgpd"]
        .iter()
        .map(|d| {
            let name = format!("{active}-{d}");
            let pid = lab.pid(&name);
            (name, pid)
        })
        .collect();
    let t = lab.traffic(15);
    std::thread::sleep(std::time::Duration::from_secs(3));
    for (name, pid) in &daemons {
        // The lab started each daemon in its own process group: kill that group, by PID.
        let ok = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {name} (pid {pid})");
    }
    let r = t.finish();
    print_figures(&format!("FRR of {active} killed"), &r);
    assert_flows_survived(&r);
    assert_eq!(lab.one_active(), peer, "the peer took over\n{}", lab.logs());
    // New connections, through the peer's proxy: allowed 200, denied 403 with the rule.
    lab.assert_filtering_on(peer);
    let why = lab
        .status(active)
        .map(|s| s["arbiter"]["last_change"]["reason"].to_string())
        .unwrap_or_default();
    println!("{active} after its FRR died: {} ({why})", lab.role(active));
}
