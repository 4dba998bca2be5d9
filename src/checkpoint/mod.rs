//! The LSN watermark: which WAL position may be confirmed to PostgreSQL.
//!
//! PostgreSQL forgets (and lets the slot skip) everything at or below the flush LSN we send,
//! so that LSN may pass a transaction only once Kafka (or the dead-letter topic) has
//! acknowledged every event of it and of every transaction before it
//! (ARCHITECTURE.md, invariant 1). [`Watermark`] does that bookkeeping; it is a plain
//! struct owned by one task, fed with transaction boundaries by the source and with
//! acknowledgements by the sink's delivery reports.

mod watermark;

pub use watermark::{Position, Watermark, WatermarkError};
