//! The JSON access log: one line per request or tunnel, written by one thread so request
//! handling never waits on the log's I/O. The queue to that thread is bounded: when the
//! log's storage cannot keep up, lines are dropped and counted, so a slow disk costs log
//! lines, never the proxy's memory or its requests.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Lines waiting for the writer thread at most (~10-30 MiB of JSON).
const QUEUE: usize = 65_536;

#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    pub fn off() -> Self {
        Self {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Writes lines to `out` from a dedicated thread (blocking writes stay off tokio).
    pub fn start(out: Box<dyn Write + Send>) -> Self {
        Self::with_queue(out, QUEUE)
    }

    fn with_queue(mut out: Box<dyn Write + Send>, queue: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(queue);
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
        Self {
            tx: Some(tx),
            dropped: Arc::default(),
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, e: &Entry<'_>) {
        if let Some(tx) = &self.tx
            && let Ok(mut line) = serde_json::to_vec(e)
        {
            line.push(b'\n');
            if tx.try_send(line).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// A log file on storage that stalls until `open` says go.
    struct Stalled {
        open: Arc<std::sync::Barrier>,
        waited: bool,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if !self.waited {
                self.open.wait();
                self.waited = true;
            }
            self.out.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn entry() -> Entry<'static> {
        Entry {
            time: now_rfc3339(),
            tenant: "t",
            src: "198.18.0.1".into(),
            mode: "explicit",
            method: Some("GET"),
            host: Some("example.com".into()),
            path: Some("/"),
            sni: None,
            decision: "allow",
            rule: "r",
            status: Some(200),
            bytes_in: None,
            bytes_out: Some(2),
            duration_ms: 0.1,
        }
    }

    #[test]
    fn a_stalled_log_drops_and_counts_lines_instead_of_growing() {
        let open = Arc::new(std::sync::Barrier::new(2));
        let out = Arc::new(Mutex::new(Vec::new()));
        let log = AccessLog::with_queue(
            Box::new(Stalled {
                open: open.clone(),
                waited: false,
                out: out.clone(),
            }),
            4,
        );
        log.log(&entry());
        // The writer thread holds the first line, stalled in its write.
        let t0 = Instant::now();
        while out.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 1..20 {
            log.log(&entry());
        }
        let dropped = log.dropped();
        open.wait();
        let t0 = Instant::now();
        let lines = || out.lock().unwrap().iter().filter(|&&b| b == b'\n').count() as u64;
        while lines() + dropped < 20 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // At most the line in the writer's hands and a full queue got through.
        assert!((15..=16).contains(&dropped), "dropped {dropped}");
        assert_eq!(lines() + dropped, 20, "every line written or counted");
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["decision"], "allow");
        }
    }
}
