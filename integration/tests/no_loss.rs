//! The no-loss test: the `entity-cdc run` binary is killed with SIGKILL at random moments
//! while 50,000 changes stream, and restarted each time; at the end every committed change
//! is on Kafka at least once, every copy of an event has the same eventId, and an event has
//! extra copies only if a kill found it unconfirmed (its commit LSN at or past the slot's
//! confirmed_flush_lsn at that kill).
//!
//! The high watermarks the consumer fetches first can be short of the last records on tansu,
//! so reading back goes on until a quiet second past them. `ENTITY_CDC_NO_LOSS_LOGS=<dir>`
//! keeps the connectors' logs there when a change is missing.
//!
//! The binary is `$ENTITY_CDC_BIN`, else `target/<profile>/entity-cdc` next to this test's
//! executable, which the test brings up to date with `cargo build --bin entity-cdc`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use entity_cdc::cli::database_target;
use entity_cdc::config::Config;
use entity_cdc::source::{setup, sql, Lsn};
use entity_cdc_integration::{KafkaBroker, PgServer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Changes the writer commits.
const CHANGE_COUNT: usize = 50_000;

/// Upper bound of a transaction's size.
const MAX_TRANSACTION_ROWS: u64 = 50;

/// The writer paces itself to spread the 50,000 changes over about this long, so the kills
/// land while changes stream; on a loaded machine it goes as fast as it can instead.
const WRITE_DURATION: Duration = Duration::from_secs(15);

const TOPICS: [&str; 2] = ["test.items.item.created", "test.items.item.updated"];

/// A small xorshift generator: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn connector_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ENTITY_CDC_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/no_loss-<hash> -> target/<profile>/entity-cdc
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    // `cargo test -p entity-cdc-integration` builds the library, not the binary: build it
    // here so the test never runs a stale one (a no-op when it is up to date).
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--bin", "entity-cdc", "--manifest-path"])
        .arg(&manifest);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build");
    assert!(status.success(), "cargo build --bin entity-cdc failed");
    let path = profile_dir.join("entity-cdc");
    assert!(path.is_file(), "{} missing after the build", path.display());
    path
}

/// One incarnation of the connector.
struct Connector {
    child: Child,
    incarnation: usize,
}

struct Harness {
    pg: PgServer,
    db: String,
    config_path: PathBuf,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Harness {
    fn sql(&self, sql: &str) -> String {
        self.pg
            .psql_db(&self.db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
    }

    fn slot_state(&self) -> (bool, Lsn) {
        let text = self.sql(
            "select active, confirmed_flush_lsn from pg_replication_slots where slot_name = 'entity_cdc'",
        );
        let (active, lsn) = text
            .split_once('|')
            .unwrap_or_else(|| panic!("slot row {text:?}"));
        (active == "t", lsn.parse().expect("confirmed_flush_lsn"))
    }

    fn start(&self, incarnation: usize) -> Connector {
        let log = std::fs::File::create(self.log_path(incarnation)).expect("connector log");
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        Connector { child, incarnation }
    }

    fn log_path(&self, incarnation: usize) -> PathBuf {
        self.dir.path().join(format!("connector-{incarnation}.log"))
    }

    fn log(&self, incarnation: usize) -> String {
        std::fs::read_to_string(self.log_path(incarnation)).unwrap_or_default()
    }

    /// Waits until the walsender of a killed connector is gone, so the slot is free and its
    /// confirmed_flush_lsn final.
    async fn wait_slot_released(&self) -> Lsn {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (active, lsn) = self.slot_state();
            if !active {
                return lsn;
            }
            assert!(
                Instant::now() < deadline,
                "the slot stayed active after the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Commits CHANGE_COUNT changes (inserts and updates) in transactions of 1..=50 rows and
/// returns every committed (id, version).
async fn write_changes(client: tokio_postgres::Client, seed: u64) -> Vec<(i64, i64)> {
    // As an application would: each commit is flushed, so the walsender may send it at once
    // (the test server runs with synchronous_commit=off, whose WAL writer may hold the last
    // async commit back for seconds).
    client
        .batch_execute("set synchronous_commit to on")
        .await
        .expect("synchronous_commit");
    let mut rng = Rng(seed);
    let mut versions: Vec<i64> = Vec::new(); // index = id - 1
    let mut committed = Vec::with_capacity(CHANGE_COUNT);
    let started = Instant::now();
    while committed.len() < CHANGE_COUNT {
        let rows = rng
            .between(1, MAX_TRANSACTION_ROWS)
            .min((CHANGE_COUNT - committed.len()) as u64);
        let mut text = String::from("begin;");
        let mut pending = Vec::new();
        let mut next_versions = versions.clone();
        for _ in 0..rows {
            if next_versions.is_empty() || rng.between(0, 1) == 0 {
                let id = next_versions.len() as i64 + 1;
                next_versions.push(1);
                text.push_str(&format!(
                    "insert into public.items (id, tenant_id, version) values ({id}, 1, 1);"
                ));
                pending.push((id, 1));
            } else {
                let index = rng.between(0, next_versions.len() as u64 - 1) as usize;
                next_versions[index] += 1;
                let id = index as i64 + 1;
                text.push_str(&format!(
                    "update public.items set version = version + 1 where id = {id};"
                ));
                pending.push((id, next_versions[index]));
            }
        }
        text.push_str("commit;");
        client
            .batch_execute(&text)
            .await
            .unwrap_or_else(|e| panic!("writer transaction failed: {e}"));
        versions = next_versions;
        committed.extend(pending);
        let due = WRITE_DURATION.mul_f64(committed.len() as f64 / CHANGE_COUNT as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(ahead).await;
        }
    }
    committed
}

/// A record as the check needs it.
struct Seen {
    id: i64,
    version: i64,
    event_id: String,
}

/// Reads every record of the topics, up to their high watermarks.
fn read_all(bootstrap: &str) -> Vec<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "no-loss-check")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for topic in TOPICS {
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {topic}: {e}"));
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .expect("assignment");
        if high > low {
            remaining.insert((topic.to_owned(), 0), high);
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    let mut past_watermark = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "reading back: {} records so far, still missing {remaining:?}",
            seen.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            // Past the high watermarks, a quiet second means the end.
            if remaining.is_empty() && quiet_since.elapsed() > Duration::from_secs(1) {
                break;
            }
            continue;
        };
        quiet_since = Instant::now();
        if remaining.is_empty() {
            past_watermark += 1;
        }
        let message = message.unwrap_or_else(|e| panic!("consuming: {e}"));
        let value: serde_json::Value =
            serde_json::from_slice(message.payload().expect("value")).expect("json value");
        seen.push(Seen {
            id: value["entityId"]
                .as_str()
                .expect("entityId")
                .parse()
                .expect("numeric entityId"),
            version: value["version"].as_i64().expect("version"),
            event_id: value["eventId"].as_str().expect("eventId").to_owned(),
        });
        let key = (message.topic().to_owned(), message.partition());
        if remaining
            .get(&key)
            .is_some_and(|high| message.offset() + 1 >= *high)
        {
            remaining.remove(&key);
        }
    }
    println!(
        "read back {} records, {past_watermark} past the high watermarks read first",
        seen.len()
    );
    seen
}

fn commit_lsn_of(event_id: &str) -> Lsn {
    let lsn = event_id
        .rsplit_once(':')
        .map(|(lsn, _)| lsn)
        .unwrap_or_else(|| panic!("eventId {event_id:?}"));
    lsn.parse()
        .unwrap_or_else(|e| panic!("eventId {event_id:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_change_survives_kill_9() {
    let started = Instant::now();
    let binary = connector_binary();
    let pg = PgServer::start().expect("starting postgres");
    let db = pg.create_database("app").expect("creating database");
    pg.psql_db(
        &db,
        "create table public.items (id bigint primary key, tenant_id bigint not null,
            version int not null)",
    )
    .expect("creating table");
    let broker = KafkaBroker::start().expect("starting tansu");
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "source:
  host: 127.0.0.1
  port: {port}
  database: {db}
  user: postgres
  sslmode: disable
  slot: entity_cdc
  publication: entity_cdc
  statusIntervalMs: 500
kafka:
  bootstrapServers: {kafka}
  topics: {{ create: true, partitions: 1, replicationFactor: 1 }}
  librdkafka:
    linger.ms: \"5\"
format: json
streaming:
  dlqTopic: dlq.events
entities:
  - name: Item
    table: public.items
    tenantColumn: tenant_id
    versionColumn: version
    streaming:
      topicPrefix: test.items
      eventPayloadMode: minimal
",
        port = pg.port,
        kafka = broker.bootstrap(),
    );
    let config_path = dir.path().join("connector.yaml");
    std::fs::write(&config_path, &yaml).expect("writing connector.yaml");
    let config = Config::from_yaml_str(&yaml, "connector.yaml").expect("valid config");
    let target = database_target(&config);
    let mut client = sql::connect(&target.params)
        .await
        .expect("connect for setup");
    let plan = setup::plan(&client, &target).await.expect("setup plan");
    setup::apply(&mut client, &plan).await.expect("setup apply");
    drop(client);

    let harness = Harness {
        pg,
        db,
        config_path,
        dir,
        binary,
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 | 1)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    println!("no-loss seed {seed:#x}");
    let mut rng = Rng(seed ^ 0x5555);

    let mut connector = harness.start(0);
    let writer_client = harness
        .pg
        .connect(&harness.db)
        .await
        .expect("writer connection");
    let writer = tokio::spawn(write_changes(writer_client, seed));

    // Kill -9 at random moments, 3 to 5 times, every 2 to 5 s, restarting each time.
    let kill_count = rng.between(3, 5) as usize;
    let mut confirmed_at_kill = Vec::new();
    for kill in 1..=kill_count {
        if kill > 3 && writer.is_finished() {
            // Kills are for while changes stream; three are done.
            break;
        }
        let pause = Duration::from_millis(rng.between(2_000, 5_000));
        tokio::time::sleep(pause).await;
        if let Some(status) = connector.child.try_wait().expect("polling the connector") {
            panic!(
                "connector {} exited on its own with {status}:\n{}",
                connector.incarnation,
                harness.log(connector.incarnation)
            );
        }
        connector.child.kill().expect("SIGKILL");
        connector.child.wait().expect("reaping");
        let confirmed = harness.wait_slot_released().await;
        println!(
            "kill {kill} after {pause:?}: slot confirmed_flush_lsn {confirmed} (writer done: {})",
            writer.is_finished()
        );
        confirmed_at_kill.push(confirmed);
        connector = harness.start(kill);
    }

    let committed = writer.await.expect("writer task");
    assert_eq!(committed.len(), CHANGE_COUNT);
    println!("writer joined after {:?}", started.elapsed());
    let last_lsn: Lsn = harness
        .sql("select pg_current_wal_flush_lsn()")
        .parse()
        .expect("lsn");

    // Let it drain: the slot confirms past the last commit once Kafka has everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, confirmed) = harness.slot_state();
        if confirmed >= last_lsn {
            break;
        }
        if let Some(status) = connector.child.try_wait().expect("polling") {
            panic!(
                "connector exited with {status} while draining:\n{}",
                harness.log(connector.incarnation)
            );
        }
        assert!(
            Instant::now() < deadline,
            "slot at {confirmed}, not past the last commit {last_lsn} after 60 s:\n{}",
            harness.log(connector.incarnation)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = connector.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = connector.child.try_wait().expect("polling") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "connector ignored SIGTERM for 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        exit.success(),
        "SIGTERM must exit 0, got {exit}:\n{}",
        harness.log(connector.incarnation)
    );

    let bootstrap = broker.bootstrap().to_owned();
    let seen = tokio::task::spawn_blocking(move || read_all(&bootstrap))
        .await
        .expect("reader task");

    // Every committed change at least once; copies of one change share one eventId.
    let mut copies: HashMap<(i64, i64), (usize, String)> = HashMap::new();
    for record in &seen {
        let entry = copies
            .entry((record.id, record.version))
            .or_insert_with(|| (0, record.event_id.clone()));
        assert_eq!(
            entry.1, record.event_id,
            "({}, {}) has two eventIds",
            record.id, record.version
        );
        entry.0 += 1;
    }
    let expected: HashSet<(i64, i64)> = committed.iter().copied().collect();
    assert_eq!(
        expected.len(),
        CHANGE_COUNT,
        "the writer's changes are distinct"
    );
    let missing: Vec<&(i64, i64)> = expected
        .iter()
        .filter(|c| !copies.contains_key(c))
        .collect();
    if !missing.is_empty() {
        // Where the loss sits: the neighbours' eventIds against the kills' confirmed LSNs.
        let mut ids: Vec<i64> = missing.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        let around = |id: i64| {
            copies
                .iter()
                .filter(|((i, _), _)| *i == id)
                .map(|(c, (n, e))| format!("{c:?}x{n}@{e}"))
                .collect::<Vec<_>>()
        };
        let logs: String = (0..=confirmed_at_kill.len())
            .map(|i| format!("--- connector {i}:\n{}", harness.log(i)))
            .collect();
        if let Ok(dir) = std::env::var("ENTITY_CDC_NO_LOSS_LOGS") {
            std::fs::write(Path::new(&dir).join("no_loss.log"), &logs).expect("writing logs");
        }
        println!(
            "database: {}; last_lsn {last_lsn}; slot {:?}",
            harness.sql("select count(*), max(id), sum(version), pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn() from public.items"),
            harness.slot_state()
        );
        panic!(
            "{} of {CHANGE_COUNT} committed changes missing from Kafka, e.g. {:?}; before: {:?}, \
             after: {:?}; confirmed at kills {confirmed_at_kill:?}",
            missing.len(),
            &missing[..missing.len().min(10)],
            around(ids[0] - 1),
            around(ids[ids.len() - 1] + 1),
        );
    }
    let unexpected = copies.keys().filter(|c| !expected.contains(c)).count();
    assert_eq!(unexpected, 0, "records of changes never committed");

    // Duplicates only for what a kill found unconfirmed: an event at commit LSN L can be
    // read again only at a restart whose slot was confirmed at or below L.
    let mut duplicate_count = 0;
    for (change, (count, event_id)) in &copies {
        if *count == 1 {
            continue;
        }
        duplicate_count += count - 1;
        let lsn = commit_lsn_of(event_id);
        let rereads = confirmed_at_kill.iter().filter(|c| **c <= lsn).count();
        assert!(
            count - 1 <= rereads,
            "{change:?} ({event_id}) has {count} copies but only {rereads} restart(s) could \
             reread it (confirmed at kills: {confirmed_at_kill:?})"
        );
    }
    println!(
        "no-loss: {CHANGE_COUNT} changes committed, {} records read, {duplicate_count} duplicates \
         ({:.2}%), {} kills, confirmed at kills {:?}, {:?} in total",
        seen.len(),
        duplicate_count as f64 * 100.0 / CHANGE_COUNT as f64,
        confirmed_at_kill.len(),
        confirmed_at_kill
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        started.elapsed()
    );
    assert_eq!(seen.len(), CHANGE_COUNT + duplicate_count);
}
