//! Extraction of the SNI from a TLS ClientHello, without decrypting anything. Pure: works
//! on the bytes read so far and says whether it needs more. Handles a ClientHello split
//! over several TLS records (fragmentation is legal and used to evade filters).

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not enough bytes yet; read more and call again with everything read so far.
    Incomplete,
    /// The first byte is not a TLS handshake record: not TLS.
    NotTls,
    /// A TLS record stream that is not a well-formed ClientHello.
    Malformed(&'static str),
    /// A complete ClientHello; `sni` is its `host_name` server name, if any.
    Complete { sni: Option<String> },
}

/// Largest ClientHello accepted (real ones are under 2 KiB; post-quantum key shares
/// push some to ~1.8 KiB; padding extensions to 512 bytes).
pub const MAX_HELLO: usize = 64 * 1024;

pub fn parse(buf: &[u8]) -> Hello {
    if buf.is_empty() {
        return Hello::Incomplete;
    }
    if buf[0] != 0x16 {
        return Hello::NotTls;
    }
    // Reassemble the handshake layer from consecutive handshake records.
    let mut hs: Vec<u8> = Vec::new();
    let mut at = 0usize;
    loop {
        if buf.len() < at + 5 {
            return Hello::Incomplete;
        }
        let rec = &buf[at..];
        if rec[0] != 0x16 {
            return Hello::Malformed("non-handshake record inside the ClientHello");
        }
        if rec[1] != 3 {
            return Hello::Malformed("record version is not 3.x");
        }
        let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
        if len == 0 || len > 16384 {
            return Hello::Malformed("bad record length");
        }
        if rec.len() < 5 + len {
            return Hello::Incomplete;
        }
        hs.extend_from_slice(&rec[5..5 + len]);
        at += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return Hello::Malformed("first handshake message is not a ClientHello");
            }
            let body_len =
                (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
            if body_len + 4 > MAX_HELLO {
                return Hello::Malformed("ClientHello too large");
            }
            if hs.len() >= 4 + body_len {
                return match client_hello_sni(&hs[4..4 + body_len]) {
                    Ok(sni) => Hello::Complete { sni },
                    Err(e) => Hello::Malformed(e),
                };
            }
        }
        if at > MAX_HELLO {
            return Hello::Malformed("ClientHello too large");
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.b.len() < n {
            return Err("truncated ClientHello");
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn client_hello_sni(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader { b: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.b.is_empty() {
        return Ok(None);
    }
    let mut ext = Reader { b: r.vec16()? };
    let mut sni = None;
    while !ext.b.is_empty() {
        let typ = ext.u16()?;
        let data = ext.vec16()?;
        if typ != 0 {
            continue;
        }
        if sni.is_some() {
            return Err("two server_name extensions");
        }
        let mut list = Reader { b: data };
        let mut names = Reader { b: list.vec16()? };
        while !names.b.is_empty() {
            let kind = names.u8()?;
            let name = names.vec16()?;
            if kind == 0 {
                if sni.is_some() {
                    return Err("two host_name entries");
                }
                if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                    return Err("server name is not printable ASCII");
                }
                sni = Some(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(sni)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello handshake message (without record framing).
    pub(crate) fn hello_msg(sni: Option<&str>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut exts = Vec::new();
        // An unrelated extension first (supported_versions).
        exts.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
        if let Some(n) = sni {
            let n = n.as_bytes();
            let entry_len = 3 + n.len();
            exts.extend_from_slice(&[0, 0]);
            exts.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
            exts.extend_from_slice(&(entry_len as u16).to_be_bytes());
            exts.push(0);
            exts.extend_from_slice(&(n.len() as u16).to_be_bytes());
            exts.extend_from_slice(n);
        }
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(&body);
        msg
    }

    /// Frames a handshake message into records of at most `frag` bytes each.
    pub(crate) fn records(msg: &[u8], frag: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in msg.chunks(frag) {
            out.extend_from_slice(&[0x16, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn table() {
        let whole = records(&hello_msg(Some("www.example.com")), 16384);
        let frag = records(&hello_msg(Some("www.example.com")), 7);
        let none = records(&hello_msg(None), 16384);
        let some = |s: &str| Hello::Complete {
            sni: Some(s.to_string()),
        };
        let cases: Vec<(&str, Vec<u8>, Hello)> = vec![
            ("whole", whole.clone(), some("www.example.com")),
            (
                "fragmented into 7-byte records",
                frag.clone(),
                some("www.example.com"),
            ),
            ("no sni", none, Hello::Complete { sni: None }),
            ("plain http", b"GET / HTTP/1.1\r\n".to_vec(), Hello::NotTls),
            ("empty", vec![], Hello::Incomplete),
            ("half a header", whole[..3].to_vec(), Hello::Incomplete),
            ("half a record", whole[..40].to_vec(), Hello::Incomplete),
            (
                "half the fragments",
                frag[..frag.len() / 2].to_vec(),
                Hello::Incomplete,
            ),
            (
                "alert record in between",
                [&frag[..12], &[0x15, 3, 1, 0, 2, 2, 40][..], &frag[12..]].concat(),
                Hello::Malformed("non-handshake record inside the ClientHello"),
            ),
            (
                "server hello",
                records(&[2, 0, 0, 1, 0], 100),
                Hello::Malformed("first handshake message is not a ClientHello"),
            ),
            (
                "zero-length record",
                vec![0x16, 3, 1, 0, 0],
                Hello::Malformed("bad record length"),
            ),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(parse(&bytes), want, "{name}");
        }
    }

    /// Every prefix of a valid hello is Incomplete, never a wrong answer; and parsing
    /// arbitrary mutations never panics (the fuzz target does the same at scale).
    #[test]
    fn prefixes_and_mutations() {
        let full = records(&hello_msg(Some("a.example")), 5);
        for i in 0..full.len() {
            assert_eq!(parse(&full[..i]), Hello::Incomplete, "prefix {i}");
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            let mut m = full.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = (x as usize) % m.len();
                m[at] = (x >> 8) as u8;
            }
            let _ = parse(&m);
        }
    }
}
