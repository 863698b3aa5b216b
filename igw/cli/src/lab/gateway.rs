//! The lab's routers and gateway nodes: FRR on the ToR and the upstream (rendered by the
//! fabric module's test-side renderer), and on igw-a / igw-b each node's bundle (the
//! examples/small files, pointed at lab paths), its ruleset, its FRR, and every igw daemon.

use std::fs;
use std::net::IpAddr;

use anyhow::{Context, Result, anyhow};
use igw_core::{NodeConfig, Policy};
use igw_fabric::render::{self, RouterSpec};
use ipnet::IpNet;

use super::{Lab, frr, topo};

const NODE_A: &str = include_str!("../../../../examples/small/node-a.toml");
const NODE_B: &str = include_str!("../../../../examples/small/node-b.toml");
const POLICY: &str = include_str!("../../../../examples/small/policy.toml");
const PSK: &str = include_str!("../../../../examples/small/psk");

/// A gateway's files in the lab's state directory (`<state>/<gw>/node.toml`, ...).
pub struct Bundle {
    pub node: NodeConfig,
    pub policy: Policy,
}

/// This gateway's address on the link toward `neighbor` (from the topology).
fn gw_addr(gw: &str, neighbor: &str) -> Result<IpAddr> {
    let l = topo::LINKS
        .iter()
        .find(|l| {
            (l.a.host == gw && l.b.host == neighbor) || (l.b.host == gw && l.a.host == neighbor)
        })
        .ok_or_else(|| anyhow!("no lab link {gw}-{neighbor}"))?;
    let end = if l.a.host == gw { l.a } else { l.b };
    let a: IpNet = end.addrs[0].parse()?;
    Ok(a.addr())
}

/// Writes igw-a's or igw-b's bundle: the example files with the lab's run directory, FRR
/// pathspace and key file.
pub fn bundle(lab: &Lab, gw: &str) -> Result<Bundle> {
    let src = if gw == "igw-a" { NODE_A } else { NODE_B };
    let dir = lab.dir.join(gw);
    fs::create_dir_all(&dir)?;
    let mut t: toml::Table = src.parse().context("example node file")?;
    let mut control = toml::Table::new();
    control.insert(
        "run_dir".into(),
        dir.join("run").to_string_lossy().into_owned().into(),
    );
    t.insert("control".into(), control.into());
    let mut fabric = toml::Table::new();
    fabric.insert("frr_pathspace".into(), lab.ns(gw).into());
    t.insert("fabric".into(), fabric.into());
    if let Some(sync) = t.get_mut("sync").and_then(|s| s.as_table_mut()) {
        sync.insert(
            "key_file".into(),
            dir.join("psk").to_string_lossy().into_owned().into(),
        );
    }
    let text = format!(
        "# {gw} in the igw lab (examples/small with lab paths)\n{}",
        toml::to_string(&t)?
    );
    fs::write(dir.join("node.toml"), &text)?;
    fs::write(dir.join("policy.toml"), POLICY)?;
    fs::write(dir.join("psk"), PSK)?;
    fs::create_dir_all(dir.join("run"))?;
    let node = NodeConfig::load(&dir.join("node.toml")).map_err(|e| anyhow!("{e}"))?;
    let policy = Policy::load(&dir.join("policy.toml")).map_err(|e| anyhow!("{e}"))?;
    Ok(Bundle { node, policy })
}

/// FRR on the ToR (originates the tenant subnets) and the upstream (originates the
/// Internet prefixes and a default route), each peering with both gateways.
pub fn routers(lab: &mut Lab, a: &Bundle) -> Result<()> {
    let tenants: Vec<IpNet> = a.policy.tenant_subnets().copied().collect();
    let tor_peer = &a.node.bgp.tor[0];
    let up_peer = &a.node.bgp.upstream[0];
    let asn = a.node.bgp.asn;
    let bfd = (a.node.bfd.interval_ms, a.node.bfd.multiplier);
    let tor = RouterSpec {
        hostname: "tor".into(),
        asn: tor_peer.asn,
        router_id: "198.19.0.254".parse()?,
        neighbors: vec![
            (gw_addr("igw-a", "tor")?, asn),
            (gw_addr("igw-b", "tor")?, asn),
        ],
        originate: tenants
            .into_iter()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .collect(),
        default_originate: false,
        bfd_interval_ms: bfd.0,
        bfd_multiplier: bfd.1,
    };
    let upstream = RouterSpec {
        hostname: "upstream".into(),
        asn: up_peer.asn,
        router_id: "198.19.0.253".parse()?,
        neighbors: vec![
            (gw_addr("igw-a", "upstream")?, asn),
            (gw_addr("igw-b", "upstream")?, asn),
        ],
        originate: vec!["203.0.113.0/24".parse()?, "192.0.2.0/24".parse()?],
        default_originate: true,
        bfd_interval_ms: bfd.0,
        bfd_multiplier: bfd.1,
    };
    frr::start(lab, "tor", &render::router_frr(&tor))?;
    frr::start(lab, "upstream", &render::router_frr(&upstream))?;
    Ok(())
}

/// A gateway's FRR, started as standby (the arbiter sets the role).
pub fn gateway_frr(lab: &mut Lab, gw: &str, b: &Bundle) -> Result<()> {
    let tenants: Vec<IpNet> = b.policy.tenant_subnets().copied().collect();
    let conf = render::node_frr(&b.node, &tenants, b.node.bgp.prepend_standby);
    frr::start(lab, gw, &conf)
}

/// On a gateway: the sysctls and the ruleset, then conntrack-sync, the proxy and the
/// arbiter, each from this very binary with the node's bundle; returns once every daemon
/// answers on its control socket. The arbiter starts last and takes the role: the first
/// gateway started, alone, becomes active after one detection time; the second finds it
/// active and stays standby (see [`wait_roles`]).
pub fn daemons(lab: &mut Lab, gw: &str) -> Result<()> {
    use igw_core::control::{self, Daemon, Request};
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let dir = lab.dir.join(gw);
    let node = dir.join("node.toml").to_string_lossy().into_owned();
    let policy = dir.join("policy.toml").to_string_lossy().into_owned();
    let cfg = ["--node", node.as_str(), "--policy", policy.as_str()];
    let with = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![exe.clone()];
        v.extend(cmd.iter().map(|s| s.to_string()));
        v.extend(cfg.iter().map(|s| s.to_string()));
        v
    };
    // Some conntrack sysctls are global (read-only inside a namespace): in the lab the host
    // keeps its own values, which is not a reason to stop.
    let argv = with(&["sysctl", "apply"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    if let Err(e) = lab.exec(gw, &argv) {
        println!("lab: {gw}: note: {e}");
    }
    let argv = with(&["ruleset", "apply"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.exec(gw, &argv)
        .with_context(|| format!("{gw}: igw ruleset apply"))?;
    let access = dir.join("access.log").to_string_lossy().into_owned();
    let hosts = std::path::Path::new("/etc/netns")
        .join(lab.ns(gw))
        .join("hosts");
    let hosts = hosts.to_string_lossy().into_owned();
    let runs: [(&str, Vec<String>); 2] = [
        ("conntrack-sync", (with(&["conntrack-sync"]))),
        (
            "proxy",
            (with(&["proxy", "--access-log", &access, "--hosts", &hosts])),
        ),
    ];
    for (name, argv) in &runs {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        lab.spawn(gw, &format!("{gw}-{name}"), &argv)?;
    }
    let run_dir = dir.join("run");
    let lab_dir = lab.dir.clone();
    let up = |d: Daemon| {
        let ok = super::wait(std::time::Duration::from_secs(15), || {
            control::call(
                &run_dir,
                d,
                &Request::new("status"),
                std::time::Duration::from_secs(1),
            )
            .map(|r| r.ok)
            .unwrap_or(false)
        });
        if ok {
            Ok(())
        } else {
            Err(anyhow!(
                "{gw}: igw {} does not answer on {}; see {}",
                d.name(),
                d.socket(&run_dir).display(),
                lab_dir
                    .join(format!("logs/{gw}-{}.log", d.name()))
                    .display()
            ))
        }
    };
    up(Daemon::ConntrackSync)?;
    up(Daemon::Proxy)?;
    // Last: the arbiter's health probes need the proxy and the ruleset.
    let argv = with(&["arbiter"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.spawn(gw, &format!("{gw}-arbiter"), &argv)?;
    up(Daemon::Arbiter)
}

/// After both arbiters started: exactly one gateway active and the other standby, the
/// ToR's best path for the default route and the upstream's for the NAT pool through the
/// active one. Returns the active one.
pub fn wait_roles(lab: &Lab) -> Result<&'static str> {
    use igw_core::control::{self, Daemon, Request};
    let role = |gw: &str| {
        control::call(
            &lab.dir.join(gw).join("run"),
            Daemon::Arbiter,
            &Request::new("status"),
            std::time::Duration::from_secs(1),
        )
        .ok()
        .and_then(|r| r.data["role"].as_str().map(str::to_string))
        .unwrap_or_default()
    };
    let nexthop = |router: &str, prefix: &str| -> Option<String> {
        let out = frr::vtysh(lab, router, &format!("show ip bgp {prefix} json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let best = v["paths"]
            .as_array()?
            .iter()
            .find(|p| p.pointer("/bestpath/overall").and_then(|b| b.as_bool()) == Some(true))?;
        best.pointer("/nexthops/0/ip")?.as_str().map(str::to_string)
    };
    let mut active = None;
    let ok = super::wait(std::time::Duration::from_secs(60), || {
        let act: Vec<&'static str> = ["igw-a", "igw-b"]
            .into_iter()
            .filter(|g| role(g) == "active")
            .collect();
        let [gw] = act[..] else {
            return false;
        };
        active = Some(gw);
        // A steady pair: the other node standby (eligible), not still in fault or hold-down
        // after start, so `igw failover` or a failure right after `lab up` has a peer.
        let other = if gw == "igw-a" { "igw-b" } else { "igw-a" };
        if role(other) != "standby" {
            return false;
        }
        let (Ok(tor), Ok(up)) = (gw_addr(gw, "tor"), gw_addr(gw, "upstream")) else {
            return false;
        };
        nexthop("tor", "0.0.0.0/0") == Some(tor.to_string())
            && nexthop("upstream", "198.51.100.10/32") == Some(up.to_string())
    });
    match (ok, active) {
        (true, Some(gw)) => Ok(gw),
        _ => Err(anyhow!(
            "no steady pair within 60 s (one gateway active drawing the traffic, the other standby): igw-a {}, igw-b {}; see {}/logs/igw-*-arbiter.log",
            role("igw-a"),
            role("igw-b"),
            lab.dir.display()
        )),
    }
}
