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
    /// The entity's table does not exist.
    #[error("entity {entity}: table {table} (entities[{index}].table) does not exist")]
    TableMissing {
        /// The entity's name.
        entity: String,
        /// Its position in `entities`.
        index: usize,
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
    /// Relations known to be no streamed entity, as last described: their changes are
    /// skipped without looking the table up again for every change.
    unmapped: HashMap<u32, Arc<Relation>>,
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
            unmapped: HashMap::new(),
        }
    }

    /// The configured entities, in config order.
    pub fn entities(&self) -> &[Arc<EntityConfig>] {
        &self.entities
    }

    /// The streamed entity declared for a table, with its position in `entities`; None for
    /// a table that is no entity or whose entity has `streaming.enabled: false`, so that
    /// callers skip a disabled entity's changes, truncates and undecodable rows alike.
    pub fn entity_for(&self, schema: &str, table: &str) -> Option<(usize, &Arc<EntityConfig>)> {
        let index = *self.by_table.get(&(schema.to_owned(), table.to_owned()))?;
        self.entities
            .get(index)
            .filter(|e| e.streaming.enabled)
            .map(|e| (index, e))
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
        if self
            .unmapped
            .get(&relation.oid)
            .is_some_and(|known| Arc::ptr_eq(known, relation))
        {
            return Ok(None);
        }
        // A new description replaces the old binding whatever comes of it: a table renamed
        // away from its entity, or no longer bindable, must not keep its old positions.
        self.bound.remove(&relation.oid);
        self.unmapped.remove(&relation.oid);
        let Some((index, entity)) = self.entity_for(&relation.schema, &relation.name) else {
            self.unmapped.insert(relation.oid, relation.clone());
            return Ok(None);
        };
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

    /// Whether this description of the relation was seen already, bound or known to be no
    /// entity: then [`EntityModel::bind`] needs no primary key and no table lookup.
    pub fn is_known(&self, relation: &Arc<Relation>) -> bool {
        self.is_bound(relation)
            || self
                .unmapped
                .get(&relation.oid)
                .is_some_and(|known| Arc::ptr_eq(known, relation))
    }
}

fn bind(
    index: usize,
    entity: Arc<EntityConfig>,
    relation: &Arc<Relation>,
    primary_key: &[String],
) -> Result<Binding, BindError> {
    let names: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
    let found = positions(
        index,
        &entity,
        &relation.qualified_name(),
        &names,
        primary_key,
    )?;
    Ok(Binding {
        entity: entity.clone(),
        relation: relation.clone(),
        key: found.key,
        tenant: found.tenant,
        version: found.version,
        user: found.user,
        priority_field: found.priority_field,
    })
}

/// Where the configured columns are among a table's columns.
struct Positions {
    key: Vec<usize>,
    tenant: TenantSource,
    version: Option<usize>,
    user: Option<usize>,
    priority_field: Option<usize>,
}

/// Checks an entity's configured columns against a table's columns as the catalog lists
/// them, so that `run` refuses a mismatch at start instead of at the table's first change.
pub fn check_columns(
    index: usize,
    entity: &EntityConfig,
    table: &str,
    columns: &[String],
    primary_key: &[String],
) -> Result<(), BindError> {
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    positions(index, entity, table, &names, primary_key).map(|_| ())
}

fn positions(
    index: usize,
    entity: &EntityConfig,
    table: &str,
    columns: &[&str],
    primary_key: &[String],
) -> Result<Positions, BindError> {
    let column = |name: &str, path: String| -> Result<usize, BindError> {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| BindError::MissingColumn {
                entity: entity.name.clone(),
                path,
                column: name.to_owned(),
                table: table.to_owned(),
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
            table: table.to_owned(),
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
    Ok(Positions {
        key,
        tenant,
        version: optional(&entity.version_column, "versionColumn")?,
        user: optional(&entity.user_column, "userColumn")?,
        priority_field: optional(&entity.streaming.priority_field, "streaming.priorityField")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::story::{self, column, orders, relation};

    fn model(config: &Config) -> EntityModel {
        EntityModel::new(&config.entities)
    }

    fn names(primary_key: &[&str]) -> Vec<String> {
        primary_key.iter().map(|&c| c.to_owned()).collect()
    }

    /// The binding of `relation`, panicking when there is none.
    fn bound(
        model: &mut EntityModel,
        relation: &Arc<Relation>,
        primary_key: &[&str],
    ) -> Arc<Binding> {
        model
            .bind(relation, &names(primary_key))
            .unwrap_or_else(|e| panic!("{} binds: {e}", relation.name))
            .unwrap_or_else(|| panic!("{} is an entity", relation.name))
    }

    /// The bind error of `relation`.
    fn refused(
        model: &mut EntityModel,
        relation: &Arc<Relation>,
        primary_key: &[&str],
    ) -> BindError {
        match model.bind(relation, &names(primary_key)) {
            Ok(b) => panic!("{} should not bind: {b:?}", relation.name),
            Err(e) => e,
        }
    }

    /// The story's orders table with `columns` instead.
    fn orders_with(oid: u32, columns: &[&str]) -> Arc<Relation> {
        let all = orders();
        relation(
            oid,
            "public",
            "orders",
            columns
                .iter()
                .map(|&name| {
                    all.columns
                        .iter()
                        .find(|c| c.name == name)
                        .cloned()
                        .unwrap_or_else(|| column(name, 25, -1))
                })
                .collect(),
        )
    }

    #[test]
    fn binds_the_story_order_to_column_positions() {
        let config = story::config();
        let mut model = model(&config);
        let binding = bound(&mut model, &orders(), &["id"]);
        assert_eq!(binding.entity.name, "Order");
        assert_eq!(binding.key, [0]);
        assert_eq!(binding.tenant, TenantSource::Column(1));
        assert_eq!(binding.priority_field, Some(4));
        assert_eq!(binding.version, Some(5));
        assert_eq!(binding.user, Some(6));
    }

    #[test]
    fn configured_key_columns_win_over_the_primary_key() {
        let config = story::config_with("", "");
        let mut entity = story::entity(&config, "Order");
        entity.key_columns = Some(names(&["tenant_id", "id"]));
        let mut model = EntityModel::new(&[entity]);
        assert_eq!(
            bound(&mut model, &orders(), &["id"]).key,
            [1, 0],
            "in key order"
        );
        let mut entity = story::entity(&config, "Order");
        entity.key_columns = Some(names(&["id", "line_no"]));
        let mut model = EntityModel::new(&[entity]);
        assert_eq!(
            refused(&mut model, &orders(), &["id"]).to_string(),
            "entity Order: entities[0].keyColumns names column \"line_no\", which public.orders \
             does not have"
        );
    }

    #[test]
    fn missing_configured_column_names_entity_path_column_and_table() {
        let config = story::config();
        let mut model = model(&config);
        let without_tenant = orders_with(
            16_385,
            &["id", "status", "priority", "version", "updated_by"],
        );
        let e = refused(&mut model, &without_tenant, &["id"]);
        assert_eq!(
            e.to_string(),
            "entity Order: entities[0].tenantColumn names column \"tenant_id\", which public.orders \
             does not have"
        );
        assert_eq!(e.disposition(), Disposition::Halt);
        let without_user = orders_with(16_385, &["id", "tenant_id", "priority", "version"]);
        assert_eq!(
            refused(&mut model, &without_user, &["id"]).to_string(),
            "entity Order: entities[0].userColumn names column \"updated_by\", which \
             public.orders does not have"
        );
        let without_priority = orders_with(16_385, &["id", "tenant_id", "version", "updated_by"]);
        assert_eq!(
            refused(&mut model, &without_priority, &["id"]).to_string(),
            "entity Order: entities[0].streaming.priorityField names column \"priority\", which \
             public.orders does not have"
        );
        // A primary key column the relation does not send (a publication column list).
        assert_eq!(
            refused(&mut model, &orders(), &["order_no"]).to_string(),
            "entity Order: the primary key of public.orders names column \"order_no\", which \
             public.orders does not have"
        );
    }

    #[test]
    fn no_primary_key_and_no_key_columns_is_no_key() {
        let config = story::config();
        let mut model = model(&config);
        let products = story::products();
        let e = refused(&mut model, &products, &[]);
        assert_eq!(
            e,
            BindError::NoKey {
                entity: "Product".to_owned(),
                index: 1,
                table: "public.products".to_owned(),
            }
        );
        assert_eq!(
            e.to_string(),
            "entity Product: public.products has no primary key and entities[1].keyColumns is \
             not set"
        );
    }

    #[test]
    fn case_19_a_new_relation_is_bound_again_with_new_positions() {
        let config = story::config();
        let mut model = model(&config);
        let v1 = orders_with(
            16_385,
            &[
                "id",
                "legacy",
                "tenant_id",
                "status",
                "total",
                "priority",
                "version",
                "updated_by",
            ],
        );
        let first = bound(&mut model, &v1, &["id"]);
        assert_eq!(first.tenant, TenantSource::Column(2));
        assert_eq!(first.version, Some(6));
        assert!(
            Arc::ptr_eq(&first, &bound(&mut model, &v1, &["id"])),
            "same description, same binding"
        );
        assert!(model.is_bound(&v1));
        // DROP legacy: a new Relation message, a new Arc, every later position moves.
        let v2 = orders_with(
            16_385,
            &[
                "id",
                "tenant_id",
                "status",
                "total",
                "priority",
                "version",
                "updated_by",
            ],
        );
        assert!(!model.is_bound(&v2));
        let second = bound(&mut model, &v2, &["id"]);
        assert_eq!(second.tenant, TenantSource::Column(1));
        assert_eq!(second.version, Some(5));
        assert_eq!(second.user, Some(6));
        assert!(Arc::ptr_eq(&second.relation, &v2));
        assert!(model
            .cached(16_385)
            .is_some_and(|b| Arc::ptr_eq(b, &second)));
        // RENAME version -> revision: the configured column is gone, and the old binding
        // does not linger.
        let v3 = orders_with(
            16_385,
            &[
                "id",
                "tenant_id",
                "status",
                "total",
                "priority",
                "revision",
                "updated_by",
            ],
        );
        assert_eq!(
            refused(&mut model, &v3, &["id"]).to_string(),
            "entity Order: entities[0].versionColumn names column \"version\", which \
             public.orders does not have"
        );
        assert!(
            model.cached(16_385).is_none(),
            "no stale binding after a failed re-bind"
        );
    }

    #[test]
    fn unmapped_table_and_disabled_entity_are_not_bound() {
        let config = story::config_with("", "      enabled: false");
        let mut model = model(&config);
        let other = relation(16_999, "public", "audit_log", vec![column("id", 23, -1)]);
        assert!(matches!(model.bind(&other, &names(&["id"])), Ok(None)));
        assert!(matches!(
            model.bind(&story::products(), &names(&["id"])),
            Ok(None)
        ));
        assert!(
            model.entity_for("public", "products").is_none(),
            "disabled is skipped"
        );
        assert_eq!(
            model.entity_for("public", "orders").map(|(i, _)| i),
            Some(0)
        );
        // The match is exact: case and schema matter.
        assert!(model.entity_for("public", "Orders").is_none());
        assert!(model.entity_for("sales", "orders").is_none());
        // A table renamed away from its entity drops the binding.
        bound(&mut model, &orders(), &["id"]);
        let renamed = relation(16_385, "public", "orders_old", orders().columns.clone());
        assert!(matches!(model.bind(&renamed, &names(&["id"])), Ok(None)));
        assert!(model.cached(16_385).is_none());
    }

    #[test]
    fn quoted_mixed_case_and_non_ascii_names_match_exactly() {
        let text = "source: { database: app, user: cdc, slot: s, publication: p }\n\
                    kafka: { bootstrapServers: 'k:9092' }\n\
                    entities:\n  - name: Bestellung\n    table: '\"Verkauf\".\"Bestellung Ü\"'\n\
                    \x20   tenantId: acme\n    streaming: { topicPrefix: de }\n";
        let config = Config::from_yaml_str(text, "quoted.yaml")
            .unwrap_or_else(|e| panic!("loads: {e}\n{text}"));
        let mut model = model(&config);
        let table = relation(
            17_000,
            "Verkauf",
            "Bestellung Ü",
            vec![column("Nr", 23, -1)],
        );
        let binding = bound(&mut model, &table, &["Nr"]);
        assert_eq!(binding.tenant, TenantSource::Fixed("acme".to_owned()));
        assert_eq!(binding.key, [0]);
        let lower = relation(
            17_001,
            "verkauf",
            "bestellung ü",
            vec![column("Nr", 23, -1)],
        );
        assert!(matches!(model.bind(&lower, &names(&["Nr"])), Ok(None)));
        assert_eq!(table.qualified_name(), "\"Verkauf\".\"Bestellung Ü\"");
        // The primary key is asked again only for a new description (a new Arc).
        let again = Arc::new((*table).clone());
        let e = refused(&mut model, &again, &["nr"]);
        assert_eq!(
            e.to_string(),
            "entity Bestellung: the primary key of \"Verkauf\".\"Bestellung Ü\" names column \
             \"nr\", which \"Verkauf\".\"Bestellung Ü\" does not have"
        );
    }
}
