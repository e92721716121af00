//! A bounded, sharded map with least-recently-seen eviction and idle expiry: the one structure
//! behind every per-client and per-key table, so that no input can grow memory without limit.

use foldhash::fast::RandomState;
use lru::LruCache;
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

/// Shards keep lock hold times short when many worker threads touch state at once.
const SHARDS: usize = 32;

struct Slot<V> {
    value: V,
    last_seen_ms: u64,
}

type Shard<K, V> = Mutex<LruCache<K, Slot<V>>>;

pub(crate) struct BoundedTable<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// Picks the shard. Keys come from clients, so it is seeded at random; it only spreads
    /// them over shards, each bounded, so a fast hash does.
    hasher: RandomState,
    per_shard: usize,
    idle_ms: u64,
}

impl<K: Hash + Eq, V> BoundedTable<K, V> {
    /// A table of at most `capacity` entries (at least one per shard), each dropped after
    /// `idle_ms` without use.
    pub(crate) fn new(capacity: usize, idle_ms: u64) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(LruCache::unbounded()))
            .collect();
        BoundedTable {
            shards,
            hasher: RandomState::default(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            idle_ms,
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, V> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        &self.shards[index]
    }

    /// Runs `f` on the entry for `key`, creating it with `create` when absent or idle, and
    /// marks it as just seen. Evicts the least recently seen entry of the shard when full.
    pub(crate) fn upsert<R>(
        &self,
        key: K,
        now_ms: u64,
        create: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut shard = lock(self.shard(&key));
        if let Some(slot) = shard.get_mut(&key) {
            return self.touch(slot, now_ms, create, f);
        }
        self.insert(&mut shard, key, now_ms, create, f)
    }

    /// [`upsert`](Self::upsert) by a borrowed form of the key (`&str` for `Box<str>` keys),
    /// calling `own` for the owned key only when the entry is new: an entry already there
    /// costs no allocation.
    pub(crate) fn upsert_borrowed<Q, R>(
        &self,
        key: &Q,
        own: impl FnOnce(&Q) -> K,
        now_ms: u64,
        create: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = lock(self.shard(key));
        if let Some(slot) = shard.get_mut(key) {
            return self.touch(slot, now_ms, create, f);
        }
        self.insert(&mut shard, own(key), now_ms, create, f)
    }

    /// An existing entry, seen now: recreated first if it was idle too long.
    fn touch<R>(
        &self,
        slot: &mut Slot<V>,
        now_ms: u64,
        create: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        if now_ms.saturating_sub(slot.last_seen_ms) > self.idle_ms {
            slot.value = create();
        }
        slot.last_seen_ms = now_ms;
        f(&mut slot.value)
    }

    /// A new entry, evicting the shard's least recently seen one when full.
    fn insert<R>(
        &self,
        shard: &mut LruCache<K, Slot<V>>,
        key: K,
        now_ms: u64,
        create: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut value = create();
        let result = f(&mut value);
        shard.push(
            key,
            Slot {
                value,
                last_seen_ms: now_ms,
            },
        );
        if shard.len() > self.per_shard {
            shard.pop_lru();
        }
        result
    }

    /// Runs `f` on the entry for `key` if present and not idle, without creating one.
    /// `Q` lets callers look up by a borrowed form (`&str` for `Box<str>` keys) without
    /// allocating; `Borrow` guarantees both hash alike, so the shard is the same.
    pub(crate) fn read<Q, R>(&self, key: &Q, now_ms: u64, f: impl FnOnce(&mut V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = lock(self.shard(key));
        let slot = shard.get_mut(key)?;
        if now_ms.saturating_sub(slot.last_seen_ms) > self.idle_ms {
            shard.pop(key);
            return None;
        }
        slot.last_seen_ms = now_ms;
        Some(f(&mut slot.value))
    }

    /// Removes the entry for `key`; returns it if it was there and not idle.
    pub(crate) fn remove<Q>(&self, key: &Q, now_ms: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = lock(self.shard(key)).pop(key)?;
        (now_ms.saturating_sub(slot.last_seen_ms) <= self.idle_ms).then_some(slot.value)
    }

    /// How many live entries `keep` accepts.
    pub(crate) fn count(&self, now_ms: u64, keep: impl Fn(&V) -> bool) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .iter()
                    .filter(|(_, slot)| now_ms.saturating_sub(slot.last_seen_ms) <= self.idle_ms)
                    .filter(|(_, slot)| keep(&slot.value))
                    .count()
            })
            .sum()
    }

    /// Copies of the live entries that `keep` accepts, shard by shard.
    pub(crate) fn snapshot(&self, now_ms: u64, keep: impl Fn(&V) -> bool) -> Vec<(K, V)>
    where
        K: Clone,
        V: Clone,
    {
        let mut entries = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            entries.extend(
                shard
                    .iter()
                    .filter(|(_, slot)| now_ms.saturating_sub(slot.last_seen_ms) <= self.idle_ms)
                    .filter(|(_, slot)| keep(&slot.value))
                    .map(|(key, slot)| (key.clone(), slot.value.clone())),
            );
        }
        entries
    }

    /// Number of entries, idle ones included until the next sweep.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Drops every entry idle for longer than the idle limit; returns how many.
    pub(crate) fn sweep(&self, now_ms: u64) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            // The LRU end holds the least recently seen entry: stop at the first live one.
            while let Some((_, slot)) = shard.peek_lru() {
                if now_ms.saturating_sub(slot.last_seen_ms) <= self.idle_ms {
                    break;
                }
                shard.pop_lru();
                removed += 1;
            }
        }
        removed
    }
}

/// A poisoned shard only means another thread panicked mid-update of plain data; the data is
/// still usable, and refusing service would let one bad call take the proxy down.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_seen_beyond_capacity() {
        let table: BoundedTable<u32, u32> = BoundedTable::new(SHARDS * 2, u64::MAX);
        for k in 0..10_000 {
            table.upsert(k, k as u64, || k, |_| ());
        }
        assert!(table.len() <= SHARDS * 2, "len {}", table.len());
        // The newest keys survive.
        assert_eq!(table.read(&9_999, 10_000, |v| *v), Some(9_999));
        assert_eq!(table.read(&0, 10_000, |v| *v), None);
    }

    #[test]
    fn a_borrowed_key_is_owned_only_for_a_new_entry() {
        let table: BoundedTable<Box<str>, u32> = BoundedTable::new(100, u64::MAX);
        let owned = std::cell::Cell::new(0);
        let own = |key: &str| {
            owned.set(owned.get() + 1);
            Box::from(key)
        };
        for now in 0..3 {
            table.upsert_borrowed("client", own, now, || 0, |v| *v += 1);
        }
        assert_eq!(
            owned.get(),
            1,
            "the key was allocated again for a known client"
        );
        assert_eq!(table.read("client", 3, |v| *v), Some(3));
    }

    #[test]
    fn idle_entries_expire_on_read_and_sweep() {
        let table: BoundedTable<&str, u32> = BoundedTable::new(100, 1_000);
        table.upsert("a", 0, || 1, |_| ());
        table.upsert("b", 500, || 2, |_| ());
        assert_eq!(table.read(&"a", 1_000, |v| *v), Some(1));
        assert_eq!(table.read(&"a", 2_001, |v| *v), None);
        assert_eq!(table.sweep(2_000), 1, "b was last seen at 500");
        assert_eq!(table.len(), 0);
        // An idle entry is recreated, not resumed.
        table.upsert("c", 0, || 1, |v| *v += 10);
        assert_eq!(table.upsert("c", 5_000, || 1, |v| *v), 1);
    }
}
