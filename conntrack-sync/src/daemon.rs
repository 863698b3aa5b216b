//! The `igw conntrack-sync` daemon: the active replicates its kernel table to the peer over
//! the sync link (full resync on connect and after an event overrun, then coalesced
//! events); the standby keeps what it receives in a bounded cache and commits it into its
//! kernel on request. Also serves the control socket and Prometheus metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::netlink::{CtSocket, EventGroups, NlError, errno_counts};
use crate::proto::{self, Body, Frame, FrameError, Item, Key, NONCE_LEN, ReplayGuard, Role};
use crate::state::{Cache, Coalescer, Filter, Injection};

#[derive(Debug)]
pub struct DaemonConfig {
    pub node: String,
    /// This node's sync address and port (the standby listens here).
    pub listen: SocketAddr,
    /// The peer's sync address and port (the active connects there).
    pub peer: SocketAddr,
    pub key: Key,
    pub filter: Filter,
    pub role: Role,
    pub control_socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub cache_max: usize,
    /// Standby writes every received update into its kernel at once (see README).
    pub direct_inject: bool,
    /// Updates per frame and CT_NEW messages per netlink datagram.
    pub batch: usize,
    /// Receive buffer of the event socket, bytes.
    pub rcvbuf: usize,
}

#[derive(Debug, Default)]
struct Metrics {
    frames_sent: Counter,
    updates_sent: Counter,
    frames_received: Counter,
    updates_received: Counter,
    retransmitted: Counter,
    dropped: Family<Vec<(String, String)>, Counter>,
    overruns: Counter,
    resyncs: Counter,
    coalesced: Counter,
    cache_entries: Gauge,
    peer_connected: Gauge,
    lag_ms: Gauge,
    commit_ms: Gauge,
    committed: Counter,
    commit_failed: Counter,
    injected: Counter,
    inject_failed: Counter,
    in_kernel: Gauge,
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("igw_conntrack_sync");
        r.register("frames_sent", "Sync frames sent", self.frames_sent.clone());
        r.register(
            "updates_sent",
            "Entry updates sent",
            self.updates_sent.clone(),
        );
        r.register(
            "frames_received",
            "Authenticated sync frames received",
            self.frames_received.clone(),
        );
        r.register(
            "updates_received",
            "Entry updates received",
            self.updates_received.clone(),
        );
        r.register(
            "retransmitted",
            "Entries sent again by a resync after the first one (reconnect or event overrun)",
            self.retransmitted.clone(),
        );
        r.register(
            "dropped",
            "Frames or updates dropped, by reason",
            self.dropped.clone(),
        );
        r.register(
            "event_overruns",
            "ENOBUFS on the event socket",
            self.overruns.clone(),
        );
        r.register(
            "resyncs",
            "Full resyncs sent or received",
            self.resyncs.clone(),
        );
        r.register(
            "coalesced",
            "Updates folded into a pending one",
            self.coalesced.clone(),
        );
        r.register(
            "cache_entries",
            "Entries in the standby cache",
            self.cache_entries.clone(),
        );
        r.register(
            "peer_connected",
            "1 while a sync session is up",
            self.peer_connected.clone(),
        );
        r.register(
            "replication_lag_ms",
            "Send-to-ack time of the last batch",
            self.lag_ms.clone(),
        );
        r.register(
            "commit_duration_ms",
            "Duration of the last commit",
            self.commit_ms.clone(),
        );
        r.register(
            "committed",
            "Entries committed into the kernel",
            self.committed.clone(),
        );
        r.register(
            "commit_failed",
            "Entries the kernel refused at commit",
            self.commit_failed.clone(),
        );
        r.register(
            "injected",
            "Kernel writes (creates, updates, deletions) done by direct inject",
            self.injected.clone(),
        );
        r.register(
            "inject_failed",
            "Direct-inject writes refused",
            self.inject_failed.clone(),
        );
        r.register(
            "in_kernel",
            "Cached entries whose current state direct inject has written into the kernel",
            self.in_kernel.clone(),
        );
        r
    }

    fn drop(&self, reason: &str) {
        self.drop_many(reason, 1);
    }

    fn drop_many(&self, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc_by(n);
    }

    fn dropped_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut total = 0;
        for r in [
            "bad_mac",
            "replayed",
            "malformed",
            "version",
            "cache_full",
            "handshake",
        ] {
            let v = self
                .dropped
                .get_or_create(&vec![("reason".to_string(), r.to_string())])
                .get();
            total += v;
            m.insert(r.to_string(), json!(v));
        }
        m.insert("total".into(), json!(total));
        serde_json::Value::Object(m)
    }
}

struct Shared {
    cfg: DaemonConfig,
    start: Instant,
    role: watch::Sender<Role>,
    active: AtomicBool,
    cache: Mutex<Cache>,
    pending: Mutex<Coalescer>,
    wake: Notify,
    need_resync: AtomicBool,
    resyncs_done: AtomicU64,
    last_resync_unix: AtomicI64,
    last_commit: Mutex<Option<serde_json::Value>>,
    sent_at: Mutex<std::collections::VecDeque<(u64, Instant)>>,
    /// Rings the direct-inject thread (capacity 1: a ring while one is pending is enough,
    /// the thread takes everything owed).
    inject: Option<std::sync::mpsc::SyncSender<()>>,
    inject_errors: Mutex<std::collections::BTreeMap<i32, u64>>,
    /// Joined while active only.
    event_groups: EventGroups,
    m: Metrics,
}

impl Shared {
    fn ring_inject(&self) {
        if let Some(tx) = &self.inject {
            let _ = tx.try_send(());
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {what} {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NlError),
}

/// Runs until `shutdown` resolves.
pub async fn run(
    cfg: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let listen = |what, addr: String, source| DaemonError::Listen { what, addr, source };
    let sync_l = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| listen("sync", cfg.listen.to_string(), e))?;
    let _ = std::fs::remove_file(&cfg.control_socket);
    if let Some(dir) = cfg.control_socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let ctl_l = UnixListener::bind(&cfg.control_socket)
        .map_err(|e| listen("control", cfg.control_socket.display().to_string(), e))?;
    let metrics_l = match cfg.metrics {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| listen("metrics", a.to_string(), e))?,
        ),
        None => None,
    };
    let events = CtSocket::events(cfg.rcvbuf)?;
    let event_groups = events.groups();
    if cfg.role != Role::Active {
        event_groups.set(false).map_err(NlError::Io)?;
    }

    let (inject, inject_rx) = if cfg.direct_inject {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (role_tx, _) = watch::channel(cfg.role);
    let sh = Arc::new(Shared {
        active: AtomicBool::new(cfg.role == Role::Active),
        role: role_tx,
        start: Instant::now(),
        cache: Mutex::new(Cache::with_inject(cfg.cache_max, cfg.direct_inject)),
        pending: Mutex::new(Coalescer::default()),
        wake: Notify::new(),
        need_resync: AtomicBool::new(false),
        resyncs_done: AtomicU64::new(0),
        last_resync_unix: AtomicI64::new(0),
        last_commit: Mutex::new(None),
        sent_at: Mutex::new(Default::default()),
        inject,
        inject_errors: Mutex::new(Default::default()),
        event_groups,
        m: Metrics::default(),
        cfg,
    });
    info!(node = %sh.cfg.node, role = sh.cfg.role.as_str(), listen = %sh.cfg.listen, peer = %sh.cfg.peer, "conntrack-sync started");

    {
        let sh = sh.clone();
        std::thread::Builder::new()
            .name("ct-events".into())
            .spawn(move || event_thread(events, sh))
            .map_err(NlError::Io)?;
    }
    if let Some(rx) = inject_rx {
        let sh = sh.clone();
        std::thread::Builder::new()
            .name("ct-inject".into())
            .spawn(move || inject_thread(rx, sh))
            .map_err(NlError::Io)?;
    }
    let tasks = vec![
        tokio::spawn(replicate(sh.clone())),
        tokio::spawn(accept_peers(sync_l, sh.clone())),
        tokio::spawn(control(ctl_l, sh.clone())),
    ];
    let mut tasks = tasks;
    if let Some(l) = metrics_l {
        tasks.push(tokio::spawn(serve_metrics(l, sh.clone())));
    }
    shutdown.await;
    info!("conntrack-sync stopping");
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_file(&sh.cfg.control_socket);
    Ok(())
}

/// Events read from the socket before they are queued for sending.
const DRAIN_MAX: usize = 4096;

/// Reads kernel events; while active, queues accepted entries for the peer. An overrun
/// asks the sender for a full resync.
fn event_thread(mut sock: CtSocket, sh: Arc<Shared>) {
    let mut evs = Vec::new();
    loop {
        evs.clear();
        // One blocking read, then whatever else is already queued (bounded), so that a
        // burst is handed on in one piece.
        let mut got = sock.recv_events(&mut evs);
        while got.is_ok() && evs.len() < DRAIN_MAX {
            match sock.try_recv_events(&mut evs) {
                Ok(true) => {}
                Ok(false) => break,
                // Keep what was read; the bad message is reported, the rest goes on.
                Err(NlError::Decode(e)) => {
                    warn!(error = %e, "undecodable conntrack event");
                    break;
                }
                Err(e) => got = Err(e),
            }
        }
        match got {
            Ok(()) => {}
            Err(NlError::Overrun) => {
                sh.m.overruns.inc();
                if sh.active.load(Ordering::Relaxed) {
                    sh.need_resync.store(true, Ordering::Relaxed);
                    sh.wake.notify_one();
                }
                continue;
            }
            Err(NlError::Decode(e)) => {
                warn!(error = %e, "undecodable conntrack event");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "conntrack event socket failed");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        }
        if !sh.active.load(Ordering::Relaxed) {
            continue;
        }
        let mut p = sh.pending.lock().unwrap_or_else(|e| e.into_inner());
        let before = p.coalesced;
        // Each accepted entry goes into the coalescer in fixed fields, read in place (the
        // events are not moved out of their vector).
        for ev in &evs {
            if let Some(it) = ev.item(&sh.cfg.filter) {
                p.push_item(it);
            }
        }
        evs.clear();
        sh.m.coalesced.inc_by(p.coalesced - before);
        drop(p);
        sh.wake.notify_one();
    }
}

/// Writes owed per wake-up before the cache lock is taken again.
const INJECT_TAKE: usize = 4096;
/// How often the inject thread gathers near-expiry kernel copies, and how far ahead.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
const SWEEP_HORIZON_MS: u64 = 15_000;

/// Direct inject: writes what the cache owes the kernel (coalesced: one write per entry
/// however many updates it had since) and records what the kernel acknowledged, so that
/// a promotion commit writes only the rest. Runs while standby only.
fn inject_thread(rx: std::sync::mpsc::Receiver<()>, sh: Arc<Shared>) {
    let mut sock = match CtSocket::open() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "direct inject disabled: cannot open ctnetlink; promotion will commit the whole cache");
            return;
        }
    };
    let mut last_sweep: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // Near-expiry kernel copies gathered ahead of a commit (one pass over the cache,
        // ~25 ms at 1M entries, every SWEEP_EVERY), so the commit itself needs none.
        if !sh.active.load(Ordering::Relaxed)
            && last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY)
        {
            let now = sh.now_ms();
            sh.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sweep(now, SWEEP_HORIZON_MS);
            last_sweep = Some(Instant::now());
        }
        loop {
            if sh.active.load(Ordering::Relaxed) {
                break;
            }
            let now = sh.now_ms();
            let items = sh
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_injections(INJECT_TAKE, now);
            if items.is_empty() {
                break;
            }
            match sock.inject(&items, sh.cfg.batch) {
                Ok(results) => {
                    let (written, removed, failed) = record_writes(&sh, &items, &results, now);
                    sh.m.injected.inc_by(written + removed);
                    sh.m.inject_failed.inc_by(failed);
                    let mut errs = sh.inject_errors.lock().unwrap_or_else(|e| e.into_inner());
                    for (errno, n) in errno_counts(&results) {
                        *errs.entry(errno).or_default() += n;
                    }
                }
                Err(e) => {
                    // The entries stay un-acknowledged: the promotion commit writes them.
                    sh.m.inject_failed.inc_by(items.len() as u64);
                    warn!(error = %e, "direct inject failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Records in the cache the writes the kernel acknowledged (made at `now`); returns
/// (written, removed, failed).
fn record_writes(sh: &Shared, items: &[Injection], results: &[i32], now: u64) -> (u64, u64, u64) {
    let (mut written, mut removed, mut failed) = (0, 0, 0);
    let mut c = sh.cache.lock().unwrap_or_else(|e| e.into_inner());
    for (it, &r) in items.iter().zip(results) {
        match (it, r) {
            (
                Injection::Write {
                    entry,
                    timeout,
                    version,
                },
                0,
            ) => {
                c.injected(&entry.key(), *version, *timeout, now);
                written += 1;
            }
            (Injection::Remove(_), 0) => removed += 1,
            _ => failed += 1,
        }
    }
    (written, removed, failed)
}

async fn write_frame(
    w: &mut (impl AsyncWriteExt + Unpin),
    f: &Frame,
    key: &Key,
    nonce: &[u8; NONCE_LEN],
) -> std::io::Result<()> {
    let mut b = Vec::new();
    proto::encode(f, key, nonce, &mut b);
    w.write_all(&b).await
}

/// Reads one frame's bytes; `Ok(None)` at a clean end of stream.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Result<Option<Vec<u8>>, FrameError> {
    let mut buf = vec![0u8; proto::HEADER_LEN];
    match r.read_exact(&mut buf).await {
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let total = proto::frame_len(&buf)?.unwrap_or(proto::HEADER_LEN);
    buf.resize(total, 0);
    if r.read_exact(&mut buf[proto::HEADER_LEN..]).await.is_err() {
        return Ok(None);
    }
    Ok(Some(buf))
}

/// The active's side: connect to the peer, resync, then stream coalesced updates.
async fn replicate(sh: Arc<Shared>) {
    let mut role = sh.role.subscribe();
    loop {
        if *role.borrow_and_update() != Role::Active {
            let _ = role.changed().await;
            continue;
        }
        let conn =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(sh.cfg.peer)).await;
        let stream = match conn {
            Ok(Ok(s)) => s,
            _ => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match session(stream, &sh, &mut role).await {
            Ok(()) => info!("sync session ended"),
            Err(e) => warn!(error = %e, "sync session failed"),
        }
        sh.m.peer_connected.set(0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn session(
    stream: TcpStream,
    sh: &Arc<Shared>,
    role: &mut watch::Receiver<Role>,
) -> Result<(), String> {
    let key = &sh.cfg.key;
    let (mut r, mut w) = stream.into_split();
    let my_nonce: [u8; NONCE_LEN] = random();
    let session_id = u64::from_be_bytes(random());
    let hello = Frame {
        session: session_id,
        seq: 0,
        body: Body::Hello {
            node: sh.cfg.node.clone(),
            role: Role::Active,
            nonce: my_nonce,
        },
    };
    write_frame(&mut w, &hello, key, &[0; NONCE_LEN])
        .await
        .map_err(|e| e.to_string())?;
    let raw = tokio::time::timeout(Duration::from_secs(3), read_frame(&mut r))
        .await
        .map_err(|_| "peer sent no hello".to_string())?
        .map_err(|e| {
            sh.m.drop(drop_reason(&e));
            e.to_string()
        })?
        .ok_or("peer closed before hello")?;
    let peer_nonce = match proto::decode(&raw, key, &[0; NONCE_LEN]) {
        Ok(Frame {
            body: Body::Hello { nonce, node, .. },
            ..
        }) => {
            info!(peer = %node, "sync session up");
            nonce
        }
        Ok(_) => return Err("peer's first frame is not a hello".into()),
        Err(e) => {
            sh.m.drop("handshake");
            return Err(format!("peer hello refused: {e}"));
        }
    };
    sh.m.peer_connected.set(1);

    // Acks from the peer: replication lag.
    let reader_sh = sh.clone();
    let mut reader = tokio::spawn(async move {
        let mut guard = ReplayGuard::default();
        while let Ok(Some(raw)) = read_frame(&mut r).await {
            match proto::decode(&raw, &reader_sh.cfg.key, &my_nonce) {
                Ok(f) => {
                    if guard.check(&f).is_err() {
                        reader_sh.m.drop("replayed");
                        continue;
                    }
                    if let Body::Ack { seq } = f.body {
                        let mut q = reader_sh.sent_at.lock().unwrap_or_else(|e| e.into_inner());
                        while let Some(&(s, at)) = q.front() {
                            if s > seq {
                                break;
                            }
                            q.pop_front();
                            if s == seq {
                                reader_sh.m.lag_ms.set(at.elapsed().as_millis() as i64);
                            }
                        }
                    }
                }
                Err(FrameError::BadMac) => reader_sh.m.drop("bad_mac"),
                Err(_) => reader_sh.m.drop("malformed"),
            }
        }
    });

    let mut seq = 0u64;
    sh.need_resync.store(true, Ordering::Relaxed);
    let result = loop {
        if sh.need_resync.swap(false, Ordering::Relaxed)
            && let Err(e) = resync(sh, &mut w, session_id, &mut seq, &peer_nonce).await
        {
            break Err(e);
        }
        // Flush everything pending, in frames of `batch` updates, written together.
        let items = sh
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_all();
        if !items.is_empty()
            && let Err(e) =
                send_batches(sh, &mut w, session_id, &mut seq, &peer_nonce, &items).await
        {
            break Err(e);
        }
        tokio::select! {
            _ = sh.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = role.changed() => {
                if *role.borrow() != Role::Active {
                    break Ok(());
                }
            }
            _ = &mut reader => break Err("peer closed the session".into()),
        }
    };
    reader.abort();
    result
}

/// Bytes of encoded frames gathered before one write to the stream.
const WRITE_CHUNK: usize = 256 << 10;

/// Encodes `items` into frames of `batch` updates (seq numbers from `seq`, send times
/// recorded for the lag), appending to `out`; calls `flush` whenever `out` holds
/// `WRITE_CHUNK` bytes or more.
fn encode_batches<E>(
    sh: &Shared,
    session: u64,
    seq: &mut u64,
    nonce: &[u8; NONCE_LEN],
    items: &[Item],
    out: &mut Vec<u8>,
    mut flush: impl FnMut(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    for chunk in items.chunks(sh.cfg.batch.max(1)) {
        *seq += 1;
        proto::encode_batch_items(session, *seq, chunk, &sh.cfg.key, nonce, out);
        sh.sent_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((*seq, Instant::now()));
        sh.m.frames_sent.inc();
        sh.m.updates_sent.inc_by(chunk.len() as u64);
        if out.len() >= WRITE_CHUNK {
            flush(out)?;
        }
    }
    Ok(())
}

async fn send_batches(
    sh: &Shared,
    w: &mut (impl AsyncWriteExt + Unpin),
    session: u64,
    seq: &mut u64,
    nonce: &[u8; NONCE_LEN],
    items: &[Item],
) -> Result<(), String> {
    let mut out = Vec::new();
    let mut chunks = Vec::new();
    encode_batches(sh, session, seq, nonce, items, &mut out, |b| {
        chunks.push(std::mem::take(b));
        Ok::<(), String>(())
    })?;
    chunks.push(out);
    for c in chunks {
        w.write_all(&c).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn resync(
    sh: &Arc<Shared>,
    w: &mut (impl AsyncWriteExt + Unpin),
    session: u64,
    seq: &mut u64,
    nonce: &[u8; NONCE_LEN],
) -> Result<(), String> {
    // Events queued before the dump are covered by it.
    sh.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take_all();
    let again = sh.resyncs_done.fetch_add(1, Ordering::Relaxed) > 0;
    *seq += 1;
    let begin = Frame {
        session,
        seq: *seq,
        body: Body::ResyncBegin {
            entries: table_count().unwrap_or(0),
        },
    };
    write_frame(w, &begin, &sh.cfg.key, nonce)
        .await
        .map_err(|e| e.to_string())?;
    // The dump streams into frames as the kernel hands it over (a blocking thread reads
    // and encodes; this task writes), so the peer applies the first entries while the
    // rest is still being dumped, and the table is never held whole here.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (sh2, nonce2, first) = (sh.clone(), *nonce, *seq);
    let dumper = tokio::task::spawn_blocking(move || -> Result<(u64, u64), String> {
        let mut seq = first;
        let mut n = 0u64;
        let batch = sh2.cfg.batch.max(1);
        let mut items = Vec::with_capacity(batch);
        let mut out = Vec::with_capacity(WRITE_CHUNK + (64 << 10));
        let send = |b: &mut Vec<u8>| {
            let full = std::mem::replace(b, Vec::with_capacity(WRITE_CHUNK + (64 << 10)));
            tx.blocking_send(full)
                .map_err(|_| "sync session ended".to_string())
        };
        let mut failed = Ok(());
        CtSocket::open()
            .and_then(|mut s| {
                s.dump_each(|e| {
                    if failed.is_err() || !sh2.cfg.filter.accepts(&e) {
                        return;
                    }
                    items.push(Item::upsert(&e));
                    if items.len() == batch {
                        n += items.len() as u64;
                        failed = encode_batches(
                            &sh2, session, &mut seq, &nonce2, &items, &mut out, send,
                        );
                        items.clear();
                    }
                })
            })
            .map_err(|e| e.to_string())?;
        failed?;
        n += items.len() as u64;
        encode_batches(&sh2, session, &mut seq, &nonce2, &items, &mut out, send)?;
        if !out.is_empty() {
            send(&mut out)?;
        }
        Ok((seq, n))
    });
    while let Some(chunk) = rx.recv().await {
        w.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    let (last, n) = dumper.await.map_err(|e| e.to_string())??;
    *seq = last;
    *seq += 1;
    let end = Frame {
        session,
        seq: *seq,
        body: Body::ResyncEnd,
    };
    write_frame(w, &end, &sh.cfg.key, nonce)
        .await
        .map_err(|e| e.to_string())?;
    sh.m.frames_sent.inc_by(2);
    sh.m.resyncs.inc();
    if again {
        sh.m.retransmitted.inc_by(n);
    }
    sh.last_resync_unix.store(unix_now(), Ordering::Relaxed);
    info!(entries = n, "resync sent");
    Ok(())
}

/// Entries in this namespace's conntrack table (all of them, replicated or not): the
/// size hint of a resync.
fn table_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The counter a refused frame goes to.
fn drop_reason(e: &FrameError) -> &'static str {
    match e {
        FrameError::BadMac => "bad_mac",
        FrameError::Replayed { .. } => "replayed",
        FrameError::Version { .. } => "version",
        FrameError::Malformed(_) => "malformed",
    }
}

/// The standby's side: authenticated sessions from the peer fill the cache.
async fn accept_peers(l: TcpListener, sh: Arc<Shared>) {
    loop {
        let Ok((s, from)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let sh = sh.clone();
        tokio::spawn(async move {
            if let Err(e) = receive(s, &sh).await {
                warn!(peer = %from, error = %e, "sync session refused or ended");
            }
            sh.m.peer_connected.set(0);
        });
    }
}

async fn receive(stream: TcpStream, sh: &Arc<Shared>) -> Result<(), String> {
    let key = &sh.cfg.key;
    let (r, mut w) = stream.into_split();
    // Frames are read out of a large buffer (a burst costs a few reads, not two per
    // frame), and acknowledged once per burst: an ack covers every frame up to its seq.
    let mut r = BufReader::with_capacity(RECV_CHUNK, r);
    let raw = tokio::time::timeout(Duration::from_secs(3), read_frame(&mut r))
        .await
        .map_err(|_| "no hello".to_string())?
        .map_err(|e| {
            sh.m.drop(drop_reason(&e));
            e.to_string()
        })?
        .ok_or("closed before hello")?;
    let peer_nonce = match proto::decode(&raw, key, &[0; NONCE_LEN]) {
        Ok(Frame {
            body: Body::Hello { nonce, .. },
            ..
        }) => nonce,
        Ok(_) => {
            sh.m.drop("handshake");
            return Err("first frame is not a hello".into());
        }
        Err(FrameError::BadMac) => {
            sh.m.drop("bad_mac");
            return Err("hello failed authentication".into());
        }
        Err(e) => {
            sh.m.drop(drop_reason(&e));
            return Err(e.to_string());
        }
    };
    let my_nonce: [u8; NONCE_LEN] = random();
    let session_id = u64::from_be_bytes(random());
    let mut my_seq = 0u64;
    let my_role = *sh.role.borrow();
    write_frame(
        &mut w,
        &Frame {
            session: session_id,
            seq: my_seq,
            body: Body::Hello {
                node: sh.cfg.node.clone(),
                role: my_role,
                nonce: my_nonce,
            },
        },
        key,
        &[0; NONCE_LEN],
    )
    .await
    .map_err(|e| e.to_string())?;
    sh.m.peer_connected.set(1);
    let mut guard = ReplayGuard::default();
    // A batch's items, decoded straight into the form the cache holds.
    let mut items = Vec::new();
    loop {
        let raw = match read_frame(&mut r).await {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(()),
            Err(e) => {
                // The framing is lost: nothing after this can be trusted to line up.
                sh.m.drop(drop_reason(&e));
                return Err(e.to_string());
            }
        };
        let f = match proto::decode_items(&raw, key, &my_nonce, &mut items) {
            Ok(f) => f,
            Err(FrameError::BadMac) => {
                sh.m.drop("bad_mac");
                continue;
            }
            Err(_) => {
                sh.m.drop("malformed");
                continue;
            }
        };
        if guard.check(&f).is_err() {
            sh.m.drop("replayed");
            continue;
        }
        sh.m.frames_received.inc();
        let now = sh.now_ms();
        match f.body {
            Body::Batch(_) => {
                sh.m.updates_received.inc_by(items.len() as u64);
                let mut c = sh.cache.lock().unwrap_or_else(|e| e.into_inner());
                let refused = c.apply_items(&mut items, now);
                if refused > 0 {
                    sh.m.drop_many("cache_full", refused as u64);
                }
                sh.m.cache_entries.set(c.len() as i64);
                drop(c);
                sh.ring_inject();
            }
            Body::ResyncBegin { entries } => {
                sh.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .begin_resync(usize::try_from(entries).unwrap_or(usize::MAX));
            }
            Body::ResyncEnd => {
                let mut c = sh.cache.lock().unwrap_or_else(|e| e.into_inner());
                c.end_resync();
                sh.m.cache_entries.set(c.len() as i64);
                drop(c);
                sh.ring_inject();
                sh.m.resyncs.inc();
                sh.last_resync_unix.store(unix_now(), Ordering::Relaxed);
            }
            Body::Hello { .. } | Body::Ack { .. } => continue,
        }
        // More frames already buffered: their ack will cover this one.
        if matches!(proto::frame_len(r.buffer()), Ok(Some(n)) if n <= r.buffer().len()) {
            continue;
        }
        my_seq += 1;
        let ack = Frame {
            session: session_id,
            seq: my_seq,
            body: Body::Ack { seq: f.seq },
        };
        write_frame(&mut w, &ack, key, &peer_nonce)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Receive buffer of a sync session on the standby.
const RECV_CHUNK: usize = 256 << 10;

/// Commits the cache into the kernel; blocking until done. With direct inject only what
/// the kernel lacks (never written, an older version, or near expiry) is written, unless
/// `full`.
async fn commit(sh: &Arc<Shared>, full: bool) -> Result<serde_json::Value, String> {
    let started = Instant::now();
    let now = sh.now_ms();
    let (items, cached) = {
        let mut c = sh.cache.lock().unwrap_or_else(|e| e.into_inner());
        (c.commit_set(now, full), c.len())
    };
    let batch = sh.cfg.batch;
    let (items, results) = tokio::task::spawn_blocking(move || {
        let r = CtSocket::open()?.inject(&items, batch);
        r.map(|r| (items, r))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let (written, removed, failed) = record_writes(sh, &items, &results, now);
    let errors = errno_counts(&results);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let attempted = items.len() as u64;
    sh.m.commit_ms.set(ms as i64);
    sh.m.committed.inc_by(written + removed);
    sh.m.commit_failed.inc_by(failed);
    let mode = if sh.cfg.direct_inject && !full {
        "delta"
    } else {
        "full"
    };
    let v = json!({
        "mode": mode,
        "entries_cached": cached,
        "attempted": attempted,
        "committed": written + removed,
        "written": written,
        "removed": removed,
        "already_in_kernel": (cached as u64).saturating_sub(written + failed),
        "failed": failed,
        "errors": errors,
        "duration_ms": ms,
        "at_unix": unix_now(),
    });
    info!(
        mode,
        cached,
        written,
        removed,
        failed,
        duration_ms = ms,
        "commit done"
    );
    *sh.last_commit.lock().unwrap_or_else(|e| e.into_inner()) = Some(v.clone());
    Ok(v)
}

fn status(sh: &Shared) -> serde_json::Value {
    let cached = sh.cache.lock().unwrap_or_else(|e| e.into_inner()).len();
    let last = sh.last_resync_unix.load(Ordering::Relaxed);
    json!({
        "node": sh.cfg.node,
        "role": sh.role.borrow().as_str(),
        "peer": sh.cfg.peer.to_string(),
        "peer_connected": sh.m.peer_connected.get() == 1,
        "entries_cached": cached,
        "cache_max": sh.cfg.cache_max,
        "pending": sh.pending.lock().unwrap_or_else(|e| e.into_inner()).len(),
        "replication_lag_ms": sh.m.lag_ms.get(),
        "direct_inject": sh.cfg.direct_inject,
        "inject": sh.cfg.direct_inject.then(|| {
            let c = sh.cache.lock().unwrap_or_else(|e| e.into_inner());
            json!({
                "in_kernel": c.in_kernel(),
                "owed": c.owed(),
                "written": sh.m.injected.get(),
                "failed": sh.m.inject_failed.get(),
                "errors": *sh.inject_errors.lock().unwrap_or_else(|e| e.into_inner()),
            })
        }),
        "messages": {
            "sent": sh.m.frames_sent.get(),
            "updates_sent": sh.m.updates_sent.get(),
            "received": sh.m.frames_received.get(),
            "updates_received": sh.m.updates_received.get(),
            "retransmitted": sh.m.retransmitted.get(),
            "dropped": sh.m.dropped_json(),
            "coalesced": sh.m.coalesced.get(),
        },
        "event_overruns": sh.m.overruns.get(),
        "resyncs": sh.m.resyncs.get(),
        "last_resync_unix": (last > 0).then_some(last),
        "last_commit": *sh.last_commit.lock().unwrap_or_else(|e| e.into_inner()),
    })
}

async fn control(l: UnixListener, sh: Arc<Shared>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let resp = match serde_json::from_str::<igw_core::control::Request>(&line) {
                Err(e) => igw_core::control::Response::err(format!("bad request: {e}")),
                Ok(req) => handle(&sh, req).await,
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
}

async fn handle(sh: &Arc<Shared>, req: igw_core::control::Request) -> igw_core::control::Response {
    use igw_core::control::Response;
    match req.cmd.as_str() {
        "status" => Response::ok(status(sh)),
        "commit" => match commit(sh, req.args["full"].as_bool().unwrap_or(false)).await {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(format!("commit failed: {e}")),
        },
        "set-role" => {
            let r = req.args.get("role").and_then(|r| r.as_str()).unwrap_or("");
            match r.parse::<Role>() {
                Ok(role) => {
                    let active = role == Role::Active;
                    // Events first: what happens from here on is seen; what happened
                    // before, the session's resync carries.
                    if let Err(e) = sh.event_groups.set(active) {
                        return Response::err(format!("conntrack event subscription: {e}"));
                    }
                    sh.active.store(active, Ordering::Relaxed);
                    sh.role.send_replace(role);
                    info!(role = role.as_str(), "role set");
                    Response::ok(json!({"role": role.as_str()}))
                }
                Err(e) => Response::err(e),
            }
        }
        other => Response::err(format!(
            "unknown command {other:?}; conntrack-sync knows status, commit, set-role"
        )),
    }
}

async fn serve_metrics(l: TcpListener, sh: Arc<Shared>) {
    let registry = sh.m.registry();
    let registry = Arc::new(registry);
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let sh = sh.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            // Read the request head (bounded), whatever it asks: there is one page.
            while got < buf.len() {
                match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf[got..])).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => got += n,
                }
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            {
                let c = sh.cache.lock().unwrap_or_else(|e| e.into_inner());
                sh.m.cache_entries.set(c.len() as i64);
                sh.m.in_kernel.set(c.in_kernel() as i64);
            }
            let mut body = String::new();
            let _ = encode(&mut body, &registry);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}
