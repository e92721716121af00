//! Wall-clock time for the state tables, behind a trait so tests can move time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time, as a duration since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time since the Unix epoch.
    fn now(&self) -> Duration;

    /// The current time in whole milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.now().as_millis() as u64
    }
}

/// A clock shared by the runtime and the state tables.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at `start` since the Unix epoch.
    pub fn new(start: Duration) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            nanos: AtomicU64::new(start.as_nanos() as u64),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// Adapts a [`SharedClock`] to governor's clock trait.
#[derive(Clone)]
pub(crate) struct GovernorClock(pub(crate) SharedClock);

impl governor::clock::Clock for GovernorClock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> Self::Instant {
        self.0.now().into()
    }
}
