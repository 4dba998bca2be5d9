//! The pipeline end to end: `pipeline::run` in-process against a real PostgreSQL and a real
//! Kafka-protocol broker (tansu), with the story's tables and connector.yaml's entities.
//!
//! Each test has its own server, database and broker, so topics are the story's own names.
//! A second pgoutput slot (`probe`), created next to the connector's, is peeked with
//! `pg_logical_slot_peek_binary_changes` to read each transaction's commit LSN, end LSN and
//! commit time exactly as the walsender sends them: the oracle for eventId, timestamp and
//! the confirmed position.

use entity_cdc_integration::story::STORY_ENTITIES;
use std::time::Duration;

use entity_cdc::cli::database_target;
use entity_cdc::config::Config;
use entity_cdc::pipeline::{self, PipelineError, RunSummary};
use entity_cdc::source::{setup, sql, Lsn};
use entity_cdc_integration::{ConsumedRecord, KafkaBroker, PgServer, WebhookReceiver};
use serde_json::{json, Value as Json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for records that should arrive within a second.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

/// The story's tables.
const STORY_DDL: &str = "
create table public.orders (
    id bigint primary key, tenant_id bigint not null, status text, priority text,
    total numeric(12,2), version int not null default 1, updated_by text);
create table public.products (
    id bigint primary key, tenant_id bigint, name text, price numeric(10,2), version int);";

/// A PostgreSQL with the tables created, set up for the connector, and a broker.
struct Env {
    pg: PgServer,
    broker: KafkaBroker,
    db: String,
}

impl Env {
    /// Starts both servers, creates the tables, runs setup for `entities` and creates the
    /// probe slot.
    async fn start(ddl: &str, entities: &str) -> Env {
        let pg = PgServer::start().expect("starting postgres");
        let db = pg.create_database("app").expect("creating database app");
        pg.psql_db(&db, ddl).expect("creating the tables");
        let broker = KafkaBroker::start().expect("starting tansu");
        let env = Env { pg, broker, db };
        let config = env.config(entities, "");
        let target = database_target(&config);
        let mut client = sql::connect(&target.params)
            .await
            .expect("connecting for setup");
        let plan = setup::plan(&client, &target).await.expect("setup plan");
        setup::apply(&mut client, &plan).await.expect("setup apply");
        env.sql("select pg_create_logical_replication_slot('probe', 'pgoutput')");
        env
    }

    /// The connector.yaml text for this environment.
    fn yaml(&self, entities: &str, librdkafka: &str) -> String {
        format!(
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
  topics: {{ create: true, partitions: 1, replicationFactor: 1 }}
  librdkafka:
    linger.ms: \"5\"
{librdkafka}
format: json
streaming:
  dlqTopic: dlq.events
entities:{entities}",
            port = self.pg.port,
            db = self.db,
            kafka = self.broker.bootstrap(),
        )
    }

    fn config(&self, entities: &str, librdkafka: &str) -> Config {
        let text = self.yaml(entities, librdkafka);
        Config::from_yaml_str(&text, "test connector.yaml")
            .unwrap_or_else(|e| panic!("config invalid: {e}\n{text}"))
    }

    fn sql(&self, sql: &str) -> String {
        self.pg
            .psql_db(&self.db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
    }

    /// `confirmed_flush_lsn` of the connector's slot.
    fn confirmed_flush(&self) -> Lsn {
        let text = self.sql(
            "select confirmed_flush_lsn from pg_replication_slots where slot_name = 'entity_cdc'",
        );
        text.parse()
            .unwrap_or_else(|e| panic!("confirmed_flush_lsn {text:?}: {e}"))
    }

    /// The first `n` transactions the probe slot sees, in commit order, waiting for them:
    /// with `synchronous_commit=off` a commit is decoded only once the WAL writer flushed it.
    async fn probe(&self, n: usize) -> Vec<Probed> {
        let mut probed = self.probed();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while probed.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the probe slot shows {} of {n} transactions",
                probed.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            probed = self.probed();
        }
        probed
    }

    /// Every transaction the probe slot has seen so far, in commit order.
    fn probed(&self) -> Vec<Probed> {
        // Begin: 'B', final_lsn(8), commit_ts(8), xid(4); Commit: 'C', flags(1),
        // commit_lsn(8), end_lsn(8), commit_ts(8).
        let text = self.sql(
            "select encode(data, 'hex') from pg_logical_slot_peek_binary_changes('probe', null, null,
                'proto_version', '1', 'publication_names', 'entity_cdc')
             where get_byte(data, 0) = 67",
        );
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|hex_line| {
                let bytes: Vec<u8> = (0..hex_line.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex_line[i..i + 2], 16).expect("hex"))
                    .collect();
                let u64_at =
                    |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
                Probed {
                    commit_lsn: Lsn(u64_at(2)),
                    end_lsn: Lsn(u64_at(10)),
                    commit_micros: u64_at(18) as i64,
                }
            })
            .collect()
    }

    /// Starts the pipeline and waits until it streams (the slot is active, which it is only
    /// once Kafka was reached and the topics exist).
    async fn run(&self, config: Config) -> Running {
        let running = Running::start(config);
        eventually(
            "the pipeline streaming from the slot",
            Duration::from_secs(30),
            || {
                assert!(!running.task.is_finished(), "the pipeline stopped at start");
                self.sql("select active from pg_replication_slots where slot_name = 'entity_cdc'")
                    == "t"
            },
        )
        .await;
        running
    }

    async fn consume(&self, topic: &str, n: usize) -> Vec<ConsumedRecord> {
        self.broker
            .consume(topic, n, CONSUME_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("consuming {n} from {topic}: {e:#}"))
    }
}

/// One committed transaction as pgoutput's Commit message describes it.
#[derive(Debug, Clone, Copy)]
struct Probed {
    commit_lsn: Lsn,
    end_lsn: Lsn,
    commit_micros: i64,
}

impl Probed {
    fn event_id(&self, index: u32) -> String {
        format!("{}:{index}", self.commit_lsn)
    }

    fn timestamp(&self) -> String {
        entity_cdc::source::change::commit_time_rfc3339(self.commit_micros)
    }
}

/// The pipeline on a task, with the token that stops it.
struct Running {
    cancel: CancellationToken,
    task: JoinHandle<Result<RunSummary, PipelineError>>,
}

impl Running {
    fn start(config: Config) -> Running {
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let task = tokio::spawn(async move { pipeline::run(&config, token).await });
        Running { cancel, task }
    }

    /// Cancels and waits for the graceful stop.
    async fn stop(self) -> RunSummary {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("pipeline did not stop within 60 s")
            .expect("pipeline task panicked")
            .unwrap_or_else(|e| panic!("pipeline failed: {e}"))
    }
}

fn value(record: &ConsumedRecord) -> Json {
    let bytes = record.payload.as_deref().expect("record without value");
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("value is no JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn key(record: &ConsumedRecord) -> String {
    String::from_utf8(record.key.clone().expect("record without key")).expect("utf-8 key")
}

fn headers(record: &ConsumedRecord) -> Vec<(String, String)> {
    record
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                String::from_utf8(v.clone()).expect("utf-8 header"),
            )
        })
        .collect()
}

fn expected_headers(
    tenant: &str,
    entity: &str,
    change: &str,
    event_id: &str,
) -> Vec<(String, String)> {
    let event_type = format!(
        "{entity}{}",
        match change {
            "CREATE" => "Created",
            "UPDATE" => "Updated",
            _ => "Deleted",
        }
    );
    [
        ("tenantId", tenant),
        ("entityType", entity),
        ("changeType", change),
        ("eventType", event_type.as_str()),
        ("eventId", event_id),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect()
}

/// Exact JSON text (numbers keep their digits thanks to arbitrary_precision).
fn exact(value: &Json) -> String {
    serde_json::to_string(value).expect("json")
}

/// Polls until `f` holds, or panics with `what`.
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

/// The story: AC1 (order created), AC3 (product price changed), AC4 (order deleted), exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_events_are_exact() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let running = env.run(env.config(STORY_ENTITIES, "")).await;

    env.sql(
        "insert into public.orders (id, tenant_id, status, priority, total, updated_by)
         values (456, 123, 'NEW', 'HIGH', 99.90, 'user@example.com')",
    );
    env.sql("insert into public.products values (42, 123, 'Widget', 120.00, 1)");
    env.sql("update public.products set price = 150.00, version = 2 where id = 42");
    env.sql("insert into public.orders (id, tenant_id, status, updated_by) values (457, 123, 'NEW', 'ops@example.com')");
    env.sql("delete from public.orders where id = 457");

    let created = env.consume("core.orders.order.created", 2).await;
    let updated = env.consume("core.catalog.product.updated", 1).await;
    let deleted = env.consume("core.orders.order.deleted", 1).await;
    let product_created = env.consume("core.catalog.product.created", 1).await;
    let summary = running.stop().await;

    let tx = env.probe(5).await;
    assert_eq!(tx.len(), 5, "five transactions: {tx:?}");

    // AC1: order 456 created for tenant 123 by user@example.com.
    let ac1 = &created[0];
    assert_eq!(key(ac1), "123:456");
    assert_eq!(
        headers(ac1),
        expected_headers("123", "Order", "CREATE", &tx[0].event_id(0))
    );
    let expected = json!({
        "eventId": tx[0].event_id(0),
        "eventType": "OrderCreated",
        "tenantId": 123,
        "entityType": "Order",
        "entityId": "456",
        "changeType": "CREATE",
        "version": 1,
        "timestamp": tx[0].timestamp(),
        "user": "user@example.com",
        "payload": {
            "id": 456, "tenant_id": 123, "status": "NEW", "priority": "HIGH",
            "total": serde_json::from_str::<Json>("99.90").expect("number"),
            "version": 1, "updated_by": "user@example.com"
        }
    });
    assert_eq!(exact(&value(ac1)), exact(&expected), "AC1 event");
    assert_eq!(tx[0].event_id(0), format!("{}:0", tx[0].commit_lsn));
    let timestamp = tx[0].timestamp();
    assert!(
        timestamp.ends_with('Z') && timestamp.len() >= 20 && &timestamp[10..11] == "T",
        "RFC 3339 UTC: {timestamp}"
    );

    // AC3: product 42's price 120.00 -> 150.00 (and its version 1 -> 2).
    let ac3 = &updated[0];
    assert_eq!(key(ac3), "123:42");
    assert_eq!(
        headers(ac3),
        expected_headers("123", "Product", "UPDATE", &tx[2].event_id(0))
    );
    let n = |text: &str| serde_json::from_str::<Json>(text).expect("number");
    let expected = json!({
        "eventId": tx[2].event_id(0),
        "eventType": "ProductUpdated",
        "tenantId": 123,
        "entityType": "Product",
        "entityId": "42",
        "changeType": "UPDATE",
        "version": 2,
        "timestamp": tx[2].timestamp(),
        "user": null,
        "changes": {
            "price": {"old": n("120.00"), "new": n("150.00")},
            "version": {"old": 1, "new": 2}
        },
        "fullSnapshot": {"id": 42, "tenant_id": 123, "name": "Widget", "price": n("150.00"), "version": 2}
    });
    assert_eq!(exact(&value(ac3)), exact(&expected), "AC3 event");
    let product_create = value(&product_created[0]);
    assert_eq!(
        exact(&product_create["fullSnapshot"]),
        exact(
            &json!({"id": 42, "tenant_id": 123, "name": "Widget", "price": n("120.00"), "version": 1})
        ),
        "full mode: a CREATE carries the snapshot too"
    );

    // AC4: order 457 deleted.
    let ac4 = &deleted[0];
    assert_eq!(key(ac4), "123:457");
    assert_eq!(
        headers(ac4),
        expected_headers("123", "Order", "DELETE", &tx[4].event_id(0))
    );
    let expected = json!({
        "eventId": tx[4].event_id(0),
        "eventType": "OrderDeleted",
        "tenantId": 123,
        "entityType": "Order",
        "entityId": "457",
        "changeType": "DELETE",
        "version": 1,
        "timestamp": tx[4].timestamp(),
        "user": "ops@example.com",
        "key": {"id": 457}
    });
    assert_eq!(exact(&value(ac4)), exact(&expected), "AC4 event");

    assert_eq!(summary.changes, 5);
    assert_eq!(summary.events, 5);
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(env.confirmed_flush(), summary.confirmed);
    assert!(
        summary.confirmed >= tx[4].end_lsn,
        "{summary:?} vs {:?}",
        tx[4]
    );
}

/// A context message gives the transaction's events their user and correlationId; a
/// malformed one is ignored and its transaction's events still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_context_is_carried_and_malformed_context_ignored() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    env.sql("insert into public.orders (id, tenant_id, status, updated_by) values (1, 7, 'NEW', 'column-user')");
    let running = env.run(env.config(STORY_ENTITIES, "")).await;

    env.sql(
        "begin;
         select pg_logical_emit_message(true, 'entity-cdc',
            '{\"user\": \"alice@example.com\", \"priority\": \"CRITICAL\", \"correlationId\": \"req-42\"}');
         update public.orders set status = 'PAID', version = 2 where id = 1;
         insert into public.orders (id, tenant_id, status) values (2, 7, 'NEW');
         commit;",
    );
    env.sql(
        "begin;
         select pg_logical_emit_message(true, 'entity-cdc', '{\"user\": 17, oops');
         update public.orders set status = 'SHIPPED', version = 3 where id = 1;
         commit;",
    );
    // A later transaction without a message: the context does not leak into it.
    env.sql("update public.orders set status = 'DONE', version = 4 where id = 1");

    let updated = env.consume("core.orders.order.updated", 3).await;
    let created = env.consume("core.orders.order.created", 2).await;
    let summary = running.stop().await;

    let paid = value(&updated[0]);
    assert_eq!(paid["user"], json!("alice@example.com"), "{paid}");
    assert_eq!(paid["correlationId"], json!("req-42"), "{paid}");
    assert_eq!(
        exact(&paid["changes"]),
        exact(&json!({"status": {"old": "NEW", "new": "PAID"}, "version": {"old": 1, "new": 2}}))
    );
    let second = value(&created[1]);
    assert_eq!(second["entityId"], json!("2"));
    assert_eq!(second["user"], json!("alice@example.com"), "{second}");
    assert_eq!(second["correlationId"], json!("req-42"), "{second}");

    let shipped = value(&updated[1]);
    assert_eq!(shipped["version"], json!(3), "{shipped}");
    assert_eq!(
        shipped["user"],
        json!("column-user"),
        "malformed context ignored: {shipped}"
    );
    assert!(shipped.get("correlationId").is_none(), "{shipped}");
    let done = value(&updated[2]);
    assert_eq!(done["version"], json!(4));
    assert_eq!(done["user"], json!("column-user"), "{done}");
    assert!(done.get("correlationId").is_none(), "{done}");
    assert_eq!(summary.events, 5);
}

/// 10,000 updates of one row, one transaction each, arrive in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_updates_of_one_row_keep_commit_order() {
    const UPDATES: usize = 10_000;
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let running = env.run(env.config(STORY_ENTITIES, "")).await;
    env.sql("insert into public.orders (id, tenant_id, status) values (1, 5, 'NEW')");
    env.sql(&format!(
        "do $$ begin
           for i in 1..{UPDATES} loop
             update public.orders set version = version + 1, status = 's' || i where id = 1;
             commit;
           end loop;
         end $$"
    ));
    let started = std::time::Instant::now();
    let updated = env.consume("core.orders.order.updated", UPDATES).await;
    let elapsed = started.elapsed();
    let summary = running.stop().await;

    let versions: Vec<i64> = updated
        .iter()
        .map(|r| value(r)["version"].as_i64().expect("integer version"))
        .collect();
    let expected: Vec<i64> = (2..=(UPDATES as i64 + 1)).collect();
    if versions != expected {
        let first_bad = versions
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(versions.len());
        panic!(
            "versions out of commit order at offset {first_bad}: {:?}",
            &versions[first_bad.saturating_sub(3)..(first_bad + 3).min(versions.len())]
        );
    }
    assert!(updated.iter().all(|r| key(r) == "5:1"));
    assert_eq!(summary.events, UPDATES as u64 + 1);
    println!("10,000 single-row transactions consumed {elapsed:?} after the last commit");
}

/// Quoted, mixed-case, non-ASCII schema, table and column names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_quoted_names() {
    const DDL: &str = r#"
create schema "Sales Ünits";
create table "Sales Ünits"."Order Lines" (
    "Line Id" bigint primary key, "Mandant Nr" bigint not null, "Menge Ü" int,
    "Beschreibung" text, "Ver" int not null);"#;
    const ENTITIES: &str = r#"
  - name: OrderLine
    table: '"Sales Ünits"."Order Lines"'
    tenantColumn: Mandant Nr
    versionColumn: Ver
    streaming:
      topicPrefix: sales.units
      eventPayloadMode: full
"#;
    let env = Env::start(DDL, ENTITIES).await;
    let running = env.run(env.config(ENTITIES, "")).await;
    env.sql(r#"insert into "Sales Ünits"."Order Lines" values (1, 9, 3, 'Größe ✓ 日本', 1)"#);
    env.sql(
        r#"update "Sales Ünits"."Order Lines" set "Menge Ü" = 4, "Ver" = 2 where "Line Id" = 1"#,
    );

    let created = env.consume("sales.units.orderline.created", 1).await;
    let updated = env.consume("sales.units.orderline.updated", 1).await;
    let summary = running.stop().await;
    let tx = env.probe(2).await;

    assert_eq!(key(&created[0]), "9:1");
    let create = value(&created[0]);
    assert_eq!(create["eventId"], json!(tx[0].event_id(0)));
    assert_eq!(create["entityType"], json!("OrderLine"));
    assert_eq!(create["tenantId"], json!(9));
    assert_eq!(
        exact(&create["payload"]),
        exact(
            &json!({"Line Id": 1, "Mandant Nr": 9, "Menge Ü": 3, "Beschreibung": "Größe ✓ 日本", "Ver": 1})
        )
    );
    let update = value(&updated[0]);
    assert_eq!(
        exact(&update["changes"]),
        exact(&json!({"Menge Ü": {"old": 3, "new": 4}, "Ver": {"old": 1, "new": 2}}))
    );
    assert_eq!(
        headers(&updated[0]),
        expected_headers("9", "OrderLine", "UPDATE", &tx[1].event_id(0))
    );
    assert_eq!(summary.events, 2);
}

/// A row without a tenant becomes a dead letter with its reason, and the slot moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_without_tenant_is_dead_lettered_and_the_slot_advances() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let running = env.run(env.config(STORY_ENTITIES, "")).await;
    env.sql("insert into public.products values (77, null, 'Orphan', 1.00, 1)");
    env.sql("insert into public.products values (78, 3, 'Fine', 2.00, 1)");

    let letters = env.consume("dlq.events", 1).await;
    let fine = env.consume("core.catalog.product.created", 1).await;
    let tx = env.probe(2).await;
    // The slot moves past the dead-lettered transaction while the pipeline runs.
    eventually(
        "confirmed_flush_lsn past the dead letter",
        Duration::from_secs(10),
        || env.confirmed_flush() >= tx[0].end_lsn,
    )
    .await;
    let summary = running.stop().await;

    let letter = value(&letters[0]);
    println!("dead letter: {letter}");
    assert_eq!(letter["eventId"], json!(tx[0].event_id(0)), "{letter}");
    let reason = letter["failureReason"]
        .as_str()
        .expect("failureReason text");
    assert_eq!(
        reason,
        format!(
            "entity Product event {}: no tenant (column tenant_id is null)",
            tx[0].event_id(0)
        )
    );
    assert_eq!(letter["originalEvent"], Json::Null);
    assert_eq!(letter["source"]["change"], json!("insert"));
    assert_eq!(
        letter["source"]["commitLsn"],
        json!(tx[0].commit_lsn.to_string())
    );
    assert_eq!(letter["source"]["table"], json!("products"), "{letter}");
    assert_eq!(letter["source"]["entity"], json!("Product"), "{letter}");
    assert!(
        letters[0]
            .headers
            .iter()
            .any(|(n, v)| n == "failureReason" && v == reason.as_bytes()),
        "failureReason header: {:?}",
        letters[0].headers
    );
    assert_eq!(key(&fine[0]), "3:78");
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(summary.events, 1);
    assert!(env.confirmed_flush() >= tx[1].end_lsn);
}

/// After a graceful stop the slot's confirmed_flush_lsn is exactly what the pipeline
/// confirmed (its RunSummary), and that is the end LSN of the last transaction when no other
/// WAL was written, or a keepalive's WAL end received while nothing was in flight: a quiet
/// stream and transactions of unpublished tables move the slot too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_confirms_exactly_the_last_transaction() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    env.sql("create table public.audit_log (id int)");
    let running = env.run(env.config(STORY_ENTITIES, "")).await;
    for id in 1..=20 {
        env.sql(&format!(
            "insert into public.orders (id, tenant_id, status) values ({id}, 1, 'NEW')"
        ));
    }
    env.consume("core.orders.order.created", 20).await;
    let tx = env.probe(20).await;
    let last = *tx.last().expect("transactions");
    // Everything acknowledged: the slot reaches the last transaction's end while running.
    eventually(
        "the last transaction confirmed",
        Duration::from_secs(10),
        || env.confirmed_flush() >= last.end_lsn,
    )
    .await;
    let running_confirmed = env.confirmed_flush();
    let flushed: Lsn = env
        .sql("select pg_current_wal_flush_lsn()")
        .parse()
        .expect("lsn");
    println!(
        "last commit end {} confirmed {running_confirmed} (wal flushed {flushed})",
        last.end_lsn
    );
    assert!(running_confirmed <= flushed);

    // WAL the publication does not cover: no events, yet the idle slot follows it.
    env.sql(
        "set synchronous_commit to on; insert into public.audit_log select generate_series(1, 100)",
    );
    let unpublished_end: Lsn = env
        .sql("select pg_current_wal_flush_lsn()")
        .parse()
        .expect("lsn");
    eventually(
        "the slot past unpublished WAL",
        Duration::from_secs(15),
        || env.confirmed_flush() >= unpublished_end,
    )
    .await;

    let summary = running.stop().await;
    let confirmed = env.confirmed_flush();
    let flushed: Lsn = env
        .sql("select pg_current_wal_flush_lsn()")
        .parse()
        .expect("lsn");
    println!("after unpublished WAL ending {unpublished_end}: confirmed {confirmed} (wal flushed {flushed})");
    assert_eq!(
        confirmed, summary.confirmed,
        "the slot has the final status exactly"
    );
    assert!(confirmed >= unpublished_end && confirmed <= flushed);
    assert_eq!(summary.events, 20);
    assert_eq!(
        summary.changes, 20,
        "audit_log is not published: no changes read"
    );
}

/// While Kafka cannot take the records nothing is confirmed. A delivery that times out is
/// retried (`streaming.retries`, 3 by default, after 1, 2 and 4 s), then dead-lettered; with
/// the broker gone the dead letter times out too, which stops the pipeline with an error
/// naming the record's position and the dead-letter topic, confirming nothing past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_confirmed_before_kafka_acknowledges() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let config = env.config(STORY_ENTITIES, "    message.timeout.ms: \"3000\"\n");
    let running = env.run(config).await;
    env.sql("insert into public.orders (id, tenant_id, status) values (1, 1, 'NEW')");
    env.consume("core.orders.order.created", 1).await;
    let first = env.probe(1).await[0];
    eventually(
        "the first transaction confirmed",
        Duration::from_secs(10),
        || env.confirmed_flush() >= first.end_lsn,
    )
    .await;
    let before = env.confirmed_flush();

    // The broker goes away for good; the next transactions cannot be delivered.
    let pid = env.broker.pid().expect("tansu started by the test");
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill tansu");
    assert!(status.success());
    env.sql("insert into public.orders (id, tenant_id, status) values (2, 1, 'NEW')");
    env.sql("update public.orders set status = 'PAID', version = 2 where id = 1");
    let tx = env.probe(3).await;
    assert_eq!(tx.len(), 3);

    // Status updates go out every 200 ms and keepalives keep coming: the slot must not move
    // past the undelivered transactions, whatever the WAL end says.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = env.confirmed_flush();
        assert!(
            now < tx[1].end_lsn,
            "confirmed {now} passed undelivered transaction ending {}",
            tx[1].end_lsn
        );
    }
    let outcome = tokio::time::timeout(Duration::from_secs(60), running.task)
        .await
        .expect("pipeline did not stop after the delivery timeout")
        .expect("pipeline task panicked");
    match outcome {
        Err(PipelineError::DeadLetterWrite {
            position, topic, ..
        }) => {
            // Whichever partition times out first reports first.
            let expected = [tx[1].event_id(0), tx[2].event_id(0)];
            assert_eq!(topic, "dlq.events");
            assert!(
                expected.contains(&position),
                "undelivered record {position}, expected one of {expected:?}"
            );
        }
        other => panic!("expected a delivery error, got {other:?}"),
    }
    let after = env.confirmed_flush();
    assert!(
        after >= before && after < tx[1].end_lsn,
        "confirmed {after} after the failure"
    );
    println!(
        "slot held at {after} (first tx ended {}, undelivered from {})",
        first.end_lsn, tx[1].commit_lsn
    );
}

/// PostgreSQL restarts under the running pipeline: the stream reconnects, resumes from the
/// slot, and every change before, during and after arrives (duplicates allowed, none lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_is_survived() {
    let mut env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let running = env.run(env.config(STORY_ENTITIES, "")).await;
    for id in 1..=5 {
        env.sql(&format!(
            "insert into public.orders (id, tenant_id, status) values ({id}, 1, 'NEW')"
        ));
    }
    env.consume("core.orders.order.created", 5).await;
    let before_tx = env.probe(5).await;
    eventually("1..=5 confirmed", Duration::from_secs(10), || {
        env.confirmed_flush() >= before_tx[4].end_lsn
    })
    .await;
    let before = env.confirmed_flush();
    env.pg.restart().expect("restarting postgres");
    let after = env.confirmed_flush();
    println!("slot confirmed_flush_lsn {before} before the restart, {after} after it");
    for id in 6..=10 {
        env.sql(&format!(
            "insert into public.orders (id, tenant_id, status) values ({id}, 1, 'NEW')"
        ));
    }
    env.sql("update public.orders set status = 'PAID', version = 2 where id = 6");
    tokio::time::sleep(Duration::from_secs(3)).await;
    if running.task.is_finished() {
        let outcome = running.task.await.expect("pipeline task panicked");
        panic!("the pipeline stopped after the restart: {outcome:?}");
    }
    let updated = env.consume("core.orders.order.updated", 1).await;
    assert_eq!(value(&updated[0])["entityId"], json!("6"));
    // PostgreSQL 15 does not persist a logical slot's confirmed_flush_lsn at shutdown when
    // only it moved, so the server may resend some of 1..=5: read until all ten are in.
    let expected: Vec<String> = (1..=10).map(|id| id.to_string()).collect();
    let mut n = 10;
    let ids = loop {
        let records = env.consume("core.orders.order.created", n).await;
        let ids: Vec<String> = records
            .iter()
            .map(|r| value(r)["entityId"].as_str().expect("entityId").to_owned())
            .collect();
        if expected.iter().all(|id| ids.contains(id)) {
            break ids;
        }
        assert!(n < 15, "created before and after the restart: {ids:?}");
        n += 1;
    };
    let summary = running.stop().await;
    println!("created records across the restart: {ids:?}");
    let tx = env.probe(11).await;
    assert!(summary.confirmed >= tx[10].end_lsn, "{summary:?}");
    assert_eq!(env.confirmed_flush(), summary.confirmed);
}

/// `topicPerEntity: true`: an entity's whole history, key change included, on one topic in
/// commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_per_entity_keeps_the_whole_history_in_order() {
    const ENTITIES: &str = "
  - name: Order
    table: public.orders
    tenantColumn: tenant_id
    versionColumn: version
    userColumn: updated_by
    streaming:
      topicPrefix: core.orders
      topicPerEntity: true
      eventPayloadMode: diff
";
    let env = Env::start(STORY_DDL, ENTITIES).await;
    let running = env.run(env.config(ENTITIES, "")).await;
    env.sql("insert into public.orders (id, tenant_id, status) values (1, 4, 'NEW')");
    env.sql("update public.orders set status = 'PAID', version = 2 where id = 1");
    env.sql("update public.orders set id = 2, version = 3 where id = 1");
    env.sql("delete from public.orders where id = 2");
    let records = env.consume("core.orders.order", 5).await;
    let summary = running.stop().await;
    let tx = env.probe(4).await;

    let seen: Vec<(String, String, String, Json)> = records
        .iter()
        .map(|r| {
            let v = value(r);
            (
                key(r),
                v["changeType"].as_str().expect("changeType").to_owned(),
                v["eventId"].as_str().expect("eventId").to_owned(),
                v["version"].clone(),
            )
        })
        .collect();
    let expected = vec![
        (
            "4:1".to_owned(),
            "CREATE".to_owned(),
            tx[0].event_id(0),
            json!(1),
        ),
        (
            "4:1".to_owned(),
            "UPDATE".to_owned(),
            tx[1].event_id(0),
            json!(2),
        ),
        (
            "4:1".to_owned(),
            "DELETE".to_owned(),
            format!("{}:delete", tx[2].event_id(0)),
            // The delete half of a key change describes that change: the version it made.
            json!(3),
        ),
        (
            "4:2".to_owned(),
            "CREATE".to_owned(),
            format!("{}:create", tx[2].event_id(0)),
            json!(3),
        ),
        (
            "4:2".to_owned(),
            "DELETE".to_owned(),
            tx[3].event_id(0),
            json!(3),
        ),
    ];
    assert_eq!(seen, expected);
    assert_eq!(summary.changes, 4);
    assert_eq!(summary.events, 5);
}

/// A record Kafka refuses for good (too large) goes to the dead-letter topic with its topic,
/// eventId and reason; its transaction is confirmed and the events after it flow on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_too_large_is_dead_lettered() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let config = env.config(STORY_ENTITIES, "    message.max.bytes: \"20000\"\n");
    let running = env.run(config).await;
    env.sql("insert into public.products values (1, 2, repeat('x', 50000), 1.00, 1)");
    env.sql("insert into public.products values (2, 2, 'small', 1.00, 1)");
    tokio::time::sleep(Duration::from_secs(3)).await;
    if running.task.is_finished() {
        let outcome = running.task.await.expect("pipeline task panicked");
        panic!("the pipeline stopped: {outcome:?}");
    }
    let letters = env.consume("dlq.events", 1).await;
    let created = env.consume("core.catalog.product.created", 1).await;
    let tx = env.probe(2).await;
    eventually(
        "the slot past the dead letter",
        Duration::from_secs(10),
        || env.confirmed_flush() >= tx[1].end_lsn,
    )
    .await;
    let summary = running.stop().await;

    let letter = value(&letters[0]);
    assert_eq!(letter["eventId"], json!(tx[0].event_id(0)), "{letter:.300}");
    let reason = letter["failureReason"].as_str().expect("failureReason");
    assert!(
        reason.contains("core.catalog.product.created"),
        "reason names the topic: {reason}"
    );
    assert_eq!(
        letter["source"]["topic"],
        json!("core.catalog.product.created")
    );
    assert_eq!(
        letter["source"]["valueOmitted"],
        json!(true),
        "{letter:.300}"
    );
    assert!(letter["source"]["valueBytes"].as_u64().expect("valueBytes") > 50_000);
    assert_eq!(letter["originalEvent"]["key"], json!("2:1"));
    assert_eq!(letter["originalEvent"]["value"], json!(""));
    assert_eq!(key(&created[0]), "2:2");
    assert_eq!(summary.events, 2);
}

/// A Kafka that cannot be reached at start: the pipeline waits (and does not touch the
/// slot), stops cleanly when asked, and the changes made meanwhile arrive once Kafka is
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_kafka_at_start_confirms_nothing() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let port = entity_cdc_integration::pg::free_port().expect("free port");
    let text = env
        .yaml(STORY_ENTITIES, "")
        .replace(env.broker.bootstrap(), &format!("127.0.0.1:{port}"));
    let config = Config::from_yaml_str(&text, "unreachable.yaml").expect("config");
    let before = env.confirmed_flush();
    let running = Running::start(config);
    env.sql("insert into public.orders (id, tenant_id, status) values (1, 8, 'NEW')");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!running.task.is_finished(), "the pipeline gave up on kafka");
    assert_eq!(
        env.sql("select active from pg_replication_slots where slot_name = 'entity_cdc'"),
        "f",
        "the slot is not streamed before kafka is reached"
    );
    assert_eq!(env.confirmed_flush(), before);
    let summary = running.stop().await;
    assert_eq!(summary, RunSummary::default());
    assert_eq!(env.confirmed_flush(), before);

    let running = env.run(env.config(STORY_ENTITIES, "")).await;
    let created = env.consume("core.orders.order.created", 1).await;
    running.stop().await;
    assert_eq!(key(&created[0]), "8:1");
}

/// A stop in the middle of a stream drains what was handed to Kafka and confirms exactly up
/// to it: the next run starts there, so only the transaction cut by the stop (if any) comes
/// twice, and nothing is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_mid_stream_drains_and_resumes_without_gap() {
    const TRANSACTIONS: i64 = 2_000;
    const ROWS: i64 = 10;
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let running = env.run(env.config(STORY_ENTITIES, "")).await;
    env.sql(&format!(
        "do $$ begin
           for t in 0..{TRANSACTIONS} - 1 loop
             insert into public.orders (id, tenant_id, status)
               select t * {ROWS} + i, 1, 'NEW' from generate_series(1, {ROWS}) i;
             commit;
           end loop;
         end $$"
    ));
    // Stop while the backlog streams: once the 100th transaction is confirmed.
    let hundredth = env.probe(100).await[99];
    eventually("100 transactions out", Duration::from_secs(30), || {
        env.confirmed_flush() >= hundredth.end_lsn
    })
    .await;
    let first = running.stop().await;
    let confirmed = env.confirmed_flush();
    assert_eq!(confirmed, first.confirmed);
    let running = env.run(env.config(STORY_ENTITIES, "")).await;
    let total = (TRANSACTIONS * ROWS) as u64;
    let tx = env.probe(TRANSACTIONS as usize).await;
    eventually("everything confirmed", Duration::from_secs(60), || {
        env.confirmed_flush() >= tx[tx.len() - 1].end_lsn
    })
    .await;
    let second = running.stop().await;
    let records = env
        .consume(
            "core.orders.order.created",
            (first.events + second.events) as usize,
        )
        .await;
    let ids: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let v = value(r);
            (
                v["entityId"].as_str().expect("entityId").to_owned(),
                v["eventId"].as_str().expect("eventId").to_owned(),
            )
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct.len() as u64, total, "every row once at least");
    let (first_run, second_run) = ids.split_at(first.events as usize);
    let first_ids: std::collections::HashSet<&String> = first_run.iter().map(|(_, e)| e).collect();
    let mut duplicate_count = 0;
    for (_, event_id) in second_run {
        let lsn: Lsn = event_id
            .split(':')
            .next()
            .expect("lsn part")
            .parse()
            .expect("eventId lsn");
        assert!(
            lsn >= confirmed,
            "the second run resent {event_id}, below the confirmed {confirmed}"
        );
        if first_ids.contains(event_id) {
            duplicate_count += 1;
        }
    }
    println!(
        "stopped at {confirmed} after {} of {total} events; {} in the second run, {duplicate_count} duplicates",
        first.events, second.events
    );
    assert!(
        duplicate_count <= ROWS as usize,
        "only the transaction cut by the stop comes twice: {duplicate_count} duplicates"
    );
}

/// `run` reports every dead letter to the operator alerts: two rows without a tenant in one
/// transaction make one webhook alert naming both eventIds, their topic and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_raise_one_aggregated_alert() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let receiver = WebhookReceiver::start().await.expect("webhook receiver");
    let yaml = env.yaml(STORY_ENTITIES, "").replace(
        "entities:",
        &format!(
            "alerts:\n  intervalSeconds: 1\n  webhook: {{ url: \"{}\" }}\nentities:",
            receiver.url()
        ),
    );
    let config = Config::from_yaml_str(&yaml, "test connector.yaml")
        .unwrap_or_else(|e| panic!("config invalid: {e}\n{yaml}"));
    let running = env.run(config).await;
    env.sql(
        "begin; insert into public.products values (77, null, 'Orphan', 1.00, 1);
         insert into public.products values (78, null, 'Orphan too', 2.00, 1); commit;",
    );
    let letters = env.consume("dlq.events", 2).await;
    let tx = env.probe(1).await;
    let requests = receiver
        .wait_for(1, Duration::from_secs(20))
        .await
        .expect("the alert");
    let summary = running.stop().await;

    assert_eq!(letters.len(), 2);
    assert_eq!(summary.dead_lettered, 2);
    let reason = |i: u32| {
        format!(
            "entity Product event {}: no tenant (column tenant_id is null)",
            tx[0].event_id(i)
        )
    };
    let text = format!(
        "entity-cdc on {db}, slot entity_cdc: 2 events dead-lettered since the last alert\n\
         event ids (first 2 of 2):\n  {id0}\n  {id1}\n\
         topics:\n  core.catalog.product.created: 2\n\
         reasons:\n  {r0}: 1\n  {r1}: 1\n\
         retries before dead-lettering: at most 0\n\
         the records are on the dead-letter topic; see docs/operations.md, \"Alerts\"\n",
        db = env.db,
        id0 = tx[0].event_id(0),
        id1 = tx[0].event_id(1),
        r0 = reason(0),
        r1 = reason(1),
    );
    assert_eq!(
        requests[0].body,
        json!({ "text": text }).to_string(),
        "{}",
        requests[0].body
    );
    assert_eq!(receiver.requests().len(), 1, "one alert for both");
}
