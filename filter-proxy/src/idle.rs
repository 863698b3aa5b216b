//! An I/O wrapper that fails a connection idle for too long (no byte either way) and
//! counts the bytes in each direction.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct Bytes {
    /// From the client.
    pub rx: AtomicU64,
    /// To the client.
    pub tx: AtomicU64,
    base: Instant,
    /// Milliseconds after `base` of the last byte either way.
    last_ms: AtomicU64,
}

impl Default for Bytes {
    fn default() -> Self {
        Self {
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Bytes {
    /// When the last byte moved either way.
    pub fn last_activity(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
pub struct IdleIo<T> {
    inner: T,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    pub bytes: Arc<Bytes>,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            bytes: Arc::new(Bytes::default()),
        }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn touch(&mut self) {
        let now = Instant::now();
        self.sleep.as_mut().reset(now + self.idle);
        let ms = now.duration_since(self.bytes.base).as_millis() as u64;
        self.bytes.last_ms.store(ms, Ordering::Relaxed);
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Whether the idle time has passed since the last byte; registers `cx` to be woken
    /// when it does.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout")
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    self.bytes.rx.fetch_add(n as u64, Ordering::Relaxed);
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.poll_expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                self.bytes.tx.fetch_add(n as u64, Ordering::Relaxed);
                self.touch();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.poll_expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    // Passing vectored writes through lets hyper queue a response's head and body
    // chunks for one writev instead of copying the body into its own buffer first.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                self.bytes.tx.fetch_add(n as u64, Ordering::Relaxed);
                self.touch();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.poll_expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
