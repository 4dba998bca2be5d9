//! The replication connection against a real PostgreSQL 15: authentication methods, TLS by
//! sslmode, IDENTIFY_SYSTEM, the CopyBoth stream, confirmation rules (CASE-25), keepalive
//! replies, reconnection after a server restart, and the errors that must halt.
//!
//! Every test starts its own server, so tests are independent and may run in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use entity_cdc::error::Disposition;
use entity_cdc::source::replication::{
    Backoff, ProtoVersion, ReplicationConnection, ReplicationError, ReplicationEvent,
    ReplicationStream, ResilientStream, StreamOptions,
};
use entity_cdc::source::{ConnectParams, Lsn, SslMode};
use entity_cdc_integration::{PgServer, PgServerOptions};
use secrecy::SecretString;
use tokio::time::{timeout, Instant};

/// Generous bound on any single wait: a passing test needs far less, a failing one panics
/// with context instead of hanging.
const WAIT: Duration = Duration::from_secs(8);

fn params(server: &PgServer, user: &str, password: Option<&str>) -> ConnectParams {
    ConnectParams {
        host: "127.0.0.1".to_owned(),
        port: server.port,
        database: "postgres".to_owned(),
        user: user.to_owned(),
        password: password.map(|p| SecretString::from(p.to_owned())),
        sslmode: SslMode::Disable,
        sslrootcert: None,
        application_name: "entity-cdc-test".to_owned(),
    }
}

fn start(options: PgServerOptions) -> PgServer {
    PgServer::start_with(options).expect("starting PostgreSQL")
}

fn sql(server: &PgServer, sql: &str) -> String {
    server.psql(sql).unwrap_or_else(|e| panic!("{sql}: {e:#}"))
}

/// A published table `t`, an unpublished table `noisy`, publication `p` and slot `slot`.
fn create_slot(server: &PgServer, slot: &str) {
    sql(
        server,
        "create table if not exists t (id int primary key, v text); \
         create table if not exists noisy (id bigserial primary key, v text); \
         create publication p for table t",
    );
    sql(
        server,
        &format!("select pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    );
}

fn confirmed_flush_lsn(server: &PgServer, slot: &str) -> Lsn {
    sql(
        server,
        &format!("select confirmed_flush_lsn from pg_replication_slots where slot_name = '{slot}'"),
    )
    .parse()
    .expect("confirmed_flush_lsn")
}

fn current_wal_lsn(server: &PgServer) -> Lsn {
    sql(server, "select pg_current_wal_lsn()")
        .parse()
        .expect("pg_current_wal_lsn")
}

fn stream_options(slot: &str) -> StreamOptions {
    let mut options = StreamOptions::new(slot, vec!["p".to_owned()]);
    // Short, so tests see status updates without waiting the production 10 s.
    options.status_interval = Duration::from_millis(200);
    options
}

async fn start_stream(server: &PgServer, slot: &str) -> ReplicationStream {
    let connection = ReplicationConnection::connect(&params(server, "postgres", None))
        .await
        .expect("connect");
    connection
        .start_replication(stream_options(slot))
        .await
        .expect("START_REPLICATION")
}

/// Reads XLogData until a Commit, returning the pgoutput messages and the commit's end LSN.
async fn next_transaction(stream: &mut ReplicationStream) -> (Vec<Bytes>, Lsn) {
    let mut messages = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let event = timeout(deadline - Instant::now(), stream.next_event())
            .await
            .unwrap_or_else(|_| panic!("no commit within {WAIT:?}; got {messages:?}"))
            .expect("next_event");
        if let ReplicationEvent::XLogData { data, .. } = event {
            let is_commit = data.first() == Some(&b'C');
            messages.push(data);
            if is_commit {
                let commit = messages.last().expect("commit");
                return (messages.clone(), commit_end_lsn(commit));
            }
        }
    }
}

/// The end LSN of a pgoutput Commit: tag, flags, commit LSN, end LSN, timestamp.
fn commit_end_lsn(commit: &[u8]) -> Lsn {
    let bytes: [u8; 8] = commit[10..18].try_into().expect("commit end lsn");
    Lsn(u64::from_be_bytes(bytes))
}

/// Polls `check` until it holds, panicking with `what` after `WAIT`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_connection_identifies_the_system_with_pinned_settings() {
    let server = start(PgServerOptions::default());
    let mut connection = ReplicationConnection::connect(&params(&server, "postgres", None))
        .await
        .expect("connect with trust");
    assert!(!connection.is_tls());
    assert!(connection.backend_pid() > 0);
    // This server has ssl off: prefer falls back to plain, require refuses.
    let mut prefer = params(&server, "postgres", None);
    prefer.sslmode = SslMode::Prefer;
    let plain = ReplicationConnection::connect(&prefer)
        .await
        .expect("prefer");
    assert!(!plain.is_tls());
    plain.close().await;
    let mut require = params(&server, "postgres", None);
    require.sslmode = SslMode::Require;
    let error = ReplicationConnection::connect(&require)
        .await
        .expect_err("require without server tls");
    assert!(matches!(error, ReplicationError::TlsRefused), "{error:?}");
    assert_eq!(error.disposition(), Disposition::Halt);
    assert!(connection
        .server_parameter("server_version")
        .is_some_and(|v| v.starts_with("15")));

    let info = connection.identify_system().await.expect("IDENTIFY_SYSTEM");
    let system_id: u64 = sql(&server, "select system_identifier from pg_control_system()")
        .parse()
        .expect("system id");
    assert_eq!(info.system_id, system_id);
    assert_eq!(info.timeline, 1);
    assert_eq!(info.dbname.as_deref(), Some("postgres"));
    assert!(info.xlogpos > Lsn::ZERO && info.xlogpos <= current_wal_lsn(&server));

    for (setting, expected) in [
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
        ("client_encoding", "UTF8"),
        ("lc_monetary", "C"),
    ] {
        let result = connection
            .simple_query(&format!("SHOW {setting}"))
            .await
            .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"));
        assert_eq!(
            result.rows,
            vec![vec![Some(expected.to_owned())]],
            "{setting}"
        );
    }
    let error = connection
        .simple_query("select * from no_such_table")
        .await
        .expect_err("undefined table");
    assert_eq!(error.code(), Some("42P01"));
    // The connection is still usable after an error.
    connection.simple_query("select 1").await.expect("select 1");
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_md5_and_scram_authenticate_and_a_wrong_password_is_typed() {
    let mut hba_lines = Vec::new();
    for (user, method) in [
        ("pw_user", "password"),
        ("md5_user", "md5"),
        ("scram_user", "scram-sha-256"),
    ] {
        hba_lines.push(format!("host all {user} 127.0.0.1/32 {method}"));
        hba_lines.push(format!("host replication {user} 127.0.0.1/32 {method}"));
    }
    let server = start(PgServerOptions {
        hba_lines,
        init_sql: vec![
            "set password_encryption = 'scram-sha-256'; \
             create role pw_user login replication password 'pw-secret'; \
             create role scram_user login replication password 'scram-secret'"
                .to_owned(),
            "set password_encryption = 'md5'; \
             create role md5_user login replication password 'md5-secret'"
                .to_owned(),
        ],
        ..PgServerOptions::default()
    });
    assert!(sql(
        &server,
        "select rolpassword from pg_authid where rolname = 'md5_user'"
    )
    .starts_with("md5"));

    for (user, password) in [
        ("pw_user", "pw-secret"),
        ("md5_user", "md5-secret"),
        ("scram_user", "scram-secret"),
    ] {
        let mut connection = ReplicationConnection::connect(&params(&server, user, Some(password)))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e} ({e:?})"));
        let info = connection.identify_system().await.expect("IDENTIFY_SYSTEM");
        assert_eq!(info.dbname.as_deref(), Some("postgres"));
        connection.close().await;

        let error = ReplicationConnection::connect(&params(&server, user, Some("wrong")))
            .await
            .expect_err("wrong password");
        assert!(
            matches!(&error, ReplicationError::Authentication(e) if e.code == "28P01"),
            "{user}: {error:?}"
        );
        assert_eq!(error.disposition(), Disposition::Halt);
        assert!(error.hint().is_some());

        let error = ReplicationConnection::connect(&params(&server, user, None))
            .await
            .expect_err("no password");
        assert!(
            matches!(error, ReplicationError::PasswordMissing),
            "{user}: {error:?}"
        );
    }
}

/// Test certificates, made with the openssl command line.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// A CA, a server certificate for DNS name `localhost` only, and one whose SAN holds
    /// IP 127.0.0.1; plus an unrelated CA.
    fn generate(dir: &Path) -> Certs {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("running openssl (apt-get install -y openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other_ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN={ca}"),
            );
            let mut args = vec![
                "req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt,
            ];
            args.extend(ec);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(&args);
        }
        for (name, san) in [
            ("localhost", "DNS:localhost"),
            ("ip", "DNS:localhost,IP:127.0.0.1"),
        ] {
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            std::fs::write(
                dir.join(&ext),
                format!(
                    "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                     keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
                ),
            )
            .expect("writing extensions");
            let mut args = vec![
                "req",
                "-new",
                "-subj",
                "/CN=localhost",
                "-keyout",
                &key,
                "-out",
                &csr,
            ];
            args.extend(ec);
            openssl(&args);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ]);
            // PostgreSQL refuses a key readable by others; it runs as postgres when we are root.
            let key_path = dir.join(&key);
            let _ = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&key_path)
                .status();
            let _ = Command::new("chmod").arg("0600").arg(&key_path).status();
        }
        Certs {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// Points the server at certificate `name` and reloads its configuration.
fn use_certificate(server: &PgServer, certs: &Certs, name: &str) {
    // ALTER SYSTEM may not share a transaction (one psql -c) with other statements.
    for (setting, value) in [
        ("ssl", "on".to_owned()),
        (
            "ssl_cert_file",
            certs.path(&format!("{name}.crt")).display().to_string(),
        ),
        (
            "ssl_key_file",
            certs.path(&format!("{name}.key")).display().to_string(),
        ),
    ] {
        sql(server, &format!("alter system set {setting} = '{value}'"));
    }
    sql(server, "select pg_reload_conf()");
}

fn tls_params(
    server: &PgServer,
    user: &str,
    mode: SslMode,
    root: Option<PathBuf>,
) -> ConnectParams {
    ConnectParams {
        sslmode: mode,
        sslrootcert: root,
        ..params(server, user, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_follows_sslmode() {
    let server = start(PgServerOptions {
        hba_lines: vec![
            "hostssl all tls_user 127.0.0.1/32 trust".to_owned(),
            "hostnossl all tls_user 127.0.0.1/32 reject".to_owned(),
            "hostssl all scram_tls 127.0.0.1/32 scram-sha-256".to_owned(),
        ],
        init_sql: vec!["create role tls_user login replication; \
             set password_encryption = 'scram-sha-256'; \
             create role scram_tls login replication password 'tls-secret'"
            .to_owned()],
        ..PgServerOptions::default()
    });
    let certs_dir = server
        .data_dir
        .parent()
        .expect("server temp dir")
        .join("certs");
    std::fs::create_dir_all(&certs_dir).expect("certs dir");
    let _ = Command::new("chown")
        .arg("postgres:postgres")
        .arg(&certs_dir)
        .status();
    let certs = Certs::generate(&certs_dir);
    let ca = Some(certs.path("ca.crt"));

    use_certificate(&server, &certs, "localhost");
    let require = tls_params(&server, "tls_user", SslMode::Require, None);
    connect_eventually(&server, &require).await;

    // require: encrypted, certificate not checked.
    let connection = ReplicationConnection::connect(&require)
        .await
        .expect("require");
    assert!(connection.is_tls());
    connection.close().await;
    // prefer: encrypted when offered.
    let prefer = tls_params(&server, "tls_user", SslMode::Prefer, None);
    let connection = ReplicationConnection::connect(&prefer)
        .await
        .expect("prefer");
    assert!(connection.is_tls());
    connection.close().await;
    // verify-ca: the chain is checked, the name (127.0.0.1 vs localhost) is not.
    let verify_ca = tls_params(&server, "tls_user", SslMode::VerifyCa, ca.clone());
    let connection = ReplicationConnection::connect(&verify_ca)
        .await
        .expect("verify-ca");
    assert!(connection.is_tls());
    connection.close().await;
    // verify-ca with a CA that did not sign the certificate fails.
    let other_ca = tls_params(
        &server,
        "tls_user",
        SslMode::VerifyCa,
        Some(certs.path("other_ca.crt")),
    );
    let error = ReplicationConnection::connect(&other_ca)
        .await
        .expect_err("unknown issuer");
    assert!(
        matches!(error, ReplicationError::TlsHandshake { .. }),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::Halt);
    // verify-full: 127.0.0.1 is not in a certificate made for localhost.
    let verify_full = tls_params(&server, "tls_user", SslMode::VerifyFull, ca.clone());
    let error = ReplicationConnection::connect(&verify_full)
        .await
        .expect_err("name mismatch");
    assert!(
        matches!(error, ReplicationError::TlsHandshake { .. }),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::Halt);
    // disable against a hostssl-only entry: rejected by pg_hba.
    let disable = tls_params(&server, "tls_user", SslMode::Disable, None);
    let error = ReplicationConnection::connect(&disable)
        .await
        .expect_err("hostssl only");
    assert!(
        matches!(&error, ReplicationError::Authentication(e) if e.code == "28000"),
        "{error:?}"
    );
    // SCRAM over TLS: the server offers SCRAM-SHA-256-PLUS and the exchange is bound to
    // the certificate (tls-server-end-point, ECDSA-SHA256 here).
    let mut scram = tls_params(&server, "scram_tls", SslMode::Require, None);
    scram.password = Some(SecretString::from("tls-secret".to_owned()));
    let connection = ReplicationConnection::connect(&scram)
        .await
        .expect("scram over tls");
    assert!(connection.is_tls());
    assert!(connection.is_channel_bound());
    connection.close().await;
    scram.password = Some(SecretString::from("wrong".to_owned()));
    let error = ReplicationConnection::connect(&scram)
        .await
        .expect_err("wrong password");
    assert!(
        matches!(&error, ReplicationError::Authentication(e) if e.code == "28P01"),
        "{error:?}"
    );

    // verify-full succeeds once the certificate names IP 127.0.0.1.
    use_certificate(&server, &certs, "ip");
    connect_eventually(&server, &verify_full).await;
}

/// Connects over TLS, retrying while the server is still reloading its configuration
/// (pg_reload_conf only signals the postmaster).
async fn connect_eventually(server: &PgServer, params: &ConnectParams) {
    let deadline = Instant::now() + WAIT;
    loop {
        match ReplicationConnection::connect(params).await {
            Ok(connection) => {
                assert!(connection.is_tls());
                connection.close().await;
                return;
            }
            Err(error) => assert!(
                Instant::now() < deadline,
                "{:?}: {error:?}\n{}",
                params.sslmode,
                server.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_streams_begin_to_commit_and_confirm_sets_confirmed_flush_lsn_exactly() {
    let server = start(PgServerOptions::default());
    create_slot(&server, "s");
    let mut stream = start_stream(&server, "s").await;
    let before = confirmed_flush_lsn(&server, "s");

    sql(&server, "insert into t values (1, 'one')");
    let (messages, end_lsn) = next_transaction(&mut stream).await;
    let tags: Vec<u8> = messages.iter().map(|m| m[0]).collect();
    assert_eq!(tags, b"BRIC", "pgoutput messages {messages:?}");
    assert!(end_lsn > before);

    stream.confirm(end_lsn);
    // Confirming less afterwards is ignored: the position never goes backwards.
    stream.confirm(before);
    stream.send_status().await.expect("status update");
    eventually("confirmed_flush_lsn to reach the commit's end", || {
        confirmed_flush_lsn(&server, "s") == end_lsn
    })
    .await;
    // The periodic updates keep reporting exactly that LSN, not the server's WAL end.
    sql(
        &server,
        "insert into noisy (v) select 'x' from generate_series(1, 1000)",
    );
    let quiet_until = Instant::now() + Duration::from_millis(800);
    while let Ok(event) = timeout(quiet_until - Instant::now(), stream.next_event()).await {
        event.expect("next_event");
    }
    assert_eq!(confirmed_flush_lsn(&server, "s"), end_lsn);
    stream.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_v2_with_streaming_and_logical_messages_is_accepted() {
    let server = start(PgServerOptions::default());
    create_slot(&server, "s");
    let connection = ReplicationConnection::connect(&params(&server, "postgres", None))
        .await
        .expect("connect");
    let mut options = stream_options("s");
    options.proto_version = ProtoVersion::V2;
    options.streaming = true;
    options.messages = true;
    let mut stream = connection.start_replication(options).await.expect("v2");
    sql(
        &server,
        "begin; insert into t values (1, 'v2'); \
         select pg_logical_emit_message(true, 'entity-cdc', 'hello'); commit",
    );
    let (messages, _) = next_transaction(&mut stream).await;
    let tags: Vec<u8> = messages.iter().map(|m| m[0]).collect();
    assert_eq!(tags, b"BRIMC", "pgoutput messages {messages:?}");
    stream.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_25_idle_slot_follows_the_server_wal_end() {
    let server = start(PgServerOptions::default());
    create_slot(&server, "s");
    let mut stream = start_stream(&server, "s").await;

    // The last published change, handled and confirmed.
    sql(&server, "insert into t values (1, 'last published change')");
    let (_, end_lsn) = next_transaction(&mut stream).await;
    stream.confirm(end_lsn);
    stream.set_idle(true);

    // WAL the slot never receives as rows.
    sql(
        &server,
        "insert into noisy (v) select repeat(md5(g::text), 8) from generate_series(1, 20000) g",
    );
    let written = current_wal_lsn(&server);
    assert!(
        written.0 - end_lsn.0 > 4 * 1024 * 1024,
        "wrote {written} from {end_lsn}"
    );

    let deadline = Instant::now() + WAIT;
    loop {
        let confirmed = confirmed_flush_lsn(&server, "s");
        if confirmed >= written {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn {confirmed} did not follow the WAL end {written}"
        );
        if let Ok(event) = timeout(Duration::from_millis(200), stream.next_event()).await {
            // A consumer with nothing in flight stays idle after each event.
            event.expect("next_event");
            stream.set_idle(true);
        }
    }
    stream.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_consumer_does_not_confirm_keepalive_wal_end() {
    let server = start(PgServerOptions::default());
    create_slot(&server, "s");
    let mut stream = start_stream(&server, "s").await;
    let initial = confirmed_flush_lsn(&server, "s");
    // Not idle: keepalives must not move the slot.
    sql(
        &server,
        "insert into noisy (v) select 'x' from generate_series(1, 5000)",
    );
    let mut keepalive_count = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while let Ok(event) = timeout(until - Instant::now(), stream.next_event()).await {
        if let ReplicationEvent::Keepalive { .. } = event.expect("next_event") {
            keepalive_count += 1;
        }
    }
    assert!(keepalive_count > 0, "the server sent no keepalive");
    assert_eq!(confirmed_flush_lsn(&server, "s"), initial);
    stream.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_requesting_a_reply_is_answered() {
    let server = start(PgServerOptions {
        settings: vec![("wal_sender_timeout".to_owned(), "2s".to_owned())],
        ..PgServerOptions::default()
    });
    create_slot(&server, "s");
    let connection = ReplicationConnection::connect(&params(&server, "postgres", None))
        .await
        .expect("connect");
    let mut options = stream_options("s");
    // No periodic updates within the test: only the answers to keepalives keep it alive.
    options.status_interval = Duration::from_secs(60);
    let mut stream = connection.start_replication(options).await.expect("start");

    // Three times wal_sender_timeout without traffic.
    let mut reply_requested_count = 0;
    let until = Instant::now() + Duration::from_secs(6);
    while let Ok(event) = timeout(until - Instant::now(), stream.next_event()).await {
        match event.expect("connection must survive") {
            ReplicationEvent::Keepalive {
                reply_requested: true,
                ..
            } => reply_requested_count += 1,
            ReplicationEvent::Keepalive { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        reply_requested_count >= 2,
        "{reply_requested_count} reply requests"
    );
    sql(&server, "insert into t values (1, 'still alive')");
    let (messages, _) = next_transaction(&mut stream).await;
    assert_eq!(messages.first().map(|m| m[0]), Some(b'B'));
    stream.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilient_stream_reconnects_after_a_server_restart() {
    let mut server = start(PgServerOptions::default());
    create_slot(&server, "s");
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let mut stream = ResilientStream::new(
        params(&server, "postgres", None),
        stream_options("s"),
        backoff,
    );

    sql(&server, "insert into t values (1, 'before restart')");
    let end_lsn = loop {
        let event = timeout(WAIT, stream.next_event())
            .await
            .expect("event before restart")
            .expect("next_event");
        if let ReplicationEvent::XLogData { data, .. } = event {
            if data[0] == b'C' {
                break commit_end_lsn(&data);
            }
        }
    };
    stream.confirm(end_lsn);
    stream.send_status().await.expect("status");
    eventually("the confirmation", || {
        confirmed_flush_lsn(&server, "s") == end_lsn
    })
    .await;

    tokio::task::block_in_place(|| server.restart()).expect("restart");
    sql(&server, "insert into t values (2, 'after restart')");

    let mut reconnected = false;
    let deadline = Instant::now() + WAIT;
    loop {
        let event = timeout(deadline - Instant::now(), stream.next_event())
            .await
            .unwrap_or_else(|_| panic!("no data after restart; log:\n{}", server.log()))
            .expect("the stream must heal");
        match event {
            ReplicationEvent::Reconnected => reconnected = true,
            ReplicationEvent::XLogData { data, .. } => {
                assert!(reconnected, "data before Reconnected");
                // The change confirmed before the restart may come again: PostgreSQL before
                // 17 does not write a slot to disk at shutdown when only confirmed_flush
                // moved. Duplicates are allowed (CASE-24), consumers dedupe by event id.
                let text = String::from_utf8_lossy(&data);
                if data[0] == b'I' && text.contains("after restart") {
                    break;
                }
            }
            ReplicationEvent::Keepalive { .. } => {}
        }
    }
    stream.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_slot_and_active_slot_halt_with_hints() {
    let server = start(PgServerOptions::default());
    create_slot(&server, "s");

    // A missing slot is returned at once by the resilient stream, not retried.
    let mut resilient = ResilientStream::new(
        params(&server, "postgres", None),
        stream_options("no_such_slot"),
        Backoff::default(),
    );
    let error = timeout(WAIT, resilient.next_event())
        .await
        .expect("no retry loop")
        .expect_err("missing slot");
    assert!(
        matches!(error, ReplicationError::SlotMissing { .. }),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::Halt);
    assert_eq!(error.code(), Some("42704"));
    assert!(error
        .hint()
        .is_some_and(|h| h.contains("entity-cdc setup --apply")));

    // A slot already streamed by another connection.
    let _first = start_stream(&server, "s").await;
    let connection = ReplicationConnection::connect(&params(&server, "postgres", None))
        .await
        .expect("connect");
    let error = connection
        .start_replication(stream_options("s"))
        .await
        .expect_err("active slot");
    assert!(
        matches!(error, ReplicationError::SlotActive { .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), Some("55006"));
    assert_eq!(error.disposition(), Disposition::Halt);
    assert!(error.hint().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_26_invalidated_slot_halts_with_a_hint() {
    let server = start(PgServerOptions {
        settings: vec![("max_slot_wal_keep_size".to_owned(), "1MB".to_owned())],
        ..PgServerOptions::default()
    });
    create_slot(&server, "s");
    sql(
        &server,
        "insert into t values (1, 'written while the connector was down')",
    );
    // Each switch after a write starts a new 16 MB segment: the slot falls far behind its
    // 1 MB allowance without writing that much WAL, and the checkpoint invalidates it.
    for n in 2..6 {
        sql(&server, &format!("insert into noisy (v) values ('{n}')"));
        sql(&server, "select pg_switch_wal()");
    }
    sql(&server, "checkpoint");
    assert_eq!(
        sql(
            &server,
            "select wal_status from pg_replication_slots where slot_name = 's'"
        ),
        "lost"
    );

    let mut resilient = ResilientStream::new(
        params(&server, "postgres", None),
        stream_options("s"),
        Backoff::default(),
    );
    let error = timeout(WAIT, resilient.next_event())
        .await
        .expect("no retry loop")
        .expect_err("invalidated slot");
    assert!(
        matches!(error, ReplicationError::SlotInvalidated { .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), Some("55000"));
    assert_eq!(error.disposition(), Disposition::Halt);
    assert!(error.hint().is_some_and(|h| h.contains("setup --apply")));
}
