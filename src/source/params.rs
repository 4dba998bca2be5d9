//! Where and how to connect to PostgreSQL, shared by the replication connection and the
//! ordinary SQL connection (catalog queries, setup, check).

use std::path::PathBuf;

use secrecy::SecretString;

/// TLS policy, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying the certificate.
    #[default]
    Prefer,
    /// Require TLS, without verifying the certificate.
    Require,
    /// Require TLS and a certificate signed by a trusted root.
    VerifyCa,
    /// Require TLS, a trusted certificate, and a host name that matches it.
    VerifyFull,
}

/// Connection parameters for one database as one user.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Role to connect as.
    pub user: String,
    /// Password, when the server asks for one.
    pub password: Option<SecretString>,
    /// TLS policy.
    pub sslmode: SslMode,
    /// PEM file with the trusted root certificates for verify-ca and verify-full; the
    /// webpki roots are used when it is not set.
    pub sslrootcert: Option<PathBuf>,
    /// Shown in pg_stat_activity and pg_stat_replication.
    pub application_name: String,
}
