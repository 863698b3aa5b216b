//! The sync protocol between the two nodes: versioned, batched frames authenticated with
//! HMAC-SHA256 under the pre-shared key, over one TCP stream per direction of replication.
//!
//! Why TCP: the sync link is a dedicated point-to-point link; TCP gives ordering and
//! retransmission without a second implementation of them, and a broken stream is the
//! signal for a full resync on reconnect. Sequence numbers stay in the frame so a frame
//! replayed or re-ordered into the stream by anyone on the link is detected and dropped.
//!
//! Frame (big endian): `"IGWS" | version u8 | kind u8 | 0u16 | session u64 | seq u64 |
//! len u32 | body | mac[32]`, mac = HMAC-SHA256(key, receiver_nonce[16] | frame-before-mac).
//! Each side opens with a Hello carrying a fresh random nonce; every later frame is bound to
//! the receiver's nonce, so frames recorded from an earlier session never verify again,
//! and within a session `seq` must grow by exactly one.
//!
//! Version 2 (this one): `ResyncBegin` carries the number of entries the sender expects to
//! send (a sizing hint: the standby sizes its cache once instead of growing it by
//! doubling), and a deletion carries the entry's key (original tuple and zone) instead of
//! the whole entry. A frame of another version is refused with its own error and counter
//! (`dropped.version`): both nodes must run the same protocol version.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::DecodeError;
use crate::ct::{CtEntry, CtKey, PlainEntry, PlainKey};

pub const MAGIC: &[u8; 4] = b"IGWS";
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 8 + 8 + 4;
pub const MAC_LEN: usize = 32;
/// A frame body larger than this is malformed (a batch is flushed well before).
pub const MAX_BODY: usize = 8 << 20;
pub const NONCE_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Active,
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Role::Active),
            "standby" => Ok(Role::Standby),
            _ => Err(format!("role must be active or standby, not {s:?}")),
        }
    }
}

/// One change of one entry. A deletion carries the entry's key only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Upsert(CtEntry),
    Delete(CtKey),
}

impl Update {
    pub fn key(&self) -> CtKey {
        match self {
            Update::Upsert(e) => e.key(),
            Update::Delete(k) => k.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// First frame of each side: who it is, its role, the nonce the peer must MAC with.
    Hello {
        node: String,
        role: Role,
        nonce: [u8; NONCE_LEN],
    },
    Batch(Vec<Update>),
    /// A full resync follows: entries not sent again before `ResyncEnd` are gone.
    /// `entries`: how many the sender expects to send (an upper bound read before its
    /// dump; a hint for sizing, never trusted beyond the cache's own bound).
    ResyncBegin {
        entries: u64,
    },
    ResyncEnd,
    /// The receiver applied every frame up to `seq`.
    Ack {
        seq: u64,
    },
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Hello { .. } => 1,
            Body::Batch(_) => 2,
            Body::ResyncBegin { .. } => 3,
            Body::ResyncEnd => 4,
            Body::Ack { .. } => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub session: u64,
    pub seq: u64,
    pub body: Body,
}

/// Why a frame was refused. Each reason has its own counter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("malformed frame: {0}")]
    Malformed(#[from] DecodeError),
    #[error(
        "the peer speaks sync protocol version {got}, this node version {VERSION}: run the same igw release on both nodes"
    )]
    Version { got: u8 },
    #[error("frame authentication failed (wrong key or altered)")]
    BadMac,
    #[error("replayed or out-of-order frame: seq {seq}, expected {expected}")]
    Replayed { seq: u64, expected: u64 },
}

/// The pre-shared key, kept as HMAC state already keyed (the inner and outer pads hashed
/// once, not once per frame).
pub struct Key(HmacSha256);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// The key file's bytes, trailing whitespace trimmed (a newline from an editor must not
    /// make the two nodes disagree).
    pub fn from_file_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        let end = b
            .iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end < 16 {
            return Err(DecodeError::Missing("a key of at least 16 bytes"));
        }
        // Any key length is valid for HMAC.
        Ok(Key(
            HmacSha256::new_from_slice(&b[..end]).unwrap_or_else(|_| unreachable!())
        ))
    }

    fn mac(&self) -> HmacSha256 {
        self.0.clone()
    }
}

/// Encodes a frame for a receiver whose Hello nonce is `peer_nonce` (zeros for a Hello).
pub fn encode(frame: &Frame, key: &Key, peer_nonce: &[u8; NONCE_LEN], out: &mut Vec<u8>) {
    let start = out.len();
    header(out, frame.body.kind(), frame.session, frame.seq);
    match &frame.body {
        Body::Hello { node, role, nonce } => {
            let n = fit_node_name(node).as_bytes();
            out.push(n.len() as u8);
            out.extend_from_slice(n);
            out.push(match role {
                Role::Active => 1,
                Role::Standby => 2,
            });
            out.extend_from_slice(nonce);
        }
        Body::Batch(items) => batch_body(items, out),
        Body::ResyncBegin { entries } => out.extend_from_slice(&entries.to_be_bytes()),
        Body::ResyncEnd => {}
        Body::Ack { seq } => out.extend_from_slice(&seq.to_be_bytes()),
    }
    seal(out, start, key, peer_nonce);
}

/// Encodes a batch frame of `items` (as `encode` of a `Body::Batch`), for a sender that
/// holds its updates in a slice of its own (the resync streams a dump this way).
pub fn encode_batch(
    session: u64,
    seq: u64,
    items: &[Update],
    key: &Key,
    peer_nonce: &[u8; NONCE_LEN],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    header(out, 2, session, seq);
    batch_body(items, out);
    seal(out, start, key, peer_nonce);
}

fn header(out: &mut Vec<u8>, kind: u8, session: u64, seq: u64) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Fills in the body length of the frame that starts at `start` and appends its MAC.
fn seal(out: &mut Vec<u8>, start: usize, key: &Key, peer_nonce: &[u8; NONCE_LEN]) {
    let body_start = start + HEADER_LEN;
    let len = (out.len() - body_start) as u32;
    out[body_start - 4..body_start].copy_from_slice(&len.to_be_bytes());
    let mut m = key.mac();
    m.update(peer_nonce);
    m.update(&out[start..]);
    out.extend_from_slice(&m.finalize().into_bytes());
}

// Batch item ops: the entry (or deleted key) as netlink attributes, or in the compact form.
const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_UPSERT_COMPACT: u8 = 3;
const OP_DELETE_COMPACT: u8 = 4;

fn batch_body(items: &[Update], out: &mut Vec<u8>) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for u in items {
        put_update(u, out);
    }
}

/// One item of a batch: the compact form when the entry (or key) is plain, else attributes.
fn put_update(u: &Update, out: &mut Vec<u8>) {
    put_item(out, |out| match u {
        Update::Upsert(e) => match PlainEntry::of(e) {
            Some(p) => {
                compact::put_plain(&p, out);
                OP_UPSERT_COMPACT
            }
            None => {
                e.emit(out);
                OP_UPSERT
            }
        },
        Update::Delete(k) => match PlainKey::of(k.zone, &k.orig) {
            Some(p) => {
                compact::put_plain_key(&p, out);
                OP_DELETE_COMPACT
            }
            None => {
                k.emit(out);
                OP_DELETE
            }
        },
    });
}

/// [`batch_body`] of items: the same bytes as of their updates.
fn batch_body_items(items: &[Item], out: &mut Vec<u8>) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for it in items {
        match it {
            Item::Upsert(p) => put_item(out, |out| {
                compact::put_plain(p, out);
                OP_UPSERT_COMPACT
            }),
            Item::Delete(k) => put_item(out, |out| {
                compact::put_plain_key(k, out);
                OP_DELETE_COMPACT
            }),
            Item::Other(u) => put_update(u, out),
        }
    }
}

/// Appends one item: its op (returned by `body`, which writes the item) and length.
fn put_item(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> u8) {
    let at = out.len();
    out.extend_from_slice(&[0; 5]);
    let op = body(out);
    let len = (out.len() - at - 5) as u32;
    out[at] = op;
    out[at + 1..at + 5].copy_from_slice(&len.to_be_bytes());
}

/// [`encode_batch`] of items (the active's coalesced updates): the same bytes as of the
/// updates they stand for.
pub fn encode_batch_items(
    session: u64,
    seq: u64,
    items: &[Item],
    key: &Key,
    peer_nonce: &[u8; NONCE_LEN],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    header(out, 2, session, seq);
    batch_body_items(items, out);
    seal(out, start, key, peer_nonce);
}

/// The compact form of a batch item: the common entry (IPv4 or IPv6 with ports in both
/// directions, one protocol, TCP protoinfo or none, no labels, no per-tuple zone and no
/// attribute this codec does not model) as fixed fields, ~45 bytes for an IPv4 TCP entry
/// instead of ~170 as attributes. Every byte of a batch is authenticated, copied and
/// parsed on both sides, so this is most of the per-entry cost of the stream. Anything
/// else travels as attributes (ops 1 and 2), so nothing is lost.
///
/// Upsert: `flags u8 | proto u8 | orig | reply | status u32 | timeout u32 | [mark u32] |
/// [zone u16] | [tcp]`, tuple = `src | dst (4 or 16 bytes each) | sport u16 | dport u16`,
/// tcp = `present u8 (bit per field) | state | wscale orig | wscale reply | flags orig[2] |
/// flags reply[2]` (present fields only). Delete: `flags | proto | orig | [zone u16]`.
/// Big endian.
mod compact {
    use crate::DecodeError;
    use crate::ct::{CtEntry, CtKey, Ends, PlainEntry, PlainKey, TcpInfo};

    const V6: u8 = 1;
    const MARK: u8 = 2;
    const ZONE: u8 = 4;
    const TCP: u8 = 8;
    const KNOWN: u8 = V6 | MARK | ZONE | TCP;

    fn put_ends(e: &Ends, v6: bool, out: &mut Vec<u8>) {
        let n = if v6 { 16 } else { 4 };
        out.extend_from_slice(&e.src[..n]);
        out.extend_from_slice(&e.dst[..n]);
        out.extend_from_slice(&e.sport.to_be_bytes());
        out.extend_from_slice(&e.dport.to_be_bytes());
    }

    pub fn put_plain(e: &PlainEntry, out: &mut Vec<u8>) {
        let mut flags = 0;
        if e.v6 {
            flags |= V6;
        }
        if e.mark != 0 {
            flags |= MARK;
        }
        if e.zone != 0 {
            flags |= ZONE;
        }
        if e.tcp.is_some() {
            flags |= TCP;
        }
        out.extend_from_slice(&[flags, e.proto]);
        put_ends(&e.orig, e.v6, out);
        put_ends(&e.reply, e.v6, out);
        out.extend_from_slice(&e.status.to_be_bytes());
        out.extend_from_slice(&e.timeout.to_be_bytes());
        if e.mark != 0 {
            out.extend_from_slice(&e.mark.to_be_bytes());
        }
        if e.zone != 0 {
            out.extend_from_slice(&e.zone.to_be_bytes());
        }
        if let Some(t) = &e.tcp {
            let at = out.len();
            out.push(0);
            let mut present = 0u8;
            for (bit, v) in [(1u8, t.state), (2, t.wscale_orig), (4, t.wscale_reply)] {
                if let Some(v) = v {
                    present |= bit;
                    out.push(v);
                }
            }
            for (bit, v) in [(8u8, t.flags_orig), (16, t.flags_reply)] {
                if let Some(v) = v {
                    present |= bit;
                    out.extend_from_slice(&v);
                }
            }
            out[at] = present;
        }
    }

    pub fn put_plain_key(k: &PlainKey, out: &mut Vec<u8>) {
        let mut flags = 0;
        if k.v6 {
            flags |= V6;
        }
        if k.zone != 0 {
            flags |= ZONE;
        }
        out.extend_from_slice(&[flags, k.proto]);
        put_ends(&k.ends, k.v6, out);
        if k.zone != 0 {
            out.extend_from_slice(&k.zone.to_be_bytes());
        }
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
            if self.0.len() < n {
                return Err(DecodeError::Truncated("compact batch item"));
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Ok(a)
        }
        fn u8(&mut self) -> Result<u8, DecodeError> {
            Ok(self.take(1)?[0])
        }
        fn u16(&mut self) -> Result<u16, DecodeError> {
            let b = self.take(2)?;
            Ok(u16::from_be_bytes([b[0], b[1]]))
        }
        fn u32(&mut self) -> Result<u32, DecodeError> {
            let b = self.take(4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        fn addr(&mut self, v6: bool) -> Result<[u8; 16], DecodeError> {
            let mut b = [0; 16];
            let n = if v6 { 16 } else { 4 };
            b[..n].copy_from_slice(self.take(n)?);
            Ok(b)
        }
        fn ends(&mut self, v6: bool) -> Result<Ends, DecodeError> {
            Ok(Ends {
                src: self.addr(v6)?,
                dst: self.addr(v6)?,
                sport: self.u16()?,
                dport: self.u16()?,
            })
        }
        fn end(&self) -> Result<(), DecodeError> {
            if self.0.is_empty() {
                Ok(())
            } else {
                Err(DecodeError::Unexpected(
                    "bytes after a compact item",
                    self.0.len().min(usize::from(u16::MAX)) as u16,
                ))
            }
        }
    }

    fn flags(r: &mut Reader<'_>, allowed: u8) -> Result<u8, DecodeError> {
        let f = r.u8()?;
        if f & !allowed != 0 {
            return Err(DecodeError::Unexpected("compact item flags", u16::from(f)));
        }
        Ok(f)
    }

    pub fn entry(b: &[u8]) -> Result<CtEntry, DecodeError> {
        plain(b).map(|p| p.entry())
    }

    /// The item in the fixed form it was written from (a compact item is plain by
    /// construction): what the standby's cache holds.
    pub fn plain(b: &[u8]) -> Result<PlainEntry, DecodeError> {
        let mut r = Reader(b);
        let f = flags(&mut r, KNOWN)?;
        let proto = r.u8()?;
        let v6 = f & V6 != 0;
        let orig = r.ends(v6)?;
        let reply = r.ends(v6)?;
        let status = r.u32()?;
        let timeout = r.u32()?;
        let mark = if f & MARK != 0 { r.u32()? } else { 0 };
        let zone = if f & ZONE != 0 { r.u16()? } else { 0 };
        let tcp = if f & TCP != 0 {
            let present = r.u8()?;
            if present & !31 != 0 {
                return Err(DecodeError::Unexpected(
                    "compact tcp fields",
                    u16::from(present),
                ));
            }
            let mut t = TcpInfo::default();
            if present & 1 != 0 {
                t.state = Some(r.u8()?);
            }
            if present & 2 != 0 {
                t.wscale_orig = Some(r.u8()?);
            }
            if present & 4 != 0 {
                t.wscale_reply = Some(r.u8()?);
            }
            if present & 8 != 0 {
                t.flags_orig = Some([r.u8()?, r.u8()?]);
            }
            if present & 16 != 0 {
                t.flags_reply = Some([r.u8()?, r.u8()?]);
            }
            Some(t)
        } else {
            None
        };
        r.end()?;
        // A zero mark or zone travels as absent: the same rule as the attribute form's.
        if f & MARK != 0 && mark == 0 || f & ZONE != 0 && zone == 0 {
            return Err(DecodeError::Unexpected("compact item zero field", 0));
        }
        Ok(PlainEntry {
            orig,
            reply,
            status,
            timeout,
            mark,
            zone,
            v6,
            proto,
            tcp,
        })
    }

    pub fn key(b: &[u8]) -> Result<CtKey, DecodeError> {
        plain_key(b).map(|k| k.key())
    }

    pub fn plain_key(b: &[u8]) -> Result<PlainKey, DecodeError> {
        let mut r = Reader(b);
        let f = flags(&mut r, V6 | ZONE)?;
        let proto = r.u8()?;
        let v6 = f & V6 != 0;
        let ends = r.ends(v6)?;
        let zone = if f & ZONE != 0 { r.u16()? } else { 0 };
        r.end()?;
        if f & ZONE != 0 && zone == 0 {
            return Err(DecodeError::Unexpected("compact item zero field", 0));
        }
        Ok(PlainKey {
            ends,
            zone,
            proto,
            v6,
        })
    }
}

/// Length of the complete frame at the start of `buf`, once its header is in; errors on a
/// header that cannot start a valid frame (the stream is then unusable: reconnect).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if &buf[..4] != MAGIC {
        return Err(DecodeError::Missing("frame magic").into());
    }
    if buf[4] != VERSION {
        return Err(FrameError::Version { got: buf[4] });
    }
    let len = u32::from_be_bytes([buf[24], buf[25], buf[26], buf[27]]) as usize;
    if len > MAX_BODY {
        return Err(DecodeError::BadLength {
            kind: u16::from(buf[5]),
            len: len.min(usize::from(u16::MAX)),
        }
        .into());
    }
    Ok(Some(HEADER_LEN + len + MAC_LEN))
}

/// Verifies and decodes one whole frame (`frame_len` bytes). `my_nonce`: the nonce this
/// side sent in its Hello (zeros while expecting the peer's Hello).
pub fn decode(buf: &[u8], key: &Key, my_nonce: &[u8; NONCE_LEN]) -> Result<Frame, FrameError> {
    let (session, seq, kind, body) = verify(buf, key, my_nonce)?;
    let body = match kind {
        2 => Body::Batch(decode_batch(body)?),
        k => other_body(k, body)?,
    };
    Ok(Frame { session, seq, body })
}

/// A batch item as the standby applies it: a compact item (nearly all) straight in its
/// fixed form, no [`CtEntry`] built on the way; any other as its [`Update`].
/// The active's coalescer holds its pending updates in this form too, and the encoder
/// writes a plain item's compact form from its fixed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Upsert(PlainEntry),
    Delete(PlainKey),
    /// Boxed: a rare item must not make every item the size of a [`CtEntry`].
    Other(Box<Update>),
}

impl Item {
    /// The update the item stands for: what [`decode`] gives for it.
    pub fn into_update(self) -> Update {
        match self {
            Item::Upsert(p) => Update::Upsert(p.entry()),
            Item::Delete(k) => Update::Delete(k.key()),
            Item::Other(u) => *u,
        }
    }
}

impl Item {
    /// The upsert of `e`: a plain entry copied into fixed fields, any other cloned.
    pub fn upsert(e: &CtEntry) -> Self {
        match PlainEntry::of(e) {
            Some(p) => Item::Upsert(p),
            None => Item::Other(Box::new(Update::Upsert(e.clone()))),
        }
    }

    /// The deletion of `e` (its key).
    pub fn delete(e: &CtEntry) -> Self {
        match PlainKey::of(e.zone, &e.orig) {
            Some(k) => Item::Delete(k),
            None => Item::Other(Box::new(Update::Delete(e.key()))),
        }
    }
}

impl From<Update> for Item {
    /// The fixed form when the entry (or key) is plain, else the update as it is.
    fn from(u: Update) -> Self {
        match u {
            Update::Upsert(e) => match PlainEntry::of(&e) {
                Some(p) => Item::Upsert(p),
                None => Item::Other(Box::new(Update::Upsert(e))),
            },
            Update::Delete(k) => match PlainKey::of(k.zone, &k.orig) {
                Some(p) => Item::Delete(p),
                None => Item::Other(Box::new(Update::Delete(k))),
            },
        }
    }
}

/// [`decode`] for the standby's receive path: a batch's items go to `items` (cleared
/// first) as [`Item`]s, and the frame returned has an empty `Body::Batch`; any other
/// frame is returned whole. Verified and checked as by `decode`: a frame with one
/// malformed item is refused whole and leaves `items` empty.
pub fn decode_items(
    buf: &[u8],
    key: &Key,
    my_nonce: &[u8; NONCE_LEN],
    items: &mut Vec<Item>,
) -> Result<Frame, FrameError> {
    items.clear();
    let (session, seq, kind, body) = verify(buf, key, my_nonce)?;
    let body = match kind {
        2 => {
            let got = walk_batch(body, |op, item| {
                items.push(match op {
                    OP_UPSERT_COMPACT => Item::Upsert(compact::plain(item)?),
                    OP_DELETE_COMPACT => Item::Delete(compact::plain_key(item)?),
                    op => Item::Other(Box::new(attr_item(op, item)?)),
                });
                Ok(())
            });
            if let Err(e) = got {
                items.clear();
                return Err(e.into());
            }
            Body::Batch(Vec::new())
        }
        k => other_body(k, body)?,
    };
    Ok(Frame { session, seq, body })
}

/// Checks the frame's length and MAC; (session, seq, kind, body).
fn verify<'a>(
    buf: &'a [u8],
    key: &Key,
    my_nonce: &[u8; NONCE_LEN],
) -> Result<(u64, u64, u8, &'a [u8]), FrameError> {
    let total = frame_len(buf)?.ok_or(DecodeError::Truncated("frame header"))?;
    if buf.len() != total {
        return Err(DecodeError::Truncated("frame").into());
    }
    let (signed, mac) = buf.split_at(total - MAC_LEN);
    let mut m = key.mac();
    m.update(my_nonce);
    m.update(signed);
    m.verify_slice(mac).map_err(|_| FrameError::BadMac)?;
    let session = u64::from_be_bytes(signed[8..16].try_into().unwrap_or_default());
    let seq = u64::from_be_bytes(signed[16..24].try_into().unwrap_or_default());
    Ok((session, seq, signed[5], &signed[HEADER_LEN..]))
}

/// A node name as a Hello carries it: at most 255 bytes, cut at a character boundary.
fn fit_node_name(name: &str) -> &str {
    let mut end = name.len().min(255);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The body of a frame of any kind but a batch.
fn other_body(kind: u8, body: &[u8]) -> Result<Body, FrameError> {
    Ok(match kind {
        1 => {
            let n = *body.first().ok_or(DecodeError::Truncated("hello"))? as usize;
            if body.len() != 1 + n + 1 + NONCE_LEN {
                return Err(DecodeError::Truncated("hello").into());
            }
            // Invalid UTF-8 becomes U+FFFD (3 bytes each): fit the result to what a Hello
            // can carry again, so that the decoded frame re-encodes to itself.
            let node = fit_node_name(&String::from_utf8_lossy(&body[1..1 + n])).to_string();
            let role = match body[1 + n] {
                1 => Role::Active,
                2 => Role::Standby,
                r => return Err(DecodeError::Unexpected("role", u16::from(r)).into()),
            };
            let mut nonce = [0; NONCE_LEN];
            nonce.copy_from_slice(&body[2 + n..]);
            Body::Hello { node, role, nonce }
        }
        3 => Body::ResyncBegin {
            entries: crate::nla::be64(body)?,
        },
        4 if body.is_empty() => Body::ResyncEnd,
        5 => Body::Ack {
            seq: crate::nla::be64(body)?,
        },
        k => return Err(DecodeError::Unexpected("frame kind", u16::from(k)).into()),
    })
}

/// The body of a batch frame alone (no header, no MAC), for the fuzz and property tests
/// of the item codec: `decode_batch_body(encode_batch_body(x)) == x`.
pub fn encode_batch_body(items: &[Update], out: &mut Vec<u8>) {
    batch_body(items, out);
}

/// See [`encode_batch_body`].
pub fn decode_batch_body(b: &[u8]) -> Result<Vec<Update>, DecodeError> {
    decode_batch(b)
}

fn decode_batch(b: &[u8]) -> Result<Vec<Update>, DecodeError> {
    let mut items = Vec::new();
    walk_batch(b, |op, item| {
        items.push(match op {
            OP_UPSERT_COMPACT => Update::Upsert(compact::entry(item)?),
            OP_DELETE_COMPACT => Update::Delete(compact::key(item)?),
            op => attr_item(op, item)?,
        });
        Ok(())
    })?;
    Ok(items)
}

/// An item in the attribute form (ops 1 and 2).
fn attr_item(op: u8, item: &[u8]) -> Result<Update, DecodeError> {
    Ok(match op {
        OP_UPSERT => {
            Update::Upsert(CtEntry::decode(item)?.ok_or(DecodeError::Missing("entry tuples"))?)
        }
        OP_DELETE => {
            Update::Delete(CtKey::decode(item)?.ok_or(DecodeError::Missing("deleted key"))?)
        }
        o => return Err(DecodeError::Unexpected("update op", u16::from(o))),
    })
}

/// Hands each item of a batch body to `f` as (op, item bytes), checking the framing.
fn walk_batch(
    mut b: &[u8],
    mut f: impl FnMut(u8, &[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    if b.len() < 4 {
        return Err(DecodeError::Truncated("batch count"));
    }
    let count = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    b = &b[4..];
    // Each item takes at least 5 bytes: refuse counts the body cannot hold before anything
    // is decoded.
    if count > b.len() / 5 {
        return Err(DecodeError::Truncated("batch items"));
    }
    for _ in 0..count {
        if b.len() < 5 {
            return Err(DecodeError::Truncated("batch item"));
        }
        let op = b[0];
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        let rest = &b[5..];
        if len > rest.len() {
            return Err(DecodeError::Truncated("batch item body"));
        }
        f(op, &rest[..len])?;
        b = &rest[len..];
    }
    if !b.is_empty() {
        return Err(DecodeError::Unexpected("bytes after batch", b.len() as u16));
    }
    Ok(())
}

/// Replay protection within one session: the first frame after the Hello fixes the
/// session id; after that only `seq == last + 1` of that session is accepted.
#[derive(Debug, Default, Clone)]
pub struct ReplayGuard {
    session: Option<u64>,
    last: u64,
}

impl ReplayGuard {
    pub fn check(&mut self, f: &Frame) -> Result<(), FrameError> {
        match self.session {
            None => {
                self.session = Some(f.session);
                self.last = f.seq;
                Ok(())
            }
            Some(s) if s == f.session && f.seq == self.last.wrapping_add(1) => {
                self.last = f.seq;
                Ok(())
            }
            Some(_) => Err(FrameError::Replayed {
                seq: f.seq,
                expected: self.last.wrapping_add(1),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ct::{ProtoInfo, TcpInfo, Tuple};
    use std::net::IpAddr;

    fn key() -> Key {
        Key::from_file_bytes(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    pub(crate) fn entry(sport: u16) -> CtEntry {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let t = |s, d, sp, dp| Tuple {
            src: a(s),
            dst: a(d),
            proto: 6,
            src_port: Some(sp),
            dst_port: Some(dp),
            icmp_id: None,
            icmp_type: None,
            icmp_code: None,
            zone: None,
            other: vec![],
        };
        CtEntry {
            orig: t("198.18.1.10", "203.0.113.10", sport, 5000),
            reply: t("203.0.113.10", "198.51.100.10", 5000, sport),
            status: 0x1be,
            timeout: 431999,
            mark: 7,
            zone: 0,
            protoinfo: Some(ProtoInfo {
                tcp: Some(TcpInfo {
                    state: Some(3),
                    wscale_orig: Some(7),
                    wscale_reply: Some(7),
                    flags_orig: Some([0x23, 0x23]),
                    flags_reply: Some([0x23, 0x23]),
                }),
                other: vec![],
            }),
            labels: None,
        }
    }

    #[test]
    fn round_trips() {
        let k = key();
        let nonce = [9; NONCE_LEN];
        let frames = [
            Body::Hello {
                node: "igw-a".into(),
                role: Role::Active,
                nonce: [1; NONCE_LEN],
            },
            Body::Batch(vec![
                Update::Upsert(entry(40000)),
                Update::Delete(entry(40001).key()),
            ]),
            Body::Batch(vec![]),
            Body::ResyncBegin { entries: 0 },
            Body::ResyncBegin { entries: 500_000 },
            Body::ResyncEnd,
            Body::Ack { seq: 42 },
        ];
        for (i, body) in frames.into_iter().enumerate() {
            let f = Frame {
                session: 77,
                seq: i as u64,
                body,
            };
            let mut b = Vec::new();
            encode(&f, &k, &nonce, &mut b);
            assert_eq!(frame_len(&b).unwrap(), Some(b.len()));
            assert_eq!(decode(&b, &k, &nonce).unwrap(), f);
        }
    }

    /// A Hello's node name fits in 255 bytes at a character boundary, on both sides: a name
    /// of invalid UTF-8 (each bad byte decodes as 3-byte U+FFFD) decodes to a name that
    /// re-encodes to itself. Found by the `signed_body` fuzz target: 87 bad bytes decoded
    /// to 261 bytes, cut mid-character on re-encoding, and decoded to another name.
    #[test]
    fn hello_node_names_fit_and_round_trip() {
        let k = key();
        let nonce = [9; NONCE_LEN];
        let hello = |node: String| Frame {
            session: 1,
            seq: 1,
            body: Body::Hello {
                node,
                role: Role::Active,
                nonce: [3; NONCE_LEN],
            },
        };
        // (name sent, name the peer decodes)
        let cases = [
            ("igw-a".to_string(), "igw-a".to_string()),
            ("é".repeat(200), "é".repeat(127)),
            ("a".repeat(300), "a".repeat(255)),
        ];
        for (sent, got) in cases {
            let mut b = Vec::new();
            encode(&hello(sent.clone()), &k, &nonce, &mut b);
            assert_eq!(decode(&b, &k, &nonce).unwrap(), hello(got), "{sent}");
        }
        // Raw invalid bytes, signed as a peer with the key would.
        let mut b = Vec::new();
        encode(&hello("x".into()), &k, &nonce, &mut b);
        let mut signed = b[..HEADER_LEN].to_vec();
        let mut body = vec![87u8];
        body.extend_from_slice(&[0xe4; 87]);
        body.push(1);
        body.extend_from_slice(&[3; NONCE_LEN]);
        signed[24..28].copy_from_slice(&(body.len() as u32).to_be_bytes());
        signed.extend_from_slice(&body);
        let mut m = k.mac();
        m.update(&nonce);
        m.update(&signed);
        signed.extend_from_slice(&m.finalize().into_bytes());
        let first = decode(&signed, &k, &nonce).unwrap();
        let Body::Hello { node, .. } = &first.body else {
            panic!("not a hello: {first:?}")
        };
        assert_eq!(node, &"\u{fffd}".repeat(85));
        let mut again = Vec::new();
        encode(&first, &k, &nonce, &mut again);
        assert_eq!(decode(&again, &k, &nonce).unwrap(), first);
    }

    /// Each kind of entry round-trips in the form it fits: compact for the common ones,
    /// attributes for the rest; and the compact form is what makes a batch small.
    #[test]
    fn batch_items_in_both_forms() {
        let k = key();
        let nonce = [7; NONCE_LEN];
        let v6 = |mut e: CtEntry| {
            for t in [&mut e.orig, &mut e.reply] {
                t.src = "fd00:198:18::10".parse().unwrap();
                t.dst = "2001:db8::10".parse().unwrap();
            }
            e
        };
        let mut marked = entry(3);
        marked.mark = 0;
        marked.zone = 9;
        let mut udp = entry(4);
        udp.orig.proto = 17;
        udp.reply.proto = 17;
        udp.protoinfo = None;
        let mut icmp = entry(5);
        for t in [&mut icmp.orig, &mut icmp.reply] {
            t.proto = 1;
            t.src_port = None;
            t.dst_port = None;
            t.icmp_id = Some(7);
            t.icmp_type = Some(8);
            t.icmp_code = Some(0);
        }
        icmp.protoinfo = None;
        let mut labelled = entry(6);
        labelled.labels = Some(vec![0xff; 16]);
        let mut partial_tcp = entry(7);
        if let Some(p) = &mut partial_tcp.protoinfo {
            p.tcp = Some(TcpInfo {
                state: Some(3),
                ..TcpInfo::default()
            });
        }
        // (update, fits the compact form)
        let cases = [
            (Update::Upsert(entry(1)), true),
            (Update::Upsert(v6(entry(2))), true),
            (Update::Upsert(marked.clone()), true),
            (Update::Upsert(udp), true),
            (Update::Upsert(partial_tcp), true),
            (Update::Upsert(icmp.clone()), false),
            (Update::Upsert(labelled), false),
            (Update::Delete(entry(1).key()), true),
            (Update::Delete(marked.key()), true),
            (Update::Delete(v6(entry(2)).key()), true),
            (Update::Delete(icmp.key()), false),
        ];
        for (u, fits) in cases {
            let mut body = Vec::new();
            batch_body(std::slice::from_ref(&u), &mut body);
            let want_op = match (&u, fits) {
                (Update::Upsert(_), true) => OP_UPSERT_COMPACT,
                (Update::Upsert(_), false) => OP_UPSERT,
                (Update::Delete(_), true) => OP_DELETE_COMPACT,
                (Update::Delete(_), false) => OP_DELETE,
            };
            assert_eq!(body[4], want_op, "{u:?}");
            assert_eq!(decode_batch(&body), Ok(vec![u.clone()]), "{u:?}");
            // The fixed form: a compact item decodes into it (and an attribute one does
            // not); encoding from it gives the same bytes.
            let item = Item::from(u.clone());
            assert_eq!(!matches!(item, Item::Other(_)), fits, "{u:?}");
            let mut again = Vec::new();
            batch_body_items(std::slice::from_ref(&item), &mut again);
            assert_eq!(again, body, "{u:?}");
            let f = Frame {
                session: 1,
                seq: 2,
                body: Body::Batch(vec![u.clone(), u.clone()]),
            };
            let mut b = Vec::new();
            encode(&f, &k, &nonce, &mut b);
            assert_eq!(decode(&b, &k, &nonce), Ok(f));
            let mut items = Vec::new();
            let fast = decode_items(&b, &k, &nonce, &mut items).unwrap();
            assert_eq!(fast.body, Body::Batch(vec![]));
            assert_eq!(items, vec![item.clone(), item]);
        }
        let mut one = Vec::new();
        batch_body(&[Update::Upsert(entry(1))], &mut one);
        assert!(
            one.len() - 4 - 5 <= 48,
            "compact IPv4 TCP entry: {} bytes",
            one.len() - 9
        );
        // Truncated, padded or flagged beyond the known: malformed.
        let body = &one[9..];
        for cut in 0..body.len() {
            assert!(compact::entry(&body[..cut]).is_err(), "cut {cut}");
        }
        let mut long = body.to_vec();
        long.push(0);
        assert!(compact::entry(&long).is_err());
        let mut bad = body.to_vec();
        bad[0] |= 0x80;
        assert!(compact::entry(&bad).is_err());
    }

    #[test]
    fn forged_altered_and_replayed_frames_are_refused() {
        let k = key();
        let nonce = [3; NONCE_LEN];
        let f = Frame {
            session: 1,
            seq: 1,
            body: Body::Batch(vec![Update::Upsert(entry(1))]),
        };
        let mut b = Vec::new();
        encode(&f, &k, &nonce, &mut b);
        let wrong = Key::from_file_bytes(b"another key of enough length....").unwrap();
        assert_eq!(decode(&b, &wrong, &nonce), Err(FrameError::BadMac));
        // Bound to the receiver's nonce: a frame from an earlier session does not verify.
        assert_eq!(decode(&b, &k, &[4; NONCE_LEN]), Err(FrameError::BadMac));
        let mut altered = b.clone();
        altered[40] ^= 1;
        assert_eq!(decode(&altered, &k, &nonce), Err(FrameError::BadMac));
        let mut g = ReplayGuard::default();
        g.check(&f).unwrap();
        assert!(matches!(g.check(&f), Err(FrameError::Replayed { .. })));
        let next = Frame {
            seq: 2,
            ..f.clone()
        };
        g.check(&next).unwrap();
        let other_session = Frame {
            session: 2,
            seq: 3,
            ..f
        };
        assert!(g.check(&other_session).is_err());
    }

    #[test]
    fn malformed_frames() {
        let k = key();
        let n = [0; NONCE_LEN];
        assert!(frame_len(b"IGWS").unwrap().is_none());
        let mut bad = vec![0u8; HEADER_LEN];
        assert!(frame_len(&bad).is_err());
        bad[..4].copy_from_slice(MAGIC);
        bad[4] = 9;
        assert!(frame_len(&bad).is_err());
        // A version-1 peer: refused with its own error, whatever follows.
        bad[4] = 1;
        assert_eq!(frame_len(&bad), Err(FrameError::Version { got: 1 }));
        assert!(
            FrameError::Version { got: 1 }
                .to_string()
                .contains("version 1, this node version 2")
        );
        bad[4] = VERSION;
        bad[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(frame_len(&bad).is_err());
        // A correctly signed frame with a lying batch count is malformed, not a panic.
        let mut b = Vec::new();
        encode(
            &Frame {
                session: 1,
                seq: 1,
                body: Body::Batch(vec![]),
            },
            &k,
            &n,
            &mut b,
        );
        let body = HEADER_LEN;
        b[body..body + 4].copy_from_slice(&1000u32.to_be_bytes());
        b.truncate(b.len() - MAC_LEN);
        let mut m = k.mac();
        m.update(&n);
        m.update(&b);
        b.extend_from_slice(&m.finalize().into_bytes());
        assert!(matches!(decode(&b, &k, &n), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Key::from_file_bytes(b"short\n").is_err());
    }
}
