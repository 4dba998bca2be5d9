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

use crate::config::{Priority, Scheduling, StreamingConfig};
use crate::lanes::{index, Dispatch, Lanes, Pop};
use crate::sink::{KafkaSink, Record};
use crate::telemetry::metrics::{EventMetrics, LaneMetrics};

/// A record on its way to Kafka, with what its delivery needs to know.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// The record.
    pub record: Record,
    /// The counters of its entity and change type; `None` for a dead letter.
    pub events: Option<Arc<EventMetrics>>,
}

/// The lanes shared by the source loop (pushes), the dispatcher (pops) and the delivery
/// task (retries, held keys). A std mutex: held for a few queue operations, never across
/// an await.
pub(super) struct SharedLanes {
    /// The lanes themselves.
    lanes: Mutex<Lanes<Outgoing>>,
    /// Woken when there may be something new to dispatch (a push, a retry, a release).
    work: Notify,
    /// Woken when an event left a lane: the source loop, waiting for room, looks again.
    room: Notify,
    /// Depth, bytes, dispatch and retry metrics.
    metrics: LaneMetrics,
}

impl SharedLanes {
    /// The lanes `config` describes, empty.
    pub fn new(config: &StreamingConfig, scheduling: Scheduling) -> Arc<SharedLanes> {
        Arc::new(SharedLanes {
            lanes: Mutex::new(Lanes::new(config, scheduling, Instant::now())),
            work: Notify::new(),
            room: Notify::new(),
            metrics: LaneMetrics::new(),
        })
    }

    /// Runs `f` on the lanes under the lock.
    fn with<T>(&self, f: impl FnOnce(&mut Lanes<Outgoing>) -> T) -> T {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut lanes)
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

    /// Queues `outgoing` in the lane of `priority`; hands it back when the lane is full.
    pub fn push(&self, priority: Priority, outgoing: Outgoing) -> Option<Outgoing> {
        let key = outgoing.record.key.clone();
        let size = u64::try_from(outgoing.record.size()).unwrap_or(u64::MAX);
        let result = self.with(|lanes| {
            let back = lanes.push(priority, key, size, outgoing).err();
            if back.is_none() {
                // In fifo mode every event waits in the NORMAL lane: update all gauges.
                for p in Priority::ALL {
                    self.gauge(lanes, p);
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

    /// Whether nothing waits in the lanes, retries included.
    pub fn is_empty(&self) -> bool {
        self.with(|lanes| lanes.is_empty())
    }

    /// Counts a retry.
    pub fn count_retry(&self) {
        self.metrics.retries.increment(1);
    }

    /// The next record to dispatch, waiting for one (or for a throttled lane's token).
    async fn next(&self) -> Dispatch<Outgoing> {
        loop {
            let pop = self.with(|lanes| {
                let pop = lanes.pop(Instant::now());
                if let Pop::Next(Dispatch {
                    lane: Some(lane), ..
                }) = &pop
                {
                    self.gauge(lanes, *lane);
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
            let Outgoing { record, events } = dispatch.item;
            if let Some(events) = events {
                events.produced.increment(1);
            }
            self.sink.send_reserved(slot, record).await;
        }
    }
}
