//! connector.yaml: the metamodel's streaming declaration and the connector's settings.
//!
//! Loading goes text → YAML tree → `${VAR}` interpolation on the tree (so errors know the
//! path) → typed structs (`deny_unknown_fields`, type and range errors with the path via
//! serde_path_to_error, first problem only) → semantic checks (`validate.rs`) that report
//! every problem at once. Every field is documented here and in docs/configuration.md; a test
//! keeps the two in step.

mod alerts;
mod error;
#[cfg(test)]
mod fields;
mod interpolate;
mod load;
mod scalar;
mod table_name;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::source::{ConnectParams, SslMode};

pub use alerts::{AlertsConfig, EmailConfig, SmtpTls, WebhookConfig};
pub use error::{ConfigError, Problem};
pub use table_name::{TableName, TableNameError};

/// The whole of connector.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The PostgreSQL database to capture changes from.
    pub source: SourceConfig,
    /// The Kafka cluster the events are produced to.
    pub kafka: KafkaConfig,
    /// How event values are encoded on Kafka.
    #[serde(default)]
    pub format: Format,
    /// The Confluent Schema Registry; required when `format` is `avro`.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// Priority lanes, retries and the dead-letter topic.
    #[serde(default)]
    pub streaming: StreamingConfig,
    /// Metrics and health endpoint; absent means none is served.
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
    /// Operator alerts about dead-lettered events; absent means none are sent.
    #[serde(default)]
    pub alerts: Option<AlertsConfig>,
    /// The tables captured, each declared as an entity. At least one.
    pub entities: Vec<EntityConfig>,
}

/// `source`: where and how to connect to PostgreSQL, and which slot and publication to read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    /// Host name or IP address.
    #[serde(default = "SourceConfig::default_host")]
    pub host: String,
    /// TCP port, 1..65535.
    #[serde(
        default = "SourceConfig::default_port",
        deserialize_with = "scalar::port"
    )]
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Role to connect as; it needs the REPLICATION attribute.
    pub user: String,
    /// Password, when the server asks for one; an empty string means none. Never printed.
    #[serde(default, deserialize_with = "scalar::opt_secret")]
    pub password: Option<SecretString>,
    /// TLS policy with libpq's names: disable, prefer, require, verify-ca, verify-full.
    #[serde(default, with = "SslModeName")]
    pub sslmode: SslMode,
    /// PEM file with trusted root certificates for verify-ca and verify-full.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// Logical replication slot (pgoutput), `[a-z0-9_]{1,63}`.
    pub slot: String,
    /// Publication naming the captured tables, `[a-z0-9_]{1,63}`.
    pub publication: String,
    /// Milliseconds between standby status updates sent to the server, > 0.
    #[serde(
        default = "SourceConfig::default_status_interval_ms",
        deserialize_with = "scalar::int"
    )]
    pub status_interval_ms: NonZeroU64,
    /// Shown in pg_stat_activity and pg_stat_replication.
    #[serde(default = "SourceConfig::default_application_name")]
    pub application_name: String,
}

/// libpq's sslmode names for [`SslMode`], which lives with the connection code.
#[derive(Deserialize)]
#[serde(remote = "SslMode", rename_all = "kebab-case")]
enum SslModeName {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SourceConfig {
    const DEFAULT_PORT: u16 = 5432;
    const DEFAULT_STATUS_INTERVAL_MS: NonZeroU64 = NonZeroU64::new(10_000).unwrap();

    fn default_host() -> String {
        "localhost".to_owned()
    }

    const fn default_port() -> u16 {
        Self::DEFAULT_PORT
    }

    const fn default_status_interval_ms() -> NonZeroU64 {
        Self::DEFAULT_STATUS_INTERVAL_MS
    }

    fn default_application_name() -> String {
        "entity-cdc".to_owned()
    }

    /// The interval between standby status updates.
    pub fn status_interval(&self) -> Duration {
        Duration::from_millis(self.status_interval_ms.get())
    }

    /// Parameters for both the replication and the ordinary SQL connection.
    pub fn connect_params(&self) -> ConnectParams {
        ConnectParams {
            host: self.host.clone(),
            port: self.port,
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            sslmode: self.sslmode,
            sslrootcert: self.sslrootcert.clone(),
            application_name: self.application_name.clone(),
        }
    }
}

/// `kafka`: the producer's cluster and topic creation.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Whether and how entity-cdc creates the topics it produces to.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// Raw librdkafka producer properties, passed through as is. They may not set what
    /// entity-cdc sets itself: `bootstrap.servers` (use `kafka.bootstrapServers`),
    /// `enable.idempotence` and `acks` (fixed, for ordering and no loss).
    #[serde(default, deserialize_with = "scalar::string_map")]
    pub librdkafka: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics)
            .field("librdkafka", &redacted_librdkafka(&self.librdkafka))
            .finish()
    }
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `ssl.key.pem`, `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`, ...).
fn is_secret_librdkafka_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "oauthbearer.config"]
        .iter()
        .any(|part| key.contains(part))
}

/// The librdkafka properties for Debug output: secret values replaced by `[REDACTED]`.
pub fn redacted_librdkafka(map: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    map.iter()
        .map(|(k, v)| {
            let shown = if is_secret_librdkafka_key(k) {
                "[REDACTED]"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

/// `kafka.topics`: topic creation at startup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TopicsConfig {
    /// Create missing topics (entity topics and the DLQ) at startup.
    #[serde(
        default = "TopicsConfig::default_create",
        deserialize_with = "scalar::flag"
    )]
    pub create: bool,
    /// Partitions of a created topic, > 0.
    #[serde(
        default = "TopicsConfig::default_partitions",
        deserialize_with = "scalar::int"
    )]
    pub partitions: NonZeroU32,
    /// Replication factor of a created topic, 1..32767.
    #[serde(
        default = "TopicsConfig::default_replication_factor",
        deserialize_with = "scalar::int"
    )]
    pub replication_factor: NonZeroU16,
}

impl TopicsConfig {
    const fn default_create() -> bool {
        true
    }

    const fn default_partitions() -> NonZeroU32 {
        NonZeroU32::MIN
    }

    const fn default_replication_factor() -> NonZeroU16 {
        NonZeroU16::MIN
    }
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            create: Self::default_create(),
            partitions: Self::default_partitions(),
            replication_factor: Self::default_replication_factor(),
        }
    }
}

/// `format`: the encoding of event values (keys are always strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON, schemaless.
    #[default]
    Json,
    /// Avro in the Confluent wire format, schemas registered in the Schema Registry.
    Avro,
}

/// `schemaRegistry`: the Confluent Schema Registry used with `format: avro`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SchemaRegistryConfig {
    /// Base URL, `http://` or `https://`.
    pub url: String,
    /// User for HTTP basic authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for HTTP basic authentication; an empty string means none. Never printed.
    #[serde(default, deserialize_with = "scalar::opt_secret")]
    pub password: Option<SecretString>,
    /// How subjects are named.
    #[serde(default)]
    pub subject_name_strategy: SubjectNameStrategy,
}

/// `schemaRegistry.subjectNameStrategy`: Confluent's subject naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectNameStrategy {
    /// `<topic>-value` (TopicNameStrategy).
    #[default]
    Topic,
    /// `<record full name>` (RecordNameStrategy).
    Record,
}

/// An event's priority, which picks its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    /// Dispatched first.
    Critical,
    /// Before normal traffic.
    High,
    /// The default.
    Normal,
    /// Backfills and mass updates.
    Bulk,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 4] = [Self::Critical, Self::High, Self::Normal, Self::Bulk];

    /// The name used in connector.yaml, headers and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "CRITICAL",
            Self::High => "HIGH",
            Self::Normal => "NORMAL",
            Self::Bulk => "BULK",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `streaming`: lanes, their weights, retries and the dead-letter topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StreamingConfig {
    /// The scheduler's weight of each lane.
    #[serde(default)]
    pub priority_weights: PriorityWeights,
    /// Topic for events that cannot be produced, with their reason.
    #[serde(default = "StreamingConfig::default_dlq_topic")]
    pub dlq_topic: String,
    /// Attempts after the first before an event goes to the DLQ.
    #[serde(
        default = "StreamingConfig::default_retries",
        deserialize_with = "scalar::int"
    )]
    pub retries: u32,
    /// Milliseconds before the first retry; doubled on each further one.
    #[serde(
        default = "StreamingConfig::default_retry_backoff_ms",
        deserialize_with = "scalar::int"
    )]
    pub retry_backoff_ms: u64,
    /// Per-lane bounds; lanes not listed get [`LaneConfig::default`].
    #[serde(default)]
    pub lanes: Lanes,
    /// `weighted` (the lanes) or `fifo` (one lane in commit order, for comparison).
    #[serde(default)]
    pub scheduling: Scheduling,
    /// What may be handed to the producer and not yet acknowledged.
    #[serde(default)]
    pub producer_in_flight: ProducerInFlight,
    /// Where a full lane overflows, so that reading WAL goes on.
    #[serde(default)]
    pub spill: SpillConfig,
}

/// `streaming.spill`: the overflow of full lanes on local disk.
///
/// Lanes reorder only what the source has read, and the WAL is read in commit order: with
/// a full lane and nowhere else to put its events, the source would stop reading, and a
/// CRITICAL change committed behind a large BULK import would wait for the import to be
/// produced. With a spill, the events a full lane cannot take are written to a file and
/// moved back into their lane as it drains; the source reads on, and the urgent change is
/// read, and dispatched, within moments. Memory stays bounded (the spill lives on disk);
/// only when the spill is full too does the source stop reading WAL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpillConfig {
    /// The directory of the spill's files; absent means the system's temporary directory.
    /// The files are anonymous (unlinked at creation): nothing is left behind, even after
    /// a crash, and nothing in them is needed after a restart (the slot has it all).
    #[serde(default)]
    pub directory: Option<std::path::PathBuf>,
    /// Bytes the spill holds at most; 0 turns it off (a full lane then stops the source).
    #[serde(
        default = "SpillConfig::default_max_bytes",
        deserialize_with = "scalar::int"
    )]
    pub max_bytes: u64,
}

impl SpillConfig {
    /// Where the spill's files go: the configured directory, else the system's temporary
    /// directory.
    pub fn directory_path(&self) -> std::path::PathBuf {
        self.directory.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// 1 GiB: a few million typical events, far more than a lane holds in memory.
    const fn default_max_bytes() -> u64 {
        1024 * 1024 * 1024
    }
}

impl Default for SpillConfig {
    fn default() -> Self {
        Self {
            directory: None,
            max_bytes: Self::default_max_bytes(),
        }
    }
}

/// `streaming.scheduling`: how events are ordered for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// Four lanes, the stride scheduler over the weights, rate limits, per-key promotion.
    #[default]
    Weighted,
    /// One lane (the NORMAL lane's bounds, no rate limit) in commit order: the baseline the
    /// benchmarks compare the lanes against, not for production.
    Fifo,
}

/// `streaming.producerInFlight`: the bound on records handed to librdkafka and not yet
/// acknowledged. Small, so that the backlog waits in the lanes, where priority decides,
/// not in librdkafka's first-come-first-served queue: a CRITICAL event waits at most for
/// this much to be acknowledged ahead of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProducerInFlight {
    /// Records, > 0.
    #[serde(
        default = "ProducerInFlight::default_records",
        deserialize_with = "scalar::int"
    )]
    pub records: NonZeroUsize,
    /// Bytes (key, headers, value and topic name), > 0.
    #[serde(
        default = "ProducerInFlight::default_bytes",
        deserialize_with = "scalar::int"
    )]
    pub bytes: NonZeroUsize,
}

impl ProducerInFlight {
    // Literals, checked at compile time.
    const DEFAULT_RECORDS: NonZeroUsize = NonZeroUsize::new(1000).unwrap();
    const DEFAULT_BYTES: NonZeroUsize = NonZeroUsize::new(4 * 1024 * 1024).unwrap();

    /// 1000 records: a few librdkafka batches, acknowledged in milliseconds by a healthy
    /// broker, so a CRITICAL event queued behind them waits far less than a second.
    const fn default_records() -> NonZeroUsize {
        Self::DEFAULT_RECORDS
    }

    /// 4 MiB: large events are bounded by bytes before they are by count.
    const fn default_bytes() -> NonZeroUsize {
        Self::DEFAULT_BYTES
    }
}

impl Default for ProducerInFlight {
    fn default() -> Self {
        Self {
            records: Self::default_records(),
            bytes: Self::default_bytes(),
        }
    }
}

impl StreamingConfig {
    fn default_dlq_topic() -> String {
        "dlq.events".to_owned()
    }

    const fn default_retries() -> u32 {
        3
    }

    const fn default_retry_backoff_ms() -> u64 {
        1000
    }

    /// The bounds of `priority`'s lane, configured or default.
    pub fn lane(&self, priority: Priority) -> LaneConfig {
        self.lanes.get(priority).cloned().unwrap_or_default()
    }

    /// The delay before the first retry.
    pub fn retry_backoff(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_ms)
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            priority_weights: PriorityWeights::default(),
            dlq_topic: Self::default_dlq_topic(),
            retries: Self::default_retries(),
            retry_backoff_ms: Self::default_retry_backoff_ms(),
            lanes: Lanes::default(),
            scheduling: Scheduling::default(),
            producer_in_flight: ProducerInFlight::default(),
            spill: SpillConfig::default(),
        }
    }
}

/// `streaming.priorityWeights`: the stride scheduler's weight of each lane, each > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct PriorityWeights {
    /// Weight of the CRITICAL lane.
    #[serde(
        default = "PriorityWeights::default_critical",
        deserialize_with = "scalar::int"
    )]
    pub critical: NonZeroU32,
    /// Weight of the HIGH lane.
    #[serde(
        default = "PriorityWeights::default_high",
        deserialize_with = "scalar::int"
    )]
    pub high: NonZeroU32,
    /// Weight of the NORMAL lane.
    #[serde(
        default = "PriorityWeights::default_normal",
        deserialize_with = "scalar::int"
    )]
    pub normal: NonZeroU32,
    /// Weight of the BULK lane.
    #[serde(
        default = "PriorityWeights::default_bulk",
        deserialize_with = "scalar::int"
    )]
    pub bulk: NonZeroU32,
}

impl PriorityWeights {
    // Literals, checked at compile time.
    const DEFAULT_CRITICAL: NonZeroU32 = NonZeroU32::new(1000).unwrap();
    const DEFAULT_HIGH: NonZeroU32 = NonZeroU32::new(100).unwrap();
    const DEFAULT_NORMAL: NonZeroU32 = NonZeroU32::new(10).unwrap();

    const fn default_critical() -> NonZeroU32 {
        Self::DEFAULT_CRITICAL
    }

    const fn default_high() -> NonZeroU32 {
        Self::DEFAULT_HIGH
    }

    const fn default_normal() -> NonZeroU32 {
        Self::DEFAULT_NORMAL
    }

    const fn default_bulk() -> NonZeroU32 {
        NonZeroU32::MIN
    }

    /// The weight of `priority`'s lane.
    pub const fn weight(&self, priority: Priority) -> NonZeroU32 {
        match priority {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Bulk => self.bulk,
        }
    }
}

impl Default for PriorityWeights {
    fn default() -> Self {
        Self {
            critical: Self::default_critical(),
            high: Self::default_high(),
            normal: Self::default_normal(),
            bulk: Self::default_bulk(),
        }
    }
}

/// `streaming.lanes`: optional bounds per lane, keyed by priority name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Lanes {
    /// The CRITICAL lane.
    #[serde(default)]
    pub critical: Option<LaneConfig>,
    /// The HIGH lane.
    #[serde(default)]
    pub high: Option<LaneConfig>,
    /// The NORMAL lane.
    #[serde(default)]
    pub normal: Option<LaneConfig>,
    /// The BULK lane.
    #[serde(default)]
    pub bulk: Option<LaneConfig>,
}

impl Lanes {
    /// The configured bounds of `priority`'s lane, if any.
    pub const fn get(&self, priority: Priority) -> Option<&LaneConfig> {
        match priority {
            Priority::Critical => self.critical.as_ref(),
            Priority::High => self.high.as_ref(),
            Priority::Normal => self.normal.as_ref(),
            Priority::Bulk => self.bulk.as_ref(),
        }
    }
}

/// `streaming.lanes.<PRIORITY>`: one lane's bounds. What a full lane cannot take goes to
/// the spill ([`SpillConfig`]); when that is full or off, the source stops reading WAL
/// until the lane drains.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LaneConfig {
    /// Events the lane holds at most, > 0.
    #[serde(
        default = "LaneConfig::default_capacity",
        deserialize_with = "scalar::int"
    )]
    pub capacity: NonZeroUsize,
    /// Encoded bytes the lane holds at most, > 0.
    #[serde(
        default = "LaneConfig::default_max_bytes",
        deserialize_with = "scalar::int"
    )]
    pub max_bytes: NonZeroU64,
    /// Dispatch rate limit of the lane, > 0; absent means unlimited.
    #[serde(default, deserialize_with = "scalar::opt_int")]
    pub max_events_per_second: Option<NonZeroU32>,
}

impl LaneConfig {
    // Literals, checked at compile time.
    const DEFAULT_CAPACITY: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();
    const DEFAULT_MAX_BYTES: NonZeroU64 = NonZeroU64::new(64 * 1024 * 1024).unwrap();

    const fn default_capacity() -> NonZeroUsize {
        Self::DEFAULT_CAPACITY
    }

    const fn default_max_bytes() -> NonZeroU64 {
        Self::DEFAULT_MAX_BYTES
    }
}

impl Default for LaneConfig {
    fn default() -> Self {
        Self {
            capacity: Self::default_capacity(),
            max_bytes: Self::default_max_bytes(),
            max_events_per_second: None,
        }
    }
}

/// `telemetry`: the metrics and health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TelemetryConfig {
    /// Address for `/metrics`, `/healthz` and `/readyz`; absent means no endpoint.
    #[serde(default, deserialize_with = "scalar::opt_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// `/readyz` fails while the replication lag in seconds is above this.
    #[serde(default = "TelemetryConfig::default_max_lag_seconds")]
    pub max_lag_seconds: u64,
}

impl TelemetryConfig {
    /// Five minutes: a connector this far behind is caught up by no quick restart, and an
    /// orchestrator should say so; a burst of a few seconds is no reason to.
    pub const DEFAULT_MAX_LAG_SECONDS: u64 = 300;

    const fn default_max_lag_seconds() -> u64 {
        Self::DEFAULT_MAX_LAG_SECONDS
    }
}

/// `entities[i]`: one table declared as an entity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntityConfig {
    /// Entity type name, `[A-Za-z_][A-Za-z0-9_]*` (it names Avro records); unique.
    pub name: String,
    /// The captured table, SQL syntax: `schema.table`, `table` (schema public), quoted
    /// parts keep case, dots and spaces; unique across entities.
    pub table: TableName,
    /// Columns identifying a row (exact names); absent means the table's primary key.
    #[serde(default)]
    pub key_columns: Option<Vec<String>>,
    /// Column holding the tenant; exactly one of `tenantColumn` and `tenantId` is set.
    #[serde(default)]
    pub tenant_column: Option<String>,
    /// Fixed tenant of a single-tenant entity; exactly one of `tenantColumn` and
    /// `tenantId` is set.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Column holding the row's version, copied into the event.
    #[serde(default)]
    pub version_column: Option<String>,
    /// Column holding the user who made the change, copied into the event.
    #[serde(default)]
    pub user_column: Option<String>,
    /// How the entity's changes are streamed.
    #[serde(default)]
    pub streaming: EntityStreamingConfig,
}

/// Where an entity's tenant comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenant<'a> {
    /// Read from this column of each row.
    Column(&'a str),
    /// The same for every row.
    Fixed(&'a str),
}

impl EntityConfig {
    /// Where the tenant comes from; always `Some` in a loaded (validated) config.
    pub fn tenant(&self) -> Option<Tenant<'_>> {
        match (&self.tenant_column, &self.tenant_id) {
            (Some(column), None) => Some(Tenant::Column(column)),
            (None, Some(id)) => Some(Tenant::Fixed(id)),
            _ => None,
        }
    }
}

/// `entities[i].streaming`: topics, payload and priority of one entity's events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntityStreamingConfig {
    /// Whether the entity's changes are published at all.
    #[serde(
        default = "EntityStreamingConfig::default_enabled",
        deserialize_with = "scalar::flag"
    )]
    pub enabled: bool,
    /// Prefix of the entity's topic names, `[a-zA-Z0-9._-]+`; required when enabled.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// One topic for all of the entity's changes (`true`) or one per change type.
    #[serde(default, deserialize_with = "scalar::flag")]
    pub topic_per_entity: bool,
    /// What the payload carries.
    #[serde(default)]
    pub event_payload_mode: PayloadMode,
    /// Column whose value (a priority name) sets the event's priority.
    #[serde(default)]
    pub priority_field: Option<String>,
    /// Priority when no override or priority field applies; absent means NORMAL.
    #[serde(default)]
    pub default_priority: Option<Priority>,
    /// Priority per change type, over the priority field and the default.
    #[serde(default)]
    pub priority_overrides: PriorityOverrides,
}

impl EntityStreamingConfig {
    const fn default_enabled() -> bool {
        true
    }
}

impl Default for EntityStreamingConfig {
    fn default() -> Self {
        Self {
            enabled: Self::default_enabled(),
            topic_prefix: None,
            topic_per_entity: false,
            event_payload_mode: PayloadMode::default(),
            priority_field: None,
            default_priority: None,
            priority_overrides: PriorityOverrides::default(),
        }
    }
}

/// `entities[i].streaming.eventPayloadMode`: what an event's payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadMode {
    /// Key, tenant and version only.
    Minimal,
    /// The changed columns with their old and new values.
    #[default]
    Diff,
    /// The whole row before and after.
    Full,
}

/// `entities[i].streaming.priorityOverrides`: a fixed priority per change type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct PriorityOverrides {
    /// Priority of inserts.
    #[serde(default)]
    pub create: Option<Priority>,
    /// Priority of updates.
    #[serde(default)]
    pub update: Option<Priority>,
    /// Priority of deletes.
    #[serde(default)]
    pub delete: Option<Priority>,
}

#[cfg(test)]
mod tests;
