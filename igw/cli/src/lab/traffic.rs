//! `igw lab traffic`: what a failover is measured with. A bounded UDP probe stream (one
//! datagram every `interval`, each carrying its sequence number, answered by the echo
//! service) gives the data-plane gap; long-lived TCP flows (each sends a few bytes and reads
//! them back every 100 ms) tell which established flows survive. Runs inside a tenant
//! namespace, stops by itself after `duration`, prints one JSON report.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
    pub max_gap_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowsReport {
    pub opened: usize,
    /// Flows that still carried data both ways in the last second of the run.
    pub alive_at_end: usize,
    /// The longest time a surviving flow waited for its echo (TCP retransmissions
    /// included): what an established connection felt of the outage.
    pub max_stall_ms: u64,
    /// Flows that failed, with the first error (reset, timeout, ...).
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let flows = {
        let stop = stop.clone();
        std::thread::spawn(move || drive_flows(streams, start, &stop))
    };
    let sock = UdpSocket::bind(if a.to.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    sock.connect(a.to)?;
    sock.set_read_timeout(Some(Duration::from_millis(1)))?;
    // Whoever injects a failure waits for this line: flows are up, the stream runs.
    eprintln!(
        "traffic: {} flows established, probe stream started",
        a.flows.min(10_000)
    );
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
    let flows = flows
        .join()
        .map_err(|_| anyhow::anyhow!("flow thread panicked"))?;
    Ok(Report {
        stream: stream_report(&sent_at, &answered),
        flows,
    })
}

/// One flow's exchange: a message in flight (sent, not fully echoed) or idle until the next
/// round; `last_ok` is when the last echo came back whole.
struct Flow {
    s: Option<TcpStream>,
    msg: [u8; 8],
    got: Vec<u8>,
    in_flight: bool,
    sent: Duration,
    last_ok: Duration,
    max_stall: Duration,
}

/// Drives every flow from one thread, non-blocking: every 100 ms each idle flow sends 8
/// bytes and then waits — as long as it takes, TCP retransmits across an outage — for them
/// to come back. A flow dies only on an error (reset, unreachable) or wrong bytes; a dead
/// path never blocks the others (blocking reads with a timeout would: 100 flows x 1 s).
fn drive_flows(streams: Vec<TcpStream>, start: Instant, stop: &AtomicBool) -> FlowsReport {
    let mut flows: Vec<Flow> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| Flow {
            s: Some(s),
            msg: (i as u64).to_be_bytes(),
            got: Vec::with_capacity(8),
            in_flight: false,
            sent: Duration::ZERO,
            last_ok: Duration::ZERO,
            max_stall: Duration::ZERO,
        })
        .collect();
    let mut failed = Vec::new();
    let round = Duration::from_millis(100);
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed();
        for (i, f) in flows.iter_mut().enumerate() {
            let Some(s) = f.s.as_mut() else { continue };
            let mut err: Option<String> = None;
            if !f.in_flight && now.saturating_sub(f.sent) >= round {
                match s.write(&f.msg) {
                    Ok(8) => {
                        f.in_flight = true;
                        f.sent = now;
                        f.got.clear();
                    }
                    Ok(_) => err = Some("short write".into()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => err = Some(e.to_string()),
                }
            }
            if f.in_flight && err.is_none() {
                match s.read(&mut buf) {
                    Ok(0) => err = Some("closed by the peer".into()),
                    Ok(n) => {
                        f.got.extend_from_slice(&buf[..n]);
                        if f.got.len() >= 8 {
                            if f.got[..8] == f.msg && f.got.len() == 8 {
                                let t = start.elapsed();
                                f.max_stall = f.max_stall.max(t.saturating_sub(f.last_ok));
                                f.last_ok = t;
                                f.in_flight = false;
                            } else {
                                err = Some("echoed bytes differ".into());
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => err = Some(e.to_string()),
                }
            }
            if let Some(e) = err {
                failed.push(format!("flow {i}: {e}"));
                f.s = None;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let end = start.elapsed();
    flows_report(
        &flows
            .iter()
            .map(|f| (f.s.is_some(), f.last_ok, f.max_stall))
            .collect::<Vec<_>>(),
        end,
        failed,
    )
}

/// The flows' figures from (still open, last echo, longest stall) per flow at `end`. A flow
/// is alive if it is open and echoed within the last 1.5 s (15 rounds).
pub fn flows_report(
    flows: &[(bool, Duration, Duration)],
    end: Duration,
    failed: Vec<String>,
) -> FlowsReport {
    let alive_at_end = flows
        .iter()
        .filter(|(open, last, _)| *open && end.saturating_sub(*last) < Duration::from_millis(1500))
        .count();
    let max_stall = flows
        .iter()
        .filter(|(open, _, _)| *open)
        .map(|(_, _, s)| *s)
        .max()
        .unwrap_or_default();
    FlowsReport {
        opened: flows.len(),
        alive_at_end,
        max_stall_ms: max_stall.as_millis() as u64,
        failed,
    }
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

    #[test]
    fn flows_table() {
        let ms = Duration::from_millis;
        let end = ms(10_000);
        // (open, last echo, longest stall) -> alive at the end?
        let flows = [
            (true, ms(9_950), ms(450)),  // alive, felt a 450 ms stall
            (true, ms(8_400), ms(120)),  // open but silent for 1.6 s: not alive
            (false, ms(9_990), ms(900)), // died (reset): neither alive nor counted in stalls
            (true, ms(8_600), ms(1_300)),
        ];
        let r = flows_report(&flows, end, vec!["flow 2: reset".into()]);
        assert_eq!(r.opened, 4);
        assert_eq!(r.alive_at_end, 2);
        assert_eq!(r.max_stall_ms, 1_300);
        assert_eq!(r.failed.len(), 1);
    }
}
