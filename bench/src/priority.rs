//! Priority under load: CRITICAL order updates committed once a second while a BULK import
//! of orders streams, with the priority lanes and with every event in one FIFO lane.
//!
//! The import inserts `priority_rows` orders marked `BULK` in transactions of
//! [`IMPORT_BATCH`] rows, as fast as PostgreSQL writes them. While it streams (from its
//! start until Kafka acknowledged all of it) the harness updates one of
//! [`ESCALATION_ROWS`] existing orders once a second to `CRITICAL` (its own transaction,
//! `synchronous_commit=on` so that the commit reaches the walsender at once).
//! The updates are the only `UPDATE`s, so their topic (`<prefix>.order.updated`) holds
//! exactly the CRITICAL events: a consumer reads it and takes, for each record, its
//! receipt time minus the event's `timestamp` (the commit time), as the latency workload
//! does. The same connector configuration runs twice per run, `streaming.scheduling:
//! weighted` and `fifo`, with equal NORMAL and BULK lane bounds, on fresh slots, topics and
//! brokers.
//!
//! What the lanes can and cannot do here: they reorder what the source has read. With the
//! spill (on by default) a full BULK lane no longer stops the source, so a CRITICAL update
//! is read as soon as the source has decoded, built and encoded the import rows committed
//! before it: how fast that is depends on the CPU the machine leaves the connector while
//! PostgreSQL writes the import (see docs/benchmarks.md). The BULK lane is throttled to
//! [`crate::pass::PRIORITY_BULK_RATE`] events/s in weighted mode, as the story configures
//! bulk imports; FIFO mode has one lane and no rate limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::latency::{self, Latency, LatencyConsumer};
use crate::pass::{metric_sum, Connector, PassEnv, Scheduling, Setup};
use crate::supervision::check_cancelled;
use crate::workload;

/// Rows per transaction of the import.
pub const IMPORT_BATCH: u64 = 1_000;

/// Existing orders the CRITICAL updates take turns on (ids above the import's).
pub const ESCALATION_ROWS: u64 = 1_000;

/// The first id of the escalated orders: beyond any import.
const ESCALATION_FIRST_ID: u64 = 1_000_000_000;

/// What one priority run measured in one scheduling mode.
#[derive(Debug, Clone)]
pub struct PriorityRun {
    /// Weighted lanes or FIFO.
    pub scheduling: Scheduling,
    /// CRITICAL latencies (commit to receipt), ms.
    pub critical: Latency,
    /// Seconds from the import's start to Kafka's acknowledgement of every event (within
    /// the one-second polling).
    pub drain_seconds: f64,
    /// The most events the spill held at one of the once-a-second samples.
    pub spill_peak: f64,
}

/// One run of the priority workload in `scheduling` mode.
pub async fn run(
    env: &PassEnv<'_>,
    run: u32,
    rows: u64,
    scheduling: Scheduling,
) -> Result<PriorityRun> {
    let lab = env.lab;
    if rows % IMPORT_BATCH != 0 {
        bail!("priority import of {rows} rows is not a multiple of {IMPORT_BATCH}");
    }
    lab.sql(workload::RESET).await?;
    // The escalated orders exist before the slot: their inserts are not read.
    lab.sql(&format!(
        "insert into public.orders (id, tenant_id, status, priority, total, version, updated_by) \
         select {ESCALATION_FIRST_ID} + g, 7, 'NEW', 'NORMAL', 10.00, 1, 'bench' \
         from generate_series(0, {ESCALATION_ROWS}) g"
    ))
    .await?;
    lab.restart_broker().await?;
    let slot = format!("bench_priority_{}_{run}", scheduling.name());
    lab.create_slot(&slot).await?;
    let prefix = format!("bench.priority.{}{run}", scheduling.name());
    let topic = format!("{prefix}.order.updated");
    let setup = Setup {
        avro: false,
        priority: Some(scheduling),
    };
    let connector = Connector::start(env, &slot, &prefix, &setup)?;
    // The warm-up: one CRITICAL update, awaited by the consumer, not measured.
    let consumer = LatencyConsumer::start(lab, &connector, &slot, &topic, escalate(lab, 0)).await?;

    let started = Instant::now();
    let import_done = AtomicBool::new(false);
    let import = async {
        let result = lab
            .psql_script(&import_script(rows), "priority import")
            .await;
        import_done.store(true, Ordering::SeqCst);
        result
    };
    let (imported, escalated) = tokio::join!(
        import,
        escalate_while_streaming(lab, &connector, rows, &import_done, started)
    );
    let (escalated, drain_seconds, spill_peak) = match (imported, escalated) {
        (Ok(()), Ok(done)) => done,
        (Err(e), _) | (_, Err(e)) => {
            consumer.abort();
            return Err(e);
        }
    };
    let mut latencies = consumer.finish(escalated).await?;
    let critical = latency::summarize(&mut latencies);
    connector.stop().await?;
    lab.drop_slot(&slot).await?;
    Ok(PriorityRun {
        scheduling,
        critical,
        drain_seconds,
        spill_peak,
    })
}

/// The import: `rows` BULK orders in transactions of [`IMPORT_BATCH`], one DO block whose
/// loop commits after each batch.
fn import_script(rows: u64) -> String {
    format!(
        "do $$ begin\n\
         for b in 0 .. {last} loop\n  \
         insert into public.orders (id, tenant_id, status, priority, total, version, updated_by) \
         select g, g % 100, 'NEW', 'BULK', (g % 100000) / 100.0, 1, 'import' \
         from generate_series(b * {IMPORT_BATCH} + 1, b * {IMPORT_BATCH} + {IMPORT_BATCH}) g;\n  \
         commit;\nend loop;\nend $$;\n",
        last = rows / IMPORT_BATCH - 1,
    )
}

/// Marks escalated order `n` CRITICAL in its own transaction, committed synchronously.
async fn escalate(lab: &crate::lab::Lab, n: u64) -> Result<()> {
    let id = ESCALATION_FIRST_ID + n % (ESCALATION_ROWS + 1);
    lab.sql(&format!(
        "begin; set local synchronous_commit = on; \
         update public.orders set priority = 'CRITICAL', status = 'ESCALATED', \
         version = version + 1, updated_by = 'support' where id = {id}; commit;"
    ))
    .await
}

/// Escalates an order once a second while the import streams: until the import is
/// written and Kafka acknowledged every event read so far. Returns how many escalations it
/// committed, when everything was acknowledged (seconds after `started`) and the most
/// events the spill held at a sample.
async fn escalate_while_streaming(
    lab: &crate::lab::Lab,
    connector: &Connector,
    rows: u64,
    import_done: &AtomicBool,
    started: Instant,
) -> Result<(u64, f64, f64)> {
    let mut committed = 0;
    let mut spill_peak: f64 = 0.0;
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        tokio::time::sleep_until(next.into()).await;
        next += Duration::from_secs(1);
        check_cancelled()?;
        if started.elapsed() > Duration::from_secs(900) {
            bail!("the priority import was not acknowledged within 900 s");
        }
        if let Some(metrics) = connector.metrics().await {
            spill_peak = spill_peak.max(metric_sum(&metrics, "entity_cdc_spill_events"));
            if import_done.load(Ordering::SeqCst) {
                let dead = metric_sum(&metrics, "entity_cdc_events_dead_lettered_total");
                if dead > 0.0 {
                    bail!("entity-cdc run dead-lettered {dead} event(s) in the priority run");
                }
                // The import, the escalations and the warm-up.
                let acknowledged = metric_sum(&metrics, "entity_cdc_events_acknowledged_total");
                if acknowledged >= (rows + committed + 1) as f64 {
                    return Ok((committed, started.elapsed().as_secs_f64(), spill_peak));
                }
            }
        }
        committed += 1;
        escalate(lab, committed).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_import_commits_every_batch_of_bulk_rows() {
        let text = import_script(5_000);
        assert!(text.contains("for b in 0 .. 4 loop"), "{text}");
        assert!(
            text.contains("generate_series(b * 1000 + 1, b * 1000 + 1000)"),
            "{text}"
        );
        assert!(text.contains("'BULK'"), "{text}");
        assert_eq!(text.matches("commit;").count(), 1);
    }
}
