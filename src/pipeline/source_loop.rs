//! The source loop: the one task that owns the replication stream. It reads changes,
//! builds their events, encodes them (a single call, before the lanes) and queues them in
//! their lanes.
//!
//! When a lane and the spill are full (or the spill is off) it stops reading WAL
//! (PostgreSQL keeps it) and waits for room, and
//! when the Schema Registry is down it waits for it, but it keeps the replication
//! connection alive meanwhile: a standby status update goes out
//! every status interval, so the server's `wal_sender_timeout` never fires however long
//! the wait (an unread keepalive asking for a reply is answered by that update, since any
//! status update counts as the reply).

use std::future::{poll_fn, Future as _};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::dead_letter::{Cause, DeadLetters};
use super::dispatch::{Outgoing, SharedLanes};
use super::{change_type_of, now_rfc3339, PipelineError, RecordTag, RunSummary, SharedWatermark};
use crate::checkpoint::Watermark;
use crate::codec::{dead_letter_record, DeadLetter, EncodeError, Encoder};
use crate::config::Priority;
use crate::error::Disposition;
use crate::event::build_events;
use crate::model::{Binding, EntityModel, TransactionContext, CONTEXT_PREFIX};
use crate::source::change::{Change, SourceEvent};
use crate::source::reader::{ChangeReader, ReadItem, Undecodable};
use crate::source::{catalog, Lsn};
use crate::telemetry::metrics::PipelineMetrics;

/// How often the wait for in-flight records after a reconnection looks again.
const RECONNECT_POLL: Duration = Duration::from_millis(20);

/// Reads changes and produces their events.
pub(super) struct SourceLoop {
    /// Relations bound to entities.
    pub model: EntityModel,
    /// Where events wait for dispatch.
    pub lanes: Arc<SharedLanes>,
    /// Transactions and events in flight.
    pub watermark: SharedWatermark,
    /// `streaming.dlqTopic`.
    pub dlq_topic: String,
    /// Where dead-lettered events are reported.
    pub dead_letters: Arc<DeadLetters>,
    /// How often a status update goes out while waiting for room in a lane.
    pub status_interval: Duration,
    /// Events added to the watermark but dropped unqueued when a stop interrupted the wait
    /// for room: never acknowledged, so their transactions are never confirmed; the drain
    /// does not wait for them.
    pub abandoned: u64,
    /// The open transaction's context message, if it had one.
    pub context: Option<TransactionContext>,
    /// What was read and produced so far.
    pub summary: RunSummary,
    /// The stop request, watched while waiting out a reconnection.
    pub stop: CancellationToken,
    /// Cancelled by the delivery task when a delivery fails.
    pub failure: CancellationToken,
    /// Entities whose priority column held a value that is no priority, already reported
    /// (once per entity, not per event: the count is in the summary).
    pub unknown_priority_reported: std::collections::HashSet<String>,
    /// The metric handles, per entity resolved once.
    pub metrics: PipelineMetrics,
    /// JSON or Avro (with the Schema Registry).
    pub encoder: Encoder,
}

impl SourceLoop {
    /// Reads and queues until a stop or a delivery failure.
    pub async fn run(
        &mut self,
        reader: &mut ChangeReader,
        cancel: &CancellationToken,
        failure: &CancellationToken,
    ) -> Result<RunSummary, PipelineError> {
        loop {
            let item = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = failure.cancelled() => break,
                item = reader.next() => item?,
            };
            self.handle(reader, item).await?;
            // The reader parses messages out of its buffer without touching the socket,
            // and with room in the lanes (or the spill) nothing here waits: without this,
            // the loop could run for seconds without yielding, and the dispatcher and the
            // delivery task, woken from it onto this worker, would not run meanwhile.
            tokio::task::consume_budget().await;
        }
        Ok(self.summary)
    }

    async fn handle(
        &mut self,
        reader: &mut ChangeReader,
        item: ReadItem,
    ) -> Result<(), PipelineError> {
        match item {
            ReadItem::Event(SourceEvent::Begin {
                commit_lsn,
                commit_ts,
                ..
            }) => {
                self.context = None;
                self.watermark.with_tracked(|t| {
                    t.open = Some(commit_ts);
                    t.watermark.open(commit_lsn)
                })?;
            }
            ReadItem::Event(SourceEvent::Commit {
                commit_lsn,
                end_lsn,
                commit_ts,
                ..
            }) => {
                self.context = None;
                self.watermark.with_tracked(|t| {
                    t.open = None;
                    t.closed.insert(end_lsn, commit_ts);
                    t.watermark.close(commit_lsn, end_lsn)
                })?;
            }
            ReadItem::Event(SourceEvent::Change(change)) => {
                self.summary.changes += 1;
                self.metrics.changes_read.increment(1);
                self.change(reader, change).await?;
            }
            ReadItem::Event(SourceEvent::Truncate {
                relations,
                commit_lsn,
                ..
            }) => {
                for relation in relations {
                    if self
                        .model
                        .entity_for(&relation.schema, &relation.name)
                        .is_some()
                    {
                        warn!(relation = %relation.qualified_name(), lsn = %commit_lsn,
                            "truncate of an entity table: no entity events are produced for it");
                    }
                }
            }
            ReadItem::Event(SourceEvent::Message {
                transactional,
                prefix,
                content,
                lsn,
                ..
            }) => {
                if transactional && prefix == CONTEXT_PREFIX {
                    match TransactionContext::parse(&content) {
                        Ok(context) => self.context = Some(context),
                        Err(e) => {
                            warn!(lsn = %lsn, error = %e, "transaction context ignored");
                        }
                    }
                }
            }
            ReadItem::Event(SourceEvent::Keepalive { wal_end }) => {
                let confirmed = reader.stream().confirmed();
                #[allow(clippy::cast_precision_loss)]
                self.metrics
                    .lag_bytes
                    .set(wal_end.0.saturating_sub(confirmed.0) as f64);
            }
            ReadItem::Event(SourceEvent::Reconnected) => {
                self.metrics.reconnects.increment(1);
                // The server resends from the confirmed position: a partly read
                // transaction comes again from its Begin. Wait for what is in flight, then
                // start a fresh watermark at what is confirmed.
                // A failed delivery or a stop request ends the wait: the run loop sees them
                // next, and nothing past the confirmed position has been confirmed.
                // The lanes may hold seconds of throttled backlog: status updates keep the
                // new connection alive meanwhile.
                self.context = None;
                let mut status_at = tokio::time::Instant::now() + self.status_interval;
                while self.watermark.in_flight() > self.abandoned {
                    if self.stop.is_cancelled() || self.failure.is_cancelled() {
                        return Ok(());
                    }
                    tokio::time::sleep(RECONNECT_POLL).await;
                    if tokio::time::Instant::now() >= status_at {
                        status_update(reader, &self.watermark).await;
                        status_at = tokio::time::Instant::now() + self.status_interval;
                    }
                }
                self.abandoned = 0;
                let confirmed = self.watermark.confirmed();
                self.watermark.with_tracked(|t| {
                    t.watermark = Watermark::new(confirmed);
                    t.open = None;
                    t.closed.clear();
                });
                info!(confirmed = %confirmed, "replication reconnected; resuming");
            }
            ReadItem::Undecodable(bad) => {
                self.dead_letter_undecodable(reader, bad).await?;
            }
        }
        Ok(())
    }

    async fn change(
        &mut self,
        reader: &mut ChangeReader,
        change: Change,
    ) -> Result<(), PipelineError> {
        let primary_key = if self.model.is_known(&change.relation)
            || self
                .model
                .entity_for(&change.relation.schema, &change.relation.name)
                .is_none()
        {
            Vec::new()
        } else {
            catalog::primary_key(
                reader.catalog(),
                &change.relation.schema,
                &change.relation.name,
            )
            .await?
        };
        let Some(binding) = self.model.bind(&change.relation, &primary_key)? else {
            self.summary.skipped += 1;
            self.metrics.changes_skipped.increment(1);
            return Ok(());
        };
        match build_events(&binding, &change, self.context.as_ref()) {
            Ok(events) => {
                for event in events {
                    let handles = self.metrics.events(&event.entity_type, event.change_type);
                    handles.built.increment(1);
                    if event.unknown_priority {
                        self.metrics.unknown_priority(&event.entity_type);
                        self.summary.unknown_priorities += 1;
                        if self
                            .unknown_priority_reported
                            .insert(event.entity_type.clone())
                        {
                            warn!(entity = %event.entity_type, event_id = %event.event_id,
                                "priority column holds a value that is no priority; the entity's default is used (reported once per entity)");
                        }
                    }
                    // Encoded before the watermark hears of it: an event that cannot be
                    // encoded (registry refusal, stop while the registry is down) leaves
                    // its transaction open, so nothing from it on is confirmed.
                    // Encoding may wait for the Schema Registry (retried with backoff
                    // while it is down): status updates keep the replication connection
                    // alive meanwhile, as while waiting for room in a lane.
                    let encoded = {
                        let mut encoding =
                            pin!(self.encoder.encode(&binding, &change, &event, &self.stop));
                        // Polled once first: almost always ready (JSON, a cached schema id),
                        // and then no timer is set up for the event.
                        match poll_fn(|cx| Poll::Ready(encoding.as_mut().poll(cx))).await {
                            Poll::Ready(result) => result,
                            Poll::Pending => {
                                let mut status_at =
                                    tokio::time::Instant::now() + self.status_interval;
                                loop {
                                    tokio::select! {
                                        biased;
                                        result = &mut encoding => break result,
                                        () = tokio::time::sleep_until(status_at) => {
                                            status_update(reader, &self.watermark).await;
                                            status_at = tokio::time::Instant::now()
                                                + self.status_interval;
                                        }
                                    }
                                }
                            }
                        }
                    };
                    let mut record = match encoded {
                        Ok(record) => record,
                        Err(EncodeError::Cancelled) => return Ok(()),
                        // A value its schema cannot hold: the event goes to the dead-letter
                        // topic with the reason, the others flow on.
                        Err(EncodeError::Value(e)) => {
                            self.dead_letter_change(
                                reader,
                                &binding,
                                &change,
                                Some(event.event_id.clone()),
                                e.to_string(),
                            )
                            .await?;
                            continue;
                        }
                        Err(e) => return Err(PipelineError::Encode(e)),
                    };
                    let tag = RecordTag {
                        events: Some(handles),
                        latency: self.metrics.latency(event.priority),
                        commit_ts: change.commit_ts,
                    };
                    record.position = self
                        .watermark
                        .with_tracked(|t| t.watermark.add_event(change.commit_lsn))?;
                    let outgoing = Outgoing {
                        record,
                        tag: Some(tag),
                    };
                    if !self.enqueue(reader, event.priority, outgoing).await {
                        return Ok(());
                    }
                    self.summary.events += 1;
                }
            }
            Err(e) if e.disposition() == Disposition::DeadLetter => {
                self.dead_letter_change(
                    reader,
                    &binding,
                    &change,
                    e.event_id().map(str::to_owned),
                    e.to_string(),
                )
                .await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Dead-letters an event of `change` that cannot be built or encoded, with `reason`.
    async fn dead_letter_change(
        &mut self,
        reader: &mut ChangeReader,
        binding: &Binding,
        change: &Change,
        event_id: Option<String>,
        reason: String,
    ) -> Result<(), PipelineError> {
        let topic = crate::event::topic_name(&binding.entity, change_type_of(change.kind))
            .unwrap_or_default();
        self.dead_letters.on_dead_lettered(
            Cause::Unbuildable,
            event_id.as_deref(),
            &topic,
            &reason,
            0,
        );
        self.metrics
            .events(&binding.entity.name, change_type_of(change.kind))
            .dead_lettered
            .increment(1);
        let letter = DeadLetter {
            event_id,
            failure_reason: reason,
            failure_timestamp: now_rfc3339(),
            retry_count: 0,
            original: None,
            source: json!({
                "entity": binding.entity.name,
                "schema": change.relation.schema,
                "table": change.relation.name,
                "commitLsn": change.commit_lsn.to_string(),
                "index": change.index,
                "change": change.kind.as_str(),
            }),
        };
        let priority = binding
            .entity
            .streaming
            .default_priority
            .unwrap_or(Priority::Normal);
        self.send_dead_letter(
            reader,
            priority,
            change.commit_lsn,
            change.commit_ts,
            &letter,
        )
        .await
    }

    async fn dead_letter_undecodable(
        &mut self,
        reader: &mut ChangeReader,
        bad: Undecodable,
    ) -> Result<(), PipelineError> {
        let Some(entity) = self
            .model
            .entity_for(&bad.relation.schema, &bad.relation.name)
            .map(|(_, e)| e.name.clone())
        else {
            self.summary.skipped += 1;
            self.metrics.changes_skipped.increment(1);
            return Ok(());
        };
        self.metrics
            .events(&entity, change_type_of(bad.kind))
            .dead_lettered
            .increment(1);
        let event_id = format!("{}:{}", bad.commit_lsn, bad.index);
        self.dead_letters.on_dead_lettered(
            Cause::Unbuildable,
            Some(&event_id),
            &bad.relation.qualified_name(),
            &bad.reason,
            0,
        );
        let letter = DeadLetter {
            event_id: Some(event_id),
            failure_reason: bad.reason.clone(),
            failure_timestamp: now_rfc3339(),
            retry_count: 0,
            original: None,
            source: json!({
                "schema": bad.relation.schema,
                "table": bad.relation.name,
                "commitLsn": bad.commit_lsn.to_string(),
                "index": bad.index,
                "change": bad.kind.as_str(),
            }),
        };
        // A dead letter's commit time feeds no histogram: 0 will do.
        self.send_dead_letter(reader, Priority::Normal, bad.commit_lsn, 0, &letter)
            .await
    }

    async fn send_dead_letter(
        &mut self,
        reader: &mut ChangeReader,
        priority: Priority,
        commit_lsn: Lsn,
        commit_ts: i64,
        letter: &DeadLetter,
    ) -> Result<(), PipelineError> {
        let tag = RecordTag {
            events: None,
            latency: metrics::Histogram::noop(),
            commit_ts,
        };
        let position = self
            .watermark
            .with_tracked(|t| t.watermark.add_event(commit_lsn))?;
        let outgoing = Outgoing {
            record: dead_letter_record(&self.dlq_topic, letter, position),
            tag: Some(tag),
        };
        self.enqueue(reader, priority, outgoing).await;
        Ok(())
    }

    /// Queues `outgoing` in the lane of `priority`, waiting for room while the lane is full
    /// and sending a status update every status interval meanwhile. Returns false when a
    /// stop or a delivery failure ended the wait: the event is dropped unqueued, and its
    /// transaction is never confirmed.
    async fn enqueue(
        &mut self,
        reader: &mut ChangeReader,
        priority: Priority,
        outgoing: Outgoing,
    ) -> bool {
        let Some(mut outgoing) = self.lanes.push(priority, outgoing) else {
            return true;
        };
        let mut status_at = tokio::time::Instant::now() + self.status_interval;
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                () = self.failure.cancelled() => break,
                () = self.lanes.room() => {}
                () = tokio::time::sleep_until(status_at) => {
                    status_update(reader, &self.watermark).await;
                    status_at = tokio::time::Instant::now() + self.status_interval;
                }
            }
            outgoing = match self.lanes.push(priority, outgoing) {
                None => return true,
                Some(back) => back,
            };
        }
        self.abandoned += 1;
        false
    }
}

/// Sends a status update with what `watermark` confirms now: while the source is not
/// reading, any status update answers a keepalive that asked for a reply.
async fn status_update(reader: &mut ChangeReader, watermark: &SharedWatermark) {
    // Acknowledgements may have moved the watermark meanwhile.
    reader.stream().confirm(watermark.confirmed());
    if let Err(e) = reader.stream().send_status().await {
        // The next read notices the lost connection and reconnects.
        warn!(error = %e, "status update while waiting failed");
    }
}
