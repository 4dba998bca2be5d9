//! Framing of the PostgreSQL wire protocol over TCP or TLS: a 1-byte tag and a 4-byte
//! big-endian length that counts itself, then the body.
//!
//! postgres-protocol parses most backend messages but not CopyBothResponse ('W'), so the
//! connection cuts frames itself and hands a frame to `Message::parse` only when it knows
//! the tag. Reads and writes go through buffers owned by [`Framed`], which makes every
//! `async fn` here cancel-safe: a future dropped in a `select!` loses no byte, and a frame
//! written halfway is finished by the next write.

use std::fmt;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ReplicationError;

/// A byte stream the connection runs over: plain TCP or TLS over TCP.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Sync + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Transport for T {}

/// Bytes asked from the socket per read. 64 KiB matches the size of the walsender's output
/// buffer flushes, so one read usually carries several small XLogData frames.
const READ_CHUNK: usize = 64 * 1024;

/// Length of a frame header: tag and length.
pub(crate) const HEADER_LEN: usize = 5;

/// A framed connection with bounded read buffering.
pub(crate) struct Framed {
    /// The socket.
    io: Box<dyn Transport>,
    /// Received bytes not yet taken as frames: at most one frame plus one read chunk.
    read_buf: BytesMut,
    /// Bytes queued for the server and not yet written.
    write_buf: BytesMut,
    /// The longest frame accepted; a longer one is an error rather than an allocation.
    max_frame_len: usize,
}

impl fmt::Debug for Framed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framed")
            .field("buffered", &self.read_buf.len())
            .field("pending_write", &self.write_buf.len())
            .finish_non_exhaustive()
    }
}

impl Framed {
    /// Wraps a connected transport.
    pub(crate) fn new(io: Box<dyn Transport>, max_frame_len: usize) -> Framed {
        Framed {
            io,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::new(),
            max_frame_len,
        }
    }

    /// Sets the longest accepted frame.
    pub(crate) fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len;
    }

    /// The buffer outgoing messages are appended to; sent by [`Framed::flush`].
    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Whether queued bytes wait to be written.
    pub(crate) fn has_pending_write(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Writes every queued byte and flushes the transport. Cancel-safe.
    pub(crate) async fn flush(&mut self) -> Result<(), ReplicationError> {
        while self.write_buf.has_remaining() {
            let written = self
                .io
                .write_buf(&mut self.write_buf)
                .await
                .map_err(ReplicationError::Io)?;
            if written == 0 {
                return Err(ReplicationError::Io(std::io::ErrorKind::WriteZero.into()));
            }
        }
        self.io.flush().await.map_err(ReplicationError::Io)
    }

    /// Reads the next complete frame (header included). Cancel-safe.
    pub(crate) async fn read_frame(&mut self) -> Result<BytesMut, ReplicationError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Takes a complete frame from the buffer, if one is there.
    pub(crate) fn take_frame(&mut self) -> Result<Option<BytesMut>, ReplicationError> {
        let Some(total) = frame_len(&self.read_buf, self.max_frame_len)? else {
            return Ok(None);
        };
        if self.read_buf.len() < total {
            return Ok(None);
        }
        Ok(Some(self.read_buf.split_to(total)))
    }

    /// Reads more bytes from the socket into the buffer. Cancel-safe: `read_buf` either
    /// completes with the bytes stored or reads nothing.
    pub(crate) async fn fill(&mut self) -> Result<(), ReplicationError> {
        // Room for one chunk at most: the buffer never grows past the frame being read
        // plus one chunk, which bounds memory by `max_frame_len`.
        self.read_buf.reserve(READ_CHUNK);
        let read = self
            .io
            .read_buf(&mut self.read_buf)
            .await
            .map_err(ReplicationError::Io)?;
        if read == 0 {
            return Err(ReplicationError::Eof);
        }
        Ok(())
    }

    /// Reads exactly one byte, for the answer to SSLRequest, which is not framed.
    pub(crate) async fn read_byte(&mut self) -> Result<u8, ReplicationError> {
        if self.read_buf.is_empty() {
            self.fill().await?;
        }
        Ok(self.read_buf.get_u8())
    }

    /// Whether bytes were received beyond what was consumed (after the SSLRequest answer
    /// this would be a man-in-the-middle injecting plaintext, CVE-2021-23222).
    pub(crate) fn has_buffered(&self) -> bool {
        !self.read_buf.is_empty()
    }

    /// Gives the transport back, for the TLS upgrade.
    pub(crate) fn into_inner(self) -> Box<dyn Transport> {
        self.io
    }

    /// Shuts the write side down, ignoring errors: the connection is being abandoned.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// The total length of the frame at the start of `buf` (header included), once its header
/// is complete.
fn frame_len(buf: &[u8], max_frame_len: usize) -> Result<Option<usize>, ReplicationError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len < 4 {
        return Err(ReplicationError::Protocol(format!(
            "message {:?} announces length {len}",
            char::from(header[0])
        )));
    }
    if len > max_frame_len {
        return Err(ReplicationError::FrameTooLarge {
            len,
            max: max_frame_len,
        });
    }
    Ok(Some(len + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_length_is_checked() {
        assert_eq!(frame_len(b"Z\0\0", 100).expect("short"), None);
        assert_eq!(frame_len(b"Z\0\0\0\x05I", 100).expect("ok"), Some(6));
        assert!(matches!(
            frame_len(b"Z\0\0\0\x03", 100),
            Err(ReplicationError::Protocol(_))
        ));
        assert!(matches!(
            frame_len(b"d\x7f\0\0\0", 100),
            Err(ReplicationError::FrameTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn frames_are_cut_across_reads_and_eof_is_reported() {
        let (client, mut server) = tokio::io::duplex(16);
        let mut framed = Framed::new(Box::new(client), 1024);
        let writer = tokio::spawn(async move {
            server
                .write_all(b"S\0\0\0\x08a\0b\0Z\0\0\0\x05I")
                .await
                .expect("write");
        });
        let first = framed.read_frame().await.expect("first frame");
        assert_eq!(&first[..], b"S\0\0\0\x08a\0b\0");
        let second = framed.read_frame().await.expect("second frame");
        assert_eq!(&second[..], b"Z\0\0\0\x05I");
        writer.await.expect("writer");
        assert!(matches!(
            framed.read_frame().await,
            Err(ReplicationError::Eof)
        ));
    }
}
