//! The binary's allocator and the memory settings its daemons run with.

/// mimalloc for the whole binary: the proxy allocates and frees small objects per request
/// (heads, URIs, pool entries) and, unlike glibc's malloc, it hands freed pages back to
/// the kernel, so memory taken by a burst of connections is returned when they go.
/// Measured with bench/proxy (CPU per request, RSS per idle client): see RESULTS.md.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (index in `mi_option_e`, mimalloc 3.x `mimalloc.h`;
/// libmimalloc-sys names only some options). The test below checks the index against
/// the option's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// A proxy's memory follows its connections: a burst of 5,000 clients takes tens of
/// MiB of buffers that an idle keep-alive connection no longer holds (it is parked, see
/// filter-proxy's server). Two allocator defaults would keep that memory resident:
/// - transparent huge pages: a 2 MiB page stays whole while any 4 KiB of it is in use
///   (measured: 12.5 KiB per idle client with THP, 8.7 without);
/// - mimalloc's delayed purge (1 s) runs only on a later allocation, so a proxy that goes
///   quiet after a burst never returns the pages (41 MiB kept after 5,000 clients left,
///   11.5 MiB with an immediate purge). Purging at once cost no measurable CPU per
///   request in bench/proxy (21.0 vs 21.3 us).
#[expect(unsafe_code, reason = "mimalloc's option setter is a C function")]
pub fn returns_promptly() {
    no_huge_pages();
    // SAFETY: sets one integer option; mimalloc reads options on each use.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// No transparent huge pages for this process (mimalloc asks for them on its arenas):
/// a huge page stays resident while any 4 KiB of it is in use, and its first touch zeroes
/// 2 MiB. Best effort: a kernel without the flag is fine.
pub fn no_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %e, "PR_SET_THP_DISABLE refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(unsafe_code, reason = "mimalloc's option getter is a C function")]
    fn purge_delay_option_is_the_one_we_set() {
        // Index 15 is `purge_delay` if it holds that option's default (1000 ms in
        // mimalloc 3.x; its neighbours default to 1 and 0) unless the environment set it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
                1000,
                "mimalloc's option layout changed: find purge_delay in mimalloc.h"
            );
        }
        returns_promptly();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            0
        );
        assert!(nix::sys::prctl::get_thp_disable().unwrap());
    }
}
