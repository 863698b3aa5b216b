//! The arbiter's role election as a pure state machine: `step(state, event, now) -> (state,
//! actions)`. No clock, no sockets: `now` is monotonic time since the daemon started, and
//! the caller performs the [`Action`]s in order.
//!
//! # Roles and prepends
//! - `Init`: just started, listening for the peer for one detection time (prepend as
//!   rendered: `prepend_standby`).
//! - `Active`: owns the traffic. Steady state `prepend_active` (1). A standby that takes
//!   over from a peer that was *active* uses 0 ("take-over"), so its path beats the dead
//!   active's (1) at once, before BFD or the hold timer withdraws it; it returns to
//!   `prepend_active` as soon as the peer is seen again in a non-active role, or when the
//!   peer is lost while it was *not* active (nothing stale to beat).
//! - `Standby`, `Maintenance`, `Fault`: `prepend_standby`.
//!
//! # Election (non-preemptive)
//! A standby promotes itself when it is eligible (healthy, not in maintenance, past its
//! hold-down) and: the peer is lost (no heartbeat on either path for `heartbeat_interval x
//! heartbeat_misses`); or the peer is alive but not eligible and not active; or both are
//! standby and this node ranks first (higher priority, then lower id); or the active peer
//! is handing over (`igw failover`, maintenance). A healthy peer still in `Init` counts as
//! a standby for the ranking (two nodes started together would otherwise each see the
//! other not eligible and both promote). An active node is never preempted by a
//! better-ranked peer.
//!
//! # Order of actions
//! Promotion: `CommitConntrack`, `ConntrackRole(active)`, then `SetPrepend` (traffic arrives
//! only once the replicated state is in the kernel). Demotion: `SetPrepend(standby)` first,
//! then `ConntrackRole(standby)`. A planned failover is make-before-break: the active keeps
//! its route and announces it is yielding; the peer promotes with 0 prepends (beats the
//! active's 1), and the old active demotes when it sees the peer active.
//!
//! # Half-failure
//! An active whose local health fails (proxy, `inet igw` table, BGP sessions, upstream probe)
//! demotes to `Fault` if the peer is alive and eligible; otherwise it stays active (a
//! degraded gateway beats none) and says why in its reason. Recovery from `Fault` needs
//! `hold_down` of continuous health: a flapping node never becomes eligible (damping).
//!
//! # Split brain (both healthy, every peer path down)
//! Each node sees only itself. The standby takes over with 0 prepends (it cannot tell a dead
//! active from a cut link); the active keeps `prepend_active` (1), or drops from 0 to 1 if it
//! was itself in take-over (its lost peer was standby, so nothing stale to beat). Outcome:
//! the ToR and the upstream send everything to the former standby (0 < 1) — one owner,
//! never two nodes at 0 for longer than the detection time. When a path returns both see
//! two actives: the one with the longer prepend in force demotes (equal: the lower rank),
//! i.e. the node that does not carry the traffic, and the other settles to 1. No operator
//! step is needed.
//!
//! An arbiter that restarts comes up in `Init` and announces `prepend_standby`: restarting
//! the arbiter of the active hands the role to a healthy peer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The timers and numbers the machine needs, from node.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub id: u8,
    pub priority: u8,
    pub prepend_active: u8,
    pub prepend_standby: u8,
    pub heartbeat_interval: Duration,
    /// No heartbeat on any path for this long: the peer is lost.
    pub detect: Duration,
    /// Continuous health needed to leave `Fault`.
    pub hold_down: Duration,
    /// A planned failover that the peer has not taken by then is cancelled.
    pub handover_timeout: Duration,
}

impl Config {
    pub fn from_node(n: &igw_core::NodeConfig) -> Self {
        let hb = Duration::from_millis(u64::from(n.arbiter.heartbeat_interval_ms));
        let detect = hb * n.arbiter.heartbeat_misses;
        Self {
            id: n.node.id,
            priority: n.node.priority,
            prepend_active: n.bgp.prepend_active,
            prepend_standby: n.bgp.prepend_standby,
            heartbeat_interval: hb,
            detect,
            hold_down: Duration::from_millis(u64::from(n.arbiter.hold_down_ms)),
            handover_timeout: (detect * 10).max(Duration::from_secs(2)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Init,
    Active,
    Standby,
    Maintenance,
    Fault,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Maintenance => "maintenance",
            Role::Fault => "fault",
        }
    }
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn from_code(c: u8) -> Option<Role> {
        [
            Role::Init,
            Role::Active,
            Role::Standby,
            Role::Maintenance,
            Role::Fault,
        ]
        .get(usize::from(c))
        .copied()
    }
}

/// Local health, as the probes last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The filter proxy answers its `health` command.
    pub proxy: bool,
    /// `nft list table inet igw` succeeds.
    pub nft: bool,
    /// BGP sessions to the ToRs and the upstream are established.
    pub bgp: bool,
    /// The upstream reachability probe answers.
    pub upstream: bool,
}

impl Health {
    pub const OK: Health = Health {
        proxy: true,
        nft: true,
        bgp: true,
        upstream: true,
    };
    pub fn ok(&self) -> bool {
        self.proxy && self.nft && self.bgp && self.upstream
    }
    /// What is failing, for reasons and logs.
    pub fn failing(&self) -> String {
        let mut v = Vec::new();
        for (ok, n) in [
            (self.proxy, "proxy"),
            (self.nft, "nft table"),
            (self.bgp, "bgp sessions"),
            (self.upstream, "upstream probe"),
        ] {
            if !ok {
                v.push(n);
            }
        }
        v.join(", ")
    }
    pub fn bits(&self) -> u8 {
        u8::from(self.proxy)
            | u8::from(self.nft) << 1
            | u8::from(self.bgp) << 2
            | u8::from(self.upstream) << 3
    }
    pub fn from_bits(b: u8) -> Health {
        Health {
            proxy: b & 1 != 0,
            nft: b & 2 != 0,
            bgp: b & 4 != 0,
            upstream: b & 8 != 0,
        }
    }
}

/// The two heartbeat paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HbPath {
    Sync,
    Fabric,
}

/// What a node says about itself in every heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: u8,
    pub priority: u8,
    pub role: Role,
    pub health: Health,
    /// Healthy, not in maintenance, past hold-down: may become active.
    pub eligible: bool,
    /// Active and handing over (planned failover or maintenance).
    pub yielding: bool,
    /// Prepend count in force.
    pub prepend: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Timer tick (the driver ticks every heartbeat interval).
    Tick,
    Health(Health),
    Heartbeat(HbPath, PeerStatus),
    /// `igw failover`: hand the active role to the peer.
    Failover,
    /// `igw maintenance on|off`.
    Maintenance(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Move the replicated conntrack state into the kernel (before attracting traffic).
    CommitConntrack,
    /// Tell conntrack-sync its role (`true`: active).
    ConntrackRole(bool),
    /// Set the role route-maps' AS-path prepend count.
    SetPrepend(u8),
    /// Send a heartbeat now (role changed), besides the periodic ones.
    SendHeartbeat,
    /// Answer to an operator command.
    Reply(Result<String, String>),
    /// A role change, to log and count.
    RoleChanged {
        from: Role,
        to: Role,
        reason: String,
    },
}

/// The arbiter's whole state. Cheap to clone; the driver keeps one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    pub role: Role,
    pub reason: String,
    /// Prepend count in force (as last ordered).
    pub prepend: u8,
    /// 0-prepend take-over in force (see the module doc).
    pub takeover: bool,
    pub health: Health,
    /// Since when health is continuously good.
    #[serde(skip)]
    pub healthy_since: Option<Duration>,
    pub maintenance: bool,
    /// Handing over until then.
    #[serde(skip)]
    pub yielding_until: Option<Duration>,
    /// Last heartbeat per path (sync, fabric).
    #[serde(skip)]
    pub last_seen: [Option<Duration>; 2],
    pub peer: Option<PeerStatus>,
    #[serde(skip)]
    pub started: Duration,
}

impl State {
    /// A node that just started: `Init`, prepend as rendered, health unknown (bad).
    pub fn new(cfg: &Config, now: Duration) -> Self {
        Self {
            role: Role::Init,
            reason: "starting: listening for the peer".into(),
            prepend: cfg.prepend_standby,
            takeover: false,
            health: Health {
                proxy: false,
                nft: false,
                bgp: false,
                upstream: false,
            },
            healthy_since: None,
            maintenance: false,
            yielding_until: None,
            last_seen: [None, None],
            peer: None,
            started: now,
        }
    }

    /// Whether a heartbeat arrived on `path` within the detection time.
    pub fn path_alive(&self, cfg: &Config, path: HbPath, now: Duration) -> bool {
        let i = path as usize;
        self.last_seen[i].is_some_and(|t| now.saturating_sub(t) < cfg.detect)
    }

    pub fn peer_alive(&self, cfg: &Config, now: Duration) -> bool {
        self.path_alive(cfg, HbPath::Sync, now) || self.path_alive(cfg, HbPath::Fabric, now)
    }

    /// When the peer will count as lost if nothing more arrives: the latest heartbeat on
    /// any path plus the detection time. `None` when no heartbeat was ever seen. The driver
    /// wakes at this instant and sends a `Tick`, so detection does not wait for the next
    /// periodic tick (up to one heartbeat interval later).
    pub fn peer_lost_at(&self, cfg: &Config) -> Option<Duration> {
        self.last_seen
            .iter()
            .flatten()
            .max()
            .map(|t| *t + cfg.detect)
    }

    fn damped(&self, cfg: &Config, now: Duration) -> bool {
        match self.healthy_since {
            None => true,
            // Only a node recovering from Fault waits out the hold-down.
            Some(t) => self.role == Role::Fault && now.saturating_sub(t) < cfg.hold_down,
        }
    }

    fn eligible(&self, cfg: &Config, now: Duration) -> bool {
        self.health.ok()
            && !self.maintenance
            && !self.damped(cfg, now)
            && matches!(self.role, Role::Active | Role::Standby)
    }

    /// What this node says in its heartbeats.
    pub fn status(&self, cfg: &Config, now: Duration) -> PeerStatus {
        PeerStatus {
            id: cfg.id,
            priority: cfg.priority,
            role: self.role,
            health: self.health,
            eligible: self.eligible(cfg, now),
            yielding: self.yielding_until.is_some(),
            prepend: self.prepend,
        }
    }

    /// The peer, if alive.
    fn live_peer(&self, cfg: &Config, now: Duration) -> Option<PeerStatus> {
        self.peer.filter(|_| self.peer_alive(cfg, now))
    }

    /// Whether this node ranks before the peer (higher priority, then lower id).
    fn outranks(cfg: &Config, p: &PeerStatus) -> bool {
        (cfg.priority, std::cmp::Reverse(cfg.id)) > (p.priority, std::cmp::Reverse(p.id))
    }

    /// One step of the machine.
    pub fn step(mut self, cfg: &Config, ev: Event, now: Duration) -> (State, Vec<Action>) {
        let mut acts = Vec::new();
        match ev {
            Event::Tick => {}
            Event::Health(h) => {
                if h.ok() {
                    if self.healthy_since.is_none() {
                        self.healthy_since = Some(now);
                    }
                } else {
                    self.healthy_since = None;
                }
                self.health = h;
            }
            Event::Heartbeat(path, ps) => {
                // A peer lost while it was active is remembered as such until it speaks.
                self.last_seen[path as usize] = Some(now);
                self.peer = Some(ps);
            }
            Event::Failover => {
                let r = self.request_failover(cfg, now);
                if r.is_ok() {
                    acts.push(Action::SendHeartbeat);
                }
                acts.push(Action::Reply(r));
            }
            Event::Maintenance(on) => {
                self.maintenance = on;
                acts.push(Action::Reply(Ok(format!(
                    "maintenance {}",
                    if on { "on" } else { "off" }
                ))));
            }
        }
        self.decide(cfg, now, &mut acts);
        (self, acts)
    }

    fn request_failover(&mut self, cfg: &Config, now: Duration) -> Result<String, String> {
        if self.role != Role::Active {
            return Err(format!("this node is {}, not active", self.role.as_str()));
        }
        match self.live_peer(cfg, now) {
            None => Err("refused: the peer is not reachable (no heartbeat on any path)".into()),
            Some(p) if !p.eligible => Err(format!(
                "refused: the peer is not healthy ({}: {})",
                p.role.as_str(),
                if p.health.ok() {
                    "maintenance or hold-down".to_string()
                } else {
                    p.health.failing()
                }
            )),
            Some(_) => {
                self.yielding_until = Some(now + cfg.handover_timeout);
                Ok("handing over to the peer".into())
            }
        }
    }

    fn set_role(&mut self, to: Role, reason: String, acts: &mut Vec<Action>) {
        let from = self.role;
        self.role = to;
        self.reason = reason.clone();
        acts.push(Action::RoleChanged { from, to, reason });
        acts.push(Action::SendHeartbeat);
    }

    fn promote(&mut self, cfg: &Config, takeover: bool, reason: String, acts: &mut Vec<Action>) {
        acts.push(Action::CommitConntrack);
        acts.push(Action::ConntrackRole(true));
        let n = if takeover { 0 } else { cfg.prepend_active };
        acts.push(Action::SetPrepend(n));
        self.prepend = n;
        self.takeover = takeover;
        self.yielding_until = None;
        self.set_role(Role::Active, reason, acts);
    }

    fn demote(&mut self, cfg: &Config, to: Role, reason: String, acts: &mut Vec<Action>) {
        let was_active = self.role == Role::Active;
        if self.prepend != cfg.prepend_standby || self.role == Role::Init {
            acts.push(Action::SetPrepend(cfg.prepend_standby));
            self.prepend = cfg.prepend_standby;
        }
        if was_active || self.role == Role::Init {
            acts.push(Action::ConntrackRole(false));
        }
        self.takeover = false;
        self.yielding_until = None;
        self.set_role(to, reason, acts);
    }

    fn decide(&mut self, cfg: &Config, now: Duration, acts: &mut Vec<Action>) {
        let peer = self.live_peer(cfg, now);
        let peer_eligible = peer.is_some_and(|p| p.eligible);
        let peer_active = peer.filter(|p| p.role == Role::Active);
        let healthy = self.health.ok();
        match self.role {
            Role::Init => {
                if !healthy && (peer.is_some() || now.saturating_sub(self.started) >= cfg.detect) {
                    let r = format!("starting unhealthy: {}", self.health.failing());
                    self.demote(cfg, Role::Fault, r, acts);
                } else if self.maintenance {
                    self.demote(cfg, Role::Maintenance, "maintenance on".into(), acts);
                } else if peer.is_some() || now.saturating_sub(self.started) >= cfg.detect {
                    self.demote(cfg, Role::Standby, "started".into(), acts);
                    self.decide(cfg, now, acts);
                }
            }
            Role::Active => {
                if let Some(until) = self.yielding_until {
                    if peer_active.is_some() {
                        let (to, why) = if self.maintenance {
                            (Role::Maintenance, "maintenance on: peer took over")
                        } else {
                            (Role::Standby, "planned failover: peer took over")
                        };
                        self.demote(cfg, to, why.into(), acts);
                        return;
                    }
                    if now >= until {
                        self.yielding_until = None;
                        if self.maintenance {
                            let r = "maintenance on: peer did not take over in time".into();
                            self.demote(cfg, Role::Maintenance, r, acts);
                        } else {
                            self.reason =
                                "failover cancelled: the peer did not take over in time".into();
                        }
                        return;
                    }
                    if !peer_eligible {
                        // The peer failed during the handover: keep the traffic.
                        self.yielding_until = None;
                        if !self.maintenance {
                            self.reason = "failover cancelled: the peer became unavailable".into();
                            return;
                        }
                    } else {
                        return;
                    }
                }
                if self.maintenance {
                    if peer_eligible {
                        self.yielding_until = Some(now + cfg.handover_timeout);
                        self.reason = "maintenance on: handing over to the peer".into();
                        acts.push(Action::SendHeartbeat);
                    } else {
                        self.demote(
                            cfg,
                            Role::Maintenance,
                            "maintenance on (peer unavailable: nothing takes over)".into(),
                            acts,
                        );
                    }
                    return;
                }
                if !healthy {
                    if peer_eligible {
                        let r = format!("half-failure ({}), peer healthy", self.health.failing());
                        self.demote(cfg, Role::Fault, r, acts);
                    } else {
                        let r = format!(
                            "unhealthy ({}) but the peer cannot take over",
                            self.health.failing()
                        );
                        if self.reason != r {
                            self.reason = r;
                        }
                    }
                    return;
                }
                if let Some(p) = peer_active {
                    if p.yielding {
                        return; // the peer hands over to us; it demotes when it sees us
                    }
                    let lose = p.prepend < self.prepend
                        || (p.prepend == self.prepend && !Self::outranks(cfg, &p));
                    if lose {
                        let r = format!(
                            "dual active resolved: peer keeps the traffic (prepend {} vs {})",
                            p.prepend, self.prepend
                        );
                        self.demote(cfg, Role::Standby, r, acts);
                    }
                    return;
                }
                if self.takeover {
                    let peer_back = peer.is_some(); // alive and not active
                    let lost_standby =
                        peer.is_none() && self.peer.is_some_and(|p| p.role != Role::Active);
                    if peer_back || lost_standby {
                        self.takeover = false;
                        self.prepend = cfg.prepend_active;
                        acts.push(Action::SetPrepend(cfg.prepend_active));
                        self.reason = if peer_back {
                            "steady: peer back as standby".into()
                        } else {
                            "steady: peer lost while standby".into()
                        };
                    }
                }
            }
            Role::Standby => {
                if !healthy {
                    let r = format!("unhealthy: {}", self.health.failing());
                    self.demote(cfg, Role::Fault, r, acts);
                    return;
                }
                if self.maintenance {
                    self.demote(cfg, Role::Maintenance, "maintenance on".into(), acts);
                    return;
                }
                if !self.eligible(cfg, now) {
                    return;
                }
                match peer {
                    None => {
                        let was_active = self.peer.is_some_and(|p| p.role == Role::Active);
                        if was_active {
                            self.promote(
                                cfg,
                                true,
                                "peer lost while active: take-over".into(),
                                acts,
                            );
                        } else {
                            self.promote(cfg, false, "no active peer".into(), acts);
                        }
                    }
                    Some(p) if p.role == Role::Active => {
                        if p.yielding {
                            self.promote(cfg, true, "planned failover from the peer".into(), acts);
                        }
                    }
                    Some(p) if p.role == Role::Init && p.health.ok() => {
                        // A starting peer settles within one detection time; until then
                        // rank decides, so two nodes started together do not both promote
                        // (each seeing the other in Init, hence not eligible).
                        if Self::outranks(cfg, &p) {
                            let r = "election: peer starting, this node ranks first".into();
                            self.promote(cfg, false, r, acts);
                        }
                    }
                    Some(p) if !p.eligible => {
                        let r = format!("peer not eligible ({})", p.role.as_str());
                        self.promote(cfg, false, r, acts);
                    }
                    Some(p) => {
                        if p.role == Role::Standby && Self::outranks(cfg, &p) {
                            self.promote(
                                cfg,
                                false,
                                "election: both standby, this node ranks first".into(),
                                acts,
                            );
                        }
                    }
                }
            }
            Role::Maintenance => {
                if !self.maintenance {
                    self.demote(cfg, Role::Standby, "maintenance off".into(), acts);
                    self.decide(cfg, now, acts);
                }
            }
            Role::Fault => {
                if healthy && !self.damped(cfg, now) {
                    let r = format!("healthy for {} ms", cfg.hold_down.as_millis());
                    self.demote(cfg, Role::Standby, r, acts);
                    self.decide(cfg, now, acts);
                } else if healthy {
                    self.reason = "recovering: hold-down".into();
                } else {
                    self.reason = format!("unhealthy: {}", self.health.failing());
                }
            }
        }
    }
}
