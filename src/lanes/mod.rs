//! Priority lanes: where the backlog waits, so that priority decides what goes next.
//!
//! ```text
//! push(priority, key, size) ──▶ CRITICAL │ HIGH │ NORMAL │ BULK   (bounded: events, bytes)
//!                                   │ token bucket per lane (optional): a throttled lane
//!                                   │ is skipped, the others go on
//!                                   ▼
//!                       stride scheduler (weights) picks a lane
//!                                   │ per-key order: an earlier event of the same key in
//!                                   │ another lane goes first (promotion); held keys wait
//!                                   ▼
//! retries (ready, dispatched first) ─▶ pop() ──▶ the dispatcher hands it to the producer
//! ```
//!
//! Pure and synchronous: the pipeline wraps it in a mutex and wakes its tasks; time is
//! passed in. With [`Scheduling::Fifo`] every event goes to one lane (the NORMAL lane's
//! bounds, no rate limit) in commit order: the baseline the benchmarks compare against.

mod lane;
mod order;
mod rate;
mod scheduler;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

pub use crate::config::Scheduling;
use crate::config::{Priority, StreamingConfig};
pub use rate::TokenBucket;
pub use scheduler::{index, Scheduler};

use lane::{Entry, Lane};
use order::KeyOrder;

/// What [`Lanes::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    /// The next event to hand to the producer.
    Next(Dispatch<T>),
    /// Nothing can go before this moment (every waiting lane is throttled).
    WaitUntil(Instant),
    /// Nothing can go until an event is pushed or a key released.
    Idle,
}

/// An event taken from the lanes.
#[derive(Debug, PartialEq, Eq)]
pub struct Dispatch<T> {
    /// The event.
    pub item: T,
    /// The lane it waited in; `None` for a retry.
    pub lane: Option<Priority>,
    /// Whether it went ahead of the picked lane's event to keep its key's order.
    pub promoted: bool,
}

/// The four lanes, their scheduler and rate limits, and the per-key order.
#[derive(Debug)]
pub struct Lanes<T> {
    /// The lanes, indexed like [`Priority::ALL`].
    lanes: [Lane<T>; 4],
    /// Each lane's rate limit, if it has one.
    buckets: [Option<TokenBucket>; 4],
    /// Which lane goes next.
    scheduler: Scheduler,
    /// Queued events per key, and held keys.
    order: KeyOrder,
    /// Weighted or fifo.
    scheduling: Scheduling,
    /// The sequence of the next pushed event.
    next_seq: u64,
    /// Records due for another attempt (or their dead letters): dispatched before any lane,
    /// bounded by what the producer had in flight.
    retries: VecDeque<T>,
}

impl<T> Lanes<T> {
    /// Lanes as `config` describes them, as of `now` (for the token buckets).
    pub fn new(config: &StreamingConfig, scheduling: Scheduling, now: Instant) -> Lanes<T> {
        let lane = |p: Priority| match scheduling {
            Scheduling::Weighted => config.lane(p),
            Scheduling::Fifo => config.lane(Priority::Normal),
        };
        let bucket = |p: Priority| match scheduling {
            Scheduling::Weighted => config
                .lane(p)
                .max_events_per_second
                .map(|rate| TokenBucket::new(rate, now)),
            Scheduling::Fifo => None,
        };
        Lanes {
            lanes: Priority::ALL.map(|p| Lane::new(&lane(p))),
            buckets: Priority::ALL.map(bucket),
            scheduler: Scheduler::new(&config.priority_weights),
            order: KeyOrder::default(),
            scheduling,
            next_seq: 0,
            retries: VecDeque::new(),
        }
    }

    /// The lane an event of `priority` waits in (an index into [`Priority::ALL`]).
    pub fn lane_of(&self, priority: Priority) -> usize {
        match self.scheduling {
            Scheduling::Weighted => index(priority),
            Scheduling::Fifo => index(Priority::Normal),
        }
    }

    /// Queues an event of `size` bytes; hands it back when its lane is full (the caller
    /// waits for room: that is the backpressure).
    pub fn push(
        &mut self,
        priority: Priority,
        key: Option<Bytes>,
        size: u64,
        item: T,
    ) -> Result<(), T> {
        let lane = self.lane_of(priority);
        if !self.lanes[lane].has_room(size) {
            return Err(item);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(key) = &key {
            self.order.add(key, seq, lane);
        }
        self.lanes[lane].push(Entry {
            seq,
            key,
            size,
            item,
        });
        Ok(())
    }

    /// Whether the lane of `priority` has room for an event of `size` bytes.
    pub fn has_room(&self, priority: Priority, size: u64) -> bool {
        self.lanes[self.lane_of(priority)].has_room(size)
    }

    /// Queues a record due for another attempt, or a dead letter: it goes before any lane.
    pub fn push_retry(&mut self, item: T) {
        self.retries.push_back(item);
    }

    /// Holds `key` back: none of its queued events is dispatched until [`Lanes::release`].
    pub fn hold(&mut self, key: &Bytes) {
        self.order.hold(key);
    }

    /// Releases a hold of `key`.
    pub fn release(&mut self, key: &Bytes) {
        self.order.release(key);
    }

    /// Events waiting in the lane of `priority`.
    pub fn depth(&self, priority: Priority) -> usize {
        self.lanes[index(priority)].len()
    }

    /// Bytes waiting in the lane of `priority`.
    pub fn bytes(&self, priority: Priority) -> u64 {
        self.lanes[index(priority)].bytes()
    }

    /// Whether nothing waits anywhere, retries included.
    pub fn is_empty(&self) -> bool {
        self.retries.is_empty() && self.lanes.iter().all(Lane::is_empty)
    }

    /// The index in `lane` of its first event whose key is not held.
    fn first_eligible(&self, lane: usize) -> Option<usize> {
        if !self.order.any_held() {
            return (!self.lanes[lane].is_empty()).then_some(0);
        }
        self.lanes[lane]
            .iter()
            .position(|e| e.key.as_ref().is_none_or(|k| !self.order.is_held(k)))
    }

    /// The next event to dispatch at `now`: a retry first, then the scheduler's choice among
    /// the lanes with an event ready and a token, with per-key promotion.
    pub fn pop(&mut self, now: Instant) -> Pop<T> {
        if let Some(item) = self.retries.pop_front() {
            return Pop::Next(Dispatch {
                item,
                lane: None,
                promoted: false,
            });
        }
        let mut waiting = [false; 4];
        let mut eligible = [false; 4];
        for lane in 0..4 {
            waiting[lane] = self.first_eligible(lane).is_some();
            eligible[lane] = waiting[lane]
                && self.buckets[lane]
                    .as_mut()
                    .is_none_or(|bucket| bucket.ready(now));
        }
        let Some(picked) = self.scheduler.pick(eligible) else {
            let next = (0..4)
                .filter(|l| waiting[*l])
                .filter_map(|l| self.buckets[l].as_mut().map(|b| b.next_token_at(now)))
                .min();
            return next.map_or(Pop::Idle, Pop::WaitUntil);
        };
        let lane = index(picked);
        if let Some(bucket) = self.buckets[lane].as_mut() {
            bucket.take(now);
        }
        // The pick had an eligible event: first_eligible is Some.
        let Some(position) = self.first_eligible(lane) else {
            return Pop::Idle;
        };
        let (seq, key) = match self.lanes[lane].get(position) {
            Some(entry) => (entry.seq, entry.key.clone()),
            None => return Pop::Idle,
        };
        let picked_seq = seq;
        let (from, seq) = match &key {
            Some(key) => match self.order.earliest(key) {
                Some((first, first_lane)) if first < seq => (first_lane, first),
                _ => (lane, seq),
            },
            None => (lane, seq),
        };
        // The picked entry is removed by its position; a promoted one is looked up by its
        // sequence in its own lane.
        let removed = if seq == picked_seq {
            self.lanes[lane].remove(position)
        } else {
            self.lanes[from].remove_seq(seq)
        };
        let Some(entry) = removed else {
            return Pop::Idle;
        };
        if let Some(key) = &entry.key {
            self.order.remove_earliest(key);
        }
        Pop::Next(Dispatch {
            item: entry.item,
            lane: Some(Priority::ALL[from]),
            promoted: from != lane,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
    use std::time::Duration;

    use super::*;
    use crate::config::LaneConfig;

    use Priority::{Bulk, Critical, High, Normal};

    fn config() -> StreamingConfig {
        StreamingConfig::default()
    }

    fn key(k: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(k.as_bytes()))
    }

    /// Pops until nothing is ready; returns (item, lane, promoted).
    fn drain(
        lanes: &mut Lanes<&'static str>,
        now: Instant,
    ) -> Vec<(&'static str, Option<Priority>, bool)> {
        let mut out = Vec::new();
        while let Pop::Next(d) = lanes.pop(now) {
            out.push((d.item, d.lane, d.promoted));
        }
        out
    }

    fn items(popped: &[(&'static str, Option<Priority>, bool)]) -> Vec<&'static str> {
        popped.iter().map(|(item, _, _)| *item).collect()
    }

    fn push(lanes: &mut Lanes<&'static str>, p: Priority, k: Option<Bytes>, item: &'static str) {
        if lanes.push(p, k, 10, item).is_err() {
            panic!("{item} must fit in {p}");
        }
    }

    /// The story's AC2: 5 BULK, 1 CRITICAL and 3 NORMAL queued at once.
    #[test]
    fn ac2_critical_then_normal_then_bulk() {
        let now = Instant::now();
        let mut lanes = Lanes::new(&config(), Scheduling::Weighted, now);
        for (p, item) in [
            (Bulk, "b1"),
            (Bulk, "b2"),
            (Normal, "n1"),
            (Bulk, "b3"),
            (Critical, "c1"),
            (Bulk, "b4"),
            (Normal, "n2"),
            (Bulk, "b5"),
            (Normal, "n3"),
        ] {
            let k = key(item);
            push(&mut lanes, p, k, item);
        }
        assert_eq!(
            items(&drain(&mut lanes, now)),
            ["c1", "n1", "n2", "n3", "b1", "b2", "b3", "b4", "b5"]
        );
        assert!(lanes.is_empty());
        assert_eq!(lanes.pop(now), Pop::Idle);
    }

    #[test]
    fn fifo_keeps_commit_order_whatever_the_priority() {
        let now = Instant::now();
        let mut lanes = Lanes::new(&config(), Scheduling::Fifo, now);
        for (p, item) in [(Bulk, "b1"), (Critical, "c1"), (Normal, "n1"), (High, "h1")] {
            push(&mut lanes, p, None, item);
        }
        assert_eq!(items(&drain(&mut lanes, now)), ["b1", "c1", "n1", "h1"]);
    }

    /// A CRITICAL update of order 456 behind an earlier BULK update of the same order: the
    /// BULK one goes first (promoted), then the CRITICAL one; other keys keep priority.
    #[test]
    fn an_earlier_event_of_the_same_key_is_promoted() {
        let now = Instant::now();
        let mut lanes = Lanes::new(&config(), Scheduling::Weighted, now);
        push(&mut lanes, Bulk, key("123:999"), "bulk-999");
        push(&mut lanes, Bulk, key("123:456"), "bulk-456-v2");
        push(&mut lanes, Normal, key("123:7"), "normal-7");
        push(&mut lanes, Critical, key("123:456"), "critical-456-v3");
        push(&mut lanes, Critical, key("123:1"), "critical-1");
        let popped = drain(&mut lanes, now);
        assert_eq!(
            popped,
            [
                ("bulk-456-v2", Some(Bulk), true),
                ("critical-456-v3", Some(Critical), false),
                ("critical-1", Some(Critical), false),
                ("normal-7", Some(Normal), false),
                ("bulk-999", Some(Bulk), false),
            ]
        );
        assert_eq!(lanes.order.queued_keys(), 0);
    }

    #[test]
    fn promotion_takes_every_earlier_event_of_the_key_in_order() {
        let now = Instant::now();
        let mut lanes = Lanes::new(&config(), Scheduling::Weighted, now);
        push(&mut lanes, Bulk, key("k"), "v1");
        push(&mut lanes, Normal, key("k"), "v2");
        push(&mut lanes, Bulk, key("k"), "v3");
        push(&mut lanes, Critical, key("k"), "v4");
        push(&mut lanes, High, key("other"), "o1");
        assert_eq!(
            items(&drain(&mut lanes, now)),
            ["v1", "v2", "v3", "v4", "o1"]
        );
    }

    #[test]
    fn a_held_key_waits_while_other_keys_flow() {
        let now = Instant::now();
        let mut lanes = Lanes::new(&config(), Scheduling::Weighted, now);
        let k456 = Bytes::from_static(b"123:456");
        lanes.hold(&k456);
        push(&mut lanes, Critical, key("123:456"), "456-a");
        push(&mut lanes, Bulk, key("123:1"), "1-a");
        push(&mut lanes, Critical, key("123:456"), "456-b");
        assert_eq!(items(&drain(&mut lanes, now)), ["1-a"]);
        assert_eq!(lanes.pop(now), Pop::Idle);
        // A retry goes even while its key is held, before everything else.
        lanes.push_retry("456-retry");
        lanes.release(&k456);
        assert_eq!(
            items(&drain(&mut lanes, now)),
            ["456-retry", "456-a", "456-b"]
        );
    }

    fn throttled_bulk(rate: u32) -> StreamingConfig {
        let mut config = config();
        config.lanes.bulk = Some(LaneConfig {
            max_events_per_second: NonZeroU32::new(rate),
            ..LaneConfig::default()
        });
        config
    }

    /// With a fake clock: a BULK lane limited to 20/s dispatches 2 at once (its burst),
    /// then one per 50 ms, while CRITICAL events queued meanwhile go at once.
    #[test]
    fn a_throttled_lane_is_skipped_and_the_others_flow() {
        let start = Instant::now();
        let mut lanes = Lanes::new(&throttled_bulk(20), Scheduling::Weighted, start);
        for item in ["b1", "b2", "b3", "b4"] {
            push(&mut lanes, Bulk, None, item);
        }
        assert_eq!(items(&drain(&mut lanes, start)), ["b1", "b2"]);
        assert_eq!(
            lanes.pop(start),
            Pop::WaitUntil(start + Duration::from_millis(50))
        );
        push(&mut lanes, Critical, None, "c1");
        push(&mut lanes, Normal, None, "n1");
        assert_eq!(items(&drain(&mut lanes, start)), ["c1", "n1"]);
        let t = start + Duration::from_millis(49);
        assert_eq!(
            lanes.pop(t),
            Pop::WaitUntil(start + Duration::from_millis(50))
        );
        let t = start + Duration::from_millis(50);
        assert_eq!(items(&drain(&mut lanes, t)), ["b3"]);
        let t = start + Duration::from_millis(100);
        assert_eq!(items(&drain(&mut lanes, t)), ["b4"]);
        assert_eq!(lanes.pop(t), Pop::Idle);
    }

    #[test]
    fn a_full_lane_hands_the_event_back_and_others_still_take() {
        let now = Instant::now();
        let mut config = config();
        config.lanes.bulk = Some(LaneConfig {
            capacity: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            max_bytes: NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN),
            max_events_per_second: None,
        });
        let mut lanes = Lanes::new(&config, Scheduling::Weighted, now);
        assert_eq!(lanes.push(Bulk, None, 10, "b1"), Ok(()));
        assert_eq!(lanes.push(Bulk, None, 10, "b2"), Ok(()));
        assert_eq!(lanes.push(Bulk, None, 10, "b3"), Err("b3"));
        assert_eq!((lanes.depth(Bulk), lanes.bytes(Bulk)), (2, 20));
        assert_eq!(lanes.push(Critical, None, 10, "c1"), Ok(()));
        assert_eq!(lanes.pop(now).map_next(), Some("c1"));
        assert_eq!(lanes.pop(now).map_next(), Some("b1"));
        assert_eq!(lanes.push(Bulk, None, 10, "b3"), Ok(()));
        // Bytes: a 991-byte event does not fit beside 20 bytes.
        assert_eq!(lanes.push(Bulk, None, 991, "big"), Err("big"));
    }

    /// Sustained load on all four lanes: shares within 5% of the weights' shares.
    #[test]
    fn sustained_load_is_shared_by_weight() {
        let now = Instant::now();
        let mut lanes = Lanes::new(&config(), Scheduling::Weighted, now);
        let mut counts = [0_usize; 4];
        for p in Priority::ALL {
            for _ in 0..100 {
                push(&mut lanes, p, None, "e");
            }
        }
        for _ in 0..111_100 {
            match lanes.pop(now) {
                Pop::Next(Dispatch { lane: Some(p), .. }) => {
                    counts[index(p)] += 1;
                    // Keep every lane loaded.
                    push(&mut lanes, p, None, "e");
                }
                other => panic!("expected a dispatch, got {other:?}"),
            }
        }
        assert_eq!(counts, [100_000, 10_000, 1_000, 100]);
    }

    impl<T> Pop<T> {
        fn map_next(self) -> Option<T> {
            match self {
                Pop::Next(d) => Some(d.item),
                _ => None,
            }
        }
    }
}
