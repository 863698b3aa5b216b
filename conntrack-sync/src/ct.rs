//! ctnetlink messages (nfnetlink subsystem CTNETLINK): the conntrack entries the kernel dumps
//! and announces in events, and the CT_NEW/GET/DELETE requests we send. Pure codec; unknown
//! attributes are kept as they came so that a parse/emit round trip is byte-exact.
//!
//! NAT: the kernel does not dump a NAT binding as such; it shows in the REPLY tuple and the
//! `SRC_NAT`/`DST_NAT` status bits. To recreate an entry with the same binding, CT_NEW must
//! carry `CTA_NAT_SRC`/`CTA_NAT_DST` ranges pinned to the reply tuple's address and port
//! (the status bits alone cannot be set: the kernel treats them as unchangeable), as
//! `conntrackd` does. [`CtEntry::create_attrs`] derives them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::DecodeError;
use crate::nla::{self, NLA_F_NESTED, RawNla};

pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub const IPCTNL_MSG_CT_NEW: u8 = 0;
pub const IPCTNL_MSG_CT_GET: u8 = 1;
pub const IPCTNL_MSG_CT_DELETE: u8 = 2;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// Multicast groups of conntrack events (bit n-1 of the bind mask).
pub const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_NAT_SRC: u16 = 6;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_USE: u16 = 11;
const CTA_ID: u16 = 12;
const CTA_NAT_DST: u16 = 13;
const CTA_ZONE: u16 = 18;
const CTA_LABELS: u16 = 22;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
// enum ctattr_protoinfo / ctattr_protoinfo_tcp
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_PROTOINFO_TCP_WSCALE_ORIGINAL: u16 = 2;
const CTA_PROTOINFO_TCP_WSCALE_REPLY: u16 = 3;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;
// enum ctattr_nat / ctattr_protonat
const CTA_NAT_V4_MINIP: u16 = 1;
const CTA_NAT_V4_MAXIP: u16 = 2;
const CTA_NAT_PROTO: u16 = 3;
const CTA_NAT_V6_MINIP: u16 = 4;
const CTA_NAT_V6_MAXIP: u16 = 5;
const CTA_PROTONAT_PORT_MIN: u16 = 1;
const CTA_PROTONAT_PORT_MAX: u16 = 2;

/// `enum ip_conntrack_status` bits used here.
pub mod status {
    pub const EXPECTED: u32 = 1 << 0;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const DYING: u32 = 1 << 9;
    pub const TEMPLATE: u32 = 1 << 11;
    pub const UNTRACKED: u32 = 1 << 12;
    pub const OFFLOAD: u32 = 1 << 14;
    pub const HW_OFFLOAD: u32 = 1 << 15;
}

/// One direction of a connection. Ordered fields are emitted in the kernel's order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_id: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// `CTA_TUPLE_ZONE` (directional zones only).
    pub zone: Option<u16>,
    /// Attributes of the tuple this codec does not model (ICMPv6 fields, ...).
    pub other: Vec<RawNla>,
}

impl Tuple {
    pub fn family(&self) -> u8 {
        if self.src.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        }
    }

    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut src = None;
        let mut dst = None;
        let mut t = Tuple {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            proto: 0,
            src_port: None,
            dst_port: None,
            icmp_id: None,
            icmp_type: None,
            icmp_code: None,
            zone: None,
            other: Vec::new(),
        };
        let mut proto = None;
        for a in nla::iter(buf) {
            let (kind, v) = a?;
            match kind & !NLA_F_NESTED {
                CTA_TUPLE_IP => {
                    for a in nla::iter(v) {
                        let (k, a) = a?;
                        match k {
                            CTA_IP_V4_SRC => src = Some(ip4(a)?),
                            CTA_IP_V4_DST => dst = Some(ip4(a)?),
                            CTA_IP_V6_SRC => src = Some(ip6(a)?),
                            CTA_IP_V6_DST => dst = Some(ip6(a)?),
                            _ => return Err(DecodeError::Unexpected("tuple ip attribute", k)),
                        }
                    }
                }
                CTA_TUPLE_PROTO => {
                    for a in nla::iter(v) {
                        let (k, a) = a?;
                        match k {
                            CTA_PROTO_NUM => proto = Some(nla::u8v(a)?),
                            CTA_PROTO_SRC_PORT => t.src_port = Some(nla::be16(a)?),
                            CTA_PROTO_DST_PORT => t.dst_port = Some(nla::be16(a)?),
                            CTA_PROTO_ICMP_ID => t.icmp_id = Some(nla::be16(a)?),
                            CTA_PROTO_ICMP_TYPE => t.icmp_type = Some(nla::u8v(a)?),
                            CTA_PROTO_ICMP_CODE => t.icmp_code = Some(nla::u8v(a)?),
                            _ => return Err(DecodeError::Unexpected("tuple proto attribute", k)),
                        }
                    }
                }
                CTA_TUPLE_ZONE => t.zone = Some(nla::be16(v)?),
                _ => t.other.push(RawNla {
                    kind,
                    value: v.to_vec(),
                }),
            }
        }
        t.src = src.ok_or(DecodeError::Missing("tuple source address"))?;
        t.dst = dst.ok_or(DecodeError::Missing("tuple destination address"))?;
        t.proto = proto.ok_or(DecodeError::Missing("tuple protocol"))?;
        if t.src.is_ipv4() != t.dst.is_ipv4() {
            return Err(DecodeError::Missing("tuple addresses of one family"));
        }
        Ok(t)
    }

    fn emit(&self, out: &mut Vec<u8>) {
        nla::put_nested(out, CTA_TUPLE_IP, |b| match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                nla::put(b, CTA_IP_V4_SRC, &s.octets());
                nla::put(b, CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                nla::put(b, CTA_IP_V6_SRC, &v6(s).octets());
                nla::put(b, CTA_IP_V6_DST, &v6(d).octets());
            }
        });
        nla::put_nested(out, CTA_TUPLE_PROTO, |b| {
            nla::put(b, CTA_PROTO_NUM, &[self.proto]);
            if let Some(p) = self.src_port {
                nla::put(b, CTA_PROTO_SRC_PORT, &p.to_be_bytes());
            }
            if let Some(p) = self.dst_port {
                nla::put(b, CTA_PROTO_DST_PORT, &p.to_be_bytes());
            }
            if let Some(p) = self.icmp_id {
                nla::put(b, CTA_PROTO_ICMP_ID, &p.to_be_bytes());
            }
            if let Some(p) = self.icmp_type {
                nla::put(b, CTA_PROTO_ICMP_TYPE, &[p]);
            }
            if let Some(p) = self.icmp_code {
                nla::put(b, CTA_PROTO_ICMP_CODE, &[p]);
            }
        });
        if let Some(z) = self.zone {
            nla::put(out, CTA_TUPLE_ZONE, &z.to_be_bytes());
        }
        for o in &self.other {
            nla::put(out, o.kind, &o.value);
        }
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

fn ip4(v: &[u8]) -> Result<IpAddr, DecodeError> {
    <[u8; 4]>::try_from(v)
        .map(|o| IpAddr::V4(o.into()))
        .map_err(|_| DecodeError::Truncated("IPv4 address"))
}

fn ip6(v: &[u8]) -> Result<IpAddr, DecodeError> {
    <[u8; 16]>::try_from(v)
        .map(|o| IpAddr::V6(o.into()))
        .map_err(|_| DecodeError::Truncated("IPv6 address"))
}

/// `CTA_PROTOINFO_TCP`: state, window scales and flags per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: Option<u8>,
    pub wscale_orig: Option<u8>,
    pub wscale_reply: Option<u8>,
    /// `struct nf_ct_tcp_flags { flags, mask }`.
    pub flags_orig: Option<[u8; 2]>,
    pub flags_reply: Option<[u8; 2]>,
}

/// `CTA_PROTOINFO`: TCP modelled, other protocols kept raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtoInfo {
    pub tcp: Option<TcpInfo>,
    pub other: Vec<RawNla>,
}

impl ProtoInfo {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut p = ProtoInfo::default();
        for a in nla::iter(buf) {
            let (kind, v) = a?;
            if kind & !NLA_F_NESTED == CTA_PROTOINFO_TCP {
                let mut t = TcpInfo::default();
                for a in nla::iter(v) {
                    let (k, a) = a?;
                    match k {
                        CTA_PROTOINFO_TCP_STATE => t.state = Some(nla::u8v(a)?),
                        CTA_PROTOINFO_TCP_WSCALE_ORIGINAL => t.wscale_orig = Some(nla::u8v(a)?),
                        CTA_PROTOINFO_TCP_WSCALE_REPLY => t.wscale_reply = Some(nla::u8v(a)?),
                        CTA_PROTOINFO_TCP_FLAGS_ORIGINAL => t.flags_orig = Some(flags(a)?),
                        CTA_PROTOINFO_TCP_FLAGS_REPLY => t.flags_reply = Some(flags(a)?),
                        _ => return Err(DecodeError::Unexpected("tcp protoinfo attribute", k)),
                    }
                }
                p.tcp = Some(t);
            } else {
                p.other.push(RawNla {
                    kind,
                    value: v.to_vec(),
                });
            }
        }
        Ok(p)
    }

    fn emit(&self, out: &mut Vec<u8>) {
        if let Some(t) = &self.tcp {
            nla::put_nested(out, CTA_PROTOINFO_TCP, |b| {
                if let Some(s) = t.state {
                    nla::put(b, CTA_PROTOINFO_TCP_STATE, &[s]);
                }
                if let Some(s) = t.wscale_orig {
                    nla::put(b, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, &[s]);
                }
                if let Some(s) = t.wscale_reply {
                    nla::put(b, CTA_PROTOINFO_TCP_WSCALE_REPLY, &[s]);
                }
                if let Some(f) = t.flags_orig {
                    nla::put(b, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &f);
                }
                if let Some(f) = t.flags_reply {
                    nla::put(b, CTA_PROTOINFO_TCP_FLAGS_REPLY, &f);
                }
            });
        }
        for o in &self.other {
            nla::put(out, o.kind, &o.value);
        }
    }
}

fn flags(v: &[u8]) -> Result<[u8; 2], DecodeError> {
    <[u8; 2]>::try_from(v).map_err(|_| DecodeError::Truncated("tcp flags"))
}

/// A NAT range for CT_NEW (`CTA_NAT_SRC`/`CTA_NAT_DST`): pinned to one address and port
/// when we recreate a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRange {
    pub min_ip: IpAddr,
    pub max_ip: IpAddr,
    pub ports: Option<(u16, u16)>,
}

impl NatRange {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let (mut min, mut max, mut ports) = (None, None, None);
        for a in nla::iter(buf) {
            let (kind, v) = a?;
            match kind & !NLA_F_NESTED {
                CTA_NAT_V4_MINIP => min = Some(ip4(v)?),
                CTA_NAT_V4_MAXIP => max = Some(ip4(v)?),
                CTA_NAT_V6_MINIP => min = Some(ip6(v)?),
                CTA_NAT_V6_MAXIP => max = Some(ip6(v)?),
                CTA_NAT_PROTO => {
                    let (mut lo, mut hi) = (None, None);
                    for a in nla::iter(v) {
                        let (k, a) = a?;
                        match k {
                            CTA_PROTONAT_PORT_MIN => lo = Some(nla::be16(a)?),
                            CTA_PROTONAT_PORT_MAX => hi = Some(nla::be16(a)?),
                            _ => return Err(DecodeError::Unexpected("nat proto attribute", k)),
                        }
                    }
                    let lo = lo.ok_or(DecodeError::Missing("nat port min"))?;
                    ports = Some((lo, hi.unwrap_or(lo)));
                }
                k => return Err(DecodeError::Unexpected("nat attribute", k)),
            }
        }
        let min_ip = min.ok_or(DecodeError::Missing("nat min address"))?;
        Ok(NatRange {
            min_ip,
            max_ip: max.unwrap_or(min_ip),
            ports,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match (self.min_ip, self.max_ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                nla::put(out, CTA_NAT_V4_MINIP, &a.octets());
                nla::put(out, CTA_NAT_V4_MAXIP, &b.octets());
            }
            (a, b) => {
                nla::put(out, CTA_NAT_V6_MINIP, &v6(a).octets());
                nla::put(out, CTA_NAT_V6_MAXIP, &v6(b).octets());
            }
        }
        if let Some((lo, hi)) = self.ports {
            nla::put_nested(out, CTA_NAT_PROTO, |b| {
                nla::put(b, CTA_PROTONAT_PORT_MIN, &lo.to_be_bytes());
                nla::put(b, CTA_PROTONAT_PORT_MAX, &hi.to_be_bytes());
            });
        }
    }
}

/// One top-level ctnetlink attribute, in the order it came.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CtAttr {
    TupleOrig(Tuple),
    TupleReply(Tuple),
    Status(u32),
    ProtoInfo(ProtoInfo),
    NatSrc(NatRange),
    NatDst(NatRange),
    Timeout(u32),
    Mark(u32),
    Use(u32),
    Id(u32),
    Zone(u16),
    Labels(Vec<u8>),
    Other(RawNla),
}

/// Parses the attributes of a ctnetlink message body (after `struct nfgenmsg`).
pub fn parse_attrs(buf: &[u8]) -> Result<Vec<CtAttr>, DecodeError> {
    nla::parse(buf)?
        .into_iter()
        .map(|(kind, v)| {
            Ok(match kind & !NLA_F_NESTED {
                CTA_TUPLE_ORIG => CtAttr::TupleOrig(Tuple::parse(v)?),
                CTA_TUPLE_REPLY => CtAttr::TupleReply(Tuple::parse(v)?),
                CTA_STATUS => CtAttr::Status(nla::be32(v)?),
                CTA_PROTOINFO => CtAttr::ProtoInfo(ProtoInfo::parse(v)?),
                CTA_NAT_SRC => CtAttr::NatSrc(NatRange::parse(v)?),
                CTA_NAT_DST => CtAttr::NatDst(NatRange::parse(v)?),
                CTA_TIMEOUT => CtAttr::Timeout(nla::be32(v)?),
                CTA_MARK => CtAttr::Mark(nla::be32(v)?),
                CTA_USE => CtAttr::Use(nla::be32(v)?),
                CTA_ID => CtAttr::Id(nla::be32(v)?),
                CTA_ZONE => CtAttr::Zone(nla::be16(v)?),
                CTA_LABELS => CtAttr::Labels(v.to_vec()),
                _ => CtAttr::Other(RawNla {
                    kind,
                    value: v.to_vec(),
                }),
            })
        })
        .collect()
}

pub fn emit_attrs(attrs: &[CtAttr], out: &mut Vec<u8>) {
    for a in attrs {
        match a {
            CtAttr::TupleOrig(t) => nla::put_nested(out, CTA_TUPLE_ORIG, |b| t.emit(b)),
            CtAttr::TupleReply(t) => nla::put_nested(out, CTA_TUPLE_REPLY, |b| t.emit(b)),
            CtAttr::Status(v) => nla::put(out, CTA_STATUS, &v.to_be_bytes()),
            CtAttr::ProtoInfo(p) => nla::put_nested(out, CTA_PROTOINFO, |b| p.emit(b)),
            CtAttr::NatSrc(n) => nla::put_nested(out, CTA_NAT_SRC, |b| n.emit(b)),
            CtAttr::NatDst(n) => nla::put_nested(out, CTA_NAT_DST, |b| n.emit(b)),
            CtAttr::Timeout(v) => nla::put(out, CTA_TIMEOUT, &v.to_be_bytes()),
            CtAttr::Mark(v) => nla::put(out, CTA_MARK, &v.to_be_bytes()),
            CtAttr::Use(v) => nla::put(out, CTA_USE, &v.to_be_bytes()),
            CtAttr::Id(v) => nla::put(out, CTA_ID, &v.to_be_bytes()),
            CtAttr::Zone(v) => nla::put(out, CTA_ZONE, &v.to_be_bytes()),
            CtAttr::Labels(v) => nla::put(out, CTA_LABELS, v),
            CtAttr::Other(r) => nla::put(out, r.kind, &r.value),
        }
    }
}

/// The netlink header fields of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlHeader {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

/// A whole ctnetlink message: netlink header, `struct nfgenmsg`, attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtMessage {
    pub header: NlHeader,
    pub family: u8,
    pub version: u8,
    /// `res_id`, big endian on the wire.
    pub res_id: u16,
    pub attrs: Vec<CtAttr>,
}

impl CtMessage {
    /// A request of this node: `IPCTNL_MSG_CT_*` under the CTNETLINK subsystem.
    pub fn request(msg: u8, flags: u16, seq: u32, family: u8, attrs: Vec<CtAttr>) -> Self {
        CtMessage {
            header: NlHeader {
                kind: (NFNL_SUBSYS_CTNETLINK << 8) | u16::from(msg),
                flags: NLM_F_REQUEST | flags,
                seq,
                pid: 0,
            },
            family,
            version: 0,
            res_id: 0,
            attrs,
        }
    }

    /// The `IPCTNL_MSG_CT_*` type, if the message belongs to CTNETLINK.
    pub fn ct_type(&self) -> Option<u8> {
        (self.header.kind >> 8 == NFNL_SUBSYS_CTNETLINK).then_some((self.header.kind & 0xff) as u8)
    }

    /// Parses one netlink message (header included); the buffer must hold exactly it.
    pub fn parse(header: NlHeader, body: &[u8]) -> Result<Self, DecodeError> {
        if body.len() < 4 {
            return Err(DecodeError::Truncated("nfgenmsg"));
        }
        Ok(CtMessage {
            header,
            family: body[0],
            version: body[1],
            res_id: u16::from_be_bytes([body[2], body[3]]),
            attrs: parse_attrs(&body[4..])?,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.header.kind.to_ne_bytes());
        out.extend_from_slice(&self.header.flags.to_ne_bytes());
        out.extend_from_slice(&self.header.seq.to_ne_bytes());
        out.extend_from_slice(&self.header.pid.to_ne_bytes());
        out.extend_from_slice(&[self.family, self.version]);
        out.extend_from_slice(&self.res_id.to_be_bytes());
        emit_attrs(&self.attrs, out);
        let len = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// Clears `NLM_F_ACK` in the header of the message that starts at `at` in `buf`: a
/// request without it is answered only when it fails (the kernel acknowledges an error
/// whatever the flags), so a datagram of requests that asks an ack of its last one only
/// gets one answer when all succeed, instead of one answer (and one receive) per request.
pub fn clear_ack(buf: &mut [u8], at: usize) {
    let flags = &mut buf[at + 6..at + 8];
    let f = u16::from_ne_bytes([flags[0], flags[1]]) & !NLM_F_ACK;
    flags.copy_from_slice(&f.to_ne_bytes());
}

/// Splits a datagram into netlink messages: (header, body after the 16-byte header).
pub fn split_messages(buf: &[u8]) -> Result<Vec<(NlHeader, &[u8])>, DecodeError> {
    messages(buf).collect()
}

/// The messages of a datagram one by one, without collecting them (the event reader's
/// split, one datagram per event). Yields an error (and then stops) where
/// [`split_messages`] would fail; fewer than 16 bytes left over end it.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf }
}

#[derive(Debug, Clone)]
pub struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<(NlHeader, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            self.buf = &[];
            return Some(Err(DecodeError::BadLength {
                kind: 0,
                len: len.min(usize::from(u16::MAX)),
            }));
        }
        let h = NlHeader {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            pid: u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]),
        };
        self.buf = &buf[nla::align4(len).min(buf.len())..];
        Some(Ok((h, &buf[16..len])))
    }
}

/// The errno of an `NLMSG_ERROR` body (0 is an ack).
pub fn error_code(body: &[u8]) -> Result<i32, DecodeError> {
    body.get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Truncated("nlmsgerr"))
}

/// The state this crate replicates for one conntrack entry: both tuples, status, timeout,
/// TCP protoinfo, mark, zone, labels, and through the reply tuple the NAT binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub status: u32,
    /// Seconds left, as the kernel reported it.
    pub timeout: u32,
    pub mark: u32,
    pub zone: u16,
    pub protoinfo: Option<ProtoInfo>,
    pub labels: Option<Vec<u8>>,
}

/// The identity of an entry: its original tuple in its zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    pub zone: u16,
    pub orig: Tuple,
}

impl CtKey {
    /// Appends the key as attributes (the original tuple, and the zone unless 0): what
    /// a deletion carries between nodes.
    pub fn emit(&self, out: &mut Vec<u8>) {
        nla::put_nested(out, CTA_TUPLE_ORIG, |b| self.orig.emit(b));
        if self.zone != 0 {
            nla::put(out, CTA_ZONE, &self.zone.to_be_bytes());
        }
    }

    /// Decodes a key written by [`CtKey::emit`] (or any entry's attributes: only the
    /// original tuple and the zone are read, the rest is skipped); `None` without an
    /// original tuple.
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        let (mut orig, mut zone) = (None, 0);
        for a in nla::iter(buf) {
            let (kind, v) = a?;
            match kind & !NLA_F_NESTED {
                CTA_TUPLE_ORIG => orig = Some(Tuple::parse(v)?),
                CTA_ZONE => zone = nla::be16(v)?,
                _ => {}
            }
        }
        Ok(orig.map(|orig| CtKey { zone, orig }))
    }
}

impl CtEntry {
    /// An entry with placeholder tuples and no attributes, filled in by the decoders.
    fn empty() -> Self {
        CtEntry {
            orig: Tuple::placeholder(),
            reply: Tuple::placeholder(),
            status: 0,
            timeout: 0,
            mark: 0,
            zone: 0,
            protoinfo: None,
            labels: None,
        }
    }

    /// Builds the entry from a dump or event message; `None` when the tuples are missing
    /// (e.g. a DESTROY event carries them, a stats message does not).
    pub fn from_attrs(attrs: &[CtAttr]) -> Option<Self> {
        let mut orig = None;
        let mut reply = None;
        let mut e = CtEntry::empty();
        for a in attrs {
            match a {
                CtAttr::TupleOrig(t) => orig = Some(t.clone()),
                CtAttr::TupleReply(t) => reply = Some(t.clone()),
                CtAttr::Status(s) => e.status = *s,
                CtAttr::Timeout(s) => e.timeout = *s,
                CtAttr::Mark(s) => e.mark = *s,
                CtAttr::Zone(s) => e.zone = *s,
                CtAttr::ProtoInfo(p) => e.protoinfo = Some(p.clone()),
                CtAttr::Labels(l) => e.labels = Some(l.clone()),
                _ => {}
            }
        }
        e.orig = orig?;
        e.reply = reply?;
        Some(e)
    }

    /// Decodes the entry straight from the attributes of a ctnetlink message body (after
    /// `struct nfgenmsg`) or a sync batch item, in one pass and without the intermediate
    /// [`CtAttr`] list: the same result as `from_attrs(&parse_attrs(buf)?)`, errors
    /// included (attributes it does not keep are still checked), at a fraction of the
    /// cost. This is the replication path's decoder (dump, events, sync frames).
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        let mut orig = None;
        let mut reply = None;
        let mut e = CtEntry::empty();
        for a in nla::iter(buf) {
            let (kind, v) = a?;
            match kind & !NLA_F_NESTED {
                CTA_TUPLE_ORIG => orig = Some(Tuple::parse(v)?),
                CTA_TUPLE_REPLY => reply = Some(Tuple::parse(v)?),
                CTA_STATUS => e.status = nla::be32(v)?,
                CTA_PROTOINFO => e.protoinfo = Some(ProtoInfo::parse(v)?),
                CTA_NAT_SRC | CTA_NAT_DST => {
                    NatRange::parse(v)?;
                }
                CTA_TIMEOUT => e.timeout = nla::be32(v)?,
                CTA_MARK => e.mark = nla::be32(v)?,
                CTA_USE | CTA_ID => {
                    nla::be32(v)?;
                }
                CTA_ZONE => e.zone = nla::be16(v)?,
                CTA_LABELS => e.labels = Some(v.to_vec()),
                _ => {}
            }
        }
        let (Some(o), Some(r)) = (orig, reply) else {
            return Ok(None);
        };
        e.orig = o;
        e.reply = r;
        Ok(Some(e))
    }

    /// Appends the replicated state as attributes: the bytes of
    /// `emit_attrs(&self.attrs(), out)`, without building the list.
    pub fn emit(&self, out: &mut Vec<u8>) {
        nla::put_nested(out, CTA_TUPLE_ORIG, |b| self.orig.emit(b));
        nla::put_nested(out, CTA_TUPLE_REPLY, |b| self.reply.emit(b));
        nla::put(out, CTA_STATUS, &self.status.to_be_bytes());
        nla::put(out, CTA_TIMEOUT, &self.timeout.to_be_bytes());
        if self.mark != 0 {
            nla::put(out, CTA_MARK, &self.mark.to_be_bytes());
        }
        if self.zone != 0 {
            nla::put(out, CTA_ZONE, &self.zone.to_be_bytes());
        }
        if let Some(p) = &self.protoinfo {
            nla::put_nested(out, CTA_PROTOINFO, |b| p.emit(b));
        }
        if let Some(l) = &self.labels {
            nla::put(out, CTA_LABELS, l);
        }
    }

    /// Plain tuples of one family and protocol, TCP protoinfo or none, no labels: an entry
    /// that fixed-size forms (the sync protocol's compact item, the standby's cache slot)
    /// hold exactly.
    pub fn is_plain(&self) -> bool {
        self.orig.is_plain()
            && self.reply.is_plain()
            && self.orig.src.is_ipv4() == self.reply.src.is_ipv4()
            && self.orig.proto == self.reply.proto
            && self.labels.is_none()
            && match &self.protoinfo {
                None => true,
                Some(p) => p.tcp.is_some() && p.other.is_empty(),
            }
    }

    pub fn key(&self) -> CtKey {
        CtKey {
            zone: self.zone,
            orig: self.orig.clone(),
        }
    }

    /// The source NAT binding: the address and port the reply is sent to.
    pub fn snat(&self) -> Option<NatRange> {
        (self.status & status::SRC_NAT != 0).then(|| NatRange {
            min_ip: self.reply.dst,
            max_ip: self.reply.dst,
            ports: self.reply.dst_port.map(|p| (p, p)),
        })
    }

    /// The destination NAT binding: the address and port the reply comes from.
    pub fn dnat(&self) -> Option<NatRange> {
        (self.status & status::DST_NAT != 0).then(|| NatRange {
            min_ip: self.reply.src,
            max_ip: self.reply.src,
            ports: self.reply.src_port.map(|p| (p, p)),
        })
    }

    /// Attributes that replicate the entry: the state carried between nodes.
    pub fn attrs(&self) -> Vec<CtAttr> {
        let mut v = vec![
            CtAttr::TupleOrig(self.orig.clone()),
            CtAttr::TupleReply(self.reply.clone()),
            CtAttr::Status(self.status),
            CtAttr::Timeout(self.timeout),
        ];
        if self.mark != 0 {
            v.push(CtAttr::Mark(self.mark));
        }
        if self.zone != 0 {
            v.push(CtAttr::Zone(self.zone));
        }
        if let Some(p) = &self.protoinfo {
            v.push(CtAttr::ProtoInfo(p.clone()));
        }
        if let Some(l) = &self.labels {
            v.push(CtAttr::Labels(l.clone()));
        }
        v
    }

    /// Attributes of a CT_NEW that recreates the entry with its NAT binding. `timeout`
    /// is the remaining lifetime to give it (at least 1 s: the kernel requires one).
    pub fn create_attrs(&self, timeout: u32) -> Vec<CtAttr> {
        let (snat, dnat) = (self.snat(), self.dnat());
        // With a NAT binding the reply tuple must be the un-NATed inverse of the original
        // one: the kernel derives the NATed reply from it and the ranges, and only then
        // marks the entry SRC_NAT/DST_NAT. Given the already-NATed reply, it finds nothing
        // to change, leaves the NAT bits clear, and forwards the flow without NAT (the
        // flow dies at failover although `conntrack -L` shows the right tuples).
        // conntrackd does the same (`NFCT_SOPT_SETUP_REPLY`).
        let reply = if snat.is_some() || dnat.is_some() {
            self.unnatted_reply()
        } else {
            self.reply.clone()
        };
        let mut v = vec![
            CtAttr::TupleOrig(self.orig.clone()),
            CtAttr::TupleReply(reply),
        ];
        if let Some(n) = snat {
            v.push(CtAttr::NatSrc(n));
        }
        if let Some(n) = dnat {
            v.push(CtAttr::NatDst(n));
        }
        // The kernel refuses a status that clears CONFIRMED (set on every created entry)
        // and ignores the NAT bits (set by the NAT setup above); the rest it takes.
        let keep = !(status::EXPECTED
            | status::DYING
            | status::TEMPLATE
            | status::UNTRACKED
            | status::OFFLOAD
            | status::HW_OFFLOAD);
        v.push(CtAttr::Status((self.status & keep) | status::CONFIRMED));
        v.push(CtAttr::Timeout(timeout.max(1)));
        if self.mark != 0 {
            v.push(CtAttr::Mark(self.mark));
        }
        if self.zone != 0 {
            v.push(CtAttr::Zone(self.zone));
        }
        if let Some(p) = &self.protoinfo {
            v.push(CtAttr::ProtoInfo(p.for_create()));
        }
        if let Some(l) = &self.labels {
            v.push(CtAttr::Labels(l.clone()));
        }
        v
    }

    /// Attributes of a CT_NEW without NLM_F_CREATE that updates an entry the kernel holds
    /// already (direct inject of a later state): no reply tuple or NAT binding, which the
    /// kernel refuses to change on an existing entry (EOPNOTSUPP).
    pub fn update_attrs(&self, timeout: u32) -> Vec<CtAttr> {
        self.create_attrs(timeout)
            .into_iter()
            .filter(|a| {
                !matches!(
                    a,
                    CtAttr::TupleReply(_) | CtAttr::NatSrc(_) | CtAttr::NatDst(_)
                )
            })
            .chain((self.mark == 0).then_some(CtAttr::Mark(0)))
            .collect()
    }

    /// The reply tuple as it was before NAT: the inverse of the original tuple, keeping
    /// the reply's ICMP type and code (the kernel inverted those already).
    pub fn unnatted_reply(&self) -> Tuple {
        let mut r = self.reply.clone();
        r.src = self.orig.dst;
        r.dst = self.orig.src;
        if r.src_port.is_some() || r.dst_port.is_some() {
            r.src_port = self.orig.dst_port;
            r.dst_port = self.orig.src_port;
        }
        if r.icmp_id.is_some() {
            r.icmp_id = self.orig.icmp_id;
        }
        r
    }
}

/// `enum nf_ct_tcp_flags` bits used when recreating an entry.
pub mod tcp_flags {
    pub const WINDOW_SCALE: u8 = 0x01;
    pub const SACK_PERM: u8 = 0x02;
    pub const BE_LIBERAL: u8 = 0x08;
}

impl ProtoInfo {
    /// Protoinfo for a CT_NEW that recreates an entry on the peer. The kernel dumps the TCP
    /// flags with a zero mask, and applies only `flags & mask`: without a mask the window
    /// scale (and so the scaled windows) would be lost. The entry also becomes
    /// BE_LIBERAL: the new node has no sequence/window history of the flow (td_end and
    /// td_maxwin start at zero), and strict window tracking could mark its first segments
    /// INVALID. The cost: this one flow's window checks stay liberal for its lifetime.
    pub fn for_create(&self) -> ProtoInfo {
        let mut p = self.clone();
        if let Some(t) = &mut p.tcp {
            let keep = tcp_flags::WINDOW_SCALE | tcp_flags::SACK_PERM;
            let mask = keep | tcp_flags::BE_LIBERAL;
            let fix = |f: Option<[u8; 2]>| {
                Some([(f.map_or(0, |f| f[0]) & keep) | tcp_flags::BE_LIBERAL, mask])
            };
            t.flags_orig = fix(t.flags_orig);
            t.flags_reply = fix(t.flags_reply);
        }
        p
    }
}

impl Tuple {
    /// One family, ports in both directions and nothing else optional (no ICMP fields, no
    /// directional zone, no attribute this codec does not model): the tuples of nearly every
    /// entry, which fixed-size forms can hold exactly.
    pub fn is_plain(&self) -> bool {
        self.src.is_ipv4() == self.dst.is_ipv4()
            && self.src_port.is_some()
            && self.dst_port.is_some()
            && self.icmp_id.is_none()
            && self.icmp_type.is_none()
            && self.icmp_code.is_none()
            && self.zone.is_none()
            && self.other.is_empty()
    }

    fn placeholder() -> Self {
        Tuple {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            proto: 0,
            src_port: None,
            dst_port: None,
            icmp_id: None,
            icmp_type: None,
            icmp_code: None,
            zone: None,
            other: Vec::new(),
        }
    }
}

/// Addresses and ports of one direction of a plain tuple in fixed fields (an IPv4
/// address in the first 4 bytes, the rest zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

fn octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

fn addr(b: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from(*b)
    } else {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    }
}

impl Ends {
    const ZERO: Ends = Ends {
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
    };

    fn of(t: &Tuple) -> Self {
        Ends {
            src: octets(t.src),
            dst: octets(t.dst),
            sport: t.src_port.unwrap_or(0),
            dport: t.dst_port.unwrap_or(0),
        }
    }

    fn tuple(&self, v6: bool, proto: u8) -> Tuple {
        Tuple {
            src: addr(&self.src, v6),
            dst: addr(&self.dst, v6),
            proto,
            src_port: Some(self.sport),
            dst_port: Some(self.dport),
            ..Tuple::placeholder()
        }
    }
}

/// The key of an entry whose original tuple is plain ([`Tuple::is_plain`]), in fixed
/// fields: what the standby's cache and the active's coalescer hash and compare (a few
/// machine words instead of a walk over a [`Tuple`]'s enums, options and vector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainKey {
    pub ends: Ends,
    pub zone: u16,
    pub proto: u8,
    pub v6: bool,
}

impl PlainKey {
    /// `None` unless `orig` is plain.
    pub fn of(zone: u16, orig: &Tuple) -> Option<Self> {
        orig.is_plain().then(|| PlainKey {
            ends: Ends::of(orig),
            zone,
            proto: orig.proto,
            v6: orig.src.is_ipv6(),
        })
    }

    pub fn key(&self) -> CtKey {
        CtKey {
            zone: self.zone,
            orig: self.ends.tuple(self.v6, self.proto),
        }
    }

    /// Feeds the key to `h` as machine words (two for IPv4, five for IPv6): equal keys
    /// give equal words, and the family is part of the last word.
    pub fn hash_into(&self, h: &mut impl std::hash::Hasher) {
        let e = &self.ends;
        let w = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or_default());
        if self.v6 {
            h.write_u64(w(&e.src[..8]));
            h.write_u64(w(&e.src[8..]));
            h.write_u64(w(&e.dst[..8]));
            h.write_u64(w(&e.dst[8..]));
        } else {
            h.write_u64(
                u64::from(u32::from_ne_bytes([e.src[0], e.src[1], e.src[2], e.src[3]])) << 32
                    | u64::from(u32::from_ne_bytes([e.dst[0], e.dst[1], e.dst[2], e.dst[3]])),
            );
        }
        h.write_u64(
            u64::from(e.sport) << 48
                | u64::from(e.dport) << 32
                | u64::from(self.zone) << 16
                | u64::from(self.proto) << 8
                | u64::from(self.v6),
        );
    }
}

/// A plain entry ([`CtEntry::is_plain`]: nearly all) in fixed fields, ~100 bytes instead of
/// the 240 of a [`CtEntry`], whose optional parts are sized for the rare entries. The sync
/// protocol's compact batch item decodes straight into it and the standby's cache holds
/// it as it is, so the common entry never becomes a [`CtEntry`] on the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainEntry {
    pub orig: Ends,
    pub reply: Ends,
    pub status: u32,
    pub timeout: u32,
    pub mark: u32,
    pub zone: u16,
    pub v6: bool,
    pub proto: u8,
    pub tcp: Option<TcpInfo>,
}

impl PlainEntry {
    /// `None` unless the entry is plain.
    pub fn of(e: &CtEntry) -> Option<Self> {
        e.is_plain().then(|| PlainEntry {
            orig: Ends::of(&e.orig),
            reply: Ends::of(&e.reply),
            status: e.status,
            timeout: e.timeout,
            mark: e.mark,
            zone: e.zone,
            v6: e.orig.src.is_ipv6(),
            proto: e.orig.proto,
            tcp: e.protoinfo.as_ref().and_then(|p| p.tcp),
        })
    }

    /// The entry it stands for.
    pub fn entry(&self) -> CtEntry {
        CtEntry {
            orig: self.orig.tuple(self.v6, self.proto),
            reply: self.reply.tuple(self.v6, self.proto),
            status: self.status,
            timeout: self.timeout,
            mark: self.mark,
            zone: self.zone,
            protoinfo: self.tcp.map(|t| ProtoInfo {
                tcp: Some(t),
                other: Vec::new(),
            }),
            labels: None,
        }
    }

    pub fn key(&self) -> PlainKey {
        PlainKey {
            ends: self.orig,
            zone: self.zone,
            proto: self.proto,
            v6: self.v6,
        }
    }

    /// The addresses the filter looks at: original source and destination, reply source
    /// and destination.
    pub fn addrs(&self) -> [IpAddr; 4] {
        [
            addr(&self.orig.src, self.v6),
            addr(&self.orig.dst, self.v6),
            addr(&self.reply.src, self.v6),
            addr(&self.reply.dst, self.v6),
        ]
    }

    /// Decodes a plain entry straight from the attributes of a ctnetlink message body
    /// (after `struct nfgenmsg`), in one pass and into fixed fields: the event reader's
    /// decoder, which never builds a [`CtEntry`] for the common entry. `Some` exactly
    /// when `CtEntry::decode(buf)` gives a plain entry, and then its [`PlainEntry::of`];
    /// `None` for anything else (not plain, malformed, no tuples), which the caller
    /// hands to [`CtEntry::decode`] for the entry or the error.
    ///
    /// Every attribute [`CtEntry::decode`] checks is checked here too, and a later
    /// attribute of a kind replaces an earlier one as there, so that a plain result is
    /// never one that the full decoder would refuse or read differently.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let (mut orig, mut reply) = (None, None);
        let mut e = PlainEntry {
            orig: Ends::ZERO,
            reply: Ends::ZERO,
            status: 0,
            timeout: 0,
            mark: 0,
            zone: 0,
            v6: false,
            proto: 0,
            tcp: None,
        };
        // A protoinfo is plain when it is absent or TCP alone.
        let mut info_plain = true;
        for a in nla::iter(buf) {
            let (kind, v) = a.ok()?;
            match kind & !NLA_F_NESTED {
                CTA_TUPLE_ORIG => orig = Some(FixedTuple::parse(v)?),
                CTA_TUPLE_REPLY => reply = Some(FixedTuple::parse(v)?),
                CTA_STATUS => e.status = nla::be32(v).ok()?,
                CTA_PROTOINFO => (e.tcp, info_plain) = plain_protoinfo(v)?,
                // Rare in events; checked as the full decoder does, not kept.
                CTA_NAT_SRC | CTA_NAT_DST => {
                    NatRange::parse(v).ok()?;
                }
                CTA_TIMEOUT => e.timeout = nla::be32(v).ok()?,
                CTA_MARK => e.mark = nla::be32(v).ok()?,
                CTA_USE | CTA_ID => {
                    nla::be32(v).ok()?;
                }
                CTA_ZONE => e.zone = nla::be16(v).ok()?,
                // Labels make any entry not plain, whatever follows.
                CTA_LABELS => return None,
                _ => {}
            }
        }
        let (o, r) = (orig?, reply?);
        if !(o.plain && r.plain && o.v6 == r.v6 && o.proto == r.proto && info_plain) {
            return None;
        }
        e.orig = o.ends;
        e.reply = r.ends;
        e.v6 = o.v6;
        e.proto = o.proto;
        Some(e)
    }
}

/// One tuple as [`PlainEntry::decode`] reads it: the fixed fields, and whether the
/// [`Tuple`] that [`Tuple::parse`] would give is plain.
struct FixedTuple {
    ends: Ends,
    proto: u8,
    v6: bool,
    plain: bool,
}

impl FixedTuple {
    /// `None` where [`Tuple::parse`] fails; the same attribute checks, in one pass.
    fn parse(buf: &[u8]) -> Option<Self> {
        let (mut src, mut dst) = (None, None);
        let (mut proto, mut sport, mut dport) = (None, None, None);
        let mut plain = true;
        for a in nla::iter(buf) {
            let (kind, v) = a.ok()?;
            match kind & !NLA_F_NESTED {
                CTA_TUPLE_IP => {
                    for a in nla::iter(v) {
                        let (k, a) = a.ok()?;
                        match k {
                            CTA_IP_V4_SRC => src = Some(fixed4(a)?),
                            CTA_IP_V4_DST => dst = Some(fixed4(a)?),
                            CTA_IP_V6_SRC => src = Some((<[u8; 16]>::try_from(a).ok()?, true)),
                            CTA_IP_V6_DST => dst = Some((<[u8; 16]>::try_from(a).ok()?, true)),
                            _ => return None,
                        }
                    }
                }
                CTA_TUPLE_PROTO => {
                    for a in nla::iter(v) {
                        let (k, a) = a.ok()?;
                        match k {
                            CTA_PROTO_NUM => proto = Some(nla::u8v(a).ok()?),
                            CTA_PROTO_SRC_PORT => sport = Some(nla::be16(a).ok()?),
                            CTA_PROTO_DST_PORT => dport = Some(nla::be16(a).ok()?),
                            CTA_PROTO_ICMP_ID => {
                                nla::be16(a).ok()?;
                                plain = false;
                            }
                            CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMP_CODE => {
                                nla::u8v(a).ok()?;
                                plain = false;
                            }
                            _ => return None,
                        }
                    }
                }
                CTA_TUPLE_ZONE => {
                    nla::be16(v).ok()?;
                    plain = false;
                }
                // Kept by the full decoder as `other`: not plain.
                _ => plain = false,
            }
        }
        let ((src, v6), (dst, dst_v6), proto) = (src?, dst?, proto?);
        if v6 != dst_v6 {
            return None;
        }
        Some(FixedTuple {
            ends: Ends {
                src,
                dst,
                sport: sport.unwrap_or(0),
                dport: dport.unwrap_or(0),
            },
            proto,
            v6,
            plain: plain && sport.is_some() && dport.is_some(),
        })
    }
}

/// An IPv4 address in the fixed form of [`Ends`] (first 4 bytes), not IPv6.
fn fixed4(v: &[u8]) -> Option<([u8; 16], bool)> {
    let o = <[u8; 4]>::try_from(v).ok()?;
    let mut b = [0; 16];
    b[..4].copy_from_slice(&o);
    Some((b, false))
}

/// `CTA_PROTOINFO` as [`ProtoInfo::parse`] reads it (`None` where it fails): the TCP
/// part, and whether the protoinfo is plain (TCP and nothing else).
fn plain_protoinfo(buf: &[u8]) -> Option<(Option<TcpInfo>, bool)> {
    let (mut tcp, mut other) = (None, false);
    for a in nla::iter(buf) {
        let (kind, v) = a.ok()?;
        if kind & !NLA_F_NESTED == CTA_PROTOINFO_TCP {
            let mut t = TcpInfo::default();
            for a in nla::iter(v) {
                let (k, a) = a.ok()?;
                match k {
                    CTA_PROTOINFO_TCP_STATE => t.state = Some(nla::u8v(a).ok()?),
                    CTA_PROTOINFO_TCP_WSCALE_ORIGINAL => t.wscale_orig = Some(nla::u8v(a).ok()?),
                    CTA_PROTOINFO_TCP_WSCALE_REPLY => t.wscale_reply = Some(nla::u8v(a).ok()?),
                    CTA_PROTOINFO_TCP_FLAGS_ORIGINAL => t.flags_orig = Some(flags(a).ok()?),
                    CTA_PROTOINFO_TCP_FLAGS_REPLY => t.flags_reply = Some(flags(a).ok()?),
                    _ => return None,
                }
            }
            tcp = Some(t);
        } else {
            other = true;
        }
    }
    Some((tcp, tcp.is_some() && !other))
}

/// A request to dump the whole table of one family (`AF_UNSPEC` = all).
pub fn dump_request(seq: u32, family: u8) -> Vec<u8> {
    let mut out = Vec::new();
    CtMessage::request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, family, Vec::new()).emit(&mut out);
    out
}

/// A CT_NEW that creates (or updates, if it exists) the entry with its NAT binding.
pub fn create_request(e: &CtEntry, seq: u32, timeout: u32, out: &mut Vec<u8>) {
    CtMessage::request(
        IPCTNL_MSG_CT_NEW,
        NLM_F_CREATE | NLM_F_ACK,
        seq,
        e.orig.family(),
        e.create_attrs(timeout),
    )
    .emit(out);
}

/// A CT_NEW that updates an existing entry (see [`CtEntry::update_attrs`]).
pub fn update_request(e: &CtEntry, seq: u32, timeout: u32, out: &mut Vec<u8>) {
    CtMessage::request(
        IPCTNL_MSG_CT_NEW,
        NLM_F_ACK,
        seq,
        e.orig.family(),
        e.update_attrs(timeout),
    )
    .emit(out);
}

/// A CT_DELETE of the entry with this original tuple and zone.
pub fn delete_request(e: &CtEntry, seq: u32, out: &mut Vec<u8>) {
    let mut attrs = vec![CtAttr::TupleOrig(e.orig.clone())];
    if e.zone != 0 {
        attrs.push(CtAttr::Zone(e.zone));
    }
    CtMessage::request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, e.orig.family(), attrs).emit(out);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn one(bytes: &[u8]) -> CtMessage {
        let msgs = split_messages(bytes).unwrap();
        assert_eq!(msgs.len(), 1);
        CtMessage::parse(msgs[0].0, msgs[0].1).unwrap()
    }

    fn emit(m: &CtMessage) -> Vec<u8> {
        let mut out = Vec::new();
        m.emit(&mut out);
        out
    }

    pub(crate) fn tuple(src: &str, dst: &str, proto: u8, sp: u16, dp: u16) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            src_port: Some(sp),
            dst_port: Some(dp),
            icmp_id: None,
            icmp_type: None,
            icmp_code: None,
            zone: None,
            other: vec![],
        }
    }

    // Captured with conntrack-sync/testdata/capture.sh (run as root): in a netns
    // with `snat to 198.51.100.10` on its uplink, `socat - TCP:203.0.113.10:5000,
    // sourceport=40000` to a `socat TCP-LISTEN:5000 EXEC:cat` server, then
    // `ip netns exec <ns> igw conntrack dump --hex` (Linux 6.x, dump reply, one message).
    pub(crate) const TCP_SNAT: &str = "d400000000010200020000000908000002000000340001801400018008000100c613020108000200cb00710a1c0002800500010006000000060002009c4000000600030013880000340002801400018008000100cb00710a08000200c633640a1c00028005000100060000000600020013880000060003009c400000080003000000019e080008000000000008000c00a4d8619d08000b0000000001080007000006977e300004802c0001800500010003000000050002000a000000050003000a00000006000400230000000600050023000000";
    // Same capture, `socat - UDP:203.0.113.10:5353,sourceport=40001` (unreplied).
    pub(crate) const UDP_SNAT: &str = "a400000000010200020000000908000002000000340001801400018008000100c613020108000200cb00710a1c0002800500010011000000060002009c4100000600030014e90000340002801400018008000100cb00710a08000200c633640a1c00028005000100110000000600020014e90000060003009c4100000800030000000198080008000000000008000c0081f43b9a08000b0000000001080007000000001d";

    #[test]
    fn kernel_capture_tcp_snat() {
        let bytes = hex(TCP_SNAT);
        let m = one(&bytes);
        let want = CtMessage {
            header: NlHeader {
                kind: (NFNL_SUBSYS_CTNETLINK << 8) | u16::from(IPCTNL_MSG_CT_NEW),
                flags: NLM_F_MULTI,
                seq: 2,
                pid: m.header.pid,
            },
            family: libc::AF_INET as u8,
            version: 0,
            res_id: 0,
            attrs: vec![
                CtAttr::TupleOrig(tuple("198.19.2.1", "203.0.113.10", 6, 40000, 5000)),
                CtAttr::TupleReply(tuple("203.0.113.10", "198.51.100.10", 6, 5000, 40000)),
                CtAttr::Status(0x19e),
                CtAttr::Mark(0),
                CtAttr::Id(0xa4d8619d),
                CtAttr::Use(1),
                CtAttr::Timeout(431998),
                CtAttr::ProtoInfo(ProtoInfo {
                    tcp: Some(TcpInfo {
                        state: Some(3),
                        wscale_orig: Some(10),
                        wscale_reply: Some(10),
                        flags_orig: Some([0x23, 0]),
                        flags_reply: Some([0x23, 0]),
                    }),
                    other: vec![],
                }),
            ],
        };
        assert_eq!(m, want);
        assert_eq!(emit(&m), bytes);
        let e = CtEntry::from_attrs(&m.attrs).unwrap();
        let snat = e.snat().unwrap();
        assert_eq!(snat.min_ip, "198.51.100.10".parse::<IpAddr>().unwrap());
        assert_eq!(snat.ports, Some((40000, 40000)));
        assert!(e.dnat().is_none());
    }

    #[test]
    fn kernel_capture_udp_snat() {
        let bytes = hex(UDP_SNAT);
        let m = one(&bytes);
        assert_eq!(emit(&m), bytes);
        let e = CtEntry::from_attrs(&m.attrs).unwrap();
        assert_eq!(e.orig, tuple("198.19.2.1", "203.0.113.10", 17, 40001, 5353));
        assert_eq!(e.status, 0x198);
        assert_eq!(e.timeout, 29);
        assert!(e.protoinfo.is_none());
    }

    #[test]
    fn update_request_leaves_the_nat_binding_alone() {
        let m = one(&hex(TCP_SNAT));
        let e = CtEntry::from_attrs(&m.attrs).unwrap();
        let mut out = Vec::new();
        update_request(&e, 9, 100, &mut out);
        let back = one(&out);
        assert_eq!(back.ct_type(), Some(IPCTNL_MSG_CT_NEW));
        // No CREATE: the kernel updates the entry it has, or answers ENOENT.
        assert_eq!(back.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert!(back.attrs.contains(&CtAttr::TupleOrig(e.orig.clone())));
        assert!(back.attrs.contains(&CtAttr::Timeout(100)));
        assert!(back.attrs.contains(&CtAttr::Mark(e.mark)));
        for a in &back.attrs {
            assert!(
                !matches!(
                    a,
                    CtAttr::TupleReply(_) | CtAttr::NatSrc(_) | CtAttr::NatDst(_)
                ),
                "{a:?} in an update"
            );
        }
        let mut out = Vec::new();
        delete_request(&e, 10, &mut out);
        let back = one(&out);
        assert_eq!(back.ct_type(), Some(IPCTNL_MSG_CT_DELETE));
        assert_eq!(back.attrs, vec![CtAttr::TupleOrig(e.orig.clone())]);
    }

    #[test]
    fn clear_ack_leaves_the_rest_of_the_datagram() {
        let e = sample_entries()[0].clone();
        let mut out = Vec::new();
        create_request(&e, 1, 100, &mut out);
        let second = out.len();
        delete_request(&e, 2, &mut out);
        let before = out.clone();
        clear_ack(&mut out, second);
        let msgs = split_messages(&out).unwrap();
        assert_eq!(msgs[0].0.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        assert_eq!(msgs[1].0.flags, NLM_F_REQUEST);
        assert_eq!(msgs[1].0.seq, 2);
        let changed: Vec<usize> = (0..out.len()).filter(|&i| out[i] != before[i]).collect();
        assert_eq!(changed.len(), 1, "one byte of the flags: {changed:?}");
        clear_ack(&mut out, 0);
        assert_eq!(
            split_messages(&out).unwrap()[0].0.flags,
            NLM_F_REQUEST | NLM_F_CREATE
        );
    }

    #[test]
    fn create_request_carries_the_nat_binding() {
        let m = one(&hex(TCP_SNAT));
        let e = CtEntry::from_attrs(&m.attrs).unwrap();
        let mut out = Vec::new();
        create_request(&e, 9, 100, &mut out);
        let back = one(&out);
        assert_eq!(back.ct_type(), Some(IPCTNL_MSG_CT_NEW));
        assert_eq!(back.header.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        assert!(back.attrs.contains(&CtAttr::NatSrc(NatRange {
            min_ip: "198.51.100.10".parse().unwrap(),
            max_ip: "198.51.100.10".parse().unwrap(),
            ports: Some((40000, 40000)),
        })));
        assert!(back.attrs.contains(&CtAttr::Timeout(100)));
        // The reply tuple sent is the un-NATed inverse, so the kernel sets SRC_NAT itself.
        assert!(back.attrs.contains(&CtAttr::TupleReply(tuple(
            "203.0.113.10",
            "198.19.2.1",
            6,
            5000,
            40000
        ))));
        // TCP flags carry a mask (the dump's is zero) and make the entry liberal.
        let tcp = back
            .attrs
            .iter()
            .find_map(|a| match a {
                CtAttr::ProtoInfo(p) => p.tcp,
                _ => None,
            })
            .unwrap();
        assert_eq!(tcp.flags_orig, Some([0x23 & 0x03 | 0x08, 0x0b]));
        assert_eq!(tcp.wscale_orig, Some(10));
        assert_eq!(emit(&back), out);
        // The replicated state survives its own encoding.
        let mut a = Vec::new();
        emit_attrs(&e.attrs(), &mut a);
        assert_eq!(CtEntry::from_attrs(&parse_attrs(&a).unwrap()), Some(e));
    }

    /// The one-pass decoder and encoder agree with the attribute-list ones, on captures
    /// and on the replicated encoding, errors included.
    #[test]
    fn one_pass_codec_matches_the_attribute_list() {
        let slow = |b: &[u8]| parse_attrs(b).map(|a| CtEntry::from_attrs(&a));
        for cap in [TCP_SNAT, UDP_SNAT] {
            let bytes = hex(cap);
            let body = &split_messages(&bytes).unwrap()[0].1[4..];
            let e = CtEntry::decode(body).unwrap().unwrap();
            assert_eq!(slow(body), Ok(Some(e.clone())));
            let mut fast = Vec::new();
            e.emit(&mut fast);
            let mut listed = Vec::new();
            emit_attrs(&e.attrs(), &mut listed);
            assert_eq!(fast, listed);
            assert_eq!(CtEntry::decode(&fast), Ok(Some(e.clone())));
            // Every truncation: the same outcome from both.
            for cut in 0..body.len() {
                assert_eq!(
                    CtEntry::decode(&body[..cut]),
                    slow(&body[..cut]),
                    "cut {cut}"
                );
            }
        }
        let mut e = CtEntry::decode(&split_messages(&hex(TCP_SNAT)).unwrap()[0].1[4..])
            .unwrap()
            .unwrap();
        e.mark = 9;
        e.zone = 4;
        e.labels = Some(vec![1; 16]);
        let (mut fast, mut listed) = (Vec::new(), Vec::new());
        e.emit(&mut fast);
        emit_attrs(&e.attrs(), &mut listed);
        assert_eq!(fast, listed);
        assert_eq!(CtEntry::decode(&fast), Ok(Some(e)));
        // No tuples (a stats message): no entry; a bad NAT range: the same error.
        let mut b = Vec::new();
        nla::put(&mut b, CTA_STATUS, &1u32.to_be_bytes());
        assert_eq!(CtEntry::decode(&b), Ok(None));
        nla::put_nested(&mut b, CTA_NAT_SRC, |b| nla::put(b, 77, &[1]));
        assert_eq!(CtEntry::decode(&b), slow(&b));
        assert!(CtEntry::decode(&b).is_err());
    }

    #[test]
    fn unknown_attributes_are_kept() {
        let mut a = Vec::new();
        nla::put(&mut a, 99, &[1, 2, 3]);
        nla::put_nested(&mut a, CTA_TUPLE_ORIG, |b| {
            tuple("198.18.1.10", "203.0.113.10", 6, 1, 2).emit(b);
            nla::put(b, 42, &[5]);
        });
        let attrs = parse_attrs(&a).unwrap();
        assert!(matches!(&attrs[0], CtAttr::Other(r) if r.kind() == 99));
        let mut again = Vec::new();
        emit_attrs(&attrs, &mut again);
        assert_eq!(again, a);
    }

    #[test]
    fn icmp_and_ipv6_tuples_round_trip() {
        let t = Tuple {
            src: "fd00:198:18::10".parse().unwrap(),
            dst: "2001:db8::10".parse().unwrap(),
            proto: 1,
            src_port: None,
            dst_port: None,
            icmp_id: Some(7),
            icmp_type: Some(8),
            icmp_code: Some(0),
            zone: Some(3),
            other: vec![],
        };
        let mut b = Vec::new();
        t.emit(&mut b);
        assert_eq!(Tuple::parse(&b).unwrap(), t);
    }

    /// Entries of every shape an event can carry: plain ones (IPv4/IPv6, TCP with full,
    /// partial or no protoinfo, UDP, SNAT, DNAT, zone, mark) and each way of not being
    /// plain (ICMP, labels, a directional zone, an unmodelled tuple or protoinfo
    /// attribute, protoinfo without TCP, mixed families, mixed protocols).
    pub(crate) fn sample_entries() -> Vec<CtEntry> {
        let tcp = TcpInfo {
            state: Some(3),
            wscale_orig: Some(7),
            wscale_reply: Some(10),
            flags_orig: Some([0x23, 0]),
            flags_reply: Some([0x22, 0]),
        };
        let snat = CtEntry {
            orig: tuple("198.18.1.10", "203.0.113.10", 6, 40000, 443),
            reply: tuple("203.0.113.10", "198.51.100.10", 6, 443, 1024),
            status: 0x19e,
            timeout: 431_999,
            mark: 0,
            zone: 0,
            protoinfo: Some(ProtoInfo {
                tcp: Some(tcp),
                other: vec![],
            }),
            labels: None,
        };
        let with = |f: &dyn Fn(&mut CtEntry)| {
            let mut e = snat.clone();
            f(&mut e);
            e
        };
        let icmp = |t: &mut Tuple, ty| {
            t.proto = 1;
            (t.src_port, t.dst_port) = (None, None);
            (t.icmp_id, t.icmp_type, t.icmp_code) = (Some(77), Some(ty), Some(0));
        };
        vec![
            snat.clone(),
            with(&|e| e.protoinfo = None),
            with(&|e| {
                e.protoinfo = Some(ProtoInfo {
                    tcp: Some(TcpInfo {
                        state: Some(1),
                        ..TcpInfo::default()
                    }),
                    other: vec![],
                })
            }),
            with(&|e| {
                e.orig = tuple("198.18.1.10", "203.0.113.53", 17, 40001, 53);
                e.reply = tuple("203.0.113.53", "198.18.1.10", 17, 53, 40001);
                e.status = 0x18a;
                e.protoinfo = None;
            }),
            with(&|e| {
                e.orig = tuple("fd00:198:18::10", "2001:db8::10", 6, 40000, 443);
                e.reply = tuple("2001:db8::10", "fd00:198:18::10", 6, 443, 40000);
                e.status = 0x18e;
            }),
            with(&|e| {
                e.orig = tuple("fd00:198:18::10", "2001:db8::53", 17, 5353, 53);
                e.reply = tuple("2001:db8::53", "fd00:198:18::10", 17, 53, 5353);
                e.protoinfo = None;
            }),
            // DNAT: the reply comes from the internal server.
            with(&|e| {
                e.orig = tuple("203.0.113.10", "198.51.100.10", 6, 40000, 443);
                e.reply = tuple("198.18.1.20", "203.0.113.10", 6, 8443, 40000);
                e.status = 0x1ae;
            }),
            with(&|e| e.zone = 7),
            with(&|e| e.mark = 0xdead_beef),
            with(&|e| {
                (e.zone, e.mark, e.timeout) = (65535, 1, 0);
            }),
            // Not plain:
            with(&|e| {
                icmp(&mut e.orig, 8);
                icmp(&mut e.reply, 0);
                e.protoinfo = None;
            }),
            with(&|e| e.labels = Some(vec![0; 16])),
            with(&|e| e.orig.zone = Some(3)),
            with(&|e| e.reply.zone = Some(3)),
            with(&|e| {
                e.reply.other = vec![RawNla {
                    kind: 42,
                    value: vec![1, 2, 3, 4],
                }]
            }),
            with(&|e| {
                e.protoinfo = Some(ProtoInfo {
                    tcp: None,
                    other: vec![RawNla {
                        kind: 2 | NLA_F_NESTED,
                        value: vec![],
                    }],
                })
            }),
            with(&|e| e.protoinfo = Some(ProtoInfo::default())),
            with(&|e| e.reply = tuple("2001:db8::10", "fd00::1", 6, 443, 1024)),
            with(&|e| e.reply.proto = 17),
            with(&|e| e.orig.dst_port = None),
        ]
    }

    /// The encodings of an entry a decoder meets: the replicated form, a CT_NEW body
    /// (NAT ranges), and the kernel's event layout (use count and id among the rest).
    pub(crate) fn encodings(e: &CtEntry) -> Vec<Vec<u8>> {
        let mut replicated = Vec::new();
        e.emit(&mut replicated);
        let mut create = Vec::new();
        emit_attrs(&e.create_attrs(30), &mut create);
        let mut kernel = Vec::new();
        let mut attrs = vec![
            CtAttr::TupleOrig(e.orig.clone()),
            CtAttr::TupleReply(e.reply.clone()),
            CtAttr::Status(e.status),
            CtAttr::Mark(e.mark),
            CtAttr::Id(0xa4d8_619d),
            CtAttr::Use(1),
            CtAttr::Timeout(e.timeout),
            CtAttr::Zone(e.zone),
            CtAttr::Other(RawNla {
                kind: 15 | NLA_F_NESTED,
                value: vec![8, 0, 1, 0, 0, 0, 0, 1],
            }),
        ];
        attrs.extend(e.protoinfo.clone().map(CtAttr::ProtoInfo));
        attrs.extend(e.labels.clone().map(CtAttr::Labels));
        emit_attrs(&attrs, &mut kernel);
        vec![replicated, create, kernel]
    }

    /// What the one-pass plain decoder must give: the full decoder's entry, when plain,
    /// in fixed fields.
    fn full_then_plain(b: &[u8]) -> Option<PlainEntry> {
        CtEntry::decode(b)
            .ok()
            .flatten()
            .and_then(|e| PlainEntry::of(&e))
    }

    /// xorshift64*: mutations without a dependency; fixed seeds reproduce a failure.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// A copy of `b` with one to three bytes changed, or cut short, or one 4-byte
        /// word (an attribute header, often) replaced.
        pub(crate) fn mutate(&mut self, b: &[u8]) -> Vec<u8> {
            let mut m = b.to_vec();
            if m.is_empty() {
                return m;
            }
            match self.next() % 4 {
                0 => m.truncate(self.next() as usize % m.len()),
                1 => {
                    let at = (self.next() as usize % m.len()) & !3;
                    let end = (at + 4).min(m.len());
                    for x in &mut m[at..end] {
                        *x = self.next() as u8;
                    }
                }
                _ => {
                    for _ in 0..=self.next() % 3 {
                        let at = self.next() as usize % m.len();
                        m[at] = self.next() as u8;
                    }
                }
            }
            m
        }
    }

    #[test]
    fn plain_decode_of_kernel_captures() {
        for cap in [TCP_SNAT, UDP_SNAT] {
            let bytes = hex(cap);
            let body = &split_messages(&bytes).unwrap()[0].1[4..];
            let e = CtEntry::decode(body).unwrap().unwrap();
            assert_eq!(PlainEntry::decode(body), Some(PlainEntry::of(&e).unwrap()));
            // Every truncation and every single byte changed (to a few values): the same
            // outcome as the full decoder, never a panic.
            for cut in 0..body.len() {
                let b = &body[..cut];
                assert_eq!(PlainEntry::decode(b), full_then_plain(b), "cut {cut}");
            }
            let mut b = body.to_vec();
            for at in 0..b.len() {
                let was = b[at];
                for x in [0, 1, 2, 3, 4, 5, 6, 0x80, 0xff, was ^ 0x80] {
                    b[at] = x;
                    assert_eq!(
                        PlainEntry::decode(&b),
                        full_then_plain(&b),
                        "byte {at} = {x}"
                    );
                }
                b[at] = was;
            }
        }
    }

    #[test]
    fn plain_decode_of_encoded_entries() {
        let mut plain = 0;
        for e in sample_entries() {
            for b in encodings(&e) {
                let want = full_then_plain(&b);
                assert_eq!(PlainEntry::decode(&b), want, "{e:?}");
                // The encoders keep every part that makes an entry plain or not.
                if e.is_plain() {
                    assert!(want.is_some(), "{e:?}");
                    plain += 1;
                }
                for cut in 0..b.len() {
                    let b = &b[..cut];
                    assert_eq!(PlainEntry::decode(b), full_then_plain(b), "{e:?} cut {cut}");
                }
            }
        }
        assert!(plain >= 30);
    }

    /// An attribute given twice counts the last time, in both decoders: a non-plain
    /// tuple or protoinfo followed by a plain one makes a plain entry, and the reverse
    /// does not.
    #[test]
    fn plain_decode_of_repeated_attributes() {
        let e = &sample_entries()[0];
        let mut icmp = e.orig.clone();
        (icmp.proto, icmp.src_port, icmp.dst_port) = (1, None, None);
        icmp.icmp_type = Some(8);
        let raw_info = ProtoInfo {
            tcp: None,
            other: vec![RawNla {
                kind: 9,
                value: vec![1, 0, 0, 0],
            }],
        };
        let v6 = tuple("fd00::1", "fd00::2", 6, 1, 2);
        let cases: Vec<Vec<CtAttr>> = vec![
            vec![CtAttr::TupleOrig(icmp.clone())],
            vec![CtAttr::ProtoInfo(raw_info.clone())],
            vec![CtAttr::TupleReply(e.orig.clone())],
            vec![CtAttr::TupleOrig(v6.clone()), CtAttr::TupleReply(v6)],
            vec![CtAttr::Zone(3), CtAttr::Status(1), CtAttr::Mark(2)],
        ];
        for extra in cases {
            let mut before = extra.clone();
            before.extend(e.attrs());
            let mut after = e.attrs();
            after.extend(extra);
            for attrs in [before, after] {
                let mut b = Vec::new();
                emit_attrs(&attrs, &mut b);
                assert_eq!(PlainEntry::decode(&b), full_then_plain(&b), "{attrs:?}");
            }
        }
    }

    /// Tuples no encoder of this crate writes: address families mixed within a tuple, an
    /// address given in both families (the last counts), a zone of a bad length.
    #[test]
    fn plain_decode_of_hand_made_tuples() {
        let e = &sample_entries()[0];
        let ip = |addrs: &[(u16, &[u8])]| {
            let mut t = Vec::new();
            nla::put_nested(&mut t, CTA_TUPLE_IP, |b| {
                for (k, a) in addrs {
                    nla::put(b, *k, a);
                }
            });
            nla::put_nested(&mut t, CTA_TUPLE_PROTO, |b| {
                nla::put(b, CTA_PROTO_NUM, &[6]);
                nla::put(b, CTA_PROTO_SRC_PORT, &1u16.to_be_bytes());
                nla::put(b, CTA_PROTO_DST_PORT, &2u16.to_be_bytes());
            });
            t
        };
        let (a4, b4, a6) = ([198, 18, 1, 10], [203, 0, 113, 10], [0xfd; 16]);
        let tuples = [
            ip(&[(CTA_IP_V4_SRC, &a4), (CTA_IP_V6_DST, &a6)]),
            ip(&[(CTA_IP_V6_SRC, &a6), (CTA_IP_V4_DST, &b4)]),
            ip(&[
                (CTA_IP_V6_SRC, &a6),
                (CTA_IP_V4_SRC, &a4),
                (CTA_IP_V4_DST, &b4),
            ]),
            ip(&[
                (CTA_IP_V4_SRC, &a4),
                (CTA_IP_V6_SRC, &a6),
                (CTA_IP_V4_DST, &b4),
            ]),
            ip(&[
                (CTA_IP_V4_SRC, &a4),
                (CTA_IP_V4_DST, &b4),
                (CTA_IP_V4_DST, &a4),
            ]),
            ip(&[(CTA_IP_V4_SRC, &a4)]),
            ip(&[(CTA_IP_V4_SRC, &a4), (CTA_IP_V4_DST, &b4[..3])]),
            ip(&[(CTA_IP_V4_SRC, &a4), (CTA_IP_V4_DST, &b4), (9, &b4)]),
            {
                let mut t = ip(&[(CTA_IP_V4_SRC, &a4), (CTA_IP_V4_DST, &b4)]);
                nla::put(&mut t, CTA_TUPLE_ZONE, &[1, 2, 3]);
                t
            },
        ];
        let mut plain = 0;
        for t in &tuples {
            for kind in [CTA_TUPLE_ORIG, CTA_TUPLE_REPLY] {
                let mut b = Vec::new();
                nla::put_nested(&mut b, kind, |b| b.extend_from_slice(t));
                e.emit(&mut b);
                nla::put_nested(&mut b, kind, |b| b.extend_from_slice(t));
                let got = PlainEntry::decode(&b);
                assert_eq!(got, full_then_plain(&b), "{t:02x?}");
                plain += usize::from(got.is_some());
            }
        }
        assert!(plain >= 2);
    }

    #[test]
    fn plain_decode_of_mutated_entries() {
        let mut rng = Rng(0x0dec_0de5_1234_5678);
        let (mut plain, mut other) = (0, 0);
        for e in sample_entries() {
            for b in encodings(&e) {
                for _ in 0..2000 {
                    let m = rng.mutate(&b);
                    let got = PlainEntry::decode(&m);
                    assert_eq!(got, full_then_plain(&m), "{m:02x?}");
                    if got.is_some() {
                        plain += 1;
                    } else {
                        other += 1;
                    }
                }
            }
        }
        // Both outcomes were exercised.
        assert!(plain > 1000 && other > 1000, "{plain} {other}");
    }
}
