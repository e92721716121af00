//! Log lines that a client can cause once per connection (a connection refused over a limit)
//! written at most once a second each, with the number left out since: under attack the log
//! says what is happening without becoming the attack's amplifier.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a throttled line may be written.
const EVERY: Duration = Duration::from_secs(1);

/// One log line's throttle; a `static` per call site.
pub struct LogThrottle {
    /// Milliseconds after the process's first throttled event at which the line was last
    /// written, plus one (0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    /// A throttle that lets the first line through.
    pub const fn new() -> LogThrottle {
        LogThrottle {
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when the line is to be written now, `n` being how many were left out since the
    /// last one; `None` when it is to be left out.
    pub fn allow(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let now_ms = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
        self.allow_at(now_ms)
    }

    fn allow_at(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= EVERY.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_left_out() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.allow_at(1), Some(0), "the first line is written");
        for ms in 2..500 {
            assert_eq!(throttle.allow_at(ms), None);
        }
        assert_eq!(
            throttle.allow_at(1_001),
            Some(498),
            "a second later, with the count"
        );
        assert_eq!(throttle.allow_at(1_002), None);
        assert_eq!(throttle.allow_at(5_000), Some(1));
    }
}
