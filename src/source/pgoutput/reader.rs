//! A bounds-checked cursor over one payload.
//!
//! Every read checks the remaining length first and reports the offset of the field it
//! was reading, so the decoder itself contains no indexing that could panic. Byte values
//! are sliced out of the shared `Bytes` buffer, so column values are never copied.

use bytes::Bytes;

use super::error::{DecodeError, DecodeErrorKind};
use crate::source::Lsn;

/// The read position in one payload whose tag byte is already known.
pub(super) struct Reader {
    /// The whole payload, tag included, so offsets match what a capture shows.
    buf: Bytes,
    /// The offset of the next byte to read.
    pos: usize,
    /// The message's tag, named by every error.
    tag: u8,
}

impl Reader {
    /// Starts reading just after the tag byte at offset 0.
    pub(super) fn new(buf: Bytes, tag: u8) -> Self {
        Self { buf, pos: 1, tag }
    }

    /// An error of this message at the given offset.
    pub(super) fn error_at(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            tag: Some(self.tag),
            offset,
            kind,
        }
    }

    /// An error of this message at the current position.
    pub(super) fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        self.error_at(self.pos, kind)
    }

    /// The bytes not yet read.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The current offset, for errors about a field that was already read.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// Takes `N` bytes as an array, or reports the field as truncated.
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let end = self.pos.checked_add(N);
        let chunk = end.and_then(|end| self.buf.get(self.pos..end));
        match chunk.and_then(|chunk| <[u8; N]>::try_from(chunk).ok()) {
            Some(array) => {
                self.pos += N;
                Ok(array)
            }
            None => Err(self.error(DecodeErrorKind::Truncated {
                field,
                needed: N,
                remaining: self.remaining(),
            })),
        }
    }

    /// Reads an `Int8`/`Byte1`.
    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[byte]| byte)
    }

    /// Reads a big-endian `Int16`.
    pub(super) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_be_bytes)
    }

    /// Reads a big-endian `Int32` that is signed on the wire (lengths, counts, typmods).
    pub(super) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    /// Reads a big-endian `Int32` that PostgreSQL treats as unsigned (OIDs, xids).
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    /// Reads a big-endian `Int64`.
    pub(super) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// Reads an `Int64 (XLogRecPtr)`.
    pub(super) fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.array(field)
            .map(|bytes| Lsn(u64::from_be_bytes(bytes)))
    }

    /// Reads a NUL-terminated UTF-8 `String`, consuming the NUL.
    pub(super) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error(DecodeErrorKind::UnterminatedString { field }));
        };
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|_| self.error(DecodeErrorKind::InvalidUtf8 { field }))?
            .to_owned();
        self.pos = start + len + 1;
        Ok(text)
    }

    /// Takes `len` bytes as a zero-copy slice of the payload.
    pub(super) fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(self.error(DecodeErrorKind::Truncated {
                field,
                needed: len,
                remaining: self.remaining(),
            }));
        }
        let value = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(value)
    }

    /// Reads a signed `Int32` length and rejects a negative one.
    pub(super) fn length(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let value = self.i32(field)?;
        usize::try_from(value).map_err(|_| {
            self.error_at(
                at,
                DecodeErrorKind::Negative {
                    field,
                    value: i64::from(value),
                },
            )
        })
    }

    /// Checks that `count` items of at least `min_size` bytes each can still fit, before
    /// anything is allocated for them.
    pub(super) fn check_count(
        &self,
        at: usize,
        count: usize,
        min_size: usize,
        field: &'static str,
    ) -> Result<(), DecodeError> {
        let remaining = self.remaining();
        match count.checked_mul(min_size) {
            Some(needed) if needed <= remaining => Ok(()),
            _ => Err(self.error_at(
                at,
                DecodeErrorKind::OversizedCount {
                    field,
                    count,
                    remaining,
                },
            )),
        }
    }

    /// Ends the message: anything left over means we misread it.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            left => Err(self.error(DecodeErrorKind::TrailingBytes(left))),
        }
    }
}
