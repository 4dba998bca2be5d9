//! The CopyBoth stream of a logical replication slot: XLogData and keepalives in, standby
//! status updates out.
//!
//! The stream confirms only what its caller allows ([`ReplicationStream::confirm`]), plus,
//! while the caller says it is idle, the WAL end reported by keepalives (CASE-25). Status
//! updates go out on a timer inside [`ReplicationStream::next_event`], so they keep flowing
//! while no data arrives, and at once when the server asks for a reply. They do not flow
//! while the caller does not call `next_event`: the pipeline must keep calling it (and do
//! its own backpressure by not forwarding), or the server ends the connection after
//! `wal_sender_timeout`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::time::Instant;

use super::connection::{log_notice, parse_message, protocol, unexpected, ReplicationConnection};
use super::frame::{Framed, HEADER_LEN};
use super::{ReplicationError, ServerError};
use crate::source::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// How long [`ReplicationStream::close`] waits for the server to end the stream. The server
/// answers CopyDone right after the record it is sending; five seconds covers a large
/// record on a slow link without making shutdown hang on a dead server.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pgoutput protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoVersion {
    /// Version 1: whole transactions at commit (PostgreSQL 10+).
    V1,
    /// Version 2: adds streaming of large in-progress transactions (PostgreSQL 14+).
    V2,
}

impl ProtoVersion {
    fn as_str(self) -> &'static str {
        match self {
            ProtoVersion::V1 => "1",
            ProtoVersion::V2 => "2",
        }
    }
}

/// What START_REPLICATION asks for, and how the stream behaves.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The logical replication slot (created with the pgoutput plugin).
    pub slot: String,
    /// The publications to stream.
    pub publications: Vec<String>,
    /// The pgoutput protocol version.
    pub proto_version: ProtoVersion,
    /// Stream in-progress transactions (only with [`ProtoVersion::V2`]).
    pub streaming: bool,
    /// Include `pg_logical_emit_message` messages.
    pub messages: bool,
    /// Where to start; [`Lsn::ZERO`] resumes from the slot's `confirmed_flush_lsn`, which is
    /// the only safe choice after a restart (CASE-24).
    pub start_lsn: Lsn,
    /// How often a standby status update is sent when nothing else triggers one.
    pub status_interval: Duration,
    /// How long the server may stay silent while the stream waits: after half of it a
    /// status update asks the server for a reply, after the other half without an answer
    /// the connection counts as lost (a half-open TCP connection would otherwise hang the
    /// reader forever). `None` waits forever.
    pub silence_timeout: Option<Duration>,
    /// The longest CopyData frame accepted.
    pub max_frame_len: usize,
}

impl StreamOptions {
    /// pg_recvlogical's default `--status-interval` is 10 s; it must stay well below the
    /// server's `wal_sender_timeout` (60 s by default) so an idle stream is not dropped.
    pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

    /// The server's own `wal_sender_timeout` default: each side gives up on a silent peer
    /// after the same minute. An idle server may legitimately send nothing for longer,
    /// which is why the stream asks for a reply before giving up.
    pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(60);

    /// A single pgoutput message holds one row, and PostgreSQL caps a value at 1 GB; 1 GiB
    /// plus headroom admits any row the server can produce while still bounding memory.
    pub const DEFAULT_MAX_FRAME_LEN: usize = (1 << 30) + (1 << 20);

    /// Options for `slot` and `publications` with protocol v1, messages on, and the
    /// defaults above.
    pub fn new(slot: impl Into<String>, publications: Vec<String>) -> StreamOptions {
        StreamOptions {
            slot: slot.into(),
            publications,
            proto_version: ProtoVersion::V1,
            streaming: false,
            messages: true,
            start_lsn: Lsn::ZERO,
            status_interval: Self::DEFAULT_STATUS_INTERVAL,
            silence_timeout: Some(Self::DEFAULT_SILENCE_TIMEOUT),
            max_frame_len: Self::DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Checks what the server would reject less clearly.
    pub fn validate(&self) -> Result<(), ReplicationError> {
        let invalid = |m: &str| Err(ReplicationError::InvalidOption(m.to_owned()));
        if self.slot.is_empty() {
            return invalid("the slot name is empty");
        }
        if self.publications.is_empty() || self.publications.iter().any(String::is_empty) {
            return invalid("at least one non-empty publication name is needed");
        }
        if self.streaming && self.proto_version != ProtoVersion::V2 {
            return invalid("streaming needs pgoutput protocol version 2");
        }
        if self.status_interval.is_zero() {
            return invalid("the status interval must be positive");
        }
        if self
            .silence_timeout
            .is_some_and(|t| t < Duration::from_millis(10))
        {
            return invalid("the silence timeout is too short");
        }
        if self.max_frame_len < 64 {
            return invalid("the frame limit is too small");
        }
        Ok(())
    }

    /// The START_REPLICATION command, with the slot quoted as an identifier and the
    /// publication list quoted as identifiers inside a string literal.
    pub fn command(&self) -> String {
        let publications = self
            .publications
            .iter()
            .map(|p| quote_identifier(p))
            .collect::<Vec<_>>()
            .join(",");
        let mut options = vec![
            ("proto_version", self.proto_version.as_str().to_owned()),
            ("publication_names", publications),
            ("messages", self.messages.to_string()),
        ];
        if self.streaming {
            options.push(("streaming", "true".to_owned()));
        }
        let options = options
            .iter()
            .map(|(name, value)| format!("\"{name}\" {}", quote_literal(value)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({options})",
            quote_identifier(&self.slot),
            self.start_lsn
        )
    }
}

/// `"name"`, with embedded double quotes doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'`, with embedded single quotes doubled (the replication grammar has no
/// backslash escapes).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One thing received from the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationEvent {
    /// A pgoutput message.
    XLogData {
        /// The WAL position the message starts at (0 for some messages).
        wal_start: Lsn,
        /// The server's current WAL end.
        wal_end: Lsn,
        /// Server clock at sending, microseconds since 2000-01-01.
        server_time: i64,
        /// The pgoutput message.
        data: Bytes,
    },
    /// A primary keepalive.
    Keepalive {
        /// The server's WAL end: everything before it that concerns this slot was sent.
        wal_end: Lsn,
        /// Server clock at sending, microseconds since 2000-01-01.
        server_time: i64,
        /// The server asked for an immediate status update (already sent).
        reply_requested: bool,
    },
    /// The connection was lost and opened again (only from
    /// [`ResilientStream`](super::ResilientStream)): the stream restarts at the slot's
    /// confirmed position, so the consumer discards any partial transaction and its
    /// relation cache.
    Reconnected,
}

/// A logical replication slot being streamed.
#[derive(Debug)]
pub struct ReplicationStream {
    /// The framed socket, in CopyBoth mode.
    framed: Framed,
    /// The slot name, for errors.
    slot: String,
    /// The highest LSN the caller allowed to confirm (or a keepalive's WAL end while idle).
    confirmed: Lsn,
    /// The caller has handled every received change and no transaction is open.
    idle: bool,
    /// Interval between periodic status updates.
    status_interval: Duration,
    /// When the next periodic status update is due.
    next_status: Instant,
    /// See [`StreamOptions::silence_timeout`].
    silence_timeout: Option<Duration>,
    /// When bytes last arrived from the server.
    last_heard: Instant,
    /// When a status update asked the server for a reply that has not come yet.
    ping_sent: Option<Instant>,
}

impl ReplicationStream {
    /// Sends START_REPLICATION on `connection` and waits for CopyBothResponse.
    pub(super) async fn start(
        mut connection: ReplicationConnection,
        options: StreamOptions,
    ) -> Result<ReplicationStream, ReplicationError> {
        options.validate()?;
        let command = options.command();
        tracing::debug!(%command, "starting replication");
        frontend::query(&command, connection.framed.write_buf())
            .map_err(|e| ReplicationError::InvalidOption(e.to_string()))?;
        connection.framed.flush().await?;
        loop {
            let mut frame = connection.framed.read_frame().await?;
            // CopyBothResponse: postgres-protocol does not know this tag.
            if frame.first() == Some(&b'W') {
                break;
            }
            match parse_message(&mut frame)? {
                Message::ErrorResponse(body) => {
                    let error = ServerError::from_fields(body.fields())?;
                    return Err(ReplicationError::from_replication(error, &options.slot));
                }
                Message::NoticeResponse(body) => {
                    log_notice(ServerError::from_fields(body.fields())?)
                }
                Message::ParameterStatus(_) => {}
                _ => return Err(unexpected("START_REPLICATION")),
            }
        }
        Ok(ReplicationStream::from_parts(connection.framed, options))
    }

    /// A stream over a connection already in CopyBoth mode.
    fn from_parts(mut framed: Framed, options: StreamOptions) -> ReplicationStream {
        framed.set_max_frame_len(options.max_frame_len);
        let now = Instant::now();
        ReplicationStream {
            framed,
            slot: options.slot,
            confirmed: options.start_lsn,
            idle: false,
            status_interval: options.status_interval,
            next_status: now + options.status_interval,
            silence_timeout: options.silence_timeout,
            last_heard: now,
            ping_sent: None,
        }
    }

    /// Allows confirming `lsn` (typically a commit's end LSN whose events are all
    /// acknowledged). It goes to the server with the next status update. An LSN below an
    /// earlier one is ignored: the confirmed position never goes backwards.
    pub fn confirm(&mut self, lsn: Lsn) {
        self.confirmed = self.confirmed.max(lsn);
    }

    /// Tells the stream whether every received change is handled and no transaction is
    /// open (including a streamed, not yet committed one with protocol v2). While idle, a keepalive's WAL end becomes confirmable too, so an idle slot
    /// follows the server's WAL instead of holding it (CASE-25). Receiving XLogData clears
    /// the flag: the caller sets it again once that data is handled.
    pub fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
    }

    /// The position the next status update reports as written, flushed and applied.
    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// Waits for the next XLogData or keepalive, sending status updates as they fall due.
    /// Cancel-safe: dropping the future loses neither received nor queued bytes.
    pub async fn next_event(&mut self) -> Result<ReplicationEvent, ReplicationError> {
        loop {
            let now = Instant::now();
            if let Some(silence) = self.silence_timeout {
                match self.ping_sent {
                    None if now >= self.last_heard + silence / 2 => {
                        self.queue_status(true);
                        self.ping_sent = Some(now);
                    }
                    Some(sent) if now >= sent + silence / 2 => {
                        return Err(ReplicationError::ServerSilent { timeout: silence });
                    }
                    _ => {}
                }
            }
            if now >= self.next_status {
                self.queue_status(false);
            }
            if self.framed.has_pending_write() {
                self.framed.flush().await?;
            }
            let frame = match self.framed.take_frame()? {
                Some(frame) => frame,
                None => {
                    let wake = self.wake_at();
                    tokio::select! {
                        // Received bytes first: after the caller paused, a reply already
                        // waiting in the socket must count before the silence deadline.
                        biased;
                        read = self.framed.fill() => {
                            read?;
                            self.last_heard = Instant::now();
                            self.ping_sent = None;
                        }
                        () = tokio::time::sleep_until(wake) => {}
                    }
                    continue;
                }
            };
            if let Some(event) = self.handle_frame(frame)? {
                if self.framed.has_pending_write() {
                    self.framed.flush().await?;
                }
                return Ok(event);
            }
        }
    }

    /// The next moment a timer needs attention: a periodic status update, the reply request
    /// after half the silence timeout, or the end of the silence timeout.
    fn wake_at(&self) -> Instant {
        let silence = self.silence_timeout.map(|silence| match self.ping_sent {
            None => self.last_heard + silence / 2,
            Some(sent) => sent + silence / 2,
        });
        silence.map_or(self.next_status, |at| at.min(self.next_status))
    }

    /// Interprets one frame of the CopyBoth stream.
    fn handle_frame(
        &mut self,
        mut frame: BytesMut,
    ) -> Result<Option<ReplicationEvent>, ReplicationError> {
        let frame_tag = frame.first().map(|t| char::from(*t));
        match frame.first() {
            Some(b'd') => {
                let payload = frame.split_off(HEADER_LEN).freeze();
                let event = parse_copy_data(payload)?;
                match &event {
                    ReplicationEvent::XLogData { .. } => self.idle = false,
                    ReplicationEvent::Keepalive {
                        wal_end,
                        reply_requested,
                        ..
                    } => {
                        if self.idle {
                            self.confirm(*wal_end);
                        }
                        if *reply_requested {
                            self.queue_status(false);
                        }
                    }
                    ReplicationEvent::Reconnected => {}
                }
                Ok(Some(event))
            }
            // The server ended the stream: CopyDone, or, from a walsender shutting down
            // with the client caught up, CommandComplete without CopyDone (WalSndDone).
            Some(b'c' | b'C' | b'Z') => Err(ReplicationError::StreamEnded),
            _ => match parse_message(&mut frame)? {
                Message::ErrorResponse(body) => {
                    let error = ServerError::from_fields(body.fields())?;
                    Err(ReplicationError::from_replication(error, &self.slot))
                }
                Message::NoticeResponse(body) => {
                    log_notice(ServerError::from_fields(body.fields())?);
                    Ok(None)
                }
                Message::ParameterStatus(_) => Ok(None),
                _ => Err(protocol(format!(
                    "unexpected message {:?} during replication",
                    frame_tag
                ))),
            },
        }
    }

    /// Queues a standby status update with the confirmed position and restarts the timer;
    /// `reply` asks the server to answer at once (a liveness probe).
    fn queue_status(&mut self, reply: bool) {
        let lsn = self.confirmed.0;
        let buf = self.framed.write_buf();
        // CopyData: tag, length (4 + 34), then 'r', write, flush, apply, clock, reply flag.
        buf.put_u8(b'd');
        buf.put_u32(4 + 34);
        buf.put_u8(b'r');
        buf.put_u64(lsn);
        buf.put_u64(lsn);
        buf.put_u64(lsn);
        buf.put_i64(pg_now());
        buf.put_u8(u8::from(reply));
        self.next_status = Instant::now() + self.status_interval;
        tracing::trace!(lsn = %self.confirmed, "standby status update queued");
    }

    /// Sends a status update now, e.g. the final one at shutdown after the last
    /// acknowledgement (CASE-24).
    pub async fn send_status(&mut self) -> Result<(), ReplicationError> {
        self.queue_status(false);
        self.framed.flush().await
    }

    /// Sends a final status update, ends the stream with CopyDone, waits briefly for the
    /// server to finish, and terminates the connection.
    pub async fn close(mut self) {
        self.queue_status(false);
        frontend::copy_done(self.framed.write_buf());
        if self.framed.flush().await.is_ok() {
            let drain = async {
                // The server may still send data before its CopyDone; read until it is
                // ready for the next command.
                while let Ok(frame) = self.framed.read_frame().await {
                    if frame.first() == Some(&b'Z') {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
        }
        frontend::terminate(self.framed.write_buf());
        let _ = self.framed.flush().await;
        self.framed.shutdown().await;
    }
}

/// Parses the payload of a CopyData frame: XLogData ('w') or primary keepalive ('k').
pub fn parse_copy_data(payload: Bytes) -> Result<ReplicationEvent, ReplicationError> {
    let short = |what: &str| protocol(format!("{what} of {} bytes is too short", payload.len()));
    match payload.first() {
        Some(b'w') => {
            let header = payload.get(1..25).ok_or_else(|| short("XLogData"))?;
            Ok(ReplicationEvent::XLogData {
                wal_start: Lsn(read_u64(header, 0)),
                wal_end: Lsn(read_u64(header, 8)),
                server_time: read_u64(header, 16) as i64,
                data: payload.slice(25..),
            })
        }
        Some(b'k') => {
            let body = payload.get(1..18).ok_or_else(|| short("keepalive"))?;
            if payload.len() != 18 {
                return Err(protocol(format!("keepalive of {} bytes", payload.len())));
            }
            Ok(ReplicationEvent::Keepalive {
                wal_end: Lsn(read_u64(body, 0)),
                server_time: read_u64(body, 8) as i64,
                reply_requested: body[16] != 0,
            })
        }
        Some(other) => Err(protocol(format!(
            "unknown CopyData message {:?}",
            char::from(*other)
        ))),
        None => Err(protocol("empty CopyData message")),
    }
}

/// A big-endian u64 at `at`; callers pass slices whose length they checked.
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

/// The current time in microseconds since 2000-01-01, as status updates carry it.
fn pg_now() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_quotes_slot_and_publications() {
        let mut options = StreamOptions::new("s\"x", vec!["pub".into(), "My'Pub".into()]);
        assert_eq!(
            options.command(),
            "START_REPLICATION SLOT \"s\"\"x\" LOGICAL 0/0 (\"proto_version\" '1', \
             \"publication_names\" '\"pub\",\"My''Pub\"', \"messages\" 'true')"
        );
        options.proto_version = ProtoVersion::V2;
        options.streaming = true;
        options.messages = false;
        options.start_lsn = Lsn(0x1_0000_00A0);
        assert_eq!(
            options.command(),
            "START_REPLICATION SLOT \"s\"\"x\" LOGICAL 1/A0 (\"proto_version\" '2', \
             \"publication_names\" '\"pub\",\"My''Pub\"', \"messages\" 'false', \
             \"streaming\" 'true')"
        );
    }

    #[test]
    fn options_are_validated() {
        assert!(StreamOptions::new("s", vec!["p".into()]).validate().is_ok());
        assert!(StreamOptions::new("", vec!["p".into()]).validate().is_err());
        assert!(StreamOptions::new("s", vec![]).validate().is_err());
        let mut options = StreamOptions::new("s", vec!["p".into()]);
        options.streaming = true;
        assert!(options.validate().is_err());
    }

    #[test]
    fn xlogdata_and_keepalive_are_parsed() {
        let mut w = BytesMut::new();
        w.put_u8(b'w');
        w.put_u64(1);
        w.put_u64(2);
        w.put_i64(3);
        w.put_slice(b"B...");
        assert_eq!(
            parse_copy_data(w.freeze()).expect("xlogdata"),
            ReplicationEvent::XLogData {
                wal_start: Lsn(1),
                wal_end: Lsn(2),
                server_time: 3,
                data: Bytes::from_static(b"B..."),
            }
        );
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(7);
        k.put_i64(8);
        k.put_u8(1);
        assert_eq!(
            parse_copy_data(k.freeze()).expect("keepalive"),
            ReplicationEvent::Keepalive {
                wal_end: Lsn(7),
                server_time: 8,
                reply_requested: true,
            }
        );
    }

    #[test]
    fn malformed_copy_data_is_an_error() {
        for bad in [
            &b""[..],
            b"w",
            b"w12345678901234567890123",
            b"k1234",
            b"kxxxxxxxxxxxxxxxxxx",
            b"?",
        ] {
            assert!(
                parse_copy_data(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?} must be rejected"
            );
        }
        // Exactly the XLogData header with an empty message is well formed.
        assert!(parse_copy_data(Bytes::copy_from_slice(&[b'w'; 25])).is_ok());
    }

    /// A stream whose server side the test plays through an in-memory pipe.
    fn mock(options: StreamOptions) -> (ReplicationStream, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let framed = Framed::new(Box::new(client), 1 << 20);
        (ReplicationStream::from_parts(framed, options), server)
    }

    fn options(status_interval: Duration, silence_timeout: Option<Duration>) -> StreamOptions {
        let mut options = StreamOptions::new("s", vec!["p".into()]);
        options.status_interval = status_interval;
        options.silence_timeout = silence_timeout;
        options
    }

    async fn send_copy_data(server: &mut tokio::io::DuplexStream, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut frame = BytesMut::new();
        frame.put_u8(b'd');
        frame.put_u32(4 + payload.len() as u32);
        frame.put_slice(payload);
        server.write_all(&frame).await.expect("server write");
    }

    async fn send_keepalive(server: &mut tokio::io::DuplexStream, wal_end: u64, reply: bool) {
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(wal_end);
        k.put_i64(0);
        k.put_u8(u8::from(reply));
        send_copy_data(server, &k).await;
    }

    async fn send_xlogdata(server: &mut tokio::io::DuplexStream, data: &[u8]) {
        let mut w = BytesMut::new();
        w.put_u8(b'w');
        w.put_u64(0);
        w.put_u64(0);
        w.put_i64(0);
        w.put_slice(data);
        send_copy_data(server, &w).await;
    }

    /// Reads one standby status update: (write, flush, apply, reply flag).
    async fn read_status(server: &mut tokio::io::DuplexStream) -> (u64, u64, u64, u8) {
        use tokio::io::AsyncReadExt;
        let mut frame = [0u8; 39];
        server.read_exact(&mut frame).await.expect("status update");
        assert_eq!(
            &frame[..6],
            b"d\0\0\0\x26r",
            "status update frame {frame:?}"
        );
        (
            read_u64(&frame, 6),
            read_u64(&frame, 14),
            read_u64(&frame, 22),
            frame[38],
        )
    }

    #[tokio::test(start_paused = true)]
    async fn confirms_only_what_the_caller_allows_plus_wal_end_while_idle() {
        let (mut stream, mut server) = mock(options(Duration::from_secs(10), None));
        stream.confirm(Lsn(100));
        send_keepalive(&mut server, 500, true).await;
        assert!(matches!(
            stream.next_event().await.expect("keepalive"),
            ReplicationEvent::Keepalive {
                reply_requested: true,
                ..
            }
        ));
        // Answered at once, with the caller's LSN, not the keepalive's.
        assert_eq!(read_status(&mut server).await, (100, 100, 100, 0));

        stream.set_idle(true);
        send_keepalive(&mut server, 500, true).await;
        stream.next_event().await.expect("keepalive");
        assert_eq!(read_status(&mut server).await, (500, 500, 500, 0));

        // Receiving data ends the idle state until the caller says otherwise.
        send_xlogdata(&mut server, b"B").await;
        assert!(matches!(
            stream.next_event().await.expect("xlogdata"),
            ReplicationEvent::XLogData { .. }
        ));
        send_keepalive(&mut server, 900, true).await;
        stream.next_event().await.expect("keepalive");
        assert_eq!(read_status(&mut server).await.1, 500);

        // Never backwards.
        stream.confirm(Lsn(50));
        assert_eq!(stream.confirmed(), Lsn(500));
        stream.send_status().await.expect("send_status");
        assert_eq!(read_status(&mut server).await.1, 500);
    }

    #[tokio::test(start_paused = true)]
    async fn status_updates_flow_while_no_data_arrives() {
        let (mut stream, mut server) = mock(options(Duration::from_secs(10), None));
        stream.confirm(Lsn(7));
        let waited = tokio::time::timeout(Duration::from_secs(25), stream.next_event()).await;
        assert!(waited.is_err(), "no event expected");
        assert_eq!(read_status(&mut server).await, (7, 7, 7, 0));
        assert_eq!(read_status(&mut server).await, (7, 7, 7, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_probed_then_given_up() {
        let silence = Duration::from_secs(60);
        let (mut stream, mut server) = mock(options(Duration::from_secs(1000), Some(silence)));
        let started = Instant::now();
        let error = stream.next_event().await.expect_err("silent server");
        assert!(
            matches!(error, ReplicationError::ServerSilent { .. }),
            "{error:?}"
        );
        assert_eq!(error.disposition(), crate::error::Disposition::Retry);
        assert!(started.elapsed() >= silence);
        // Half-way, a status update asked for a reply.
        assert_eq!(read_status(&mut server).await.3, 1);

        // A server that answers the probe keeps the stream alive.
        let (mut stream, mut server) = mock(options(Duration::from_secs(1000), Some(silence)));
        let answer = async {
            assert_eq!(read_status(&mut server).await.3, 1);
            send_keepalive(&mut server, 1, false).await;
            server
        };
        let (event, _server) = tokio::join!(stream.next_event(), answer);
        assert!(
            matches!(event, Ok(ReplicationEvent::Keepalive { .. })),
            "{event:?}"
        );
    }

    #[tokio::test]
    async fn server_endings_and_malformed_frames_are_typed_errors() {
        use tokio::io::AsyncWriteExt;
        let no_timers = || options(Duration::from_secs(1000), None);

        let (mut stream, mut server) = mock(no_timers());
        let fields =
            b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0";
        let mut frame = BytesMut::new();
        frame.put_u8(b'E');
        frame.put_u32(4 + fields.len() as u32);
        frame.put_slice(fields);
        server.write_all(&frame).await.expect("write");
        let error = stream.next_event().await.expect_err("shutdown");
        assert_eq!(error.code(), Some("57P01"));
        assert_eq!(error.disposition(), crate::error::Disposition::Retry);

        let (mut stream, mut server) = mock(no_timers());
        server
            .write_all(b"C\0\0\0\x0aSTART\0")
            .await
            .expect("write");
        assert!(matches!(
            stream.next_event().await,
            Err(ReplicationError::StreamEnded)
        ));

        let (mut stream, mut server) = mock(no_timers());
        send_copy_data(&mut server, b"w123").await;
        let error = stream.next_event().await.expect_err("short xlogdata");
        assert!(matches!(error, ReplicationError::Protocol(_)), "{error:?}");
        assert_eq!(error.disposition(), crate::error::Disposition::Halt);

        let (mut stream, server) = mock(no_timers());
        drop(server);
        assert!(matches!(
            stream.next_event().await,
            Err(ReplicationError::Eof)
        ));
    }
}
