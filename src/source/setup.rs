//! `entity-cdc setup`: what the database needs before the connector can stream from it.
//!
//! [`plan`] reads the catalog and lists the SQL statements still missing, each with its
//! reason, so an operator (or a DBA in a change ticket) can read exactly what will run;
//! [`apply`] runs that list. Nothing is ever dropped: a publication that already publishes
//! other tables keeps them (they are reported), and an existing slot is never replaced,
//! because replacing it would silently skip every change it still holds (CASE-26).
//!
//! Statements are built as text because they are shown to people, so every name goes through
//! [`quote_ident`] or [`quote_literal`]: entity tables may have dots, quotes, spaces and
//! upper-case letters in their names (CASE-27).

use std::fmt;

use tokio_postgres::Client;

use super::catalog::{self, Publication, TableState};
use super::params::ConnectParams;
use super::sql::SqlError;
use crate::error::Disposition;

/// What the connector needs from one database.
#[derive(Debug, Clone)]
pub struct DatabaseTarget {
    /// Where to connect.
    pub params: ConnectParams,
    /// Publication that must publish every entity table.
    pub publication: String,
    /// Logical replication slot (pgoutput) the connector streams from.
    pub slot: String,
    /// The entity tables.
    pub tables: Vec<TableRef>,
}

/// A table by its exact schema and name, as stored in the catalog (not quoted, not folded).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableRef {
    /// Schema name, e.g. `case27.sales`.
    pub schema: String,
    /// Table name, e.g. `Order Lines`.
    pub name: String,
}

impl TableRef {
    /// A table reference from exact names.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> TableRef {
        TableRef {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The table as SQL: both parts quoted, so `"case27.sales"."orders"` and
    /// `"case27"."sales.orders"` stay different tables.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Shown quoted, because the unquoted `schema.name` of two different tables can be the same
/// string (CASE-27).
impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

/// Quotes an identifier for SQL text, like `format('%I')` but always: the result is always
/// correct whatever the name (reserved word, upper case, dot, quote, non-ASCII), and always
/// quoting makes the printed plan predictable.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Quotes a string literal like PostgreSQL's `quote_literal`: quotes doubled, and when there
/// is a backslash, doubled backslashes in an `E''` string, which reads the same whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> String {
    let escape = value.contains('\\');
    let mut quoted = String::with_capacity(value.len() + 3);
    if escape {
        quoted.push('E');
    }
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' || (escape && c == '\\') {
            quoted.push(c);
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// When a step runs relative to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    /// Catalog changes (publication, replica identity), all in one transaction so that a
    /// failure leaves nothing half done.
    Catalog,
    /// Slot creation, after the catalog transaction: PostgreSQL refuses to create a logical
    /// slot in a transaction that has written.
    Slot,
}

/// One SQL statement of a plan, with the reason it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupStep {
    /// The statement, exactly as it will run.
    pub sql: String,
    /// Why it is needed, for the operator.
    pub reason: String,
    /// When it runs.
    pub phase: StepPhase,
}

/// What `setup` would do to make the database ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupPlan {
    /// The statements, in the order they run.
    pub steps: Vec<SetupStep>,
    /// Tables the publication already publishes that are not entity tables: left in place,
    /// since other consumers may rely on them, but reported because the connector will
    /// receive (and skip) their changes.
    pub extra_tables: Vec<TableRef>,
}

impl SetupPlan {
    /// Whether the database is already ready.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The statements as a script, each preceded by its reason as a comment.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if self.steps.is_empty() {
            text.push_str("-- nothing to do: the database is ready\n");
        }
        for step in &self.steps {
            text.push_str(&format!("-- {}\n{};\n", step.reason, step.sql));
        }
        if !self.extra_tables.is_empty() {
            let names: Vec<String> = self.extra_tables.iter().map(TableRef::quoted).collect();
            text.push_str(&format!(
                "-- note: the publication also publishes {} (not entity tables; left in place)\n",
                names.join(", ")
            ));
        }
        text
    }
}

/// Why setup cannot plan or apply.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Reading the catalog failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// An entity table does not exist.
    #[error("table {table} not found")]
    TableNotFound {
        /// The missing table.
        table: TableRef,
    },
    /// An entity "table" is a view, sequence, foreign table, ...: it cannot be published.
    #[error("{table} is not a table (relkind '{relkind}') and cannot be published")]
    NotATable {
        /// The relation.
        table: TableRef,
        /// Its `pg_class.relkind`.
        relkind: char,
    },
    /// The slot name is not one PostgreSQL accepts.
    #[error("invalid slot name {slot:?}: {reason}")]
    InvalidSlotName {
        /// The configured name.
        slot: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The slot exists but is physical.
    #[error("replication slot {slot} is a physical slot, not a logical one")]
    SlotNotLogical {
        /// The slot name.
        slot: String,
    },
    /// The slot exists with another output plugin.
    #[error("replication slot {slot} uses plugin {plugin}, not pgoutput")]
    SlotPluginMismatch {
        /// The slot name.
        slot: String,
        /// Its plugin.
        plugin: String,
    },
    /// The slot exists for another database.
    #[error("replication slot {slot} belongs to database {database}, not {expected}")]
    SlotInOtherDatabase {
        /// The slot name.
        slot: String,
        /// The slot's database.
        database: String,
        /// The database we set up.
        expected: String,
    },
    /// The slot lost WAL it still needed (CASE-26).
    #[error("replication slot {slot} invalidated, data gap")]
    SlotInvalidated {
        /// The slot name.
        slot: String,
    },
    /// The server is not configured for logical decoding: applying would create the
    /// publication and then fail on the slot, so nothing is applied.
    #[error(
        "wal_level is {current}, logical decoding needs wal_level = logical; nothing was applied"
    )]
    WalLevel {
        /// The server's wal_level.
        current: String,
    },
    /// A statement of the plan failed.
    #[error("running {statement}: {}", source.as_db_error().map_or_else(|| source.to_string(), |e| e.message().to_owned()))]
    Apply {
        /// The statement.
        statement: String,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl SetupError {
    /// What the operator should do, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            SetupError::Sql(_) | SetupError::Apply { .. } => None,
            SetupError::WalLevel { .. } => Some(
                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL and run \
                 entity-cdc setup --apply again"
                    .to_owned(),
            ),
            SetupError::TableNotFound { table } => Some(format!(
                "create {table} or correct the entity's table in connector.yaml \
                 (schema and name are exact, case-sensitive names)"
            )),
            SetupError::NotATable { table, .. } => Some(format!(
                "point the entity at the table behind {table} in connector.yaml"
            )),
            SetupError::InvalidSlotName { .. } => Some(
                "slot names may use lower-case letters, digits and underscores, \
                 up to 63 characters"
                    .to_owned(),
            ),
            SetupError::SlotNotLogical { slot } | SetupError::SlotPluginMismatch { slot, .. } => {
                Some(format!(
                    "configure another slot name, or drop this slot if nothing uses it: \
                     SELECT pg_drop_replication_slot({})",
                    quote_literal(slot)
                ))
            }
            SetupError::SlotInOtherDatabase { .. } => Some(
                "slot names are cluster-wide: configure a slot name unique to this database"
                    .to_owned(),
            ),
            SetupError::SlotInvalidated { slot } => Some(format!(
                "drop and recreate the slot, then resnapshot the entities: SELECT \
                 pg_drop_replication_slot({}); entity-cdc setup --apply (see CASE-26)",
                quote_literal(slot)
            )),
        }
    }

    /// Everything here needs an operator, except a lost connection.
    pub fn disposition(&self) -> Disposition {
        match self {
            SetupError::Sql(error) => error.disposition(),
            _ => Disposition::Halt,
        }
    }
}

/// Checks a slot name against PostgreSQL's rules before any SQL is built from it.
fn validate_slot_name(slot: &str) -> Result<(), SetupError> {
    let invalid = |reason| SetupError::InvalidSlotName {
        slot: slot.to_owned(),
        reason,
    };
    if slot.is_empty() {
        return Err(invalid("empty"));
    }
    // NAMEDATALEN - 1.
    if slot.len() > 63 {
        return Err(invalid("longer than 63 bytes"));
    }
    if !slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid(
            "only lower-case letters, digits and underscores are allowed",
        ));
    }
    Ok(())
}

/// The entity tables without duplicates, in their configured order.
fn distinct_tables(tables: &[TableRef]) -> Vec<&TableRef> {
    let mut seen = std::collections::HashSet::new();
    tables.iter().filter(|t| seen.insert(*t)).collect()
}

/// Reads the catalog and returns the statements still needed; an empty plan means the
/// database is ready.
pub async fn plan(client: &Client, target: &DatabaseTarget) -> Result<SetupPlan, SetupError> {
    validate_slot_name(&target.slot)?;
    let tables = distinct_tables(&target.tables);
    let mut states: Vec<(&TableRef, TableState)> = Vec::with_capacity(tables.len());
    for table in &tables {
        let state = catalog::table_state(client, table).await?.ok_or_else(|| {
            SetupError::TableNotFound {
                table: (*table).clone(),
            }
        })?;
        if !state.is_table() {
            return Err(SetupError::NotATable {
                table: (*table).clone(),
                relkind: state.relkind,
            });
        }
        states.push((table, state));
    }

    let mut plan = SetupPlan::default();
    let publication = catalog::publication(client, &target.publication).await?;
    plan_publication(
        &mut plan,
        &target.publication,
        publication.as_ref(),
        &tables,
    );

    for (table, state) in &states {
        if state.replica_identity != 'f' {
            plan.steps.push(SetupStep {
                sql: format!("ALTER TABLE {} REPLICA IDENTITY FULL", table.quoted()),
                reason: format!(
                    "replica identity of {table} is {}: the connector needs the full old row \
                     of every update and delete",
                    replica_identity_name(state.replica_identity)
                ),
                phase: StepPhase::Catalog,
            });
        }
    }

    plan_slot(client, &mut plan, target).await?;
    Ok(plan)
}

/// Adds the publication statements: create it, or add the tables it lacks.
fn plan_publication(
    plan: &mut SetupPlan,
    name: &str,
    publication: Option<&Publication>,
    tables: &[&TableRef],
) {
    let Some(publication) = publication else {
        let sql = if tables.is_empty() {
            format!("CREATE PUBLICATION {}", quote_ident(name))
        } else {
            let list: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(name),
                list.join(", ")
            )
        };
        plan.steps.push(SetupStep {
            sql,
            reason: format!("publication {name} does not exist"),
            phase: StepPhase::Catalog,
        });
        return;
    };
    let missing: Vec<&&TableRef> = tables.iter().filter(|t| !publication.covers(t)).collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|t| t.quoted()).collect();
        plan.steps.push(SetupStep {
            sql: format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(name),
                list.join(", ")
            ),
            reason: format!("publication {name} does not publish {}", list.join(", ")),
            phase: StepPhase::Catalog,
        });
    }
    plan.extra_tables = publication
        .tables
        .iter()
        .filter(|t| !tables.contains(t))
        .cloned()
        .collect();
}

/// Adds the slot creation when the slot is missing; an existing slot must be usable as is.
async fn plan_slot(
    client: &Client,
    plan: &mut SetupPlan,
    target: &DatabaseTarget,
) -> Result<(), SetupError> {
    let slot_name = &target.slot;
    let Some(slot) = catalog::slot(client, slot_name).await? else {
        plan.steps.push(SetupStep {
            sql: format!(
                "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
                quote_literal(slot_name)
            ),
            reason: format!("replication slot {slot_name} does not exist"),
            phase: StepPhase::Slot,
        });
        return Ok(());
    };
    let Some(plugin) = slot.plugin.clone() else {
        return Err(SetupError::SlotNotLogical {
            slot: slot_name.clone(),
        });
    };
    if plugin != "pgoutput" {
        return Err(SetupError::SlotPluginMismatch {
            slot: slot_name.clone(),
            plugin,
        });
    }
    let database = catalog::current_database(client).await?;
    if let Some(slot_database) = slot.database.clone() {
        if slot_database != database {
            return Err(SetupError::SlotInOtherDatabase {
                slot: slot_name.clone(),
                database: slot_database,
                expected: database,
            });
        }
    }
    if slot.is_invalidated() {
        return Err(SetupError::SlotInvalidated {
            slot: slot_name.clone(),
        });
    }
    Ok(())
}

/// The SQL spelling of a `relreplident` code.
pub(crate) fn replica_identity_name(code: char) -> &'static str {
    match code {
        'd' => "DEFAULT",
        'n' => "NOTHING",
        'i' => "USING INDEX",
        'f' => "FULL",
        _ => "unknown",
    }
}

/// Runs a plan: the catalog steps in one transaction, then the slot creation.
pub async fn apply(client: &mut Client, plan: &SetupPlan) -> Result<(), SetupError> {
    // Refuse before changing anything: a half-applied setup (a publication but no slot)
    // is confusing to find later.
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(SqlError::query("reading wal_level"))?
        .get(0);
    if wal_level != "logical" && !plan.is_empty() {
        return Err(SetupError::WalLevel { current: wal_level });
    }
    let apply_error = |statement: &str| {
        let statement = statement.to_owned();
        move |source| SetupError::Apply { statement, source }
    };
    let catalog_steps: Vec<&SetupStep> = plan
        .steps
        .iter()
        .filter(|s| s.phase == StepPhase::Catalog)
        .collect();
    if !catalog_steps.is_empty() {
        let transaction = client.transaction().await.map_err(apply_error("BEGIN"))?;
        for step in catalog_steps {
            transaction
                .batch_execute(&step.sql)
                .await
                .map_err(apply_error(&step.sql))?;
        }
        transaction.commit().await.map_err(apply_error("COMMIT"))?;
    }
    for step in plan.steps.iter().filter(|s| s.phase == StepPhase::Slot) {
        client
            .batch_execute(&step.sql)
            .await
            .map_err(apply_error(&step.sql))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_ident("orders"), r#""orders""#);
        assert_eq!(quote_ident("Order Lines"), r#""Order Lines""#);
        assert_eq!(quote_ident(r#"say "hi""#), r#""say ""hi""""#);
        assert_eq!(quote_ident("case27.sales"), r#""case27.sales""#);
        assert_eq!(quote_ident("naïve-col"), r#""naïve-col""#);
        assert_eq!(quote_ident(""), r#""""#);
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes_like_postgres() {
        assert_eq!(quote_literal("slot"), "'slot'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
    }

    #[test]
    fn dotted_names_stay_distinct_tables() {
        let a = TableRef::new("case27.sales", "orders");
        let b = TableRef::new("case27", "sales.orders");
        assert_eq!(a.to_string(), r#""case27.sales"."orders""#);
        assert_eq!(b.to_string(), r#""case27"."sales.orders""#);
    }

    #[test]
    fn slot_names_follow_postgres_rules() {
        assert!(validate_slot_name("entity_cdc_1").is_ok());
        for bad in ["", "Upper", "with-dash", "x'y", &"a".repeat(64)] {
            assert!(validate_slot_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_publication_is_created_for_all_tables() {
        let orders = TableRef::new("public", "orders");
        let lines = TableRef::new("case27", "Order Lines");
        let mut plan = SetupPlan::default();
        plan_publication(&mut plan, "cdc", None, &[&orders, &lines]);
        assert_eq!(
            plan.steps[0].sql,
            r#"CREATE PUBLICATION "cdc" FOR TABLE "public"."orders", "case27"."Order Lines""#
        );
    }

    #[test]
    fn an_existing_publication_gets_only_missing_tables_and_keeps_extra_ones() {
        let orders = TableRef::new("public", "orders");
        let lines = TableRef::new("case27", "Order Lines");
        let other = TableRef::new("public", "audit");
        let publication = Publication {
            all_tables: false,
            insert: true,
            update: true,
            delete: true,
            truncate: true,
            tables: vec![other.clone(), orders.clone()],
        };
        let mut plan = SetupPlan::default();
        plan_publication(&mut plan, "cdc", Some(&publication), &[&orders, &lines]);
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(
            plan.steps[0].sql,
            r#"ALTER PUBLICATION "cdc" ADD TABLE "case27"."Order Lines""#
        );
        assert_eq!(plan.extra_tables, [other]);
        assert!(plan.render().contains(r#"also publishes "public"."audit""#));
    }

    #[test]
    fn an_empty_plan_says_the_database_is_ready() {
        assert_eq!(
            SetupPlan::default().render(),
            "-- nothing to do: the database is ready\n"
        );
    }

    #[test]
    fn an_invalidated_slot_hint_says_drop_recreate_resnapshot() {
        let hint = SetupError::SlotInvalidated {
            slot: "cdc".to_owned(),
        }
        .hint()
        .unwrap_or_default();
        assert!(hint.contains("pg_drop_replication_slot('cdc')"), "{hint}");
        assert!(hint.contains("resnapshot"), "{hint}");
    }
}
