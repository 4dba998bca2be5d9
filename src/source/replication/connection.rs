//! Opening a replication connection: TCP, TLS by sslmode, the startup message with pinned
//! session settings, authentication, and the simple-query commands of the replication
//! protocol (IDENTIFY_SYSTEM, SHOW, CREATE_REPLICATION_SLOT, ...).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use secrecy::ExposeSecret;
use tokio::net::TcpStream;

use super::frame::{Framed, Transport};
use super::stream::{ReplicationStream, StreamOptions};
use super::{ReplicationError, ServerError};
use crate::source::{tls, ConnectParams, Lsn, SslMode};

/// How long TCP connect, TLS handshake and authentication may take together. Ten seconds
/// is libpq's common `connect_timeout` choice: long enough for a loaded server doing SCRAM
/// (4096 PBKDF2 rounds) over a slow link, short enough that a dead address is retried soon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Frame limit while starting up and for query results. The server's own messages here are
/// small; a megabyte leaves room for long error details and wide SHOW results.
const STARTUP_MAX_FRAME_LEN: usize = 1024 * 1024;

/// Session settings sent in the startup packet, so that every text value the server renders
/// (timestamps, intervals, floats, bytea, money) has one format whatever the server's or the
/// role's configuration says. PostgreSQL accepts any user-settable GUC as a startup
/// parameter, also on a `replication=database` connection.
pub const PINNED_SETTINGS: [(&str, &str); 7] = [
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("lc_monetary", "C"),
];

/// The answer to IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique system identifier.
    pub system_id: u64,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database connected to (`None` on a physical replication connection).
    pub dbname: Option<String>,
}

/// The rows of a simple query, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Column names of the last result set.
    pub columns: Vec<String>,
    /// Rows of the last result set; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The value of column `name` in row `row`, if both exist and it is not NULL.
    pub fn get(&self, row: usize, name: &str) -> Option<&str> {
        let column = self.columns.iter().position(|c| c == name)?;
        self.rows.get(row)?.get(column)?.as_deref()
    }
}

/// An authenticated `replication=database` connection, ready for commands.
#[derive(Debug)]
pub struct ReplicationConnection {
    /// The framed socket.
    pub(super) framed: Framed,
    /// ParameterStatus values reported by the server (server_version, TimeZone, ...).
    parameters: HashMap<String, String>,
    /// The backend's process id, from BackendKeyData.
    backend_pid: i32,
    /// Whether the connection is encrypted.
    tls: bool,
    /// `tls-server-end-point` data of the server certificate, for SCRAM-SHA-256-PLUS.
    server_end_point: Option<Vec<u8>>,
    /// SCRAM authentication was bound to the TLS channel.
    channel_bound: bool,
}

impl ReplicationConnection {
    /// Connects, negotiates TLS per `params.sslmode`, starts up and authenticates.
    pub async fn connect(
        params: &ConnectParams,
    ) -> Result<ReplicationConnection, ReplicationError> {
        let addr = format!("{}:{}", params.host, params.port);
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(params, &addr)).await {
            Ok(result) => result,
            Err(_) => Err(ReplicationError::ConnectTimeout { addr }),
        }
    }

    async fn connect_inner(
        params: &ConnectParams,
        addr: &str,
    ) -> Result<ReplicationConnection, ReplicationError> {
        let tcp = TcpStream::connect((params.host.as_str(), params.port))
            .await
            .map_err(|source| ReplicationError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        // Status updates are tiny and latency-sensitive; Nagle would hold them back.
        let _ = tcp.set_nodelay(true);
        let negotiated = negotiate_tls(tcp, params).await?;
        let tls = negotiated.tls;
        let mut connection = ReplicationConnection {
            framed: Framed::new(negotiated.io, STARTUP_MAX_FRAME_LEN),
            parameters: HashMap::new(),
            backend_pid: 0,
            tls,
            server_end_point: negotiated.server_end_point,
            channel_bound: false,
        };
        connection.startup(params).await?;
        tracing::debug!(
            addr,
            tls,
            pid = connection.backend_pid,
            "replication connection established"
        );
        Ok(connection)
    }

    /// A parameter reported by the server at startup, e.g. `server_version`.
    pub fn server_parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The walsender's process id, as in `pg_stat_replication.pid`.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Whether the connection is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether SCRAM authentication was bound to the TLS channel (SCRAM-SHA-256-PLUS), which
    /// proves that no one between client and server terminated the TLS connection.
    pub fn is_channel_bound(&self) -> bool {
        self.channel_bound
    }

    /// Sends the startup message and authenticates, then waits for ReadyForQuery.
    async fn startup(&mut self, params: &ConnectParams) -> Result<(), ReplicationError> {
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("replication", "database"),
            ("application_name", params.application_name.as_str()),
        ];
        startup.extend(PINNED_SETTINGS);
        frontend::startup_message(startup, self.framed.write_buf()).map_err(invalid_input)?;
        self.framed.flush().await?;
        self.authenticate(params).await?;
        loop {
            match self.read_message().await? {
                Message::ParameterStatus(body) => {
                    let name = body.name().map_err(protocol)?.to_owned();
                    let value = body.value().map_err(protocol)?.to_owned();
                    self.parameters.insert(name, value);
                }
                Message::BackendKeyData(body) => self.backend_pid = body.process_id(),
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(ReplicationError::from_startup(ServerError::from_fields(
                        body.fields(),
                    )?))
                }
                Message::NoticeResponse(body) => {
                    log_notice(ServerError::from_fields(body.fields())?)
                }
                _ => return Err(unexpected("startup")),
            }
        }
    }

    /// Runs the authentication exchange until AuthenticationOk.
    async fn authenticate(&mut self, params: &ConnectParams) -> Result<(), ReplicationError> {
        let password = || {
            params
                .password
                .as_ref()
                .map(|p| p.expose_secret().as_bytes().to_vec())
                .ok_or(ReplicationError::PasswordMissing)
        };
        loop {
            match self.read_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password()?, self.framed.write_buf())
                        .map_err(invalid_input)?;
                    self.framed.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        params.user.as_bytes(),
                        &password()?,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), self.framed.write_buf())
                        .map_err(invalid_input)?;
                    self.framed.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mechanisms: Vec<String> = body
                        .mechanisms()
                        .map(|m| Ok(m.to_owned()))
                        .collect()
                        .map_err(protocol)?;
                    self.scram(&password()?, &mechanisms).await?;
                }
                Message::ErrorResponse(body) => {
                    return Err(ReplicationError::from_startup(ServerError::from_fields(
                        body.fields(),
                    )?))
                }
                Message::NoticeResponse(body) => {
                    log_notice(ServerError::from_fields(body.fields())?)
                }
                Message::AuthenticationKerberosV5 => return Err(unsupported("kerberos v5")),
                Message::AuthenticationScmCredential => return Err(unsupported("scm credential")),
                Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
                    return Err(unsupported("gss"))
                }
                Message::AuthenticationSspi => return Err(unsupported("sspi")),
                _ => return Err(unexpected("authentication")),
            }
        }
    }

    /// SCRAM-SHA-256, bound to the TLS channel (SCRAM-SHA-256-PLUS with
    /// `tls-server-end-point`) when the server offers it and the certificate's signature
    /// names a hash; otherwise unbound.
    async fn scram(
        &mut self,
        password: &[u8],
        mechanisms: &[String],
    ) -> Result<(), ReplicationError> {
        const SCRAM: &str = "SCRAM-SHA-256";
        const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";
        let offered = |name: &str| mechanisms.iter().any(|m| m == name);
        let (mechanism, binding) = match &self.server_end_point {
            Some(hash) if offered(SCRAM_PLUS) => (
                SCRAM_PLUS,
                ChannelBinding::tls_server_end_point(hash.clone()),
            ),
            _ if !offered(SCRAM) => {
                return Err(unsupported(&format!("sasl {}", mechanisms.join(", "))))
            }
            // 'y' (supported but not offered) tells a TLS server that did not offer -PLUS
            // that nothing downgraded it; without TLS, or when binding is impossible, 'n'.
            _ if self.tls && !offered(SCRAM_PLUS) => (SCRAM, ChannelBinding::unrequested()),
            _ => (SCRAM, ChannelBinding::unsupported()),
        };
        self.channel_bound = mechanism == SCRAM_PLUS;
        let mut scram = ScramSha256::new(password, binding);
        frontend::sasl_initial_response(mechanism, scram.message(), self.framed.write_buf())
            .map_err(invalid_input)?;
        self.framed.flush().await?;
        match self.read_message().await? {
            Message::AuthenticationSaslContinue(body) => {
                scram.update(body.data()).map_err(protocol)?;
            }
            Message::ErrorResponse(body) => {
                return Err(ReplicationError::from_startup(ServerError::from_fields(
                    body.fields(),
                )?))
            }
            _ => return Err(unexpected("scram continue")),
        }
        frontend::sasl_response(scram.message(), self.framed.write_buf()).map_err(invalid_input)?;
        self.framed.flush().await?;
        match self.read_message().await? {
            Message::AuthenticationSaslFinal(body) => {
                // Verifies the server signature: the server also knew the password.
                scram.finish(body.data()).map_err(protocol)
            }
            Message::ErrorResponse(body) => Err(ReplicationError::from_startup(
                ServerError::from_fields(body.fields())?,
            )),
            _ => Err(unexpected("scram final")),
        }
    }

    /// Runs one simple query (a replication command or plain SQL) and returns the rows of
    /// its last result set as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, ReplicationError> {
        frontend::query(sql, self.framed.write_buf()).map_err(invalid_input)?;
        self.framed.flush().await?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            match self.read_message().await? {
                Message::RowDescription(body) => {
                    result = QueryResult::default();
                    let mut fields = body.fields();
                    while let Some(field) = fields.next().map_err(protocol)? {
                        result.columns.push(field.name().to_owned());
                    }
                }
                Message::DataRow(body) => {
                    let mut row = Vec::with_capacity(result.columns.len());
                    let buffer = body.buffer();
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges.next().map_err(protocol)? {
                        let value = match range {
                            None => None,
                            Some(range) => {
                                let bytes = buffer
                                    .get(range)
                                    .ok_or_else(|| protocol("data row value out of bounds"))?;
                                Some(
                                    std::str::from_utf8(bytes)
                                        .map_err(|_| protocol("data row value is not utf-8"))?
                                        .to_owned(),
                                )
                            }
                        };
                        row.push(value);
                    }
                    result.rows.push(row);
                }
                Message::CommandComplete(_) | Message::EmptyQueryResponse => {}
                Message::NoticeResponse(body) => {
                    log_notice(ServerError::from_fields(body.fields())?)
                }
                Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => {
                    error = Some(ServerError::from_fields(body.fields())?)
                }
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(error) => Err(ReplicationError::Server(Box::new(error))),
                        None => Ok(result),
                    }
                }
                _ => return Err(unexpected("simple query")),
            }
        }
    }

    /// IDENTIFY_SYSTEM: the cluster id, timeline, current WAL position and database.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, ReplicationError> {
        let result = self.simple_query("IDENTIFY_SYSTEM").await?;
        let field = |name: &str| {
            result
                .get(0, name)
                .ok_or_else(|| protocol(format!("IDENTIFY_SYSTEM without {name}")))
        };
        Ok(SystemInfo {
            system_id: field("systemid")?
                .parse()
                .map_err(|_| protocol("IDENTIFY_SYSTEM systemid is not a number"))?,
            timeline: field("timeline")?
                .parse()
                .map_err(|_| protocol("IDENTIFY_SYSTEM timeline is not a number"))?,
            xlogpos: field("xlogpos")?.parse().map_err(protocol)?,
            dbname: result.get(0, "dbname").map(str::to_owned),
        })
    }

    /// Sends START_REPLICATION and enters the CopyBoth stream.
    pub async fn start_replication(
        self,
        options: StreamOptions,
    ) -> Result<ReplicationStream, ReplicationError> {
        ReplicationStream::start(self, options).await
    }

    /// Sends Terminate and closes the socket.
    pub async fn close(mut self) {
        frontend::terminate(self.framed.write_buf());
        let _ = self.framed.flush().await;
        self.framed.shutdown().await;
    }

    /// Reads one frame and parses it with postgres-protocol.
    pub(super) async fn read_message(&mut self) -> Result<Message, ReplicationError> {
        let mut frame = self.framed.read_frame().await?;
        parse_message(&mut frame)
    }
}

/// Parses one complete frame with postgres-protocol.
pub(super) fn parse_message(frame: &mut BytesMut) -> Result<Message, ReplicationError> {
    match Message::parse(frame) {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(protocol("incomplete message")),
        Err(e) => Err(protocol(e)),
    }
}

/// The transport after the TLS negotiation.
struct Negotiated {
    /// Plain TCP or TLS.
    io: Box<dyn Transport>,
    /// Whether `io` is encrypted.
    tls: bool,
    /// The server certificate's `tls-server-end-point` data, when it has any.
    server_end_point: Option<Vec<u8>>,
}

impl Negotiated {
    fn plain(io: Box<dyn Transport>) -> Negotiated {
        Negotiated {
            io,
            tls: false,
            server_end_point: None,
        }
    }
}

/// Sends SSLRequest when the sslmode asks for TLS, and upgrades the socket if the server
/// agrees.
async fn negotiate_tls(
    tcp: TcpStream,
    params: &ConnectParams,
) -> Result<Negotiated, ReplicationError> {
    let Some(config) = tls::client_config(params.sslmode, params.sslrootcert.as_deref())
        .map_err(ReplicationError::TlsConfig)?
    else {
        return Ok(Negotiated::plain(Box::new(tcp)));
    };
    let mut framed = Framed::new(Box::new(tcp), STARTUP_MAX_FRAME_LEN);
    frontend::ssl_request(framed.write_buf());
    framed.flush().await?;
    match framed.read_byte().await? {
        b'S' => {}
        b'N' if params.sslmode == SslMode::Prefer => {
            return Ok(Negotiated::plain(framed.into_inner()))
        }
        b'N' => return Err(ReplicationError::TlsRefused),
        other => {
            return Err(protocol(format!(
                "unexpected answer {:?} to SSLRequest",
                char::from(other)
            )))
        }
    }
    if framed.has_buffered() {
        return Err(protocol(
            "plaintext data received after SSLRequest was accepted",
        ));
    }
    let name = ServerName::try_from(params.host.clone())
        .map_err(|_| ReplicationError::InvalidServerName(params.host.clone()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
    let stream = connector
        .connect(name, framed.into_inner())
        .await
        .map_err(|source| ReplicationError::TlsHandshake {
            host: params.host.clone(),
            source,
        })?;
    let end_point = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|certificate| tls::server_end_point_hash(certificate));
    Ok(Negotiated {
        io: Box::new(stream),
        tls: true,
        server_end_point: end_point,
    })
}

/// Logs a NoticeResponse: it never changes what the connection does.
pub(super) fn log_notice(notice: ServerError) {
    tracing::info!(code = %notice.code, message = %notice.message, "server notice");
}

pub(super) fn protocol(e: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Protocol(e.to_string())
}

pub(super) fn unexpected(phase: &str) -> ReplicationError {
    ReplicationError::Protocol(format!("unexpected message during {phase}"))
}

fn unsupported(method: &str) -> ReplicationError {
    ReplicationError::UnsupportedAuthentication(method.to_owned())
}

/// frontend writers fail only on an interior NUL byte, which comes from configuration.
fn invalid_input(e: std::io::Error) -> ReplicationError {
    ReplicationError::InvalidOption(e.to_string())
}
