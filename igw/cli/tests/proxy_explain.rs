//! `igw policy explain` names the decision, the rule and the tenant for the example policy.

use std::process::Command;

fn explain(args: &[&str]) -> (bool, String) {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/small/policy.toml"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_igw"))
        .args(["--policy", policy, "policy", "explain"])
        .args(args)
        .output()
        .expect("run igw");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn explain_names_rule_and_tenant() {
    let cases: &[(&[&str], &str, &str, &str)] = &[
        (
            &[
                "--src",
                "198.18.1.10",
                "--url",
                "http://www.example.com/x/../admin/",
            ],
            "deny",
            "deny-admin",
            "tenant-a",
        ),
        (
            &[
                "--src",
                "198.18.1.10",
                "--url",
                "http://WWW.example.com./index.html",
            ],
            "allow",
            "allow-example",
            "tenant-a",
        ),
        (
            &["--src", "198.18.1.10", "--url", "https://www.example.org/"],
            "allow",
            "allow-example",
            "tenant-a",
        ),
        (
            &[
                "--src",
                "198.18.1.10",
                "--url",
                "https://x",
                "--sni",
                "a.example.org",
            ],
            "allow",
            "allow-example",
            "tenant-a",
        ),
        (
            &[
                "--src",
                "198.18.2.10",
                "--url",
                "http://api.example.net/",
                "--method",
                "POST",
            ],
            "deny",
            "default",
            "tenant-b",
        ),
        (
            &["--src", "198.18.2.10", "--url", "http://api.example.net/"],
            "allow",
            "allow-b-api",
            "tenant-b",
        ),
        (
            &["--src", "203.0.113.1", "--url", "http://www.example.com/"],
            "deny",
            "no-tenant",
            "(none)",
        ),
    ];
    for (args, action, rule, tenant) in cases {
        let (ok, out) = explain(args);
        assert!(ok, "{args:?}: {out}");
        assert!(out.starts_with(action), "{args:?}: {out}");
        assert!(
            out.contains(&format!("rule:   {rule}\n")),
            "{args:?}: {out}"
        );
        assert!(
            out.contains(&format!("tenant: {tenant}\n")),
            "{args:?}: {out}"
        );
    }
    let (ok, out) = explain(&["--src", "198.18.1.10", "--url", "http://u@www.example.com/"]);
    assert!(!ok && out.contains("userinfo"), "{out}");
}
