//! JSON encoding: the event object as UTF-8 JSON, the key `tenantId:entityId` as a string,
//! and the filtering headers.

use bytes::Bytes;
use serde_json::{json, Value as Json};

use crate::checkpoint::Position;
use crate::event::EntityEvent;
use crate::sink::Record;

/// An event as a Kafka record whose value is the event's JSON.
pub fn encode_json(event: &EntityEvent, position: Position) -> Record {
    // Serializing a serde_json::Value cannot fail: its keys are strings and its numbers are
    // finite (NaN and infinities travel as strings).
    let payload = serde_json::to_vec(&event.to_json()).unwrap_or_default();
    Record {
        topic: event.topic.clone(),
        key: Some(Bytes::from(event.key.clone().into_bytes())),
        headers: event
            .headers()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), Bytes::from(value.into_bytes())))
            .collect(),
        payload: Bytes::from(payload),
        position,
    }
}

/// What is known of an event that cannot go to its topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The event's id (commit LSN and position), when it is known.
    pub event_id: Option<String>,
    /// Why it is dead-lettered.
    pub failure_reason: String,
    /// When it failed, RFC 3339 UTC.
    pub failure_timestamp: String,
    /// How many times delivery was retried.
    pub retry_count: u32,
    /// The record that could not be delivered, when there is one.
    pub original: Option<Record>,
    /// Where it comes from when no record could be built: entity, relation, lsn, change.
    pub source: Json,
}

/// A dead-letter record for the DLQ topic: the original record (topic, key, headers and
/// value, the bytes as base64 and the value also as text when it is UTF-8) with the
/// failure's reason, time and retry count.
pub fn dead_letter_record(topic: &str, letter: &DeadLetter, position: Position) -> Record {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let original = letter.original.as_ref().map(|r| {
        json!({
            "topic": r.topic,
            "key": r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
            "headers": r.headers.iter().map(|(n, v)| json!({
                "name": n, "value": String::from_utf8_lossy(v),
            })).collect::<Vec<_>>(),
            "value": b64(&r.payload),
            "valueText": std::str::from_utf8(&r.payload).ok(),
        })
    });
    let value = json!({
        "eventId": letter.event_id,
        "failureReason": letter.failure_reason,
        "failureTimestamp": letter.failure_timestamp,
        "retryCount": letter.retry_count,
        "originalEvent": original,
        "source": letter.source,
    });
    let payload = serde_json::to_vec(&value).unwrap_or_default();
    let mut headers = vec![(
        "failureReason".to_owned(),
        Bytes::from(letter.failure_reason.clone()),
    )];
    if let Some(id) = &letter.event_id {
        headers.push(("eventId".to_owned(), Bytes::from(id.clone())));
    }
    Record {
        topic: topic.to_owned(),
        key: letter.original.as_ref().and_then(|r| r.key.clone()),
        headers,
        payload: Bytes::from(payload),
        position,
    }
}
