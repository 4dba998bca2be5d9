//! `date`, `time`, `timetz`, `timestamp` and `timestamptz` in PostgreSQL's ISO output
//! (DateStyle=ISO), over PostgreSQL's whole range: 4714-11-24 BC to 5874897 AD for dates,
//! to 294276 AD for timestamps.
//!
//! chrono cannot represent that range, so the proleptic Gregorian calendar arithmetic is done
//! here, with astronomical years (1 BC is year 0, 44 BC is year -43), as PostgreSQL does.

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const UNIX_TO_PG_DAYS: i64 = 10_957;
/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;
/// Microseconds from 1970-01-01 to 2000-01-01.
const UNIX_TO_PG_MICROS: i64 = UNIX_TO_PG_DAYS * DAY_MICROS;

/// Days since 1970-01-01 of a proleptic Gregorian date with an astronomical year.
///
/// Howard Hinnant's `days_from_civil`, in i64 so that no year PostgreSQL knows overflows.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (astronomical year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    // Both are small and positive by construction.
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether an astronomical year is a leap year (year 0, 1 BC, is one).
fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The number of days in a month of an astronomical year.
fn month_length(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The first day PostgreSQL's `date` and `timestamp` accept: 4714-11-24 BC (Julian day 0).
fn first_day() -> i64 {
    days_from_civil(-4713, 11, 24)
}

/// A `date` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Date {
    /// `-infinity`.
    NegInfinity,
    /// A calendar day.
    Finite(FiniteDate),
    /// `infinity`.
    Infinity,
}

/// A calendar day, stored as PostgreSQL does: days since 2000-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FiniteDate(i32);

impl FiniteDate {
    /// The day at this many days since 2000-01-01, if PostgreSQL's range has it.
    pub fn from_pg_days(days: i32) -> Option<Self> {
        Self::from_unix_days(i64::from(days) + UNIX_TO_PG_DAYS)
    }

    /// The day of a proleptic Gregorian date (astronomical year), if valid and in range.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 || day > month_length(year, month) {
            return None;
        }
        // Beyond these the day count could overflow; PostgreSQL's range is far narrower.
        if !(-5_000_000..=6_000_000).contains(&year) {
            return None;
        }
        Self::from_unix_days(days_from_civil(year, month, day))
    }

    /// The day at this many days since 1970-01-01, if PostgreSQL's range has it.
    fn from_unix_days(unix_days: i64) -> Option<Self> {
        let last = days_from_civil(5_874_897, 12, 31);
        if unix_days < first_day() || unix_days > last {
            return None;
        }
        i32::try_from(unix_days - UNIX_TO_PG_DAYS)
            .ok()
            .map(FiniteDate)
    }

    /// Days since 2000-01-01 (PostgreSQL's representation).
    pub fn pg_days(self) -> i32 {
        self.0
    }

    /// Days since 1970-01-01 (Avro's `date`); PostgreSQL's range always fits in i32.
    pub fn unix_days(self) -> i32 {
        // In range by construction: at most 2145042905.
        (i64::from(self.0) + UNIX_TO_PG_DAYS) as i32
    }

    /// The (astronomical year, month, day).
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(i64::from(self.0) + UNIX_TO_PG_DAYS)
    }

    /// ISO 8601 with astronomical years and a sign outside 0000..=9999: `-0043-03-15`,
    /// `+10000-01-01`.
    pub fn to_iso(self) -> String {
        let (year, month, day) = self.ymd();
        format!("{}-{month:02}-{day:02}", iso_year(year))
    }
}

impl Date {
    /// Parses `YYYY-MM-DD[ BC]`, `infinity` or `-infinity`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "infinity" => return Some(Date::Infinity),
            "-infinity" => return Some(Date::NegInfinity),
            _ => {}
        }
        let (body, bc) = match text.strip_suffix(" BC") {
            Some(body) => (body, true),
            None => (text, false),
        };
        parse_ymd(body, bc).map(Date::Finite)
    }

    /// Days since 1970-01-01, or `None` for the infinities.
    pub fn unix_days(&self) -> Option<i32> {
        match self {
            Date::Finite(date) => Some(date.unix_days()),
            Date::NegInfinity | Date::Infinity => None,
        }
    }

    /// The JSON text: ISO 8601 (see [`FiniteDate::to_iso`]), `infinity` or `-infinity`.
    pub fn to_iso(&self) -> String {
        match self {
            Date::Finite(date) => date.to_iso(),
            Date::Infinity => "infinity".to_owned(),
            Date::NegInfinity => "-infinity".to_owned(),
        }
    }
}

/// A `timestamp` or `timestamptz` value (the latter normalised to UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timestamp {
    /// `-infinity`.
    NegInfinity,
    /// A point in time.
    Finite(FiniteTimestamp),
    /// `infinity`.
    Infinity,
}

/// A point in time, stored as PostgreSQL does: microseconds since 2000-01-01 00:00:00, which
/// always fits in i64 over PostgreSQL's range (unlike microseconds since 1970).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FiniteTimestamp(i64);

impl FiniteTimestamp {
    /// The timestamp this many microseconds after 2000-01-01, if PostgreSQL's range has it
    /// (4714-11-24 00:00:00 BC to 294276-12-31 23:59:59.999999).
    pub fn from_pg_micros(micros: i64) -> Option<Self> {
        let first = (first_day() - UNIX_TO_PG_DAYS) * DAY_MICROS;
        let end = (days_from_civil(294_277, 1, 1) - UNIX_TO_PG_DAYS) * DAY_MICROS;
        (first..end)
            .contains(&micros)
            .then_some(FiniteTimestamp(micros))
    }

    /// Microseconds since 2000-01-01 (PostgreSQL's representation).
    pub fn pg_micros(self) -> i64 {
        self.0
    }

    /// Microseconds since 1970-01-01 (Avro's `timestamp-micros`), or `None` past
    /// 294247-01-10T04:00:54.775807, where it overflows i64.
    pub fn unix_micros(self) -> Option<i64> {
        self.0.checked_add(UNIX_TO_PG_MICROS)
    }

    /// ISO 8601 without zone: `0000-12-31T23:59:59.999999`, `+294276-12-31T23:59:59.999999`;
    /// the fraction has six digits when non-zero and is omitted when zero.
    pub fn to_iso(self) -> String {
        let mut out = String::with_capacity(ISO_TIMESTAMP_CAPACITY);
        self.push_iso(&mut out);
        out
    }

    /// Appends [`Self::to_iso`]'s text to `out`. Written digit by digit rather than with
    /// `format!`: every event carries its commit time, and many rows have timestamp columns,
    /// so this runs several times per change (it was 6% of `run`'s instructions).
    fn push_iso(self, out: &mut String) {
        let days = self.0.div_euclid(DAY_MICROS);
        let time = self.0.rem_euclid(DAY_MICROS);
        let (year, month, day) = civil_from_days(days + UNIX_TO_PG_DAYS);
        push_iso_year(out, year);
        out.push('-');
        push_digits(out, u64::from(month), 2);
        out.push('-');
        push_digits(out, u64::from(day), 2);
        out.push('T');
        // rem_euclid: 0 <= time < one day.
        let time = time.unsigned_abs();
        let (seconds, fraction) = (time / 1_000_000, time % 1_000_000);
        push_digits(out, seconds / 3600, 2);
        out.push(':');
        push_digits(out, seconds / 60 % 60, 2);
        out.push(':');
        push_digits(out, seconds % 60, 2);
        if fraction != 0 {
            out.push('.');
            push_digits(out, fraction, 6);
        }
    }
}

/// Room for `+294276-12-31T23:59:59.999999Z`, the longest timestamp text.
const ISO_TIMESTAMP_CAPACITY: usize = 32;

/// Appends `value` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, value: u64, width: usize) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut rest = value;
    let mut len = 0;
    loop {
        // `rest % 10` is below 10: the cast keeps it whole.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (rest % 10) as u8;
        digits[len] = b'0' + digit;
        len += 1;
        rest /= 10;
        if rest == 0 || len == digits.len() {
            break;
        }
    }
    for _ in len..width {
        out.push('0');
    }
    for &digit in digits[..len].iter().rev() {
        out.push(char::from(digit));
    }
}

/// Appends the year as [`iso_year`] writes it.
fn push_iso_year(out: &mut String, year: i64) {
    if year > 9999 {
        out.push('+');
        push_digits(out, year.unsigned_abs(), 0);
    } else {
        if year < 0 {
            out.push('-');
        }
        push_digits(out, year.unsigned_abs(), 4);
    }
}

impl Timestamp {
    /// Parses a `timestamp`: `YYYY-MM-DD HH:MM:SS[.ffffff][ BC]`, `infinity`, `-infinity`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_with_zone(text, false)
    }

    /// Parses a `timestamptz`: `YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]][ BC]`, `infinity`,
    /// `-infinity`; the result is in UTC.
    pub fn parse_tz(text: &str) -> Option<Self> {
        Self::parse_with_zone(text, true)
    }

    /// Parses a timestamp, with a UTC offset after the time when `with_zone`.
    fn parse_with_zone(text: &str, with_zone: bool) -> Option<Self> {
        match text {
            "infinity" => return Some(Timestamp::Infinity),
            "-infinity" => return Some(Timestamp::NegInfinity),
            _ => {}
        }
        let (body, bc) = match text.strip_suffix(" BC") {
            Some(body) => (body, true),
            None => (text, false),
        };
        let (date, time) = body.split_once(' ')?;
        let date = parse_ymd(date, bc)?;
        let (time, offset_seconds) = if with_zone {
            let zone_at = time.find(['+', '-'])?;
            (&time[..zone_at], parse_offset(&time[zone_at..])?)
        } else {
            (time, 0)
        };
        let time = parse_time_of_day(time)?;
        if time >= DAY_MICROS {
            return None;
        }
        let local = i64::from(date.pg_days())
            .checked_mul(DAY_MICROS)?
            .checked_add(time)?;
        let utc = local.checked_sub(i64::from(offset_seconds).checked_mul(1_000_000)?)?;
        FiniteTimestamp::from_pg_micros(utc).map(Timestamp::Finite)
    }

    /// Microseconds since 1970-01-01, or `None` for the infinities and when it overflows.
    pub fn unix_micros(&self) -> Option<i64> {
        match self {
            Timestamp::Finite(timestamp) => timestamp.unix_micros(),
            Timestamp::NegInfinity | Timestamp::Infinity => None,
        }
    }

    /// The JSON text; `Z` is appended for `timestamptz`.
    pub fn to_iso(&self, utc: bool) -> String {
        match self {
            Timestamp::Finite(timestamp) if utc => {
                let mut out = String::with_capacity(ISO_TIMESTAMP_CAPACITY);
                timestamp.push_iso(&mut out);
                out.push('Z');
                out
            }
            Timestamp::Finite(timestamp) => timestamp.to_iso(),
            Timestamp::Infinity => "infinity".to_owned(),
            Timestamp::NegInfinity => "-infinity".to_owned(),
        }
    }
}

/// The year of an ISO 8601 date: four digits within 0000..=9999, otherwise signed.
fn iso_year(year: i64) -> String {
    if year > 9999 {
        format!("+{year}")
    } else if year < 0 {
        format!("-{:04}", year.unsigned_abs())
    } else {
        format!("{year:04}")
    }
}

/// Parses `YYYY-MM-DD` (at least four year digits), `bc` meaning the year is BC.
fn parse_ymd(text: &str, bc: bool) -> Option<FiniteDate> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !(4..=7).contains(&year.len()) {
        return None;
    }
    let year = i64::from(digits::<u32>(year)?);
    let month = two_digits(month)?;
    let day = two_digits(day)?;
    // PostgreSQL prints no year 0: 1 BC is `0001 BC`.
    if year == 0 {
        return None;
    }
    let year = if bc { 1 - year } else { year };
    FiniteDate::from_ymd(year, month, day)
}

/// Parses a non-empty run of ASCII digits.
fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses exactly two ASCII digits.
fn two_digits(text: &str) -> Option<u32> {
    if text.len() != 2 {
        return None;
    }
    digits(text)
}

/// Parses `HH:MM:SS[.f{1,6}]` into microseconds since midnight; `24:00:00` is allowed (the
/// `time` type has it), anything past it is not.
pub(crate) fn parse_time_of_day(text: &str) -> Option<i64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let mut parts = whole.split(':');
    let (hour, minute, second) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (hour, minute, second) = (two_digits(hour)?, two_digits(minute)?, two_digits(second)?);
    if hour > 24 || minute > 59 || second > 59 {
        return None;
    }
    let fraction = match fraction {
        Some(fraction) => fraction_micros(fraction)?,
        None => 0,
    };
    let micros = (i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)) * 1_000_000
        + fraction;
    (micros <= DAY_MICROS).then_some(micros)
}

/// The microseconds of a fraction's digits (1 to 6 of them): `5` is 500000.
pub(crate) fn fraction_micros(text: &str) -> Option<i64> {
    if !(1..=6).contains(&text.len()) {
        return None;
    }
    let value: i64 = digits(text)?;
    // len is 1..=6, so the exponent is 0..=5.
    Some(value * 10_i64.pow(6 - text.len() as u32))
}

/// Parses a UTC offset `+HH`, `+HH:MM` or `+HH:MM:SS` (or `-`) into seconds east of UTC.
pub(crate) fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let mut parts = rest.split(':');
    let hour = two_digits(parts.next()?)?;
    let minute = parts.next().map_or(Some(0), two_digits)?;
    let second = parts.next().map_or(Some(0), two_digits)?;
    if parts.next().is_some() || hour > 15 || minute > 59 || second > 59 {
        return None;
    }
    // At most 15:59:59, so the cast is lossless.
    Some(sign * (hour * 3600 + minute * 60 + second) as i32)
}

/// `HH:MM:SS[.ffffff]`: six fraction digits when non-zero, none when zero.
pub(crate) fn format_time_of_day(micros: i64) -> String {
    let seconds = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if fraction == 0 {
        format!("{hour:02}:{minute:02}:{second:02}")
    } else {
        format!("{hour:02}:{minute:02}:{second:02}.{fraction:06}")
    }
}

/// An offset as `+hh:mm`, with `:ss` only when it has seconds.
pub(crate) fn format_offset(offset_seconds: i32) -> String {
    let sign = if offset_seconds < 0 { '-' } else { '+' };
    let total = offset_seconds.unsigned_abs();
    let (hour, minute, second) = (total / 3600, total / 60 % 60, total % 60);
    if second == 0 {
        format!("{sign}{hour:02}:{minute:02}")
    } else {
        format!("{sign}{hour:02}:{minute:02}:{second:02}")
    }
}

/// Parses a `timetz`: `HH:MM:SS[.ffffff]+HH[:MM[:SS]]` into (micros, seconds east of UTC).
pub(crate) fn parse_time_tz(text: &str) -> Option<(i64, i32)> {
    let zone_at = text.find(['+', '-'])?;
    let time = parse_time_of_day(&text[..zone_at])?;
    let offset = parse_offset(&text[zone_at..])?;
    Some((time, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text `FiniteTimestamp::to_iso` wrote with `format!`, before it wrote digits
    /// itself.
    fn formatted_iso(micros: i64) -> String {
        let days = micros.div_euclid(DAY_MICROS);
        let time = micros.rem_euclid(DAY_MICROS);
        let (year, month, day) = civil_from_days(days + UNIX_TO_PG_DAYS);
        format!(
            "{}-{month:02}-{day:02}T{}",
            iso_year(year),
            format_time_of_day(time)
        )
    }

    proptest::proptest! {
        #[test]
        fn digit_writer_matches_the_formatted_text(
            micros in (first_day() - UNIX_TO_PG_DAYS) * DAY_MICROS
                ..(days_from_civil(294_277, 1, 1) - UNIX_TO_PG_DAYS) * DAY_MICROS,
            whole_second in proptest::bool::ANY,
        ) {
            // Half the cases on a whole second, where the fraction is left out.
            let micros = if whole_second { micros - micros.rem_euclid(1_000_000) } else { micros };
            let timestamp = FiniteTimestamp::from_pg_micros(micros)
                .unwrap_or_else(|| panic!("{micros} is in range"));
            let expected = formatted_iso(micros);
            proptest::prop_assert_eq!(timestamp.to_iso(), expected.clone());
            proptest::prop_assert_eq!(
                Timestamp::Finite(timestamp).to_iso(true),
                format!("{expected}Z")
            );
        }
    }

    #[test]
    fn digit_writer_at_the_edges_of_years_and_days() {
        let cases = [
            ("4714-11-24 00:00:00 BC", "-4713-11-24T00:00:00"),
            ("0001-01-01 00:00:00 BC", "0000-01-01T00:00:00"),
            ("0009-02-03 04:05:06.000007", "0009-02-03T04:05:06.000007"),
            ("2000-01-01 00:00:00", "2000-01-01T00:00:00"),
            ("1999-12-31 23:59:59.999999", "1999-12-31T23:59:59.999999"),
            ("9999-12-31 23:59:59.1", "9999-12-31T23:59:59.100000"),
            ("10000-01-01 00:00:00", "+10000-01-01T00:00:00"),
            (
                "294276-12-31 23:59:59.999999",
                "+294276-12-31T23:59:59.999999",
            ),
        ];
        for (text, iso) in cases {
            let Some(Timestamp::Finite(parsed)) = Timestamp::parse(text) else {
                panic!("{text} should parse as a finite timestamp");
            };
            assert_eq!(parsed.to_iso(), iso, "{text}");
            assert_eq!(parsed.to_iso(), formatted_iso(parsed.pg_micros()), "{text}");
        }
    }

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap_or_else(|| panic!("{text} should parse as date"))
    }

    fn timestamp(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap_or_else(|| panic!("{text} should parse as timestamp"))
    }

    fn timestamptz(text: &str) -> Timestamp {
        Timestamp::parse_tz(text).unwrap_or_else(|| panic!("{text} should parse as timestamptz"))
    }

    #[test]
    fn civil_round_trip_over_postgres_range() {
        for days in (-2_500_000_i64..2_146_000_000).step_by(9_973) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn case_04_bc_and_far_future_dates() {
        // Values and day counts as PostgreSQL 15 prints them (`d - '1970-01-01'`).
        for (text, unix_days, iso) in [
            ("0044-03-15 BC", -735_160, "-0043-03-15"),
            ("10000-01-01", 2_932_897, "+10000-01-01"),
            ("4713-01-01 BC", -2_440_550, "-4712-01-01"),
            ("5874897-12-31", 2_145_042_905, "+5874897-12-31"),
            ("0001-01-01", -719_162, "0001-01-01"),
            ("0001-12-31 BC", -719_163, "0000-12-31"),
            ("0999-05-06", -354_525, "0999-05-06"),
            ("2000-02-29", 11_016, "2000-02-29"),
            ("1900-03-01", -25_508, "1900-03-01"),
            ("1970-01-01", 0, "1970-01-01"),
        ] {
            let parsed = date(text);
            assert_eq!(parsed.unix_days(), Some(unix_days), "{text}");
            assert_eq!(parsed.to_iso(), iso, "{text}");
        }
    }

    #[test]
    fn case_04_infinite_dates_and_timestamps() {
        assert_eq!(date("infinity"), Date::Infinity);
        assert_eq!(date("-infinity"), Date::NegInfinity);
        assert_eq!(date("infinity").to_iso(), "infinity");
        assert_eq!(date("-infinity").to_iso(), "-infinity");
        assert_eq!(date("infinity").unix_days(), None);
        assert_eq!(timestamp("-infinity").to_iso(false), "-infinity");
        assert_eq!(timestamptz("infinity").to_iso(true), "infinity");
        assert_eq!(timestamptz("-infinity").to_iso(true), "-infinity");
        assert_eq!(timestamptz("infinity").unix_micros(), None);
    }

    #[test]
    fn case_04_bc_and_far_future_timestamps() {
        let bc = timestamp("0001-12-31 23:59:59.999999 BC");
        assert_eq!(bc.unix_micros(), Some(-62_135_596_800_000_001));
        assert_eq!(bc.to_iso(false), "0000-12-31T23:59:59.999999");

        let far = timestamp("294276-12-31 23:59:59.999999");
        assert_eq!(far.to_iso(false), "+294276-12-31T23:59:59.999999");
        assert_eq!(far.unix_micros(), None, "beyond i64 micros since 1970");
        assert_eq!(
            far,
            Timestamp::Finite(FiniteTimestamp(9_223_371_331_199_999_999))
        );

        let bc_tz = timestamptz("0001-01-01 00:00:00+00 BC");
        assert_eq!(bc_tz.to_iso(true), "0000-01-01T00:00:00Z");
        assert_eq!(bc_tz.unix_micros(), Some(-62_167_219_200_000_000));

        let future_tz = timestamptz("12345-06-07 08:09:10.5+00");
        assert_eq!(future_tz.unix_micros(), Some(327_416_976_550_500_000));
        assert_eq!(future_tz.to_iso(true), "+12345-06-07T08:09:10.500000Z");

        assert_eq!(timestamp("1970-01-01 00:00:00").unix_micros(), Some(0));
        assert_eq!(
            timestamp("1970-01-01 00:00:00").to_iso(false),
            "1970-01-01T00:00:00"
        );
        let epoch_tz = timestamptz("2000-01-01 00:00:00+00");
        assert_eq!(epoch_tz.unix_micros(), Some(946_684_800_000_000));
        assert_eq!(epoch_tz.to_iso(true), "2000-01-01T00:00:00Z");
    }

    #[test]
    fn timestamp_range_edges() {
        let first = timestamp("4714-11-24 00:00:00 BC");
        assert_eq!(first.unix_micros(), Some(-210_866_803_200_000_000));
        assert_eq!(first.to_iso(false), "-4713-11-24T00:00:00");
        assert_eq!(Timestamp::parse("4714-11-23 23:59:59.999999 BC"), None);
        assert_eq!(Timestamp::parse("294277-01-01 00:00:00"), None);
        assert_eq!(Date::parse("4714-11-23 BC"), None);
        assert_eq!(date("4714-11-24 BC").unix_days(), Some(-2_440_588));
        assert_eq!(Date::parse("5874898-01-01"), None);
    }

    #[test]
    fn timestamptz_offsets_convert_to_utc() {
        // PostgreSQL prints `2020-01-01 21:34:05.5+00` for this instant under TimeZone=UTC.
        assert_eq!(
            timestamptz("2020-01-02 03:04:05.5+05:30"),
            timestamptz("2020-01-01 21:34:05.5+00")
        );
        assert_eq!(
            timestamptz("2020-01-01 21:34:05.5+00").unix_micros(),
            Some(1_577_914_445_500_000)
        );
        assert_eq!(
            timestamptz("2019-12-31 23:00:00-01").to_iso(true),
            "2020-01-01T00:00:00Z"
        );
    }

    #[test]
    fn rejects_malformed_dates_and_timestamps() {
        for text in [
            "",
            "2020-1-01",
            "20-01-01",
            "2020-02-30",
            "2019-02-29",
            "2020-13-01",
            "0000-01-01",
            "2020-01-01 AD",
            "Infinity",
            "2020/01/01",
            "2020-01-01 ",
            " 2020-01-01",
            "+2020-01-01",
        ] {
            assert_eq!(Date::parse(text), None, "{text:?}");
        }
        for text in [
            "2020-01-01",
            "2020-01-01 24:00:00",
            "2020-01-01 10:00",
            "2020-01-01T10:00:00",
            "2020-01-01 10:00:00.1234567",
            "2020-01-01 10:00:00.",
            "2020-01-01 10:60:00",
            "2020-01-01 10:00:00+00",
        ] {
            assert_eq!(Timestamp::parse(text), None, "{text:?}");
        }
        for text in [
            "2020-01-01 10:00:00",
            "2020-01-01 10:00:00+16",
            "2020-01-01 10:00:00 UTC",
        ] {
            assert_eq!(Timestamp::parse_tz(text), None, "{text:?}");
        }
    }

    #[test]
    fn time_of_day_and_offsets() {
        assert_eq!(parse_time_of_day("24:00:00"), Some(DAY_MICROS));
        assert_eq!(parse_time_of_day("23:59:59.999999"), Some(DAY_MICROS - 1));
        assert_eq!(parse_time_of_day("01:02:03.5"), Some(3_723_500_000));
        assert_eq!(parse_time_of_day("24:00:00.000001"), None);
        assert_eq!(parse_time_of_day("1:02:03"), None);
        assert_eq!(format_time_of_day(3_723_500_000), "01:02:03.500000");
        assert_eq!(format_time_of_day(DAY_MICROS), "24:00:00");
        assert_eq!(
            parse_time_tz("01:02:03+05:30"),
            Some((3_723_000_000, 19_800))
        );
        assert_eq!(
            parse_time_tz("01:02:03.25-08"),
            Some((3_723_250_000, -28_800))
        );
        assert_eq!(parse_time_tz("00:00:00+15:59:59"), Some((0, 57_599)));
        assert_eq!(parse_time_tz("24:00:00-15:59"), Some((DAY_MICROS, -57_540)));
        assert_eq!(parse_time_tz("12:00:00"), None);
        assert_eq!(format_offset(19_800), "+05:30");
        assert_eq!(format_offset(-28_800), "-08:00");
        assert_eq!(format_offset(57_599), "+15:59:59");
        assert_eq!(format_offset(0), "+00:00");
    }
}
