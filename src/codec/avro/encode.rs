//! Building the Avro value of an event from the typed column values (never from the JSON
//! text), and its binary body.
//!
//! The event says which body fields exist and which columns changed (so Avro and JSON
//! always agree); the values themselves come from the change's typed row images.

use apache_avro::types::Value as Avro;
use serde_json::Value as Json;

use crate::codec::avro::schema::{AvroType, EntitySchema, FieldPlan, ScalarKind};
use crate::event::{json_text, Body, ChangeType, EntityEvent};
use crate::source::change::{Change, Row};
use crate::source::value::{Date, Numeric, Timestamp, Value};

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A value that does not fit the schema made for its column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The column's value is of another type than its schema says (the relation changed
    /// without a Relation message, or a bug).
    #[error(
        "entity {entity} event {event_id}: column {column} holds a value that is no {expected}"
    )]
    Mismatch {
        /// The entity.
        entity: String,
        /// The event.
        event_id: String,
        /// The column, as PostgreSQL names it.
        column: String,
        /// The column's PostgreSQL type.
        expected: String,
    },
    /// apache-avro refused the value.
    #[error("entity {entity} event {event_id}: avro encoding failed: {reason}")]
    Avro {
        /// The entity.
        entity: String,
        /// The event.
        event_id: String,
        /// apache-avro's message.
        reason: String,
    },
}

/// The Avro value of `event`, built from `change`'s typed rows.
pub fn event_value(
    schema: &EntitySchema,
    event: &EntityEvent,
    change: &Change,
) -> Result<Avro, ValueError> {
    let mismatch = |field: &FieldPlan| ValueError::Mismatch {
        entity: schema.entity.clone(),
        event_id: event.event_id.clone(),
        column: field.column.clone(),
        expected: field.pg_type.clone(),
    };
    let row_value = |row: Option<&Row>, indexes: &mut dyn Iterator<Item = usize>| {
        let mut fields = Vec::new();
        for i in indexes {
            let Some(field) = schema.fields.get(i) else {
                continue;
            };
            let value = row.and_then(|r| r.get(i)).unwrap_or(&Value::Null);
            let avro = optional(&field.ty, value).ok_or_else(|| mismatch(field))?;
            fields.push((field.name.clone(), avro));
        }
        Ok::<_, ValueError>(Avro::Record(fields))
    };
    // The images this event describes: a delete (also the delete half of a key change) the
    // old row, a create the new row, an update both.
    let (old, new) = match event.change_type {
        ChangeType::Create => (None, change.new.as_ref()),
        ChangeType::Delete => (change.old.as_ref(), None),
        ChangeType::Update => (change.old.as_ref(), change.new.as_ref()),
    };
    let all = || 0..schema.fields.len();
    let mut record = vec![
        ("eventId".to_owned(), Avro::String(event.event_id.clone())),
        (
            "eventType".to_owned(),
            Avro::String(event.event_type.clone()),
        ),
        (
            "tenantId".to_owned(),
            scalar(schema.tenant, &event.tenant_id),
        ),
        (
            "entityType".to_owned(),
            Avro::String(event.entity_type.clone()),
        ),
        ("entityId".to_owned(), Avro::String(event.entity_id.clone())),
        (
            "changeType".to_owned(),
            Avro::Enum(
                match event.change_type {
                    ChangeType::Create => 0,
                    ChangeType::Update => 1,
                    ChangeType::Delete => 2,
                },
                event.change_type.as_str().to_owned(),
            ),
        ),
        (
            "version".to_owned(),
            match &event.version {
                Json::Null => Avro::Union(0, Box::new(Avro::Null)),
                v => Avro::Union(1, Box::new(scalar(schema.version, v))),
            },
        ),
        (
            "timestamp".to_owned(),
            Avro::TimestampMicros(change.commit_ts.saturating_add(PG_EPOCH_UNIX_MICROS)),
        ),
        ("user".to_owned(), optional_string(event.user.as_deref())),
        (
            "correlationId".to_owned(),
            optional_string(event.correlation_id.as_deref()),
        ),
    ];
    let null = || Avro::Union(0, Box::new(Avro::Null));
    let some = |v: Avro| Avro::Union(1, Box::new(v));
    let (payload, changes, key, snapshot) = match &event.body {
        Body::Minimal => return Ok(Avro::Record(record)),
        Body::Create {
            full_snapshot,
            payload: _,
        } => {
            let payload = row_value(new, &mut all())?;
            // `fullSnapshot` is `["null", Row]` like `payload`: the row in its union branch.
            let snapshot = full_snapshot.as_ref().map(|_| some(payload.clone()));
            (some(payload), null(), null(), snapshot)
        }
        Body::Update {
            changes,
            full_snapshot,
        } => {
            let mut fields = Vec::with_capacity(schema.fields.len());
            for (i, field) in schema.fields.iter().enumerate() {
                let value = match changes.get(&field.column) {
                    None => null(),
                    Some(entry) => {
                        // The old value is known only where the JSON diff has one.
                        let old_value = if entry.get("old").is_some() {
                            old.and_then(|r| r.get(i)).unwrap_or(&Value::Null)
                        } else {
                            &Value::Null
                        };
                        let new_value = new.and_then(|r| r.get(i)).unwrap_or(&Value::Null);
                        let o = optional(&field.ty, old_value).ok_or_else(|| mismatch(field))?;
                        let n = optional(&field.ty, new_value).ok_or_else(|| mismatch(field))?;
                        some(Avro::Record(vec![
                            ("old".to_owned(), o),
                            ("new".to_owned(), n),
                        ]))
                    }
                };
                fields.push((field.name.clone(), value));
            }
            let snapshot = match full_snapshot {
                Some(_) => Some(some(row_value(new, &mut all())?)),
                None => None,
            };
            (null(), some(Avro::Record(fields)), null(), snapshot)
        }
        Body::Delete { full_snapshot, .. } => {
            let key = row_value(old, &mut schema.key.iter().copied())?;
            let snapshot = match full_snapshot {
                Some(_) => Some(some(row_value(old, &mut all())?)),
                None => None,
            };
            (null(), null(), some(key), snapshot)
        }
    };
    record.push(("payload".to_owned(), payload));
    record.push(("changes".to_owned(), changes));
    record.push(("key".to_owned(), key));
    if schema.mode == crate::config::PayloadMode::Full {
        record.push(("fullSnapshot".to_owned(), snapshot.unwrap_or_else(null)));
    }
    record.push((
        "unavailable".to_owned(),
        Avro::Array(
            event
                .unavailable
                .iter()
                .cloned()
                .map(Avro::String)
                .collect(),
        ),
    ));
    Ok(Avro::Record(record))
}

/// tenantId or version: a long for integer columns, else the value's text.
fn scalar(kind: ScalarKind, value: &Json) -> Avro {
    match (kind, value.as_i64()) {
        (ScalarKind::Long, Some(n)) => Avro::Long(n),
        _ => Avro::String(json_text(value)),
    }
}

fn optional_string(value: Option<&str>) -> Avro {
    match value {
        Some(s) => Avro::Union(1, Box::new(Avro::String(s.to_owned()))),
        None => Avro::Union(0, Box::new(Avro::Null)),
    }
}

/// A column value in its `["null", …]` union; `None` when the value does not fit `ty`.
/// An unavailable value (unchanged TOAST) is written as null and listed in `unavailable`.
pub fn optional(ty: &AvroType, value: &Value) -> Option<Avro> {
    if matches!(value, Value::Null | Value::Unavailable) {
        return Some(Avro::Union(0, Box::new(Avro::Null)));
    }
    let (branch, avro) = branch(ty, value)?;
    Some(Avro::Union(branch + 1, Box::new(avro)))
}

/// The branch (0 = first non-null branch) and value of a non-null `value`.
fn branch(ty: &AvroType, value: &Value) -> Option<(u32, Avro)> {
    let text = |s: &str| Some((0, Avro::String(s.to_owned())));
    match (ty, value) {
        (AvroType::Boolean, Value::Bool(b)) => Some((0, Avro::Boolean(*b))),
        (AvroType::Int, Value::Int2(n)) => Some((0, Avro::Int(i32::from(*n)))),
        (AvroType::Int, Value::Int4(n)) => Some((0, Avro::Int(*n))),
        (AvroType::Long, Value::Int8(n)) => Some((0, Avro::Long(*n))),
        (AvroType::Long, Value::Oid(n)) => Some((0, Avro::Long(i64::from(*n)))),
        (AvroType::Float, Value::Float4(f)) => Some((0, Avro::Float(*f))),
        (AvroType::Double, Value::Float8(f)) => Some((0, Avro::Double(*f))),
        (AvroType::Decimal { scale, .. }, Value::Numeric(n)) => match n {
            Numeric::Finite(finite) => match finite.unscaled_be_bytes(*scale) {
                Some(bytes) => Some((0, Avro::Decimal(apache_avro::Decimal::from(bytes)))),
                // More fraction digits than the schema's scale: the exact text, never
                // rounded.
                None => Some((1, Avro::String(finite.as_str().to_owned()))),
            },
            special => Some((1, Avro::String(special.as_str().to_owned()))),
        },
        (AvroType::String, Value::Numeric(n)) => text(n.as_str()),
        (AvroType::Uuid, Value::Uuid(s)) => text(s),
        (AvroType::String, Value::Text(s) | Value::Json(s) | Value::Jsonb(s)) => text(s),
        (AvroType::String, Value::TimeTz { .. }) => {
            let rendered = value.to_json()?;
            text(rendered.as_str()?)
        }
        (AvroType::Fallback, Value::Unknown { text: s, .. }) => text(s),
        (AvroType::EnumLabel { .. }, Value::Enum(s)) => text(s),
        (AvroType::Date, Value::Date(date)) => match date {
            Date::Finite(d) => Some((0, Avro::Date(d.unix_days()))),
            other => Some((1, Avro::String(other.to_iso()))),
        },
        (AvroType::TimeMicros, Value::Time(micros)) => Some((0, Avro::TimeMicros(*micros))),
        (AvroType::LocalTimestamp, Value::Timestamp(t)) => match t.unix_micros() {
            Some(micros) => Some((0, Avro::LocalTimestampMicros(micros))),
            None => Some((1, Avro::String(t.to_iso(false)))),
        },
        (AvroType::Timestamp, Value::TimestampTz(t)) => match t.unix_micros() {
            Some(micros) => Some((0, Avro::TimestampMicros(micros))),
            None => Some((1, Avro::String(timestamp_text(t)))),
        },
        (AvroType::Interval, Value::Interval(i)) => Some((
            0,
            Avro::Record(vec![
                ("months".to_owned(), Avro::Int(i.months)),
                ("days".to_owned(), Avro::Int(i.days)),
                ("micros".to_owned(), Avro::Long(i.micros)),
            ]),
        )),
        (AvroType::Bytes, Value::Bytea(bytes)) => Some((0, Avro::Bytes(bytes.clone()))),
        (AvroType::Array(element), Value::Array(array)) => {
            let ints = |v: &[i32]| Avro::Array(v.iter().map(|&n| Avro::Int(n)).collect());
            let mut elements = Vec::with_capacity(array.elements.len());
            for e in &array.elements {
                elements.push(optional(element, e)?);
            }
            Some((
                0,
                Avro::Record(vec![
                    ("dims".to_owned(), ints(&array.dims)),
                    ("lbounds".to_owned(), ints(&array.lower_bounds)),
                    ("elements".to_owned(), Avro::Array(elements)),
                ]),
            ))
        }
        _ => None,
    }
}

/// A timestamptz outside i64 microseconds, or infinite, as its JSON text.
fn timestamp_text(t: &Timestamp) -> String {
    t.to_iso(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::value::{parse_text, PgType};

    fn typed(pg: &PgType, text: &str) -> Value {
        parse_text(pg, text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn union(branch: u32, value: Avro) -> Option<Avro> {
        Some(Avro::Union(branch, Box::new(value)))
    }

    #[test]
    fn numerics_keep_digits_and_specials_go_to_the_string_branch() {
        let pg = PgType::numeric(crate::event::story::numeric_typmod(10, 2));
        let ty = AvroType::of(&pg);
        assert_eq!(
            optional(&ty, &typed(&pg, "1.50")),
            union(
                1,
                Avro::Decimal(apache_avro::Decimal::from(vec![0x00, 0x96]))
            )
        );
        assert_eq!(
            optional(&ty, &typed(&pg, "NaN")),
            union(2, Avro::String("NaN".to_owned()))
        );
        assert_eq!(
            optional(&ty, &typed(&pg, "-Infinity")),
            union(2, Avro::String("-Infinity".to_owned()))
        );
        assert_eq!(optional(&ty, &Value::Null), union(0, Avro::Null));
    }

    #[test]
    fn timestamps_and_their_infinities() {
        let ty = AvroType::of(&PgType::TimestampTz);
        assert_eq!(
            optional(
                &ty,
                &typed(&PgType::TimestampTz, "12345-06-07 08:09:10.5+00")
            ),
            union(1, Avro::TimestampMicros(327_416_976_550_500_000))
        );
        assert_eq!(
            optional(&ty, &typed(&PgType::TimestampTz, "infinity")),
            union(2, Avro::String("infinity".to_owned()))
        );
        assert_eq!(
            optional(
                &ty,
                &typed(&PgType::TimestampTz, "294276-12-31 23:59:59.999999+00")
            ),
            union(2, Avro::String("+294276-12-31T23:59:59.999999Z".to_owned()))
        );
        let date = AvroType::of(&PgType::Date);
        assert_eq!(
            optional(&date, &typed(&PgType::Date, "0001-01-01 BC")),
            union(1, Avro::Date(-719_528))
        );
    }

    #[test]
    fn a_value_of_another_type_is_no_fit() {
        assert_eq!(optional(&AvroType::Int, &Value::Text("x".to_owned())), None);
    }
}
