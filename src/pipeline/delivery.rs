//! The delivery task: acknowledges delivered records into the watermark, retries failed
//! ones, and dead-letters what still fails.
//!
//! ```text
//! report ── delivered ──────────────────────────────▶ Watermark::ack (releases a held key)
//!        └─ failed ─┬─ retriable, retries left ─▶ hold the key; after the backoff, queue
//!                   │                             the record ahead of every lane
//!                   ├─ retriable, none left     ─┐
//!                   ├─ cannot succeed on retry  ─┴▶ dead letter ahead of every lane; its
//!                   │                               delivery acknowledges the position
//!                   ├─ the dead letter itself   ──▶ stop: nothing past it is confirmed
//!                   └─ needs an operator        ──▶ stop
//! ```
//!
//! librdkafka has already retried a failed record itself until `message.timeout.ms` (or
//! met an error that cannot succeed); our retries come on top, with a backoff long enough
//! for a broker to recover. While a record is retried, the later events of its key still
//! waiting in the lanes are held, so they cannot overtake it; other keys flow on. The
//! backoff is a timer of this task: it blocks neither the source loop nor other keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::error::RDKafkaErrorCode;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::dead_letter::{Cause, DeadLetters};
use super::dispatch::{Outgoing, SharedLanes};
use super::{now_rfc3339, PipelineError, RecordTag, SharedWatermark};
use crate::checkpoint::{Position, WatermarkError};
use crate::codec::{dead_letter_record, DeadLetter};
use crate::error::Disposition;
use crate::sink::{Delivery, DeliveryReports, Record, SinkError};

/// The longest backoff between two retries: past it, doubling helps nobody.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A record of which at least one attempt failed.
struct Failing {
    /// Retries made so far.
    retries: u32,
    /// Its key, held in the lanes until the record is delivered or dead-lettered.
    held: Option<Bytes>,
}

/// Acknowledges, retries and dead-letters.
pub(super) struct DeliveryTask {
    /// Where retries and dead letters go, and whose keys are held.
    pub lanes: Arc<SharedLanes>,
    /// Where delivered (or dead-lettered) positions are acknowledged.
    pub watermark: SharedWatermark,
    /// `streaming.dlqTopic`.
    pub dlq_topic: String,
    /// Cancelled here when a failure stops the pipeline.
    pub failure: CancellationToken,
    /// Where dead-lettered events are reported.
    pub dead_letters: Arc<DeadLetters>,
    /// `streaming.retries`.
    pub max_retries: u32,
    /// `streaming.retryBackoffMs`: the delay before the first retry.
    pub backoff: Duration,
}

impl DeliveryTask {
    /// Handles reports until the sink is gone or a failure stops the pipeline.
    #[tracing::instrument(name = "delivery", skip_all)]
    pub async fn run(self, mut reports: DeliveryReports) -> Result<(), PipelineError> {
        let result = self.receive(&mut reports).await;
        if let Err(e) = &result {
            error!(error = %e, "delivery failed; stopping without confirming it");
            self.failure.cancel();
        }
        result
    }

    async fn receive(&self, reports: &mut DeliveryReports) -> Result<(), PipelineError> {
        let mut failing: HashMap<Position, Failing> = HashMap::new();
        // Records waiting for their retry, by due time (then arrival, to keep the order
        // of records of one key that failed together).
        let mut due: BTreeMap<(Instant, u64), Record> = BTreeMap::new();
        let mut sequence = 0_u64;
        loop {
            let next_due = due.first_key_value().map(|((at, _), _)| *at);
            let delivery = tokio::select! {
                () = sleep_until(next_due) => {
                    let now = Instant::now();
                    while let Some(entry) = due.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let record = entry.remove();
                        self.lanes.count_retry();
                        self.lanes.push_retry(Outgoing { record, tag: None });
                    }
                    continue;
                }
                delivery = reports.recv() => delivery,
            };
            let Some(delivery) = delivery else {
                return Ok(());
            };
            match delivery {
                Delivery::Delivered { position, .. } => {
                    if let Some(Failing {
                        held: Some(key), ..
                    }) = failing.remove(&position)
                    {
                        self.lanes.release(&key);
                    }
                    self.acknowledge(position)?;
                }
                Delivery::Failed {
                    position,
                    error,
                    record,
                } => {
                    let state = failing.entry(position).or_insert_with(|| Failing {
                        retries: 0,
                        held: None,
                    });
                    if record.topic == self.dlq_topic {
                        return Err(PipelineError::DeadLetterWrite {
                            position: format!("{}:{}", position.commit_lsn, position.index),
                            topic: self.dlq_topic.clone(),
                            source: error,
                        });
                    }
                    match error.disposition() {
                        Disposition::Halt => {
                            return Err(PipelineError::Delivery {
                                position: format!("{}:{}", position.commit_lsn, position.index),
                                topic: record.topic,
                                source: error,
                            })
                        }
                        Disposition::Retry if state.retries < self.max_retries => {
                            if state.held.is_none() {
                                if let Some(key) = &record.key {
                                    self.lanes.hold(key);
                                    state.held = Some(key.clone());
                                }
                            }
                            let delay = retry_delay(self.backoff, state.retries);
                            state.retries += 1;
                            warn!(
                                topic = %record.topic,
                                event_id = event_id(&record).as_deref().unwrap_or("unknown"),
                                error = %error,
                                retry = state.retries,
                                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                                "event delivery failed; retrying"
                            );
                            sequence += 1;
                            due.insert((Instant::now() + delay, sequence), *record);
                        }
                        Disposition::Retry | Disposition::DeadLetter => {
                            let retries = state.retries;
                            self.dead_letter(position, &error, *record, retries);
                        }
                    }
                }
            }
        }
    }

    /// Acknowledges `position` in the watermark and records its latency.
    fn acknowledge(&self, position: Position) -> Result<(), WatermarkError> {
        let tag = self.watermark.with_tracked(|t| {
            let tag = t.records.remove(&position);
            t.watermark.ack(position).map(|_| tag)
        })?;
        if let Some(RecordTag {
            events: Some(events),
            latency,
            commit_ts,
        }) = tag
        {
            events.acknowledged.increment(1);
            let micros = (crate::telemetry::now_pg_micros() - commit_ts).max(0);
            #[allow(clippy::cast_precision_loss)]
            latency.record(micros as f64 / 1e6);
        }
        Ok(())
    }

    /// Sends the dead letter of `record` with the same position, so that its transaction is
    /// confirmed once the dead letter is in; it goes ahead of every lane.
    fn dead_letter(&self, position: Position, error: &SinkError, record: Record, retries: u32) {
        let event_id = event_id(&record);
        self.dead_letters.on_dead_lettered(
            Cause::Delivery,
            event_id.as_deref(),
            &record.topic,
            &error.to_string(),
            retries,
        );
        // From now on the record at this position is a dead letter.
        let events = self.watermark.with_tracked(|t| {
            t.records
                .get_mut(&position)
                .and_then(|tag| tag.events.take())
        });
        if let Some(events) = events {
            events.dead_lettered.increment(1);
        }
        // A record too large for Kafka makes a dead letter larger still: it goes without
        // its value (the size says what was left out), or the dead letter is refused too
        // and the pipeline stops on a record it could have set aside.
        let mut original = record;
        let mut source = json!({ "topic": original.topic });
        if error.code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
            source["valueBytes"] = json!(original.payload.len());
            source["valueOmitted"] = json!(true);
            original.payload = Bytes::new();
        }
        let letter = DeadLetter {
            event_id,
            failure_reason: error.to_string(),
            failure_timestamp: now_rfc3339(),
            retry_count: retries,
            source,
            original: Some(original),
        };
        self.lanes.push_retry(Outgoing {
            record: dead_letter_record(&self.dlq_topic, &letter, position),
            tag: None,
        });
    }
}

/// The backoff before retry number `retries + 1`: the configured delay, doubled for each
/// retry already made (1 s, 2 s, 4 s by default), at most [`MAX_BACKOFF`].
fn retry_delay(backoff: Duration, retries: u32) -> Duration {
    let factor = 1_u32.checked_shl(retries).unwrap_or(u32::MAX);
    backoff.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The `eventId` header of a record, if it has one.
fn event_id(record: &Record) -> Option<String> {
    record
        .headers
        .iter()
        .find(|(name, _)| name == "eventId")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_configured_delay() {
        let second = Duration::from_secs(1);
        let delays: Vec<Duration> = (0..4).map(|r| retry_delay(second, r)).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 8].map(Duration::from_secs),
            "1 s, 2 s, 4 s, ..."
        );
        assert_eq!(
            retry_delay(Duration::from_millis(100), 2),
            Duration::from_millis(400)
        );
        assert_eq!(retry_delay(second, 40), MAX_BACKOFF);
        assert_eq!(retry_delay(Duration::ZERO, 3), Duration::ZERO);
    }
}
