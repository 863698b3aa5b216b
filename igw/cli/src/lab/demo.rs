//! `igw lab demo`: what a network engineer wants to watch the first time. Every step prints
//! the command a person would type, what came back and whether that is what the example
//! policy promises; the demo fails (exit 1) if any promise does not hold.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::traffic::Report;
use super::{Lab, topo};

fn d_title(t: &str) {
    println!("\n== {t}");
}

struct Demo<'a> {
    lab: &'a Lab,
    failed: Vec<String>,
}

impl Demo<'_> {
    fn title(&self, t: &str) {
        d_title(t);
    }

    fn check(&mut self, what: &str, ok: bool, detail: &str) {
        println!(
            "   {} {what}{}",
            if ok { "ok  " } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(" — {detail}")
            }
        );
        if !ok {
            self.failed.push(what.to_string());
        }
    }

    /// curl from a host; returns (HTTP status or 0, body, curl's exit code).
    fn curl(&self, host: &str, url: &str) -> (u16, String, i32) {
        let ca = self.lab.dir.join("origin.crt");
        let ns = self.lab.ns(host);
        println!("   $ ip netns exec {ns} curl {url}");
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "curl",
                "-sS",
                "--max-time",
                "5",
                "--cacert",
            ])
            .arg(&ca)
            .args(["-w", "\n%{http_code}", url])
            .output();
        let Ok(out) = out else {
            return (0, String::new(), -1);
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            code.trim().parse().unwrap_or(0),
            body.trim().to_string(),
            out.status.code().unwrap_or(-1),
        )
    }

    /// `igw status` on both gateways, printed; returns each node's role.
    fn statuses(&mut self) -> Vec<(&'static str, String)> {
        let exe = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "igw".into());
        let mut roles = Vec::new();
        for gw in ["igw-a", "igw-b"] {
            let node = self.lab.dir.join(gw).join("node.toml");
            let node = node.to_string_lossy();
            println!(
                "   $ ip netns exec {} igw status --node {node}",
                self.lab.ns(gw)
            );
            match self.lab.exec(gw, &[&exe, "status", "--node", &node]) {
                Ok(s) => println!("{}", indent(s.trim_end())),
                Err(e) => self.check(&format!("igw status on {gw}"), false, &e.to_string()),
            }
            let role = self
                .lab
                .exec(gw, &[&exe, "status", "--json", "--node", &node])
                .ok()
                .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
                .and_then(|v| v["arbiter"]["role"].as_str().map(str::to_string))
                .unwrap_or_default();
            roles.push((gw, role));
        }
        roles
    }

    fn role(&self, gw: &str) -> String {
        let exe = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "igw".into());
        let node = self.lab.dir.join(gw).join("node.toml");
        self.lab
            .exec(
                gw,
                &[&exe, "status", "--json", "--node", &node.to_string_lossy()],
            )
            .ok()
            .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
            .and_then(|v| v["arbiter"]["role"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// 100 TCP flows and a UDP probe every 10 ms from tenant-a (`igw lab traffic`), the
    /// active frozen 2 s into the stream; prints the outage the probes saw and the flows
    /// that survived, then brings the node back and shows it returns as standby.
    fn hard_failure(&mut self, active: &'static str) -> Result<()> {
        use std::io::BufRead as _;
        let peer = if active == "igw-a" { "igw-b" } else { "igw-a" };
        let exe = std::env::current_exe()?;
        let state_dir = self.lab.dir.parent().unwrap_or(&self.lab.dir);
        println!(
            "   $ igw lab traffic --from tenant-a --flows 100 --interval-ms 10 --duration-s 10 &"
        );
        let mut child = Command::new(&exe)
            .args(["lab", "traffic", "--from", "tenant-a", "--flows", "100"])
            .args(["--interval-ms", "10", "--duration-s", "10"])
            .args(["--prefix", &self.lab.prefix, "--state-dir"])
            .arg(state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("traffic stderr")?;
        let started = std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("stream started"));
        if !started {
            let _ = child.kill();
            let _ = child.wait();
            self.check("the traffic started", false, "igw lab traffic exited early");
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(2));
        println!("   $ igw lab fail {active} --how freeze");
        super::fail(&self.lab.prefix, active, super::FailHow::Freeze, true)?;
        let out = child.wait_with_output()?;
        let report: Option<Report> = serde_json::from_slice(&out.stdout).ok();
        let Some(r) = report else {
            self.check(
                "the traffic report",
                false,
                &String::from_utf8_lossy(&out.stdout),
            );
            super::fail(&self.lab.prefix, active, super::FailHow::Freeze, false)?;
            return Ok(());
        };
        println!(
            "     outage seen by the probes: {:.0} ms ({} of {} probes lost)",
            r.stream.max_gap_ms, r.stream.lost, r.stream.sent
        );
        println!(
            "     established TCP flows still carrying data both ways: {} of {} \
             (longest stall {} ms)",
            r.flows.alive_at_end, r.flows.opened, r.flows.max_stall_ms
        );
        let survived = r.flows.alive_at_end == r.flows.opened && r.flows.failed.is_empty();
        self.check(
            "every established flow survived the failure",
            survived,
            &r.flows.failed.first().cloned().unwrap_or_default(),
        );
        let took = self.role(peer) == "active";
        self.check(&format!("{peer} took over (active)"), took, "");

        d_title("6. Recovery: the failed node comes back, as standby (no preemption)");
        println!("   $ igw lab restore {active}");
        super::fail(&self.lab.prefix, active, super::FailHow::Freeze, false)?;
        let settled = super::wait(Duration::from_secs(30), || {
            self.role(peer) == "active" && self.role(active) == "standby"
        });
        self.statuses();
        self.check(
            &format!("{active} is back as standby, {peer} still active"),
            settled,
            "",
        );
        Ok(())
    }

    /// A TCP connection from a host to the echo service: does a line come back?
    fn echo(&self, host: &str) -> bool {
        let script = format!(
            "exec 3<>/dev/tcp/{}/7 && echo igw-demo >&3 && timeout 3 head -c 9 <&3",
            topo::ECHO
        );
        println!(
            "   $ ip netns exec {} bash -c 'echo igw-demo > /dev/tcp/{}/7'",
            self.lab.ns(host),
            topo::ECHO
        );
        self.lab
            .exec(host, &["timeout", "5", "bash", "-c", &script])
            .map(|o| o.contains("igw-demo"))
            .unwrap_or(false)
    }
}

pub fn run(lab: &Lab) -> Result<()> {
    let mut d = Demo {
        lab,
        failed: Vec::new(),
    };

    d.title("1. Filtering as tenant-a sees it: a plain curl, no proxy settings");
    let (code, body, _) = d.curl("tenant-a", "http://www.example.com/");
    d.check(
        "allowed URL answers 200 (rule allow-example)",
        code == 200 && body.starts_with("origin www.example.com"),
        &body,
    );
    let (code, body, _) = d.curl("tenant-a", "http://www.example.com/admin/");
    d.check(
        "denied path answers 403 naming rule deny-admin",
        code == 403 && body.contains("deny-admin"),
        &body,
    );
    let (code, body, _) = d.curl("tenant-a", "https://www.example.org/");
    d.check(
        "allowed HTTPS name passes, judged by SNI (allow-example)",
        code == 200,
        &body,
    );
    let (code, _, rc) = d.curl("tenant-a", "https://ads.example.net/");
    d.check(
        "denied HTTPS name is closed (default deny)",
        code == 0 && rc != 0,
        &format!("curl exit {rc}"),
    );

    d.title("2. Everything else is nftables: default deny, per-tenant 5-tuple rules");
    let ok = d.echo("tenant-a");
    d.check(
        "tenant-a reaches the TCP echo service (rule a-echo)",
        ok,
        "",
    );
    let ok = d.echo("tenant-b");
    d.check("tenant-b does not (no rule allows it)", !ok, "");

    d.title("3. Both nodes: conntrack-sync and the ruleset's counters");
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    for gw in ["igw-a", "igw-b"] {
        let node = lab
            .dir
            .join(gw)
            .join("node.toml")
            .to_string_lossy()
            .into_owned();
        println!(
            "   $ ip netns exec {} igw conntrack status --node {node}",
            lab.ns(gw)
        );
        match lab.exec(gw, &[&exe, "conntrack", "status", "--node", &node]) {
            Ok(s) => println!("{}", indent(&s)),
            Err(e) => d.check(
                &format!("igw conntrack status on {gw}"),
                false,
                &e.to_string(),
            ),
        }
    }
    let node = lab
        .dir
        .join("igw-a")
        .join("node.toml")
        .to_string_lossy()
        .into_owned();
    println!(
        "   $ ip netns exec {} igw ruleset show   (the tenant chains, with counters)",
        lab.ns("igw-a")
    );
    match lab.exec("igw-a", &[&exe, "ruleset", "show", "--node", &node]) {
        Ok(s) => {
            let lines: Vec<&str> = s
                .lines()
                .filter(|l| l.contains("comment"))
                .take(8)
                .collect();
            println!("{}", indent(&lines.join("\n")));
        }
        Err(e) => d.check("igw ruleset show on igw-a", false, &e.to_string()),
    }

    d.title("4. Both nodes as the operator sees them: igw status");
    let roles = d.statuses();
    println!("     roles: {roles:?}");

    d.title("5. Hard failure of the active node, under load");
    // The pair may be between roles (a BFD flap on a loaded machine): wait, bounded, for
    // exactly one active node.
    let mut active = None;
    super::wait(Duration::from_secs(30), || {
        let r: Vec<String> = ["igw-a", "igw-b"].iter().map(|g| d.role(g)).collect();
        active = match (r[0].as_str(), r[1].as_str()) {
            ("active", b) if b != "active" && !b.is_empty() => Some("igw-a"),
            (a, "active") if a != "active" && !a.is_empty() => Some("igw-b"),
            _ => None,
        };
        active.is_some()
    });
    match active {
        None => d.check(
            "one node is active before the failure",
            false,
            &format!("{roles:?}"),
        ),
        Some(active) => d.hard_failure(active)?,
    }

    if !d.failed.is_empty() {
        bail!(
            "demo: {} promise(s) did not hold: {}",
            d.failed.len(),
            d.failed.join("; ")
        );
    }
    println!("\nlab demo: every promise held");
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("     {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
