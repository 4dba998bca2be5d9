//! Per-key order across lanes (ARCHITECTURE.md, invariant 2).
//!
//! Every queued event with a key is indexed here by key, in arrival order, with its lane.
//! When the scheduler picks an event whose key has an earlier event waiting in another
//! lane, the earlier one is dispatched instead (promoted) under the picked lane's turn (and
//! token: a promoted event of a throttled lane does not wait for that lane's rate, or the
//! urgent event behind it would wait too); the picked one follows on a later turn. A key can also be held while one of its events is
//! being retried: none of its queued events is dispatched until it is released, other keys
//! flow on.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Queued events per key, and the keys held back by retries.
#[derive(Debug, Default)]
pub(super) struct KeyOrder {
    /// Per key, (sequence, lane index) of each queued event, oldest first.
    queued: HashMap<Bytes, VecDeque<(u64, usize)>>,
    /// Keys held back, with how many holds each has.
    held: HashMap<Bytes, u32>,
}

impl KeyOrder {
    /// Records a queued event; sequences arrive in increasing order.
    pub fn add(&mut self, key: &Bytes, seq: u64, lane: usize) {
        self.queued
            .entry(key.clone())
            .or_default()
            .push_back((seq, lane));
    }

    /// The oldest queued event of `key`: (sequence, lane index).
    pub fn earliest(&self, key: &Bytes) -> Option<(u64, usize)> {
        self.queued.get(key).and_then(|q| q.front().copied())
    }

    /// Forgets the oldest queued event of `key` (the one being dispatched).
    pub fn remove_earliest(&mut self, key: &Bytes) {
        if let Some(queue) = self.queued.get_mut(key) {
            queue.pop_front();
            if queue.is_empty() {
                self.queued.remove(key);
            }
        }
    }

    /// Holds `key` back (once more).
    pub fn hold(&mut self, key: &Bytes) {
        *self.held.entry(key.clone()).or_default() += 1;
    }

    /// Releases one hold of `key`.
    pub fn release(&mut self, key: &Bytes) {
        if let Some(count) = self.held.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(key);
            }
        }
    }

    /// Whether any key is held (the common case is none: a fast path).
    pub fn any_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether `key` is held.
    pub fn is_held(&self, key: &Bytes) -> bool {
        self.held.contains_key(key)
    }

    /// Keys with queued events (for the tests' bookkeeping checks).
    #[cfg(test)]
    pub fn queued_keys(&self) -> usize {
        self.queued.len()
    }
}
