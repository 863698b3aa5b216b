//! Every transition of the election machine, as a table: a starting situation, one event,
//! the role and the exact actions expected (order included).

use std::time::Duration;

use igw_arbiter::machine::{Action, Config, Event, HbPath, Health, PeerStatus, Role, State};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn cfg() -> Config {
    Config {
        id: 1,
        priority: 200,
        prepend_active: 1,
        prepend_standby: 3,
        heartbeat_interval: MS(50),
        detect: MS(150),
        hold_down: MS(2000),
        handover_timeout: MS(2000),
    }
}

fn peer(role: Role) -> PeerStatus {
    let prepend = match role {
        Role::Active => 1,
        _ => 3,
    };
    PeerStatus {
        id: 2,
        priority: 100,
        role,
        health: Health::OK,
        eligible: matches!(role, Role::Active | Role::Standby),
        yielding: false,
        prepend,
    }
}

const SICK: Health = Health {
    proxy: false,
    nft: true,
    bgp: true,
    upstream: true,
};

/// A node at t = 10 s in `role`, healthy since t = 0, having heard `p` at t = 10 s on the
/// sync path (or never).
fn at(role: Role, p: Option<PeerStatus>) -> State {
    let c = cfg();
    let mut s = State::new(&c, MS(0));
    s.role = role;
    s.health = Health::OK;
    s.healthy_since = Some(MS(0));
    s.prepend = match role {
        Role::Active => 1,
        _ => 3,
    };
    s.reason = "test".into();
    if let Some(p) = p {
        s.peer = Some(p);
        s.last_seen = [Some(MS(10_000)), None];
    }
    s
}

fn promoted(n: u8) -> Vec<Action> {
    vec![
        Action::CommitConntrack,
        Action::ConntrackRole(true),
        Action::SetPrepend(n),
    ]
}

fn demoted() -> Vec<Action> {
    vec![Action::SetPrepend(3), Action::ConntrackRole(false)]
}

struct Case {
    name: &'static str,
    start: State,
    ev: Event,
    now: u64,
    role: Role,
    /// Actions other than RoleChanged and SendHeartbeat, in order.
    acts: Vec<Action>,
    prepend: u8,
}

fn run(cases: Vec<Case>) {
    let c = cfg();
    for case in cases {
        let before = case.start.role;
        let (s, acts) = case.start.step(&c, case.ev.clone(), MS(case.now));
        let core: Vec<Action> = acts
            .iter()
            .filter(|a| {
                !matches!(
                    a,
                    Action::RoleChanged { .. } | Action::SendHeartbeat | Action::Reply(_)
                )
            })
            .cloned()
            .collect();
        assert_eq!(
            s.role, case.role,
            "{}: role (reason: {})",
            case.name, s.reason
        );
        assert_eq!(core, case.acts, "{}: actions {acts:?}", case.name);
        assert_eq!(s.prepend, case.prepend, "{}: prepend in force", case.name);
        let changed = acts.iter().any(|a| matches!(a, Action::RoleChanged { .. }));
        assert_eq!(
            changed,
            before != s.role,
            "{}: RoleChanged iff the role changed",
            case.name
        );
        if changed {
            assert!(
                acts.contains(&Action::SendHeartbeat),
                "{}: a role change is announced",
                case.name
            );
        }
    }
}

#[test]
fn init_transitions() {
    let c = cfg();
    let fresh = |h: Health| {
        let mut s = State::new(&c, MS(0));
        s.health = h;
        s.healthy_since = h.ok().then_some(MS(0));
        s
    };
    let mut with_peer = fresh(Health::OK);
    with_peer.peer = Some(peer(Role::Active));
    with_peer.last_seen = [Some(MS(100)), None];
    let mut with_standby = fresh(Health::OK);
    with_standby.peer = Some(peer(Role::Standby));
    with_standby.last_seen = [Some(MS(100)), None];
    let mut maint = fresh(Health::OK);
    maint.maintenance = true;
    run(vec![
        Case {
            name: "init waits one detection time",
            start: fresh(Health::OK),
            ev: Event::Tick,
            now: 100,
            role: Role::Init,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "init, alone after detection: active at prepend_active",
            start: fresh(Health::OK),
            ev: Event::Tick,
            now: 150,
            role: Role::Active,
            acts: [demoted(), promoted(1)].concat(),
            prepend: 1,
        },
        Case {
            name: "init, peer active: standby",
            start: with_peer,
            ev: Event::Tick,
            now: 100,
            role: Role::Standby,
            acts: demoted(),
            prepend: 3,
        },
        Case {
            name: "init, peer standby, this node ranks first: active",
            start: with_standby,
            ev: Event::Tick,
            now: 100,
            role: Role::Active,
            acts: [demoted(), promoted(1)].concat(),
            prepend: 1,
        },
        Case {
            name: "init unhealthy: fault",
            start: fresh(SICK),
            ev: Event::Tick,
            now: 150,
            role: Role::Fault,
            acts: demoted(),
            prepend: 3,
        },
        Case {
            name: "init in maintenance",
            start: maint,
            ev: Event::Tick,
            now: 10,
            role: Role::Maintenance,
            acts: demoted(),
            prepend: 3,
        },
    ]);
}

#[test]
fn standby_transitions() {
    let mut yielding = peer(Role::Active);
    yielding.yielding = true;
    let mut lower = peer(Role::Standby);
    lower.priority = 250;
    let mut same_prio_lower_id = peer(Role::Standby);
    same_prio_lower_id.priority = 200;
    same_prio_lower_id.id = 0;
    let mut lost_standby = at(Role::Standby, Some(peer(Role::Standby)));
    lost_standby.last_seen = [Some(MS(9_000)), Some(MS(9_000))];
    let mut damped = at(Role::Standby, Some(peer(Role::Fault)));
    damped.maintenance = true;
    run(vec![
        Case {
            name: "standby, peer active: stays",
            start: at(Role::Standby, Some(peer(Role::Active))),
            ev: Event::Tick,
            now: 10_100,
            role: Role::Standby,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "standby, active peer lost: take-over at 0",
            start: at(Role::Standby, Some(peer(Role::Active))),
            ev: Event::Tick,
            now: 10_150,
            role: Role::Active,
            acts: promoted(0),
            prepend: 0,
        },
        Case {
            name: "standby, peer lost while standby: active at 1",
            start: lost_standby,
            ev: Event::Tick,
            now: 10_000,
            role: Role::Active,
            acts: promoted(1),
            prepend: 1,
        },
        Case {
            name: "standby, peer hands over: promote at 0 (make before break)",
            start: at(Role::Standby, Some(peer(Role::Active))),
            ev: Event::Heartbeat(HbPath::Fabric, yielding),
            now: 10_050,
            role: Role::Active,
            acts: promoted(0),
            prepend: 0,
        },
        Case {
            name: "standby, peer faulty: promote at 1",
            start: at(Role::Standby, Some(peer(Role::Active))),
            ev: Event::Heartbeat(HbPath::Sync, peer(Role::Fault)),
            now: 10_050,
            role: Role::Active,
            acts: promoted(1),
            prepend: 1,
        },
        Case {
            name: "standby, peer in maintenance: promote at 1",
            start: at(Role::Standby, None),
            ev: Event::Heartbeat(HbPath::Sync, peer(Role::Maintenance)),
            now: 10_050,
            role: Role::Active,
            acts: promoted(1),
            prepend: 1,
        },
        Case {
            name: "both standby, this node ranks first (priority)",
            start: at(Role::Standby, Some(peer(Role::Standby))),
            ev: Event::Tick,
            now: 10_050,
            role: Role::Active,
            acts: promoted(1),
            prepend: 1,
        },
        Case {
            name: "peer starting (init, healthy), this node ranks first: promote at 1",
            start: at(Role::Standby, None),
            ev: Event::Heartbeat(HbPath::Sync, peer(Role::Init)),
            now: 10_050,
            role: Role::Active,
            acts: promoted(1),
            prepend: 1,
        },
        Case {
            name: "peer starting (init, healthy), peer ranks first: wait for it",
            start: at(Role::Standby, None),
            ev: Event::Heartbeat(HbPath::Sync, {
                let mut p = peer(Role::Init);
                p.priority = 250;
                p
            }),
            now: 10_050,
            role: Role::Standby,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "peer starting unhealthy: promote at 1",
            start: at(Role::Standby, None),
            ev: Event::Heartbeat(HbPath::Sync, {
                let mut p = peer(Role::Init);
                p.priority = 250;
                p.health = SICK;
                p
            }),
            now: 10_050,
            role: Role::Active,
            acts: promoted(1),
            prepend: 1,
        },
        Case {
            name: "both standby, peer has higher priority: wait",
            start: at(Role::Standby, Some(lower)),
            ev: Event::Tick,
            now: 10_050,
            role: Role::Standby,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "both standby, same priority, peer has lower id: wait",
            start: at(Role::Standby, Some(same_prio_lower_id)),
            ev: Event::Tick,
            now: 10_050,
            role: Role::Standby,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "standby unhealthy: fault",
            start: at(Role::Standby, Some(peer(Role::Active))),
            ev: Event::Health(SICK),
            now: 10_050,
            role: Role::Fault,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "standby, maintenance on",
            start: at(Role::Standby, Some(peer(Role::Active))),
            ev: Event::Maintenance(true),
            now: 10_050,
            role: Role::Maintenance,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "maintenance, peer gone: stays",
            start: damped,
            ev: Event::Tick,
            now: 20_000,
            role: Role::Maintenance,
            acts: vec![],
            prepend: 3,
        },
    ]);
}

#[test]
fn active_transitions() {
    let mut takeover = at(Role::Active, Some(peer(Role::Active)));
    takeover.prepend = 0;
    takeover.takeover = true;
    takeover.last_seen = [Some(MS(5_000)), None]; // peer lost long ago, it was active
    let takeover_back = takeover.clone();
    let mut takeover_lost_standby = takeover.clone();
    takeover_lost_standby.peer = Some(peer(Role::Standby));
    let mut dual_lower = peer(Role::Active);
    dual_lower.prepend = 0;
    let mut dual_tie_better = peer(Role::Active);
    dual_tie_better.priority = 250;
    let mut dual_yielding = peer(Role::Active);
    dual_yielding.yielding = true;
    let mut yielding = at(Role::Active, Some(peer(Role::Standby)));
    yielding.yielding_until = Some(MS(12_000));
    let yielding_timeout = yielding.clone();
    let yielding_peer_fails = yielding.clone();
    let mut maint_yield = yielding.clone();
    maint_yield.maintenance = true;
    let maint_yield_timeout = maint_yield.clone();
    run(vec![
        Case {
            name: "active, peer standby: stays",
            start: at(Role::Active, Some(peer(Role::Standby))),
            ev: Event::Tick,
            now: 10_050,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "active, peer lost: stays active (it may be the survivor)",
            start: at(Role::Active, Some(peer(Role::Standby))),
            ev: Event::Tick,
            now: 11_000,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "half-failure, peer healthy: fault, prepend first",
            start: at(Role::Active, Some(peer(Role::Standby))),
            ev: Event::Health(SICK),
            now: 10_050,
            role: Role::Fault,
            acts: demoted(),
            prepend: 3,
        },
        Case {
            name: "half-failure, peer unavailable: stays active",
            start: at(Role::Active, Some(peer(Role::Fault))),
            ev: Event::Health(SICK),
            now: 10_050,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "half-failure, peer lost: stays active",
            start: at(Role::Active, None),
            ev: Event::Health(SICK),
            now: 10_050,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "take-over, peer back as standby: steady at 1",
            start: takeover_back,
            ev: Event::Heartbeat(HbPath::Sync, peer(Role::Init)),
            now: 10_050,
            role: Role::Active,
            acts: vec![Action::SetPrepend(1)],
            prepend: 1,
        },
        Case {
            name: "take-over, dead active stays away: hold 0",
            start: takeover,
            ev: Event::Tick,
            now: 10_050,
            role: Role::Active,
            acts: vec![],
            prepend: 0,
        },
        Case {
            name: "take-over, lost peer was standby (split brain): back to 1",
            start: takeover_lost_standby,
            ev: Event::Tick,
            now: 10_050,
            role: Role::Active,
            acts: vec![Action::SetPrepend(1)],
            prepend: 1,
        },
        Case {
            name: "dual active, peer at 0: this node demotes",
            start: at(Role::Active, None),
            ev: Event::Heartbeat(HbPath::Sync, dual_lower),
            now: 10_050,
            role: Role::Standby,
            acts: demoted(),
            prepend: 3,
        },
        Case {
            name: "dual active, equal prepend, this node ranks first: stays",
            start: at(Role::Active, None),
            ev: Event::Heartbeat(HbPath::Sync, peer(Role::Active)),
            now: 10_050,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "dual active, equal prepend, peer ranks first: demotes",
            start: at(Role::Active, None),
            ev: Event::Heartbeat(HbPath::Sync, dual_tie_better),
            now: 10_050,
            role: Role::Standby,
            acts: demoted(),
            prepend: 3,
        },
        Case {
            name: "dual active, peer yielding: stays",
            start: at(Role::Active, None),
            ev: Event::Heartbeat(HbPath::Sync, dual_yielding),
            now: 10_050,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "failover accepted: yields, keeps the route",
            start: at(Role::Active, Some(peer(Role::Standby))),
            ev: Event::Failover,
            now: 10_050,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "yielding, peer took over: standby",
            start: yielding,
            ev: Event::Heartbeat(HbPath::Sync, dual_lower),
            now: 10_100,
            role: Role::Standby,
            acts: demoted(),
            prepend: 3,
        },
        Case {
            name: "yielding, timeout: stays active",
            start: yielding_timeout,
            ev: Event::Tick,
            now: 12_000,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "yielding, peer fails: cancelled",
            start: yielding_peer_fails,
            ev: Event::Heartbeat(HbPath::Sync, peer(Role::Fault)),
            now: 10_100,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "maintenance on, peer healthy: hand over first",
            start: at(Role::Active, Some(peer(Role::Standby))),
            ev: Event::Maintenance(true),
            now: 10_050,
            role: Role::Active,
            acts: vec![],
            prepend: 1,
        },
        Case {
            name: "maintenance on, peer unavailable: maintenance now",
            start: at(Role::Active, None),
            ev: Event::Maintenance(true),
            now: 10_050,
            role: Role::Maintenance,
            acts: demoted(),
            prepend: 3,
        },
        Case {
            name: "maintenance handover done",
            start: maint_yield,
            ev: Event::Heartbeat(HbPath::Sync, dual_lower),
            now: 10_100,
            role: Role::Maintenance,
            acts: demoted(),
            prepend: 3,
        },
        Case {
            name: "maintenance handover timeout: maintenance anyway",
            start: maint_yield_timeout,
            ev: Event::Tick,
            now: 12_000,
            role: Role::Maintenance,
            acts: demoted(),
            prepend: 3,
        },
    ]);
}

#[test]
fn fault_and_maintenance_transitions() {
    let mut fault = at(Role::Fault, Some(peer(Role::Active)));
    fault.health = SICK;
    fault.healthy_since = None;
    let mut recovering = fault.clone();
    recovering.health = Health::OK;
    recovering.healthy_since = Some(MS(8_000));
    let mut recovering_alone = recovering.clone();
    recovering_alone.peer = Some(peer(Role::Fault));
    let mut maint = at(Role::Maintenance, Some(peer(Role::Active)));
    maint.maintenance = true;
    let mut maint_alone = maint.clone();
    maint_alone.peer = Some(peer(Role::Standby));
    maint_alone.last_seen = [Some(MS(1_000)), None];
    run(vec![
        Case {
            name: "fault, health back: hold-down",
            start: fault.clone(),
            ev: Event::Health(Health::OK),
            now: 10_050,
            role: Role::Fault,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "fault, still sick",
            start: fault,
            ev: Event::Tick,
            now: 20_000,
            role: Role::Fault,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "fault, healthy for hold-down, peer active: standby",
            start: recovering,
            ev: Event::Tick,
            now: 10_050,
            role: Role::Standby,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "fault, healthy for hold-down, peer faulty: standby then active",
            start: recovering_alone,
            ev: Event::Tick,
            now: 10_050,
            role: Role::Active,
            acts: promoted(1),
            prepend: 1,
        },
        Case {
            name: "maintenance off, peer active: standby",
            start: maint,
            ev: Event::Maintenance(false),
            now: 10_050,
            role: Role::Standby,
            acts: vec![],
            prepend: 3,
        },
        Case {
            name: "maintenance off, no peer: standby then active",
            start: maint_alone,
            ev: Event::Maintenance(false),
            now: 10_050,
            role: Role::Active,
            acts: promoted(1),
            prepend: 1,
        },
    ]);
}

#[test]
fn failover_refused_with_a_reason() {
    let c = cfg();
    let reply = |s: State| {
        let (_, acts) = s.step(&c, Event::Failover, MS(10_050));
        acts.into_iter().find_map(|a| match a {
            Action::Reply(r) => Some(r),
            _ => None,
        })
    };
    assert!(matches!(
        reply(at(Role::Active, Some(peer(Role::Standby)))),
        Some(Ok(_))
    ));
    let r = reply(at(Role::Active, Some(peer(Role::Fault))))
        .unwrap()
        .unwrap_err();
    assert!(r.contains("not healthy"), "{r}");
    let r = reply(at(Role::Active, None)).unwrap().unwrap_err();
    assert!(r.contains("not reachable"), "{r}");
    let r = reply(at(Role::Standby, Some(peer(Role::Active))))
        .unwrap()
        .unwrap_err();
    assert!(r.contains("not active"), "{r}");
}

/// Two machines wired back to back through a link that can be cut: the split-brain outcome
/// and its self-healing, and a hard failure, end to end in logical time.
#[test]
fn pair_split_brain_and_heal() {
    let ca = cfg();
    let cb = Config {
        id: 2,
        priority: 100,
        ..cfg()
    };
    let mut a = State::new(&ca, MS(0));
    let mut b = State::new(&cb, MS(0));
    let mut t = MS(0);
    let step = |a: &mut State, b: &mut State, t: Duration, link: bool| {
        for (s, c, ev) in [
            (&mut *a, &ca, Event::Health(Health::OK)),
            (&mut *b, &cb, Event::Health(Health::OK)),
        ] {
            let (n, _) = s.clone().step(c, ev, t);
            *s = n;
        }
        if link {
            let (sa, sb) = (a.status(&ca, t), b.status(&cb, t));
            let (n, _) = b.clone().step(&cb, Event::Heartbeat(HbPath::Sync, sa), t);
            *b = n;
            let (n, _) = a.clone().step(&ca, Event::Heartbeat(HbPath::Sync, sb), t);
            *a = n;
        }
    };
    for _ in 0..10 {
        t += MS(50);
        step(&mut a, &mut b, t, true);
    }
    assert_eq!(
        (a.role, a.prepend, b.role, b.prepend),
        (Role::Active, 1, Role::Standby, 3),
        "a: {} b: {}",
        a.reason,
        b.reason
    );
    // Cut every path: b takes over at 0, a keeps 1: one owner.
    for _ in 0..10 {
        t += MS(50);
        step(&mut a, &mut b, t, false);
        assert!(!(a.prepend == 0 && b.prepend == 0), "both unprepended");
    }
    assert_eq!(
        (a.role, a.prepend, b.role, b.prepend),
        (Role::Active, 1, Role::Active, 0)
    );
    // Links back: a (longer prepend) demotes, b settles to 1.
    for _ in 0..10 {
        t += MS(50);
        step(&mut a, &mut b, t, true);
    }
    assert_eq!(
        (a.role, a.prepend, b.role, b.prepend),
        (Role::Standby, 3, Role::Active, 1),
        "a: {} b: {}",
        a.reason,
        b.reason
    );
    // Split again with b active: a takes over at 0, b stays at 1.
    for _ in 0..10 {
        t += MS(50);
        step(&mut a, &mut b, t, false);
    }
    assert_eq!(
        (a.role, a.prepend, b.role, b.prepend),
        (Role::Active, 0, Role::Active, 1)
    );
    for _ in 0..10 {
        t += MS(50);
        step(&mut a, &mut b, t, true);
    }
    assert_eq!(
        (a.role, a.prepend, b.role, b.prepend),
        (Role::Active, 1, Role::Standby, 3)
    );
}

/// The instant the driver must wake to judge the peer lost: the latest heartbeat on any path
/// plus the detection time; at that instant (not a tick later) the take-over happens.
#[test]
fn peer_lost_at_is_the_latest_heartbeat_plus_detect() {
    let c = cfg();
    let table: &[([Option<u64>; 2], Option<u64>)] = &[
        ([None, None], None),
        ([Some(10_000), None], Some(10_150)),
        ([None, Some(9_000)], Some(9_150)),
        ([Some(10_000), Some(10_020)], Some(10_170)),
        ([Some(10_040), Some(10_020)], Some(10_190)),
    ];
    for (seen, want) in table {
        let mut s = at(Role::Standby, Some(peer(Role::Active)));
        s.last_seen = seen.map(|t| t.map(MS));
        assert_eq!(s.peer_lost_at(&c), want.map(MS), "{seen:?}");
        if let Some(w) = want {
            // Just before: still alive; at the instant: lost, and the standby takes over.
            assert!(s.peer_alive(&c, MS(w - 1)), "{seen:?}");
            assert!(!s.peer_alive(&c, MS(*w)), "{seen:?}");
            let (s2, _) = s.clone().step(&c, Event::Tick, MS(*w));
            assert_eq!(s2.role, Role::Active, "{seen:?}");
        }
    }
}
