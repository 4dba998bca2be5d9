//! The load tests' shared fixture (tests/lanes_load.rs, tests/spill.rs): an `orders` table
//! whose rows carry their priority, an `items` table streamed as BULK, a connector.yaml for
//! them, and the pipeline started in the test's process.

use std::time::{Duration, Instant};

use entity_cdc::cli::database_target;
use entity_cdc::config::Config;
use entity_cdc::pipeline::{self, PipelineError, RunSummary};
use entity_cdc::source::{setup, sql};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::PgServer;

/// The two tables.
pub const DDL: &str = "
create table public.orders (id bigint primary key, tenant_id bigint not null, priority text);
create table public.items (id bigint primary key, tenant_id bigint not null, label text);";

/// Where the fixture's connector runs.
pub struct Servers<'a> {
    /// The server.
    pub pg: &'a PgServer,
    /// The database holding [`DDL`]'s tables.
    pub db: &'a str,
    /// The broker's bootstrap address.
    pub bootstrap: &'a str,
    /// The port of `/metrics`, on loopback.
    pub metrics_port: u16,
}

/// connector.yaml for `servers`: Orders (minimal payload, priority from their `priority`
/// column) and Items (BULK, in `item_payload_mode`), with `streaming` (the lines under
/// `streaming:`, indented by two spaces).
pub fn config(servers: &Servers<'_>, streaming: &str, item_payload_mode: &str) -> Config {
    let text = format!(
        "source:
  host: 127.0.0.1
  port: {port}
  database: {db}
  user: postgres
  sslmode: disable
  slot: entity_cdc
  publication: entity_cdc
  statusIntervalMs: 1000
kafka:
  bootstrapServers: {bootstrap}
  topics: {{ create: true, partitions: 1, replicationFactor: 1 }}
  librdkafka:
    linger.ms: \"5\"
format: json
telemetry:
  listen: 127.0.0.1:{metrics_port}
streaming:
{streaming}
entities:
  - name: Order
    table: public.orders
    tenantColumn: tenant_id
    streaming:
      topicPrefix: core.orders
      topicPerEntity: true
      eventPayloadMode: minimal
      priorityField: priority
  - name: Item
    table: public.items
    tenantColumn: tenant_id
    streaming:
      topicPrefix: core.items
      topicPerEntity: true
      eventPayloadMode: {item_payload_mode}
      defaultPriority: BULK
",
        port = servers.pg.port,
        db = servers.db,
        bootstrap = servers.bootstrap,
        metrics_port = servers.metrics_port,
    );
    Config::from_yaml_str(&text, "test connector.yaml")
        .unwrap_or_else(|e| panic!("config invalid: {e}\n{text}"))
}

/// The running pipeline: cancel `cancel` to stop it, then await `task`.
pub struct Running {
    /// Stops the pipeline.
    pub cancel: CancellationToken,
    /// The pipeline's outcome.
    pub task: JoinHandle<Result<RunSummary, PipelineError>>,
}

/// Creates the publication and the slot, starts `entity-cdc run`'s pipeline on `config`
/// and waits until its slot is active.
pub async fn start(config: Config, pg: &PgServer, db: &str) -> Running {
    let target = database_target(&config);
    let mut client = sql::connect(&target.params).await.expect("connecting");
    let plan = setup::plan(&client, &target).await.expect("setup plan");
    setup::apply(&mut client, &plan).await.expect("setup apply");

    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let task = tokio::spawn(async move { pipeline::run(&config, token).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg
        .psql_db(
            db,
            "select active from pg_replication_slots where slot_name = 'entity_cdc'",
        )
        .unwrap_or_else(|e| panic!("slot status: {e:#}"))
        != "t"
    {
        assert!(!task.is_finished(), "the pipeline stopped at start");
        assert!(Instant::now() < deadline, "the pipeline did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running { cancel, task }
}
