//! Per-call-site rate limiting for log lines an attacker can trigger (bad requests,
//! refused connections): at most a burst per window, with a count of what was dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct RateLimit {
    /// Window start (seconds) in the high 32 bits, lines in this window in the low 32.
    state: AtomicU64,
    suppressed: AtomicU64,
}

/// Lines allowed per window per call site.
const BURST: u64 = 5;
const WINDOW_S: u64 = 10;

impl RateLimit {
    pub const fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, `n` lines were suppressed since the last logged one.
    pub fn check(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            / WINDOW_S;
        let cur = self.state.load(Ordering::Relaxed);
        let (win, n) = (cur >> 32, cur & 0xffff_ffff);
        let next = if win != now & 0xffff_ffff {
            ((now & 0xffff_ffff) << 32) | 1
        } else if n < BURST {
            cur + 1
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // A lost race only lets one extra line through or drops one; both are fine.
        let _ = self
            .state
            .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `warn!` limited per call site; adds a `suppressed` field.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)*) => {{
        static RL: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new();
        if let Some(suppressed) = RL.check() {
            tracing::warn!(suppressed, $($arg)*);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_quiet() {
        let rl = RateLimit::new();
        let allowed = (0..100).filter(|_| rl.check().is_some()).count();
        // Within one window (the loop takes far less than 10 s) only the burst passes,
        // unless the loop straddles a window edge, which at most doubles it.
        assert!(
            allowed == BURST as usize || allowed <= 2 * BURST as usize,
            "{allowed}"
        );
    }
}
