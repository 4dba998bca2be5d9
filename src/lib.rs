//! entity-cdc: PostgreSQL logical replication (pgoutput) to Kafka, as metamodel entity events.
//!
//! ```text
//! PostgreSQL walsender (pgoutput, proto v1/v2, REPLICA IDENTITY FULL: old + new tuples)
//!   │ CopyBoth: XLogData, primary keepalives            ▲ standby status update: flush = watermark
//!   ▼                                                    │
//! source    replication connection, slot + publication, pgoutput decoder, relation cache,
//!           type decoding                            →  Change { commit_lsn, xid, commit_ts, relation, old, new }
//!   ▼
//! model     metamodel: relation → Entity; key, tenant, version, user, priority
//!   ▼
//! event     EntityEvent: envelope + payload in mode minimal | diff | full; topic name
//!   ▼
//! codec     Avro (schema per entity, Schema Registry) or JSON  →  Record { topic, key, headers, bytes }
//!   ▼
//! lanes     CRITICAL / HIGH / NORMAL / BULK, bounded; weighted scheduler; per-key order kept
//!   ▼
//! sink      one idempotent rdkafka producer; delivery reports; retries; DLQ; notifications
//!   ▼
//! checkpoint  acked commit LSNs → highest LSN below which everything is acknowledged ───┘
//! ```
//!
//! Each stage is a module with one job. The source task is the only owner of the replication
//! connection: it reads, and it sends the status updates with the LSN it is told is safe.

pub mod checkpoint;
pub mod cli;
pub mod codec;
pub mod config;
pub mod consume;
pub mod error;
pub mod event;
pub mod lanes;
pub mod model;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod telemetry;
