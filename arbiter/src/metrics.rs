//! The arbiter's Prometheus metrics: role, role changes, heartbeats by path and drop reason,
//! action durations and failures. Exported on `control.metrics` + the arbiter's offset.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::machine::{Health, Role};

type Labels = Vec<(String, String)>;

fn l(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

fn action_histogram() -> Histogram {
    // 1 ms .. 16 s: a vtysh role change takes ~0.25 s, a large conntrack commit seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[derive(Debug)]
pub struct Metrics {
    role: Family<Labels, Gauge>,
    role_changes: Family<Labels, Counter>,
    hb_sent: Family<Labels, Counter>,
    hb_send_errors: Family<Labels, Counter>,
    hb_received: Family<Labels, Counter>,
    hb_dropped: Family<Labels, Counter>,
    action_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    action_failures: Family<Labels, Counter>,
    prepend: Gauge,
    peer_alive: Gauge,
    health: Family<Labels, Gauge>,
    stalls: Counter,
    stalled_seconds: Counter<f64>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            role: Family::default(),
            role_changes: Family::default(),
            hb_sent: Family::default(),
            hb_send_errors: Family::default(),
            hb_received: Family::default(),
            hb_dropped: Family::default(),
            action_seconds: Family::new_with_constructor(action_histogram),
            action_failures: Family::default(),
            prepend: Gauge::default(),
            peer_alive: Gauge::default(),
            health: Family::default(),
            stalls: Counter::default(),
            stalled_seconds: Counter::default(),
            registry: Registry::with_prefix("igw_arbiter"),
        };
        let r = &mut m.registry;
        r.register(
            "role",
            "1 for this node's current role (init, active, standby, maintenance, fault)",
            m.role.clone(),
        );
        r.register(
            "role_changes",
            "Role changes by from and to role",
            m.role_changes.clone(),
        );
        r.register(
            "heartbeats_sent",
            "Heartbeats sent, by path (sync, fabric)",
            m.hb_sent.clone(),
        );
        r.register(
            "heartbeat_send_errors",
            "Heartbeats the kernel refused to send, by path",
            m.hb_send_errors.clone(),
        );
        r.register(
            "heartbeats_received",
            "Authenticated heartbeats accepted, by path",
            m.hb_received.clone(),
        );
        r.register(
            "heartbeats_dropped",
            "Heartbeats dropped, by reason (length, magic, auth, field, replay, own, source, overload)",
            m.hb_dropped.clone(),
        );
        r.register(
            "action_duration_seconds",
            "Time to perform an action (commit, conntrack_role, set_prepend)",
            m.action_seconds.clone(),
        );
        r.register(
            "action_failures",
            "Actions that failed (each attempt), by action",
            m.action_failures.clone(),
        );
        r.register(
            "prepend",
            "AS-path prepend count last ordered",
            m.prepend.clone(),
        );
        r.register(
            "peer_alive",
            "1 while a heartbeat arrived on some path within the detection time",
            m.peer_alive.clone(),
        );
        r.register(
            "health",
            "1 when the local check passes, by check (proxy, nft, bgp, upstream)",
            m.health.clone(),
        );
        r.register(
            "stalls",
            "Times the arbiter's loop did not run for over two heartbeat intervals (CPU starvation, stopped)",
            m.stalls.clone(),
        );
        r.register(
            "stalled_seconds",
            "Time the arbiter's loop did not run beyond one heartbeat interval, summed",
            m.stalled_seconds.clone(),
        );
        for role in ["init", "active", "standby", "maintenance", "fault"] {
            m.role.get_or_create(&l("role", role)).set(0);
        }
        for reason in [
            "length", "magic", "auth", "field", "replay", "own", "source", "overload",
        ] {
            // Every reason shows up (at 0) before its first drop.
            let _ = m.hb_dropped.get_or_create(&l("reason", reason));
        }
        m
    }

    pub fn set_role(&self, role: Role) {
        for r in ["init", "active", "standby", "maintenance", "fault"] {
            let v = i64::from(r == role.as_str());
            self.role.get_or_create(&l("role", r)).set(v);
        }
    }

    pub fn role_changed(&self, from: Role, to: Role) {
        let labels = vec![
            ("from".to_string(), from.as_str().to_string()),
            ("to".to_string(), to.as_str().to_string()),
        ];
        self.role_changes.get_or_create(&labels).inc();
        self.set_role(to);
    }

    pub fn hb_sent(&self, path: &str) {
        self.hb_sent.get_or_create(&l("path", path)).inc();
    }

    pub fn hb_send_error(&self, path: &str) {
        self.hb_send_errors.get_or_create(&l("path", path)).inc();
    }

    pub fn hb_received(&self, path: &str) {
        self.hb_received.get_or_create(&l("path", path)).inc();
    }

    pub fn hb_dropped(&self, reason: &str) {
        self.hb_dropped.get_or_create(&l("reason", reason)).inc();
    }

    /// Dropped heartbeats so far, by reason (for `status`).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.hb_dropped.get_or_create(&l("reason", reason)).get()
    }

    pub fn received(&self, path: &str) -> u64 {
        self.hb_received.get_or_create(&l("path", path)).get()
    }

    pub fn sent(&self, path: &str) -> u64 {
        self.hb_sent.get_or_create(&l("path", path)).get()
    }

    pub fn action(&self, action: &str, took: Duration, ok: bool) {
        self.action_seconds
            .get_or_create(&l("action", action))
            .observe(took.as_secs_f64());
        if !ok {
            self.action_failures
                .get_or_create(&l("action", action))
                .inc();
        }
    }

    pub fn action_failures(&self, action: &str) -> u64 {
        self.action_failures
            .get_or_create(&l("action", action))
            .get()
    }

    pub fn stalled(&self, d: Duration) {
        self.stalls.inc();
        self.stalled_seconds.inc_by(d.as_secs_f64());
    }

    pub fn stalls(&self) -> u64 {
        self.stalls.get()
    }

    pub fn set_prepend(&self, n: u8) {
        self.prepend.set(i64::from(n));
    }

    pub fn set_peer_alive(&self, alive: bool) {
        self.peer_alive.set(i64::from(alive));
    }

    pub fn set_health(&self, h: &Health) {
        for (ok, n) in [
            (h.proxy, "proxy"),
            (h.nft, "nft"),
            (h.bgp, "bgp"),
            (h.upstream, "upstream"),
        ] {
            self.health.get_or_create(&l("check", n)).set(i64::from(ok));
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_family() {
        let m = Metrics::new();
        m.role_changed(Role::Standby, Role::Active);
        m.hb_sent("sync");
        m.hb_dropped("auth");
        m.action("set_prepend", Duration::from_millis(250), true);
        let t = m.encode();
        for want in [
            "igw_arbiter_role{role=\"active\"} 1",
            "igw_arbiter_role{role=\"standby\"} 0",
            "igw_arbiter_role_changes_total{from=\"standby\",to=\"active\"} 1",
            "igw_arbiter_heartbeats_sent_total{path=\"sync\"} 1",
            "igw_arbiter_heartbeats_dropped_total{reason=\"auth\"} 1",
            "igw_arbiter_heartbeats_dropped_total{reason=\"replay\"} 0",
            "igw_arbiter_action_duration_seconds_count{action=\"set_prepend\"} 1",
        ] {
            assert!(t.contains(want), "missing `{want}` in\n{t}");
        }
    }
}
