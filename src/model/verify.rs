//! Checking the configured entities against the database's catalog before streaming, so
//! that a column named wrongly in connector.yaml is reported at start (by `run` and by
//! `check`) rather than at the table's first change.

use tokio_postgres::Client;

use crate::config::EntityConfig;
use crate::model::binding::check_columns;
use crate::model::BindError;
use crate::source::catalog::{self, CatalogError};
use crate::source::TableRef;

/// Every problem of every streamed entity, in config order; empty when all bind.
pub async fn verify_entities(
    client: &Client,
    entities: &[EntityConfig],
) -> Result<Vec<BindError>, CatalogError> {
    let mut problems = Vec::new();
    for (index, entity) in entities.iter().enumerate() {
        if !entity.streaming.enabled {
            continue;
        }
        let table = TableRef::new(entity.table.schema.clone(), entity.table.name.clone());
        let Some(state) = catalog::table_state(client, &table).await? else {
            problems.push(BindError::TableMissing {
                entity: entity.name.clone(),
                index,
                table: table.to_string(),
            });
            continue;
        };
        let columns: Vec<String> = catalog::relation_attnums(client, state.oid)
            .await?
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        let primary_key = if entity.key_columns.is_some() {
            Vec::new()
        } else {
            catalog::primary_key(client, &table.schema, &table.name).await?
        };
        if let Err(problem) =
            check_columns(index, entity, &table.to_string(), &columns, &primary_key)
        {
            problems.push(problem);
        }
    }
    Ok(problems)
}
