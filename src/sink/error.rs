//! What can go wrong on the Kafka side, and what the pipeline does about it.
//!
//! librdkafka already retries transient produce failures itself (with idempotence, without
//! reordering or duplicating) until `message.timeout.ms`; a failure that reaches us is
//! either definite or one where librdkafka gave up waiting. The classification follows the
//! Kafka protocol's error codes: a record the broker refuses for what it is (too large,
//! invalid, not authorized for its topic) goes to the dead-letter topic without retries; a
//! failure of the client or the cluster as a whole needs an operator; anything else may
//! succeed on a later attempt.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::Disposition;

/// A failure of the sink: the producer, a delivery, or topic management.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// A setting the sink refuses before librdkafka sees it.
    #[error("invalid sink setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting's name (`librdkafka.<key>` for raw options).
        setting: String,
        /// Why it is refused.
        reason: String,
    },
    /// librdkafka refused the configuration or could not create the client.
    #[error("kafka client could not be created")]
    Client(#[source] KafkaError),
    /// One record was not delivered; `code` says why.
    #[error("delivery to topic {topic} failed: {code:?}")]
    Delivery {
        /// Destination topic of the record.
        topic: String,
        /// librdkafka's or the broker's error code.
        code: RDKafkaErrorCode,
    },
    /// No broker answered a metadata request in time.
    #[error("kafka at {bootstrap_servers} is not reachable")]
    Unreachable {
        /// Where we tried.
        bootstrap_servers: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The admin API refused to create a topic.
    #[error("creating topic {topic} failed: {code:?}")]
    TopicCreation {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// A topic does not exist and the sink may not create it.
    #[error("topic {topic} does not exist and topic creation is disabled")]
    TopicMissing {
        /// The topic.
        topic: String,
    },
    /// An admin request failed as a whole (timeout, no controller).
    #[error("kafka admin request failed")]
    Admin(#[source] KafkaError),
    /// A flush ended with records still in flight.
    #[error("flush timed out with {in_flight} records in flight")]
    FlushTimeout {
        /// Records librdkafka still held.
        in_flight: i32,
    },
}

impl SinkError {
    /// Builds the error of a failed delivery.
    pub(super) fn delivery(topic: &str, error: &KafkaError) -> Self {
        SinkError::Delivery {
            topic: topic.to_owned(),
            code: error
                .rdkafka_error_code()
                .unwrap_or(RDKafkaErrorCode::Unknown),
        }
    }

    /// librdkafka's or the broker's error code, when there is one.
    pub fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            SinkError::Delivery { code, .. } | SinkError::TopicCreation { code, .. } => Some(*code),
            SinkError::Client(error)
            | SinkError::Unreachable { source: error, .. }
            | SinkError::Admin(error) => error.rdkafka_error_code(),
            SinkError::InvalidSetting { .. }
            | SinkError::TopicMissing { .. }
            | SinkError::FlushTimeout { .. } => None,
        }
    }

    /// Retry, dead-letter the record, or halt.
    pub fn disposition(&self) -> Disposition {
        match self {
            SinkError::Delivery { code, .. } => delivery_disposition(*code),
            SinkError::TopicCreation { code, .. } => match code {
                // The request itself is wrong or forbidden: the operator must act.
                RDKafkaErrorCode::InvalidPartitions
                | RDKafkaErrorCode::InvalidReplicationFactor
                | RDKafkaErrorCode::InvalidReplicaAssignment
                | RDKafkaErrorCode::InvalidConfig
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed => Disposition::Halt,
                _ => Disposition::Retry,
            },
            SinkError::InvalidSetting { .. }
            | SinkError::Client(_)
            | SinkError::TopicMissing { .. } => Disposition::Halt,
            SinkError::Unreachable { .. }
            | SinkError::Admin(_)
            | SinkError::FlushTimeout { .. } => Disposition::Retry,
        }
    }

    /// What an operator should do about a [`Disposition::Halt`], if there is advice.
    pub fn hint(&self) -> Option<&'static str> {
        match self.code() {
            Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => {
                Some("grant the connector's principal IdempotentWrite on the cluster")
            }
            Some(
                RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed,
            ) => Some("check the security.protocol and sasl.* options under librdkafka"),
            Some(RDKafkaErrorCode::InvalidReplicationFactor) => Some(
                "the replication factor exceeds the number of brokers; lower it in the sink settings",
            ),
            _ => match self {
                SinkError::TopicMissing { .. } => {
                    Some("create the topic, or enable topic creation in the sink settings")
                }
                _ => None,
            },
        }
    }
}

/// The disposition of a failed delivery, by error code.
fn delivery_disposition(code: RDKafkaErrorCode) -> Disposition {
    use RDKafkaErrorCode as C;
    match code {
        // The record itself cannot be written: sending it again cannot help.
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidMessage
        | C::BadMessage
        | C::InvalidRecord
        | C::InvalidTimestamp
        | C::UnsupportedForMessageFormat
        | C::PolicyViolation
        | C::InvalidArgument
        // Its topic cannot be written: the dead-letter topic may still be.
        | C::TopicAuthorizationFailed
        | C::InvalidTopic
        | C::UnknownTopic
        | C::UnknownTopicOrPartition
        | C::UnknownPartition => Disposition::DeadLetter,
        // The producer as a whole is unusable or unauthorized: nothing can be delivered
        // until an operator acts, and dead-lettering would hide it.
        C::Fatal
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::SSL
        | C::InvalidRequiredAcks
        | C::ProducerFenced
        | C::Fenced => Disposition::Halt,
        // Timeouts, transport failures, leader changes, too few in-sync replicas, a full
        // queue, purges at shutdown: a later attempt may succeed.
        _ => Disposition::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(code: RDKafkaErrorCode) -> SinkError {
        SinkError::Delivery {
            topic: "t".to_owned(),
            code,
        }
    }

    #[test]
    fn classifies_delivery_failures() {
        use RDKafkaErrorCode as C;
        for code in [
            C::MessageSizeTooLarge,
            C::InvalidRecord,
            C::TopicAuthorizationFailed,
        ] {
            assert_eq!(
                delivery(code).disposition(),
                Disposition::DeadLetter,
                "{code:?}"
            );
        }
        for code in [
            C::ClusterAuthorizationFailed,
            C::Fatal,
            C::SaslAuthenticationFailed,
        ] {
            assert_eq!(delivery(code).disposition(), Disposition::Halt, "{code:?}");
        }
        for code in [
            C::QueueFull,
            C::MessageTimedOut,
            C::NotEnoughReplicas,
            C::NotEnoughReplicasAfterAppend,
            C::LeaderNotAvailable,
            C::NotLeaderForPartition,
            C::RequestTimedOut,
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::PurgeQueue,
        ] {
            assert_eq!(delivery(code).disposition(), Disposition::Retry, "{code:?}");
        }
    }

    #[test]
    fn display_is_a_lowercase_fragment_with_the_topic() {
        let text = delivery(RDKafkaErrorCode::MessageSizeTooLarge).to_string();
        assert_eq!(text, "delivery to topic t failed: MessageSizeTooLarge");
    }
}
