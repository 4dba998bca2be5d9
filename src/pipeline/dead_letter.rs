//! Where every dead-lettered event is reported: one place that logs and counts it, and
//! where operator alerts hook in.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::error;

/// Why an event went to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// Kafka did not take it: after `retry_count` retries, or at once for an error that
    /// cannot succeed on retry.
    Delivery,
    /// It could not be built or decoded (no tenant, a value that cannot be encoded).
    Unbuildable,
}

/// The pipeline's report of dead-lettered events.
#[derive(Debug, Default)]
pub(super) struct DeadLetters {
    count: AtomicU64,
}

impl DeadLetters {
    /// Reports one event handed to the dead-letter topic: an ERROR line (an operator must
    /// look at it) with its id and topic, and the count. Called once per event, by the
    /// source loop for events that cannot be built and by the delivery task for records
    /// Kafka did not take.
    pub fn on_dead_lettered(
        &self,
        cause: Cause,
        event_id: Option<&str>,
        topic: &str,
        reason: &str,
        retry_count: u32,
    ) {
        self.count.fetch_add(1, Ordering::Relaxed);
        match cause {
            Cause::Delivery => error!(
                event_id = event_id.unwrap_or("unknown"),
                topic, retry_count, reason, "Event delivery failed after {retry_count} retries"
            ),
            Cause::Unbuildable => error!(
                event_id = event_id.unwrap_or("unknown"),
                topic, reason, "Event could not be built; dead-lettered"
            ),
        }
    }

    /// Events reported so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
