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
    let tls =
        tls::client_config(params.sslmode, params.sslrootcert.as_deref()).map_err(|detail| {
            SqlError::Tls {
                host: params.host.clone(),
                port: params.port,
                detail,
            }
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

// TODO(merge): use source::tls::client_config
/// A minimal stand-in for the shared TLS builder, with libpq's sslmode semantics: `disable`
/// has no TLS, `prefer` and `require` encrypt without verifying, `verify-ca` checks the chain
/// only, `verify-full` the chain and the host name.
mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

    use crate::source::params::SslMode;

    /// Builds the rustls configuration for `mode`, or `None` for `disable`.
    pub(super) fn client_config(
        mode: SslMode,
        root_cert: Option<&Path>,
    ) -> Result<Option<Arc<ClientConfig>>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = match mode {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer | SslMode::Require => None,
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(roots(root_cert)?);
                Some(
                    WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                        .build()
                        .map_err(|e| format!("building the certificate verifier: {e}"))?,
                )
            }
        };
        let verifier = Arc::new(Verifier {
            chain,
            check_name: mode == SslMode::VerifyFull,
            provider: provider.clone(),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("choosing tls versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }

    /// The trusted roots: the PEM file when given, else the webpki (Mozilla) roots.
    fn roots(root_cert: Option<&Path>) -> Result<RootCertStore, String> {
        let Some(path) = root_cert else {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        };
        let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut store = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("parsing {}: {e}", path.display()))?;
            store
                .add(cert)
                .map_err(|e| format!("adding a root from {}: {e}", path.display()))?;
        }
        if store.is_empty() {
            return Err(format!("no certificate in {}", path.display()));
        }
        Ok(store)
    }

    /// Verifies as much as the sslmode asks; handshake signatures are always checked, so
    /// that the peer at least holds the key of the certificate it sent.
    #[derive(Debug)]
    struct Verifier {
        /// The chain verifier for verify-ca and verify-full, `None` for prefer and require.
        chain: Option<Arc<WebPkiServerVerifier>>,
        /// Whether a certificate issued for another name is rejected (verify-full).
        check_name: bool,
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Verifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let Some(chain) = &self.chain else {
                return Ok(ServerCertVerified::assertion());
            };
            match chain.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) if !self.check_name => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_has_no_tls_and_the_other_modes_do() {
        assert!(tls::client_config(SslMode::Disable, None)
            .expect("disable")
            .is_none());
        for mode in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert!(
                tls::client_config(mode, None).expect("config").is_some(),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn a_missing_root_certificate_file_is_named() {
        let error = tls::client_config(
            SslMode::VerifyFull,
            Some(std::path::Path::new("/nonexistent/root.pem")),
        )
        .expect_err("must fail");
        assert!(error.contains("/nonexistent/root.pem"), "{error}");
    }

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
