//! The JSON access log: one line per request or tunnel, written by one task so request
//! handling never waits on the log's I/O.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub tenant: &'a str,
    pub src: String,
    pub mode: &'a str,
    pub method: Option<&'a str>,
    pub host: Option<String>,
    pub path: Option<&'a str>,
    pub sni: Option<&'a str>,
    pub decision: &'a str,
    pub rule: &'a str,
    pub status: Option<u16>,
    /// Client to proxy (request body or tunnel bytes); for HTTP the declared length.
    pub bytes_in: Option<u64>,
    /// Proxy to client; for HTTP the declared length of the response body.
    pub bytes_out: Option<u64>,
    pub duration_ms: f64,
}

#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

impl AccessLog {
    pub fn off() -> Self {
        Self { tx: None }
    }

    /// Writes lines to `out` from a dedicated thread (blocking writes stay off tokio).
    pub fn start(mut out: Box<dyn Write + Send>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Some(line) = rx.blocking_recv() {
                    let _ = out.write_all(&line);
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(&more);
                    }
                    let _ = out.flush();
                }
            })
            .ok();
        Self { tx: Some(tx) }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, e: &Entry<'_>) {
        if let Some(tx) = &self.tx
            && let Ok(mut line) = serde_json::to_vec(e)
        {
            line.push(b'\n');
            let _ = tx.send(line);
        }
    }
}

/// RFC 3339 UTC time with milliseconds, without a date crate.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}
