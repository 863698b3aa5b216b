//! Zero-copy relay of a tunnel (CONNECT, transparent TLS after the ClientHello) between
//! two TCP sockets with splice(2) through a pipe per direction: the bytes move between
//! socket buffers inside the kernel instead of being copied to and from user space,
//! which is most of the CPU a bulk tunnel costs with a read/write loop.
//!
//! Each direction: wait until the source is readable, splice socket -> pipe, then pipe ->
//! destination until the pipe is empty (waiting while the destination is full). EOF on
//! one side is passed on as a write shutdown of the other; the relay ends when both
//! directions ended, or when no byte moved either way for the idle time.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bytes moved per splice call at most; also the pipe size asked for. A larger pipe
/// means fewer system calls per megabyte (the default pipe holds 64 KiB).
const PIPE_SIZE: usize = 256 * 1024;

#[derive(Debug)]
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Bytes in the pipe, not yet spliced to the destination.
    held: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // Best effort: an unprivileged limit (fs.pipe-max-size) may refuse a larger pipe;
        // the default size still works, with more calls.
        let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32));
        Ok(Pipe { r, w, held: 0 })
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
    let mut pipe = Pipe::new()?;
    loop {
        if pipe.held == 0 {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src, None, &pipe.w, None, PIPE_SIZE, flags()).map_err(io::Error::from)
            }) {
                Ok(0) => {
                    // EOF: pass it on. A peer already gone is not an error of the relay.
                    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
                    return Ok(());
                }
                Ok(n) => {
                    pipe.held = n;
                    clock.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
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

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed() {
        let (_outer_client, relay_client) = pair().await;
        let (relay_up, _outer_server) = pair().await;
        let (_, _, r) = relay(&relay_client, &relay_up, Duration::from_secs(30)).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
