//! The seam to a store shared by the replicas of a service (Redis, in the `vigil-fleet`
//! crate): when the runtime is given one, every state primitive asks it, and falls back to the
//! in-process tables while it cannot answer. The trait is synchronous because guards call
//! state synchronously from inside their sandbox; an implementation bounds each call by its
//! own short timeout. This crate stays free of network code: it only owns the trait.

use super::{Ban, EventRecord};
use crate::bindings::vigil::guard::types::Event;

/// The shared store could not answer in time (down, slow, or refusing); the caller decides on
/// its own tables instead. The implementation has already logged and counted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the shared state store is unavailable")]
pub struct Unavailable;

/// How the shared store is doing, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStatus {
    /// Whether calls go to the shared store now (false: deciding on local tables).
    pub up: bool,
    /// State calls answered from local tables because the shared store could not answer.
    pub fallbacks: u64,
    /// History records dropped because the write queue to the shared store was full.
    pub records_dropped: u64,
}

/// A state store shared by every replica of a service. Keys are the guard's own (unbounded,
/// unscoped): the implementation namespaces them by guard name and bounds them, because the
/// in-process scope ids and hash seeds differ between replicas.
pub trait SharedState: Send + Sync + 'static {
    /// The client's most recent events across the fleet, newest first, at most `limit`.
    fn history(&self, client: &str, limit: usize) -> Result<Vec<Event>, Unavailable>;
    /// Appends an event to the client's shared history without waiting for it to be written.
    fn record(&self, client: &str, event: &EventRecord<'_>);
    /// Takes a token from the fleet-wide limiter `key` of `guard`; `Ok(Err(ms))`: wait `ms`.
    fn rate(
        &self,
        guard: &str,
        key: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Result<(), u32>, Unavailable>;
    /// Adds `delta` to a fleet-wide window counter; its total over `window_ms`.
    fn count(&self, guard: &str, key: &str, delta: i64, window_ms: u64)
        -> Result<i64, Unavailable>;
    /// Records `member` in a fleet-wide distinct set of at most `cap` members; its size.
    fn distinct(
        &self,
        guard: &str,
        key: &str,
        member: &str,
        window_ms: u64,
        cap: usize,
    ) -> Result<u32, Unavailable>;
    /// The value under `key`, unless absent or expired.
    fn get(&self, guard: &str, key: &str) -> Result<Option<Vec<u8>>, Unavailable>;
    /// Stores `value` under `key` for `ttl_ms`.
    fn set(&self, guard: &str, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), Unavailable>;
    /// Places a fleet-wide ban, replacing any the client had.
    fn place_ban(&self, client: &str, ban: &Ban) -> Result<(), Unavailable>;
    /// The client's ban as last synchronised from the fleet (no round trip), if in force at
    /// `now_ms`.
    fn cached_ban(&self, client: &str, now_ms: u64) -> Option<Ban>;
    /// Lifts the client's fleet-wide ban; whether one was in force.
    fn lift_ban(&self, client: &str) -> Result<bool, Unavailable>;
    /// The fleet's bans in force at `now_ms`, by client key.
    fn bans(&self, now_ms: u64) -> Result<Vec<(String, Ban)>, Unavailable>;
    /// Forgets the client's shared history and ban; whether anything was kept.
    fn forget_client(&self, client: &str) -> Result<bool, Unavailable>;
    /// How the store is doing.
    fn status(&self) -> SharedStatus;
}
