//! The Kafka side: one idempotent producer for all lanes, topic creation, delivery reports.
//!
//! ```text
//! lanes ──send(Record)──▶ KafkaSink ──▶ librdkafka (enable.idempotence, acks=all) ──▶ Kafka
//!          waits while the              │
//!          in-flight budget is spent    ▼ delivery report (one per record, always)
//!                                  DeliveryReports ──▶ retries / DLQ, then Watermark::ack
//! ```
//!
//! The producer is idempotent, so the order in which records are handed to [`KafkaSink::send`]
//! is their order within each partition, retries included. What is handed to librdkafka and
//! not yet reported on is bounded in records and bytes: the backlog waits upstream, in the
//! lanes, where priority decides, not in librdkafka's first-come-first-served queue.
//!
//! Every record handed to the sink yields exactly one [`Delivery`], including records that
//! librdkafka refused on the spot, so that the watermark's counting stays exact. A failure
//! carries a [`SinkError`] whose [`SinkError::disposition`] says whether producing it again
//! can help.

pub mod alert;
mod error;
mod producer;
mod record;
mod settings;

pub use error::SinkError;
pub use producer::{Delivery, DeliveryReports, KafkaSink, Slot};
pub use record::Record;
pub use settings::SinkSettings;
