//! The histories of the clients this replica has asked about, kept current by the events
//! every replica publishes as it writes them, so that `history` and `happened` cost no round
//! trip once a client's history was read once. An event is published in the pipeline that
//! writes it, so what is heard is as fresh as what a read would find.
//!
//! A client's entry is made from one exact read (`LRANGE`); events published meanwhile are held
//! and merged in, so none is lost between the read and the entry. Events are added to entries
//! that exist only: a client never asked about costs nothing. While the subscription is down
//! (or was, since the entries were made) the mirror answers nothing and is emptied: every
//! history is read exactly until it is back.

use crate::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use vigil_host::Event;

/// The shortest time between two prunings of idle entries.
const PRUNE_EVERY_MS: u64 = 1_000;

/// One client's history as this replica knows it.
struct Entry {
    /// Newest first, at most the history depth.
    events: VecDeque<Event>,
    /// Being read: events arriving now are kept for the read's answer, and none is answered.
    reading: bool,
    /// When it was last used or added to (ms since the epoch), for pruning.
    touched_ms: u64,
}

/// The mirrored histories.
pub(crate) struct Mirror {
    depth: usize,
    ttl_ms: u64,
    max_clients: usize,
    /// Subscribed, and nothing published has been missed since the entries were made.
    live: AtomicBool,
    /// When idle entries were last pruned (ms since the epoch): at most once a second, so a
    /// full mirror of busy clients does not cost every new client a scan.
    pruned_ms: AtomicU64,
    clients: Mutex<HashMap<String, Entry>>,
}

impl Mirror {
    /// An empty mirror of at most `max_clients` histories of `depth` events, dropped after
    /// `ttl_ms` unused; not live until subscribed.
    pub(crate) fn new(depth: usize, ttl_ms: u64, max_clients: usize) -> Mirror {
        Mirror {
            depth: depth.max(1),
            ttl_ms,
            max_clients: max_clients.max(1),
            live: AtomicBool::new(false),
            pruned_ms: AtomicU64::new(0),
            clients: Mutex::default(),
        }
    }

    /// Marks the subscription up (entries are then made as histories are read) or down (all
    /// are dropped, as events may be missed from now on).
    pub(crate) fn set_live(&self, live: bool) {
        if !live {
            lock(&self.clients).clear();
        }
        self.live.store(live, Ordering::Release);
    }

    /// The client's history, newest first, at most `limit`; `None` when it must be read from
    /// Redis (then [`Mirror::begin_read`] and [`Mirror::end_read`]).
    pub(crate) fn history(&self, client: &str, limit: usize, now_ms: u64) -> Option<Vec<Event>> {
        self.look(client, now_ms, |events| {
            events.iter().take(limit).cloned().collect()
        })
    }

    /// Whether any of the client's newest `limit` events satisfies `check`, looked through in
    /// place; `None` as for [`Mirror::history`].
    pub(crate) fn any(
        &self,
        client: &str,
        limit: usize,
        now_ms: u64,
        check: &mut dyn FnMut(&Event) -> bool,
    ) -> Option<bool> {
        self.look(client, now_ms, |events| {
            events.iter().take(limit).any(check)
        })
    }

    /// `look` at the client's kept history, newest first, marking it used; `None` when there
    /// is none to answer from (not live, not kept, or being read).
    fn look<R>(
        &self,
        client: &str,
        now_ms: u64,
        look: impl FnOnce(&VecDeque<Event>) -> R,
    ) -> Option<R> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let mut clients = lock(&self.clients);
        let entry = clients.get_mut(client).filter(|e| !e.reading)?;
        entry.touched_ms = now_ms;
        Some(look(&entry.events))
    }

    /// Before an exact read of `client`'s history: from now on its events are kept. Whether an
    /// entry is being made (false: the mirror is full or not live).
    pub(crate) fn begin_read(&self, client: &str, now_ms: u64) -> bool {
        if !self.live.load(Ordering::Acquire) {
            return false;
        }
        let mut clients = lock(&self.clients);
        if clients.len() >= self.max_clients && !clients.contains_key(client) {
            if now_ms.saturating_sub(self.pruned_ms.load(Ordering::Relaxed)) < PRUNE_EVERY_MS {
                return false;
            }
            self.pruned_ms.store(now_ms, Ordering::Relaxed);
            let ttl = self.ttl_ms;
            clients.retain(|_, e| e.reading || now_ms.saturating_sub(e.touched_ms) < ttl);
            if clients.len() >= self.max_clients {
                return false;
            }
        }
        clients.insert(
            client.to_string(),
            Entry {
                events: VecDeque::new(),
                reading: true,
                touched_ms: now_ms,
            },
        );
        true
    }

    /// After the exact read: its events merged with those that arrived meanwhile make the
    /// entry; or, when the read failed (`None`), the entry is dropped.
    pub(crate) fn end_read(&self, client: &str, read: Option<&[Event]>) {
        let mut clients = lock(&self.clients);
        let Some(read) = read else {
            clients.remove(client);
            return;
        };
        let Some(entry) = clients.get_mut(client) else {
            return;
        };
        let arrived = std::mem::take(&mut entry.events);
        entry.events = read.iter().take(self.depth).cloned().collect();
        // Arrivals are in the order they were published, oldest first.
        for event in arrived.into_iter().rev() {
            insert(&mut entry.events, event, self.depth);
        }
        entry.reading = false;
    }

    /// An event a replica (this one or a peer) served, for `client`'s entry if it has one.
    pub(crate) fn add(&self, client: &str, event: Event) {
        let mut clients = lock(&self.clients);
        if let Some(entry) = clients.get_mut(client) {
            insert(&mut entry.events, event, self.depth);
        }
    }
}

/// Adds `event` to a newest-first list of at most `depth`, once: the same event can arrive
/// by the read and by the subscription.
fn insert(events: &mut VecDeque<Event>, event: Event, depth: usize) {
    let at = events
        .iter()
        .position(|e| e.at_ms <= event.at_ms)
        .unwrap_or(events.len());
    // Only an event of the same millisecond can be the same one.
    let mut same_ms = events.range(at..).take_while(|e| e.at_ms == event.at_ms);
    if same_ms.any(|e| *e == event) {
        return;
    }
    events.insert(at, event);
    events.truncate(depth);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: u64, route: &str) -> Event {
        Event {
            at_ms,
            method: "GET".into(),
            route: route.into(),
            status: 200,
            public: true,
            authenticated: false,
        }
    }

    fn routes(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.route.as_str()).collect()
    }

    #[test]
    fn a_client_is_read_once_then_answered_with_what_arrives() {
        let mirror = Mirror::new(3, 60_000, 10);
        mirror.set_live(true);
        assert_eq!(mirror.history("c", 10, 0), None);
        assert!(mirror.begin_read("c", 0));
        assert_eq!(mirror.history("c", 10, 0), None, "not while it is read");
        // Published while the read was on its way: kept.
        mirror.add("c", event(30, "/during"));
        mirror.end_read("c", Some(&[event(20, "/b"), event(10, "/a")]));
        mirror.add("c", event(40, "/after"));
        mirror.add("c", event(40, "/after"));
        let history = mirror.history("c", 10, 0).unwrap();
        assert_eq!(
            routes(&history),
            ["/after", "/during", "/b"],
            "depth 3, once each"
        );
        assert_eq!(routes(&mirror.history("c", 1, 0).unwrap()), ["/after"]);
        assert_eq!(mirror.any("c", 10, 0, &mut |e| e.route == "/b"), Some(true));
        assert_eq!(mirror.any("c", 2, 0, &mut |e| e.route == "/b"), Some(false));
        assert_eq!(mirror.any("other", 10, 0, &mut |_| true), None);
        mirror.add("never-asked", event(1, "/x"));
        assert_eq!(mirror.history("never-asked", 10, 0), None);
    }

    #[test]
    fn events_of_the_same_millisecond_are_kept_unless_they_are_the_same() {
        let mirror = Mirror::new(4, 60_000, 10);
        mirror.set_live(true);
        assert!(mirror.begin_read("c", 0));
        mirror.end_read("c", Some(&[event(10, "/a")]));
        mirror.add("c", event(20, "/b"));
        mirror.add("c", event(20, "/c"));
        mirror.add("c", event(20, "/b"));
        mirror.add("c", event(10, "/a"));
        mirror.add("c", event(15, "/late"));
        let history = mirror.history("c", 10, 0).unwrap();
        assert_eq!(routes(&history), ["/c", "/b", "/late", "/a"]);
    }

    #[test]
    fn nothing_is_answered_while_the_subscription_is_down_and_entries_are_dropped() {
        let mirror = Mirror::new(3, 60_000, 10);
        assert!(!mirror.begin_read("c", 0), "not live yet");
        mirror.set_live(true);
        assert!(mirror.begin_read("c", 0));
        mirror.end_read("c", Some(&[]));
        assert_eq!(mirror.history("c", 10, 0), Some(vec![]));
        mirror.set_live(false);
        assert_eq!(mirror.history("c", 10, 0), None);
        mirror.set_live(true);
        assert_eq!(mirror.history("c", 10, 0), None, "read again after a gap");
    }

    #[test]
    fn a_failed_read_leaves_no_entry_and_a_full_mirror_makes_none() {
        let mirror = Mirror::new(3, 1_000, 1);
        mirror.set_live(true);
        assert!(mirror.begin_read("a", 0));
        mirror.end_read("a", None);
        assert_eq!(mirror.history("a", 10, 0), None);
        assert!(mirror.begin_read("a", 0));
        mirror.end_read("a", Some(&[]));
        assert!(!mirror.begin_read("b", 500), "full");
        assert!(mirror.begin_read("b", 1_500), "a went idle and is pruned");
        mirror.end_read("b", Some(&[]));
        assert!(!mirror.begin_read("c", 2_000), "pruned a moment ago");
        assert!(
            mirror.begin_read("c", 2_600),
            "pruned again a second later: b went idle"
        );
    }
}
