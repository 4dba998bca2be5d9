//! `format: avro` end to end: `pipeline::run` in-process against a real PostgreSQL, a real
//! Kafka-protocol broker (tansu) and the test Schema Registry (`registry.rs`). A consumer
//! reads the records back, checks the Confluent framing (magic byte, schema id), fetches
//! the schema by its id over HTTP and decodes the body with apache-avro: every mapped type
//! must come back as the exact value PostgreSQL holds.

use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use entity_cdc::cli::database_target;
use entity_cdc::config::Config;
use entity_cdc::pipeline::{self, PipelineError, RunSummary};
use entity_cdc::source::{setup, sql, Lsn};
use entity_cdc_integration::story::STORY_ENTITIES;
use entity_cdc_integration::{
    ConsumedRecord, KafkaBroker, PgServer, PgServerOptions, SchemaRegistry,
};
use serde_json::{json, Value as Json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

/// PostgreSQL, broker and registry, with the tables created and setup applied.
struct Env {
    pg: PgServer,
    broker: KafkaBroker,
    /// None while a test has it stopped.
    registry: Option<SchemaRegistry>,
    registry_url: String,
    db: String,
    entities: String,
    /// `schemaRegistry.subjectNameStrategy`.
    strategy: &'static str,
}

impl Env {
    async fn start(ddl: &str, entities: &str) -> Env {
        Env::start_with(ddl, entities, &[]).await
    }

    /// With these server settings on top of the integration defaults.
    async fn start_with(ddl: &str, entities: &str, settings: &[(&str, &str)]) -> Env {
        // The tests' own HTTP client needs it as much as the connector's.
        entity_cdc::codec::avro::registry::install_crypto_provider();
        let pg = PgServer::start_with(PgServerOptions {
            settings: settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            ..PgServerOptions::default()
        })
        .expect("starting postgres");
        let db = pg.create_database("app").expect("creating database app");
        pg.psql_db(&db, ddl).expect("creating the tables");
        let broker = KafkaBroker::start().expect("starting tansu");
        let registry = SchemaRegistry::start()
            .await
            .expect("starting the test registry");
        let registry_url = registry.url();
        let env = Env {
            pg,
            broker,
            registry: Some(registry),
            registry_url,
            db,
            entities: entities.to_owned(),
            strategy: "topic",
        };
        let config = env.config();
        let target = database_target(&config);
        let mut client = sql::connect(&target.params)
            .await
            .expect("connecting for setup");
        let plan = setup::plan(&client, &target).await.expect("setup plan");
        setup::apply(&mut client, &plan).await.expect("setup apply");
        env
    }

    fn config(&self) -> Config {
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
  topics: {{ create: true, partitions: 1, replicationFactor: 1 }}
  librdkafka:
    linger.ms: \"5\"
format: avro
schemaRegistry:
  url: {registry}
  subjectNameStrategy: {strategy}
streaming:
  dlqTopic: dlq.events
entities:{entities}",
            port = self.pg.port,
            db = self.db,
            kafka = self.broker.bootstrap(),
            registry = self.registry_url,
            entities = self.entities,
            strategy = self.strategy,
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

    /// The pid of the walsender streaming the slot.
    fn walsender_pid(&self) -> String {
        self.sql("select active_pid from pg_replication_slots where slot_name = 'entity_cdc'")
    }

    async fn run(&self) -> Running {
        let config = self.config();
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let task = tokio::spawn(async move { pipeline::run(&config, token).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.sql("select active from pg_replication_slots where slot_name = 'entity_cdc'")
            != "t"
        {
            assert!(!task.is_finished(), "the pipeline stopped at start");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pipeline did not start streaming"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Running { cancel, task }
    }

    async fn consume(&self, topic: &str, n: usize) -> Vec<ConsumedRecord> {
        self.broker
            .consume(topic, n, CONSUME_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("consuming {n} from {topic}: {e:#}"))
    }

    /// GET on the registry, as JSON.
    async fn get(&self, path: &str) -> Json {
        let url = format!("{}{path}", self.registry_url);
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let text = response.text().await.expect("registry body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
    }

    /// Sets a subject's compatibility level.
    async fn set_compatibility(&self, subject: &str, level: &str) {
        let url = format!("{}/config/{subject}", self.registry_url);
        let response = reqwest::Client::new()
            .put(&url)
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(json!({ "compatibility": level }).to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "PUT {url}");
    }

    /// The schema id of a framed value, after checking the magic byte.
    fn schema_id(bytes: &[u8]) -> u32 {
        assert_eq!(bytes.first(), Some(&0u8), "magic byte");
        u32::from_be_bytes(bytes[1..5].try_into().expect("4-byte id"))
    }

    /// Decodes a framed value with the schema fetched by its id.
    async fn decode(&self, bytes: &[u8]) -> (u32, Vec<(String, Avro)>) {
        let id = Env::schema_id(bytes);
        let schema = self.get(&format!("/schemas/ids/{id}")).await;
        let text = schema["schema"].as_str().expect("schema text");
        let schema = Schema::parse_str(text).unwrap_or_else(|e| panic!("schema {id}: {e}"));
        let value = GenericDatumReader::builder(&schema)
            .build()
            .expect("datum reader")
            .read_value(&mut &bytes[5..])
            .unwrap_or_else(|e| panic!("decoding with schema {id}: {e}"));
        match value {
            Avro::Record(fields) => (id, fields),
            other => panic!("not a record: {other:?}"),
        }
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

    /// Waits for the pipeline to stop on its own with an error.
    async fn failure(self) -> PipelineError {
        match tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("pipeline did not stop within 60 s")
            .expect("pipeline task panicked")
        {
            Ok(summary) => panic!("pipeline ended without error: {summary:?}"),
            Err(e) => e,
        }
    }
}

fn field<'a>(fields: &'a [(String, Avro)], name: &str) -> &'a Avro {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
}

/// The fields of a `["null", record]` union holding a record.
fn record<'a>(value: &'a Avro, what: &str) -> &'a [(String, Avro)] {
    match value {
        Avro::Union(1, inner) => match inner.as_ref() {
            Avro::Record(fields) => fields,
            other => panic!("{what}: not a record: {other:?}"),
        },
        other => panic!("{what}: not a present record: {other:?}"),
    }
}

fn some(branch: u32, value: Avro) -> Avro {
    Avro::Union(branch, Box::new(value))
}

fn null() -> Avro {
    Avro::Union(0, Box::new(Avro::Null))
}

fn text(s: &str) -> Avro {
    Avro::String(s.to_owned())
}

fn ints(values: &[i32]) -> Avro {
    Avro::Array(values.iter().map(|&v| Avro::Int(v)).collect())
}

const TYPED_DDL: &str = r#"
create type mood as enum ('happy', 'in progress');
create table public.typed (
    id int primary key, tenant_id bigint not null,
    i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision,
    n_fixed numeric(10,2), n_free numeric, b boolean,
    t text, vc varchar(10), bp char(5), u uuid,
    d date, tm time, ts timestamp, tstz timestamptz, iv interval,
    j json, jb jsonb, by bytea, m mood, arr int[], tarr text[], pt point, ip inet);"#;

const TYPED_ENTITY: &str = "
  - name: Typed
    table: public.typed
    tenantColumn: tenant_id
    streaming:
      topicPrefix: test
      eventPayloadMode: diff
";

/// Every type of the mapping (docs/types.md) round-trips to the exact value PostgreSQL
/// holds; the key and the framing are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_exactly() {
    let env = Env::start(TYPED_DDL, TYPED_ENTITY).await;
    let running = env.run().await;
    env.sql(
        r#"insert into public.typed values (1, 123,
            -32768, 2147483647, -9223372036854775808, 1.5, 2.25,
            12345678.91, 3.14159265358979323846264338327950288, true,
            'héllo', 'abc', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '2024-02-29', '23:59:59.999999', '2024-02-29 12:34:56.789012',
            '2024-02-29 12:34:56.789012+02', '1 year 2 months -3 days 04:05:06.789',
            '{"a": [1, 2.50]}', '{"b": 1, "a": 2}', '\x00ff10', 'in progress',
            '{{1,NULL},{3,4}}', '[0:1]={"x",NULL}', '(1.5,-2)', '192.168.0.1/24')"#,
    );
    env.sql(
        "insert into public.typed (id, tenant_id, f4, f8, n_fixed, n_free, d, ts, tstz, arr)
         values (2, 123, 'NaN', '-Infinity', 'NaN', '-Infinity', 'infinity', '-infinity',
                 'infinity', '{}')",
    );
    let records = env.consume("test.typed.created", 2).await;
    running.stop().await;
    assert_eq!(
        env.registry.as_ref().map(SchemaRegistry::register_requests),
        Some(2),
        "the value and the key schema registered once, not per event"
    );

    // Value schema registered first (id 1), then the key schema (id 2).
    let key = records[0].key.as_deref().expect("key");
    let mut expected_key = vec![0, 0, 0, 0, 2, 10];
    expected_key.extend_from_slice(b"123:1");
    assert_eq!(
        key,
        expected_key.as_slice(),
        "key: magic, id 2, avro string"
    );
    let key_schema = env.get("/schemas/ids/2").await;
    assert_eq!(key_schema, json!({"schema": "\"string\""}));
    let subjects = env.get("/subjects").await;
    assert_eq!(
        subjects,
        json!(["test.typed.created-key", "test.typed.created-value"])
    );

    // The enum column's labels travel as metadata of its string branch.
    let value_schema: Json = serde_json::from_str(
        env.get("/schemas/ids/1").await["schema"]
            .as_str()
            .expect("schema text"),
    )
    .expect("schema JSON");
    let payload_row = &value_schema["fields"][10]["type"][1]["fields"];
    let m = payload_row
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["name"] == "m"))
        .expect("field m");
    assert_eq!(
        m["type"],
        json!(["null", {"type": "string", "pg.enum": "public.mood", "pg.labels": ["happy", "in progress"]}])
    );
    assert_eq!(
        (&m["pg.name"], &m["pg.type"]),
        (&json!("m"), &json!("public.mood"))
    );

    let (id, first) = env
        .decode(records[0].payload.as_deref().expect("value"))
        .await;
    assert_eq!(id, 1);
    assert_eq!(field(&first, "entityId"), &text("1"));
    assert_eq!(field(&first, "tenantId"), &Avro::Long(123));
    assert_eq!(field(&first, "changeType"), &Avro::Enum(0, "CREATE".into()));
    let row = record(field(&first, "payload"), "payload");
    let expected: Vec<(&str, Avro)> = vec![
        ("id", some(1, Avro::Int(1))),
        ("tenant_id", some(1, Avro::Long(123))),
        ("i2", some(1, Avro::Int(-32768))),
        ("i4", some(1, Avro::Int(2_147_483_647))),
        ("i8", some(1, Avro::Long(i64::MIN))),
        ("f4", some(1, Avro::Float(1.5))),
        ("f8", some(1, Avro::Double(2.25))),
        (
            "n_fixed",
            some(
                1,
                Avro::Decimal(apache_avro::Decimal::from(vec![0x49, 0x96, 0x02, 0xD3])),
            ),
        ),
        (
            "n_free",
            some(1, text("3.14159265358979323846264338327950288")),
        ),
        ("b", some(1, Avro::Boolean(true))),
        ("t", some(1, text("héllo"))),
        ("vc", some(1, text("abc"))),
        ("bp", some(1, text("ab   "))),
        (
            "u",
            some(
                1,
                Avro::Uuid(
                    apache_avro::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
                        .expect("uuid"),
                ),
            ),
        ),
        ("d", some(1, Avro::Date(19_782))),
        ("tm", some(1, Avro::TimeMicros(86_399_999_999))),
        (
            "ts",
            some(1, Avro::LocalTimestampMicros(1_709_210_096_789_012)),
        ),
        (
            "tstz",
            some(1, Avro::TimestampMicros(1_709_202_896_789_012)),
        ),
        (
            "iv",
            some(
                1,
                Avro::Record(vec![
                    ("months".into(), Avro::Int(14)),
                    ("days".into(), Avro::Int(-3)),
                    ("micros".into(), Avro::Long(14_706_789_000)),
                ]),
            ),
        ),
        ("j", some(1, text(r#"{"a": [1, 2.50]}"#))),
        ("jb", some(1, text(r#"{"a": 2, "b": 1}"#))),
        ("by", some(1, Avro::Bytes(vec![0x00, 0xFF, 0x10]))),
        ("m", some(1, text("in progress"))),
        (
            "arr",
            some(
                1,
                Avro::Record(vec![
                    ("dims".into(), ints(&[2, 2])),
                    ("lbounds".into(), ints(&[1, 1])),
                    (
                        "elements".into(),
                        Avro::Array(vec![
                            some(1, Avro::Int(1)),
                            null(),
                            some(1, Avro::Int(3)),
                            some(1, Avro::Int(4)),
                        ]),
                    ),
                ]),
            ),
        ),
        (
            "tarr",
            some(
                1,
                Avro::Record(vec![
                    ("dims".into(), ints(&[2])),
                    ("lbounds".into(), ints(&[0])),
                    (
                        "elements".into(),
                        Avro::Array(vec![some(1, text("x")), null()]),
                    ),
                ]),
            ),
        ),
        ("pt", some(1, text("(1.5,-2)"))),
        ("ip", some(1, text("192.168.0.1/24"))),
    ];
    assert_eq!(row.len(), expected.len(), "one field per column: {row:?}");
    for ((name, actual), (expected_name, expected_value)) in row.iter().zip(&expected) {
        assert_eq!(name, expected_name);
        assert_eq!(actual, expected_value, "column {name}");
    }

    // The specials: NaN and infinities in their string branches, an empty array.
    let (id, second) = env
        .decode(records[1].payload.as_deref().expect("value"))
        .await;
    assert_eq!(id, 1, "same schema");
    assert_eq!(
        records[1].key.as_deref().map(|k| k[5..].to_vec()),
        Some([&[10u8][..], b"123:2"].concat())
    );
    let row = record(field(&second, "payload"), "payload");
    match field(row, "f4") {
        Avro::Union(1, inner) => match inner.as_ref() {
            Avro::Float(f) => assert!(f.is_nan(), "f4 NaN, got {f}"),
            other => panic!("f4: {other:?}"),
        },
        other => panic!("f4: {other:?}"),
    }
    assert_eq!(field(row, "f8"), &some(1, Avro::Double(f64::NEG_INFINITY)));
    assert_eq!(field(row, "n_fixed"), &some(2, text("NaN")));
    assert_eq!(field(row, "n_free"), &some(1, text("-Infinity")));
    assert_eq!(field(row, "d"), &some(2, text("infinity")));
    assert_eq!(field(row, "ts"), &some(2, text("-infinity")));
    assert_eq!(field(row, "tstz"), &some(2, text("infinity")));
    assert_eq!(
        field(row, "arr"),
        &some(
            1,
            Avro::Record(vec![
                ("dims".into(), ints(&[])),
                ("lbounds".into(), ints(&[])),
                ("elements".into(), Avro::Array(vec![])),
            ])
        )
    );
    for column in ["i2", "t", "u", "iv", "j", "by", "m", "tarr", "pt", "ip"] {
        assert_eq!(field(row, column), &null(), "column {column} is NULL");
    }
}

const STORY_DDL: &str = "
create table public.orders (
    id bigint primary key, tenant_id bigint not null, status text, priority text,
    total numeric(12,2), version int not null default 1, updated_by text);
create table public.products (
    id bigint primary key, tenant_id bigint, name text, price numeric(10,2), version int);";

/// ALTER TABLE add column: the next event has a new schema (new id, the new field). A
/// retype the subject's BACKWARD rule refuses stops the pipeline with the entity, the change
/// and the rule, without confirming the event; with the subject set to NONE, a restart
/// delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_evolution_and_an_incompatible_change() {
    let env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let running = env.run().await;
    env.sql("insert into public.orders (id, tenant_id, status) values (1, 7, 'NEW')");
    let first = env.consume("core.orders.order.created", 1).await;
    env.sql("alter table public.orders add column note text");
    env.sql("insert into public.orders (id, tenant_id, status, note) values (2, 7, 'NEW', 'hi')");
    let records = env.consume("core.orders.order.created", 2).await;
    assert_eq!(records[0].payload, first[0].payload);

    let (id1, one) = env
        .decode(records[0].payload.as_deref().expect("value"))
        .await;
    let (id2, two) = env
        .decode(records[1].payload.as_deref().expect("value"))
        .await;
    assert_eq!(
        (id1, id2),
        (1, 3),
        "ids: value 1, key 2, the new value schema 3"
    );
    let row1 = record(field(&one, "payload"), "payload");
    let row2 = record(field(&two, "payload"), "payload");
    assert!(
        row1.iter().all(|(n, _)| n != "note"),
        "old schema has no note"
    );
    assert_eq!(field(row2, "note"), &some(1, text("hi")));
    assert_eq!(
        env.get("/subjects/core.orders.order.created-value/versions")
            .await,
        json!([1, 2])
    );

    // Retype note text -> int: BACKWARD (the default) refuses it.
    env.sql("alter table public.orders alter column note type int using null");
    let before = env.sql("select pg_current_wal_lsn()");
    let before: Lsn = before.parse().expect("lsn");
    env.sql("insert into public.orders (id, tenant_id, status, note) values (3, 7, 'NEW', 7)");
    let error = running.failure().await.to_string();
    assert!(
        error.contains("entity Order")
            && error.contains("subject core.orders.order.created-value")
            && error.contains("column note retyped from text to int4")
            && error.contains("under compatibility BACKWARD"),
        "error names entity, subject, change and rule: {error}"
    );
    let confirmed = env.confirmed_flush();
    assert!(
        confirmed <= before,
        "confirmed_flush_lsn {confirmed} passed the refused event's transaction (after {before})"
    );
    assert_eq!(
        env.get("/subjects/core.orders.order.created-value/versions")
            .await,
        json!([1, 2]),
        "nothing registered under the refused schema"
    );

    // Fixed: the subject accepts anything; the restart delivers order 3, nothing lost.
    env.set_compatibility("core.orders.order.created-value", "NONE")
        .await;
    let running = env.run().await;
    let records = env.consume("core.orders.order.created", 3).await;
    running.stop().await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for r in &records {
            let (_, fields) = env.decode(r.payload.as_deref().expect("value")).await;
            ids.push(match field(&fields, "entityId") {
                Avro::String(s) => s.clone(),
                other => panic!("entityId {other:?}"),
            });
        }
        ids
    };
    assert_eq!(ids, ["1", "2", "3"]);
    let (id3, three) = env
        .decode(records[2].payload.as_deref().expect("value"))
        .await;
    assert_eq!(id3, 4);
    assert_eq!(
        field(record(field(&three, "payload"), "payload"), "note"),
        &some(1, Avro::Int(7))
    );
    assert_eq!(
        env.get("/config/core.orders.order.created-value").await,
        json!({"compatibilityLevel": "NONE"})
    );
}

/// The registry is down when the first event needs its schema: the pipeline retries and
/// confirms nothing past the event; once the registry answers on its address again, the
/// event goes out. The outage lasts three times the server's `wal_sender_timeout`: the
/// source keeps sending status updates while it waits, so the replication connection
/// stays up (the same walsender before and after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_is_retried_while_nothing_is_confirmed() {
    let mut env = Env::start_with(STORY_DDL, STORY_ENTITIES, &[("wal_sender_timeout", "1s")]).await;
    let addr = env.registry.as_ref().expect("registry").addr();
    env.registry = None;
    let running = env.run().await;
    let walsender = env.walsender_pid();
    let before: Lsn = env.sql("select pg_current_wal_lsn()").parse().expect("lsn");
    env.sql("insert into public.orders (id, tenant_id, status) values (1, 7, 'NEW')");
    // Several status intervals (200 ms), retries and wal_sender_timeouts pass while the
    // registry is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let confirmed = env.confirmed_flush();
    assert!(
        confirmed <= before,
        "confirmed {confirmed} passed the unencoded event (WAL was at {before} before it)"
    );
    assert_eq!(
        env.walsender_pid(),
        walsender,
        "the replication connection was dropped while the registry was down"
    );
    env.registry = Some(
        SchemaRegistry::start_on(addr)
            .await
            .expect("the registry again on its address"),
    );
    let records = env.consume("core.orders.order.created", 1).await;
    running.stop().await;
    let (id, fields) = env
        .decode(records[0].payload.as_deref().expect("value"))
        .await;
    assert_eq!(id, 1);
    assert_eq!(field(&fields, "entityId"), &text("1"));
    assert!(env.confirmed_flush() > before, "confirmed once delivered");
}

/// A stop request while the registry is down ends the wait: the pipeline stops cleanly
/// (exit 0 in `run`) without producing or confirming the waiting event, which the next
/// start reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_registry_is_down_confirms_nothing() {
    let mut env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    let addr = env.registry.as_ref().expect("registry").addr();
    env.registry = None;
    let running = env.run().await;
    let before: Lsn = env.sql("select pg_current_wal_lsn()").parse().expect("lsn");
    env.sql("insert into public.orders (id, tenant_id, status) values (5, 7, 'NEW')");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let summary = running.stop().await;
    assert_eq!(summary.events, 0, "nothing produced: {summary:?}");
    assert!(
        env.confirmed_flush() <= before,
        "confirmed past the waiting event"
    );
    // With the registry back, the next start delivers it.
    env.registry = Some(
        SchemaRegistry::start_on(addr)
            .await
            .expect("registry again"),
    );
    let running = env.run().await;
    let records = env.consume("core.orders.order.created", 1).await;
    running.stop().await;
    let (_, fields) = env
        .decode(records[0].payload.as_deref().expect("value"))
        .await;
    assert_eq!(field(&fields, "entityId"), &text("5"));
}

/// `subjectNameStrategy: record`: the entity's three topics share one value subject, the
/// record's full name; keys keep `<topic>-key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_name_strategy_shares_one_subject_across_topics() {
    let mut env = Env::start(STORY_DDL, STORY_ENTITIES).await;
    env.strategy = "record";
    let running = env.run().await;
    env.sql("insert into public.orders (id, tenant_id, status) values (1, 7, 'NEW')");
    env.sql("update public.orders set status = 'PAID' where id = 1");
    let created = env.consume("core.orders.order.created", 1).await;
    let updated = env.consume("core.orders.order.updated", 1).await;
    running.stop().await;
    let (created_id, _) = env
        .decode(created[0].payload.as_deref().expect("value"))
        .await;
    let (updated_id, fields) = env
        .decode(updated[0].payload.as_deref().expect("value"))
        .await;
    assert_eq!((created_id, updated_id), (1, 1), "one schema, one id");
    let changes = record(field(&fields, "changes"), "changes");
    assert_eq!(
        field(changes, "status"),
        &some(
            1,
            Avro::Record(vec![
                ("old".into(), some(1, text("NEW"))),
                ("new".into(), some(1, text("PAID"))),
            ])
        )
    );
    assert_eq!(
        field(changes, "tenant_id"),
        &null(),
        "unchanged columns are null"
    );
    assert_eq!(
        env.get("/subjects").await,
        json!([
            "core.orders.order.created-key",
            "core.orders.order.updated-key",
            "entity_cdc.Order"
        ])
    );
}
