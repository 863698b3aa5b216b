//! The runtime FRR driver: the I/O edge of the fabric. Sets the role prepend by re-pointing
//! the role route-maps (see `render`), in one transaction written straight to bgpd's vty
//! socket (the protocol vtysh itself speaks: a NUL-terminated command, answered by its output
//! and a 4-byte status), falling back to `vtysh` when that socket is not reachable; reads BGP
//! and BFD session state from `vtysh ... json`. Blocking; daemons call it off their reactor.
//!
//! Why not `vtysh` for the role change: starting vtysh, which connects to every daemon and
//! reads its own config, took ~35-40 ms of a role change on a quiet machine and 50-280 ms
//! under load (bench/arbiter); the socket transaction takes about a millisecond.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use igw_core::NodeConfig;
use serde::Serialize;

use crate::render::{neighbor_key, prepend_of_map, role_commands};

/// How the last role change reached FRR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Written to bgpd's vty socket.
    VtySocket,
    /// Through `vtysh` (the socket was not reachable).
    Vtysh,
}

/// Bound of one vty socket exchange: FRR answers a config command in milliseconds; a bgpd
/// that does not answer in this time is treated as refusing.
const VTY_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Puts `prepend` copies of the node's ASN in force: the ToR sessions' default-originate
    /// and the NAT pool's `network` statements pointed at the role route-maps for that count,
    /// in one `configure terminal` transaction (no soft clear needed: see `render`). Returns
    /// how long FRR took and which path was used.
    pub fn set_prepend(
        &self,
        node: &NodeConfig,
        prepend: u8,
    ) -> Result<(Duration, Path), FrrError> {
        let t = Instant::now();
        let cmds = role_commands(node, prepend);
        // Route-map definitions (a count outside the rendered set) belong to every daemon:
        // those go through vtysh, which sends each line where it belongs.
        let bgpd_only = cmds.iter().all(|c| !c.starts_with("route-map "));
        if bgpd_only {
            match self.vty_transaction("bgpd", &cmds) {
                Ok(()) => return Ok((t.elapsed(), Path::VtySocket)),
                Err(VtyError::Unreachable(_)) => {}
                Err(VtyError::Refused { command, detail }) => {
                    return Err(FrrError::Refused { command, detail });
                }
            }
        }
        let mut all = vec!["configure terminal".to_string()];
        all.extend(cmds);
        all.push("end".to_string());
        self.vtysh(&all)?;
        Ok((t.elapsed(), Path::Vtysh))
    }

    /// The daemon's vty socket (`/var/run/frr[/<pathspace>]/<daemon>.vty`).
    fn vty_path(&self, daemon: &str) -> PathBuf {
        let mut p = PathBuf::from("/var/run/frr");
        if !self.pathspace.is_empty() {
            p.push(&self.pathspace);
        }
        p.push(format!("{daemon}.vty"));
        p
    }

    /// `enable`, `configure terminal`, `cmds`, `end` on one connection to the daemon's vty
    /// socket; the first command FRR refuses ends it with that command and FRR's words.
    fn vty_transaction(&self, daemon: &str, cmds: &[String]) -> Result<(), VtyError> {
        let path = self.vty_path(daemon);
        let mut sock = UnixStream::connect(&path)
            .map_err(|e| VtyError::Unreachable(format!("{}: {e}", path.display())))?;
        let _ = sock.set_read_timeout(Some(VTY_TIMEOUT));
        let _ = sock.set_write_timeout(Some(VTY_TIMEOUT));
        let head = ["enable".to_string(), "configure terminal".to_string()];
        let tail = ["end".to_string()];
        let mut first = true;
        for cmd in head.iter().chain(cmds).chain(tail.iter()) {
            let r = vty_exchange(&mut sock, cmd);
            match r {
                // A socket that fails on its very first exchange (bgpd gone, stale socket):
                // let vtysh try and report.
                Err(e) if first => {
                    return Err(VtyError::Unreachable(format!("{}: {e}", path.display())));
                }
                Err(e) => {
                    return Err(VtyError::Refused {
                        command: cmd.clone(),
                        detail: format!("vty socket {}: {e}", path.display()),
                    });
                }
                Ok((status, out)) => {
                    if status != 0 || out.lines().any(|l| l.trim_start().starts_with('%')) {
                        return Err(VtyError::Refused {
                            command: cmd.clone(),
                            detail: format!("status {status}: {}", out.trim()),
                        });
                    }
                }
            }
            first = false;
        }
        Ok(())
    }

    /// The prepend count in force toward the fabric, read back from FRR: the role route-map
    /// the first ToR session's default-originate points at.
    pub fn prepend_in_force(&self, node: &NodeConfig) -> Result<u8, FrrError> {
        let Some(tor) = node.bgp.tor.first() else {
            return Ok(0);
        };
        let key = neighbor_key(tor);
        let cmd = format!("show bgp neighbors {key} json");
        let out = self.vtysh(std::slice::from_ref(&cmd))?;
        let map = parse_default_route_map(&out, &key).map_err(|detail| FrrError::Json {
            command: cmd.clone(),
            detail,
        })?;
        prepend_of_map(&map).ok_or_else(|| FrrError::Json {
            command: cmd,
            detail: format!("default-originate route-map `{map}` is not an igw role map"),
        })
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

#[derive(Debug)]
enum VtyError {
    /// No socket, no permission, or it closed at once: vtysh may still work (the reason is
    /// logged by the caller's fallback).
    Unreachable(#[allow(dead_code)] String),
    Refused {
        command: String,
        detail: String,
    },
}

/// One command on a vty socket: writes it NUL-terminated, reads the output up to the 4-byte
/// status trailer (`0 0 0 <status>`). Returns the status and the output.
fn vty_exchange(sock: &mut UnixStream, cmd: &str) -> std::io::Result<(u8, String)> {
    let mut msg = Vec::with_capacity(cmd.len() + 1);
    msg.extend_from_slice(cmd.as_bytes());
    msg.push(0);
    sock.write_all(&msg)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the status of the command",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((status, out)) = split_vty_reply(&buf) {
            return Ok((status, out));
        }
    }
}

/// Splits a complete vty reply into (status, output); `None` while the trailer is missing.
pub fn split_vty_reply(buf: &[u8]) -> Option<(u8, String)> {
    let i = buf.windows(4).position(|w| w[..3] == [0, 0, 0])?;
    Some((buf[i + 3], String::from_utf8_lossy(&buf[..i]).into_owned()))
}

/// The default-originate route-map of neighbor `key` in `show bgp neighbors <key> json`
/// (`{"<key>": {"addressFamilyInfo": {"ipv4Unicast": {"defaultRouteMap": ...}}}}`; the first
/// family that has one).
pub fn parse_default_route_map(text: &str, key: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let n = v
        .get(key)
        .ok_or_else(|| format!("no neighbor `{key}` in the answer"))?;
    let fams = n
        .get("addressFamilyInfo")
        .and_then(|f| f.as_object())
        .ok_or_else(|| format!("neighbor `{key}` has no address family (session down?)"))?;
    fams.values()
        .find_map(|f| f.get("defaultRouteMap").and_then(|m| m.as_str()))
        .map(str::to_string)
        .ok_or_else(|| format!("neighbor `{key}` has no default-originate route-map"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vty_replies() {
        type Case<'a> = (&'a [u8], Option<(u8, &'a str)>);
        let table: &[Case] = &[
            (b"\0\0\0\0", Some((0, ""))),
            (
                b"% Unknown command: foo\n\0\0\0\x02",
                Some((2, "% Unknown command: foo\n")),
            ),
            (b"partial output", None),
            (b"out\0\0", None),
            (b"out\0\0\0", None),
            (b"line\n\0\0\0\x01tail", Some((1, "line\n"))),
        ];
        for (buf, want) in table {
            let got = split_vty_reply(buf);
            assert_eq!(
                got.as_ref().map(|(s, o)| (*s, o.as_str())),
                *want,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn default_route_map_from_neighbor_json() {
        let ok = r#"{"198.19.1.0":{"addressFamilyInfo":{"ipv4Unicast":
            {"defaultRouteMap":"IGW-ROLE-FABRIC-3","defaultSent":true}}}}"#;
        let v6 = r#"{"tor0":{"addressFamilyInfo":{"ipv4Unicast":{},
            "ipv6Unicast":{"defaultRouteMap":"IGW-ROLE-FABRIC-0"}}}}"#;
        let table: &[(&str, &str, Result<&str, &str>)] = &[
            (ok, "198.19.1.0", Ok("IGW-ROLE-FABRIC-3")),
            (v6, "tor0", Ok("IGW-ROLE-FABRIC-0")),
            (
                ok,
                "198.19.1.2",
                Err("no neighbor `198.19.1.2` in the answer"),
            ),
            (
                r#"{"198.19.1.0":{"bgpState":"Active"}}"#,
                "198.19.1.0",
                Err("neighbor `198.19.1.0` has no address family (session down?)"),
            ),
            (
                r#"{"198.19.1.0":{"addressFamilyInfo":{"ipv4Unicast":{}}}}"#,
                "198.19.1.0",
                Err("neighbor `198.19.1.0` has no default-originate route-map"),
            ),
        ];
        for (text, key, want) in table {
            let got = parse_default_route_map(text, key);
            let got = got.as_deref().map_err(String::as_str);
            assert_eq!(got, *want, "{key}: {text}");
        }
        assert!(parse_default_route_map("not json", "x").is_err());
    }
}
