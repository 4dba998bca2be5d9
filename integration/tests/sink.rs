//! The Kafka sink against a real Kafka-protocol broker (tansu, started per test) and
//! against librdkafka's in-process mock cluster, which injects broker errors.

use std::time::{Duration, Instant};

use bytes::Bytes;
use entity_cdc::checkpoint::Position;
use entity_cdc::error::Disposition;
use entity_cdc::sink::{Delivery, DeliveryReports, KafkaSink, Record, SinkError, SinkSettings};
use entity_cdc::source::Lsn;
use entity_cdc_integration::kafka::{unique_topic, KafkaBroker};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Generous for a loopback broker, so that a loaded CI machine does not fail the tests.
const TIMEOUT: Duration = Duration::from_secs(30);

fn record(topic: &str, key: &str, payload: &[u8], index: u32) -> Record {
    Record {
        topic: topic.to_owned(),
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        headers: vec![
            ("tenantId".to_owned(), Bytes::from_static(b"123")),
            ("eventId".to_owned(), Bytes::from(format!("e-{index}"))),
        ],
        payload: Bytes::copy_from_slice(payload),
        position: Position {
            commit_lsn: Lsn(0x100),
            index,
        },
    }
}

fn new_sink(
    bootstrap: &str,
    configure: impl FnOnce(&mut SinkSettings),
) -> (KafkaSink, DeliveryReports) {
    let mut settings = SinkSettings::new(bootstrap);
    configure(&mut settings);
    KafkaSink::new(settings).expect("sink settings are valid")
}

async fn next_report(reports: &mut DeliveryReports) -> Delivery {
    tokio::time::timeout(TIMEOUT, reports.recv())
        .await
        .expect("a delivery report within the timeout")
        .expect("the report channel is open")
}

fn expect_delivered(delivery: Delivery) -> (Position, i32, i64) {
    match delivery {
        Delivery::Delivered {
            position,
            partition,
            offset,
        } => (position, partition, offset),
        Delivery::Failed {
            position, error, ..
        } => panic!("record {position:?} failed: {error} ({:?})", error.code()),
    }
}

fn expect_failed(delivery: Delivery) -> (SinkError, Record) {
    match delivery {
        Delivery::Failed { error, record, .. } => (error, *record),
        Delivery::Delivered {
            position,
            partition,
            offset,
        } => {
            panic!("record {position:?} was delivered to {partition}@{offset}, expected a failure")
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_come_back_with_their_keys_headers_and_order() {
    let broker = KafkaBroker::start().expect("tansu starts");
    let (sink, mut reports) = new_sink(broker.bootstrap(), |_| {});
    let topic = unique_topic("sink.exact");
    sink.ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("topic created");

    let sent = [
        record(&topic, "123:456", br#"{"a":1}"#, 0),
        record(&topic, "123:457", b"\x00\xffbinary", 1),
        record(&topic, "123:456", "ünïcode".as_bytes(), 2),
    ];
    for r in &sent {
        sink.send(r.clone()).await;
    }
    let mut offsets = Vec::new();
    for expected in 0..3 {
        let (position, partition, offset) = expect_delivered(next_report(&mut reports).await);
        assert_eq!(
            position.index, expected,
            "reports of one partition come in order"
        );
        assert_eq!(partition, 0);
        offsets.push(offset);
    }
    assert_eq!(
        sink.in_flight(),
        0,
        "taking the reports releases the budget"
    );

    let consumed = broker
        .consume(&topic, 3, TIMEOUT)
        .await
        .expect("records read back");
    for ((got, want), offset) in consumed.iter().zip(&sent).zip(&offsets) {
        assert_eq!(got.key.as_deref(), want.key.as_deref());
        assert_eq!(got.payload.as_deref(), Some(&want.payload[..]));
        let want_headers: Vec<(String, Vec<u8>)> = want
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.to_vec()))
            .collect();
        assert_eq!(got.headers, want_headers);
        assert_eq!(got.offset, *offset, "offset reported on delivery");
    }
    sink.flush(TIMEOUT).await.expect("nothing left to flush");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_records_of_one_key_keep_their_order() {
    const COUNT: u32 = 10_000;
    let broker = KafkaBroker::start().expect("tansu starts");
    // A small budget makes the producer wait for delivery reports many times over.
    let (sink, mut reports) = new_sink(broker.bootstrap(), |s| {
        s.topic_partitions = 3;
        s.max_in_flight_records = 500;
    });
    let topic = unique_topic("sink.order");
    sink.ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("topic created");

    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut partitions = Vec::new();
        for expected in 0..COUNT {
            let (position, partition, _) = expect_delivered(next_report(&mut reports).await);
            assert_eq!(position.index, expected);
            partitions.push(partition);
        }
        partitions
    });
    for i in 0..COUNT {
        sink.send(record(&topic, "123:456", i.to_string().as_bytes(), i))
            .await;
    }
    let partitions = reader.await.expect("report reader");
    let elapsed = started.elapsed();
    println!(
        "10,000 records produced and acknowledged in {elapsed:?} ({:.0}/s)",
        f64::from(COUNT) / elapsed.as_secs_f64()
    );
    assert!(
        partitions.windows(2).all(|w| w[0] == w[1]),
        "one key, one partition"
    );

    let consumed = broker
        .consume(&topic, COUNT as usize, TIMEOUT)
        .await
        .expect("records read back");
    let payloads: Vec<String> = consumed
        .iter()
        .map(|r| String::from_utf8(r.payload.clone().unwrap_or_default()).expect("utf-8"))
        .collect();
    let expected: Vec<String> = (0..COUNT).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn ensure_topics_creates_them_with_the_configured_partitions() {
    let broker = KafkaBroker::start().expect("tansu starts");
    let (sink, _reports) = new_sink(broker.bootstrap(), |s| s.topic_partitions = 4);
    let topics = vec![
        unique_topic("sink.created.a"),
        unique_topic("sink.created.b"),
    ];
    sink.ensure_topics(&topics).await.expect("topics created");
    for topic in &topics {
        assert_eq!(
            broker.partition_count(topic).expect("metadata"),
            4,
            "{topic}"
        );
    }
    // Known now: a second call asks nobody; a fresh sink finds them existing.
    sink.ensure_topics(&topics).await.expect("second call");
    let (other, _other_reports) = new_sink(broker.bootstrap(), |s| s.topic_partitions = 4);
    other
        .ensure_topics(&topics)
        .await
        .expect("already exists is fine");

    let (strict, _strict_reports) = new_sink(broker.bootstrap(), |s| s.create_topics = false);
    strict
        .ensure_topics(&topics)
        .await
        .expect("existing topics pass without creation");
    let error = strict
        .ensure_topics(&[unique_topic("sink.absent")])
        .await
        .expect_err("a missing topic is an error when creation is off");
    assert!(matches!(error, SinkError::TopicMissing { .. }), "{error:?}");
    assert_eq!(error.disposition(), Disposition::Halt);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_kafka_never_reports_a_delivery() {
    // A port nobody listens on.
    let port = entity_cdc_integration::pg::free_port().expect("free port");
    let (sink, mut reports) = new_sink(&format!("127.0.0.1:{port}"), |s| {
        // librdkafka gives up on the record after 3 s instead of the default 5 minutes.
        s.librdkafka
            .insert("message.timeout.ms".to_owned(), "3000".to_owned());
    });
    let error = sink
        .check_reachable()
        .await
        .expect_err("nobody answers metadata");
    assert!(matches!(error, SinkError::Unreachable { .. }), "{error:?}");
    assert_eq!(error.disposition(), Disposition::Retry);
    let waited =
        tokio::time::timeout(Duration::from_millis(1500), sink.wait_until_reachable()).await;
    assert!(waited.is_err(), "wait_until_reachable keeps waiting");

    sink.send(record("sink.nowhere", "k", b"v", 0)).await;
    let (error, returned) = expect_failed(next_report(&mut reports).await);
    assert_eq!(
        error.code(),
        Some(RDKafkaErrorCode::MessageTimedOut),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::Retry);
    assert_eq!(
        returned.payload,
        Bytes::from_static(b"v"),
        "the record comes back"
    );
}

/// A sink on a fresh mock cluster with one topic of one partition.
fn mock_sink(
    topic: &str,
    configure: impl FnOnce(&mut SinkSettings),
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    KafkaSink,
    DeliveryReports,
) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(topic, 1, 1).expect("mock topic");
    let (sink, reports) = new_sink(&cluster.bootstrap_servers(), configure);
    (cluster, sink, reports)
}

/// Sends one record while the mock broker answers Produce with `errors`, returns the
/// failure's error.
async fn failure_for(
    errors: &[RDKafkaRespErr],
    configure: impl FnOnce(&mut SinkSettings),
) -> SinkError {
    let topic = "mock.errors";
    let (cluster, sink, mut reports) = mock_sink(topic, configure);
    // Let the idempotent producer get its producer id first, so the errors hit Produce.
    sink.send(record(topic, "k", b"warm-up", 0)).await;
    expect_delivered(next_report(&mut reports).await);
    cluster.request_errors(RDKafkaApiKey::Produce, errors);
    sink.send(record(topic, "k", b"v", 1)).await;
    let (error, record) = expect_failed(next_report(&mut reports).await);
    assert_eq!(record.position.index, 1);
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_rejecting_a_record_as_too_large_dead_letters_it() {
    let error = failure_for(
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        |_| {},
    )
    .await;
    assert_eq!(
        error.code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::DeadLetter);
    assert_eq!(
        error.to_string(),
        "delivery to topic mock.errors failed: MessageSizeTooLarge"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_record_and_topic_authorization_are_dead_lettered() {
    for (injected, code) in [
        (
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD,
            RDKafkaErrorCode::InvalidRecord,
        ),
        (
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ),
    ] {
        let error = failure_for(&[injected], |_| {}).await;
        assert_eq!(error.code(), Some(code), "{error:?}");
        assert_eq!(error.disposition(), Disposition::DeadLetter, "{code:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn not_enough_replicas_after_librdkafka_retries_is_retriable() {
    // librdkafka retries NotEnoughReplicas itself; with two retries allowed, four errors
    // outlast them and the failure reaches us.
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 4];
    let error = failure_for(&errors, |s| {
        s.librdkafka
            .insert("message.send.max.retries".to_owned(), "2".to_owned());
        s.librdkafka
            .insert("retry.backoff.ms".to_owned(), "10".to_owned());
    })
    .await;
    assert_eq!(
        error.code(),
        Some(RDKafkaErrorCode::NotEnoughReplicas),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::Retry);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_over_message_max_bytes_is_refused_on_the_spot() {
    let topic = "mock.large";
    let (_cluster, sink, mut reports) = mock_sink(topic, |s| {
        s.librdkafka
            .insert("message.max.bytes".to_owned(), "10000".to_owned());
    });
    sink.send(record(topic, "k", &[b'x'; 20_000], 0)).await;
    let (error, record) = expect_failed(next_report(&mut reports).await);
    assert_eq!(
        error.code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::DeadLetter);
    assert_eq!(record.payload.len(), 20_000);
    assert_eq!(sink.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_in_flight_budget_holds_back_new_records_until_reports_are_taken() {
    let topic = "mock.budget";
    let (_cluster, sink, mut reports) = mock_sink(topic, |s| s.max_in_flight_records = 2);
    sink.send(record(topic, "k", b"0", 0)).await;
    sink.send(record(topic, "k", b"1", 1)).await;
    // Both may well be delivered by now, but their reports hold the budget until taken.
    let third = sink.send(record(topic, "k", b"2", 2));
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a third record waits for the budget"
    );
    expect_delivered(next_report(&mut reports).await);
    tokio::time::timeout(TIMEOUT, third)
        .await
        .expect("a taken report frees a slot");
    expect_delivered(next_report(&mut reports).await);
    let (position, _, _) = expect_delivered(next_report(&mut reports).await);
    assert_eq!(position.index, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_sink_reports_what_it_held_as_retriable() {
    let topic = "mock.drop";
    let (cluster, sink, mut reports) = mock_sink(topic, |_| {});
    sink.send(record(topic, "k", b"warm-up", 0)).await;
    expect_delivered(next_report(&mut reports).await);
    // Slow the broker down so that the next records are still in librdkafka at the drop.
    cluster
        .broker_round_trip_time(1, Duration::from_secs(10))
        .expect("mock broker delay");
    for i in 1..=3 {
        sink.send(record(topic, "k", b"held", i)).await;
    }
    drop(sink);
    for _ in 1..=3 {
        let (error, _) = expect_failed(next_report(&mut reports).await);
        assert!(
            matches!(
                error.code(),
                Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
            ),
            "{error:?}"
        );
        assert_eq!(error.disposition(), Disposition::Retry);
    }
    assert!(
        reports.recv().await.is_none(),
        "no more reports once the sink is gone"
    );
}

#[test]
fn the_broker_is_killed_when_a_test_panics() {
    let pid = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(|| {
        let broker = KafkaBroker::start().expect("tansu starts");
        *pid.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = broker.pid();
        panic!("a failing test");
    });
    assert!(outcome.is_err());
    let pid = pid
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(pid) = pid {
        // Killed and reaped: the process is gone, not even a zombie.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "tansu {pid} outlived the panicking test"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_is_reserved_before_the_record_is_chosen() {
    let topic = "mock.slot";
    let (_cluster, sink, mut reports) = mock_sink(topic, |s| s.max_in_flight_records = 1);
    let slot = sink.reserve().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sink.reserve())
            .await
            .is_err(),
        "the only slot is taken"
    );
    drop(slot);
    let slot = tokio::time::timeout(TIMEOUT, sink.reserve())
        .await
        .expect("an unused slot comes back when dropped");
    sink.send_reserved(slot, record(topic, "k", b"chosen late", 0))
        .await;
    let (position, _, _) = expect_delivered(next_report(&mut reports).await);
    assert_eq!(position.index, 0);
    assert_eq!(sink.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watermark_follows_delivery_reports_and_stops_at_a_failure() {
    use entity_cdc::checkpoint::Watermark;

    let topic = "mock.watermark";
    let (cluster, sink, mut reports) = mock_sink(topic, |s| {
        // One try only, so that an injected error fails the record at once.
        s.librdkafka
            .insert("message.send.max.retries".to_owned(), "1".to_owned());
    });
    let mut watermark = Watermark::new(Lsn(0x10));
    // Transaction 1: two events, delivered. Transaction 2: one event, refused.
    let (first, second) = (Lsn(0x100), Lsn(0x200));
    watermark.open(first).expect("open");
    for _ in 0..2 {
        let position = watermark.add_event(first).expect("add");
        sink.send(Record {
            position,
            ..record(topic, "k", b"ok", 0)
        })
        .await;
    }
    watermark.close(first, Lsn(0x110)).expect("close");
    for _ in 0..2 {
        let delivery = next_report(&mut reports).await;
        watermark.ack(delivery.position()).expect("ack");
    }
    assert_eq!(watermark.confirmed(), Lsn(0x110));

    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    watermark.open(second).expect("open");
    let position = watermark.add_event(second).expect("add");
    sink.send(Record {
        position,
        ..record(topic, "k", b"refused", 0)
    })
    .await;
    watermark.close(second, Lsn(0x210)).expect("close");
    let (error, record) = expect_failed(next_report(&mut reports).await);
    assert_eq!(error.disposition(), Disposition::DeadLetter);
    assert_eq!(record.position, position);
    // Not acknowledged until the dead-letter topic has it: nothing past the first commit.
    assert_eq!(watermark.confirmed(), Lsn(0x110));
    assert!(!watermark.is_idle());
    assert_eq!(watermark.advance_idle(Lsn(0x900)), None);
}
