//! A replication stream that survives lost connections.
//!
//! When the connection fails with an error whose disposition is Retry (socket error, EOF,
//! server shutdown 57P01, server starting up 57P03, ...), [`ResilientStream`] reconnects
//! with jittered exponential backoff and restarts from the slot (`0/0`: the server resumes
//! at `confirmed_flush_lsn`, CASE-24). It then yields [`ReplicationEvent::Reconnected`] so
//! the consumer discards any partial transaction and its relation cache, since the server
//! sends Relation messages again. Errors that need an operator (missing, busy or
//! invalidated slot, authentication, wal_level) are returned at once, never retried.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{
    ReplicationConnection, ReplicationError, ReplicationEvent, ReplicationStream, StreamOptions,
};
use crate::error::Disposition;
use crate::source::{ConnectParams, Lsn};

/// Delays between reconnection attempts: `initial`, doubling up to `max`, each one drawn
/// uniformly from its upper half so that many connectors restarted by one server restart
/// do not reconnect in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms rides over a walsender being replaced or a quick failover; 30 s caps the wait
    /// so a server back after a long outage is found within half a minute, at a rate of
    /// connection attempts that does not load it.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based), jittered into its upper half.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let full = self.initial.saturating_mul(factor).min(self.max);
        let half = full / 2;
        half + half.mul_f64(random_unit())
    }
}

/// A uniform number in [0, 1) from the standard library's randomly keyed hasher: jitter
/// needs no cryptographic quality and no extra dependency.
fn random_unit() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A replication stream that reconnects on transient failures.
#[derive(Debug)]
pub struct ResilientStream {
    /// Where to connect.
    params: ConnectParams,
    /// What to stream.
    options: StreamOptions,
    /// Delays between attempts.
    backoff: Backoff,
    /// The live stream, if connected.
    stream: Option<ReplicationStream>,
    /// The highest LSN the caller allowed, carried over reconnections.
    confirmed: Lsn,
    /// The caller's idle flag; cleared on reconnection.
    idle: bool,
    /// Consecutive failed attempts, for the backoff.
    attempt: u32,
    /// A connection was established before, so the next one is a reconnection.
    connected_before: bool,
    /// The connection was lost and `Reconnected` is owed to the caller.
    lost: bool,
    /// Whether a lost connection is re-established; not for a temporary slot, which is
    /// gone with its connection.
    reconnect: bool,
    /// True while a stream is connected, for the readiness check.
    streaming: Arc<AtomicBool>,
}

impl ResilientStream {
    /// Creates the stream; it connects on the first [`ResilientStream::next_event`].
    pub fn new(params: ConnectParams, options: StreamOptions, backoff: Backoff) -> ResilientStream {
        ResilientStream {
            params,
            options,
            backoff,
            stream: None,
            confirmed: Lsn::ZERO,
            idle: false,
            attempt: 0,
            connected_before: false,
            lost: false,
            reconnect: true,
            streaming: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Wraps a stream that is already started (on a temporary slot, say). With `reconnect`
    /// false a lost connection is returned as an error instead of being re-established.
    pub fn from_started(
        stream: ReplicationStream,
        params: ConnectParams,
        options: StreamOptions,
        backoff: Backoff,
        reconnect: bool,
    ) -> ResilientStream {
        ResilientStream {
            params,
            options,
            backoff,
            confirmed: stream.confirmed(),
            stream: Some(stream),
            idle: false,
            attempt: 0,
            connected_before: true,
            lost: false,
            reconnect,
            streaming: Arc::new(AtomicBool::new(true)),
        }
    }

    /// A flag that is true while the stream is connected (for `/readyz`).
    pub fn streaming_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.streaming)
    }

    /// Where the stream connects; also where a companion SQL connection (the reader's
    /// catalog connection) reconnects after the server came back.
    pub fn params(&self) -> &ConnectParams {
        &self.params
    }

    /// Connects now instead of at the first [`ResilientStream::next_event`], so that a
    /// missing or busy slot is reported at start. Transient failures are retried.
    pub async fn connect_now(&mut self) -> Result<(), ReplicationError> {
        if self.stream.is_none() {
            self.connect().await?;
        }
        Ok(())
    }

    /// Allows confirming `lsn`; see [`ReplicationStream::confirm`].
    pub fn confirm(&mut self, lsn: Lsn) {
        self.confirmed = self.confirmed.max(lsn);
        if let Some(stream) = self.stream.as_mut() {
            stream.confirm(lsn);
        }
    }

    /// Sets the idle flag; see [`ReplicationStream::set_idle`].
    pub fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
        if let Some(stream) = self.stream.as_mut() {
            stream.set_idle(idle);
        }
    }

    /// The highest confirmable LSN known so far.
    pub fn confirmed(&self) -> Lsn {
        match &self.stream {
            Some(stream) => stream.confirmed().max(self.confirmed),
            None => self.confirmed,
        }
    }

    /// The next event, reconnecting as needed. Returns an error only when it cannot heal
    /// (disposition Halt). Cancel-safe.
    pub async fn next_event(&mut self) -> Result<ReplicationEvent, ReplicationError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.connect().await?;
                if self.lost {
                    self.lost = false;
                    return Ok(ReplicationEvent::Reconnected);
                }
                continue;
            };
            match stream.next_event().await {
                Ok(event) => {
                    self.attempt = 0;
                    if let ReplicationEvent::XLogData { .. } = event {
                        self.idle = false;
                    }
                    // Keepalives while idle may have moved the confirmed position.
                    self.confirmed = self.confirmed.max(stream.confirmed());
                    return Ok(event);
                }
                Err(error) if error.disposition() == Disposition::Retry && self.reconnect => {
                    tracing::warn!(error = %error, slot = %self.options.slot, "replication connection lost");
                    self.confirmed = self.confirmed.max(stream.confirmed());
                    self.stream = None;
                    self.streaming.store(false, Ordering::Relaxed);
                    self.lost = true;
                    // The consumer discards what it had in flight; it is not idle until it
                    // says so again.
                    self.idle = false;
                }
                Err(error) => {
                    // The connection is unusable after a Halt error; dropping it closes it.
                    self.stream = None;
                    self.streaming.store(false, Ordering::Relaxed);
                    return Err(error);
                }
            }
        }
    }

    /// Connects and starts streaming, retrying transient failures with backoff.
    async fn connect(&mut self) -> Result<(), ReplicationError> {
        loop {
            if self.lost || self.attempt > 0 {
                let delay = self.backoff.delay(self.attempt);
                tracing::debug!(
                    ?delay,
                    attempt = self.attempt,
                    "waiting before reconnecting"
                );
                tokio::time::sleep(delay).await;
            }
            match self.try_connect().await {
                Ok(mut stream) => {
                    stream.confirm(self.confirmed);
                    stream.set_idle(self.idle);
                    if self.connected_before {
                        tracing::info!(slot = %self.options.slot, "replication connection re-established");
                    }
                    self.connected_before = true;
                    self.stream = Some(stream);
                    self.streaming.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Err(error) if error.disposition() == Disposition::Retry => {
                    tracing::warn!(error = %error, attempt = self.attempt, "replication connection failed");
                    self.attempt = self.attempt.saturating_add(1);
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn try_connect(&self) -> Result<ReplicationStream, ReplicationError> {
        let connection = ReplicationConnection::connect(&self.params).await?;
        let mut options = self.options.clone();
        // Always resume from the slot after the first start: the server knows what was
        // confirmed, and skipping by a client-side LSN loses data (CASE-24).
        if self.connected_before {
            options.start_lsn = Lsn::ZERO;
        }
        connection.start_replication(options).await
    }

    /// Sends a status update with the confirmed position, if connected.
    pub async fn send_status(&mut self) -> Result<(), ReplicationError> {
        match self.stream.as_mut() {
            Some(stream) => {
                stream.confirm(self.confirmed);
                stream.send_status().await
            }
            None => Ok(()),
        }
    }

    /// Sends the final status update and closes the connection, if connected.
    pub async fn close(mut self) {
        if let Some(mut stream) = self.stream.take() {
            stream.confirm(self.confirmed);
            stream.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let backoff = Backoff::default();
        for attempt in 0..40 {
            let full = (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(20)))
                .min(Duration::from_secs(30));
            let delay = backoff.delay(attempt);
            assert!(
                delay >= full / 2 && delay <= full,
                "attempt {attempt}: {delay:?}"
            );
        }
    }
}
