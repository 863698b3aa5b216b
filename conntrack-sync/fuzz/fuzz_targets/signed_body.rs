//! Bodies signed with the right key (what a peer holding the key, or a bug in ours, could
//! send), so that the fuzzer reaches the decoders behind the MAC: the standby's fixed-form
//! decoder (`decode_items`) agrees with `decode` on every such frame (the same updates, the
//! same error, nothing kept from a refused frame), and what decodes re-encodes to a frame
//! that decodes to the same value. The first input byte is the frame kind, the rest its body.
#![no_main]

use hmac::{Hmac, Mac};
use igw_conntrack_sync::proto::{self, Body, Frame, HEADER_LEN, Key, NONCE_LEN};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"igw fuzz key, 32 bytes or more....";

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let key = Key::from_file_bytes(KEY).unwrap();
    let nonce = [9u8; NONCE_LEN];
    // A valid header from the encoder, then this kind, body and length, signed anew.
    let mut b = Vec::new();
    let empty = Frame {
        session: 1,
        seq: 1,
        body: Body::Batch(Vec::new()),
    };
    proto::encode(&empty, &key, &nonce, &mut b);
    let mut signed = b[..HEADER_LEN].to_vec();
    signed[5] = kind;
    signed[24..28].copy_from_slice(&(body.len() as u32).to_be_bytes());
    signed.extend_from_slice(body);
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
    m.update(&nonce);
    m.update(&signed);
    signed.extend_from_slice(&m.finalize().into_bytes());

    let mut items = Vec::new();
    let fast = proto::decode_items(&signed, &key, &nonce, &mut items);
    match (proto::decode(&signed, &key, &nonce), fast) {
        (Ok(slow), Ok(fast)) => {
            if let Body::Batch(updates) = &slow.body {
                let got: Vec<_> = items.into_iter().map(proto::Item::into_update).collect();
                assert_eq!(&got, updates);
                assert_eq!((fast.session, fast.seq), (slow.session, slow.seq));
            } else {
                assert_eq!(fast, slow);
                assert!(items.is_empty());
            }
            let mut again = Vec::new();
            proto::encode(&slow, &key, &nonce, &mut again);
            assert_eq!(proto::decode(&again, &key, &nonce).as_ref(), Ok(&slow));
        }
        (Err(slow), Err(fast)) => {
            assert_eq!(slow, fast);
            assert!(items.is_empty(), "items kept from a refused frame");
        }
        (slow, fast) => panic!("decoders disagree: {slow:?} vs {fast:?}"),
    }
});
