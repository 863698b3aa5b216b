//! ctnetlink I/O on `netlink-sys`: dump the table, receive events, commit entries with
//! batched CT_NEW. Blocking calls: the daemon runs them on their own threads.

use std::io;
use std::sync::Arc;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::DecodeError;
use crate::ct::{
    self, CtEntry, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, NLM_F_CREATE, NLM_F_EXCL, NLMSG_DONE,
    NLMSG_ERROR,
};
use crate::state::Injection;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("ctnetlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("ctnetlink: the kernel dropped events (receive buffer overrun); a resync is needed")]
    Overrun,
    #[error("ctnetlink message undecodable: {0}")]
    Decode(#[from] DecodeError),
    #[error("ctnetlink request refused: errno {0}")]
    Kernel(i32),
}

/// What an event says about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    New,
    Update,
    Destroy,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub entry: CtEntry,
}

pub struct CtSocket {
    sock: Arc<Socket>,
    seq: u32,
    buf: Vec<u8>,
    /// Event sockets: `EVENT_BATCH` datagram slots for recvmmsg(2), and their lengths.
    slots: Vec<u8>,
    lens: Vec<usize>,
}

impl std::fmt::Debug for CtSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtSocket").field("seq", &self.seq).finish()
    }
}

const RECV_BUF: usize = 1 << 20;
/// Event datagrams taken per recvmmsg(2): the kernel sends each event in a datagram of its
/// own, and one system call per event was the largest part of the active's cost per event.
const EVENT_BATCH: usize = 64;
/// Room for one event datagram (an event message is a few hundred bytes).
const EVENT_SLOT: usize = 8192;

impl CtSocket {
    /// A socket for requests (dump, commit).
    pub fn open() -> Result<Self, NlError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        // Acks without a copy of the request keep a large batch's answers small.
        sock.set_cap_ack(true)?;
        sock.set_ext_ack(false)?;
        Ok(CtSocket {
            sock: Arc::new(sock),
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
            slots: Vec::new(),
            lens: Vec::new(),
        })
    }

    /// A socket subscribed to NEW, UPDATE and DESTROY events with a receive buffer of
    /// `rcvbuf` bytes (forced past `rmem_max`: a burst of events must not overrun it).
    pub fn events(rcvbuf: usize) -> Result<Self, NlError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        let groups = (1 << (ct::NFNLGRP_CONNTRACK_NEW - 1))
            | (1 << (ct::NFNLGRP_CONNTRACK_UPDATE - 1))
            | (1 << (ct::NFNLGRP_CONNTRACK_DESTROY - 1));
        sock.bind(&SocketAddr::new(0, groups))?;
        force_rcvbuf(&sock, rcvbuf)?;
        Ok(CtSocket {
            sock: Arc::new(sock),
            seq: 1,
            buf: Vec::new(),
            slots: vec![0; EVENT_BATCH * EVENT_SLOT],
            lens: Vec::with_capacity(EVENT_BATCH),
        })
    }

    /// The event groups of this socket, to leave and join again from another thread.
    pub fn groups(&self) -> EventGroups {
        EventGroups(self.sock.clone())
    }

    fn recv(&mut self) -> Result<(), NlError> {
        self.buf.clear();
        match self.sock.recv(&mut self.buf, 0) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Err(NlError::Overrun),
            Err(e) => Err(e.into()),
        }
    }

    /// Dumps the whole table (both families) and returns the raw messages.
    pub fn dump_raw(&mut self) -> Result<Vec<Vec<u8>>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.sock
            .send(&ct::dump_request(seq, libc::AF_UNSPEC as u8), 0)?;
        let mut out = Vec::new();
        loop {
            self.recv()?;
            for (h, body) in ct::split_messages(&self.buf)? {
                match h.kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = ct::error_code(body)?;
                        if code != 0 {
                            return Err(NlError::Kernel(-code));
                        }
                    }
                    _ => {
                        let mut m = Vec::with_capacity(16 + body.len());
                        m.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
                        m.extend_from_slice(&h.kind.to_ne_bytes());
                        m.extend_from_slice(&h.flags.to_ne_bytes());
                        m.extend_from_slice(&h.seq.to_ne_bytes());
                        m.extend_from_slice(&h.pid.to_ne_bytes());
                        m.extend_from_slice(body);
                        out.push(m);
                    }
                }
            }
        }
    }

    /// Dumps the whole table as entries.
    pub fn dump(&mut self) -> Result<Vec<CtEntry>, NlError> {
        let mut out = Vec::new();
        self.dump_each(|e| out.push(e))?;
        Ok(out)
    }

    /// Dumps the whole table, handing each entry to `f` as its datagram is read: the
    /// resync streams the dump into frames instead of holding the table first.
    pub fn dump_each(&mut self, mut f: impl FnMut(CtEntry)) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.sock
            .send(&ct::dump_request(seq, libc::AF_UNSPEC as u8), 0)?;
        loop {
            self.recv()?;
            for (h, body) in ct::split_messages(&self.buf)? {
                match h.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = ct::error_code(body)?;
                        if code != 0 {
                            return Err(NlError::Kernel(-code));
                        }
                    }
                    _ => {
                        if let Some(e) = CtEntry::decode(nfgen_attrs(body)?)? {
                            f(e);
                        }
                    }
                }
            }
        }
    }

    /// Waits for the next datagram of events, takes the ones queued behind it (up to
    /// `EVENT_BATCH` in all, one system call) and appends their events to `out`.
    pub fn recv_events(&mut self, out: &mut Vec<Event>) -> Result<(), NlError> {
        self.recv_many(libc::MSG_WAITFORONE)?;
        self.parse_slots(out)
    }

    /// Appends the events of the datagrams already queued (up to `EVENT_BATCH`);
    /// `Ok(false)` if none is. Lets the reader drain a burst before handing it on, so a
    /// burst of events becomes a few full frames instead of one small frame per event.
    pub fn try_recv_events(&mut self, out: &mut Vec<Event>) -> Result<bool, NlError> {
        if self.recv_many(libc::MSG_DONTWAIT)? == 0 {
            return Ok(false);
        }
        self.parse_slots(out)?;
        Ok(true)
    }

    fn parse_slots(&mut self, out: &mut Vec<Event>) -> Result<(), NlError> {
        // Every datagram is parsed even if one fails: the error is reported after.
        let mut failed = Ok(());
        for (i, &len) in self.lens.iter().enumerate() {
            let at = i * EVENT_SLOT;
            if let Err(e) = parse_events(&self.slots[at..at + len], out) {
                failed = Err(e);
            }
        }
        failed
    }

    /// recvmmsg(2) into the slots; the number of datagrams (0: none queued, with
    /// MSG_DONTWAIT). A truncated datagram lost events: reported as an overrun, so that the
    /// sender resyncs.
    #[expect(
        unsafe_code,
        reason = "recvmmsg(2) has no safe wrapper in netlink-sys, socket2 or libc"
    )]
    fn recv_many(&mut self, flags: libc::c_int) -> Result<usize, NlError> {
        use std::os::fd::AsRawFd;
        self.lens.clear();
        if self.slots.len() < EVENT_BATCH * EVENT_SLOT {
            self.slots.resize(EVENT_BATCH * EVENT_SLOT, 0);
        }
        let base = self.slots.as_mut_ptr();
        // SAFETY: all-zero iovec/mmsghdr are valid values (null pointers, zero lengths).
        let mut iov: [libc::iovec; EVENT_BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; EVENT_BATCH] = unsafe { std::mem::zeroed() };
        for (i, (v, h)) in iov.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            // SAFETY: slot i lies inside `slots` (EVENT_BATCH * EVENT_SLOT bytes).
            v.iov_base = unsafe { base.add(i * EVENT_SLOT) }.cast();
            v.iov_len = EVENT_SLOT;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the fd is the live socket owned by `self.sock`; each header points at
        // one iovec of this frame, each iovec at its own EVENT_SLOT bytes of `slots`, all
        // alive and not otherwise borrowed until the call returns.
        let n = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                EVENT_BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(0),
                Some(libc::ENOBUFS) => Err(NlError::Overrun),
                _ => Err(e.into()),
            };
        }
        let n = n as usize;
        for h in &hdrs[..n] {
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.lens.clear();
                return Err(NlError::Overrun);
            }
            self.lens.push((h.msg_len as usize).min(EVENT_SLOT));
        }
        Ok(n)
    }
}

/// Appends the conntrack events of one datagram to `out`.
fn parse_events(buf: &[u8], out: &mut Vec<Event>) -> Result<(), NlError> {
    for (h, body) in ct::split_messages(buf)? {
        if h.kind >> 8 != ct::NFNL_SUBSYS_CTNETLINK {
            continue;
        }
        let kind = match (h.kind & 0xff) as u8 {
            IPCTNL_MSG_CT_NEW if h.flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 => EventKind::New,
            IPCTNL_MSG_CT_NEW => EventKind::Update,
            IPCTNL_MSG_CT_DELETE => EventKind::Destroy,
            _ => continue,
        };
        if let Some(entry) = CtEntry::decode(nfgen_attrs(body)?)? {
            out.push(Event { kind, entry });
        }
    }
    Ok(())
}

impl CtSocket {
    /// Sends a datagram of `n` acked requests; returns (seq, errno) of each answer.
    fn exchange(&mut self, out: &[u8], n: usize) -> Result<Vec<(u32, i32)>, NlError> {
        self.sock.send(out, 0)?;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            self.recv()?;
            for (h, body) in ct::split_messages(&self.buf)? {
                if h.kind == NLMSG_ERROR {
                    got.push((h.seq, -ct::error_code(body)?));
                }
            }
        }
        Ok(got)
    }

    /// Direct inject: writes each item into the kernel, `batch` requests per datagram. A
    /// write creates the entry with its NAT binding; when the kernel has it already
    /// (EEXIST, or EOPNOTSUPP: NAT cannot change on an existing entry) it is sent again
    /// as an update of its state. Returns the per-item outcome (0 or errno), in order; a
    /// deletion of an entry the kernel does not hold (ENOENT) counts as done.
    pub fn inject(&mut self, items: &[Injection], batch: usize) -> Result<Vec<i32>, NlError> {
        let batch = batch.max(1);
        let mut result = vec![0i32; items.len()];
        for (chunk_no, chunk) in items.chunks(batch).enumerate() {
            let base = chunk_no * batch;
            let mut out = Vec::with_capacity(chunk.len() * 256);
            let mut index = std::collections::HashMap::with_capacity(chunk.len());
            for (i, it) in chunk.iter().enumerate() {
                self.seq = self.seq.wrapping_add(1);
                index.insert(self.seq, base + i);
                match it {
                    Injection::Write { entry, timeout, .. } => {
                        ct::create_request(entry, self.seq, *timeout, &mut out)
                    }
                    Injection::Remove(entry) => ct::delete_request(entry, self.seq, &mut out),
                }
            }
            let mut again = Vec::new();
            let mut index2 = std::collections::HashMap::new();
            for (seq, errno) in self.exchange(&out, chunk.len())? {
                let Some(&i) = index.get(&seq) else { continue };
                match (&items[i], errno) {
                    (Injection::Write { entry, timeout, .. }, libc::EEXIST | libc::EOPNOTSUPP) => {
                        self.seq = self.seq.wrapping_add(1);
                        index2.insert(self.seq, i);
                        ct::update_request(entry, self.seq, *timeout, &mut again);
                    }
                    (Injection::Remove(_), libc::ENOENT) => result[i] = 0,
                    (_, e) => result[i] = e,
                }
            }
            if !index2.is_empty() {
                for (seq, errno) in self.exchange(&again, index2.len())? {
                    if let Some(&i) = index2.get(&seq) {
                        result[i] = errno;
                    }
                }
            }
        }
        Ok(result)
    }
}

/// The attributes of a ctnetlink message body, after its `struct nfgenmsg`.
fn nfgen_attrs(body: &[u8]) -> Result<&[u8], DecodeError> {
    body.get(4..).ok_or(DecodeError::Truncated("nfgenmsg"))
}

/// errno -> count of the refused items of an [`CtSocket::inject`] outcome.
pub fn errno_counts(results: &[i32]) -> std::collections::BTreeMap<i32, u64> {
    let mut m = std::collections::BTreeMap::new();
    for &r in results.iter().filter(|&&r| r != 0) {
        *m.entry(r).or_default() += 1;
    }
    m
}

/// Membership of an event socket in the NEW/UPDATE/DESTROY groups. A standby has no use for
/// its own table's events (the active resyncs a peer at every session start), and with
/// no member in a group the kernel does not even build the event messages: direct inject
/// then costs the standby its CT_NEW writes only, not one event per write as well.
#[derive(Clone)]
pub struct EventGroups(Arc<Socket>);

impl EventGroups {
    pub fn set(&self, on: bool) -> io::Result<()> {
        for g in [
            ct::NFNLGRP_CONNTRACK_NEW,
            ct::NFNLGRP_CONNTRACK_UPDATE,
            ct::NFNLGRP_CONNTRACK_DESTROY,
        ] {
            if on {
                self.0.add_membership(g)?;
            } else {
                self.0.drop_membership(g)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for EventGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventGroups")
    }
}

/// `SO_RCVBUFFORCE` (needs CAP_NET_ADMIN), falling back to `SO_RCVBUF` (capped by
/// `net.core.rmem_max`) when not permitted.
#[expect(
    unsafe_code,
    reason = "setsockopt(SO_RCVBUFFORCE) has no safe wrapper in netlink-sys or socket2"
)]
fn force_rcvbuf(sock: &Socket, size: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = size.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: the fd is a live socket owned by `sock`; the option value is a c_int whose
    // address and size are passed together.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    sock.set_rx_buf_sz(v)
}
