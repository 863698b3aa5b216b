//! Zero-copy relay of a tunnel (CONNECT, transparent TLS after the ClientHello) between
//! two TCP sockets with splice(2) through a pipe: the bytes move between socket buffers
//! inside the kernel instead of being copied to and from user space, which is most of the
//! CPU a bulk tunnel costs with a read/write loop.
//!
//! Each direction: wait until the source is readable, take an empty pipe from the
//! thread's pool, splice socket -> pipe, then pipe -> destination until the pipe is empty
//! (waiting while the destination is full), and give the pipe back. A pipe is only held
//! while bytes are in flight: an idle tunnel holds none. That matters because the kernel
//! charges every pipe's full size to its owner (`fs.pipe-user-pages-soft`, 64 MiB for
//! the whole uid); past it, new pipes get two pages and cannot grow, so two pipes per
//! tunnel for its whole life would leave all but the first tunnels with 8 KiB pipes.
//! EOF on one side is passed on as a write shutdown of the other; the relay ends when both
//! directions ended, or when no byte moved either way for the idle time.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bytes moved per splice call at most; also the pipe size asked for. A larger pipe
/// means fewer system calls per megabyte (the default pipe holds 64 KiB).
const PIPE_SIZE: usize = 256 * 1024;

/// Empty pipes a thread keeps for its tunnels' next wake-ups; more are closed when given
/// back. Bounds what an idle proxy keeps charged against the pipe limit (4 MiB a thread).
const POOL_MAX: usize = 16;

/// Pipes open in this process (pooled or in flight); exported as a metric.
static OPEN_PIPES: AtomicUsize = AtomicUsize::new(0);
/// Pipes that could not be grown to PIPE_SIZE (the uid's pipe limit is reached).
static SMALL_PIPES: AtomicU64 = AtomicU64::new(0);

/// Pipes open now (in the pools or holding bytes in flight).
pub fn open_pipes() -> usize {
    OPEN_PIPES.load(Ordering::Relaxed)
}

/// Pipes created at the kernel's minimum size because the pipe limit was reached.
pub fn small_pipes() -> u64 {
    SMALL_PIPES.load(Ordering::Relaxed)
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug)]
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Bytes in the pipe, not yet spliced to the destination.
    held: usize,
    /// Bytes one splice call moves at most (the pipe's size).
    cap: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        OPEN_PIPES.fetch_add(1, Ordering::Relaxed);
        // A refusal (the uid's pipe limit) leaves the default size: the relay still
        // works, with more calls per megabyte.
        let cap = match fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32)) {
            Ok(n) => n as usize,
            Err(e) => {
                static ONCE: AtomicBool = AtomicBool::new(false);
                SMALL_PIPES.fetch_add(1, Ordering::Relaxed);
                if !ONCE.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "tunnel pipe not grown (pipe limit reached: fs.pipe-user-pages-soft); relaying with smaller pipes");
                }
                fcntl(&w, FcntlArg::F_GETPIPE_SZ).map_or(4096, |n| n as usize)
            }
        };
        Ok(Pipe { r, w, held: 0, cap })
    }

    /// An empty pipe from this thread's pool, or a new one.
    fn take() -> io::Result<Pipe> {
        match POOL.with(|p| p.borrow_mut().pop()) {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }

    /// Back to the pool; only an empty pipe may be reused.
    fn give(self) {
        if self.held == 0 {
            POOL.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX {
                    p.push(self);
                }
            });
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        OPEN_PIPES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Activity clock shared by both directions: milliseconds since `base` of the last byte.
#[derive(Debug)]
struct Clock {
    base: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// One direction until EOF of `src`, counting delivered bytes in `moved`. The write side
/// of `dst` is shut down at EOF so the peer sees the end, as `copy_bidirectional` does.
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    clock: &Clock,
    moved: &AtomicU64,
) -> io::Result<()> {
    loop {
        src.readable().await?;
        // A pipe that still holds bytes when this future is dropped (idle timeout, the
        // other direction failed) is closed with them, never pooled.
        let mut pipe = Pipe::take()?;
        match src.try_io(Interest::READABLE, || {
            splice(src, None, &pipe.w, None, pipe.cap, flags()).map_err(io::Error::from)
        }) {
            Ok(0) => {
                pipe.give();
                // EOF: pass it on. A peer already gone is not an error of the relay.
                let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
                return Ok(());
            }
            Ok(n) => {
                pipe.held = n;
                clock.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipe.give();
                continue;
            }
            Err(e) => {
                pipe.give();
                return Err(e);
            }
        }
        while pipe.held > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&pipe.r, None, dst, None, pipe.held, flags()).map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    pipe.held -= n;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                    clock.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        pipe.give();
    }
}

/// Relays `client` <-> `upstream` until both directions end, an error, or `idle` without a
/// byte. Returns (bytes from the client, bytes to the client) delivered, exact also when
/// the relay ended with an error, and how it ended.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
) -> (u64, u64, io::Result<()>) {
    let clock = Clock {
        base: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let run = async {
        tokio::try_join!(
            one_way(client, upstream, &clock, &up),
            one_way(upstream, client, &clock, &down)
        )
        .map(|_| ())
    };
    let watchdog = async {
        loop {
            let due = clock.last() + idle;
            if Instant::now() >= due {
                return io::Error::new(io::ErrorKind::TimedOut, "idle timeout");
            }
            tokio::time::sleep_until(due).await;
        }
    };
    let res = tokio::select! {
        r = run => r,
        e = watchdog => Err(e),
    };
    (
        up.load(Ordering::Relaxed),
        down.load(Ordering::Relaxed),
        res,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// client <-> [relay a|b] <-> echo-less sink that answers with its own bytes.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn relays_both_ways_and_passes_eof() {
        // outer_client -- relay_client ==relay== relay_up -- outer_server
        let (mut outer_client, relay_client) = pair().await;
        let (relay_up, mut outer_server) = pair().await;
        let h =
            tokio::spawn(
                async move { relay(&relay_client, &relay_up, Duration::from_secs(10)).await },
            );
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let big2 = big.clone();
        let w = tokio::spawn(async move {
            outer_client.write_all(&big2).await.unwrap();
            outer_client.shutdown().await.unwrap();
            let mut back = Vec::new();
            outer_client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        outer_server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        outer_server.write_all(b"answer").await.unwrap();
        outer_server.shutdown().await.unwrap();
        assert_eq!(w.await.unwrap(), b"answer");
        let (a, b, r) = h.await.unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert_eq!((a, b), (big.len() as u64, 6));
    }

    #[tokio::test]
    async fn idle_tunnels_hold_no_pipe() {
        // 100 tunnels, each carries a message both ways and stays open: the pipes are
        // back in the (bounded) pool, not two per tunnel for its whole life.
        let before = open_pipes();
        let mut ends = Vec::new();
        let mut relays = Vec::new();
        for i in 0..100u32 {
            let (mut outer_client, relay_client) = pair().await;
            let (relay_up, mut outer_server) = pair().await;
            relays.push(tokio::spawn(async move {
                relay(&relay_client, &relay_up, Duration::from_secs(30)).await
            }));
            let msg = format!("hello {i}");
            outer_client.write_all(msg.as_bytes()).await.unwrap();
            let mut got = vec![0; msg.len()];
            outer_server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg.as_bytes());
            outer_server.write_all(b"back").await.unwrap();
            let mut back = [0; 4];
            outer_client.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"back");
            ends.push((outer_client, outer_server));
        }
        let open = open_pipes() - before.min(open_pipes());
        assert!(
            open <= POOL_MAX,
            "{open} pipes open for 100 idle tunnels (pool keeps at most {POOL_MAX})"
        );
        // Every tunnel still works after its pipe went back to the pool.
        for (c, s) in &mut ends {
            c.write_all(b"again").await.unwrap();
            let mut got = [0; 5];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"again");
        }
        drop(ends);
        for r in relays {
            let (a, b, res) = r.await.unwrap();
            assert!(res.is_ok(), "{res:?}");
            assert!(a >= 7 && b == 4, "bytes moved: {a} up, {b} down");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed() {
        let (_outer_client, relay_client) = pair().await;
        let (relay_up, _outer_server) = pair().await;
        let (_, _, r) = relay(&relay_client, &relay_up, Duration::from_secs(30)).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
