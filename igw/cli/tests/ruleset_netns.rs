//! Promise: `igw ruleset apply` puts the compiled policy in the kernel of a real gateway
//! namespace. Allowed 5-tuples pass and their counters move, others are dropped; tenant
//! egress is SNATed to the pool (seen in `conntrack -L`); tenant tcp/80 lands on the proxy
//! port; a re-apply keeps an established flow carrying data; an invalid policy and a
//! refused transaction leave the running table byte-identical; a member change is an
//! element update, not a reload.
//!
//! Topology (TESTBED.md plan): tenant 198.18.1.10 -- tor0 [gateway] up0 203.0.113.1 --
//! inet 203.0.113.10/.11; inet routes the pool 198.51.100.0/24 back to the gateway.

use std::path::Path;
use std::time::Duration;

use igw_testbed::{Netns, TempDir, require_root, veth, wait_for};

const IGW: &str = env!("CARGO_BIN_EXE_igw");

const ECHO_SERVER: &str = r#"
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
def h(c):
    with c:
        while True:
            d = c.recv(4096)
            if not d: return
            c.sendall(d)
while True:
    c, _ = s.accept(); threading.Thread(target=h, args=(c,), daemon=True).start()
"#;

/// Connects, sends `n` lines `gap` seconds apart, expects each echoed; bounded by count
/// and by a 3 s socket timeout.
const ECHO_CLIENT: &str = r#"
import socket, sys, time
host, port, n, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
try:
    c = socket.create_connection((host, port), timeout=3)
except Exception as e:
    print("connect-failed", e, flush=True); sys.exit(1)
print("connected", flush=True)
ok = 0
for i in range(n):
    m = ("ping %d\n" % i).encode()
    try:
        c.sendall(m); got = b""
        while len(got) < len(m):
            d = c.recv(4096)
            if not d: break
            got += d
    except Exception as e:
        print("error", e, flush=True); break
    if got != m: break
    ok += 1
    time.sleep(gap)
print("echoed", ok, flush=True)
sys.exit(0 if ok == n else 2)
"#;

fn policy(echo_members: &str, echo_ports: &str, extra: &str) -> String {
    format!(
        r#"
[objects.echo-servers]
members = [{echo_members}]

[[tenants]]
name = "tenant-a"
subnets = ["198.18.1.0/24"]

[[l3_rules]]
id = "a-echo"
tenants = ["tenant-a"]
proto = "tcp"
dst = ["echo-servers"]
ports = [{echo_ports}]
{extra}
"#
    )
}

struct Lab {
    tenant: Netns,
    gw: Netns,
    inet: Netns,
    dir: TempDir,
}

impl Lab {
    fn new() -> Self {
        let tenant = Netns::new("rst");
        let gw = Netns::new("rsg");
        let inet = Netns::new("rsi");
        veth(
            &tenant,
            "t0",
            "198.18.1.10/24",
            &gw,
            "tor0",
            "198.18.1.1/24",
        );
        veth(
            &gw,
            "up0",
            "203.0.113.1/24",
            &inet,
            "i0",
            "203.0.113.10/24,203.0.113.11/24",
        );
        tenant.ip(&["route", "add", "default", "via", "198.18.1.1"]);
        // The upstream routes only the pool back to the gateway (inside our namespace).
        inet.ip(&["route", "add", "198.51.100.0/24", "via", "203.0.113.1"]);
        gw.sysctl("net.ipv4.ip_forward=1");
        let dir = TempDir::new("rs");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/small");
        for f in ["node-a.toml", "psk"] {
            std::fs::copy(examples.join(f), dir.join(f)).expect("copy example");
        }
        Lab {
            tenant,
            gw,
            inet,
            dir,
        }
    }

    fn write_policy(&self, text: &str) {
        std::fs::write(self.dir.join("policy.toml"), text).expect("write policy");
    }

    /// `igw ruleset <args>` in the gateway namespace: (exit code, stdout + stderr).
    fn igw(&self, args: &[&str]) -> (i32, String) {
        let node = self.dir.join("node-a.toml");
        let pol = self.dir.join("policy.toml");
        let mut argv = vec![
            IGW,
            "--node",
            node.to_str().expect("utf8"),
            "--policy",
            pol.to_str().expect("utf8"),
            "ruleset",
        ];
        argv.extend_from_slice(args);
        let out = self.gw.try_exec(&argv);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn table_json(&self) -> String {
        self.gw
            .stdout(&["nft", "-j", "list", "table", "inet", "igw"])
    }

    /// Packets counted by the rule whose comment is `id` (first one), from the listing.
    fn counter(&self, id: &str) -> u64 {
        let v: serde_json::Value = serde_json::from_str(&self.table_json()).expect("json");
        v["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|o| o.get("rule"))
            .filter(|r| r["comment"] == id)
            .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.get("counter").and_then(|c| c["packets"].as_u64()))
            .sum()
    }

    fn client(&self, port: u16, n: u32, gap: &str) -> (i32, String) {
        let script = self.dir.join("client.py");
        let out = self.tenant.try_exec(&[
            "timeout",
            "30",
            "python3",
            script.to_str().expect("utf8"),
            "203.0.113.10",
            &port.to_string(),
            &n.to_string(),
            gap,
        ]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    }
}

#[test]
fn ruleset_applies_filters_nats_diverts_and_reloads_safely() {
    require_root(&["ip", "nft", "conntrack", "python3", "curl", "timeout"]);
    let lab = Lab::new();
    std::fs::write(lab.dir.join("server.py"), ECHO_SERVER).expect("write");
    std::fs::write(lab.dir.join("client.py"), ECHO_CLIENT).expect("write");
    let server = lab.dir.join("server.py");
    let server = server.to_str().expect("utf8");
    let _servers: Vec<_> = ["9000", "9100"]
        .iter()
        .map(|p| {
            lab.inet.spawn(
                &["python3", server, "203.0.113.10", p],
                Some(&lab.dir.join(&format!("server-{p}.log"))),
            )
        })
        .collect();
    // The "proxy": any TCP listener on the gateway's http_port (3129 in node-a.toml).
    std::fs::create_dir_all(lab.dir.join("www")).expect("mkdir");
    std::fs::write(lab.dir.join("www/marker.txt"), "served by the proxy port\n").expect("w");
    let www = lab.dir.join("www");
    let _proxy = lab.gw.spawn(
        &[
            "python3",
            "-m",
            "http.server",
            "3129",
            "--bind",
            "0.0.0.0",
            "--directory",
            www.to_str().expect("utf8"),
        ],
        Some(&lab.dir.join("proxy.log")),
    );

    lab.write_policy(&policy("\"203.0.113.10\"", "9000", ""));
    let (code, out) = lab.igw(&["apply"]);
    assert_eq!(code, 0, "first apply: {out}");
    assert!(out.contains("full reload"), "{out}");

    // Servers are up once a connection to the allowed port works (bounded).
    let up = wait_for(Duration::from_secs(10), || {
        (lab.client(9000, 1, "0").0 == 0).then_some(())
    });
    assert!(up.is_some(), "allowed tcp/9000 never connected");

    // Allowed 5-tuple passes and its counter moves; the other port is dropped.
    let before = lab.counter("a-echo");
    let (code, out) = lab.client(9000, 3, "0");
    assert_eq!(code, 0, "allowed flow: {out}");
    assert!(
        lab.counter("a-echo") > before,
        "counter of a-echo did not move"
    );
    let (code, out) = lab.client(9100, 1, "0");
    assert_eq!(
        code, 1,
        "tcp/9100 is not allowed and must not connect: {out}"
    );
    assert!(lab.counter("default drop tenant-a") > 0, "drop not counted");

    // SNAT to the pool, in the gateway's conntrack table.
    let ct = lab
        .gw
        .stdout(&["conntrack", "-L", "-p", "tcp", "--dport", "9000"]);
    assert!(
        ct.contains("src=198.18.1.10") && ct.contains("dst=198.51.100.10"),
        "no SNAT to 198.51.100.10 in conntrack:\n{ct}"
    );
    // The server saw the pool address, never the tenant's.
    let seen = lab.inet.stdout(&["ss", "-tn", "state", "time-wait"]);
    assert!(
        !seen.contains("198.18.1.10"),
        "tenant address leaked: {seen}"
    );

    // tcp/80 of the tenant lands on the proxy port of the gateway (nothing listens on
    // port 80 anywhere).
    let got = wait_for(Duration::from_secs(10), || {
        let o = lab.tenant.try_exec(&[
            "curl",
            "-sS",
            "--max-time",
            "3",
            "http://203.0.113.10/marker.txt",
        ]);
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        s.contains("served by the proxy port").then_some(s)
    });
    assert!(
        got.is_some(),
        "tcp/80 did not reach the proxy port: {}",
        std::fs::read_to_string(lab.dir.join("proxy.log")).unwrap_or_default()
    );

    // A long flow keeps carrying data across a full reload (a new rule changes the
    // structure) and across an element update.
    let script = lab.dir.join("client.py");
    let mut long = lab.tenant.spawn(
        &[
            "timeout",
            "30",
            "python3",
            script.to_str().expect("utf8"),
            "203.0.113.10",
            "9000",
            "40",
            "0.1",
        ],
        Some(&lab.dir.join("long.log")),
    );
    let connected = wait_for(Duration::from_secs(5), || {
        long.log().contains("connected").then_some(())
    });
    assert!(connected.is_some(), "long flow: {}", long.log());
    lab.write_policy(&policy(
        "\"203.0.113.10\"",
        "9000",
        "[[l3_rules]]\nid = \"ping\"\nproto = \"icmp\"\n",
    ));
    let (code, out) = lab.igw(&["apply"]);
    assert_eq!(code, 0, "re-apply: {out}");
    assert!(
        out.contains("full reload"),
        "a new rule is a structure change: {out}"
    );
    let status = long.wait_timeout(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "the established flow stopped across the reload: {}",
        long.log()
    );
    assert!(long.log().contains("echoed 40"), "{}", long.log());

    // A member change only: an element update; counters are not reset.
    // The reload reset the counters; one new allowed flow counts again.
    assert_eq!(
        lab.client(9000, 1, "0").0,
        0,
        "allowed flow after the reload"
    );
    let counted = lab.counter("a-echo");
    assert!(counted > 0);
    lab.write_policy(&policy(
        "\"203.0.113.10\", \"203.0.113.11\"",
        "9000",
        "[[l3_rules]]\nid = \"ping\"\nproto = \"icmp\"\n",
    ));
    let (code, out) = lab.igw(&["apply"]);
    assert_eq!(code, 0, "element apply: {out}");
    assert!(
        out.contains("incremental element update: +1 -1 in obj_echo-servers_v4"),
        "want an element update: {out}"
    );
    assert_eq!(
        lab.counter("a-echo"),
        counted,
        "counters reset: the table was reloaded"
    );
    let listing = lab.table_json();
    assert!(
        listing.contains("\"len\": 31"),
        "203.0.113.10/31 in the set: {listing}"
    );

    // An element update the kernel refuses (igw's netlink batch, with a delete from a set
    // that does not exist appended): exit 1, the whole batch aborted, nothing changes.
    lab.write_policy(&policy(
        "\"203.0.113.10\", \"203.0.113.12\"",
        "9000",
        "[[l3_rules]]\nid = \"ping\"\nproto = \"icmp\"\n",
    ));
    let (code, out) = lab.igw(&["apply", "--fault-inject"]);
    assert_eq!(code, 1, "refused element update: {out}");
    assert!(
        out.contains("the kernel refused the element update"),
        "{out}"
    );
    assert_eq!(
        lab.table_json(),
        listing,
        "a refused element update changed the table"
    );
    // The same change without the fault goes in; a second apply finds nothing to do
    // (the running table remembered from that commit).
    let (code, out) = lab.igw(&["apply"]);
    assert_eq!(code, 0, "element apply: {out}");
    assert!(out.contains("netlink batch"), "{out}");
    assert!(
        lab.table_json().contains("203.0.113.12"),
        "{}",
        lab.table_json()
    );
    let (code, out) = lab.igw(&["apply"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no change"), "{out}");

    // An invalid policy: exit 2, nothing changes.
    let before = lab.table_json();
    lab.write_policy(&format!(
        "{}\nbogus_field = 1\n",
        policy("\"203.0.113.10\"", "9000", "")
    ));
    let (code, out) = lab.igw(&["apply"]);
    assert_eq!(code, 2, "invalid policy: {out}");
    assert_eq!(
        lab.table_json(),
        before,
        "an invalid policy changed the table"
    );

    // A transaction the kernel refuses: exit 1, nft's error printed, nothing changes.
    lab.write_policy(&policy("\"203.0.113.10\"", "\"9000-9010\"", ""));
    let (code, out) = lab.igw(&["apply", "--fault-inject"]);
    assert_eq!(code, 1, "refused transaction: {out}");
    assert!(
        out.contains("nft refused the transaction") && out.contains("Error"),
        "{out}"
    );
    assert_eq!(
        lab.table_json(),
        before,
        "a refused transaction changed the table"
    );

    // diff and show read the running table.
    let (code, out) = lab.igw(&["diff"]);
    assert_eq!(code, 0, "diff: {out}");
    assert!(
        out.contains("+ \t\t") || out.contains("structure:"),
        "{out}"
    );
    let (code, out) = lab.igw(&["show"]);
    assert_eq!(code, 0, "show: {out}");
    assert!(out.contains("comment \"a-echo\""), "{out}");
}
