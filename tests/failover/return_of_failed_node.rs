//! Promise: a failed node that comes back does not take the traffic back (no preemption)
//! and its conntrack-sync cache is filled again from the new active, so it could carry the
//! established flows at the next failure; flows keep running throughout.

mod common;

use std::time::Duration;

use common::{FLOWS, Lab, assert_flows_survived, other, print_figures};
use igw_testbed::wait_for;

#[test]
fn failed_node_returns_as_standby_and_resyncs() {
    let lab = Lab::up("rt");
    let failed = lab.one_active();
    let peer = other(failed);
    let t = lab.traffic(25);
    std::thread::sleep(Duration::from_secs(3));
    let out = lab.lab(&["fail", failed, "--how", "freeze"]);
    assert!(out.status.success(), "freeze: {}", common::text(&out));
    std::thread::sleep(Duration::from_secs(5));
    let out = lab.lab(&["restore", failed]);
    assert!(out.status.success(), "restore: {}", common::text(&out));
    // The returning node's cache holds (at least) the flows now running through the peer.
    let cached = wait_for(Duration::from_secs(15), || {
        let n = lab.status(failed)?["conntrack_sync"]["entries_cached"].as_u64()?;
        (n >= FLOWS as u64).then_some(n)
    });
    let r = t.finish();
    print_figures(&format!("{failed} frozen, then back"), &r);
    println!("{failed}'s conntrack-sync cache after its return: {cached:?} entries");
    assert_flows_survived(&r);
    assert_eq!(lab.one_active(), peer, "no preemption\n{}", lab.logs());
    assert!(
        cached.is_some(),
        "{failed}'s cache did not resync: {:?}",
        lab.status(failed).map(|s| s["conntrack_sync"].clone())
    );
}
