//! The ctnetlink parser (netlink framing, nfgenmsg, nested attributes) never panics, and a
//! message it accepts re-emits to bytes that parse to the same message. It also decodes
//! entries inside sync batches, after authentication. The event reader's one-pass plain
//! decoder gives a plain entry exactly when the full decoder does, and the same one.
#![no_main]

use igw_conntrack_sync::ct::{CtEntry, CtMessage, PlainEntry, split_messages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msgs) = split_messages(data) else {
        return;
    };
    for (h, body) in msgs {
        if let Some(attrs) = body.get(4..) {
            let full = CtEntry::decode(attrs).ok().flatten();
            assert_eq!(
                PlainEntry::decode(attrs),
                full.as_ref().and_then(PlainEntry::of)
            );
        }
        if let Ok(m) = CtMessage::parse(h, body) {
            let _ = CtEntry::from_attrs(&m.attrs);
            let mut out = Vec::new();
            m.emit(&mut out);
            let back = split_messages(&out).expect("own output splits");
            assert_eq!(CtMessage::parse(back[0].0, back[0].1).ok(), Some(m));
        }
    }
});
