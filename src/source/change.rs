//! What the source hands downstream: committed row changes with typed values, framed by
//! their transaction, in commit order.

use std::sync::Arc;

use crate::source::pgoutput::{ReplicaIdentity, TruncateOptions};
use crate::source::value::{PgType, Value};
use crate::source::Lsn;

/// A column of a relation, with its type resolved through the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The column's name exactly as PostgreSQL has it.
    pub name: String,
    /// The type's OID as the Relation message sent it.
    pub type_oid: u32,
    /// The type modifier as the Relation message sent it (-1 when none).
    pub type_modifier: i32,
    /// The resolved type used to decode the column's text.
    pub pg_type: PgType,
    /// Whether the Relation message flags the column as part of the replica identity.
    pub identity: bool,
}

/// A published table as the stream last described it.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// The table's OID.
    pub oid: u32,
    /// Schema name, exact.
    pub schema: String,
    /// Table name, exact.
    pub name: String,
    /// REPLICA IDENTITY of the table when the Relation message was sent.
    pub replica_identity: ReplicaIdentity,
    /// Columns in attribute order (dropped columns are not sent).
    pub columns: Vec<Column>,
}

impl Relation {
    /// `schema.table` with each part quoted when it needs to be, for messages and logs.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl Relation {
    /// A row as a JSON object keyed by the exact column names, and the names of the columns
    /// whose value is unavailable (left out, never printed as null). An array whose lower
    /// bound is not PostgreSQL's default 1 gets a `<column>__lbound` sidecar, since JSON
    /// arrays cannot say where they start (CASE-09).
    pub fn row_json(&self, row: &Row) -> (serde_json::Value, Vec<String>) {
        // Sized for every column up front: growing the map rehashes it.
        let mut object = serde_json::Map::with_capacity(row.len());
        let mut missing = Vec::new();
        for (column, value) in self.columns.iter().zip(row) {
            match value.to_json() {
                Some(v) => {
                    object.insert(column.name.clone(), v);
                }
                None => missing.push(column.name.clone()),
            }
            if let Value::Array(array) = value {
                if array.lower_bounds.iter().any(|&b| b != 1) {
                    object.insert(
                        format!("{}__lbound", column.name),
                        serde_json::Value::from(array.lower_bounds.clone()),
                    );
                }
            }
        }
        (serde_json::Value::Object(object), missing)
    }
}

/// A commit time (microseconds since 2000-01-01 UTC) as RFC 3339 in UTC.
pub fn commit_time_rfc3339(pg_micros: i64) -> String {
    use crate::source::value::{FiniteTimestamp, Timestamp};
    // A commit time is always within PostgreSQL's timestamp range; the fallback only keeps
    // a corrupt value visible instead of panicking.
    match FiniteTimestamp::from_pg_micros(pg_micros) {
        Some(t) => Timestamp::Finite(t).to_iso(true),
        None => format!("invalid commit time {pg_micros}"),
    }
}

/// Quotes an identifier the way `quote_ident` does for names that need it.
pub fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// One row image: a value per column of the relation, in the relation's column order.
pub type Row = Vec<Value>;

/// The kind of a row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new row.
    Insert,
    /// A changed row (old and new image under REPLICA IDENTITY FULL).
    Update,
    /// A removed row.
    Delete,
}

impl ChangeKind {
    /// Lowercase name used in logs and in `tail` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// A committed row change.
#[derive(Debug, Clone)]
pub struct Change {
    /// LSN of the commit record of the transaction: with `index`, the change's identity.
    pub commit_lsn: Lsn,
    /// Transaction id.
    pub xid: u32,
    /// Commit time, microseconds since 2000-01-01 UTC (PostgreSQL's epoch).
    pub commit_ts: i64,
    /// Position of the change in its transaction, from 0; messages and truncates count too.
    pub index: u32,
    /// The table as described by the last Relation message before the change.
    pub relation: Arc<Relation>,
    /// Insert, update or delete.
    pub kind: ChangeKind,
    /// The old row: the whole row under REPLICA IDENTITY FULL, key columns only under
    /// DEFAULT/INDEX (other columns are [`Value::Unavailable`]), None when not sent.
    pub old: Option<Row>,
    /// The new row (inserts and updates). Unchanged TOAST values are taken from the old row,
    /// or are [`Value::Unavailable`] when there is none.
    pub new: Option<Row>,
}

/// Everything the source reports, in stream order.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A transaction starts; its changes follow, then its [`SourceEvent::Commit`].
    Begin {
        /// Transaction id.
        xid: u32,
        /// LSN of its commit record (known up front from pgoutput's Begin).
        commit_lsn: Lsn,
        /// Commit time, microseconds since 2000-01-01 UTC.
        commit_ts: i64,
    },
    /// A row change inside the current transaction.
    Change(Change),
    /// TRUNCATE of one or more published tables inside the current transaction.
    Truncate {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// Transaction id.
        xid: u32,
        /// Position in the transaction.
        index: u32,
        /// The truncated tables.
        relations: Vec<Arc<Relation>>,
        /// CASCADE and RESTART IDENTITY.
        options: TruncateOptions,
    },
    /// A message from `pg_logical_emit_message`.
    Message {
        /// The commit LSN of its transaction for a transactional message.
        commit_lsn: Option<Lsn>,
        /// Position in the transaction for a transactional message.
        index: Option<u32>,
        /// The message's own LSN.
        lsn: Lsn,
        /// Whether it was emitted transactionally (then it is part of the transaction).
        transactional: bool,
        /// The prefix given by the application.
        prefix: String,
        /// The content, raw bytes.
        content: bytes::Bytes,
    },
    /// The current transaction is committed.
    Commit {
        /// Transaction id.
        xid: u32,
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record: what the slot is confirmed to once the transaction is
        /// handled.
        end_lsn: Lsn,
        /// Commit time, microseconds since 2000-01-01 UTC.
        commit_ts: i64,
        /// Number of changes, truncates and transactional messages in the transaction.
        event_count: u32,
    },
    /// The server's keepalive: everything up to `wal_end` has been sent.
    Keepalive {
        /// The server's WAL end.
        wal_end: Lsn,
    },
    /// The connection was lost and re-established: a partly received transaction is
    /// discarded and will be sent again from its start.
    Reconnected,
}
