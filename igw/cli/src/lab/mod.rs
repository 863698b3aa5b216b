//! `igw lab`: the whole gateway pair in network namespaces on one machine — two tenants, a
//! ToR and an upstream running FRR, the gateway nodes igw-a and igw-b running every igw
//! daemon from this binary, and an "Internet" namespace with HTTP/HTTPS origins and an echo
//! service. Only the lab's own namespaces carry its traffic (../shared/TESTBED.md).

mod demo;
mod frr;
mod gateway;
mod net;
mod topo;
mod traffic;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{CliError, Global};

pub use topo::ns;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: LabCmd,
    /// Namespace prefix: every lab namespace is `<prefix>-<host>`; several labs with
    /// different prefixes can run side by side.
    #[arg(long, global = true, default_value = "igwlab")]
    pub prefix: String,
    /// Where the lab keeps its configs, logs, certificates and process ids.
    #[arg(long, global = true, default_value = "/run/igw-lab")]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum LabCmd {
    /// Build the topology and start FRR, the origins and every igw daemon.
    Up,
    /// Stop every lab process (by PID) and delete the lab's namespaces and files.
    Down,
    /// Walk through what the gateway promises, on the running lab: filtering as a tenant
    /// sees it, L3 rules, both nodes' status. Exits 1 if a promise does not hold.
    Demo,
    /// Show the lab's hosts, processes and each gateway's role.
    Status,
    /// Fail a gateway node the way a test or the demo needs: `links` sets every link of the
    /// node down (its neighbours lose carrier); `freeze` drops all its traffic in one nft
    /// transaction and stops (SIGSTOP) its processes, without losing carrier.
    Fail {
        /// igw-a or igw-b.
        #[arg(value_name = "NODE")]
        gateway: String,
        #[arg(long, value_enum, default_value_t = FailHow::Links)]
        how: FailHow,
    },
    /// Undo `fail`: links up again, or the freeze lifted (SIGCONT, drop table removed).
    Restore {
        /// igw-a or igw-b.
        #[arg(value_name = "NODE")]
        gateway: String,
    },
    /// Measure the data plane from a lab host: a UDP probe stream (the outage it sees) and
    /// long-lived TCP flows (how many survive), bounded by --duration-s; prints JSON.
    Traffic {
        /// Run inside this lab host's namespace (e.g. tenant-a); default: where igw runs.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        args: traffic::Args,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailHow {
    Links,
    Freeze,
}

/// What `up` recorded, so `down` and `status` find every process by PID.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    prefix: String,
    procs: Vec<LabProc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabProc {
    name: String,
    host: String,
    pid: u32,
    log: PathBuf,
}

struct Lab {
    prefix: String,
    dir: PathBuf,
    state: State,
}

pub fn run(_g: &Global, a: &Args) -> Result<(), CliError> {
    if !a.prefix.starts_with("igw") || a.prefix.len() > 12 {
        return Err(
            anyhow::anyhow!("--prefix must start with `igw` and be at most 12 characters").into(),
        );
    }
    let dir = a.state_dir.join(&a.prefix);
    match &a.cmd {
        LabCmd::Up => up(&a.prefix, &dir)?,
        LabCmd::Down => down(&a.prefix, &dir)?,
        LabCmd::Status => status(&a.prefix, &dir)?,
        LabCmd::Demo => {
            if existing_namespaces(&a.prefix).is_empty() {
                return Err(anyhow::anyhow!(
                    "the lab `{}` is not up: run `igw lab up` first",
                    a.prefix
                )
                .into());
            }
            let lab = Lab {
                prefix: a.prefix.clone(),
                dir: dir.clone(),
                state: load_state(&dir),
            };
            demo::run(&lab)?;
        }
        LabCmd::Traffic { from: None, args } => traffic::run(args)?,
        LabCmd::Fail { gateway, how } => fail(&a.prefix, gateway, *how, true)?,
        LabCmd::Restore { gateway } => {
            fail(&a.prefix, gateway, FailHow::Freeze, false)?;
            fail(&a.prefix, gateway, FailHow::Links, false)?;
        }
        LabCmd::Traffic {
            from: Some(host),
            args,
        } => {
            if !topo::HOSTS.contains(&host.as_str()) {
                return Err(anyhow::anyhow!(
                    "no lab host `{host}` (hosts: {})",
                    topo::HOSTS.join(", ")
                )
                .into());
            }
            let exe = std::env::current_exe().map_err(anyhow::Error::from)?;
            let status = Command::new("ip")
                .args(["netns", "exec", &ns(&a.prefix, host)])
                .arg(exe)
                .args(["lab", "traffic", "--to", &args.to.to_string()])
                .args([
                    "--interval-ms",
                    &args.interval_ms.to_string(),
                    "--flows",
                    &args.flows.to_string(),
                ])
                .args(["--duration-s", &args.duration_s.to_string()])
                .status()
                .map_err(anyhow::Error::from)?;
            if !status.success() {
                return Err(anyhow::anyhow!("traffic from {host} failed").into());
            }
        }
    }
    Ok(())
}

fn sh(argv: &[&str]) -> Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn require(tools: &[&str]) -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        bail!("the lab needs root (network namespaces, nftables, FRR)");
    }
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            if t.starts_with('/') {
                !Path::new(t).exists()
            } else {
                sh(&["sh", "-c", &format!("command -v {t}")]).is_err()
            }
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "the lab needs {} (run `make deps`, or scripts/deps.sh lab)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn existing_namespaces(prefix: &str) -> Vec<String> {
    let list = sh(&["ip", "netns", "list"]).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.strip_prefix(prefix).is_some_and(|r| r.starts_with('-')))
        .map(str::to_string)
        .collect()
}

impl Lab {
    fn ns(&self, host: &str) -> String {
        ns(&self.prefix, host)
    }

    fn exec(&self, host: &str, cmd: &[&str]) -> Result<String> {
        let ns = self.ns(host);
        let mut v = vec!["ip", "netns", "exec", ns.as_str()];
        v.extend_from_slice(cmd);
        sh(&v)
    }

    /// Starts a long-running process in a host's namespace, in its own process group (so it
    /// outlives this command), with output to `<dir>/logs/<name>.log`; records its PID.
    fn spawn(&mut self, host: &str, name: &str, cmd: &[&str]) -> Result<u32> {
        let ns = self.ns(host);
        self.spawn_with(host, name, &["ip", "netns", "exec", &ns], cmd)
    }

    /// Like [`Lab::spawn`], but joins only the network namespace (`nsenter --net`), without
    /// the /etc/netns bind mounts of `ip netns exec`: FRR's bgpd refuses `router bgp` when
    /// started under them (seen with FRR 8.4 here).
    fn spawn_net_only(&mut self, host: &str, name: &str, cmd: &[&str]) -> Result<u32> {
        let net = format!("--net=/run/netns/{}", self.ns(host));
        self.spawn_with(host, name, &["nsenter", &net, "--"], cmd)
    }

    fn spawn_with(
        &mut self,
        host: &str,
        name: &str,
        wrapper: &[&str],
        cmd: &[&str],
    ) -> Result<u32> {
        let logs = self.dir.join("logs");
        fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}.log"));
        let f = fs::File::create(&log)?;
        let child = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id();
        self.state.procs.push(LabProc {
            name: name.into(),
            host: host.into(),
            pid,
            log,
        });
        self.save()?;
        Ok(pid)
    }

    fn save(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)?;
        fs::write(
            self.dir.join("lab.json"),
            serde_json::to_vec_pretty(&self.state)?,
        )?;
        Ok(())
    }

    fn step(&self, what: &str) {
        println!("lab: {what}");
    }
}

fn up(prefix: &str, dir: &Path) -> Result<()> {
    require(&[
        "ip",
        "nft",
        "python3",
        "openssl",
        "curl",
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bgpd",
        "/usr/lib/frr/bfdd",
        "vtysh",
    ])?;
    let left = existing_namespaces(prefix);
    if !left.is_empty() {
        bail!(
            "a lab with prefix `{prefix}` is up ({}); run `igw lab down` first",
            left.join(", ")
        );
    }
    let mut lab = Lab {
        prefix: prefix.to_string(),
        dir: dir.to_path_buf(),
        state: State {
            prefix: prefix.into(),
            procs: vec![],
        },
    };
    fs::create_dir_all(dir)?;
    lab.save()?;
    let started = Instant::now();
    let r = build(&mut lab);
    if let Err(e) = r {
        eprintln!("lab: up failed");
        for p in &lab.state.procs {
            let log = fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("--- {} ({}) log tail:", p.name, p.host);
            for l in tail.iter().rev() {
                eprintln!("    {l}");
            }
        }
        if std::env::var_os("IGW_LAB_KEEP").is_some() {
            eprintln!("lab: IGW_LAB_KEEP is set: leaving the lab up for inspection");
        } else {
            let _ = down(prefix, dir);
        }
        return Err(e);
    }
    println!(
        "lab: up in {:.1} s; try `igw lab status`",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn build(lab: &mut Lab) -> Result<()> {
    lab.step("namespaces, links, addresses and routes (rtnetlink)");
    for (host, ops) in topo_ops(&lab.prefix)? {
        if ops.is_empty() {
            net::add_namespace(&lab.ns(host))?;
        } else {
            net::apply(&lab.ns(host), ops)?;
        }
    }
    lab.step("names and certificates of the Internet origins");
    let hosts: String = topo::ORIGINS
        .iter()
        .map(|(n, a, _)| format!("{a} {n}\n"))
        .collect();
    for h in topo::HOSTS {
        // `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts.
        let etc = Path::new("/etc/netns").join(lab.ns(h));
        fs::create_dir_all(&etc)?;
        let me = fs::read_to_string("/etc/hostname").unwrap_or_default();
        fs::write(
            etc.join("hosts"),
            format!("127.0.0.1 localhost\n127.0.1.1 {}\n{hosts}", me.trim()),
        )?;
        // No resolver inside the lab: a lookup must fail at once on loopback, never leave
        // for the machine's real DNS server.
        fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
    }
    let (cert, key) = (lab.dir.join("origin.crt"), lab.dir.join("origin.key"));
    let san: Vec<String> = topo::ORIGINS
        .iter()
        .map(|(n, _, _)| format!("DNS:{n}"))
        .collect();
    sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=igw lab origin",
        "-addext",
        &format!("subjectAltName={}", san.join(",")),
        "-keyout",
        &key.to_string_lossy(),
        "-out",
        &cert.to_string_lossy(),
    ])?;
    lab.step("origins (HTTP :80, HTTPS :443, echo :7) in inet");
    let origin = origin_script(&lab.dir)?;
    lab.spawn(
        "inet",
        "origin",
        &[
            "/usr/bin/python3",
            &origin.to_string_lossy(),
            "--cert",
            &cert.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
            "--echo-addr",
            topo::ECHO,
        ],
    )?;
    let ok = wait(Duration::from_secs(10), || {
        lab.exec("inet", &["bash", "-c", "exec 3<>/dev/tcp/203.0.113.10/80"])
            .is_ok()
    });
    if !ok {
        bail!(
            "origin did not start; see {}",
            lab.dir.join("logs/origin.log").display()
        );
    }
    lab.step("bundles of igw-a and igw-b (examples/small, lab paths)");
    let a = gateway::bundle(lab, "igw-a")?;
    let b = gateway::bundle(lab, "igw-b")?;
    lab.step("FRR on the ToR and the upstream");
    gateway::routers(lab, &a)?;
    for (gw, bundle) in [("igw-a", &a), ("igw-b", &b)] {
        lab.step(&format!("{gw}: FRR (as standby until its arbiter decides)"));
        gateway::gateway_frr(lab, gw, bundle)?;
    }
    lab.step("waiting for BGP: the ToR learns the default route, the upstream the NAT pool");
    let converged = wait(Duration::from_secs(30), || {
        let tor = frr::vtysh(lab, "tor", "show ip route 0.0.0.0/0 json").unwrap_or_default();
        let up =
            frr::vtysh(lab, "upstream", "show ip route 198.51.100.10/32 json").unwrap_or_default();
        tor.contains("\"bgp\"") && up.contains("\"bgp\"")
    });
    if !converged {
        bail!(
            "BGP did not converge in 30 s; see {}/logs/*-bgpd.log",
            lab.dir.display()
        );
    }
    for gw in ["igw-a", "igw-b"] {
        lab.step(&format!(
            "{gw}: sysctls, ruleset, conntrack-sync, proxy, arbiter"
        ));
        gateway::daemons(lab, gw)?;
    }
    lab.step(
        "waiting for the arbiters: one active gateway, the ToR and the upstream routing to it",
    );
    let active = gateway::wait_roles(lab)?;
    lab.step(&format!("{active} is active"));
    Ok(())
}

/// The topology as rtnetlink operations, in an order that works: every namespace first
/// (an empty list means "create"), then per host its loopback, sysctls, the veth pairs it
/// creates (peers moved to the other side), addresses, links up, and static routes.
fn topo_ops(prefix: &str) -> Result<Vec<(&'static str, Vec<net::Op>)>> {
    use net::Op;
    let mut out: Vec<(&'static str, Vec<Op>)> = topo::HOSTS.iter().map(|h| (*h, vec![])).collect();
    for h in topo::HOSTS {
        let router = topo::ROUTERS.contains(h);
        let fwd = if router { "1" } else { "0" };
        let mut ops = vec![
            Op::Up("lo".into()),
            Op::Sysctl {
                key: "net/ipv4/ip_forward".into(),
                value: fwd.into(),
            },
            Op::Sysctl {
                key: "net/ipv6/conf/all/forwarding".into(),
                value: fwd.into(),
            },
            // No DAD delay on lab links: addresses are usable at once.
            Op::Sysctl {
                key: "net/ipv6/conf/default/accept_dad".into(),
                value: "0".into(),
            },
        ];
        for l in topo::LINKS.iter().filter(|l| l.a.host == *h) {
            ops.push(Op::Veth {
                name: l.a.ifname.into(),
                peer: l.b.ifname.into(),
                peer_ns: ns(prefix, l.b.host),
            });
        }
        out.push((h, ops));
    }
    // Addresses and links up, once both ends exist in their namespaces.
    for h in topo::HOSTS {
        let mut ops = Vec::new();
        for e in topo::LINKS
            .iter()
            .flat_map(|l| [l.a, l.b])
            .filter(|e| e.host == *h)
        {
            for a in e.addrs {
                let net: ipnet::IpNet = a.parse().with_context(|| format!("lab address {a}"))?;
                ops.push(Op::Addr {
                    ifname: e.ifname.into(),
                    net,
                });
            }
            ops.push(Op::Up(e.ifname.into()));
        }
        for r in topo::ROUTES.iter().filter(|r| r.host == *h) {
            let dst = if r.dst == "default" {
                None
            } else {
                Some(r.dst.parse()?)
            };
            ops.push(Op::Route {
                dst,
                via: r.via.parse()?,
            });
        }
        out.push((h, ops));
    }
    Ok(out)
}

/// The origin server ships inside the binary, so the lab runs from a bare `igw`.
fn origin_script(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("origin.py");
    fs::write(&p, include_str!("../../../../tests/lab/origin.py"))?;
    Ok(p)
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn load_state(dir: &Path) -> State {
    fs::read(dir.join("lab.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn kill_pid(pid: u32) {
    // Negative PID: the whole process group the lab started (daemons that forked too).
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn down(prefix: &str, dir: &Path) -> Result<()> {
    let state = load_state(dir);
    for p in &state.procs {
        kill_pid(p.pid);
    }
    // `down` returns only once the processes are gone (a zombie awaiting its reaper counts
    // as gone: it holds nothing).
    let gone = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    if !wait(Duration::from_secs(5), || {
        state.procs.iter().all(|p| gone(p.pid))
    }) {
        eprintln!("lab: some processes did not exit within 5 s");
    }
    let namespaces = existing_namespaces(prefix);
    for ns in &namespaces {
        // Whatever still runs inside (FRR daemons that daemonised) dies by PID.
        if let Ok(pids) = sh(&["ip", "netns", "pids", ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
    for ns in &namespaces {
        // A process may take a moment to release the namespace after SIGKILL.
        let ok = wait(Duration::from_secs(5), || {
            sh(&["ip", "netns", "del", ns]).is_ok() || !Path::new("/run/netns").join(ns).exists()
        });
        if !ok {
            eprintln!("lab: could not delete namespace {ns}");
        }
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        let _ = fs::remove_dir_all(Path::new("/var/run/frr").join(ns));
        let _ = fs::remove_dir_all(Path::new("/etc/frr").join(ns));
    }
    let _ = fs::remove_dir_all(dir);
    let left = existing_namespaces(prefix);
    if !left.is_empty() {
        bail!("namespaces left behind: {}", left.join(", "));
    }
    println!(
        "lab: down ({} namespaces, {} processes removed)",
        namespaces.len(),
        state.procs.len()
    );
    Ok(())
}

/// The table a freeze installs: everything to, from and through the node is dropped, ahead
/// of every other hook (priority -500), in one transaction.
const FREEZE: &str = "table inet igwlab-freeze {
  chain in { type filter hook prerouting priority -500; policy drop; }
  chain out { type filter hook output priority -500; policy drop; }
}
";

fn fail(prefix: &str, node: &str, how: FailHow, on: bool) -> Result<()> {
    if !topo::ROUTERS.contains(&node) || !node.starts_with("igw-") {
        bail!("`{node}` is not a gateway node (igw-a, igw-b)");
    }
    let ns = ns(prefix, node);
    if !existing_namespaces(prefix).contains(&ns) {
        bail!("the lab `{prefix}` is not up");
    }
    let ifaces: Vec<&str> = topo::LINKS
        .iter()
        .flat_map(|l| [l.a, l.b])
        .filter(|e| e.host == node)
        .map(|e| e.ifname)
        .collect();
    match (how, on) {
        (FailHow::Links, _) => {
            let state = if on { "down" } else { "up" };
            for i in &ifaces {
                sh(&["ip", "-n", &ns, "link", "set", i, state])?;
            }
            println!("lab: {node}: links {} {state}", ifaces.join(", "));
        }
        (FailHow::Freeze, true) => {
            let mut child = Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .spawn()?;
            use std::io::Write as _;
            child
                .stdin
                .take()
                .context("nft stdin")?
                .write_all(FREEZE.as_bytes())?;
            if !child.wait()?.success() {
                bail!("nft refused the freeze table in {ns}");
            }
            let pids = sh(&["ip", "netns", "pids", &ns])?;
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-STOP", pid]).status();
            }
            println!(
                "lab: {node}: frozen (traffic dropped, {} processes stopped)",
                pids.split_whitespace().count()
            );
        }
        (FailHow::Freeze, false) => {
            let pids = sh(&["ip", "netns", "pids", &ns])?;
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-CONT", pid]).status();
            }
            // Absent when the node was not frozen: nothing to undo.
            let _ = sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "nft",
                "delete",
                "table",
                "inet",
                "igwlab-freeze",
            ]);
        }
    }
    Ok(())
}

fn status(prefix: &str, dir: &Path) -> Result<()> {
    let namespaces = existing_namespaces(prefix);
    if namespaces.is_empty() {
        println!("lab `{prefix}`: down");
        return Ok(());
    }
    println!("lab `{prefix}`: {} namespaces", namespaces.len());
    let state = load_state(dir);
    for p in &state.procs {
        let alive = Path::new("/proc").join(p.pid.to_string()).exists();
        println!(
            "  {:<10} {:<22} pid {:<7} {}",
            p.host,
            p.name,
            p.pid,
            if alive { "running" } else { "EXITED" }
        );
    }
    Ok(())
}
