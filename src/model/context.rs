//! Transaction context: who made a change, how urgent it is, and which request it belongs
//! to, attached by the application to its transaction with
//! `SELECT pg_logical_emit_message(true, 'entity-cdc', '{"user": …, "priority": …, "correlationId": …}')`.
//!
//! The message is part of the transaction, so it arrives in order with the changes: it
//! applies to the changes that follow it in the same transaction. Applications emit it first.

use serde::{Deserialize, Deserializer};

use crate::config::Priority;

/// The message prefix the connector listens to.
pub const CONTEXT_PREFIX: &str = "entity-cdc";

/// Context attached to a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransactionContext {
    /// Overrides the entity's user column.
    #[serde(default)]
    pub user: Option<String>,
    /// Overrides the priority rules; the name in any case, as in a priority column.
    #[serde(default, deserialize_with = "priority_any_case")]
    pub priority: Option<Priority>,
    /// Passed on in every event of the transaction.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// A context message that is not the expected JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed transaction context message: {0}")]
pub struct ContextError(String);

impl TransactionContext {
    /// Parses the content of an `entity-cdc` message.
    ///
    /// The content must be a JSON object: serde would otherwise read a JSON array as the
    /// fields in order, and `["x", "HIGH"]` is no context anyone meant to send.
    pub fn parse(content: &[u8]) -> Result<TransactionContext, ContextError> {
        let value: serde_json::Value =
            serde_json::from_slice(content).map_err(|e| ContextError(e.to_string()))?;
        if !value.is_object() {
            return Err(ContextError(format!(
                "expected a JSON object, found {}",
                json_kind(&value)
            )));
        }
        serde_json::from_value(value).map_err(|e| ContextError(e.to_string()))
    }
}

/// The kind of a JSON value, for the error message.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A priority name in any case (`high`, `High`, `HIGH`), or null.
fn priority_any_case<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Priority>, D::Error> {
    let Some(name) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    Priority::ALL
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(&name))
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown priority {name:?}, expected one of CRITICAL, HIGH, NORMAL, BULK"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(content: &str) -> TransactionContext {
        TransactionContext::parse(content.as_bytes())
            .unwrap_or_else(|e| panic!("{content} should parse: {e}"))
    }

    fn error(content: &[u8]) -> String {
        match TransactionContext::parse(content) {
            Ok(context) => panic!(
                "{:?} should be refused, parsed {context:?}",
                String::from_utf8_lossy(content)
            ),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_field() {
        assert_eq!(
            parse(
                r#"{"user": "user@example.com", "priority": "CRITICAL", "correlationId": "req-1"}"#
            ),
            TransactionContext {
                user: Some("user@example.com".to_owned()),
                priority: Some(Priority::Critical),
                correlation_id: Some("req-1".to_owned()),
            }
        );
    }

    #[test]
    fn parses_a_partial_context() {
        assert_eq!(
            parse(r#"{"user": "user@example.com"}"#),
            TransactionContext {
                user: Some("user@example.com".to_owned()),
                ..TransactionContext::default()
            }
        );
        assert_eq!(
            parse(r#"{"correlationId": "req-2", "priority": null}"#),
            TransactionContext {
                correlation_id: Some("req-2".to_owned()),
                ..TransactionContext::default()
            }
        );
        assert_eq!(parse("{}"), TransactionContext::default());
    }

    #[test]
    fn priority_name_in_any_case() {
        for name in ["high", "High", "HIGH"] {
            assert_eq!(
                parse(&format!(r#"{{"priority": "{name}"}}"#)).priority,
                Some(Priority::High),
                "{name}"
            );
        }
    }

    #[test]
    fn rejects_malformed_content() {
        assert_eq!(
            error(b"not json"),
            "malformed transaction context message: expected ident at line 1 column 2"
        );
        assert_eq!(
            error(br#"{"priority": "URGENT"}"#),
            "malformed transaction context message: unknown priority \"URGENT\", expected one \
             of CRITICAL, HIGH, NORMAL, BULK"
        );
        assert_eq!(
            error(br#"{"usr": "x"}"#),
            "malformed transaction context message: unknown field `usr`, expected one of \
             `user`, `priority`, `correlationId`"
        );
        assert_eq!(
            error(b"[]"),
            "malformed transaction context message: expected a JSON object, found an array"
        );
        assert_eq!(
            error(br#"["x", "HIGH", "c"]"#),
            "malformed transaction context message: expected a JSON object, found an array"
        );
        assert_eq!(
            error(b""),
            "malformed transaction context message: EOF while parsing a value at line 1 column 0"
        );
        assert_eq!(
            error(br#"{"user": 42}"#),
            "malformed transaction context message: invalid type: number, expected a string"
        );
        assert_eq!(
            error(b"\xff"),
            "malformed transaction context message: expected value at line 1 column 1"
        );
    }
}
