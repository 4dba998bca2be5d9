//! What `/readyz` reports: state the pipeline publishes in atomics, read without a lock and
//! without asking the database or the broker, so the endpoint answers at once.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// No lag reference: nothing read is pending.
const NOTHING_PENDING: i64 = i64::MIN;

/// The pipeline's health, shared with the HTTP endpoint.
#[derive(Debug)]
pub struct Health {
    /// Set by the replication stream: true while it is connected and streaming.
    streaming: OnceLock<Arc<AtomicBool>>,
    /// Set by the Kafka sink: true while the brokers are reachable.
    producer: OnceLock<Arc<AtomicBool>>,
    /// Commit time (PostgreSQL-epoch microseconds) the lag in seconds is measured from, or
    /// [`NOTHING_PENDING`].
    lag_reference: AtomicI64,
    /// Readiness fails above this lag.
    max_lag: Duration,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// The JSON body: each check and, when not ready, what is wrong.
    pub body: Value,
}

impl Health {
    /// Health with nothing attached yet (not ready) and the given lag bound.
    pub fn new(max_lag: Duration) -> Arc<Health> {
        Arc::new(Health {
            streaming: OnceLock::new(),
            producer: OnceLock::new(),
            lag_reference: AtomicI64::new(NOTHING_PENDING),
            max_lag,
        })
    }

    /// Attaches the replication stream's "streaming" flag.
    pub fn attach_stream(&self, flag: Arc<AtomicBool>) {
        let _ = self.streaming.set(flag);
    }

    /// Attaches the Kafka sink's "reachable" flag.
    pub fn attach_producer(&self, flag: Arc<AtomicBool>) {
        let _ = self.producer.set(flag);
    }

    /// Sets the commit time the lag is measured from (PostgreSQL-epoch microseconds), or
    /// None when everything read is acknowledged.
    pub fn set_lag_reference(&self, commit_ts: Option<i64>) {
        self.lag_reference
            .store(commit_ts.unwrap_or(NOTHING_PENDING), Ordering::Relaxed);
    }

    /// Now minus the lag reference, in seconds; 0 when nothing is pending.
    pub fn lag_seconds(&self) -> f64 {
        let reference = self.lag_reference.load(Ordering::Relaxed);
        if reference == NOTHING_PENDING {
            return 0.0;
        }
        let micros = (now_pg_micros() - reference).max(0);
        // Lags are far below 2^53 microseconds: the conversion is exact enough.
        #[allow(clippy::cast_precision_loss)]
        let seconds = micros as f64 / 1e6;
        seconds
    }

    /// The readiness checks: streaming, producer connected, lag under the bound.
    pub fn readiness(&self) -> Readiness {
        let flag = |cell: &OnceLock<Arc<AtomicBool>>| {
            cell.get().is_some_and(|f| f.load(Ordering::Relaxed))
        };
        let streaming = flag(&self.streaming);
        let producer = flag(&self.producer);
        let lag = self.lag_seconds();
        let lag_ok = lag <= self.max_lag.as_secs_f64();
        let mut problems = Vec::new();
        if !streaming {
            problems.push("replication is not streaming".to_owned());
        }
        if !producer {
            problems.push("kafka producer is not connected".to_owned());
        }
        if !lag_ok {
            problems.push(format!(
                "replication lag {lag:.1}s exceeds telemetry.maxLagSeconds {}",
                self.max_lag.as_secs()
            ));
        }
        let ready = problems.is_empty();
        Readiness {
            ready,
            body: json!({
                "status": if ready { "ready" } else { "not ready" },
                "checks": {
                    "replicationStreaming": streaming,
                    "producerConnected": producer,
                    "lagSeconds": lag,
                    "maxLagSeconds": self.max_lag.as_secs(),
                },
                "problems": problems,
            }),
        }
    }
}

/// Now in PostgreSQL-epoch microseconds, the unit of commit times.
pub(crate) fn now_pg_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        - PG_EPOCH_UNIX_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_attached_and_says_why() {
        let health = Health::new(Duration::from_secs(60));
        let r = health.readiness();
        assert!(!r.ready);
        assert_eq!(
            r.body["problems"],
            json!([
                "replication is not streaming",
                "kafka producer is not connected"
            ])
        );
        health.attach_stream(Arc::new(AtomicBool::new(true)));
        health.attach_producer(Arc::new(AtomicBool::new(true)));
        let r = health.readiness();
        assert!(r.ready, "{}", r.body);
        assert_eq!(r.body["status"], "ready");
    }

    #[test]
    fn lag_over_the_bound_is_not_ready() {
        let health = Health::new(Duration::from_secs(10));
        health.attach_stream(Arc::new(AtomicBool::new(true)));
        health.attach_producer(Arc::new(AtomicBool::new(true)));
        health.set_lag_reference(Some(now_pg_micros() - 30_000_000));
        let r = health.readiness();
        assert!(!r.ready);
        let problem = r.body["problems"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(problem.starts_with("replication lag 30"), "{problem}");
        health.set_lag_reference(None);
        assert!(health.readiness().ready);
        assert!(health.lag_seconds().abs() < f64::EPSILON);
    }
}
