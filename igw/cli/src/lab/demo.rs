//! `igw lab demo`: what a network engineer wants to watch the first time. Every step prints
//! the command a person would type, what came back and whether that is what the example
//! policy promises; the demo fails (exit 1) if any promise does not hold.

use anyhow::{Result, bail};

use super::{Lab, topo};

struct Demo<'a> {
    lab: &'a Lab,
    failed: Vec<String>,
}

impl Demo<'_> {
    fn title(&self, t: &str) {
        println!("\n== {t}");
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
