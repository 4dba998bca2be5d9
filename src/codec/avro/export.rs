//! `entity-cdc schemas`: the Avro schemas the configured entities produce, generated from
//! the database's catalog exactly as the pipeline generates them from Relation messages
//! (same columns, same types, same key), so that consumers can be prepared before the
//! connector runs and a change of schema shows up as a diff of the golden files.

use std::sync::Arc;

use serde_json::Value as Json;

use crate::codec::avro::names::avro_name;
use crate::codec::avro::schema::{entity_schema, SchemaError};
use crate::config::Config;
use crate::model::{BindError, EntityModel};
use crate::source::catalog::{self, CatalogError};
use crate::source::change::{Column, Relation};
use crate::source::pgoutput::ReplicaIdentity;
use crate::source::reader::TypeResolver;
use crate::source::sql::{self, SqlError};

/// Why the schemas could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database could not be reached.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The catalog has no such table, column type, …
    #[error("entity {entity}: {source}")]
    Catalog {
        /// The entity.
        entity: String,
        /// The catalog's answer.
        #[source]
        source: CatalogError,
    },
    /// The table does not fit the entity's configuration (a missing column).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// No schema could be made (a name collision).
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// One entity's schema as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    /// The entity.
    pub entity: String,
    /// `<Entity>.avsc`.
    pub file_name: String,
    /// The schema, pretty-printed JSON with a final newline.
    pub text: String,
}

/// The schema of every streamed entity of `config`, read from its database's catalog.
pub async fn catalog_schemas(config: &Config) -> Result<Vec<SchemaFile>, ExportError> {
    let params = config.source.connect_params();
    let client = sql::connect(&params).await?;
    let mut types = TypeResolver::new(sql::connect(&params).await?);
    let mut model = EntityModel::new(&config.entities);
    let mut files = Vec::new();
    for entity in config.entities.iter().filter(|e| e.streaming.enabled) {
        let catalog_error = |source| ExportError::Catalog {
            entity: entity.name.clone(),
            source,
        };
        let (schema, table) = (&entity.table.schema, &entity.table.name);
        let (oid, described) = catalog::table_columns(&client, schema, table)
            .await
            .map_err(catalog_error)?;
        let mut columns = Vec::with_capacity(described.len());
        for (name, type_oid, typmod) in described {
            let pg_type = types
                .resolve(type_oid, typmod)
                .await
                .map_err(catalog_error)?;
            columns.push(Column {
                name,
                type_oid,
                type_modifier: typmod,
                pg_type,
                identity: true,
            });
        }
        let relation = Arc::new(Relation {
            oid,
            schema: schema.clone(),
            name: table.clone(),
            replica_identity: ReplicaIdentity::Full,
            columns,
        });
        let primary_key = catalog::primary_key(&client, schema, table)
            .await
            .map_err(catalog_error)?;
        let Some(binding) = model.bind(&relation, &primary_key)? else {
            continue;
        };
        let generated = entity_schema(&binding)?;
        let json: Json = serde_json::from_str(&generated.text).unwrap_or(Json::Null);
        let text = serde_json::to_string_pretty(&json).unwrap_or(generated.text) + "\n";
        files.push(SchemaFile {
            entity: entity.name.clone(),
            file_name: format!("{}.avsc", avro_name(&entity.name)),
            text,
        });
    }
    Ok(files)
}
