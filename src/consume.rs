//! `entity-cdc consume`: reads records back from Kafka and prints them as JSON lines, for
//! the demo and for an operator checking what a topic holds (the Debian kcat cannot talk to
//! every broker, and a connector should come with a way to see its own output).
//!
//! It assigns every partition of the given topics from the beginning, without a consumer
//! group, so it changes nothing on the cluster.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Map, Value as Json};

/// Why records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The client could not be created, the metadata not read, or a fetch failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic does not exist.
    #[error("topic {0} does not exist")]
    NoTopic(String),
}

fn kafka(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> ConsumeError {
    let what = what.into();
    move |source| ConsumeError::Kafka { what, source }
}

/// Reads up to `count` records of `topics` (all partitions, from the beginning) until
/// `idle` passes without a new record, and returns them as JSON objects: topic, partition,
/// offset, key, headers, and the value parsed as JSON when it is JSON, else base64.
pub fn consume(
    bootstrap: &str,
    librdkafka: &std::collections::BTreeMap<String, String>,
    topics: &[String],
    count: usize,
    idle: Duration,
) -> Result<Vec<Json>, ConsumeError> {
    let mut config = ClientConfig::new();
    // Only the connection's security settings apply to a consumer; the rest of the raw
    // options tune the producer.
    for (key, value) in librdkafka {
        if ["security.", "ssl.", "sasl."]
            .iter()
            .any(|p| key.starts_with(p))
        {
            config.set(key, value);
        }
    }
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "entity-cdc-consume")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().map_err(kafka("creating a consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(kafka(format!("reading the metadata of {topic}")))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(ConsumeError::NoTopic(topic.clone()));
        }
        for partition in 0..partitions {
            let partition = i32::try_from(partition).unwrap_or(i32::MAX);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(kafka(format!("assigning {topic}/{partition}")))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(kafka("assigning partitions"))?;
    let mut records = Vec::new();
    let mut last = Instant::now();
    while records.len() < count && last.elapsed() < idle {
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => return Err(kafka("fetching")(e)),
            Some(Ok(message)) => message,
        };
        last = Instant::now();
        let mut headers = Map::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                let value = header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                headers.insert(header.key.to_owned(), json!(value));
            }
        }
        let value = message.payload().map(|bytes| {
            serde_json::from_slice::<Json>(bytes).unwrap_or_else(|_| {
                use base64::Engine as _;
                json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
            })
        });
        let order = (
            message.timestamp().to_millis().unwrap_or(0),
            event_position(message.headers()),
        );
        records.push((
            order,
            json!({
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                "headers": headers,
                "value": value,
            }),
        ));
    }
    // Partitions and topics are read side by side; print in the order the events were
    // produced (record time, then the commit LSN and position in the eventId header).
    records.sort_by_key(|r| r.0);
    Ok(records.into_iter().map(|(_, record)| record).collect())
}

/// The (commit LSN, index) of an entity event's `eventId` header (`0/17AE6B8:2`).
fn event_position(headers: Option<&rdkafka::message::BorrowedHeaders>) -> (u64, u32) {
    let Some(id) = headers.and_then(|list| {
        list.iter()
            .find(|h| h.key == "eventId")
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }) else {
        return (0, 0);
    };
    let mut parts = id.split(':');
    let lsn = parts
        .next()
        .and_then(|l| l.parse::<crate::source::Lsn>().ok())
        .map_or(0, |l| l.0);
    let index = parts.next().and_then(|i| i.parse().ok()).unwrap_or(0);
    (lsn, index)
}
