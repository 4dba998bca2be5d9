//! Backpressure under load, end to end against a real PostgreSQL and tansu: a 200,000-row
//! import into a BULK entity whose lane is throttled, while CRITICAL orders are committed
//! once a second. The spill is off (`maxBytes: 0`): this is the path where a full lane
//! stops the source (tests/spill.rs runs the same load with the spill).
//!
//! Alone in its test binary, because it reads the process-wide metrics (`/metrics`): lane
//! depth and bytes, reconnects, and the CRITICAL lane's commit-to-ack histogram.
//!
//! What it shows: the BULK lane never holds more than its capacity while the source stops
//! reading WAL for well over the server's `wal_sender_timeout` (5 s here) without the
//! walsender timing out or the connection being re-established; and CRITICAL orders
//! committed while tens of thousands of BULK events still wait in the lane reach Kafka
//! within a second of their commit. CRITICAL orders committed while the import's rows are
//! still being read wait for the source to get past those rows (the WAL is read in commit
//! order); their latencies are printed, not asserted.

use std::time::{Duration, Instant};

use entity_cdc::source::Lsn;
use entity_cdc_integration::load::{self, Running, Servers};
use entity_cdc_integration::pg::{free_port, PgServerOptions};
use entity_cdc_integration::scrape::Scrape;
use entity_cdc_integration::{KafkaBroker, PgServer};
use tokio_util::sync::CancellationToken;

const IMPORT_ROWS: u64 = 200_000;
const BULK_CAPACITY: f64 = 15_000.0;
/// Well below what a debug build reads per second, so that the lane fills whatever the
/// machine's load: the source then waits for room, which is what this test is about.
const BULK_RATE: u64 = 2_500;
const BULK_MAX_BYTES: f64 = 32.0 * 1024.0 * 1024.0;

fn sql_text(pg: &PgServer, db: &str, sql: &str) -> String {
    pg.psql_db(db, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
}

fn sent_past(pg: &PgServer, db: &str, lsn: &str) -> bool {
    sql_text(
        pg,
        db,
        &format!("select coalesce(bool_or(sent_lsn >= '{lsn}'), false) from pg_stat_replication"),
    ) == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_bulk_import_keeps_lanes_bounded_and_critical_within_a_second() {
    let started = Instant::now();
    let pg = PgServer::start_with(PgServerOptions {
        settings: vec![("wal_sender_timeout".to_owned(), "5s".to_owned())],
        ..PgServerOptions::default()
    })
    .expect("starting postgres");
    let db = pg.create_database("app").expect("creating database app");
    pg.psql_db(&db, load::DDL).expect("creating the tables");
    let broker = KafkaBroker::start().expect("starting tansu");
    let metrics_port = free_port().expect("a free port");
    let config = load::config(
        &Servers {
            pg: &pg,
            db: &db,
            bootstrap: broker.bootstrap(),
            metrics_port,
        },
        &format!(
            "  spill: {{ maxBytes: 0 }}\n  lanes:\n    BULK: {{ capacity: {}, maxBytes: {}, maxEventsPerSecond: {BULK_RATE} }}",
            BULK_CAPACITY as u64,
            BULK_MAX_BYTES as u64
        ),
        "minimal",
    );
    let Running { cancel, task } = load::start(config, &pg, &db).await;

    // Samples the BULK lane's depth and bytes every 100 ms until stopped; also how long
    // the lane stayed full (the source waiting for room, not reading WAL).
    let sampling = CancellationToken::new();
    let sampler = {
        let stop = sampling.clone();
        tokio::spawn(async move {
            let (mut depth, mut bytes) = (0.0_f64, 0.0_f64);
            let mut samples = 0;
            let mut full: Option<(Instant, Instant)> = None;
            while !stop.is_cancelled() {
                let scrape = Scrape::take(metrics_port).await;
                let now_depth = scrape.bulk_depth();
                if now_depth >= BULK_CAPACITY * 0.95 {
                    let now = Instant::now();
                    full = Some(full.map_or((now, now), |(first, _)| (first, now)));
                }
                depth = depth.max(now_depth);
                bytes = bytes.max(scrape.bulk_bytes());
                samples += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let full_for = full.map_or(Duration::ZERO, |(first, last)| last - first);
            (depth, bytes, samples, full_for)
        })
    };

    sql_text(
        &pg,
        &db,
        &format!(
            "insert into public.items select g, 7, 'item ' || g from generate_series(1, {IMPORT_ROWS}) g"
        ),
    );
    let import_end = sql_text(&pg, &db, "select pg_current_wal_lsn()");
    let import_committed = Instant::now();

    // CRITICAL orders once a second while the source is still behind the import's rows:
    // while the BULK lane is full (the source waits for room), after it was first full.
    let mut id = 0;
    let mut behind = Vec::new();
    let mut was_full = false;
    loop {
        let depth = Scrape::take(metrics_port).await.bulk_depth();
        if depth >= BULK_CAPACITY * 0.95 {
            was_full = true;
        } else if was_full && sent_past(&pg, &db, &import_end) {
            break;
        }
        id += 1;
        let at = Instant::now();
        sql_text(
            &pg,
            &db,
            &format!("insert into public.orders values ({id}, 1, 'critical')"),
        );
        behind.push((id, at));
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(at.elapsed())).await;
        assert!(
            import_committed.elapsed() < Duration::from_secs(150),
            "the source did not read the import within 150 s"
        );
    }
    let blocked_for = import_committed.elapsed();
    let mut scrape = Scrape::take(metrics_port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape.critical_latency().1 < behind.len() as f64 {
        assert!(
            Instant::now() < deadline,
            "the CRITICAL orders behind the import did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        scrape = Scrape::take(metrics_port).await;
    }
    let (within_before, count_before) = scrape.critical_latency();
    let backlog = scrape.bulk_depth();
    println!(
        "import read after {blocked_for:?}; {} CRITICAL orders committed while the source was behind it, {within_before} of them acked within 1 s; BULK backlog {backlog}",
        behind.len()
    );
    assert!(
        backlog >= BULK_CAPACITY / 2.0,
        "the BULK lane should still hold a backlog of seconds, holds {backlog}"
    );

    // CRITICAL orders committed now, with that backlog waiting in the BULK lane.
    for _ in 0..3 {
        id += 1;
        let at = Instant::now();
        sql_text(
            &pg,
            &db,
            &format!("insert into public.orders values ({id}, 1, 'CRITICAL')"),
        );
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(at.elapsed())).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut scrape = Scrape::take(metrics_port).await;
    while scrape.critical_latency().1 < count_before + 3.0 {
        assert!(
            Instant::now() < deadline,
            "the 3 CRITICAL orders did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        scrape = Scrape::take(metrics_port).await;
    }
    let (within, count) = scrape.critical_latency();
    assert_eq!(count, count_before + 3.0);
    assert_eq!(
        within - within_before,
        3.0,
        "each CRITICAL order committed beside the BULK backlog is acknowledged within 1 s"
    );
    let still_queued = scrape.bulk_depth();
    assert!(
        still_queued > 0.0,
        "the BULK backlog was still waiting when the CRITICAL orders were acknowledged"
    );

    // Everything arrives; the connection stayed up although the source did not read WAL
    // for longer than wal_sender_timeout.
    let total_events = IMPORT_ROWS + id;
    let final_lsn: Lsn = sql_text(&pg, &db, "select pg_current_wal_lsn()")
        .parse()
        .expect("lsn");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let confirmed: Lsn = sql_text(
            &pg,
            &db,
            "select confirmed_flush_lsn from pg_replication_slots where slot_name = 'entity_cdc'",
        )
        .parse()
        .expect("lsn");
        if confirmed >= final_lsn {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the import was not confirmed within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let scrape = Scrape::take(metrics_port).await;
    assert_eq!(
        scrape.value("entity_cdc_replication_reconnects_total "),
        0.0,
        "the replication connection was never re-established"
    );
    sampling.cancel();
    let (max_depth, max_bytes, samples, full_for) = sampler.await.expect("sampler");
    cancel.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("stops")
        .expect("no panic")
        .unwrap_or_else(|e| panic!("pipeline failed: {e}"));
    assert_eq!(summary.events, total_events);
    assert!(
        full_for > Duration::from_secs(5),
        "the source must have waited for room past wal_sender_timeout; the lane was full for {full_for:?}"
    );
    assert!(
        (BULK_CAPACITY * 0.9..=BULK_CAPACITY).contains(&max_depth),
        "BULK depth peaked at {max_depth} over {samples} samples, capacity {BULK_CAPACITY}"
    );
    assert!(
        max_bytes <= BULK_MAX_BYTES,
        "BULK bytes peaked at {max_bytes}"
    );
    let log = pg.log();
    assert!(
        !log.contains("terminating walsender process due to replication timeout"),
        "the walsender timed out:\n{log}"
    );
    println!(
        "BULK peak {max_depth} events / {max_bytes} bytes, full for {full_for:?}; total {:?}",
        started.elapsed()
    );
}
