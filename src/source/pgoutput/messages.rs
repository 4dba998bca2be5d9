//! The typed messages of the pgoutput protocol, one variant per message of the PostgreSQL 15
//! "Logical Replication Message Formats" chapter.
//!
//! The types mirror the wire format closely and add no interpretation: deciding what a
//! Relation's key flags mean under `REPLICA IDENTITY FULL` (CASE-16) or what a streamed
//! abort discards (CASE-20) is the job of the stages that consume these messages.

use bytes::Bytes;

use crate::source::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A `TimestampTz` as sent on the wire: microseconds since 2000-01-01 00:00:00 UTC.
///
/// Kept in PostgreSQL's own epoch so that decoding loses nothing and costs nothing; the
/// conversion happens once, where an event envelope needs a Unix time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Microseconds since the Unix epoch, saturating instead of overflowing on the extreme
    /// values a corrupt or `infinity` timestamp could carry.
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(POSTGRES_EPOCH_UNIX_MICROS)
    }
}

/// One decoded pgoutput message (the payload of one XLogData frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    /// `B`: the start of a committed transaction (not sent for streamed ones).
    Begin {
        /// The LSN of the commit record, equal to the following Commit's `commit_lsn`.
        final_lsn: Lsn,
        /// When the transaction committed.
        commit_ts: PgTimestamp,
        /// The transaction id.
        xid: u32,
    },
    /// `C`: the end of the transaction opened by the last Begin.
    Commit {
        /// Unused by PostgreSQL 15; kept so that a future meaning is not silently dropped.
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The LSN just past the commit record: what the slot may be confirmed to.
        end_lsn: Lsn,
        /// When the transaction committed.
        commit_ts: PgTimestamp,
    },
    /// `O`: the replication origin the transaction came from (set by an upstream replica).
    Origin {
        /// The LSN of the commit on the origin server.
        commit_lsn: Lsn,
        /// The origin's name.
        name: String,
    },
    /// `R`: a table's schema, sent before its first change and again after any change to it.
    Relation(RelationBody),
    /// `Y`: a user-defined type used by a published column (enum, domain, composite).
    ///
    /// For domains the name is the base type's with an empty namespace (CASE-10), so the
    /// name must not be trusted to identify the type: resolve the OID through the catalog.
    Type {
        /// The streamed transaction this message belongs to, present only inside a stream.
        xid: Option<u32>,
        /// The type's OID, as used in a Relation column's `type_oid`.
        oid: u32,
        /// The namespace (schema) name, empty for the types of `pg_catalog` and for domains.
        namespace: String,
        /// The type name.
        name: String,
    },
    /// `I`: a new row.
    Insert {
        /// The streamed transaction this message belongs to, present only inside a stream.
        xid: Option<u32>,
        /// The table, as announced by an earlier Relation message.
        relation_oid: u32,
        /// The inserted row.
        new: TupleData,
    },
    /// `U`: a changed row.
    Update {
        /// The streamed transaction this message belongs to, present only inside a stream.
        xid: Option<u32>,
        /// The table, as announced by an earlier Relation message.
        relation_oid: u32,
        /// The before image: the whole row under FULL, the key when it changed under
        /// DEFAULT/INDEX, and absent otherwise.
        old: Option<OldTuple>,
        /// The row after the update; unchanged TOASTed values come as `UnchangedToast`.
        new: TupleData,
    },
    /// `D`: a deleted row.
    Delete {
        /// The streamed transaction this message belongs to, present only inside a stream.
        xid: Option<u32>,
        /// The table, as announced by an earlier Relation message.
        relation_oid: u32,
        /// The key (DEFAULT/INDEX) or the whole row (FULL) of the deleted row.
        old: OldTuple,
    },
    /// `T`: one TRUNCATE statement, listing every published table it emptied (CASE-18).
    Truncate {
        /// The streamed transaction this message belongs to, present only inside a stream.
        xid: Option<u32>,
        /// CASCADE and RESTART IDENTITY, as given to the statement.
        options: TruncateOptions,
        /// The truncated tables.
        relation_oids: Vec<u32>,
    },
    /// `M`: a message from `pg_logical_emit_message` (sent only with `messages 'true'`).
    Message {
        /// The streamed transaction this message belongs to, present only inside a stream.
        xid: Option<u32>,
        /// Whether the message belongs to its transaction; a non-transactional one arrives
        /// immediately, outside any Begin/Commit, even if emitted mid-transaction (CASE-22).
        transactional: bool,
        /// The LSN of the message record; not monotonic relative to transactions.
        lsn: Lsn,
        /// The prefix given by the emitter, used to tell applications' messages apart.
        prefix: String,
        /// The content, arbitrary bytes.
        content: Bytes,
    },
    /// `S` (v2): the start of a block of changes of an in-progress, streamed transaction.
    StreamStart {
        /// The top-level transaction the block belongs to.
        xid: u32,
        /// Whether this is the first block of that transaction.
        first_segment: bool,
    },
    /// `E` (v2): the end of the block opened by the last StreamStart.
    StreamStop,
    /// `c` (v2): a streamed transaction committed; its blocks may now be published.
    StreamCommit {
        /// The committed top-level transaction.
        xid: u32,
        /// Unused by PostgreSQL 15.
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The LSN just past the commit record.
        end_lsn: Lsn,
        /// When the transaction committed.
        commit_ts: PgTimestamp,
    },
    /// `A` (v2): a streamed transaction, or one of its subtransactions, aborted.
    ///
    /// With `subxid == xid` the whole transaction is gone; otherwise only that
    /// subtransaction's changes are (CASE-20).
    StreamAbort {
        /// The top-level transaction.
        xid: u32,
        /// The aborted subtransaction, or `xid` itself.
        subxid: u32,
    },
    /// `b` (v3): the start of a transaction prepared for two-phase commit.
    BeginPrepare {
        /// The LSN of the PREPARE record.
        prepare_lsn: Lsn,
        /// The LSN just past the PREPARE record.
        end_lsn: Lsn,
        /// When the transaction was prepared.
        prepare_ts: PgTimestamp,
        /// The transaction id.
        xid: u32,
        /// The global identifier given to PREPARE TRANSACTION.
        gid: String,
    },
    /// `P` (v3): the end of the changes of a prepared transaction.
    Prepare {
        /// Unused by PostgreSQL 15.
        flags: u8,
        /// The LSN of the PREPARE record.
        prepare_lsn: Lsn,
        /// The LSN just past the PREPARE record.
        end_lsn: Lsn,
        /// When the transaction was prepared.
        prepare_ts: PgTimestamp,
        /// The transaction id.
        xid: u32,
        /// The global identifier given to PREPARE TRANSACTION.
        gid: String,
    },
    /// `K` (v3): a prepared transaction was committed.
    CommitPrepared {
        /// Unused by PostgreSQL 15.
        flags: u8,
        /// The LSN of the COMMIT PREPARED record.
        commit_lsn: Lsn,
        /// The LSN just past the COMMIT PREPARED record.
        end_lsn: Lsn,
        /// When the transaction committed.
        commit_ts: PgTimestamp,
        /// The transaction id.
        xid: u32,
        /// The global identifier given to PREPARE TRANSACTION.
        gid: String,
    },
    /// `r` (v3): a prepared transaction was rolled back; its changes must be discarded.
    RollbackPrepared {
        /// Unused by PostgreSQL 15.
        flags: u8,
        /// The end LSN of the prepared transaction.
        prepare_end_lsn: Lsn,
        /// The end LSN of the ROLLBACK PREPARED record.
        rollback_end_lsn: Lsn,
        /// When the transaction was prepared.
        prepare_ts: PgTimestamp,
        /// When the transaction was rolled back.
        rollback_ts: PgTimestamp,
        /// The transaction id.
        xid: u32,
        /// The global identifier given to PREPARE TRANSACTION.
        gid: String,
    },
    /// `p` (v3): a streamed transaction was prepared.
    StreamPrepare {
        /// Unused by PostgreSQL 15.
        flags: u8,
        /// The LSN of the PREPARE record.
        prepare_lsn: Lsn,
        /// The LSN just past the PREPARE record.
        end_lsn: Lsn,
        /// When the transaction was prepared.
        prepare_ts: PgTimestamp,
        /// The transaction id.
        xid: u32,
        /// The global identifier given to PREPARE TRANSACTION.
        gid: String,
    },
}

/// The body of a Relation (`R`) message: a table's schema as the publication sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationBody {
    /// The streamed transaction this message belongs to, present only inside a stream.
    pub xid: Option<u32>,
    /// The table's OID, the key every row message refers to it by.
    pub oid: u32,
    /// The schema name.
    pub namespace: String,
    /// The table name.
    pub name: String,
    /// Which before image Update and Delete carry.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in the order tuples list their values.
    pub columns: Vec<RelationColumn>,
}

/// `pg_class.relreplident`: which old values the server writes to the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key, if any.
    Default,
    /// `n`: nothing; UPDATE and DELETE fail at the source once the table is published.
    Nothing,
    /// `f`: the whole row; every column is then flagged as part of the key (CASE-16).
    Full,
    /// `i`: the columns of one unique index.
    Index,
}

impl ReplicaIdentity {
    /// Maps the wire byte, `None` for a byte PostgreSQL does not define.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 0 set: the column is part of the replica identity. The raw byte is kept so that
    /// a flag added by a later server version is not lost.
    pub flags: u8,
    /// The column name.
    pub name: String,
    /// The column's type OID; for a domain, the domain's OID (CASE-10).
    pub type_oid: u32,
    /// The type modifier (`atttypmod`), -1 when there is none.
    pub type_modifier: i32,
}

impl RelationColumn {
    /// The flag bit that marks a replica identity column.
    pub const FLAG_KEY: u8 = 1;

    /// Whether the column is part of the replica identity. Under FULL every column is, so
    /// this is not the table's primary key (CASE-16).
    pub fn is_key(&self) -> bool {
        self.flags & Self::FLAG_KEY != 0
    }
}

/// The values of one row, in the order of the Relation's columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TupleData(pub Vec<TupleColumn>);

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleColumn {
    /// `n`: SQL NULL, or, in a key-only old tuple, a column that is not part of the key.
    Null,
    /// `u`: a TOASTed value the update did not change; the server does not resend it.
    UnchangedToast,
    /// `t`: the value in PostgreSQL's text format, in the connection's client_encoding.
    Text(Bytes),
    /// `b`: the value in the type's binary format (only with `binary 'true'`).
    Binary(Bytes),
}

/// The before image of an Update or Delete, tagged with what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity columns carry values; the others are `Null`, which
    /// here means "not sent", not SQL NULL (CASE-16).
    Key(TupleData),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Old(TupleData),
}

impl OldTuple {
    /// The values, whichever kind of before image they form.
    pub fn tuple(&self) -> &TupleData {
        match self {
            Self::Key(tuple) | Self::Old(tuple) => tuple,
        }
    }
}

/// The options of a TRUNCATE statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncateOptions {
    /// TRUNCATE ... CASCADE: tables referencing the listed ones were emptied too.
    pub cascade: bool,
    /// TRUNCATE ... RESTART IDENTITY: sequences restarted, so keys will be reused.
    pub restart_identity: bool,
}

impl TruncateOptions {
    /// The wire bit for CASCADE.
    const CASCADE: u8 = 1;
    /// The wire bit for RESTART IDENTITY.
    const RESTART_IDENTITY: u8 = 2;

    /// Reads the option bits; bits PostgreSQL 15 does not define are ignored because they
    /// cannot change which tables were emptied.
    pub fn from_bits(bits: u8) -> Self {
        Self {
            cascade: bits & Self::CASCADE != 0,
            restart_identity: bits & Self::RESTART_IDENTITY != 0,
        }
    }
}
