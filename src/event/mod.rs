//! Entity events: what a committed row change means for the metamodel's entity.
//!
//! An event carries the story's envelope (eventId, eventType, tenantId, entityType, entityId,
//! changeType, version, timestamp, user) and a body shaped by the entity's payload mode.
//! Building is pure: a bound change in, events out, so that it is easy to test exactly.

mod build;
#[cfg(test)]
pub(crate) mod story;
mod topic;

pub use build::{build_events, BuildError};
pub use topic::{topic_name, TopicError};

use serde_json::{Map, Value as Json};

use crate::config::Priority;

/// What happened to the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeType {
    /// A new entity (INSERT).
    Create,
    /// A changed entity (UPDATE).
    Update,
    /// A removed entity (DELETE).
    Delete,
}

impl ChangeType {
    /// The envelope's name: CREATE, UPDATE, DELETE.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeType::Create => "CREATE",
            ChangeType::Update => "UPDATE",
            ChangeType::Delete => "DELETE",
        }
    }

    /// The past participle used in event types and topic names: Created, Updated, Deleted.
    pub const fn past(self) -> &'static str {
        match self {
            ChangeType::Create => "Created",
            ChangeType::Update => "Updated",
            ChangeType::Delete => "Deleted",
        }
    }
}

pub use crate::checkpoint::Position;

/// The event body, by payload mode.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `minimal`: nothing beyond the envelope.
    Minimal,
    /// A created entity: the new row; with `full`, also as fullSnapshot.
    Create {
        /// The new row.
        payload: Map<String, Json>,
        /// Present in `full` mode.
        full_snapshot: Option<Map<String, Json>>,
    },
    /// An updated entity: exactly the fields whose values differ, `{field: {old, new}}`.
    Update {
        /// The changed fields. Without an old row (REPLICA IDENTITY not FULL), every field
        /// of the new row with only its new value.
        changes: Map<String, Json>,
        /// The whole row after the change in `full` mode, None (JSON null) in `diff` mode.
        full_snapshot: Option<Map<String, Json>>,
    },
    /// A deleted entity: its key; with `full`, the whole row before the delete.
    Delete {
        /// The key columns of the deleted row.
        key: Map<String, Json>,
        /// Present in `full` mode.
        full_snapshot: Option<Map<String, Json>>,
    },
}

/// A row change as the metamodel's entity event.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityEvent {
    /// `<commit LSN>:<index>`, with a `:delete`/`:create` suffix for the two halves of a
    /// key change: the same after a restart, so consumers can deduplicate.
    pub event_id: String,
    /// Where it comes from.
    pub position: Position,
    /// `<Entity><Created|Updated|Deleted>`, e.g. OrderCreated.
    pub event_type: String,
    /// The tenant, typed as its column (a number for an integer column).
    pub tenant_id: Json,
    /// The entity's name, e.g. Order.
    pub entity_type: String,
    /// The key as text: the value of a one-column key, a JSON array for a composite key.
    pub entity_id: String,
    /// CREATE, UPDATE or DELETE.
    pub change_type: ChangeType,
    /// The version column's value, or null.
    pub version: Json,
    /// The commit time, RFC 3339 in UTC.
    pub timestamp: String,
    /// Who made the change: the transaction context's user, else the user column.
    pub user: Option<String>,
    /// From the transaction context.
    pub correlation_id: Option<String>,
    /// The body by payload mode.
    pub body: Body,
    /// Columns whose value is unavailable (unchanged TOAST without an old row), left out.
    pub unavailable: Vec<String>,
    /// The Kafka topic.
    pub topic: String,
    /// The Kafka record key, `tenantId:entityId`.
    pub key: String,
    /// The lane it goes through.
    pub priority: Priority,
    /// The priority column held a value that is no priority name, so the entity's default
    /// was used: for the caller to count and report, as a config or data problem.
    pub unknown_priority: bool,
}

impl EntityEvent {
    /// The event as the JSON object consumers read, fields in the story's order.
    pub fn to_json(&self) -> Json {
        let mut o = Map::new();
        o.insert("eventId".into(), Json::from(self.event_id.clone()));
        o.insert("eventType".into(), Json::from(self.event_type.clone()));
        o.insert("tenantId".into(), self.tenant_id.clone());
        o.insert("entityType".into(), Json::from(self.entity_type.clone()));
        o.insert("entityId".into(), Json::from(self.entity_id.clone()));
        o.insert("changeType".into(), Json::from(self.change_type.as_str()));
        o.insert("version".into(), self.version.clone());
        o.insert("timestamp".into(), Json::from(self.timestamp.clone()));
        o.insert(
            "user".into(),
            self.user.clone().map_or(Json::Null, Json::from),
        );
        if let Some(id) = &self.correlation_id {
            o.insert("correlationId".into(), Json::from(id.clone()));
        }
        let snapshot = |s: &Option<Map<String, Json>>| s.clone().map_or(Json::Null, Json::Object);
        match &self.body {
            Body::Minimal => {}
            Body::Create {
                payload,
                full_snapshot,
            } => {
                o.insert("payload".into(), Json::Object(payload.clone()));
                if full_snapshot.is_some() {
                    o.insert("fullSnapshot".into(), snapshot(full_snapshot));
                }
            }
            Body::Update {
                changes,
                full_snapshot,
            } => {
                o.insert("changes".into(), Json::Object(changes.clone()));
                o.insert("fullSnapshot".into(), snapshot(full_snapshot));
            }
            Body::Delete { key, full_snapshot } => {
                o.insert("key".into(), Json::Object(key.clone()));
                if full_snapshot.is_some() {
                    o.insert("fullSnapshot".into(), snapshot(full_snapshot));
                }
            }
        }
        if !self.unavailable.is_empty() {
            o.insert("unavailable".into(), Json::from(self.unavailable.clone()));
        }
        Json::Object(o)
    }

    /// The record headers: for filtering without decoding the value.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tenantId", json_text(&self.tenant_id)),
            ("entityType", self.entity_type.clone()),
            ("changeType", self.change_type.as_str().to_owned()),
            ("eventType", self.event_type.clone()),
            ("eventId", self.event_id.clone()),
        ]
    }
}

/// A JSON value as plain text: strings without quotes, everything else as JSON.
pub fn json_text(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::story::order_created;

    #[test]
    fn headers_name_the_event_for_filtering() {
        let event = order_created();
        let headers = event.headers();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(
            headers,
            [
                ("tenantId", "123"),
                ("entityType", "Order"),
                ("changeType", "CREATE"),
                ("eventType", "OrderCreated"),
                ("eventId", "0/16B3748:0"),
            ]
        );
    }

    #[test]
    fn json_text_leaves_strings_unquoted() {
        assert_eq!(json_text(&Json::from("acme")), "acme");
        assert_eq!(json_text(&Json::from(123)), "123");
        assert_eq!(json_text(&story::json("[1,\"a\"]")), r#"[1,"a"]"#);
        assert_eq!(json_text(&story::json("1.50")), "1.50");
    }

    #[test]
    fn change_type_names() {
        assert_eq!(
            [ChangeType::Create, ChangeType::Update, ChangeType::Delete].map(ChangeType::as_str),
            ["CREATE", "UPDATE", "DELETE"]
        );
        assert_eq!(
            [ChangeType::Create, ChangeType::Update, ChangeType::Delete].map(ChangeType::past),
            ["Created", "Updated", "Deleted"]
        );
    }
}
