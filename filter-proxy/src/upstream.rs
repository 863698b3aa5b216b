//! Upstream HTTP/1 connections owned by one client connection and driven by that
//! connection's own task.
//!
//! hyper serves a client connection one request at a time, so one upstream connection
//! per client connection carries its keep-alive traffic. Its I/O state machine (hyper's
//! `Connection` future) is polled by the client's task next to the server side (see
//! `serve_active`): a request goes out and its response comes back without crossing to
//! another task, and there is no shared pool to lock on every request. A connection
//! still streaming a body when the next request comes (or one to another destination)
//! is left to finish, and a new one is opened. Upstream connections close when their
//! client connection parks or ends.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;
type UpConn = Connection<TokioIo<TcpStream>, Body>;

#[derive(Default)]
pub(crate) struct Upstreams {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The sender of the last connection used, with its destination.
    idle: Option<(SocketAddr, SendRequest<Body>)>,
    /// The I/O futures of every open connection; one ends when its sender is gone and
    /// its exchange done, or on close or error.
    conns: Vec<Pin<Box<UpConn>>>,
    /// The task that drives them, to be woken when a connection is added.
    waker: Option<Waker>,
}

impl fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lock().conns.len();
        f.debug_struct("Upstreams").field("open", &n).finish()
    }
}

impl Upstreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drives every open connection; never completes. Polled by the client's task.
    pub(crate) fn poll_drive(&self, cx: &mut Context<'_>) {
        let mut g = self.lock();
        // Remember whom to wake when a connection is added: a new connection has never
        // been polled, so nothing else would wake this task for its first request.
        match &g.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => g.waker = Some(cx.waker().clone()),
        }
        if g.conns.is_empty() {
            return;
        }
        g.conns.retain_mut(|c| c.as_mut().poll(cx).is_pending());
        if g.conns.is_empty() {
            g.idle = None;
        }
    }

    /// A sender ready for a request to `dst`, if the last connection is one.
    pub(crate) fn take(&self, dst: SocketAddr) -> Option<SendRequest<Body>> {
        let mut g = self.lock();
        match g.idle.take() {
            Some((d, s)) if d == dst && s.is_ready() => Some(s),
            // Another destination, closed or still busy: it finishes on its own.
            _ => None,
        }
    }

    /// Keeps `send` for the client's next request.
    pub(crate) fn put(&self, dst: SocketAddr, send: SendRequest<Body>) {
        if !send.is_closed() {
            self.lock().idle = Some((dst, send));
        }
    }

    /// Adds a new connection's I/O future; the client's task drives it from now on.
    pub(crate) fn add(&self, conn: UpConn) {
        let mut g = self.lock();
        g.conns.push(Box::pin(conn));
        if let Some(w) = &g.waker {
            w.wake_by_ref();
        }
    }

    /// Closes every upstream connection (the client connection parks).
    pub(crate) fn clear(&self) {
        let mut g = self.lock();
        g.idle = None;
        g.conns.clear();
    }
}

/// Drives `f` and the client's upstream connections together until `f` completes.
pub(crate) async fn drive<F: Future + Unpin>(ups: &Upstreams, f: &mut F) -> F::Output {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = Pin::new(&mut *f).poll(cx) {
            return Poll::Ready(v);
        }
        ups.poll_drive(cx);
        Poll::Pending
    })
    .await
}
