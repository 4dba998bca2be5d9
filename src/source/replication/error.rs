//! Errors of the replication connection, each with its disposition and, when an operator
//! must act, a hint saying what to run.

use std::io;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

use crate::error::Disposition;
use crate::source::tls::TlsError;

/// An ErrorResponse (or NoticeResponse) sent by the server, with its standard fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC` (not localised: the `V` field).
    pub severity: String,
    /// The SQLSTATE, e.g. `42704`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The optional detail.
    pub detail: Option<String>,
    /// The optional hint from the server.
    pub hint: Option<String>,
}

impl ServerError {
    /// Reads the fields of an ErrorResponse or NoticeResponse body.
    ///
    /// Missing fields become empty strings rather than an error: the code and message are
    /// always sent by PostgreSQL, and a partial error is more useful than a protocol error.
    pub(crate) fn from_fields(
        mut fields: ErrorFields<'_>,
    ) -> Result<ServerError, ReplicationError> {
        let mut error = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        let mut localized_severity = String::new();
        while let Some(field) = fields
            .next()
            .map_err(|e| ReplicationError::Protocol(format!("malformed error fields: {e}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'S' => localized_severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        if error.severity.is_empty() {
            error.severity = localized_severity;
        }
        Ok(error)
    }

    /// The SQLSTATE class (its first two characters).
    fn class(&self) -> &str {
        self.code.get(..2).unwrap_or("")
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity.to_lowercase(),
            self.code,
            self.message
        )?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// A failure of the replication connection or stream.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The TCP connection could not be opened.
    #[error("connecting to {addr}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// Opening the connection, TLS and authentication did not finish in time.
    #[error("connecting to {addr} timed out")]
    ConnectTimeout {
        /// `host:port`.
        addr: String,
    },
    /// Reading or writing the established connection failed.
    #[error("i/o error on the replication connection")]
    Io(#[source] io::Error),
    /// The server closed the connection.
    #[error("the server closed the replication connection")]
    Eof,
    /// The server sent nothing, not even an answer to a reply request, for this long.
    #[error("no message from the server for {timeout:?}")]
    ServerSilent {
        /// The configured silence timeout.
        timeout: std::time::Duration,
    },
    /// The server ended the CopyBoth stream (CopyDone) without an error.
    #[error("the server ended the replication stream")]
    StreamEnded,
    /// The TLS configuration could not be built.
    #[error("tls configuration")]
    TlsConfig(#[source] TlsError),
    /// The TLS handshake failed (certificate rejected, protocol mismatch, connection lost).
    #[error("tls handshake with {host} failed")]
    TlsHandshake {
        /// The host name used for verification.
        host: String,
        /// The underlying error; rustls errors are wrapped as `InvalidData`.
        #[source]
        source: io::Error,
    },
    /// The sslmode requires TLS but the server does not offer it.
    #[error("the server does not support tls but sslmode requires it")]
    TlsRefused,
    /// The host is not a valid DNS name or IP address for TLS verification.
    #[error("invalid tls server name {0:?}")]
    InvalidServerName(String),
    /// The server asks for a password but none is configured.
    #[error("the server asks for a password but none is configured")]
    PasswordMissing,
    /// The server asks for an authentication method this client does not implement.
    #[error("unsupported authentication method {0}")]
    UnsupportedAuthentication(String),
    /// The server rejected the credentials or the role may not connect (SQLSTATE class 28).
    #[error("authentication failed: {0}")]
    Authentication(Box<ServerError>),
    /// START_REPLICATION named a slot that does not exist.
    #[error("replication slot {slot:?} does not exist")]
    SlotMissing {
        /// The slot name.
        slot: String,
        /// The server's error.
        server: Box<ServerError>,
    },
    /// The slot is being read by another walsender.
    #[error("replication slot {slot:?} is active for another process: {server}")]
    SlotActive {
        /// The slot name.
        slot: String,
        /// The server's error, naming the other PID.
        server: Box<ServerError>,
    },
    /// The slot lost WAL it still needed (CASE-26): changes are missing.
    #[error("replication slot {slot:?} is invalidated: {server}")]
    SlotInvalidated {
        /// The slot name.
        slot: String,
        /// The server's error.
        server: Box<ServerError>,
    },
    /// Logical decoding is not possible with the server's wal_level.
    #[error("logical decoding is not enabled on the server: {0}")]
    WalLevel(Box<ServerError>),
    /// Any other error reported by the server.
    #[error("server error: {0}")]
    Server(Box<ServerError>),
    /// The server sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A frame is longer than the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream options are invalid.
    #[error("invalid replication option: {0}")]
    InvalidOption(String),
}

impl ReplicationError {
    /// Whether reconnecting may heal the failure (Retry) or an operator must act (Halt).
    pub fn disposition(&self) -> Disposition {
        use ReplicationError as E;
        match self {
            E::Connect { .. }
            | E::ConnectTimeout { .. }
            | E::Io(_)
            | E::Eof
            | E::ServerSilent { .. }
            | E::StreamEnded => Disposition::Retry,
            // rustls reports certificate and protocol failures as InvalidData; anything else
            // is the socket failing during the handshake.
            E::TlsHandshake { source, .. } => {
                if source.kind() == io::ErrorKind::InvalidData {
                    Disposition::Halt
                } else {
                    Disposition::Retry
                }
            }
            E::Server(error) => server_disposition(error),
            E::TlsConfig(_)
            | E::TlsRefused
            | E::InvalidServerName(_)
            | E::PasswordMissing
            | E::UnsupportedAuthentication(_)
            | E::Authentication(_)
            | E::SlotMissing { .. }
            | E::SlotActive { .. }
            | E::SlotInvalidated { .. }
            | E::WalLevel(_)
            | E::Protocol(_)
            | E::FrameTooLarge { .. }
            | E::InvalidOption(_) => Disposition::Halt,
        }
    }

    /// What the operator should do, for failures that need one.
    pub fn hint(&self) -> Option<&'static str> {
        use ReplicationError as E;
        Some(match self {
            E::SlotMissing { .. } => {
                "create the slot and the publication with `entity-cdc setup --apply`, then \
                 verify with `entity-cdc check`"
            }
            E::SlotActive { .. } => {
                "another process is reading this slot (see active_pid in pg_replication_slots): \
                 stop it, or give this connector its own slot; `entity-cdc check` shows the slot"
            }
            E::SlotInvalidated { .. } => {
                "the slot lost WAL it still needed (max_slot_wal_keep_size), so changes are \
                 missing: recreate it with `entity-cdc setup --apply` and resnapshot; \
                 `entity-cdc check` shows wal_status"
            }
            E::WalLevel(_) => {
                "set wal_level = logical in postgresql.conf and restart PostgreSQL; \
                 `entity-cdc check` verifies it"
            }
            E::Authentication(_) | E::PasswordMissing => {
                "check the user and password in connector.yaml and that pg_hba.conf allows a \
                 replication connection for this user; `entity-cdc check` tests the connection"
            }
            E::UnsupportedAuthentication(_) => {
                "use scram-sha-256, md5, password or trust for this user in pg_hba.conf"
            }
            E::TlsRefused => "enable ssl on the server, or lower sslmode to prefer or disable",
            E::TlsHandshake { .. } if self.disposition() == Disposition::Halt => {
                "check sslrootcert and that the server certificate names the configured host \
                 (sslmode verify-full) or lower sslmode"
            }
            E::Server(error) if error.code == "42501" => {
                "the role needs the REPLICATION attribute: `ALTER ROLE ... REPLICATION`, or run \
                 `entity-cdc setup --apply`"
            }
            E::Server(error) if error.code == "42704" => {
                "an object the connector needs is missing (publication?): run \
                 `entity-cdc setup --apply`, then `entity-cdc check`"
            }
            E::Server(error) if error.code == "3D000" => {
                "the database does not exist: check source.database in connector.yaml"
            }
            _ => return None,
        })
    }

    /// The SQLSTATE, when the server reported the failure.
    pub fn code(&self) -> Option<&str> {
        self.server_error().map(|e| e.code.as_str())
    }

    /// The server's error, when the server reported the failure.
    pub fn server_error(&self) -> Option<&ServerError> {
        use ReplicationError as E;
        match self {
            E::Authentication(e) | E::WalLevel(e) | E::Server(e) => Some(e),
            E::SlotMissing { server, .. }
            | E::SlotActive { server, .. }
            | E::SlotInvalidated { server, .. } => Some(server),
            _ => None,
        }
    }

    /// Classifies an error received during startup and authentication.
    pub(crate) fn from_startup(error: ServerError) -> ReplicationError {
        if error.class() == "28" {
            ReplicationError::Authentication(Box::new(error))
        } else {
            ReplicationError::Server(Box::new(error))
        }
    }

    /// Classifies an error received in answer to START_REPLICATION or while streaming.
    pub(crate) fn from_replication(error: ServerError, slot: &str) -> ReplicationError {
        let slot = slot.to_owned();
        let message = error.message.as_str();
        match error.code.as_str() {
            "42704" if message.contains("replication slot") => ReplicationError::SlotMissing {
                slot,
                server: Box::new(error),
            },
            "55006" => ReplicationError::SlotActive {
                slot,
                server: Box::new(error),
            },
            "55000" if message.contains("wal_level") => ReplicationError::WalLevel(Box::new(error)),
            // PG 15 says "cannot read from logical replication slot" with the detail "This
            // slot has been invalidated because it exceeded the maximum reserved size." at
            // START_REPLICATION, and "can no longer get changes from replication slot" when
            // decoding from it; either way WAL the slot needed is gone.
            "55000"
                if message.contains("can no longer get changes")
                    || message.contains("cannot read from logical replication slot")
                    || message.contains("invalidated")
                    || error
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.contains("invalidated")) =>
            {
                ReplicationError::SlotInvalidated {
                    slot,
                    server: Box::new(error),
                }
            }
            _ => ReplicationError::from_startup(error),
        }
    }
}

/// Server errors that a new connection may not hit again: connection failures (08), a
/// serialization failure (40), resource shortage such as too many connections (53), operator
/// intervention such as a shutdown or a server still starting (57), system errors such as
/// I/O (58). Everything else (syntax, privileges, undefined objects, internal errors) would
/// fail the same way again, so it halts.
fn server_disposition(error: &ServerError) -> Disposition {
    match error.class() {
        "08" | "40" | "53" | "57" | "58" => Disposition::Retry,
        _ => Disposition::Halt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, message: &str) -> ServerError {
        ServerError {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    #[test]
    fn slot_errors_halt_with_a_hint() {
        let cases = [
            server("42704", "replication slot \"s\" does not exist"),
            server("55006", "replication slot \"s\" is active for PID 42"),
            server(
                "55000",
                "can no longer get changes from replication slot \"s\"",
            ),
            ServerError {
                detail: Some(
                    "This slot has been invalidated because it exceeded the maximum reserved size."
                        .into(),
                ),
                ..server("55000", "cannot read from logical replication slot \"s\"")
            },
            server("55000", "logical decoding requires wal_level >= logical"),
        ];
        for case in cases {
            let error = ReplicationError::from_replication(case, "s");
            assert_eq!(error.disposition(), Disposition::Halt, "{error}");
            assert!(error.hint().is_some(), "{error} has no hint");
            assert!(!matches!(error, ReplicationError::Server(_)), "{error:?}");
        }
    }

    #[test]
    fn shutdown_and_connection_errors_retry() {
        for code in ["57P01", "57P03", "53300", "08006"] {
            let error = ReplicationError::from_replication(server(code, "x"), "s");
            assert_eq!(error.disposition(), Disposition::Retry, "{code}");
        }
        assert_eq!(ReplicationError::Eof.disposition(), Disposition::Retry);
    }

    #[test]
    fn authentication_errors_are_typed() {
        let error =
            ReplicationError::from_startup(server("28P01", "password authentication failed"));
        assert!(matches!(error, ReplicationError::Authentication(_)));
        assert_eq!(error.code(), Some("28P01"));
        assert_eq!(error.disposition(), Disposition::Halt);
    }
}
