//! Prometheus metrics of the proxy (served as text on the control metrics address).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Mode {
    Explicit,
    Connect,
    TransparentHttp,
    TransparentTls,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Explicit => "explicit",
            Mode::Connect => "connect",
            Mode::TransparentHttp => "transparent-http",
            Mode::TransparentTls => "transparent-tls",
        }
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Allow,
    Deny,
    Bad,
    Error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReqLabels {
    pub mode: Mode,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: Family<ReqLabels, Counter>,
    pub refused_connections: Family<ReasonLabels, Counter>,
    pub connections: Gauge,
    pub parked: Gauge,
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
    pub bytes_from_clients: Counter,
    pub bytes_to_clients: Counter,
    pub upstream_connects: Counter,
    /// Set from the splice module when scraped.
    pub tunnel_pipes: Gauge,
    pub tunnel_small_pipes: Gauge,
    pub access_log_dropped: Gauge,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "igw_proxy_requests",
            "Requests and tunnels judged, by mode and outcome",
            self.requests.clone(),
        );
        r.register(
            "igw_proxy_refused_connections",
            "Connections refused before any request (limits, no tenant, not diverted)",
            self.refused_connections.clone(),
        );
        r.register(
            "igw_proxy_connections",
            "Client connections open",
            self.connections.clone(),
        );
        r.register(
            "igw_proxy_parked_connections",
            "Idle keep-alive client connections parked (socket only, no HTTP state)",
            self.parked.clone(),
        );
        r.register(
            "igw_proxy_reloads_ok",
            "Policy reloads applied",
            self.reloads_ok.clone(),
        );
        r.register(
            "igw_proxy_reloads_failed",
            "Policy reloads refused (invalid policy; the old one stayed)",
            self.reloads_failed.clone(),
        );
        r.register(
            "igw_proxy_client_rx_bytes",
            "Bytes received from clients",
            self.bytes_from_clients.clone(),
        );
        r.register(
            "igw_proxy_client_tx_bytes",
            "Bytes sent to clients",
            self.bytes_to_clients.clone(),
        );
        r.register(
            "igw_proxy_upstream_connects",
            "Upstream HTTP connections opened (requests / this = reuse)",
            self.upstream_connects.clone(),
        );
        r.register(
            "igw_proxy_tunnel_pipes",
            "Pipes open for spliced tunnels (pooled per thread, held only while bytes are in flight)",
            self.tunnel_pipes.clone(),
        );
        r.register(
            "igw_proxy_tunnel_small_pipes",
            "Tunnel pipes left at the kernel's minimum size because the uid's pipe limit (fs.pipe-user-pages-soft) was reached",
            self.tunnel_small_pipes.clone(),
        );
        r.register(
            "igw_proxy_access_log_dropped",
            "Access log lines dropped because the log's storage could not keep up",
            self.access_log_dropped.clone(),
        );
    }
}
