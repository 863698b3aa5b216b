//! Promise: established NATed flows survive a failover. Gateway namespaces A and B (same
//! SNAT to 198.51.100.10) sit between one tenant and one Internet server; `igw
//! conntrack-sync` replicates A's table to B over the sync link. 100 TCP flows and 10 UDP
//! flows go through A; A is cut off (its links deleted), B commits its cache, the routes
//! move to B, and every flow keeps carrying data both ways, with the same NAT binding on B
//! as on A. A forged frame (wrong key) sent to B changes nothing there and is counted.
//!
//! The tenant's client and the server are this test binary re-executed inside their
//! namespaces (`IGW_CT_HELPER=client|server`), so no outside tool is needed for traffic.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use igw_conntrack_sync::ct::{CtEntry, Tuple};
use igw_conntrack_sync::proto::{self, Body, Frame, Key, NONCE_LEN, Role, Update};
use igw_testbed::{Netns, TempDir, require_root, veth, wait_for};

const IGW: &str = env!("CARGO_BIN_EXE_igw");
const TCP_FLOWS: usize = 100;
const UDP_FLOWS: usize = 10;
const SERVER: &str = "203.0.113.10";
const POOL: &str = "198.51.100.10";

/// Not a test of its own: the body of the helper processes (a no-op when run normally).
#[test]
fn helper_process() {
    match std::env::var("IGW_CT_HELPER").as_deref() {
        Ok("server") => server(),
        Ok("client") => client(),
        _ => {}
    }
}

/// Straight to fd 1: libtest captures `println!` in a test thread.
fn say(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn server() {
    let tcp = TcpListener::bind((SERVER, 5000)).expect("bind tcp 5000");
    let udp = UdpSocket::bind((SERVER, 5353)).expect("bind udp 5353");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    say("HELPER ready");
    for s in tcp.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = s;
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

fn client() {
    let timeout = Some(Duration::from_secs(8));
    let mut tcp = Vec::new();
    for i in 0..TCP_FLOWS {
        let s = TcpStream::connect((SERVER, 5000)).unwrap_or_else(|e| panic!("flow {i}: {e}"));
        s.set_read_timeout(timeout).unwrap();
        s.set_write_timeout(timeout).unwrap();
        tcp.push(s);
    }
    let mut udp = Vec::new();
    for _ in 0..UDP_FLOWS {
        let u = UdpSocket::bind(("198.18.1.10", 0)).unwrap();
        u.connect((SERVER, 5353)).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        udp.push(u);
    }
    let dir = PathBuf::from(std::env::var("IGW_CT_DIR").expect("IGW_CT_DIR"));
    std::fs::write(dir.join("client-ready"), "ready").unwrap();
    // Rounds are asked for by files `round-N`; each is answered in `result-N`. Bounded:
    // the client gives up after a minute without a request.
    let mut round = 0;
    loop {
        let next = dir.join(format!("round-{}", round + 1));
        if wait_for(Duration::from_secs(60), || next.exists().then_some(())).is_none() {
            break;
        }
        round += 1;
        let mut failures = Vec::new();
        // Every flow sends first, then all answers are read under one deadline, so a round
        // takes seconds even when every flow is dead (a flow that fails is not retried).
        let msg = |i: usize| format!("tcp flow {i:03} round {round:03}\n");
        let mut sent = vec![false; tcp.len()];
        for (i, s) in tcp.iter_mut().enumerate() {
            match s.write_all(msg(i).as_bytes()) {
                Ok(()) => sent[i] = true,
                Err(e) => failures.push(format!("tcp {i}: write: {e} ({:?})", e.kind())),
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(8);
        for (i, s) in tcp.iter_mut().enumerate() {
            if !sent[i] {
                continue;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .unwrap();
            let want = msg(i);
            let mut back = vec![0u8; want.len()];
            match s.read_exact(&mut back) {
                Ok(()) if back == want.as_bytes() => {}
                Ok(()) => failures.push(format!("tcp {i}: wrong echo")),
                Err(e) => failures.push(format!("tcp {i}: read: {e} ({:?})", e.kind())),
            }
        }
        for (i, u) in udp.iter().enumerate() {
            let msg = format!("udp flow {i} round {round}");
            let mut buf = [0u8; 128];
            let r = u.send(msg.as_bytes()).and_then(|_| u.recv(&mut buf));
            match r {
                Ok(n) if &buf[..n] == msg.as_bytes() => {}
                Ok(_) => failures.push(format!("udp {i}: wrong echo")),
                Err(e) => failures.push(format!("udp {i}: {e}")),
            }
        }
        // The test waits for this file: written whole under a temporary name, then renamed,
        // so it never reads half a report.
        let report = format!("failures {}: {failures:?}\n", failures.len());
        let tmp = dir.join(format!("result-{round}.tmp"));
        std::fs::write(&tmp, report).unwrap();
        std::fs::rename(&tmp, dir.join(format!("result-{round}"))).unwrap();
    }
}

/// The client process, driven through files in `dir`; killed by PID on drop.
struct Client {
    child: Child,
    dir: PathBuf,
    round: usize,
}

impl Client {
    fn start(ns: &Netns, dir: &Path) -> Self {
        let me = std::env::current_exe().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(&me)
            .args([
                "--exact",
                "helper_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("IGW_CT_HELPER", "client")
            .env("IGW_CT_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn client");
        let c = Client {
            child,
            dir: dir.to_path_buf(),
            round: 0,
        };
        wait_for(Duration::from_secs(30), || {
            c.dir.join("client-ready").exists().then_some(())
        })
        .expect("the client never opened its flows");
        c
    }

    /// One exchange on every flow; returns the failures reported.
    fn round(&mut self) -> String {
        self.round += 1;
        std::fs::write(self.dir.join(format!("round-{}", self.round)), "go").unwrap();
        let result = self.dir.join(format!("result-{}", self.round));
        // A round is bounded by the client's deadlines (8 s TCP, 2 s per UDP flow).
        wait_for(Duration::from_secs(120), || {
            std::fs::read_to_string(&result).ok()
        })
        .expect("the client never answered a round")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With direct inject, B's kernel follows A's table before any failure: the NAT bindings
/// are there, an update on A (a new mark, which the kernel takes only as an update of the
/// existing entry) and a create then delete on A reach it.
fn check_direct_inject(
    a: &Netns,
    b: &Netns,
    node_b: &Path,
    on_a: &BTreeMap<String, (String, String)>,
    want: usize,
) {
    let st = wait_for(Duration::from_secs(20), || {
        status(node_b).filter(|v| v["inject"]["in_kernel"].as_u64() >= Some(want as u64))
    })
    .unwrap_or_else(|| panic!("B's kernel never held {want} entries: {:?}", status(node_b)));
    assert_eq!(st["inject"]["failed"], 0, "inject failures: {st}");
    assert_eq!(&nat_bindings(b), on_a, "B's kernel has other NAT bindings");

    let marked = |ns: &Netns| {
        ns.stdout(&["conntrack", "-L", "-p", "tcp", "--dport", "5000", "-m", "7"])
            .lines()
            .filter(|l| l.contains("src=198.18.1.10"))
            .count()
    };
    // `conntrack -U` dumps, then updates entry by entry; an entry whose state changed in
    // between (the flows carry data) can make it exit with "Protocol error" after marking
    // the others. Setting a mark is idempotent: run it again, at most three times.
    let mut last = String::new();
    for _ in 0..3 {
        let out = a.try_exec(&[
            "conntrack",
            "-U",
            "-p",
            "tcp",
            "--dport",
            "5000",
            "-s",
            "198.18.1.10",
            "-m",
            "7",
        ]);
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if marked(a) == TCP_FLOWS {
            break;
        }
    }
    assert_eq!(marked(a), TCP_FLOWS, "conntrack -U on A: {last}");
    wait_for(Duration::from_secs(10), || {
        (marked(b) == TCP_FLOWS).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the new mark never reached B's kernel ({} of {TCP_FLOWS}): {:?}",
            marked(b),
            status(node_b)
        )
    });
    assert_eq!(&nat_bindings(b), on_a, "an update changed B's NAT bindings");

    let extra = [
        "-p",
        "udp",
        "-s",
        "198.18.1.77",
        "-d",
        SERVER,
        "--sport",
        "999",
        "--dport",
        "53",
    ];
    let present = |ns: &Netns| {
        ns.stdout(&["conntrack", "-L", "-s", "198.18.1.77"])
            .contains("sport=999")
    };
    let mut create = vec!["conntrack", "-I"];
    create.extend(extra);
    create.extend([
        "-r",
        SERVER,
        "-q",
        "198.18.1.77",
        "--reply-port-src",
        "53",
        "--reply-port-dst",
        "999",
        "-t",
        "120",
    ]);
    a.exec(&create);
    wait_for(Duration::from_secs(10), || present(b).then_some(()))
        .unwrap_or_else(|| panic!("an entry created on A never reached B's kernel"));
    a.exec(&["conntrack", "-D", "-s", "198.18.1.77"]);
    wait_for(Duration::from_secs(10), || (!present(b)).then_some(()))
        .unwrap_or_else(|| panic!("an entry deleted on A stayed in B's kernel"));
    let st = status(node_b).unwrap();
    assert_eq!(st["inject"]["failed"], 0, "inject failures: {st}");
    eprintln!("direct inject on B: {}", st["inject"]);
}

fn node_toml(dir: &Path, name: &str, peer: &str, me: &str, peer_addr: &str, run: &Path) -> PathBuf {
    let text = format!(
        r#"
[node]
name = "{name}"
id = {id}
router_id = "198.19.0.{id}"
[interfaces]
fabric = ["tor0"]
upstream = ["up0"]
sync = "sync0"
[bgp]
asn = 65010
[peer]
name = "{peer}"
sync_address = "{peer_addr}"
[sync]
address = "{me}"
key_file = "psk"
[nat]
pool = ["{POOL}"]
[control]
run_dir = "{run}"
"#,
        id = if name == "igw-a" { 1 } else { 2 },
        run = run.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn status(node: &Path) -> Option<serde_json::Value> {
    let out = Command::new(IGW)
        .args(["--node"])
        .arg(node)
        .args(["conntrack", "status", "--json"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// sport -> (reply dst, reply dport) of the TCP flows to the server, from `conntrack -L`.
fn nat_bindings(ns: &Netns) -> BTreeMap<String, (String, String)> {
    let out = ns.stdout(&["conntrack", "-L", "-p", "tcp", "--dport", "5000"]);
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |k: &str, nth: usize| {
            f.iter()
                .filter_map(|w| w.strip_prefix(k))
                .nth(nth)
                .unwrap_or("")
                .to_string()
        };
        if get("src=", 0) == "198.18.1.10" {
            m.insert(get("sport=", 0), (get("dst=", 1), get("dport=", 1)));
        }
    }
    m
}

/// A Hello and a batch with an invented entry, signed with the wrong key.
fn forged_frames() -> Vec<u8> {
    let key = Key::from_file_bytes(b"not the key of this gateway pair, forged").unwrap();
    let t = |s: &str, d: &str, sp, dp| Tuple {
        src: s.parse().unwrap(),
        dst: d.parse().unwrap(),
        proto: 6,
        src_port: Some(sp),
        dst_port: Some(dp),
        icmp_id: None,
        icmp_type: None,
        icmp_code: None,
        zone: None,
        other: vec![],
    };
    let e = CtEntry {
        orig: t("198.18.1.99", SERVER, 4444, 5000),
        reply: t(SERVER, POOL, 5000, 4444),
        status: 0x19e,
        timeout: 3600,
        mark: 0,
        zone: 0,
        protoinfo: None,
        labels: None,
    };
    let mut b = Vec::new();
    let hello = Frame {
        session: 1,
        seq: 0,
        body: Body::Hello {
            node: "igw-a".into(),
            role: Role::Active,
            nonce: [7; NONCE_LEN],
        },
    };
    proto::encode(&hello, &key, &[0; NONCE_LEN], &mut b);
    let batch = Frame {
        session: 1,
        seq: 1,
        body: Body::Batch(vec![Update::Upsert(e)]),
    };
    proto::encode(&batch, &key, &[0; NONCE_LEN], &mut b);
    b
}

/// Cache mode (`--no-direct-inject`): B holds A's entries in its cache only, and the
/// promotion commit writes them all.
#[test]
fn conntrack_flows_survive_failover() {
    if std::env::var("IGW_CT_HELPER").is_ok() {
        return;
    }
    scenario(false);
}

/// Direct inject (the default): B's kernel holds A's entries, NAT bindings included,
/// before any failure; an update (mark) and a create/delete on A reach B's kernel; the
/// promotion commit writes (almost) nothing; the flows survive just the same.
#[test]
fn conntrack_direct_inject_survives_failover() {
    if std::env::var("IGW_CT_HELPER").is_ok() {
        return;
    }
    scenario(true);
}

fn scenario(inject: bool) {
    require_root(&["ip", "nft", "conntrack", "sysctl", "bash"]);
    let dir = TempDir::new("ctsync");
    std::fs::write(
        dir.join("psk"),
        "0123456789abcdef0123456789abcdef-lab-psk\n",
    )
    .unwrap();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/small/policy.toml");
    let t = Netns::new("ten");
    let a = Netns::new("gwa");
    let b = Netns::new("gwb");
    let s = Netns::new("srv");

    veth(&t, "ta", "198.19.1.0/31", &a, "at", "198.19.1.1/31");
    veth(&t, "tb", "198.19.1.2/31", &b, "bt", "198.19.1.3/31");
    veth(&s, "sa", "198.19.2.0/31", &a, "as", "198.19.2.1/31");
    veth(&s, "sb", "198.19.2.2/31", &b, "bs", "198.19.2.3/31");
    veth(&a, "ay", "198.19.255.1/30", &b, "by", "198.19.255.2/30");
    t.ip(&["addr", "add", "198.18.1.10/32", "dev", "lo"]);
    t.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.19.1.1",
        "src",
        "198.18.1.10",
    ]);
    s.ip(&["addr", "add", &format!("{SERVER}/32"), "dev", "lo"]);
    s.ip(&["route", "add", &format!("{POOL}/32"), "via", "198.19.2.1"]);
    for (gw, tor, up, upif) in [
        (&a, "198.19.1.0", "198.19.2.0", "as"),
        (&b, "198.19.1.2", "198.19.2.2", "bs"),
    ] {
        gw.sysctl("net.ipv4.ip_forward=1");
        gw.ip(&["route", "add", "198.18.1.0/24", "via", tor]);
        gw.ip(&["route", "add", &format!("{SERVER}/32"), "via", up]);
        let rules = format!(
            "table ip igwnat {{\n chain post {{\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"{upif}\" ip saddr 198.18.0.0/16 snat to {POOL}\n }}\n}}\n"
        );
        gw.exec_stdin(&["nft", "-f", "-"], rules.as_bytes());
    }

    let run_a = dir.join("run-a");
    let run_b = dir.join("run-b");
    let node_a = node_toml(
        dir.path(),
        "igw-a",
        "igw-b",
        "198.19.255.1",
        "198.19.255.2",
        &run_a,
    );
    let node_b = node_toml(
        dir.path(),
        "igw-b",
        "igw-a",
        "198.19.255.2",
        "198.19.255.1",
        &run_b,
    );
    let pol = policy.to_str().unwrap();
    let daemon = |ns: &Netns, node: &Path, role: &str, log: &str| {
        ns.spawn(
            &[
                IGW,
                "--node",
                node.to_str().unwrap(),
                "--policy",
                pol,
                "conntrack-sync",
                "--role",
                role,
                if inject {
                    "--direct-inject"
                } else {
                    "--no-direct-inject"
                },
            ],
            Some(&dir.join(log)),
        )
    };
    let db = daemon(&b, &node_b, "standby", "b.log");
    let da = daemon(&a, &node_a, "active", "a.log");
    let me = std::env::current_exe().unwrap();
    let _srv = s.spawn(
        &[
            "env",
            "IGW_CT_HELPER=server",
            me.to_str().unwrap(),
            "--exact",
            "helper_process",
            "--nocapture",
        ],
        Some(&dir.join("server.log")),
    );
    let logs = || {
        format!(
            "a.log:\n{}\nb.log:\n{}",
            std::fs::read_to_string(dir.join("a.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("b.log")).unwrap_or_default()
        )
    };
    wait_for(Duration::from_secs(10), || {
        status(&node_a).filter(|v| v["peer_connected"] == true)
    })
    .unwrap_or_else(|| panic!("A never connected to B\n{}", logs()));
    // Both daemons run every thread in SCHED_BATCH (set by the daemon itself here: no
    // service manager chose a policy).
    for (name, d) in [("A", &da), ("B", &db)] {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).expect("tasks");
        for t in tasks {
            let t = t.unwrap().path();
            // proc_pid_stat(5): field 41 is the policy; fields after the command's ")".
            let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
            let policy = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(41 - 3))
                .map(str::to_string);
            assert_eq!(
                policy.as_deref(),
                Some("3"),
                "{name}'s thread {} is not SCHED_BATCH (3)",
                t.display()
            );
        }
    }
    // The server listens once its port answers from the tenant's side of A.
    wait_for(Duration::from_secs(10), || {
        s.try_exec(&["bash", "-c", "exec 3<>/dev/tcp/203.0.113.10/5000"])
            .status
            .success()
            .then_some(())
    })
    .expect("server never listened");

    eprintln!("starting the client");
    let cdir = dir.join("client");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut client = Client::start(&t, &cdir);
    eprintln!("client ready");
    let r = client.round();
    eprintln!("first round: {r}");
    assert!(
        r.contains("failures 0"),
        "flows through A fail before failover: {r}"
    );

    let want = TCP_FLOWS + UDP_FLOWS;
    let st = wait_for(Duration::from_secs(20), || {
        status(&node_b).filter(|v| v["entries_cached"].as_u64() >= Some(want as u64))
    })
    .unwrap_or_else(|| {
        panic!(
            "B's cache never held {want} entries: {:?}\n{}",
            status(&node_b),
            logs()
        )
    });
    let cached_before = st["entries_cached"].as_u64().unwrap();
    let on_a = nat_bindings(&a);
    assert_eq!(on_a.len(), TCP_FLOWS, "A's table: {on_a:?}");
    assert!(
        on_a.values().all(|(ip, _)| ip == POOL),
        "A SNATs to the pool: {on_a:?}"
    );

    // A forged session (wrong key) from A's side of the sync link.
    let forged = dir.join("forged.bin");
    std::fs::write(&forged, forged_frames()).unwrap();
    a.exec(&[
        "bash",
        "-c",
        &format!("cat {} > /dev/tcp/198.19.255.2/7400", forged.display()),
    ]);
    let st = wait_for(Duration::from_secs(10), || {
        status(&node_b).filter(|v| v["messages"]["dropped"]["bad_mac"].as_u64() >= Some(1))
    })
    .unwrap_or_else(|| panic!("B did not count the forged frame: {:?}", status(&node_b)));
    assert_eq!(
        st["entries_cached"].as_u64(),
        Some(cached_before),
        "forged frame changed B's cache"
    );

    if inject {
        check_direct_inject(&a, &b, &node_b, &on_a, want);
    } else {
        assert_eq!(st["inject"], serde_json::Value::Null, "{st}");
        assert!(
            nat_bindings(&b).is_empty(),
            "cache mode wrote into B's kernel"
        );
    }

    // A is cut off; B commits and the routes move to B.
    for l in ["at", "as", "ay"] {
        a.ip(&["link", "del", l]);
    }
    let out = Command::new(IGW)
        .args(["--node"])
        .arg(&node_b)
        .args(["conntrack", "commit"])
        .output()
        .unwrap();
    let commit = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "commit failed: {commit} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status(&node_b).unwrap();
    assert_eq!(st["last_commit"]["failed"], 0, "commit had failures: {st}");
    let c = &st["last_commit"];
    eprintln!("commit: {commit}");
    if inject {
        // Only what B's kernel did not hold yet is written: nothing, unless an entry
        // changed in the last instants before the cut.
        assert_eq!(c["mode"], "delta", "{st}");
        assert!(
            c["already_in_kernel"].as_u64() >= Some(TCP_FLOWS as u64),
            "direct inject left the flows to the commit: {st}"
        );
    } else {
        assert_eq!(c["mode"], "full", "{st}");
        assert!(c["written"].as_u64() >= Some(want as u64), "{st}");
    }
    let role = Command::new(IGW)
        .args(["--node"])
        .arg(&node_b)
        .args(["conntrack", "set-role", "active"])
        .output()
        .unwrap();
    assert!(role.status.success());
    t.ip(&[
        "route",
        "replace",
        "default",
        "via",
        "198.19.1.3",
        "src",
        "198.18.1.10",
    ]);
    s.ip(&[
        "route",
        "replace",
        &format!("{POOL}/32"),
        "via",
        "198.19.2.3",
    ]);

    // Every RST that reaches the tenant or the server is counted: there must be none.
    let rst = "table inet igwrst { chain i { type filter hook input priority 0; tcp flags & rst == rst counter; }; }\n";
    for ns in [&t, &s] {
        ns.exec_stdin(&["nft", "-f", "-"], rst.as_bytes());
    }
    let on_b = nat_bindings(&b);
    assert_eq!(on_b, on_a, "B's NAT bindings differ from A's");
    for round in 0..3 {
        let r = client.round();
        assert!(
            r.contains("failures 0"),
            "round {round} after failover: {r}\n{}\nB's table:\n{}\nB's stats:\n{}",
            logs(),
            b.stdout(&["conntrack", "-L"]),
            b.stdout(&["conntrack", "-S"])
        );
    }
    for ns in [&t, &s] {
        let out = ns.stdout(&["nft", "list", "table", "inet", "igwrst"]);
        assert!(
            out.contains("packets 0 bytes 0"),
            "a TCP reset reached {}: {out}",
            ns.name()
        );
    }
    // Still the same bindings after traffic, and the forged entry never reached the kernel.
    assert_eq!(nat_bindings(&b), on_a);
    let forged_ct = b.stdout(&["conntrack", "-L", "-s", "198.18.1.99"]);
    assert!(
        forged_ct.trim().is_empty(),
        "forged entry on B: {forged_ct}"
    );

    // The other direction: A comes back as the standby (sync link restored); B, now
    // active, connects to it and resyncs, so A's cache holds the flows B carries.
    let role = Command::new(IGW)
        .args(["--node"])
        .arg(&node_a)
        .args(["conntrack", "set-role", "standby"])
        .output()
        .unwrap();
    assert!(role.status.success(), "A set-role standby: {role:?}");
    veth(&a, "ay", "198.19.255.1/30", &b, "by", "198.19.255.2/30");
    let st = wait_for(Duration::from_secs(20), || {
        status(&node_a).filter(|v| v["entries_cached"].as_u64() >= Some(want as u64))
    })
    .unwrap_or_else(|| {
        panic!(
            "B never replicated back to A: A {:?}\nB {:?}\n{}",
            status(&node_a),
            status(&node_b),
            logs()
        )
    });
    assert_eq!(st["role"], "standby", "{st}");
    let b_st = status(&node_b).unwrap();
    assert!(
        b_st["resyncs"].as_u64() >= Some(1),
        "B sent no resync: {b_st}"
    );
}
