//! Netlink attributes (type-length-value, 4-byte aligned): the one framing every ctnetlink
//! message and the sync protocol's entry payload share. Pure; no I/O.

use crate::DecodeError;

/// Set by the kernel on nested attributes (`NLA_F_NESTED`).
pub const NLA_F_NESTED: u16 = 0x8000;
/// Byte order flag, never set by ctnetlink but kept when seen.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// An attribute kept as it came: type with its flags, and the value bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawNla {
    /// Type including the flag bits, so that emit reproduces the input exactly.
    pub kind: u16,
    pub value: Vec<u8>,
}

impl RawNla {
    pub fn kind(&self) -> u16 {
        self.kind & NLA_TYPE_MASK
    }
}

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits a buffer into attributes. Fails on a truncated header or a length past the end.
pub fn parse(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    iter(buf).collect()
}

/// The attributes of a buffer one by one, without collecting them: the decoders on the
/// replication path walk each message once and allocate nothing for its framing. Yields
/// an error (and then stops) where [`parse`] would fail.
pub fn iter(buf: &[u8]) -> Iter<'_> {
    Iter { buf }
}

#[derive(Debug, Clone)]
pub struct Iter<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<(u16, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        if buf.is_empty() {
            return None;
        }
        if buf.len() < 4 {
            self.buf = &[];
            return Some(Err(DecodeError::Truncated("attribute header")));
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < 4 || len > buf.len() {
            self.buf = &[];
            return Some(Err(DecodeError::BadLength { kind, len }));
        }
        self.buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((kind, &buf[4..len])))
    }
}

/// Appends one attribute with its padding.
pub fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (align4(len) - len), 0);
}

/// Appends a nested attribute whose body `f` writes; sets `NLA_F_NESTED` as the kernel does.
pub fn put_nested(out: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    f(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

pub fn be16(v: &[u8]) -> Result<u16, DecodeError> {
    v.try_into()
        .map(u16::from_be_bytes)
        .map_err(|_| DecodeError::Truncated("u16 attribute"))
}

pub fn be32(v: &[u8]) -> Result<u32, DecodeError> {
    v.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| DecodeError::Truncated("u32 attribute"))
}

pub fn be64(v: &[u8]) -> Result<u64, DecodeError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| DecodeError::Truncated("u64 attribute"))
}

pub fn u8v(v: &[u8]) -> Result<u8, DecodeError> {
    match v {
        [b] => Ok(*b),
        _ => Err(DecodeError::Truncated("u8 attribute")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_nesting() {
        let mut b = Vec::new();
        put(&mut b, 1, &[7]);
        assert_eq!(b.len(), 8);
        put_nested(&mut b, 2, |b| put(b, 3, &[1, 2, 3, 4]));
        let attrs = parse(&b).unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (1, &[7u8][..]));
        assert_eq!(attrs[1].0, 2 | NLA_F_NESTED);
        assert_eq!(parse(attrs[1].1).unwrap(), vec![(3, &[1u8, 2, 3, 4][..])]);
    }

    #[test]
    fn malformed() {
        assert!(parse(&[1, 0]).is_err());
        assert!(parse(&[9, 0, 1, 0, 0]).is_err());
        assert!(parse(&[2, 0, 1, 0]).is_err());
    }
}
