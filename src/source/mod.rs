//! The source side: the replication connection, the pgoutput decoder, the relation cache and
//! the decoding of column values from PostgreSQL's text format.

pub mod catalog;
pub mod check;
pub mod lsn;
pub mod params;
pub mod pgoutput;
pub mod relation;
pub mod setup;
pub mod sql;
pub mod value;

pub use lsn::Lsn;
pub use params::{ConnectParams, SslMode};
pub use setup::{DatabaseTarget, TableRef};
