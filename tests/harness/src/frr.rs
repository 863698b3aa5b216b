//! FRR instances in test namespaces: one pathspace (`-N`) per namespace, daemons in the
//! foreground as [`Proc`]es (killed by PID on drop), each with its own log, and `vtysh`
//! helpers. Recipe from ../shared/TESTBED.md ("FRR in namespaces").
//!
//! The daemons start empty and the integrated config is applied with `vtysh -f`, as
//! `vtysh -b` does at boot: a daemon given the whole file with `-f` skips the blocks it does
//! not know (bgpd: `bfd`), and their `exit` lines then leave configuration mode, so every
//! later line (`router bgp`) is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Netns, Proc, TempDir, run, wait_for};

const FRR_LIB: &str = "/usr/lib/frr";

/// A running FRR instance (zebra + the daemons asked for) inside one namespace.
#[derive(Debug)]
pub struct Frr {
    ns: Netns,
    name: String,
    dir: TempDir,
    run_dir: PathBuf,
    procs: Vec<Proc>,
}

impl Frr {
    /// Starts zebra, then each of `daemons` (e.g. `["bfdd", "bgpd"]`), all reading `conf`,
    /// and waits until every daemon's vty answers. Panics with the daemons' logs if not.
    pub fn start(ns: &Netns, conf: &str, daemons: &[&str]) -> Frr {
        crate::require_root(&[&format!("{FRR_LIB}/zebra"), "vtysh"]);
        let name = ns.name().to_string();
        let dir = TempDir::new("frr");
        let conf_path = dir.join("frr.conf");
        std::fs::write(&conf_path, conf).expect("write frr.conf");
        let empty = dir.join("empty.conf");
        std::fs::write(&empty, "").expect("write empty.conf");
        // FRR drops privileges to user frr: it must read the config and own its run dir.
        run(&["chmod", "755", dir.path().to_str().expect("utf-8 path")]);
        run(&["chmod", "644", conf_path.to_str().expect("utf-8 path")]);
        run(&["chmod", "644", empty.to_str().expect("utf-8 path")]);
        let run_dir = Path::new("/var/run/frr").join(&name);
        std::fs::create_dir_all(&run_dir).expect("create FRR run dir");
        run(&["chown", "frr:frr", run_dir.to_str().expect("utf-8 path")]);
        let mut frr = Frr {
            ns: ns.clone(),
            name,
            dir,
            run_dir,
            procs: Vec::new(),
        };
        frr.daemon("zebra", &empty);
        let api = frr.run_dir.join("zserv.api");
        if wait_for(Duration::from_secs(10), || api.exists().then_some(())).is_none() {
            panic!(
                "zebra in {} did not create {}:\n{}",
                frr.name,
                api.display(),
                frr.logs()
            );
        }
        for d in daemons {
            frr.daemon(d, &empty);
        }
        for d in std::iter::once("zebra").chain(daemons.iter().copied()) {
            let up = wait_for(Duration::from_secs(10), || {
                let out =
                    frr.ns
                        .try_exec(&["vtysh", "-N", &frr.name, "-d", d, "-c", "show version"]);
                out.status.success().then_some(())
            });
            if up.is_none() {
                panic!(
                    "FRR daemon {d} in {} does not answer on its vty:\n{}",
                    frr.name,
                    frr.logs()
                );
            }
        }
        let c = conf_path.to_str().expect("utf-8 path");
        let out = frr.ns.try_exec(&["vtysh", "-N", &frr.name, "-f", c]);
        assert!(
            out.status.success(),
            "FRR in {} refuses its config:\n{}{}\n--- config:\n{conf}\n{}",
            frr.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            frr.logs()
        );
        frr
    }

    fn daemon(&mut self, d: &str, conf: &Path) {
        let bin = format!("{FRR_LIB}/{d}");
        let pid = self.run_dir.join(format!("{d}.pid"));
        let log = self.dir.join(&format!("{d}.log"));
        let p = self.ns.spawn(
            &[
                &bin,
                "-N",
                &self.name,
                "-f",
                conf.to_str().expect("utf-8"),
                "-i",
                pid.to_str().expect("utf-8"),
                "-P",
                "0",
            ],
            Some(&log),
        );
        self.procs.push(p);
    }

    /// The pathspace (`vtysh -N <name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs vtysh commands (each one `-c`) and returns stdout; panics on failure.
    pub fn vtysh(&self, cmds: &[&str]) -> String {
        let mut argv = vec!["vtysh", "-N", self.name.as_str()];
        for c in cmds {
            argv.push("-c");
            argv.push(c);
        }
        let out = self.ns.try_exec(&argv);
        assert!(
            out.status.success(),
            "vtysh {cmds:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            s.push_str(&format!("--- {}\n{}\n", p.describe(), p.log()));
        }
        s
    }

    /// Kills one daemon (e.g. to simulate an FRR crash). Returns whether it was running.
    pub fn kill_daemon(&mut self, d: &str) -> bool {
        let bin = format!("{FRR_LIB}/{d}");
        match self
            .procs
            .iter()
            .position(|p| p.describe().starts_with(&bin))
        {
            Some(i) => {
                let mut p = self.procs.remove(i);
                p.kill();
                true
            }
            None => false,
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
