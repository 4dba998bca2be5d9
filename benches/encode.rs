//! Building and encoding one event, per payload mode, as JSON and as Avro:
//! `cargo bench --bench encode`. Each benchmark is one event on one core, so criterion's
//! `thrpt` line is events per second per core.
//!
//! The change is an UPDATE of the story's order (7 columns, old and new row). Avro uses a
//! schema generated once and ids taken as registered, as the encoder does once its cache
//! holds the subject: no registry, no network, only building the event and its record.
//!
//! - `json/<mode>`: `encode_json`, what `run` uses for JSON.
//! - `avro/<mode>`: `avro::record`, what `run` uses for Avro: the body written straight from
//!   the typed row, the key, the headers, the wire-format frames.
//! - `avro_value_tree/<mode>`: the previous path, kept for comparison: the event as an
//!   apache-avro `Value` tree, validated and written by apache-avro's datum writer (built
//!   once, as the encoder kept it), the key through apache-avro, the same headers and frames.

use std::sync::Arc;

use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use entity_cdc::codec::avro::{encode, record, schema, wire_format};
use entity_cdc::codec::encode_json;
use entity_cdc::config::Config;
use entity_cdc::event::build_events;
use entity_cdc::model::{Binding, EntityModel};
use entity_cdc::source::change::{Change, ChangeKind, Column, Relation};
use entity_cdc::source::pgoutput::ReplicaIdentity;
use entity_cdc::source::value::{parse_text, PgType};
use entity_cdc::source::Lsn;

fn config(mode: &str) -> Config {
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
      eventPayloadMode: {mode}
"
    );
    match Config::from_yaml_str(&text, "bench.yaml") {
        Ok(config) => config,
        Err(e) => panic!("bench config: {e}"),
    }
}

fn column(name: &str, oid: u32, typmod: i32) -> Column {
    let pg_type = PgType::builtin(oid, typmod).unwrap_or(PgType::Text);
    Column {
        name: name.to_owned(),
        type_oid: oid,
        type_modifier: typmod,
        pg_type,
        identity: true,
    }
}

fn orders() -> Arc<Relation> {
    Arc::new(Relation {
        oid: 16_385,
        schema: "public".to_owned(),
        name: "orders".to_owned(),
        replica_identity: ReplicaIdentity::Full,
        columns: vec![
            column("id", 20, -1),
            column("tenant_id", 20, -1),
            column("status", 25, -1),
            column("total", 1700, ((12 << 16) | 2) + 4),
            column("priority", 25, -1),
            column("version", 23, -1),
            column("updated_by", 25, -1),
        ],
    })
}

fn row(relation: &Relation, texts: &[&str]) -> Vec<entity_cdc::source::value::Value> {
    relation
        .columns
        .iter()
        .zip(texts)
        .map(|(c, t)| match parse_text(&c.pg_type, t) {
            Ok(value) => value,
            Err(e) => panic!("{t}: {e}"),
        })
        .collect()
}

fn update(relation: &Arc<Relation>) -> Change {
    Change {
        commit_lsn: Lsn(0x016B_3748),
        xid: 750,
        commit_ts: 790_252_200_000_000,
        index: 0,
        relation: relation.clone(),
        kind: ChangeKind::Update,
        old: Some(row(
            relation,
            &[
                "456",
                "123",
                "NEW",
                "99.90",
                "high",
                "1",
                "user@example.com",
            ],
        )),
        new: Some(row(
            relation,
            &[
                "456",
                "123",
                "PAID",
                "99.90",
                "high",
                "2",
                "user@example.com",
            ],
        )),
    }
}

fn binding(mode: &str, relation: &Arc<Relation>) -> Arc<Binding> {
    match EntityModel::new(&config(mode).entities).bind(relation, &["id".to_owned()]) {
        Ok(Some(binding)) => binding,
        other => panic!("binding: {other:?}"),
    }
}

fn encode_events(c: &mut Criterion) {
    let relation = orders();
    let change = update(&relation);
    let mut group = c.benchmark_group("build_and_encode");
    group.throughput(Throughput::Elements(1));
    for mode in ["minimal", "diff", "full"] {
        let binding = binding(mode, &relation);
        group.bench_function(format!("json/{mode}"), |b| {
            b.iter(|| {
                let events = build_events(&binding, &change, None).unwrap_or_default();
                events
                    .iter()
                    .map(|e| encode_json(e, e.position).payload.len())
                    .sum::<usize>()
            });
        });
        let schema = match schema::entity_schema(&binding) {
            Ok(schema) => schema,
            Err(e) => panic!("schema: {e}"),
        };
        group.bench_function(format!("avro/{mode}"), |b| {
            b.iter(|| {
                let events = build_events(&binding, &change, None).unwrap_or_default();
                events
                    .iter()
                    .map(|e| match record(&schema, 1, 2, e, &change) {
                        Ok(record) => record.payload.len(),
                        Err(e) => panic!("avro: {e}"),
                    })
                    .sum::<usize>()
            });
        });
        let writer = match GenericDatumWriter::builder(schema.schema()).build() {
            Ok(writer) => writer,
            Err(e) => panic!("writer: {e}"),
        };
        group.bench_function(format!("avro_value_tree/{mode}"), |b| {
            b.iter(|| {
                let events = build_events(&binding, &change, None).unwrap_or_default();
                events
                    .iter()
                    .map(|e| {
                        value_tree_record(&schema, &writer, e, &change)
                            .payload
                            .len()
                    })
                    .sum::<usize>()
            });
        });
    }
    group.finish();
}

/// The record as the encoder built it before the direct writer: a `Value` tree written by
/// apache-avro (which validates it), the key through apache-avro's writer for `"string"`.
fn value_tree_record(
    schema: &schema::EntitySchema,
    writer: &GenericDatumWriter<'_>,
    event: &entity_cdc::event::EntityEvent,
    change: &Change,
) -> entity_cdc::sink::Record {
    let value = match encode::event_value(schema, event, change) {
        Ok(value) => value,
        Err(e) => panic!("value: {e}"),
    };
    let mut body = Vec::new();
    if let Err(e) = writer.write_value_ref(&mut body, &value) {
        panic!("datum: {e}");
    }
    let key_body = GenericDatumWriter::builder(&apache_avro::Schema::String)
        .build()
        .and_then(|w| w.write_value_to_vec(Avro::String(event.key.clone())));
    let key_body = match key_body {
        Ok(key_body) => key_body,
        Err(e) => panic!("key: {e}"),
    };
    entity_cdc::sink::Record {
        topic: event.topic.clone(),
        key: Some(Bytes::from(wire_format(2, &key_body))),
        headers: event
            .headers()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), Bytes::from(value.into_bytes())))
            .collect(),
        payload: Bytes::from(wire_format(1, &body)),
        position: event.position,
    }
}

criterion_group!(benches, encode_events);
criterion_main!(benches);
