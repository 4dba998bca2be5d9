//! Loading tests: the sample file, interpolation, and the exact messages of bad configs.

use std::num::NonZeroU32;

use secrecy::ExposeSecret;

use super::*;

/// The sample shipped at the repository's root.
const SAMPLE: &str = include_str!("../../connector.yaml");

/// A small valid config that the tests below break one field at a time.
const BASE: &str = "
source:
  host: db
  port: 5432
  database: app
  user: cdc
  password: ${PGPASSWORD}
  slot: entity_cdc
  publication: entity_cdc
kafka:
  bootstrapServers: k:9092
entities:
  - name: Order
    table: public.orders
    tenantColumn: tenant_id
    streaming:
      topicPrefix: core.orders
";

fn test_env(name: &str) -> Option<String> {
    match name {
        "PGPASSWORD" => Some("s3cr3t-pw".to_owned()),
        "ENTITY_CDC_PGHOST" => Some("10.1.2.3".to_owned()),
        "SR_PASSWORD" => Some("sr-s3cr3t".to_owned()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str_with_env(text, "connector.yaml", &test_env)
}

fn ok(text: &str) -> Config {
    load(text).unwrap_or_else(|e| panic!("config should load:\n{e}\n---\n{text}"))
}

/// The error's full text.
fn err(text: &str) -> String {
    match load(text) {
        Ok(config) => panic!("config should be rejected: {config:?}\n---\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `BASE` with `from` replaced by `to`, which must occur.
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn sample_loads_with_the_story_entities() {
    let config = ok(SAMPLE);
    assert_eq!(config.source.host, "10.1.2.3");
    assert_eq!(config.source.port, 5432);
    assert_eq!(config.source.database, "app");
    assert_eq!(config.source.user, "entity_cdc");
    assert!(config.source.password.is_none());
    assert_eq!(config.source.sslmode, SslMode::Prefer);
    assert_eq!(config.source.slot, "entity_cdc");
    assert_eq!(config.source.publication, "entity_cdc");
    assert_eq!(config.source.status_interval(), Duration::from_secs(10));
    assert_eq!(config.kafka.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(
        config.kafka.librdkafka.get("linger.ms").map(String::as_str),
        Some("5")
    );
    assert_eq!(config.format, Format::Json);
    assert!(config.schema_registry.is_none());
    assert_eq!(
        config.streaming.priority_weights,
        PriorityWeights::default()
    );
    let bulk = config.streaming.lane(Priority::Bulk);
    assert_eq!(bulk.max_events_per_second, NonZeroU32::new(5000));
    assert_eq!(
        config.streaming.lane(Priority::Normal),
        LaneConfig::default()
    );
    assert_eq!(
        config
            .telemetry
            .and_then(|t| t.listen)
            .map(|a| a.to_string())
            .as_deref(),
        Some("127.0.0.1:9464")
    );

    let names: Vec<&str> = config.entities.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["Order", "Product"]);
    let order = &config.entities[0];
    assert_eq!(order.table, TableName::new("public", "orders"));
    assert_eq!(order.tenant(), Some(Tenant::Column("tenant_id")));
    assert_eq!(order.version_column.as_deref(), Some("version"));
    assert_eq!(order.user_column.as_deref(), Some("updated_by"));
    assert!(order.key_columns.is_none());
    assert!(order.streaming.enabled);
    assert_eq!(order.streaming.topic_prefix.as_deref(), Some("core.orders"));
    assert_eq!(order.streaming.event_payload_mode, PayloadMode::Diff);
    assert_eq!(order.streaming.priority_field.as_deref(), Some("priority"));
    assert!(!order.streaming.topic_per_entity);

    let product = &config.entities[1];
    assert_eq!(product.table, TableName::new("public", "products"));
    assert_eq!(product.tenant(), Some(Tenant::Column("tenant_id")));
    assert_eq!(product.version_column.as_deref(), Some("version"));
    assert!(product.user_column.is_none());
    assert!(product.streaming.enabled);
    assert_eq!(
        product.streaming.topic_prefix.as_deref(),
        Some("core.catalog")
    );
    assert_eq!(product.streaming.event_payload_mode, PayloadMode::Full);
    assert!(product.streaming.priority_field.is_none());
}

#[test]
fn defaults_apply_to_omitted_fields() {
    let config = ok(&base_with("  host: db\n  port: 5432\n", ""));
    assert_eq!(config.source.host, "localhost");
    assert_eq!(config.source.port, 5432);
    assert_eq!(config.source.application_name, "entity-cdc");
    assert_eq!(config.source.status_interval_ms.get(), 10_000);
    assert!(config.kafka.topics.create);
    assert_eq!(config.kafka.topics.partitions.get(), 1);
    assert_eq!(config.kafka.topics.replication_factor.get(), 1);
    assert_eq!(config.format, Format::Json);
    let weights = config.streaming.priority_weights;
    let weights: Vec<u32> = Priority::ALL
        .iter()
        .map(|p| weights.weight(*p).get())
        .collect();
    assert_eq!(weights, [1000, 100, 10, 1]);
    assert_eq!(config.streaming.dlq_topic, "dlq.events");
    assert_eq!(config.streaming.retries, 3);
    assert_eq!(config.streaming.retry_backoff(), Duration::from_secs(1));
    assert!(config.telemetry.is_none());
    let entity = &config.entities[0];
    assert_eq!(entity.streaming.event_payload_mode, PayloadMode::Diff);
    assert!(entity.streaming.default_priority.is_none());
    assert_eq!(
        entity.streaming.priority_overrides,
        PriorityOverrides::default()
    );
}

#[test]
fn full_config_loads() {
    let text = base_with(
        "  slot:",
        "  sslmode: verify-full\n  sslrootcert: /ca.pem\n  slot:",
    ) + "
format: avro
schemaRegistry:
  url: http://sr:8081
  username: sr
  password: ${SR_PASSWORD}
  subjectNameStrategy: record
";
    let text = text.replace(
        "      topicPrefix: core.orders\n",
        "      topicPrefix: core.orders
      topicPerEntity: 'true'
      defaultPriority: HIGH
      priorityOverrides: { DELETE: CRITICAL }
    keyColumns: [id, line]
  - name: Setting
    table: '\"Config\".\"Settings\"'
    tenantId: acme
    streaming: { enabled: false }
",
    );
    let config = ok(&text);
    assert_eq!(config.source.sslmode, SslMode::VerifyFull);
    assert_eq!(config.format, Format::Avro);
    let registry = config
        .schema_registry
        .as_ref()
        .expect("schemaRegistry is set");
    assert_eq!(registry.subject_name_strategy, SubjectNameStrategy::Record);
    assert_eq!(
        registry.password.as_ref().map(|p| p.expose_secret()),
        Some("sr-s3cr3t")
    );
    let order = &config.entities[0];
    assert!(order.streaming.topic_per_entity);
    assert_eq!(order.streaming.default_priority, Some(Priority::High));
    assert_eq!(
        order.streaming.priority_overrides.delete,
        Some(Priority::Critical)
    );
    assert_eq!(
        order.key_columns.as_deref(),
        Some(&["id".to_owned(), "line".to_owned()][..])
    );
    let setting = &config.entities[1];
    assert_eq!(setting.table, TableName::new("Config", "Settings"));
    assert_eq!(setting.tenant(), Some(Tenant::Fixed("acme")));
    assert!(!setting.streaming.enabled);

    let params = config.source.connect_params();
    assert_eq!((params.host.as_str(), params.port), ("db", 5432));
    assert_eq!(
        params.password.as_ref().map(|p| p.expose_secret()),
        Some("s3cr3t-pw")
    );
    assert_eq!(params.sslmode, SslMode::VerifyFull);
    assert_eq!(
        params.sslrootcert.as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
    assert_eq!(params.application_name, "entity-cdc");
}

#[test]
fn debug_never_prints_secrets() {
    let text = BASE.to_owned()
        + "format: avro\nschemaRegistry:\n  url: http://sr\n  password: ${SR_PASSWORD}\n";
    let config = ok(&text);
    let shown = format!("{config:?} {:?}", config.source.connect_params());
    assert!(!shown.contains("s3cr3t"), "a secret leaked: {shown}");
    assert!(shown.contains("REDACTED"), "{shown}");
}

#[test]
fn debug_never_prints_secret_librdkafka_properties() {
    let text = BASE.replace(
        "kafka:\n",
        "kafka:\n  librdkafka:\n    sasl.password: kafka-s3cr3t\n    ssl.key.pem: pem-s3cr3t\n    \
         sasl.oauthbearer.client.secret: oauth-s3cr3t\n    linger.ms: \"7\"\n",
    );
    let config = ok(&text);
    let shown = format!("{config:?} {:?}", crate::pipeline::sink_settings(&config));
    assert!(!shown.contains("s3cr3t"), "a secret leaked: {shown}");
    assert!(shown.contains("\"linger.ms\": \"7\""), "{shown}");
    assert_eq!(config.kafka.librdkafka["sasl.password"], "kafka-s3cr3t");
}

#[test]
fn interpolation_set_default_and_escape() {
    let config = ok(&base_with("host: db", "host: ${ENTITY_CDC_PGHOST:-x}"));
    assert_eq!(config.source.host, "10.1.2.3");
    let config = ok(&base_with(
        "host: db",
        "host: ${UNSET_HOST:-fallback.local}",
    ));
    assert_eq!(config.source.host, "fallback.local");
    let config = ok(&base_with("port: 5432", "port: ${UNSET_PORT:-6543}"));
    assert_eq!(config.source.port, 6543);
    let config = ok(&base_with("user: cdc", "user: $${NOT_A_VAR}"));
    assert_eq!(config.source.user, "${NOT_A_VAR}");
    let config = ok(&base_with(
        "password: ${PGPASSWORD}",
        "password: ${UNSET_PW:-}",
    ));
    assert!(config.source.password.is_none());
}

#[test]
fn interpolation_of_an_unset_variable_names_path_and_variable() {
    assert_eq!(
        err(&base_with("host: db", "host: ${NO_SUCH_HOST}")),
        "connector.yaml: source.host: environment variable NO_SUCH_HOST is not set (write \
         ${NO_SUCH_HOST:-default} to give a default)"
    );
    assert_eq!(
        err(&base_with(
            "tenantColumn: tenant_id",
            "tenantColumn: ${T1}\n    keyColumns:\n      - ${K1}"
        )),
        "connector.yaml: entities[0].tenantColumn: environment variable T1 is not set (write \
         ${T1:-default} to give a default)\n\
         connector.yaml: entities[0].keyColumns[0]: environment variable K1 is not set (write \
         ${K1:-default} to give a default)"
    );
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    assert_eq!(
        err(&base_with("host: db", "hots: db")),
        "connector.yaml: source.hots: unknown field, expected one of host, port, database, \
         user, password, sslmode, sslrootcert, slot, publication, statusIntervalMs, \
         applicationName"
    );
    assert_eq!(
        err(&base_with("      topicPrefix:", "      topicprefix:")),
        "connector.yaml: entities[0].streaming.topicprefix: unknown field, expected one of \
         enabled, topicPrefix, topicPerEntity, eventPayloadMode, priorityField, \
         defaultPriority, priorityOverrides"
    );
    assert_eq!(
        err(&(BASE.to_owned() + "extra: 1\n")),
        "connector.yaml: extra: unknown field, expected one of source, kafka, format, \
         schemaRegistry, streaming, telemetry, alerts, entities"
    );
}

#[test]
fn port_must_be_an_integer_in_range() {
    for (port, shown) in [
        ("abc", "\"abc\""),
        ("0", "0"),
        ("70000", "70000"),
        ("'0'", "\"0\""),
    ] {
        assert_eq!(
            err(&base_with("port: 5432", &format!("port: {port}"))),
            format!("connector.yaml: source.port: expected an integer 1..65535, got {shown}")
        );
    }
    assert_eq!(
        err(&base_with("port: 5432", "port: 54.5")),
        "connector.yaml: source.port: expected an integer 1..65535, got 54.5"
    );
    assert_eq!(
        ok(&base_with("port: 5432", "port: '6000'")).source.port,
        6000
    );
}

#[test]
fn type_errors_name_path_and_expectation() {
    assert_eq!(
        err(&base_with("  database: app\n", "")),
        "connector.yaml: source.database: missing required field"
    );
    assert_eq!(
        err(&base_with("slot:", "sslmode: strict\n  slot:")),
        "connector.yaml: source.sslmode: expected one of disable, prefer, require, verify-ca, \
         verify-full, got \"strict\""
    );
    assert_eq!(
        err(&(BASE.to_owned() + "format: xml\n")),
        "connector.yaml: format: expected one of json, avro, got \"xml\""
    );
    assert_eq!(
        err(&base_with("database: app", "database: [a, b]")),
        "connector.yaml: source.database: expected a string, got a list"
    );
    assert_eq!(
        err(&(BASE.to_owned() + "telemetry: { listen: 'localhost' }\n")),
        "connector.yaml: telemetry.listen: expected a socket address like 127.0.0.1:9464, got \
         \"localhost\""
    );
    assert_eq!(
        err(&base_with("table: public.orders", "table: a.b.c")),
        "connector.yaml: entities[0].table: expected schema.table or table, got 3 parts in \
         \"a.b.c\""
    );
    assert!(err("source: [").starts_with("connector.yaml: "));
}

#[test]
fn tenant_needs_exactly_one_of_column_and_id() {
    assert_eq!(
        err(&base_with("    tenantColumn: tenant_id\n", "")),
        "connector.yaml: entities[0]: expected exactly one of tenantColumn or tenantId, got \
         neither"
    );
    assert_eq!(
        err(&base_with(
            "tenantColumn: tenant_id",
            "tenantColumn: tenant_id\n    tenantId: acme"
        )),
        "connector.yaml: entities[0]: expected exactly one of tenantColumn or tenantId, got both"
    );
}

#[test]
fn weights_must_be_positive() {
    for weight in ["0", "-1"] {
        assert_eq!(
            err(&(BASE.to_owned()
                + &format!("streaming:\n  priorityWeights: {{ BULK: {weight} }}\n"))),
            format!(
                "connector.yaml: streaming.priorityWeights.BULK: expected a positive integer, \
                 got {weight}"
            )
        );
    }
}

#[test]
fn unknown_priority_names_are_rejected() {
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  priorityWeights: { URGENT: 5 }\n")),
        "connector.yaml: streaming.priorityWeights.URGENT: unknown priority, expected one of \
         CRITICAL, HIGH, NORMAL, BULK"
    );
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  lanes: { bulk: { capacity: 5 } }\n")),
        "connector.yaml: streaming.lanes.bulk: unknown priority, expected one of CRITICAL, \
         HIGH, NORMAL, BULK"
    );
    assert_eq!(
        err(&base_with(
            "      topicPrefix: core.orders",
            "      topicPrefix: core.orders\n      defaultPriority: LOW"
        )),
        "connector.yaml: entities[0].streaming.defaultPriority: expected one of CRITICAL, \
         HIGH, NORMAL, BULK, got \"LOW\""
    );
    assert_eq!(
        err(&base_with(
            "      topicPrefix: core.orders",
            "      topicPrefix: core.orders\n      priorityOverrides: { INSERT: HIGH }"
        )),
        "connector.yaml: entities[0].streaming.priorityOverrides.INSERT: unknown field, \
         expected one of CREATE, UPDATE, DELETE"
    );
}

#[test]
fn lane_bounds_must_be_positive() {
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  lanes: { BULK: { capacity: 0 } }\n")),
        "connector.yaml: streaming.lanes.BULK.capacity: expected a positive integer, got 0"
    );
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  lanes: { HIGH: { maxEventsPerSecond: 0 } }\n")),
        "connector.yaml: streaming.lanes.HIGH.maxEventsPerSecond: expected a positive \
         integer, got 0"
    );
    let config = ok(&(BASE.to_owned() + "streaming:\n  lanes: { HIGH: { capacity: 7 } }\n"));
    let high = config.streaming.lane(Priority::High);
    assert_eq!(
        (high.capacity.get(), high.max_bytes),
        (7, LaneConfig::default().max_bytes)
    );
}

#[test]
fn avro_needs_a_schema_registry() {
    assert_eq!(
        err(&(BASE.to_owned() + "format: avro\n")),
        "connector.yaml: schemaRegistry: required when format is avro"
    );
}

#[test]
fn librdkafka_may_not_shadow_typed_settings() {
    assert_eq!(
        err(&base_with(
            "bootstrapServers: k:9092",
            "bootstrapServers: k:9092\n  librdkafka: { bootstrap.servers: x:1, acks: '1', linger.ms: 5 }"
        )),
        "connector.yaml: kafka.librdkafka.acks: is set by entity-cdc (enable.idempotence=true, \
         acks=all, for per-key order without loss) and may not be overridden\n\
         connector.yaml: kafka.librdkafka.bootstrap.servers: shadows kafka.bootstrapServers; \
         set it there instead"
    );
}

#[test]
fn all_semantic_problems_are_reported_at_once() {
    let text = base_with("slot: entity_cdc", "slot: Entity-CDC")
        + "  - name: Order\n    table: ORDERS\n    tenantId: ''\n    streaming: { topicPrefix: 'a b' }\n";
    assert_eq!(
        err(&text),
        "connector.yaml: source.slot: expected 1 to 63 characters a-z, 0-9 or _, got \
         \"Entity-CDC\"\n\
         connector.yaml: entities[1].name: duplicate entity name \"Order\", also at \
         entities[0].name\n\
         connector.yaml: entities[1].table: duplicate table public.orders, also at \
         entities[0].table\n\
         connector.yaml: entities[1].tenantId: expected a non-empty string\n\
         connector.yaml: entities[1].streaming.topicPrefix: expected 1 to 229 characters a-z, \
         A-Z, 0-9, ., _ or -, got \"a b\""
    );
    let text = base_with("      topicPrefix: core.orders\n", "      enabled: true\n");
    assert_eq!(
        err(&text),
        "connector.yaml: entities[0].streaming.topicPrefix: required when streaming is enabled"
    );
}

#[test]
fn load_reads_the_file_and_reports_a_missing_one() {
    let missing = std::path::Path::new("/nonexistent/connector.yaml");
    let e = Config::load(missing).expect_err("no such file");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/connector.yaml: cannot read: "),
        "{e}"
    );
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connector.yaml");
    // The sample only uses variables with defaults, so it loads in any environment.
    let config = Config::load(&sample).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.entities.len(), 2);
}

#[test]
fn scheduling_and_producer_in_flight_are_read_and_checked() {
    let config = ok(&(BASE.to_owned()
        + "streaming:\n  scheduling: fifo\n  producerInFlight: { records: 5, bytes: 1000 }\n"));
    assert_eq!(config.streaming.scheduling, super::Scheduling::Fifo);
    assert_eq!(
        (
            config.streaming.producer_in_flight.records.get(),
            config.streaming.producer_in_flight.bytes.get()
        ),
        (5, 1000)
    );
    let defaults = ok(BASE);
    assert_eq!(defaults.streaming.scheduling, super::Scheduling::Weighted);
    assert_eq!(
        (
            defaults.streaming.producer_in_flight.records.get(),
            defaults.streaming.producer_in_flight.bytes.get()
        ),
        (1000, 4 * 1024 * 1024)
    );
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  producerInFlight: { records: 0 }\n")),
        "connector.yaml: streaming.producerInFlight.records: expected a positive integer, got 0"
    );
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  scheduling: priority\n")),
        "connector.yaml: streaming.scheduling: expected one of weighted, fifo, got \"priority\""
    );
}

#[test]
fn spill_is_on_by_default_and_checked() {
    let defaults = ok(BASE);
    assert_eq!(
        defaults.streaming.spill,
        super::SpillConfig {
            directory: None,
            max_bytes: 1024 * 1024 * 1024
        }
    );
    let config = ok(&(BASE.to_owned()
        + "streaming:\n  spill: { directory: /var/spool/entity-cdc, maxBytes: 0 }\n"));
    assert_eq!(
        config.streaming.spill,
        super::SpillConfig {
            directory: Some("/var/spool/entity-cdc".into()),
            max_bytes: 0
        }
    );
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  spill: { maxBytes: -1 }\n")),
        "connector.yaml: streaming.spill.maxBytes: expected a non-negative integer, got -1"
    );
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  spill: { dir: /tmp }\n")),
        "connector.yaml: streaming.spill.dir: unknown field, expected one of directory, maxBytes"
    );
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  spill: { directory: \"\" }\n")),
        "connector.yaml: streaming.spill.directory: expected an absolute path, got \"\""
    );
    assert_eq!(
        err(&(BASE.to_owned() + "streaming:\n  spill: { directory: spill }\n")),
        "connector.yaml: streaming.spill.directory: expected an absolute path, got \"spill\""
    );
}
