//! Latency at a steady rate: commit time to the event's receipt by a consumer.
//!
//! pgbench commits single-row inserts at 5,000 per second (`--rate`, 8 clients,
//! `synchronous_commit=on` for its sessions so that commits reach the walsenders at once) while
//! `entity-cdc run` streams them. A consumer reads the topic as records arrive and takes,
//! for each, its receipt time minus the `timestamp` of the event, which is the
//! transaction's commit time as PostgreSQL recorded it. Receipt by a consumer comes after
//! the delivery report the connector gets, so this is an upper bound of commit -> delivery
//! report: it adds the broker's fetch path (the consumer waits at most 5 ms per fetch,
//! `fetch.wait.max.ms`). Same machine, same clock: no clock skew.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::lab::Lab;
use crate::pass::{histogram_quantile, metric_sum, Connector, PassEnv, Setup};
use crate::process_stats;
use crate::supervision::{cancelled, check_cancelled};
use crate::workload::{self, LATENCY_RATE};

/// The row whose event opens the path before the measured commits.
const WARM_UP_ROW: &str = "insert into public.orders \
(id, tenant_id, status, priority, total, version, updated_by) \
values (nextval('public.orders_bench_id'), 0, 'NEW', 'NORMAL', 0, 1, 'warm-up')";

/// Latencies of one run, milliseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Events measured.
    pub events: u64,
    /// The connector's own commit -> Kafka acknowledgement histogram
    /// (`entity_cdc_commit_to_ack_seconds`): the bucket bounds holding p50 and p99, ms.
    pub connector_p50_bound: f64,
    /// See `connector_p50_bound`.
    pub connector_p99_bound: f64,
    /// Share of the machine's CPU time that was busy while pgbench ran (all cores).
    pub machine_busy: f64,
    /// The connector's CPU seconds per wall second while pgbench ran (1.0 = one core).
    pub connector_cores: f64,
    /// Every 20th part of the latencies in arrival order, ms: growing then draining is
    /// queueing, flat is a fixed delay.
    pub series: Vec<f64>,
}

/// One latency run on a fresh slot and topic.
pub async fn run(env: &PassEnv<'_>, run: u32, seconds: u64) -> Result<Latency> {
    let lab = env.lab;
    lab.sql(workload::RESET).await?;
    lab.restart_broker().await?;
    let slot = format!("bench_latency_{run}");
    lab.create_slot(&slot).await?;
    let prefix = format!("bench.latency{run}");
    let topic = format!("{prefix}.order.created");
    let connector = Connector::start(env, &slot, &prefix, &Setup::default())?;
    // One warm-up row, awaited by the consumer: start-up costs (connections, metadata,
    // the producer's first batch) are not latency of the measured commits.
    let consumer =
        LatencyConsumer::start(lab, &connector, &slot, &topic, lab.sql(WARM_UP_ROW)).await?;
    let machine_before = process_stats::machine_ticks();
    let connector_before = process_stats::cpu_seconds(connector.pid());
    let wall = std::time::Instant::now();
    let written = write_at_rate(lab, seconds).await;
    let wall = wall.elapsed().as_secs_f64();
    let machine_after = process_stats::machine_ticks();
    let connector_after = process_stats::cpu_seconds(connector.pid());
    let mut latencies = match written {
        Ok(n) => consumer.finish(n).await?,
        Err(e) => {
            consumer.abort();
            return Err(e);
        }
    };
    // In arrival order, a delay that grows and drains is queueing (the machine cannot keep
    // up); a flat one is a fixed cost on the path.
    let step = (latencies.len() / 20).max(1);
    let series: Vec<f64> = latencies.iter().step_by(step).copied().collect();
    let mut latency = summarize(&mut latencies);
    latency.series = series;
    if let (Some((busy0, total0)), Some((busy1, total1))) = (machine_before, machine_after) {
        latency.machine_busy = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
    }
    if let (Some(before), Some(after)) = (connector_before, connector_after) {
        latency.connector_cores = (after - before) / wall;
    }
    if let Some(metrics) = connector.metrics().await {
        let dead = metric_sum(&metrics, "entity_cdc_events_dead_lettered_total");
        if dead > 0.0 {
            bail!("entity-cdc run dead-lettered {dead} event(s) in the latency run");
        }
        let bound = |q| {
            histogram_quantile(&metrics, "entity_cdc_commit_to_ack_seconds", q)
                .map_or(f64::NAN, |s| s * 1000.0)
        };
        latency.connector_p50_bound = bound(0.5);
        latency.connector_p99_bound = bound(0.99);
    }
    connector.stop().await?;
    lab.drop_slot(&slot).await?;
    Ok(latency)
}

/// A consumer thread taking the latency of each record of a topic, started once the
/// connector streams and the path is warm.
pub struct LatencyConsumer {
    target: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<f64>>>,
}

impl LatencyConsumer {
    /// Waits until `connector` streams from `slot` (its topics exist by then), starts
    /// consuming `topic` from the beginning, runs `warm_up` (a commit whose record is
    /// awaited and not measured) and waits for that record.
    pub async fn start(
        lab: &Lab,
        connector: &Connector,
        slot: &str,
        topic: &str,
        warm_up: impl std::future::Future<Output = Result<()>>,
    ) -> Result<LatencyConsumer> {
        lab.wait_until(
            "entity-cdc run streaming",
            Duration::from_secs(60),
            || async {
                Ok(connector.metrics().await.is_some() && lab.walsender_pid(slot).await?.is_some())
            },
        )
        .await?;
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let thread = {
            let (target, stop, ready) = (target.clone(), stop.clone(), ready.clone());
            let (bootstrap, topic) = (lab.bootstrap(), topic.to_owned());
            std::thread::spawn(move || consume(&bootstrap, &topic, &target, &stop, &ready))
        };
        let consumer = LatencyConsumer {
            target,
            stop,
            thread,
        };
        let waited = match warm_up.await {
            Ok(()) => {
                lab.wait_until(
                    "the latency consumer connected",
                    Duration::from_secs(30),
                    || async { Ok(ready.load(Ordering::SeqCst) || consumer.thread.is_finished()) },
                )
                .await
            }
            Err(e) => Err(e),
        };
        match waited {
            Ok(()) => Ok(consumer),
            Err(e) => {
                consumer.abort();
                Err(e)
            }
        }
    }

    /// Stops the consumer without waiting for it.
    pub fn abort(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for `expected` measured records (after the warm-up) and returns their
    /// latencies in arrival order, ms.
    pub async fn finish(self, expected: u64) -> Result<Vec<f64>> {
        self.target.store(expected, Ordering::SeqCst);
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("joining the latency consumer")?
        {
            Ok(latencies) => latencies,
            Err(_) => bail!("the latency consumer panicked"),
        }
    }
}

/// pgbench at [`LATENCY_RATE`] for `seconds`; returns how many rows it committed (the
/// measured ones: all but the warm-up row).
async fn write_at_rate(lab: &Lab, seconds: u64) -> Result<u64> {
    workload::pgbench(
        lab,
        &["-R", &LATENCY_RATE.to_string(), "-T", &seconds.to_string()],
        // With synchronous_commit=off the walsenders see a commit only once the WAL
        // writer flushed it (every 200 ms): that delay is the server's, not the connector's.
        true,
    )
    .await?;
    let count = lab.text("select count(*)::text from public.orders").await?;
    let rows: u64 = count
        .parse()
        .with_context(|| format!("row count {count:?}"))?;
    // The warm-up row is not measured.
    Ok(rows.saturating_sub(1))
}

/// Reads `topic` from the beginning until `target` records arrived (the target is set
/// once the writer finished), returning each record's latency in milliseconds. The first
/// record (the warm-up) is awaited, then `ready` is set; it is not measured.
fn consume(
    bootstrap: &str,
    topic: &str,
    target: &AtomicU64,
    stop: &AtomicBool,
    ready: &AtomicBool,
) -> Result<Vec<f64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-latency-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("fetch.min.bytes", "1")
        .create()
        .context("creating the latency consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .context("assigning the topic")?;
    consumer
        .assign(&assignment)
        .context("assigning the topic")?;
    // The warm-up row's event: the path (connector, producer, broker, this consumer) is
    // connected end to end before the measured commits start, and is not measured.
    let warm_up = std::time::Instant::now();
    loop {
        if cancelled() || stop.load(Ordering::SeqCst) {
            check_cancelled()?;
            bail!("the latency consumer was stopped");
        }
        if warm_up.elapsed() > Duration::from_secs(30) {
            bail!("the warm-up event did not arrive on {topic} within 30 s");
        }
        match consumer.poll(Duration::from_millis(50)) {
            None => continue,
            Some(Err(e)) => bail!("consuming {topic}: {e}"),
            Some(Ok(_)) => break,
        }
    }
    ready.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    let mut idle_since = std::time::Instant::now();
    loop {
        let wanted = target.load(Ordering::SeqCst);
        if latencies.len() as u64 >= wanted {
            return Ok(latencies);
        }
        if cancelled() || stop.load(Ordering::SeqCst) {
            check_cancelled()?;
            bail!("the latency consumer was stopped");
        }
        if wanted != u64::MAX && idle_since.elapsed() > Duration::from_secs(60) {
            bail!(
                "consumed {} of {wanted} records of {topic}: nothing came for 60 s",
                latencies.len()
            );
        }
        let message = match consumer.poll(Duration::from_millis(50)) {
            None => continue,
            Some(Err(e)) => bail!("consuming {topic}: {e}"),
            Some(Ok(message)) => message,
        };
        let received = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?
            .as_micros() as i64;
        idle_since = std::time::Instant::now();
        let payload = message.payload().unwrap_or_default();
        let event: serde_json::Value = serde_json::from_slice(payload).with_context(|| {
            format!(
                "record at offset {} of {topic} is not JSON",
                message.offset()
            )
        })?;
        let Some(committed) = event["timestamp"].as_str().and_then(rfc3339_micros) else {
            bail!(
                "record at offset {} of {topic} has no RFC 3339 timestamp: {event}",
                message.offset()
            );
        };
        latencies.push((received - committed) as f64 / 1000.0);
    }
}

/// Microseconds since 1970 of `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, the events' timestamp form.
pub fn rfc3339_micros(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut ymd = date.splitn(3, '-');
    let year: i64 = ymd.next()?.parse().ok()?;
    let month: i64 = ymd.next()?.parse().ok()?;
    let day: i64 = ymd.next()?.parse().ok()?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.splitn(3, ':');
    let hour: i64 = parts.next()?.parse().ok()?;
    let minute: i64 = parts.next()?.parse().ok()?;
    let second: i64 = parts.next()?.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}").parse().ok()?
    };
    // Days from civil (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// p50, p99 and max of the latencies (nearest rank).
pub fn summarize(latencies: &mut [f64]) -> Latency {
    latencies.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index]
    };
    Latency {
        p50: rank(0.50),
        p99: rank(0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        events: latencies.len() as u64,
        connector_p50_bound: f64::NAN,
        connector_p99_bound: f64::NAN,
        machine_busy: f64::NAN,
        connector_cores: f64::NAN,
        series: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_timestamps_parse_to_epoch_microseconds() {
        assert_eq!(
            rfc3339_micros("2026-12-03T17:28:38.322661Z"),
            Some(1_796_318_918_322_661)
        );
        assert_eq!(
            rfc3339_micros("2000-01-01T00:00:00Z"),
            Some(946_684_800_000_000)
        );
        assert_eq!(
            rfc3339_micros("2000-01-01T00:00:00.5Z"),
            Some(946_684_800_500_000)
        );
        assert_eq!(rfc3339_micros("2000-01-01T00:00:00"), None);
        assert_eq!(rfc3339_micros("2000-01-01T00:00:00.1234567Z"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let latency = summarize(&mut values);
        assert_eq!(latency.p50, 100.0);
        assert_eq!(latency.p99, 198.0);
        assert_eq!(latency.max, 200.0);
        assert_eq!(latency.events, 200);
    }
}
