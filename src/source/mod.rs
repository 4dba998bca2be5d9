//! The source side: the replication connection, the pgoutput decoder, the relation cache and
//! the decoding of column values from PostgreSQL's text format.

pub mod lsn;
pub mod params;
pub mod replication;
pub mod tls;

pub use lsn::Lsn;
pub use params::{ConnectParams, SslMode};
