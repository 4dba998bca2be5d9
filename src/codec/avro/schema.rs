//! The Avro schema of an entity's events, generated from its relation's columns and its
//! configuration.
//!
//! One schema per entity covers its three event types (a `changeType` enum tells them
//! apart), so an entity has one schema history per subject. Every column is an optional
//! field (`["null", …]`, default null): a column added by `ALTER TABLE` is then a
//! backward-compatible change, and a row image that lacks a value (unchanged TOAST) can
//! still be written. The type of each column follows docs/types.md; the decisions of the
//! shared cases are kept: numerics never rounded (CASE-01, CASE-02), time types with their
//! infinities (CASE-04), intervals as three signed fields (CASE-06), arrays with their
//! dimensions and lower bounds (CASE-09), enums as strings (CASE-10) and names mangled with
//! the original kept (CASE-27).

use std::collections::HashSet;

use serde_json::{json, Map, Value as Json};

use crate::codec::avro::names::{avro_name, field_names, NameCollision};
use crate::config::PayloadMode;
use crate::model::{Binding, TenantSource};
use crate::source::change::Relation;
use crate::source::value::PgType;

/// The namespace of every generated record.
pub const NAMESPACE: &str = "entity_cdc";

/// Why no schema could be generated for an entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Two columns map to the same Avro field name.
    #[error("entity {entity} (table {table}): {source}")]
    Collision {
        /// The entity.
        entity: String,
        /// The table, qualified.
        table: String,
        /// The two columns.
        #[source]
        source: NameCollision,
    },
    /// apache-avro refused the generated schema (a bug in the generator).
    #[error("entity {entity}: the generated Avro schema is invalid: {reason}")]
    Invalid {
        /// The entity.
        entity: String,
        /// apache-avro's message.
        reason: String,
    },
}

/// How a PostgreSQL type travels in Avro: the non-null branches of a column's union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvroType {
    /// `boolean`.
    Boolean,
    /// `int` (int2, int4).
    Int,
    /// `long` (int8, oid).
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `decimal(precision, scale)` on bytes, then `string` for NaN, ±Infinity (and, should
    /// a value ever carry more fraction digits than the scale, its exact text).
    Decimal {
        /// Avro precision.
        precision: u32,
        /// Avro scale, 0 ≤ scale ≤ precision.
        scale: u32,
    },
    /// `string`: text types, unconstrained numeric, timetz, json, jsonb, enums.
    String,
    /// `string` holding an enum's label, the type's name and labels as metadata
    /// (`pg.enum`, `pg.labels`): no Avro enum, since labels such as `in progress` are no
    /// Avro symbols and a label added later would break it (CASE-10).
    EnumLabel {
        /// The enum type's name.
        name: String,
        /// Its labels when the schema was made.
        labels: Vec<String>,
    },
    /// `string` with logicalType `uuid`.
    Uuid,
    /// `date`, then `string` for ±infinity.
    Date,
    /// `time-micros`.
    TimeMicros,
    /// `local-timestamp-micros`, then `string` for ±infinity and values past i64
    /// microseconds since 1970.
    LocalTimestamp,
    /// `timestamp-micros` (UTC), then `string` like [`AvroType::LocalTimestamp`].
    Timestamp,
    /// The record `Interval {months: int, days: int, micros: long}`.
    Interval,
    /// `bytes`.
    Bytes,
    /// A record `{dims, lbounds, elements: array<["null", element]>}`.
    Array(Box<AvroType>),
    /// `string` holding PostgreSQL's text of a type without mapping.
    Fallback,
}

impl AvroType {
    /// The mapping of a column type (domains as their base type).
    pub fn of(pg: &PgType) -> AvroType {
        match pg {
            PgType::Bool => AvroType::Boolean,
            PgType::Int2 | PgType::Int4 => AvroType::Int,
            PgType::Int8 | PgType::Oid => AvroType::Long,
            PgType::Float4 => AvroType::Float,
            PgType::Float8 => AvroType::Double,
            PgType::Numeric {
                precision: Some(precision),
                scale: Some(scale),
            } => {
                let (p, s) = (i64::from(*precision), i64::from(*scale));
                // Avro needs 0 ≤ scale ≤ precision (CASE-02).
                let (p, s) = if s < 0 {
                    (p - s, 0)
                } else if s > p {
                    (s, s)
                } else {
                    (p, s)
                };
                AvroType::Decimal {
                    precision: u32::try_from(p).unwrap_or(u32::MAX),
                    scale: u32::try_from(s).unwrap_or(0),
                }
            }
            PgType::Numeric { .. } => AvroType::String,
            PgType::Text
            | PgType::Varchar
            | PgType::Bpchar
            | PgType::Name
            | PgType::Char
            | PgType::TimeTz
            | PgType::Json
            | PgType::Jsonb => AvroType::String,
            PgType::Enum { name, labels } => AvroType::EnumLabel {
                name: name.clone(),
                labels: labels.clone(),
            },
            PgType::Uuid => AvroType::Uuid,
            PgType::Date => AvroType::Date,
            PgType::Time => AvroType::TimeMicros,
            PgType::Timestamp => AvroType::LocalTimestamp,
            PgType::TimestampTz => AvroType::Timestamp,
            PgType::Interval => AvroType::Interval,
            PgType::Bytea => AvroType::Bytes,
            PgType::Array { element, .. } => AvroType::Array(Box::new(AvroType::of(element))),
            PgType::Domain { base, .. } => AvroType::of(base),
            PgType::Other { .. } => AvroType::Fallback,
        }
    }

    /// Whether the type, or its array's element type, has no mapping (text fallback).
    pub fn is_fallback(&self) -> bool {
        match self {
            AvroType::Fallback => true,
            AvroType::Array(element) => element.is_fallback(),
            _ => false,
        }
    }

    /// A name part for the array record of this element type.
    fn key(&self) -> String {
        match self {
            AvroType::Boolean => "boolean".to_owned(),
            AvroType::Int => "int".to_owned(),
            AvroType::Long => "long".to_owned(),
            AvroType::Float => "float".to_owned(),
            AvroType::Double => "double".to_owned(),
            AvroType::Decimal { precision, scale } => format!("decimal_{precision}_{scale}"),
            AvroType::String => "string".to_owned(),
            AvroType::Uuid => "uuid".to_owned(),
            AvroType::EnumLabel { name, .. } => format!("enum_{}", avro_name(name)),
            AvroType::Date => "date".to_owned(),
            AvroType::TimeMicros => "time".to_owned(),
            AvroType::LocalTimestamp => "local_timestamp".to_owned(),
            AvroType::Timestamp => "timestamp".to_owned(),
            AvroType::Interval => "interval".to_owned(),
            AvroType::Bytes => "bytes".to_owned(),
            AvroType::Array(element) => format!("array_{}", element.key()),
            AvroType::Fallback => "text".to_owned(),
        }
    }
}

/// Generates the JSON of a schema, writing each named type in full where it first appears
/// and by name afterwards, as Avro requires.
#[derive(Default)]
struct Writer {
    defined: HashSet<String>,
}

impl Writer {
    /// A named type: its definition the first time, its name afterwards.
    fn named(&mut self, name: &str, definition: impl FnOnce(&mut Self) -> Json) -> Json {
        if self.defined.insert(name.to_owned()) {
            definition(self)
        } else {
            Json::from(name)
        }
    }

    /// The non-null branches of a value of `ty`.
    fn branches(&mut self, ty: &AvroType) -> Vec<Json> {
        match ty {
            AvroType::Boolean => vec![json!("boolean")],
            AvroType::Int => vec![json!("int")],
            AvroType::Long => vec![json!("long")],
            AvroType::Float => vec![json!("float")],
            AvroType::Double => vec![json!("double")],
            AvroType::Decimal { precision, scale } => vec![
                json!({"type": "bytes", "logicalType": "decimal",
                       "precision": precision, "scale": scale}),
                json!("string"),
            ],
            AvroType::String => vec![json!("string")],
            AvroType::Fallback => vec![json!({"type": "string", "pg.fallback": "text"})],
            AvroType::Uuid => vec![json!({"type": "string", "logicalType": "uuid"})],
            AvroType::EnumLabel { name, labels } => {
                vec![json!({"type": "string", "pg.enum": name, "pg.labels": labels})]
            }
            AvroType::Date => vec![
                json!({"type": "int", "logicalType": "date"}),
                json!("string"),
            ],
            AvroType::TimeMicros => vec![json!({"type": "long", "logicalType": "time-micros"})],
            AvroType::LocalTimestamp => vec![
                json!({"type": "long", "logicalType": "local-timestamp-micros"}),
                json!("string"),
            ],
            AvroType::Timestamp => vec![
                json!({"type": "long", "logicalType": "timestamp-micros"}),
                json!("string"),
            ],
            AvroType::Interval => vec![self.named("Interval", |_| {
                json!({"type": "record", "name": "Interval", "fields": [
                    {"name": "months", "type": "int"},
                    {"name": "days", "type": "int"},
                    {"name": "micros", "type": "long"},
                ]})
            })],
            AvroType::Bytes => vec![json!("bytes")],
            AvroType::Array(element) => {
                let name = format!("Array_{}", element.key());
                vec![self.named(&name.clone(), |w| {
                    let mut items = vec![json!("null")];
                    items.extend(w.branches(element));
                    json!({"type": "record", "name": name, "fields": [
                        {"name": "dims", "type": {"type": "array", "items": "int"}},
                        {"name": "lbounds", "type": {"type": "array", "items": "int"}},
                        {"name": "elements", "type": {"type": "array", "items": items}},
                    ]})
                })]
            }
        }
    }

    /// `["null", …branches]`.
    fn optional(&mut self, ty: &AvroType) -> Json {
        let mut union = vec![json!("null")];
        union.extend(self.branches(ty));
        Json::Array(union)
    }
}

/// A column as the schema has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPlan {
    /// The Avro field name.
    pub name: String,
    /// The column's name in PostgreSQL.
    pub column: String,
    /// The column's type name in PostgreSQL.
    pub pg_type: String,
    /// Its Avro mapping.
    pub ty: AvroType,
}

/// Which envelope fields hold text or long for tenantId and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    /// `long`.
    Long,
    /// `string`.
    String,
}

/// Everything the encoder needs to know about an entity's schema.
#[derive(Debug, Clone)]
pub struct EntitySchema {
    /// The entity.
    pub entity: String,
    /// The schema as registered (JSON text).
    pub text: String,
    /// The parsed schema: parsing checks the generated text once per schema; events are
    /// written without it ([`crate::codec::avro::encode::write_event`] walks the plan
    /// below), and tests read them back with it.
    parsed: apache_avro::Schema,
    /// The envelope record's full name (the subject under the record strategy).
    pub full_name: String,
    /// The columns, in the relation's order.
    pub fields: Vec<FieldPlan>,
    /// Positions of the key columns.
    pub key: Vec<usize>,
    /// The payload mode the schema was made for.
    pub mode: PayloadMode,
    /// tenantId's type.
    pub tenant: ScalarKind,
    /// The tenant column's position (none for a fixed tenant), to name it in errors.
    pub tenant_column: Option<usize>,
    /// version's type.
    pub version: ScalarKind,
    /// The version column's position, to name it in errors.
    pub version_column: Option<usize>,
}

impl EntitySchema {
    /// The parsed schema.
    pub fn schema(&self) -> &apache_avro::Schema {
        &self.parsed
    }
}

/// Integer types travel as `long` in tenantId and version, anything else as text.
fn scalar_kind(relation: &Relation, column: Option<usize>) -> ScalarKind {
    match column
        .and_then(|i| relation.columns.get(i))
        .map(|c| &c.pg_type)
    {
        Some(PgType::Int2 | PgType::Int4 | PgType::Int8) => ScalarKind::Long,
        _ => ScalarKind::String,
    }
}

/// The schema of `binding`'s entity for its relation as last described.
pub fn entity_schema(binding: &Binding) -> Result<EntitySchema, SchemaError> {
    let entity = &binding.entity;
    let relation = &binding.relation;
    let names =
        field_names(relation.columns.iter().map(|c| c.name.as_str())).map_err(|source| {
            SchemaError::Collision {
                entity: entity.name.clone(),
                table: relation.qualified_name(),
                source,
            }
        })?;
    let fields: Vec<FieldPlan> = relation
        .columns
        .iter()
        .zip(names)
        .map(|(column, name)| FieldPlan {
            name,
            column: column.name.clone(),
            pg_type: column.pg_type.name(),
            ty: AvroType::of(&column.pg_type),
        })
        .collect();
    let tenant_column = match binding.tenant {
        TenantSource::Column(i) => Some(i),
        TenantSource::Fixed(_) => None,
    };
    let tenant = scalar_kind(relation, tenant_column);
    let version = scalar_kind(relation, binding.version);
    let mode = entity.streaming.event_payload_mode;
    let record_name = avro_name(&entity.name);
    let json = envelope_json(
        &record_name,
        relation,
        &fields,
        &binding.key,
        mode,
        tenant,
        version,
    );
    let text = json.to_string();
    let parsed = apache_avro::Schema::parse_str(&text).map_err(|e| SchemaError::Invalid {
        entity: entity.name.clone(),
        reason: e.to_string(),
    })?;
    Ok(EntitySchema {
        entity: entity.name.clone(),
        text,
        parsed,
        full_name: format!("{NAMESPACE}.{record_name}"),
        fields,
        key: binding.key.clone(),
        mode,
        tenant,
        tenant_column,
        version,
        version_column: binding.version,
    })
}

/// A row record's field list (every column, or the key columns).
fn row_fields(w: &mut Writer, fields: &[&FieldPlan]) -> Vec<Json> {
    fields
        .iter()
        .map(|f| {
            json!({"name": f.name, "type": w.optional(&f.ty), "default": null,
                   "pg.name": f.column, "pg.type": f.pg_type})
        })
        .collect()
}

fn scalar(kind: ScalarKind) -> Json {
    match kind {
        ScalarKind::Long => json!("long"),
        ScalarKind::String => json!("string"),
    }
}

fn envelope_json(
    record_name: &str,
    relation: &Relation,
    fields: &[FieldPlan],
    key: &[usize],
    mode: PayloadMode,
    tenant: ScalarKind,
    version: ScalarKind,
) -> Json {
    let mut w = Writer::default();
    let mut envelope = vec![
        json!({"name": "eventId", "type": "string"}),
        json!({"name": "eventType", "type": "string"}),
        json!({"name": "tenantId", "type": scalar(tenant)}),
        json!({"name": "entityType", "type": "string"}),
        json!({"name": "entityId", "type": "string"}),
        json!({"name": "changeType", "type": {"type": "enum", "name": "ChangeType",
                "symbols": ["CREATE", "UPDATE", "DELETE"]}}),
        json!({"name": "version", "type": ["null", scalar(version)], "default": null}),
        json!({"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-micros"}}),
        json!({"name": "user", "type": ["null", "string"], "default": null}),
        json!({"name": "correlationId", "type": ["null", "string"], "default": null}),
    ];
    if mode != PayloadMode::Minimal {
        let all: Vec<&FieldPlan> = fields.iter().collect();
        let row = json!({"type": "record", "name": "Row", "fields": row_fields(&mut w, &all)});
        w.defined.insert("Row".to_owned());
        envelope.push(json!({"name": "payload", "type": ["null", row], "default": null}));
        let changes: Vec<Json> = fields
            .iter()
            .map(|f| {
                let change_name = format!("Change_{}", f.name);
                let old = w.optional(&f.ty);
                let new = w.optional(&f.ty);
                json!({"name": f.name, "type": ["null", {"type": "record", "name": change_name,
                    "fields": [{"name": "old", "type": old, "default": null},
                               {"name": "new", "type": new, "default": null}]}],
                    "default": null, "pg.name": f.column, "pg.type": f.pg_type})
            })
            .collect();
        envelope.push(json!({"name": "changes", "type": ["null",
            {"type": "record", "name": "Changes", "fields": changes}], "default": null}));
        let key_fields: Vec<&FieldPlan> = key.iter().filter_map(|&i| fields.get(i)).collect();
        let key_record =
            json!({"type": "record", "name": "Key", "fields": row_fields(&mut w, &key_fields)});
        envelope.push(json!({"name": "key", "type": ["null", key_record], "default": null}));
        if mode == PayloadMode::Full {
            envelope
                .push(json!({"name": "fullSnapshot", "type": ["null", "Row"], "default": null}));
        }
        envelope.push(json!({"name": "unavailable",
            "type": {"type": "array", "items": "string"}, "default": []}));
    }
    let mut record = Map::new();
    record.insert("type".into(), json!("record"));
    record.insert("name".into(), json!(record_name));
    record.insert("namespace".into(), json!(NAMESPACE));
    record.insert(
        "doc".into(),
        json!(format!(
            "Entity events of table {} (entity-cdc)",
            relation.qualified_name()
        )),
    );
    record.insert("fields".into(), Json::Array(envelope));
    Json::Object(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::story;

    #[test]
    fn numeric_mapping_follows_case_02() {
        let numeric = |precision, scale| {
            AvroType::of(&PgType::Numeric {
                precision: Some(precision),
                scale: Some(scale),
            })
        };
        assert_eq!(
            numeric(10, 2),
            AvroType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            numeric(5, -2),
            AvroType::Decimal {
                precision: 7,
                scale: 0
            }
        );
        assert_eq!(
            numeric(3, 5),
            AvroType::Decimal {
                precision: 5,
                scale: 5
            }
        );
        assert_eq!(
            AvroType::of(&PgType::Numeric {
                precision: None,
                scale: None
            }),
            AvroType::String
        );
    }

    #[test]
    fn story_order_schema_is_exact() {
        let binding = story::order_binding();
        let schema = entity_schema(&binding).unwrap_or_else(|e| panic!("schema: {e}"));
        assert_eq!(schema.full_name, "entity_cdc.Order");
        let expected = story::json(include_str!("testdata/order.avsc"));
        story::assert_json(&story::json(&schema.text), &expected.to_string());
    }
}
