//! The proxy's runtime: listeners (explicit, transparent HTTP, transparent TLS), the
//! per-request decision path, upstream forwarding, limits, reload and drain.
//!
//! # Host, absolute URI and SNI disagreement (one rule)
//!
//! - Explicit, absolute-form: the URI authority is what is judged and reached; a `Host`
//!   header, if present, must name the same host and port after normalisation, or the
//!   request is refused with 400 (no guessing which one the origin will believe).
//! - Transparent HTTP: the `Host` header is required (400 without) and judged; its port,
//!   if written, must be the original destination's port; an absolute-form URI must
//!   agree with `Host` as above. The connection always goes to the original destination.
//! - Transparent TLS: the SNI is judged; the bytes go to the original destination.
//! - In transparent mode, when `[defaults] resolve_check` is on and the deciding rule does
//!   not set `any_address`, the judged name must resolve to the original destination's
//!   address, or the request is refused (403 `resolve-check`, TLS: close): a client
//!   cannot name an allowed site while connecting somewhere else.
//!
//! # SSRF guard
//!
//! After an allow, the address the proxy would connect to must not be internal (see
//! [`crate::ssrf`]) nor one of the gateway's own addresses, unless the deciding rule's
//! `cidrs` contain it; otherwise 403 `ssrf-guard`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use igw_core::policy::{Action, Policy};
use igw_ruleset::l7::{
    DecidedBy, Decision, Host, HttpPart, Matcher, Query, TunnelKind, canonical_ip, normalize_path,
    parse_authority,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::access::{AccessLog, Entry, now_rfc3339};
use crate::clienthello::{self, Hello};
use crate::dns::{Dns, DnsConfig};
use crate::framing::{Findings, SniffIo};
use crate::idle::IdleIo;
use crate::metrics::{Metrics, Mode, Outcome, ReasonLabels, ReqLabels};
use crate::upstream::{Body, Upstreams, drive};
use crate::{ssrf, warn_limited};

/// Relay buffer per direction for tunnels: large enough that bulk transfers take few
/// system calls per megabyte (the default 8 KiB costs CPU on CONNECT downloads).
const TUNNEL_BUF: usize = 64 * 1024;

/// Limits against abusive or broken clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// The whole request head (and a TLS ClientHello) must arrive within this time from
    /// the start of the connection or of the request: a slow drip cannot extend it.
    pub header_timeout: Duration,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_tenant: usize,
    /// How long a shutdown waits for open connections to finish.
    pub drain_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 20_000,
            max_connections_per_tenant: 10_000,
            drain_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub policy_path: PathBuf,
    pub explicit: Option<SocketAddr>,
    pub transparent_http: Option<SocketAddr>,
    pub transparent_tls: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub control_socket: Option<PathBuf>,
    pub dns: DnsConfig,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("policy: {0}")]
    Policy(String),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("dns: {0}")]
    Dns(#[from] crate::dns::DnsError),
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    matcher: RwLock<Arc<Matcher>>,
    policy_path: PathBuf,
    dns: Dns,
    limits: Limits,
    metrics: Metrics,
    own_addrs: RwLock<Arc<HashSet<IpAddr>>>,
    conns: AtomicUsize,
    per_tenant: Mutex<HashMap<String, usize>>,
    access: AccessLog,
    started: Instant,
    registry: prometheus_client::registry::Registry,
}

/// Loads and compiles a policy file; the error text says what is wrong and where.
pub fn load_matcher(path: &std::path::Path) -> Result<Matcher, ProxyError> {
    let p = Policy::load(path).map_err(|e| ProxyError::Policy(e.to_string()))?;
    Matcher::compile(&p).map_err(|e| ProxyError::Policy(format!("{}: {e}", path.display())))
}

fn own_addresses() -> HashSet<IpAddr> {
    let mut s = HashSet::new();
    if let Ok(it) = nix::ifaddrs::getifaddrs() {
        for ifa in it {
            if let Some(a) = ifa.address {
                if let Some(v4) = a.as_sockaddr_in() {
                    s.insert(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = a.as_sockaddr_in6() {
                    s.insert(canonical_ip(IpAddr::V6(v6.ip())));
                }
            }
        }
    }
    s
}

impl Shared {
    pub fn new(cfg: &ProxyConfig, access: AccessLog) -> Result<Arc<Shared>, ProxyError> {
        let matcher = load_matcher(&cfg.policy_path)?;
        let metrics = Metrics::default();
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        Ok(Arc::new(Shared {
            matcher: RwLock::new(Arc::new(matcher)),
            policy_path: cfg.policy_path.clone(),
            dns: Dns::new(&cfg.dns)?,
            limits: cfg.limits.clone(),
            metrics,
            own_addrs: RwLock::new(Arc::new(own_addresses())),
            conns: AtomicUsize::new(0),
            per_tenant: Mutex::new(HashMap::new()),
            access,
            started: Instant::now(),
            registry,
        }))
    }

    pub fn matcher(&self) -> Arc<Matcher> {
        self.matcher
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the policy; an invalid one is refused and the running one stays.
    /// Connections keep the matcher they hold until their next request.
    pub fn reload(&self) -> Result<usize, ProxyError> {
        match load_matcher(&self.policy_path) {
            Ok(m) => {
                let n = m.rule_count();
                *self.matcher.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(m);
                *self.own_addrs.write().unwrap_or_else(|e| e.into_inner()) =
                    Arc::new(own_addresses());
                self.metrics.reloads_ok.inc();
                tracing::info!(rules = n, "policy reloaded");
                Ok(n)
            }
            Err(e) => {
                self.metrics.reloads_failed.inc();
                tracing::error!(error = %e, "policy reload refused; the running policy stays");
                Err(e)
            }
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let m = self.matcher();
        serde_json::json!({
            "uptime_s": self.started.elapsed().as_secs(),
            "connections": self.conns.load(Ordering::Relaxed),
            "rules": m.rule_count(),
            "tenants": m.tenant_names(),
            "reloads_ok": self.metrics.reloads_ok.get(),
            "reloads_failed": self.metrics.reloads_failed.get(),
            "policy": self.policy_path,
        })
    }

    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        self.metrics
            .tunnel_pipes
            .set(crate::splice::open_pipes() as i64);
        self.metrics
            .tunnel_small_pipes
            .set(crate::splice::small_pipes() as i64);
        self.metrics
            .access_log_dropped
            .set(self.access.dropped() as i64);
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }

    /// Admits a connection from `src` or says why not.
    fn admit(self: &Arc<Self>, src: IpAddr) -> Result<ConnGuard, &'static str> {
        let m = self.matcher();
        let Some(t) = m.tenant_of(src) else {
            return Err("no-tenant");
        };
        let tenant = m.tenant_name(t).to_string();
        if self.conns.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
            self.conns.fetch_sub(1, Ordering::AcqRel);
            return Err("limit-total");
        }
        {
            let mut pt = self.per_tenant.lock().unwrap_or_else(|e| e.into_inner());
            let n = pt.entry(tenant.clone()).or_insert(0);
            if *n >= self.limits.max_connections_per_tenant {
                drop(pt);
                self.conns.fetch_sub(1, Ordering::AcqRel);
                return Err("limit-tenant");
            }
            *n += 1;
        }
        self.metrics.connections.inc();
        Ok(ConnGuard {
            shared: self.clone(),
            tenant,
        })
    }

    fn ssrf_refuses(&self, ip: IpAddr, rule_cidrs: &[ipnet::IpNet]) -> Option<&'static str> {
        let ip = canonical_ip(ip);
        if rule_cidrs.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        if self
            .own_addrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
        {
            return Some("gateway-address");
        }
        ssrf::internal_reason(ip)
    }
}

#[derive(Debug)]
struct ConnGuard {
    shared: Arc<Shared>,
    tenant: String,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut pt = self
            .shared
            .per_tenant
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pt.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
        }
        drop(pt);
        self.shared.conns.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.connections.dec();
    }
}

/// Binds the configured listeners (before anything else, so a port conflict is an
/// immediate, clear error).
#[derive(Debug)]
pub struct Listeners {
    pub explicit: Option<TcpListener>,
    pub transparent_http: Option<TcpListener>,
    pub transparent_tls: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(cfg: &ProxyConfig) -> Result<Listeners, ProxyError> {
        async fn b(a: Option<SocketAddr>) -> Result<Option<TcpListener>, ProxyError> {
            match a {
                None => Ok(None),
                Some(a) => {
                    TcpListener::bind(a)
                        .await
                        .map(Some)
                        .map_err(|source| ProxyError::Listen {
                            addr: a.to_string(),
                            source,
                        })
                }
            }
        }
        Ok(Listeners {
            explicit: b(cfg.explicit).await?,
            transparent_http: b(cfg.transparent_http).await?,
            transparent_tls: b(cfg.transparent_tls).await?,
        })
    }
}

/// Serves until `shutdown` turns true, then stops accepting and drains open connections
/// (at most `drain_timeout`).
pub async fn serve(shared: Arc<Shared>, l: Listeners, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = Vec::new();
    for (listener, kind) in [
        (l.explicit, Kind::Explicit),
        (l.transparent_http, Kind::Http),
        (l.transparent_tls, Kind::Tls),
    ] {
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(accept_loop(
                shared.clone(),
                listener,
                kind,
                shutdown.clone(),
            )));
        }
    }
    let _ = shutdown.wait_for(|s| *s).await;
    for t in &tasks {
        t.abort();
    }
    let deadline = Instant::now() + shared.limits.drain_timeout;
    while shared.connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(left = shared.connections(), "drained");
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Explicit,
    Http,
    Tls,
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: Kind,
    shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn_limited!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let guard = match shared.admit(peer.ip()) {
            Ok(g) => g,
            Err(reason) => {
                shared
                    .metrics
                    .refused_connections
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
                warn_limited!(src = %peer, reason, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match kind {
                // Each future boxed on its own: the task's size is the largest of its
                // branches, and the TLS path (ClientHello buffer, DNS lookup) would make
                // every idle HTTP connection as large as itself.
                // The box is made in its own statement: a temporary in the statement of an
                // `.await` is kept in the task across it, which put a second, unused copy
                // of serve_http's state (1.3 KiB) in every connection's task.
                Kind::Explicit => {
                    let fut = Box::pin(serve_http(shared, stream, peer, None, shutdown, guard));
                    fut.await
                }
                Kind::Http | Kind::Tls => {
                    let orig = match crate::origdst::original_dst(&stream) {
                        Ok(o) if Some(o) != local && o.port() != 0 => o,
                        Ok(_) | Err(_) => {
                            shared
                                .metrics
                                .refused_connections
                                .get_or_create(&ReasonLabels {
                                    reason: "not-diverted",
                                })
                                .inc();
                            warn_limited!(src = %peer, "transparent connection without an original destination");
                            return;
                        }
                    };
                    let orig = SocketAddr::new(canonical_ip(orig.ip()), orig.port());
                    if matches!(kind, Kind::Http) {
                        let fut = Box::pin(serve_http(
                            shared,
                            stream,
                            peer,
                            Some(orig),
                            shutdown,
                            guard,
                        ));
                        fut.await
                    } else {
                        let fut = Box::pin(serve_tls(shared, stream, peer, orig, guard));
                        fut.await
                    }
                }
            }
        });
    }
}

/// The client side as hyper holds it; a CONNECT takes the socket back out of it.
type ClientIo = TokioIo<SniffIo<IdleIo<TcpStream>>>;

#[derive(Debug)]
struct ConnCtx {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Transparent mode: where the client meant to go.
    orig: Option<SocketAddr>,
    tenant: String,
    /// What the second reader of the client's bytes saw (CL+TE heads).
    findings: Arc<Findings>,
    /// Requests handed to the service so far on this connection.
    requests: AtomicU64,
    /// Requests whose handler has not returned yet.
    in_handler: AtomicU64,
    /// Upstream connections, driven by this connection's task.
    upstreams: Upstreams,
}

/// A keep-alive connection quiet for this long, between two requests, is parked: hyper's
/// per-connection state and buffers (16 KiB) are freed and only the socket is kept until
/// the client sends again. A parked client costs its task, socket registration,
/// connection context and I/O wrapper: 3.4 KiB of RSS each in bench/proxy (5,000 clients).
const PARK_AFTER: Duration = Duration::from_millis(500);

fn parkable(ctx: &ConnCtx, bytes: &crate::idle::Bytes) -> bool {
    ctx.in_handler.load(Ordering::Acquire) == 0
        && ctx.findings.at_boundary()
        && bytes.last_activity().elapsed() >= PARK_AFTER
}

/// Counts a handler as running until it returns or is dropped.
struct InHandler(Arc<ConnCtx>);

impl Drop for InHandler {
    fn drop(&mut self) {
        self.0.in_handler.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_http(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    orig: Option<SocketAddr>,
    mut shutdown: watch::Receiver<bool>,
    guard: ConnGuard,
) {
    let io = IdleIo::new(stream, shared.limits.idle_timeout);
    let bytes = io.bytes.clone();
    let findings = Arc::new(Findings::default());
    let mut io = ClientIo::new(SniffIo::new(io, findings.clone()));
    let ctx = Arc::new(ConnCtx {
        shared: shared.clone(),
        peer,
        orig,
        tenant: guard.tenant.clone(),
        findings: findings.clone(),
        requests: AtomicU64::new(0),
        in_handler: AtomicU64::new(0),
        upstreams: Upstreams::default(),
    });
    let res = loop {
        // hyper's state (and the futures that watch it) live in their own box, freed
        // when the connection parks: a parked connection's task holds the socket and
        // this function's few locals only.
        let active = Box::pin(serve_active(&ctx, io, &bytes, &mut shutdown));
        let park;
        (io, park) = match active.await {
            Active::Ended(r) => break r,
            Active::Again(io) => (io, false),
            Active::Parked(io) => (io, true),
        };
        if !park {
            continue;
        }
        shared.metrics.parked.inc();
        // Woken by the client's next bytes (or its close), by the idle deadline (the I/O
        // wrapper's own timer: no second one while parked), or by shutdown.
        let woke = tokio::select! {
            r = std::future::poll_fn(|cx| {
                let idle = io.inner_mut().get_mut();
                if let Poll::Ready(r) = idle.get_ref().poll_read_ready(cx) {
                    return Poll::Ready(r.is_ok());
                }
                if idle.poll_expired(cx) {
                    return Poll::Ready(false);
                }
                Poll::Pending
            }) => r,
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => false,
        };
        shared.metrics.parked.dec();
        if !woke {
            break Ok(());
        }
    };
    if let Err(e) = res {
        warn_limited!(src = %peer, error = %e, "client connection ended with an error");
    }
    shared
        .metrics
        .bytes_from_clients
        .inc_by(bytes.rx.load(Ordering::Relaxed));
    shared
        .metrics
        .bytes_to_clients
        .inc_by(bytes.tx.load(Ordering::Relaxed));
    drop(guard);
}

/// How a run of hyper over a client connection ended.
enum Active {
    /// The connection is done (closed, failed, shut down, or upgraded to a tunnel).
    Ended(hyper::Result<()>),
    /// hyper stopped with bytes of a next request read: serve again at once.
    Again(ClientIo),
    /// Quiet between two requests: park the socket.
    Parked(ClientIo),
}

/// hyper serves requests on `io` until the connection ends or has been quiet for
/// `PARK_AFTER` between two requests.
async fn serve_active(
    ctx: &Arc<ConnCtx>,
    io: ClientIo,
    bytes: &crate::idle::Bytes,
    shutdown: &mut watch::Receiver<bool>,
) -> Active {
    let shared = &ctx.shared;
    let ctx2 = ctx.clone();
    let svc = service_fn(move |req| {
        let ctx = ctx2.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        .max_buf_size(shared.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let mut conn = builder.serve_connection(io, svc).with_upgrades();
    // The upstream connections are driven with the server side: a request and its
    // response never cross to another task.
    let ups = &ctx.upstreams;
    let parked = loop {
        tokio::select! {
            r = drive(ups, &mut conn) => break Err(r),
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                Pin::new(&mut conn).graceful_shutdown();
                break Err(drive(ups, &mut conn).await);
            }
            _ = tokio::time::sleep(PARK_AFTER) => {
                if parkable(ctx, bytes) {
                    ctx.findings.parking.store(true, Ordering::Release);
                    Pin::new(&mut conn).graceful_shutdown();
                    break Ok(drive(ups, &mut conn).await);
                }
            }
        }
    };
    ups.clear();
    // Parked: hyper finished without closing the socket; take the socket back.
    let parts = match parked {
        Err(r) | Ok(r @ Err(_)) => return Active::Ended(r),
        Ok(Ok(())) => match conn.into_parts() {
            Some(p) => p,
            None => return Active::Ended(Ok(())),
        },
    };
    ctx.findings.parking.store(false, Ordering::Release);
    let mut io = parts.io;
    if parts.read_buf.is_empty() {
        Active::Parked(io)
    } else {
        io.inner_mut().replay(parts.read_buf);
        Active::Again(io)
    }
}

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(text.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn bad(why: &str) -> Response<Body> {
    let mut r = full(StatusCode::BAD_REQUEST, format!("bad request: {why}\n"));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn denied(rule: &str) -> Response<Body> {
    full(StatusCode::FORBIDDEN, format!("denied by rule {rule}\n"))
}

/// What the access log and metrics record of one request.
struct Record<'a> {
    mode: Mode,
    method: Option<&'a str>,
    host: Option<String>,
    path: Option<&'a str>,
    sni: Option<&'a str>,
    decision: &'a str,
    rule: &'a str,
    status: Option<u16>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
    start: Instant,
    outcome: Outcome,
}

fn record(shared: &Shared, tenant: &str, peer: SocketAddr, r: Record<'_>) {
    shared
        .metrics
        .requests
        .get_or_create(&ReqLabels {
            mode: r.mode,
            outcome: r.outcome,
        })
        .inc();
    if shared.access.enabled() {
        shared.access.log(&Entry {
            time: now_rfc3339(),
            tenant,
            src: peer.ip().to_string(),
            mode: r.mode.as_str(),
            method: r.method,
            host: r.host,
            path: r.path,
            sni: r.sni,
            decision: r.decision,
            rule: r.rule,
            status: r.status,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            duration_ms: r.start.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

/// Refuses what request smuggling and desync attacks need, before anything else.
fn hostile_headers(h: &HeaderMap) -> Option<&'static str> {
    let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
    let te = h.get_all(header::TRANSFER_ENCODING).iter().count();
    if cl > 1 {
        return Some("several Content-Length headers");
    }
    if cl == 1 && te > 0 {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if te > 1 {
        return Some("several Transfer-Encoding headers");
    }
    if let Some(v) = h.get(header::TRANSFER_ENCODING)
        && !v.as_bytes().eq_ignore_ascii_case(b"chunked")
    {
        return Some("Transfer-Encoding other than chunked");
    }
    if h.get_all(header::HOST).iter().count() > 1 {
        return Some("several Host headers");
    }
    None
}

async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let mode = match (ctx.orig.is_some(), req.method() == Method::CONNECT) {
        (false, true) => Mode::Connect,
        (false, false) => Mode::Explicit,
        (true, _) => Mode::TransparentHttp,
    };
    let method = req.method().as_str().to_string();
    let fail = |why: &str, status: StatusCode, outcome: Outcome, rule: &str| {
        record(
            &ctx.shared,
            &ctx.tenant,
            ctx.peer,
            Record {
                mode,
                method: Some(&method),
                host: None,
                path: None,
                sni: None,
                decision: if outcome == Outcome::Deny {
                    "deny"
                } else {
                    "error"
                },
                rule,
                status: Some(status.as_u16()),
                bytes_in: None,
                bytes_out: None,
                start,
                outcome,
            },
        );
        warn_limited!(src = %ctx.peer, why, "request refused");
    };
    let index = ctx.requests.fetch_add(1, Ordering::Relaxed);
    ctx.in_handler.fetch_add(1, Ordering::AcqRel);
    let _running = InHandler(ctx.clone());
    // hyper removed Content-Length from such a request; the second reader saw it.
    if req.headers().contains_key(header::TRANSFER_ENCODING) && ctx.findings.cl_te(index) {
        let why = "both Content-Length and Transfer-Encoding";
        fail(why, StatusCode::BAD_REQUEST, Outcome::Bad, "-");
        return bad(why);
    }
    if let Some(why) = hostile_headers(req.headers()) {
        fail(why, StatusCode::BAD_REQUEST, Outcome::Bad, "-");
        return bad(why);
    }
    if req.version() != http::Version::HTTP_11 && req.version() != http::Version::HTTP_10 {
        fail("version", StatusCode::BAD_REQUEST, Outcome::Bad, "-");
        return bad("HTTP/1.x only");
    }
    match resolve_target(&ctx, &req, mode) {
        Err(why) => {
            fail(why, StatusCode::BAD_REQUEST, Outcome::Bad, "-");
            bad(why)
        }
        Ok(t) => forward(ctx, req, t, mode, start).await,
    }
}

/// What a request asks for, normalised.
struct Target {
    host: Host,
    port: u16,
    path: String,
    query: Option<String>,
}

fn host_header(req: &Request<Incoming>) -> Result<Option<&str>, &'static str> {
    match req.headers().get(header::HOST) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| "Host header is not ASCII"),
    }
}

fn resolve_target(
    ctx: &ConnCtx,
    req: &Request<Incoming>,
    mode: Mode,
) -> Result<Target, &'static str> {
    let uri = req.uri();
    let hosthdr = host_header(req)?;
    let (host, port) = match mode {
        Mode::Connect => {
            // authority-form: host:port, port required.
            let a = uri.authority().ok_or("CONNECT needs host:port")?;
            if uri.scheme().is_some() || a.port_u16().is_none() {
                return Err("CONNECT needs host:port");
            }
            parse_authority(a.as_str(), 0).map_err(|_| "invalid CONNECT authority")?
        }
        Mode::Explicit => {
            if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
                return Err("absolute-form http:// URI required (use CONNECT for https)");
            }
            let a = uri.authority().ok_or("URI without authority")?;
            let (h, p) = parse_authority(a.as_str(), 80).map_err(norm_why)?;
            if let Some(hh) = hosthdr {
                let (hh, hp) = parse_authority(hh, 80).map_err(norm_why)?;
                if hh != h || hp != p {
                    return Err("Host header differs from the URI authority");
                }
            }
            (h, p)
        }
        _ => {
            let orig = ctx.orig.ok_or("internal: no original destination")?;
            let hh = hosthdr.ok_or("Host header required")?;
            let has_port = hh.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
            let (h, p) = parse_authority(hh, orig.port()).map_err(norm_why)?;
            if has_port && p != orig.port() {
                return Err("Host port differs from the connection's destination port");
            }
            if let Some(a) = uri.authority() {
                let (uh, up) = parse_authority(a.as_str(), orig.port()).map_err(norm_why)?;
                if uh != h || up != p {
                    return Err("Host header differs from the URI authority");
                }
            }
            (h, orig.port())
        }
    };
    let (raw_path, query) = if mode == Mode::Connect {
        ("/", None)
    } else {
        (uri.path(), uri.query())
    };
    let path =
        normalize_path(if raw_path.is_empty() { "/" } else { raw_path }).map_err(norm_why)?;
    Ok(Target {
        host,
        port,
        path,
        query: query.map(str::to_string),
    })
}

fn norm_why(e: igw_ruleset::l7::NormError) -> &'static str {
    use igw_ruleset::l7::NormError as N;
    match e {
        N::EmptyHost => "empty host",
        N::Userinfo => "userinfo in the authority",
        N::Bracket => "malformed IPv6 literal",
        N::BadHost => "invalid host",
        N::BadPort => "invalid port",
        N::ControlInPath => "control byte in the path",
        N::RelativePath => "path must start with /",
    }
}

/// Decides, resolves, applies the resolve check and the SSRF guard. Returns the address
/// to connect to, or the rule id (or guard name) that refused.
async fn judge(
    shared: &Shared,
    m: &Matcher,
    q: &mut Query<'_>,
    orig: Option<SocketAddr>,
) -> (Decision, Result<IpAddr, String>) {
    let d = m.decide(q);
    if d.action == Action::Deny {
        let name = m.decided_by_name(&d).to_string();
        return (d, Err(name));
    }
    let (cidrs, any_address): (&[ipnet::IpNet], bool) = match d.by {
        DecidedBy::Rule(i) => (&m.rule(i).cidrs, m.rule(i).any_address),
        _ => (&[], false),
    };
    let target = match (orig, q.host) {
        (Some(o), Host::Name(name)) => {
            if m.resolve_check() && !any_address {
                match shared.dns.resolve(name).await {
                    Ok(addrs) if addrs.iter().any(|a| canonical_ip(*a) == o.ip()) => o.ip(),
                    Ok(_) => return (d, Err("resolve-check".into())),
                    Err(e) => {
                        warn_limited!(error = %e, "resolve check lookup failed");
                        return (d, Err("resolve-check".into()));
                    }
                }
            } else {
                o.ip()
            }
        }
        (Some(o), Host::Ip(ip)) => {
            if *ip != o.ip() && m.resolve_check() && !any_address {
                return (d, Err("resolve-check".into()));
            }
            o.ip()
        }
        (None, Host::Ip(ip)) => *ip,
        (None, Host::Name(name)) => match shared.dns.resolve(name).await {
            Ok(addrs) => {
                // The first address the guard lets through.
                match addrs
                    .iter()
                    .map(|a| canonical_ip(*a))
                    .find(|a| shared.ssrf_refuses(*a, cidrs).is_none())
                {
                    Some(a) => a,
                    None => return (d, Err("ssrf-guard".into())),
                }
            }
            Err(e) => return (d, Err(format!("dns: {e}"))),
        },
    };
    if shared.ssrf_refuses(target, cidrs).is_some() {
        return (d, Err("ssrf-guard".into()));
    }
    (d, Ok(target))
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove("proxy-connection");
    h.remove("keep-alive");
}

async fn forward(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
    t: Target,
    mode: Mode,
    start: Instant,
) -> Response<Body> {
    let shared = &ctx.shared;
    let m = shared.matcher();
    let method = req.method().as_str().to_string();
    let is_connect = mode == Mode::Connect;
    let mut q = Query {
        src: ctx.peer.ip(),
        host: &t.host,
        port: t.port,
        http: (!is_connect).then_some(HttpPart {
            method: &method,
            path: &t.path,
            query: t.query.as_deref(),
        }),
        tunnel: TunnelKind::Connect,
        dst: t.host.ip().or(ctx.orig.map(|o| o.ip())),
    };
    let (d, target) = judge(shared, &m, &mut q, ctx.orig).await;
    let rule = m.decided_by_name(&d).to_string();
    let host_s = t.host.to_string();
    let rec = |status: u16, outcome: Outcome, decision: &str, bytes: (Option<u64>, Option<u64>)| {
        record(
            shared,
            &ctx.tenant,
            ctx.peer,
            Record {
                mode,
                method: Some(&method),
                host: Some(host_s.clone()),
                path: (!is_connect).then_some(t.path.as_str()),
                sni: None,
                decision,
                rule: &rule,
                status: Some(status),
                bytes_in: bytes.0,
                bytes_out: bytes.1,
                start,
                outcome,
            },
        )
    };
    let ip = match target {
        Ok(ip) => ip,
        Err(refuser) => {
            if refuser.starts_with("dns: ") {
                rec(502, Outcome::Error, "error", (None, None));
                warn_limited!(host = %host_s, error = %refuser, "resolution failed");
                return full(StatusCode::BAD_GATEWAY, "upstream name does not resolve\n");
            }
            let who = if d.action == Action::Deny {
                rule.clone()
            } else {
                refuser
            };
            record(
                shared,
                &ctx.tenant,
                ctx.peer,
                Record {
                    mode,
                    method: Some(&method),
                    host: Some(host_s.clone()),
                    path: (!is_connect).then_some(t.path.as_str()),
                    sni: None,
                    decision: "deny",
                    rule: &who,
                    status: Some(403),
                    bytes_in: None,
                    bytes_out: None,
                    start,
                    outcome: Outcome::Deny,
                },
            );
            return denied(&who);
        }
    };
    let dst = SocketAddr::new(ip, t.port);
    if is_connect {
        let upstream = match tokio::time::timeout(
            shared.limits.connect_timeout,
            TcpStream::connect(dst),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => {
                rec(502, Outcome::Error, "allow", (None, None));
                return full(StatusCode::BAD_GATEWAY, "upstream unreachable\n");
            }
        };
        let _ = upstream.set_nodelay(true);
        let ctx2 = ctx.clone();
        let rule2 = rule.clone();
        let idle = shared.limits.idle_timeout;
        tokio::spawn(async move {
            let Ok(up) = hyper::upgrade::on(req).await else {
                return;
            };
            let mut upstream = upstream;
            let (a, b) = match up.downcast::<ClientIo>() {
                // The plain client socket: relay with splice(2), after the bytes hyper
                // had already read past the CONNECT head.
                Ok(parts) => {
                    let client = parts.io.into_inner().into_inner().into_inner();
                    let early = parts.read_buf.len() as u64;
                    if !parts.read_buf.is_empty()
                        && upstream.write_all(&parts.read_buf).await.is_err()
                    {
                        return;
                    }
                    let (a, b, _) = crate::splice::relay(&client, &upstream, idle).await;
                    (a + early, b)
                }
                Err(up) => {
                    let mut client = IdleIo::new(TokioIo::new(up), idle);
                    let r = tokio::io::copy_bidirectional_with_sizes(
                        &mut client,
                        &mut upstream,
                        TUNNEL_BUF,
                        TUNNEL_BUF,
                    )
                    .await;
                    r.unwrap_or((
                        client.bytes.rx.load(Ordering::Relaxed),
                        client.bytes.tx.load(Ordering::Relaxed),
                    ))
                }
            };
            ctx2.shared.metrics.bytes_from_clients.inc_by(a);
            ctx2.shared.metrics.bytes_to_clients.inc_by(b);
            record(
                &ctx2.shared,
                &ctx2.tenant,
                ctx2.peer,
                Record {
                    mode: Mode::Connect,
                    method: Some("CONNECT"),
                    host: Some(host_s),
                    path: None,
                    sni: None,
                    decision: "allow",
                    rule: &rule2,
                    status: Some(200),
                    bytes_in: Some(a),
                    bytes_out: Some(b),
                    start,
                    outcome: Outcome::Allow,
                },
            );
        });
        return Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
    }
    // Plain HTTP: forward to the chosen address, keeping the client's Host.
    let (mut parts, body) = req.into_parts();
    let authority = if t.port == 80 {
        host_s.clone()
    } else {
        format!("{host_s}:{}", t.port)
    };
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(&authority)
    {
        parts.headers.insert(header::HOST, v);
    }
    let bytes_in = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    // Origin-form upstream: the client's own path and query.
    let mut up_uri = http::uri::Parts::default();
    up_uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    parts.uri = match Uri::from_parts(up_uri) {
        Ok(u) => u,
        Err(_) => {
            rec(400, Outcome::Bad, "error", (None, None));
            return bad("unusable request target");
        }
    };
    parts.version = http::Version::HTTP_11;
    let up_req = Request::from_parts(parts, body.boxed());
    match send_upstream(shared, &ctx.upstreams, dst, up_req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let bytes_out = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            rec(
                parts.status.as_u16(),
                Outcome::Allow,
                "allow",
                (bytes_in, bytes_out),
            );
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => {
            rec(502, Outcome::Error, "allow", (bytes_in, None));
            warn_limited!(dst = %dst, error = %e, "upstream request failed");
            full(StatusCode::BAD_GATEWAY, "upstream request failed\n")
        }
    }
}

/// Sends `req` on the client connection's upstream connection to `dst`, opening one if
/// there is none ready. An origin may close an idle keep-alive connection at any moment,
/// so a request that a reused connection failed goes out once more on a new connection
/// when that is safe: it was never sent, or it is a safe method without a body (RFC 9110
/// 9.2.2 lets a client retry those; the origin may have seen the request and closed
/// without answering).
async fn send_upstream(
    shared: &Shared,
    ups: &Upstreams,
    dst: SocketAddr,
    req: Request<Body>,
) -> Result<Response<Incoming>, String> {
    let mut req = req;
    if let Some(mut send) = ups.take(dst) {
        let again = replayable(&req).then(|| copy_head(&req));
        match send.try_send_request(req).await {
            Ok(resp) => {
                ups.put(dst, send);
                return Ok(resp);
            }
            Err(mut e) => {
                req = match (e.take_message(), again) {
                    (Some(r), _) | (None, Some(r)) => r,
                    (None, None) => return Err(e.into_error().to_string()),
                };
            }
        }
    }
    let mut send = open_upstream(shared, ups, dst).await?;
    match send.try_send_request(req).await {
        Ok(resp) => {
            ups.put(dst, send);
            Ok(resp)
        }
        Err(e) => Err(e.into_error().to_string()),
    }
}

/// A safe method (GET, HEAD, OPTIONS, TRACE) with no body: sending it twice is harmless.
fn replayable(req: &Request<Body>) -> bool {
    use hyper::body::Body as _;
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) && req.body().is_end_stream()
}

/// The same request head with an empty body.
fn copy_head(req: &Request<Body>) -> Request<Body> {
    let mut r = Request::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

async fn open_upstream(
    shared: &Shared,
    ups: &Upstreams,
    dst: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, String> {
    let s = match tokio::time::timeout(shared.limits.connect_timeout, TcpStream::connect(dst)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect: timed out".into()),
    };
    let _ = s.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    shared.metrics.upstream_connects.inc();
    ups.add(conn);
    Ok(send)
}

/// Transparent TLS: read the ClientHello (whole, within the header deadline), judge the
/// SNI, then relay the bytes untouched to the original destination, or close.
async fn serve_tls(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    orig: SocketAddr,
    guard: ConnGuard,
) {
    let start = Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + shared.limits.header_timeout;
    let hello = loop {
        match clienthello::parse(&buf) {
            Hello::Incomplete if buf.len() < clienthello::MAX_HELLO => {}
            Hello::Incomplete => break Hello::Malformed("ClientHello too large"),
            h => break h,
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {
                warn_limited!(src = %peer, "ClientHello not complete before the deadline");
                return;
            }
        }
    };
    let m = shared.matcher();
    let (sni, host) = match &hello {
        Hello::Complete { sni: Some(s) } => match Host::parse(s) {
            Ok(h) => (Some(s.clone()), Some(h)),
            Err(_) => {
                warn_limited!(src = %peer, "unusable SNI");
                (Some(s.clone()), None)
            }
        },
        _ => (None, None),
    };
    let rec = |decision: &str, rule: &str, outcome: Outcome, bytes: (Option<u64>, Option<u64>)| {
        record(
            &shared,
            &guard.tenant,
            peer,
            Record {
                mode: Mode::TransparentTls,
                method: None,
                host: Some(orig.to_string()),
                path: None,
                sni: sni.as_deref(),
                decision,
                rule,
                status: None,
                bytes_in: bytes.0,
                bytes_out: bytes.1,
                start,
                outcome,
            },
        )
    };
    let (decision_rule, target) = match (&hello, &host) {
        (Hello::Complete { .. }, Some(h)) => {
            let mut q = Query {
                src: peer.ip(),
                host: h,
                port: orig.port(),
                http: None,
                tunnel: TunnelKind::Sni,
                dst: Some(orig.ip()),
            };
            let (d, t) = judge(&shared, &m, &mut q, Some(orig)).await;
            (m.decided_by_name(&d).to_string(), t)
        }
        (Hello::Malformed(_), _) | (Hello::Complete { .. }, None) => {
            // Broken TLS is never relayed: it is what evasion looks like.
            rec("deny", "malformed-tls", Outcome::Bad, (None, None));
            return;
        }
        _ => {
            // No SNI or not TLS: the policy's default decides.
            let d = m.decide(&Query {
                src: peer.ip(),
                host: &Host::Ip(orig.ip()),
                port: orig.port(),
                http: None,
                tunnel: TunnelKind::Sni,
                dst: Some(orig.ip()),
            });
            let name = m.decided_by_name(&d).to_string();
            let t = if d.action == Action::Allow && shared.ssrf_refuses(orig.ip(), &[]).is_none() {
                Ok(orig.ip())
            } else if d.action == Action::Allow {
                Err("ssrf-guard".to_string())
            } else {
                Err(name.clone())
            };
            (name, t)
        }
    };
    let ip = match target {
        Ok(ip) => ip,
        Err(who) => {
            rec("deny", &who, Outcome::Deny, (None, None));
            return;
        }
    };
    let mut upstream = match tokio::time::timeout(
        shared.limits.connect_timeout,
        TcpStream::connect(SocketAddr::new(ip, orig.port())),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            rec("allow", &decision_rule, Outcome::Error, (None, None));
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if upstream.write_all(&buf).await.is_err() {
        return;
    }
    // The ClientHello is passed on; the rest moves with splice(2), untouched.
    let (a, b, _) = crate::splice::relay(&stream, &upstream, shared.limits.idle_timeout).await;
    let a = a + buf.len() as u64;
    shared.metrics.bytes_from_clients.inc_by(a);
    shared.metrics.bytes_to_clients.inc_by(b);
    rec("allow", &decision_rule, Outcome::Allow, (Some(a), Some(b)));
    drop(guard);
}
