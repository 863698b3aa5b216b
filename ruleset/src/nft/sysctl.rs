//! The kernel settings the gateway needs, declared once. `igw sysctl apply` writes them,
//! `igw sysctl show` compares them with the running kernel.

use igw_core::NodeConfig;

/// One setting: its key (dotted, as `sysctl` names it), value and why igw needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl Sysctl {
    /// The file under `/proc/sys` that holds the setting.
    pub fn proc_path(&self) -> String {
        format!("/proc/sys/{}", self.key.replace('.', "/"))
    }
}

/// The settings for this node.
pub fn sysctls(node: &NodeConfig) -> Vec<Sysctl> {
    let v = |key, value: &str, why| Sysctl {
        key,
        value: value.to_string(),
        why,
    };
    vec![
        v("net.ipv4.ip_forward", "1", "the node routes tenant traffic"),
        v(
            "net.ipv6.conf.all.forwarding",
            "1",
            "the node routes tenant IPv6 traffic",
        ),
        v(
            "net.netfilter.nf_conntrack_max",
            &node.conntrack.max_entries.to_string(),
            "conntrack table size (node.toml conntrack.max_entries); a full table drops new flows",
        ),
        v(
            "net.netfilter.nf_conntrack_tcp_be_liberal",
            "1",
            "flows synced from the peer carry stale TCP windows; strict window tracking would mark their packets invalid after a failover",
        ),
        v(
            "net.netfilter.nf_conntrack_tcp_loose",
            "1",
            "pick up established TCP flows mid-stream when a flow was not synced in time",
        ),
        v(
            "net.netfilter.nf_conntrack_events",
            "1",
            "conntrack-sync follows the table through ctnetlink events",
        ),
        v(
            "net.ipv4.conf.all.rp_filter",
            "2",
            "loose reverse-path filter: drops unroutable sources, keeps the asymmetric paths of an active/standby pair",
        ),
        v(
            "net.ipv4.conf.default.rp_filter",
            "2",
            "the same for interfaces created later",
        ),
    ]
}
