//! Per-client request history: a ring of compact events, with route and method names interned
//! so that an event costs 16 bytes however long its route is.

use super::table::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

/// One past request, in 16 bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredEvent {
    pub(crate) at_ms: u64,
    pub(crate) route: u32,
    pub(crate) status: u16,
    pub(crate) method: u8,
    pub(crate) flags: u8,
}

pub(crate) const FLAG_PUBLIC: u8 = 1;
pub(crate) const FLAG_AUTHENTICATED: u8 = 2;

/// The most recent events of one client, oldest first, never more than the configured depth.
#[derive(Default)]
pub(crate) struct History {
    events: VecDeque<StoredEvent>,
}

impl History {
    pub(crate) fn push(&mut self, event: StoredEvent, depth: usize) {
        while self.events.len() >= depth {
            self.events.pop_front();
        }
        if self.events.capacity() == self.events.len() {
            // Grow to the depth at most, never to the next power of two beyond it.
            let wanted = (self.events.len() * 2).clamp(4, depth) - self.events.len();
            self.events.reserve_exact(wanted);
        }
        self.events.push_back(event);
    }

    pub(crate) fn newest_first(&self, limit: usize) -> impl Iterator<Item = &StoredEvent> {
        self.events.iter().rev().take(limit)
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<StoredEvent>()
    }
}

/// How many method and route pairs a [`MatchMemo`] remembers.
const MEMO_PAIRS: usize = 8;

/// Whether events' method and route match, each pair of ids decided once per scan: a client's
/// history mostly repeats a few routes, and deciding is text work (patterns against names),
/// where comparing ids is not. Past [`MEMO_PAIRS`] pairs it decides each event again.
pub(crate) struct MatchMemo<F> {
    decided: [(u8, u32, bool); MEMO_PAIRS],
    len: usize,
    decide: F,
}

impl<F: FnMut(u8, u32) -> bool> MatchMemo<F> {
    /// A memo of `decide(method, route)`.
    pub(crate) fn new(decide: F) -> Self {
        MatchMemo {
            decided: [(0, 0, false); MEMO_PAIRS],
            len: 0,
            decide,
        }
    }

    pub(crate) fn matches(&mut self, event: &StoredEvent) -> bool {
        let pair = (event.method, event.route);
        if let Some(&(_, _, matched)) = self.decided[..self.len]
            .iter()
            .find(|(method, route, _)| (*method, *route) == pair)
        {
            return matched;
        }
        let matched = (self.decide)(pair.0, pair.1);
        if self.len < MEMO_PAIRS {
            self.decided[self.len] = (pair.0, pair.1, matched);
            self.len += 1;
        }
        matched
    }
}

/// Maps names to small ids and back, up to a bound; past it every new name shares one id.
pub(crate) struct Interner {
    /// Looked up twice per request; bounded by `limit`, so a fast, randomly seeded hash does.
    ids: RwLock<HashMap<Box<str>, u32, foldhash::fast::RandomState>>,
    names: RwLock<Vec<Arc<str>>>,
    insert: Mutex<()>,
    limit: usize,
}

impl Interner {
    /// Id 0 is `overflow_name`, given to every name past `limit`.
    pub(crate) fn new(limit: usize, overflow_name: &str) -> Self {
        Interner {
            ids: RwLock::new(HashMap::default()),
            names: RwLock::new(vec![overflow_name.into()]),
            insert: Mutex::new(()),
            limit,
        }
    }

    pub(crate) fn id(&self, name: &str) -> u32 {
        if let Some(id) = read(&self.ids).get(name) {
            return *id;
        }
        let _one_writer = lock(&self.insert);
        if let Some(id) = read(&self.ids).get(name) {
            return *id;
        }
        let mut names = write(&self.names);
        if names.len() > self.limit {
            return 0;
        }
        let id = names.len() as u32;
        names.push(name.into());
        write(&self.ids).insert(name.into(), id);
        id
    }

    /// All names by id, under one read lock for a batch of look-ups.
    pub(crate) fn names(&self) -> Names<'_> {
        Names(read(&self.names))
    }

    pub(crate) fn len(&self) -> usize {
        read(&self.names).len() - 1
    }
}

/// A read-locked view of an interner's names.
pub(crate) struct Names<'a>(std::sync::RwLockReadGuard<'a, Vec<Arc<str>>>);

impl Names<'_> {
    pub(crate) fn get(&self, id: u32) -> &str {
        self.shared(id)
    }

    /// The name, shared rather than copied: it outlives the read lock.
    pub(crate) fn shared(&self, id: u32) -> &Arc<str> {
        self.0.get(id as usize).unwrap_or(&self.0[0])
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: u64) -> StoredEvent {
        StoredEvent {
            at_ms,
            route: 1,
            status: 200,
            method: 1,
            flags: 0,
        }
    }

    #[test]
    fn keeps_the_newest_up_to_depth() {
        let mut h = History::default();
        for t in 0..100 {
            h.push(event(t), 32);
        }
        let times: Vec<u64> = h.newest_first(usize::MAX).map(|e| e.at_ms).collect();
        assert_eq!(times.len(), 32);
        assert_eq!(times[0], 99);
        assert_eq!(times[31], 68);
        assert!(h.heap_bytes() <= 32 * 16, "{}", h.heap_bytes());
    }

    #[test]
    fn a_memo_decides_each_pair_once_and_every_pair_past_its_room() {
        let mut decided = Vec::new();
        let mut memo = MatchMemo::new(|method, route| {
            decided.push((method, route));
            route % 2 == 0
        });
        let at = |method, route| StoredEvent {
            method,
            route,
            ..event(0)
        };
        assert!(memo.matches(&at(1, 2)));
        assert!(!memo.matches(&at(1, 3)));
        assert!(memo.matches(&at(1, 2)));
        assert!(!memo.matches(&at(2, 3)), "another method is another pair");
        for route in 10..20 {
            assert_eq!(memo.matches(&at(1, route)), route % 2 == 0);
        }
        assert!(!memo.matches(&at(1, 19)));
        assert!(memo.matches(&at(1, 2)));
        // (1,2), (1,3), (2,3), then 10..20 of which 10..14 fit; 15..19 and 19 again do not.
        assert_eq!(decided.len(), 3 + 10 + 1);
        assert_eq!(decided.iter().filter(|p| **p == (1, 2)).count(), 1);
    }

    #[test]
    fn interner_is_bounded() {
        let interner = Interner::new(2, "(other)");
        assert_eq!(interner.id("/a"), 1);
        assert_eq!(interner.id("/b"), 2);
        assert_eq!(interner.id("/a"), 1);
        assert_eq!(interner.id("/c"), 0);
        assert_eq!(interner.names().get(0), "(other)");
        assert_eq!(interner.names().get(2), "/b");
        assert_eq!(interner.names().get(99), "(other)");
        assert_eq!(interner.len(), 2);
    }
}
