//! The warm instances of one guard, kept per core so that an instance's memory stays in one
//! core's caches.

use crate::sandbox::GuestState;
use crate::shards::Sharded;
use crate::world::Exports;
use wasmtime::Store;

/// An instance ready for a call, and how many calls it has served.
pub(super) struct WarmInstance {
    pub(super) store: Store<GuestState>,
    pub(super) exports: Exports,
    pub(super) calls: u64,
}

/// Warm instances of one guard, one shard per core. A worker thread takes and returns
/// instances in its own shard, so an instance's memory stays in one core's caches; an empty
/// shard borrows from the others before a fresh instance is made.
pub(super) struct WarmPool {
    shards: Sharded<Vec<WarmInstance>>,
    per_shard: usize,
}

impl WarmPool {
    pub(super) fn new(max_warm: usize) -> WarmPool {
        let shards = Sharded::new();
        WarmPool {
            per_shard: max_warm.div_ceil(shards.len()).max(1),
            shards,
        }
    }

    pub(super) fn take(&self) -> Option<WarmInstance> {
        if let Some(instance) = self.shards.local().pop() {
            return Some(instance);
        }
        self.shards.others().find_map(|mut shard| shard.pop())
    }

    /// Keeps `instance` for a later call, unless this thread's shard is full.
    pub(super) fn put(&self, instance: WarmInstance) {
        let mut shard = self.shards.local();
        if shard.len() < self.per_shard {
            shard.push(instance);
        }
    }
}
