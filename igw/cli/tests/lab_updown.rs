//! `igw lab up` builds the TESTBED.md topology with working origins, and `igw lab down`
//! leaves nothing behind: no namespace, no process, no file.

use std::path::Path;
use std::process::Command;

use igw_testbed::{TempDir, require_root, run, try_run};

fn igw(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_igw"))
        .args(args)
        .output()
        .expect("run igw")
}

fn namespaces(prefix: &str) -> Vec<String> {
    let out = run(&["ip", "netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

/// Takes the lab down when the test ends, panics included.
struct Down(Vec<String>);

impl Drop for Down {
    fn drop(&mut self) {
        let mut a = vec!["lab".to_string(), "down".to_string()];
        a.extend(self.0.iter().cloned());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let _ = igw(&a);
    }
}

#[test]
fn lab_up_serves_origins_and_down_leaves_nothing() {
    require_root(&["ip", "curl", "python3", "openssl", "vtysh"]);
    let prefix = format!("igwt{}", std::process::id() % 100_000);
    let state = TempDir::new("lab");
    let sd = state.path().to_str().unwrap();
    let base = vec![
        "--prefix".to_string(),
        prefix.clone(),
        "--state-dir".to_string(),
        sd.to_string(),
    ];
    let _guard = Down(base.clone());
    let with = |cmd: &str| {
        let mut a = vec!["lab", cmd];
        a.extend(base.iter().map(String::as_str));
        igw(&a)
    };

    let out = with("up");
    assert!(
        out.status.success(),
        "lab up failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(namespaces(&prefix).len(), 7, "{:?}", namespaces(&prefix));

    let inet = format!("{prefix}-inet");
    let tor = format!("{prefix}-tor");
    // The origins answer under their lab names, over HTTP and HTTPS (lab certificate).
    let get = |url: &str, extra: &[&str]| {
        let mut a = vec![
            "ip",
            "netns",
            "exec",
            &inet,
            "curl",
            "-sS",
            "--max-time",
            "5",
        ];
        a.extend_from_slice(extra);
        a.push(url);
        String::from_utf8_lossy(&run(&a).stdout).to_string()
    };
    assert_eq!(
        get("http://www.example.com/hello", &[]),
        "origin www.example.com /hello\n"
    );
    let ca = Path::new(sd).join(&prefix).join("origin.crt");
    let ca = ca.to_str().unwrap();
    assert_eq!(
        get("https://www.example.org/tls", &["--cacert", ca]),
        "origin www.example.org /tls\n"
    );
    // Links are up: the ToR reaches a tenant host.
    run(&[
        "ip",
        "netns",
        "exec",
        &tor,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "198.18.1.10",
    ]);

    let status = with("status");
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.contains("origin") && text.contains("running"),
        "{text}"
    );
    let pids: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            l.split("pid")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!pids.is_empty(), "{text}");

    let out = with("down");
    assert!(
        out.status.success(),
        "lab down failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        namespaces(&prefix).is_empty(),
        "namespaces left: {:?}",
        namespaces(&prefix)
    );
    for pid in pids {
        // A zombie awaiting its reaper holds nothing; anything else is a leftover.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "process {pid} left running: {stat}"
        );
    }
    assert!(
        !Path::new(sd).join(&prefix).exists(),
        "state dir left behind"
    );
    assert!(
        !Path::new("/etc/netns").join(&inet).exists(),
        "/etc/netns/{inet} left behind"
    );
    // The lab never touched the root namespace's routes.
    let routes = try_run(&["ip", "route", "show", "198.18.0.0/15"]);
    assert!(String::from_utf8_lossy(&routes.stdout).trim().is_empty());
}
