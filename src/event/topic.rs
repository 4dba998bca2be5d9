//! Topic names: `<topicPrefix>.<entity>.<created|updated|deleted>`, or one topic per entity
//! `<topicPrefix>.<entity>` which keeps an entity's whole history in one ordered partition.

use crate::config::EntityConfig;
use crate::event::ChangeType;

/// A topic name Kafka would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entity {entity}: topic name {topic:?} is not a valid Kafka topic ([a-zA-Z0-9._-], 1 to 249 characters)")]
pub struct TopicError {
    /// The entity.
    pub entity: String,
    /// The name that was built.
    pub topic: String,
}

/// The topic of an entity's events of one change type.
pub fn topic_name(entity: &EntityConfig, change_type: ChangeType) -> Result<String, TopicError> {
    let prefix = entity.streaming.topic_prefix.as_deref().unwrap_or_default();
    let name = entity.name.to_lowercase();
    let topic = if entity.streaming.topic_per_entity {
        join(prefix, &name)
    } else {
        join(
            prefix,
            &format!("{name}.{}", change_type.past().to_lowercase()),
        )
    };
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(topic)
    } else {
        Err(TopicError {
            entity: entity.name.clone(),
            topic,
        })
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}.{rest}")
    }
}
