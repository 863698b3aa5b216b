//! ctnetlink I/O on `netlink-sys`: dump the table, receive events, commit entries with
//! batched CT_NEW. Blocking calls: the daemon runs them on their own threads.

use std::io;
use std::sync::Arc;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::DecodeError;
use crate::ct::{
    self, CtEntry, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, NLM_F_CREATE, NLM_F_EXCL, NLMSG_DONE,
    NLMSG_ERROR, PlainEntry,
};
use crate::proto::Item;
use crate::state::{Filter, Injection};

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

/// One event's entry: a plain one (nearly all) in fixed fields, decoded without a
/// [`CtEntry`] on the way; any other as the full entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventEntry {
    Plain(PlainEntry),
    /// Boxed: a rare event must not make every event the size of a [`CtEntry`].
    Other(Box<CtEntry>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub entry: EventEntry,
}

impl Event {
    /// What the active queues for the peer: `None` when the filter refuses the entry, else
    /// its upsert (NEW, UPDATE) or the deletion of its key (DESTROY). The same item and
    /// decision as [`Filter::accepts`] and [`Item::upsert`]/[`Item::delete`] on the
    /// full entry.
    pub fn item(&self, filter: &Filter) -> Option<Item> {
        match &self.entry {
            EventEntry::Plain(p) => filter.accepts_plain(p).then(|| match self.kind {
                EventKind::Destroy => Item::Delete(p.key()),
                EventKind::New | EventKind::Update => Item::Upsert(*p),
            }),
            EventEntry::Other(e) => filter.accepts(e).then(|| match self.kind {
                EventKind::Destroy => Item::delete(e),
                EventKind::New | EventKind::Update => Item::upsert(e),
            }),
        }
    }
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

/// The kind of conntrack event a message of the event groups is, if it is one: NEW with
/// `NLM_F_CREATE` or `NLM_F_EXCL` is a new entry, NEW without them an update.
pub fn event_kind(h: &ct::NlHeader) -> Option<EventKind> {
    if h.kind >> 8 != ct::NFNL_SUBSYS_CTNETLINK {
        return None;
    }
    match (h.kind & 0xff) as u8 {
        IPCTNL_MSG_CT_NEW if h.flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 => Some(EventKind::New),
        IPCTNL_MSG_CT_NEW => Some(EventKind::Update),
        IPCTNL_MSG_CT_DELETE => Some(EventKind::Destroy),
        _ => None,
    }
}

/// Appends the conntrack events of one datagram to `out`. Pure (the socket's reader calls
/// it on each datagram received): a plain entry is decoded by [`PlainEntry::decode`] in
/// one pass, any other (or a malformed one, for its error) by [`CtEntry::decode`].
pub fn parse_events(buf: &[u8], out: &mut Vec<Event>) -> Result<(), NlError> {
    // A datagram whose framing is broken anywhere gives no event at all (checked first,
    // without collecting the messages: one allocation per event saved).
    for m in ct::messages(buf) {
        m?;
    }
    for m in ct::messages(buf) {
        let (h, body) = m?;
        let Some(kind) = event_kind(&h) else {
            continue;
        };
        let attrs = nfgen_attrs(body)?;
        let entry = match PlainEntry::decode(attrs) {
            Some(p) => EventEntry::Plain(p),
            None => match CtEntry::decode(attrs)? {
                Some(e) => EventEntry::Other(Box::new(e)),
                None => continue,
            },
        };
        out.push(Event { kind, entry });
    }
    Ok(())
}

impl CtSocket {
    /// Sends a datagram of requests of which only the last (sequence number `last`) asks
    /// for an ack (see [`ct::clear_ack`]); returns (seq, errno) of each failed request and
    /// the last one's outcome. The kernel answers the requests of a datagram in order, so
    /// once the last one's answer is in, every failure before it has been read.
    fn exchange(&mut self, out: &[u8], last: u32) -> Result<Vec<(u32, i32)>, NlError> {
        self.sock.send(out, 0)?;
        let mut got = Vec::new();
        loop {
            self.recv()?;
            let mut done = false;
            for (h, body) in ct::split_messages(&self.buf)? {
                if h.kind == NLMSG_ERROR {
                    got.push((h.seq, -ct::error_code(body)?));
                    done |= h.seq == last;
                }
            }
            if done {
                return Ok(got);
            }
        }
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
            let mut last = 0;
            for (i, it) in chunk.iter().enumerate() {
                if i > 0 {
                    ct::clear_ack(&mut out, last);
                }
                last = out.len();
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
            let mut again_last = 0;
            for (seq, errno) in self.exchange(&out, self.seq)? {
                let Some(&i) = index.get(&seq) else { continue };
                match (&items[i], errno) {
                    (Injection::Write { entry, timeout, .. }, libc::EEXIST | libc::EOPNOTSUPP) => {
                        if !again.is_empty() {
                            ct::clear_ack(&mut again, again_last);
                        }
                        again_last = again.len();
                        self.seq = self.seq.wrapping_add(1);
                        index2.insert(self.seq, i);
                        ct::update_request(entry, self.seq, *timeout, &mut again);
                    }
                    (Injection::Remove(_), libc::ENOENT) => result[i] = 0,
                    (_, e) => result[i] = e,
                }
            }
            if !index2.is_empty() {
                for (seq, errno) in self.exchange(&again, self.seq)? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ct::tests::{Rng, TCP_SNAT, UDP_SNAT, encodings, hex, sample_entries};
    use crate::ct::{IPCTNL_MSG_CT_GET, NFNL_SUBSYS_CTNETLINK, split_messages};
    use crate::state::Filter;

    /// Each event's kind and item (`None`: refused), and the datagram's error text.
    type Outcome = (Vec<(EventKind, Option<Item>)>, Result<(), String>);

    /// The event path before the one-pass decoder: every event decoded into a
    /// [`CtEntry`], filtered, then converted. What was pushed before an error, and the
    /// error's text.
    fn todays(buf: &[u8], f: &Filter) -> Outcome {
        let mut out = Vec::new();
        let mut each = || -> Result<(), NlError> {
            for (h, body) in split_messages(buf)? {
                if h.kind >> 8 != NFNL_SUBSYS_CTNETLINK {
                    continue;
                }
                let kind = match (h.kind & 0xff) as u8 {
                    IPCTNL_MSG_CT_NEW if h.flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 => {
                        EventKind::New
                    }
                    IPCTNL_MSG_CT_NEW => EventKind::Update,
                    IPCTNL_MSG_CT_DELETE => EventKind::Destroy,
                    _ => continue,
                };
                if let Some(e) = CtEntry::decode(nfgen_attrs(body)?)? {
                    let item = f.accepts(&e).then(|| match kind {
                        EventKind::Destroy => Item::delete(&e),
                        EventKind::New | EventKind::Update => Item::upsert(&e),
                    });
                    out.push((kind, item));
                }
            }
            Ok(())
        };
        let r = each().map_err(|e| e.to_string());
        (out, r)
    }

    fn now(buf: &[u8], f: &Filter) -> Outcome {
        let mut evs = Vec::new();
        let r = parse_events(buf, &mut evs).map_err(|e| e.to_string());
        (evs.iter().map(|ev| (ev.kind, ev.item(f))).collect(), r)
    }

    /// The filters of the state tests: tenant sources with SNAT, without SNAT, others
    /// that exclude the NAT pool address, a tenant host, a server; none.
    fn filters() -> Vec<Filter> {
        let f = crate::state::tests::tenant_filter();
        vec![
            f.clone(),
            Filter {
                snat: false,
                ..f.clone()
            },
            Filter {
                sources: vec!["fd00::/8".parse().unwrap()],
                snat: false,
                exclude: vec![
                    "198.51.100.10".parse().unwrap(),
                    "198.18.1.10".parse().unwrap(),
                ],
            },
            // The NAT pool is this node's: replies to it pass only as a NAT binding.
            Filter {
                snat: false,
                exclude: vec![
                    "198.51.100.10".parse().unwrap(),
                    "203.0.113.53".parse().unwrap(),
                ],
                ..f.clone()
            },
            Filter::default(),
        ]
    }

    /// One event message: CT_NEW with CREATE|EXCL (NEW), CT_NEW (UPDATE), CT_DELETE
    /// (DESTROY), or a message the reader skips (CT_GET, another subsystem).
    fn message(which: usize, attrs: &[u8], out: &mut Vec<u8>) {
        let (kind, flags) = match which % 5 {
            0 => (IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL),
            1 => (IPCTNL_MSG_CT_NEW, 0),
            2 => (IPCTNL_MSG_CT_DELETE, 0),
            3 => (IPCTNL_MSG_CT_NEW, NLM_F_CREATE),
            _ => (IPCTNL_MSG_CT_GET, 0),
        };
        let start = out.len();
        out.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | u16::from(kind)).to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
        out.extend_from_slice(attrs);
        debug_assert_eq!(out.len() - start, 20 + attrs.len());
    }

    /// Every event body this test knows: the kernel captures and the sample entries in
    /// each of their encodings.
    fn bodies() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = [TCP_SNAT, UDP_SNAT]
            .iter()
            .map(|c| split_messages(&hex(c)).unwrap()[0].1[4..].to_vec())
            .collect();
        for e in sample_entries() {
            v.extend(encodings(&e));
        }
        v
    }

    /// For every event (each kind, each filter): the same events, decisions and items as
    /// today's path, also for every truncation of the datagram and for mutated ones,
    /// errors included.
    #[test]
    fn events_give_todays_items() {
        let (filters, bodies) = (filters(), bodies());
        let (mut accepted, mut refused, mut fixed) = (0, 0, 0);
        for f in &filters {
            for (i, body) in bodies.iter().enumerate() {
                for which in 0..5 {
                    let mut d = Vec::new();
                    message(which, body, &mut d);
                    let (want, r) = todays(&d, f);
                    assert_eq!(now(&d, f), (want.clone(), r), "{d:02x?}");
                    for (_, it) in &want {
                        match it {
                            Some(Item::Other(_)) => accepted += 1,
                            Some(_) => (accepted, fixed) = (accepted + 1, fixed + 1),
                            None => refused += 1,
                        }
                    }
                    if i % 7 == 0 {
                        for cut in 0..d.len() {
                            assert_eq!(now(&d[..cut], f), todays(&d[..cut], f), "cut {cut}");
                        }
                    }
                }
            }
        }
        assert!(accepted > 100 && refused > 100 && fixed > 100);
        // Several messages in one datagram, one of them malformed: what came before the
        // bad one is kept and its error reported, as today.
        let mut rng = Rng(0x00e7_e475_0000_0001);
        for _ in 0..20_000 {
            let mut d = Vec::new();
            for _ in 0..1 + rng.next() % 3 {
                let body = &bodies[rng.next() as usize % bodies.len()];
                let body = if rng.next().is_multiple_of(2) {
                    rng.mutate(body)
                } else {
                    body.clone()
                };
                message(rng.next() as usize, &body, &mut d);
            }
            let f = &filters[rng.next() as usize % filters.len()];
            assert_eq!(now(&d, f), todays(&d, f), "{d:02x?}");
            let m = rng.mutate(&d);
            assert_eq!(now(&m, f), todays(&m, f), "{m:02x?}");
        }
    }
}
