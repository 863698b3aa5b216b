//! Promise: the rendered FRR configs peer with a real ToR and upstream, advertise only the
//! default route (to the fabric) and the NAT pool (to the upstream), accept only tenant
//! prefixes and the default route, run BFD on every session, and the driver's prepend
//! change moves both directions' best path. Real FRR, one instance per namespace.

mod fabric_topo;

use std::time::{Duration, Instant};

use fabric_topo::{Pair, best_path, wait_best_as};
use igw_core::NodeConfig;
use igw_fabric::{FrrDriver, FrrError};

#[test]
fn prepend_steers_tor_and_upstream() {
    let pair = Pair::start();
    pair.wait_established();
    let na = NodeConfig::load(&pair.a.node_toml).unwrap();
    let nb = NodeConfig::load(&pair.b.node_toml).unwrap();
    let da = FrrDriver::for_node(&na);
    let db = FrrDriver::for_node(&nb);

    // Both start standby (3 prepends); make igw-a active (1 prepend).
    let (t, path) = da.set_prepend(&na, 1).unwrap();
    println!("igw-a set-prepend 1 via {path:?}: {:.3} s", t.as_secs_f64());
    assert_eq!(path, igw_fabric::driver::Path::VtySocket);
    assert_eq!(da.prepend_in_force(&na).unwrap(), 1);
    // Both started at 3 prepends and igw-a already wins the router-id tie-break: wait for
    // the new AS path (one prepend on the active's routes), not just the next hop.
    wait_best_as(
        &pair,
        &pair.tor,
        "0.0.0.0/0",
        "198.19.1.1",
        "65010 65010",
        Duration::from_secs(30),
    );
    wait_best_as(
        &pair,
        &pair.up,
        "198.51.100.10/32",
        "198.19.2.1",
        "65010 65010",
        Duration::from_secs(30),
    );

    // What is advertised and accepted, nothing else.
    let tor_rib = pair
        .tor
        .vtysh(&["show ip bgp neighbors 198.19.1.1 routes json"]);
    let v: serde_json::Value = serde_json::from_str(&tor_rib).unwrap();
    let got: Vec<&String> = v["routes"].as_object().unwrap().keys().collect();
    assert_eq!(
        got,
        vec!["0.0.0.0/0"],
        "the ToR learns only the default route from igw-a"
    );
    let up_rib = pair
        .up
        .vtysh(&["show ip bgp neighbors 198.19.2.1 routes json"]);
    let v: serde_json::Value = serde_json::from_str(&up_rib).unwrap();
    let got: Vec<&String> = v["routes"].as_object().unwrap().keys().collect();
    assert_eq!(
        got,
        vec!["198.51.100.10/32"],
        "the upstream learns only the NAT pool"
    );
    // The sessions come up one by one: wait (bounded) until igw-a holds the default route
    // and both tenant subnets, then check that nothing else got in.
    let mut a_rib = String::new();
    let full = igw_testbed::wait_for(Duration::from_secs(30), || {
        a_rib = pair.a.frr.vtysh(&["show ip bgp json"]);
        let v: serde_json::Value = serde_json::from_str(&a_rib).ok()?;
        let r = v["routes"].as_object()?;
        (r.contains_key("0.0.0.0/0")
            && r.contains_key("198.18.1.0/24")
            && r.contains_key("198.18.2.0/24"))
        .then_some(())
    });
    let _ = full;
    let v: serde_json::Value = serde_json::from_str(&a_rib).unwrap();
    let routes = v["routes"].as_object().unwrap();
    assert!(
        routes.contains_key("0.0.0.0/0"),
        "default route from the upstream: {a_rib}"
    );
    assert!(routes.contains_key("198.18.1.0/24") && routes.contains_key("198.18.2.0/24"));
    assert!(
        !routes.contains_key("198.19.200.0/24"),
        "a non-tenant prefix from the ToR is refused"
    );
    assert!(
        !routes.contains_key("203.0.113.0/24"),
        "only the default route from the upstream"
    );

    // BFD on every session, read through the driver.
    let ok = igw_testbed::wait_for(Duration::from_secs(30), || {
        let s = da.bfd_sessions().ok()?;
        (s.len() == 2 && s.iter().all(|x| x.up)).then_some(())
    });
    assert!(
        ok.is_some(),
        "BFD sessions of igw-a: {:?}\n{}",
        da.bfd_sessions(),
        pair.logs()
    );
    let bgp = da.bgp_sessions().unwrap();
    assert!(
        bgp.iter()
            .filter(|s| s.family == "ipv4Unicast")
            .all(|s| s.established),
        "{bgp:?}"
    );

    // Take-over: igw-b with no prepend wins at once on both routers.
    let t0 = Instant::now();
    let (t, _) = db.set_prepend(&nb, 0).unwrap();
    wait_best_as(
        &pair,
        &pair.tor,
        "0.0.0.0/0",
        "198.19.1.3",
        "65010",
        Duration::from_secs(30),
    );
    let tor_moved = t0.elapsed();
    wait_best_as(
        &pair,
        &pair.up,
        "198.51.100.10/32",
        "198.19.2.3",
        "65010",
        Duration::from_secs(30),
    );
    let up_moved = t0.elapsed();
    println!(
        "igw-b set-prepend 0: vtysh {:.3} s; ToR best path moved after {:.3} s, upstream after {:.3} s",
        t.as_secs_f64(),
        tor_moved.as_secs_f64(),
        up_moved.as_secs_f64()
    );
    println!("ToR best: {:?}", best_path(&pair.tor, "0.0.0.0/0"));
}

#[test]
fn driver_errors_are_clear() {
    igw_testbed::require_root(&["vtysh"]);
    let d = FrrDriver::new("igwnofrr");
    match d.bgp_sessions() {
        Err(e @ FrrError::NotRunning { .. }) => println!("{e}"),
        other => panic!("expected NotRunning, got {other:?}"),
    }
}
