//! `entity-cdc run`: the pipeline from the replication slot to Kafka.
//!
//! ```text
//! source loop (one task, owns the replication stream)
//!   ChangeReader ─► EntityModel.bind ─► build_events ─► encode ─► KafkaSink.send
//!        ▲                                   │ open / add_event / close
//!        │ confirmation feed (watch)         ▼
//!        └──────────────────────────── Watermark ◄── ack ── delivery task (reports)
//! ```
//!
//! The source loop is the only writer of transactions into the watermark and the only user
//! of the replication stream; the delivery task acknowledges records as Kafka reports them
//! and publishes the confirmable LSN on a watch channel, which the reader hands to the
//! stream before each status update. So the slot is never confirmed past a transaction
//! with an event that Kafka (or the dead-letter topic) does not have.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::RDKafkaErrorCode;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::checkpoint::{Position, Watermark, WatermarkError};
use crate::codec::{dead_letter_record, DeadLetter, EncodeError, Encoder};
use crate::config::Config;
use crate::error::Disposition;
use crate::event::{build_events, topic_name, BuildError, ChangeType};
use crate::model::{verify_entities, BindError, EntityModel, TransactionContext, CONTEXT_PREFIX};
use crate::sink::{Delivery, KafkaSink, Record, SinkError, SinkSettings};
use crate::source::change::ChangeKind;
use crate::source::change::{Change, SourceEvent};
use crate::source::reader::{ChangeReader, Confirmation, ReadError, ReadItem, Undecodable};
use crate::source::{catalog, Lsn, SourceSettings};
use crate::telemetry::metrics::{EventMetrics, PipelineMetrics};
use crate::telemetry::{Health, ServeError, Telemetry};

/// How long a graceful stop waits for Kafka to acknowledge what is in flight. Long enough
/// for librdkafka's own retries of a slow batch; past it the process exits without
/// confirming the rest, which is then read again at the next start (never lost).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// An event could not be encoded (Avro: a refused schema, a value that fits no schema).
    #[error(transparent)]
    Encode(EncodeError),
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
struct RecordTag {
    /// The counters of its entity and change type; None for a dead letter.
    events: Option<Arc<EventMetrics>>,
    /// The commit-to-ack histogram of its lane.
    latency: metrics::Histogram,
    /// Commit time of its transaction, PostgreSQL-epoch microseconds.
    commit_ts: i64,
}

/// The watermark and what the metrics and `/readyz` need to know about the transactions
/// and records it tracks, under one lock.
struct Tracked {
    watermark: Watermark,
    /// Closed transactions not yet confirmed: end LSN to commit time.
    closed: BTreeMap<Lsn, i64>,
    /// Commit time of the open transaction.
    open: Option<i64>,
    /// Records in flight.
    records: HashMap<Position, RecordTag>,
}

/// The watermark shared by the source loop and the delivery task. A std mutex: it is held
/// for a few map operations and never across an await.
#[derive(Clone)]
struct SharedWatermark {
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
    fn with_tracked<T>(&self, f: impl FnOnce(&mut Tracked) -> T) -> T {
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

    fn in_flight(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .watermark
            .in_flight()
    }

    fn confirmed(&self) -> Lsn {
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
    let encoder = Encoder::for_config(config)
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
    let deliveries = tokio::spawn(
        DeliveryTask {
            sink: sink.clone(),
            watermark: watermark.clone(),
            dlq_topic: config.streaming.dlq_topic.clone(),
            failure: failure.clone(),
        }
        .run(reports),
    );

    let mut source = SourceLoop {
        model: EntityModel::new(&config.entities),
        sink: sink.clone(),
        watermark: watermark.clone(),
        dlq_topic: config.streaming.dlq_topic.clone(),
        context: None,
        summary: RunSummary::default(),
        stop: cancel.clone(),
        failure: failure.clone(),
        unknown_priority_reported: std::collections::HashSet::new(),
        metrics: PipelineMetrics::new(),
        encoder,
    };
    let outcome = source.run(&mut reader, &cancel, &failure).await;

    // Drain: whatever was handed to Kafka gets its report, so the watermark can move.
    if let Err(e) = sink.flush(DRAIN_TIMEOUT).await {
        warn!(error = %e, "kafka did not acknowledge everything before the drain timeout");
    }
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while watermark.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        if failure.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(source);
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

    let mut summary = outcome?;
    if let Some(e) = delivery_error {
        return Err(e);
    }
    summary.confirmed = confirmed;
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

/// Reads changes and produces their events.
struct SourceLoop {
    model: EntityModel,
    sink: Arc<KafkaSink>,
    watermark: SharedWatermark,
    dlq_topic: String,
    context: Option<TransactionContext>,
    summary: RunSummary,
    /// The stop request, watched while waiting out a reconnection.
    stop: CancellationToken,
    /// Cancelled by the delivery task when a delivery fails.
    failure: CancellationToken,
    /// Entities whose priority column held a value that is no priority, already reported
    /// (once per entity, not per event: the count is in the summary).
    unknown_priority_reported: std::collections::HashSet<String>,
    /// The metric handles, per entity resolved once.
    metrics: PipelineMetrics,
    /// JSON or Avro (with the Schema Registry).
    encoder: Encoder,
}

impl SourceLoop {
    async fn run(
        &mut self,
        reader: &mut ChangeReader,
        cancel: &CancellationToken,
        failure: &CancellationToken,
    ) -> Result<RunSummary, PipelineError> {
        loop {
            let item = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = failure.cancelled() => break,
                item = reader.next() => item?,
            };
            self.handle(reader, item).await?;
        }
        Ok(self.summary)
    }

    async fn handle(
        &mut self,
        reader: &mut ChangeReader,
        item: ReadItem,
    ) -> Result<(), PipelineError> {
        match item {
            ReadItem::Event(SourceEvent::Begin {
                commit_lsn,
                commit_ts,
                ..
            }) => {
                self.context = None;
                self.watermark.with_tracked(|t| {
                    t.open = Some(commit_ts);
                    t.watermark.open(commit_lsn)
                })?;
            }
            ReadItem::Event(SourceEvent::Commit {
                commit_lsn,
                end_lsn,
                commit_ts,
                ..
            }) => {
                self.context = None;
                self.watermark.with_tracked(|t| {
                    t.open = None;
                    t.closed.insert(end_lsn, commit_ts);
                    t.watermark.close(commit_lsn, end_lsn)
                })?;
            }
            ReadItem::Event(SourceEvent::Change(change)) => {
                self.summary.changes += 1;
                self.metrics.changes_read.increment(1);
                self.change(reader, change).await?;
            }
            ReadItem::Event(SourceEvent::Truncate {
                relations,
                commit_lsn,
                ..
            }) => {
                for relation in relations {
                    if self
                        .model
                        .entity_for(&relation.schema, &relation.name)
                        .is_some()
                    {
                        warn!(relation = %relation.qualified_name(), lsn = %commit_lsn,
                            "truncate of an entity table: no entity events are produced for it");
                    }
                }
            }
            ReadItem::Event(SourceEvent::Message {
                transactional,
                prefix,
                content,
                lsn,
                ..
            }) => {
                if transactional && prefix == CONTEXT_PREFIX {
                    match TransactionContext::parse(&content) {
                        Ok(context) => self.context = Some(context),
                        Err(e) => {
                            warn!(lsn = %lsn, error = %e, "transaction context ignored");
                        }
                    }
                }
            }
            ReadItem::Event(SourceEvent::Keepalive { wal_end }) => {
                let confirmed = reader.stream().confirmed();
                #[allow(clippy::cast_precision_loss)]
                self.metrics
                    .lag_bytes
                    .set(wal_end.0.saturating_sub(confirmed.0) as f64);
            }
            ReadItem::Event(SourceEvent::Reconnected) => {
                self.metrics.reconnects.increment(1);
                // The server resends from the confirmed position: a partly read
                // transaction comes again from its Begin. Wait for what is in flight, then
                // start a fresh watermark at what is confirmed.
                // A failed delivery or a stop request ends the wait: the run loop sees them
                // next, and nothing past the confirmed position has been confirmed.
                self.context = None;
                let _ = self.sink.flush(DRAIN_TIMEOUT).await;
                while self.watermark.in_flight() > 0 {
                    if self.stop.is_cancelled() || self.failure.is_cancelled() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let confirmed = self.watermark.confirmed();
                self.watermark.with_tracked(|t| {
                    t.watermark = Watermark::new(confirmed);
                    t.open = None;
                    t.closed.clear();
                });
                info!(confirmed = %confirmed, "replication reconnected; resuming");
            }
            ReadItem::Undecodable(bad) => {
                self.dead_letter_undecodable(bad).await?;
            }
        }
        Ok(())
    }

    async fn change(
        &mut self,
        reader: &mut ChangeReader,
        change: Change,
    ) -> Result<(), PipelineError> {
        let primary_key = if self.model.is_known(&change.relation)
            || self
                .model
                .entity_for(&change.relation.schema, &change.relation.name)
                .is_none()
        {
            Vec::new()
        } else {
            catalog::primary_key(
                reader.catalog(),
                &change.relation.schema,
                &change.relation.name,
            )
            .await?
        };
        let Some(binding) = self.model.bind(&change.relation, &primary_key)? else {
            self.summary.skipped += 1;
            self.metrics.changes_skipped.increment(1);
            return Ok(());
        };
        match build_events(&binding, &change, self.context.as_ref()) {
            Ok(events) => {
                for event in events {
                    let handles = self.metrics.events(&event.entity_type, event.change_type);
                    handles.built.increment(1);
                    if event.unknown_priority {
                        self.metrics.unknown_priority(&event.entity_type);
                        self.summary.unknown_priorities += 1;
                        if self
                            .unknown_priority_reported
                            .insert(event.entity_type.clone())
                        {
                            warn!(entity = %event.entity_type, event_id = %event.event_id,
                                "priority column holds a value that is no priority; the entity's default is used (reported once per entity)");
                        }
                    }
                    // Encoded before the watermark hears of it: an event that cannot be
                    // encoded (registry refusal, stop while the registry is down) leaves
                    // its transaction open, so nothing from it on is confirmed.
                    let mut record = match self
                        .encoder
                        .encode(&binding, &change, &event, &self.stop)
                        .await
                    {
                        Ok(record) => record,
                        Err(EncodeError::Cancelled) => return Ok(()),
                        Err(e) => return Err(PipelineError::Encode(e)),
                    };
                    let tag = RecordTag {
                        events: Some(Arc::clone(&handles)),
                        latency: self.metrics.latency(event.priority),
                        commit_ts: change.commit_ts,
                    };
                    let position = self.watermark.with_tracked(|t| {
                        let position = t.watermark.add_event(change.commit_lsn)?;
                        t.records.insert(position, tag);
                        Ok::<_, WatermarkError>(position)
                    })?;
                    record.position = position;
                    self.sink.send(record).await;
                    handles.produced.increment(1);
                    self.summary.events += 1;
                }
            }
            Err(e) if e.disposition() == Disposition::DeadLetter => {
                warn!(error = %e, "event dead-lettered");
                self.metrics
                    .events(&binding.entity.name, change_type_of(change.kind))
                    .dead_lettered
                    .increment(1);
                let letter = DeadLetter {
                    event_id: e.event_id().map(str::to_owned),
                    failure_reason: e.to_string(),
                    failure_timestamp: now_rfc3339(),
                    retry_count: 0,
                    original: None,
                    source: json!({
                        "entity": binding.entity.name,
                        "schema": change.relation.schema,
                        "table": change.relation.name,
                        "commitLsn": change.commit_lsn.to_string(),
                        "index": change.index,
                        "change": change.kind.as_str(),
                    }),
                };
                self.send_dead_letter(change.commit_lsn, change.commit_ts, &letter)
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn dead_letter_undecodable(&mut self, bad: Undecodable) -> Result<(), PipelineError> {
        let Some(entity) = self
            .model
            .entity_for(&bad.relation.schema, &bad.relation.name)
            .map(|(_, e)| e.name.clone())
        else {
            self.summary.skipped += 1;
            self.metrics.changes_skipped.increment(1);
            return Ok(());
        };
        self.metrics
            .events(&entity, change_type_of(bad.kind))
            .dead_lettered
            .increment(1);
        error!(lsn = %bad.commit_lsn, index = bad.index, reason = %bad.reason, "undecodable change dead-lettered");
        let letter = DeadLetter {
            event_id: Some(format!("{}:{}", bad.commit_lsn, bad.index)),
            failure_reason: bad.reason.clone(),
            failure_timestamp: now_rfc3339(),
            retry_count: 0,
            original: None,
            source: json!({
                "schema": bad.relation.schema,
                "table": bad.relation.name,
                "commitLsn": bad.commit_lsn.to_string(),
                "index": bad.index,
                "change": bad.kind.as_str(),
            }),
        };
        // A dead letter's commit time feeds no histogram: 0 will do.
        self.send_dead_letter(bad.commit_lsn, 0, &letter).await
    }

    async fn send_dead_letter(
        &mut self,
        commit_lsn: Lsn,
        commit_ts: i64,
        letter: &DeadLetter,
    ) -> Result<(), PipelineError> {
        let tag = RecordTag {
            events: None,
            latency: metrics::Histogram::noop(),
            commit_ts,
        };
        let position = self.watermark.with_tracked(|t| {
            let position = t.watermark.add_event(commit_lsn)?;
            t.records.insert(position, tag);
            Ok::<_, WatermarkError>(position)
        })?;
        self.sink
            .send(dead_letter_record(&self.dlq_topic, letter, position))
            .await;
        self.summary.dead_lettered += 1;
        Ok(())
    }
}

/// Acknowledges delivered records and dead-letters records Kafka refuses for good.
struct DeliveryTask {
    sink: Arc<KafkaSink>,
    watermark: SharedWatermark,
    dlq_topic: String,
    failure: CancellationToken,
}

impl DeliveryTask {
    async fn run(self, mut reports: crate::sink::DeliveryReports) -> Result<(), PipelineError> {
        let result = self.receive(&mut reports).await;
        if let Err(e) = &result {
            error!(error = %e, "delivery failed; stopping without confirming it");
            self.failure.cancel();
        }
        result
    }

    async fn receive(
        &self,
        reports: &mut crate::sink::DeliveryReports,
    ) -> Result<(), PipelineError> {
        while let Some(delivery) = reports.recv().await {
            match delivery {
                Delivery::Delivered { position, .. } => {
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
                }
                Delivery::Failed {
                    position,
                    error,
                    record,
                } => {
                    self.failed(position, error, *record).await?;
                }
            }
        }
        Ok(())
    }

    /// A record Kafka will never take (too large, invalid, not authorized) goes to the
    /// dead-letter topic with the same position, so its transaction is confirmed once the
    /// dead-letter record is in. Anything else stops the pipeline without confirming it:
    /// the next start reads it again.
    async fn failed(
        &self,
        position: Position,
        error: SinkError,
        record: Record,
    ) -> Result<(), PipelineError> {
        let event_id = record
            .headers
            .iter()
            .find(|(name, _)| name == "eventId")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        if error.disposition() == Disposition::DeadLetter && record.topic != self.dlq_topic {
            error!(topic = %record.topic, event_id = ?event_id, error = %error, "event delivery failed; dead-lettered");
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
                original.payload = bytes::Bytes::new();
            }
            let letter = DeadLetter {
                event_id,
                failure_reason: error.to_string(),
                failure_timestamp: now_rfc3339(),
                retry_count: 0,
                source,
                original: Some(original),
            };
            self.sink
                .send(dead_letter_record(&self.dlq_topic, &letter, position))
                .await;
            return Ok(());
        }
        Err(PipelineError::Delivery {
            position: format!("{}:{}", position.commit_lsn, position.index),
            topic: record.topic,
            source: error,
        })
    }
}

/// The change type of an event built from a row change of this kind.
const fn change_type_of(kind: ChangeKind) -> ChangeType {
    match kind {
        ChangeKind::Insert => ChangeType::Create,
        ChangeKind::Update => ChangeType::Update,
        ChangeKind::Delete => ChangeType::Delete,
    }
}

fn now_rfc3339() -> String {
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
