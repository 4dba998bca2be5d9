//! Column values decoded from PostgreSQL's text format, exactly.
//!
//! The replication session pins DateStyle=ISO, TimeZone=UTC, IntervalStyle=iso_8601,
//! extra_float_digits=3 and bytea_output=hex, and every value arrives as the text PostgreSQL
//! prints. The parsers here accept what PostgreSQL prints under those settings (plus the
//! default `postgres` interval style and `escape` bytea, which other sessions may print) and
//! nothing else: text they do not understand is a [`ValueError`], never a guessed value.
//!
//! Nothing goes through a float that was not a float in PostgreSQL: numerics keep their
//! digits, timestamps are integer microseconds, intervals keep months, days and microseconds
//! apart, json keeps its text.

mod array;
mod datetime;
mod interval;
mod numeric;
mod types;

use base64::Engine as _;

use crate::error::Disposition;

pub use array::Array;
pub use datetime::{
    civil_from_days, days_from_civil, Date, FiniteDate, FiniteTimestamp, Timestamp,
};
pub use interval::Interval;
pub use numeric::{FiniteNumeric, Numeric};
pub use types::PgType;

/// The longest stretch of an offending value quoted in an error.
const QUOTED_TEXT_CHARS: usize = 64;

/// A column value that PostgreSQL's text did not make sense as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The text is not what PostgreSQL prints for the type.
    #[error("invalid {type_name} value {text:?}")]
    Invalid {
        /// The column's type name.
        type_name: String,
        /// The offending text, truncated.
        text: String,
    },
    /// The text is not what PostgreSQL prints for the type, for a stated reason.
    #[error("invalid {type_name} value {text:?}: {reason}")]
    Malformed {
        /// The column's type name.
        type_name: String,
        /// The offending text, truncated.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ValueError {
    /// An error for `text` that is not a valid `ty`.
    fn new(ty: &PgType, text: &str) -> Self {
        ValueError::Invalid {
            type_name: ty.name(),
            text: truncate(text),
        }
    }

    /// An error for `text` that is not a valid `ty`, with the reason.
    fn with_reason(ty: &PgType, text: &str, reason: String) -> Self {
        ValueError::Malformed {
            type_name: ty.name(),
            text: truncate(text),
            reason,
        }
    }

    /// A value that cannot be decoded is bound to its one record: dead-letter it.
    pub fn disposition(&self) -> Disposition {
        Disposition::DeadLetter
    }
}

/// The first [`QUOTED_TEXT_CHARS`] characters of `text`, with `…` when cut.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(QUOTED_TEXT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A decoded column value.
///
/// Equality compares what is emitted, not what PostgreSQL's `=` says: `NaN` equals `NaN`,
/// numeric `200` differs from `200.000`, interval `1 day` differs from `24 hours`. This is the
/// comparison a diff of old and new rows needs.
#[derive(Debug, Clone)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int2`.
    Int2(i16),
    /// `int4`.
    Int4(i32),
    /// `int8`.
    Int8(i64),
    /// `oid`.
    Oid(u32),
    /// `float4`, NaN and infinities included.
    Float4(f32),
    /// `float8`, NaN and infinities included.
    Float8(f64),
    /// `numeric`, with PostgreSQL's exact digits.
    Numeric(Numeric),
    /// `text`, `varchar`, `bpchar` (padding kept), `name`, `"char"`.
    Text(String),
    /// `uuid`, in PostgreSQL's lowercase hyphenated form.
    Uuid(String),
    /// `date`.
    Date(Date),
    /// `time`: microseconds since midnight, `24:00:00` included.
    Time(i64),
    /// `timetz`.
    TimeTz {
        /// Microseconds since midnight, local to the offset.
        micros: i64,
        /// The UTC offset in seconds east of Greenwich (`+05:30` is 19800; PostgreSQL itself
        /// stores the opposite sign).
        offset_seconds: i32,
    },
    /// `timestamp`.
    Timestamp(Timestamp),
    /// `timestamptz`, in UTC.
    TimestampTz(Timestamp),
    /// `interval`.
    Interval(Interval),
    /// `json`: the exact text, never parsed or re-serialized.
    Json(String),
    /// `jsonb`: PostgreSQL's canonical text, never parsed or re-serialized.
    Jsonb(String),
    /// `bytea`.
    Bytea(Vec<u8>),
    /// An enum label.
    Enum(String),
    /// An array.
    Array(Array),
    /// A type without dedicated decoding: PostgreSQL's text and the type name.
    Unknown {
        /// The type name.
        type_name: String,
        /// The text PostgreSQL printed.
        text: String,
    },
    /// An unchanged TOAST column whose value is not in the message and could not be taken
    /// from an old tuple. It is not a value: it is never faked, and [`Value::to_json`] has
    /// no rendering for it.
    Unavailable,
}

/// Parses PostgreSQL's text output of a value of type `ty`.
pub fn parse_text(ty: &PgType, text: &str) -> Result<Value, ValueError> {
    let invalid = || ValueError::new(ty, text);
    let value = match ty {
        PgType::Bool => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(invalid()),
        },
        PgType::Int2 => Value::Int2(integer(text).ok_or_else(invalid)?),
        PgType::Int4 => Value::Int4(integer(text).ok_or_else(invalid)?),
        PgType::Int8 => Value::Int8(integer(text).ok_or_else(invalid)?),
        PgType::Oid => {
            if text.starts_with('-') {
                return Err(invalid());
            }
            Value::Oid(integer(text).ok_or_else(invalid)?)
        }
        PgType::Float4 => Value::Float4(float(text).ok_or_else(invalid)?),
        PgType::Float8 => Value::Float8(float(text).ok_or_else(invalid)?),
        PgType::Numeric { .. } => Value::Numeric(Numeric::parse(text).ok_or_else(invalid)?),
        PgType::Text | PgType::Varchar | PgType::Bpchar | PgType::Name | PgType::Char => {
            Value::Text(text.to_owned())
        }
        PgType::Uuid => {
            if !is_uuid(text) {
                return Err(invalid());
            }
            Value::Uuid(text.to_owned())
        }
        PgType::Date => Value::Date(Date::parse(text).ok_or_else(invalid)?),
        PgType::Time => Value::Time(datetime::parse_time_of_day(text).ok_or_else(invalid)?),
        PgType::TimeTz => {
            let (micros, offset_seconds) = datetime::parse_time_tz(text).ok_or_else(invalid)?;
            Value::TimeTz {
                micros,
                offset_seconds,
            }
        }
        PgType::Timestamp => Value::Timestamp(Timestamp::parse(text).ok_or_else(invalid)?),
        PgType::TimestampTz => Value::TimestampTz(Timestamp::parse_tz(text).ok_or_else(invalid)?),
        PgType::Interval => Value::Interval(Interval::parse(text).ok_or_else(invalid)?),
        PgType::Json => Value::Json(text.to_owned()),
        PgType::Jsonb => Value::Jsonb(text.to_owned()),
        PgType::Bytea => Value::Bytea(bytea(text).ok_or_else(invalid)?),
        PgType::Enum { .. } => Value::Enum(text.to_owned()),
        PgType::Array { element, delimiter } => {
            return array::parse_array(ty, element, *delimiter, text)
        }
        PgType::Domain { base, .. } => return parse_text(base, text),
        PgType::Other { name } => Value::Unknown {
            type_name: name.clone(),
            text: text.to_owned(),
        },
    };
    Ok(value)
}

/// An integer as PostgreSQL prints it, `-?[0-9]+`, within the target's range.
fn integer<T: std::str::FromStr>(text: &str) -> Option<T> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A float as PostgreSQL prints it: `-?[0-9]+(\.[0-9]+)?(e[+-][0-9]+)?`, `NaN`, `Infinity`,
/// `-Infinity`. The shortest round-trip digits of extra_float_digits=3 parse back exactly.
fn float<T: std::str::FromStr + FloatLike>(text: &str) -> Option<T> {
    match text {
        "NaN" => return Some(T::NAN),
        "Infinity" => return Some(T::INFINITY),
        "-Infinity" => return Some(T::NEG_INFINITY),
        _ => {}
    }
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once('e') {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (unsigned, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => all_digits(int) && all_digits(frac),
        None => all_digits(mantissa),
    };
    let exponent_ok =
        exponent.is_none_or(|exponent| exponent.strip_prefix(['+', '-']).is_some_and(all_digits));
    if !mantissa_ok || !exponent_ok {
        return None;
    }
    // A finite text that overflows to infinity is not PostgreSQL output.
    text.parse()
        .ok()
        .filter(|value: &T| value.is_finite_value())
}

/// The float types [`float`] parses.
trait FloatLike: Sized {
    /// Not a number.
    const NAN: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// Negative infinity.
    const NEG_INFINITY: Self;
    /// Whether the value is neither infinite nor NaN.
    fn is_finite_value(&self) -> bool;
}

impl FloatLike for f32 {
    const NAN: Self = f32::NAN;
    const INFINITY: Self = f32::INFINITY;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn is_finite_value(&self) -> bool {
        self.is_finite()
    }
}

impl FloatLike for f64 {
    const NAN: Self = f64::NAN;
    const INFINITY: Self = f64::INFINITY;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn is_finite_value(&self) -> bool {
        self.is_finite()
    }
}

/// Whether `text` is a uuid as PostgreSQL prints it: lowercase `8-4-4-4-12` hex.
fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, b)| match index {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
        })
}

/// A `bytea` in hex format (`\x0a1b`), or in the older escape format (`a\000\\`) which a
/// session without bytea_output=hex prints; the two cannot be confused, as escape format
/// writes a backslash as `\\`.
fn bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex_digits) = text.strip_prefix("\\x") {
        return hex::decode(hex_digits).ok();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&b) = bytes.get(index) {
        if b != b'\\' {
            out.push(b);
            index += 1;
        } else if bytes.get(index + 1) == Some(&b'\\') {
            out.push(b'\\');
            index += 2;
        } else {
            let &[high, middle, low] = bytes.get(index + 1..index + 4)? else {
                return None;
            };
            let octal = |digit: u8, max: u8| (b'0'..=max).contains(&digit).then(|| digit - b'0');
            out.push(octal(high, b'3')? * 64 + octal(middle, b'7')? * 8 + octal(low, b'7')?);
            index += 4;
        }
    }
    Some(out)
}

/// A float as JSON: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` as strings.
fn float_json(value: f64, json: impl FnOnce() -> serde_json::Value) -> serde_json::Value {
    if value.is_nan() {
        serde_json::Value::String("NaN".to_owned())
    } else if value == f64::INFINITY {
        serde_json::Value::String("Infinity".to_owned())
    } else if value == f64::NEG_INFINITY {
        serde_json::Value::String("-Infinity".to_owned())
    } else {
        json()
    }
}

impl Value {
    /// The value as JSON, or `None` for [`Value::Unavailable`], which has no value to show:
    /// callers decide what an unavailable column means (leave it out of the payload, or
    /// dead-letter the event), it is never rendered as `null`.
    ///
    /// Integers and finite floats are numbers; numerics are numbers with PostgreSQL's exact
    /// digits; NaN and infinities are strings; temporal values are ISO 8601 strings with
    /// astronomical, signed years; intervals are ISO 8601 durations as IntervalStyle
    /// `iso_8601` prints them; json and jsonb are strings holding their exact text; bytea is
    /// standard padded base64; arrays nest following their dimensions.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value as Json;
        let json = match self {
            Value::Unavailable => return None,
            Value::Null => Json::Null,
            Value::Bool(value) => Json::Bool(*value),
            Value::Int2(value) => Json::from(*value),
            Value::Int4(value) => Json::from(*value),
            Value::Int8(value) => Json::from(*value),
            Value::Oid(value) => Json::from(*value),
            // From<f32> formats the shortest f32 digits (1.1, not 1.100000023841858).
            Value::Float4(value) => float_json(f64::from(*value), || Json::from(*value)),
            Value::Float8(value) => float_json(*value, || Json::from(*value)),
            Value::Numeric(value) => value.to_json(),
            Value::Text(text)
            | Value::Uuid(text)
            | Value::Json(text)
            | Value::Jsonb(text)
            | Value::Enum(text)
            | Value::Unknown { text, .. } => Json::String(text.clone()),
            Value::Date(date) => Json::String(date.to_iso()),
            Value::Time(micros) => Json::String(datetime::format_time_of_day(*micros)),
            Value::TimeTz {
                micros,
                offset_seconds,
            } => Json::String(format!(
                "{}{}",
                datetime::format_time_of_day(*micros),
                datetime::format_offset(*offset_seconds)
            )),
            Value::Timestamp(timestamp) => Json::String(timestamp.to_iso(false)),
            Value::TimestampTz(timestamp) => Json::String(timestamp.to_iso(true)),
            Value::Interval(interval) => Json::String(interval.to_iso()),
            Value::Bytea(bytes) => {
                Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            Value::Array(array) => array.to_json(),
        };
        Some(json)
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) | (Value::Unavailable, Value::Unavailable) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int2(a), Value::Int2(b)) => a == b,
            (Value::Int4(a), Value::Int4(b)) => a == b,
            (Value::Int8(a), Value::Int8(b)) => a == b,
            (Value::Oid(a), Value::Oid(b)) => a == b,
            // Same bits is same text (0 and -0 differ); every NaN prints as `NaN`.
            (Value::Float4(a), Value::Float4(b)) => {
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
            }
            (Value::Float8(a), Value::Float8(b)) => {
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
            }
            (Value::Numeric(a), Value::Numeric(b)) => a == b,
            (Value::Text(a), Value::Text(b))
            | (Value::Uuid(a), Value::Uuid(b))
            | (Value::Json(a), Value::Json(b))
            | (Value::Jsonb(a), Value::Jsonb(b))
            | (Value::Enum(a), Value::Enum(b)) => a == b,
            (Value::Date(a), Value::Date(b)) => a == b,
            (Value::Time(a), Value::Time(b)) => a == b,
            (
                Value::TimeTz {
                    micros: a,
                    offset_seconds: a_offset,
                },
                Value::TimeTz {
                    micros: b,
                    offset_seconds: b_offset,
                },
            ) => a == b && a_offset == b_offset,
            (Value::Timestamp(a), Value::Timestamp(b))
            | (Value::TimestampTz(a), Value::TimestampTz(b)) => a == b,
            (Value::Interval(a), Value::Interval(b)) => a == b,
            (Value::Bytea(a), Value::Bytea(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (
                Value::Unknown {
                    type_name: a_type,
                    text: a,
                },
                Value::Unknown {
                    type_name: b_type,
                    text: b,
                },
            ) => a_type == b_type && a == b,
            _ => false,
        }
    }
}

/// Reflexive thanks to NaN == NaN above.
impl Eq for Value {}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(oid: u32, typmod: i32) -> PgType {
        PgType::builtin(oid, typmod).unwrap_or_else(|| panic!("oid {oid} is built in"))
    }

    fn parse(ty: &PgType, text: &str) -> Value {
        parse_text(ty, text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
    }

    /// The JSON text of a value, as the codec would write it.
    fn json(ty: &PgType, text: &str) -> String {
        let value = parse(ty, text).to_json().expect("a value, not unavailable");
        serde_json::to_string(&value).expect("serializes")
    }

    #[test]
    fn serde_json_keeps_numeric_text_exactly() {
        // arbitrary_precision: the number keeps its text, trailing zeros included.
        for text in ["1.50", "200.000", "-0.0000000001", "0.00", "-0", "0"] {
            let number: serde_json::Number = text.parse().expect("json number");
            assert_eq!(number.to_string(), text);
            let json = serde_json::Value::Number(number);
            assert_eq!(serde_json::to_string(&json).expect("serializes"), text);
        }
    }

    #[test]
    fn case_01_numeric_nan_and_infinity_are_strings() {
        let free = builtin(1700, -1);
        let bound = builtin(1700, 655_366);
        assert_eq!(bound.name(), "numeric(10,2)");
        assert_eq!(json(&free, "NaN"), "\"NaN\"");
        assert_eq!(json(&bound, "NaN"), "\"NaN\"");
        assert_eq!(json(&free, "Infinity"), "\"Infinity\"");
        assert_eq!(json(&free, "-Infinity"), "\"-Infinity\"");
        assert_eq!(json(&bound, "1.50"), "1.50");
        assert_eq!(json(&bound, "0.00"), "0.00");
        assert_eq!(json(&free, "42"), "42");
        // The NaN -> NaN update has no change.
        assert_eq!(parse(&free, "NaN"), parse(&free, "NaN"));
        assert_ne!(parse(&free, "Infinity"), parse(&free, "42"));
        assert_ne!(parse(&free, "Infinity"), parse(&free, "-Infinity"));
        assert_ne!(parse(&free, "NaN"), Value::Null);
    }

    #[test]
    fn case_01_float_special_values() {
        let float4 = builtin(700, -1);
        let float8 = builtin(701, -1);
        assert_eq!(json(&float8, "NaN"), "\"NaN\"");
        assert_eq!(json(&float8, "Infinity"), "\"Infinity\"");
        assert_eq!(json(&float4, "-Infinity"), "\"-Infinity\"");
        assert_eq!(parse(&float8, "NaN"), parse(&float8, "NaN"));
        assert_eq!(parse(&float4, "NaN"), parse(&float4, "NaN"));
        assert_ne!(parse(&float8, "0"), parse(&float8, "-0"));
    }

    #[test]
    fn floats_as_postgres_prints_them() {
        // Printed by PostgreSQL 15 with extra_float_digits=3.
        let float4 = builtin(700, -1);
        let float8 = builtin(701, -1);
        assert_eq!(parse(&float4, "1.1"), Value::Float4(1.1));
        assert_eq!(json(&float4, "1.1"), "1.1");
        assert_eq!(json(&float4, "3.4e+38"), "3.4e+38");
        assert_eq!(json(&float4, "1e-05"), "0.00001");
        assert_eq!(parse(&float8, "0.1"), Value::Float8(0.1));
        assert_eq!(json(&float8, "0.1"), "0.1");
        assert_eq!(parse(&float8, "1e+100"), Value::Float8(1e100));
        assert_eq!(parse(&float8, "1.5e-07"), Value::Float8(1.5e-7));
        assert_eq!(
            parse(&float8, "1.2345678901234568e+17"),
            Value::Float8(1.2345678901234568e17)
        );
        assert_eq!(json(&float8, "-0"), "-0.0");
        for text in [
            "", "nan", "inf", "infinity", "+1", "1e5", "1.", ".5", "1e+", "0x10", " 1",
        ] {
            assert!(parse_text(&float8, text).is_err(), "{text:?}");
        }
        assert!(parse_text(&float4, "1e+39").is_err(), "overflows float4");
    }

    #[test]
    fn case_02_numeric_digits_and_scale_exact() {
        let free = builtin(1700, -1);
        let wide = builtin(1700, 3_932_174);
        let hundreds = builtin(1700, 329_730);
        let tiny = builtin(1700, 196_617);
        for (ty, text) in [
            (&free, "200"),
            (&free, "200.000"),
            (&free, "1.50"),
            (&free, "0.000000000000000000000000000001"),
            (
                &free,
                "123456789012345678901234567890.123456789012345678901234567890",
            ),
            (
                &wide,
                "12345678901234567890123456789012345678901234567890.0123456789",
            ),
            (&wide, "1.0000000000"),
            (&wide, "-0.0000000001"),
            (&hundreds, "1200"),
            (&hundreds, "9876500"),
            (&hundreds, "-200"),
            (&tiny, "0.00123"),
            (&tiny, "0.00999"),
            (&tiny, "-0.00001"),
        ] {
            assert_eq!(json(ty, text), text, "{}", ty.name());
        }
        // The 200 -> 200.000 update is a change: the diff compares emitted text.
        assert_ne!(parse(&free, "200"), parse(&free, "200.000"));
        for text in ["1e3", "+1", "1,5", "", "NAN", "0x1"] {
            assert!(parse_text(&free, text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn case_04_temporal_json() {
        let date = builtin(1082, -1);
        let timestamp = builtin(1114, -1);
        let timestamptz = builtin(1184, -1);
        for (ty, text, expected) in [
            (&date, "infinity", "\"infinity\""),
            (&timestamp, "-infinity", "\"-infinity\""),
            (&timestamptz, "infinity", "\"infinity\""),
            (&timestamptz, "-infinity", "\"-infinity\""),
            (&date, "0044-03-15 BC", "\"-0043-03-15\""),
            (
                &timestamp,
                "0001-12-31 23:59:59.999999 BC",
                "\"0000-12-31T23:59:59.999999\"",
            ),
            (
                &timestamptz,
                "0001-01-01 00:00:00+00 BC",
                "\"0000-01-01T00:00:00Z\"",
            ),
            (&date, "10000-01-01", "\"+10000-01-01\""),
            (
                &timestamp,
                "294276-12-31 23:59:59.999999",
                "\"+294276-12-31T23:59:59.999999\"",
            ),
            (
                &timestamptz,
                "12345-06-07 08:09:10.5+00",
                "\"+12345-06-07T08:09:10.500000Z\"",
            ),
            (&date, "4713-01-01 BC", "\"-4712-01-01\""),
            (&timestamp, "1970-01-01 00:00:00", "\"1970-01-01T00:00:00\""),
            (
                &timestamptz,
                "2000-01-01 00:00:00+00",
                "\"2000-01-01T00:00:00Z\"",
            ),
            (&date, "5874897-12-31", "\"+5874897-12-31\""),
        ] {
            assert_eq!(json(ty, text), expected, "{text}");
        }
        assert_ne!(
            parse(&timestamptz, "infinity"),
            parse(&timestamptz, "-infinity")
        );
    }

    #[test]
    fn case_04_avro_numbers() {
        let date = builtin(1082, -1);
        for (text, days) in [
            ("0044-03-15 BC", -735_160),
            ("10000-01-01", 2_932_897),
            ("4713-01-01 BC", -2_440_550),
            ("5874897-12-31", 2_145_042_905),
        ] {
            let Value::Date(parsed) = parse(&date, text) else {
                panic!("{text} is a date");
            };
            assert_eq!(parsed.unix_days(), Some(days), "{text}");
        }
        let Value::Timestamp(bc) = parse(&builtin(1114, -1), "0001-12-31 23:59:59.999999 BC")
        else {
            panic!("a timestamp");
        };
        assert_eq!(bc.unix_micros(), Some(-62_135_596_800_000_001));
        let Value::TimestampTz(future) = parse(&builtin(1184, -1), "12345-06-07 08:09:10.5+00")
        else {
            panic!("a timestamptz");
        };
        assert_eq!(future.unix_micros(), Some(327_416_976_550_500_000));
        let Value::Timestamp(far) = parse(&builtin(1114, -1), "294276-12-31 23:59:59.999999")
        else {
            panic!("a timestamp");
        };
        assert_eq!(far.unix_micros(), None, "more than i64 micros since 1970");
    }

    #[test]
    fn case_06_intervals() {
        let interval = builtin(1186, -1);
        for (iso, postgres, (months, days, micros)) in [
            (
                "P1Y2M3DT4H5M6.789S",
                "1 year 2 mons 3 days 04:05:06.789",
                (14, 3, 14_706_789_000),
            ),
            (
                "P-1Y2DT-3H",
                "-1 years +2 days -03:00:00",
                (-12, 2, -10_800_000_000),
            ),
            ("P1M", "1 mon", (1, 0, 0)),
            ("PT49444H26M40S", "49444:26:40", (0, 0, 178_000_000_000_000)),
            ("PT-0.000001S", "-00:00:00.000001", (0, 0, -1)),
        ] {
            let expected = Value::Interval(Interval {
                months,
                days,
                micros,
            });
            assert_eq!(parse(&interval, iso), expected, "{iso}");
            assert_eq!(parse(&interval, postgres), expected, "{postgres}");
            assert_eq!(json(&interval, postgres), format!("\"{iso}\""));
        }
        assert_eq!(json(&interval, "00:00:00"), "\"PT0S\"");
        assert_ne!(parse(&interval, "P1D"), parse(&interval, "PT24H"));
        assert_ne!(parse(&interval, "P1M"), parse(&interval, "P30D"));
    }

    #[test]
    fn case_07_json_text_is_kept_verbatim() {
        let json_type = builtin(114, -1);
        let jsonb = builtin(3802, -1);
        let text = builtin(25, -1);
        for (ty, input, expected) in [
            (
                &json_type,
                r#"{"k":"caf\u00e9","k":"dup",  "z":1.10}"#,
                r#""{\"k\":\"caf\\u00e9\",\"k\":\"dup\",  \"z\":1.10}""#,
            ),
            (
                &json_type,
                r#"{"nul":"a\u0000b"}"#,
                r#""{\"nul\":\"a\\u0000b\"}""#,
            ),
            (&json_type, r#""\u2028""#, r#""\"\\u2028\"""#),
            (
                &jsonb,
                r#"{"k": "dup", "z": 1.10}"#,
                r#""{\"k\": \"dup\", \"z\": 1.10}""#,
            ),
            (
                &jsonb,
                r#"{"emoji": "😀", "quote": "say \"hi\""}"#,
                r#""{\"emoji\": \"😀\", \"quote\": \"say \\\"hi\\\"\"}""#,
            ),
            (&jsonb, "null", r#""null""#),
            (&jsonb, "{}", r#""{}""#),
            (
                &text,
                "tab\there\nnew line \u{1} ctrl",
                r#""tab\there\nnew line \u0001 ctrl""#,
            ),
            (
                &text,
                r#"back\slash "quoted""#,
                r#""back\\slash \"quoted\"""#,
            ),
            (&text, "", r#""""#),
        ] {
            assert_eq!(json(ty, input), expected, "{input}");
        }
        assert_eq!(
            parse(&jsonb, "null").to_json(),
            Some(serde_json::Value::String("null".to_owned()))
        );
    }

    #[test]
    fn case_09_arrays_through_parse_text() {
        let ints = builtin(1007, -1);
        let words = builtin(1009, -1);
        let boxes = builtin(1020, -1);
        assert_eq!(json(&ints, "{{1,2},{3,NULL}}"), "[[1,2],[3,null]]");
        assert_eq!(
            json(&words, r#"{"NULL",NULL,"null"}"#),
            r#"["NULL",null,"null"]"#
        );
        assert_eq!(json(&ints, "{}"), "[]");
        assert_eq!(
            json(
                &words,
                r#"{"","a,b","say \"hi\"","back\\slash"," lead","{x}"}"#
            ),
            r#"["","a,b","say \"hi\"","back\\slash"," lead","{x}"]"#
        );
        assert_eq!(json(&ints, "[0:1]={7,8}"), "[7,8]");
        let Value::Array(bounded) = parse(&ints, "[0:1]={7,8}") else {
            panic!("an array");
        };
        assert_eq!(bounded.lower_bounds, vec![0]);
        assert_eq!(
            json(&boxes, "{(1,1),(0,0);(3,3),(2,2)}"),
            r#"["(1,1),(0,0)","(3,3),(2,2)"]"#
        );
        assert_eq!(json(&ints, "{{{1}},{{2}}}"), "[[[1]],[[2]]]");
        assert_eq!(json(&boxes, "{}"), "[]");
        assert!(parse_text(&ints, "{{1,2},{3}}").is_err(), "ragged");
    }

    #[test]
    fn case_10_enums_and_domains() {
        let mood = PgType::Enum {
            name: "case10.Mood".to_owned(),
            labels: Vec::new(),
        };
        let moods = PgType::Array {
            element: Box::new(mood.clone()),
            delimiter: b',',
        };
        let price = PgType::Domain {
            name: "case10.price".to_owned(),
            base: Box::new(PgType::numeric(524_294)),
        };
        let short_code = PgType::Domain {
            name: "case10.short_code".to_owned(),
            base: Box::new(builtin(1043, 8)),
        };
        assert_eq!(json(&mood, "happy"), r#""happy""#);
        assert_eq!(json(&mood, "ecstatic"), r#""ecstatic""#);
        assert_eq!(json(&moods, "{sad,happy}"), r#"["sad","happy"]"#);
        assert_eq!(json(&moods, "{ecstatic,ok}"), r#"["ecstatic","ok"]"#);
        assert_eq!(json(&price, "12.50"), "12.50");
        assert_eq!(json(&price, "0.00"), "0.00");
        assert_eq!(json(&short_code, "AB"), r#""AB""#);
        assert_eq!(json(&short_code, "ZZZZ"), r#""ZZZZ""#);
        assert_eq!(
            parse(&price, "12.50"),
            parse(&builtin(1700, 524_294), "12.50")
        );
        assert!(parse_text(&price, "abc").is_err());
        assert_ne!(parse(&mood, "happy"), parse(&mood, "sad"));
        assert_eq!(price.name(), "case10.price");
        assert_eq!(moods.name(), "case10.Mood[]");
    }

    #[test]
    fn scalars_as_postgres_prints_them() {
        assert_eq!(parse(&builtin(16, -1), "t"), Value::Bool(true));
        assert_eq!(parse(&builtin(16, -1), "f"), Value::Bool(false));
        assert_eq!(parse(&builtin(21, -1), "-32768"), Value::Int2(i16::MIN));
        assert_eq!(parse(&builtin(23, -1), "2147483647"), Value::Int4(i32::MAX));
        assert_eq!(
            parse(&builtin(20, -1), "-9223372036854775808"),
            Value::Int8(i64::MIN)
        );
        assert_eq!(parse(&builtin(26, -1), "4294967295"), Value::Oid(u32::MAX));
        assert_eq!(
            json(&builtin(20, -1), "9223372036854775807"),
            "9223372036854775807"
        );
        assert_eq!(json(&builtin(1042, 14), "ab        "), r#""ab        ""#);
        assert_eq!(json(&builtin(18, -1), "x"), r#""x""#);
        assert_eq!(json(&builtin(19, -1), "pg_class"), r#""pg_class""#);
        assert_eq!(
            json(&builtin(2950, -1), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#
        );
        assert_eq!(json(&builtin(1083, -1), "24:00:00"), r#""24:00:00""#);
        assert_eq!(
            json(&builtin(1083, -1), "01:02:03.5"),
            r#""01:02:03.500000""#
        );
        assert_eq!(
            json(&builtin(1266, -1), "01:02:03+05:30"),
            r#""01:02:03+05:30""#
        );
        assert_eq!(
            json(&builtin(1266, -1), "01:02:03.25-08"),
            r#""01:02:03.250000-08:00""#
        );
        assert_eq!(
            json(&builtin(1266, -1), "00:00:00+15:59:59"),
            r#""00:00:00+15:59:59""#
        );
        assert_eq!(
            json(&builtin(790, -1), "$1,234.50"),
            r#""$1,234.50""#,
            "money stays text"
        );
    }

    #[test]
    fn bytea_hex_and_escape_formats() {
        let bytea_type = builtin(17, -1);
        assert_eq!(parse(&bytea_type, "\\x"), Value::Bytea(Vec::new()));
        assert_eq!(
            parse(&bytea_type, "\\x00ff10"),
            Value::Bytea(vec![0, 255, 16])
        );
        assert_eq!(json(&bytea_type, "\\x00ff10"), r#""AP8Q""#);
        assert_eq!(json(&bytea_type, "\\x68656c6c6f"), r#""aGVsbG8=""#);
        assert_eq!(
            parse(&bytea_type, "a\\000\\\\\\377"),
            Value::Bytea(vec![b'a', 0, b'\\', 255])
        );
        for text in ["\\x0", "\\xzz", "\\", "\\400", "\\12", "a\\b"] {
            assert!(parse_text(&bytea_type, text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn rejects_what_postgres_never_prints() {
        for (oid, text) in [
            (16, "true"),
            (16, "T"),
            (16, ""),
            (21, "32768"),
            (21, "+1"),
            (23, " 1"),
            (23, "1.0"),
            (23, ""),
            (20, "9223372036854775808"),
            (26, "-1"),
            (26, "+1"),
            (2950, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
            (2950, "a0eebc999c0b4ef8bb6d6bb9bd380a11"),
            (2950, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
            (1083, "25:00:00"),
            (1083, "12:00"),
            (1266, "12:00:00"),
            (1082, "2020-01-01 00:00:00"),
            (1186, "1 fortnight"),
        ] {
            assert!(
                parse_text(&builtin(oid, -1), text).is_err(),
                "oid {oid}: {text:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_type_and_truncate_the_text() {
        let error = parse_text(&builtin(23, -1), "abc").expect_err("not an int4");
        assert_eq!(error.to_string(), r#"invalid int4 value "abc""#);
        assert_eq!(error.disposition(), Disposition::DeadLetter);
        let long = "9".repeat(100);
        let error = parse_text(&builtin(1700, 655_366), &format!("{long}x")).expect_err("bad");
        assert_eq!(
            error.to_string(),
            format!("invalid numeric(10,2) value \"{}…\"", "9".repeat(64))
        );
        let error = parse_text(
            &PgType::Domain {
                name: "case10.price".to_owned(),
                base: Box::new(PgType::numeric(524_294)),
            },
            "x",
        )
        .expect_err("bad");
        assert_eq!(error.to_string(), r#"invalid numeric(8,2) value "x""#);
    }

    #[test]
    fn unavailable_and_null_are_distinct() {
        assert_eq!(Value::Unavailable.to_json(), None);
        assert_eq!(Value::Null.to_json(), Some(serde_json::Value::Null));
        assert_ne!(Value::Unavailable, Value::Null);
        assert_eq!(Value::Unavailable, Value::Unavailable);
        assert!(Value::Null.is_null());
    }

    #[test]
    fn other_types_keep_their_text_and_name() {
        let other = PgType::Other {
            name: "public.ltree".to_owned(),
        };
        assert_eq!(
            parse(&other, "a.b.c"),
            Value::Unknown {
                type_name: "public.ltree".to_owned(),
                text: "a.b.c".to_owned()
            }
        );
        assert_eq!(json(&other, "a.b.c"), r#""a.b.c""#);
    }

    proptest::proptest! {
        /// Parsers never panic, whatever the text (invariant 6: bad input is an error).
        #[test]
        fn parsing_never_panics(
            text in "[-+0-9:. PTYMDHSBCaefinty{}\"\\\\,;=NUL\\[\\]xé\t]{0,40}",
        ) {
            for oid in [16, 21, 23, 20, 26, 700, 701, 1700, 1082, 1083, 1266, 1114, 1184, 1186,
                        2950, 17, 1007, 1009, 1020, 1187, 1231, 1115]
            {
                let _ = parse_text(&builtin(oid, -1), &text);
            }
        }

        /// What `to_iso` prints for an interval parses back to the same three fields.
        #[test]
        fn interval_iso_round_trips(months: i32, days: i32, micros: i64) {
            let interval = Interval { months, days, micros };
            proptest::prop_assert_eq!(Interval::parse(&interval.to_iso()), Some(interval));
        }

        /// Day counts over PostgreSQL's date range survive the civil calendar round trip.
        #[test]
        fn civil_days_round_trip(days in -2_440_588_i64..=2_145_042_905) {
            let (year, month, day) = civil_from_days(days);
            proptest::prop_assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
