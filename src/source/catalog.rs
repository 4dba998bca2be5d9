//! Catalog lookups over the SQL connection: primary keys, types, columns, tables, publications.
//!
//! pgoutput tells us a relation's columns and type oids but not what the types are (an enum,
//! a domain over numeric, an array of something) nor the table's real primary key (under
//! REPLICA IDENTITY FULL every column is flagged as key, CASE-16). These queries fill the gap.
//! Every name and oid is a bind parameter: names may contain dots, quotes, spaces and
//! upper-case letters (CASE-27), and no SQL text is ever built from them.

use tokio_postgres::Client;

use super::setup::TableRef;
use super::sql::SqlError;
use crate::error::Disposition;

/// A catalog lookup that failed, or found nothing where something must be.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The query itself failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// No table of that schema and name.
    #[error("table {table} not found")]
    TableNotFound {
        /// The table looked for.
        table: TableRef,
    },
    /// No relation with that oid (dropped since the Relation message?).
    #[error("relation oid {oid} not found")]
    RelationNotFound {
        /// The relation oid looked for.
        oid: u32,
    },
    /// No type with that oid.
    #[error("type oid {oid} not found")]
    TypeNotFound {
        /// The type oid looked for.
        oid: u32,
    },
}

impl CatalogError {
    /// A failed query follows the SQL error's disposition; a missing table, relation or type
    /// means the catalog no longer matches what the stream or the config said, which a retry
    /// does not fix.
    pub fn disposition(&self) -> Disposition {
        match self {
            CatalogError::Sql(error) => error.disposition(),
            CatalogError::TableNotFound { .. }
            | CatalogError::RelationNotFound { .. }
            | CatalogError::TypeNotFound { .. } => Disposition::Halt,
        }
    }
}

/// Column names of the table's primary key, in key order; empty when it has none.
///
/// The key comes from `pg_index.indisprimary`, not from the Relation message's key flags,
/// which mark every column under REPLICA IDENTITY FULL (CASE-16).
pub async fn primary_key(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, CatalogError> {
    let row = client
        .query_opt(
            "SELECT ARRAY(
                 SELECT a.attname::text
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisprimary
                 ORDER BY k.ord)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(SqlError::query(format!(
            "reading the primary key of {}",
            TableRef::new(schema, table)
        )))?;
    match row {
        Some(row) => Ok(row
            .try_get(0)
            .map_err(SqlError::query("decoding a primary key"))?),
        None => Err(CatalogError::TableNotFound {
            table: TableRef::new(schema, table),
        }),
    }
}

/// A table's oid and the columns pgoutput sends for it, `(name, type oid, typmod)` in
/// attnum order: live, non-generated columns (PostgreSQL 15 does not publish generated
/// ones), as a Relation message would list them.
pub async fn table_columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<(u32, Vec<(String, u32, i32)>), CatalogError> {
    let rows = client
        .query(
            "SELECT c.oid, a.attname::text, a.atttypid, a.atttypmod
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                  AND NOT a.attisdropped AND a.attgenerated = ''
             WHERE n.nspname = $1 AND c.relname = $2
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(SqlError::query(format!(
            "reading the columns of {}",
            TableRef::new(schema, table)
        )))?;
    let not_found = || CatalogError::TableNotFound {
        table: TableRef::new(schema, table),
    };
    let oid: u32 = rows
        .first()
        .ok_or_else(not_found)?
        .try_get(0)
        .map_err(SqlError::query("decoding a table oid"))?;
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let decode = || {
            SqlError::query(format!(
                "decoding a column of {}",
                TableRef::new(schema, table)
            ))
        };
        let name: Option<String> = row.try_get(1).map_err(decode())?;
        let type_oid: Option<u32> = row.try_get(2).map_err(decode())?;
        let typmod: Option<i32> = row.try_get(3).map_err(decode())?;
        if let (Some(name), Some(type_oid), Some(typmod)) = (name, type_oid, typmod) {
            columns.push((name, type_oid, typmod));
        }
    }
    Ok((oid, columns))
}

/// What the value decoder needs to know about one type.
///
/// Callers resolve recursively: a domain's base type, an array's element type, and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// The type's oid.
    pub oid: u32,
    /// Schema of the type.
    pub namespace: String,
    /// Type name as in `pg_type.typname` (arrays are `_name`).
    pub name: String,
    /// `pg_type.typtype`: 'b' base, 'c' composite, 'd' domain, 'e' enum, 'p' pseudo,
    /// 'r' range, 'm' multirange.
    pub typtype: char,
    /// `pg_type.typcategory`: 'A' array, 'N' numeric, 'S' string, 'E' enum, ...
    pub typcategory: char,
    /// Element type of an array (`typelem` when `typcategory` is 'A'); `None` otherwise, since
    /// some scalar types (point, name) also set `typelem`.
    pub element_oid: Option<u32>,
    /// The delimiter between array elements in text form: the element type's `typdelim` for
    /// arrays (`;` for box, `,` for nearly everything else), the type's own otherwise.
    pub delimiter: u8,
    /// Base type of a domain (`typbasetype`); `None` for other types.
    pub base_type_oid: Option<u32>,
    /// Type modifier a domain applies to its base type (`typtypmod`); -1 when none.
    pub base_typmod: i32,
    /// Labels of an enum in `enumsortorder` order; empty for other types.
    pub enum_labels: Vec<String>,
}

impl TypeInfo {
    /// Whether this is an array type.
    pub fn is_array(&self) -> bool {
        self.typcategory == 'A'
    }

    /// Whether this is an enum type.
    pub fn is_enum(&self) -> bool {
        self.typtype == 'e'
    }

    /// Whether this is a domain.
    pub fn is_domain(&self) -> bool {
        self.typtype == 'd'
    }
}

/// Looks up one type by oid, with its element type's delimiter and its enum labels, in one
/// query.
pub async fn type_info(client: &Client, oid: u32) -> Result<TypeInfo, CatalogError> {
    let row = client
        .query_opt(
            "SELECT t.oid, n.nspname::text, t.typname::text, t.typtype, t.typcategory,
                    t.typelem, coalesce(e.typdelim, t.typdelim), t.typbasetype, t.typtypmod,
                    ARRAY(SELECT l.enumlabel::text FROM pg_enum l
                          WHERE l.enumtypid = t.oid ORDER BY l.enumsortorder)
             FROM pg_type t
             JOIN pg_namespace n ON n.oid = t.typnamespace
             LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
             WHERE t.oid = $1::oid",
            &[&oid],
        )
        .await
        .map_err(SqlError::query(format!("reading type oid {oid}")))?
        .ok_or(CatalogError::TypeNotFound { oid })?;
    let decode = || SqlError::query(format!("decoding type oid {oid}"));
    let typcategory = char_column(row.try_get(4).map_err(decode())?);
    let element: u32 = row.try_get(5).map_err(decode())?;
    let typtype = char_column(row.try_get(3).map_err(decode())?);
    let base: u32 = row.try_get(7).map_err(decode())?;
    Ok(TypeInfo {
        oid: row.try_get(0).map_err(decode())?,
        namespace: row.try_get(1).map_err(decode())?,
        name: row.try_get(2).map_err(decode())?,
        typtype,
        typcategory,
        element_oid: (typcategory == 'A' && element != 0).then_some(element),
        delimiter: row.try_get::<_, i8>(6).map_err(decode())?.to_ne_bytes()[0],
        base_type_oid: (typtype == 'd' && base != 0).then_some(base),
        base_typmod: row.try_get(8).map_err(decode())?,
        enum_labels: row.try_get(9).map_err(decode())?,
    })
}

/// A `"char"` column (one byte) as a Rust char; the catalog codes are all ASCII.
fn char_column(value: i8) -> char {
    char::from(value.to_ne_bytes()[0])
}

/// The live columns of a relation, `(attnum, name)` in attnum order: dropped columns and
/// system columns (attnum <= 0) are left out.
pub async fn relation_attnums(
    client: &Client,
    relation_oid: u32,
) -> Result<Vec<(i16, String)>, CatalogError> {
    // The LEFT JOIN keeps one row for a relation without live columns, so that "no columns"
    // and "no relation" can be told apart.
    let rows = client
        .query(
            "SELECT a.attnum, a.attname::text
             FROM pg_class c
             LEFT JOIN pg_attribute a
               ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.oid = $1::oid
             ORDER BY a.attnum",
            &[&relation_oid],
        )
        .await
        .map_err(SqlError::query(format!(
            "reading the columns of relation oid {relation_oid}"
        )))?;
    if rows.is_empty() {
        return Err(CatalogError::RelationNotFound { oid: relation_oid });
    }
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let decode =
            || SqlError::query(format!("decoding a column of relation oid {relation_oid}"));
        let attnum: Option<i16> = row.try_get(0).map_err(decode())?;
        let name: Option<String> = row.try_get(1).map_err(decode())?;
        if let (Some(attnum), Some(name)) = (attnum, name) {
            columns.push((attnum, name));
        }
    }
    Ok(columns)
}

/// What `setup` and `check` need to know about one entity table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    /// The table's oid.
    pub oid: u32,
    /// `pg_class.relkind`: 'r' table, 'p' partitioned table, 'v' view, ...
    pub relkind: char,
    /// `pg_class.relreplident`: 'f' full, 'd' default, 'n' nothing, 'i' index.
    pub replica_identity: char,
    /// Whether the table has a primary key.
    pub has_primary_key: bool,
}

impl TableState {
    /// Whether the relation can be published (ordinary or partitioned table).
    pub fn is_table(&self) -> bool {
        matches!(self.relkind, 'r' | 'p')
    }
}

/// The table's state, or `None` when there is no relation of that schema and name.
pub async fn table_state(
    client: &Client,
    table: &TableRef,
) -> Result<Option<TableState>, SqlError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind, c.relreplident,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(SqlError::query(format!("reading table {table}")))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let decode = || SqlError::query(format!("decoding table {table}"));
    Ok(Some(TableState {
        oid: row.try_get(0).map_err(decode())?,
        relkind: char_column(row.try_get(1).map_err(decode())?),
        replica_identity: char_column(row.try_get(2).map_err(decode())?),
        has_primary_key: row.try_get(3).map_err(decode())?,
    }))
}

/// A publication as `setup` and `check` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// `FOR ALL TABLES`: every table is covered and none can be added.
    pub all_tables: bool,
    /// Publishes inserts.
    pub insert: bool,
    /// Publishes updates.
    pub update: bool,
    /// Publishes deletes.
    pub delete: bool,
    /// Publishes truncates.
    pub truncate: bool,
    /// Tables named in the publication, directly or through `TABLES IN SCHEMA` (PG 15+),
    /// sorted; empty for `FOR ALL TABLES`.
    pub tables: Vec<TableRef>,
}

impl Publication {
    /// Whether changes of `table` are published.
    pub fn covers(&self, table: &TableRef) -> bool {
        self.all_tables || self.tables.contains(table)
    }

    /// The operations it does not publish, in pgoutput's order.
    pub fn missing_operations(&self) -> Vec<&'static str> {
        [
            ("insert", self.insert),
            ("update", self.update),
            ("delete", self.delete),
            ("truncate", self.truncate),
        ]
        .into_iter()
        .filter(|(_, published)| !published)
        .map(|(operation, _)| operation)
        .collect()
    }
}

/// The database the client is connected to.
pub async fn current_database(client: &Client) -> Result<String, SqlError> {
    client
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(SqlError::query("reading the current database"))?
        .try_get(0)
        .map_err(SqlError::query("decoding the current database"))
}

/// The numeric server version, e.g. 150004 for 15.4.
pub async fn server_version_num(client: &Client) -> Result<i32, SqlError> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(SqlError::query("reading the server version"))?;
    row.try_get(0)
        .map_err(SqlError::query("decoding the server version"))
}

/// The publication named `name`, or `None` when it does not exist.
///
/// Membership is read from `pg_publication_rel` (and `pg_publication_namespace` on PG 15+)
/// rather than the `pg_publication_tables` view, because the view lists the partitions of a
/// partitioned table instead of the table that was added.
pub async fn publication(client: &Client, name: &str) -> Result<Option<Publication>, SqlError> {
    let what = || format!("reading publication {name}");
    let row = client
        .query_opt(
            "SELECT oid, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
             FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(SqlError::query(what()))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let decode = || SqlError::query(format!("decoding publication {name}"));
    let oid: u32 = row.try_get(0).map_err(decode())?;
    let mut publication = Publication {
        all_tables: row.try_get(1).map_err(decode())?,
        insert: row.try_get(2).map_err(decode())?,
        update: row.try_get(3).map_err(decode())?,
        delete: row.try_get(4).map_err(decode())?,
        truncate: row.try_get(5).map_err(decode())?,
        tables: Vec::new(),
    };
    if publication.all_tables {
        return Ok(Some(publication));
    }
    const DIRECT: &str = "SELECT n.nspname::text, c.relname::text
        FROM pg_publication_rel pr
        JOIN pg_class c ON c.oid = pr.prrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE pr.prpubid = $1::oid";
    const WITH_SCHEMAS: &str = "SELECT n.nspname::text, c.relname::text
        FROM pg_publication_rel pr
        JOIN pg_class c ON c.oid = pr.prrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE pr.prpubid = $1::oid
        UNION
        SELECT n.nspname::text, c.relname::text
        FROM pg_publication_namespace pn
        JOIN pg_namespace n ON n.oid = pn.pnnspid
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
        WHERE pn.pnpubid = $1::oid";
    let sql = if server_version_num(client).await? >= 150000 {
        WITH_SCHEMAS
    } else {
        DIRECT
    };
    let rows = client
        .query(sql, &[&oid])
        .await
        .map_err(SqlError::query(what()))?;
    for row in rows {
        publication.tables.push(TableRef {
            schema: row.try_get(0).map_err(decode())?,
            name: row.try_get(1).map_err(decode())?,
        });
    }
    publication.tables.sort();
    Ok(Some(publication))
}

/// A replication slot as `setup` and `check` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Output plugin of a logical slot; `None` for a physical slot.
    pub plugin: Option<String>,
    /// Database of a logical slot; `None` for a physical slot.
    pub database: Option<String>,
    /// Whether a process is streaming from it now.
    pub active: bool,
    /// The walsender's pid when active.
    pub active_pid: Option<i32>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PG 13+; `None` before).
    pub wal_status: Option<String>,
    /// WAL bytes the slot keeps on disk: current WAL position minus `restart_lsn`.
    pub retained_bytes: Option<i64>,
    /// WAL bytes not yet confirmed by the consumer: current position minus
    /// `confirmed_flush_lsn`.
    pub unconfirmed_bytes: Option<i64>,
    /// Bytes that can still be written before the slot risks invalidation; `None` when
    /// `max_slot_wal_keep_size` is unlimited (or before PG 13).
    pub safe_wal_size: Option<i64>,
}

impl Slot {
    /// Whether the slot can no longer stream: its WAL was removed (CASE-26).
    pub fn is_invalidated(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

/// The replication slot named `name`, or `None` when it does not exist.
pub async fn slot(client: &Client, name: &str) -> Result<Option<Slot>, SqlError> {
    // On a standby pg_current_wal_lsn() raises an error; the replay position is the
    // equivalent there.
    const CURRENT: &str = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                           ELSE pg_current_wal_lsn() END";
    let sql = if server_version_num(client).await? >= 130000 {
        format!(
            "SELECT plugin::text, database::text, active, active_pid, wal_status,
                    pg_wal_lsn_diff({CURRENT}, restart_lsn)::int8,
                    pg_wal_lsn_diff({CURRENT}, confirmed_flush_lsn)::int8,
                    safe_wal_size
             FROM pg_replication_slots WHERE slot_name = $1"
        )
    } else {
        format!(
            "SELECT plugin::text, database::text, active, active_pid, NULL::text,
                    pg_wal_lsn_diff({CURRENT}, restart_lsn)::int8,
                    pg_wal_lsn_diff({CURRENT}, confirmed_flush_lsn)::int8,
                    NULL::int8
             FROM pg_replication_slots WHERE slot_name = $1"
        )
    };
    let row = client
        .query_opt(&sql, &[&name])
        .await
        .map_err(SqlError::query(format!("reading replication slot {name}")))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let decode = || SqlError::query(format!("decoding replication slot {name}"));
    Ok(Some(Slot {
        plugin: row.try_get(0).map_err(decode())?,
        database: row.try_get(1).map_err(decode())?,
        active: row.try_get(2).map_err(decode())?,
        active_pid: row.try_get(3).map_err(decode())?,
        wal_status: row.try_get(4).map_err(decode())?,
        retained_bytes: row.try_get(5).map_err(decode())?,
        unconfirmed_bytes: row.try_get(6).map_err(decode())?,
        safe_wal_size: row.try_get(7).map_err(decode())?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_operations_are_listed_in_pgoutput_order() {
        let publication = Publication {
            all_tables: false,
            insert: true,
            update: false,
            delete: true,
            truncate: false,
            tables: vec![],
        };
        assert_eq!(publication.missing_operations(), ["update", "truncate"]);
    }

    #[test]
    fn an_all_tables_publication_covers_any_table() {
        let publication = Publication {
            all_tables: true,
            insert: true,
            update: true,
            delete: true,
            truncate: true,
            tables: vec![],
        };
        assert!(publication.covers(&TableRef::new("any", "thing")));
    }

    #[test]
    fn catalog_char_codes_become_chars() {
        assert_eq!(char_column(b'f' as i8), 'f');
        assert_eq!(char_column(b'A' as i8), 'A');
    }
}
