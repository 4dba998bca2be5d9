//! Encoding events as Kafka records. JSON now; Avro with a Schema Registry comes behind the
//! same interface.

mod json;

pub use json::{dead_letter_record, encode_json, DeadLetter};
