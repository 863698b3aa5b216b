//! The local control protocol between `igw` commands and the daemons: one JSON object per
//! line over a Unix socket in the node's run directory (`<run_dir>/<daemon>.sock`).
//! A request names a command and carries arguments; the daemon answers one response line.
//!
//! Commands by daemon:
//! - `proxy`: `status`, `reload` (re-read the policy; refused if invalid), `health`
//! - `conntrack-sync`: `status`, `commit`, `set-role` (`{"role": "active"|"standby"}`)
//! - `arbiter`: `status`, `failover`, `maintenance` (`{"on": true|false}`)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The daemons that listen on a control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Proxy,
    ConntrackSync,
    Arbiter,
}

impl Daemon {
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Proxy => "proxy",
            Daemon::ConntrackSync => "conntrack-sync",
            Daemon::Arbiter => "arbiter",
        }
    }

    pub fn socket(self, run_dir: &Path) -> PathBuf {
        run_dir.join(format!("{}.sock", self.name()))
    }

    /// Metrics port offset from `control.metrics` in node.toml.
    pub fn metrics_port_offset(self) -> u16 {
        match self {
            Daemon::Proxy => 0,
            Daemon::Arbiter => 1,
            Daemon::ConntrackSync => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub args: serde_json::Value,
}

impl Request {
    pub fn new(cmd: &str) -> Self {
        Self {
            cmd: cmd.to_string(),
            args: serde_json::Value::Null,
        }
    }
    pub fn with_args(cmd: &str, args: serde_json::Value) -> Self {
        Self {
            cmd: cmd.to_string(),
            args,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Self {
        Self {
            ok: true,
            data,
            error: None,
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            data: serde_json::Value::Null,
            error: Some(msg.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot connect to {daemon} at {path}: {source} (is `igw {daemon}` running?)")]
    Connect {
        daemon: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{daemon} at {path}: {source}")]
    Io {
        daemon: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{daemon} sent an unreadable answer: {0}", daemon = .1)]
    Decode(serde_json::Error, &'static str),
}

/// Sends one request and waits (at most `timeout`) for the answer. Blocking: for the CLI
/// and for tests; daemons talk to each other with the same framing on tokio.
pub fn call(
    run_dir: &Path,
    daemon: Daemon,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let path = daemon.socket(run_dir);
    let name = daemon.name();
    let io = |source| ControlError::Io {
        daemon: name,
        path: path.clone(),
        source,
    };
    let mut s = UnixStream::connect(&path).map_err(|source| ControlError::Connect {
        daemon: name,
        path: path.clone(),
        source,
    })?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Decode(e, name))?;
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|e| ControlError::Decode(e, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_lines() {
        let r = Request::with_args("maintenance", serde_json::json!({"on": true}));
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cmd":"maintenance","args":{"on":true}}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::new("status")).unwrap(),
            r#"{"cmd":"status"}"#
        );
        let e = Response::err("peer not healthy");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"ok":false,"error":"peer not healthy"}"#
        );
    }

    #[test]
    fn socket_paths() {
        assert_eq!(
            Daemon::Arbiter.socket(Path::new("/run/igw")),
            PathBuf::from("/run/igw/arbiter.sock")
        );
    }
}
