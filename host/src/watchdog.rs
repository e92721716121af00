//! The deadline watchdog: a thread that interrupts guard calls past their deadline and sweeps
//! idle state. Each call writes when it must end into a slot of its own; the watchdog sleeps
//! until the earliest of those ends (while no call is in progress, for the shortest deadline
//! any guard has) and advances the engine's epoch only when a call is overdue. Each store's
//! epoch callback then compares its own call's end with the clock, so calls within their
//! deadline carry on. Under load it wakes about once per shortest deadline rather than every
//! millisecond, calls that end in time never see an epoch change, and an idle sidecar, or one
//! without guards, sleeps until a call starts or a sweep is due.

use crate::sandbox::HostServices;
use crate::shards::thread_slot;
use anyhow::Context as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// How long the watchdog keeps to its short sleeps after it last saw a call in progress;
/// after that it sleeps until a call wakes it. Under steady load it never does, so calls do
/// not pay for waking it.
const IDLE_AFTER: Duration = Duration::from_millis(100);

/// Calls that can each have a slot at once. More calls than this at the same moment are
/// still interrupted, by ticks every quarter of the shortest deadline while they last.
const SLOTS: usize = 64;

/// The watchdog's shortest sleep: deadlines are kept to within about this much, and a deadline
/// of zero cannot make it spin. It is also how soon it looks again after interrupting, since
/// the overdue call may be in a host call and notice the epoch only when it returns to guest
/// code.
const GRANULARITY: Duration = Duration::from_millis(1);

/// Guard calls in progress and when each must end.
pub(crate) struct Running {
    base: Instant,
    /// When each call in progress must end, in nanoseconds since `base` (0: the slot is free).
    slots: Box<[CallSlot]>,
    /// Calls in progress that found every slot taken.
    overflow: AtomicUsize,
    /// The shortest deadline of any loaded guard, in nanoseconds.
    shortest: AtomicU64,
    watchdog_asleep: AtomicBool,
    watchdog: OnceLock<Thread>,
}

/// One slot per cache line, so calls on different cores do not write one line.
#[repr(align(128))]
#[derive(Default)]
struct CallSlot(AtomicU64);

/// A call in progress; dropping it ends the call.
pub(crate) struct RunningCall<'a> {
    running: &'a Running,
    slot: Option<usize>,
    ends: Option<Instant>,
}

impl RunningCall<'_> {
    /// When the call must end; `None` for a deadline too far away to represent.
    pub(crate) fn ends(&self) -> Option<Instant> {
        self.ends
    }
}

/// What one look at the slots found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    /// Some call is in progress.
    busy: bool,
    /// Some call is past its end.
    overdue: bool,
    /// Calls without a slot are in progress: their ends are unknown to the watchdog.
    overflowing: bool,
    /// The earliest end still ahead, in nanoseconds since `base`.
    next_end: Option<u64>,
}

impl Running {
    pub(crate) fn new() -> Running {
        Running::with_slots(SLOTS)
    }

    fn with_slots(slots: usize) -> Running {
        Running {
            base: Instant::now(),
            slots: (0..slots).map(|_| CallSlot::default()).collect(),
            overflow: AtomicUsize::new(0),
            shortest: AtomicU64::new(u64::MAX),
            watchdog_asleep: AtomicBool::new(false),
            watchdog: OnceLock::new(),
        }
    }

    /// Tells the watchdog that calls may have this deadline: while no call is in progress it
    /// never sleeps longer than the shortest one, so a call starting meanwhile is seen before
    /// it is due. A shorter deadline than before wakes it.
    pub(crate) fn watch_deadline(&self, deadline: Duration) {
        let nanos = nanos(deadline).max(1);
        if self.shortest.fetch_min(nanos, Ordering::SeqCst) > nanos {
            self.wake_watchdog();
        }
    }

    /// Marks a call with this deadline as in progress until the returned value is dropped,
    /// waking the watchdog if it sleeps.
    pub(crate) fn enter(&self, deadline: Duration) -> RunningCall<'_> {
        self.enter_at(Instant::now(), deadline)
    }

    /// [`enter`](Self::enter) for a call that started at `started`: a caller that has just
    /// read the clock spares a second read.
    pub(crate) fn enter_at(&self, started: Instant, deadline: Duration) -> RunningCall<'_> {
        let end = self
            .nanos_at(started)
            .saturating_add(nanos(deadline))
            .max(1);
        let home = thread_slot() % self.slots.len();
        // SeqCst pairs with the watchdog's store of `watchdog_asleep` and its scan: either
        // the watchdog sees this call, or this call sees the watchdog asleep and wakes it.
        let slot = (0..self.slots.len())
            .map(|offset| (home + offset) % self.slots.len())
            .find(|&i| {
                self.slots[i]
                    .0
                    .compare_exchange(0, end, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            });
        if slot.is_none() {
            self.overflow.fetch_add(1, Ordering::SeqCst);
        }
        if self.watchdog_asleep.load(Ordering::SeqCst) {
            self.wake_watchdog();
        }
        RunningCall {
            running: self,
            slot,
            ends: started.checked_add(deadline),
        }
    }

    fn wake_watchdog(&self) {
        if let Some(watchdog) = self.watchdog.get() {
            watchdog.unpark();
        }
    }

    fn nanos_at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.base))
    }

    fn scan(&self, now: Instant) -> Scan {
        let now = self.nanos_at(now);
        let mut scan = Scan {
            overflowing: self.overflow.load(Ordering::SeqCst) > 0,
            ..Scan::default()
        };
        for slot in self.slots.iter() {
            let end = slot.0.load(Ordering::SeqCst);
            if end == 0 {
                continue;
            }
            scan.busy = true;
            if end <= now {
                scan.overdue = true;
            } else {
                scan.next_end = Some(scan.next_end.map_or(end, |next| next.min(end)));
            }
        }
        scan.busy |= scan.overflowing;
        scan
    }

    /// How long the watchdog may sleep after `scan` without missing a deadline.
    fn sleep_after(&self, scan: &Scan, now: Instant) -> Duration {
        let shortest = Duration::from_nanos(self.shortest.load(Ordering::SeqCst));
        let sleep = if scan.overdue {
            GRANULARITY
        } else if scan.overflowing {
            shortest / 4
        } else {
            // A call starting while the watchdog sleeps ends no sooner than `shortest` from now.
            match scan.next_end {
                Some(end) => {
                    Duration::from_nanos(end.saturating_sub(self.nanos_at(now))).min(shortest)
                }
                None => shortest,
            }
        };
        sleep.max(GRANULARITY)
    }
}

impl Drop for RunningCall<'_> {
    fn drop(&mut self) {
        match self.slot {
            Some(i) => self.running.slots[i].0.store(0, Ordering::SeqCst),
            None => {
                self.running.overflow.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    duration.as_nanos().min(u64::MAX as u128) as u64
}

/// The watchdog thread. Holds only weak references: it stops with the runtime.
pub(crate) struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Wake-ups and epoch increments so far, for tests of when the watchdog sleeps and acts.
    #[cfg(test)]
    counts: Arc<Counts>,
}

#[cfg(test)]
#[derive(Default)]
struct Counts {
    wakes: AtomicU64,
    ticks: AtomicU64,
}

impl Watchdog {
    /// Starts watching the calls `running` counts, and sweeping every `sweep_every`.
    pub(crate) fn start(
        engine: &Engine,
        services: Weak<HostServices>,
        running: Arc<Running>,
        sweep_every: Duration,
    ) -> anyhow::Result<Watchdog> {
        let stop = Arc::new(AtomicBool::new(false));
        #[cfg(test)]
        let counts = Arc::new(Counts::default());
        #[cfg(test)]
        let counted = counts.clone();
        let engine = engine.weak();
        let (stopped, woken_by) = (stop.clone(), running.clone());
        let thread = std::thread::Builder::new()
            .name("vigil-watchdog".into())
            .spawn(move || {
                let mut last_sweep = Instant::now();
                let mut last_busy = Instant::now();
                while !stopped.load(Ordering::Relaxed) {
                    #[cfg(test)]
                    counted.wakes.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    let scan = running.scan(now);
                    if scan.overdue || scan.overflowing {
                        let Some(engine) = engine.upgrade() else {
                            return;
                        };
                        engine.increment_epoch();
                        #[cfg(test)]
                        counted.ticks.fetch_add(1, Ordering::Relaxed);
                    }
                    if scan.busy {
                        last_busy = now;
                    }
                    if last_sweep.elapsed() >= sweep_every {
                        last_sweep = Instant::now();
                        let Some(services) = services.upgrade() else {
                            return;
                        };
                        let removed = services.state.sweep();
                        tracing::debug!(removed, "swept idle guard state");
                    }
                    let until_sweep = sweep_every.saturating_sub(last_sweep.elapsed());
                    if last_busy.elapsed() < IDLE_AFTER {
                        std::thread::park_timeout(running.sleep_after(&scan, now).min(until_sweep));
                    } else {
                        sleep_until_called(&running, until_sweep);
                    }
                }
            })
            .context("cannot start the guard deadline watchdog thread")?;
        let _ = woken_by.watchdog.set(thread.thread().clone());
        Ok(Watchdog {
            stop,
            thread: Some(thread),
            #[cfg(test)]
            counts,
        })
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Sleeps for at most `timeout`, or until a call starts.
fn sleep_until_called(running: &Running, timeout: Duration) {
    running.watchdog_asleep.store(true, Ordering::SeqCst);
    if !running.scan(Instant::now()).busy {
        std::thread::park_timeout(timeout);
    }
    running.watchdog_asleep.store(false, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(20);

    /// A watchdog of `running` whose guards' shortest deadline is `shortest`.
    fn watchdog(running: &Arc<Running>, shortest: Duration) -> (Engine, Watchdog) {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        running.watch_deadline(shortest);
        let watchdog = Watchdog::start(
            &engine,
            Weak::new(),
            running.clone(),
            Duration::from_secs(3600),
        )
        .unwrap();
        (engine, watchdog)
    }

    impl Watchdog {
        fn wakes(&self) -> u64 {
            self.counts.wakes.load(Ordering::Relaxed)
        }

        fn ticks(&self) -> u64 {
            self.counts.ticks.load(Ordering::Relaxed)
        }
    }

    /// Whether the watchdog advances the epoch within 5 s.
    fn interrupted(watchdog: &Watchdog) -> bool {
        eventually(|| watchdog.ticks() > 0)
    }

    /// Waits up to 5 s for `done`: a loaded machine may deschedule the watchdog for a while.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn calls_that_end_in_time_never_advance_the_epoch() {
        let running = Arc::new(Running::new());
        let (_engine, mut watchdog) = watchdog(&running, DEADLINE);
        // Far longer than the calls, so that a descheduled test thread does not overrun it.
        let deadline = Duration::from_millis(200);
        running.watch_deadline(deadline);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(600) {
            let call = running.enter(deadline);
            std::thread::sleep(Duration::from_millis(2));
            drop(call);
        }
        assert_eq!(watchdog.ticks(), 0);
        // A few wake-ups per deadline, where a 1 ms ticker would have woken ~600 times.
        assert!(watchdog.wakes() < 60, "{} wake-ups", watchdog.wakes());
        watchdog.stop();
    }

    #[test]
    fn an_overdue_call_advances_the_epoch_soon_after_its_end() {
        let running = Arc::new(Running::new());
        let (_engine, mut watchdog) = watchdog(&running, DEADLINE);
        let call = running.enter(DEADLINE);
        std::thread::sleep(DEADLINE / 2);
        let ticks = watchdog.ticks();
        if Instant::now() < call.ends().unwrap() {
            assert_eq!(ticks, 0, "interrupted before its end");
        }
        assert!(
            interrupted(&watchdog),
            "no interruption for a call past its end"
        );
        drop(call);
        std::thread::sleep(Duration::from_millis(20));
        let after = watchdog.ticks();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(watchdog.ticks(), after, "ticks after the call ended");
        watchdog.stop();
    }

    #[test]
    fn idle_the_watchdog_sleeps_and_a_call_wakes_it() {
        let running = Arc::new(Running::new());
        let (_engine, mut watchdog) = watchdog(&running, DEADLINE);
        std::thread::sleep(IDLE_AFTER + Duration::from_millis(100));
        let asleep = watchdog.wakes();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            watchdog.wakes() - asleep <= 2,
            "idle: {} wake-ups in 300 ms",
            watchdog.wakes() - asleep
        );
        let call = running.enter(DEADLINE);
        assert!(
            interrupted(&watchdog),
            "a call starting while the watchdog slept was not interrupted"
        );
        drop(call);
        watchdog.stop();
    }

    #[test]
    fn a_call_starting_during_a_longer_one_is_interrupted_at_its_own_end() {
        let running = Arc::new(Running::new());
        let (_engine, mut watchdog) = watchdog(&running, DEADLINE);
        let long = running.enter(Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(50));
        let short = running.enter(DEADLINE);
        assert!(
            interrupted(&watchdog),
            "the watchdog slept until the longer call's end"
        );
        drop((long, short));
        watchdog.stop();
    }

    #[test]
    fn calls_beyond_the_slots_are_still_interrupted() {
        let running = Arc::new(Running::with_slots(1));
        let (_engine, mut watchdog) = watchdog(&running, DEADLINE);
        let first = running.enter(Duration::from_secs(3600));
        let second = running.enter(DEADLINE);
        assert_eq!(second.slot, None);
        assert!(
            interrupted(&watchdog),
            "no interruption for a call without a slot"
        );
        drop((first, second));
        assert_eq!(running.scan(Instant::now()), Scan::default());
        watchdog.stop();
    }

    #[test]
    fn a_shorter_deadline_wakes_a_long_sleep() {
        let running = Arc::new(Running::new());
        let (_engine, mut watchdog) = watchdog(&running, Duration::from_secs(3600));
        // Just started, the watchdog is not idle yet: it sleeps for the shortest deadline, an
        // hour, and a call starting now would not wake it.
        std::thread::sleep(Duration::from_millis(50));
        running.watch_deadline(DEADLINE);
        let call = running.enter(DEADLINE);
        assert!(
            interrupted(&watchdog),
            "a call with the new, shorter deadline was not interrupted"
        );
        drop(call);
        watchdog.stop();
    }

    #[test]
    fn a_zero_deadline_does_not_make_the_watchdog_spin() {
        let running = Arc::new(Running::new());
        let (_engine, mut watchdog) = watchdog(&running, DEADLINE);
        running.watch_deadline(Duration::ZERO);
        let before = watchdog.wakes();
        let call = running.enter(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(200));
        drop(call);
        std::thread::sleep(Duration::from_millis(100));
        // At most about one wake-up per millisecond; without the floor it wakes several times
        // a millisecond.
        let wakes = watchdog.wakes() - before;
        assert!(wakes <= 400, "{wakes} wake-ups in 300 ms");
        assert!(watchdog.ticks() > 0, "the overdue call was not interrupted");
        watchdog.stop();
    }

    #[test]
    fn stopping_a_sleeping_watchdog_does_not_wait_for_its_timeout() {
        let running = Arc::new(Running::new());
        let (_engine, mut watchdog) = watchdog(&running, DEADLINE);
        std::thread::sleep(IDLE_AFTER + Duration::from_millis(50));
        let started = Instant::now();
        watchdog.stop();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
