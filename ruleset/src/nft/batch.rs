//! nf_tables netlink messages for the one change igw makes without `nft`: adding and
//! deleting elements of its interval sets, plus reading the ruleset generation.
//!
//! Why not `nft`: for a delete from an interval set, `nft` 1.0.x first lists the whole set
//! to work out the intervals (0.7 s for 100k elements here), whereas the kernel only needs
//! the interval's two boundary elements. This module encodes exactly those, in one
//! nfnetlink batch (`BATCH_BEGIN`, deletes, adds, `BATCH_END`) that the kernel commits or
//! aborts whole, like an `nft -f` transaction. Pure: bytes in, bytes out; the CLI owns the
//! socket.
//!
//! Element encoding (what `nft --debug=netlink` shows nft 1.0.6 sending for the same
//! change): a prefix `a/len` is the start element `a` and the end element `last + 1`
//! flagged `INTERVAL_END`; an interval that ends at the family's last address has no end
//! element, and carries nft's "open interval" user-data flag so `nft list` prints it as nft
//! would.

use std::net::IpAddr;

use ipnet::IpNet;

use super::running::SetDelta;

pub const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const NFPROTO_INET: u8 = 1;
const NFPROTO_UNSPEC: u8 = 0;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_GEN_ID: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// libnftnl's element user data: TLV `NFTNL_UDATA_SET_ELEM_FLAGS` (1), length 4, value
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN` (1, host order) — "this interval runs to the end".
const UDATA_INTERVAL_OPEN: [u8; 6] = [1, 4, 1, 0, 0, 0];

/// Elements per message: keeps every message far below the socket's send buffer.
const ELEMS_PER_MSG: usize = 512;

/// One boundary element of an interval set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boundary {
    pub key: Vec<u8>,
    pub end: bool,
    pub open: bool,
}

/// The kernel's view of a prefix in an interval set: its start element and, unless the
/// prefix reaches the last address of its family, the end element one past it.
pub fn boundaries(net: &IpNet) -> Vec<Boundary> {
    let (start, next): (Vec<u8>, Option<Vec<u8>>) = match (net.network(), net.broadcast()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            a.octets().to_vec(),
            u32::from(b)
                .checked_add(1)
                .map(|n| n.to_be_bytes().to_vec()),
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (
            a.octets().to_vec(),
            u128::from(b)
                .checked_add(1)
                .map(|n| n.to_be_bytes().to_vec()),
        ),
        // network() and broadcast() of one prefix are of one family.
        _ => return Vec::new(),
    };
    match next {
        Some(n) => vec![
            Boundary {
                key: start,
                end: false,
                open: false,
            },
            Boundary {
                key: n,
                end: true,
                open: false,
            },
        ],
        None => vec![Boundary {
            key: start,
            end: false,
            open: true,
        }],
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_ne_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Appends an attribute; `body` writes its payload.
fn attr(out: &mut Vec<u8>, ty: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    put_u16(out, 0);
    put_u16(out, ty);
    body(out);
    let len = u16::try_from(out.len() - at).unwrap_or(u16::MAX);
    out[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    pad(out);
}

fn attr_str(out: &mut Vec<u8>, ty: u16, s: &str) {
    attr(out, ty, |o| {
        o.extend_from_slice(s.as_bytes());
        o.push(0);
    });
}

/// Appends one netlink message with an nfgenmsg header; `body` writes the attributes.
fn message(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let at = out.len();
    put_u32(out, 0);
    put_u16(out, ty);
    put_u16(out, flags);
    put_u32(out, seq);
    put_u32(out, 0);
    // struct nfgenmsg: family, version, res_id (big endian).
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    body(out);
    let len = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    pad(out);
}

fn elem_list(out: &mut Vec<u8>, table: &str, set: &str, elems: &[Boundary]) {
    attr_str(out, NFTA_SET_ELEM_LIST_TABLE, table);
    attr_str(out, NFTA_SET_ELEM_LIST_SET, set);
    attr(out, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, |o| {
        for e in elems {
            attr(o, NFTA_LIST_ELEM | NLA_F_NESTED, |o| {
                attr(o, NFTA_SET_ELEM_KEY | NLA_F_NESTED, |o| {
                    attr(o, NFTA_DATA_VALUE, |o| o.extend_from_slice(&e.key));
                });
                if e.end {
                    attr(o, NFTA_SET_ELEM_FLAGS, |o| {
                        o.extend_from_slice(&NFT_SET_ELEM_INTERVAL_END.to_be_bytes())
                    });
                }
                if e.open {
                    attr(o, NFTA_SET_ELEM_USERDATA, |o| {
                        o.extend_from_slice(&UDATA_INTERVAL_OPEN)
                    });
                }
            });
        }
    });
}

/// An encoded batch and the sequence numbers the kernel will acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub acked: Vec<u32>,
}

/// The element update of `deltas` in `table` (family inet) as one nfnetlink batch: every
/// delete first (an added prefix may cover a deleted one), then every add. Sequence numbers
/// start at `seq`.
pub fn element_batch(table: &str, deltas: &[(String, SetDelta)], seq: u32) -> Batch {
    let mut out = Vec::new();
    let mut acked = Vec::new();
    let mut seq = seq;
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    for (ty, flags) in [
        (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
    ] {
        for (set, d) in deltas {
            let nets = if ty == NFT_MSG_DELSETELEM {
                &d.remove
            } else {
                &d.add
            };
            let elems: Vec<Boundary> = nets.iter().flat_map(boundaries).collect();
            for chunk in elems.chunks(ELEMS_PER_MSG) {
                seq = seq.wrapping_add(1);
                acked.push(seq);
                message(
                    &mut out,
                    (NFNL_SUBSYS_NFTABLES << 8) | ty,
                    flags,
                    seq,
                    NFPROTO_INET,
                    0,
                    |o| elem_list(o, table, set, chunk),
                );
            }
        }
    }
    seq = seq.wrapping_add(1);
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    Batch { bytes: out, acked }
}

/// The request for the ruleset generation id (answered by one `NEWGEN` message).
pub fn getgen_request(seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    message(
        &mut out,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        0,
        |_| {},
    );
    out
}

/// One message of the kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `NLMSG_ERROR` with error 0.
    Ack {
        seq: u32,
    },
    /// `NLMSG_ERROR` with a negative errno, as a positive errno.
    Error {
        seq: u32,
        errno: i32,
    },
    /// The generation id.
    Gen {
        seq: u32,
        id: u32,
    },
    Done {
        seq: u32,
    },
    Other {
        seq: u32,
        ty: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("truncated or malformed netlink message at byte {0}")]
pub struct Malformed(pub usize);

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of one datagram from the kernel.
pub fn parse_replies(b: &[u8]) -> Result<Vec<Reply>, Malformed> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= b.len() {
        let len = u32_at(b, at).ok_or(Malformed(at))? as usize;
        if len < 16 || at + len > b.len() {
            return Err(Malformed(at));
        }
        let ty = u16_at(b, at + 4).ok_or(Malformed(at))?;
        let seq = u32_at(b, at + 8).ok_or(Malformed(at))?;
        let body = &b[at + 16..at + len];
        let reply = match ty {
            NLMSG_ERROR => {
                let err = body
                    .get(0..4)
                    .and_then(|x| x.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .ok_or(Malformed(at))?;
                // The copy of the request's header names which message this answers.
                let seq = u32_at(body, 12).unwrap_or(seq);
                if err == 0 {
                    Reply::Ack { seq }
                } else {
                    Reply::Error { seq, errno: -err }
                }
            }
            NLMSG_DONE => Reply::Done { seq },
            t if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN => {
                // nfgenmsg (4 bytes), then attributes.
                let mut a = 4;
                let mut id = None;
                while a + 4 <= body.len() {
                    let alen = usize::from(u16_at(body, a).ok_or(Malformed(at))?);
                    let aty = u16_at(body, a + 2).ok_or(Malformed(at))? & !NLA_F_NESTED;
                    if alen < 4 {
                        return Err(Malformed(at));
                    }
                    if aty == NFTA_GEN_ID {
                        id = body
                            .get(a + 4..a + 8)
                            .and_then(|x| x.try_into().ok())
                            .map(u32::from_be_bytes);
                    }
                    a += (alen + 3) & !3;
                }
                Reply::Gen {
                    seq,
                    id: id.ok_or(Malformed(at))?,
                }
            }
            ty => Reply::Other { seq, ty },
        };
        out.push(reply);
        at += (len + 3) & !3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(key: &[u8], end: bool, open: bool) -> Boundary {
        Boundary {
            key: key.to_vec(),
            end,
            open,
        }
    }

    #[test]
    fn boundaries_table() {
        let cases: &[(&str, Vec<Boundary>)] = &[
            (
                "10.0.0.0/24",
                vec![
                    b(&[10, 0, 0, 0], false, false),
                    b(&[10, 0, 1, 0], true, false),
                ],
            ),
            (
                "100.64.0.2/32",
                vec![
                    b(&[100, 64, 0, 2], false, false),
                    b(&[100, 64, 0, 3], true, false),
                ],
            ),
            (
                "10.255.255.255/32",
                vec![
                    b(&[10, 255, 255, 255], false, false),
                    b(&[11, 0, 0, 0], true, false),
                ],
            ),
            // The last address: no end element, flagged open (as nft does).
            ("255.255.255.255/32", vec![b(&[255; 4], false, true)]),
            ("0.0.0.0/0", vec![b(&[0; 4], false, true)]),
            (
                "2001:db8::/32",
                vec![
                    b(
                        &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        false,
                        false,
                    ),
                    b(
                        &[0x20, 0x01, 0x0d, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        true,
                        false,
                    ),
                ],
            ),
        ];
        for (net, want) in cases {
            let n: IpNet = net.parse().unwrap();
            assert_eq!(&boundaries(&n), want, "{net}");
        }
    }

    fn delta(add: &[&str], remove: &[&str]) -> SetDelta {
        SetDelta {
            add: add.iter().map(|s| s.parse().unwrap()).collect(),
            remove: remove.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    /// Walks a batch: (type, flags, seq, family) of each message.
    fn headers(bytes: &[u8]) -> Vec<(u16, u16, u32, u8)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32_at(bytes, at).unwrap() as usize;
            assert_eq!(len % 4, 0, "messages are padded to 4 bytes");
            v.push((
                u16_at(bytes, at + 4).unwrap(),
                u16_at(bytes, at + 6).unwrap(),
                u32_at(bytes, at + 8).unwrap(),
                bytes[at + 16],
            ));
            at += len;
        }
        assert_eq!(at, bytes.len());
        v
    }

    #[test]
    fn batch_deletes_before_adds_and_acks_each_element_message() {
        let d = vec![
            (
                "obj_a_v4".to_string(),
                delta(&["10.0.0.0/24"], &["10.1.0.0/24"]),
            ),
            ("obj_b_v4".to_string(), delta(&["10.2.0.0/24"], &[])),
        ];
        let bt = element_batch("igw", &d, 100);
        let h = headers(&bt.bytes);
        let del = (10 << 8) | 14;
        let new = (10 << 8) | 12;
        assert_eq!(
            h,
            vec![
                (0x10, 1, 100, 0),
                (del, 1 | 4, 101, 1),
                (new, 1 | 4 | 0x400, 102, 1),
                (new, 1 | 4 | 0x400, 103, 1),
                (0x11, 1, 104, 0),
            ]
        );
        assert_eq!(bt.acked, vec![101, 102, 103]);
    }

    #[test]
    fn large_deltas_are_split_into_bounded_messages() {
        let add: Vec<String> = (0..1000)
            .map(|i| format!("10.0.{}.{}/32", i / 256, i % 256))
            .collect();
        let add: Vec<&str> = add.iter().map(String::as_str).collect();
        let d = vec![("s".to_string(), delta(&add, &[]))];
        let bt = element_batch("igw", &d, 0);
        // 2000 boundaries in chunks of 512: 4 messages between begin and end.
        assert_eq!(bt.acked.len(), 4);
        assert_eq!(headers(&bt.bytes).len(), 6);
    }

    #[test]
    fn element_message_layout() {
        let d = vec![("s".to_string(), delta(&["10.0.0.0/24"], &[]))];
        let bt = element_batch("t", &d, 0);
        // Skip batch begin (20 bytes) and the element message's headers (16 + 4).
        let m = &bt.bytes[20 + 20..];
        let want: Vec<u8> = [
            // table "t\0" padded
            &[6u8, 0, 1, 0, b't', 0, 0, 0][..],
            // set "s\0" padded
            &[6, 0, 2, 0, b's', 0, 0, 0],
            // elements (nested): 2 list elems
            &[4 + 16 + 24, 0, 3, 0x80],
            // start: list elem { key { value 10.0.0.0 } }
            &[16, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 10, 0, 0, 0],
            // end: list elem { key { value 10.0.1.0 }, flags INTERVAL_END (be32) }
            &[24, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 10, 0, 1, 0],
            &[8, 0, 3, 0, 0, 0, 0, 1],
        ]
        .concat();
        assert_eq!(&m[..want.len()], &want[..]);
    }

    #[test]
    fn replies_are_parsed() {
        let mut b = Vec::new();
        // An ack for seq 7 (error 0 + the request's header).
        put_u32(&mut b, 36);
        put_u16(&mut b, NLMSG_ERROR);
        put_u16(&mut b, 0x100);
        put_u32(&mut b, 7);
        put_u32(&mut b, 0);
        put_u32(&mut b, 0);
        b.extend_from_slice(&[0u8; 8]);
        put_u32(&mut b, 7);
        put_u32(&mut b, 0);
        // ENOENT for seq 8.
        put_u32(&mut b, 36);
        put_u16(&mut b, NLMSG_ERROR);
        put_u16(&mut b, 0);
        put_u32(&mut b, 8);
        put_u32(&mut b, 0);
        b.extend_from_slice(&(-2i32).to_ne_bytes());
        b.extend_from_slice(&[0u8; 8]);
        put_u32(&mut b, 8);
        put_u32(&mut b, 0);
        // NEWGEN id 42.
        message(
            &mut b,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN,
            0,
            9,
            0,
            0,
            |o| {
                attr(o, NFTA_GEN_ID, |o| {
                    o.extend_from_slice(&42u32.to_be_bytes())
                })
            },
        );
        assert_eq!(
            parse_replies(&b).unwrap(),
            vec![
                Reply::Ack { seq: 7 },
                Reply::Error { seq: 8, errno: 2 },
                Reply::Gen { seq: 9, id: 42 },
            ]
        );
        assert_eq!(parse_replies(&b[..30]), Err(Malformed(0)));
    }
}
