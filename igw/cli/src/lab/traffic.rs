//! `igw lab traffic`: what a failover is measured with. A bounded UDP probe stream (one
//! datagram every `interval`, each carrying its sequence number, answered by the echo
//! service) gives the data-plane gap; long-lived TCP flows (each sends a few bytes and reads
//! them back every 100 ms) tell which established flows survive. Runs inside a tenant
//! namespace, stops by itself after `duration`, prints one JSON report.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The echo service (TCP and UDP).
    #[arg(long, default_value = "203.0.113.7:7")]
    pub to: SocketAddr,
    /// Probe interval of the UDP stream, milliseconds.
    #[arg(long, default_value_t = 10)]
    pub interval_ms: u64,
    /// Long-lived TCP flows to open before the stream starts.
    #[arg(long, default_value_t = 100)]
    pub flows: usize,
    /// How long to run (the stream and the flows stop by themselves).
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
}

/// UDP stream figures. `max_gap_ms`: the longest time between two consecutive answered
/// probes (by send time) — the outage the stream saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
    pub max_gap_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowsReport {
    pub opened: usize,
    /// Flows that still carried data both ways in the last second of the run.
    pub alive_at_end: usize,
    /// Flows that failed, with the first error (reset, timeout, ...).
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub stream: StreamReport,
    pub flows: FlowsReport,
}

/// The stream's figures from the send times (ms since start, by sequence number) and the
/// set of sequence numbers answered. Pure, so the gap arithmetic is tested as a table.
pub fn stream_report(sent_at_ms: &[f64], answered: &[bool]) -> StreamReport {
    let sent = sent_at_ms.len() as u64;
    let ok = answered.iter().filter(|a| **a).count() as u64;
    // The outage is the longest span from the last answered probe before a run of lost
    // ones to the first answered after it; spacing between answered probes is jitter.
    let mut max_gap: f64 = 0.0;
    let mut last: Option<f64> = None;
    let mut lost_since = false;
    for (t, a) in sent_at_ms.iter().zip(answered) {
        if *a {
            if lost_since {
                max_gap = max_gap.max(t - last.unwrap_or(0.0));
            }
            last = Some(*t);
            lost_since = false;
        } else {
            lost_since = true;
        }
    }
    if lost_since {
        // Lost until the end of the run.
        let end = sent_at_ms.last().copied().unwrap_or(0.0);
        max_gap = max_gap.max(end - last.unwrap_or(0.0));
    }
    StreamReport {
        sent,
        answered: ok,
        lost: sent - ok,
        max_gap_ms: (max_gap * 10.0).round() / 10.0,
    }
}

pub fn run(a: &Args) -> Result<()> {
    let report = measure(a)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn measure(a: &Args) -> Result<Report> {
    let duration = Duration::from_secs(a.duration_s.clamp(1, 600));
    let interval = Duration::from_millis(a.interval_ms.clamp(1, 1000));
    // Flows first, so they are established before anything fails.
    let mut streams = Vec::new();
    for i in 0..a.flows.min(10_000) {
        let s = TcpStream::connect_timeout(&a.to, Duration::from_secs(3))
            .with_context(|| format!("TCP flow {i} to {}", a.to))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let last_ok = Arc::new(Mutex::new(vec![Duration::ZERO; streams.len()]));
    // One thread drives every flow: 100 flows at 10 rounds/s stay far below what a core does.
    let flows = {
        let (stop, failed, last_ok) = (stop.clone(), failed.clone(), last_ok.clone());
        std::thread::spawn(move || {
            let mut alive: Vec<Option<TcpStream>> = streams.into_iter().map(Some).collect();
            let mut buf = [0u8; 8];
            while !stop.load(Ordering::Relaxed) {
                for (i, slot) in alive.iter_mut().enumerate() {
                    let Some(s) = slot else { continue };
                    let msg = (i as u64).to_be_bytes();
                    let r = s.write_all(&msg).and_then(|_| s.read_exact(&mut buf));
                    match r {
                        Ok(()) if buf == msg => last_ok.lock().expect("lock")[i] = start.elapsed(),
                        Ok(()) => {
                            failed
                                .lock()
                                .expect("lock")
                                .push(format!("flow {i}: echoed bytes differ"));
                            *slot = None;
                        }
                        // A read timeout is an outage, not a death: retry next round.
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(e) => {
                            failed.lock().expect("lock").push(format!("flow {i}: {e}"));
                            *slot = None;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let sock = UdpSocket::bind(if a.to.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    sock.connect(a.to)?;
    sock.set_read_timeout(Some(Duration::from_millis(1)))?;
    let n = (duration.as_millis() / interval.as_millis().max(1)) as usize;
    let mut sent_at = Vec::with_capacity(n);
    let mut answered = vec![false; n];
    let mut buf = [0u8; 64];
    for seq in 0..n {
        let due = interval * seq as u32;
        while start.elapsed() < due {
            drain(&sock, &mut buf, &mut answered);
        }
        sent_at.push(start.elapsed().as_secs_f64() * 1000.0);
        let _ = sock.send(&(seq as u64).to_be_bytes());
        drain(&sock, &mut buf, &mut answered);
    }
    let tail = Instant::now();
    while tail.elapsed() < Duration::from_millis(500) {
        drain(&sock, &mut buf, &mut answered);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = flows.join();
    let end = start.elapsed();
    let last_ok = last_ok.lock().expect("lock").clone();
    let failed = failed.lock().expect("lock").clone();
    let alive_at_end = last_ok
        .iter()
        .filter(|t| end.saturating_sub(**t) < Duration::from_millis(1500))
        .count();
    Ok(Report {
        stream: stream_report(&sent_at, &answered),
        flows: FlowsReport {
            opened: last_ok.len(),
            alive_at_end,
            failed,
        },
    })
}

fn drain(sock: &UdpSocket, buf: &mut [u8], answered: &mut [bool]) {
    while let Ok(len) = sock.recv(buf) {
        if len == 8 {
            let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
            if let Some(a) = answered.get_mut(seq) {
                *a = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_table() {
        let t: Vec<f64> = (0..10).map(|i| i as f64 * 10.0).collect();
        // (answered pattern, lost, outage ms)
        let cases: &[(&str, u64, f64)] = &[
            ("1111111111", 0, 0.0),
            ("1110001111", 3, 40.0),
            ("1100000001", 7, 80.0),
            ("1111111100", 2, 20.0),
            ("0000000000", 10, 90.0),
            ("1111011111", 1, 20.0),
            ("1101101111", 2, 20.0),
        ];
        for (pat, lost, gap) in cases {
            let a: Vec<bool> = pat.chars().map(|c| c == '1').collect();
            let r = stream_report(&t, &a);
            assert_eq!((r.lost, r.max_gap_ms), (*lost, *gap), "{pat}");
        }
    }
}
