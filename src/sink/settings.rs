//! The sink's own settings; the connector's configuration maps onto them.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use super::SinkError;

/// librdkafka keys the sink sets itself: they carry the no-loss and ordering guarantees
/// (or the typed settings), so raw options may not change them.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "bootstrap_servers"),
    (
        "enable.idempotence",
        "the sink's ordering guarantee (always true)",
    ),
    ("acks", "the sink's durability guarantee (always all)"),
    (
        "request.required.acks",
        "the sink's durability guarantee (always all)",
    ),
];

/// How to reach Kafka and what to create there. Debug output redacts secret librdkafka
/// values.
#[derive(Clone, PartialEq, Eq)]
pub struct SinkSettings {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Raw librdkafka options (security, batching, timeouts), passed through as given.
    pub librdkafka: BTreeMap<String, String>,
    /// Partitions of topics the sink creates; -1 takes the broker's default.
    pub topic_partitions: i32,
    /// Replication factor of topics the sink creates; -1 takes the broker's default.
    pub topic_replication_factor: i32,
    /// Whether missing topics are created; when false, a missing topic is an error.
    pub create_topics: bool,
    /// Records handed to librdkafka and not yet reported on, at most.
    pub max_in_flight_records: usize,
    /// Bytes (as [`super::Record::size`] counts them) handed to librdkafka and not yet
    /// reported on, at most.
    pub max_in_flight_bytes: usize,
}

impl std::fmt::Debug for SinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field(
                "librdkafka",
                &crate::config::redacted_librdkafka(&self.librdkafka),
            )
            .field("topic_partitions", &self.topic_partitions)
            .field("topic_replication_factor", &self.topic_replication_factor)
            .field("create_topics", &self.create_topics)
            .field("max_in_flight_records", &self.max_in_flight_records)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .finish()
    }
}

impl SinkSettings {
    /// A record budget of 10,000: enough to keep a broker busy (librdkafka batches up to
    /// 10,000 records per request by default), small enough that a CRITICAL record queued
    /// behind a full budget waits for well under a second at the tens of thousands of
    /// records per second that one partition leader acknowledges with acks=all.
    pub const DEFAULT_MAX_IN_FLIGHT_RECORDS: usize = 10_000;
    /// A byte budget of 16 MiB: a few full batches (librdkafka's batch.size is 1 MB) per
    /// partition, so large events are bounded by bytes before they are by count.
    pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

    /// Settings with the defaults: one partition and replication factor 1 (a single-broker
    /// development setup; production configures both), topic creation on.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        SinkSettings {
            bootstrap_servers: bootstrap_servers.into(),
            librdkafka: BTreeMap::new(),
            topic_partitions: 1,
            topic_replication_factor: 1,
            create_topics: true,
            max_in_flight_records: Self::DEFAULT_MAX_IN_FLIGHT_RECORDS,
            max_in_flight_bytes: Self::DEFAULT_MAX_IN_FLIGHT_BYTES,
        }
    }

    /// Checks what librdkafka itself would not: positive budgets, sane topic settings, and
    /// raw options that do not shadow what the sink sets.
    pub fn validate(&self) -> Result<(), SinkError> {
        let invalid = |setting: &str, reason: &str| {
            Err(SinkError::InvalidSetting {
                setting: setting.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if self.bootstrap_servers.trim().is_empty() {
            return invalid("bootstrap_servers", "must not be empty");
        }
        if self.topic_partitions == 0 || self.topic_partitions < -1 {
            return invalid(
                "topic_partitions",
                "must be positive, or -1 for the broker default",
            );
        }
        if self.topic_replication_factor == 0 || self.topic_replication_factor < -1 {
            return invalid(
                "topic_replication_factor",
                "must be positive, or -1 for the broker default",
            );
        }
        if self.max_in_flight_records == 0 {
            return invalid("max_in_flight_records", "must be at least 1");
        }
        if self.max_in_flight_bytes == 0 {
            return invalid("max_in_flight_bytes", "must be at least 1");
        }
        for (key, owner) in RESERVED {
            if self.librdkafka.contains_key(*key) {
                return invalid(
                    &format!("librdkafka.{key}"),
                    &format!("is set by the sink: {owner}"),
                );
            }
        }
        Ok(())
    }

    /// The producer's librdkafka configuration: the raw options, then what the sink
    /// guarantees on top of them.
    pub(super) fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config.set("enable.idempotence", "true").set("acks", "all");
        config
    }

    /// Configuration shared by the producer and the admin client (security, addresses).
    pub(super) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.librdkafka {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_options_may_not_weaken_the_guarantees() {
        for key in ["enable.idempotence", "acks", "bootstrap.servers"] {
            let mut settings = SinkSettings::new("127.0.0.1:9092");
            settings.librdkafka.insert(key.to_owned(), "0".to_owned());
            let error = settings.validate().expect_err("a reserved key is rejected");
            assert!(error.to_string().contains(key), "{error} names {key}");
        }
    }

    #[test]
    fn budgets_and_topic_settings_are_checked() {
        let base = SinkSettings::new("127.0.0.1:9092");
        base.validate().expect("defaults are valid");
        let cases: [fn(&mut SinkSettings); 5] = [
            |s| s.max_in_flight_records = 0,
            |s| s.max_in_flight_bytes = 0,
            |s| s.topic_partitions = 0,
            |s| s.topic_replication_factor = -2,
            |s| s.bootstrap_servers = " ".to_owned(),
        ];
        for change in cases {
            let mut settings = base.clone();
            change(&mut settings);
            assert!(
                settings.validate().is_err(),
                "{settings:?} must be rejected"
            );
        }
    }

    #[test]
    fn producer_config_enforces_idempotence_and_acks() {
        let mut settings = SinkSettings::new("a:1");
        settings
            .librdkafka
            .insert("linger.ms".to_owned(), "20".to_owned());
        let config = settings.producer_config();
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("linger.ms"), Some("20"));
        assert_eq!(config.get("bootstrap.servers"), Some("a:1"));
    }
}
