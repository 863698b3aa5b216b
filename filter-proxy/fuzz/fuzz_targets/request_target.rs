//! The request-target normalisation the matcher relies on: never panics, and a
//! normalised path never keeps a dot segment or an empty segment that could slip past a
//! prefix rule.
#![no_main]

use igw_ruleset::l7::{Host, normalize_path, parse_authority};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = Host::parse(s);
    let _ = parse_authority(s, 80);
    if let Ok(p) = normalize_path(s) {
        assert!(p.starts_with('/'));
        assert!(!p.contains("/../") && !p.contains("/./") && !p.contains("//"), "{p}");
        assert!(!p.ends_with("/..") && !p.ends_with("/."), "{p}");
    }
});
