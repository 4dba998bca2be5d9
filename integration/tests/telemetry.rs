//! The telemetry endpoint: `pipeline::run` with `telemetry.listen` against a real
//! PostgreSQL and broker (tansu), read over HTTP like Prometheus and an orchestrator do.
//!
//! The metrics recorder is global to the process, so only one test here runs a pipeline
//! that produces: the counter values it asserts are exact.

use entity_cdc_integration::story::STORY_ENTITIES;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use entity_cdc::cli::database_target;
use entity_cdc::config::Config;
use entity_cdc::pipeline::{self, PipelineError};
use entity_cdc::source::{setup, sql};
use entity_cdc_integration::{KafkaBroker, PgServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// The story's tables.
const STORY_DDL: &str = "
create table public.orders (
    id bigint primary key, tenant_id bigint not null, status text, priority text,
    total numeric(12,2), version int not null default 1, updated_by text);
create table public.products (
    id bigint primary key, tenant_id bigint, name text, price numeric(10,2), version int);
create table public.audit (id bigint primary key, note text);";

/// connector.yaml for a database on `pg_port`, a broker at `kafka` and the endpoint on
/// `listen`.
fn yaml(pg_port: u16, db: &str, kafka: &str, listen: SocketAddr) -> String {
    format!(
        "source:
  host: 127.0.0.1
  port: {pg_port}
  database: {db}
  user: postgres
  sslmode: disable
  slot: entity_cdc
  publication: entity_cdc
  statusIntervalMs: 200
kafka:
  bootstrapServers: {kafka}
  topics: {{ create: true, partitions: 1, replicationFactor: 1 }}
  librdkafka:
    linger.ms: \"5\"
format: json
streaming:
  dlqTopic: dlq.events
telemetry:
  listen: {listen}
  maxLagSeconds: 120
entities:{STORY_ENTITIES}"
    )
}

fn config(text: &str) -> Config {
    Config::from_yaml_str(text, "test connector.yaml")
        .unwrap_or_else(|e| panic!("config invalid: {e}\n{text}"))
}

/// A loopback address nobody listens on right now.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("local address")
}

/// GETs `path` with HTTP/1.1 and `Connection: close`; returns the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    // The endpoint must answer within a second (issue 7).
    let response = tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} took more than a second"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no header end in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
    (status, body.to_owned())
}

/// The sample value of `line` (a metric with its labels, as rendered) in `text`.
fn sample(text: &str, line: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ').map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_are_served() {
    let pg = PgServer::start().expect("starting postgres");
    let db = pg.create_database("app").expect("creating database app");
    pg.psql_db(&db, STORY_DDL).expect("creating the tables");
    let broker = KafkaBroker::start().expect("starting tansu");
    let listen = free_addr();
    let config = config(&yaml(pg.port, &db, broker.bootstrap(), listen));
    let target = database_target(&config);
    let mut client = sql::connect(&target.params)
        .await
        .expect("connecting for setup");
    let plan = setup::plan(&client, &target).await.expect("setup plan");
    setup::apply(&mut client, &plan).await.expect("setup apply");
    // The audit table is published but no entity: its change is read and skipped.
    pg.psql_db(&db, "alter publication entity_cdc add table public.audit")
        .expect("publishing audit");

    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let task = tokio::spawn(async move { pipeline::run(&config, token).await });

    // /healthz answers as soon as the endpoint is up; /readyz once everything streams.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(!task.is_finished(), "the pipeline stopped at start");
        let healthy = tokio::net::TcpStream::connect(listen).await.is_ok()
            && get(listen, "/readyz").await.0 == 200;
        if healthy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never answered 200: {:?}",
            get(listen, "/readyz").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pg.psql_db(
        &db,
        "insert into orders (id, tenant_id, status, priority, total) values
             (1, 7, 'NEW', 'HIGH', 10.00), (2, 7, 'NEW', 'HIGH', 20.00);
         insert into orders (id, tenant_id, status, priority, total) values
             (3, 7, 'NEW', 'BULK', 30.00);
         update orders set status = 'PAID', version = 2 where id = 1;
         insert into products values (42, 123, 'Espresso machine', 120.00, 1);
         insert into audit values (1, 'not an entity');",
    )
    .expect("making changes");

    let expected = [
        (
            "entity_cdc_events_acknowledged_total{entity=\"Order\",change_type=\"CREATE\"}",
            "3",
        ),
        (
            "entity_cdc_events_acknowledged_total{entity=\"Order\",change_type=\"UPDATE\"}",
            "1",
        ),
        (
            "entity_cdc_events_acknowledged_total{entity=\"Product\",change_type=\"CREATE\"}",
            "1",
        ),
        (
            "entity_cdc_events_produced_total{entity=\"Order\",change_type=\"CREATE\"}",
            "3",
        ),
        (
            "entity_cdc_events_built_total{entity=\"Product\",change_type=\"CREATE\"}",
            "1",
        ),
        ("entity_cdc_changes_read_total", "6"),
        ("entity_cdc_changes_skipped_total", "1"),
        ("entity_cdc_records_in_flight", "0"),
        // The slot monitor polls every 10 s; the stream is active from the second poll on.
        ("entity_cdc_slot_active", "1"),
        ("entity_cdc_slot_wal_status{status=\"reserved\"}", "1"),
        ("entity_cdc_lane_depth_events{priority=\"HIGH\"}", "0"),
        ("entity_cdc_lane_dispatches_total{priority=\"HIGH\"}", "3"),
        (
            "entity_cdc_commit_to_ack_seconds_count{priority=\"HIGH\"}",
            "3",
        ),
        (
            "entity_cdc_commit_to_ack_seconds_count{priority=\"BULK\"}",
            "1",
        ),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = get(listen, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        let all = expected
            .iter()
            .all(|(line, value)| sample(&text, line).as_deref() == Some(*value));
        if all || tokio::time::Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (line, value) in expected {
        assert_eq!(
            sample(&text, line).as_deref(),
            Some(value),
            "{line} in\n{text}"
        );
    }
    // No LSN and no key ever appears as a label.
    assert!(!text.contains("lsn="), "{text}");
    assert!(
        text.contains("# HELP entity_cdc_replication_lag_bytes"),
        "{text}"
    );
    assert!(
        sample(&text, "entity_cdc_replication_lag_seconds").is_some(),
        "{text}"
    );

    let (status, body) = get(listen, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"alive"}"#));
    let (status, body) = get(listen, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(ready["status"], "ready", "{body}");
    assert_eq!(ready["checks"]["replicationStreaming"], true, "{body}");
    assert_eq!(ready["checks"]["producerConnected"], true, "{body}");
    assert_eq!(ready["checks"]["maxLagSeconds"], 120, "{body}");
    assert_eq!(ready["problems"], serde_json::json!([]), "{body}");
    let (status, _) = get(listen, "/nothing").await;
    assert_eq!(status, 404);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("pipeline did not stop within 60 s")
        .expect("pipeline task panicked")
        .unwrap_or_else(|e| panic!("pipeline failed: {e}"));
    // The endpoint stops with the pipeline (its accept loop ends right after).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(listen).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the endpoint still listens after the pipeline stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_taken_address_is_a_startup_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    let addr = taken.local_addr().expect("local address");
    // Neither PostgreSQL nor Kafka is needed: the endpoint binds before either is awaited.
    let config = config(&yaml(1, "app", "127.0.0.1:1", addr));
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        pipeline::run(&config, CancellationToken::new()),
    )
    .await
    .expect("run did not fail at once on a taken address");
    let error = match result {
        Err(e @ PipelineError::Telemetry(_)) => e,
        other => panic!("expected a telemetry error, got {other:?}"),
    };
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("telemetry.listen {addr}: cannot listen: ")),
        "{text}"
    );
    assert!(
        error.hint().is_some_and(|h| h.contains("telemetry.listen")),
        "{:?}",
        error.hint()
    );
}
