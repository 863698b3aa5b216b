//! The CL+TE reader of the client's request stream never panics, and splitting the same
//! bytes into reads at any point never changes what it finds (heads, first CL+TE head).
#![no_main]

use std::sync::Arc;

use igw_filter_proxy::framing::{Findings, Framer};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], cut: usize) -> (u64, bool, bool) {
    let f = Arc::new(Findings::default());
    let mut fr = Framer::new(f.clone());
    let (a, b) = data.split_at(cut.min(data.len()));
    fr.feed(a);
    fr.feed(b);
    (fr.heads(), f.cl_te(fr.heads()), fr.following())
}

fuzz_target!(|data: &[u8]| {
    let whole = run(data, data.len());
    for cut in [1, data.len() / 3, data.len() / 2] {
        assert_eq!(run(data, cut), whole);
    }
});
