//! The story's tables and entities as hand-built values, for the unit tests of `event`,
//! `codec` and `model`: `public.orders` (Order, diff mode, priority column) and
//! `public.products` (Product, full mode), as connector.yaml declares them.

use std::sync::Arc;

use crate::config::{Config, EntityConfig};
use crate::model::{Binding, EntityModel};
use crate::source::change::{Change, ChangeKind, Column, Relation, Row};
use crate::source::pgoutput::ReplicaIdentity;
use crate::source::value::{parse_text, PgType, Value};
use crate::source::Lsn;

/// The commit LSN of the story's transactions, printed `0/16B3748`.
pub const COMMIT_LSN: Lsn = Lsn(0x016B_3748);

/// 2025-01-15T10:30:00Z in PostgreSQL-epoch microseconds.
pub const COMMIT_TS: i64 = 790_252_200_000_000;

/// connector.yaml with the story's two entities; `extra_order` is appended to Order's
/// `streaming` block (indented by 6 spaces), `extra_product` to Product's.
pub fn config_with(order_streaming: &str, product_streaming: &str) -> Config {
    let text = format!(
        "
source: {{ database: app, user: cdc, slot: s, publication: p }}
kafka: {{ bootstrapServers: 'k:9092' }}
entities:
  - name: Order
    table: public.orders
    tenantColumn: tenant_id
    versionColumn: version
    userColumn: updated_by
    streaming:
      topicPrefix: core.orders
      eventPayloadMode: diff
      priorityField: priority
{order_streaming}
  - name: Product
    table: public.products
    tenantColumn: tenant_id
    versionColumn: version
    streaming:
      topicPrefix: core.catalog
      eventPayloadMode: full
{product_streaming}
"
    );
    Config::from_yaml_str(&text, "story.yaml")
        .unwrap_or_else(|e| panic!("story config should load: {e}\n---\n{text}"))
}

/// The story's config as connector.yaml has it.
pub fn config() -> Config {
    config_with("", "")
}

/// The entity named `name` in `config`.
pub fn entity(config: &Config, name: &str) -> EntityConfig {
    config
        .entities
        .iter()
        .find(|e| e.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("entity {name} in the story config"))
}

/// A column of a built-in type (`oid`, `typmod`).
pub fn column(name: &str, oid: u32, typmod: i32) -> Column {
    Column {
        name: name.to_owned(),
        type_oid: oid,
        type_modifier: typmod,
        pg_type: PgType::builtin(oid, typmod)
            .unwrap_or_else(|| panic!("oid {oid} of column {name} is built in")),
        identity: false,
    }
}

/// `numeric(p,s)`'s typmod.
pub const fn numeric_typmod(precision: i32, scale: i32) -> i32 {
    ((precision << 16) | scale) + 4
}

/// A relation under REPLICA IDENTITY FULL.
pub fn relation(oid: u32, schema: &str, name: &str, columns: Vec<Column>) -> Arc<Relation> {
    Arc::new(Relation {
        oid,
        schema: schema.to_owned(),
        name: name.to_owned(),
        replica_identity: ReplicaIdentity::Full,
        columns: columns
            .into_iter()
            .map(|c| Column {
                identity: true,
                ..c
            })
            .collect(),
    })
}

/// `public.orders (id bigint primary key, tenant_id bigint, status text, total numeric(12,2),
/// priority text, version int, updated_by text)`.
pub fn orders() -> Arc<Relation> {
    relation(
        16_385,
        "public",
        "orders",
        vec![
            column("id", 20, -1),
            column("tenant_id", 20, -1),
            column("status", 25, -1),
            column("total", 1700, numeric_typmod(12, 2)),
            column("priority", 25, -1),
            column("version", 23, -1),
            column("updated_by", 25, -1),
        ],
    )
}

/// `public.products (id int primary key, tenant_id bigint, name text, price numeric(10,2),
/// version int)`.
pub fn products() -> Arc<Relation> {
    relation(
        16_390,
        "public",
        "products",
        vec![
            column("id", 23, -1),
            column("tenant_id", 20, -1),
            column("name", 25, -1),
            column("price", 1700, numeric_typmod(10, 2)),
            column("version", 23, -1),
        ],
    )
}

/// A row from PostgreSQL's text of each column; `\N` is NULL and `\u` an unavailable
/// (unchanged TOAST, or not part of the replica identity) value.
pub fn row(relation: &Relation, texts: &[&str]) -> Row {
    assert_eq!(
        relation.columns.len(),
        texts.len(),
        "one text per column of {}",
        relation.name
    );
    relation
        .columns
        .iter()
        .zip(texts)
        .map(|(column, text)| match *text {
            "\\N" => Value::Null,
            "\\u" => Value::Unavailable,
            text => parse_text(&column.pg_type, text)
                .unwrap_or_else(|e| panic!("column {}: {text:?}: {e}", column.name)),
        })
        .collect()
}

/// A change of the story's transaction at `index`.
pub fn change(
    relation: &Arc<Relation>,
    kind: ChangeKind,
    index: u32,
    old: Option<Row>,
    new: Option<Row>,
) -> Change {
    Change {
        commit_lsn: COMMIT_LSN,
        xid: 750,
        commit_ts: COMMIT_TS,
        index,
        relation: relation.clone(),
        kind,
        old,
        new,
    }
}

/// The binding of `relation` under `config`, with `primary_key`; panics when there is none.
pub fn bind(config: &Config, relation: &Arc<Relation>, primary_key: &[&str]) -> Arc<Binding> {
    let primary_key: Vec<String> = primary_key.iter().map(|&c| c.to_owned()).collect();
    EntityModel::new(&config.entities)
        .bind(relation, &primary_key)
        .unwrap_or_else(|e| panic!("{} binds: {e}", relation.name))
        .unwrap_or_else(|| panic!("{} is a streamed entity", relation.name))
}

/// The story's Order entity bound to `public.orders` (key `id`).
pub fn order_binding() -> Arc<Binding> {
    bind(&config(), &orders(), &["id"])
}

/// The insert of [`ORDER_456`] as the source hands it over.
pub fn order_456_insert() -> Change {
    let orders = orders();
    change(
        &orders,
        ChangeKind::Insert,
        0,
        None,
        Some(row(&orders, &ORDER_456)),
    )
}

/// Order 456 of tenant 123 as the story creates it.
pub const ORDER_456: [&str; 7] = [
    "456",
    "123",
    "NEW",
    "99.90",
    "high",
    "1",
    "user@example.com",
];

/// The story's OrderCreated event for [`ORDER_456`], built the way the pipeline builds it.
pub fn order_created() -> crate::event::EntityEvent {
    let orders = orders();
    let binding = bind(&config(), &orders, &["id"]);
    let created = change(
        &orders,
        ChangeKind::Insert,
        0,
        None,
        Some(row(&orders, &ORDER_456)),
    );
    crate::event::build_events(&binding, &created, None)
        .unwrap_or_else(|e| panic!("builds: {e}"))
        .remove(0)
}

/// Product 42 of tenant 123 before the price change.
pub const PRODUCT_42_BEFORE: [&str; 5] = ["42", "123", "Widget", "120.00", "3"];

/// Product 42 after the price change.
pub const PRODUCT_42_AFTER: [&str; 5] = ["42", "123", "Widget", "150.00", "4"];

/// Parses JSON text (numbers keep their digits), panicking with the text.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("test JSON {text}: {e}"))
}

/// Compares a value with expected JSON text exactly, printing both sides in full.
#[track_caller]
pub fn assert_json(actual: &serde_json::Value, expected: &str) {
    let expected = json(expected);
    assert_eq!(
        actual.to_string(),
        expected.to_string(),
        "\nactual:   {actual}\nexpected: {expected}"
    );
}
