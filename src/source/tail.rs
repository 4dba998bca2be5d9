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
use crate::source::lsn::Lsn;
use crate::source::reader::{ReadItem, Undecodable};

/// Where `tail --end-lsn` stops: once everything committed up to the target is printed.
///
/// Like pg_recvlogical's `--endpos`, but on transaction boundaries, so that a stretch of
/// WAL is read whole: a transaction is printed entirely or not at all. The target is
/// usually `pg_current_wal_lsn()` taken after a workload, which lies at or after the end
/// of its last commit record; when nothing follows that commit, the walsender's keepalive
/// (sent once it has caught up) is what tells that nothing more is to come.
#[derive(Debug, Clone)]
pub struct EndPosition {
    target: Lsn,
    in_transaction: bool,
}

impl EndPosition {
    /// Stops at `target`.
    pub fn new(target: Lsn) -> EndPosition {
        EndPosition {
            target,
            in_transaction: false,
        }
    }

    /// The LSN it stops at.
    pub fn target(&self) -> Lsn {
        self.target
    }

    /// Returns the target when `item` lies past it and must not be printed: a
    /// transaction that commits after the target, a non-transactional message after it,
    /// or a keepalive past it while no transaction is open. Call for every item, in order.
    pub fn stops_before(&mut self, item: &ReadItem) -> Option<Lsn> {
        let past = match item {
            ReadItem::Event(SourceEvent::Begin { commit_lsn, .. }) => {
                self.in_transaction = true;
                *commit_lsn > self.target
            }
            ReadItem::Event(SourceEvent::Commit { .. } | SourceEvent::Reconnected) => {
                self.in_transaction = false;
                false
            }
            ReadItem::Event(SourceEvent::Message {
                transactional: false,
                lsn,
                ..
            }) => *lsn > self.target,
            ReadItem::Event(SourceEvent::Keepalive { wal_end }) => {
                !self.in_transaction && *wal_end >= self.target
            }
            _ => false,
        };
        past.then_some(self.target)
    }

    /// Whether the commit ending at `end_lsn` completes the stretch: it ends at or past
    /// the target, so every later transaction commits past it.
    pub fn reached_by_commit(&self, end_lsn: Lsn) -> bool {
        end_lsn >= self.target
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(commit_lsn: u64) -> ReadItem {
        ReadItem::Event(SourceEvent::Begin {
            xid: 7,
            commit_lsn: Lsn(commit_lsn),
            commit_ts: 0,
        })
    }

    fn commit(commit_lsn: u64, end_lsn: u64) -> ReadItem {
        ReadItem::Event(SourceEvent::Commit {
            xid: 7,
            commit_lsn: Lsn(commit_lsn),
            end_lsn: Lsn(end_lsn),
            commit_ts: 0,
            event_count: 1,
        })
    }

    fn keepalive(wal_end: u64) -> ReadItem {
        ReadItem::Event(SourceEvent::Keepalive {
            wal_end: Lsn(wal_end),
        })
    }

    #[test]
    fn a_transaction_committing_at_the_target_is_printed_and_ends_the_stretch() {
        let mut end = EndPosition::new(Lsn(0x100));
        assert_eq!(end.stops_before(&begin(0x100)), None);
        assert_eq!(end.stops_before(&commit(0x100, 0x130)), None);
        assert!(end.reached_by_commit(Lsn(0x130)));
        assert!(!end.reached_by_commit(Lsn(0xFF)));
    }

    #[test]
    fn a_transaction_committing_past_the_target_is_not_printed() {
        let mut end = EndPosition::new(Lsn(0x100));
        assert_eq!(end.stops_before(&begin(0x101)), Some(Lsn(0x100)));
    }

    #[test]
    fn a_keepalive_past_the_target_ends_only_outside_a_transaction() {
        let mut end = EndPosition::new(Lsn(0x100));
        assert_eq!(end.stops_before(&keepalive(0xFF)), None);
        assert_eq!(end.stops_before(&begin(0x80)), None);
        // Inside a transaction the keepalive cannot end it half printed.
        assert_eq!(end.stops_before(&keepalive(0x200)), None);
        assert_eq!(end.stops_before(&commit(0x80, 0x90)), None);
        assert_eq!(end.stops_before(&keepalive(0x100)), Some(Lsn(0x100)));
    }

    #[test]
    fn a_non_transactional_message_past_the_target_stops() {
        let mut end = EndPosition::new(Lsn(0x100));
        let message = |lsn| {
            ReadItem::Event(SourceEvent::Message {
                commit_lsn: None,
                index: None,
                lsn: Lsn(lsn),
                transactional: false,
                prefix: "p".into(),
                content: bytes::Bytes::from_static(b"x"),
            })
        };
        assert_eq!(end.stops_before(&message(0x100)), None);
        assert_eq!(end.stops_before(&message(0x101)), Some(Lsn(0x100)));
    }
}
