//! Findings reported by guards, queued for the reporter in a bounded buffer.

use crate::state::lock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A security observation a guard reported through the `finding` import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Name of the guard that reported it.
    pub guard: String,
    /// Short machine-readable kind, e.g. `credential-stuffing`.
    pub kind: String,
    /// Free-form detail.
    pub detail: String,
    /// Identity key of the client whose request was being evaluated.
    pub client: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A bounded queue of findings; when full, the oldest is dropped and counted.
pub(crate) struct FindingSink {
    queue: Mutex<VecDeque<Finding>>,
    capacity: usize,
    dropped: AtomicU64,
}

impl FindingSink {
    pub(crate) fn new(capacity: usize) -> Self {
        FindingSink {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn push(&self, guard: &str, kind: String, detail: String, client: &str, at_ms: u64) {
        let mut queue = lock(&self.queue);
        if queue.len() >= self.capacity {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(Finding {
            guard: guard.to_string(),
            kind,
            detail,
            client: client.to_string(),
            at_ms,
        });
    }

    pub(crate) fn drain(&self) -> Vec<Finding> {
        lock(&self.queue).drain(..).collect()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
