//! Promise: an active node whose uplink flaps (5 times in 30 s) does not make the pair
//! oscillate: the role moves at most once (to the peer, which is never preempted; the
//! flapping node stays out through its hold-down), established flows survive (all 100 still
//! echo both ways), and there is exactly one active node at the end, filtering.

mod common;

use std::time::Duration;

use common::{GATEWAYS, Lab, assert_flows_survived, print_figures};

/// Promotions to active logged by a node's arbiter after byte `from` of its log.
fn promotions(lab: &Lab, gw: &str, from: usize) -> usize {
    let log = std::fs::read_to_string(lab.dir().join(format!("logs/{gw}-arbiter.log")))
        .unwrap_or_default();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .map(plain)
        .filter(|l| l.contains("role change") && l.contains("to=\"active\""))
        .count()
}

/// A log line without its ANSI colour sequences (`ESC [ ... m`), which tracing writes
/// between a field's name and its value.
fn plain(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn log_len(lab: &Lab, gw: &str) -> usize {
    std::fs::metadata(lab.dir().join(format!("logs/{gw}-arbiter.log")))
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

#[test]
fn uplink_flapped_five_times_in_30_s() {
    let lab = Lab::up("fl");
    let active = lab.one_active();
    let marks: Vec<usize> = GATEWAYS.iter().map(|g| log_len(&lab, g)).collect();
    let t = lab.traffic(40);
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..5 {
        let out = lab.exec(active, &["ip", "link", "set", "up0", "down"]);
        assert!(out.status.success(), "flap {i}: {}", common::text(&out));
        std::thread::sleep(Duration::from_secs(1));
        let out = lab.exec(active, &["ip", "link", "set", "up0", "up"]);
        assert!(out.status.success(), "flap {i}: {}", common::text(&out));
        std::thread::sleep(Duration::from_secs(5));
    }
    let r = t.finish();
    print_figures(&format!("uplink of {active} flapped 5 times"), &r);
    let promoted: Vec<usize> = GATEWAYS
        .iter()
        .zip(&marks)
        .map(|(g, m)| promotions(&lab, g, *m))
        .collect();
    println!(
        "promotions to active during the flapping: igw-a {}, igw-b {}",
        promoted[0], promoted[1]
    );
    assert_flows_survived(&r);
    let end = lab.one_active();
    assert!(
        promoted.iter().sum::<usize>() <= 1,
        "the role oscillated ({promoted:?} promotions)\n{}",
        lab.logs()
    );
    println!("active at the end: {end}");
    lab.assert_filtering_on(end);
}

#[test]
fn colour_sequences_are_stripped_from_log_lines() {
    let line = "INFO \u{1b}[2migw_arbiter::daemon\u{1b}[0m role change \u{1b}[3mto\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"active\"";
    assert_eq!(
        plain(line),
        "INFO igw_arbiter::daemon role change to=\"active\""
    );
}
