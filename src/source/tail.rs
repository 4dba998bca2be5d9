//! `entity-cdc tail`: the decoded changes as JSON lines, one per change, for inspecting what
//! the source reads before anything is produced to Kafka.
//!
//! Each line has the commit LSN and position that identify the change, the transaction id
//! and commit time, the relation, the kind, and the old and new rows with typed values.
//! Columns whose value is not available (an unchanged TOAST value without an old row, a
//! non-key column of a key-only old image) are left out of the row and listed under
//! `unavailable`, never printed as null.

use serde_json::{json, Map, Value as Json};

use crate::source::change::{Relation, Row, SourceEvent};
use crate::source::reader::{ReadItem, Undecodable};

/// The JSON line for an item, or None for items that are not printed (begin, commit,
/// keepalives).
pub fn item_json(item: &ReadItem) -> Option<Json> {
    match item {
        ReadItem::Event(event) => event_json(event),
        ReadItem::Undecodable(bad) => Some(undecodable_json(bad)),
    }
}

/// The JSON line for a source event, or None for framing events.
pub fn event_json(event: &SourceEvent) -> Option<Json> {
    match event {
        SourceEvent::Change(change) => {
            let mut line = Map::new();
            line.insert("lsn".into(), json!(change.commit_lsn.to_string()));
            line.insert("index".into(), json!(change.index));
            line.insert("xid".into(), json!(change.xid));
            line.insert("commitTime".into(), commit_time(change.commit_ts));
            line.insert("relation".into(), relation_json(&change.relation));
            line.insert("change".into(), json!(change.kind.as_str()));
            let mut unavailable = Map::new();
            if let Some(old) = &change.old {
                let (row, missing) = row_json(&change.relation, old);
                line.insert("old".into(), row);
                if !missing.is_empty() {
                    unavailable.insert("old".into(), json!(missing));
                }
            }
            if let Some(new) = &change.new {
                let (row, missing) = row_json(&change.relation, new);
                line.insert("new".into(), row);
                if !missing.is_empty() {
                    unavailable.insert("new".into(), json!(missing));
                }
            }
            if !unavailable.is_empty() {
                line.insert("unavailable".into(), Json::Object(unavailable));
            }
            Some(Json::Object(line))
        }
        SourceEvent::Truncate {
            commit_lsn,
            xid,
            index,
            relations,
            options,
        } => Some(json!({
            "lsn": commit_lsn.to_string(),
            "index": index,
            "xid": xid,
            "relations": relations.iter().map(|r| relation_json(r)).collect::<Vec<_>>(),
            "change": "truncate",
            "cascade": options.cascade,
            "restartIdentity": options.restart_identity,
        })),
        SourceEvent::Message {
            commit_lsn,
            index,
            lsn,
            transactional,
            prefix,
            content,
        } => {
            // The content is bytes: base64 always, and the text as well when it is UTF-8.
            let mut line = Map::new();
            line.insert("lsn".into(), json!(commit_lsn.map(|l| l.to_string())));
            line.insert("index".into(), json!(index));
            line.insert("messageLsn".into(), json!(lsn.to_string()));
            line.insert("change".into(), json!("message"));
            line.insert("transactional".into(), json!(transactional));
            line.insert("prefix".into(), json!(prefix));
            line.insert("content".into(), json!(base64_encode(content)));
            if let Ok(text) = std::str::from_utf8(content) {
                line.insert("contentText".into(), json!(text));
            }
            Some(Json::Object(line))
        }
        SourceEvent::Begin { .. }
        | SourceEvent::Commit { .. }
        | SourceEvent::Keepalive { .. }
        | SourceEvent::Reconnected => None,
    }
}

fn undecodable_json(bad: &Undecodable) -> Json {
    json!({
        "lsn": bad.commit_lsn.to_string(),
        "index": bad.index,
        "relation": relation_json(&bad.relation),
        "change": bad.kind.as_str(),
        "error": bad.reason,
    })
}

fn relation_json(relation: &Relation) -> Json {
    json!({ "schema": relation.schema, "table": relation.name })
}

fn row_json(relation: &Relation, row: &Row) -> (Json, Vec<String>) {
    relation.row_json(row)
}

/// The commit time as RFC 3339 in UTC with microseconds.
fn commit_time(pg_micros: i64) -> Json {
    Json::from(crate::source::change::commit_time_rfc3339(pg_micros))
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
