//! Heartbeat wire format: authenticated with HMAC-SHA256 over the pre-shared key, with a
//! per-boot epoch and a sequence number checked against a replay window.
//!
//! Layout (big-endian), 60 bytes:
//! `"IGWH" | version 1 | id | priority | role | health bits | flags | prepend | 0 |
//!  epoch u64 | seq u64 | HMAC-SHA256 tag (32 bytes)`.
//! Flags: bit 0 eligible, bit 1 yielding. The epoch is the sender's start time in
//! nanoseconds since the Unix epoch, so a restarted sender (new epoch) resets the window,
//! and messages of an older epoch are replays.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::machine::{Health, PeerStatus, Role};

const MAGIC: &[u8; 4] = b"IGWH";
const VERSION: u8 = 1;
const BODY: usize = 4 + 8 + 8 + 8;
/// Encoded length: body, then the 32-byte HMAC-SHA256 tag.
pub const LEN: usize = BODY + 32;
/// How many sequence numbers behind the highest one are still accepted (reordering
/// between the two paths), each at most once.
pub const WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub epoch: u64,
    pub seq: u64,
    pub status: PeerStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HbError {
    #[error("heartbeat of {0} bytes, expected {LEN}")]
    Length(usize),
    #[error("not an igw heartbeat (bad magic or version)")]
    Magic,
    #[error("heartbeat authentication failed (wrong key or forged)")]
    Auth,
    #[error("malformed heartbeat field: {0}")]
    Field(&'static str),
    #[error("replayed or stale heartbeat (epoch {epoch}, seq {seq})")]
    Replay { epoch: u64, seq: u64 },
    #[error("heartbeat from our own node id {0} (looped back or misconfigured peer)")]
    Own(u8),
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

pub fn encode(key: &[u8], hb: &Heartbeat) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    let s = &hb.status;
    b[..4].copy_from_slice(MAGIC);
    b[4] = VERSION;
    b[5] = s.id;
    b[6] = s.priority;
    b[7] = s.role.code();
    b[8] = s.health.bits();
    b[9] = u8::from(s.eligible) | u8::from(s.yielding) << 1;
    b[10] = s.prepend;
    b[11] = 0;
    b[12..20].copy_from_slice(&hb.epoch.to_be_bytes());
    b[20..28].copy_from_slice(&hb.seq.to_be_bytes());
    let mut m = mac(key);
    m.update(&b[..BODY]);
    b[BODY..].copy_from_slice(&m.finalize().into_bytes());
    b
}

/// Checks length, magic and tag (constant time), then decodes. No replay check: see
/// [`ReplayWindow`].
pub fn decode(key: &[u8], b: &[u8]) -> Result<Heartbeat, HbError> {
    if b.len() != LEN {
        return Err(HbError::Length(b.len()));
    }
    if &b[..4] != MAGIC || b[4] != VERSION {
        return Err(HbError::Magic);
    }
    let mut m = mac(key);
    m.update(&b[..BODY]);
    m.verify_slice(&b[BODY..]).map_err(|_| HbError::Auth)?;
    let role = Role::from_code(b[7]).ok_or(HbError::Field("role"))?;
    if b[8] > 0x0f || b[9] > 0x03 || b[11] != 0 {
        return Err(HbError::Field("flags"));
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(a)
    };
    Ok(Heartbeat {
        epoch: u64_at(12),
        seq: u64_at(20),
        status: PeerStatus {
            id: b[5],
            priority: b[6],
            role,
            health: Health::from_bits(b[8]),
            eligible: b[9] & 1 != 0,
            yielding: b[9] & 2 != 0,
            prepend: b[10],
        },
    })
}

/// Replay protection for one sender: the highest (epoch, seq) seen and a bitmap of the
/// `WINDOW` sequence numbers below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    epoch: u64,
    top: u64,
    seen: u64,
    any: bool,
}

impl ReplayWindow {
    /// Accepts (and records) `(epoch, seq)` once; refuses repeats, older epochs and
    /// sequence numbers that fell out of the window.
    pub fn accept(&mut self, epoch: u64, seq: u64) -> Result<(), HbError> {
        let replay = Err(HbError::Replay { epoch, seq });
        if !self.any || epoch > self.epoch {
            *self = Self {
                epoch,
                top: seq,
                seen: 1,
                any: true,
            };
            return Ok(());
        }
        if epoch < self.epoch {
            return replay;
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = seq;
            return Ok(());
        }
        let back = self.top - seq;
        if back >= WINDOW {
            return replay;
        }
        let bit = 1u64 << back;
        if self.seen & bit != 0 {
            return replay;
        }
        self.seen |= bit;
        Ok(())
    }
}

/// Decodes and authenticates a datagram from the peer and checks it against the window.
pub fn receive(
    key: &[u8],
    own_id: u8,
    win: &mut ReplayWindow,
    b: &[u8],
) -> Result<Heartbeat, HbError> {
    let hb = decode(key, b)?;
    if hb.status.id == own_id {
        return Err(HbError::Own(own_id));
    }
    win.accept(hb.epoch, hb.seq)?;
    Ok(hb)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hb(seq: u64) -> Heartbeat {
        Heartbeat {
            epoch: 7,
            seq,
            status: PeerStatus {
                id: 2,
                priority: 100,
                role: Role::Standby,
                health: Health::OK,
                eligible: true,
                yielding: false,
                prepend: 3,
            },
        }
    }

    #[test]
    fn round_trip_every_role_and_flag() {
        for role in [
            Role::Init,
            Role::Active,
            Role::Standby,
            Role::Maintenance,
            Role::Fault,
        ] {
            for bits in 0..16u8 {
                for (eligible, yielding) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    let mut h = hb(u64::MAX - 1);
                    h.status.role = role;
                    h.status.health = Health::from_bits(bits);
                    h.status.eligible = eligible;
                    h.status.yielding = yielding;
                    let b = encode(KEY, &h);
                    assert_eq!(decode(KEY, &b), Ok(h));
                }
            }
        }
    }

    #[test]
    fn forged_and_malformed_are_refused() {
        let b = encode(KEY, &hb(1));
        assert_eq!(decode(b"another key", &b), Err(HbError::Auth));
        for i in 5..LEN {
            let mut x = b;
            x[i] ^= 0x01;
            assert_eq!(decode(KEY, &x), Err(HbError::Auth), "flipped byte {i}");
        }
        let mut x = b;
        x[0] = b'X';
        assert_eq!(decode(KEY, &x), Err(HbError::Magic));
        assert_eq!(decode(KEY, &b[..LEN - 1]), Err(HbError::Length(LEN - 1)));
        assert_eq!(decode(KEY, &[]), Err(HbError::Length(0)));
        // A correctly signed message with an unknown role is still refused.
        let mut x = b;
        x[7] = 9;
        let mut m = mac(KEY);
        m.update(&x[..BODY]);
        x[BODY..].copy_from_slice(&m.finalize().into_bytes());
        assert_eq!(decode(KEY, &x), Err(HbError::Field("role")));
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        // (epoch, seq, accepted)
        let cases: &[(u64, u64, bool)] = &[
            (7, 10, true),
            (7, 10, false), // repeat
            (7, 11, true),
            (7, 9, true), // reordered within the window
            (7, 9, false),
            (7, 200, true),
            (7, 136, false), // 64 behind: out of the window
            (7, 137, true),
            (6, 500, false), // older epoch
            (8, 1, true),    // sender restarted
            (8, 1, false),
            (7, 201, false), // the old epoch is gone for good
        ];
        for &(e, s, ok) in cases {
            assert_eq!(w.accept(e, s).is_ok(), ok, "epoch {e} seq {s}");
        }
    }

    #[test]
    fn own_id_is_refused() {
        let mut w = ReplayWindow::default();
        let b = encode(KEY, &hb(1));
        assert_eq!(receive(KEY, 2, &mut w, &b), Err(HbError::Own(2)));
        assert!(receive(KEY, 1, &mut w, &b).is_ok());
        assert!(matches!(
            receive(KEY, 1, &mut w, &b),
            Err(HbError::Replay { .. })
        ));
    }
}
