//! `entity-cdc run`: the pipeline from the replication slot to Kafka.
//!
//! ```text
//! source loop (one task, owns the replication stream; status updates also while waiting)
//!   ChangeReader ─► EntityModel.bind ─► build_events ─► encode ─► lanes (bounded; overflow to
//!        │                                                             the spill on disk;
//!        │                                                             waits when that is full)
//!        ▲                                   │ open / add_event / close      │
//!        │ confirmation feed (watch)         ▼                               ▼
//!        │                               Watermark      dispatcher: producer slot, then the
//!        │                                   ▲          scheduler's choice ─► KafkaSink
//!        │                                   │ ack                               │ reports
//!        └───────────────────────────────────┴──── delivery task ◄───────────────┘
//!                                                   retries (key held) / dead letters
//!                                                   go back to the lanes, ahead of all
//! ```
//!
//! The source loop is the only writer of transactions into the watermark and the only user
//! of the replication stream; the delivery task acknowledges records as Kafka reports them
//! and publishes the confirmable LSN on a watch channel, which the reader hands to the
//! stream before each status update. So the slot is never confirmed past a transaction
//! with an event that Kafka (or the dead-letter topic) does not have.

mod dead_letter;
mod delivery;
mod dispatch;
mod source_loop;
pub mod spill;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::{Position, Watermark, WatermarkError};
use crate::config::Config;
use crate::event::{topic_name, BuildError, ChangeType};
use crate::model::{verify_entities, BindError, EntityModel};
use crate::sink::alert::{AlertError, Alerter};
use crate::sink::{KafkaSink, SinkError, SinkSettings};
use crate::source::change::ChangeKind;
use crate::source::reader::{Confirmation, ReadError};
use crate::source::{catalog, Lsn, SourceSettings};
use crate::telemetry::metrics::{EventMetrics, PipelineMetrics};
use crate::telemetry::slot::spawn_slot_monitor;
use crate::telemetry::{Health, ServeError, Telemetry};
use dead_letter::DeadLetters;
use delivery::DeliveryTask;
use dispatch::{Dispatcher, SharedLanes};
use source_loop::SourceLoop;
pub use spill::SpillError;

/// How long a graceful stop waits for Kafka to acknowledge what is in flight. Long enough
/// for librdkafka's own retries of a slow batch; past it the process exits without
/// confirming the rest, which is then read again at the next start (never lost).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the drain looks whether everything is acknowledged: short against the
/// milliseconds a local broker takes, cheap against a lock per look.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the replication stream failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A relation could not be bound to its entity.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// An event could not be built and cannot be dead-lettered.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The watermark's bookkeeping was violated (a bug, or a stream out of order).
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    /// Kafka refused or failed a record in a way that needs an operator.
    #[error("record {position} for topic {topic}: {source}")]
    Delivery {
        /// Where the record came from.
        position: String,
        /// Its topic.
        topic: String,
        /// The error.
        #[source]
        source: SinkError,
    },
    /// The dead letter of a failed record could not be written either: nothing past it is
    /// confirmed.
    #[error("dead letter of record {position} could not be written to {topic}: {source}")]
    DeadLetterWrite {
        /// Where the record came from.
        position: String,
        /// The dead-letter topic.
        topic: String,
        /// The error.
        #[source]
        source: SinkError,
    },
    /// Entities whose configured columns or tables do not match the database.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Entities(Vec<BindError>),
    /// The configuration asks for something this version cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The sink could not be set up.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The catalog connection failed.
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    /// Opening the source failed.
    #[error(transparent)]
    Open(#[from] crate::source::OpenError),
    /// The telemetry endpoint could not start.
    #[error(transparent)]
    Telemetry(#[from] ServeError),
    /// The operator alerts could not be started.
    #[error(transparent)]
    Alerts(#[from] AlertError),
    /// An event could not be encoded (Avro: a refused schema, a value that fits no schema).
    #[error(transparent)]
    Encode(crate::codec::EncodeError),
    /// A spilled event could not be read back: it and everything after it stay
    /// unconfirmed.
    #[error(transparent)]
    Spill(#[from] spill::SpillError),
}

impl PipelineError {
    /// What an operator should do, where known.
    pub fn hint(&self) -> Option<String> {
        match self {
            PipelineError::Read(ReadError::Replication(e)) => e.hint().map(str::to_owned),
            PipelineError::Open(e) => e.hint(),
            PipelineError::Telemetry(e) => Some(e.hint().to_owned()),
            PipelineError::Sink(e) | PipelineError::Delivery { source: e, .. } => {
                e.hint().map(str::to_owned)
            }
            PipelineError::Spill(spill::SpillError::Directory { .. }) => {
                Some(spill::DIRECTORY_FIX.to_owned())
            }
            PipelineError::Spill(_) => Some(
                "check the disk of streaming.spill.directory; the spilled events are read again from the slot at the next start".to_owned(),
            ),
            PipelineError::DeadLetterWrite { topic, source, .. } => Some(
                source.hint().map_or_else(
                    || format!("check that the dead-letter topic {topic} exists and the connector may write to it; the record is read again at the next start"),
                    str::to_owned,
                ),
            ),
            _ => None,
        }
    }
}

/// Counters of what the pipeline did, for the final log line and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Row changes read.
    pub changes: u64,
    /// Entity events produced.
    pub events: u64,
    /// Changes of tables that are no entity (or not streamed), skipped.
    pub skipped: u64,
    /// Events or changes sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Events whose priority column held no priority name (the entity's default was used).
    pub unknown_priorities: u64,
    /// The LSN confirmed to PostgreSQL at the end.
    pub confirmed: Lsn,
}

/// What a record in flight counts when Kafka acknowledges it.
pub(super) struct RecordTag {
    /// The counters of its entity and change type; None for a dead letter.
    pub events: Option<Arc<EventMetrics>>,
    /// The commit-to-ack histogram of its lane.
    pub latency: metrics::Histogram,
    /// Commit time of its transaction, PostgreSQL-epoch microseconds.
    pub commit_ts: i64,
}

/// The watermark and what the metrics and `/readyz` need to know about the transactions
/// and records it tracks, under one lock.
pub(super) struct Tracked {
    pub watermark: Watermark,
    /// Closed transactions not yet confirmed: end LSN to commit time.
    pub closed: BTreeMap<Lsn, i64>,
    /// Commit time of the open transaction.
    pub open: Option<i64>,
    /// Records in flight (in the lanes or in the producer).
    pub records: HashMap<Position, RecordTag>,
}

/// The watermark shared by the source loop and the delivery task. A std mutex: it is held
/// for a few map operations and never across an await.
#[derive(Clone)]
pub(super) struct SharedWatermark {
    inner: Arc<Mutex<Tracked>>,
    feed: Arc<watch::Sender<Confirmation>>,
    /// Where the lag reference goes.
    health: Arc<Health>,
    /// The in-flight gauge.
    in_flight_gauge: metrics::Gauge,
}

impl SharedWatermark {
    fn new(start: Lsn, health: Arc<Health>) -> (SharedWatermark, watch::Receiver<Confirmation>) {
        let (tx, rx) = watch::channel(Confirmation {
            lsn: start,
            idle: true,
        });
        let shared = SharedWatermark {
            inner: Arc::new(Mutex::new(Tracked {
                watermark: Watermark::new(start),
                closed: BTreeMap::new(),
                open: None,
                records: HashMap::new(),
            })),
            feed: Arc::new(tx),
            health,
            in_flight_gauge: metrics::gauge!(crate::telemetry::metrics::RECORDS_IN_FLIGHT),
        };
        (shared, rx)
    }

    /// Runs `f` on the tracked state and publishes the resulting confirmation. The value is
    /// published while the lock is held: published after it, the delivery task's "idle"
    /// computed before the source loop opened a transaction could overwrite the source
    /// loop's newer "not idle", and the stream would then confirm a keepalive's WAL end past
    /// a transaction still in flight (found by the no-loss test).
    pub fn with_tracked<T>(&self, f: impl FnOnce(&mut Tracked) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut guard);
        let confirmation = Confirmation {
            lsn: guard.watermark.confirmed(),
            idle: guard.watermark.is_idle(),
        };
        self.feed.send_if_modified(|current| {
            let changed = *current != confirmation;
            *current = confirmation;
            changed
        });
        // Retire the transactions the confirmation passed. The lag in seconds is measured
        // from the oldest transaction left: Kafka has everything committed before it. (Not
        // from the last confirmed one: after an idle hour, that would report an hour of
        // lag for a transaction just read.)
        while let Some((&end, _)) = guard.closed.first_key_value() {
            if end > confirmation.lsn {
                break;
            }
            guard.closed.pop_first();
        }
        let reference = if confirmation.idle {
            None
        } else {
            guard
                .closed
                .first_key_value()
                .map(|(_, ts)| *ts)
                .or(guard.open)
        };
        self.health.set_lag_reference(reference);
        #[allow(clippy::cast_precision_loss)]
        self.in_flight_gauge.set(guard.watermark.in_flight() as f64);
        drop(guard);
        out
    }

    pub fn in_flight(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .watermark
            .in_flight()
    }

    pub fn confirmed(&self) -> Lsn {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .watermark
            .confirmed()
    }
}

/// The sink settings that connector.yaml's `kafka` section describes.
pub fn sink_settings(config: &Config) -> SinkSettings {
    let mut settings = SinkSettings::new(config.kafka.bootstrap_servers.clone());
    settings.librdkafka = config.kafka.librdkafka.clone();
    settings.create_topics = config.kafka.topics.create;
    settings.topic_partitions =
        i32::try_from(config.kafka.topics.partitions.get()).unwrap_or(i32::MAX);
    settings.topic_replication_factor = i32::from(config.kafka.topics.replication_factor.get());
    settings.max_in_flight_records = config.streaming.producer_in_flight.records.get();
    settings.max_in_flight_bytes = config.streaming.producer_in_flight.bytes.get();
    settings
}

/// Every topic the configured entities can produce to, plus the dead-letter topic.
pub fn topics(config: &Config) -> Result<Vec<String>, BuildError> {
    let mut topics = Vec::new();
    for entity in config.entities.iter().filter(|e| e.streaming.enabled) {
        for change_type in [ChangeType::Create, ChangeType::Update, ChangeType::Delete] {
            let topic = topic_name(entity, change_type)?;
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
    }
    topics.push(config.streaming.dlq_topic.clone());
    Ok(topics)
}

/// Runs the pipeline until `cancel` fires (then drains and confirms) or an error stops it
/// (then nothing past the failure is confirmed).
pub async fn run(config: &Config, cancel: CancellationToken) -> Result<RunSummary, PipelineError> {
    let encoder = crate::codec::Encoder::for_config(config)
        .map_err(|e| PipelineError::Unsupported(format!("format avro: {e}")))?;
    let settings = SourceSettings::from_config(config);
    let (sink, reports) = KafkaSink::new(sink_settings(config))?;
    let sink = Arc::new(sink);

    // The endpoint starts first, so that a taken address fails the start at once and
    // /healthz answers while Kafka and PostgreSQL are awaited.
    let max_lag = config.telemetry.as_ref().map_or(
        crate::config::TelemetryConfig::DEFAULT_MAX_LAG_SECONDS,
        |t| t.max_lag_seconds,
    );
    let health = Health::new(Duration::from_secs(max_lag));
    health.attach_producer(sink.connected_flag());
    let endpoint_stop = CancellationToken::new();
    let _endpoint_guard = endpoint_stop.clone().drop_guard();
    if let Some(listen) = config.telemetry.as_ref().and_then(|t| t.listen) {
        let telemetry = Telemetry {
            metrics: crate::telemetry::metrics::install(),
            health: health.clone(),
        };
        crate::telemetry::serve(listen, telemetry, endpoint_stop.clone()).await?;
    }
    // Alerts start with the process: a setup problem (TLS roots, addresses) stops the start.
    let alerter = Alerter::for_config(config)?;
    spill::probe(&config.streaming.spill)?;
    // Refuse at start, before waiting for Kafka, what would stop the pipeline at a table's
    // first change: a configured column or table the database does not have.
    let catalog = crate::source::sql::connect(&settings.params)
        .await
        .map_err(|e| PipelineError::Open(e.into()))?;
    let problems = verify_entities(&catalog, &config.entities).await?;
    drop(catalog);
    if !problems.is_empty() {
        return Err(PipelineError::Entities(problems));
    }
    info!(bootstrap = %config.kafka.bootstrap_servers, "waiting for kafka");
    tokio::select! {
        () = cancel.cancelled() => return Ok(RunSummary::default()),
        () = sink.wait_until_reachable() => {}
    }
    sink.ensure_topics(&topics(config)?).await?;

    let mut reader = crate::source::open_reader(&settings).await?;
    health.attach_stream(reader.stream().streaming_flag());
    let (watermark, feed) = SharedWatermark::new(Lsn::ZERO, health.clone());
    reader.set_confirmation_feed(feed);

    let failure = CancellationToken::new();
    let lanes = SharedLanes::new(
        &config.streaming,
        config.streaming.scheduling,
        failure.clone(),
    );
    let dead_letters = Arc::new(DeadLetters::new(alerter.handle()));
    // The slot's retained WAL and status, polled on its own SQL connection: it keeps being
    // measured while replication is down, and never blocks the pipeline.
    let slot_monitor_stop = CancellationToken::new();
    let slot_monitor = spawn_slot_monitor(
        config.source.connect_params(),
        config.source.slot.clone(),
        crate::telemetry::slot::DEFAULT_POLL_INTERVAL,
        slot_monitor_stop.clone(),
    );
    let deliveries = tokio::spawn(
        DeliveryTask {
            lanes: lanes.clone(),
            watermark: watermark.clone(),
            dlq_topic: config.streaming.dlq_topic.clone(),
            failure: failure.clone(),
            dead_letters: dead_letters.clone(),
            max_retries: config.streaming.retries,
            backoff: config.streaming.retry_backoff(),
        }
        .run(reports),
    );
    let dispatcher = tokio::spawn(
        Dispatcher {
            lanes: lanes.clone(),
            sink: sink.clone(),
            failure: failure.clone(),
            watermark: watermark.clone(),
        }
        .run(),
    );

    let mut source = SourceLoop {
        model: EntityModel::new(&config.entities),
        lanes: lanes.clone(),
        watermark: watermark.clone(),
        dlq_topic: config.streaming.dlq_topic.clone(),
        dead_letters: dead_letters.clone(),
        status_interval: settings.status_interval,
        abandoned: 0,
        context: None,
        summary: RunSummary::default(),
        stop: cancel.clone(),
        failure: failure.clone(),
        unknown_priority_reported: std::collections::HashSet::new(),
        metrics: PipelineMetrics::new(),
        encoder,
    };
    let outcome = source.run(&mut reader, &cancel, &failure).await;

    // Drain: the dispatcher empties the lanes (retries included) and every record gets its
    // report, so the watermark can move. Events dropped unqueued by the stop are never
    // acknowledged: their transactions stay unconfirmed and are read again at the next
    // start.
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while watermark.in_flight() > source.abandoned && tokio::time::Instant::now() < deadline {
        if failure.is_cancelled() {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    if watermark.in_flight() > source.abandoned && !failure.is_cancelled() {
        warn!(
            in_flight = watermark.in_flight() - source.abandoned,
            queued = !lanes.is_empty(),
            "kafka did not acknowledge everything before the drain timeout; the rest is read again at the next start"
        );
    }
    drop(source);
    dispatcher.abort();
    deliveries.abort();
    let delivery_error = match deliveries.await {
        Ok(Err(e)) => Some(e),
        _ => None,
    };

    // The final standby status: exactly what Kafka has acknowledged (CASE-24), or the WAL
    // end of a keepalive received while nothing was in flight, which the stream holds and
    // the watermark does not know: the summary reports what the slot is told.
    reader.stream().confirm(watermark.confirmed());
    let confirmed = reader.stream().confirmed();
    if let Err(e) = reader.stream().send_status().await {
        warn!(error = %e, "could not send the final status update");
    }
    reader.close().await;
    slot_monitor_stop.cancel();
    let _ = slot_monitor.await;
    // What was dead-lettered since the last alert is sent once more, within its timeout.
    alerter.close().await;

    let mut summary = outcome?;
    if let Some(e) = delivery_error {
        return Err(e);
    }
    if let Some(e) = lanes.take_error() {
        return Err(PipelineError::Spill(e));
    }
    summary.confirmed = confirmed;
    summary.dead_lettered = dead_letters.count();
    info!(
        changes = summary.changes,
        events = summary.events,
        skipped = summary.skipped,
        dead_lettered = summary.dead_lettered,
        unknown_priorities = summary.unknown_priorities,
        confirmed = %confirmed,
        "pipeline stopped"
    );
    Ok(summary)
}

/// The change type of an event built from a row change of this kind.
pub(super) const fn change_type_of(kind: ChangeKind) -> ChangeType {
    match kind {
        ChangeKind::Insert => ChangeType::Create,
        ChangeKind::Update => ChangeType::Update,
        ChangeKind::Delete => ChangeType::Delete,
    }
}

pub(super) fn now_rfc3339() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    // Commit times are PostgreSQL-epoch microseconds; convert from the Unix epoch.
    crate::source::change::commit_time_rfc3339(micros - 946_684_800_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lag in seconds is measured from the oldest transaction not yet acknowledged, and
    /// is 0 once everything is; the in-flight records are tracked with their tags.
    #[test]
    fn lag_reference_follows_the_oldest_pending_transaction() {
        let health = Health::new(Duration::from_secs(60));
        let (shared, _feed) = SharedWatermark::new(Lsn::ZERO, health.clone());
        let now = crate::telemetry::now_pg_micros();
        let (old, new) = (now - 50_000_000, now - 5_000_000);
        let mut positions = Vec::new();
        for (commit, end, ts) in [(Lsn(100), Lsn(110), old), (Lsn(200), Lsn(210), new)] {
            let position = shared
                .with_tracked(|t| {
                    t.open = Some(ts);
                    t.watermark.open(commit)?;
                    let position = t.watermark.add_event(commit)?;
                    t.records.insert(
                        position,
                        RecordTag {
                            events: None,
                            latency: metrics::Histogram::noop(),
                            commit_ts: ts,
                        },
                    );
                    t.open = None;
                    t.closed.insert(end, ts);
                    t.watermark.close(commit, end).map(|_| position)
                })
                .expect("watermark");
            positions.push(position);
        }
        let lag = health.lag_seconds();
        assert!((49.0..60.0).contains(&lag), "{lag}");
        shared
            .with_tracked(|t| {
                t.records.remove(&positions[0]);
                t.watermark.ack(positions[0])
            })
            .expect("ack");
        let lag = health.lag_seconds();
        assert!((4.0..15.0).contains(&lag), "{lag}");
        shared
            .with_tracked(|t| {
                t.records.remove(&positions[1]);
                t.watermark.ack(positions[1])
            })
            .expect("ack");
        assert!(health.lag_seconds().abs() < f64::EPSILON);
        assert_eq!(shared.confirmed(), Lsn(210));
        assert_eq!(shared.in_flight(), 0);
    }
}
