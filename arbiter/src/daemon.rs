//! The arbiter daemon: the [`machine`](crate::machine) on tokio. One loop owns the state and
//! never waits on the world: heartbeats in, timer ticks, health reports and operator
//! commands become events; the actions the machine returns go, in order, to one executor
//! task, because FRR and conntrack-sync can be slow (a role change over bgpd's vty socket
//! takes ~1 ms, but the vtysh fallback 40-280 ms and a large conntrack commit seconds, longer
//! than the detection time: a loop that waited on them would stop sending heartbeats and be
//! declared dead by its peer).
//!
//! Detection: the loop wakes at the instant the peer's last heartbeat plus the detection time
//! passes (`State::peer_lost_at`), not at the next periodic tick. The daemon runs SCHED_RR
//! (`[arbiter] realtime_priority`, set by `igw arbiter` before the runtime starts) so that a
//! busy node still sends its 20 ms heartbeats on time.
//!
//! Everything that touches the world is behind [`Effects`] (probes and actions; the real
//! ones are in [`crate::edges`]) and [`Outbox`] (heartbeat datagrams; UDP in
//! [`crate::edges`]), so the timers are tested with paused tokio time and in-memory doubles.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use crate::heartbeat::{self, HbError, Heartbeat, ReplayWindow};
use crate::machine::{Action, Config, Event, HbPath, Health, Role, State};
use crate::metrics::Metrics;

/// What one health probe saw: the four checks and, for each failing one, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub health: Health,
    pub problems: Vec<String>,
}

/// What FRR and conntrack-sync have in force now (for reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    pub prepend: Result<u8, String>,
    pub conntrack_active: Result<bool, String>,
}

/// The daemon's effects on the node: probes and the machine's actions. The real
/// implementation runs `vtysh`, `nft` and control-socket calls on the blocking pool.
pub trait Effects: Send + Sync + 'static {
    /// Local health, probed now.
    fn probe(&self) -> impl Future<Output = Probe> + Send;
    /// Performs `CommitConntrack`, `ConntrackRole` or `SetPrepend`; a short description of
    /// what was done, or why it failed.
    fn perform(&self, a: Action) -> impl Future<Output = Result<String, String>> + Send;
    /// What is in force now.
    fn in_force(&self) -> impl Future<Output = InForce> + Send;
}

/// Sends one heartbeat datagram on a path. Must not block (UDP `try_send_to`).
pub trait Outbox: Send + 'static {
    fn send(&self, path: HbPath, msg: &[u8]) -> std::io::Result<()>;
}

/// Operator commands of the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Status,
    Failover,
    Maintenance(bool),
}

/// Everything the loop reacts to besides its own timers.
#[derive(Debug)]
pub enum Input {
    /// A datagram from the heartbeat port: the path its source address belongs to (`None`:
    /// not from the peer's addresses), and its bytes.
    Datagram(Option<HbPath>, Vec<u8>),
    Probe(Probe),
    Control(Command, oneshot::Sender<Result<Value, String>>),
}

/// The daemon's settings (from node.toml).
#[derive(Debug, Clone)]
pub struct Settings {
    pub cfg: Config,
    /// Node name, for status.
    pub name: String,
    /// The pre-shared key (HMAC-SHA256) of heartbeats.
    pub key: Vec<u8>,
    /// Heartbeat paths to send on (the fabric path only when `peer.fabric_address` is set).
    pub paths: Vec<HbPath>,
    pub probe_interval: Duration,
    /// A probe that takes longer counts as failed (a hung FRR is a sick routing plane).
    pub probe_timeout: Duration,
    /// How often the executor, when idle, compares FRR's and conntrack-sync's state with
    /// what it last ordered (an FRR restarted by systemd comes back with the rendered
    /// standby prepend).
    pub reconcile_interval: Duration,
    /// On SIGTERM: how long an active node waits for the peer to take over before it
    /// prepends anyway.
    pub stop_timeout: Duration,
}

impl Settings {
    pub fn from_node(n: &igw_core::NodeConfig, key: Vec<u8>) -> Self {
        let cfg = Config::from_node(n);
        let mut paths = vec![HbPath::Sync];
        if n.peer.fabric_address.is_some() {
            paths.push(HbPath::Fabric);
        }
        let probe_interval = Duration::from_millis(u64::from(n.arbiter.probe_interval_ms));
        Self {
            name: n.node.name.clone(),
            key,
            paths,
            probe_interval,
            probe_timeout: (probe_interval * 5).max(Duration::from_secs(2)),
            reconcile_interval: Duration::from_secs(2),
            stop_timeout: cfg.handover_timeout + cfg.detect,
            cfg,
        }
    }
}

/// The input channel of [`run`].
pub fn channel() -> (mpsc::Sender<Input>, mpsc::Receiver<Input>) {
    mpsc::channel(1024)
}

fn path_name(p: HbPath) -> &'static str {
    match p {
        HbPath::Sync => "sync",
        HbPath::Fabric => "fabric",
    }
}

fn drop_reason(e: &HbError) -> &'static str {
    match e {
        HbError::Length(_) => "length",
        HbError::Magic => "magic",
        HbError::Auth => "auth",
        HbError::Field(_) => "field",
        HbError::Replay { .. } => "replay",
        HbError::Own(_) => "own",
    }
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::CommitConntrack => "commit",
        Action::ConntrackRole(_) => "conntrack_role",
        Action::SetPrepend(_) => "set_prepend",
        Action::SendHeartbeat => "send_heartbeat",
        Action::Reply(_) => "reply",
        Action::RoleChanged { .. } => "role_changed",
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the executor reports for `status`.
#[derive(Debug, Default)]
struct ExecStatus {
    pending: usize,
    /// Last failure: action, error, when (unix seconds).
    last_error: Option<(String, String, f64)>,
    /// Last success per action kind: (detail, unix seconds).
    last_ok: Vec<(String, String, f64)>,
}

/// Logs a line an attacker can trigger at most once per `every` per reason, with the count
/// of what was suppressed.
#[derive(Debug, Default)]
struct RateLimit {
    last: Vec<(&'static str, Instant, u64)>,
}

impl RateLimit {
    fn allow(&mut self, key: &'static str, every: Duration) -> Option<u64> {
        let now = Instant::now();
        match self.last.iter_mut().find(|(k, _, _)| *k == key) {
            None => {
                self.last.push((key, now, 0));
                Some(0)
            }
            Some((_, t, n)) if now.duration_since(*t) >= every => {
                let suppressed = *n;
                *t = now;
                *n = 0;
                Some(suppressed)
            }
            Some((_, _, n)) => {
                *n += 1;
                None
            }
        }
    }
}

struct Core<O: Outbox> {
    set: Settings,
    state: State,
    start: Instant,
    out: O,
    metrics: Arc<Metrics>,
    exec: mpsc::UnboundedSender<Action>,
    exec_status: Arc<Mutex<ExecStatus>>,
    epoch: u64,
    seq: u64,
    window: ReplayWindow,
    problems: Vec<String>,
    since: Instant,
    /// The last role change (from, to, reason, when), for status: the current reason may
    /// since have been refined (e.g. "recovering: hold-down").
    last_change: Option<Value>,
    /// When the loop last ran (stall detection, see [`Core::resume`]).
    last_run: Instant,
    limit: RateLimit,
}

impl<O: Outbox> Core<O> {
    fn now(&self) -> Duration {
        Instant::now().duration_since(self.start)
    }

    /// Called whenever the loop runs. The loop runs at least every heartbeat interval (its
    /// tick); a longer gap means this process did not run (CPU starvation, SIGSTOP), and
    /// that time must not count against the peer: its heartbeats could not be read. The
    /// peer's last-seen times move forward by the stall, so only a peer that stays silent
    /// while this node runs is declared lost.
    fn resume(&mut self) {
        let now = Instant::now();
        let gap = now.duration_since(self.last_run);
        self.last_run = now;
        let hb = self.set.cfg.heartbeat_interval;
        if gap > hb * 2 {
            let lost = gap - hb;
            for t in self.state.last_seen.iter_mut().flatten() {
                *t += lost;
            }
            self.metrics.stalled(lost);
            if let Some(n) = self.limit.allow("stall", Duration::from_secs(10)) {
                warn!(
                    stalled_ms = lost.as_millis() as u64,
                    suppressed = n,
                    "the arbiter did not run for longer than a heartbeat interval (CPU starvation or stopped): peer timers paused for that time"
                );
            }
        }
    }

    fn send_heartbeats(&mut self) {
        let now = self.now();
        let status = self.state.status(&self.set.cfg, now);
        for &p in &self.set.paths {
            self.seq += 1;
            let hb = Heartbeat {
                epoch: self.epoch,
                seq: self.seq,
                status,
            };
            let b = heartbeat::encode(&self.set.key, &hb);
            match self.out.send(p, &b) {
                Ok(()) => self.metrics.hb_sent(path_name(p)),
                Err(e) => {
                    self.metrics.hb_send_error(path_name(p));
                    let key = if p == HbPath::Sync {
                        "send-sync"
                    } else {
                        "send-fabric"
                    };
                    if let Some(n) = self.limit.allow(key, Duration::from_secs(10)) {
                        warn!(path = path_name(p), error = %e, suppressed = n, "cannot send heartbeat");
                    }
                }
            }
        }
    }

    /// One machine step and its actions. Returns the operator reply, if any.
    fn step(&mut self, ev: Event) -> Option<Result<String, String>> {
        let now = self.now();
        let st = std::mem::replace(&mut self.state, State::new(&self.set.cfg, now));
        let (st, acts) = st.step(&self.set.cfg, ev, now);
        self.state = st;
        let mut reply = None;
        let mut beat = false;
        for a in acts {
            match a {
                Action::SendHeartbeat => beat = true,
                Action::Reply(r) => reply = Some(r),
                Action::RoleChanged { from, to, reason } => {
                    info!(
                        from = from.as_str(),
                        to = to.as_str(),
                        reason = %reason,
                        prepend = self.state.prepend,
                        "role change"
                    );
                    self.metrics.role_changed(from, to);
                    self.since = Instant::now();
                    self.last_change = Some(json!({
                        "from": from, "to": to, "reason": reason, "unix": unix_now(),
                    }));
                }
                a
                @ (Action::CommitConntrack | Action::ConntrackRole(_) | Action::SetPrepend(_)) => {
                    if let Action::SetPrepend(n) = a {
                        self.metrics.set_prepend(n);
                    }
                    debug!(action = ?a, "queued");
                    if self.exec.send(a).is_err() {
                        error!("the action executor is gone; actions are not performed");
                    }
                }
            }
        }
        self.metrics
            .set_peer_alive(self.state.peer_alive(&self.set.cfg, now));
        if beat {
            self.send_heartbeats();
        }
        reply
    }

    fn datagram(&mut self, path: Option<HbPath>, b: &[u8]) {
        let Some(path) = path else {
            self.metrics.hb_dropped("source");
            if let Some(n) = self.limit.allow("source", Duration::from_secs(10)) {
                warn!(
                    suppressed = n,
                    "heartbeat from an address that is not the peer's: dropped"
                );
            }
            return;
        };
        match heartbeat::receive(&self.set.key, self.set.cfg.id, &mut self.window, b) {
            Ok(hb) => {
                self.metrics.hb_received(path_name(path));
                self.step(Event::Heartbeat(path, hb.status));
            }
            Err(e) => {
                let reason = drop_reason(&e);
                self.metrics.hb_dropped(reason);
                if let Some(n) = self.limit.allow(reason, Duration::from_secs(10)) {
                    warn!(path = path_name(path), error = %e, suppressed = n, "heartbeat dropped");
                }
            }
        }
    }

    fn status(&self) -> Value {
        let cfg = &self.set.cfg;
        let now = self.now();
        let st = &self.state;
        let own = st.status(cfg, now);
        let ago = |t: Option<Duration>| t.map(|t| now.saturating_sub(t).as_millis() as u64);
        let peer = st.peer.map(|p| {
            json!({
                "alive": st.peer_alive(cfg, now),
                "paths": {
                    "sync": st.path_alive(cfg, HbPath::Sync, now),
                    "fabric": st.path_alive(cfg, HbPath::Fabric, now),
                },
                "last_seen_ms": {
                    "sync": ago(st.last_seen[HbPath::Sync as usize]),
                    "fabric": ago(st.last_seen[HbPath::Fabric as usize]),
                },
                "id": p.id,
                "priority": p.priority,
                "role": p.role,
                "health": p.health,
                "failing": p.health.failing(),
                "eligible": p.eligible,
                "yielding": p.yielding,
                "prepend": p.prepend,
            })
        });
        let ex = self.exec_status.lock().unwrap_or_else(|e| e.into_inner());
        let hb = |f: &dyn Fn(&str) -> u64| json!({"sync": f("sync"), "fabric": f("fabric")});
        let mut dropped = serde_json::Map::new();
        for r in [
            "length", "magic", "auth", "field", "replay", "own", "source", "overload",
        ] {
            dropped.insert(r.into(), self.metrics.dropped(r).into());
        }
        json!({
            "node": self.set.name,
            "id": cfg.id,
            "priority": cfg.priority,
            "role": st.role,
            "reason": st.reason,
            "role_since_s": Instant::now().duration_since(self.since).as_secs_f64(),
            "last_change": self.last_change,
            "prepend": st.prepend,
            "takeover": st.takeover,
            "maintenance": st.maintenance,
            "yielding": own.yielding,
            "eligible": own.eligible,
            "health": st.health,
            "problems": self.problems,
            "peer": peer,
            "timers_ms": {
                "heartbeat": cfg.heartbeat_interval.as_millis() as u64,
                "detect": cfg.detect.as_millis() as u64,
                "hold_down": cfg.hold_down.as_millis() as u64,
                "handover_timeout": cfg.handover_timeout.as_millis() as u64,
            },
            "stalls": self.metrics.stalls(),
            "heartbeats": {
                "sent": hb(&|p| self.metrics.sent(p)),
                "received": hb(&|p| self.metrics.received(p)),
                "dropped": dropped,
            },
            "actions": {
                "pending": ex.pending,
                "last_error": ex.last_error.as_ref().map(|(a, e, t)| json!({"action": a, "error": e, "unix": t})),
                "last_ok": ex.last_ok.iter().map(|(a, d, t)| json!({"action": a, "detail": d, "unix": t})).collect::<Vec<_>>(),
            },
        })
    }

    fn control(&mut self, c: Command) -> Result<Value, String> {
        match c {
            Command::Status => Ok(self.status()),
            Command::Failover => {
                info!("operator: failover requested");
                match self.step(Event::Failover) {
                    Some(Ok(m)) => Ok(json!({"message": m, "role": self.state.role})),
                    Some(Err(e)) => {
                        warn!(reason = %e, "failover refused");
                        Err(e)
                    }
                    None => Err("the state machine gave no answer".into()),
                }
            }
            Command::Maintenance(on) => {
                info!(on, "operator: maintenance");
                match self.step(Event::Maintenance(on)) {
                    Some(Ok(m)) => Ok(
                        json!({"message": m, "role": self.state.role, "reason": self.state.reason}),
                    ),
                    Some(Err(e)) => Err(e),
                    None => Err("the state machine gave no answer".into()),
                }
            }
        }
    }

    /// Reads the datagrams that arrived while the loop waited, then judges the timers: a
    /// late wake-up must not find the peer "silent" with its heartbeats still queued.
    async fn judge_timers(&mut self, rx: &mut mpsc::Receiver<Input>) {
        tokio::task::yield_now().await;
        for _ in 0..256 {
            match rx.try_recv() {
                Ok(i) => self.input(i),
                Err(_) => break,
            }
        }
        self.step(Event::Tick);
    }

    fn input(&mut self, i: Input) {
        match i {
            Input::Datagram(p, b) => self.datagram(p, &b),
            Input::Probe(p) => self.probe(p),
            Input::Control(c, reply) => {
                let r = self.control(c);
                let _ = reply.send(r);
            }
        }
    }

    fn probe(&mut self, p: Probe) {
        if p.health != self.state.health {
            if p.health.ok() {
                info!("local health good");
            } else {
                warn!(failing = %p.health.failing(), problems = ?p.problems, "local health bad");
            }
        }
        self.metrics.set_health(&p.health);
        self.problems = p.problems;
        self.step(Event::Health(p.health));
    }
}

/// Performs the machine's actions one after the other, in the order emitted. A failed
/// `SetPrepend` or `ConntrackRole` is retried with backoff (up to `RETRIES` times, or until
/// a newer order of the same kind supersedes it), then reported and left to reconciliation;
/// a failed conntrack commit is reported and the promotion goes on (a gateway that lost its
/// replicated flows beats no gateway).
async fn executor<E: Effects>(
    effects: Arc<E>,
    mut rx: mpsc::UnboundedReceiver<Action>,
    status: Arc<Mutex<ExecStatus>>,
    metrics: Arc<Metrics>,
    reconcile: Duration,
) {
    const RETRIES: u32 = 5;
    let mut queue: VecDeque<(Action, u32)> = VecDeque::new();
    let mut want_prepend: Option<u8> = None;
    let mut want_active: Option<bool> = None;
    let mut open = true;
    loop {
        if queue.is_empty() {
            if !open {
                return;
            }
            tokio::select! {
                a = rx.recv() => match a {
                    Some(a) => queue.push_back((a, 0)),
                    None => open = false,
                },
                _ = tokio::time::sleep(reconcile) => {
                    let f = effects.in_force().await;
                    if let (Some(w), Ok(p)) = (want_prepend, &f.prepend)
                        && *p != w
                    {
                        warn!(in_force = p, want = w, "FRR's prepend is not the ordered one (FRR restarted?): setting it again");
                        queue.push_back((Action::SetPrepend(w), 0));
                    }
                    if let (Some(w), Ok(a)) = (want_active, &f.conntrack_active)
                        && *a != w
                    {
                        warn!(in_force = a, want = w, "conntrack-sync's role is not the ordered one (restarted?): setting it again");
                        queue.push_back((Action::ConntrackRole(w), 0));
                    }
                }
            }
            continue;
        }
        while let Ok(a) = rx.try_recv() {
            queue.push_back((a, 0));
        }
        let Some((a, attempt)) = queue.pop_front() else {
            continue;
        };
        status.lock().unwrap_or_else(|e| e.into_inner()).pending = queue.len() + 1;
        match a {
            Action::SetPrepend(n) => want_prepend = Some(n),
            Action::ConntrackRole(b) => want_active = Some(b),
            _ => {}
        }
        let name = action_name(&a);
        let t = Instant::now();
        let r = effects.perform(a.clone()).await;
        let took = t.elapsed();
        metrics.action(name, took, r.is_ok());
        {
            let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
            st.pending = queue.len();
            match &r {
                Ok(detail) => {
                    st.last_ok.retain(|(n, _, _)| n != name);
                    st.last_ok
                        .push((name.to_string(), detail.clone(), unix_now()));
                }
                Err(e) => st.last_error = Some((format!("{a:?}"), e.clone(), unix_now())),
            }
        }
        match r {
            Ok(detail) => {
                info!(action = ?a, took_ms = took.as_millis() as u64, %detail, "action done");
            }
            Err(e) => {
                let same_kind_later = queue
                    .iter()
                    .any(|(b, _)| std::mem::discriminant(b) == std::mem::discriminant(&a));
                let retry = matches!(a, Action::SetPrepend(_) | Action::ConntrackRole(_))
                    && attempt < RETRIES
                    && !same_kind_later;
                if retry {
                    let backoff = Duration::from_millis(200 << attempt.min(4));
                    error!(action = ?a, error = %e, attempt = attempt + 1, retry_in_ms = backoff.as_millis() as u64, "action failed; retrying");
                    tokio::time::sleep(backoff).await;
                    queue.push_front((a, attempt + 1));
                } else if same_kind_later {
                    error!(action = ?a, error = %e, "action failed; a newer order of the same kind follows");
                } else {
                    error!(action = ?a, error = %e, attempts = attempt + 1, "action failed; giving up (reconciliation retries a prepend or role)");
                }
            }
        }
    }
}

async fn prober<E: Effects>(
    effects: Arc<E>,
    tx: mpsc::Sender<Input>,
    every: Duration,
    limit: Duration,
) {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t.tick().await; // the first probe was done before the loop started
    loop {
        t.tick().await;
        let p = probe_bounded(&*effects, limit).await;
        if tx.send(Input::Probe(p)).await.is_err() {
            return;
        }
    }
}

async fn probe_bounded<E: Effects>(effects: &E, limit: Duration) -> Probe {
    match tokio::time::timeout(limit, effects.probe()).await {
        Ok(p) => p,
        Err(_) => Probe {
            health: Health {
                proxy: false,
                nft: false,
                bgp: false,
                upstream: false,
            },
            problems: vec![format!(
                "probe did not finish within {} ms",
                limit.as_millis()
            )],
        },
    }
}

/// Runs the arbiter until `shutdown` resolves, then stops gracefully: maintenance on (an
/// active node hands over to an eligible peer, bounded by `stop_timeout`), the standby
/// prepend in force, conntrack-sync standby, a last heartbeat. Returns the final state.
pub async fn run<E: Effects, O: Outbox>(
    set: Settings,
    effects: Arc<E>,
    out: O,
    (tx, mut rx): (mpsc::Sender<Input>, mpsc::Receiver<Input>),
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> State {
    let start = Instant::now();
    let (exec_tx, exec_rx) = mpsc::unbounded_channel();
    let exec_status = Arc::new(Mutex::new(ExecStatus::default()));
    let exec_task = tokio::spawn(executor(
        effects.clone(),
        exec_rx,
        exec_status.clone(),
        metrics.clone(),
        set.reconcile_interval,
    ));
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut core = Core {
        state: State::new(&set.cfg, Duration::ZERO),
        start,
        out,
        metrics: metrics.clone(),
        exec: exec_tx,
        exec_status,
        epoch,
        seq: 0,
        window: ReplayWindow::default(),
        problems: Vec::new(),
        since: start,
        last_change: None,
        last_run: start,
        limit: RateLimit::default(),
        set,
    };
    metrics.set_role(Role::Init);
    metrics.set_prepend(core.state.prepend);
    info!(
        node = %core.set.name,
        id = core.set.cfg.id,
        priority = core.set.cfg.priority,
        heartbeat_ms = core.set.cfg.heartbeat_interval.as_millis() as u64,
        detect_ms = core.set.cfg.detect.as_millis() as u64,
        "arbiter starting: listening for the peer"
    );
    // Health before anything else: a node that starts healthy must not spend the
    // hold-down in Fault because its first probe was late.
    let first = probe_bounded(&*effects, core.set.probe_timeout).await;
    // Listening for the peer starts now: a slow first probe must not use up the Init
    // detection time before a single datagram was read.
    core.state.started = core.now();
    core.last_run = Instant::now();
    core.probe(first);
    let probes = tokio::spawn(prober(
        effects.clone(),
        tx.clone(),
        core.set.probe_interval,
        core.set.probe_timeout,
    ));
    drop(tx);
    let mut tick = tokio::time::interval(core.set.cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut inputs_open = true;
    let mut stopping: Option<Instant> = None;
    loop {
        let lost_at = core
            .state
            .peer_lost_at(&core.set.cfg)
            .filter(|t| *t > core.now())
            .map(|t| core.start + t);
        tokio::select! {
            _ = tick.tick() => {
                core.resume();
                core.send_heartbeats();
                core.judge_timers(&mut rx).await;
            }
            // The instant the peer's heartbeats run out: judge the timers then, not at the
            // next periodic tick.
            _ = sleep_until_lost(lost_at), if lost_at.is_some() => {
                core.resume();
                core.judge_timers(&mut rx).await;
            }
            i = rx.recv(), if inputs_open => {
                core.resume();
                match i {
                    Some(i) => core.input(i),
                    None => inputs_open = false,
                }
            }
            _ = &mut shutdown, if stopping.is_none() => {
                info!(role = core.state.role.as_str(), "stopping: maintenance on, handing over if active");
                stopping = Some(Instant::now() + core.set.stop_timeout);
                core.step(Event::Maintenance(true));
            }
        }
        if let Some(deadline) = stopping
            && (core.state.role != Role::Active || Instant::now() >= deadline)
        {
            break;
        }
    }
    probes.abort();
    // Whatever happened during the handover: leave with the standby prepend in force and
    // conntrack-sync standby, in that order.
    let cfg = core.set.cfg.clone();
    if core.state.prepend != cfg.prepend_standby {
        warn!("stopping while still advertising as active: prepending now");
        core.state.prepend = cfg.prepend_standby;
        let _ = core.exec.send(Action::SetPrepend(cfg.prepend_standby));
    }
    if core.state.role == Role::Active {
        let _ = core.exec.send(Action::ConntrackRole(false));
    }
    core.state.role = Role::Maintenance;
    core.state.reason = "stopped".into();
    core.send_heartbeats();
    let Core { state, exec, .. } = core;
    drop(exec);
    // Queued actions finish (the prepend first); bounded, the supervisor waits for us.
    let bound = cfg.handover_timeout + Duration::from_secs(10);
    if tokio::time::timeout(bound, exec_task).await.is_err() {
        error!("actions still pending at exit");
    }
    info!("arbiter stopped");
    state
}

/// Sleeps until `at` (just past it: the machine counts a path lost once the detection
/// time has fully elapsed).
async fn sleep_until_lost(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at + Duration::from_micros(500)).await;
    }
}

#[cfg(test)]
mod tests;
