//! Bans: clients refused on every route, without running guards, until a time. A guard's
//! denial places one when its table says `ban`, an operator places or lifts one through the
//! admin API. Bounded like every table; a client not banned costs one atomic load while no ban
//! has ever been placed, one shard lookup after.

use super::table::BoundedTable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest ban, placed by a guard's `ban` or by hand: a forgotten one ends within a month.
pub const MAX_BAN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why and until when a client is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// Milliseconds since the Unix epoch at which the ban ends.
    pub until_ms: u64,
    /// The guard whose denial placed it, or `admin`.
    pub by: Arc<str>,
    /// The reason given with the denial, or by the operator.
    pub reason: String,
}

/// The bans in force, by client key.
pub struct Bans {
    table: BoundedTable<Box<str>, Ban>,
    /// Whether any ban was ever placed: until then no request looks the table up.
    placed: AtomicBool,
}

/// Bans outlive idle expiry: only their end, a lift or eviction when full removes them.
const NEVER_IDLE_MS: u64 = u64::MAX / 2;

impl Bans {
    /// A table of at most `capacity` bans; when full, the least recently seen is dropped.
    pub(crate) fn new(capacity: usize) -> Bans {
        Bans {
            table: BoundedTable::new(capacity, NEVER_IDLE_MS),
            placed: AtomicBool::new(false),
        }
    }

    /// Bans `client` as `ban` says, replacing a ban it already had.
    pub fn place(&self, client: &str, ban: Ban, now_ms: u64) {
        self.placed.store(true, Ordering::Relaxed);
        self.table.upsert_borrowed::<str, _>(
            client,
            |key: &str| key.into(),
            now_ms,
            || ban.clone(),
            |slot| *slot = ban.clone(),
        );
    }

    /// The ban `client` is under now, if any.
    pub fn of(&self, client: &str, now_ms: u64) -> Option<Ban> {
        if !self.placed.load(Ordering::Relaxed) {
            return None;
        }
        let ban = self
            .table
            .read::<str, _>(client, now_ms, |ban| ban.clone())?;
        if ban.until_ms > now_ms {
            return Some(ban);
        }
        self.table.remove::<str>(client, now_ms);
        None
    }

    /// Lifts `client`'s ban; whether it had one in force.
    pub fn lift(&self, client: &str, now_ms: u64) -> bool {
        self.table
            .remove::<str>(client, now_ms)
            .is_some_and(|ban| ban.until_ms > now_ms)
    }

    /// How many bans are in force, without copying them.
    pub fn count_in_force(&self, now_ms: u64) -> usize {
        self.table.count(now_ms, |ban| ban.until_ms > now_ms)
    }

    /// The bans in force, by client key, soonest to end first.
    pub fn in_force(&self, now_ms: u64) -> Vec<(String, Ban)> {
        let mut bans: Vec<(String, Ban)> = self
            .table
            .snapshot(now_ms, |ban| ban.until_ms > now_ms)
            .into_iter()
            .map(|(client, ban)| (client.into_string(), ban))
            .collect();
        bans.sort_by(|a, b| (a.1.until_ms, &a.0).cmp(&(b.1.until_ms, &b.0)));
        bans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(until_ms: u64) -> Ban {
        Ban {
            until_ms,
            by: "rate-limit".into(),
            reason: "too many".into(),
        }
    }

    #[test]
    fn a_ban_holds_until_its_end_or_a_lift() {
        let bans = Bans::new(100);
        assert_eq!(bans.of("alice", 1_000), None);
        bans.place("alice", ban(2_000), 1_000);
        bans.place("bob", ban(5_000), 1_000);
        assert_eq!(bans.of("alice", 1_999), Some(ban(2_000)));
        assert_eq!(bans.of("alice", 2_000), None, "over at its end");
        assert_eq!(
            bans.in_force(2_000),
            [("bob".to_string(), ban(5_000))],
            "only bans in force are listed"
        );
        assert_eq!(bans.count_in_force(2_000), 1);
        assert!(bans.lift("bob", 2_000));
        assert!(!bans.lift("bob", 2_000), "lifted once");
        assert_eq!(bans.of("bob", 2_001), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let bans = Bans::new(64);
        for i in 0..10_000 {
            bans.place(&format!("client-{i}"), ban(u64::MAX), i);
        }
        assert!(bans.in_force(10_000).len() <= 64, "at most the capacity");
    }
}
