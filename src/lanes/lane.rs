//! One lane: a FIFO queue bounded by events and by bytes.
//!
//! Both bounds matter: the count bounds the bookkeeping per event, the bytes bound memory
//! whatever the size of the events. An event larger than the whole byte bound is still
//! taken when the lane is empty, alone: refusing it would stop the pipeline for good.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::config::LaneConfig;

/// An event waiting in a lane, with what the lanes need to know about it.
#[derive(Debug)]
pub(super) struct Entry<T> {
    /// Arrival order over all lanes: per key, a smaller sequence goes first.
    pub seq: u64,
    /// The Kafka key whose order is kept; `None` has no order to keep.
    pub key: Option<Bytes>,
    /// Bytes counted against the lane's bound.
    pub size: u64,
    /// The event itself.
    pub item: T,
}

/// A bounded FIFO queue of entries, in sequence order.
#[derive(Debug)]
pub(super) struct Lane<T> {
    /// Waiting entries, oldest (smallest sequence) first.
    entries: VecDeque<Entry<T>>,
    /// Sum of the entries' sizes.
    bytes: u64,
    /// Events at most (`capacity`).
    capacity: usize,
    /// Bytes at most (`maxBytes`), unless one event alone is larger.
    max_bytes: u64,
}

impl<T> Lane<T> {
    /// An empty lane with `config`'s bounds.
    pub fn new(config: &LaneConfig) -> Lane<T> {
        Lane {
            entries: VecDeque::new(),
            bytes: 0,
            capacity: config.capacity.get(),
            max_bytes: config.max_bytes.get(),
        }
    }

    /// Whether an event of `size` bytes fits now.
    pub fn has_room(&self, size: u64) -> bool {
        self.entries.is_empty()
            || (self.entries.len() < self.capacity
                && self.bytes.saturating_add(size) <= self.max_bytes)
    }

    /// Appends `entry`; the caller checked [`Lane::has_room`] and gives increasing sequences.
    pub fn push(&mut self, entry: Entry<T>) {
        self.bytes += entry.size;
        self.entries.push_back(entry);
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.iter()
    }

    /// The entry at `index` (0 is the oldest).
    pub fn get(&self, index: usize) -> Option<&Entry<T>> {
        self.entries.get(index)
    }

    /// Removes the entry at `index`.
    pub fn remove(&mut self, index: usize) -> Option<Entry<T>> {
        let entry = self.entries.remove(index)?;
        self.bytes -= entry.size;
        Some(entry)
    }

    /// Removes the entry with sequence `seq` (entries are in sequence order).
    pub fn remove_seq(&mut self, seq: u64) -> Option<Entry<T>> {
        let index = self.entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        self.remove(index)
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU64, NonZeroUsize};

    use super::*;

    fn lane(capacity: usize, max_bytes: u64) -> Lane<u32> {
        Lane::new(&LaneConfig {
            capacity: NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            max_bytes: NonZeroU64::new(max_bytes).unwrap_or(NonZeroU64::MIN),
            max_events_per_second: None,
        })
    }

    fn entry(seq: u64, size: u64) -> Entry<u32> {
        Entry {
            seq,
            key: None,
            size,
            item: u32::try_from(seq).unwrap_or(u32::MAX),
        }
    }

    #[test]
    fn bounded_by_count() {
        let mut lane = lane(3, 1000);
        for seq in 0..3 {
            assert!(lane.has_room(10));
            lane.push(entry(seq, 10));
        }
        assert!(!lane.has_room(1), "4th event over a capacity of 3");
        assert_eq!((lane.len(), lane.bytes()), (3, 30));
        assert_eq!(lane.remove(0).map(|e| e.item), Some(0));
        assert!(lane.has_room(10));
    }

    #[test]
    fn bounded_by_bytes_but_an_oversized_event_goes_alone() {
        let mut lane = lane(100, 100);
        lane.push(entry(0, 60));
        assert!(lane.has_room(40));
        assert!(!lane.has_room(41), "60 + 41 bytes over 100");
        lane.push(entry(1, 40));
        assert!(!lane.has_room(1));
        assert_eq!(lane.remove_seq(0).map(|e| e.size), Some(60));
        assert_eq!(lane.remove_seq(1).map(|e| e.size), Some(40));
        assert_eq!(lane.bytes(), 0);
        assert!(
            lane.has_room(500),
            "an empty lane takes one oversized event"
        );
        lane.push(entry(2, 500));
        assert!(!lane.has_room(1));
    }

    #[test]
    fn removes_by_sequence_from_the_middle() {
        let mut lane = lane(10, 1000);
        for seq in [3, 5, 8, 13] {
            lane.push(entry(seq, 1));
        }
        assert_eq!(lane.remove_seq(8).map(|e| e.seq), Some(8));
        assert!(lane.remove_seq(4).is_none());
        let left: Vec<u64> = lane.iter().map(|e| e.seq).collect();
        assert_eq!(left, [3, 5, 13]);
    }
}
