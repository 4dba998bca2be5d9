//! The slot monitor against a real PostgreSQL 15: the retained-WAL gauge equals what the
//! server computes, the active flag follows a streaming connection, and an invalidated slot
//! shows as `lost`.
//!
//! Each test resolves the monitor's gauges under its own Prometheus recorder
//! (`metrics::with_local_recorder` around `spawn_slot_monitor`), so its values are its own.
//! Logs go to one process-wide buffer; each test finds its lines by its slot's name.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use entity_cdc::source::replication::{ReplicationConnection, StreamOptions};
use entity_cdc::source::{ConnectParams, SslMode};
use entity_cdc::telemetry::slot::spawn_slot_monitor;
use entity_cdc_integration::{PgServer, PgServerOptions};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Polls in the tests: fast, so that waiting for a fresh reading takes a fraction of a second.
const POLL: Duration = Duration::from_millis(100);

/// Long enough for anything the tests wait for on a loaded machine; short enough to fail.
const WAIT: Duration = Duration::from_secs(20);

const RETAINED: &str = "entity_cdc_slot_retained_wal_bytes";
const ACTIVE: &str = "entity_cdc_slot_active";

/// Every log line of this test binary, as the fmt subscriber writes them (no colours).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
}

/// Appends to the shared log buffer.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines that mention `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    let bytes = logs().lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn params(server: &PgServer) -> ConnectParams {
    ConnectParams {
        host: "127.0.0.1".to_owned(),
        port: server.port,
        database: "postgres".to_owned(),
        user: "postgres".to_owned(),
        password: None,
        sslmode: SslMode::Disable,
        sslrootcert: None,
        application_name: "entity-cdc-slot-monitor-test".to_owned(),
    }
}

fn sql(server: &PgServer, sql: &str) -> String {
    server.psql(sql).unwrap_or_else(|e| panic!("{sql}: {e:#}"))
}

/// The retained WAL of slot `s` as the server computes it now.
fn retained_by_sql(server: &PgServer) -> f64 {
    let text = sql(
        server,
        "select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
         from pg_replication_slots where slot_name = 's'",
    );
    text.parse()
        .unwrap_or_else(|e| panic!("retained WAL {text:?}: {e}"))
}

/// The monitor of `slot`, with its own recorder.
fn monitor(
    server: &PgServer,
    slot: &str,
) -> (JoinHandle<()>, CancellationToken, PrometheusRecorder) {
    logs();
    let recorder = PrometheusBuilder::new().build_recorder();
    let cancel = CancellationToken::new();
    let task = metrics::with_local_recorder(&recorder, || {
        spawn_slot_monitor(params(server), slot.to_owned(), POLL, cancel.clone())
    });
    (task, cancel, recorder)
}

/// The value of the sample `line` (a metric name with its labels) in `handle`'s text.
fn sample(handle: &PrometheusHandle, line: &str) -> Option<f64> {
    handle.render().lines().find_map(|l| {
        l.strip_prefix(line)?
            .strip_prefix(' ')
            .and_then(|v| v.parse().ok())
    })
}

/// The `wal_status` gauges, in reserved, extended, unreserved, lost order.
fn statuses(handle: &PrometheusHandle) -> [Option<f64>; 4] {
    ["reserved", "extended", "unreserved", "lost"].map(|s| {
        sample(
            handle,
            &format!("entity_cdc_slot_wal_status{{status=\"{s}\"}}"),
        )
    })
}

/// Polls `check` every 50 ms until it holds, at most [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop(task: JoinHandle<()>, cancel: CancellationToken) {
    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the monitor stops when cancelled")
        .expect("the monitor task does not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_wal_equals_what_the_server_computes_and_active_follows_the_stream() {
    let server = PgServer::start().expect("starting PostgreSQL");
    sql(
        &server,
        "select pg_create_logical_replication_slot('s', 'pgoutput')",
    );
    sql(
        &server,
        "create table t (id int primary key, v text); create publication p for table t; \
         insert into t select g, repeat('x', 100) from generate_series(1, 2000) g",
    );
    let (task, cancel, recorder) = monitor(&server, "s");
    let metrics = recorder.handle();

    // Exact: the server's value is read before and after the gauge; when no WAL was written
    // in between (nothing else writes here, but the server may), every poll in between read
    // that same value. Polls run every 100 ms; 400 ms between the reads lets several happen.
    let mut compared = None;
    for _ in 0..20 {
        let before = retained_by_sql(&server);
        tokio::time::sleep(4 * POLL).await;
        let gauge = sample(&metrics, RETAINED);
        let after = retained_by_sql(&server);
        if before == after {
            compared = Some((gauge, before));
            break;
        }
    }
    let (gauge, expected) = compared.expect("the server's WAL position held still for 400 ms");
    // 2000 rows of 100 bytes were written after the slot was created.
    assert!(expected > 200_000.0, "{expected}");
    assert_eq!(gauge, Some(expected));
    assert_eq!(sample(&metrics, ACTIVE), Some(0.0));
    assert_eq!(
        statuses(&metrics),
        [Some(1.0), Some(0.0), Some(0.0), Some(0.0)]
    );

    // A connection streams from the slot: active.
    let connection = ReplicationConnection::connect(&params(&server))
        .await
        .expect("replication connection");
    let mut options = StreamOptions::new("s", vec!["p".to_owned()]);
    options.status_interval = Duration::from_millis(200);
    let stream = connection
        .start_replication(options)
        .await
        .expect("START_REPLICATION");
    eventually("the slot shown active", || {
        sample(&metrics, ACTIVE) == Some(1.0)
    })
    .await;
    drop(stream);
    eventually("the slot shown inactive", || {
        sample(&metrics, ACTIVE) == Some(0.0)
    })
    .await;
    stop(task, cancel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_shows_as_lost_retaining_nothing() {
    let server = PgServer::start_with(PgServerOptions {
        settings: vec![("max_slot_wal_keep_size".to_owned(), "1MB".to_owned())],
        ..PgServerOptions::default()
    })
    .expect("starting PostgreSQL");
    sql(
        &server,
        "select pg_create_logical_replication_slot('lost_slot', 'pgoutput')",
    );
    sql(&server, "create table noisy (v text)");
    let (task, cancel, recorder) = monitor(&server, "lost_slot");
    let metrics = recorder.handle();
    eventually("a first reading", || statuses(&metrics)[0] == Some(1.0)).await;

    // Each switch after a write starts a new 16 MB segment: the slot falls far behind its
    // 1 MB allowance, and the checkpoint invalidates it.
    for n in 0..4 {
        sql(&server, &format!("insert into noisy values ('{n}')"));
        sql(&server, "select pg_switch_wal()");
    }
    sql(&server, "checkpoint");
    assert_eq!(
        sql(
            &server,
            "select wal_status || ' ' || (restart_lsn is null)::text \
             from pg_replication_slots where slot_name = 'lost_slot'"
        ),
        "lost true"
    );
    eventually("the slot shown lost", || {
        statuses(&metrics) == [Some(0.0), Some(0.0), Some(0.0), Some(1.0)]
    })
    .await;
    assert_eq!(sample(&metrics, RETAINED), Some(0.0));
    // An operator must act: ERROR, once, however many polls see the loss.
    tokio::time::sleep(5 * POLL).await;
    let lines = log_lines("slot=lost_slot");
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert!(
        errors[0].contains("replication slot is lost: the server removed WAL it needed"),
        "{lines:#?}"
    );
    stop(task, cancel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_poll_warns_once_and_the_monitor_carries_on() {
    let server = PgServer::start().expect("starting PostgreSQL");
    let (task, cancel, recorder) = monitor(&server, "late_slot");
    let metrics = recorder.handle();
    eventually("a warning", || !log_lines("slot=late_slot").is_empty()).await;
    // Several more polls fail the same way: still one WARN (rate-limited).
    tokio::time::sleep(5 * POLL).await;
    let lines = log_lines("slot=late_slot");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(" WARN ")
            && lines[0]
                .contains("cannot read the replication slot's state; retried at the next poll")
            && lines[0].contains("replication slot late_slot does not exist"),
        "{lines:#?}"
    );
    // No slot: no status.
    assert_eq!(statuses(&metrics), [Some(0.0); 4]);
    assert_eq!(sample(&metrics, ACTIVE), Some(0.0));
    assert_eq!(sample(&metrics, RETAINED), Some(0.0));

    // The slot appears: the next poll reads it, says so at INFO, and sets the gauges.
    sql(
        &server,
        "select pg_create_logical_replication_slot('late_slot', 'pgoutput')",
    );
    eventually("a reading", || {
        statuses(&metrics) == [Some(1.0), Some(0.0), Some(0.0), Some(0.0)]
    })
    .await;
    let lines = log_lines("slot=late_slot");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("replication slot readable again")),
        "{lines:#?}"
    );
    stop(task, cancel).await;
}
