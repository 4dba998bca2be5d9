//! The change reader: replication events in, committed changes with typed values out.
//!
//! It owns the replication stream, the pgoutput decoder, the relation cache and the type
//! resolver. Under protocol version 1 the server sends a transaction only once it has
//! committed, and pgoutput's Begin already carries the commit LSN, so each change is handed
//! on as soon as it is decoded: nothing is buffered, whatever the transaction's size.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};

use crate::error::Disposition;
use crate::source::catalog;
use crate::source::change::{ChangeKind, Column, Relation, Row, SourceEvent};
use crate::source::pgoutput::{
    Decoder, LogicalMessage, OldTuple, RelationBody, TupleColumn, TupleData,
};
use crate::source::relation::RelationCache;
use crate::source::replication::{ReplicationEvent, ResilientStream};
use crate::source::value::{parse_text, PgType, Value};
use crate::source::{Change, Lsn};

/// Why a change could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The replication connection failed in a way that reconnecting does not heal.
    #[error(transparent)]
    Replication(#[from] crate::source::replication::ReplicationError),
    /// A pgoutput message could not be decoded: the stream cannot be trusted past it.
    #[error("at lsn {lsn}: {source}")]
    Decode {
        /// WAL start of the XLogData that held the message.
        lsn: Lsn,
        /// What was wrong with it.
        #[source]
        source: crate::source::pgoutput::DecodeError,
    },
    /// A change names a relation the stream never described.
    #[error("at lsn {lsn}: change for relation oid {oid} before its Relation message")]
    UnknownRelation {
        /// WAL start of the change.
        lsn: Lsn,
        /// The relation OID.
        oid: u32,
    },
    /// The catalog lookup of a column's type failed.
    #[error("resolving type oid {oid} of column {column} of {relation}: {source}")]
    TypeLookup {
        /// Qualified relation name.
        relation: String,
        /// Column name.
        column: String,
        /// The type OID.
        oid: u32,
        /// The catalog error.
        #[source]
        source: Box<catalog::CatalogError>,
    },
    /// The catalog connection could not be re-established after the replication
    /// connection was.
    #[error("reconnecting the catalog connection")]
    CatalogReconnect(#[source] Box<crate::source::sql::SqlError>),
    /// A column value that does not match its relation (wrong column count, binary format).
    #[error("at lsn {lsn}: {relation}: {detail}")]
    Tuple {
        /// WAL start of the change.
        lsn: Lsn,
        /// Qualified relation name.
        relation: String,
        /// What did not match.
        detail: String,
    },
}

impl ReadError {
    /// What the pipeline does with the error.
    pub fn disposition(&self) -> Disposition {
        match self {
            ReadError::Replication(e) => e.disposition(),
            ReadError::TypeLookup { .. } | ReadError::CatalogReconnect(_) => Disposition::Retry,
            _ => Disposition::Halt,
        }
    }
}

/// A change whose values could not be decoded: handed on with its position so that it is
/// dead-lettered with its reason, never dropped.
#[derive(Debug, Clone)]
pub struct Undecodable {
    /// Commit LSN of its transaction.
    pub commit_lsn: Lsn,
    /// Position in the transaction.
    pub index: u32,
    /// The table.
    pub relation: Arc<Relation>,
    /// Insert, update or delete.
    pub kind: ChangeKind,
    /// Which column failed and why, with the LSN.
    pub reason: String,
}

/// What [`ChangeReader::next`] yields.
#[derive(Debug, Clone)]
pub enum ReadItem {
    /// A decoded event.
    Event(SourceEvent),
    /// A change that cannot be represented; the transaction goes on.
    Undecodable(Undecodable),
}

/// What the consumer allows the stream to confirm: published on a watch channel by
/// whoever tracks acknowledgements, read by the reader whenever it changes, so that status
/// updates carry it even while the reader waits for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmation {
    /// Everything at or below this LSN is handled.
    pub lsn: Lsn,
    /// Nothing is open or in flight: a keepalive's WAL end may be confirmed too.
    pub idle: bool,
}

/// The transaction being received.
#[derive(Debug, Clone, Copy)]
struct OpenTransaction {
    xid: u32,
    commit_lsn: Lsn,
    commit_ts: i64,
    next_index: u32,
}

/// pgoutput protocol version 1: each transaction arrives whole at its commit, so nothing
/// that may still roll back is ever handed on (CASE-20, CASE-23).
const PROTOCOL_VERSION: u32 = 1;

/// Reads committed changes from a replication stream.
pub struct ChangeReader {
    stream: ResilientStream,
    decoder: Decoder,
    relations: RelationCache,
    types: TypeResolver,
    open: Option<OpenTransaction>,
    feed: Option<tokio::sync::watch::Receiver<Confirmation>>,
}

impl ChangeReader {
    /// Wraps a started replication stream and a catalog connection to the same database.
    pub fn new(stream: ResilientStream, catalog: tokio_postgres::Client) -> Self {
        ChangeReader {
            stream,
            decoder: Decoder::new(PROTOCOL_VERSION),
            relations: RelationCache::new(),
            types: TypeResolver::new(catalog),
            open: None,
            feed: None,
        }
    }

    /// Follows a confirmation feed: each new value is handed to the stream at once.
    pub fn set_confirmation_feed(&mut self, feed: tokio::sync::watch::Receiver<Confirmation>) {
        self.feed = Some(feed);
    }

    /// The catalog connection, for lookups that belong with the stream (primary keys).
    pub fn catalog(&self) -> &tokio_postgres::Client {
        &self.types.client
    }

    /// Ends the replication connection cleanly.
    pub async fn close(self) {
        self.stream.close().await;
    }

    /// Waits for the next replication event, applying confirmation updates meanwhile.
    async fn next_replication_event(&mut self) -> Result<ReplicationEvent, ReadError> {
        loop {
            let Some(feed) = self.feed.as_mut() else {
                return Ok(self.stream.next_event().await?);
            };
            // Take what the feed says now: acknowledgements may have moved it.
            let confirmation = *feed.borrow_and_update();
            self.stream.confirm(confirmation.lsn);
            if self.open.is_none() {
                self.stream.set_idle(confirmation.idle);
            }
            tokio::select! {
                // The stream's next_event is cancel-safe: a frame half read stays buffered.
                event = self.stream.next_event() => return Ok(event?),
                changed = feed.changed() => {
                    if changed.is_err() {
                        self.feed = None;
                    }
                }
            }
        }
    }

    /// The replication stream, to confirm LSNs and send status updates.
    pub fn stream(&mut self) -> &mut ResilientStream {
        &mut self.stream
    }

    /// Whether a transaction is being received (its Commit has not arrived yet).
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// The next event, in stream order.
    pub async fn next(&mut self) -> Result<ReadItem, ReadError> {
        loop {
            let event = self.next_replication_event().await?;
            let (wal_start, data) = match event {
                ReplicationEvent::XLogData {
                    wal_start, data, ..
                } => (wal_start, data),
                ReplicationEvent::Keepalive { wal_end, .. } => {
                    return Ok(ReadItem::Event(SourceEvent::Keepalive { wal_end }));
                }
                ReplicationEvent::Reconnected => {
                    // The server resends from the slot's confirmed position: whatever we
                    // had of an open transaction comes again from its Begin.
                    self.open = None;
                    self.decoder.reset();
                    self.relations.clear();
                    // A server that dropped the replication connection (a restart, say) has
                    // dropped the catalog connection too: the relations described again
                    // need it for their types and primary keys.
                    self.types.client = crate::source::sql::connect(self.stream.params())
                        .await
                        .map_err(|e| ReadError::CatalogReconnect(Box::new(e)))?;
                    return Ok(ReadItem::Event(SourceEvent::Reconnected));
                }
            };
            let message = self
                .decoder
                .decode_bytes(data)
                .map_err(|source| ReadError::Decode {
                    lsn: wal_start,
                    source,
                })?;
            if let Some(item) = self.handle(wal_start, message).await? {
                return Ok(item);
            }
        }
    }

    async fn handle(
        &mut self,
        lsn: Lsn,
        message: LogicalMessage,
    ) -> Result<Option<ReadItem>, ReadError> {
        let item = match message {
            LogicalMessage::Begin {
                final_lsn,
                commit_ts,
                xid,
            } => {
                let commit_ts = commit_ts.0;
                self.open = Some(OpenTransaction {
                    xid,
                    commit_lsn: final_lsn,
                    commit_ts,
                    next_index: 0,
                });
                self.stream.set_idle(false);
                SourceEvent::Begin {
                    xid,
                    commit_lsn: final_lsn,
                    commit_ts,
                }
            }
            LogicalMessage::Commit {
                commit_lsn,
                end_lsn,
                commit_ts,
                ..
            } => {
                let commit_ts = commit_ts.0;
                let open = self.open.take();
                let (xid, event_count) = open.map_or((0, 0), |o| (o.xid, o.next_index));
                SourceEvent::Commit {
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                    event_count,
                }
            }
            LogicalMessage::Relation(body) => {
                let relation = self.resolve_relation(&body).await?;
                debug!(relation = %relation.qualified_name(), oid = relation.oid, "relation described");
                self.relations.insert(relation);
                return Ok(None);
            }
            LogicalMessage::Type { oid, .. } => {
                // A type was (re)described: forget what we resolved for it, so that the
                // next Relation using it reads the catalog again.
                self.types.forget(oid);
                return Ok(None);
            }
            LogicalMessage::Origin { .. } => return Ok(None),
            LogicalMessage::Insert {
                relation_oid, new, ..
            } => {
                return self.change(lsn, relation_oid, ChangeKind::Insert, None, Some(new));
            }
            LogicalMessage::Update {
                relation_oid,
                old,
                new,
                ..
            } => {
                return self.change(lsn, relation_oid, ChangeKind::Update, old, Some(new));
            }
            LogicalMessage::Delete {
                relation_oid, old, ..
            } => {
                return self.change(lsn, relation_oid, ChangeKind::Delete, Some(old), None);
            }
            LogicalMessage::Truncate {
                options,
                relation_oids,
                ..
            } => {
                let mut relations = Vec::with_capacity(relation_oids.len());
                for oid in relation_oids {
                    let relation = self.relations.get(oid);
                    relations.push(relation.ok_or(ReadError::UnknownRelation { lsn, oid })?);
                }
                let (commit_lsn, xid, index) = self.next_position();
                SourceEvent::Truncate {
                    commit_lsn,
                    xid,
                    index,
                    relations,
                    options,
                }
            }
            LogicalMessage::Message {
                transactional,
                lsn: message_lsn,
                prefix,
                content,
                ..
            } => {
                let (commit_lsn, index) = if transactional && self.open.is_some() {
                    let (commit_lsn, _, index) = self.next_position();
                    (Some(commit_lsn), Some(index))
                } else {
                    (None, None)
                };
                SourceEvent::Message {
                    commit_lsn,
                    index,
                    lsn: message_lsn,
                    transactional,
                    prefix,
                    content,
                }
            }
            other => {
                // Streamed (v2) and two-phase (v3) messages are parsed but not requested:
                // the reader runs protocol version 1 without two-phase decoding, so the
                // server sends each transaction whole at its commit (CASE-20, CASE-23).
                warn!(lsn = %lsn, message = ?other, "unexpected message for protocol version 1");
                return Err(ReadError::Tuple {
                    lsn,
                    relation: String::new(),
                    detail: format!("message not expected under protocol version 1: {other:?}"),
                });
            }
        };
        Ok(Some(ReadItem::Event(item)))
    }

    fn next_position(&mut self) -> (Lsn, u32, u32) {
        match self.open.as_mut() {
            Some(open) => {
                let index = open.next_index;
                open.next_index += 1;
                (open.commit_lsn, open.xid, index)
            }
            None => (Lsn::ZERO, 0, 0),
        }
    }

    fn change(
        &mut self,
        lsn: Lsn,
        relation_oid: u32,
        kind: ChangeKind,
        old: Option<OldTuple>,
        new: Option<TupleData>,
    ) -> Result<Option<ReadItem>, ReadError> {
        let relation = self
            .relations
            .get(relation_oid)
            .ok_or(ReadError::UnknownRelation {
                lsn,
                oid: relation_oid,
            })?;
        let (commit_lsn, xid, index) = self.next_position();
        let commit_ts = self.open.map_or(0, |o| o.commit_ts);
        let decoded = decode_images(&relation, lsn, old.as_ref(), new.as_ref());
        let item = match decoded {
            Ok((old, new)) => ReadItem::Event(SourceEvent::Change(Change {
                commit_lsn,
                xid,
                commit_ts,
                index,
                relation,
                kind,
                old,
                new,
            })),
            Err(DecodeProblem::Value(reason)) => ReadItem::Undecodable(Undecodable {
                commit_lsn,
                index,
                relation,
                kind,
                reason,
            }),
            Err(DecodeProblem::Shape(detail)) => {
                return Err(ReadError::Tuple {
                    lsn,
                    relation: relation.qualified_name(),
                    detail,
                });
            }
        };
        Ok(Some(item))
    }

    async fn resolve_relation(&mut self, body: &RelationBody) -> Result<Relation, ReadError> {
        let qualified = format!("{}.{}", body.namespace, body.name);
        let mut columns = Vec::with_capacity(body.columns.len());
        for column in &body.columns {
            let pg_type = self
                .types
                .resolve(column.type_oid, column.type_modifier)
                .await
                .map_err(|source| ReadError::TypeLookup {
                    relation: qualified.clone(),
                    column: column.name.clone(),
                    oid: column.type_oid,
                    source: Box::new(source),
                })?;
            columns.push(Column {
                name: column.name.clone(),
                type_oid: column.type_oid,
                type_modifier: column.type_modifier,
                pg_type,
                identity: column.is_key(),
            });
        }
        Ok(Relation {
            oid: body.oid,
            schema: body.namespace.clone(),
            name: body.name.clone(),
            replica_identity: body.replica_identity,
            columns,
        })
    }
}

enum DecodeProblem {
    /// One value could not be decoded: the change is dead-lettered.
    Value(String),
    /// The tuple does not fit the relation: the stream is inconsistent.
    Shape(String),
}

/// Decodes the old and new images of a change.
///
/// Under REPLICA IDENTITY FULL an UPDATE sends the whole old row, and the new row marks
/// TOASTed columns that did not change as "unchanged": their value is the old row's. Under
/// DEFAULT or INDEX the old image holds only the key columns ('K'); the others are not
/// NULL but unknown, and are marked unavailable rather than faked.
fn decode_images(
    relation: &Relation,
    lsn: Lsn,
    old: Option<&OldTuple>,
    new: Option<&TupleData>,
) -> Result<(Option<Row>, Option<Row>), DecodeProblem> {
    let old_row = match old {
        Some(OldTuple::Old(tuple)) => Some(decode_tuple(relation, lsn, tuple, None, false)?),
        Some(OldTuple::Key(tuple)) => Some(decode_tuple(relation, lsn, tuple, None, true)?),
        None => None,
    };
    let full_old = matches!(old, Some(OldTuple::Old(_)));
    let new_row = match new {
        Some(tuple) => {
            let source = if full_old { old_row.as_ref() } else { None };
            Some(decode_tuple(relation, lsn, tuple, source, false)?)
        }
        None => None,
    };
    Ok((old_row, new_row))
}

fn decode_tuple(
    relation: &Relation,
    lsn: Lsn,
    tuple: &TupleData,
    toast_source: Option<&Row>,
    key_only: bool,
) -> Result<Row, DecodeProblem> {
    if tuple.0.len() != relation.columns.len() {
        return Err(DecodeProblem::Shape(format!(
            "tuple has {} columns, relation has {}",
            tuple.0.len(),
            relation.columns.len()
        )));
    }
    let mut row = Vec::with_capacity(tuple.0.len());
    for (position, (column, cell)) in relation.columns.iter().zip(&tuple.0).enumerate() {
        let value = match cell {
            TupleColumn::Null if key_only && !column.identity => Value::Unavailable,
            TupleColumn::Null => Value::Null,
            TupleColumn::UnchangedToast => toast_source
                .and_then(|old| old.get(position))
                .cloned()
                .unwrap_or(Value::Unavailable),
            TupleColumn::Text(bytes) => decode_text(relation, lsn, column, bytes)?,
            TupleColumn::Binary(_) => {
                return Err(DecodeProblem::Shape(format!(
                    "column {} arrived in binary format, which is not requested",
                    column.name
                )));
            }
        };
        row.push(value);
    }
    Ok(row)
}

fn decode_text(
    relation: &Relation,
    lsn: Lsn,
    column: &Column,
    bytes: &Bytes,
) -> Result<Value, DecodeProblem> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        DecodeProblem::Value(format!(
            "{} column {} at lsn {lsn}: value is not valid UTF-8",
            relation.qualified_name(),
            column.name
        ))
    })?;
    parse_text(&column.pg_type, text).map_err(|e| {
        DecodeProblem::Value(format!(
            "{} column {} ({}) at lsn {lsn}: {e}",
            relation.qualified_name(),
            column.name,
            column.pg_type.name()
        ))
    })
}

/// Resolves type OIDs to [`PgType`]s: built-ins from a table, the rest (enums, domains,
/// arrays of them, extension types) from the catalog, cached by OID until a Type message
/// says the type changed.
pub(crate) struct TypeResolver {
    client: tokio_postgres::Client,
    cache: HashMap<u32, PgType>,
}

/// Domains over domains over arrays... are followed this deep before giving up.
const MAX_TYPE_DEPTH: usize = 16;

impl TypeResolver {
    pub(crate) fn new(client: tokio_postgres::Client) -> Self {
        TypeResolver {
            client,
            cache: HashMap::new(),
        }
    }

    fn forget(&mut self, oid: u32) {
        self.cache.clear();
        debug!(oid, "type described again; cached types dropped");
    }

    pub(crate) async fn resolve(
        &mut self,
        oid: u32,
        typmod: i32,
    ) -> Result<PgType, catalog::CatalogError> {
        if let Some(builtin) = PgType::builtin(oid, typmod) {
            return Ok(builtin);
        }
        if typmod == -1 {
            if let Some(cached) = self.cache.get(&oid) {
                return Ok(cached.clone());
            }
        }
        let resolved = self.lookup(oid, typmod, 0).await?;
        if typmod == -1 {
            self.cache.insert(oid, resolved.clone());
        }
        Ok(resolved)
    }

    /// Follows domains to their base type and arrays to their element type.
    async fn lookup(
        &mut self,
        oid: u32,
        typmod: i32,
        depth: usize,
    ) -> Result<PgType, catalog::CatalogError> {
        if let Some(builtin) = PgType::builtin(oid, typmod) {
            return Ok(builtin);
        }
        let info = catalog::type_info(&self.client, oid).await?;
        if depth >= MAX_TYPE_DEPTH {
            return Ok(PgType::Other {
                name: format!("{}.{}", info.namespace, info.name),
            });
        }
        let name = if info.namespace == "pg_catalog" {
            info.name.clone()
        } else {
            format!("{}.{}", info.namespace, info.name)
        };
        let resolved = if let (true, Some(base_oid)) = (info.typtype == 'd', info.base_type_oid) {
            let base = Box::pin(self.lookup(base_oid, info.base_typmod, depth + 1)).await?;
            PgType::Domain {
                name,
                base: Box::new(base),
            }
        } else if info.typtype == 'e' {
            PgType::Enum {
                name,
                labels: info.enum_labels.clone(),
            }
        } else if let Some(element_oid) = info.element_oid.filter(|_| info.typcategory == 'A') {
            // An array column carries the array type's typmod, which applies to its elements.
            let element = Box::pin(self.lookup(element_oid, typmod, depth + 1)).await?;
            PgType::Array {
                element: Box::new(element),
                delimiter: info.delimiter,
            }
        } else {
            PgType::Other { name }
        };
        Ok(resolved)
    }
}
