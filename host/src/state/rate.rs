//! Keyed rate limiters: governor's GCRA over the host's bounded table. Each distinct quota
//! (rate, burst) gets one limiter; every limiter keeps its per-key state in the same bounded
//! table, so the number of keys is capped however many quotas guards use.

use super::table::{lock, BoundedTable};
use crate::clock::{GovernorClock, SharedClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A rate-limited key: the guard's scope and the key it chose.
#[derive(Clone, Hash, PartialEq, Eq)]
pub(crate) struct RateKey {
    pub(crate) scope: u32,
    pub(crate) key: Box<str>,
}

type TatTable = BoundedTable<(u32, RateKey), Option<Nanos>>;

/// One limiter's view of the shared table: its quota id selects its entries, because GCRA
/// state is relative to the limiter's own start time.
struct QuotaState {
    quota_id: u32,
    table: Arc<TatTable>,
    clock: SharedClock,
}

impl StateStore for QuotaState {
    type Key = RateKey;

    fn measure_and_replace<T, F, E>(&self, key: &RateKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let now_ms = self.clock.now_ms();
        self.table.upsert(
            (self.quota_id, key.clone()),
            now_ms,
            || None,
            |tat| {
                let (outcome, next) = f(*tat)?;
                *tat = Some(next);
                Ok(outcome)
            },
        )
    }
}

type Limiter = RateLimiter<RateKey, QuotaState, GovernorClock, NoOpMiddleware<Nanos>>;

pub(crate) struct RateLimiters {
    table: Arc<TatTable>,
    limiters: Mutex<HashMap<(u64, u32), Arc<Limiter>>>,
    max_quotas: usize,
    clock: SharedClock,
}

/// Why a rate call is refused outright (the guard's call traps with this message).
#[derive(Debug, thiserror::Error)]
pub enum RateError {
    /// The rate is not a positive finite number, or too fine to represent.
    #[error("rate: per-second must be a positive finite number, got {0}")]
    BadRate(f64),
    /// Too many distinct (rate, burst) pairs are in use.
    #[error("rate: more than {0} distinct (per-second, burst) quotas are in use")]
    TooManyQuotas(usize),
}

impl RateLimiters {
    pub(crate) fn new(
        max_keys: usize,
        idle_ms: u64,
        max_quotas: usize,
        clock: SharedClock,
    ) -> Self {
        RateLimiters {
            table: Arc::new(BoundedTable::new(max_keys, idle_ms)),
            limiters: Mutex::new(HashMap::new()),
            max_quotas,
            clock,
        }
    }

    /// Takes one token for `key`; `Ok(Err(ms))` when the caller must wait `ms` milliseconds.
    pub(crate) fn check(
        &self,
        key: RateKey,
        per_second: f64,
        burst: u32,
    ) -> Result<Result<(), u32>, RateError> {
        let limiter = self.limiter(per_second, burst)?;
        Ok(limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now().into());
            wait.as_millis().clamp(1, u32::MAX as u128) as u32
        }))
    }

    fn limiter(&self, per_second: f64, burst: u32) -> Result<Arc<Limiter>, RateError> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(RateError::BadRate(per_second));
        }
        let mut limiters = lock(&self.limiters);
        let id = (per_second.to_bits(), burst);
        if let Some(limiter) = limiters.get(&id) {
            return Ok(limiter.clone());
        }
        if limiters.len() >= self.max_quotas {
            return Err(RateError::TooManyQuotas(self.max_quotas));
        }
        let period = Duration::try_from_secs_f64(1.0 / per_second)
            .map_err(|_| RateError::BadRate(per_second))?;
        let quota = Quota::with_period(period)
            .ok_or(RateError::BadRate(per_second))?
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let state = QuotaState {
            quota_id: limiters.len() as u32,
            table: self.table.clone(),
            clock: self.clock.clone(),
        };
        let limiter = Arc::new(RateLimiter::new(
            quota,
            state,
            GovernorClock(self.clock.clone()),
        ));
        limiters.insert(id, limiter.clone());
        Ok(limiter)
    }

    pub(crate) fn keys(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn sweep(&self, now_ms: u64) -> usize {
        self.table.sweep(now_ms)
    }
}
