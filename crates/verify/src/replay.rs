//! The DPoP proof replay cache (RFC 9449 §11.1) with bounded memory.
//!
//! Each entry is a proof's replay key and the time until which it must be remembered (the end
//! of its `iat` window; after that the proof fails the `iat` check anyway). Expired entries are
//! dropped cheaply from a min-heap on every insert. When the cache is full of entries that have
//! not expired, new proofs are refused (fail closed) rather than forgetting live ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Mutex, PoisonError};

/// The cache's verdict on a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// First sighting: recorded.
    Fresh,
    /// Seen before, inside its window.
    Replayed,
    /// No room: every entry is still live.
    Full,
}

pub(crate) struct ReplayCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<[u8; 32]>,
    by_expiry: BinaryHeap<Reverse<(i64, [u8; 32])>>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records `key` until `until` (inclusive), as seen at `now`.
    pub(crate) fn record(&self, key: [u8; 32], until: i64, now: i64) -> Record {
        // A panic cannot happen while the lock is held (no user code runs under it), so a
        // poisoned lock still guards consistent data.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.purge(now);
        if inner.seen.contains(&key) {
            return Record::Replayed;
        }
        if inner.seen.len() >= self.capacity {
            return Record::Full;
        }
        inner.seen.insert(key);
        inner.by_expiry.push(Reverse((until, key)));
        Record::Fresh
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen
            .len()
    }
}

impl Inner {
    fn purge(&mut self, now: i64) {
        while let Some(Reverse((until, key))) = self.by_expiry.peek().copied() {
            if until >= now {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_caught_and_memory_is_bounded() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.record([1; 32], 100, 50), Record::Fresh);
        assert_eq!(cache.record([1; 32], 100, 60), Record::Replayed);
        assert_eq!(cache.record([2; 32], 110, 60), Record::Fresh);
        assert_eq!(cache.record([3; 32], 110, 60), Record::Full);
        // Still remembered at its last second, forgotten after it.
        assert_eq!(cache.record([1; 32], 100, 100), Record::Replayed);
        assert_eq!(cache.record([3; 32], 120, 101), Record::Fresh);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.record([4; 32], 130, 111), Record::Fresh);
        assert_eq!(cache.record([5; 32], 130, 121), Record::Fresh);
        assert_eq!(cache.len(), 2);
    }
}
