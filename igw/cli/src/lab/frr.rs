//! FRR instances of the lab: one per namespace with the namespace's name as pathspace
//! (`vtysh -N <ns>`), daemons in the foreground in their own process group (recorded by PID
//! like every lab process), each with its own log under the lab's state directory.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Lab, sh, wait};

/// The daemons every lab router runs.
pub const DAEMONS: &[&str] = &["zebra", "bfdd", "bgpd"];

/// Writes `conf` and starts zebra, bfdd and bgpd for `host`; returns once every daemon's
/// vty answers, or fails naming the daemon and its log.
pub fn start(lab: &mut Lab, host: &str, conf: &str) -> Result<()> {
    let ns = lab.ns(host);
    let dir = lab.dir.join("frr").join(host);
    fs::create_dir_all(&dir)?;
    let conf_path = dir.join("frr.conf");
    fs::write(&conf_path, conf)?;
    let empty = dir.join("empty.conf");
    fs::write(&empty, "")?;
    // FRR drops privileges to user frr: it must read its config and own its run dir.
    sh(&["chmod", "-R", "a+rX", &lab.dir.to_string_lossy()])?;
    let run = Path::new("/var/run/frr").join(&ns);
    fs::create_dir_all(&run)?;
    sh(&["chown", "frr:frr", &run.to_string_lossy()])?;
    for d in DAEMONS {
        let bin = format!("/usr/lib/frr/{d}");
        let pid = run.join(format!("{d}.pid"));
        let (c, p) = (empty.to_string_lossy(), pid.to_string_lossy());
        lab.spawn_net_only(
            host,
            &format!("{host}-{d}"),
            &[&bin, "-N", &ns, "-f", &c, "-i", &p, "-P", "0"],
        )?;
        if *d == "zebra" && !wait(Duration::from_secs(10), || run.join("zserv.api").exists()) {
            bail!(
                "zebra in {ns} did not start; see {}",
                lab.dir.join(format!("logs/{host}-zebra.log")).display()
            );
        }
    }
    for d in DAEMONS {
        let up = wait(Duration::from_secs(10), || {
            lab.exec(host, &["vtysh", "-N", &ns, "-d", d, "-c", "show version"])
                .is_ok()
        });
        if !up {
            bail!(
                "FRR {d} in {ns} does not answer; see {}",
                lab.dir.join(format!("logs/{host}-{d}.log")).display()
            );
        }
    }
    lab.exec(
        host,
        &["vtysh", "-N", &ns, "-f", &conf_path.to_string_lossy()],
    )
    .with_context(|| format!("FRR in {ns} refuses {}", conf_path.display()))?;
    Ok(())
}

/// `vtysh -N <ns> -c <cmd>` in `host`.
pub fn vtysh(lab: &Lab, host: &str, cmd: &str) -> Result<String> {
    let ns = lab.ns(host);
    lab.exec(host, &["vtysh", "-N", &ns, "-c", cmd])
}
