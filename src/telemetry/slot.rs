//! The replication slot as the server sees it: how much WAL it retains, whether a connection
//! streams from it, and its `wal_status`, polled from `pg_replication_slots`.
//!
//! The connector's own lag (`entity_cdc_replication_lag_bytes`) is what it knows from the
//! stream; the retained WAL is what the server pays for the slot, and it keeps growing while
//! the connector is down or stuck, which is exactly when the stream says nothing. So it is
//! read on the ordinary SQL connection, never on the replication one, by a task of its own
//! that the pipeline never waits for.

use std::time::Duration;

use metrics::{gauge, Gauge};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::metrics::{LABEL_STATUS, SLOT_ACTIVE, SLOT_RETAINED_WAL_BYTES, SLOT_WAL_STATUS};
use crate::source::sql::{self, SqlError};
use crate::source::ConnectParams;

/// The slot's state in one query. On a standby the current WAL position is the last one
/// received. `pg_wal_lsn_diff` gives a numeric; any slot's retained WAL fits a bigint.
const SLOT_QUERY: &str = "select active, wal_status, \
     pg_wal_lsn_diff(case when pg_is_in_recovery() then pg_last_wal_receive_lsn() \
     else pg_current_wal_lsn() end, restart_lsn)::int8 \
     from pg_replication_slots where slot_name = $1";

/// The values `wal_status` takes (PostgreSQL 13 and later), each a label value.
const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

/// How long the slot query may take: it reads one row of a small view, so longer means the
/// server or the network is in trouble, which the WARN then says.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a failure that goes on is logged again.
const WARN_EVERY: Duration = Duration::from_secs(600);

/// Ten seconds: retained WAL grows by what the database writes, and a change that matters
/// (gigabytes) takes minutes; polling more often would only add load.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// One reading of the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReading {
    /// Whether a connection streams from it.
    pub active: bool,
    /// `wal_status`: reserved, extended, unreserved or lost; `None` when the server gives none.
    pub wal_status: Option<String>,
    /// Current WAL position minus `restart_lsn`; `None` when the slot reserves no WAL.
    pub retained_bytes: Option<i64>,
}

/// Why a poll gave no reading.
#[derive(Debug, thiserror::Error)]
pub enum SlotPollError {
    /// Connecting or querying failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The query did not answer in time.
    #[error("reading replication slot {slot} took more than {seconds} s")]
    Timeout {
        /// The slot's name.
        slot: String,
        /// The bound in seconds.
        seconds: u64,
    },
    /// No slot of that name exists.
    #[error("replication slot {slot} does not exist")]
    Missing {
        /// The slot's name.
        slot: String,
    },
}

/// Reads the slot's state once on `client`.
pub async fn read_slot(client: &Client, slot: &str) -> Result<SlotReading, SlotPollError> {
    let row = client
        .query_opt(SLOT_QUERY, &[&slot])
        .await
        .map_err(SqlError::query(format!("reading replication slot {slot}")))?
        .ok_or_else(|| SlotPollError::Missing {
            slot: slot.to_owned(),
        })?;
    let read = |source| SqlError::Query {
        what: format!("reading replication slot {slot}"),
        source,
    };
    Ok(SlotReading {
        active: row.try_get(0).map_err(read)?,
        wal_status: row.try_get(1).map_err(read)?,
        retained_bytes: row.try_get(2).map_err(read)?,
    })
}

/// The gauges of the slot, resolved once.
struct SlotGauges {
    retained: Gauge,
    active: Gauge,
    /// One per [`WAL_STATUSES`] entry.
    status: [Gauge; 4],
}

impl SlotGauges {
    fn new() -> SlotGauges {
        SlotGauges {
            retained: gauge!(SLOT_RETAINED_WAL_BYTES),
            active: gauge!(SLOT_ACTIVE),
            status: WAL_STATUSES.map(|s| gauge!(SLOT_WAL_STATUS, LABEL_STATUS => s)),
        }
    }

    fn clear(&self) {
        self.record(&SlotReading {
            active: false,
            wal_status: None,
            retained_bytes: None,
        });
    }

    fn record(&self, reading: &SlotReading) {
        // Precision: f64 is exact up to 2^53 bytes (8 PiB).
        self.retained
            .set(reading.retained_bytes.unwrap_or(0).max(0) as f64);
        self.active.set(if reading.active { 1.0 } else { 0.0 });
        for (gauge, status) in self.status.iter().zip(WAL_STATUSES) {
            let current = reading.wal_status.as_deref() == Some(status);
            gauge.set(if current { 1.0 } else { 0.0 });
        }
    }
}

/// Spawns the task that polls `slot` every `interval` on its own SQL connection (made with
/// `params`, re-made after a failure) and sets the slot gauges, until `cancel` fires. Query
/// failures are logged at WARN (again at most every ten minutes while they go on); a slot
/// whose `wal_status` is `lost` is logged at ERROR, since an operator must act. The metric
/// handles are resolved here, with the recorder current at this call. Must be called within
/// a tokio runtime (`run` is).
pub fn spawn_slot_monitor(
    params: ConnectParams,
    slot: String,
    interval: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let gauges = SlotGauges::new();
    tokio::spawn(async move {
        let mut monitor = Monitor {
            params,
            slot,
            client: None,
            gauges,
            failing_since_warned: None,
            lost_logged: false,
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // A poll is bounded by the connect timeout and the query timeout, and
            // cancellation interrupts it.
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = monitor.poll(QUERY_TIMEOUT) => {}
            }
        }
    })
}

/// The polling task's state.
struct Monitor {
    params: ConnectParams,
    slot: String,
    client: Option<Client>,
    gauges: SlotGauges,
    /// While polls fail: when the last WARN was logged.
    failing_since_warned: Option<Instant>,
    /// Whether the lost slot was logged at ERROR (once per loss).
    lost_logged: bool,
}

impl Monitor {
    async fn poll(&mut self, query_timeout: Duration) {
        match self.read(query_timeout).await {
            Ok(reading) => {
                self.gauges.record(&reading);
                if self.failing_since_warned.take().is_some() {
                    info!(slot = %self.slot, "replication slot readable again");
                }
                let lost = reading.wal_status.as_deref() == Some("lost");
                if lost && !self.lost_logged {
                    error!(slot = %self.slot,
                        "replication slot is lost: the server removed WAL it needed; the \
                         connector cannot resume from it (see docs/operations.md, \"When the \
                         slot is invalidated\")");
                }
                self.lost_logged = lost;
            }
            Err(error) => {
                if matches!(error, SlotPollError::Missing { .. }) {
                    // No slot, no status: every wal_status gauge 0 says so. Other failures
                    // (the database unreachable) leave the last reading in place.
                    self.gauges.clear();
                }
                let now = Instant::now();
                let due = self
                    .failing_since_warned
                    .is_none_or(|last| now.duration_since(last) >= WARN_EVERY);
                if due {
                    warn!(slot = %self.slot, error = %describe(&error),
                        "cannot read the replication slot's state; retried at the next poll");
                    self.failing_since_warned = Some(now);
                }
            }
        }
    }

    async fn read(&mut self, query_timeout: Duration) -> Result<SlotReading, SlotPollError> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => sql::connect(&self.params).await?,
        };
        let reading = tokio::time::timeout(query_timeout, read_slot(&client, &self.slot)).await;
        // A closed connection is replaced at the next poll; an open one is kept.
        self.client = Some(client);
        reading.unwrap_or_else(|_| {
            Err(SlotPollError::Timeout {
                slot: self.slot.clone(),
                seconds: query_timeout.as_secs(),
            })
        })
    }
}

/// The error with its sources, `outer: inner: ...`, for one log field.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
