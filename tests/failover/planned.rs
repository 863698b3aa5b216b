//! Promise: a planned switchover (`igw failover` on the active) and maintenance (`igw
//! maintenance on`) move the traffic to the peer without breaking anything: all 100
//! established flows still echo both ways, no packet leaves for the Internet with a
//! tenant's (un-NATed) source address, filtering holds on the new active, and there is
//! exactly one active node — the one the operator asked for. Lost probes are printed.

mod common;

use common::{Lab, assert_flows_survived, other, print_figures};

fn planned(tag: &str, cmd: &[&str]) {
    let lab = Lab::up(tag);
    let active = lab.one_active();
    let peer = other(active);
    lab.watch_unnatted();
    let t = lab.traffic(12);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = lab.igw(active, cmd);
    assert!(
        out.status.success(),
        "igw {} on {active}: {}\n{}",
        cmd.join(" "),
        common::text(&out),
        lab.logs()
    );
    let r = t.finish();
    let leaked = lab.unnatted();
    print_figures(&format!("igw {} on {active}", cmd.join(" ")), &r);
    println!("un-NATed packets at the upstream: {leaked}");
    assert_flows_survived(&r);
    assert_eq!(
        leaked, 0,
        "tenant source addresses reached the Internet side"
    );
    assert_eq!(lab.one_active(), peer, "the peer is active\n{}", lab.logs());
    lab.assert_filtering_on(peer);
    if cmd[0] == "maintenance" {
        // Maintenance holds: the node stays out until it is turned off, then stands by.
        assert_eq!(lab.role(active), "maintenance");
        let out = lab.igw(active, &["maintenance", "off"]);
        assert!(
            out.status.success(),
            "maintenance off: {}",
            common::text(&out)
        );
        assert_eq!(lab.one_active(), peer, "no preemption after maintenance");
    }
}

#[test]
fn igw_failover() {
    planned("pf", &["failover"]);
}

#[test]
fn maintenance_on() {
    planned("pm", &["maintenance", "on"]);
}
