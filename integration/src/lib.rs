//! Test harness: a throwaway PostgreSQL 15 server per test binary or per test, a
//! Kafka-protocol broker (tansu, in memory; see [`kafka`]), and the receivers of operator
//! alerts: a webhook receiver ([`webhook`], hyper) and a minimal SMTP sink ([`smtp`]).
//!
//! The server is created with `initdb` in a temporary folder, listens on loopback on a free
//! port with `wal_level=logical`, and is stopped and removed when the handle is dropped.
//! When the tests run as root the server runs as the `postgres` user, since PostgreSQL
//! refuses to run as root.

pub mod capture;
pub mod kafka;
pub mod load;
pub mod pg;
pub mod registry;
pub mod scrape;
pub mod smtp;
pub mod story;
pub mod webhook;

pub use kafka::{ConsumedRecord, KafkaBroker};
pub use pg::{PgServer, PgServerOptions};
pub use registry::SchemaRegistry;
pub use smtp::{ReceivedMail, SmtpSink};
pub use webhook::{ReceivedRequest, WebhookReceiver};
