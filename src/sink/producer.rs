//! The producer, its in-flight budget and its delivery reports.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, info, warn};

use super::{Record, SinkError, SinkSettings};
use crate::checkpoint::Position;

/// How long to wait before producing again when librdkafka's queue is full. Its queue only
/// fills when raw options shrink `queue.buffering.max.*` below the sink's own budget; it
/// drains one batch per `linger.ms` (5 ms by default), so 10 ms gives it room without adding
/// latency that matters against the one-second target for CRITICAL events.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);

/// How long one metadata request may take. A broker on the same network answers in
/// milliseconds; five seconds also covers a DNS lookup and a TLS handshake.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// First and longest wait between attempts to reach Kafka at start: one second keeps a
/// starting cluster from delaying us much, thirty seconds keeps a long outage from filling
/// the log.
const UNREACHABLE_BACKOFF_FIRST: Duration = Duration::from_secs(1);
const UNREACHABLE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long the broker may take to create topics. Creation needs the controller to assign
/// partitions and the leaders to open their logs: seconds on a loaded cluster.
const CREATE_TOPICS_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of one record handed to [`KafkaSink::send`].
#[derive(Debug)]
pub enum Delivery {
    /// Kafka has the record (acknowledged by all in-sync replicas).
    Delivered {
        /// The record's position, to acknowledge to the watermark.
        position: Position,
        /// Partition the record landed in.
        partition: i32,
        /// Its offset there.
        offset: i64,
    },
    /// The record was not delivered; it is handed back for a retry or the dead-letter
    /// topic, as `error.disposition()` says.
    Failed {
        /// The record's position; not to be acknowledged until it is handled.
        position: Position,
        /// Why it failed.
        error: SinkError,
        /// The record itself (boxed: failures are rare, successes should stay small).
        record: Box<Record>,
    },
}

impl Delivery {
    /// The position of the record this report is about.
    pub fn position(&self) -> Position {
        match self {
            Delivery::Delivered { position, .. } | Delivery::Failed { position, .. } => *position,
        }
    }
}

/// The in-flight budget held by one record: released when its report is taken from
/// [`DeliveryReports`], so that reports nobody reads also hold back new records.
#[derive(Debug)]
struct Budget {
    _record: Option<OwnedSemaphorePermit>,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// A record slot of the in-flight budget, taken by [`KafkaSink::reserve`]; dropping it
/// unused gives it back.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
}

/// A delivery report on its way to the reader, still holding its record's budget.
struct Report {
    delivery: Delivery,
    _budget: Budget,
}

/// What travels through librdkafka with each record and comes back in its report.
struct InFlight {
    record: Record,
    budget: Budget,
}

/// The stream of delivery reports, one per record handed to [`KafkaSink::send`], in the
/// order librdkafka reports them (per partition, the order of delivery).
pub struct DeliveryReports {
    rx: mpsc::UnboundedReceiver<Report>,
}

impl DeliveryReports {
    /// The next report; `None` once the sink is dropped and every report has been taken.
    /// Taking a report releases its record's share of the in-flight budget.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await.map(|report| report.delivery)
    }

    /// The next report if one is ready.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok().map(|report| report.delivery)
    }
}

/// librdkafka callbacks: delivery reports into the channel, logs and errors into tracing.
struct SinkContext {
    /// Where reports go; unbounded because the in-flight budget already bounds it.
    reports: mpsc::UnboundedSender<Report>,
    /// For log lines that say where Kafka was expected.
    bootstrap_servers: String,
    /// When an "unreachable" warning was last logged (ms since the Unix epoch): librdkafka
    /// reports every failed connection attempt to every broker, several a second, and an
    /// operator needs to read that Kafka is down, not a flood.
    last_unreachable_warning: std::sync::atomic::AtomicU64,
    /// True while the brokers are believed reachable: set when Kafka answers (a metadata
    /// request or a delivery), cleared when librdkafka reports all brokers down.
    connected: Arc<std::sync::atomic::AtomicBool>,
}

/// How often an unreachable Kafka is logged at WARN; the attempts in between go to DEBUG.
const UNREACHABLE_WARNING_INTERVAL_MS: u64 = 10_000;

impl SinkContext {
    /// Whether an "unreachable" line may be logged at WARN now.
    fn unreachable_warning_due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.last_unreachable_warning.load(Ordering::Relaxed);
        now.saturating_sub(last) >= UNREACHABLE_WARNING_INTERVAL_MS
            && self
                .last_unreachable_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // Connection failures are reported by `error` below, rate-limited.
        if facility == "FAIL" {
            debug!(facility, "librdkafka: {message}");
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => warn!(facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve,
            ) => {
                if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
                    self.connected
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                if self.unreachable_warning_due() {
                    warn!(
                        bootstrap_servers = %self.bootstrap_servers,
                        reason,
                        "kafka unreachable; librdkafka keeps reconnecting and nothing is confirmed meanwhile"
                    );
                } else {
                    debug!(reason, "kafka still unreachable");
                }
            }
            Some(RDKafkaErrorCode::Fatal) => error!(
                bootstrap_servers = %self.bootstrap_servers,
                reason,
                "kafka producer hit a fatal error and cannot deliver anything more"
            ),
            _ => warn!(%error, reason, "kafka client error"),
        }
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, in_flight: Box<InFlight>) {
        let InFlight { record, budget } = *in_flight;
        let position = record.position;
        let delivery = match result {
            Ok(message) => {
                self.connected
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Delivery::Delivered {
                    position,
                    partition: message.partition(),
                    offset: message.offset(),
                }
            }
            Err((error, _)) => Delivery::Failed {
                position,
                error: SinkError::delivery(&record.topic, error),
                record: Box::new(record),
            },
        };
        if self
            .reports
            .send(Report {
                delivery,
                _budget: budget,
            })
            .is_err()
        {
            // The reader is gone: the pipeline is shutting down and confirms nothing more.
            debug!("delivery report dropped: no reader");
        }
    }
}

/// One idempotent producer for all topics, with its admin client.
///
/// Records handed to [`KafkaSink::send`] one after the other keep that order within their
/// partition. Each yields exactly one [`Delivery`] on the [`DeliveryReports`] returned by
/// [`KafkaSink::new`], also when the sink is dropped: records still in librdkafka then are
/// purged and reported as failed with `PurgeQueue` or `PurgeInflight` (retriable: an
/// in-flight one may have been written, so producing it again risks only a duplicate).
/// Call [`KafkaSink::flush`] first to deliver them instead.
pub struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    admin: AdminClient<DefaultClientContext>,
    settings: SinkSettings,
    /// Topics known to exist, so that `ensure_topics` asks the broker once per topic.
    known_topics: Mutex<HashSet<String>>,
    /// Record slots of the in-flight budget.
    record_slots: Arc<Semaphore>,
    /// Bytes of the in-flight budget.
    byte_budget: Arc<Semaphore>,
    /// For records librdkafka refuses on the spot: they are reported like the others.
    reports: mpsc::UnboundedSender<Report>,
}

impl KafkaSink {
    /// Creates the producer and the admin client. Connects lazily: an unreachable Kafka is
    /// no error here (see [`KafkaSink::wait_until_reachable`]).
    pub fn new(settings: SinkSettings) -> Result<(KafkaSink, DeliveryReports), SinkError> {
        settings.validate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let context = SinkContext {
            last_unreachable_warning: std::sync::atomic::AtomicU64::new(0),
            connected: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            reports: tx.clone(),
            bootstrap_servers: settings.bootstrap_servers.clone(),
        };
        let producer: ThreadedProducer<SinkContext> = settings
            .producer_config()
            .create_with_context(context)
            .map_err(SinkError::Client)?;
        let admin: AdminClient<DefaultClientContext> = settings
            .client_config()
            .create()
            .map_err(SinkError::Client)?;
        let sink = KafkaSink {
            producer,
            admin,
            record_slots: Arc::new(Semaphore::new(settings.max_in_flight_records)),
            byte_budget: Arc::new(Semaphore::new(settings.max_in_flight_bytes)),
            settings,
            known_topics: Mutex::new(HashSet::new()),
            reports: tx,
        };
        Ok((sink, DeliveryReports { rx }))
    }

    /// The settings the sink runs with.
    pub fn settings(&self) -> &SinkSettings {
        &self.settings
    }

    /// A flag that is true while Kafka is believed reachable (for `/readyz`).
    pub fn connected_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.producer.context().connected)
    }

    /// Record slots in use: reserved, held by librdkafka, or reported and not yet taken.
    pub fn in_flight(&self) -> usize {
        self.settings.max_in_flight_records - self.record_slots.available_permits()
    }

    /// Hands a record to the producer. Waits while the in-flight budget is spent (that is
    /// the backpressure) or librdkafka's queue is full; never fails: any failure arrives as
    /// a [`Delivery::Failed`] report. A record larger than the whole byte budget waits
    /// until nothing else is in flight, then goes alone.
    ///
    /// Dropping the future before it completes is safe while it waits for the budget (the
    /// record was never handed over); dropped during a queue-full backoff, the record is
    /// lost without a report, so its transaction is never confirmed.
    pub async fn send(&self, record: Record) {
        let slot = self.reserve().await;
        self.send_reserved(slot, record).await;
    }

    /// Waits for a free record slot in the in-flight budget. A scheduler takes the slot
    /// first and only then chooses the record to fill it, so that a record arriving in a
    /// higher lane meanwhile is not stuck behind one already chosen.
    pub async fn reserve(&self) -> Slot {
        // The semaphore lives as long as the sink and is never closed, so acquiring always
        // succeeds.
        Slot {
            permit: Arc::clone(&self.record_slots).acquire_owned().await.ok(),
        }
    }

    /// [`KafkaSink::send`] with a slot taken by [`KafkaSink::reserve`]: waits only for the
    /// record's bytes in the budget and for room in librdkafka's queue.
    pub async fn send_reserved(&self, slot: Slot, record: Record) {
        let bytes = u32::try_from(record.size().clamp(1, self.settings.max_in_flight_bytes))
            .unwrap_or(u32::MAX);
        let budget = Budget {
            _record: slot.permit,
            _bytes: Arc::clone(&self.byte_budget)
                .acquire_many_owned(bytes)
                .await
                .ok(),
        };
        let mut in_flight = Box::new(InFlight { record, budget });
        loop {
            // The bytes are reference-counted: these clones let the record travel inside
            // its own opaque while librdkafka copies key, payload and headers.
            let record = in_flight.record.clone();
            let mut base =
                BaseRecord::<[u8], [u8], Box<InFlight>>::with_opaque_to(&record.topic, in_flight)
                    .payload(&record.payload[..]);
            if let Some(key) = &record.key {
                base = base.key(&key[..]);
            }
            if !record.headers.is_empty() {
                let headers = record.headers.iter().fold(
                    OwnedHeaders::new_with_capacity(record.headers.len()),
                    |headers, (name, value)| {
                        headers.insert(Header {
                            key: name,
                            value: Some(&value[..]),
                        })
                    },
                );
                base = base.headers(headers);
            }
            match self.producer.send(base) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), base)) => {
                    in_flight = base.delivery_opaque;
                    debug!(topic = %record.topic, "librdkafka queue full, backing off");
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((error, base)) => {
                    let InFlight { record, budget } = *base.delivery_opaque;
                    let delivery = Delivery::Failed {
                        position: record.position,
                        error: SinkError::delivery(&record.topic, &error),
                        record: Box::new(record),
                    };
                    // The receiver is gone only while shutting down; see SinkContext.
                    let _ = self.reports.send(Report {
                        delivery,
                        _budget: budget,
                    });
                    return;
                }
            }
        }
    }

    /// Waits until librdkafka holds no more records, or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        let result = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(SinkError::FlushTimeout {
                in_flight: self.producer.in_flight_count(),
            }),
        }
    }

    /// One metadata request: all topics (`None`) or one.
    async fn metadata(&self, topic: Option<String>) -> Result<Metadata, SinkError> {
        let producer = self.producer.clone();
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(topic.as_deref(), METADATA_TIMEOUT)
        })
        .await;
        let unreachable = |source| SinkError::Unreachable {
            bootstrap_servers: self.settings.bootstrap_servers.clone(),
            source,
        };
        match result {
            Ok(Ok(metadata)) => Ok(metadata),
            Ok(Err(error)) => Err(unreachable(error)),
            Err(_) => Err(unreachable(KafkaError::Canceled)),
        }
    }

    /// Whether a broker answers a metadata request now.
    pub async fn check_reachable(&self) -> Result<(), SinkError> {
        self.metadata(None).await.map(|_| ())
    }

    /// Waits until a broker answers, logging each failed attempt and backing off. Nothing
    /// is produced (so nothing confirmed) before it returns; wrap it in a `select!` with
    /// the shutdown signal.
    pub async fn wait_until_reachable(&self) {
        let mut backoff = UNREACHABLE_BACKOFF_FIRST;
        loop {
            match self.check_reachable().await {
                Ok(()) => {
                    self.producer
                        .context()
                        .connected
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    info!(bootstrap_servers = %self.settings.bootstrap_servers, "kafka reachable");
                    return;
                }
                Err(error) => {
                    let cause = match &error {
                        SinkError::Unreachable { source, .. } => source.to_string(),
                        other => other.to_string(),
                    };
                    warn!(
                        bootstrap_servers = %self.settings.bootstrap_servers,
                        %cause,
                        retry_in_s = backoff.as_secs(),
                        "kafka unreachable; retrying, nothing is confirmed meanwhile"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(UNREACHABLE_BACKOFF_MAX);
                }
            }
        }
    }

    /// Makes sure the topics exist: creates the missing ones with the configured partitions
    /// and replication factor ("already exists" is fine: another instance or an operator
    /// was first), or, with creation disabled, checks that they exist. Topics found once
    /// are not asked about again.
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), SinkError> {
        let missing: Vec<String> = {
            let known = self
                .known_topics
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut missing: Vec<String> = topics
                .iter()
                .filter(|topic| !known.contains(*topic))
                .cloned()
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let found = if self.settings.create_topics {
            self.create_topics(&missing).await?
        } else {
            let metadata = self.metadata(None).await?;
            for topic in &missing {
                let exists = metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none());
                if !exists {
                    return Err(SinkError::TopicMissing {
                        topic: topic.clone(),
                    });
                }
            }
            missing
        };
        self.known_topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(found);
        Ok(())
    }

    /// CreateTopics for `topics`; returns the ones that exist afterwards.
    async fn create_topics(&self, topics: &[String]) -> Result<Vec<String>, SinkError> {
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|topic| {
                NewTopic::new(
                    topic,
                    self.settings.topic_partitions,
                    TopicReplication::Fixed(self.settings.topic_replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(CREATE_TOPICS_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(SinkError::Admin)?;
        let mut created = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Ok(topic) => {
                    info!(
                        %topic,
                        partitions = self.settings.topic_partitions,
                        replication_factor = self.settings.topic_replication_factor,
                        "topic created"
                    );
                    created.push(topic);
                }
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => created.push(topic),
                Err((topic, code)) => return Err(SinkError::TopicCreation { topic, code }),
            }
        }
        Ok(created)
    }
}
