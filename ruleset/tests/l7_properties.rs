//! Properties of the normalisation the matcher relies on, over many generated inputs
//! (the same properties as the cargo-fuzz target `request_target`, runnable on stable).

use igw_ruleset::l7::{Host, normalize_path, parse_authority};

/// Deterministic generator: paths built from pieces attackers use.
fn pieces(seed: &mut u64) -> String {
    const P: &[&str] = &[
        "/", "..", ".", "%2e", "%2E%2e", "%2f", "%5c", "\\", "admin", "x", "%61", "//", "%00",
        "%25", "?", "#", "%", "ü", "\u{0}",
    ];
    let mut s = String::from("/");
    let n = (*seed % 12) as usize + 1;
    for _ in 0..n {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        s.push_str(P[(*seed % P.len() as u64) as usize]);
    }
    s
}

#[test]
fn normalised_paths_have_no_dot_or_empty_segments() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200_000 {
        let raw = pieces(&mut seed);
        let _ = Host::parse(&raw[1..]);
        let _ = parse_authority(&raw[1..], 80);
        if let Ok(p) = normalize_path(&raw) {
            assert!(p.starts_with('/'), "{raw:?} -> {p:?}");
            assert!(
                !p.contains("/../") && !p.contains("/./") && !p.contains("//"),
                "{raw:?} -> {p:?}"
            );
            assert!(
                !p.ends_with("/..") && !p.ends_with("/."),
                "{raw:?} -> {p:?}"
            );
            assert!(!p.contains('\\'), "{raw:?} -> {p:?}");
        }
    }
}
