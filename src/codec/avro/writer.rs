//! The Avro datum writer of an entity schema, built once per schema.
//!
//! apache-avro's `GenericDatumWriter` resolves the schema's names when it is built: done
//! for every event, that walk of the whole envelope (payload, changes, snapshot records)
//! cost as much as writing the event. The writer borrows its schema, so the schema and its
//! writer are kept together in one self-referential cell (self_cell) and the writer is
//! built when the schema is generated, not per event.

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

type Writer<'s> = GenericDatumWriter<'s>;

self_cell::self_cell!(
    /// A schema with its writer, names resolved once.
    pub struct DatumWriter {
        owner: Schema,

        #[covariant]
        dependent: Writer,
    }
);

impl DatumWriter {
    /// The writer of `schema`: values are validated against it before they are written.
    pub fn of(schema: Schema) -> Result<DatumWriter, apache_avro::Error> {
        DatumWriter::try_new(schema, |schema| GenericDatumWriter::builder(schema).build())
    }

    /// The Avro binary body of `value`, validated against the schema.
    pub fn datum(&self, value: &Value) -> Result<Vec<u8>, apache_avro::Error> {
        let mut body = Vec::new();
        self.borrow_dependent().write_value_ref(&mut body, value)?;
        Ok(body)
    }
}

impl std::fmt::Debug for DatumWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatumWriter")
            .field("schema", self.borrow_owner())
            .finish_non_exhaustive()
    }
}
