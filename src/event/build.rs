//! Building entity events from bound changes.

use serde_json::{json, Map, Value as Json};

use crate::config::{PayloadMode, Priority};
use crate::error::Disposition;
use crate::event::{json_text, topic_name, Body, ChangeType, EntityEvent, Position, TopicError};
use crate::model::{Binding, TenantSource, TransactionContext};
use crate::source::change::{commit_time_rfc3339, Change, ChangeKind, Row};
use crate::source::value::Value;

/// Why a change could not become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A row without a tenant never goes out without tenantId: it is dead-lettered.
    #[error("entity {entity} event {event_id}: no tenant ({reason})")]
    NoTenant {
        /// The entity.
        entity: String,
        /// The event's id.
        event_id: String,
        /// Why: the column is NULL, unavailable, or the fixed tenant is empty.
        reason: String,
    },
    /// The key cannot be read from the row (a key column NULL or unavailable).
    #[error("entity {entity} event {event_id}: key column {column} is {state}")]
    NoKey {
        /// The entity.
        entity: String,
        /// The event's id.
        event_id: String,
        /// The key column.
        column: String,
        /// null or unavailable.
        state: &'static str,
    },
    /// The entity's topic name is invalid.
    #[error(transparent)]
    Topic(#[from] TopicError),
}

impl BuildError {
    /// No tenant or no key: dead-letter the one event; a bad topic: the config is wrong.
    pub fn disposition(&self) -> Disposition {
        match self {
            BuildError::NoTenant { .. } | BuildError::NoKey { .. } => Disposition::DeadLetter,
            BuildError::Topic(_) => Disposition::Halt,
        }
    }

    /// The id of the event that could not be built, for the dead-letter record.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            BuildError::NoTenant { event_id, .. } | BuildError::NoKey { event_id, .. } => {
                Some(event_id)
            }
            BuildError::Topic(_) => None,
        }
    }
}

/// Outcome of classifying an event's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The priority.
    pub priority: Priority,
    /// The priority column held a value that is no priority name (counted by the caller).
    pub unknown_value: bool,
}

/// The events of one change: one, or two for an update that changes the key (a delete of
/// the old key, then a create of the new one, so that a compacted topic keeps no stale row
/// under the old key).
pub fn build_events(
    binding: &Binding,
    change: &Change,
    context: Option<&TransactionContext>,
) -> Result<Vec<EntityEvent>, BuildError> {
    let position = Position {
        commit_lsn: change.commit_lsn,
        index: change.index,
    };
    let base_id = format!("{}:{}", change.commit_lsn, change.index);
    match (change.kind, &change.old, &change.new) {
        (ChangeKind::Insert, _, Some(new)) => Ok(vec![event(
            binding,
            change,
            context,
            ChangeType::Create,
            None,
            Some(new),
            base_id,
            position,
        )?]),
        (ChangeKind::Delete, Some(old), _) => Ok(vec![event(
            binding,
            change,
            context,
            ChangeType::Delete,
            Some(old),
            None,
            base_id,
            position,
        )?]),
        (ChangeKind::Update, old, Some(new)) => {
            let key_changed = old.as_ref().is_some_and(|old| {
                binding.key.iter().any(|&i| {
                    let (o, n) = (old.get(i), new.get(i));
                    !matches!(o, Some(Value::Unavailable) | None) && o != n
                })
            });
            match old {
                Some(old) if key_changed => Ok(vec![
                    event(
                        binding,
                        change,
                        context,
                        ChangeType::Delete,
                        Some(old),
                        None,
                        format!("{base_id}:delete"),
                        position,
                    )?,
                    event(
                        binding,
                        change,
                        context,
                        ChangeType::Create,
                        None,
                        Some(new),
                        format!("{base_id}:create"),
                        position,
                    )?,
                ]),
                _ => Ok(vec![event(
                    binding,
                    change,
                    context,
                    ChangeType::Update,
                    old.as_ref(),
                    Some(new),
                    base_id,
                    position,
                )?]),
            }
        }
        // pgoutput always sends the images these kinds need; a change without them has
        // nothing to publish and is reported by the caller's count.
        _ => Ok(Vec::new()),
    }
}

#[allow(clippy::too_many_arguments)]
fn event(
    binding: &Binding,
    change: &Change,
    context: Option<&TransactionContext>,
    change_type: ChangeType,
    old: Option<&Row>,
    new: Option<&Row>,
    event_id: String,
    position: Position,
) -> Result<EntityEvent, BuildError> {
    let entity = &binding.entity;
    let relation = &binding.relation;
    // The row that identifies the entity: the new one, or the old one for a delete.
    let current = new.or(old).map(Vec::as_slice).unwrap_or_default();
    let tenant_id = tenant(binding, current, &event_id)?;
    let entity_id = entity_id(binding, current, &event_id)?;
    let version = binding
        .version
        .and_then(|i| current.get(i))
        .and_then(Value::to_json)
        .unwrap_or(Json::Null);
    let user = context.and_then(|c| c.user.clone()).or_else(|| {
        binding
            .user
            .and_then(|i| current.get(i))
            .and_then(Value::to_json)
            .filter(|v| !v.is_null())
            .map(|v| json_text(&v))
    });
    let mode = entity.streaming.event_payload_mode;
    let mut unavailable = Vec::new();
    let row = |r: &Row, unavailable: &mut Vec<String>| {
        let (json, missing) = relation.row_json(r);
        for m in missing {
            if !unavailable.contains(&m) {
                unavailable.push(m);
            }
        }
        match json {
            Json::Object(map) => map,
            _ => Map::new(),
        }
    };
    let body = match (mode, change_type) {
        (PayloadMode::Minimal, _) => Body::Minimal,
        (_, ChangeType::Create) => {
            let payload = new.map(|r| row(r, &mut unavailable)).unwrap_or_default();
            let full_snapshot = (mode == PayloadMode::Full).then(|| payload.clone());
            Body::Create {
                payload,
                full_snapshot,
            }
        }
        (_, ChangeType::Update) => {
            let changes = diff(binding, old, new, &mut unavailable);
            let full_snapshot = if mode == PayloadMode::Full {
                new.map(|r| row(r, &mut unavailable))
            } else {
                None
            };
            Body::Update {
                changes,
                full_snapshot,
            }
        }
        (_, ChangeType::Delete) => {
            let key = key_object(binding, current);
            let full_snapshot = if mode == PayloadMode::Full {
                old.map(|r| row(r, &mut unavailable))
            } else {
                None
            };
            Body::Delete { key, full_snapshot }
        }
    };
    let classified = classify(binding, current, change_type, context);
    Ok(EntityEvent {
        key: format!("{}:{}", json_text(&tenant_id), entity_id),
        topic: topic_name(entity, change_type)?,
        event_type: format!("{}{}", entity.name, change_type.past()),
        entity_type: entity.name.clone(),
        timestamp: commit_time_rfc3339(change.commit_ts),
        correlation_id: context.and_then(|c| c.correlation_id.clone()),
        priority: classified.priority,
        event_id,
        position,
        tenant_id,
        entity_id,
        change_type,
        version,
        user,
        body,
        unavailable,
    })
}

fn tenant(binding: &Binding, row: &[Value], event_id: &str) -> Result<Json, BuildError> {
    let no_tenant = |reason: String| BuildError::NoTenant {
        entity: binding.entity.name.clone(),
        event_id: event_id.to_owned(),
        reason,
    };
    match &binding.tenant {
        TenantSource::Fixed(value) if value.is_empty() => {
            Err(no_tenant("the fixed tenantId is empty".to_owned()))
        }
        TenantSource::Fixed(value) => Ok(Json::from(value.clone())),
        TenantSource::Column(i) => {
            let name = binding
                .relation
                .columns
                .get(*i)
                .map_or("?", |c| c.name.as_str());
            match row.get(*i) {
                Some(Value::Null) => Err(no_tenant(format!("column {name} is null"))),
                Some(Value::Unavailable) | None => {
                    Err(no_tenant(format!("column {name} is unavailable")))
                }
                Some(value) => value
                    .to_json()
                    .ok_or_else(|| no_tenant(format!("column {name} is unavailable"))),
            }
        }
    }
}

fn entity_id(binding: &Binding, row: &[Value], event_id: &str) -> Result<String, BuildError> {
    let mut parts = Vec::with_capacity(binding.key.len());
    for &i in &binding.key {
        let column = binding
            .relation
            .columns
            .get(i)
            .map_or("?", |c| c.name.as_str());
        let no_key = |state| BuildError::NoKey {
            entity: binding.entity.name.clone(),
            event_id: event_id.to_owned(),
            column: column.to_owned(),
            state,
        };
        match row.get(i) {
            Some(Value::Null) => return Err(no_key("null")),
            Some(Value::Unavailable) | None => return Err(no_key("unavailable")),
            Some(value) => parts.push(value.to_json().ok_or_else(|| no_key("unavailable"))?),
        }
    }
    Ok(match parts.as_slice() {
        [one] => json_text(one),
        _ => Json::Array(parts).to_string(),
    })
}

fn key_object(binding: &Binding, row: &[Value]) -> Map<String, Json> {
    binding
        .key
        .iter()
        .filter_map(|&i| {
            let column = binding.relation.columns.get(i)?;
            Some((column.name.clone(), row.get(i)?.to_json()?))
        })
        .collect()
}

/// The fields whose values differ, compared as emitted (so a change of numeric scale is a
/// change and NaN equals NaN). A value unavailable on either side cannot be compared and is
/// left out. Without an old row every available new value is listed with only `new`.
fn diff(
    binding: &Binding,
    old: Option<&Row>,
    new: Option<&Row>,
    unavailable: &mut Vec<String>,
) -> Map<String, Json> {
    let mut changes = Map::new();
    let Some(new) = new else { return changes };
    for (i, column) in binding.relation.columns.iter().enumerate() {
        let Some(n) = new.get(i) else { continue };
        let Some(new_json) = n.to_json() else {
            if !unavailable.contains(&column.name) {
                unavailable.push(column.name.clone());
            }
            continue;
        };
        match old.map(|o| o.get(i)) {
            None => {
                changes.insert(column.name.clone(), json!({ "new": new_json }));
            }
            Some(Some(o)) => {
                let Some(old_json) = o.to_json() else {
                    continue;
                };
                if o != n {
                    changes.insert(
                        column.name.clone(),
                        json!({ "old": old_json, "new": new_json }),
                    );
                }
            }
            Some(None) => {}
        }
    }
    changes
}

/// The priority, by the rules in order: the transaction context; the entity's priority
/// column (case-insensitive); the override for the change type; the entity's default;
/// NORMAL. An unknown value in the priority column falls back to the entity's default.
pub fn classify(
    binding: &Binding,
    row: &[Value],
    change_type: ChangeType,
    context: Option<&TransactionContext>,
) -> Classified {
    let streaming = &binding.entity.streaming;
    let default = streaming.default_priority.unwrap_or(Priority::Normal);
    if let Some(priority) = context.and_then(|c| c.priority) {
        return Classified {
            priority,
            unknown_value: false,
        };
    }
    if let Some(value) = binding.priority_field.and_then(|i| row.get(i)) {
        if let Some(text) = value
            .to_json()
            .filter(|v| !v.is_null())
            .map(|v| json_text(&v))
        {
            return match Priority::ALL
                .into_iter()
                .find(|p| p.as_str().eq_ignore_ascii_case(&text))
            {
                Some(priority) => Classified {
                    priority,
                    unknown_value: false,
                },
                None => Classified {
                    priority: default,
                    unknown_value: true,
                },
            };
        }
    }
    let overrides = &streaming.priority_overrides;
    let by_type = match change_type {
        ChangeType::Create => overrides.create,
        ChangeType::Update => overrides.update,
        ChangeType::Delete => overrides.delete,
    };
    Classified {
        priority: by_type.unwrap_or(default),
        unknown_value: false,
    }
}
