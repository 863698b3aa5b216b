//! A second, minimal reader of a client's HTTP/1 request stream, fed the same bytes as
//! hyper, that notes which request heads carry both Content-Length and
//! Transfer-Encoding. hyper drops Content-Length in that case (RFC 9112 6.3) and
//! re-frames the body as chunked, so the request handler can no longer tell such a
//! request from a plain chunked one; with this record the proxy refuses it (400) instead.
//!
//! The reader follows the framing hyper uses (Transfer-Encoding wins over
//! Content-Length, chunked bodies, leading empty lines skipped), so its head count stays
//! equal to the number of requests hyper hands to the service. On anything it does not
//! understand it stops and records nothing more: hyper refuses such input on its own.
//! Pure and sans-I/O; [`SniffIo`] is the thin wrapper that feeds it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest line the reader buffers: beyond it hyper has refused the head already
/// (its own limit is smaller), so the reader stops.
const MAX_LINE: usize = 64 * 1024;

/// What the reader found, shared with the request handler of the same connection.
#[derive(Debug)]
pub struct Findings {
    /// Index (0-based) of the first request head with both Content-Length and
    /// Transfer-Encoding; `u64::MAX` while there is none.
    first_cl_te: AtomicU64,
    /// Everything read so far ends at a message boundary (no partial head or body).
    at_boundary: AtomicBool,
    /// Set while the connection is being parked: hyper's final shutdown of the I/O must
    /// leave the socket open.
    pub(crate) parking: AtomicBool,
}

impl Default for Findings {
    fn default() -> Self {
        Self {
            first_cl_te: AtomicU64::new(u64::MAX),
            at_boundary: AtomicBool::new(true),
            parking: AtomicBool::new(false),
        }
    }
}

impl Findings {
    /// True when request number `index` (0-based, in arrival order) or an earlier one
    /// carried both Content-Length and Transfer-Encoding.
    pub fn cl_te(&self, index: u64) -> bool {
        self.first_cl_te.load(Ordering::Acquire) <= index
    }

    /// True when the bytes read so far end exactly at a message boundary.
    pub fn at_boundary(&self) -> bool {
        self.at_boundary.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the request line (empty lines are skipped there).
    Start,
    /// Header lines of the current head.
    Headers,
    /// `n` body bytes left (Content-Length).
    Body(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// `n` chunk data bytes left, then the CRLF that ends the chunk.
    ChunkData(u64),
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// Not HTTP any more (CONNECT, malformed input): nothing more is recorded.
    Stopped,
}

/// The per-connection reader state.
#[derive(Debug)]
pub struct Framer {
    state: State,
    line: Vec<u8>,
    heads: u64,
    connect: bool,
    content_length: Option<u64>,
    te: bool,
    te_chunked: bool,
    findings: Arc<Findings>,
}

impl Framer {
    pub fn new(findings: Arc<Findings>) -> Self {
        Self {
            state: State::Start,
            line: Vec::new(),
            heads: 0,
            connect: false,
            content_length: None,
            te: false,
            te_chunked: false,
            findings,
        }
    }

    /// Request heads completed so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// False once the reader gave up (tunnel or input it does not follow).
    pub fn following(&self) -> bool {
        self.state != State::Stopped
    }

    /// Feeds bytes in arrival order.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Stopped => return,
                State::Body(n) | State::ChunkData(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    let left = n - take;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Start,
                        (State::Body(_), l) => State::Body(l),
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::ChunkData(l),
                    };
                }
                _ => {
                    // Line-oriented states: take up to and including the next LF.
                    let (part, rest, complete) = match data.iter().position(|&b| b == b'\n') {
                        Some(i) => (&data[..i], &data[i + 1..], true),
                        None => (data, &data[data.len()..], false),
                    };
                    data = rest;
                    if self.line.len() + part.len() > MAX_LINE {
                        self.stop();
                        return;
                    }
                    if !complete {
                        self.line.extend_from_slice(part);
                        return;
                    }
                    let line = if self.line.is_empty() {
                        strip_cr(part).to_vec()
                    } else {
                        self.line.extend_from_slice(part);
                        let l = strip_cr(&self.line).to_vec();
                        self.line.clear();
                        l
                    };
                    self.on_line(&line);
                }
            }
        }
        // A long idle connection should not keep a large line buffer.
        if self.line.is_empty() && self.line.capacity() > 1024 {
            self.line = Vec::new();
        }
        self.findings.at_boundary.store(
            self.state == State::Start && self.line.is_empty(),
            Ordering::Release,
        );
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.line = Vec::new();
    }

    fn on_line(&mut self, line: &[u8]) {
        match self.state {
            State::Start => {
                if line.is_empty() {
                    return;
                }
                self.connect = line.starts_with(b"CONNECT ");
                self.content_length = None;
                self.te = false;
                self.te_chunked = false;
                self.state = State::Headers;
            }
            State::Headers if line.is_empty() => self.end_of_head(),
            State::Headers => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    self.stop();
                    return;
                };
                let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
                if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    self.te = true;
                    // hyper: chunked when the last coding of the last header is chunked.
                    self.te_chunked = value
                        .rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
                } else if name.eq_ignore_ascii_case(b"content-length") {
                    // Digits only, as hyper reads it (`u64::from_str` would take "+4").
                    let n = (!value.is_empty() && value.iter().all(u8::is_ascii_digit))
                        .then(|| std::str::from_utf8(value).ok()?.parse().ok())
                        .flatten();
                    match n {
                        Some(n) => self.content_length = Some(n),
                        // hyper refuses an invalid length; a stopped reader is harmless.
                        None => self.stop(),
                    }
                }
            }
            State::ChunkSize => {
                let hex_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                let size = std::str::from_utf8(&line[..hex_len])
                    .ok()
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                self.state = match size {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Stopped,
                };
            }
            State::ChunkEnd => {
                self.state = if line.is_empty() {
                    State::ChunkSize
                } else {
                    State::Stopped
                };
            }
            State::Trailers => {
                if line.is_empty() {
                    self.state = State::Start;
                }
            }
            State::Body(_) | State::ChunkData(_) | State::Stopped => {}
        }
    }

    fn end_of_head(&mut self) {
        let index = self.heads;
        self.heads += 1;
        if self.te && self.content_length.is_some() {
            // fetch_min keeps the first one if several arrive before the handler looks.
            self.findings.first_cl_te.fetch_min(index, Ordering::AcqRel);
        }
        self.state = if self.connect {
            // After a CONNECT the bytes may be a tunnel: not followed.
            State::Stopped
        } else if self.te {
            if self.te_chunked {
                State::ChunkSize
            } else {
                State::Stopped
            }
        } else {
            match self.content_length {
                Some(0) | None => State::Start,
                Some(n) => State::Body(n),
            }
        };
    }
}

fn strip_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let e = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (s, e) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

/// Feeds every byte read from the client to a [`Framer`] before hyper sees it. Also
/// replays bytes a finished hyper connection had read but not used (`prefix`), and
/// leaves the socket open on hyper's final shutdown while the connection is parked.
#[derive(Debug)]
pub struct SniffIo<T> {
    inner: T,
    framer: Framer,
    prefix: bytes::Bytes,
}

impl<T> SniffIo<T> {
    pub fn new(inner: T, findings: Arc<Findings>) -> Self {
        Self {
            inner,
            framer: Framer::new(findings),
            prefix: bytes::Bytes::new(),
        }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Bytes the reader saw already, handed out again before the socket is read.
    pub fn replay(&mut self, prefix: bytes::Bytes) {
        self.prefix = prefix;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SniffIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() > before
        {
            let this = &mut *self;
            this.framer.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SniffIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.framer.findings.parking.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, stream, heads completed, first CL+TE head, still following)
    const CASES: &[(&str, &str, u64, Option<u64>, bool)] = &[
        (
            "plain GET",
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            1,
            None,
            true,
        ),
        (
            "two pipelined GETs",
            "GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
            2,
            None,
            true,
        ),
        (
            "leading empty lines",
            "\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            1,
            None,
            true,
        ),
        ("bare LF", "GET / HTTP/1.1\nHost: a\n\n", 1, None, true),
        (
            "CL body skipped, then a head",
            "POST / HTTP/1.1\r\nContent-Length: 25\r\n\r\nGET /x HTTP/1.1\r\nX: y\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            2,
            None,
            true,
        ),
        (
            "CL then TE",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            1,
            Some(0),
            true,
        ),
        (
            "TE then CL, odd case and spacing",
            "POST / HTTP/1.1\r\ntransfer-encoding:  Chunked \r\nCONTENT-LENGTH:4\r\n\r\n0\r\n\r\n",
            1,
            Some(0),
            true,
        ),
        (
            "CL+TE in the second request",
            "GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            2,
            Some(1),
            true,
        ),
        (
            "chunked body with a fake head inside, then a real head",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2e\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-E\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            2,
            None,
            true,
        ),
        (
            "chunk extensions",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n",
            1,
            None,
            true,
        ),
        (
            "TE not chunked: hyper refuses, reader stops",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            1,
            None,
            false,
        ),
        (
            "CONNECT: tunnel bytes are not read as heads",
            "CONNECT a:443 HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            1,
            None,
            false,
        ),
        (
            "invalid Content-Length stops",
            "POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
            0,
            None,
            false,
        ),
        (
            "header line without a colon stops",
            "GET / HTTP/1.1\r\nbogus\r\n\r\n",
            0,
            None,
            false,
        ),
    ];

    fn run(stream: &[u8], split: usize) -> (u64, Option<u64>, bool) {
        let f = Arc::new(Findings::default());
        let mut fr = Framer::new(f.clone());
        for c in stream.chunks(split.max(1)) {
            fr.feed(c);
        }
        let first = f.first_cl_te.load(Ordering::Relaxed);
        (
            fr.heads(),
            (first != u64::MAX).then_some(first),
            fr.following(),
        )
    }

    #[test]
    fn table() {
        for (name, stream, heads, cl_te, following) in CASES {
            // Whole, and byte by byte: the split must not matter.
            for split in [usize::MAX, 1, 7] {
                let got = run(stream.as_bytes(), split);
                assert_eq!(got, (*heads, *cl_te, *following), "{name} (split {split})");
            }
        }
    }

    #[test]
    fn findings_answer_by_index() {
        let f = Findings::default();
        assert!(!f.cl_te(0));
        f.first_cl_te.fetch_min(2, Ordering::AcqRel);
        assert!(!f.cl_te(1));
        assert!(f.cl_te(2));
        assert!(f.cl_te(3));
    }

    /// Random and mutated streams (the stable stand-in for the `framing` fuzz target):
    /// the reader never panics, and how the bytes are split into reads never changes
    /// what it finds.
    #[test]
    fn mutated_streams_are_split_invariant() {
        let seeds: Vec<&[u8]> = CASES.iter().map(|c| c.1.as_bytes()).collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const ALPHABET: &[u8] =
            b"\r\n:; ,0123456789abcdefABCDEF\0\tchunkedContent-LengthTransfer-EncodingCONNECT";
        for round in 0..4000 {
            let mut v = seeds[rnd() as usize % seeds.len()].to_vec();
            // Splice in a piece of another seed now and then: pipelined mixtures.
            if round % 3 == 0 {
                let other = seeds[rnd() as usize % seeds.len()];
                let at = rnd() as usize % (v.len() + 1);
                v.splice(at..at, other.iter().copied());
            }
            for _ in 0..(rnd() % 6) {
                let at = rnd() as usize % (v.len() + 1);
                match rnd() % 3 {
                    0 if at < v.len() => {
                        v.remove(at);
                    }
                    1 if at < v.len() => v[at] = ALPHABET[rnd() as usize % ALPHABET.len()],
                    _ => v.insert(at, ALPHABET[rnd() as usize % ALPHABET.len()]),
                }
            }
            let whole = run(&v, usize::MAX);
            let split = 1 + rnd() as usize % 9;
            assert_eq!(run(&v, split), whole, "round {round}, split {split}: {v:?}");
            assert_eq!(run(&v, 1), whole, "round {round}, bytewise: {v:?}");
        }
    }

    #[test]
    fn overlong_line_stops_and_frees() {
        let f = Arc::new(Findings::default());
        let mut fr = Framer::new(f);
        fr.feed(b"GET / HTTP/1.1\r\nX: ");
        fr.feed(&vec![b'a'; MAX_LINE + 1]);
        assert!(!fr.following());
        assert_eq!(fr.line.capacity(), 0);
    }
}
