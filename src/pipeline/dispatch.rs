//! The dispatcher: takes the lanes' choice and hands it to the producer.
//!
//! It first takes a slot of the producer's in-flight budget (`streaming.producerInFlight`),
//! and only then asks the lanes for the next record: a record is chosen at the last moment,
//! so that a CRITICAL event arriving while the budget is spent is the next to go, not one
//! chosen earlier. The backlog thus waits in the lanes, where priority decides, and what
//! librdkafka holds stays small.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::spill::{Spill, SpillError};
use super::{RecordTag, SharedWatermark};
use crate::config::{Priority, Scheduling, StreamingConfig};
use crate::lanes::{index, Dispatch, Lanes, Pop};
use crate::sink::{KafkaSink, Record};
use crate::telemetry::metrics::LaneMetrics;

/// A record on its way to Kafka, with what its delivery needs to know.
pub(super) struct Outgoing {
    /// The record.
    pub record: Record,
    /// What its acknowledgement counts, registered with the watermark when it is
    /// dispatched (not before: a spilled event costs no memory); `None` for a retry, whose
    /// tag is registered already.
    pub tag: Option<RecordTag>,
}

/// The lanes and their spill, under one lock.
struct Queue {
    lanes: Lanes<Outgoing>,
    spill: Spill,
}

impl Queue {
    /// Moves the spill's head into its lane while that has room. Returns the lanes that
    /// received events.
    fn refill(&mut self) -> Result<[bool; 4], SpillError> {
        let mut filled = [false; 4];
        while let Some((priority, size)) = self.spill.peek()? {
            if !self.lanes.has_room(priority, size) {
                break;
            }
            let lane = self.lanes.lane_of(priority);
            let Some(unspilled) = self.spill.take(lane) else {
                break;
            };
            let key = unspilled.outgoing.record.key.clone();
            if let Err(back) = self
                .lanes
                .push(unspilled.priority, key, size, unspilled.outgoing)
            {
                // has_room said yes under the same lock: unreachable, but never dropped.
                drop(back);
                return Err(SpillError::Corrupt {
                    directory: String::new(),
                    offset: 0,
                    reason: "a lane refused an event it had room for",
                });
            }
            if let Some(f) = filled.get_mut(lane) {
                *f = true;
            }
        }
        Ok(filled)
    }
}

/// The lanes shared by the source loop (pushes), the dispatcher (pops) and the delivery
/// task (retries, held keys). A std mutex: held for a few queue operations, never across
/// an await.
pub(super) struct SharedLanes {
    /// The lanes themselves, and their spill.
    queue: Mutex<Queue>,
    /// Woken when there may be something new to dispatch (a push, a retry, a release).
    work: Notify,
    /// Woken when an event left a lane: the source loop, waiting for room, looks again.
    room: Notify,
    /// Depth, bytes, dispatch and retry metrics.
    metrics: LaneMetrics,
    /// Cancelled when the spill fails: the pipeline stops without confirming its events.
    failure: CancellationToken,
    /// Why the spill failed, for the pipeline's error.
    error: Mutex<Option<SpillError>>,
}

impl SharedLanes {
    /// The lanes and the spill `config` describes, empty. A spill failure cancels
    /// `failure`.
    pub fn new(
        config: &StreamingConfig,
        scheduling: Scheduling,
        failure: CancellationToken,
    ) -> Arc<SharedLanes> {
        Arc::new(SharedLanes {
            queue: Mutex::new(Queue {
                lanes: Lanes::new(config, scheduling, Instant::now()),
                spill: Spill::new(&config.spill),
            }),
            work: Notify::new(),
            room: Notify::new(),
            metrics: LaneMetrics::new(),
            failure,
            error: Mutex::new(None),
        })
    }

    /// Runs `f` on the lanes under the lock.
    fn with<T>(&self, f: impl FnOnce(&mut Lanes<Outgoing>) -> T) -> T {
        self.with_queue(|queue| f(&mut queue.lanes))
    }

    /// Runs `f` on the lanes and the spill under the lock.
    fn with_queue<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut queue)
    }

    /// Why the spill failed, if it did.
    pub fn take_error(&self) -> Option<SpillError> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Records a spill failure and stops the pipeline.
    fn fail(&self, error: SpillError) {
        tracing::error!(error = %error, "the spill failed; stopping without confirming its events");
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        self.failure.cancel();
    }

    /// Moves spilled events back into lanes that have room, and updates the gauges.
    fn refill(&self, queue: &mut Queue) {
        if queue.spill.len() == 0 {
            return;
        }
        match queue.refill() {
            Ok(filled) => {
                for (i, p) in Priority::ALL.into_iter().enumerate() {
                    if filled.get(i).copied().unwrap_or(false) {
                        self.gauge(&queue.lanes, p);
                    }
                }
            }
            Err(e) => self.fail(e),
        }
        self.spill_gauges(&queue.spill);
    }

    fn spill_gauges(&self, spill: &Spill) {
        #[allow(clippy::cast_precision_loss)]
        {
            self.metrics.spill_events.set(spill.len() as f64);
            self.metrics.spill_bytes.set(spill.bytes() as f64);
        }
    }

    /// Updates the depth and bytes gauges of the lane of `priority`.
    fn gauge(&self, lanes: &Lanes<Outgoing>, priority: Priority) {
        let i = index(priority);
        #[allow(clippy::cast_precision_loss)]
        {
            self.metrics.depth[i].set(lanes.depth(priority) as f64);
            self.metrics.bytes[i].set(lanes.bytes(priority) as f64);
        }
    }

    /// Queues `outgoing` in the lane of `priority`, or in the spill: when the lane is full,
    /// when the lane has events in the spill, or when an earlier event of its key may be
    /// there (see [`super::spill`]). Hands it back when neither can take it: the caller
    /// waits for room.
    pub fn push(&self, priority: Priority, outgoing: Outgoing) -> Option<Outgoing> {
        let key = outgoing.record.key.clone();
        let size = u64::try_from(outgoing.record.size()).unwrap_or(u64::MAX);
        let result = self.with_queue(|queue| {
            let lane = queue.lanes.lane_of(priority);
            let overflow = queue.spill.holds_lane(lane) || !queue.lanes.has_room(priority, size);
            let follows_key = key.as_ref().is_some_and(|k| queue.spill.may_hold_key(k));
            if overflow || follows_key {
                let back = queue.spill.push(priority, lane, overflow, outgoing);
                if back.is_none() {
                    // The lanes may have room for the head (even this event) already.
                    self.refill(queue);
                }
                return back;
            }
            let back = queue.lanes.push(priority, key, size, outgoing).err();
            if back.is_none() {
                // In fifo mode every event waits in the NORMAL lane: update all gauges.
                for p in Priority::ALL {
                    self.gauge(&queue.lanes, p);
                }
            }
            back
        });
        if result.is_none() {
            self.work.notify_one();
        }
        result
    }

    /// Waits until an event may have left a lane.
    pub async fn room(&self) {
        self.room.notified().await;
    }

    /// Queues a retry or the dead letter of a failed delivery, ahead of every lane.
    pub fn push_retry(&self, outgoing: Outgoing) {
        self.with(|lanes| lanes.push_retry(outgoing));
        self.work.notify_one();
    }

    /// Holds back the queued events of `key` while one of its records is retried.
    pub fn hold(&self, key: &bytes::Bytes) {
        self.with(|lanes| lanes.hold(key));
    }

    /// Lets the events of `key` go again.
    pub fn release(&self, key: &bytes::Bytes) {
        self.with(|lanes| lanes.release(key));
        self.work.notify_one();
    }

    /// Whether nothing waits in the lanes or the spill, retries included.
    pub fn is_empty(&self) -> bool {
        self.with_queue(|queue| queue.lanes.is_empty() && queue.spill.len() == 0)
    }

    /// Counts a retry.
    pub fn count_retry(&self) {
        self.metrics.retries.increment(1);
    }

    /// The next record to dispatch, waiting for one (or for a throttled lane's token).
    async fn next(&self) -> Dispatch<Outgoing> {
        loop {
            let pop = self.with_queue(|queue| {
                let pop = queue.lanes.pop(Instant::now());
                if let Pop::Next(Dispatch {
                    lane: Some(lane), ..
                }) = &pop
                {
                    self.gauge(&queue.lanes, *lane);
                    // The lane has room again: spilled events move up.
                    self.refill(queue);
                }
                pop
            });
            match pop {
                Pop::Next(dispatch) => {
                    self.room.notify_one();
                    return dispatch;
                }
                Pop::WaitUntil(at) => {
                    tokio::select! {
                        () = self.work.notified() => {}
                        () = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                Pop::Idle => self.work.notified().await,
            }
        }
    }
}

/// Hands the lanes' choices to the producer until a delivery failure stops the pipeline
/// (or the pipeline aborts it once drained).
pub(super) struct Dispatcher {
    /// Where the records wait.
    pub lanes: Arc<SharedLanes>,
    /// The producer, with its in-flight budget.
    pub sink: Arc<KafkaSink>,
    /// Cancelled when a delivery failure stops the pipeline.
    pub failure: CancellationToken,
    /// Where a dispatched record's tag is registered, for its acknowledgement.
    pub watermark: SharedWatermark,
}

impl Dispatcher {
    /// Dispatches until the failure token fires.
    #[tracing::instrument(name = "dispatcher", skip_all)]
    pub async fn run(self) {
        loop {
            let slot = tokio::select! {
                () = self.failure.cancelled() => return,
                slot = self.sink.reserve() => slot,
            };
            let dispatch = tokio::select! {
                () = self.failure.cancelled() => return,
                dispatch = self.lanes.next() => dispatch,
            };
            let metrics = &self.lanes.metrics;
            match dispatch.lane {
                Some(lane) => {
                    metrics.dispatches[index(lane)].increment(1);
                    if dispatch.promoted {
                        metrics.promotions[index(lane)].increment(1);
                    }
                }
                None => metrics.retry_dispatches.increment(1),
            }
            let Outgoing { record, tag } = dispatch.item;
            if let Some(tag) = tag {
                if let Some(events) = &tag.events {
                    events.produced.increment(1);
                }
                // Before the send: the report may come at once.
                self.watermark.with_tracked(|t| {
                    t.records.insert(record.position, tag);
                });
            }
            self.sink.send_reserved(slot, record).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use bytes::Bytes;

    use super::*;
    use crate::checkpoint::Position;
    use crate::config::{LaneConfig, SpillConfig};
    use crate::source::Lsn;

    fn outgoing(index: u32, key: &str) -> Outgoing {
        Outgoing {
            record: Record {
                topic: "t".to_owned(),
                key: Some(Bytes::copy_from_slice(key.as_bytes())),
                headers: Vec::new(),
                payload: Bytes::from_static(b"{}"),
                position: Position {
                    commit_lsn: Lsn(1),
                    index,
                },
            },
            tag: None,
        }
    }

    fn lanes(directory: &std::path::Path, bulk_capacity: usize) -> Arc<SharedLanes> {
        let mut config = StreamingConfig::default();
        config.lanes.bulk = Some(LaneConfig {
            capacity: NonZeroUsize::new(bulk_capacity).expect("positive"),
            ..LaneConfig::default()
        });
        config.spill = SpillConfig {
            directory: Some(directory.to_owned()),
            max_bytes: 1 << 20,
        };
        SharedLanes::new(&config, Scheduling::Weighted, CancellationToken::new())
    }

    async fn drain(lanes: &SharedLanes) -> Vec<u32> {
        let mut order = Vec::new();
        while !lanes.is_empty() {
            order.push(lanes.next().await.item.record.position.index);
        }
        order
    }

    /// A full BULK lane overflows to the spill instead of stopping the source: later BULK
    /// events queue behind the spilled ones, a CRITICAL event of another key goes first,
    /// and one whose key has an earlier event in the spill waits behind it (then the
    /// lanes' promotion keeps the order).
    #[tokio::test]
    async fn a_full_lane_spills_and_keys_keep_their_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lanes = lanes(dir.path(), 2);
        for i in 0..5 {
            assert!(
                lanes
                    .push(Priority::Bulk, outgoing(i, &format!("bulk-{i}")))
                    .is_none(),
                "a full lane spills: nothing is handed back"
            );
        }
        assert_eq!(lanes.with_queue(|q| q.spill.len()), 3);
        // Key bulk-3 has a BULK event in the spill: its CRITICAL update goes behind it.
        assert!(lanes
            .push(Priority::Critical, outgoing(10, "bulk-3"))
            .is_none());
        // Another key: straight into the CRITICAL lane.
        assert!(lanes
            .push(Priority::Critical, outgoing(11, "other"))
            .is_none());
        assert_eq!(lanes.with_queue(|q| q.spill.len()), 4);
        assert_eq!(
            drain(&lanes).await,
            // 11 first (CRITICAL); BULK 0..2 as the lane drains and refills; BULK 3 moves
            // into its lane and CRITICAL 10 into its own, where it is picked and BULK 3 is
            // promoted ahead of it; then BULK 4.
            vec![11, 0, 1, 2, 3, 10, 4]
        );
        assert_eq!(
            lanes.with_queue(|q| (q.spill.len(), q.spill.bytes())),
            (0, 0)
        );
    }

    /// With the spill off, a full lane hands the event back: the source waits for room.
    #[tokio::test]
    async fn without_a_spill_a_full_lane_hands_the_event_back() {
        let mut config = StreamingConfig::default();
        config.lanes.bulk = Some(LaneConfig {
            capacity: NonZeroUsize::new(1).expect("positive"),
            ..LaneConfig::default()
        });
        config.spill.max_bytes = 0;
        let lanes = SharedLanes::new(&config, Scheduling::Weighted, CancellationToken::new());
        assert!(lanes.push(Priority::Bulk, outgoing(0, "a")).is_none());
        let back = lanes
            .push(Priority::Bulk, outgoing(1, "b"))
            .expect("handed back");
        assert_eq!(back.record.position.index, 1);
        assert_eq!(drain(&lanes).await, vec![0]);
    }
}
