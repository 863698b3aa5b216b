//! The runtime FRR driver: the I/O edge of the fabric. Sets the role prepend in one `vtysh`
//! transaction followed by an outbound soft refresh, and reads BGP and BFD session state
//! from `vtysh ... json`. Blocking (it runs `vtysh`); daemons call it off their reactor.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use igw_core::NodeConfig;
use serde::Serialize;

use crate::render::role_commands;

#[derive(Debug, thiserror::Error)]
pub enum FrrError {
    #[error("cannot run vtysh: {0} (is the frr package installed?)")]
    Spawn(std::io::Error),
    #[error("FRR is not running (pathspace `{pathspace}`): {detail}")]
    NotRunning { pathspace: String, detail: String },
    #[error("FRR refused `{command}`: {detail}")]
    Refused { command: String, detail: String },
    #[error("unreadable JSON from `{command}`: {detail}")]
    Json { command: String, detail: String },
}

/// One FRR instance, addressed by its pathspace (`-N`; empty: the system's instance).
#[derive(Debug, Clone)]
pub struct FrrDriver {
    pathspace: String,
}

/// One BGP session as `show bgp summary json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpSession {
    /// Neighbor address or interface.
    pub peer: String,
    pub family: String,
    pub state: String,
    pub established: bool,
    pub prefixes_received: u64,
}

/// One BFD session as `show bfd peers json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BfdSession {
    pub peer: String,
    pub status: String,
    pub up: bool,
}

impl FrrDriver {
    pub fn new(pathspace: &str) -> Self {
        Self {
            pathspace: pathspace.to_string(),
        }
    }

    pub fn for_node(node: &NodeConfig) -> Self {
        Self::new(&node.fabric.frr_pathspace)
    }

    fn vtysh(&self, cmds: &[String]) -> Result<String, FrrError> {
        let mut c = Command::new("vtysh");
        if !self.pathspace.is_empty() {
            c.arg("-N").arg(&self.pathspace);
        }
        for x in cmds {
            c.arg("-c").arg(x);
        }
        let out = c.stdin(Stdio::null()).output().map_err(FrrError::Spawn)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let detail = format!("{}{}", stdout.trim(), stderr.trim());
        // vtysh exits non-zero when it cannot reach a daemon, and prints `% ...` for a
        // command a daemon refused (with exit status 0 in some FRR versions).
        if detail.contains("failed to connect")
            || detail.contains("Exiting: failed")
            || detail.contains("is not running")
        {
            return Err(FrrError::NotRunning {
                pathspace: self.pathspace.clone(),
                detail,
            });
        }
        if !out.status.success() || stdout.lines().any(|l| l.starts_with('%')) {
            return Err(FrrError::Refused {
                command: cmds.join(" ; "),
                detail,
            });
        }
        Ok(stdout)
    }

    /// Sets both role route-maps to `prepend` copies of the node's ASN in one `configure
    /// terminal` transaction, then soft-refreshes every session outbound so the peers see
    /// it now. Returns how long FRR took.
    pub fn set_prepend(&self, node: &NodeConfig, prepend: u8) -> Result<Duration, FrrError> {
        let t = Instant::now();
        let mut cmds = vec!["configure terminal".to_string()];
        cmds.extend(role_commands(node, prepend));
        cmds.push("end".to_string());
        cmds.push("clear bgp * soft out".to_string());
        self.vtysh(&cmds)?;
        Ok(t.elapsed())
    }

    /// The prepend count in force on the fabric role route-map, read back from FRR.
    pub fn prepend_in_force(&self, node: &NodeConfig) -> Result<u8, FrrError> {
        let cmd = format!("show route-map {}", crate::render::RM_ROLE_FABRIC);
        let out = self.vtysh(std::slice::from_ref(&cmd))?;
        Ok(parse_prepend(&out, node.bgp.asn))
    }

    /// BGP sessions, every address family.
    pub fn bgp_sessions(&self) -> Result<Vec<BgpSession>, FrrError> {
        let cmd = "show bgp summary json".to_string();
        let out = self.vtysh(std::slice::from_ref(&cmd))?;
        parse_bgp_summary(&out).map_err(|detail| FrrError::Json {
            command: cmd,
            detail,
        })
    }

    /// BFD sessions.
    pub fn bfd_sessions(&self) -> Result<Vec<BfdSession>, FrrError> {
        let cmd = "show bfd peers json".to_string();
        let out = self.vtysh(std::slice::from_ref(&cmd))?;
        parse_bfd_peers(&out).map_err(|detail| FrrError::Json {
            command: cmd,
            detail,
        })
    }
}

/// Counts `set as-path prepend` ASNs in `show route-map` text (first clause).
pub fn parse_prepend(text: &str, asn: u32) -> u8 {
    let a = asn.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("as-path prepend "))
        .map(|rest| rest.split_whitespace().filter(|x| *x == a).count() as u8)
        .unwrap_or(0)
}

/// Parses `show bgp summary json`: `{ "ipv4Unicast": { "peers": { "<peer>": {...} } }, ... }`.
pub fn parse_bgp_summary(text: &str) -> Result<Vec<BgpSession>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let Some(fams) = v.as_object() else {
        return Err("top level is not an object".into());
    };
    for (fam, body) in fams {
        let Some(peers) = body.get("peers").and_then(|p| p.as_object()) else {
            continue;
        };
        for (peer, p) in peers {
            let state = p
                .get("state")
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .to_string();
            out.push(BgpSession {
                peer: peer.clone(),
                family: fam.clone(),
                established: state == "Established",
                state,
                prefixes_received: p.get("pfxRcd").and_then(|x| x.as_u64()).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// Parses `show bfd peers json`: a list of `{ "peer": ..., "status": "up"|"down"|... }`.
pub fn parse_bfd_peers(text: &str) -> Result<Vec<BfdSession>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Some(list) = v.as_array() else {
        return Err("top level is not a list".into());
    };
    Ok(list
        .iter()
        .map(|p| {
            let status = p
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .to_string();
            BfdSession {
                peer: p
                    .get("peer")
                    .and_then(|s| s.as_str())
                    .or_else(|| p.get("interface").and_then(|s| s.as_str()))
                    .unwrap_or("")
                    .to_string(),
                up: status == "up",
                status,
            }
        })
        .collect())
}
