//! Building and encoding one event, per payload mode, as JSON and as Avro:
//! `cargo bench --bench encode`. Each benchmark is one event on one core, so criterion's
//! `thrpt` line is events per second per core.
//!
//! The change is an UPDATE of the story's order (7 columns, old and new row). Avro uses a
//! schema generated once and an id taken as registered, as the encoder does once its cache
//! holds the subject: no registry, no network, only building the event, the Avro value,
//! its binary body and the wire-format frame.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use entity_cdc::codec::avro::{encode, schema, wire_format};
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
                    .map(|e| {
                        let value = encode::event_value(&schema, e, &change)
                            .unwrap_or(apache_avro::types::Value::Null);
                        let body = schema.writer.datum(&value).unwrap_or_default();
                        wire_format(1, &body).len()
                    })
                    .sum::<usize>()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode_events);
criterion_main!(benches);
