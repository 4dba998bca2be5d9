//! Turns the payload of one XLogData frame into a [`LogicalMessage`].
//!
//! The decoder is the only stateful part of this module: protocol v2 prefixes the row and
//! schema messages of a streamed transaction with its xid, and only the preceding Stream
//! Start / Stream Stop tell whether that prefix is there. Everything else is a pure
//! function of the bytes.

use bytes::Bytes;

use super::error::{DecodeError, DecodeErrorKind};
use super::messages::{
    LogicalMessage, OldTuple, PgTimestamp, RelationBody, RelationColumn, ReplicaIdentity,
    TruncateOptions, TupleColumn, TupleData,
};
use super::reader::Reader;

/// The smallest encoding of one tuple column: its kind byte (`n` or `u`).
const MIN_TUPLE_COLUMN_SIZE: usize = 1;
/// The smallest encoding of one Relation column: flags, an empty name's NUL, type OID and
/// type modifier.
const MIN_RELATION_COLUMN_SIZE: usize = 1 + 1 + 4 + 4;
/// The size of one relation OID in a Truncate message.
const TRUNCATE_OID_SIZE: usize = 4;

/// The highest `proto_version` whose messages this decoder understands.
pub const MAX_PROTOCOL_VERSION: u32 = 3;

/// Decodes pgoutput payloads in stream order, remembering whether a streamed block is open.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Between Stream Start and Stream Stop: row and schema messages carry an xid.
    in_stream: bool,
    /// The `proto_version` given to START_REPLICATION; gates the v2 and v3 messages.
    protocol_version: u32,
}

impl Decoder {
    /// A decoder for a stream started with `proto_version` = `protocol_version`, positioned
    /// outside any streamed block, which is where every replication stream starts.
    pub fn new(protocol_version: u32) -> Self {
        Self {
            in_stream: false,
            protocol_version,
        }
    }

    /// The `proto_version` this decoder was created for.
    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// Whether a streamed block is open, so that xids are expected.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Forces the streamed-block state; for tests and fuzzing, which start mid-stream.
    pub fn set_in_stream(&mut self, in_stream: bool) {
        self.in_stream = in_stream;
    }

    /// Forgets the streamed-block state, as a new replication connection starts outside any.
    pub fn reset(&mut self) {
        self.in_stream = false;
    }

    /// Decodes one payload, copying it once into a shared buffer that the column values
    /// then slice. Prefer [`Decoder::decode_bytes`] when the frame is already `Bytes`.
    pub fn decode(&mut self, payload: &[u8]) -> Result<LogicalMessage, DecodeError> {
        self.decode_bytes(Bytes::copy_from_slice(payload))
    }

    /// Decodes one payload without copying: column values and message content are slices
    /// of `payload`.
    ///
    /// On error the stream state is left unchanged, though after a malformed message the
    /// stream should not be read further anyway.
    pub fn decode_bytes(&mut self, payload: Bytes) -> Result<LogicalMessage, DecodeError> {
        let Some(&tag) = payload.first() else {
            return Err(DecodeError {
                tag: None,
                offset: 0,
                kind: DecodeErrorKind::Empty,
            });
        };
        let mut r = Reader::new(payload, tag);
        let message = match tag {
            b'B' => decode_begin(&mut r)?,
            b'C' => decode_commit(&mut r)?,
            b'O' => decode_origin(&mut r)?,
            b'R' => {
                let xid = self.stream_xid(&mut r)?;
                LogicalMessage::Relation(decode_relation(&mut r, xid)?)
            }
            b'Y' => {
                let xid = self.stream_xid(&mut r)?;
                decode_type(&mut r, xid)?
            }
            b'I' => {
                let xid = self.stream_xid(&mut r)?;
                decode_insert(&mut r, xid)?
            }
            b'U' => {
                let xid = self.stream_xid(&mut r)?;
                decode_update(&mut r, xid)?
            }
            b'D' => {
                let xid = self.stream_xid(&mut r)?;
                decode_delete(&mut r, xid)?
            }
            b'T' => {
                let xid = self.stream_xid(&mut r)?;
                decode_truncate(&mut r, xid)?
            }
            b'M' => {
                let xid = self.stream_xid(&mut r)?;
                decode_message(&mut r, xid)?
            }
            b'S' => {
                self.require(&r, 2)?;
                self.require_stream(&r, false, "stream start inside a streamed block")?;
                decode_stream_start(&mut r)?
            }
            b'E' => {
                self.require(&r, 2)?;
                self.require_stream(&r, true, "stream stop outside a streamed block")?;
                LogicalMessage::StreamStop
            }
            b'c' => {
                self.require(&r, 2)?;
                self.require_stream(&r, false, "stream commit inside a streamed block")?;
                decode_stream_commit(&mut r)?
            }
            b'A' => {
                self.require(&r, 2)?;
                self.require_stream(&r, false, "stream abort inside a streamed block")?;
                decode_stream_abort(&mut r)?
            }
            b'b' => {
                self.require(&r, 3)?;
                decode_begin_prepare(&mut r)?
            }
            b'P' => {
                self.require(&r, 3)?;
                decode_prepare(&mut r, PreparedLayout::Prepare)?
            }
            b'K' => {
                self.require(&r, 3)?;
                decode_prepare(&mut r, PreparedLayout::CommitPrepared)?
            }
            b'r' => {
                self.require(&r, 3)?;
                decode_rollback_prepared(&mut r)?
            }
            b'p' => {
                self.require(&r, 3)?;
                decode_prepare(&mut r, PreparedLayout::StreamPrepare)?
            }
            other => return Err(r.error_at(0, DecodeErrorKind::UnknownTag(other))),
        };
        r.finish()?;
        // The state changes only once the whole message is known to be well formed.
        match message {
            LogicalMessage::StreamStart { .. } => self.in_stream = true,
            LogicalMessage::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(message)
    }

    /// Reads the xid that protocol v2 puts before a message inside a streamed block.
    fn stream_xid(&self, r: &mut Reader) -> Result<Option<u32>, DecodeError> {
        if self.in_stream {
            r.u32("xid").map(Some)
        } else {
            Ok(None)
        }
    }

    /// Rejects a message the negotiated protocol version does not define: receiving one
    /// means the server and the decoder disagree about the framing of everything else.
    fn require(&self, r: &Reader, required: u32) -> Result<(), DecodeError> {
        if self.protocol_version >= required {
            Ok(())
        } else {
            Err(r.error_at(
                0,
                DecodeErrorKind::UnsupportedByVersion {
                    version: self.protocol_version,
                    required,
                },
            ))
        }
    }

    /// Rejects a stream control message in the wrong state, since every later xid prefix
    /// would be misread.
    fn require_stream(
        &self,
        r: &Reader,
        in_stream: bool,
        problem: &'static str,
    ) -> Result<(), DecodeError> {
        if self.in_stream == in_stream {
            Ok(())
        } else {
            Err(r.error_at(0, DecodeErrorKind::StreamState(problem)))
        }
    }
}

/// `B`: Int64 final LSN, Int64 commit timestamp, Int32 xid.
fn decode_begin(r: &mut Reader) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::Begin {
        final_lsn: r.lsn("final lsn")?,
        commit_ts: timestamp(r, "commit timestamp")?,
        xid: r.u32("xid")?,
    })
}

/// `C`: Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit timestamp.
fn decode_commit(r: &mut Reader) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::Commit {
        flags: r.u8("flags")?,
        commit_lsn: r.lsn("commit lsn")?,
        end_lsn: r.lsn("end lsn")?,
        commit_ts: timestamp(r, "commit timestamp")?,
    })
}

/// `O`: Int64 commit LSN on the origin, String origin name.
fn decode_origin(r: &mut Reader) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::Origin {
        commit_lsn: r.lsn("commit lsn")?,
        name: r.string("origin name")?,
    })
}

/// `R`: Int32 OID, String namespace, String name, Int8 replica identity, Int16 column
/// count, then per column Int8 flags, String name, Int32 type OID, Int32 type modifier.
fn decode_relation(r: &mut Reader, xid: Option<u32>) -> Result<RelationBody, DecodeError> {
    let oid = r.u32("relation oid")?;
    let namespace = r.string("namespace")?;
    let name = r.string("relation name")?;
    let identity_at = r.position();
    let identity = r.u8("replica identity")?;
    let replica_identity = ReplicaIdentity::from_byte(identity)
        .ok_or_else(|| r.error_at(identity_at, DecodeErrorKind::BadReplicaIdentity(identity)))?;
    let count = count16(r, "column count", MIN_RELATION_COLUMN_SIZE)?;
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        columns.push(RelationColumn {
            flags: r.u8("column flags")?,
            name: r.string("column name")?,
            type_oid: r.u32("column type oid")?,
            type_modifier: r.i32("column type modifier")?,
        });
    }
    Ok(RelationBody {
        xid,
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

/// `Y`: Int32 OID, String namespace, String name.
fn decode_type(r: &mut Reader, xid: Option<u32>) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::Type {
        xid,
        oid: r.u32("type oid")?,
        namespace: r.string("type namespace")?,
        name: r.string("type name")?,
    })
}

/// `I`: Int32 relation OID, `N`, TupleData.
fn decode_insert(r: &mut Reader, xid: Option<u32>) -> Result<LogicalMessage, DecodeError> {
    let relation_oid = r.u32("relation oid")?;
    expect_marker(r, b'N', "'N'")?;
    Ok(LogicalMessage::Insert {
        xid,
        relation_oid,
        new: tuple(r)?,
    })
}

/// `U`: Int32 relation OID, optionally `K` or `O` and the old TupleData, then `N` and the
/// new TupleData.
fn decode_update(r: &mut Reader, xid: Option<u32>) -> Result<LogicalMessage, DecodeError> {
    let relation_oid = r.u32("relation oid")?;
    let marker_at = r.position();
    let old = match r.u8("tuple marker")? {
        b'K' => Some(OldTuple::Key(tuple(r)?)),
        b'O' => Some(OldTuple::Old(tuple(r)?)),
        b'N' => None,
        found => {
            return Err(r.error_at(
                marker_at,
                DecodeErrorKind::BadTupleMarker {
                    found,
                    expected: "'K', 'O' or 'N'",
                },
            ))
        }
    };
    if old.is_some() {
        expect_marker(r, b'N', "'N'")?;
    }
    Ok(LogicalMessage::Update {
        xid,
        relation_oid,
        old,
        new: tuple(r)?,
    })
}

/// `D`: Int32 relation OID, `K` or `O`, TupleData.
fn decode_delete(r: &mut Reader, xid: Option<u32>) -> Result<LogicalMessage, DecodeError> {
    let relation_oid = r.u32("relation oid")?;
    let marker_at = r.position();
    let old = match r.u8("tuple marker")? {
        b'K' => OldTuple::Key(tuple(r)?),
        b'O' => OldTuple::Old(tuple(r)?),
        found => {
            return Err(r.error_at(
                marker_at,
                DecodeErrorKind::BadTupleMarker {
                    found,
                    expected: "'K' or 'O'",
                },
            ))
        }
    };
    Ok(LogicalMessage::Delete {
        xid,
        relation_oid,
        old,
    })
}

/// `T`: Int32 relation count, Int8 options, Int32 OID per relation.
fn decode_truncate(r: &mut Reader, xid: Option<u32>) -> Result<LogicalMessage, DecodeError> {
    let count_at = r.position();
    let count = r.length("relation count")?;
    let options = TruncateOptions::from_bits(r.u8("options")?);
    r.check_count(count_at, count, TRUNCATE_OID_SIZE, "relation oids")?;
    let mut relation_oids = Vec::with_capacity(count);
    for _ in 0..count {
        relation_oids.push(r.u32("relation oid")?);
    }
    Ok(LogicalMessage::Truncate {
        xid,
        options,
        relation_oids,
    })
}

/// `M`: Int8 flags, Int64 LSN, String prefix, Int32 content length, content.
fn decode_message(r: &mut Reader, xid: Option<u32>) -> Result<LogicalMessage, DecodeError> {
    let flags = r.u8("flags")?;
    let lsn = r.lsn("message lsn")?;
    let prefix = r.string("prefix")?;
    let len = r.length("content length")?;
    Ok(LogicalMessage::Message {
        xid,
        transactional: flags & 1 != 0,
        lsn,
        prefix,
        content: r.bytes(len, "content")?,
    })
}

/// `S`: Int32 xid, Int8 first-segment flag.
fn decode_stream_start(r: &mut Reader) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::StreamStart {
        xid: r.u32("xid")?,
        first_segment: r.u8("first segment")? == 1,
    })
}

/// `c`: Int32 xid, Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit timestamp.
fn decode_stream_commit(r: &mut Reader) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::StreamCommit {
        xid: r.u32("xid")?,
        flags: r.u8("flags")?,
        commit_lsn: r.lsn("commit lsn")?,
        end_lsn: r.lsn("end lsn")?,
        commit_ts: timestamp(r, "commit timestamp")?,
    })
}

/// `A`: Int32 xid, Int32 subtransaction xid. The abort LSN and timestamp that protocol
/// v4 adds with `streaming 'parallel'` are not read: this decoder stops at v3.
fn decode_stream_abort(r: &mut Reader) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::StreamAbort {
        xid: r.u32("xid")?,
        subxid: r.u32("subxid")?,
    })
}

/// `b`: Int64 prepare LSN, Int64 end LSN, Int64 prepare timestamp, Int32 xid, String gid.
fn decode_begin_prepare(r: &mut Reader) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::BeginPrepare {
        prepare_lsn: r.lsn("prepare lsn")?,
        end_lsn: r.lsn("end lsn")?,
        prepare_ts: timestamp(r, "prepare timestamp")?,
        xid: r.u32("xid")?,
        gid: r.string("gid")?,
    })
}

/// The three v3 messages that share one layout.
#[derive(Clone, Copy)]
enum PreparedLayout {
    /// `P`.
    Prepare,
    /// `K`.
    CommitPrepared,
    /// `p`.
    StreamPrepare,
}

/// `P`, `K`, `p`: Int8 flags, Int64 LSN, Int64 end LSN, Int64 timestamp, Int32 xid,
/// String gid.
fn decode_prepare(r: &mut Reader, which: PreparedLayout) -> Result<LogicalMessage, DecodeError> {
    let flags = r.u8("flags")?;
    let lsn = r.lsn("lsn")?;
    let end_lsn = r.lsn("end lsn")?;
    let ts = timestamp(r, "timestamp")?;
    let xid = r.u32("xid")?;
    let gid = r.string("gid")?;
    Ok(match which {
        PreparedLayout::Prepare => LogicalMessage::Prepare {
            flags,
            prepare_lsn: lsn,
            end_lsn,
            prepare_ts: ts,
            xid,
            gid,
        },
        PreparedLayout::CommitPrepared => LogicalMessage::CommitPrepared {
            flags,
            commit_lsn: lsn,
            end_lsn,
            commit_ts: ts,
            xid,
            gid,
        },
        PreparedLayout::StreamPrepare => LogicalMessage::StreamPrepare {
            flags,
            prepare_lsn: lsn,
            end_lsn,
            prepare_ts: ts,
            xid,
            gid,
        },
    })
}

/// `r`: Int8 flags, Int64 prepare end LSN, Int64 rollback end LSN, Int64 prepare
/// timestamp, Int64 rollback timestamp, Int32 xid, String gid.
fn decode_rollback_prepared(r: &mut Reader) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage::RollbackPrepared {
        flags: r.u8("flags")?,
        prepare_end_lsn: r.lsn("prepare end lsn")?,
        rollback_end_lsn: r.lsn("rollback end lsn")?,
        prepare_ts: timestamp(r, "prepare timestamp")?,
        rollback_ts: timestamp(r, "rollback timestamp")?,
        xid: r.u32("xid")?,
        gid: r.string("gid")?,
    })
}

/// Reads an `Int64 (TimestampTz)`.
fn timestamp(r: &mut Reader, field: &'static str) -> Result<PgTimestamp, DecodeError> {
    r.i64(field).map(PgTimestamp)
}

/// Reads a tuple marker that must be `expected`.
fn expect_marker(r: &mut Reader, expected: u8, name: &'static str) -> Result<(), DecodeError> {
    let at = r.position();
    match r.u8("tuple marker")? {
        found if found == expected => Ok(()),
        found => Err(r.error_at(
            at,
            DecodeErrorKind::BadTupleMarker {
                found,
                expected: name,
            },
        )),
    }
}

/// Reads an `Int16` count, rejecting a negative one or one the remaining bytes cannot hold
/// at `min_size` bytes per item.
fn count16(r: &mut Reader, field: &'static str, min_size: usize) -> Result<usize, DecodeError> {
    let at = r.position();
    let value = r.i16(field)?;
    let count = usize::try_from(value).map_err(|_| {
        r.error_at(
            at,
            DecodeErrorKind::Negative {
                field,
                value: i64::from(value),
            },
        )
    })?;
    r.check_count(at, count, min_size, field)?;
    Ok(count)
}

/// TupleData: Int16 column count, then per column a kind byte (`n`, `u`, `t`, `b`) and,
/// for `t` and `b`, an Int32 length and the value.
fn tuple(r: &mut Reader) -> Result<TupleData, DecodeError> {
    let count = count16(r, "tuple column count", MIN_TUPLE_COLUMN_SIZE)?;
    let mut columns = Vec::with_capacity(count);
    for column in 0..count {
        let kind_at = r.position();
        let value = match r.u8("tuple column kind")? {
            b'n' => TupleColumn::Null,
            b'u' => TupleColumn::UnchangedToast,
            b't' => {
                let len = r.length("column value length")?;
                TupleColumn::Text(r.bytes(len, "column value")?)
            }
            b'b' => {
                let len = r.length("column value length")?;
                TupleColumn::Binary(r.bytes(len, "column value")?)
            }
            kind => {
                return Err(r.error_at(kind_at, DecodeErrorKind::BadColumnKind { column, kind }))
            }
        };
        columns.push(value);
    }
    Ok(TupleData(columns))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::error::Disposition;
    use crate::source::Lsn;

    /// Builds a payload field by field, the way the server writes it.
    struct Msg(Vec<u8>);

    /// One tuple column for [`Msg::tuple`].
    enum Col<'a> {
        N,
        U,
        T(&'a [u8]),
        B(&'a [u8]),
    }

    impl Msg {
        fn new(tag: u8) -> Self {
            Self(vec![tag])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn str(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        /// Writes the xid prefix only when the message is inside a streamed block.
        fn xid(self, xid: Option<u32>) -> Self {
            match xid {
                Some(xid) => self.u32(xid),
                None => self,
            }
        }
        fn tuple(mut self, columns: &[Col<'_>]) -> Self {
            let count = i16::try_from(columns.len()).expect("test tuple fits i16");
            self = self.i16(count);
            for column in columns {
                self = match column {
                    Col::N => self.u8(b'n'),
                    Col::U => self.u8(b'u'),
                    Col::T(v) => self.u8(b't').i32(len32(v)).raw(v),
                    Col::B(v) => self.u8(b'b').i32(len32(v)).raw(v),
                };
            }
            self
        }
        fn build(self) -> Vec<u8> {
            self.0
        }
    }

    /// A test value's length as the wire's Int32.
    fn len32(v: &[u8]) -> i32 {
        i32::try_from(v.len()).expect("test value fits i32")
    }

    /// A text column value.
    fn text(v: &'static str) -> TupleColumn {
        TupleColumn::Text(Bytes::from_static(v.as_bytes()))
    }

    /// One hand-built payload, the decoder state it is read in, and what it must become.
    struct Sample {
        name: &'static str,
        version: u32,
        in_stream: bool,
        payload: Vec<u8>,
        expected: LogicalMessage,
    }

    /// A decoder in the given state, as if earlier messages had put it there.
    fn decoder(version: u32, in_stream: bool) -> Decoder {
        let mut decoder = Decoder::new(version);
        decoder.set_in_stream(in_stream);
        decoder
    }

    /// The messages whose xid prefix depends on the stream state, built for that state.
    fn xid_samples(xid: Option<u32>) -> Vec<Sample> {
        let in_stream = xid.is_some();
        let s = |name, payload, expected| Sample {
            name,
            version: 2,
            in_stream,
            payload,
            expected,
        };
        vec![
            s(
                "relation",
                Msg::new(b'R')
                    .xid(xid)
                    .u32(16_390)
                    .str("case16")
                    .str("by_index")
                    .u8(b'i')
                    .i16(3)
                    .u8(0)
                    .str("id")
                    .u32(23)
                    .i32(-1)
                    .u8(1)
                    .str("code")
                    .u32(1043)
                    .i32(8)
                    .u8(0)
                    .str("qty")
                    .u32(23)
                    .i32(-1)
                    .build(),
                LogicalMessage::Relation(RelationBody {
                    xid,
                    oid: 16_390,
                    namespace: "case16".into(),
                    name: "by_index".into(),
                    replica_identity: ReplicaIdentity::Index,
                    columns: vec![
                        RelationColumn {
                            flags: 0,
                            name: "id".into(),
                            type_oid: 23,
                            type_modifier: -1,
                        },
                        RelationColumn {
                            flags: 1,
                            name: "code".into(),
                            type_oid: 1043,
                            type_modifier: 8,
                        },
                        RelationColumn {
                            flags: 0,
                            name: "qty".into(),
                            type_oid: 23,
                            type_modifier: -1,
                        },
                    ],
                }),
            ),
            s(
                "type",
                Msg::new(b'Y')
                    .xid(xid)
                    .u32(16_400)
                    .str("")
                    .str("numeric")
                    .build(),
                LogicalMessage::Type {
                    xid,
                    oid: 16_400,
                    namespace: String::new(),
                    name: "numeric".into(),
                },
            ),
            s(
                "insert with every column kind",
                Msg::new(b'I')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'N')
                    .tuple(&[
                        Col::N,
                        Col::U,
                        Col::T(b"42"),
                        Col::B(&[0, 0, 0, 42]),
                        Col::T(b""),
                    ])
                    .build(),
                LogicalMessage::Insert {
                    xid,
                    relation_oid: 16_384,
                    new: TupleData(vec![
                        TupleColumn::Null,
                        TupleColumn::UnchangedToast,
                        text("42"),
                        TupleColumn::Binary(Bytes::from_static(&[0, 0, 0, 42])),
                        text(""),
                    ]),
                },
            ),
            s(
                "update without old tuple",
                Msg::new(b'U')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'N')
                    .tuple(&[Col::T(b"2"), Col::U])
                    .build(),
                LogicalMessage::Update {
                    xid,
                    relation_oid: 16_384,
                    old: None,
                    new: TupleData(vec![text("2"), TupleColumn::UnchangedToast]),
                },
            ),
            s(
                "update with key",
                Msg::new(b'U')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'K')
                    .tuple(&[Col::T(b"2"), Col::N])
                    .u8(b'N')
                    .tuple(&[Col::T(b"20"), Col::T(b"b")])
                    .build(),
                LogicalMessage::Update {
                    xid,
                    relation_oid: 16_384,
                    old: Some(OldTuple::Key(TupleData(vec![text("2"), TupleColumn::Null]))),
                    new: TupleData(vec![text("20"), text("b")]),
                },
            ),
            s(
                "update with old row",
                Msg::new(b'U')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'O')
                    .tuple(&[Col::T(b"1"), Col::T(b"a")])
                    .u8(b'N')
                    .tuple(&[Col::T(b"10"), Col::T(b"a")])
                    .build(),
                LogicalMessage::Update {
                    xid,
                    relation_oid: 16_384,
                    old: Some(OldTuple::Old(TupleData(vec![text("1"), text("a")]))),
                    new: TupleData(vec![text("10"), text("a")]),
                },
            ),
            s(
                "delete with key",
                Msg::new(b'D')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'K')
                    .tuple(&[Col::T(b"20"), Col::N])
                    .build(),
                LogicalMessage::Delete {
                    xid,
                    relation_oid: 16_384,
                    old: OldTuple::Key(TupleData(vec![text("20"), TupleColumn::Null])),
                },
            ),
            s(
                "delete with old row",
                Msg::new(b'D')
                    .xid(xid)
                    .u32(16_384)
                    .u8(b'O')
                    .tuple(&[Col::T(b"20"), Col::N])
                    .build(),
                LogicalMessage::Delete {
                    xid,
                    relation_oid: 16_384,
                    old: OldTuple::Old(TupleData(vec![text("20"), TupleColumn::Null])),
                },
            ),
            s(
                "truncate",
                Msg::new(b'T')
                    .xid(xid)
                    .i32(2)
                    .u8(3)
                    .u32(16_500)
                    .u32(16_510)
                    .build(),
                LogicalMessage::Truncate {
                    xid,
                    options: TruncateOptions {
                        cascade: true,
                        restart_identity: true,
                    },
                    relation_oids: vec![16_500, 16_510],
                },
            ),
            s(
                "transactional message",
                Msg::new(b'M')
                    .xid(xid)
                    .u8(1)
                    .u64(0x0179_3758)
                    .str("audit")
                    .i32(20)
                    .raw(b"inside committed txn")
                    .build(),
                LogicalMessage::Message {
                    xid,
                    transactional: true,
                    lsn: Lsn(0x0179_3758),
                    prefix: "audit".into(),
                    content: Bytes::from_static(b"inside committed txn"),
                },
            ),
        ]
    }

    /// One payload of every message type, plus the xid-carrying ones inside a stream.
    fn samples() -> Vec<Sample> {
        let s = |name, version, payload, expected| Sample {
            name,
            version,
            in_stream: false,
            payload,
            expected,
        };
        let mut samples = vec![
            s(
                "begin",
                1,
                Msg::new(b'B')
                    .u64(0x017A_8450)
                    .i64(786_000_000_123_456)
                    .u32(926)
                    .build(),
                LogicalMessage::Begin {
                    final_lsn: Lsn(0x017A_8450),
                    commit_ts: PgTimestamp(786_000_000_123_456),
                    xid: 926,
                },
            ),
            s(
                "commit",
                1,
                Msg::new(b'C')
                    .u8(0)
                    .u64(0x017A_8450)
                    .u64(0x017A_8480)
                    .i64(786_000_000_123_456)
                    .build(),
                LogicalMessage::Commit {
                    flags: 0,
                    commit_lsn: Lsn(0x017A_8450),
                    end_lsn: Lsn(0x017A_8480),
                    commit_ts: PgTimestamp(786_000_000_123_456),
                },
            ),
            s(
                "origin",
                1,
                Msg::new(b'O').u64(0x1000).str("upstream").build(),
                LogicalMessage::Origin {
                    commit_lsn: Lsn(0x1000),
                    name: "upstream".into(),
                },
            ),
            s(
                "empty non-transactional message",
                1,
                Msg::new(b'M')
                    .u8(0)
                    .u64(0x0179_3758)
                    .str("heartbeat")
                    .i32(0)
                    .build(),
                LogicalMessage::Message {
                    xid: None,
                    transactional: false,
                    lsn: Lsn(0x0179_3758),
                    prefix: "heartbeat".into(),
                    content: Bytes::new(),
                },
            ),
            s(
                "stream start",
                2,
                Msg::new(b'S').u32(926).u8(1).build(),
                LogicalMessage::StreamStart {
                    xid: 926,
                    first_segment: true,
                },
            ),
            s(
                "stream commit",
                2,
                Msg::new(b'c')
                    .u32(926)
                    .u8(0)
                    .u64(0x2000)
                    .u64(0x2030)
                    .i64(5)
                    .build(),
                LogicalMessage::StreamCommit {
                    xid: 926,
                    flags: 0,
                    commit_lsn: Lsn(0x2000),
                    end_lsn: Lsn(0x2030),
                    commit_ts: PgTimestamp(5),
                },
            ),
            s(
                "stream abort",
                2,
                Msg::new(b'A').u32(926).u32(927).build(),
                LogicalMessage::StreamAbort {
                    xid: 926,
                    subxid: 927,
                },
            ),
            s(
                "begin prepare",
                3,
                Msg::new(b'b')
                    .u64(0x3000)
                    .u64(0x3040)
                    .i64(7)
                    .u32(930)
                    .str("gid-commit")
                    .build(),
                LogicalMessage::BeginPrepare {
                    prepare_lsn: Lsn(0x3000),
                    end_lsn: Lsn(0x3040),
                    prepare_ts: PgTimestamp(7),
                    xid: 930,
                    gid: "gid-commit".into(),
                },
            ),
            s(
                "prepare",
                3,
                Msg::new(b'P')
                    .u8(0)
                    .u64(0x3000)
                    .u64(0x3040)
                    .i64(7)
                    .u32(930)
                    .str("gid-commit")
                    .build(),
                LogicalMessage::Prepare {
                    flags: 0,
                    prepare_lsn: Lsn(0x3000),
                    end_lsn: Lsn(0x3040),
                    prepare_ts: PgTimestamp(7),
                    xid: 930,
                    gid: "gid-commit".into(),
                },
            ),
            s(
                "commit prepared",
                3,
                Msg::new(b'K')
                    .u8(0)
                    .u64(0x4000)
                    .u64(0x4040)
                    .i64(9)
                    .u32(930)
                    .str("gid-commit")
                    .build(),
                LogicalMessage::CommitPrepared {
                    flags: 0,
                    commit_lsn: Lsn(0x4000),
                    end_lsn: Lsn(0x4040),
                    commit_ts: PgTimestamp(9),
                    xid: 930,
                    gid: "gid-commit".into(),
                },
            ),
            s(
                "rollback prepared",
                3,
                Msg::new(b'r')
                    .u8(0)
                    .u64(0x3140)
                    .u64(0x4100)
                    .i64(8)
                    .i64(10)
                    .u32(931)
                    .str("gid-abort")
                    .build(),
                LogicalMessage::RollbackPrepared {
                    flags: 0,
                    prepare_end_lsn: Lsn(0x3140),
                    rollback_end_lsn: Lsn(0x4100),
                    prepare_ts: PgTimestamp(8),
                    rollback_ts: PgTimestamp(10),
                    xid: 931,
                    gid: "gid-abort".into(),
                },
            ),
            s(
                "stream prepare",
                3,
                Msg::new(b'p')
                    .u8(0)
                    .u64(0x5000)
                    .u64(0x5040)
                    .i64(11)
                    .u32(932)
                    .str("gid-stream")
                    .build(),
                LogicalMessage::StreamPrepare {
                    flags: 0,
                    prepare_lsn: Lsn(0x5000),
                    end_lsn: Lsn(0x5040),
                    prepare_ts: PgTimestamp(11),
                    xid: 932,
                    gid: "gid-stream".into(),
                },
            ),
        ];
        let mut stop = s(
            "stream stop",
            2,
            Msg::new(b'E').build(),
            LogicalMessage::StreamStop,
        );
        stop.in_stream = true;
        samples.push(stop);
        samples.extend(xid_samples(None));
        samples.extend(xid_samples(Some(926)));
        samples
    }

    /// Decodes one payload with a fresh decoder in the given state.
    fn decode_in(
        version: u32,
        in_stream: bool,
        payload: &[u8],
    ) -> Result<LogicalMessage, DecodeError> {
        decoder(version, in_stream).decode(payload)
    }

    /// The kind of error a payload must produce.
    fn error_kind(version: u32, in_stream: bool, payload: &[u8]) -> DecodeErrorKind {
        match decode_in(version, in_stream, payload) {
            Ok(message) => panic!("{payload:?} decoded to {message:?}, expected an error"),
            Err(error) => error.kind,
        }
    }

    #[test]
    fn every_message_type_decodes_exactly() {
        for sample in samples() {
            let decoded = decode_in(sample.version, sample.in_stream, &sample.payload)
                .unwrap_or_else(|e| {
                    panic!("{} (in_stream {}): {e}", sample.name, sample.in_stream)
                });
            assert_eq!(
                decoded, sample.expected,
                "{} (in_stream {})",
                sample.name, sample.in_stream
            );
        }
    }

    #[test]
    fn every_truncation_of_every_sample_is_an_error() {
        for sample in samples() {
            for len in 0..sample.payload.len() {
                let result = decode_in(sample.version, sample.in_stream, &sample.payload[..len]);
                assert!(
                    result.is_err(),
                    "{} cut to {len} bytes decoded to {result:?}",
                    sample.name
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        for sample in samples() {
            let mut payload = sample.payload.clone();
            payload.extend_from_slice(&[0, 7]);
            let error =
                decode_in(sample.version, sample.in_stream, &payload).expect_err(sample.name);
            assert_eq!(
                error.kind,
                DecodeErrorKind::TrailingBytes(2),
                "{}",
                sample.name
            );
            assert_eq!(error.offset, sample.payload.len(), "{}", sample.name);
        }
    }

    #[test]
    fn the_xid_prefix_is_read_only_inside_a_stream() {
        // The same bytes read in the other state must not decode to the same message.
        for sample in xid_samples(Some(926)) {
            let other = decode_in(2, false, &sample.payload);
            assert_ne!(other.ok(), Some(sample.expected), "{}", sample.name);
        }
    }

    #[test]
    fn a_streamed_block_carries_xids_between_start_and_stop() {
        let mut decoder = Decoder::new(2);
        let start = Msg::new(b'S').u32(926).u8(0).build();
        assert_eq!(
            decoder.decode(&start).expect("stream start"),
            LogicalMessage::StreamStart {
                xid: 926,
                first_segment: false
            }
        );
        assert!(decoder.in_stream());
        // A change of subtransaction 927 carries the subtransaction's xid (CASE-20).
        let insert = Msg::new(b'I')
            .u32(927)
            .u32(16_384)
            .u8(b'N')
            .tuple(&[Col::T(b"rolled-back")])
            .build();
        assert_eq!(
            decoder.decode(&insert).expect("streamed insert"),
            LogicalMessage::Insert {
                xid: Some(927),
                relation_oid: 16_384,
                new: TupleData(vec![text("rolled-back")]),
            }
        );
        let stop = Msg::new(b'E').build();
        assert_eq!(
            decoder.decode(&stop).expect("stream stop"),
            LogicalMessage::StreamStop
        );
        assert!(!decoder.in_stream());
        let abort = Msg::new(b'A').u32(926).u32(927).build();
        assert_eq!(
            decoder.decode(&abort).expect("stream abort"),
            LogicalMessage::StreamAbort {
                xid: 926,
                subxid: 927
            }
        );
        // Outside the block the same insert layout has no xid.
        let plain = Msg::new(b'I')
            .u32(16_384)
            .u8(b'N')
            .tuple(&[Col::T(b"side")])
            .build();
        assert_eq!(
            decoder.decode(&plain).expect("plain insert"),
            LogicalMessage::Insert {
                xid: None,
                relation_oid: 16_384,
                new: TupleData(vec![text("side")]),
            }
        );
        decoder.set_in_stream(true);
        decoder.reset();
        assert!(!decoder.in_stream());
    }

    #[test]
    fn stream_control_in_the_wrong_state_is_an_error_and_keeps_the_state() {
        let start = Msg::new(b'S').u32(1).u8(1).build();
        let stop = Msg::new(b'E').build();
        let commit = Msg::new(b'c').u32(1).u8(0).u64(1).u64(2).i64(3).build();
        let abort = Msg::new(b'A').u32(1).u32(1).build();
        let mut inside = decoder(2, true);
        for payload in [&start, &commit, &abort] {
            let error = inside.decode(payload).expect_err("control inside a block");
            assert!(
                matches!(error.kind, DecodeErrorKind::StreamState(_)),
                "{error}"
            );
            assert!(inside.in_stream());
        }
        let mut outside = decoder(2, false);
        let error = outside.decode(&stop).expect_err("stop outside a block");
        assert_eq!(
            error.to_string(),
            "malformed pgoutput stream stop message at byte 0: stream stop outside a streamed block"
        );
        assert!(!outside.in_stream());
        // A malformed stream start does not open a block.
        outside
            .decode(&start[..3])
            .expect_err("truncated stream start");
        assert!(!outside.in_stream());
    }

    #[test]
    fn messages_newer_than_the_protocol_version_are_rejected() {
        let start = Msg::new(b'S').u32(1).u8(1).build();
        assert_eq!(
            error_kind(1, false, &start),
            DecodeErrorKind::UnsupportedByVersion {
                version: 1,
                required: 2
            }
        );
        for sample in samples().into_iter().filter(|s| s.version == 3) {
            let kind = error_kind(2, false, &sample.payload);
            assert_eq!(
                kind,
                DecodeErrorKind::UnsupportedByVersion {
                    version: 2,
                    required: 3
                },
                "{}",
                sample.name
            );
        }
    }

    #[test]
    fn empty_payload_and_unknown_tag() {
        let error = decode_in(3, false, &[]).expect_err("empty");
        assert_eq!(error.kind, DecodeErrorKind::Empty);
        assert_eq!(
            error.to_string(),
            "malformed pgoutput empty message at byte 0: empty payload"
        );
        let error = decode_in(3, false, b"Zabc").expect_err("unknown tag");
        assert_eq!(error.kind, DecodeErrorKind::UnknownTag(b'Z'));
        assert_eq!(
            error.to_string(),
            "malformed pgoutput unknown message at byte 0: unknown message tag 'Z' (0x5a)"
        );
        assert_eq!(error.disposition(), Disposition::Halt);
        assert!(!error.hint().is_empty());
        assert_eq!(
            error_kind(3, false, &[0]),
            DecodeErrorKind::UnknownTag(0),
            "a NUL tag is unknown too"
        );
    }

    #[test]
    fn errors_name_the_field_and_offset() {
        let insert = Msg::new(b'I')
            .u32(16_384)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(10)
            .raw(b"abc")
            .build();
        let error = decode_in(1, false, &insert).expect_err("value runs past the end");
        assert_eq!(error.offset, 13);
        assert_eq!(error.message(), "insert");
        assert_eq!(
            error.to_string(),
            "malformed pgoutput insert message at byte 13: truncated column value: \
             needs 10 bytes, 3 remain"
        );
    }

    #[test]
    fn bad_tuple_contents_are_errors() {
        let with_column = |column: &[u8]| {
            Msg::new(b'I')
                .u32(1)
                .u8(b'N')
                .i16(2)
                .u8(b'n')
                .raw(column)
                .build()
        };
        assert_eq!(
            error_kind(1, false, &with_column(b"x")),
            DecodeErrorKind::BadColumnKind {
                column: 1,
                kind: b'x'
            }
        );
        let negative = with_column(&[b't', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            error_kind(1, false, &negative),
            DecodeErrorKind::Negative {
                field: "column value length",
                value: -1
            }
        );
        let negative_count = Msg::new(b'I').u32(1).u8(b'N').i16(-2).build();
        assert_eq!(
            error_kind(1, false, &negative_count),
            DecodeErrorKind::Negative {
                field: "tuple column count",
                value: -2
            }
        );
        let no_new_marker = Msg::new(b'I').u32(1).u8(b'K').tuple(&[]).build();
        assert!(matches!(
            error_kind(1, false, &no_new_marker),
            DecodeErrorKind::BadTupleMarker { found: b'K', .. }
        ));
        let bad_update = Msg::new(b'U').u32(1).u8(b'X').tuple(&[]).build();
        assert!(matches!(
            error_kind(1, false, &bad_update),
            DecodeErrorKind::BadTupleMarker { found: b'X', .. }
        ));
        let update_old_then_old = Msg::new(b'U')
            .u32(1)
            .u8(b'O')
            .tuple(&[])
            .u8(b'O')
            .tuple(&[])
            .build();
        assert!(matches!(
            error_kind(1, false, &update_old_then_old),
            DecodeErrorKind::BadTupleMarker { found: b'O', .. }
        ));
        let delete_new = Msg::new(b'D').u32(1).u8(b'N').tuple(&[]).build();
        assert!(matches!(
            error_kind(1, false, &delete_new),
            DecodeErrorKind::BadTupleMarker { found: b'N', .. }
        ));
    }

    #[test]
    fn oversized_counts_fail_before_allocating() {
        let tuple = Msg::new(b'I')
            .u32(1)
            .u8(b'N')
            .i16(i16::MAX)
            .raw(b"nn")
            .build();
        assert_eq!(
            error_kind(1, false, &tuple),
            DecodeErrorKind::OversizedCount {
                field: "tuple column count",
                count: 32_767,
                remaining: 2
            }
        );
        let relation = Msg::new(b'R')
            .u32(1)
            .str("s")
            .str("t")
            .u8(b'f')
            .i16(2)
            .u8(0)
            .str("a")
            .u32(23)
            .i32(-1)
            .build();
        assert!(matches!(
            error_kind(1, false, &relation),
            DecodeErrorKind::OversizedCount { count: 2, .. }
        ));
        let truncate = Msg::new(b'T').i32(i32::MAX).u8(0).u32(1).build();
        let error = decode_in(1, false, &truncate).expect_err("huge truncate count");
        assert_eq!(error.offset, 1);
        assert_eq!(
            error.kind,
            DecodeErrorKind::OversizedCount {
                field: "relation oids",
                count: 2_147_483_647,
                remaining: 4
            }
        );
        let negative = Msg::new(b'T').i32(-1).u8(0).build();
        assert!(matches!(
            error_kind(1, false, &negative),
            DecodeErrorKind::Negative { value: -1, .. }
        ));
        let huge_content = Msg::new(b'M').u8(0).u64(1).str("p").i32(i32::MAX).build();
        assert!(matches!(
            error_kind(1, false, &huge_content),
            DecodeErrorKind::Truncated {
                field: "content",
                ..
            }
        ));
    }

    #[test]
    fn bad_names_are_errors() {
        let invalid_utf8 = Msg::new(b'Y').u32(1).raw(b"sch\xffema\0").str("t").build();
        let error = decode_in(1, false, &invalid_utf8).expect_err("invalid utf-8");
        assert_eq!(
            error.kind,
            DecodeErrorKind::InvalidUtf8 {
                field: "type namespace"
            }
        );
        assert_eq!(error.offset, 5);
        let unterminated = Msg::new(b'O').u64(1).raw(b"origin").build();
        assert_eq!(
            error_kind(1, false, &unterminated),
            DecodeErrorKind::UnterminatedString {
                field: "origin name"
            }
        );
        let bad_identity = Msg::new(b'R')
            .u32(1)
            .str("s")
            .str("t")
            .u8(b'x')
            .i16(0)
            .build();
        let error = decode_in(1, false, &bad_identity).expect_err("bad identity");
        assert_eq!(error.kind, DecodeErrorKind::BadReplicaIdentity(b'x'));
        assert_eq!(error.offset, 9);
    }

    #[test]
    fn column_values_are_slices_of_the_payload() {
        let payload = Bytes::from(
            Msg::new(b'I')
                .u32(1)
                .u8(b'N')
                .tuple(&[Col::T(b"hello")])
                .build(),
        );
        let message = Decoder::new(1)
            .decode_bytes(payload.clone())
            .expect("insert");
        let LogicalMessage::Insert { new, .. } = message else {
            panic!("expected an insert, got {message:?}");
        };
        let [TupleColumn::Text(value)] = new.0.as_slice() else {
            panic!("expected one text column, got {new:?}");
        };
        let range = payload.as_ptr_range();
        assert!(range.contains(&value.as_ptr()), "value was copied");
    }

    #[test]
    fn accessors_and_timestamps() {
        let key = RelationColumn {
            flags: 1,
            name: "id".into(),
            type_oid: 23,
            type_modifier: -1,
        };
        assert!(key.is_key());
        assert!(!RelationColumn { flags: 0, ..key }.is_key());
        let old = OldTuple::Key(TupleData(vec![TupleColumn::Null]));
        assert_eq!(old.tuple().0.len(), 1);
        assert_eq!(PgTimestamp(0).unix_micros(), 946_684_800_000_000);
        assert_eq!(PgTimestamp(i64::MAX).unix_micros(), i64::MAX);
        assert_eq!(Decoder::new(2).protocol_version(), 2);
        assert_eq!(TruncateOptions::from_bits(0xfc), TruncateOptions::default());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn arbitrary_bytes_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            version in 1u32..=3,
            in_stream: bool,
        ) {
            let _ = decoder(version, in_stream).decode(&payload);
        }

        #[test]
        fn arbitrary_bodies_after_a_known_tag_never_panic(
            tag in proptest::sample::select(b"BCORYIUDTMSEcAbPKrp".to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..128),
            version in 1u32..=3,
            in_stream: bool,
        ) {
            let mut payload = vec![tag];
            payload.extend_from_slice(&body);
            let _ = decoder(version, in_stream).decode(&payload);
        }

        #[test]
        fn mutated_samples_never_panic(
            index in any::<proptest::sample::Index>(),
            position in any::<proptest::sample::Index>(),
            byte: u8,
        ) {
            let samples = samples();
            let sample = &samples[index.index(samples.len())];
            let mut payload = sample.payload.clone();
            let at = position.index(payload.len());
            payload[at] = byte;
            let _ = decoder(sample.version, sample.in_stream).decode(&payload);
        }
    }
}
