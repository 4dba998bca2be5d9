//! A record ready for Kafka: encoded key and value, headers, and where it came from.

use bytes::Bytes;

use crate::checkpoint::Position;

/// One Kafka record. The bytes are reference-counted, so that a failed record can be
/// handed back for a retry or the dead-letter topic without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Record key (`tenantId:entityId` for entity events); it chooses the partition.
    pub key: Option<Bytes>,
    /// Headers in order; names may repeat, as Kafka allows.
    pub headers: Vec<(String, Bytes)>,
    /// Encoded event.
    pub payload: Bytes,
    /// The event's place in the WAL, to acknowledge to the watermark once delivered.
    pub position: Position,
}

impl Record {
    /// Approximate bytes the record occupies in the producer: what the in-flight budget
    /// counts. Protocol overhead is left out: it is small and roughly constant per record,
    /// which the record budget bounds anyway.
    pub fn size(&self) -> usize {
        let key = self.key.as_ref().map_or(0, Bytes::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        self.topic.len() + key + headers + self.payload.len()
    }
}
