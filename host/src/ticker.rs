//! The deadline ticker: a thread that advances the engine's epoch every tick while guard code
//! runs, which is what interrupts a call past its deadline, and sweeps idle state. When no
//! guard code has run for a while it sleeps until a call starts or a sweep is due, so an idle
//! sidecar, or one without guards, does not wake a thousand times a second.

use crate::sandbox::HostServices;
use crate::shards::{cores, thread_slot};
use anyhow::Context as _;
#[cfg(test)]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// How long the ticker keeps ticking after it last saw guard code running. Under steady load
/// it never sleeps, so calls do not pay for waking it.
const IDLE_AFTER: Duration = Duration::from_millis(100);

/// Guard calls in progress, counted per core so that calls on different cores do not write
/// one cache line.
pub(crate) struct Running {
    slots: Box<[CoreCounter]>,
    ticker_asleep: AtomicBool,
    ticker: OnceLock<Thread>,
}

#[repr(align(128))]
#[derive(Default)]
struct CoreCounter(AtomicI64);

/// A call in progress; dropping it ends the call.
pub(crate) struct RunningCall<'a> {
    running: &'a Running,
    slot: usize,
}

impl Running {
    pub(crate) fn new() -> Running {
        Running {
            slots: (0..cores()).map(|_| CoreCounter::default()).collect(),
            ticker_asleep: AtomicBool::new(false),
            ticker: OnceLock::new(),
        }
    }

    /// Marks guard code as running until the returned value is dropped, waking the ticker
    /// if it sleeps.
    pub(crate) fn enter(&self) -> RunningCall<'_> {
        let slot = thread_slot() % self.slots.len();
        // SeqCst pairs with the ticker's store of `ticker_asleep` and its count: either the
        // ticker sees this call, or this call sees the ticker asleep and wakes it.
        self.slots[slot].0.fetch_add(1, Ordering::SeqCst);
        if self.ticker_asleep.load(Ordering::SeqCst) {
            if let Some(ticker) = self.ticker.get() {
                ticker.unpark();
            }
        }
        RunningCall {
            running: self,
            slot,
        }
    }

    fn count(&self) -> i64 {
        self.slots.iter().map(|s| s.0.load(Ordering::SeqCst)).sum()
    }
}

impl Drop for RunningCall<'_> {
    fn drop(&mut self) {
        self.running.slots[self.slot]
            .0
            .fetch_sub(1, Ordering::SeqCst);
    }
}

/// The ticker thread. Holds only weak references: it stops with the runtime.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Epoch increments so far, for tests of when the ticker sleeps.
    #[cfg(test)]
    ticks: Arc<AtomicU64>,
}

impl Ticker {
    /// Starts ticking every `tick` while `running` counts calls, and sweeping every
    /// `sweep_every`.
    pub(crate) fn start(
        engine: &Engine,
        services: Weak<HostServices>,
        running: Arc<Running>,
        tick: Duration,
        sweep_every: Duration,
    ) -> anyhow::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        #[cfg(test)]
        let ticks = Arc::new(AtomicU64::new(0));
        #[cfg(test)]
        let ticked = ticks.clone();
        let engine = engine.weak();
        let (stopped, woken_by) = (stop.clone(), running.clone());
        let thread = std::thread::Builder::new()
            .name("vigil-epoch".into())
            .spawn(move || {
                let mut last_sweep = Instant::now();
                let mut last_busy = Instant::now();
                while !stopped.load(Ordering::Relaxed) {
                    if running.count() > 0 {
                        last_busy = Instant::now();
                    }
                    if last_busy.elapsed() < IDLE_AFTER {
                        std::thread::sleep(tick);
                    } else {
                        let until_sweep = sweep_every.saturating_sub(last_sweep.elapsed());
                        if sleep_until_called(&running, until_sweep) {
                            last_busy = Instant::now();
                        }
                    }
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    engine.increment_epoch();
                    #[cfg(test)]
                    ticked.fetch_add(1, Ordering::Relaxed);
                    if last_sweep.elapsed() >= sweep_every {
                        last_sweep = Instant::now();
                        let Some(services) = services.upgrade() else {
                            return;
                        };
                        let removed = services.state.sweep();
                        tracing::debug!(removed, "swept idle guard state");
                    }
                }
            })
            .context("cannot start the guard deadline ticker thread")?;
        let _ = woken_by.ticker.set(thread.thread().clone());
        Ok(Ticker {
            stop,
            thread: Some(thread),
            #[cfg(test)]
            ticks,
        })
    }

    /// Epoch increments so far.
    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
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

/// Sleeps for at most `timeout`, or until a call starts. True when woken before the timeout.
fn sleep_until_called(running: &Running, timeout: Duration) -> bool {
    let started = Instant::now();
    running.ticker_asleep.store(true, Ordering::SeqCst);
    if running.count() == 0 {
        std::thread::park_timeout(timeout);
    }
    running.ticker_asleep.store(false, Ordering::SeqCst);
    started.elapsed() < timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticker(running: &Arc<Running>) -> (Engine, Ticker) {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        let ticker = Ticker::start(
            &engine,
            Weak::new(),
            running.clone(),
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )
        .unwrap();
        (engine, ticker)
    }

    #[test]
    fn the_ticker_sleeps_while_no_guard_code_runs_and_ticks_while_it_does() {
        let running = Arc::new(Running::new());
        let (_engine, mut ticker) = ticker(&running);
        std::thread::sleep(IDLE_AFTER + Duration::from_millis(100));
        let asleep = ticker.ticks();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            ticker.ticks() - asleep <= 2,
            "idle: {} ticks in 300 ms",
            ticker.ticks() - asleep
        );

        let call = running.enter();
        let woken = ticker.ticks();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            ticker.ticks() - woken >= 30,
            "a running call gets ticks: {} in 300 ms",
            ticker.ticks() - woken
        );
        drop(call);
        ticker.stop();
    }

    #[test]
    fn stopping_a_sleeping_ticker_does_not_wait_for_its_timeout() {
        let running = Arc::new(Running::new());
        let (_engine, mut ticker) = ticker(&running);
        std::thread::sleep(IDLE_AFTER + Duration::from_millis(50));
        let started = Instant::now();
        ticker.stop();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
