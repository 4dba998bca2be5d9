//! The connector's metrics: names, descriptions and the handles the pipeline records with.
//!
//! Names follow `entity_cdc_<noun>_<unit>[_total]` and are listed with their meaning in
//! docs/metrics.md (a test below fails when one is missing there). Labels are bounded:
//! `entity` (a configured entity name), `change_type` (CREATE, UPDATE, DELETE) and
//! `priority` (the four lanes); never an LSN or a key.

use std::collections::HashMap;
use std::sync::{Arc, Once, OnceLock};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Priority;
use crate::event::ChangeType;

/// Row changes read from the replication stream (every table of the publication).
pub const CHANGES_READ: &str = "entity_cdc_changes_read_total";
/// Row changes of tables that are no streamed entity, skipped.
pub const CHANGES_SKIPPED: &str = "entity_cdc_changes_skipped_total";
/// Entity events built from row changes, by entity and change type.
pub const EVENTS_BUILT: &str = "entity_cdc_events_built_total";
/// Entity events handed to the Kafka producer, by entity and change type.
pub const EVENTS_PRODUCED: &str = "entity_cdc_events_produced_total";
/// Entity events Kafka acknowledged, by entity and change type.
pub const EVENTS_ACKNOWLEDGED: &str = "entity_cdc_events_acknowledged_total";
/// Events or changes sent to the dead-letter topic, by entity and change type.
pub const EVENTS_DEAD_LETTERED: &str = "entity_cdc_events_dead_lettered_total";
/// Records handed to Kafka (events and dead letters) without a delivery report yet.
pub const RECORDS_IN_FLIGHT: &str = "entity_cdc_records_in_flight";
/// Seconds from a transaction's commit to Kafka's acknowledgement of each of its events.
pub const COMMIT_TO_ACK_SECONDS: &str = "entity_cdc_commit_to_ack_seconds";
/// The server's WAL end (from keepalives) minus the LSN confirmed to the slot.
pub const REPLICATION_LAG_BYTES: &str = "entity_cdc_replication_lag_bytes";
/// Now minus the commit time of the oldest transaction read and not yet acknowledged (Kafka
/// has everything committed before it), 0 when nothing is pending.
pub const REPLICATION_LAG_SECONDS: &str = "entity_cdc_replication_lag_seconds";
/// Replication connections re-established after a transient failure.
pub const RECONNECTS: &str = "entity_cdc_replication_reconnects_total";
/// Events whose priority column held no priority name, by entity.
pub const UNKNOWN_PRIORITIES: &str = "entity_cdc_unknown_priorities_total";
/// Schema registrations asked of the Schema Registry (cache misses), by entity and outcome
/// (`registered`, `incompatible`, `unavailable`, `refused`).
pub const SCHEMA_REGISTRATIONS: &str = "entity_cdc_schema_registrations_total";
/// Columns encoded in their text form because their type has no Avro mapping, by entity
/// (counted once per column and schema, not per event).
pub const TEXT_FALLBACK_COLUMNS: &str = "entity_cdc_text_fallback_columns_total";

/// Events waiting in a lane, by lane.
pub const LANE_DEPTH: &str = "entity_cdc_lane_depth_events";
/// Encoded bytes waiting in a lane, by lane.
pub const LANE_BYTES: &str = "entity_cdc_lane_bytes";
/// Records handed from a lane to the producer, by lane (`RETRY` for retries and their
/// dead letters).
pub const LANE_DISPATCHES: &str = "entity_cdc_lane_dispatches_total";
/// Events dispatched ahead of their lane's turn to keep their key's order, by lane.
pub const LANE_PROMOTIONS: &str = "entity_cdc_lane_promotions_total";
/// Events in the spill (the overflow of full lanes on disk), over all lanes.
pub const SPILL_EVENTS: &str = "entity_cdc_spill_events";
/// Bytes in the spill's files still to be read.
pub const SPILL_BYTES: &str = "entity_cdc_spill_bytes";
/// Failed deliveries produced again.
pub const DELIVERY_RETRIES: &str = "entity_cdc_delivery_retries_total";
/// Alert deliveries attempted, by channel (`webhook`, `email`) and outcome (`delivered`,
/// `failed`).
pub const ALERTS_SENT: &str = "entity_cdc_alerts_sent_total";
/// WAL the replication slot makes the server keep: its current WAL position minus the
/// slot's restart LSN, from `pg_replication_slots`; 0 when the slot no longer reserves any.
pub const SLOT_RETAINED_WAL_BYTES: &str = "entity_cdc_slot_retained_wal_bytes";
/// 1 while a connection streams from the slot, else 0.
pub const SLOT_ACTIVE: &str = "entity_cdc_slot_active";
/// 1 for the slot's current `wal_status`, 0 for the others, by status.
pub const SLOT_WAL_STATUS: &str = "entity_cdc_slot_wal_status";

/// Every metric name, for the documentation test.
pub const ALL: &[&str] = &[
    CHANGES_READ,
    CHANGES_SKIPPED,
    EVENTS_BUILT,
    EVENTS_PRODUCED,
    EVENTS_ACKNOWLEDGED,
    EVENTS_DEAD_LETTERED,
    RECORDS_IN_FLIGHT,
    COMMIT_TO_ACK_SECONDS,
    REPLICATION_LAG_BYTES,
    REPLICATION_LAG_SECONDS,
    RECONNECTS,
    UNKNOWN_PRIORITIES,
    SCHEMA_REGISTRATIONS,
    TEXT_FALLBACK_COLUMNS,
    LANE_DEPTH,
    LANE_BYTES,
    LANE_DISPATCHES,
    LANE_PROMOTIONS,
    SPILL_EVENTS,
    SPILL_BYTES,
    DELIVERY_RETRIES,
    ALERTS_SENT,
    SLOT_RETAINED_WAL_BYTES,
    SLOT_ACTIVE,
    SLOT_WAL_STATUS,
];

/// Label key of the entity name.
pub const LABEL_ENTITY: &str = "entity";
/// Label key of the change type.
pub const LABEL_CHANGE_TYPE: &str = "change_type";
/// Label key of the lane.
pub const LABEL_PRIORITY: &str = "priority";
/// Label key of an alert channel: `webhook` or `email`.
pub const LABEL_CHANNEL: &str = "channel";
/// Label key of an outcome: `delivered` or `failed`.
pub const LABEL_OUTCOME: &str = "outcome";
/// Label key of a slot's `wal_status`: `reserved`, `extended`, `unreserved`, `lost`.
pub const LABEL_STATUS: &str = "status";

/// Buckets of the commit-to-ack histogram, in seconds: from a few milliseconds (a healthy
/// local broker) to ten minutes (a connector catching up after an outage).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// Installs the Prometheus recorder as the global `metrics` recorder (once per process; a
/// later call returns the same handle) and describes every metric.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(COMMIT_TO_ACK_SECONDS.to_owned()),
                    LATENCY_BUCKETS,
                )
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder installed first (an embedding application): ours still
            // renders, it just sees nothing, which the logs cannot fix either.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed already; /metrics stays empty");
            }
            describe();
            handle
        })
        .clone()
}

/// Describes every metric once, so that the rendered text carries `# HELP` lines.
fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        describe_counter!(CHANGES_READ, Unit::Count, "Row changes read from the replication stream.");
        describe_counter!(CHANGES_SKIPPED, Unit::Count, "Row changes of tables that are no streamed entity.");
        describe_counter!(EVENTS_BUILT, Unit::Count, "Entity events built from row changes.");
        describe_counter!(EVENTS_PRODUCED, Unit::Count, "Entity events handed to the Kafka producer.");
        describe_counter!(EVENTS_ACKNOWLEDGED, Unit::Count, "Entity events acknowledged by Kafka.");
        describe_counter!(EVENTS_DEAD_LETTERED, Unit::Count, "Events or changes sent to the dead-letter topic.");
        describe_gauge!(RECORDS_IN_FLIGHT, Unit::Count, "Records handed to Kafka without a delivery report yet.");
        describe_histogram!(COMMIT_TO_ACK_SECONDS, Unit::Seconds, "Seconds from the commit of a transaction to Kafka's acknowledgement of its event.");
        describe_gauge!(REPLICATION_LAG_BYTES, Unit::Bytes, "Server WAL end minus the LSN confirmed to the slot.");
        describe_gauge!(REPLICATION_LAG_SECONDS, Unit::Seconds, "Now minus the commit time of the oldest transaction not yet acknowledged; 0 when nothing is pending.");
        describe_counter!(RECONNECTS, Unit::Count, "Replication connections re-established.");
        describe_counter!(UNKNOWN_PRIORITIES, Unit::Count, "Events whose priority column held no priority name.");
        describe_counter!(SCHEMA_REGISTRATIONS, Unit::Count, "Schema registrations asked of the Schema Registry, by outcome.");
        describe_counter!(TEXT_FALLBACK_COLUMNS, Unit::Count, "Columns encoded as text for lack of an Avro mapping.");
        describe_gauge!(LANE_DEPTH, Unit::Count, "Events waiting in a lane.");
        describe_gauge!(LANE_BYTES, Unit::Bytes, "Encoded bytes waiting in a lane.");
        describe_counter!(LANE_DISPATCHES, Unit::Count, "Records handed from a lane to the producer.");
        describe_counter!(LANE_PROMOTIONS, Unit::Count, "Events dispatched ahead of their lane's turn to keep their key's order.");
        describe_gauge!(SPILL_EVENTS, Unit::Count, "Events in the spill, the overflow of full lanes on disk.");
        describe_gauge!(SPILL_BYTES, Unit::Bytes, "Bytes in the spill's files still to be read.");
        describe_counter!(DELIVERY_RETRIES, Unit::Count, "Failed deliveries produced again.");
        describe_counter!(ALERTS_SENT, Unit::Count, "Alert deliveries attempted, by channel and outcome.");
        describe_gauge!(SLOT_RETAINED_WAL_BYTES, Unit::Bytes, "WAL the replication slot makes the server keep (current WAL position minus restart LSN).");
        describe_gauge!(SLOT_ACTIVE, Unit::Count, "1 while a connection streams from the replication slot, else 0.");
        describe_gauge!(SLOT_WAL_STATUS, Unit::Count, "1 for the replication slot's current wal_status, 0 for the others.");
    });
}

/// The counters of one entity and change type, resolved once.
#[derive(Debug)]
pub struct EventMetrics {
    /// [`EVENTS_BUILT`].
    pub built: Counter,
    /// [`EVENTS_PRODUCED`].
    pub produced: Counter,
    /// [`EVENTS_ACKNOWLEDGED`].
    pub acknowledged: Counter,
    /// [`EVENTS_DEAD_LETTERED`].
    pub dead_lettered: Counter,
}

impl EventMetrics {
    fn new(entity: &str, change_type: ChangeType) -> EventMetrics {
        let labels = [
            (LABEL_ENTITY, entity.to_owned()),
            (LABEL_CHANGE_TYPE, change_type.as_str().to_owned()),
        ];
        EventMetrics {
            built: counter!(EVENTS_BUILT, &labels),
            produced: counter!(EVENTS_PRODUCED, &labels),
            acknowledged: counter!(EVENTS_ACKNOWLEDGED, &labels),
            dead_lettered: counter!(EVENTS_DEAD_LETTERED, &labels),
        }
    }
}

/// Every handle the pipeline records with; the per-entity ones are created on first use
/// and kept, so the hot path does a map lookup by `&str`, no formatting.
#[derive(Debug)]
pub struct PipelineMetrics {
    /// [`CHANGES_READ`].
    pub changes_read: Counter,
    /// [`CHANGES_SKIPPED`].
    pub changes_skipped: Counter,
    /// [`RECORDS_IN_FLIGHT`].
    pub records_in_flight: Gauge,
    /// [`REPLICATION_LAG_BYTES`].
    pub lag_bytes: Gauge,
    /// [`REPLICATION_LAG_SECONDS`].
    pub lag_seconds: Gauge,
    /// [`RECONNECTS`].
    pub reconnects: Counter,
    /// [`COMMIT_TO_ACK_SECONDS`] by lane, in [`Priority::ALL`] order.
    latency: Vec<Histogram>,
    /// Per entity: the handles of CREATE, UPDATE and DELETE.
    events: HashMap<String, [Arc<EventMetrics>; 3]>,
    /// [`UNKNOWN_PRIORITIES`] per entity.
    unknown_priorities: HashMap<String, Counter>,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineMetrics {
    /// Resolves the global handles. Without an installed recorder they record nothing.
    pub fn new() -> PipelineMetrics {
        PipelineMetrics {
            changes_read: counter!(CHANGES_READ),
            changes_skipped: counter!(CHANGES_SKIPPED),
            records_in_flight: gauge!(RECORDS_IN_FLIGHT),
            lag_bytes: gauge!(REPLICATION_LAG_BYTES),
            lag_seconds: gauge!(REPLICATION_LAG_SECONDS),
            reconnects: counter!(RECONNECTS),
            latency: Priority::ALL
                .iter()
                .map(|p| histogram!(COMMIT_TO_ACK_SECONDS, LABEL_PRIORITY => p.as_str()))
                .collect(),
            events: HashMap::new(),
            unknown_priorities: HashMap::new(),
        }
    }

    /// The handles of one entity and change type.
    pub fn events(&mut self, entity: &str, change_type: ChangeType) -> Arc<EventMetrics> {
        let index = match change_type {
            ChangeType::Create => 0,
            ChangeType::Update => 1,
            ChangeType::Delete => 2,
        };
        if let Some(handles) = self.events.get(entity) {
            return Arc::clone(&handles[index]);
        }
        let handles = [ChangeType::Create, ChangeType::Update, ChangeType::Delete]
            .map(|c| Arc::new(EventMetrics::new(entity, c)));
        let out = Arc::clone(&handles[index]);
        self.events.insert(entity.to_owned(), handles);
        out
    }

    /// The commit-to-ack histogram of a lane.
    pub fn latency(&self, priority: Priority) -> Histogram {
        let index = Priority::ALL
            .iter()
            .position(|p| *p == priority)
            .unwrap_or(0);
        self.latency
            .get(index)
            .cloned()
            .unwrap_or_else(Histogram::noop)
    }

    /// Counts an event whose priority column held no priority name.
    pub fn unknown_priority(&mut self, entity: &str) {
        if let Some(counter) = self.unknown_priorities.get(entity) {
            counter.increment(1);
            return;
        }
        let counter = counter!(UNKNOWN_PRIORITIES, LABEL_ENTITY => entity.to_owned());
        counter.increment(1);
        self.unknown_priorities.insert(entity.to_owned(), counter);
    }
}

/// The lanes' handles, per lane in [`Priority::ALL`] order, resolved once.
#[derive(Debug, Clone)]
pub struct LaneMetrics {
    /// [`LANE_DEPTH`].
    pub depth: [Gauge; 4],
    /// [`LANE_BYTES`].
    pub bytes: [Gauge; 4],
    /// [`LANE_DISPATCHES`].
    pub dispatches: [Counter; 4],
    /// [`LANE_DISPATCHES`] of retries and their dead letters.
    pub retry_dispatches: Counter,
    /// [`LANE_PROMOTIONS`].
    pub promotions: [Counter; 4],
    /// [`DELIVERY_RETRIES`].
    pub retries: Counter,
    /// [`SPILL_EVENTS`].
    pub spill_events: Gauge,
    /// [`SPILL_BYTES`].
    pub spill_bytes: Gauge,
}

impl Default for LaneMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl LaneMetrics {
    /// Resolves the handles. Without an installed recorder they record nothing.
    pub fn new() -> LaneMetrics {
        LaneMetrics {
            depth: Priority::ALL.map(|p| gauge!(LANE_DEPTH, LABEL_PRIORITY => p.as_str())),
            bytes: Priority::ALL.map(|p| gauge!(LANE_BYTES, LABEL_PRIORITY => p.as_str())),
            dispatches: Priority::ALL
                .map(|p| counter!(LANE_DISPATCHES, LABEL_PRIORITY => p.as_str())),
            retry_dispatches: counter!(LANE_DISPATCHES, LABEL_PRIORITY => "RETRY"),
            promotions: Priority::ALL
                .map(|p| counter!(LANE_PROMOTIONS, LABEL_PRIORITY => p.as_str())),
            retries: counter!(DELIVERY_RETRIES),
            spill_events: gauge!(SPILL_EVENTS),
            spill_bytes: gauge!(SPILL_BYTES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/metrics.md, which must name every metric in backquotes.
    const REFERENCE: &str = include_str!("../../docs/metrics.md");

    #[test]
    fn every_metric_is_documented() {
        let missing: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|name| !REFERENCE.contains(&format!("`{name}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/metrics.md does not document these metrics: {missing:?}"
        );
    }

    #[test]
    fn names_follow_the_convention() {
        for name in ALL {
            assert!(name.starts_with("entity_cdc_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{name}"
            );
        }
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len(), "a metric name is listed twice");
    }

    #[test]
    fn rendered_text_carries_labels_and_buckets() {
        let handle = install();
        let mut metrics = PipelineMetrics::new();
        metrics
            .events("UnitTestEntity", ChangeType::Create)
            .acknowledged
            .increment(2);
        metrics.latency(Priority::Bulk).record(0.2);
        let text = handle.render();
        assert!(
            text.contains(
                "entity_cdc_events_acknowledged_total{entity=\"UnitTestEntity\",change_type=\"CREATE\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("entity_cdc_commit_to_ack_seconds_bucket{priority=\"BULK\",le=\"0.25\"}"),
            "{text}"
        );
    }
}
