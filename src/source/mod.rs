//! The source side: the replication connection, the pgoutput decoder, the relation cache and
//! the decoding of column values from PostgreSQL's text format.

pub mod catalog;
pub mod change;
pub mod check;
pub mod lsn;
pub mod params;
pub mod pgoutput;
pub mod reader;
pub mod relation;
pub mod replication;
pub mod setup;
pub mod sql;
pub mod tail;
pub mod tls;
pub mod value;

pub use change::Change;
pub use lsn::Lsn;
pub use params::{ConnectParams, SslMode};
pub use setup::{DatabaseTarget, TableRef};

use std::time::Duration;

use crate::config::Config;
use crate::error::Disposition;
use reader::ChangeReader;
use replication::{Backoff, ReplicationConnection, ResilientStream, StreamOptions};

/// What the change reader needs: where to connect, the slot and the publication.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Connection parameters.
    pub params: ConnectParams,
    /// The logical replication slot (pgoutput).
    pub slot: String,
    /// The publication to stream.
    pub publication: String,
    /// How often standby status updates are sent.
    pub status_interval: Duration,
    /// Stream through a temporary slot named `slot`, created for this connection and gone
    /// when it closes (`tail --temporary`); a lost connection is then an error, since the
    /// changes made meanwhile are gone with the slot.
    pub temporary_slot: bool,
}

impl SourceSettings {
    /// The settings that connector.yaml's `source` section describes.
    pub fn from_config(config: &Config) -> SourceSettings {
        SourceSettings {
            params: config.source.connect_params(),
            slot: config.source.slot.clone(),
            publication: config.source.publication.clone(),
            status_interval: config.source.status_interval(),
            temporary_slot: false,
        }
    }
}

/// Why the source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The catalog (SQL) connection failed.
    #[error(transparent)]
    Sql(#[from] sql::SqlError),
    /// The replication connection failed.
    #[error(transparent)]
    Replication(#[from] replication::ReplicationError),
    /// The publication does not exist. pgoutput would only say so at the first change
    /// decoded, which on a quiet database may be much later: it is checked up front.
    #[error("publication {publication:?} does not exist")]
    PublicationMissing {
        /// The configured publication.
        publication: String,
    },
}

impl OpenError {
    /// What an operator should do, where known.
    pub fn hint(&self) -> Option<String> {
        match self {
            OpenError::Sql(_) => None,
            OpenError::Replication(e) => e.hint().map(str::to_owned),
            OpenError::PublicationMissing { .. } => Some(
                "create the publication and the slot with `entity-cdc setup --apply`, then \
                 verify with `entity-cdc check`"
                    .to_owned(),
            ),
        }
    }

    /// Whether trying again may help.
    pub fn disposition(&self) -> Disposition {
        match self {
            OpenError::Sql(e) => e.disposition(),
            OpenError::Replication(e) => e.disposition(),
            OpenError::PublicationMissing { .. } => Disposition::Halt,
        }
    }
}

/// Connects the catalog connection and the replication stream and returns the reader.
///
/// With a persistent slot the first connection is made here, so that a missing or busy
/// slot is reported at once; later losses are healed by reconnecting.
pub async fn open_reader(settings: &SourceSettings) -> Result<ChangeReader, OpenError> {
    let catalog = sql::connect(&settings.params).await?;
    let publication = catalog
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&settings.publication],
        )
        .await
        .map_err(sql::SqlError::query(format!(
            "looking up publication {}",
            settings.publication
        )))?;
    if publication.is_none() {
        return Err(OpenError::PublicationMissing {
            publication: settings.publication.clone(),
        });
    }
    let mut options = StreamOptions::new(settings.slot.clone(), vec![settings.publication.clone()]);
    options.status_interval = settings.status_interval;
    let stream = if settings.temporary_slot {
        let mut connection = ReplicationConnection::connect(&settings.params).await?;
        let slot = setup::quote_ident(&settings.slot);
        connection
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput"
            ))
            .await?;
        let stream = connection.start_replication(options.clone()).await?;
        ResilientStream::from_started(
            stream,
            settings.params.clone(),
            options,
            Backoff::default(),
            false,
        )
    } else {
        let mut stream = ResilientStream::new(settings.params.clone(), options, Backoff::default());
        stream.connect_now().await?;
        stream
    };
    Ok(ChangeReader::new(stream, catalog))
}
