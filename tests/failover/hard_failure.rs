//! Promise: a hard failure of the active node — its links cut, or the whole node frozen
//! (traffic dropped, processes stopped, carrier kept) — costs established flows nothing:
//! every one of 100 TCP flows still carries data both ways afterwards, the peer carries the
//! traffic and filters it (allowed 200, denied 403 with the rule), and once the failed node
//! is back there is exactly one active node. The outage the probe stream saw is printed.

mod common;

use common::{Lab, assert_flows_survived, other, print_figures};

fn hard_failure(tag: &str, how: &str) {
    let lab = Lab::up(tag);
    let active = lab.one_active();
    let peer = other(active);
    lab.watch_unnatted();
    let t = lab.traffic(12);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = lab.lab(&["fail", active, "--how", how]);
    assert!(out.status.success(), "igw lab fail: {}", common::text(&out));
    let r = t.finish();
    print_figures(&format!("hard failure ({how}) of {active}"), &r);
    println!("un-NATed packets at the upstream: {}", lab.unnatted());
    assert_flows_survived(&r);
    // The peer took over: it says so, and both routers send the traffic through it.
    assert_eq!(lab.role(peer), "active", "{}", lab.logs());
    assert_eq!(lab.carrier(), Some(peer), "{}", lab.logs());
    lab.assert_filtering_on(peer);
    let out = lab.lab(&["restore", active]);
    assert!(
        out.status.success(),
        "igw lab restore: {}",
        common::text(&out)
    );
    assert_eq!(
        lab.one_active(),
        peer,
        "the returning node does not preempt"
    );
}

#[test]
fn links_cut() {
    hard_failure("hl", "links");
}

#[test]
fn frozen() {
    hard_failure("hf", "freeze");
}
