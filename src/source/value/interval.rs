//! `interval` values: months, days and microseconds kept apart, as PostgreSQL stores them.
//!
//! `1 day` is not `24 hours` and `1 mon` is not `30 days`: they behave differently in date
//! arithmetic even though PostgreSQL's `=` says they are equal.

use super::datetime::fraction_micros;

/// Microseconds in an hour.
const HOUR_MICROS: i64 = 3_600_000_000;
/// Microseconds in a minute.
const MINUTE_MICROS: i64 = 60_000_000;
/// Microseconds in a second.
const SECOND_MICROS: i64 = 1_000_000;

/// An `interval`: PostgreSQL's three independent fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Interval {
    /// Months (a year is 12 of them).
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Microseconds.
    pub micros: i64,
}

impl Interval {
    /// Parses the output of IntervalStyle `iso_8601` (`P1Y2M3DT4H5M6.789S`), which the
    /// replication session pins, or of the default `postgres` style
    /// (`1 year 2 mons 3 days 04:05:06.789`), which other sessions may print.
    pub fn parse(text: &str) -> Option<Self> {
        if text.starts_with('P') {
            parse_iso(text)
        } else {
            parse_postgres(text)
        }
    }

    /// ISO 8601 exactly as PostgreSQL's IntervalStyle `iso_8601` prints it: a sign on each
    /// negative component, `PT0S` for zero.
    pub fn to_iso(&self) -> String {
        let years = self.months / 12;
        let months = self.months % 12;
        let hours = self.micros / HOUR_MICROS;
        let minutes = self.micros % HOUR_MICROS / MINUTE_MICROS;
        let seconds = self.micros % MINUTE_MICROS / SECOND_MICROS;
        let fraction = self.micros % SECOND_MICROS;
        if self.months == 0 && self.days == 0 && self.micros == 0 {
            return "PT0S".to_owned();
        }
        let mut out = String::from("P");
        let part = |value: i64, unit: char, out: &mut String| {
            if value != 0 {
                out.push_str(&format!("{value}{unit}"));
            }
        };
        part(i64::from(years), 'Y', &mut out);
        part(i64::from(months), 'M', &mut out);
        part(i64::from(self.days), 'D', &mut out);
        if self.micros != 0 {
            out.push('T');
        }
        part(hours, 'H', &mut out);
        part(minutes, 'M', &mut out);
        if seconds != 0 || fraction != 0 {
            if seconds < 0 || fraction < 0 {
                out.push('-');
            }
            out.push_str(&seconds.unsigned_abs().to_string());
            if fraction != 0 {
                let digits = format!("{:06}", fraction.unsigned_abs());
                out.push('.');
                out.push_str(digits.trim_end_matches('0'));
            }
            out.push('S');
        }
        out
    }
}

/// Accumulates an interval's fields with overflow checks.
#[derive(Default)]
struct Fields {
    months: i64,
    days: i64,
    micros: i64,
}

impl Fields {
    /// The interval, if months and days fit in i32.
    fn into_interval(self) -> Option<Interval> {
        Some(Interval {
            months: i32::try_from(self.months).ok()?,
            days: i32::try_from(self.days).ok()?,
            micros: self.micros,
        })
    }
}

/// A signed number as PostgreSQL prints it in an interval: `-?[0-9]+`.
fn signed_integer(text: &str, allow_plus: bool) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' if allow_plus => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude: i64 = digits.parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Seconds with an optional fraction of 1 to 6 digits, `-?[0-9]+(\.[0-9]{1,6})?`, as micros;
/// the sign applies to the fraction too.
fn signed_seconds(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, fraction_micros(fraction)?),
        None => (unsigned, 0),
    };
    let whole = signed_integer(whole, false)?;
    if whole < 0 {
        return None;
    }
    // Built with the sign from the start so that i64::MIN micros is reachable.
    let sign = if negative { -1 } else { 1 };
    (sign * whole)
        .checked_mul(SECOND_MICROS)?
        .checked_add(sign * fraction)
}

/// Parses `P[nY][nM][nD][T[nH][nM][n[.f]S]]` with signed integer components, in that order.
fn parse_iso(text: &str) -> Option<Interval> {
    let body = text.strip_prefix('P')?;
    let (date_part, time_part) = match body.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (body, None),
    };
    if date_part.is_empty() && time_part.is_none_or(str::is_empty) {
        return None;
    }
    let mut fields = Fields::default();
    let mut rest = date_part;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let unit_at = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let value = signed_integer(&rest[..unit_at], false)?;
        let unit = rest[unit_at..].chars().next()?;
        let order = ['Y', 'M', 'D'].iter().position(|u| *u == unit)?;
        if order < next_unit {
            return None;
        }
        next_unit = order + 1;
        match unit {
            'Y' => fields.months = fields.months.checked_add(value.checked_mul(12)?)?,
            'M' => fields.months = fields.months.checked_add(value)?,
            _ => fields.days = value,
        }
        rest = &rest[unit_at + 1..];
    }
    let mut rest = time_part.unwrap_or("");
    if time_part == Some("") {
        return None;
    }
    let mut next_unit = 0;
    while !rest.is_empty() {
        let unit_at = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let number = &rest[..unit_at];
        let unit = rest[unit_at..].chars().next()?;
        let order = ['H', 'M', 'S'].iter().position(|u| *u == unit)?;
        if order < next_unit {
            return None;
        }
        next_unit = order + 1;
        let micros = match unit {
            'H' => signed_integer(number, false)?.checked_mul(HOUR_MICROS)?,
            'M' => signed_integer(number, false)?.checked_mul(MINUTE_MICROS)?,
            _ => signed_seconds(number)?,
        };
        fields.micros = fields.micros.checked_add(micros)?;
        rest = &rest[unit_at + 1..];
    }
    fields.into_interval()
}

/// Parses the `postgres` style: `[+-]N year(s)`, `mon(s)`, `day(s)` in that order, then an
/// optional `[+-]H+:MM:SS[.f]` applying its sign to all three time fields.
fn parse_postgres(text: &str) -> Option<Interval> {
    let mut fields = Fields::default();
    let mut words = text.split(' ').peekable();
    let mut next_unit = 0;
    let mut any = false;
    while let Some(word) = words.next() {
        if word.contains(':') {
            // The time part is last.
            if words.peek().is_some() {
                return None;
            }
            fields.micros = postgres_time(word)?;
            any = true;
            break;
        }
        let value = signed_integer(word, true)?;
        let unit = words.next()?;
        let order = match unit {
            "year" | "years" => 0,
            "mon" | "mons" => 1,
            "day" | "days" => 2,
            _ => return None,
        };
        if order < next_unit {
            return None;
        }
        next_unit = order + 1;
        match order {
            0 => fields.months = fields.months.checked_add(value.checked_mul(12)?)?,
            1 => fields.months = fields.months.checked_add(value)?,
            _ => fields.days = value,
        }
        any = true;
    }
    if !any {
        return None;
    }
    fields.into_interval()
}

/// `[+-]H+:MM:SS[.f]` (hours at least two digits) as signed microseconds.
fn postgres_time(word: &str) -> Option<i64> {
    let (negative, unsigned) = match word.as_bytes().first()? {
        b'-' => (true, &word[1..]),
        b'+' => (false, &word[1..]),
        _ => (false, word),
    };
    let mut parts = unsigned.split(':');
    let (hours, minutes, seconds) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || hours.len() < 2 || minutes.len() != 2 {
        return None;
    }
    let hours = signed_integer(hours, false)?;
    let minutes = signed_integer(minutes, false)?;
    if hours < 0
        || !(0..60).contains(&minutes)
        || seconds
            .split('.')
            .next()
            .is_none_or(|whole| whole.len() != 2)
    {
        return None;
    }
    let seconds = signed_seconds(seconds)?;
    if !(0..60 * SECOND_MICROS).contains(&seconds) {
        return None;
    }
    let sign = if negative { -1 } else { 1 };
    (sign * hours)
        .checked_mul(HOUR_MICROS)?
        .checked_add(sign * minutes * MINUTE_MICROS)?
        .checked_add(sign * seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(months: i32, days: i32, micros: i64) -> Interval {
        Interval {
            months,
            days,
            micros,
        }
    }

    #[test]
    fn case_06_iso_8601_style() {
        for (text, expected) in [
            ("P1Y2M3DT4H5M6.789S", interval(14, 3, 14_706_789_000)),
            ("P-1Y2DT-3H", interval(-12, 2, -10_800_000_000)),
            ("P1M", interval(1, 0, 0)),
            ("PT49444H26M40S", interval(0, 0, 178_000_000_000_000)),
            ("PT-0.000001S", interval(0, 0, -1)),
            ("P1D", interval(0, 1, 0)),
            ("PT24H", interval(0, 0, 86_400_000_000)),
            ("P30D", interval(0, 30, 0)),
        ] {
            assert_eq!(Interval::parse(text), Some(expected), "{text}");
            assert_eq!(expected.to_iso(), text, "{expected:?}");
        }
    }

    #[test]
    fn case_06_postgres_style() {
        for (text, expected) in [
            (
                "1 year 2 mons 3 days 04:05:06.789",
                interval(14, 3, 14_706_789_000),
            ),
            (
                "-1 years +2 days -03:00:00",
                interval(-12, 2, -10_800_000_000),
            ),
            ("1 mon", interval(1, 0, 0)),
            ("49444:26:40", interval(0, 0, 178_000_000_000_000)),
            ("-00:00:00.000001", interval(0, 0, -1)),
            ("1 day", interval(0, 1, 0)),
            ("24:00:00", interval(0, 0, 86_400_000_000)),
            ("30 days", interval(0, 30, 0)),
        ] {
            assert_eq!(Interval::parse(text), Some(expected), "{text}");
        }
        assert_ne!(Interval::parse("1 day"), Interval::parse("24:00:00"));
        assert_ne!(Interval::parse("P1M"), Interval::parse("P30D"));
    }

    #[test]
    fn both_styles_agree_on_what_postgres_prints() {
        // (iso_8601, postgres) pairs printed by PostgreSQL 15 for the same values.
        for (iso, postgres, expected) in [
            ("PT0S", "00:00:00", interval(0, 0, 0)),
            ("P-1D", "-1 days", interval(0, -1, 0)),
            ("PT1.5S", "00:00:01.5", interval(0, 0, 1_500_000)),
            ("P-1M-2D", "-1 mons -2 days", interval(-1, -2, 0)),
            ("P1DT-1S", "1 day -00:00:01", interval(0, 1, -1_000_000)),
            (
                "P-178956970Y-8M",
                "-178956970 years -8 mons",
                interval(i32::MIN, 0, 0),
            ),
            ("P2147483647D", "2147483647 days", interval(0, i32::MAX, 0)),
            (
                "PT2562047788H54.775807S",
                "2562047788:00:54.775807",
                interval(0, 0, i64::MAX),
            ),
            (
                "PT-2562047788H-54.775808S",
                "-2562047788:00:54.775808",
                interval(0, 0, i64::MIN),
            ),
            ("P15D", "15 days", interval(0, 15, 0)),
            ("P-1Y-6M", "-1 years -6 mons", interval(-18, 0, 0)),
            ("P100Y", "100 years", interval(1200, 0, 0)),
            (
                "PT1H0.000001S",
                "01:00:00.000001",
                interval(0, 0, 3_600_000_001),
            ),
            ("PT-30M", "-00:30:00", interval(0, 0, -1_800_000_000)),
            ("P-1Y-2M", "-1 years -2 mons", interval(-14, 0, 0)),
            ("P1Y-1D", "1 year -1 days", interval(12, -1, 0)),
        ] {
            assert_eq!(Interval::parse(iso), Some(expected), "{iso}");
            assert_eq!(Interval::parse(postgres), Some(expected), "{postgres}");
            assert_eq!(expected.to_iso(), iso, "{expected:?}");
        }
    }

    #[test]
    fn rejects_what_postgres_never_prints() {
        for text in [
            "",
            "P",
            "PT",
            "P1",
            "P1X",
            "P1DT",
            "PT1.5H",
            "P1.5Y",
            "PT1.1234567S",
            "P1D1Y",
            "PT1S1M",
            "P1Y1Y",
            "P--1D",
            "P+1D",
            "PT-S",
            "1",
            "1 week",
            "1 days 2 years",
            "01:00",
            "1:00:00",
            "00:60:00",
            "00:00:60",
            "1 day 01:00:00 extra",
            "@ 1 day",
            "1 day ago",
            "P99999999999Y",
            "P2147483648D",
            "PT9999999999999H",
            "3000000000 days",
            "--03:00:00",
            "PT--5S",
            "-0-3:00:00",
        ] {
            assert_eq!(Interval::parse(text), None, "{text:?}");
        }
    }
}
