//! The replication connection: a `replication=database` connection built on
//! postgres-protocol over tokio, streaming a logical slot with pgoutput.
//!
//! ```text
//! ReplicationConnection::connect   TCP, SSLRequest by sslmode, startup with pinned settings,
//!   │                              trust / password / md5 / SCRAM-SHA-256
//!   │ identify_system, simple_query
//!   ▼
//! ReplicationStream                START_REPLICATION ... LOGICAL, CopyBoth:
//!   │                              XLogData + keepalives in, status updates out
//!   ▼
//! ResilientStream                  reconnects on Retry errors, yields Reconnected
//! ```
//!
//! The stream confirms nothing on its own: the caller hands it the LSN that is safe
//! (everything at or below it acknowledged by Kafka), and says when it is idle so that the
//! server's WAL end may be confirmed too (CASE-25).

mod connection;
mod error;
mod frame;
mod resilient;
mod stream;

pub use connection::{QueryResult, ReplicationConnection, SystemInfo, PINNED_SETTINGS};
pub use error::{ReplicationError, ServerError};
pub use resilient::{Backoff, ResilientStream};
pub use stream::{
    parse_copy_data, ProtoVersion, ReplicationEvent, ReplicationStream, StreamOptions,
};
