//! Why a pgoutput payload could not be decoded, and where.
//!
//! Every error names the message type and the byte offset of the field that failed, so that
//! an operator can find the fault in a captured payload. A malformed message means the
//! decoder and the server disagree about the protocol, so nothing after it can be trusted:
//! the disposition is always Halt.

use crate::error::Disposition;

/// A payload that is not a well-formed pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput {} message at byte {offset}: {kind}", message_name(*.tag))]
pub struct DecodeError {
    /// The message's tag byte, `None` for an empty payload.
    pub tag: Option<u8>,
    /// The offset in the payload of the field that failed (0 is the tag).
    pub offset: usize,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

/// What was wrong with a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The payload has no tag byte at all.
    #[error("empty payload")]
    Empty,
    /// The tag is not one PostgreSQL 15 defines.
    #[error("unknown message tag {}", describe_byte(*.0))]
    UnknownTag(u8),
    /// A known message that the negotiated protocol version does not allow.
    #[error("not sent under protocol version {version}, needs version {required}")]
    UnsupportedByVersion {
        /// The `proto_version` the decoder was created for.
        version: u32,
        /// The lowest version that defines the message.
        required: u32,
    },
    /// A field runs past the end of the payload.
    #[error("truncated {field}: needs {needed} bytes, {remaining} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// The bytes the field needs.
        needed: usize,
        /// The bytes left in the payload.
        remaining: usize,
    },
    /// A string has no terminating NUL before the end of the payload.
    #[error("unterminated string in {field}")]
    UnterminatedString {
        /// The field being read.
        field: &'static str,
    },
    /// A name or prefix is not UTF-8 (client_encoding is not UTF8, or corruption).
    #[error("invalid utf-8 in {field}")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// A length or count field is negative.
    #[error("negative {field}: {value}")]
    Negative {
        /// The field being read.
        field: &'static str,
        /// The value read.
        value: i64,
    },
    /// A count announces more items than the remaining bytes could possibly hold; caught
    /// before allocating so that a corrupt count cannot exhaust memory.
    #[error("{count} {field} announced, but only {remaining} bytes remain")]
    OversizedCount {
        /// What is counted.
        field: &'static str,
        /// The count read.
        count: usize,
        /// The bytes left in the payload.
        remaining: usize,
    },
    /// A tuple column kind other than `n`, `u`, `t` or `b`.
    #[error("bad tuple column kind {} in column {column}", describe_byte(*.kind))]
    BadColumnKind {
        /// The zero-based column index.
        column: usize,
        /// The byte read.
        kind: u8,
    },
    /// A tuple marker other than the ones the message allows (`N`, `K`, `O`).
    #[error("unexpected tuple marker {}, expected {expected}", describe_byte(*.found))]
    BadTupleMarker {
        /// The byte read.
        found: u8,
        /// The markers allowed at this point.
        expected: &'static str,
    },
    /// A replica identity byte other than `d`, `n`, `f` or `i`.
    #[error("unknown replica identity {}", describe_byte(*.0))]
    BadReplicaIdentity(u8),
    /// A stream control message that contradicts the current stream state.
    #[error("{0}")]
    StreamState(&'static str),
    /// Bytes left after the last field.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// A malformed message means the stream cannot be trusted: stop without confirming it.
    pub fn disposition(&self) -> Disposition {
        Disposition::Halt
    }

    /// What the operator should check, for the Halt report.
    pub fn hint(&self) -> &'static str {
        match self.kind {
            DecodeErrorKind::UnsupportedByVersion { .. } | DecodeErrorKind::UnknownTag(_) => {
                "check that the server sends the proto_version the connector asked for"
            }
            DecodeErrorKind::InvalidUtf8 { .. } => {
                "names are sent in the connection's client_encoding: \
                 start the replication connection with client_encoding=UTF8"
            }
            _ => {
                "the replication stream is corrupt or from an unsupported server version; \
                  keep the payload and report it"
            }
        }
    }

    /// The name of the message type, for logs and metrics labels (a bounded set).
    pub fn message(&self) -> &'static str {
        message_name(self.tag)
    }
}

/// The lowercase name of the message a tag introduces.
pub(super) fn message_name(tag: Option<u8>) -> &'static str {
    match tag {
        Some(b'B') => "begin",
        Some(b'C') => "commit",
        Some(b'O') => "origin",
        Some(b'R') => "relation",
        Some(b'Y') => "type",
        Some(b'I') => "insert",
        Some(b'U') => "update",
        Some(b'D') => "delete",
        Some(b'T') => "truncate",
        Some(b'M') => "logical decoding",
        Some(b'S') => "stream start",
        Some(b'E') => "stream stop",
        Some(b'c') => "stream commit",
        Some(b'A') => "stream abort",
        Some(b'b') => "begin prepare",
        Some(b'P') => "prepare",
        Some(b'K') => "commit prepared",
        Some(b'r') => "rollback prepared",
        Some(b'p') => "stream prepare",
        Some(_) => "unknown",
        None => "empty",
    }
}

/// Shows a byte as a character when printable, always with its hex value.
fn describe_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("'{}' (0x{byte:02x})", char::from(byte))
    } else {
        format!("0x{byte:02x}")
    }
}
