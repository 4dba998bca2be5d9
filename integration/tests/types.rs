//! Every type of issue 2 (item 5) read through the change reader and compared with what
//! PostgreSQL itself prints.
//!
//! One table has a column of each type, REPLICA IDENTITY FULL, and rows of edge values
//! (NaN, ±Infinity, ±infinity, BC dates, the ends of every range, NULL array elements, two
//! dimensions, padding, quoting). Before each change is read, the test asks PostgreSQL for
//! every value of the row image as text (`col::text`), as JSON (`to_json(col)`) and, where
//! useful, as exact integers (days, microseconds, months). The reader's values are then
//! compared with that oracle:
//!
//! - where PostgreSQL's `to_json` is our JSON contract (integers, bools, numerics, text
//!   types, uuid, enums, arrays of those, domains, types kept as text), `Value::to_json`
//!   must equal it exactly (numbers compare by their digits);
//! - floats compare bit for bit with PostgreSQL's text parsed as f32/f64;
//! - json and jsonb are strings holding exactly `col::text`; bytea is PostgreSQL's own base64;
//!   intervals are PostgreSQL's IntervalStyle `iso_8601` text;
//! - dates, times and timestamps differ from `to_json` by design (astronomical years, `Z`,
//!   six fraction digits): their JSON must equal both a hard-coded table keyed by
//!   PostgreSQL's text and the rewriting of that text by the rules (`derive_*`), and their
//!   integers (unix days, unix microseconds, offsets) must equal PostgreSQL's exact integer
//!   arithmetic.
//!
//! A second table holds arrays of the remaining element kinds, and a third 200 rows of
//! random values over each temporal, numeric and float type's whole range (fixed seed),
//! checked with the same oracle.

use std::collections::HashMap;
use std::time::Duration;

use entity_cdc::source::change::{Change, ChangeKind, SourceEvent};
use entity_cdc::source::reader::ReadItem;
use entity_cdc::source::value::{Numeric, Timestamp, Value};
use entity_cdc_integration::capture::{lines, read_all};
use entity_cdc_integration::{PgServer, PgServerOptions};
use serde_json::Value as Json;
use tokio_postgres::SimpleQueryMessage;

/// The database, publication and slot of this test.
const DB: &str = "types";
const PUBLICATION: &str = "cdc_types";
const SLOT: &str = "slot_types";

/// The schema: an enum, a domain over numeric(8,2) and the table with one column per type.
const SETUP: &str = r#"
create schema typed;
create type typed.mood as enum ('sad', 'ok', 'happy', 'with "quotes", comma');
create domain typed.price as numeric(8,2);
create table typed.t (
  id int primary key,
  b bool,
  i2 int2, i4 int4, i8 int8,
  f4 float4, f8 float8,
  n numeric, n52 numeric(5,2), nneg numeric(4,-3),
  t text, vc varchar(10), bc char(5), nm name,
  u uuid,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
  iv interval,
  j json, jb jsonb,
  by bytea,
  e typed.mood,
  ai int4[], at text[], ab bool[], an numeric[], af float8[], au uuid[], ae typed.mood[],
  ad date[], ats timestamptz[], aiv interval[],
  dm typed.price,
  mo money, ip inet, pt point, r int4range
);
alter table typed.t replica identity full;
create publication cdc_types for table typed.t;
"#;

/// Six rows in one transaction: ordinary values, the low ends, the high ends, NULLs and
/// infinities, zeros and subnormals, and the odd ones (negative zero, i64::MIN microseconds,
/// a non-default array lower bound, a sub-minute time zone offset).
const INSERT: &str = r#"
insert into typed.t values
 (1, true, 1, 2, 3, 1.5, 2.25, 1.50, 1.50, 1234567, 'hello', 'varchar', 'ab', 'a_name',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '12:34:56.5', '12:34:56.5+05:30',
  '2024-02-29 12:34:56.5', '2024-02-29 12:34:56.5+05:30', '1 year 2 mons 3 days 04:05:06.5',
  '{"b": 1,  "a": [1, 2.50]}', '{"b": 1,  "a": [1, 2.50]}', '\x00ff10', 'happy',
  '{1,2,3}', '{a,b}', '{t,f}', '{1.50,2}', '{1.5,-0.25}',
  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{sad,happy}',
  '{2024-02-29,1999-12-31}', '{"2024-02-29 12:00:00+00"}', '{1 day,PT1H}',
  123456.78, 1234.56, '192.168.0.1/24', '(1.5,-2)', '[1,5)'),
 (2, false, -32768, -2147483648, -9223372036854775808, 'NaN', 'NaN', 'NaN', -999.99, -9999000,
  E'quote " backslash \\ newline \n tab \t unicode é ✓ 𝄞', '', 'a', 'Name With Caps',
  '00000000-0000-0000-0000-000000000000', '4714-11-24 BC', '00:00:00', '00:00:00-15:59',
  '4714-11-24 00:00:00 BC', '4714-11-24 00:00:00+00 BC',
  '-1 years -2 mons -3 days -04:05:06.000001',
  '[]', '{}', '', 'with "quotes", comma',
  '{{1,NULL},{NULL,4}}', '{{"a,b","NULL"},{NULL,"\"q\""}}', '{NULL}',
  '{NaN,Infinity,-Infinity,NULL}', '{NaN,Infinity,NULL}', '{NULL}',
  '{"with \"quotes\", comma",NULL}',
  '{NULL,infinity,-infinity,"0044-03-15 BC"}', '{infinity,NULL,"0001-01-01 00:00:00+00 BC"}',
  '{{1 mon,NULL},{-1 days,PT0S}}',
  -999999.99, -92233720368547758.08, '::1', '(0,0)', 'empty'),
 (3, null, 32767, 2147483647, 9223372036854775807, 'Infinity', '-Infinity', 'Infinity', 999.99,
  9999000, ' leading and trailing  ', 'ten chars!', 'abcde', '',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '5874897-12-31', '24:00:00', '23:59:59.999999+15:59',
  '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', '178000000 years',
  '{"nested": {"deep": [null, true, "x"]}}', '{"nested": {"deep": [null, true, "x"]}}',
  '\x5c00', 'sad', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
  0, 92233720368547758.07, '2001:db8::1/64', '(1e+300,-1e-300)', '(,10]'),
 (4, null, null, null, null, '-Infinity', 'Infinity', '-Infinity', 0, null, null, null, null,
  null, null, 'infinity', null, null, 'infinity', '-infinity', '-178000000 years', null, null,
  null, null, null, null, null, null, null, null, null, null, null, null, null, null, null,
  null, null),
 (5, true, 0, 0, 0, 1.17549435e-38, 5e-324, '-0.000', 0.01, 0, 'x', 'y', '', 'z',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '0001-01-01 BC', '23:59:59.999999', '00:00:00+00',
  '0001-12-31 23:59:59.999999 BC', '1970-01-01 00:00:00+00', '0',
  '"just a string"', '"just a string"', '\xdeadbeef', 'ok',
  '{-2147483648,2147483647}', '{"",""}', '{{t},{f}}', '{0.000001,-1e-6}',
  '{1.7976931348623157e308,5e-324}', '{}', '{ok}', '{-infinity}', '{-infinity}', '{}',
  0.00, 0, '10.0.0.0/8', '(-0,0)', '[,]'),
 (6, false, -1, -1, -1, 3.4028235e38, 1.7976931348623157e308,
  '123456789012345678901234567890.123456789012345678901234567890', -0.01, 499,
  'x', 'y', 'z', 'w', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '1582-10-04', '01:02:03',
  '01:02:03-00:00:01', '1969-12-31 23:59:59.999999', '2000-01-01 00:00:00-12:34:56',
  '-2147483648 days -2147483648 months -9223372036854775808 microseconds', 'null', 'null',
  '\x', 'sad', '[0:1]={7,8}', '{{a},{b}}', '{t}', '{1e+20}', '{-0}', '{}', '{}',
  '{1970-01-01}', '{"1970-01-01 00:00:00.000001+00"}', '{P1Y}', 999999.99, '-0.01',
  '0.0.0.0/0', '(1,1)', '[-2147483648,2147483647)');
"#;

/// Changes most columns of row 1 to other edge values (a leap second becomes the next minute).
const UPDATE: &str = r#"
update typed.t set b = false, i8 = 42, f4 = '-0', f8 = 'Infinity', n = '-12.3400', n52 = null,
  t = 'changed', bc = 'xy', d = '0044-03-15 BC', tm = '00:00:00.000001', ttz = '12:00:00-03:30',
  ts = '0044-03-15 12:00:00 BC', tstz = 'infinity', iv = '-1 days +02:00:00', j = '{"a":1}',
  jb = '[1, "two", {"x": null}]', by = '\xc0ffee', e = 'sad', ai = '{{1,2,3},{4,5,NULL}}',
  ad = '{"0044-03-15 BC",NULL}', ats = '{"2024-06-30 23:59:60+00"}', dm = 1.5, mo = 0.5,
  ip = '10.1.2.3', pt = '(3,4)', r = '[3,3]'
where id = 1
"#;

/// How a column's value is compared with PostgreSQL.
#[derive(Debug, Clone, Copy)]
enum Oracle {
    /// `Value::to_json` equals PostgreSQL's `to_json(col)`.
    PgJson,
    /// As [`Oracle::PgJson`], and the numeric keeps PostgreSQL's text and `scale(col)`.
    Numeric,
    /// Bit for bit equal to PostgreSQL's text parsed as f32.
    Float4,
    /// Bit for bit equal to PostgreSQL's text parsed as f64.
    Float8,
    /// Like `to_json(col)` with each number compared as an f64, bit for bit.
    Float8Array,
    /// A JSON string holding exactly `col::text`.
    JsonText,
    /// PostgreSQL's base64 of the bytes, and the bytes of its hex text.
    Bytea,
    /// IntervalStyle iso_8601 text, and months, days, microseconds as PostgreSQL extracts them.
    Interval,
    /// The JSON from [`DATES`], and unix days as `col - '1970-01-01'`.
    Date,
    /// The JSON from [`TIMES`], and microseconds since midnight.
    Time,
    /// The JSON from [`TIMETZS`], the offset as `extract(timezone ...)` and local microseconds.
    TimeTz,
    /// The JSON from [`TIMESTAMPS`], and microseconds since 1970 computed exactly.
    Timestamp,
    /// The JSON from [`TIMESTAMPTZS`], and microseconds since 1970 computed exactly.
    TimestampTz,
    /// The JSON from a table keyed by PostgreSQL's text.
    Fixed(&'static [(&'static str, &'static str)]),
    /// A type without dedicated decoding: PostgreSQL's text and the type's name.
    Unknown(&'static str),
}

/// A column of `typed.t`: its name, the type name the reader resolves, and its oracle.
struct Col {
    name: &'static str,
    type_name: &'static str,
    oracle: Oracle,
    /// Whether the temporal JSON must also be in its hard-coded table (random values are
    /// only compared with the JSON derived from PostgreSQL's text).
    tabled: bool,
}

const fn col(name: &'static str, type_name: &'static str, oracle: Oracle) -> Col {
    Col {
        name,
        type_name,
        oracle,
        tabled: true,
    }
}

/// A column of random values: temporal JSON derived from PostgreSQL's text only.
const fn random_col(name: &'static str, type_name: &'static str, oracle: Oracle) -> Col {
    Col {
        name,
        type_name,
        oracle,
        tabled: false,
    }
}

/// The columns of `typed.t` in attribute order.
const COLUMNS: &[Col] = &[
    col("id", "int4", Oracle::PgJson),
    col("b", "bool", Oracle::PgJson),
    col("i2", "int2", Oracle::PgJson),
    col("i4", "int4", Oracle::PgJson),
    col("i8", "int8", Oracle::PgJson),
    col("f4", "float4", Oracle::Float4),
    col("f8", "float8", Oracle::Float8),
    col("n", "numeric", Oracle::Numeric),
    col("n52", "numeric(5,2)", Oracle::Numeric),
    col("nneg", "numeric(4,-3)", Oracle::Numeric),
    col("t", "text", Oracle::PgJson),
    col("vc", "varchar", Oracle::PgJson),
    col("bc", "bpchar", Oracle::PgJson),
    col("nm", "name", Oracle::PgJson),
    col("u", "uuid", Oracle::PgJson),
    col("d", "date", Oracle::Date),
    col("tm", "time", Oracle::Time),
    col("ttz", "timetz", Oracle::TimeTz),
    col("ts", "timestamp", Oracle::Timestamp),
    col("tstz", "timestamptz", Oracle::TimestampTz),
    col("iv", "interval", Oracle::Interval),
    col("j", "json", Oracle::JsonText),
    col("jb", "jsonb", Oracle::JsonText),
    col("by", "bytea", Oracle::Bytea),
    col("e", "typed.mood", Oracle::PgJson),
    col("ai", "int4[]", Oracle::PgJson),
    col("at", "text[]", Oracle::PgJson),
    col("ab", "bool[]", Oracle::PgJson),
    col("an", "numeric[]", Oracle::PgJson),
    col("af", "float8[]", Oracle::Float8Array),
    col("au", "uuid[]", Oracle::PgJson),
    col("ae", "typed.mood[]", Oracle::PgJson),
    col("ad", "date[]", Oracle::Fixed(DATE_ARRAYS)),
    col("ats", "timestamptz[]", Oracle::Fixed(TIMESTAMPTZ_ARRAYS)),
    // With IntervalStyle iso_8601, to_json of an interval is its ISO text: our contract.
    col("aiv", "interval[]", Oracle::PgJson),
    col("dm", "typed.price", Oracle::Numeric),
    col("mo", "money", Oracle::Unknown("money")),
    col("ip", "inet", Oracle::Unknown("inet")),
    col("pt", "point", Oracle::Unknown("point")),
    col("r", "int4range", Oracle::Unknown("int4range")),
];

/// `date` text as PostgreSQL prints it (DateStyle ISO) and our JSON: astronomical years,
/// signed outside 0000..9999.
const DATES: &[(&str, &str)] = &[
    ("2024-02-29", "2024-02-29"),
    ("4714-11-24 BC", "-4713-11-24"),
    ("5874897-12-31", "+5874897-12-31"),
    ("infinity", "infinity"),
    ("0001-01-01 BC", "0000-01-01"),
    ("1582-10-04", "1582-10-04"),
    ("0044-03-15 BC", "-0043-03-15"),
];

/// `time` text and our JSON: six fraction digits when there is a fraction.
const TIMES: &[(&str, &str)] = &[
    ("12:34:56.5", "12:34:56.500000"),
    ("00:00:00", "00:00:00"),
    ("24:00:00", "24:00:00"),
    ("23:59:59.999999", "23:59:59.999999"),
    ("01:02:03", "01:02:03"),
    ("00:00:00.000001", "00:00:00.000001"),
];

/// `timetz` text and our JSON: the offset always with minutes, seconds when it has them.
const TIMETZS: &[(&str, &str)] = &[
    ("12:34:56.5+05:30", "12:34:56.500000+05:30"),
    ("00:00:00-15:59", "00:00:00-15:59"),
    ("23:59:59.999999+15:59", "23:59:59.999999+15:59"),
    ("00:00:00+00", "00:00:00+00:00"),
    ("01:02:03-00:00:01", "01:02:03-00:00:01"),
    ("12:00:00-03:30", "12:00:00-03:30"),
];

/// `timestamp` text and our JSON.
const TIMESTAMPS: &[(&str, &str)] = &[
    ("2024-02-29 12:34:56.5", "2024-02-29T12:34:56.500000"),
    ("4714-11-24 00:00:00 BC", "-4713-11-24T00:00:00"),
    (
        "294276-12-31 23:59:59.999999",
        "+294276-12-31T23:59:59.999999",
    ),
    ("infinity", "infinity"),
    (
        "0001-12-31 23:59:59.999999 BC",
        "0000-12-31T23:59:59.999999",
    ),
    ("1969-12-31 23:59:59.999999", "1969-12-31T23:59:59.999999"),
    ("0044-03-15 12:00:00 BC", "-0043-03-15T12:00:00"),
];

/// `timestamptz` text (TimeZone UTC) and our JSON.
const TIMESTAMPTZS: &[(&str, &str)] = &[
    ("2024-02-29 07:04:56.5+00", "2024-02-29T07:04:56.500000Z"),
    ("4714-11-24 00:00:00+00 BC", "-4713-11-24T00:00:00Z"),
    (
        "294276-12-31 23:59:59.999999+00",
        "+294276-12-31T23:59:59.999999Z",
    ),
    ("-infinity", "-infinity"),
    ("infinity", "infinity"),
    ("1970-01-01 00:00:00+00", "1970-01-01T00:00:00Z"),
    ("2000-01-01 12:34:56+00", "2000-01-01T12:34:56Z"),
];

/// `date[]` text and our JSON.
const DATE_ARRAYS: &[(&str, &str)] = &[
    ("{2024-02-29,1999-12-31}", r#"["2024-02-29","1999-12-31"]"#),
    (
        r#"{NULL,infinity,-infinity,"0044-03-15 BC"}"#,
        r#"[null,"infinity","-infinity","-0043-03-15"]"#,
    ),
    ("{}", "[]"),
    ("{-infinity}", r#"["-infinity"]"#),
    ("{1970-01-01}", r#"["1970-01-01"]"#),
    (r#"{"0044-03-15 BC",NULL}"#, r#"["-0043-03-15",null]"#),
];

/// `timestamptz[]` text and our JSON.
const TIMESTAMPTZ_ARRAYS: &[(&str, &str)] = &[
    (
        r#"{"2024-02-29 12:00:00+00"}"#,
        r#"["2024-02-29T12:00:00Z"]"#,
    ),
    (
        r#"{infinity,NULL,"0001-01-01 00:00:00+00 BC"}"#,
        r#"["infinity",null,"0000-01-01T00:00:00Z"]"#,
    ),
    ("{}", "[]"),
    ("{-infinity}", r#"["-infinity"]"#),
    (
        r#"{"1970-01-01 00:00:00.000001+00"}"#,
        r#"["1970-01-01T00:00:00.000001Z"]"#,
    ),
    (
        r#"{"2024-07-01 00:00:00+00"}"#,
        r#"["2024-07-01T00:00:00Z"]"#,
    ),
];

/// What PostgreSQL says about one value.
#[derive(Debug, Clone)]
struct PgValue {
    /// `col::text`, None for NULL.
    text: Option<String>,
    /// `to_json(col)`, JSON null for NULL.
    json: Json,
    /// The oracle's extra exact form (integers), when it has one.
    extra: Option<String>,
}

/// A row image as PostgreSQL prints it, by column name.
type PgRow = HashMap<&'static str, PgValue>;

/// The extra expression of an oracle, over column `c`.
fn extra_sql(oracle: Oracle, c: &str) -> String {
    // Microseconds since 1970 with integer arithmetic only: `extract(epoch ...)` goes through
    // a numeric division that rounds near the end of the range (294276 AD).
    let epoch_micros = format!(
        "case when isfinite({c}) then (({c})::date - date '1970-01-01')::numeric * 86400000000 \
         + trunc(extract(epoch from ({c})::time) * 1000000) end"
    );
    match oracle {
        Oracle::Numeric => format!("scale({c})"),
        Oracle::Bytea => format!("replace(encode({c}, 'base64'), E'\\n', '')"),
        Oracle::Interval => format!(
            "(extract(year from {c}) * 12 + extract(month from {c}))::text || ' ' || \
             extract(day from {c})::text || ' ' || \
             ((extract(hour from {c}) * 3600 + extract(minute from {c}) * 60) * 1000000 \
              + extract(microsecond from {c}))::text"
        ),
        Oracle::Date => format!("case when isfinite({c}) then {c} - date '1970-01-01' end"),
        Oracle::Time => format!("trunc(extract(epoch from {c}) * 1000000)"),
        Oracle::TimeTz => format!(
            "extract(timezone from {c})::text || ' ' || \
             trunc(extract(epoch from ({c})::time) * 1000000)::text"
        ),
        Oracle::Timestamp | Oracle::TimestampTz => epoch_micros,
        _ => "null".to_owned(),
    }
}

/// A session whose output settings match the replication session's, for the oracle.
async fn oracle_session(server: &PgServer) -> tokio_postgres::Client {
    let client = server
        .connect(DB)
        .await
        .unwrap_or_else(|e| panic!("connecting the oracle session: {e:#}"));
    client
        .batch_execute(
            "set timezone = 'UTC'; set datestyle = 'ISO, MDY'; set intervalstyle = 'iso_8601'; \
             set extra_float_digits = 3; set bytea_output = 'hex'",
        )
        .await
        .unwrap_or_else(|e| panic!("setting the oracle session: {e}"));
    client
}

/// Asks PostgreSQL for every value of row `id` as it is now.
async fn pg_row(client: &tokio_postgres::Client, table: &str, columns: &[Col], id: i32) -> PgRow {
    let mut row = PgRow::new();
    for column in columns {
        let c = column.name;
        let sql = format!(
            "select {c}::text, to_json({c})::text, ({extra})::text from {table} where id = {id}",
            extra = extra_sql(column.oracle, c)
        );
        let messages = client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("oracle query {sql:?}: {e}"));
        let Some(found) = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        }) else {
            panic!("row {id} not found by {sql:?}");
        };
        let json_text = found.get(1).unwrap_or("null");
        let json = serde_json::from_str(json_text)
            .unwrap_or_else(|e| panic!("to_json({c}) of row {id} is not JSON ({e}): {json_text}"));
        row.insert(
            c,
            PgValue {
                text: found.get(0).map(str::to_owned),
                json,
                extra: found.get(2).map(str::to_owned),
            },
        );
    }
    row
}

/// Our JSON for a `date` as PostgreSQL prints it (`YYYY-MM-DD[ BC]`): the astronomical year
/// (1 BC is 0), four digits, signed outside 0000..=9999.
fn derive_date(text: &str) -> String {
    if text == "infinity" || text == "-infinity" {
        return text.to_owned();
    }
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let (year, month_day) = body
        .split_once('-')
        .unwrap_or_else(|| panic!("date text {text:?}"));
    let year: i64 = year
        .parse()
        .unwrap_or_else(|e| panic!("year of {text:?}: {e}"));
    let year = if bc { 1 - year } else { year };
    let year = if year > 9999 {
        format!("+{year}")
    } else if year < 0 {
        format!("-{:04}", -year)
    } else {
        format!("{year:04}")
    };
    format!("{year}-{month_day}")
}

/// Our JSON for a time of day as PostgreSQL prints it: the fraction, if any, to six digits.
fn derive_time(text: &str) -> String {
    match text.split_once('.') {
        Some((whole, fraction)) => format!("{whole}.{fraction:0<6}"),
        None => text.to_owned(),
    }
}

/// Our JSON for a `timetz`: the time as [`derive_time`], the offset with minutes always.
fn derive_timetz(text: &str) -> String {
    let at = text
        .rfind(['+', '-'])
        .unwrap_or_else(|| panic!("timetz text {text:?}"));
    let (time, offset) = text.split_at(at);
    let offset = if offset.len() == 3 {
        format!("{offset}:00")
    } else {
        offset.to_owned()
    };
    format!("{}{offset}", derive_time(time))
}

/// Our JSON for a `timestamp` (or a `timestamptz` printed in UTC, `+00`, when `utc`).
fn derive_timestamp(text: &str, utc: bool) -> String {
    if text == "infinity" || text == "-infinity" {
        return text.to_owned();
    }
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, " BC"),
        None => (text, ""),
    };
    let (date, time) = body
        .split_once(' ')
        .unwrap_or_else(|| panic!("timestamp text {text:?}"));
    let time = if utc {
        time.strip_suffix("+00")
            .unwrap_or_else(|| panic!("timestamptz {text:?} not in UTC"))
    } else {
        time
    };
    let zone = if utc { "Z" } else { "" };
    format!(
        "{}T{}{zone}",
        derive_date(&format!("{date}{bc}")),
        derive_time(time)
    )
}

/// The JSON that `table` maps PostgreSQL's `text` to.
fn lookup(table: &[(&str, &str)], text: &str, what: &str) -> Json {
    let Some((_, json)) = table.iter().find(|(pg, _)| *pg == text) else {
        panic!("{what}: no expectation for PostgreSQL's text {text:?}");
    };
    if json.starts_with('[') {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{what}: bad expectation: {e}"))
    } else {
        Json::String((*json).to_owned())
    }
}

/// A float as PostgreSQL prints it.
fn pg_float<T: std::str::FromStr>(text: &str, what: &str) -> T {
    let text = match text {
        "Infinity" => "inf",
        "-Infinity" => "-inf",
        other => other,
    };
    text.parse()
        .unwrap_or_else(|_| panic!("{what}: PostgreSQL's float text {text:?} does not parse"))
}

/// The f64 of a JSON float: a number, or "NaN", "Infinity", "-Infinity".
fn json_f64(json: &Json, what: &str) -> f64 {
    match json {
        Json::Number(n) => pg_float(&n.to_string(), what),
        Json::String(s) => pg_float(s, what),
        other => panic!("{what}: {other} is not a float"),
    }
}

/// Whether two floats are the same value: same bits, or both NaN.
fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Compares two JSON trees whose numbers are floats, bit for bit.
fn assert_float_json(ours: &Json, pg: &Json, what: &str) {
    match (ours, pg) {
        (Json::Array(a), Json::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{what}: {ours} vs PostgreSQL {pg}");
            for (x, y) in a.iter().zip(b) {
                assert_float_json(x, y, what);
            }
        }
        (Json::Null, Json::Null) => {}
        _ => assert!(
            same_f64(json_f64(ours, what), json_f64(pg, what)),
            "{what}: {ours} vs PostgreSQL {pg}"
        ),
    }
}

/// Decodes PostgreSQL's hex bytea text `\x0aff`.
fn pg_hex(text: &str, what: &str) -> Vec<u8> {
    let Some(digits) = text.strip_prefix("\\x") else {
        panic!("{what}: bytea text {text:?} is not hex");
    };
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .unwrap_or_else(|e| panic!("{what}: bad hex {text:?}: {e}"))
        })
        .collect()
}

/// An integer PostgreSQL computed, exactly.
fn pg_int(text: Option<&str>, what: &str) -> i128 {
    let Some(text) = text else {
        panic!("{what}: PostgreSQL computed no integer");
    };
    text.parse()
        .unwrap_or_else(|e| panic!("{what}: {text:?} is not an integer: {e}"))
}

/// Microseconds since 1970 of a timestamp, from PostgreSQL's representation, without overflow.
fn unix_micros_i128(timestamp: &Timestamp) -> Option<i128> {
    const UNIX_TO_PG_MICROS: i128 = 946_684_800_000_000;
    match timestamp {
        Timestamp::Finite(t) => Some(i128::from(t.pg_micros()) + UNIX_TO_PG_MICROS),
        Timestamp::Infinity | Timestamp::NegInfinity => None,
    }
}

/// Checks one value of a change against PostgreSQL's view of it.
fn check_value(column: &Col, value: &Value, pg: &PgValue, what: &str) {
    let Some(text) = pg.text.as_deref() else {
        assert!(
            value.is_null(),
            "{what}: PostgreSQL has NULL, we have {value:?}"
        );
        return;
    };
    let Some(ours) = value.to_json() else {
        panic!("{what}: value unavailable under REPLICA IDENTITY FULL");
    };
    match column.oracle {
        Oracle::PgJson => assert_eq!(ours, pg.json, "{what}: PostgreSQL's text is {text:?}"),
        Oracle::Numeric => {
            assert_eq!(ours, pg.json, "{what}");
            let Value::Numeric(numeric) = value else {
                panic!("{what}: {value:?} is not a numeric");
            };
            assert_eq!(numeric.as_str(), text, "{what}: digits");
            if let Numeric::Finite(finite) = numeric {
                let scale = pg_int(pg.extra.as_deref(), what);
                assert_eq!(i128::from(finite.scale()), scale, "{what}: scale");
            }
        }
        Oracle::Float4 => {
            let Value::Float4(v) = value else {
                panic!("{what}: {value:?} is not a float4");
            };
            let expected: f32 = pg_float(text, what);
            assert!(
                v.to_bits() == expected.to_bits() || (v.is_nan() && expected.is_nan()),
                "{what}: {v:?} vs PostgreSQL {text}"
            );
            // JSON of a float4 carries the shortest f32 digits: they parse back to the value.
            let json_value = match &ours {
                Json::Number(n) => pg_float::<f32>(&n.to_string(), what),
                Json::String(s) => pg_float::<f32>(s, what),
                other => panic!("{what}: {other} is not a float"),
            };
            assert!(
                json_value.to_bits() == expected.to_bits()
                    || (json_value.is_nan() && expected.is_nan()),
                "{what}: JSON {ours} vs PostgreSQL {text}"
            );
            if !expected.is_finite() {
                assert_eq!(
                    ours, pg.json,
                    "{what}: special values as PostgreSQL's to_json"
                );
            }
        }
        Oracle::Float8 => {
            let Value::Float8(v) = value else {
                panic!("{what}: {value:?} is not a float8");
            };
            let expected: f64 = pg_float(text, what);
            assert!(same_f64(*v, expected), "{what}: {v:?} vs PostgreSQL {text}");
            assert_float_json(&ours, &pg.json, what);
            if !expected.is_finite() {
                assert_eq!(
                    ours, pg.json,
                    "{what}: special values as PostgreSQL's to_json"
                );
            }
        }
        Oracle::Float8Array => assert_float_json(&ours, &pg.json, what),
        Oracle::JsonText => assert_eq!(ours, Json::String(text.to_owned()), "{what}"),
        Oracle::Bytea => {
            let Value::Bytea(bytes) = value else {
                panic!("{what}: {value:?} is not a bytea");
            };
            assert_eq!(bytes, &pg_hex(text, what), "{what}: bytes");
            let base64 = pg.extra.clone().unwrap_or_default();
            assert_eq!(ours, Json::String(base64), "{what}: PostgreSQL's base64");
        }
        Oracle::Interval => {
            assert_eq!(ours, Json::String(text.to_owned()), "{what}: iso_8601 text");
            let Value::Interval(interval) = value else {
                panic!("{what}: {value:?} is not an interval");
            };
            let fields = format!("{} {} {}", interval.months, interval.days, interval.micros);
            assert_eq!(Some(fields), pg.extra, "{what}: months days micros");
        }
        Oracle::Date => {
            assert_eq!(ours, Json::String(derive_date(text)), "{what}: derived");
            if column.tabled {
                assert_eq!(ours, lookup(DATES, text, what), "{what}");
            }
            let Value::Date(date) = value else {
                panic!("{what}: {value:?} is not a date");
            };
            match date.unix_days() {
                Some(days) => {
                    assert_eq!(
                        i128::from(days),
                        pg_int(pg.extra.as_deref(), what),
                        "{what}"
                    )
                }
                None => assert_eq!(pg.extra, None, "{what}: only infinities have no day"),
            }
        }
        Oracle::Time => {
            assert_eq!(ours, Json::String(derive_time(text)), "{what}: derived");
            if column.tabled {
                assert_eq!(ours, lookup(TIMES, text, what), "{what}");
            }
            let Value::Time(micros) = value else {
                panic!("{what}: {value:?} is not a time");
            };
            assert_eq!(
                i128::from(*micros),
                pg_int(pg.extra.as_deref(), what),
                "{what}"
            );
        }
        Oracle::TimeTz => {
            assert_eq!(ours, Json::String(derive_timetz(text)), "{what}: derived");
            if column.tabled {
                assert_eq!(ours, lookup(TIMETZS, text, what), "{what}");
            }
            let Value::TimeTz {
                micros,
                offset_seconds,
            } = value
            else {
                panic!("{what}: {value:?} is not a timetz");
            };
            assert_eq!(
                Some(format!("{offset_seconds} {micros}")),
                pg.extra,
                "{what}: offset seconds east and local micros"
            );
        }
        Oracle::Timestamp | Oracle::TimestampTz => {
            let (table, timestamp) = match (column.oracle, value) {
                (Oracle::Timestamp, Value::Timestamp(t)) => (TIMESTAMPS, t),
                (Oracle::TimestampTz, Value::TimestampTz(t)) => (TIMESTAMPTZS, t),
                _ => panic!("{what}: {value:?} is not a {}", column.type_name),
            };
            let utc = matches!(column.oracle, Oracle::TimestampTz);
            let derived = derive_timestamp(text, utc);
            assert_eq!(ours, Json::String(derived), "{what}: derived");
            if column.tabled {
                assert_eq!(ours, lookup(table, text, what), "{what}");
            }
            let exact = unix_micros_i128(timestamp);
            match exact {
                Some(micros) => {
                    assert_eq!(micros, pg_int(pg.extra.as_deref(), what), "{what}");
                    // unix_micros is i64: None exactly where the true value does not fit.
                    assert_eq!(
                        timestamp.unix_micros().map(i128::from),
                        i64::try_from(micros).ok().map(i128::from),
                        "{what}: unix_micros"
                    );
                }
                None => assert_eq!(pg.extra, None, "{what}: only infinities have no time"),
            }
        }
        Oracle::Fixed(table) => assert_eq!(ours, lookup(table, text, what), "{what}"),
        Oracle::Unknown(type_name) => {
            assert_eq!(ours, pg.json, "{what}");
            match value {
                Value::Unknown {
                    type_name: name,
                    text: kept,
                } => {
                    assert_eq!(name, type_name, "{what}: type name");
                    // The output function's text, which to_json holds: `inet::text` is
                    // another function (it adds `/128` to `::1`).
                    assert_eq!(Some(kept.as_str()), pg.json.as_str(), "{what}: text");
                }
                other => panic!("{what}: {other:?} should be kept as text"),
            }
        }
    }
}

/// Checks a whole row image against PostgreSQL's.
fn check_row(columns: &[Col], change: &Change, row: &[Value], pg: &PgRow, image: &str) {
    assert_eq!(row.len(), columns.len(), "{image}: column count");
    for (column, value) in columns.iter().zip(row) {
        let what = format!("{image}, column {}", column.name);
        let expected = &pg[column.name];
        check_value(column, value, expected, &what);
    }
    assert_eq!(change.relation.columns.len(), columns.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_matches_what_postgresql_prints() {
    let pg = PgServer::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
    every_type(pg).await;
}

/// The replication and catalog sessions pin their output settings: a server whose defaults
/// print everything differently must give the very same values.
#[tokio::test(flavor = "multi_thread")]
async fn every_type_is_the_same_whatever_the_server_output_settings() {
    let settings = [
        ("DateStyle", "SQL, DMY"),
        ("TimeZone", "America/New_York"),
        ("IntervalStyle", "sql_standard"),
        ("extra_float_digits", "-15"),
        ("bytea_output", "escape"),
    ];
    let options = PgServerOptions {
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..PgServerOptions::default()
    };
    let pg = PgServer::start_with(options).unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
    assert_eq!(
        pg.psql(
            "select now()::date::text ~ '^../../....$', 1.1::float8::text, interval '1 day'::text"
        )
        .unwrap_or_else(|e| panic!("{e:#}")),
        "t|1|1 0:00:00",
        "the server's own sessions print in its settings"
    );
    every_type(pg).await;
}

/// Captures `typed.t` on `pg` and compares every value with the oracle.
async fn every_type(pg: PgServer) {
    pg.create_database(DB)
        .unwrap_or_else(|e| panic!("creating the database: {e:#}"));
    pg.psql_file(DB, SETUP, true)
        .unwrap_or_else(|e| panic!("setup: {e:#}"));
    pg.psql_db(
        DB,
        &format!("select pg_create_logical_replication_slot('{SLOT}', 'pgoutput')"),
    )
    .unwrap_or_else(|e| panic!("creating the slot: {e:#}"));
    let oracle = oracle_session(&pg).await;

    pg.psql_db(DB, INSERT)
        .unwrap_or_else(|e| panic!("insert: {e:#}"));
    let mut inserted = Vec::new();
    for id in 1..=6 {
        inserted.push(pg_row(&oracle, "typed.t", COLUMNS, id).await);
    }
    pg.psql_db(DB, UPDATE)
        .unwrap_or_else(|e| panic!("update: {e:#}"));
    let updated = pg_row(&oracle, "typed.t", COLUMNS, 1).await;
    let deleted = pg_row(&oracle, "typed.t", COLUMNS, 2).await;
    pg.psql_db(DB, "delete from typed.t where id = 2")
        .unwrap_or_else(|e| panic!("delete: {e:#}"));

    let items = tokio::time::timeout(
        Duration::from_secs(30),
        read_all(&pg, DB, SLOT, PUBLICATION),
    )
    .await
    .unwrap_or_else(|_| panic!("reading timed out; log:\n{}", pg.log()))
    .unwrap_or_else(|e| panic!("reading: {e:#}\nlog:\n{}", pg.log()));

    // Nothing may be undecodable: every value of every type is PostgreSQL output.
    for item in &items {
        if let ReadItem::Undecodable(bad) = item {
            panic!("undecodable change: {}", bad.reason);
        }
    }
    let changes: Vec<&Change> = items
        .iter()
        .filter_map(|item| match item {
            ReadItem::Event(SourceEvent::Change(change)) => Some(change),
            _ => None,
        })
        .collect();
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    use ChangeKind::{Delete, Insert, Update};
    assert_eq!(
        kinds,
        [Insert, Insert, Insert, Insert, Insert, Insert, Update, Delete]
    );

    // The relation as the reader resolved it: names and types, domains and enums by name.
    let relation = &changes[0].relation;
    let resolved: Vec<(String, String)> = relation
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.pg_type.name()))
        .collect();
    let expected: Vec<(String, String)> = COLUMNS
        .iter()
        .map(|c| (c.name.to_owned(), c.type_name.to_owned()))
        .collect();
    assert_eq!(resolved, expected);

    for (index, (change, pg_values)) in changes[..6].iter().zip(&inserted).enumerate() {
        assert_eq!(change.index as usize, index, "one transaction, in order");
        assert!(change.old.is_none(), "an insert has no old row");
        let new = change.new.as_deref().expect("an insert has a new row");
        check_row(
            COLUMNS,
            change,
            new,
            pg_values,
            &format!("insert of row {}", index + 1),
        );
    }

    let update = changes[6];
    let old = update.old.as_deref().expect("update: old row under FULL");
    let new = update.new.as_deref().expect("update: new row");
    check_row(COLUMNS, update, old, &inserted[0], "update of row 1, old");
    check_row(COLUMNS, update, new, &updated, "update of row 1, new");

    let delete = changes[7];
    assert!(delete.new.is_none(), "a delete has no new row");
    let old = delete.old.as_deref().expect("delete: old row under FULL");
    check_row(COLUMNS, delete, old, &deleted, "delete of row 2, old");

    // The tail line of row 6 carries the array's lower bound next to it (CASE-09).
    let printed = lines(&items);
    assert_eq!(printed[5]["new"]["ai"], serde_json::json!([7, 8]));
    assert_eq!(printed[5]["new"]["ai__lbound"], serde_json::json!([0]));
    assert!(printed[0]["new"].get("ai__lbound").is_none());
}

/// Arrays of the remaining element types: the quoting and escaping of their elements in
/// PostgreSQL's array text differs from their scalar text (bytea and json elements are
/// quoted with escaped backslashes and quotes, box uses `;` between elements).
const ARRAY_SETUP: &str = r#"
create schema arrays;
create domain arrays.price as numeric(8,2);
create table arrays.a (
  id int primary key,
  aby bytea[], ajb jsonb[], aj json[], atm time[], attz timetz[], ats timestamp[],
  af4 float4[], abc char(3)[], anm name[], avc varchar(5)[], amo money[], apt point[],
  abx box[], ar int4range[], a3 int4[], adm arrays.price[], aiv interval[], ai8 int8[]
);
alter table arrays.a replica identity full;
create publication cdc_arrays for table arrays.a;
"#;

const ARRAY_INSERT: &str = r#"
insert into arrays.a values
 (1, array['\x00ff'::bytea, '\x'::bytea, null, '\x5c22'::bytea],
  array['{"a": "q\"uote", "b": [1, 2.50]}'::jsonb, 'null'::jsonb, null],
  array['{"x" : 1}'::json, '"s\\t"'::json],
  '{12:34:56.5,NULL,24:00:00}', '{12:00:00+05:30,"00:00:00-00:00:01"}',
  '{"2024-02-29 12:34:56.5","0044-03-15 00:00:00 BC",infinity}',
  '{1.1,NaN,-Infinity,3.4028235e38,-0}', '{a,"ab ",NULL}', '{x,"with space"}', '{"a,b","{}",""}',
  '{1.50,-0.01}', '{"(1,2)","(-1.5,0)"}', '{(1,1),(0,0);(3,4),(2,2)}',
  '{"[1,3)",empty,"(,)"}', '{{{1,2},{3,4}},{{5,NULL},{7,8}}}', '{1.5,NULL,-999999.99}',
  '{P1Y2M,"PT-0.000001S"}', '{-9223372036854775808,9223372036854775807}'),
 (2, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
  '{}', '{}', '{NULL,NULL}');
"#;

/// `bytea[]` text and our JSON (base64 elements).
const BYTEA_ARRAYS: &[(&str, &str)] = &[
    (
        r#"{"\\x00ff","\\x",NULL,"\\x5c22"}"#,
        r#"["AP8=","",null,"XCI="]"#,
    ),
    ("{}", "[]"),
];

/// `jsonb[]` and `json[]` text and our JSON (each element's exact text as a string).
const JSON_ARRAYS: &[(&str, &str)] = &[
    (
        r#"{"{\"a\": \"q\\\"uote\", \"b\": [1, 2.50]}","null",NULL}"#,
        r#"["{\"a\": \"q\\\"uote\", \"b\": [1, 2.50]}","null",null]"#,
    ),
    (
        r#"{"{\"x\" : 1}","\"s\\\\t\""}"#,
        r#"["{\"x\" : 1}","\"s\\\\t\""]"#,
    ),
    ("{}", "[]"),
];

/// `time[]`, `timetz[]` and `timestamp[]` text and our JSON.
const TEMPORAL_ARRAYS: &[(&str, &str)] = &[
    (
        "{12:34:56.5,NULL,24:00:00}",
        r#"["12:34:56.500000",null,"24:00:00"]"#,
    ),
    (
        "{12:00:00+05:30,00:00:00-00:00:01}",
        r#"["12:00:00+05:30","00:00:00-00:00:01"]"#,
    ),
    (
        r#"{"2024-02-29 12:34:56.5","0044-03-15 00:00:00 BC",infinity}"#,
        r#"["2024-02-29T12:34:56.500000","-0043-03-15T00:00:00","infinity"]"#,
    ),
    ("{}", "[]"),
];

/// The columns of `arrays.a`.
const ARRAY_COLUMNS: &[Col] = &[
    col("id", "int4", Oracle::PgJson),
    col("aby", "bytea[]", Oracle::Fixed(BYTEA_ARRAYS)),
    col("ajb", "jsonb[]", Oracle::Fixed(JSON_ARRAYS)),
    col("aj", "json[]", Oracle::Fixed(JSON_ARRAYS)),
    col("atm", "time[]", Oracle::Fixed(TEMPORAL_ARRAYS)),
    col("attz", "timetz[]", Oracle::Fixed(TEMPORAL_ARRAYS)),
    col("ats", "timestamp[]", Oracle::Fixed(TEMPORAL_ARRAYS)),
    col("af4", "float4[]", Oracle::Float8Array),
    col("abc", "bpchar[]", Oracle::PgJson),
    col("anm", "name[]", Oracle::PgJson),
    col("avc", "varchar[]", Oracle::PgJson),
    col("amo", "money[]", Oracle::PgJson),
    col("apt", "point[]", Oracle::PgJson),
    col("abx", "box[]", Oracle::PgJson),
    col("ar", "int4range[]", Oracle::PgJson),
    col("a3", "int4[]", Oracle::PgJson),
    col("adm", "arrays.price[]", Oracle::PgJson),
    col("aiv", "interval[]", Oracle::PgJson),
    col("ai8", "int8[]", Oracle::PgJson),
];

#[tokio::test(flavor = "multi_thread")]
async fn arrays_of_every_element_kind_match_what_postgresql_prints() {
    let pg = PgServer::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
    pg.create_database(DB)
        .unwrap_or_else(|e| panic!("creating the database: {e:#}"));
    pg.psql_file(DB, ARRAY_SETUP, true)
        .unwrap_or_else(|e| panic!("setup: {e:#}"));
    pg.psql_db(
        DB,
        "select pg_create_logical_replication_slot('slot_arrays', 'pgoutput')",
    )
    .unwrap_or_else(|e| panic!("creating the slot: {e:#}"));
    let oracle = oracle_session(&pg).await;
    pg.psql_db(DB, ARRAY_INSERT)
        .unwrap_or_else(|e| panic!("insert: {e:#}"));
    let mut inserted = Vec::new();
    for id in 1..=2 {
        inserted.push(pg_row(&oracle, "arrays.a", ARRAY_COLUMNS, id).await);
    }
    pg.psql_db(DB, "delete from arrays.a where id = 1")
        .unwrap_or_else(|e| panic!("delete: {e:#}"));

    let items = tokio::time::timeout(
        Duration::from_secs(30),
        read_all(&pg, DB, "slot_arrays", "cdc_arrays"),
    )
    .await
    .unwrap_or_else(|_| panic!("reading timed out; log:\n{}", pg.log()))
    .unwrap_or_else(|e| panic!("reading: {e:#}\nlog:\n{}", pg.log()));
    for item in &items {
        if let ReadItem::Undecodable(bad) = item {
            panic!("undecodable change: {}", bad.reason);
        }
    }
    let changes: Vec<&Change> = items
        .iter()
        .filter_map(|item| match item {
            ReadItem::Event(SourceEvent::Change(change)) => Some(change),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 3, "two inserts and a delete");
    let resolved: Vec<String> = changes[0]
        .relation
        .columns
        .iter()
        .map(|c| c.pg_type.name())
        .collect();
    let expected: Vec<&str> = ARRAY_COLUMNS.iter().map(|c| c.type_name).collect();
    assert_eq!(resolved, expected);
    for (index, pg_values) in inserted.iter().enumerate() {
        let new = changes[index]
            .new
            .as_deref()
            .expect("an insert has a new row");
        check_row(
            ARRAY_COLUMNS,
            changes[index],
            new,
            pg_values,
            &format!("insert of row {}", index + 1),
        );
    }
    let old = changes[2]
        .old
        .as_deref()
        .expect("delete: old row under FULL");
    check_row(
        ARRAY_COLUMNS,
        changes[2],
        old,
        &inserted[0],
        "delete of row 1, old",
    );
}

/// Random values over each temporal, numeric and float type's whole range, drawn by
/// PostgreSQL from a fixed seed.
const RANDOM_SETUP: &str = r#"
create schema rnd;
create table rnd.v (
  id int primary key, d date, ts timestamp, tstz timestamptz, tm time, ttz timetz,
  iv interval, n numeric, f8 float8, f4 float4
);
alter table rnd.v replica identity full;
create publication cdc_rnd for table rnd.v;
"#;

/// Days since 2000-01-01 span 4714-11-24 BC (-2451545) to 294276-12-31 (106751982) for
/// timestamps, and further for dates; half the draws stay within a few thousand years.
const RANDOM_INSERT: &str = r#"
select setseed(0.4242);
insert into rnd.v
select g,
  date '2000-01-01' + case when random() < 0.5
    then (random() * (2147483494 - 2451545 - 1) - 2451545)::int
    else (random() * 2000000 - 1000000)::int end,
  ts, ts, tm,
  (tm::text || case when random() < 0.5 then '+' else '-' end
     || lpad((random() * 15)::int::text, 2, '0') || ':' || lpad((random() * 59)::int::text, 2, '0')
     || case when random() < 0.2 then ':' || lpad((random() * 59)::int::text, 2, '0') else '' end
  )::timetz,
  make_interval(months => (random() * 200000 - 100000)::int, days => (random() * 200000 - 100000)::int)
    + ((random() * 2e15 - 1e15)::bigint || ' microseconds')::interval,
  trunc(((random() - 0.5) * 10 ^ (floor(random() * 60) - 20))::numeric, floor(random() * 30)::int),
  (random() - 0.5) * 10 ^ (floor(random() * 600) - 300),
  ((random() - 0.5) * 10 ^ (floor(random() * 70) - 35))::float4
from (
  select g,
    timestamp '2000-01-01'
      + ((case when random() < 0.5
          then (random() * (106751982 + 2451545) - 2451545)::bigint
          else (random() * 2000000 - 1000000)::bigint end) || ' days')::interval
      + ((random() * 86399999999)::bigint || ' microseconds')::interval as ts,
    time '00:00' + ((random() * 86399999999)::bigint || ' microseconds')::interval as tm
  from generate_series(1, 200) g
) s;
"#;

/// The columns of `rnd.v`.
const RANDOM_COLUMNS: &[Col] = &[
    random_col("id", "int4", Oracle::PgJson),
    random_col("d", "date", Oracle::Date),
    random_col("ts", "timestamp", Oracle::Timestamp),
    random_col("tstz", "timestamptz", Oracle::TimestampTz),
    random_col("tm", "time", Oracle::Time),
    random_col("ttz", "timetz", Oracle::TimeTz),
    random_col("iv", "interval", Oracle::Interval),
    random_col("n", "numeric", Oracle::Numeric),
    random_col("f8", "float8", Oracle::Float8),
    random_col("f4", "float4", Oracle::Float4),
];

#[tokio::test(flavor = "multi_thread")]
async fn random_values_over_each_range_match_what_postgresql_prints() {
    let pg = PgServer::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
    pg.create_database(DB)
        .unwrap_or_else(|e| panic!("creating the database: {e:#}"));
    pg.psql_file(DB, RANDOM_SETUP, true)
        .unwrap_or_else(|e| panic!("setup: {e:#}"));
    pg.psql_db(
        DB,
        "select pg_create_logical_replication_slot('slot_rnd', 'pgoutput')",
    )
    .unwrap_or_else(|e| panic!("creating the slot: {e:#}"));
    pg.psql_file(DB, RANDOM_INSERT, true)
        .unwrap_or_else(|e| panic!("insert: {e:#}"));
    let oracle = oracle_session(&pg).await;
    let mut rows = Vec::new();
    for id in 1..=200 {
        rows.push(pg_row(&oracle, "rnd.v", RANDOM_COLUMNS, id).await);
    }
    let items = tokio::time::timeout(
        Duration::from_secs(30),
        read_all(&pg, DB, "slot_rnd", "cdc_rnd"),
    )
    .await
    .unwrap_or_else(|_| panic!("reading timed out; log:\n{}", pg.log()))
    .unwrap_or_else(|e| panic!("reading: {e:#}\nlog:\n{}", pg.log()));
    let mut changes = Vec::new();
    for item in &items {
        match item {
            ReadItem::Undecodable(bad) => panic!("undecodable change: {}", bad.reason),
            ReadItem::Event(SourceEvent::Change(change)) => changes.push(change),
            ReadItem::Event(_) => {}
        }
    }
    assert_eq!(changes.len(), 200);
    for (index, (change, pg_values)) in changes.iter().zip(&rows).enumerate() {
        let new = change.new.as_deref().expect("an insert has a new row");
        check_row(
            RANDOM_COLUMNS,
            change,
            new,
            pg_values,
            &format!("random row {}", index + 1),
        );
    }
}
