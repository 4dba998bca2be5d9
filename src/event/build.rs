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

/// The events of one change: one, or two for an update that changes the record key (the
/// entity's key or its tenant): a delete under the old key, then a create under the new one,
/// so that a compacted topic keeps no stale row under the old key.
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
            // The record key is `tenantId:entityId`, so a row moved to another tenant
            // changes its record key just as a new primary key does.
            let tenant_column = match binding.tenant {
                TenantSource::Column(i) => Some(i),
                TenantSource::Fixed(_) => None,
            };
            let key_changed = old.as_ref().is_some_and(|old| {
                binding.key.iter().copied().chain(tenant_column).any(|i| {
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
    // The row that identifies the entity: the new one, or the old one for a delete (also
    // the delete half of a key change, whose key is the old one).
    let identity = match change_type {
        ChangeType::Delete => old,
        ChangeType::Create | ChangeType::Update => new,
    }
    .map(Vec::as_slice)
    .unwrap_or_default();
    // What describes the change itself (version, user, priority) comes from the newest
    // image there is: for the delete half of a key change that is the new row, which says
    // who changed the key and at which version; under REPLICA IDENTITY DEFAULT the old
    // row would not even have these columns.
    let latest = change
        .new
        .as_ref()
        .or(change.old.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let tenant_id = tenant(binding, identity, change.new.as_deref(), &event_id)?;
    let entity_id = entity_id(binding, identity, &event_id)?;
    let version = binding
        .version
        .and_then(|i| latest.get(i))
        .and_then(Value::to_json)
        .unwrap_or(Json::Null);
    let user = context.and_then(|c| c.user.clone()).or_else(|| {
        binding
            .user
            .and_then(|i| latest.get(i))
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
            let key = key_object(binding, identity);
            let full_snapshot = if mode == PayloadMode::Full {
                old.map(|r| row(r, &mut unavailable))
            } else {
                None
            };
            Body::Delete { key, full_snapshot }
        }
    };
    let classified = classify(binding, latest, change_type, context);
    Ok(EntityEvent {
        key: format!("{}:{}", json_text(&tenant_id), entity_id),
        topic: topic_name(entity, change_type)?,
        event_type: [entity.name.as_str(), change_type.past()].concat(),
        entity_type: entity.name.clone(),
        timestamp: commit_time_rfc3339(change.commit_ts),
        correlation_id: context.and_then(|c| c.correlation_id.clone()),
        priority: classified.priority,
        unknown_priority: classified.unknown_value,
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

/// The tenant from `row`; when the column is not in it (the old row of a key change under
/// REPLICA IDENTITY DEFAULT), from `fallback`, the new row of the same change.
fn tenant(
    binding: &Binding,
    row: &[Value],
    fallback: Option<&[Value]>,
    event_id: &str,
) -> Result<Json, BuildError> {
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
            let value = match row.get(*i) {
                Some(Value::Unavailable) | None => fallback.and_then(|r| r.get(*i)),
                found => found,
            };
            match value.and_then(|v| v.to_json().map(|json| (v, json))) {
                Some((Value::Null, _)) => Err(no_tenant(format!("column {name} is null"))),
                Some((_, json)) => Ok(json),
                None => Err(no_tenant(format!(
                    "column {name} is not in the row: the table's REPLICA IDENTITY is not FULL"
                ))),
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
/// change and NaN equals NaN). A new value that is unavailable (unchanged TOAST without an
/// old row) is left out and listed in `unavailable`. Where the old value is unknown (no old
/// row, or a column outside the replica identity) the field is listed with only `new`.
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
        if matches!(n, Value::Unavailable) {
            if !unavailable.contains(&column.name) {
                unavailable.push(column.name.clone());
            }
            continue;
        }
        // Compared before anything is converted: most fields of an update are unchanged,
        // and their JSON values would be built only to be dropped.
        let old_json = match old.map(|o| o.get(i)) {
            None => None,
            Some(None) => continue,
            Some(Some(o)) if o == n => continue,
            // Unavailable in the old row (not part of REPLICA IDENTITY DEFAULT/INDEX): the
            // old value is unknown, so the field is listed as without an old row.
            Some(Some(o)) => o.to_json(),
        };
        // `n` is available, so it has a JSON value.
        let Some(new_json) = n.to_json() else {
            continue;
        };
        let entry = match old_json {
            Some(old_json) => json!({ "old": old_json, "new": new_json }),
            None => json!({ "new": new_json }),
        };
        changes.insert(column.name.clone(), entry);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::event::story::{
        self, assert_json, bind, change, column, numeric_typmod, orders, products, relation, row,
        COMMIT_LSN, ORDER_456, PRODUCT_42_AFTER, PRODUCT_42_BEFORE,
    };
    use crate::source::change::Relation;
    use crate::source::pgoutput::ReplicaIdentity;

    /// Builds the events of a change, panicking with the error.
    fn events(
        binding: &Binding,
        change: &Change,
        context: Option<&TransactionContext>,
    ) -> Vec<EntityEvent> {
        build_events(binding, change, context)
            .unwrap_or_else(|e| panic!("change {} builds: {e}", change.index))
    }

    /// The one event of a change.
    fn one(binding: &Binding, change: &Change) -> EntityEvent {
        let mut built = events(binding, change, None);
        assert_eq!(built.len(), 1, "one event: {built:?}");
        built.remove(0)
    }

    /// The build error of a change.
    fn error(binding: &Binding, change: &Change) -> BuildError {
        match build_events(binding, change, None) {
            Ok(built) => panic!("change {} should fail, built {built:?}", change.index),
            Err(e) => e,
        }
    }

    /// A config whose entities are `entities` (YAML list items, indented by 2).
    fn config_of(entities: &str) -> Config {
        let text = format!(
            "source: {{ database: app, user: cdc, slot: s, publication: p }}\n\
             kafka: {{ bootstrapServers: 'k:9092' }}\nentities:\n{entities}"
        );
        Config::from_yaml_str(&text, "case.yaml")
            .unwrap_or_else(|e| panic!("case config loads: {e}\n---\n{text}"))
    }

    /// The same relation under another replica identity.
    fn with_identity(relation: &Arc<Relation>, identity: ReplicaIdentity) -> Arc<Relation> {
        Arc::new(Relation {
            replica_identity: identity,
            ..(**relation).clone()
        })
    }

    #[test]
    fn story_order_created_in_diff_mode() {
        let orders = orders();
        let binding = bind(&story::config(), &orders, &["id"]);
        let created = change(
            &orders,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&orders, &ORDER_456)),
        );
        let event = one(&binding, &created);
        assert_json(
            &event.to_json(),
            r#"{"eventId":"0/16B3748:0","eventType":"OrderCreated","tenantId":123,
                "entityType":"Order","entityId":"456","changeType":"CREATE","version":1,
                "timestamp":"2025-01-15T10:30:00Z","user":"user@example.com",
                "payload":{"id":456,"tenant_id":123,"status":"NEW","total":99.90,
                           "priority":"high","version":1,"updated_by":"user@example.com"}}"#,
        );
        assert_eq!(event.topic, "core.orders.order.created");
        assert_eq!(event.key, "123:456");
        assert_eq!(
            event.priority,
            Priority::High,
            "the row's priority column, any case"
        );
        assert!(!event.unknown_priority);
        assert_eq!(
            event.position,
            Position {
                commit_lsn: COMMIT_LSN,
                index: 0
            }
        );
    }

    #[test]
    fn story_product_updated_in_full_mode() {
        let products = products();
        let binding = bind(&story::config(), &products, &["id"]);
        let updated = change(
            &products,
            ChangeKind::Update,
            1,
            Some(row(&products, &PRODUCT_42_BEFORE)),
            Some(row(&products, &PRODUCT_42_AFTER)),
        );
        let event = one(&binding, &updated);
        assert_json(
            &event.to_json(),
            r#"{"eventId":"0/16B3748:1","eventType":"ProductUpdated","tenantId":123,
                "entityType":"Product","entityId":"42","changeType":"UPDATE","version":4,
                "timestamp":"2025-01-15T10:30:00Z","user":null,
                "changes":{"price":{"old":120.00,"new":150.00},"version":{"old":3,"new":4}},
                "fullSnapshot":{"id":42,"tenant_id":123,"name":"Widget","price":150.00,
                                "version":4}}"#,
        );
        assert_eq!(event.topic, "core.catalog.product.updated");
        assert_eq!(event.key, "123:42");
        assert_eq!(event.priority, Priority::Normal);
    }

    #[test]
    fn story_order_updated_in_diff_mode_has_null_full_snapshot() {
        let orders = orders();
        let binding = bind(&story::config(), &orders, &["id"]);
        let mut paid = ORDER_456;
        paid[2] = "PAID";
        paid[5] = "2";
        let updated = change(
            &orders,
            ChangeKind::Update,
            0,
            Some(row(&orders, &ORDER_456)),
            Some(row(&orders, &paid)),
        );
        assert_json(
            &one(&binding, &updated).to_json(),
            r#"{"eventId":"0/16B3748:0","eventType":"OrderUpdated","tenantId":123,
                "entityType":"Order","entityId":"456","changeType":"UPDATE","version":2,
                "timestamp":"2025-01-15T10:30:00Z","user":"user@example.com",
                "changes":{"status":{"old":"NEW","new":"PAID"},"version":{"old":1,"new":2}},
                "fullSnapshot":null}"#,
        );
    }

    #[test]
    fn story_order_deleted_carries_the_key_in_diff_mode() {
        let orders = orders();
        let binding = bind(&story::config(), &orders, &["id"]);
        let deleted = change(
            &orders,
            ChangeKind::Delete,
            2,
            Some(row(&orders, &ORDER_456)),
            None,
        );
        let event = one(&binding, &deleted);
        assert_json(
            &event.to_json(),
            r#"{"eventId":"0/16B3748:2","eventType":"OrderDeleted","tenantId":123,
                "entityType":"Order","entityId":"456","changeType":"DELETE","version":1,
                "timestamp":"2025-01-15T10:30:00Z","user":"user@example.com",
                "key":{"id":456}}"#,
        );
        assert_eq!(event.topic, "core.orders.order.deleted");
    }

    #[test]
    fn deleted_in_full_mode_snapshots_the_old_row() {
        let products = products();
        let binding = bind(&story::config(), &products, &["id"]);
        let deleted = change(
            &products,
            ChangeKind::Delete,
            0,
            Some(row(&products, &PRODUCT_42_AFTER)),
            None,
        );
        assert_json(
            &one(&binding, &deleted).to_json(),
            r#"{"eventId":"0/16B3748:0","eventType":"ProductDeleted","tenantId":123,
                "entityType":"Product","entityId":"42","changeType":"DELETE","version":4,
                "timestamp":"2025-01-15T10:30:00Z","user":null,"key":{"id":42},
                "fullSnapshot":{"id":42,"tenant_id":123,"name":"Widget","price":150.00,
                                "version":4}}"#,
        );
    }

    #[test]
    fn created_in_full_mode_has_payload_and_snapshot() {
        let products = products();
        let binding = bind(&story::config(), &products, &["id"]);
        let created = change(
            &products,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&products, &PRODUCT_42_BEFORE)),
        );
        assert_json(
            &one(&binding, &created).to_json(),
            r#"{"eventId":"0/16B3748:0","eventType":"ProductCreated","tenantId":123,
                "entityType":"Product","entityId":"42","changeType":"CREATE","version":3,
                "timestamp":"2025-01-15T10:30:00Z","user":null,
                "payload":{"id":42,"tenant_id":123,"name":"Widget","price":120.00,"version":3},
                "fullSnapshot":{"id":42,"tenant_id":123,"name":"Widget","price":120.00,
                                "version":3}}"#,
        );
    }

    /// `binding` with its entity's payload mode replaced.
    fn in_mode(binding: &Binding, mode: PayloadMode) -> Binding {
        let mut entity = (*binding.entity).clone();
        entity.streaming.event_payload_mode = mode;
        Binding {
            entity: Arc::new(entity),
            ..binding.clone()
        }
    }

    #[test]
    fn minimal_mode_carries_no_row_data() {
        let orders = orders();
        let binding = in_mode(
            &bind(&story::config(), &orders, &["id"]),
            PayloadMode::Minimal,
        );
        let mut paid = ORDER_456;
        paid[2] = "PAID";
        let changes = [
            change(
                &orders,
                ChangeKind::Insert,
                0,
                None,
                Some(row(&orders, &ORDER_456)),
            ),
            change(
                &orders,
                ChangeKind::Update,
                1,
                Some(row(&orders, &ORDER_456)),
                Some(row(&orders, &paid)),
            ),
            change(
                &orders,
                ChangeKind::Delete,
                2,
                Some(row(&orders, &paid)),
                None,
            ),
        ];
        let json: Vec<Json> = changes.iter().map(|c| one(&binding, c).to_json()).collect();
        assert_json(
            &Json::Array(json),
            r#"[{"eventId":"0/16B3748:0","eventType":"OrderCreated","tenantId":123,
                 "entityType":"Order","entityId":"456","changeType":"CREATE","version":1,
                 "timestamp":"2025-01-15T10:30:00Z","user":"user@example.com"},
                {"eventId":"0/16B3748:1","eventType":"OrderUpdated","tenantId":123,
                 "entityType":"Order","entityId":"456","changeType":"UPDATE","version":1,
                 "timestamp":"2025-01-15T10:30:00Z","user":"user@example.com"},
                {"eventId":"0/16B3748:2","eventType":"OrderDeleted","tenantId":123,
                 "entityType":"Order","entityId":"456","changeType":"DELETE","version":1,
                 "timestamp":"2025-01-15T10:30:00Z","user":"user@example.com"}]"#,
        );
    }

    #[test]
    fn case_01_nan_to_nan_is_no_change_and_infinity_is_a_string() {
        let config = config_of(
            "  - name: Measure\n    table: case01.measure\n    tenantId: acme\n    \
             streaming: { topicPrefix: cases }\n",
        );
        let measure = relation(
            20_001,
            "case01",
            "measure",
            vec![
                column("id", 23, -1),
                column("free_num", 1700, -1),
                column("bound_num", 1700, numeric_typmod(10, 2)),
                column("note", 25, -1),
            ],
        );
        let binding = bind(&config, &measure, &["id"]);
        let nan = ["1", "NaN", "NaN", "both NaN"];
        let created = change(
            &measure,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&measure, &nan)),
        );
        let event = one(&binding, &created);
        assert_json(
            &event.to_json(),
            r#"{"eventId":"0/16B3748:0","eventType":"MeasureCreated","tenantId":"acme",
                "entityType":"Measure","entityId":"1","changeType":"CREATE","version":null,
                "timestamp":"2025-01-15T10:30:00Z","user":null,
                "payload":{"id":1,"free_num":"NaN","bound_num":"NaN","note":"both NaN"}}"#,
        );
        assert_eq!(event.key, "acme:1", "the fixed tenant is in the key too");
        let minus = ["3", "-Infinity", "0.00", "minus infinity, signed zero"];
        let created = change(
            &measure,
            ChangeKind::Insert,
            2,
            None,
            Some(row(&measure, &minus)),
        );
        assert_json(
            &Json::Object(match one(&binding, &created).body {
                Body::Create { payload, .. } => payload,
                other => panic!("a create: {other:?}"),
            }),
            r#"{"id":3,"free_num":"-Infinity","bound_num":0.00,
                "note":"minus infinity, signed zero"}"#,
        );
        let same = change(
            &measure,
            ChangeKind::Update,
            3,
            Some(row(&measure, &nan)),
            Some(row(&measure, &nan)),
        );
        assert_eq!(
            one(&binding, &same).body,
            Body::Update {
                changes: Map::new(),
                full_snapshot: None
            },
            "NaN -> NaN is no change"
        );
        let finite = change(
            &measure,
            ChangeKind::Update,
            4,
            Some(row(&measure, &["2", "Infinity", "1.50", "plus infinity"])),
            Some(row(&measure, &["2", "42", "1.50", "finite now"])),
        );
        assert_json(
            &one(&binding, &finite).to_json()["changes"],
            r#"{"free_num":{"old":"Infinity","new":42},
                "note":{"old":"plus infinity","new":"finite now"}}"#,
        );
    }

    #[test]
    fn case_01_a_change_of_numeric_scale_is_a_change() {
        let config = config_of(
            "  - name: Measure\n    table: case01.measure\n    tenantId: acme\n    \
             streaming: { topicPrefix: cases }\n",
        );
        let measure = relation(
            20_001,
            "case01",
            "measure",
            vec![column("id", 23, -1), column("free_num", 1700, -1)],
        );
        let binding = bind(&config, &measure, &["id"]);
        let rescaled = change(
            &measure,
            ChangeKind::Update,
            0,
            Some(row(&measure, &["1", "200"])),
            Some(row(&measure, &["1", "200.000"])),
        );
        assert_json(
            &one(&binding, &rescaled).to_json()["changes"],
            r#"{"free_num":{"old":200,"new":200.000}}"#,
        );
    }

    /// `case14.article(_def) (id int primary key, title text, body text)`.
    fn article(identity: ReplicaIdentity) -> (Arc<Binding>, Arc<Relation>) {
        let config = config_of(
            "  - name: Article\n    table: case14.article\n    tenantId: acme\n    \
             streaming: { topicPrefix: cases, eventPayloadMode: full }\n",
        );
        let article = with_identity(
            &relation(
                20_014,
                "case14",
                "article",
                vec![
                    column("id", 23, -1),
                    column("title", 25, -1),
                    column("body", 25, -1),
                ],
            ),
            identity,
        );
        (bind(&config, &article, &["id"]), article)
    }

    #[test]
    fn case_14_unchanged_toast_without_old_row_is_listed_unavailable() {
        let (binding, article) = article(ReplicaIdentity::Default);
        let update = change(
            &article,
            ChangeKind::Update,
            0,
            None,
            Some(row(&article, &["1", "v2", "\\u"])),
        );
        assert_json(
            &one(&binding, &update).to_json(),
            r#"{"eventId":"0/16B3748:0","eventType":"ArticleUpdated","tenantId":"acme",
                "entityType":"Article","entityId":"1","changeType":"UPDATE","version":null,
                "timestamp":"2025-01-15T10:30:00Z","user":null,
                "changes":{"id":{"new":1},"title":{"new":"v2"}},
                "fullSnapshot":{"id":1,"title":"v2"},
                "unavailable":["body"]}"#,
        );
    }

    #[test]
    fn case_14_unchanged_toast_under_full_is_no_change() {
        let (binding, article) = article(ReplicaIdentity::Full);
        let body = "0123456789abcdef".repeat(640);
        let update = change(
            &article,
            ChangeKind::Update,
            0,
            Some(row(&article, &["1", "v1", &body])),
            // The source fills the unchanged value from the old tuple.
            Some(row(&article, &["1", "v2", &body])),
        );
        let event = one(&binding, &update);
        let json = event.to_json();
        assert_json(&json["changes"], r#"{"title":{"old":"v1","new":"v2"}}"#);
        assert_eq!(
            json["fullSnapshot"]["body"].as_str().map(str::len),
            Some(10_240)
        );
        assert!(event.unavailable.is_empty(), "{:?}", event.unavailable);
    }

    #[test]
    fn update_without_old_row_lists_every_new_field_with_only_new() {
        let orders = with_identity(&orders(), ReplicaIdentity::Default);
        let binding = bind(&story::config(), &orders, &["id"]);
        let update = change(
            &orders,
            ChangeKind::Update,
            0,
            None,
            Some(row(&orders, &ORDER_456)),
        );
        assert_json(
            &one(&binding, &update).to_json()["changes"],
            r#"{"id":{"new":456},"tenant_id":{"new":123},"status":{"new":"NEW"},
                "total":{"new":99.90},"priority":{"new":"high"},"version":{"new":1},
                "updated_by":{"new":"user@example.com"}}"#,
        );
    }

    #[test]
    fn case_16_identity_change_by_index_lists_unknown_old_values_with_only_new() {
        // REPLICA IDENTITY USING INDEX on code: the old row has code only, the key is id.
        let config = config_of(
            "  - name: ByIndex\n    table: case16.by_index\n    tenantId: acme\n    \
             streaming: { topicPrefix: cases }\n",
        );
        let by_index = with_identity(
            &relation(
                20_016,
                "case16",
                "by_index",
                vec![
                    column("id", 23, -1),
                    column("code", 25, -1),
                    column("qty", 23, -1),
                ],
            ),
            ReplicaIdentity::Index,
        );
        let binding = bind(&config, &by_index, &["id"]);
        let update = change(
            &by_index,
            ChangeKind::Update,
            0,
            Some(row(&by_index, &["\\u", "k1", "\\u"])),
            Some(row(&by_index, &["1", "k2", "5"])),
        );
        let event = one(&binding, &update);
        assert_json(
            &event.to_json()["changes"],
            r#"{"id":{"new":1},"code":{"old":"k1","new":"k2"},"qty":{"new":5}}"#,
        );
        assert_eq!(
            event.change_type,
            ChangeType::Update,
            "the key (id) did not change"
        );
    }

    #[test]
    fn case_21_no_op_update_still_emits_empty_changes() {
        let orders = orders();
        let binding = bind(&story::config(), &orders, &["id"]);
        let same = change(
            &orders,
            ChangeKind::Update,
            7,
            Some(row(&orders, &ORDER_456)),
            Some(row(&orders, &ORDER_456)),
        );
        let event = one(&binding, &same);
        assert_eq!(event.event_id, "0/16B3748:7");
        assert_json(&event.to_json()["changes"], "{}");
    }

    #[test]
    fn case_16_key_change_under_full_is_delete_then_create() {
        let config = config_of(
            "  - name: WithPk\n    table: case16.with_pk\n    tenantId: acme\n    \
             streaming: { topicPrefix: cases, topicPerEntity: true }\n",
        );
        let with_pk = relation(
            20_017,
            "case16",
            "with_pk",
            vec![
                column("id", 23, -1),
                column("code", 25, -1),
                column("qty", 23, -1),
            ],
        );
        let binding = bind(&config, &with_pk, &["id"]);
        let moved = change(
            &with_pk,
            ChangeKind::Update,
            5,
            Some(row(&with_pk, &["1", "a", "1"])),
            Some(row(&with_pk, &["10", "a", "1"])),
        );
        let built = events(&binding, &moved, None);
        let json: Vec<Json> = built.iter().map(EntityEvent::to_json).collect();
        assert_json(
            &Json::Array(json),
            r#"[{"eventId":"0/16B3748:5:delete","eventType":"WithPkDeleted","tenantId":"acme",
                 "entityType":"WithPk","entityId":"1","changeType":"DELETE","version":null,
                 "timestamp":"2025-01-15T10:30:00Z","user":null,"key":{"id":1}},
                {"eventId":"0/16B3748:5:create","eventType":"WithPkCreated","tenantId":"acme",
                 "entityType":"WithPk","entityId":"10","changeType":"CREATE","version":null,
                 "timestamp":"2025-01-15T10:30:00Z","user":null,
                 "payload":{"id":10,"code":"a","qty":1}}]"#,
        );
        let keys: Vec<&str> = built.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["acme:1", "acme:10"]);
        let topics: Vec<&str> = built.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["cases.withpk", "cases.withpk"]);
        assert!(built.iter().all(|e| e.position.index == 5));
    }

    #[test]
    fn values_are_represented_exactly_in_the_payload() {
        let config = config_of(
            "  - name: Sample\n    table: public.sample\n    tenantId: acme\n    \
             streaming: { topicPrefix: docs }\n",
        );
        let sample = relation(
            20_200,
            "public",
            "sample",
            vec![
                column("id", 20, -1),
                column("price", 1700, numeric_typmod(10, 2)),
                column("ratio", 701, -1),
                column("limit", 1700, -1),
                column("at", 1184, -1),
                column("local", 1114, -1),
                column("day", 1082, -1),
                column("span", 1186, -1),
                column("tags", 1009, -1),
                column("slots", 1007, -1),
                column("doc", 3802, -1),
                column("raw", 17, -1),
                column("ok", 16, -1),
                column("ref", 2950, -1),
                column("note", 25, -1),
            ],
        );
        let binding = bind(&config, &sample, &["id"]);
        let texts = [
            "9007199254740993",
            "120.00",
            "NaN",
            "-Infinity",
            "2025-01-15 10:30:00.123456+00",
            "infinity",
            "0044-03-15 BC",
            "P1Y2M3DT4H5M6.789S",
            r#"{a,"b c",NULL}"#,
            "[0:1]={7,8}",
            r#"{"k": [1, 2.50]}"#,
            "\\x00ff10",
            "t",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "\\N",
        ];
        let created = change(
            &sample,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&sample, &texts)),
        );
        assert_json(
            &one(&binding, &created).to_json()["payload"],
            r#"{"id":9007199254740993,"price":120.00,"ratio":"NaN","limit":"-Infinity",
                "at":"2025-01-15T10:30:00.123456Z","local":"infinity","day":"-0043-03-15",
                "span":"P1Y2M3DT4H5M6.789S","tags":["a","b c",null],"slots":[7,8],
                "slots__lbound":[0],"doc":"{\"k\": [1, 2.50]}","raw":"AP8Q","ok":true,
                "ref":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","note":null}"#,
        );
    }

    #[test]
    fn case_21_one_row_many_times_in_one_transaction_keeps_every_event() {
        let config = config_of(
            "  - name: Account\n    table: case21.account\n    tenantId: acme\n    \
             streaming: { topicPrefix: cases, topicPerEntity: true }\n",
        );
        let account = relation(
            20_021,
            "case21",
            "account",
            vec![
                column("id", 23, -1),
                column("balance", 23, -1),
                column("tag", 25, -1),
            ],
        );
        let binding = bind(&config, &account, &["id"]);
        let r = |texts: [&str; 3]| Some(row(&account, &texts));
        let changes = [
            change(
                &account,
                ChangeKind::Update,
                0,
                r(["7", "100", "original"]),
                r(["7", "101", "original"]),
            ),
            change(
                &account,
                ChangeKind::Update,
                2,
                r(["7", "101", "original"]),
                r(["7", "102", "original"]),
            ),
            change(
                &account,
                ChangeKind::Update,
                4,
                r(["7", "102", "original"]),
                r(["7", "100", "net zero"]),
            ),
            change(
                &account,
                ChangeKind::Delete,
                5,
                r(["7", "100", "net zero"]),
                None,
            ),
            change(
                &account,
                ChangeKind::Insert,
                6,
                None,
                r(["7", "0", "re-created"]),
            ),
            change(
                &account,
                ChangeKind::Update,
                7,
                r(["7", "0", "re-created"]),
                r(["7", "5", "re-created"]),
            ),
        ];
        let summary: Vec<String> = changes
            .iter()
            .map(|c| {
                let event = one(&binding, c);
                let json = event.to_json();
                let body = ["changes", "key", "payload"]
                    .into_iter()
                    .find_map(|k| json.get(k))
                    .map(Json::to_string)
                    .unwrap_or_default();
                format!(
                    "{} {} {} {} {body}",
                    event.event_id,
                    event.change_type.as_str(),
                    event.key,
                    event.topic
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                r#"0/16B3748:0 UPDATE acme:7 cases.account {"balance":{"old":100,"new":101}}"#,
                r#"0/16B3748:2 UPDATE acme:7 cases.account {"balance":{"old":101,"new":102}}"#,
                r#"0/16B3748:4 UPDATE acme:7 cases.account {"balance":{"old":102,"new":100},"tag":{"old":"original","new":"net zero"}}"#,
                r#"0/16B3748:5 DELETE acme:7 cases.account {"id":7}"#,
                r#"0/16B3748:6 CREATE acme:7 cases.account {"id":7,"balance":0,"tag":"re-created"}"#,
                r#"0/16B3748:7 UPDATE acme:7 cases.account {"balance":{"old":0,"new":5}}"#,
            ]
        );
    }

    #[test]
    fn tenant_change_is_delete_then_create_too() {
        let orders = orders();
        let binding = bind(&story::config(), &orders, &["id"]);
        let mut moved = ORDER_456;
        moved[1] = "124";
        let update = change(
            &orders,
            ChangeKind::Update,
            0,
            Some(row(&orders, &ORDER_456)),
            Some(row(&orders, &moved)),
        );
        let built = events(&binding, &update, None);
        let summary: Vec<(&str, &str, String)> = built
            .iter()
            .map(|e| (e.event_id.as_str(), e.key.as_str(), e.tenant_id.to_string()))
            .collect();
        assert_eq!(
            summary,
            [
                ("0/16B3748:0:delete", "123:456", "123".to_owned()),
                ("0/16B3748:0:create", "124:456", "124".to_owned()),
            ]
        );
    }

    #[test]
    fn case_16_key_change_under_default_takes_the_tenant_from_the_new_row() {
        // After REPLICA IDENTITY DEFAULT the old row has only the key: old(K)=[456,n,n,...].
        let orders = with_identity(&orders(), ReplicaIdentity::Default);
        let binding = bind(&story::config(), &orders, &["id"]);
        let mut moved = ORDER_456;
        moved[0] = "457";
        moved[5] = "2";
        let old = ["456", "\\u", "\\u", "\\u", "\\u", "\\u", "\\u"];
        let update = change(
            &orders,
            ChangeKind::Update,
            0,
            Some(row(&orders, &old)),
            Some(row(&orders, &moved)),
        );
        let built = events(&binding, &update, None);
        let json: Vec<Json> = built.iter().map(EntityEvent::to_json).collect();
        assert_json(
            &Json::Array(json),
            r#"[{"eventId":"0/16B3748:0:delete","eventType":"OrderDeleted","tenantId":123,
                 "entityType":"Order","entityId":"456","changeType":"DELETE","version":2,
                 "timestamp":"2025-01-15T10:30:00Z","user":"user@example.com",
                 "key":{"id":456}},
                {"eventId":"0/16B3748:0:create","eventType":"OrderCreated","tenantId":123,
                 "entityType":"Order","entityId":"457","changeType":"CREATE","version":2,
                 "timestamp":"2025-01-15T10:30:00Z","user":"user@example.com",
                 "payload":{"id":457,"tenant_id":123,"status":"NEW","total":99.90,
                            "priority":"high","version":2,"updated_by":"user@example.com"}}]"#,
        );
        assert_eq!(built[0].key, "123:456");
    }

    #[test]
    fn case_16_delete_under_default_without_tenant_is_dead_lettered() {
        let orders = with_identity(&orders(), ReplicaIdentity::Default);
        let binding = bind(&story::config(), &orders, &["id"]);
        let old = ["456", "\\u", "\\u", "\\u", "\\u", "\\u", "\\u"];
        let deleted = change(
            &orders,
            ChangeKind::Delete,
            3,
            Some(row(&orders, &old)),
            None,
        );
        let e = error(&binding, &deleted);
        assert_eq!(
            e.to_string(),
            "entity Order event 0/16B3748:3: no tenant (column tenant_id is not in the row: \
             the table's REPLICA IDENTITY is not FULL)"
        );
        assert_eq!(e.disposition(), Disposition::DeadLetter);
    }

    #[test]
    fn composite_key_is_a_json_array_text() {
        let config = config_of(
            "  - name: OrderLine\n    table: public.order_lines\n    tenantColumn: tenant_id\n    \
             streaming: { topicPrefix: core.orders }\n",
        );
        let lines = relation(
            20_100,
            "public",
            "order_lines",
            vec![
                column("order_id", 20, -1),
                column("sku", 25, -1),
                column("tenant_id", 20, -1),
                column("qty", 23, -1),
            ],
        );
        let binding = bind(&config, &lines, &["order_id", "sku"]);
        let created = change(
            &lines,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&lines, &["456", "A-1", "123", "2"])),
        );
        let event = one(&binding, &created);
        assert_eq!(event.entity_id, r#"[456,"A-1"]"#);
        assert_eq!(event.key, r#"123:[456,"A-1"]"#);
        let deleted = change(
            &lines,
            ChangeKind::Delete,
            1,
            Some(row(&lines, &["456", "A-1", "123", "2"])),
            None,
        );
        assert_json(
            &one(&binding, &deleted).to_json()["key"],
            r#"{"order_id":456,"sku":"A-1"}"#,
        );
    }

    #[test]
    fn tenant_null_is_no_tenant_for_the_dead_letter_topic() {
        let orders = orders();
        let binding = bind(&story::config(), &orders, &["id"]);
        let mut orphan = ORDER_456;
        orphan[1] = "\\N";
        let created = change(
            &orders,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&orders, &orphan)),
        );
        let e = error(&binding, &created);
        assert_eq!(
            e,
            BuildError::NoTenant {
                entity: "Order".to_owned(),
                event_id: "0/16B3748:0".to_owned(),
                reason: "column tenant_id is null".to_owned(),
            }
        );
        assert_eq!(
            e.to_string(),
            "entity Order event 0/16B3748:0: no tenant (column tenant_id is null)"
        );
        assert_eq!(e.disposition(), Disposition::DeadLetter);
        assert_eq!(e.event_id(), Some("0/16B3748:0"));
    }

    #[test]
    fn key_null_is_no_key() {
        let orders = orders();
        let config = story::config();
        let mut model = crate::model::EntityModel::new(&config.entities);
        // keyColumns is not configured: a NULL in the key column passed in.
        let binding = model
            .bind(&orders, &["status".to_owned()])
            .unwrap_or_else(|e| panic!("binds: {e}"))
            .unwrap_or_else(|| panic!("bound"));
        let mut keyless = ORDER_456;
        keyless[2] = "\\N";
        let created = change(
            &orders,
            ChangeKind::Insert,
            4,
            None,
            Some(row(&orders, &keyless)),
        );
        let e = error(&binding, &created);
        assert_eq!(
            e.to_string(),
            "entity Order event 0/16B3748:4: key column status is null"
        );
        assert_eq!(e.disposition(), Disposition::DeadLetter);
        assert_eq!(e.event_id(), Some("0/16B3748:4"));
    }

    #[test]
    fn context_overrides_user_and_priority_and_passes_the_correlation_id() {
        let orders = orders();
        let binding = bind(&story::config(), &orders, &["id"]);
        let created = change(
            &orders,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&orders, &ORDER_456)),
        );
        let context = TransactionContext {
            user: Some("admin@example.com".to_owned()),
            priority: Some(Priority::Bulk),
            correlation_id: Some("req-7".to_owned()),
        };
        let built = events(&binding, &created, Some(&context));
        let event = &built[0];
        assert_eq!(event.user.as_deref(), Some("admin@example.com"));
        assert_eq!(event.priority, Priority::Bulk);
        let json = event.to_json();
        assert_json(&json["user"], r#""admin@example.com""#);
        assert_json(&json["correlationId"], r#""req-7""#);
        let keys: Vec<&str> = json
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "eventId",
                "eventType",
                "tenantId",
                "entityType",
                "entityId",
                "changeType",
                "version",
                "timestamp",
                "user",
                "correlationId",
                "payload"
            ]
        );
    }

    /// The Order binding with `streaming` lines added to the story's.
    fn order_binding(streaming: &str) -> (Arc<Binding>, Arc<Relation>) {
        let orders = orders();
        (
            bind(&story::config_with(streaming, ""), &orders, &["id"]),
            orders,
        )
    }

    /// The priority of the story's order with `priority` in its priority column.
    fn priority_of(
        binding: &Binding,
        relation: &Relation,
        priority: &str,
        change_type: ChangeType,
        context: Option<&TransactionContext>,
    ) -> Classified {
        let mut texts = ORDER_456;
        texts[4] = priority;
        classify(binding, &row(relation, &texts), change_type, context)
    }

    #[test]
    fn priority_rules_apply_in_order() {
        let (binding, orders) = order_binding(
            "      defaultPriority: HIGH\n      priorityOverrides: { DELETE: CRITICAL }",
        );
        let known = |priority| Classified {
            priority,
            unknown_value: false,
        };
        let context = TransactionContext {
            priority: Some(Priority::Bulk),
            ..TransactionContext::default()
        };
        // 1. The transaction context wins over everything.
        assert_eq!(
            priority_of(
                &binding,
                &orders,
                "critical",
                ChangeType::Delete,
                Some(&context)
            ),
            known(Priority::Bulk)
        );
        // A context without a priority does not decide.
        let user_only = TransactionContext {
            user: Some("x".to_owned()),
            ..TransactionContext::default()
        };
        assert_eq!(
            priority_of(
                &binding,
                &orders,
                "bulk",
                ChangeType::Create,
                Some(&user_only)
            ),
            known(Priority::Bulk)
        );
        // 2. The priority column, in any case, over the override.
        for text in ["bulk", "Bulk", "BULK", "bUlK"] {
            assert_eq!(
                priority_of(&binding, &orders, text, ChangeType::Delete, None),
                known(Priority::Bulk),
                "{text}"
            );
        }
        // 3. A NULL column: the override for the change type.
        assert_eq!(
            priority_of(&binding, &orders, "\\N", ChangeType::Delete, None),
            known(Priority::Critical)
        );
        // 4. No override for the type: the entity's default.
        assert_eq!(
            priority_of(&binding, &orders, "\\N", ChangeType::Update, None),
            known(Priority::High)
        );
        // 5. Nothing configured: NORMAL.
        let (plain, orders) = order_binding("");
        assert_eq!(
            priority_of(&plain, &orders, "\\N", ChangeType::Update, None),
            known(Priority::Normal)
        );
    }

    #[test]
    fn unknown_priority_value_falls_back_to_the_default_and_is_flagged() {
        let (binding, orders) = order_binding(
            "      defaultPriority: HIGH\n      priorityOverrides: { CREATE: CRITICAL }",
        );
        assert_eq!(
            priority_of(&binding, &orders, "urgent", ChangeType::Create, None),
            Classified {
                priority: Priority::High,
                unknown_value: true
            }
        );
        let (plain, orders) = order_binding("");
        assert_eq!(
            priority_of(&plain, &orders, "", ChangeType::Update, None),
            Classified {
                priority: Priority::Normal,
                unknown_value: true
            }
        );
        let mut urgent = ORDER_456;
        urgent[4] = "urgent";
        let created = change(
            &orders,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&orders, &urgent)),
        );
        let event = one(&plain, &created);
        assert_eq!(event.priority, Priority::Normal);
        assert!(
            event.unknown_priority,
            "flagged on the event for the caller to count"
        );
    }

    #[test]
    fn invalid_topic_name_is_a_halt_error() {
        let orders = orders();
        let config = story::config();
        let mut entity = story::entity(&config, "Order");
        entity.name = "Ordér".to_owned();
        let binding = Binding {
            entity: Arc::new(entity),
            ..(*bind(&config, &orders, &["id"])).clone()
        };
        let created = change(
            &orders,
            ChangeKind::Insert,
            0,
            None,
            Some(row(&orders, &ORDER_456)),
        );
        let e = error(&binding, &created);
        assert_eq!(e.disposition(), Disposition::Halt);
        assert_eq!(e.event_id(), None);
        assert_eq!(
            e.to_string(),
            "entity Ordér: topic name \"core.orders.ordér.created\" is not a valid Kafka topic \
             ([a-zA-Z0-9._-], 1 to 249 characters)"
        );
    }
}
