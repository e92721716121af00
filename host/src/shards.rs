//! A value split into one shard per core. Each thread works in its own shard, so hot paths
//! take a lock no other core holds and write memory no other core caches; readers that need
//! the whole merge the shards.

use crate::state::lock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// One `T` per core; a thread always lands in the same shard.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[Mutex<T>]>,
}

impl<T: Default> Sharded<T> {
    /// One default shard per available core.
    pub fn new() -> Sharded<T> {
        Sharded {
            shards: (0..cores()).map(|_| Mutex::default()).collect(),
        }
    }
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded::new()
    }
}

impl<T> Sharded<T> {
    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The calling thread's shard, locked.
    pub fn local(&self) -> MutexGuard<'_, T> {
        lock(&self.shards[self.home()])
    }

    /// The other shards, locked one at a time, starting after the calling thread's.
    pub fn others(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        let home = self.home();
        (1..self.shards.len()).map(move |offset| lock(&self.shards[(home + offset) % self.len()]))
    }

    /// Every shard, locked one at a time.
    pub fn all(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(lock)
    }

    fn home(&self) -> usize {
        thread_slot() % self.shards.len()
    }
}

/// Cores available to this process: how many shards per-core structures keep.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A small number for the calling thread, distinct for the first threads that ask: worker
/// threads started one after the other land in different shards.
pub(crate) fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|slot| *slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_shard_and_readers_see_every_shard() {
        let counts: Sharded<u64> = Sharded::new();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        *counts.local() += 1;
                    }
                });
            }
        });
        assert_eq!(counts.all().map(|n| *n).sum::<u64>(), 4000);
        *counts.local() += 1;
        assert_eq!(counts.others().count(), counts.len() - 1);
        assert_eq!(counts.all().map(|n| *n).sum::<u64>(), 4001);
    }
}
