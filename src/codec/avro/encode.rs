//! The Avro binary body of an event, written from the typed column values (never from the
//! JSON text).
//!
//! The event says which body fields exist and which columns changed (so Avro and JSON
//! always agree); the values themselves come from the change's typed row images.
//!
//! [`write_event`] is what `run` uses: it walks the entity's schema plan ([`EntitySchema`])
//! and appends each value's encoding as it goes, so there is no per-event value tree, no
//! field name copied and no separate validation pass. [`event_value`] builds the same
//! record as an apache-avro `Value`: the tests write that with apache-avro and compare the
//! bytes, so apache-avro stays the judge of what the direct writer must produce.

use apache_avro::types::Value as Avro;
use serde_json::{Map, Value as Json};

use crate::codec::avro::binary;
use crate::codec::avro::schema::{AvroType, EntitySchema, FieldPlan, ScalarKind};
use crate::config::PayloadMode;
use crate::event::{json_text, Body, ChangeType, EntityEvent};
use crate::source::change::{Change, Row};
use crate::source::value::{Date, Numeric, Timestamp, Value};

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Why an event has no Avro body: a value, or the body itself, does not fit the schema.
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
    /// The event's body is not one its schema's payload mode has (the event and the schema
    /// come from the same binding, so this is a bug; it is refused rather than written as
    /// bytes no reader could decode).
    #[error(
        "entity {entity} event {event_id}: its body does not fit the schema made for payload \
         mode {mode}"
    )]
    Body {
        /// The entity.
        entity: String,
        /// The event.
        event_id: String,
        /// The schema's payload mode.
        mode: String,
    },
}

/// A row cell that is absent (no row image, or a column past its end): written as null.
static NULL: Value = Value::Null;

/// Appends the Avro binary body of `event` to `out`: exactly the bytes apache-avro writes
/// for [`event_value`] under `schema`. On error `out` is left as it was.
pub fn write_event(
    schema: &EntitySchema,
    event: &EntityEvent,
    change: &Change,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let start = out.len();
    let written = EventWriter {
        schema,
        event,
        out: &mut *out,
    }
    .event(change);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// Writes one event: the schema walk and the encoding in one pass.
struct EventWriter<'a> {
    schema: &'a EntitySchema,
    event: &'a EntityEvent,
    out: &'a mut Vec<u8>,
}

impl EventWriter<'_> {
    /// The envelope, then the body fields of the schema's payload mode.
    fn event(&mut self, change: &Change) -> Result<(), ValueError> {
        self.envelope(change)?;
        self.body(change)
    }

    /// The ten envelope fields, in the schema's order.
    fn envelope(&mut self, change: &Change) -> Result<(), ValueError> {
        let (schema, event) = (self.schema, self.event);
        binary::string(self.out, &event.event_id);
        binary::string(self.out, &event.event_type);
        self.scalar(schema.tenant, &event.tenant_id, schema.tenant_column)?;
        binary::string(self.out, &event.entity_type);
        binary::string(self.out, &event.entity_id);
        binary::int(self.out, change_type_symbol(event.change_type));
        if event.version.is_null() {
            binary::branch(self.out, 0);
        } else {
            binary::branch(self.out, 1);
            self.scalar(schema.version, &event.version, schema.version_column)?;
        }
        binary::long(
            self.out,
            change.commit_ts.saturating_add(PG_EPOCH_UNIX_MICROS),
        );
        self.optional_string(event.user.as_deref());
        self.optional_string(event.correlation_id.as_deref());
        Ok(())
    }

    /// `payload`, `changes`, `key`, `fullSnapshot` (in `full` mode) and `unavailable`;
    /// nothing in `minimal` mode.
    fn body(&mut self, change: &Change) -> Result<(), ValueError> {
        let (schema, event) = (self.schema, self.event);
        let body = &event.body;
        if schema.mode == PayloadMode::Minimal {
            return match body {
                Body::Minimal => Ok(()),
                _ => Err(self.body_mismatch()),
            };
        }
        let (old, new) = images(event.change_type, change);
        let all = || 0..schema.fields.len();
        // Each arm writes payload, changes and key, and says which row the snapshot holds.
        let snapshot = match body {
            Body::Create { full_snapshot, .. } => {
                binary::branch(self.out, 1);
                self.row(new, all())?;
                binary::branch(self.out, 0);
                binary::branch(self.out, 0);
                full_snapshot.as_ref().map(|_| new)
            }
            Body::Update {
                changes,
                full_snapshot,
            } => {
                binary::branch(self.out, 0);
                binary::branch(self.out, 1);
                self.changes(changes, old, new)?;
                binary::branch(self.out, 0);
                full_snapshot.as_ref().map(|_| new)
            }
            Body::Delete { full_snapshot, .. } => {
                binary::branch(self.out, 0);
                binary::branch(self.out, 0);
                binary::branch(self.out, 1);
                self.row(old, schema.key.iter().copied())?;
                full_snapshot.as_ref().map(|_| old)
            }
            Body::Minimal => return Err(self.body_mismatch()),
        };
        if schema.mode == PayloadMode::Full {
            match snapshot {
                Some(row) => {
                    binary::branch(self.out, 1);
                    self.row(row, all())?;
                }
                None => binary::branch(self.out, 0),
            }
        }
        self.unavailable();
        Ok(())
    }

    /// A `Row` or `Key` record: the columns at `indexes` (those the schema has).
    fn row(
        &mut self,
        row: Option<&Row>,
        indexes: impl Iterator<Item = usize>,
    ) -> Result<(), ValueError> {
        let schema = self.schema;
        for i in indexes {
            if let Some(field) = schema.fields.get(i) {
                self.column(field, cell(row, i))?;
            }
        }
        Ok(())
    }

    /// The `Changes` record: per column, null when it did not change, else its old (where
    /// the JSON diff has one) and new value.
    fn changes(
        &mut self,
        changes: &Map<String, Json>,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> Result<(), ValueError> {
        let schema = self.schema;
        for (i, field) in schema.fields.iter().enumerate() {
            let Some(entry) = changes.get(&field.column) else {
                binary::branch(self.out, 0);
                continue;
            };
            let old_value = if entry.get("old").is_some() {
                cell(old, i)
            } else {
                &NULL
            };
            binary::branch(self.out, 1);
            self.column(field, old_value)?;
            self.column(field, cell(new, i))?;
        }
        Ok(())
    }

    /// One column's `["null", …]` union.
    fn column(&mut self, field: &FieldPlan, value: &Value) -> Result<(), ValueError> {
        write_optional(self.out, &field.ty, value).map_err(|NoFit| self.mismatch(field))
    }

    /// tenantId or version: a long for integer columns, else the value's text.
    fn scalar(
        &mut self,
        kind: ScalarKind,
        value: &Json,
        column: Option<usize>,
    ) -> Result<(), ValueError> {
        match (kind, value) {
            (ScalarKind::Long, value) => match value.as_i64() {
                Some(n) => binary::long(self.out, n),
                // event_value makes this a string, which the schema's long refuses.
                None => return Err(self.scalar_mismatch(column)),
            },
            (ScalarKind::String, Json::String(s)) => binary::string(self.out, s),
            (ScalarKind::String, other) => binary::string(self.out, &other.to_string()),
        }
        Ok(())
    }

    /// `["null", "string"]`.
    fn optional_string(&mut self, value: Option<&str>) {
        match value {
            Some(s) => {
                binary::branch(self.out, 1);
                binary::string(self.out, s);
            }
            None => binary::branch(self.out, 0),
        }
    }

    /// The names of the columns left out as unavailable, as an array of strings.
    fn unavailable(&mut self) {
        let names = &self.event.unavailable;
        binary::array_start(self.out, names.len());
        for name in names {
            binary::string(self.out, name);
        }
        binary::array_end(self.out);
    }

    fn mismatch(&self, field: &FieldPlan) -> ValueError {
        ValueError::Mismatch {
            entity: self.schema.entity.clone(),
            event_id: self.event.event_id.clone(),
            column: field.column.clone(),
            expected: field.pg_type.clone(),
        }
    }

    /// tenantId or version is no integer although its column's type is.
    fn scalar_mismatch(&self, column: Option<usize>) -> ValueError {
        match column.and_then(|i| self.schema.fields.get(i)) {
            Some(field) => self.mismatch(field),
            None => ValueError::Mismatch {
                entity: self.schema.entity.clone(),
                event_id: self.event.event_id.clone(),
                column: "?".to_owned(),
                expected: "long".to_owned(),
            },
        }
    }

    fn body_mismatch(&self) -> ValueError {
        ValueError::Body {
            entity: self.schema.entity.clone(),
            event_id: self.event.event_id.clone(),
            mode: format!("{:?}", self.schema.mode).to_lowercase(),
        }
    }
}

/// The row images an event describes: a delete (also the delete half of a key change) the
/// old row, a create the new row, an update both.
fn images(change_type: ChangeType, change: &Change) -> (Option<&Row>, Option<&Row>) {
    match change_type {
        ChangeType::Create => (None, change.new.as_ref()),
        ChangeType::Delete => (change.old.as_ref(), None),
        ChangeType::Update => (change.old.as_ref(), change.new.as_ref()),
    }
}

/// The value of column `i` in `row`, null where there is none.
fn cell(row: Option<&Row>, i: usize) -> &Value {
    row.and_then(|r| r.get(i)).unwrap_or(&NULL)
}

/// The `ChangeType` enum's symbol index: CREATE, UPDATE, DELETE.
fn change_type_symbol(change_type: ChangeType) -> i32 {
    match change_type {
        ChangeType::Create => 0,
        ChangeType::Update => 1,
        ChangeType::Delete => 2,
    }
}

/// A value that does not fit its column's Avro type.
struct NoFit;

/// A column value in its `["null", …]` union: branch 0 for null and unavailable (unchanged
/// TOAST, listed in `unavailable`), else [`write_branch`].
fn write_optional(out: &mut Vec<u8>, ty: &AvroType, value: &Value) -> Result<(), NoFit> {
    if matches!(value, Value::Null | Value::Unavailable) {
        binary::branch(out, 0);
        return Ok(());
    }
    write_branch(out, ty, value)
}

/// A non-null value: its branch (1 for the type's own branch, 2 for the `string` a decimal,
/// date or timestamp falls back to) and its encoding. The branch numbers are those of the
/// unions `schema::Writer::optional` generates: null first, then the type's branches.
fn write_branch(out: &mut Vec<u8>, ty: &AvroType, value: &Value) -> Result<(), NoFit> {
    let text = |out: &mut Vec<u8>, s: &str| {
        binary::branch(out, 1);
        binary::string(out, s);
    };
    let fallback = |out: &mut Vec<u8>, s: &str| {
        binary::branch(out, 2);
        binary::string(out, s);
    };
    match (ty, value) {
        (AvroType::Boolean, Value::Bool(b)) => {
            binary::branch(out, 1);
            binary::boolean(out, *b);
        }
        (AvroType::Int, Value::Int2(n)) => {
            binary::branch(out, 1);
            binary::int(out, i32::from(*n));
        }
        (AvroType::Int, Value::Int4(n)) => {
            binary::branch(out, 1);
            binary::int(out, *n);
        }
        (AvroType::Long, Value::Int8(n)) => {
            binary::branch(out, 1);
            binary::long(out, *n);
        }
        (AvroType::Long, Value::Oid(n)) => {
            binary::branch(out, 1);
            binary::long(out, i64::from(*n));
        }
        (AvroType::Float, Value::Float4(f)) => {
            binary::branch(out, 1);
            binary::float(out, *f);
        }
        (AvroType::Double, Value::Float8(f)) => {
            binary::branch(out, 1);
            binary::double(out, *f);
        }
        (AvroType::Decimal { scale, .. }, Value::Numeric(n)) => match n {
            Numeric::Finite(finite) => match finite.unscaled_be_bytes(*scale) {
                Some(bytes) => {
                    binary::branch(out, 1);
                    binary::bytes(out, &bytes);
                }
                // More fraction digits than the schema's scale: the exact text, never
                // rounded.
                None => fallback(out, finite.as_str()),
            },
            special => fallback(out, special.as_str()),
        },
        (AvroType::String, Value::Numeric(n)) => text(out, n.as_str()),
        (AvroType::Uuid, Value::Uuid(s)) => text(out, s),
        (AvroType::String, Value::Text(s) | Value::Json(s) | Value::Jsonb(s)) => text(out, s),
        (AvroType::String, Value::TimeTz { .. }) => {
            let rendered = value.to_json().ok_or(NoFit)?;
            text(out, rendered.as_str().ok_or(NoFit)?);
        }
        (AvroType::Fallback, Value::Unknown { text: s, .. }) => text(out, s),
        (AvroType::EnumLabel { .. }, Value::Enum(s)) => text(out, s),
        (AvroType::Date, Value::Date(date)) => match date {
            Date::Finite(d) => {
                binary::branch(out, 1);
                binary::int(out, d.unix_days());
            }
            other => fallback(out, &other.to_iso()),
        },
        (AvroType::TimeMicros, Value::Time(micros)) => {
            binary::branch(out, 1);
            binary::long(out, *micros);
        }
        (AvroType::LocalTimestamp, Value::Timestamp(t)) => match t.unix_micros() {
            Some(micros) => {
                binary::branch(out, 1);
                binary::long(out, micros);
            }
            None => fallback(out, &t.to_iso(false)),
        },
        (AvroType::Timestamp, Value::TimestampTz(t)) => match t.unix_micros() {
            Some(micros) => {
                binary::branch(out, 1);
                binary::long(out, micros);
            }
            None => fallback(out, &timestamp_text(t)),
        },
        (AvroType::Interval, Value::Interval(i)) => {
            binary::branch(out, 1);
            binary::int(out, i.months);
            binary::int(out, i.days);
            binary::long(out, i.micros);
        }
        (AvroType::Bytes, Value::Bytea(bytes)) => {
            binary::branch(out, 1);
            binary::bytes(out, bytes);
        }
        (AvroType::Array(element), Value::Array(array)) => {
            binary::branch(out, 1);
            write_ints(out, &array.dims);
            write_ints(out, &array.lower_bounds);
            binary::array_start(out, array.elements.len());
            for e in &array.elements {
                write_optional(out, element, e)?;
            }
            binary::array_end(out);
        }
        _ => return Err(NoFit),
    }
    Ok(())
}

/// An array of `int`s (an array's dims or lower bounds).
fn write_ints(out: &mut Vec<u8>, values: &[i32]) {
    binary::array_start(out, values.len());
    for &n in values {
        binary::int(out, n);
    }
    binary::array_end(out);
}

/// The Avro value of `event`, built from `change`'s typed rows: the record [`write_event`]
/// writes, for tests to write with apache-avro and compare (and for readers of the code:
/// this is the record, field by field).
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

    // The direct writer against apache-avro: the same event as a `Value` tree, written by
    // apache-avro's datum writer, must give the very same bytes.

    use std::sync::Arc;

    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use proptest::prelude::*;

    use crate::codec::avro::schema::entity_schema;
    use crate::config::Config;
    use crate::event::{build_events, story};
    use crate::model::Binding;
    use crate::source::change::{ChangeKind, Column, Relation};
    use crate::source::value::{Array, FiniteNumeric, Interval};

    /// What [`write_event`] appends for `event`, checking that it only appends.
    fn direct(schema: &EntitySchema, event: &EntityEvent, change: &Change) -> Vec<u8> {
        let mut out = vec![0xEE];
        write_event(schema, event, change, &mut out)
            .unwrap_or_else(|e| panic!("{}: direct: {e}", event.event_id));
        assert_eq!(out.first(), Some(&0xEE), "{}: prefix kept", event.event_id);
        out.split_off(1)
    }

    /// apache-avro's bytes for [`event_value`], validated against the schema.
    fn oracle(schema: &EntitySchema, event: &EntityEvent, change: &Change) -> (Avro, Vec<u8>) {
        let value = event_value(schema, event, change)
            .unwrap_or_else(|e| panic!("{}: value: {e}", event.event_id));
        let mut body = Vec::new();
        GenericDatumWriter::builder(schema.schema())
            .build()
            .and_then(|w| w.write_value_ref(&mut body, &value))
            .unwrap_or_else(|e| panic!("{}: apache-avro: {e}", event.event_id));
        (value, body)
    }

    /// apache-avro's reading of `body` under the entity's schema.
    fn read_back(schema: &EntitySchema, body: &[u8]) -> Avro {
        let mut rest = body;
        let value = GenericDatumReader::builder(schema.schema())
            .build()
            .and_then(|reader| reader.read_value(&mut rest))
            .unwrap_or_else(|e| panic!("read back: {e}"));
        assert!(
            rest.is_empty(),
            "{} bytes left after the record",
            rest.len()
        );
        value
    }

    /// Builds the events of `change` and asserts, for each, that the direct writer's bytes
    /// are apache-avro's and that they read back; returns the event count.
    fn assert_same_bytes(binding: &Binding, schema: &EntitySchema, change: &Change) -> usize {
        let events = build_events(binding, change, None)
            .unwrap_or_else(|e| panic!("{:?}: build: {e}", change.kind));
        for event in &events {
            let (_, expected) = oracle(schema, event, change);
            let written = direct(schema, event, change);
            assert_eq!(
                hex::encode(&written),
                hex::encode(&expected),
                "{:?} {}",
                schema.mode,
                event.event_id
            );
            // Logical types read back as themselves (a uuid string as a Uuid), so the
            // reading is compared through apache-avro's own writing of it.
            let read = read_back(schema, &written);
            let mut again = Vec::new();
            GenericDatumWriter::builder(schema.schema())
                .build()
                .and_then(|w| w.write_value_ref(&mut again, &read))
                .unwrap_or_else(|e| panic!("{}: write what was read: {e}", event.event_id));
            assert_eq!(again, written, "{} round trip", event.event_id);
        }
        events.len()
    }

    fn with_type(name: &str, pg_type: PgType) -> Column {
        Column {
            name: name.to_owned(),
            type_oid: 0,
            type_modifier: -1,
            pg_type,
            identity: true,
        }
    }

    fn array_of(element: PgType) -> PgType {
        PgType::Array {
            element: Box::new(element),
            delimiter: b',',
        }
    }

    /// `public.every`: a key, tenant and version, then one column of every type the schema
    /// maps (docs/types.md), arrays of several element types, and a type without mapping.
    fn every() -> Arc<Relation> {
        let numeric = |p, s| PgType::numeric(story::numeric_typmod(p, s));
        story::relation(
            16_400,
            "public",
            "every",
            vec![
                story::column("id", 20, -1),
                story::column("tenant_id", 20, -1),
                story::column("version", 23, -1),
                story::column("flag", 16, -1),
                story::column("small", 21, -1),
                story::column("int", 23, -1),
                story::column("big", 20, -1),
                story::column("oid", 26, -1),
                story::column("real", 700, -1),
                story::column("double", 701, -1),
                with_type("price", numeric(10, 2)),
                with_type("hundreds", numeric(5, -2)),
                with_type("tiny", numeric(3, 5)),
                story::column("free", 1700, -1),
                story::column("text", 25, -1),
                story::column("varchar", 1043, -1),
                story::column("bpchar", 1042, -1),
                story::column("name", 19, -1),
                story::column("char", 18, -1),
                story::column("uuid", 2950, -1),
                story::column("date", 1082, -1),
                story::column("time", 1083, -1),
                story::column("timetz", 1266, -1),
                story::column("ts", 1114, -1),
                story::column("tstz", 1184, -1),
                story::column("iv", 1186, -1),
                story::column("json", 114, -1),
                story::column("jsonb", 3802, -1),
                story::column("bytes", 17, -1),
                with_type(
                    "mood",
                    PgType::Enum {
                        name: "public.mood".to_owned(),
                        labels: vec!["happy".to_owned(), "in progress".to_owned()],
                    },
                ),
                with_type(
                    "amount",
                    PgType::Domain {
                        name: "public.amount".to_owned(),
                        base: Box::new(numeric(8, 2)),
                    },
                ),
                with_type("ints", array_of(PgType::Int4)),
                with_type("texts", array_of(PgType::Text)),
                with_type("prices", array_of(numeric(10, 2))),
                with_type("days", array_of(PgType::Date)),
                with_type(
                    "spot",
                    PgType::Other {
                        name: "point".to_owned(),
                    },
                ),
                with_type(
                    "nets",
                    array_of(PgType::Other {
                        name: "inet".to_owned(),
                    }),
                ),
                // A column name that is no Avro name (CASE-27).
                story::column("Ünïcode name", 25, -1),
            ],
        )
    }

    /// Ordinary values of every column.
    const EVERY_A: [&str; 38] = [
        "1",
        "123",
        "1",
        "t",
        "-32768",
        "2147483647",
        "-9223372036854775808",
        "4294967295",
        "1.5",
        "2.25",
        "12345678.91",
        "1200",
        "0.00123",
        "3.14159265358979323846264338327950288",
        "héllo, wörld",
        "ab",
        "ab   ",
        "pg_class",
        "x",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "2024-02-29",
        "23:59:59.999999",
        "04:05:06+05:30",
        "2024-02-29 12:34:56.789012",
        "2024-02-29 12:34:56.789012+02",
        "P1Y2M-3DT4H5M6.789S",
        r#"{"k": "dup", "k": 1.10}"#,
        r#"{"a": [1, 2.50]}"#,
        r"\x00ff10",
        "in progress",
        "12.50",
        "{{1,NULL},{3,4}}",
        r#"[0:1]={x,"NULL"}"#,
        "{1.50,NaN,NULL,-0.01}",
        "{infinity,2024-02-29}",
        "(1.5,-2)",
        "{192.168.0.1/24,NULL}",
        "ü",
    ];

    /// The edges: specials, infinities, values past i64 microseconds, empty values, nulls.
    const EVERY_B: [&str; 38] = [
        "2",
        "123",
        "2",
        "f",
        "0",
        "-1",
        "9223372036854775807",
        "0",
        "NaN",
        "-Infinity",
        "NaN",
        "-100",
        "-0.00001",
        "-Infinity",
        "",
        "\\N",
        " ",
        "\\N",
        "\\N",
        "\\N",
        "infinity",
        "24:00:00",
        "00:00:00-12:00",
        "-infinity",
        "294276-12-31 23:59:59.999999+00",
        "PT-0.000001S",
        "null",
        "[]",
        r"\x",
        "happy",
        "-0.01",
        "{}",
        "{}",
        "{NaN,Infinity}",
        "{-infinity,NULL}",
        "\\N",
        "{}",
        "\\N",
    ];

    fn every_config(mode: &str) -> Config {
        let text = format!(
            "
source: {{ database: app, user: cdc, slot: s, publication: p }}
kafka: {{ bootstrapServers: 'k:9092' }}
entities:
  - name: Every
    table: public.every
    tenantColumn: tenant_id
    versionColumn: version
    userColumn: text
    streaming:
      topicPrefix: core.every
      eventPayloadMode: {mode}
"
        );
        Config::from_yaml_str(&text, "every.yaml").unwrap_or_else(|e| panic!("config: {e}"))
    }

    /// The binding and schema of `public.every` in `mode`.
    fn every_schema(mode: &str) -> (Arc<Relation>, Arc<Binding>, EntitySchema) {
        let relation = every();
        let binding = story::bind(&every_config(mode), &relation, &["id"]);
        let schema = entity_schema(&binding).unwrap_or_else(|e| panic!("schema: {e}"));
        (relation, binding, schema)
    }

    /// The changes a table sees: an insert, updates (one with unavailable values and no old
    /// row, one changing the key), and a delete.
    fn changes(relation: &Arc<Relation>, a: &[&str], b: &[&str]) -> Vec<Change> {
        let (a, b) = (story::row(relation, a), story::row(relation, b));
        let mut toasted = a.clone();
        for i in [14, 26, 28] {
            toasted[i] = Value::Unavailable;
        }
        let mut same_key = b.clone();
        same_key[0] = a[0].clone();
        let change = |kind, old: Option<&Row>, new: Option<&Row>| {
            story::change(relation, kind, 0, old.cloned(), new.cloned())
        };
        vec![
            change(ChangeKind::Insert, None, Some(&a)),
            change(ChangeKind::Insert, None, Some(&b)),
            change(ChangeKind::Update, Some(&a), Some(&same_key)),
            change(ChangeKind::Update, None, Some(&toasted)),
            change(ChangeKind::Update, Some(&b), Some(&toasted)),
            change(ChangeKind::Update, Some(&a), Some(&b)),
            change(ChangeKind::Delete, Some(&a), None),
            change(ChangeKind::Delete, Some(&b), None),
        ]
    }

    #[test]
    fn the_direct_writer_writes_apache_avros_bytes_for_every_type_change_and_mode() {
        for mode in ["minimal", "diff", "full"] {
            let (relation, binding, schema) = every_schema(mode);
            let mut event_count = 0;
            for change in changes(&relation, &EVERY_A, &EVERY_B) {
                event_count += assert_same_bytes(&binding, &schema, &change);
            }
            // Two key changes, each two events (delete half, create half).
            assert_eq!(event_count, 10, "{mode}");
        }
    }

    #[test]
    fn the_direct_writer_writes_the_story_orders_exact_bytes() {
        let binding = story::order_binding();
        let schema = entity_schema(&binding).unwrap_or_else(|e| panic!("schema: {e}"));
        let change = story::order_456_insert();
        let body = direct(&schema, &story::order_created(), &change);
        // The bytes of mod.rs's story_order_created_avro_bytes_are_exact.
        assert_eq!(
            hex::encode(&body),
            concat!(
                "16302f313642333734383a30184f7264657243726561746564f6010a4f726465720634353600",
                "020280e88e8e85ef9506022075736572406578616d706c652e636f6d000202900702f60102064e",
                "4557020427060208686967680202022075736572406578616d706c652e636f6d000000"
            )
        );
    }

    /// Every change type in every mode, including a key change and unavailable values,
    /// read back with apache-avro's reader as exactly the `Value` event_value builds.
    #[test]
    fn the_direct_writers_bytes_read_back_as_the_value_tree() {
        let products = story::products();
        let before = story::row(&products, &story::PRODUCT_42_BEFORE);
        let after = story::row(&products, &story::PRODUCT_42_AFTER);
        let mut moved = after.clone();
        moved[0] = Value::Int4(43);
        let mut toasted = after.clone();
        toasted[2] = Value::Unavailable;
        for mode in [PayloadMode::Minimal, PayloadMode::Diff, PayloadMode::Full] {
            let mut config = story::config();
            for entity in &mut config.entities {
                entity.streaming.event_payload_mode = mode;
            }
            let binding = story::bind(&config, &products, &["id"]);
            let schema = entity_schema(&binding).unwrap_or_else(|e| panic!("schema: {e}"));
            let changes = [
                (ChangeKind::Insert, None, Some(&after)),
                (ChangeKind::Update, Some(&before), Some(&after)),
                (ChangeKind::Update, Some(&before), Some(&moved)),
                (ChangeKind::Update, None, Some(&toasted)),
                (ChangeKind::Delete, Some(&before), None),
            ];
            for (kind, old, new) in changes {
                let change = story::change(&products, kind, 3, old.cloned(), new.cloned());
                let events = build_events(&binding, &change, None)
                    .unwrap_or_else(|e| panic!("{mode:?} {kind:?}: build: {e}"));
                for event in &events {
                    let (value, expected) = oracle(&schema, event, &change);
                    let written = direct(&schema, event, &change);
                    assert_eq!(written, expected, "{mode:?} {}", event.event_id);
                    assert_eq!(
                        read_back(&schema, &written),
                        value,
                        "{mode:?} {}",
                        event.event_id
                    );
                }
            }
        }
    }

    #[test]
    fn a_value_that_does_not_fit_is_a_mismatch_naming_the_column_and_nothing_is_written() {
        let (relation, binding, schema) = every_schema("full");
        let mut row = story::row(&relation, &EVERY_A);
        row[5] = Value::Text("not an int".to_owned());
        let change = story::change(&relation, ChangeKind::Insert, 0, None, Some(row));
        let events = build_events(&binding, &change, None).unwrap_or_else(|e| panic!("{e}"));
        let expected = ValueError::Mismatch {
            entity: "Every".to_owned(),
            event_id: events[0].event_id.clone(),
            column: "int".to_owned(),
            expected: "int4".to_owned(),
        };
        assert_eq!(
            event_value(&schema, &events[0], &change).err(),
            Some(expected.clone())
        );
        let mut out = vec![1, 2, 3];
        assert_eq!(
            write_event(&schema, &events[0], &change, &mut out),
            Err(expected)
        );
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn an_array_element_that_does_not_fit_is_a_mismatch() {
        let (relation, binding, schema) = every_schema("diff");
        let mut row = story::row(&relation, &EVERY_A);
        row[31] = Value::Array(Array {
            dims: vec![2],
            lower_bounds: vec![1],
            elements: vec![Value::Int4(1), Value::Bool(true)],
        });
        let change = story::change(&relation, ChangeKind::Insert, 0, None, Some(row));
        let events = build_events(&binding, &change, None).unwrap_or_else(|e| panic!("{e}"));
        let written = write_event(&schema, &events[0], &change, &mut Vec::new());
        assert!(
            matches!(&written, Err(ValueError::Mismatch { column, .. }) if column == "ints"),
            "{written:?}"
        );
    }

    #[test]
    fn a_body_the_schemas_mode_has_not_is_refused() {
        let (relation, binding, _) = every_schema("full");
        let (_, _, minimal) = every_schema("minimal");
        let row = story::row(&relation, &EVERY_A);
        let change = story::change(&relation, ChangeKind::Insert, 0, None, Some(row));
        let events = build_events(&binding, &change, None).unwrap_or_else(|e| panic!("{e}"));
        let written = write_event(&minimal, &events[0], &change, &mut Vec::new());
        assert!(
            matches!(&written, Err(ValueError::Body { mode, .. }) if mode == "minimal"),
            "{written:?}"
        );
    }

    /// A cell of `ty`: null, unavailable, or a value of the type (specials included).
    fn cell_strategy(ty: &PgType) -> BoxedStrategy<Value> {
        let value: BoxedStrategy<Value> = match ty {
            PgType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            PgType::Int2 => any::<i16>().prop_map(Value::Int2).boxed(),
            PgType::Int4 => any::<i32>().prop_map(Value::Int4).boxed(),
            PgType::Int8 => any::<i64>().prop_map(Value::Int8).boxed(),
            PgType::Oid => any::<u32>().prop_map(Value::Oid).boxed(),
            PgType::Float4 => any::<f32>().prop_map(Value::Float4).boxed(),
            PgType::Float8 => any::<f64>().prop_map(Value::Float8).boxed(),
            PgType::Numeric { .. } | PgType::Domain { .. } => prop_oneof![
                "-?[0-9]{1,6}(\\.[0-9]{1,4})?".prop_map(|t| FiniteNumeric::parse(&t)
                    .map_or(Value::Null, |n| Value::Numeric(Numeric::Finite(n)))),
                Just(Value::Numeric(Numeric::NaN)),
                Just(Value::Numeric(Numeric::NegInfinity)),
            ]
            .boxed(),
            PgType::Text | PgType::Varchar | PgType::Bpchar | PgType::Name | PgType::Char => {
                ".{0,12}".prop_map(Value::Text).boxed()
            }
            PgType::Json => ".{0,12}".prop_map(Value::Json).boxed(),
            PgType::Jsonb => ".{0,12}".prop_map(Value::Jsonb).boxed(),
            PgType::Uuid => "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                .prop_map(Value::Uuid)
                .boxed(),
            PgType::Enum { .. } => "[a-z ]{1,8}".prop_map(Value::Enum).boxed(),
            PgType::Date => prop_oneof![
                (-2_451_545..2_000_000i32).prop_map(|d| {
                    crate::source::value::FiniteDate::from_pg_days(d)
                        .map_or(Value::Null, |d| Value::Date(Date::Finite(d)))
                }),
                Just(Value::Date(Date::Infinity)),
            ]
            .boxed(),
            PgType::Time => (0..=86_400_000_000i64).prop_map(Value::Time).boxed(),
            PgType::TimeTz => (0..86_400_000_000i64, -50_400..50_400i32)
                .prop_map(|(micros, offset_seconds)| Value::TimeTz {
                    micros,
                    offset_seconds,
                })
                .boxed(),
            PgType::Timestamp | PgType::TimestampTz => {
                let timestamp = prop_oneof![
                    any::<i64>().prop_map(|m| {
                        crate::source::value::FiniteTimestamp::from_pg_micros(m / 16)
                            .map_or(Timestamp::Infinity, Timestamp::Finite)
                    }),
                    Just(Timestamp::NegInfinity),
                ];
                if matches!(ty, PgType::Timestamp) {
                    timestamp.prop_map(Value::Timestamp).boxed()
                } else {
                    timestamp.prop_map(Value::TimestampTz).boxed()
                }
            }
            PgType::Interval => (any::<i32>(), any::<i32>(), any::<i64>())
                .prop_map(|(months, days, micros)| {
                    Value::Interval(Interval {
                        months,
                        days,
                        micros,
                    })
                })
                .boxed(),
            PgType::Bytea => proptest::collection::vec(any::<u8>(), 0..16)
                .prop_map(Value::Bytea)
                .boxed(),
            PgType::Array { element, .. } => (
                proptest::collection::vec(cell_strategy(element), 0..5),
                -3..3i32,
            )
                .prop_map(|(elements, lower_bound)| {
                    let len = i32::try_from(elements.len()).unwrap_or(0);
                    let (dims, lower_bounds) = if len == 0 {
                        (vec![], vec![])
                    } else {
                        (vec![len], vec![lower_bound])
                    };
                    Value::Array(Array {
                        dims,
                        lower_bounds,
                        // An element is never unavailable, only a column is.
                        elements: elements
                            .into_iter()
                            .map(|e| match e {
                                Value::Unavailable => Value::Null,
                                e => e,
                            })
                            .collect(),
                    })
                })
                .boxed(),
            PgType::Other { name } => {
                let name = name.clone();
                ".{0,12}"
                    .prop_map(move |text| Value::Unknown {
                        type_name: name.clone(),
                        text,
                    })
                    .boxed()
            }
        };
        prop_oneof![
            1 => Just(Value::Null),
            1 => Just(Value::Unavailable),
            6 => value,
        ]
        .boxed()
    }

    /// A row of `public.every` whose key and tenant are set (an event needs them).
    fn row_strategy(relation: &Relation) -> impl Strategy<Value = Row> {
        let cells: Vec<BoxedStrategy<Value>> = relation
            .columns
            .iter()
            .map(|c| cell_strategy(&c.pg_type))
            .collect();
        (cells, 1..4i64, any::<i64>()).prop_map(|(mut row, id, tenant)| {
            row[0] = Value::Int8(id);
            row[1] = Value::Int8(tenant);
            row
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Generated rows of every type, as every change type in every mode: the direct
        /// writer's bytes are apache-avro's.
        #[test]
        fn generated_rows_encode_as_apache_avro_encodes_them(
            old in row_strategy(&every()),
            new in row_strategy(&every()),
            kind in prop_oneof![
                Just(ChangeKind::Insert),
                Just(ChangeKind::Update),
                Just(ChangeKind::Delete),
            ],
            with_old in any::<bool>(),
        ) {
            for mode in ["minimal", "diff", "full"] {
                let (relation, binding, schema) = every_schema(mode);
                let (old, new) = match kind {
                    ChangeKind::Insert => (None, Some(new.clone())),
                    ChangeKind::Delete => (Some(old.clone()), None),
                    _ => (with_old.then(|| old.clone()), Some(new.clone())),
                };
                let change = story::change(&relation, kind, 0, old, new);
                // The key and the tenant are always set, so every change makes events.
                let events = build_events(&binding, &change, None)
                    .unwrap_or_else(|e| panic!("{mode} {kind:?}: build: {e}"));
                for event in &events {
                    let (_, expected) = oracle(&schema, event, &change);
                    prop_assert_eq!(direct(&schema, event, &change), expected, "{}", mode);
                }
            }
        }
    }
}
