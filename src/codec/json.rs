//! JSON encoding: the event object as UTF-8 JSON, the key `tenantId:entityId` as a string,
//! and the filtering headers.

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value as Json};

use crate::checkpoint::Position;
use crate::event::{Body, EntityEvent};
use crate::sink::Record;

/// Room for a typical event's JSON, so that the payload buffer seldom grows while it is
/// written.
const PAYLOAD_CAPACITY: usize = 512;

/// An event as a Kafka record whose value is the event's JSON.
pub fn encode_json(event: &EntityEvent, position: Position) -> Record {
    // Serializing into a Vec cannot fail: every key is a string and every number finite
    // (NaN and infinities travel as strings).
    let mut payload = Vec::with_capacity(PAYLOAD_CAPACITY);
    if serde_json::to_writer(&mut payload, &EventJson(event)).is_err() {
        payload.clear();
    }
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

/// The event's JSON written straight from the event, fields in the story's order: the same
/// bytes as serializing [`EntityEvent::to_json`], without first cloning every string and map
/// of the event into a new `Value` tree (that copy was a large share of `run`'s CPU per
/// event, docs/benchmarks.md).
struct EventJson<'a>(&'a EntityEvent);

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// A snapshot: the row's object, or null where the mode has none.
        fn snapshot<M: SerializeMap>(
            map: &mut M,
            snapshot: Option<&Map<String, Json>>,
        ) -> Result<(), M::Error> {
            map.serialize_entry("fullSnapshot", &snapshot)
        }
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("eventId", &e.event_id)?;
        map.serialize_entry("eventType", &e.event_type)?;
        map.serialize_entry("tenantId", &e.tenant_id)?;
        map.serialize_entry("entityType", &e.entity_type)?;
        map.serialize_entry("entityId", &e.entity_id)?;
        map.serialize_entry("changeType", e.change_type.as_str())?;
        map.serialize_entry("version", &e.version)?;
        map.serialize_entry("timestamp", &e.timestamp)?;
        map.serialize_entry("user", &e.user)?;
        if let Some(id) = &e.correlation_id {
            map.serialize_entry("correlationId", id)?;
        }
        match &e.body {
            Body::Minimal => {}
            Body::Create {
                payload,
                full_snapshot,
            } => {
                map.serialize_entry("payload", payload)?;
                if full_snapshot.is_some() {
                    snapshot(&mut map, full_snapshot.as_ref())?;
                }
            }
            Body::Update {
                changes,
                full_snapshot,
            } => {
                map.serialize_entry("changes", changes)?;
                snapshot(&mut map, full_snapshot.as_ref())?;
            }
            Body::Delete { key, full_snapshot } => {
                map.serialize_entry("key", key)?;
                if full_snapshot.is_some() {
                    snapshot(&mut map, full_snapshot.as_ref())?;
                }
            }
        }
        if !e.unavailable.is_empty() {
            map.serialize_entry("unavailable", &e.unavailable)?;
        }
        map.end()
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
    use crate::event::ChangeType;

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

    /// The bytes the encoder wrote before it serialized the event directly: the event's
    /// `Value` tree, serialized.
    fn old_bytes(event: &EntityEvent) -> Vec<u8> {
        serde_json::to_vec(&event.to_json()).unwrap_or_else(|e| panic!("to_vec: {e}"))
    }

    fn object(text: &str) -> Map<String, Json> {
        match story::json(text) {
            Json::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// Values that serialize in ways worth checking byte for byte: numerics kept as written
    /// (scale, exponent, beyond f64 and i64), escapes (quotes, backslashes, control
    /// characters, U+2028), non-ASCII text, NaN and infinities as strings, nested arrays
    /// with nulls, nested objects (json columns).
    const TRICKY_ROW: &str = r#"{"id":9223372036854775807,"total":99.90,"tiny":1.5e-7,
        "huge":123456789012345678901234567890.000001,"neg":-0.0,
        "text":"a \"quoted\" \\ back\/slash\n\t\u0001\u001f\u007f\u2028 é 😀 日本",
        "nan":"NaN","inf":"Infinity","ninf":"-Infinity",
        "matrix":[[1,2,null],[3.25,-4,5]],"deep":[[["x"]],[]],
        "doc":{"b":[true,false,null],"a":{"z":1}},"empty":"","none":null}"#;

    fn tricky_event() -> EntityEvent {
        let mut event = order_created();
        event.tenant_id = story::json("18446744073709551616");
        event.version = story::json("3");
        event.user = Some("Zoë \"admin\" <\u{1}>".to_owned());
        event.correlation_id = Some("corr-\u{2028}-1".to_owned());
        event.body = Body::Create {
            payload: object(TRICKY_ROW),
            full_snapshot: Some(object(TRICKY_ROW)),
        };
        event.unavailable = vec!["notes".to_owned(), "blob\"x".to_owned()];
        event
    }

    #[test]
    fn the_direct_writer_writes_the_bytes_of_the_value_tree() {
        let created = order_created();
        let tricky = tricky_event();
        let mut events = vec![created.clone(), tricky.clone()];
        let mut minimal = tricky.clone();
        minimal.body = Body::Minimal;
        minimal.user = None;
        minimal.correlation_id = None;
        minimal.unavailable.clear();
        events.push(minimal);
        let mut create_diff = tricky.clone();
        create_diff.body = Body::Create {
            payload: object(TRICKY_ROW),
            full_snapshot: None,
        };
        events.push(create_diff);
        for full_snapshot in [None, Some(object(TRICKY_ROW))] {
            let mut update = tricky.clone();
            update.change_type = ChangeType::Update;
            update.body = Body::Update {
                changes: object(
                    r#"{"total":{"old":120.00,"new":150.000},"tags":{"new":[["a","b"],[null,"ü"]]},
                        "ratio":{"old":"NaN","new":1E+3}}"#,
                ),
                full_snapshot: full_snapshot.clone(),
            };
            events.push(update);
            let mut delete = tricky.clone();
            delete.change_type = ChangeType::Delete;
            delete.body = Body::Delete {
                key: object(r#"{"id":456,"code":"k\u0000"}"#),
                full_snapshot,
            };
            events.push(delete);
        }
        let mut empty_maps = created;
        empty_maps.body = Body::Update {
            changes: Map::new(),
            full_snapshot: Some(Map::new()),
        };
        events.push(empty_maps);
        assert_eq!(events.len(), 9);
        for event in &events {
            let record = encode_json(event, position(0));
            assert_eq!(
                text(&record.payload),
                text(&old_bytes(event)),
                "event {:?}",
                event.body
            );
        }
    }

    #[test]
    fn the_direct_writer_keeps_numerics_escapes_and_nested_arrays_exactly() {
        let record = encode_json(&tricky_event(), position(0));
        let row = concat!(
            r#"{"id":9223372036854775807,"total":99.90,"tiny":1.5e-7,"#,
            r#""huge":123456789012345678901234567890.000001,"neg":-0.0,"#,
            r#""text":"a \"quoted\" \\ back/slash\n\t\u0001\u001f"#,
            "\u{7f}\u{2028} é 😀 日本\",",
            r#""nan":"NaN","inf":"Infinity","ninf":"-Infinity","#,
            r#""matrix":[[1,2,null],[3.25,-4,5]],"deep":[[["x"]],[]],"#,
            r#""doc":{"b":[true,false,null],"a":{"z":1}},"empty":"","none":null}"#,
        );
        let expected = [
            r#"{"eventId":"0/16B3748:0","eventType":"OrderCreated","#,
            r#""tenantId":18446744073709551616,"entityType":"Order","entityId":"456","#,
            r#""changeType":"CREATE","version":3,"timestamp":"2025-01-15T10:30:00Z","#,
            r#""user":"Zoë \"admin\" <\u0001>","#,
            "\"correlationId\":\"corr-\u{2028}-1\",",
            r#""payload":"#,
            row,
            r#","fullSnapshot":"#,
            row,
            r#","unavailable":["notes","blob\"x"]}"#,
        ]
        .concat();
        assert_eq!(text(&record.payload), expected);
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
