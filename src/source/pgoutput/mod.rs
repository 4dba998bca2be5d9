//! The pgoutput decoder: the payload of one XLogData frame in, one typed message out.
//!
//! PostgreSQL's built-in logical decoding plugin writes the binary format described in the
//! PostgreSQL 15 documentation, "Logical Replication Message Formats". This module decodes
//! protocol versions 1 (transactions, schema and row changes, logical decoding messages),
//! 2 (streamed in-progress transactions) and 3 (two-phase commit, parsed only: the connector
//! keeps two-phase decoding off, CASE-23).
//!
//! It is pure and synchronous: no I/O, no catalog lookups. Every read is bounds-checked and
//! every count is checked against the bytes that remain before anything is allocated, so a
//! malformed payload yields a [`DecodeError`] (disposition Halt), never a panic or an
//! out-of-memory abort. The `fuzz/` target exercises exactly that promise.

mod decode;
mod error;
mod messages;
mod reader;

pub use decode::{Decoder, MAX_PROTOCOL_VERSION};
pub use error::{DecodeError, DecodeErrorKind};
pub use messages::{
    LogicalMessage, OldTuple, PgTimestamp, RelationBody, RelationColumn, ReplicaIdentity,
    TruncateOptions, TupleColumn, TupleData,
};
