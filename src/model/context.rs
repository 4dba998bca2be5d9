//! Transaction context: who made a change, how urgent it is, and which request it belongs
//! to, attached by the application to its transaction with
//! `SELECT pg_logical_emit_message(true, 'entity-cdc', '{"user": …, "priority": …, "correlationId": …}')`.
//!
//! The message is part of the transaction, so it arrives in order with the changes: it
//! applies to the changes that follow it in the same transaction. Applications emit it first.

use serde::Deserialize;

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
    /// Overrides the priority rules.
    #[serde(default)]
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
    pub fn parse(content: &[u8]) -> Result<TransactionContext, ContextError> {
        serde_json::from_slice(content).map_err(|e| ContextError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field() {
        let ctx = TransactionContext::parse(
            br#"{"user": "user@example.com", "priority": "CRITICAL", "correlationId": "req-1"}"#,
        )
        .expect("valid context");
        assert_eq!(ctx.user.as_deref(), Some("user@example.com"));
        assert_eq!(ctx.priority, Some(Priority::Critical));
        assert_eq!(ctx.correlation_id.as_deref(), Some("req-1"));
    }

    #[test]
    fn rejects_malformed_content() {
        for bad in [
            &b"not json"[..],
            br#"{"priority": "URGENT"}"#,
            br#"{"usr": "x"}"#,
            b"[]",
        ] {
            assert!(
                TransactionContext::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
