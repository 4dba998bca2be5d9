//! The shared cases: real-world inputs that broke other connectors, each run against a real
//! PostgreSQL 15, asserting exactly what the change reader reads (in `tail`'s JSON form).

use apache_avro::types::Value as Avro;
use entity_cdc::codec::avro::encode::optional;
use entity_cdc::codec::avro::names::field_names;
use entity_cdc::codec::avro::schema::AvroType;
use entity_cdc::source::change::SourceEvent;
use entity_cdc::source::reader::ReadItem;
use entity_cdc::source::value::{Interval, Value};
use entity_cdc_integration::capture::{assert_json, capture_case, lines};
use entity_cdc_integration::{PgServer, PgServerOptions};
use serde_json::Value as Json;

fn server() -> PgServer {
    match PgServer::start() {
        Ok(server) => server,
        Err(e) => panic!("starting PostgreSQL: {e:#}"),
    }
}

fn server_with(settings: &[(&str, &str)]) -> PgServer {
    let options = PgServerOptions {
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..PgServerOptions::default()
    };
    match PgServer::start_with(options) {
        Ok(server) => server,
        Err(e) => panic!("starting PostgreSQL: {e:#}"),
    }
}

async fn capture(server: &PgServer, name: &str) -> Vec<ReadItem> {
    match capture_case(server, name).await {
        Ok(items) => items,
        Err(e) => panic!("{name}: {e:#}\nserver log:\n{}", server.log()),
    }
}

/// Asserts the captured lines one by one against JSON texts.
fn assert_lines(actual: &[Json], expected: &[&str]) {
    let rendered: Vec<String> = actual.iter().map(Json::to_string).collect();
    assert_eq!(
        actual.len(),
        expected.len(),
        "line count differs; actual lines:\n{}",
        rendered.join("\n")
    );
    for (line, want) in actual.iter().zip(expected) {
        assert_json(line, want);
    }
}

fn changes(items: &[ReadItem]) -> Vec<&entity_cdc::source::Change> {
    items
        .iter()
        .filter_map(|item| match item {
            ReadItem::Event(SourceEvent::Change(change)) => Some(change),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn case_01_numeric_nan_and_infinity_are_kept() {
    let pg = server();
    let items = capture(&pg, "CASE-01").await;
    let rel = r#""relation":{"schema":"case01","table":"measure"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"free_num":"NaN","bound_num":"NaN","note":"both NaN"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":2,"free_num":"Infinity","bound_num":1.50,"note":"plus infinity"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":3,"free_num":"-Infinity","bound_num":0.00,"note":"minus infinity, signed zero"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"update","old":{{"id":1,"free_num":"NaN","bound_num":"NaN","note":"both NaN"}},"new":{{"id":1,"free_num":"NaN","bound_num":"NaN","note":"both NaN"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"update","old":{{"id":2,"free_num":"Infinity","bound_num":1.50,"note":"plus infinity"}},"new":{{"id":2,"free_num":42,"bound_num":1.50,"note":"finite now"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"delete","old":{{"id":3,"free_num":"-Infinity","bound_num":0.00,"note":"minus infinity, signed zero"}}}}"#
            ),
        ],
    );
    // NaN compares equal to NaN at the text level: the no-op update changes nothing.
    let update = changes(&items)[3];
    assert_eq!(update.old, update.new);
}

#[tokio::test(flavor = "multi_thread")]
async fn case_02_numeric_precision_and_scale_are_exact() {
    let pg = server();
    let items = capture(&pg, "CASE-02").await;
    let rel = r#""relation":{"schema":"case02","table":"ledger"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"free_num":200,"wide":1.0000000000,"hundreds":1200,"tiny":0.00123}}}}"#
            ),
            &format!(
                r#"{{"index":1,{rel},"change":"insert","new":{{"id":2,"free_num":1.50,"wide":12345678901234567890123456789012345678901234567890.0123456789,"hundreds":9876500,"tiny":0.00999}}}}"#
            ),
            &format!(
                r#"{{"index":2,{rel},"change":"insert","new":{{"id":3,"free_num":0.000000000000000000000000000001,"wide":-0.0000000001,"hundreds":-200,"tiny":-0.00001}}}}"#
            ),
            &format!(
                r#"{{"index":3,{rel},"change":"insert","new":{{"id":4,"free_num":123456789012345678901234567890.123456789012345678901234567890,"wide":null,"hundreds":null,"tiny":null}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"update","old":{{"id":1,"free_num":200,"wide":1.0000000000,"hundreds":1200,"tiny":0.00123}},"new":{{"id":1,"free_num":200.000,"wide":1.0000000000,"hundreds":1200,"tiny":0.00123}}}}"#
            ),
        ],
    );
    // The same number with another scale is a change: the diff compares the emitted text.
    let update = changes(&items)[4];
    assert_ne!(
        update.old.as_ref().map(|r| &r[1]),
        update.new.as_ref().map(|r| &r[1])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_04_infinity_bc_and_far_future_dates() {
    let pg = server();
    let items = capture(&pg, "CASE-04").await;
    let rel = r#""relation":{"schema":"case04","table":"contract"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"valid_on":"infinity","starts_at":"-infinity","ends_at":"infinity"}}}}"#
            ),
            &format!(
                r#"{{"index":1,{rel},"change":"insert","new":{{"id":2,"valid_on":"-0043-03-15","starts_at":"0000-12-31T23:59:59.999999","ends_at":"0000-01-01T00:00:00Z"}}}}"#
            ),
            &format!(
                r#"{{"index":2,{rel},"change":"insert","new":{{"id":3,"valid_on":"+10000-01-01","starts_at":"+294276-12-31T23:59:59.999999","ends_at":"+12345-06-07T08:09:10.500000Z"}}}}"#
            ),
            &format!(
                r#"{{"index":3,{rel},"change":"insert","new":{{"id":4,"valid_on":"-4712-01-01","starts_at":"1970-01-01T00:00:00","ends_at":"2000-01-01T00:00:00Z"}}}}"#
            ),
            &format!(
                r#"{{"index":4,{rel},"change":"insert","new":{{"id":5,"valid_on":"+5874897-12-31","starts_at":null,"ends_at":null}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"update","old":{{"id":1,"valid_on":"infinity","starts_at":"-infinity","ends_at":"infinity"}},"new":{{"id":1,"valid_on":"infinity","starts_at":"-infinity","ends_at":"-infinity"}}}}"#
            ),
        ],
    );
    // The values behind the text: days and microseconds since the Unix epoch.
    let inserts = changes(&items);
    let day = |i: usize| match inserts[i].new.as_ref().map(|r| &r[1]) {
        Some(Value::Date(d)) => d.unix_days(),
        other => panic!("row {i}: expected a date, got {other:?}"),
    };
    assert_eq!(day(1), Some(-735_160));
    assert_eq!(day(2), Some(2_932_897));
    assert_eq!(day(3), Some(-2_440_550));
    assert_eq!(day(4), Some(2_145_042_905));
    let micros = |i: usize, col: usize| match inserts[i].new.as_ref().map(|r| &r[col]) {
        Some(Value::Timestamp(t) | Value::TimestampTz(t)) => t.unix_micros(),
        other => panic!("row {i}: expected a timestamp, got {other:?}"),
    };
    assert_eq!(micros(1, 2), Some(-62_135_596_800_000_001));
    assert_eq!(micros(2, 3), Some(327_416_976_550_500_000));
    // 294276-12-31 does not fit i64 microseconds since 1970: no sentinel, no wrap.
    assert_eq!(micros(2, 2), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn case_06_interval_components_stay_apart() {
    let pg = server();
    let items = capture(&pg, "CASE-06").await;
    let rel = r#""relation":{"schema":"case06","table":"timer"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"span":"P1Y2M3DT4H5M6.789S","spans":["P1D","PT24H"]}}}}"#
            ),
            &format!(
                r#"{{"index":1,{rel},"change":"insert","new":{{"id":2,"span":"P-1Y2DT-3H","spans":null}}}}"#
            ),
            &format!(
                r#"{{"index":2,{rel},"change":"insert","new":{{"id":3,"span":"P1M","spans":["P30D"]}}}}"#
            ),
            &format!(
                r#"{{"index":3,{rel},"change":"insert","new":{{"id":4,"span":"PT49444H26M40S","spans":null}}}}"#
            ),
            &format!(
                r#"{{"index":4,{rel},"change":"insert","new":{{"id":5,"span":"PT-0.000001S","spans":null}}}}"#
            ),
        ],
    );
    let spans: Vec<Interval> = changes(&items)
        .iter()
        .map(|c| match c.new.as_ref().map(|r| &r[1]) {
            Some(Value::Interval(i)) => *i,
            other => panic!("expected an interval, got {other:?}"),
        })
        .collect();
    let triple = |i: &Interval| (i.months, i.days, i.micros);
    assert_eq!(triple(&spans[0]), (14, 3, 14_706_789_000));
    assert_eq!(triple(&spans[1]), (-12, 2, -10_800_000_000));
    assert_eq!(triple(&spans[2]), (1, 0, 0));
    assert_eq!(triple(&spans[3]), (0, 0, 178_000_000_000_000));
    assert_eq!(triple(&spans[4]), (0, 0, -1));
}

#[tokio::test(flavor = "multi_thread")]
async fn case_07_json_text_is_kept_verbatim() {
    let pg = server();
    let items = capture(&pg, "CASE-07").await;
    let rel = r#""relation":{"schema":"case07","table":"doc"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"raw":"{{\"k\":\"caf\\u00e9\",\"k\":\"dup\",  \"z\":1.10}}","canon":"{{\"k\": \"dup\", \"z\": 1.10}}","body":"plain"}}}}"#
            ),
            &format!(
                r#"{{"index":1,{rel},"change":"insert","new":{{"id":2,"raw":"{{\"nul\":\"a\\u0000b\"}}","canon":"{{\"emoji\": \"😀\", \"quote\": \"say \\\"hi\\\"\"}}","body":"tab\there\nnew line \u0001 ctrl"}}}}"#
            ),
            &format!(
                r#"{{"index":2,{rel},"change":"insert","new":{{"id":3,"raw":"\"\\u2028\"","canon":"null","body":"back\\slash \"quoted\""}}}}"#
            ),
            &format!(
                r#"{{"index":3,{rel},"change":"insert","new":{{"id":4,"raw":null,"canon":"{{}}","body":""}}}}"#
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_09_arrays_keep_shape_nulls_and_bounds() {
    let pg = server();
    let items = capture(&pg, "CASE-09").await;
    let rel = r#""relation":{"schema":"case09","table":"grid"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"ints":[[1,2],[3,null]],"words":["NULL",null,"null"],"boxes":null}}}}"#
            ),
            &format!(
                r#"{{"index":1,{rel},"change":"insert","new":{{"id":2,"ints":[],"words":["","a,b","say \"hi\"","back\\slash"," lead","{{x}}"],"boxes":null}}}}"#
            ),
            &format!(
                r#"{{"index":2,{rel},"change":"insert","new":{{"id":3,"ints":[7,8],"ints__lbound":[0],"words":[],"boxes":["(1,1),(0,0)","(3,3),(2,2)"]}}}}"#
            ),
            &format!(
                r#"{{"index":3,{rel},"change":"insert","new":{{"id":4,"ints":[[[1]],[[2]]],"words":[],"boxes":[]}}}}"#
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_10_enums_enum_arrays_and_domains() {
    let pg = server();
    let items = capture(&pg, "CASE-10").await;
    let rel = r#""relation":{"schema":"case10","table":"ticket"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"mood":"happy","moods":["sad","happy"],"cost":12.50,"code":"AB"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":2,"mood":"ecstatic","moods":["ecstatic","ok"],"cost":0.00,"code":"ZZZZ"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"update","old":{{"id":1,"mood":"happy","moods":["sad","happy"],"cost":12.50,"code":"AB"}},"new":{{"id":1,"mood":"sad","moods":["sad","happy"],"cost":12.50,"code":"AB"}}}}"#
            ),
        ],
    );
    // The domain is decoded as its base type, numeric(8,2), with the typmod from the catalog.
    let change = changes(&items)[0];
    let cost = &change.relation.columns[3].pg_type;
    assert_eq!(cost.name(), "case10.price");
}

#[tokio::test(flavor = "multi_thread")]
async fn case_14_unchanged_toast_is_taken_from_the_old_row() {
    let pg = server();
    let items = capture(&pg, "CASE-14").await;
    let body = pg
        .psql_db(
            "case_14",
            "select string_agg(md5(g::text), '') from generate_series(1, 320) g",
        )
        .expect("computing the body");
    assert_eq!(body.len(), 10_240);
    let all = changes(&items);
    let text = |v: &Value| match v {
        Value::Text(s) => s.clone(),
        other => panic!("expected text, got {other:?}"),
    };
    let bytes_len = |v: &Value| match v {
        Value::Bytea(b) => b.len(),
        other => panic!("expected bytea, got {other:?}"),
    };
    // 0: insert article, 1: insert article_def, 2: article v1->v2, 3: article_def v1->v2,
    // 4..=7: the four updates of one transaction, 8: the delete.
    assert_eq!(all.len(), 9, "changes: {all:#?}");
    let first = &all[2];
    let new = first.new.as_ref().expect("new row");
    assert_eq!(text(&new[1]), "v2");
    assert_eq!(text(&new[2]), body);
    assert_eq!(bytes_len(&new[3]), 5_120);
    // REPLICA IDENTITY DEFAULT: no old row, so the unchanged body is unavailable, not faked.
    let def = lines(&items)[3].clone();
    assert_json(
        &def,
        r#"{"index":0,"relation":{"schema":"case14","table":"article_def"},"change":"update","new":{"id":1,"title":"v2"},"unavailable":{"new":["body"]}}"#,
    );
    // Each update of the transaction takes unchanged values from its own old row.
    let titles: Vec<String> = all[4..8]
        .iter()
        .map(|c| text(&c.new.as_ref().expect("new")[1]))
        .collect();
    assert_eq!(titles, ["v3", "v4", "v4", "v5"]);
    let indexes: Vec<u32> = all[4..8].iter().map(|c| c.index).collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert_eq!(text(&all[5].new.as_ref().expect("new")[2]), body);
    assert_eq!(
        text(&all[6].new.as_ref().expect("new")[2]),
        format!("{body}x")
    );
    assert_eq!(
        text(&all[7].new.as_ref().expect("new")[2]),
        format!("{body}x")
    );
    for c in &all[4..8] {
        assert_eq!(bytes_len(&c.new.as_ref().expect("new")[3]), 5_120);
    }
    let delete = all[8].old.as_ref().expect("old row of the delete");
    assert_eq!(text(&delete[2]), format!("{body}x"));
    assert_eq!(bytes_len(&delete[3]), 5_120);
}

#[tokio::test(flavor = "multi_thread")]
async fn case_16_replica_identity_modes() {
    let pg = server();
    let items = capture(&pg, "CASE-16").await;
    let t = |table: &str| format!(r#""relation":{{"schema":"case16","table":"{table}"}}"#);
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{},"change":"insert","new":{{"id":1,"code":"a","qty":1}}}}"#,
                t("with_pk")
            ),
            &format!(
                r#"{{"index":1,{},"change":"insert","new":{{"id":2,"code":"b","qty":2}}}}"#,
                t("with_pk")
            ),
            &format!(
                r#"{{"index":0,{},"change":"insert","new":{{"code":"dup","qty":1}}}}"#,
                t("no_pk_full")
            ),
            &format!(
                r#"{{"index":1,{},"change":"insert","new":{{"code":"dup","qty":1}}}}"#,
                t("no_pk_full")
            ),
            &format!(
                r#"{{"index":0,{},"change":"insert","new":{{"code":"x","qty":1}}}}"#,
                t("no_pk_def")
            ),
            &format!(
                r#"{{"index":0,{},"change":"update","old":{{"code":"dup","qty":1}},"new":{{"code":"dup","qty":2}}}}"#,
                t("no_pk_full")
            ),
            &format!(
                r#"{{"index":0,{},"change":"insert","new":{{"id":1,"code":"k1","qty":1}}}}"#,
                t("by_index")
            ),
            &format!(
                r#"{{"index":0,{},"change":"update","new":{{"id":1,"code":"k1","qty":5}}}}"#,
                t("by_index")
            ),
            &format!(
                r#"{{"index":0,{},"change":"update","old":{{"code":"k1"}},"new":{{"id":1,"code":"k2","qty":5}},"unavailable":{{"old":["id","qty"]}}}}"#,
                t("by_index")
            ),
            &format!(
                r#"{{"index":0,{},"change":"update","old":{{"id":1,"code":"a","qty":1}},"new":{{"id":10,"code":"a","qty":1}}}}"#,
                t("with_pk")
            ),
            &format!(
                r#"{{"index":0,{},"change":"update","new":{{"id":2,"code":"b","qty":3}}}}"#,
                t("with_pk")
            ),
            &format!(
                r#"{{"index":0,{},"change":"update","old":{{"id":2}},"new":{{"id":20,"code":"b","qty":3}},"unavailable":{{"old":["code","qty"]}}}}"#,
                t("with_pk")
            ),
            &format!(
                r#"{{"index":0,{},"change":"delete","old":{{"id":20}},"unavailable":{{"old":["code","qty"]}}}}"#,
                t("with_pk")
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_18_truncate_multi_table_cascade_and_in_transaction() {
    let pg = server();
    let items = capture(&pg, "CASE-18").await;
    let t = |table: &str| format!(r#"{{"schema":"case18","table":"{table}"}}"#);
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,"relation":{},"change":"insert","new":{{"id":1,"name":"c1"}}}}"#,
                t("customer")
            ),
            &format!(
                r#"{{"index":1,"relation":{},"change":"insert","new":{{"id":2,"name":"c2"}}}}"#,
                t("customer")
            ),
            &format!(
                r#"{{"index":0,"relation":{},"change":"insert","new":{{"id":1,"customer_id":1,"total":10}}}}"#,
                t("orders")
            ),
            &format!(
                r#"{{"index":1,"relation":{},"change":"insert","new":{{"id":2,"customer_id":2,"total":20}}}}"#,
                t("orders")
            ),
            &format!(
                r#"{{"index":0,"relation":{},"change":"insert","new":{{"id":1}}}}"#,
                t("scratch")
            ),
            &format!(
                r#"{{"index":1,"relation":{},"change":"insert","new":{{"id":2}}}}"#,
                t("scratch")
            ),
            &format!(
                r#"{{"index":0,"relations":[{},{}],"change":"truncate","cascade":true,"restartIdentity":true}}"#,
                t("customer"),
                t("orders")
            ),
            &format!(
                r#"{{"index":0,"relation":{},"change":"insert","new":{{"id":3}}}}"#,
                t("scratch")
            ),
            &format!(
                r#"{{"index":1,"relations":[{}],"change":"truncate","cascade":false,"restartIdentity":false}}"#,
                t("scratch")
            ),
            &format!(
                r#"{{"index":2,"relation":{},"change":"insert","new":{{"id":4}}}}"#,
                t("scratch")
            ),
            &format!(
                r#"{{"index":0,"relation":{},"change":"insert","new":{{"id":1,"name":"c3"}}}}"#,
                t("customer")
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_19_alter_table_mid_stream() {
    let pg = server();
    let items = capture(&pg, "CASE-19").await;
    let rel = r#""relation":{"schema":"case19","table":"item"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":2,"name":"after add","qty":2,"legacy":"y","status":"new"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"update","old":{{"id":1,"name":"old row","qty":1,"legacy":"x","status":"new"}},"new":{{"id":1,"name":"old row","qty":10,"legacy":"x","status":"new"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"update","old":{{"id":2,"title":"after add","qty":2,"status":"new"}},"new":{{"id":2,"title":"after add","qty":11,"status":"new"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":3,"title":"before type change","qty":3,"status":"new"}}}}"#
            ),
            &format!(
                r#"{{"index":1,{rel},"change":"insert","new":{{"id":4,"title":"after type change","qty":9000000000,"status":"new"}}}}"#
            ),
        ],
    );
    // Rows 3 and 4 share a transaction but not a schema: qty is int4, then int8.
    let all = changes(&items);
    assert!(matches!(
        all[3].new.as_ref().map(|r| &r[2]),
        Some(Value::Int4(3))
    ));
    assert!(matches!(
        all[4].new.as_ref().map(|r| &r[2]),
        Some(Value::Int8(9_000_000_000))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn case_20_large_transaction_with_rolled_back_savepoint() {
    let pg = server_with(&[("logical_decoding_work_mem", "64kB")]);
    let items = capture(&pg, "CASE-20").await;
    let all = changes(&items);
    let big: Vec<_> = all.iter().filter(|c| c.relation.name == "bulk").collect();
    assert_eq!(big.len(), 506);
    let commit = big[0].commit_lsn;
    for (i, change) in big.iter().enumerate() {
        assert_eq!(change.commit_lsn, commit);
        assert_eq!(change.index as usize, i);
        let batch = change.new.as_ref().map(|r| r[1].clone());
        assert_ne!(
            batch,
            Some(Value::Text("rolled-back".to_owned())),
            "row {i}"
        );
    }
    let batch = |c: &entity_cdc::source::Change| match c.new.as_ref().map(|r| &r[1]) {
        Some(Value::Text(s)) => s.clone(),
        other => panic!("expected text, got {other:?}"),
    };
    assert_eq!(
        big[..500].iter().filter(|c| batch(c) == "kept-1").count(),
        500
    );
    assert_eq!(
        big[500..505]
            .iter()
            .filter(|c| batch(c) == "kept-2")
            .count(),
        5
    );
    assert_eq!(
        big[505].kind,
        entity_cdc::source::change::ChangeKind::Update
    );
    assert_eq!(batch(big[505]), "kept-1-updated");
    let side: Vec<_> = all.iter().filter(|c| c.relation.name == "side").collect();
    assert_eq!(side.len(), 1);
    assert!(side[0].commit_lsn > commit);
}

#[tokio::test(flavor = "multi_thread")]
async fn case_21_same_row_many_times_in_one_transaction() {
    let pg = server();
    let items = capture(&pg, "CASE-21").await;
    let t = |table: &str| format!(r#""relation":{{"schema":"case21","table":"{table}"}}"#);
    let a = t("account");
    let e = t("entry");
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{a},"change":"update","old":{{"id":7,"balance":100,"tag":"original"}},"new":{{"id":7,"balance":101,"tag":"original"}}}}"#
            ),
            &format!(
                r#"{{"index":1,{e},"change":"insert","new":{{"id":1,"account_id":7,"delta":1}}}}"#
            ),
            &format!(
                r#"{{"index":2,{a},"change":"update","old":{{"id":7,"balance":101,"tag":"original"}},"new":{{"id":7,"balance":102,"tag":"original"}}}}"#
            ),
            &format!(
                r#"{{"index":3,{e},"change":"insert","new":{{"id":2,"account_id":7,"delta":1}}}}"#
            ),
            &format!(
                r#"{{"index":4,{a},"change":"update","old":{{"id":7,"balance":102,"tag":"original"}},"new":{{"id":7,"balance":100,"tag":"net zero"}}}}"#
            ),
            &format!(
                r#"{{"index":5,{a},"change":"delete","old":{{"id":7,"balance":100,"tag":"net zero"}}}}"#
            ),
            &format!(
                r#"{{"index":6,{a},"change":"insert","new":{{"id":7,"balance":0,"tag":"re-created"}}}}"#
            ),
            &format!(
                r#"{{"index":7,{a},"change":"update","old":{{"id":7,"balance":0,"tag":"re-created"}},"new":{{"id":7,"balance":5,"tag":"re-created"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{a},"change":"insert","new":{{"id":8,"balance":1,"tag":"x"}}}}"#
            ),
            &format!(
                r#"{{"index":1,{a},"change":"insert","new":{{"id":9,"balance":1,"tag":"y"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{a},"change":"update","old":{{"id":8,"balance":1,"tag":"x"}},"new":{{"id":8,"balance":1,"tag":"x"}}}}"#
            ),
        ],
    );
    let all = changes(&items);
    assert!(all[..8].iter().all(|c| c.commit_lsn == all[0].commit_lsn));
}

#[tokio::test(flavor = "multi_thread")]
async fn case_22_logical_decoding_messages() {
    let pg = server();
    let items = capture(&pg, "CASE-22").await;
    let rel = r#""relation":{"schema":"case22","table":"job"}"#;
    let text = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":null,"change":"message","transactional":false,"prefix":"heartbeat","content":"{}","contentText":"non-transactional, emitted mid-txn"}}"#,
                text("non-transactional, emitted mid-txn")
            ),
            &format!(r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"state":"queued"}}}}"#),
            &format!(
                r#"{{"index":1,"change":"message","transactional":true,"prefix":"audit","content":"{}","contentText":"inside committed txn"}}"#,
                text("inside committed txn")
            ),
            &format!(
                r#"{{"index":2,{rel},"change":"update","old":{{"id":1,"state":"queued"}},"new":{{"id":1,"state":"running"}}}}"#
            ),
            &format!(
                r#"{{"index":null,"change":"message","transactional":false,"prefix":"heartbeat","content":"{}","contentText":"non-transactional inside rolled-back txn"}}"#,
                text("non-transactional inside rolled-back txn")
            ),
            r#"{"index":0,"change":"message","transactional":true,"prefix":"audit","content":"YmluYXJ5IFx4MDAgcGF5bG9hZA==","contentText":"binary \\x00 payload"}"#,
            r#"{"index":null,"change":"message","transactional":false,"prefix":"heartbeat","content":"","contentText":""}"#,
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_23_two_phase_commit_is_read_at_commit_prepared() {
    let pg = server_with(&[("max_prepared_transactions", "10")]);
    let items = capture(&pg, "CASE-23").await;
    let rel = r#""relation":{"schema":"case23","table":"transfer"}"#;
    assert_lines(
        &lines(&items),
        &[
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":3,"amount":300,"state":"ordinary txn committed while both are prepared"}}}}"#
            ),
            &format!(
                r#"{{"index":0,{rel},"change":"insert","new":{{"id":1,"amount":100,"state":"prepared then committed"}}}}"#
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_24_changes_sharing_an_lsn_have_distinct_positions() {
    let pg = server();
    let items = capture(&pg, "CASE-24").await;
    let all = changes(&items);
    // COPY: three rows, one commit, positions 0..2; then 10 and 11; then the 100-row txn.
    assert_eq!(all.len(), 3 + 2 + 100);
    let ids = |range: std::ops::Range<usize>| -> Vec<(u32, Value)> {
        all[range]
            .iter()
            .map(|c| (c.index, c.new.as_ref().expect("new row")[0].clone()))
            .collect()
    };
    assert_eq!(
        ids(0..3),
        [
            (0, Value::Int4(1)),
            (1, Value::Int4(2)),
            (2, Value::Int4(3))
        ]
    );
    assert_eq!(ids(3..5), [(0, Value::Int4(10)), (1, Value::Int4(11))]);
    assert!(all[..3].iter().all(|c| c.commit_lsn == all[0].commit_lsn));
    assert!(all[3].commit_lsn > all[0].commit_lsn);
    let commits: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            ReadItem::Event(SourceEvent::Commit {
                commit_lsn,
                end_lsn,
                event_count,
                ..
            }) => Some((*commit_lsn, *end_lsn, *event_count)),
            _ => None,
        })
        .collect();
    assert_eq!(commits.len(), 3);
    assert_eq!(commits[0].0, all[0].commit_lsn);
    assert_eq!(commits[0].2, 3);
    assert!(commits[0].1 > commits[0].0);
    // The slot is confirmed exactly to what was handled: the end of the last commit, or the
    // WAL end of a keepalive that came after it while nothing was open.
    let mut expected = commits[2].1;
    let mut idle = false;
    for item in &items {
        match item {
            ReadItem::Event(SourceEvent::Begin { .. }) => idle = false,
            ReadItem::Event(SourceEvent::Commit { end_lsn, .. }) => {
                idle = true;
                expected = expected.max(*end_lsn);
            }
            ReadItem::Event(SourceEvent::Keepalive { wal_end }) if idle => {
                expected = expected.max(*wal_end);
            }
            _ => {}
        }
    }
    let confirmed = pg
        .psql_db(
            "case_24",
            "select confirmed_flush_lsn from pg_replication_slots where slot_name = 'slot_case_24'",
        )
        .expect("reading the slot");
    assert_eq!(confirmed, expected.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn case_27_identifiers_are_kept_exactly() {
    let pg = server();
    let items = capture(&pg, "CASE-27").await;
    assert_lines(
        &lines(&items),
        &[
            r#"{"index":0,"relation":{"schema":"case27.sales","table":"orders"},"change":"insert","new":{"id":1,"note":"schema has a dot"}}"#,
            r#"{"index":0,"relation":{"schema":"case27","table":"sales.orders"},"change":"insert","new":{"id":1,"note":"table has a dot"}}"#,
            r#"{"index":0,"relation":{"schema":"case27","table":"Order Lines"},"change":"insert","new":{"ID":1,"id":2,"select":"sel","unit price €":9.99,"say \"hi\"":"q","naïve-col":"n","1st":1}}"#,
            r#"{"index":0,"relation":{"schema":"case27","table":"Order Lines"},"change":"update","old":{"ID":1,"id":2,"select":"sel","unit price €":9.99,"say \"hi\"":"q","naïve-col":"n","1st":1},"new":{"ID":1,"id":3,"select":"sel","unit price €":9.99,"say \"hi\"":"q","naïve-col":"n","1st":1}}"#,
        ],
    );
}

/// The Avro values of a row as the encoder writes them (`format: avro`): per column its
/// Avro field name and its `["null", …]` union value.
fn avro_row(
    change: &entity_cdc::source::Change,
    image: Option<&entity_cdc::source::change::Row>,
) -> Vec<(String, Avro)> {
    let names =
        avro_names(&change.relation).unwrap_or_else(|e| panic!("{}: {e}", change.relation.name));
    let row = image.unwrap_or_else(|| panic!("no row image in {change:?}"));
    change
        .relation
        .columns
        .iter()
        .zip(row)
        .zip(names)
        .map(|((column, value), name)| {
            let avro = optional(&AvroType::of(&column.pg_type), value)
                .unwrap_or_else(|| panic!("column {} value {value:?} fits no branch", column.name));
            (name, avro)
        })
        .collect()
}

fn avro_names(
    relation: &entity_cdc::source::change::Relation,
) -> Result<Vec<String>, entity_cdc::codec::avro::names::NameCollision> {
    field_names(relation.columns.iter().map(|c| c.name.as_str()))
}

fn col<'a>(row: &'a [(String, Avro)], name: &str) -> &'a Avro {
    row.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no column {name} in {row:?}"))
}

fn branch(index: u32, value: Avro) -> Avro {
    Avro::Union(index, Box::new(value))
}

fn string(s: &str) -> Avro {
    Avro::String(s.to_owned())
}

fn decimal(bytes: &[u8]) -> Avro {
    Avro::Decimal(apache_avro::Decimal::from(bytes.to_vec()))
}

fn int_array(values: &[i32]) -> Avro {
    Avro::Array(values.iter().map(|&v| Avro::Int(v)).collect())
}

/// The Avro decisions of CASE-01, 02, 04, 06, 09, 10 and 27 on what PostgreSQL really sends:
/// numerics never rounded with NaN and ±Infinity in the string branch, decimal precision and
/// scale made valid for Avro, dates and timestamps with their infinities and far years,
/// intervals as three signed fields, arrays with dims and lower bounds, enums and domains,
/// and mangled names.
#[tokio::test(flavor = "multi_thread")]
async fn avro_side_of_the_cases() {
    let pg = server();

    // CASE-01: unconstrained numeric is a string; numeric(10,2) a decimal, NaN a string.
    let items = capture(&pg, "CASE-01").await;
    let c = changes(&items);
    let row = avro_row(c[0], c[0].new.as_ref());
    assert_eq!(col(&row, "free_num"), &branch(1, string("NaN")));
    assert_eq!(col(&row, "bound_num"), &branch(2, string("NaN")));
    let row = avro_row(c[1], c[1].new.as_ref());
    assert_eq!(col(&row, "free_num"), &branch(1, string("Infinity")));
    assert_eq!(col(&row, "bound_num"), &branch(1, decimal(&[0x00, 0x96])));
    let row = avro_row(c[2], c[2].new.as_ref());
    assert_eq!(col(&row, "free_num"), &branch(1, string("-Infinity")));
    assert_eq!(col(&row, "bound_num"), &branch(1, decimal(&[0x00])));

    // CASE-02: decimal(60,10), numeric(5,-2) -> decimal(7,0), numeric(3,5) -> decimal(5,5).
    let items = capture(&pg, "CASE-02").await;
    let c = changes(&items);
    let types: Vec<AvroType> = c[0]
        .relation
        .columns
        .iter()
        .map(|col| AvroType::of(&col.pg_type))
        .collect();
    assert_eq!(
        types,
        [
            AvroType::Int,
            AvroType::String,
            AvroType::Decimal {
                precision: 60,
                scale: 10
            },
            AvroType::Decimal {
                precision: 7,
                scale: 0
            },
            AvroType::Decimal {
                precision: 5,
                scale: 5
            },
        ]
    );
    let row = avro_row(c[0], c[0].new.as_ref());
    assert_eq!(col(&row, "free_num"), &branch(1, string("200")));
    assert_eq!(
        col(&row, "wide"),
        &branch(1, decimal(&[0x02, 0x54, 0x0B, 0xE4, 0x00]))
    );
    assert_eq!(col(&row, "hundreds"), &branch(1, decimal(&[0x04, 0xB0])));
    assert_eq!(col(&row, "tiny"), &branch(1, decimal(&[0x7B])));
    let row = avro_row(c[2], c[2].new.as_ref());
    assert_eq!(
        col(&row, "hundreds"),
        &branch(1, decimal(&[0xFF, 0x38])),
        "-151 -> -200"
    );
    assert_eq!(col(&row, "tiny"), &branch(1, decimal(&[0xFF])), "-0.00001");
    let row = avro_row(c[4], c[4].new.as_ref());
    assert_eq!(
        col(&row, "free_num"),
        &branch(1, string("200.000")),
        "scale kept"
    );

    // CASE-04: infinities and years past i64 microseconds in the string branch.
    let items = capture(&pg, "CASE-04").await;
    let c = changes(&items);
    let row = avro_row(c[0], c[0].new.as_ref());
    assert_eq!(col(&row, "valid_on"), &branch(2, string("infinity")));
    assert_eq!(col(&row, "starts_at"), &branch(2, string("-infinity")));
    assert_eq!(col(&row, "ends_at"), &branch(2, string("infinity")));
    let row = avro_row(c[1], c[1].new.as_ref());
    assert_eq!(col(&row, "valid_on"), &branch(1, Avro::Date(-735_160)));
    assert_eq!(
        col(&row, "starts_at"),
        &branch(1, Avro::LocalTimestampMicros(-62_135_596_800_000_001))
    );
    let row = avro_row(c[2], c[2].new.as_ref());
    assert_eq!(col(&row, "valid_on"), &branch(1, Avro::Date(2_932_897)));
    assert_eq!(
        col(&row, "starts_at"),
        &branch(2, string("+294276-12-31T23:59:59.999999"))
    );
    assert_eq!(
        col(&row, "ends_at"),
        &branch(1, Avro::TimestampMicros(327_416_976_550_500_000))
    );
    let row = avro_row(c[3], c[3].new.as_ref());
    assert_eq!(col(&row, "valid_on"), &branch(1, Avro::Date(-2_440_550)));
    let row = avro_row(c[4], c[4].new.as_ref());
    assert_eq!(col(&row, "valid_on"), &branch(1, Avro::Date(2_145_042_905)));

    // CASE-06: {months, days, micros}, each signed.
    let items = capture(&pg, "CASE-06").await;
    let c = changes(&items);
    let interval = |months: i32, days: i32, micros: i64| {
        branch(
            1,
            Avro::Record(vec![
                ("months".to_owned(), Avro::Int(months)),
                ("days".to_owned(), Avro::Int(days)),
                ("micros".to_owned(), Avro::Long(micros)),
            ]),
        )
    };
    let span = |i: usize| avro_row(c[i], c[i].new.as_ref())[1].1.clone();
    assert_eq!(span(0), interval(14, 3, 14_706_789_000));
    assert_eq!(span(1), interval(-12, 2, -10_800_000_000));
    assert_eq!(span(4), interval(0, 0, -1));

    // CASE-09: dims, lower bounds and row-major elements with NULLs; `{}` has dims [].
    let items = capture(&pg, "CASE-09").await;
    let c = changes(&items);
    let array = |dims: &[i32], lbounds: &[i32], elements: Vec<Avro>| {
        branch(
            1,
            Avro::Record(vec![
                ("dims".to_owned(), int_array(dims)),
                ("lbounds".to_owned(), int_array(lbounds)),
                ("elements".to_owned(), Avro::Array(elements)),
            ]),
        )
    };
    let int = |v: i32| branch(1, Avro::Int(v));
    let row = avro_row(c[0], c[0].new.as_ref());
    assert_eq!(
        col(&row, "ints"),
        &array(
            &[2, 2],
            &[1, 1],
            vec![int(1), int(2), int(3), branch(0, Avro::Null)]
        )
    );
    let row = avro_row(c[1], c[1].new.as_ref());
    assert_eq!(col(&row, "ints"), &array(&[], &[], vec![]));
    let row = avro_row(c[2], c[2].new.as_ref());
    assert_eq!(col(&row, "ints"), &array(&[2], &[0], vec![int(7), int(8)]));
    assert_eq!(
        col(&row, "boxes"),
        &array(
            &[2],
            &[1],
            vec![
                branch(1, string("(1,1),(0,0)")),
                branch(1, string("(3,3),(2,2)"))
            ]
        ),
        "box has no mapping: its elements travel as text"
    );

    // CASE-10: enums as their label strings, domains as their base type.
    let items = capture(&pg, "CASE-10").await;
    let c = changes(&items);
    assert_eq!(
        AvroType::of(&c[0].relation.columns[1].pg_type),
        AvroType::EnumLabel {
            name: "case10.Mood".to_owned(),
            labels: ["sad", "ok", "happy", "ecstatic"]
                .map(str::to_owned)
                .to_vec(),
        },
        "an enum is a string with its labels as metadata"
    );
    let row = avro_row(c[0], c[0].new.as_ref());
    assert_eq!(col(&row, "mood"), &branch(1, string("happy")));
    assert_eq!(
        col(&row, "moods"),
        &array(
            &[2],
            &[1],
            vec![branch(1, string("sad")), branch(1, string("happy"))]
        )
    );
    assert_eq!(
        col(&row, "cost"),
        &branch(1, decimal(&[0x04, 0xE2])),
        "12.50"
    );
    assert_eq!(col(&row, "code"), &branch(1, string("AB")));

    // CASE-27: valid Avro names, deterministic, "ID" and "id" apart.
    let items = capture(&pg, "CASE-27").await;
    let c = changes(&items);
    let lines = c
        .iter()
        .find(|change| change.relation.name == "Order Lines")
        .expect("a change of Order Lines");
    assert_eq!(
        avro_names(&lines.relation).expect("no collision"),
        [
            "ID",
            "id",
            "select",
            "unit_price__u20AC",
            "say__hi_",
            "na_u00EFve_col",
            "_1st"
        ]
    );
}
