//! Where every dead-lettered event is reported: one place that logs and counts it, and
//! where operator alerts hook in.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::error;

use crate::sink::alert::{AlertHandle, DeadLetterNotice};

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
    /// The operator alerts (`alerts` in connector.yaml); does nothing when not configured.
    alerts: AlertHandle,
}

impl DeadLetters {
    /// Reports to `alerts` as well as to the log and the count.
    pub fn new(alerts: AlertHandle) -> DeadLetters {
        DeadLetters {
            count: AtomicU64::new(0),
            alerts,
        }
    }

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
        // Never waits: a full alert queue only counts the event.
        self.alerts.dead_lettered(DeadLetterNotice {
            event_id: event_id.unwrap_or("unknown").to_owned(),
            topic: topic.to_owned(),
            reason: reason.to_owned(),
            retry_count,
        });
    }

    /// Events reported so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("utf-8 log: {e}"))
    }

    #[test]
    fn a_failed_delivery_is_one_error_line_with_the_count_id_and_topic() {
        let letters = DeadLetters::default();
        let text = logged(|| {
            letters.on_dead_lettered(
                Cause::Delivery,
                Some("0/16B3748:0"),
                "core.orders.order.created",
                "delivery to topic core.orders.order.created failed: MessageTimedOut",
                3,
            );
        });
        let line: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("one JSON line ({e}): {text}"));
        assert_eq!(line["level"], "ERROR");
        let fields = &line["fields"];
        assert_eq!(fields["message"], "Event delivery failed after 3 retries");
        assert_eq!(fields["event_id"], "0/16B3748:0");
        assert_eq!(fields["topic"], "core.orders.order.created");
        assert_eq!(fields["retry_count"], 3);
        assert_eq!(letters.count(), 1);
    }

    #[test]
    fn an_unbuildable_event_is_reported_and_counted_too() {
        let letters = DeadLetters::default();
        let text = logged(|| {
            letters.on_dead_lettered(
                Cause::Unbuildable,
                None,
                "core.catalog.product.created",
                "no tenant",
                0,
            );
        });
        let line: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("one JSON line ({e}): {text}"));
        assert_eq!(line["level"], "ERROR");
        assert_eq!(
            line["fields"]["message"],
            "Event could not be built; dead-lettered"
        );
        assert_eq!(line["fields"]["event_id"], "unknown");
        assert_eq!(line["fields"]["reason"], "no tenant");
        assert_eq!(letters.count(), 1);
    }
}
