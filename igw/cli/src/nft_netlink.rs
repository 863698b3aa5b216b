//! The nf_tables netlink socket `igw ruleset apply` uses for element updates and for the
//! ruleset generation id. Message encoding lives in `igw_ruleset::nft::batch` (pure); this
//! is the I/O: send, collect every acknowledgement, report the kernel's refusals.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use igw_ruleset::nft::batch::{self, Batch, Reply};
use netlink_sys::{Socket, SocketAddr};

pub struct NfSock {
    sock: Socket,
    seq: u32,
}

/// The network namespace this process runs in, as `dev:inode` of its nsfs file.
pub fn netns_id() -> Result<String> {
    let m = std::fs::metadata("/proc/self/ns/net").context("stat /proc/self/ns/net")?;
    Ok(format!("{}:{}", m.dev(), m.ino()))
}

impl NfSock {
    pub fn open() -> Result<Self> {
        let mut sock =
            Socket::new(batch::NETLINK_NETFILTER).context("opening a netfilter netlink socket")?;
        sock.bind_auto().context("binding the netlink socket")?;
        // Acks without a copy of the request.
        sock.set_cap_ack(true)?;
        sock.set_non_blocking(false)?;
        set_rcv_timeout(&sock, Duration::from_secs(10))?;
        // Start from a per-process value so stale answers of another run cannot match.
        let seq = std::process::id().wrapping_mul(65_536);
        Ok(NfSock { sock, seq })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv(&mut self) -> Result<Vec<Reply>> {
        let mut buf = Vec::with_capacity(1 << 16);
        self.sock
            .recv(&mut buf, 0)
            .context("reading the kernel's netlink answer")?;
        batch::parse_replies(&buf).map_err(|e| anyhow!("{e}"))
    }

    /// The nf_tables ruleset generation: bumped by every committed transaction.
    pub fn genid(&mut self) -> Result<u32> {
        let seq = self.next_seq();
        self.sock
            .send_to(&batch::getgen_request(seq), &SocketAddr::new(0, 0), 0)
            .context("asking the kernel for the nf_tables generation")?;
        loop {
            for r in self.recv()? {
                match r {
                    Reply::Gen { seq: s, id } if s == seq => return Ok(id),
                    Reply::Error { seq: s, errno } if s == seq => {
                        bail!(
                            "the kernel refused the generation request: {}",
                            std::io::Error::from_raw_os_error(errno)
                        )
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends one batch and waits for the answer to every message in it. The kernel commits
    /// the batch whole or aborts it whole; on abort the errors are returned, one line per
    /// refused message, and nothing changed.
    pub fn commit(&mut self, build: impl FnOnce(u32) -> Batch) -> Result<()> {
        let b = build(self.seq.wrapping_add(1));
        self.seq = self.seq.wrapping_add(b.acked.len() as u32 + 2);
        set_snd_buf(&self.sock, b.bytes.len() + 4096)?;
        self.sock
            .send_to(&b.bytes, &SocketAddr::new(0, 0), 0)
            .context("sending the nf_tables batch")?;
        let mut pending: std::collections::BTreeSet<u32> = b.acked.iter().copied().collect();
        let mut errors = Vec::new();
        while !pending.is_empty() {
            for r in self.recv()? {
                match r {
                    Reply::Ack { seq } => {
                        pending.remove(&seq);
                    }
                    Reply::Error { seq, errno } => {
                        if pending.remove(&seq) {
                            errors.push(format!(
                                "message {}: {}",
                                b.acked.iter().position(|s| *s == seq).unwrap_or(0) + 1,
                                std::io::Error::from_raw_os_error(errno)
                            ));
                        } else if b.acked.is_empty() || !b.acked.contains(&seq) {
                            // An error on batch begin/end: nothing else will answer.
                            bail!(
                                "the kernel refused the batch: {}",
                                std::io::Error::from_raw_os_error(errno)
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("{}", errors.join("; "))
        }
    }
}

fn set_rcv_timeout(sock: &Socket, d: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    setsockopt(sock, libc::SO_RCVTIMEO, &tv)
}

/// A batch is one datagram: the send buffer must hold it (SO_SNDBUFFORCE, as root).
fn set_snd_buf(sock: &Socket, n: usize) -> Result<()> {
    let v: libc::c_int = n.min(i32::MAX as usize) as libc::c_int;
    if n <= 200_000 {
        return Ok(());
    }
    setsockopt(sock, libc::SO_SNDBUFFORCE, &v)
}

#[expect(
    unsafe_code,
    reason = "SO_RCVTIMEO and SO_SNDBUFFORCE have no safe wrapper in netlink-sys"
)]
fn setsockopt<T>(sock: &Socket, opt: libc::c_int, v: &T) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is a live socket owned by `sock`; `v` points to a value of the size
    // passed with it, of the type the option expects (callers pass timeval / c_int).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()).context("setsockopt on the netlink socket")
    }
}
