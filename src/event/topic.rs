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
    let topic = if entity.name.is_ascii() {
        ascii_topic(
            prefix,
            &entity.name,
            change_type,
            entity.streaming.topic_per_entity,
        )
    } else {
        // Unicode lowercasing, so that an error shows the name as it was built.
        let name = entity.name.to_lowercase();
        if entity.streaming.topic_per_entity {
            join(prefix, &name)
        } else {
            join(
                prefix,
                &format!("{name}.{}", change_type.past().to_lowercase()),
            )
        }
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

/// The topic of an entity with an ASCII name, built in one string: this runs for every
/// event, where the general path's intermediate strings were 3% of `run`'s instructions.
fn ascii_topic(prefix: &str, name: &str, change_type: ChangeType, per_entity: bool) -> String {
    let past = change_type.past();
    let mut topic = String::with_capacity(prefix.len() + name.len() + past.len() + 2);
    if !prefix.is_empty() {
        topic.push_str(prefix);
        topic.push('.');
    }
    topic.extend(name.chars().map(|c| c.to_ascii_lowercase()));
    if !per_entity {
        topic.push('.');
        topic.extend(past.chars().map(|c| c.to_ascii_lowercase()));
    }
    topic
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}.{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::story;

    fn order() -> EntityConfig {
        story::entity(&story::config(), "Order")
    }

    #[test]
    fn one_topic_per_change_type() {
        let order = order();
        let topics: Vec<String> = [ChangeType::Create, ChangeType::Update, ChangeType::Delete]
            .into_iter()
            .map(|t| topic_name(&order, t).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(
            topics,
            [
                "core.orders.order.created",
                "core.orders.order.updated",
                "core.orders.order.deleted"
            ]
        );
    }

    #[test]
    fn one_topic_per_entity() {
        let mut order = order();
        order.streaming.topic_per_entity = true;
        for change_type in [ChangeType::Create, ChangeType::Update, ChangeType::Delete] {
            assert_eq!(
                topic_name(&order, change_type),
                Ok("core.orders.order".to_owned())
            );
        }
    }

    #[test]
    fn without_prefix_the_entity_starts_the_name() {
        let mut order = order();
        order.streaming.topic_prefix = None;
        assert_eq!(
            topic_name(&order, ChangeType::Update),
            Ok("order.updated".to_owned())
        );
    }

    #[test]
    fn names_kafka_refuses_are_errors() {
        let mut order = order();
        order.name = "Order Line".to_owned();
        assert_eq!(
            topic_name(&order, ChangeType::Create),
            Err(TopicError {
                entity: "Order Line".to_owned(),
                topic: "core.orders.order line.created".to_owned(),
            })
        );
        let mut long = self::order();
        long.name = "x".repeat(240);
        let error = topic_name(&long, ChangeType::Create).expect_err("longer than 249");
        assert_eq!(error.topic.len(), 12 + 240 + 8);
        let mut unicode = self::order();
        unicode.name = "Bestellung_Ü".to_owned();
        assert_eq!(
            topic_name(&unicode, ChangeType::Delete)
                .expect_err("not ASCII")
                .to_string(),
            "entity Bestellung_Ü: topic name \"core.orders.bestellung_ü.deleted\" is not a \
             valid Kafka topic ([a-zA-Z0-9._-], 1 to 249 characters)"
        );
        // 249 characters exactly is accepted.
        let mut longest = self::order();
        longest.streaming.topic_per_entity = true;
        longest.name = "x".repeat(249 - 12);
        assert_eq!(
            topic_name(&longest, ChangeType::Create).map(|t| t.len()),
            Ok(249)
        );
    }
}
