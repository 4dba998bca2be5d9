//! Semantic checks that types cannot express: names and their syntax, uniqueness, the
//! tenant rule, cross-field requirements. Every problem is reported, not just the first.

use std::collections::HashMap;

use super::error::{index_path, Problem};
use super::{Config, EntityConfig, Format};

/// Raw librdkafka properties that entity-cdc sets itself, with the typed field that sets
/// them, or `None` when the value is fixed.
const SHADOWED: &[(&str, Option<&str>)] = &[
    ("bootstrap.servers", Some("kafka.bootstrapServers")),
    ("metadata.broker.list", Some("kafka.bootstrapServers")),
    ("enable.idempotence", None),
    ("acks", None),
    ("request.required.acks", None),
];

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// Longest name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_PG_NAME_LEN: usize = 63;

impl Config {
    /// Every semantic problem of this configuration; empty when it is valid.
    pub(super) fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, path: &str, message: String| {
            if !ok {
                problems.push(Problem::new(path, message));
            }
        };

        let source = &self.source;
        check(
            !source.host.trim().is_empty(),
            "source.host",
            "expected a host name, got an empty string".into(),
        );
        check(
            !source.database.is_empty(),
            "source.database",
            "expected a database name, got an empty string".into(),
        );
        check(
            !source.user.is_empty(),
            "source.user",
            "expected a role name, got an empty string".into(),
        );
        for (path, value) in [
            ("source.slot", &source.slot),
            ("source.publication", &source.publication),
        ] {
            check(
                is_pg_simple_name(value),
                path,
                format!("expected 1 to 63 characters a-z, 0-9 or _, got {value:?}"),
            );
        }

        let kafka = &self.kafka;
        check(
            !kafka.bootstrap_servers.trim().is_empty(),
            "kafka.bootstrapServers",
            "expected host:port[,host:port], got an empty string".into(),
        );
        for key in kafka.librdkafka.keys() {
            let Some((_, typed)) = SHADOWED.iter().find(|(raw, _)| raw == key) else {
                continue;
            };
            let path = format!("kafka.librdkafka.{key}");
            let message = match typed {
                Some(typed) => format!("shadows {typed}; set it there instead"),
                None => "is set by entity-cdc (enable.idempotence=true, acks=all, for per-key \
                         order without loss) and may not be overridden"
                    .to_owned(),
            };
            check(false, &path, message);
        }

        match (&self.format, &self.schema_registry) {
            (Format::Avro, None) => check(
                false,
                "schemaRegistry",
                "required when format is avro".into(),
            ),
            (_, Some(registry)) => check(
                registry.url.starts_with("http://") || registry.url.starts_with("https://"),
                "schemaRegistry.url",
                format!(
                    "expected an http:// or https:// URL, got {:?}",
                    registry.url
                ),
            ),
            (Format::Json, None) => {}
        }

        let dlq = &self.streaming.dlq_topic;
        check(
            is_topic_name(dlq),
            "streaming.dlqTopic",
            format!("expected a topic name of 1 to {MAX_TOPIC_LEN} characters a-z, A-Z, 0-9, ., _ or -, got {dlq:?}"),
        );

        if let Some(directory) = &self.streaming.spill.directory {
            check(
                directory.is_absolute(),
                "streaming.spill.directory",
                format!(
                    "expected an absolute path, got {:?}",
                    directory.display().to_string()
                ),
            );
        }

        if let Some(alerts) = &self.alerts {
            alerts.validate(&mut check);
        }

        check(
            !self.entities.is_empty(),
            "entities",
            "expected at least one entity".into(),
        );
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut tables = HashMap::new();
        for (i, entity) in self.entities.iter().enumerate() {
            let at = index_path("entities", i);
            if let Some(first) = names.insert(&entity.name, i) {
                names.insert(&entity.name, first);
                check(
                    false,
                    &format!("{at}.name"),
                    format!(
                        "duplicate entity name {:?}, also at entities[{first}].name",
                        entity.name
                    ),
                );
            }
            if let Some(first) = tables.insert(&entity.table, i) {
                tables.insert(&entity.table, first);
                check(
                    false,
                    &format!("{at}.table"),
                    format!(
                        "duplicate table {}, also at entities[{first}].table",
                        entity.table
                    ),
                );
            }
            validate_entity(entity, &at, &mut check);
        }
        problems
    }
}

/// The checks of one entity at `at` (`entities[i]`).
fn validate_entity(entity: &EntityConfig, at: &str, check: &mut impl FnMut(bool, &str, String)) {
    check(
        is_entity_name(&entity.name),
        &format!("{at}.name"),
        format!(
            "expected letters, digits and _ not starting with a digit, got {:?}",
            entity.name
        ),
    );
    match (&entity.tenant_column, &entity.tenant_id) {
        (Some(_), Some(_)) => check(
            false,
            at,
            "expected exactly one of tenantColumn or tenantId, got both".into(),
        ),
        (None, None) => check(
            false,
            at,
            "expected exactly one of tenantColumn or tenantId, got neither".into(),
        ),
        (Some(_), None) | (None, Some(_)) => {}
    }
    for (field, value) in [
        ("tenantColumn", &entity.tenant_column),
        ("tenantId", &entity.tenant_id),
        ("versionColumn", &entity.version_column),
        ("userColumn", &entity.user_column),
        ("streaming.priorityField", &entity.streaming.priority_field),
    ] {
        if let Some(value) = value {
            check(
                !value.is_empty(),
                &format!("{at}.{field}"),
                "expected a non-empty string".into(),
            );
        }
    }
    if let Some(keys) = &entity.key_columns {
        let path = format!("{at}.keyColumns");
        check(
            !keys.is_empty(),
            &path,
            "expected at least one column (omit it to use the primary key)".into(),
        );
        for (j, key) in keys.iter().enumerate() {
            check(
                !key.is_empty(),
                &index_path(&path, j),
                "expected a column name, got an empty string".into(),
            );
            if keys[..j].contains(key) {
                check(
                    false,
                    &index_path(&path, j),
                    format!("duplicate key column {key:?}"),
                );
            }
        }
    }
    let streaming = &entity.streaming;
    let path = format!("{at}.streaming.topicPrefix");
    match &streaming.topic_prefix {
        None if streaming.enabled => {
            check(false, &path, "required when streaming is enabled".into())
        }
        None => {}
        Some(prefix) => check(
            is_topic_name(prefix) && prefix.len() <= MAX_TOPIC_LEN - 20,
            &path,
            format!(
                "expected 1 to {} characters a-z, A-Z, 0-9, ., _ or -, got {prefix:?}",
                MAX_TOPIC_LEN - 20
            ),
        ),
    }
}

/// A slot or publication name that needs no quoting anywhere: `[a-z0-9_]{1,63}`.
fn is_pg_simple_name(name: &str) -> bool {
    (1..=MAX_PG_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Kafka's legal topic names: `[a-zA-Z0-9._-]{1,249}`, not `.` or `..`.
fn is_topic_name(name: &str) -> bool {
    (1..=MAX_TOPIC_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// An entity name usable as an Avro record name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_entity_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
