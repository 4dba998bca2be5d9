//! Binding relations to entities.
//!
//! A relation is matched to an entity by its exact schema and table name (quoted, mixed-case
//! and non-ASCII names included). The binding resolves the configured columns to positions
//! in the relation once, when the relation is first described or described again after a
//! schema change, so that building an event is plain indexing.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{EntityConfig, Tenant};
use crate::error::Disposition;
use crate::source::change::Relation;

/// Why a relation could not be bound to its entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// A column named in connector.yaml is not in the table.
    #[error("entity {entity}: {path} names column {column:?}, which {table} does not have")]
    MissingColumn {
        /// The entity's name.
        entity: String,
        /// The config path of the setting, e.g. `entities[0].tenantColumn`.
        path: String,
        /// The column named there.
        column: String,
        /// The table, qualified.
        table: String,
    },
    /// Neither keyColumns nor a primary key says what identifies a row.
    #[error(
        "entity {entity}: {table} has no primary key and entities[{index}].keyColumns is not set"
    )]
    NoKey {
        /// The entity's name.
        entity: String,
        /// Its position in `entities`.
        index: usize,
        /// The table, qualified.
        table: String,
    },
}

impl BindError {
    /// A binding error needs the operator to fix the config or the table.
    pub fn disposition(&self) -> Disposition {
        Disposition::Halt
    }
}

/// Where an entity's tenant comes from, resolved against a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// The value of this column (by position).
    Column(usize),
    /// The same value for every row.
    Fixed(String),
}

/// An entity bound to the current description of its relation.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The entity's configuration.
    pub entity: Arc<EntityConfig>,
    /// The relation as last described.
    pub relation: Arc<Relation>,
    /// Positions of the key columns, in key order.
    pub key: Vec<usize>,
    /// Where the tenant comes from.
    pub tenant: TenantSource,
    /// Position of the version column.
    pub version: Option<usize>,
    /// Position of the user column.
    pub user: Option<usize>,
    /// Position of the priority column.
    pub priority_field: Option<usize>,
}

/// The configured entities, looked up by table.
pub struct EntityModel {
    entities: Vec<Arc<EntityConfig>>,
    by_table: HashMap<(String, String), usize>,
    bound: HashMap<u32, Arc<Binding>>,
}

impl EntityModel {
    /// Indexes the entities of connector.yaml by their tables.
    pub fn new(entities: &[EntityConfig]) -> Self {
        let entities: Vec<Arc<EntityConfig>> = entities.iter().cloned().map(Arc::new).collect();
        let by_table = entities
            .iter()
            .enumerate()
            .map(|(i, e)| ((e.table.schema.clone(), e.table.name.clone()), i))
            .collect();
        EntityModel {
            entities,
            by_table,
            bound: HashMap::new(),
        }
    }

    /// The configured entities, in config order.
    pub fn entities(&self) -> &[Arc<EntityConfig>] {
        &self.entities
    }

    /// The entity declared for a table, with its position in `entities`.
    pub fn entity_for(&self, schema: &str, table: &str) -> Option<(usize, &Arc<EntityConfig>)> {
        let index = *self.by_table.get(&(schema.to_owned(), table.to_owned()))?;
        self.entities.get(index).map(|e| (index, e))
    }

    /// The binding of a relation, None when the table is no entity or the entity is not
    /// streamed. `primary_key` gives the table's primary key columns when the entity does
    /// not configure its key; it is asked only when a relation is (re)described.
    pub fn bind(
        &mut self,
        relation: &Arc<Relation>,
        primary_key: &[String],
    ) -> Result<Option<Arc<Binding>>, BindError> {
        if let Some(existing) = self.bound.get(&relation.oid) {
            if Arc::ptr_eq(&existing.relation, relation) {
                return Ok(Some(existing.clone()));
            }
        }
        let Some((index, entity)) = self.entity_for(&relation.schema, &relation.name) else {
            return Ok(None);
        };
        if !entity.streaming.enabled {
            return Ok(None);
        }
        let entity = entity.clone();
        let binding = Arc::new(bind(index, entity, relation, primary_key)?);
        self.bound.insert(relation.oid, binding.clone());
        Ok(Some(binding))
    }

    /// The binding made for a relation OID, if any (without re-binding).
    pub fn cached(&self, oid: u32) -> Option<&Arc<Binding>> {
        self.bound.get(&oid)
    }

    /// Whether the relation already has a binding for exactly this description.
    pub fn is_bound(&self, relation: &Arc<Relation>) -> bool {
        self.bound
            .get(&relation.oid)
            .is_some_and(|b| Arc::ptr_eq(&b.relation, relation))
    }
}

fn bind(
    index: usize,
    entity: Arc<EntityConfig>,
    relation: &Arc<Relation>,
    primary_key: &[String],
) -> Result<Binding, BindError> {
    let table = relation.qualified_name();
    let column = |name: &str, path: String| -> Result<usize, BindError> {
        relation
            .columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| BindError::MissingColumn {
                entity: entity.name.clone(),
                path,
                column: name.to_owned(),
                table: table.clone(),
            })
    };
    let key_names: Vec<String> = match &entity.key_columns {
        Some(columns) => columns.clone(),
        None => primary_key.to_vec(),
    };
    if key_names.is_empty() {
        return Err(BindError::NoKey {
            entity: entity.name.clone(),
            index,
            table,
        });
    }
    let key_path = if entity.key_columns.is_some() {
        format!("entities[{index}].keyColumns")
    } else {
        format!("the primary key of {table}")
    };
    let key = key_names
        .iter()
        .map(|name| column(name, key_path.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let tenant = match entity.tenant() {
        Some(Tenant::Column(name)) => {
            TenantSource::Column(column(name, format!("entities[{index}].tenantColumn"))?)
        }
        Some(Tenant::Fixed(value)) => TenantSource::Fixed(value.to_owned()),
        // A loaded config always has exactly one; an empty fixed tenant is refused later.
        None => TenantSource::Fixed(String::new()),
    };
    let optional = |name: &Option<String>, field: &str| -> Result<Option<usize>, BindError> {
        name.as_deref()
            .map(|n| column(n, format!("entities[{index}].{field}")))
            .transpose()
    };
    let version = optional(&entity.version_column, "versionColumn")?;
    let user = optional(&entity.user_column, "userColumn")?;
    let priority_field = optional(&entity.streaming.priority_field, "streaming.priorityField")?;
    Ok(Binding {
        entity: entity.clone(),
        relation: relation.clone(),
        key,
        tenant,
        version,
        user,
        priority_field,
    })
}
