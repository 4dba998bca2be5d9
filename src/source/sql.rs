//! The ordinary SQL connection (tokio-postgres): catalog queries, `setup` and `check`.
//!
//! The replication connection is a separate, hand-built connection (ARCHITECTURE.md); this one
//! is for everything that plain SQL can do. It pins the same session settings as the
//! replication connection, so that any value read here in text form (a snapshot, a default)
//! has exactly the format the pgoutput decoder sees in the stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tracing::warn;

use super::params::{ConnectParams, SslMode};
use crate::error::Disposition;

/// Session settings pinned on every connection, as a libpq `options` string.
///
/// Text output depends on these (dates, intervals, floats, bytea); pinning them makes the
/// text format independent of the server's and the role's defaults.
pub const SESSION_OPTIONS: &str = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 \
     -c extra_float_digits=3 -c bytea_output=hex";

/// How long connecting (TCP, TLS and authentication) may take before it counts as failed.
///
/// Long enough for a slow TLS handshake across regions, short enough that `check` answers
/// promptly when the host is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A failure of the SQL connection or of one query on it.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The TLS settings cannot be turned into a client configuration.
    #[error("invalid tls settings for {host}:{port}: {detail}")]
    Tls {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// What is wrong (unreadable root certificate file, ...).
        detail: String,
    },
    /// Connecting or authenticating failed.
    #[error("connecting to database {database} on {host}:{port} as {user}")]
    Connect {
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
        /// Database name.
        database: String,
        /// Role name.
        user: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A query failed; `what` says what it was for.
    #[error("{what}")]
    Query {
        /// What the query was doing, e.g. "reading publication cdc".
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl SqlError {
    /// Builds a `map_err` adapter that labels a failed query with what it was doing.
    pub fn query(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SqlError {
        let what = what.into();
        move |source| SqlError::Query { what, source }
    }

    /// The driver's error, when there is one.
    pub fn driver_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            SqlError::Tls { .. } => None,
            SqlError::Connect { source, .. } | SqlError::Query { source, .. } => Some(source),
        }
    }

    /// Lost connections and refused connects are retried; a query the server rejects (missing
    /// privilege, unknown object) and bad TLS settings need an operator.
    pub fn disposition(&self) -> Disposition {
        match self {
            SqlError::Tls { .. } => Disposition::Halt,
            SqlError::Connect { source, .. } => match source.code() {
                Some(code) if is_definite(code) => Disposition::Halt,
                _ => Disposition::Retry,
            },
            SqlError::Query { source, .. } => match source.code() {
                None => Disposition::Retry,
                Some(code) if code.code().starts_with("08") => Disposition::Retry,
                Some(_) => Disposition::Halt,
            },
        }
    }
}

/// Server answers to a connect attempt that retrying cannot fix.
fn is_definite(code: &SqlState) -> bool {
    [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::INVALID_CATALOG_NAME,
        SqlState::INSUFFICIENT_PRIVILEGE,
    ]
    .contains(code)
}

/// Connects to the database for ordinary SQL, with TLS as `params.sslmode` asks, and spawns
/// the task that drives the connection; it ends when the returned client is dropped.
pub async fn connect(params: &ConnectParams) -> Result<Client, SqlError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&params.host)
        .port(params.port)
        .dbname(&params.database)
        .user(&params.user)
        .application_name(&params.application_name)
        .options(SESSION_OPTIONS)
        .connect_timeout(CONNECT_TIMEOUT)
        .ssl_mode(match params.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
    if let Some(password) = &params.password {
        config.password(password.expose_secret());
    }
    let connect_error = |source| SqlError::Connect {
        host: params.host.clone(),
        port: params.port,
        database: params.database.clone(),
        user: params.user.clone(),
        source,
    };
    let tls = crate::source::tls::client_config(params.sslmode, params.sslrootcert.as_deref())
        .map_err(|e| SqlError::Tls {
            host: params.host.clone(),
            port: params.port,
            detail: e.to_string(),
        })?;
    match tls {
        None => {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(connect_error)?;
            spawn_connection(connection, params);
            Ok(client)
        }
        Some(tls) => {
            let make_tls = tokio_postgres_rustls::MakeRustlsConnect::new(Arc::unwrap_or_clone(tls));
            let (client, connection) = config.connect(make_tls).await.map_err(connect_error)?;
            spawn_connection(connection, params);
            Ok(client)
        }
    }
}

/// Drives the connection in the background; its error is logged because the client only sees
/// "connection closed" on its next query.
fn spawn_connection<F>(connection: F, params: &ConnectParams)
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    let host = params.host.clone();
    let database = params.database.clone();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            warn!(%host, %database, %error, "sql connection ended with an error");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_options_pin_the_text_formats() {
        for setting in [
            "DateStyle=ISO",
            "TimeZone=UTC",
            "IntervalStyle=iso_8601",
            "extra_float_digits=3",
            "bytea_output=hex",
        ] {
            assert!(SESSION_OPTIONS.contains(setting), "{setting}");
        }
    }
}
