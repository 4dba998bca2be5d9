//! Priority lanes, retries and the dead-letter topic end to end: `pipeline::run` against a
//! real PostgreSQL and either librdkafka's in-process mock cluster (which injects Produce
//! errors and slows the broker down on demand) or a real Kafka-protocol broker (tansu).
//!
//! The Order entity writes its whole history to one topic of one partition
//! (`topicPerEntity`), so the offsets there are the order in which the dispatcher handed
//! the events to the producer.

use std::time::{Duration, Instant};

use base64::Engine as _;
use entity_cdc::cli::database_target;
use entity_cdc::config::Config;
use entity_cdc::pipeline::{self, PipelineError, RunSummary};
use entity_cdc::source::{setup, sql, Lsn};
use entity_cdc_integration::pg::PgServerOptions;
use entity_cdc_integration::{ConsumedRecord, KafkaBroker, PgServer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::{json, Value as Json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

const DDL: &str = "
create table public.orders (
    id bigint primary key, tenant_id bigint not null, status text, priority text,
    version int not null default 1);
create table public.products (id bigint primary key, tenant_id bigint, name text);";

/// Orders: one topic for the whole history, priority from the `priority` column.
/// Products: one topic too, NORMAL.
const ENTITIES: &str = "
  - name: Order
    table: public.orders
    tenantColumn: tenant_id
    versionColumn: version
    streaming:
      topicPrefix: core.orders
      topicPerEntity: true
      eventPayloadMode: full
      priorityField: priority
  - name: Product
    table: public.products
    tenantColumn: tenant_id
    streaming:
      topicPrefix: core.catalog
      topicPerEntity: true
      eventPayloadMode: full
";

const ORDERS: &str = "core.orders.order";
const PRODUCTS: &str = "core.catalog.product";
const DLQ: &str = "dlq.events";

type Mock = MockCluster<'static, DefaultProducerContext>;

struct Env {
    pg: PgServer,
    db: String,
    broker: KafkaBroker,
    mock: Option<Mock>,
}

impl Env {
    /// PostgreSQL (with `settings`) set up for the connector, and a mock cluster with the
    /// topics, or tansu.
    async fn start(mock: bool, settings: &[(&str, &str)]) -> Env {
        let pg = PgServer::start_with(PgServerOptions {
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..PgServerOptions::default()
        })
        .expect("starting postgres");
        let db = pg.create_database("app").expect("creating database app");
        pg.psql_db(&db, DDL).expect("creating the tables");
        let (broker, mock) = if mock {
            let cluster = MockCluster::new(1).expect("mock cluster");
            for topic in [ORDERS, PRODUCTS, DLQ] {
                cluster.create_topic(topic, 1, 1).expect("mock topic");
            }
            (
                KafkaBroker::attach(cluster.bootstrap_servers()),
                Some(cluster),
            )
        } else {
            (KafkaBroker::start().expect("starting tansu"), None)
        };
        let env = Env {
            pg,
            db,
            broker,
            mock,
        };
        let config = env.config("");
        let target = database_target(&config);
        let mut client = sql::connect(&target.params)
            .await
            .expect("connecting for setup");
        let plan = setup::plan(&client, &target).await.expect("setup plan");
        setup::apply(&mut client, &plan).await.expect("setup apply");
        env.sql("select pg_create_logical_replication_slot('probe', 'pgoutput')");
        env
    }

    fn mock(&self) -> &Mock {
        self.mock.as_ref().expect("a mock cluster")
    }

    /// connector.yaml with `streaming` extras (indented by two spaces).
    fn config(&self, streaming: &str) -> Config {
        let text = format!(
            "source:
  host: 127.0.0.1
  port: {port}
  database: {db}
  user: postgres
  sslmode: disable
  slot: entity_cdc
  publication: entity_cdc
  statusIntervalMs: 200
kafka:
  bootstrapServers: {kafka}
  topics: {{ create: {create}, partitions: 1, replicationFactor: 1 }}
  librdkafka:
    linger.ms: \"5\"
    message.send.max.retries: \"1\"
    retry.backoff.ms: \"10\"
format: json
streaming:
  dlqTopic: {DLQ}
{streaming}
entities:{ENTITIES}",
            port = self.pg.port,
            db = self.db,
            kafka = self.broker.bootstrap(),
            create = self.mock.is_none(),
        );
        Config::from_yaml_str(&text, "test connector.yaml")
            .unwrap_or_else(|e| panic!("config invalid: {e}\n{text}"))
    }

    fn sql(&self, sql: &str) -> String {
        self.pg
            .psql_db(&self.db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
    }

    fn confirmed_flush(&self) -> Lsn {
        let text = self.sql(
            "select confirmed_flush_lsn from pg_replication_slots where slot_name = 'entity_cdc'",
        );
        text.parse()
            .unwrap_or_else(|e| panic!("confirmed_flush_lsn {text:?}: {e}"))
    }

    /// (commit LSN, end LSN, commit time) of every transaction the probe slot saw.
    fn probed(&self) -> Vec<(Lsn, Lsn, i64)> {
        let text = self.sql(
            "select encode(data, 'hex') from pg_logical_slot_peek_binary_changes('probe', null, null,
                'proto_version', '1', 'publication_names', 'entity_cdc')
             where get_byte(data, 0) = 67",
        );
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let bytes: Vec<u8> = (0..line.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex"))
                    .collect();
                let at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8"));
                (Lsn(at(2)), Lsn(at(10)), at(18) as i64)
            })
            .collect()
    }

    async fn run(&self, config: Config) -> Running {
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let task = tokio::spawn(async move { pipeline::run(&config, token).await });
        let running = Running { cancel, task };
        eventually("the pipeline streaming", Duration::from_secs(30), || {
            assert!(!running.task.is_finished(), "the pipeline stopped at start");
            self.sql("select active from pg_replication_slots where slot_name = 'entity_cdc'")
                == "t"
        })
        .await;
        running
    }

    async fn consume(&self, topic: &str, n: usize) -> Vec<ConsumedRecord> {
        self.broker
            .consume(topic, n, CONSUME_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("consuming {n} from {topic}: {e:#}"))
    }

    /// Waits until the walsender has sent everything up to the current WAL position, then a
    /// little longer, so that the pipeline has read and queued it.
    async fn wait_sent(&self) {
        let target = self.sql("select pg_current_wal_lsn()");
        eventually(
            "the walsender sent the WAL",
            Duration::from_secs(10),
            || {
                self.sql(&format!(
                "select coalesce(bool_or(sent_lsn >= '{target}'), false) from pg_stat_replication"
            )) == "t"
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<Result<RunSummary, PipelineError>>,
}

impl Running {
    async fn stop(self) -> RunSummary {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("pipeline did not stop within 60 s")
            .expect("pipeline task panicked")
            .unwrap_or_else(|e| panic!("pipeline failed: {e}"))
    }
}

async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn value(record: &ConsumedRecord) -> Json {
    let bytes = record.payload.as_deref().expect("record without value");
    serde_json::from_slice(bytes).expect("value is JSON")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

/// `(entityId, changeType)` of each Order record, in offset order.
fn history(records: &[ConsumedRecord]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            let v = value(r);
            (
                v["entityId"].as_str().expect("entityId").to_owned(),
                v["changeType"].as_str().expect("changeType").to_owned(),
            )
        })
        .collect()
}

fn ids(list: &[&str], change: &str) -> Vec<(String, String)> {
    list.iter()
        .map(|id| ((*id).to_owned(), change.to_owned()))
        .collect()
}

/// Commits, while the dispatcher is held (the broker answers after 3 s and the producer may
/// hold one record, a product event committed first), 5 BULK orders, 1 CRITICAL and 3
/// NORMAL ones in three transactions; returns the orders' ids in the order Kafka has them.
async fn ac2_burst(scheduling: &str) -> Vec<(String, String)> {
    let env = Env::start(true, &[]).await;
    let running = env
        .run(env.config(&format!(
            "  producerInFlight: {{ records: 1 }}\n  scheduling: {scheduling}"
        )))
        .await;
    env.mock()
        .broker_round_trip_time(1, Duration::from_secs(3))
        .expect("slow broker");
    env.sql("insert into public.products values (1, 123, 'blocker')");
    env.sql(
        "insert into public.orders (id, tenant_id, priority)
         select g, 123, 'bulk' from generate_series(1, 5) g",
    );
    env.sql("insert into public.orders (id, tenant_id, priority) values (6, 123, 'CRITICAL')");
    env.sql(
        "insert into public.orders (id, tenant_id, priority)
         select g, 123, 'normal' from generate_series(7, 9) g",
    );
    env.wait_sent().await;
    env.mock()
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("fast broker");
    let orders = env.consume(ORDERS, 9).await;
    assert_eq!(env.consume(PRODUCTS, 1).await.len(), 1);
    let summary = running.stop().await;
    assert_eq!(summary.events, 10);
    let tx = env.probed();
    assert_eq!(env.confirmed_flush(), tx[tx.len() - 1].1);
    history(&orders)
}

/// The story's AC2 end to end: CRITICAL, the 3 NORMAL, the 5 BULK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ac2_order_on_kafka_is_critical_normal_bulk() {
    assert_eq!(
        ac2_burst("weighted").await,
        ids(&["6", "7", "8", "9", "1", "2", "3", "4", "5"], "CREATE")
    );
}

/// The benchmarks' baseline, `scheduling: fifo`: the same burst goes out in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_scheduling_keeps_commit_order() {
    assert_eq!(
        ac2_burst("fifo").await,
        ids(&["1", "2", "3", "4", "5", "6", "7", "8", "9"], "CREATE")
    );
}

/// Per-key order across lanes: a CRITICAL update of order 3 while its BULK insert still
/// waits promotes the insert; other BULK orders keep waiting behind NORMAL ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_bulk_event_of_the_same_key_is_promoted() {
    let env = Env::start(true, &[]).await;
    let running = env
        .run(env.config("  producerInFlight: { records: 1 }"))
        .await;
    env.mock()
        .broker_round_trip_time(1, Duration::from_secs(3))
        .expect("slow broker");
    env.sql("insert into public.products values (1, 123, 'blocker')");
    env.sql(
        "insert into public.orders (id, tenant_id, priority)
         select g, 123, 'bulk' from generate_series(1, 4) g",
    );
    env.sql("insert into public.orders (id, tenant_id, priority) values (5, 123, 'normal')");
    env.sql("update public.orders set priority = 'critical', version = 2 where id = 3");
    env.wait_sent().await;
    env.mock()
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("fast broker");
    let orders = env.consume(ORDERS, 6).await;
    assert_eq!(
        history(&orders),
        [
            ("3", "CREATE"),
            ("3", "UPDATE"),
            ("5", "CREATE"),
            ("1", "CREATE"),
            ("2", "CREATE"),
            ("4", "CREATE"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    running.stop().await;
}

/// The story: the broker fails the order's Produce (past librdkafka's own retry) on the
/// first send and on 3 retries; the event then goes to the dead-letter topic with the
/// original record, and the slot moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_and_three_retries_then_the_dead_letter_topic() {
    let env = Env::start(true, &[]).await;
    let running = env
        .run(env.config("  retries: 3\n  retryBackoffMs: 100"))
        .await;
    // Let the idempotent producer get its id first, so that the errors hit Produce.
    env.sql("insert into public.products values (1, 123, 'warm-up')");
    env.consume(PRODUCTS, 1).await;
    // Each attempt is a request and librdkafka's one retry of it: 2 errors; 4 attempts.
    let before = Instant::now();
    env.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 8],
    );
    env.sql(
        "insert into public.orders (id, tenant_id, status, priority) values (456, 123, 'NEW', 'high')",
    );
    let letters = env.consume(DLQ, 1).await;
    let waited = before.elapsed();
    // Backoffs of 100, 200 and 400 ms came before the dead letter.
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    let tx = env.probed();
    let (commit, end, commit_ts) = tx[1];
    let event_id = format!("{commit}:0");
    let letter = &letters[0];
    assert_eq!(letter.key.as_deref(), Some(&b"123:456"[..]));
    let letter_headers: Vec<(String, String)> = letter
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), text(v)))
        .collect();
    let reason = "delivery to topic core.orders.order failed: NotEnoughReplicas";
    assert_eq!(
        letter_headers,
        [
            ("failureReason".to_owned(), reason.to_owned()),
            ("eventId".to_owned(), event_id.clone())
        ]
    );
    let mut body = value(letter);
    let failed_at = body["failureTimestamp"]
        .as_str()
        .expect("failureTimestamp")
        .to_owned();
    assert!(
        failed_at.ends_with('Z') && &failed_at[10..11] == "T",
        "{failed_at}"
    );
    body["failureTimestamp"] = json!("checked");
    let original = json!({
        "eventId": event_id,
        "eventType": "OrderCreated",
        "tenantId": 123,
        "entityType": "Order",
        "entityId": "456",
        "changeType": "CREATE",
        "version": 1,
        "timestamp": entity_cdc::source::change::commit_time_rfc3339(commit_ts),
        "user": null,
        "payload": {"id": 456, "tenant_id": 123, "status": "NEW", "priority": "high", "version": 1},
        "fullSnapshot": {"id": 456, "tenant_id": 123, "status": "NEW", "priority": "high", "version": 1}
    });
    let value_text = body["originalEvent"]["valueText"]
        .as_str()
        .expect("valueText")
        .to_owned();
    assert_eq!(
        serde_json::from_str::<Json>(&value_text).expect("event JSON"),
        original
    );
    let value_b64 = base64::engine::general_purpose::STANDARD.encode(value_text.as_bytes());
    assert_eq!(
        body,
        json!({
            "eventId": event_id,
            "failureReason": reason,
            "failureTimestamp": "checked",
            "retryCount": 3,
            "originalEvent": {
                "topic": ORDERS,
                "key": "123:456",
                "headers": [
                    {"name": "tenantId", "value": "123"},
                    {"name": "entityType", "value": "Order"},
                    {"name": "changeType", "value": "CREATE"},
                    {"name": "eventType", "value": "OrderCreated"},
                    {"name": "eventId", "value": event_id},
                ],
                "value": value_b64,
                "valueText": value_text,
            },
            "source": {"topic": ORDERS},
        })
    );
    // Dead-lettered counts as handled: the slot moves past the transaction, and the next
    // order goes to its topic.
    eventually(
        "the slot past the dead letter",
        Duration::from_secs(10),
        || env.confirmed_flush() >= end,
    )
    .await;
    env.sql("insert into public.orders (id, tenant_id, priority) values (457, 123, 'high')");
    let orders = env.consume(ORDERS, 1).await;
    assert_eq!(history(&orders), ids(&["457"], "CREATE"));
    let summary = running.stop().await;
    assert_eq!(summary.dead_lettered, 1);
}

/// A record the broker refuses for what it is goes to the dead-letter topic at once, with
/// retryCount 0; later events of other keys are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retriable_error_skips_the_retries() {
    let env = Env::start(true, &[]).await;
    let running = env
        .run(env.config("  retries: 3\n  retryBackoffMs: 60000"))
        .await;
    env.sql("insert into public.products values (1, 123, 'warm-up')");
    env.consume(PRODUCTS, 1).await;
    env.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );
    env.sql("insert into public.orders (id, tenant_id) values (456, 123)");
    let letters = env.consume(DLQ, 1).await;
    let body = value(&letters[0]);
    assert_eq!(body["retryCount"], json!(0), "{body}");
    assert_eq!(
        body["failureReason"],
        json!("delivery to topic core.orders.order failed: InvalidRecord")
    );
    assert_eq!(body["originalEvent"]["key"], json!("123:456"));
    let (_, end, _) = env.probed()[1];
    eventually(
        "the slot past the dead letter",
        Duration::from_secs(10),
        || env.confirmed_flush() >= end,
    )
    .await;
    running.stop().await;
}

/// The dead letter cannot be written either: the pipeline stops with an error naming the
/// dead-letter topic, and the slot is not confirmed past the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dead_letter_stops_without_confirming() {
    let env = Env::start(true, &[]).await;
    let running = env.run(env.config("  retries: 0")).await;
    env.sql("insert into public.products values (1, 123, 'warm-up')");
    env.consume(PRODUCTS, 1).await;
    let (_, warm_end, _) = env.probed()[0];
    eventually("the warm-up confirmed", Duration::from_secs(10), || {
        env.confirmed_flush() >= warm_end
    })
    .await;
    // The order and then its dead letter are refused as not authorized.
    env.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    );
    env.sql("insert into public.orders (id, tenant_id) values (456, 123)");
    let outcome = tokio::time::timeout(Duration::from_secs(30), running.task)
        .await
        .expect("the pipeline stops")
        .expect("no panic");
    let error = outcome.expect_err("a failed dead letter stops the pipeline");
    let (commit, end, _) = env.probed()[1];
    assert_eq!(
        error.to_string(),
        format!(
            "dead letter of record {commit}:0 could not be written to {DLQ}: delivery to topic {DLQ} failed: TopicAuthorizationFailed"
        )
    );
    assert!(matches!(error, PipelineError::DeadLetterWrite { .. }));
    let confirmed = env.confirmed_flush();
    assert!(
        confirmed < end,
        "confirmed {confirmed} must stay before the transaction's end {end}"
    );
    assert!(confirmed >= warm_end, "{confirmed} vs {warm_end}");
}

/// With the spill off, a full lane stops the source from reading WAL, for longer than the server's
/// `wal_sender_timeout` (5 s here): the status updates sent while it waits keep the
/// walsender from ending the connection. The broker answers after 7 s, the producer may
/// hold one record and the NORMAL lane one event, so the third product's event waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_waiting_for_room_keeps_the_walsender_alive() {
    let env = Env::start(true, &[("wal_sender_timeout", "5s")]).await;
    let running = env
        .run(env.config(
            "  producerInFlight: { records: 1 }\n  lanes: { NORMAL: { capacity: 1 } }\n  spill: { maxBytes: 0 }",
        ))
        .await;
    let walsender = env.sql("select pid from pg_stat_replication");
    env.mock()
        .broker_round_trip_time(1, Duration::from_secs(7))
        .expect("slow broker");
    for id in 1..=4 {
        env.sql(&format!(
            "insert into public.products values ({id}, 123, 'p{id}')"
        ));
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    env.mock()
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("fast broker");
    let products = env.consume(PRODUCTS, 4).await;
    let keys: Vec<String> = products
        .iter()
        .map(|r| text(r.key.as_deref().expect("key")))
        .collect();
    assert_eq!(keys, ["123:1", "123:2", "123:3", "123:4"]);
    let tx = env.probed();
    eventually(
        "the last product confirmed",
        Duration::from_secs(10),
        || env.confirmed_flush() >= tx[3].1,
    )
    .await;
    assert_eq!(
        env.sql("select pid from pg_stat_replication"),
        walsender,
        "the same walsender streams: the connection was never lost"
    );
    let log = env.pg.log();
    assert!(
        !log.contains("terminating walsender process due to replication timeout"),
        "the walsender timed out:\n{log}"
    );
    let summary = running.stop().await;
    assert_eq!(summary.events, 4);
}
