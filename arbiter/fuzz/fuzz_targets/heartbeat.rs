//! The heartbeat decoder never panics and accepts only what the key signed, and then
//! exactly the bytes `encode` makes of the value; a body the key signed either decodes to
//! such a value or fails on a field, never on authentication; the replay window accepts
//! each (epoch, seq) at most once, never an older epoch, and always the next fresh number.
//! Input: the first 28 bytes are a heartbeat body to sign, the rest (epoch, seq) triples.
#![no_main]

use std::collections::HashSet;

use hmac::{Hmac, Mac};
use igw_arbiter::heartbeat::{self, HbError, LEN, ReplayWindow};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"igw fuzz heartbeat key";
const BODY: usize = LEN - 32;

fuzz_target!(|data: &[u8]| {
    // Raw bytes, as they come off the wire.
    if let Ok(hb) = heartbeat::decode(KEY, data) {
        assert_eq!(&heartbeat::encode(KEY, &hb)[..], data);
    }
    let Some((body, rest)) = data.split_at_checked(BODY) else {
        return;
    };
    // The same body signed with the key.
    let mut b = [0u8; LEN];
    b[..BODY].copy_from_slice(body);
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
    m.update(body);
    b[BODY..].copy_from_slice(&m.finalize().into_bytes());
    match heartbeat::decode(KEY, &b) {
        Ok(hb) => assert_eq!(heartbeat::encode(KEY, &hb), b),
        Err(e) => assert!(
            matches!(e, HbError::Magic | HbError::Field(_)),
            "signed heartbeat refused as {e:?}"
        ),
    }
    // The replay window against a model of what it promises.
    let mut w = ReplayWindow::default();
    let mut accepted = HashSet::new();
    let mut newest: Option<(u64, u64)> = None;
    for t in rest.chunks_exact(3) {
        let (epoch, seq) = (
            u64::from(t[0] % 4),
            u64::from(u16::from_be_bytes([t[1], t[2]])),
        );
        let fresh = newest.is_none_or(|n| (epoch, seq) > n);
        let ok = w.accept(epoch, seq).is_ok();
        if fresh {
            assert!(ok, "({epoch}, {seq}) newer than {newest:?} refused");
        }
        if ok {
            assert!(
                accepted.insert((epoch, seq)),
                "({epoch}, {seq}) accepted twice"
            );
            assert!(
                newest.is_none_or(|n| epoch >= n.0),
                "older epoch {epoch} accepted after {newest:?}"
            );
            newest = Some(newest.map_or((epoch, seq), |n| n.max((epoch, seq))));
        }
    }
});
