//! Encoding events as Kafka records: Avro with a Schema Registry, or JSON, behind one
//! [`Encoder`].

pub mod avro;
mod json;

pub use avro::AvroError as EncodeError;
pub use json::{dead_letter_record, encode_json, DeadLetter};

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Format};
use crate::event::EntityEvent;
use crate::model::Binding;
use crate::sink::Record;
use crate::source::change::Change;

/// The configured encoding of event values.
pub enum Encoder {
    /// JSON text.
    Json,
    /// Avro in the Confluent wire format.
    Avro(Box<avro::AvroEncoder>),
}

impl Encoder {
    /// The encoder `config.format` asks for.
    pub fn for_config(config: &Config) -> Result<Encoder, avro::registry::RegistryError> {
        match (config.format, &config.schema_registry) {
            (Format::Avro, Some(registry)) => {
                Ok(Encoder::Avro(Box::new(avro::AvroEncoder::new(registry)?)))
            }
            // Validation requires schemaRegistry with format avro.
            (Format::Avro, None) => Err(avro::registry::RegistryError::Client(
                "schemaRegistry: required when format is avro".to_owned(),
            )),
            (Format::Json, _) => Ok(Encoder::Json),
        }
    }

    /// The record of `event`, built from `change` through `binding`. The record's position
    /// is the event's; the caller replaces it with the watermark's. Waits while the Schema
    /// Registry is unreachable, until `stop` fires.
    pub async fn encode(
        &mut self,
        binding: &Binding,
        change: &Change,
        event: &EntityEvent,
        stop: &CancellationToken,
    ) -> Result<Record, EncodeError> {
        match self {
            Encoder::Json => Ok(encode_json(event, event.position)),
            Encoder::Avro(avro) => avro.encode(binding, change, event, stop).await,
        }
    }
}
