//! The ctnetlink parser (netlink framing, nfgenmsg, nested attributes) never panics, and a
//! message it accepts re-emits to bytes that parse to the same message. It also decodes
//! entries inside sync batches, after authentication.
#![no_main]

use igw_conntrack_sync::ct::{CtEntry, CtMessage, split_messages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msgs) = split_messages(data) else {
        return;
    };
    for (h, body) in msgs {
        if let Ok(m) = CtMessage::parse(h, body) {
            let _ = CtEntry::from_attrs(&m.attrs);
            let mut out = Vec::new();
            m.emit(&mut out);
            let back = split_messages(&out).expect("own output splits");
            assert_eq!(CtMessage::parse(back[0].0, back[0].1).ok(), Some(m));
        }
    }
});
