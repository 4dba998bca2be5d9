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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::story::{self, assert_json, order_created, COMMIT_LSN};

    fn position(index: u32) -> Position {
        Position {
            commit_lsn: COMMIT_LSN,
            index,
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("utf-8: {e}"))
    }

    fn headers(record: &Record) -> Vec<(&str, &str)> {
        record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), text(v)))
            .collect()
    }

    #[test]
    fn encode_json_writes_key_headers_and_the_event_text() {
        let record = encode_json(&order_created(), position(3));
        assert_eq!(record.topic, "core.orders.order.created");
        assert_eq!(record.key.as_deref(), Some(&b"123:456"[..]));
        assert_eq!(
            headers(&record),
            [
                ("tenantId", "123"),
                ("entityType", "Order"),
                ("changeType", "CREATE"),
                ("eventType", "OrderCreated"),
                ("eventId", "0/16B3748:0"),
            ]
        );
        assert_eq!(
            text(&record.payload),
            concat!(
                r#"{"eventId":"0/16B3748:0","eventType":"OrderCreated","tenantId":123,"#,
                r#""entityType":"Order","entityId":"456","changeType":"CREATE","version":1,"#,
                r#""timestamp":"2025-01-15T10:30:00Z","user":"user@example.com","#,
                r#""payload":{"id":456,"tenant_id":123,"status":"NEW","total":99.90,"#,
                r#""priority":"high","version":1,"updated_by":"user@example.com"}}"#
            )
        );
        assert_eq!(
            record.position,
            position(3),
            "the watermark's position, as given"
        );
    }

    #[test]
    fn dead_letter_of_an_event_that_could_not_be_built() {
        let letter = DeadLetter {
            event_id: Some("0/16B3748:0".to_owned()),
            failure_reason: "entity Order event 0/16B3748:0: no tenant (column tenant_id is null)"
                .to_owned(),
            failure_timestamp: "2025-01-15T10:30:01Z".to_owned(),
            retry_count: 0,
            original: None,
            source: story::json(
                r#"{"entity":"Order","schema":"public","table":"orders",
                    "commitLsn":"0/16B3748","index":0,"change":"insert"}"#,
            ),
        };
        let record = dead_letter_record("dlq.events", &letter, position(0));
        assert_eq!(record.topic, "dlq.events");
        assert_eq!(record.key, None);
        assert_eq!(
            headers(&record),
            [
                (
                    "failureReason",
                    "entity Order event 0/16B3748:0: no tenant (column tenant_id is null)"
                ),
                ("eventId", "0/16B3748:0"),
            ]
        );
        assert_json(
            &story::json(text(&record.payload)),
            r#"{"eventId":"0/16B3748:0",
                "failureReason":"entity Order event 0/16B3748:0: no tenant (column tenant_id is null)",
                "failureTimestamp":"2025-01-15T10:30:01Z","retryCount":0,"originalEvent":null,
                "source":{"entity":"Order","schema":"public","table":"orders",
                          "commitLsn":"0/16B3748","index":0,"change":"insert"}}"#,
        );
    }

    #[test]
    fn dead_letter_of_a_record_kafka_refused_keeps_it_whole() {
        let mut original = encode_json(&order_created(), position(0));
        original.payload = Bytes::from_static(b"{\"eventId\":\"0/16B3748:0\"}");
        let letter = DeadLetter {
            event_id: Some("0/16B3748:0".to_owned()),
            failure_reason: "message too large".to_owned(),
            failure_timestamp: "2025-01-15T10:30:01Z".to_owned(),
            retry_count: 3,
            source: story::json(r#"{"topic":"core.orders.order.created"}"#),
            original: Some(original),
        };
        let record = dead_letter_record("dlq.events", &letter, position(0));
        assert_eq!(
            record.key.as_deref(),
            Some(&b"123:456"[..]),
            "same key, same order"
        );
        assert_json(
            &story::json(text(&record.payload)),
            r#"{"eventId":"0/16B3748:0","failureReason":"message too large",
                "failureTimestamp":"2025-01-15T10:30:01Z","retryCount":3,
                "originalEvent":{"topic":"core.orders.order.created","key":"123:456",
                  "headers":[{"name":"tenantId","value":"123"},
                             {"name":"entityType","value":"Order"},
                             {"name":"changeType","value":"CREATE"},
                             {"name":"eventType","value":"OrderCreated"},
                             {"name":"eventId","value":"0/16B3748:0"}],
                  "value":"eyJldmVudElkIjoiMC8xNkIzNzQ4OjAifQ==",
                  "valueText":"{\"eventId\":\"0/16B3748:0\"}"},
                "source":{"topic":"core.orders.order.created"}}"#,
        );
    }

    #[test]
    fn dead_letter_value_text_is_null_for_binary_values() {
        let mut original = encode_json(&order_created(), position(0));
        original.payload = Bytes::from_static(&[0, 0xFF, 0x10]);
        let letter = DeadLetter {
            event_id: None,
            failure_reason: "x".to_owned(),
            failure_timestamp: "t".to_owned(),
            retry_count: 0,
            source: Json::Null,
            original: Some(original),
        };
        let record = dead_letter_record("dlq.events", &letter, position(0));
        let value = story::json(text(&record.payload));
        assert_json(&value["originalEvent"]["value"], r#""AP8Q""#);
        assert_json(&value["originalEvent"]["valueText"], "null");
        assert_json(&value["eventId"], "null");
        assert_eq!(headers(&record), [("failureReason", "x")]);
    }
}
