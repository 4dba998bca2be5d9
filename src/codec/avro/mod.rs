//! Avro events in the Confluent wire format, schemas in a Schema Registry.
//!
//! Each entity has a schema generated from its relation ([`schema`]); it is registered
//! before the first event that needs it (per subject) and whenever a Relation message
//! describes the table anew (ALTER TABLE), so an event never goes out under a schema that
//! does not describe it. A value is `0x00`, the schema id as 4 big-endian bytes, and the
//! Avro binary body; the key is an Avro `string` framed the same way under `<topic>-key`.

mod binary;
pub mod encode;
pub mod export;
pub mod names;
pub mod registry;
pub mod schema;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{SchemaRegistryConfig, SubjectNameStrategy};
use crate::event::EntityEvent;
use crate::model::Binding;
use crate::sink::Record;
use crate::source::change::{Change, Relation};
use crate::telemetry::metrics::{
    LABEL_ENTITY, LABEL_OUTCOME, SCHEMA_REGISTRATIONS, TEXT_FALLBACK_COLUMNS,
};

use registry::{Cached, Registry, RegistryError};
use schema::{entity_schema, EntitySchema, SchemaError};

/// The schema of every record key: a plain Avro string.
pub const KEY_SCHEMA: &str = r#""string""#;

/// First wait after the registry could not be reached; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts: short enough to resume quickly after an outage.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// At most one WARN per this long while the registry stays down.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Why an event could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// No schema for the entity (a name collision).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A value that does not fit its schema.
    #[error(transparent)]
    Value(#[from] encode::ValueError),
    /// The registry refused the new schema as incompatible: the pipeline stops without
    /// confirming the event.
    #[error(
        "entity {entity}: the schema registry refused the new schema for subject {subject} \
         under compatibility {rule} after {change}: {message}; the event was not produced \
         and will be read again (set the subject's compatibility, e.g. NONE, or revert the \
         change, then restart)"
    )]
    Incompatible {
        /// The entity.
        entity: String,
        /// The subject.
        subject: String,
        /// What changed in the table (columns added, dropped, retyped).
        change: String,
        /// The subject's compatibility level, as the registry reports it.
        rule: String,
        /// The registry's message.
        message: String,
    },
    /// Any other refusal by the registry.
    #[error("entity {entity}: {source}")]
    Registry {
        /// The entity.
        entity: String,
        /// The registry's answer.
        #[source]
        source: RegistryError,
    },
    /// The stop was requested while waiting for the registry.
    #[error("stopped while waiting for the schema registry")]
    Cancelled,
}

/// The schema in use for an entity and the relation it was made from.
struct EntityState {
    relation: Arc<Relation>,
    schema: Arc<EntitySchema>,
    /// What changed from the previous relation, for messages; "the first schema" at start.
    change: String,
    /// Value and key schema ids per topic, under this schema.
    ids: HashMap<String, (u32, u32)>,
}

/// Encodes events as Avro, registering their schemas.
pub struct AvroEncoder {
    registry: Registry,
    url: String,
    strategy: SubjectNameStrategy,
    entities: HashMap<String, EntityState>,
    /// (entity, column) pairs already reported as falling back to text.
    fallback_reported: HashSet<(String, String)>,
}

impl AvroEncoder {
    /// An encoder for the configured registry.
    pub fn new(config: &SchemaRegistryConfig) -> Result<AvroEncoder, RegistryError> {
        Ok(AvroEncoder {
            registry: Registry::new(config)?,
            url: config.url.trim_end_matches('/').to_owned(),
            strategy: config.subject_name_strategy,
            entities: HashMap::new(),
            fallback_reported: HashSet::new(),
        })
    }

    /// The record of `event`; `change` is the row change it was built from (its typed
    /// values). Waits, retrying, while the registry is unreachable; returns
    /// [`AvroError::Cancelled`] when `stop` fires meanwhile.
    pub async fn encode(
        &mut self,
        binding: &Binding,
        change: &Change,
        event: &EntityEvent,
        stop: &CancellationToken,
    ) -> Result<Record, AvroError> {
        let schema = self.schema_for(binding)?;
        let (value_id, key_id) = self.ids(binding, event, &schema, stop).await?;
        Ok(record(&schema, value_id, key_id, event, change)?)
    }

    /// The value and key schema ids of `event`'s topic: looked up by topic in the entity's
    /// state (no allocation, no hashing of the schema text), registered on the first event
    /// of each topic under each schema.
    async fn ids(
        &mut self,
        binding: &Binding,
        event: &EntityEvent,
        schema: &EntitySchema,
        stop: &CancellationToken,
    ) -> Result<(u32, u32), AvroError> {
        let name = &binding.entity.name;
        if let Some(ids) = self
            .entities
            .get(name)
            .and_then(|state| state.ids.get(&event.topic))
        {
            return Ok(*ids);
        }
        let value_subject = value_subject(self.strategy, &event.topic, schema);
        let value_id = self
            .register(&event.entity_type, &value_subject, &schema.text, stop)
            .await?;
        let key_subject = format!("{}-key", event.topic);
        let key_id = self
            .register(&event.entity_type, &key_subject, KEY_SCHEMA, stop)
            .await?;
        if let Some(state) = self.entities.get_mut(name) {
            state.ids.insert(event.topic.clone(), (value_id, key_id));
        }
        Ok((value_id, key_id))
    }

    /// The entity's schema for the binding's relation, generated anew when the relation
    /// was described anew with other columns.
    fn schema_for(&mut self, binding: &Binding) -> Result<Arc<EntitySchema>, SchemaError> {
        let name = &binding.entity.name;
        if let Some(state) = self.entities.get(name) {
            if Arc::ptr_eq(&state.relation, &binding.relation)
                || state.relation.columns == binding.relation.columns
            {
                return Ok(state.schema.clone());
            }
        }
        let schema = Arc::new(entity_schema(binding)?);
        let change = match self.entities.get(name) {
            Some(previous) => describe_change(&previous.relation, &binding.relation),
            None => "the first schema of the run".to_owned(),
        };
        for field in schema.fields.iter().filter(|f| f.ty.is_fallback()) {
            if self
                .fallback_reported
                .insert((name.clone(), field.column.clone()))
            {
                warn!(entity = %name, column = %field.column, pg_type = %field.pg_type,
                    "column type has no avro mapping; its values travel as PostgreSQL's text (reported once per column)");
                metrics::counter!(TEXT_FALLBACK_COLUMNS, LABEL_ENTITY => name.clone()).increment(1);
            }
        }
        self.entities.insert(
            name.clone(),
            EntityState {
                relation: binding.relation.clone(),
                schema: schema.clone(),
                change,
                ids: HashMap::new(),
            },
        );
        Ok(schema)
    }

    /// The id of `schema` under `subject`, retrying with backoff while the registry is down.
    async fn register(
        &mut self,
        entity: &str,
        subject: &str,
        schema: &str,
        stop: &CancellationToken,
    ) -> Result<u32, AvroError> {
        let mut backoff = FIRST_BACKOFF;
        let mut last_warn: Option<Instant> = None;
        loop {
            let outcome = self.registry.register(subject, schema).await;
            let label = match &outcome {
                Ok(Cached::Hit(_)) => None,
                Ok(Cached::Registered(_)) => Some("registered"),
                Err(RegistryError::Incompatible { .. }) => Some("incompatible"),
                Err(RegistryError::Unavailable { .. }) => Some("unavailable"),
                Err(_) => Some("refused"),
            };
            if let Some(label) = label {
                metrics::counter!(SCHEMA_REGISTRATIONS,
                    LABEL_ENTITY => entity.to_owned(), LABEL_OUTCOME => label)
                .increment(1);
            }
            match outcome {
                Ok(cached) => {
                    if let Cached::Registered(id) = cached {
                        info!(entity, subject, id, "schema registered");
                    }
                    return Ok(cached.id());
                }
                Err(RegistryError::Unavailable { reason, .. }) => {
                    if last_warn.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        warn!(entity, subject, error = %reason, retry_in_ms = backoff.as_millis() as u64,
                            "schema registry unavailable; retrying (nothing past this event is confirmed)");
                        last_warn = Some(Instant::now());
                    }
                    tokio::select! {
                        () = stop.cancelled() => return Err(AvroError::Cancelled),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(RegistryError::Incompatible { subject, message }) => {
                    let change = self
                        .entities
                        .get(entity)
                        .map_or_else(String::new, |s| s.change.clone());
                    let rule = compatibility_rule(&self.url, &subject).await;
                    return Err(AvroError::Incompatible {
                        entity: entity.to_owned(),
                        subject,
                        change,
                        rule,
                        message,
                    });
                }
                Err(source) => {
                    return Err(AvroError::Registry {
                        entity: entity.to_owned(),
                        source,
                    })
                }
            }
        }
    }
}

/// The subject of an entity's value schema on `topic`: `<topic>-value` (TopicNameStrategy)
/// or the record's full name (RecordNameStrategy).
pub fn value_subject(strategy: SubjectNameStrategy, topic: &str, schema: &EntitySchema) -> String {
    match strategy {
        SubjectNameStrategy::Topic => format!("{topic}-value"),
        SubjectNameStrategy::Record => schema.full_name.clone(),
    }
}

/// Room for a typical event's Avro body past the frame, so that the payload buffer seldom
/// grows while it is written (the story's order update in `full` mode is about 200 bytes).
const PAYLOAD_CAPACITY: usize = 256;

/// The Kafka record of `event` with its schema ids known: the value and the key (an Avro
/// `string`) in the Confluent wire format, and the filtering headers.
pub fn record(
    schema: &EntitySchema,
    value_id: u32,
    key_id: u32,
    event: &EntityEvent,
    change: &Change,
) -> Result<Record, encode::ValueError> {
    let mut payload = wire_header(value_id, PAYLOAD_CAPACITY);
    encode::write_event(schema, event, change, &mut payload)?;
    // The key schema is `"string"`: its body is the string's length and bytes.
    let mut key = wire_header(key_id, event.key.len() + 10);
    binary::string(&mut key, &event.key);
    Ok(Record {
        topic: event.topic.clone(),
        key: Some(Bytes::from(key)),
        headers: event
            .headers()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), Bytes::from(value.into_bytes())))
            .collect(),
        payload: Bytes::from(payload),
        position: event.position,
    })
}

/// The Confluent wire format: magic byte 0, the schema id in 4 big-endian bytes, the body.
pub fn wire_format(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = wire_header(id, body.len());
    out.extend_from_slice(body);
    out
}

/// The wire format's 5-byte frame, with room for a body of `capacity` bytes after it: the
/// body is written straight behind the frame, never copied.
fn wire_header(id: u32, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + capacity);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// What an ALTER TABLE changed, from the two Relation messages: columns added, dropped
/// and retyped (a rename reads as one dropped and one added).
pub fn describe_change(before: &Relation, after: &Relation) -> String {
    let mut parts = Vec::new();
    for column in &after.columns {
        match before.columns.iter().find(|c| c.name == column.name) {
            None => parts.push(format!(
                "column {} added ({})",
                column.name,
                column.pg_type.name()
            )),
            Some(old) if old.pg_type != column.pg_type => parts.push(format!(
                "column {} retyped from {} to {}",
                column.name,
                old.pg_type.name(),
                column.pg_type.name()
            )),
            Some(_) => {}
        }
    }
    for column in &before.columns {
        if !after.columns.iter().any(|c| c.name == column.name) {
            parts.push(format!("column {} dropped", column.name));
        }
    }
    if parts.is_empty() {
        format!("a new description of table {}", after.qualified_name())
    } else {
        format!(
            "ALTER TABLE {}: {}",
            after.qualified_name(),
            parts.join(", ")
        )
    }
}

/// The subject's compatibility level (`GET /config/{subject}?defaultToGlobal=true`), or
/// "unknown" when the registry does not say.
async fn compatibility_rule(url: &str, subject: &str) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Level {
        compatibility_level: String,
    }
    let request = format!(
        "{url}/config/{}?defaultToGlobal=true",
        subject.replace('/', "%2F")
    );
    registry::install_crypto_provider();
    let level = async {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?
            .get(request)
            .send()
            .await
            .ok()?;
        let text = response.text().await.ok()?;
        serde_json::from_str::<Level>(&text).ok()
    }
    .await;
    level.map_or_else(|| "unknown".to_owned(), |l| l.compatibility_level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::story;

    #[test]
    fn wire_format_is_magic_id_body() {
        assert_eq!(
            wire_format(0x0102_0304, &[0xAA]),
            [0x00, 0x01, 0x02, 0x03, 0x04, 0xAA]
        );
    }

    #[test]
    fn story_order_created_avro_bytes_are_exact() {
        let binding = story::order_binding();
        let schema = entity_schema(&binding).unwrap_or_else(|e| panic!("schema: {e}"));
        let change = story::order_456_insert();
        let event = story::order_created();
        let record = record(&schema, 0x0102_0304, 7, &event, &change)
            .unwrap_or_else(|e| panic!("record: {e}"));
        // eventId "0/16B3748:0", eventType, tenantId long 123 (f601), "Order", "456",
        // CREATE (0), version [1] 1, timestamp 2025-01-15T10:30:00Z, user, no correlationId,
        // payload [1] Row {id 456, tenant_id 123, "NEW", total decimal 0x2706 = 99.90,
        // "high", 1, user}, no changes, no key, no unavailable columns.
        assert_eq!(
            hex::encode(&record.payload),
            concat!(
                "0001020304",
                "16302f313642333734383a30184f7264657243726561746564f6010a4f726465720634353600",
                "020280e88e8e85ef9506022075736572406578616d706c652e636f6d000202900702f60102064e",
                "4557020427060208686967680202022075736572406578616d706c652e636f6d000000"
            )
        );
        // The key "123:456" as an Avro string, as apache-avro writes it.
        let key_body =
            apache_avro::writer::datum::GenericDatumWriter::builder(&apache_avro::Schema::String)
                .build()
                .and_then(|w| {
                    w.write_value_to_vec(apache_avro::types::Value::String(event.key.clone()))
                })
                .unwrap_or_else(|e| panic!("key: {e}"));
        assert_eq!(hex::encode(&key_body), "0e3132333a343536");
        assert_eq!(
            record.key.as_deref(),
            Some(wire_format(7, &key_body).as_slice())
        );
        assert_eq!(record.topic, event.topic);
        assert_eq!(record.headers.len(), event.headers().len());
    }

    /// Every change type of an entity in each payload mode encodes under its schema and
    /// reads back with apache-avro: `full` adds `fullSnapshot` to each (a CREATE's was
    /// once written without its union branch, "Value does not match schema").
    #[test]
    fn every_change_type_in_every_payload_mode_encodes_and_reads_back() {
        use crate::config::PayloadMode;
        use crate::source::change::ChangeKind;
        let products = story::products();
        let old = story::row(&products, &["42", "123", "Espresso machine", "120.00", "1"]);
        let new = story::row(&products, &["42", "123", "Espresso machine", "150.00", "2"]);
        for mode in [PayloadMode::Minimal, PayloadMode::Diff, PayloadMode::Full] {
            let mut config = story::config();
            for entity in &mut config.entities {
                entity.streaming.event_payload_mode = mode;
            }
            let binding = story::bind(&config, &products, &["id"]);
            let schema = entity_schema(&binding).unwrap_or_else(|e| panic!("schema: {e}"));
            let changes = [
                (ChangeKind::Insert, None, Some(new.clone())),
                (ChangeKind::Update, Some(old.clone()), Some(new.clone())),
                (ChangeKind::Delete, Some(old.clone()), None),
            ];
            for (kind, before, after) in changes {
                let change = story::change(&products, kind, 0, before, after);
                let events = crate::event::build_events(&binding, &change, None)
                    .unwrap_or_else(|e| panic!("{mode:?} {kind:?}: build: {e}"));
                assert_eq!(events.len(), 1, "{mode:?} {kind:?}");
                let value = encode::event_value(&schema, &events[0], &change)
                    .unwrap_or_else(|e| panic!("{mode:?} {kind:?}: value: {e}"));
                let record = record(&schema, 1, 2, &events[0], &change)
                    .unwrap_or_else(|e| panic!("{mode:?} {kind:?}: record: {e}"));
                let body = record.payload.get(5..).unwrap_or_default();
                let read = apache_avro::reader::datum::GenericDatumReader::builder(schema.schema())
                    .build()
                    .and_then(|reader| reader.read_value(&mut &body[..]))
                    .unwrap_or_else(|e| panic!("{mode:?} {kind:?}: read back: {e}"));
                assert_eq!(read, value, "{mode:?} {kind:?}");
            }
        }
    }

    #[test]
    fn subjects_by_strategy() {
        let schema = entity_schema(&story::order_binding()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            value_subject(
                SubjectNameStrategy::Topic,
                "core.orders.order.created",
                &schema
            ),
            "core.orders.order.created-value"
        );
        assert_eq!(
            value_subject(
                SubjectNameStrategy::Record,
                "core.orders.order.created",
                &schema
            ),
            "entity_cdc.Order"
        );
    }

    #[tokio::test]
    async fn an_unmapped_column_is_reported_once_not_per_event_or_schema() {
        let config = SchemaRegistryConfig {
            url: "http://127.0.0.1:9".to_owned(),
            username: None,
            password: None,
            subject_name_strategy: SubjectNameStrategy::Topic,
        };
        let mut encoder = AvroEncoder::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let mut orders = (*story::orders()).clone();
        orders.columns.push(crate::source::change::Column {
            name: "spot".to_owned(),
            type_oid: 600,
            type_modifier: -1,
            pg_type: crate::source::value::PgType::Other {
                name: "point".to_owned(),
            },
            identity: true,
        });
        let config = story::config();
        let bind = |relation: &Arc<Relation>| {
            crate::model::EntityModel::new(&config.entities)
                .bind(relation, &["id".to_owned()])
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("binds"))
        };
        let first = bind(&Arc::new(orders.clone()));
        for _ in 0..3 {
            let schema = encoder.schema_for(&first).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                schema
                    .fields
                    .last()
                    .map(|f| (f.name.as_str(), f.ty.is_fallback())),
                Some(("spot", true))
            );
        }
        // A new description of the table (a column added) makes a new schema, but the
        // column is not reported again.
        orders.columns.push(story::column("note", 25, -1));
        let second = bind(&Arc::new(orders));
        encoder
            .schema_for(&second)
            .unwrap_or_else(|e| panic!("{e}"));
        let reported: Vec<&(String, String)> = encoder.fallback_reported.iter().collect();
        assert_eq!(reported, [&("Order".to_owned(), "spot".to_owned())]);
        assert_eq!(
            encoder.entities.get("Order").map(|s| s.change.as_str()),
            Some("ALTER TABLE public.orders: column note added (text)")
        );
    }

    #[test]
    fn describe_change_names_added_dropped_and_retyped_columns() {
        let before = story::orders();
        let mut after = (*before).clone();
        after.columns.retain(|c| c.name != "priority");
        after.columns.push(story::column("note", 25, -1));
        if let Some(c) = after.columns.iter_mut().find(|c| c.name == "version") {
            *c = story::column("version", 20, -1);
        }
        assert_eq!(
            describe_change(&before, &after),
            "ALTER TABLE public.orders: column version retyped from int4 to int8, \
             column note added (text), column priority dropped"
        );
    }
}
