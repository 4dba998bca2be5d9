//! `numeric` values: PostgreSQL's decimal digits exactly as printed, never through a float.

use std::fmt;

/// A `numeric` value: its exact decimal text, or one of the special values.
///
/// The digits are kept as PostgreSQL printed them, so the scale survives (`1.50`, `200.000`)
/// and the precision is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Numeric {
    /// A finite value, as `-?[0-9]+(\.[0-9]+)?`.
    Finite(FiniteNumeric),
    /// `NaN`.
    NaN,
    /// `Infinity`.
    Infinity,
    /// `-Infinity`.
    NegInfinity,
}

/// The text of a finite `numeric`, validated as `-?[0-9]+(\.[0-9]+)?`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FiniteNumeric(String);

impl FiniteNumeric {
    /// Validates the digits syntax PostgreSQL prints; `None` for anything else (exponents,
    /// a leading `+`, a bare `.5`, whitespace).
    pub fn parse(text: &str) -> Option<Self> {
        let unsigned = text.strip_prefix('-').unwrap_or(text);
        let (int, frac) = match unsigned.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (unsigned, None),
        };
        let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || !frac.is_none_or(all_digits) {
            return None;
        }
        Some(FiniteNumeric(text.to_owned()))
    }

    /// The exact text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the value is below zero (PostgreSQL prints no `-0`).
    pub fn is_negative(&self) -> bool {
        self.0.starts_with('-')
    }

    /// The number of digits after the decimal point, as printed.
    pub fn scale(&self) -> u32 {
        // A numeric has at most 16383 fraction digits, so the length fits.
        self.0
            .split_once('.')
            .map_or(0, |(_, frac)| u32::try_from(frac.len()).unwrap_or(u32::MAX))
    }

    /// The unscaled integer at `scale` as big-endian two's complement bytes (the encoding of
    /// Avro's `decimal`), or `None` when the value has more fraction digits than `scale` (it
    /// would have to be rounded).
    pub fn unscaled_be_bytes(&self, scale: u32) -> Option<Vec<u8>> {
        let own_scale = self.scale();
        if own_scale > scale {
            return None;
        }
        let unsigned = self.0.strip_prefix('-').unwrap_or(&self.0);
        let digits = unsigned
            .bytes()
            .filter(u8::is_ascii_digit)
            .chain(std::iter::repeat_n(b'0', (scale - own_scale) as usize));
        // Magnitude as little-endian base-256 limbs, built by multiply-by-ten-and-add.
        let mut magnitude: Vec<u8> = Vec::new();
        for digit in digits {
            let mut carry = u32::from(digit - b'0');
            for limb in magnitude.iter_mut() {
                let product = u32::from(*limb) * 10 + carry;
                *limb = (product & 0xFF) as u8;
                carry = product >> 8;
            }
            while carry > 0 {
                magnitude.push((carry & 0xFF) as u8);
                carry >>= 8;
            }
        }
        // One spare byte keeps the sign bit clear before negation.
        magnitude.push(0);
        if self.is_negative() {
            let mut carry = 1u16;
            for limb in magnitude.iter_mut() {
                let sum = u16::from(!*limb) + carry;
                *limb = (sum & 0xFF) as u8;
                carry = sum >> 8;
            }
        }
        // Drop redundant sign-extension bytes, most significant first.
        while magnitude.len() > 1 {
            let top = magnitude[magnitude.len() - 1];
            let next = magnitude[magnitude.len() - 2];
            let redundant = (top == 0 && next & 0x80 == 0) || (top == 0xFF && next & 0x80 != 0);
            if !redundant {
                break;
            }
            magnitude.pop();
        }
        magnitude.reverse();
        Some(magnitude)
    }
}

impl Numeric {
    /// Parses PostgreSQL's `numeric` output: digits, or `NaN`, `Infinity`, `-Infinity`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "NaN" => Some(Numeric::NaN),
            "Infinity" => Some(Numeric::Infinity),
            "-Infinity" => Some(Numeric::NegInfinity),
            _ => FiniteNumeric::parse(text).map(Numeric::Finite),
        }
    }

    /// The text PostgreSQL printed.
    pub fn as_str(&self) -> &str {
        match self {
            Numeric::Finite(finite) => finite.as_str(),
            Numeric::NaN => "NaN",
            Numeric::Infinity => "Infinity",
            Numeric::NegInfinity => "-Infinity",
        }
    }

    /// As JSON: a number with PostgreSQL's exact digits, or the special value as a string
    /// (JSON numbers cannot hold NaN or infinities).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Numeric::Finite(finite) => match finite.as_str().parse::<serde_json::Number>() {
                Ok(number) => serde_json::Value::Number(number),
                // Unreachable for validated digits; a string still keeps them exact.
                Err(_) => serde_json::Value::String(finite.as_str().to_owned()),
            },
            special => serde_json::Value::String(special.as_str().to_owned()),
        }
    }
}

impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_text(text: &str) -> String {
        let numeric = Numeric::parse(text).unwrap_or_else(|| panic!("{text} should parse"));
        serde_json::to_string(&numeric.to_json()).expect("serializes")
    }

    #[test]
    fn case_01_special_values_are_strings() {
        assert_eq!(json_text("NaN"), "\"NaN\"");
        assert_eq!(json_text("Infinity"), "\"Infinity\"");
        assert_eq!(json_text("-Infinity"), "\"-Infinity\"");
        assert_eq!(json_text("0.00"), "0.00");
        assert_eq!(json_text("42"), "42");
        assert_eq!(json_text("1.50"), "1.50");
    }

    #[test]
    fn case_02_digits_survive_exactly() {
        for text in [
            "200",
            "200.000",
            "1.50",
            "0.000000000000000000000000000001",
            "123456789012345678901234567890.123456789012345678901234567890",
            "12345678901234567890123456789012345678901234567890.0123456789",
            "-0.0000000001",
            "1200",
            "9876500",
            "-200",
            "0.00123",
            "0.00999",
            "-0.00001",
        ] {
            assert_eq!(json_text(text), text);
        }
        assert_ne!(Numeric::parse("200"), Numeric::parse("200.000"));
        assert_eq!(Numeric::parse("NaN"), Numeric::parse("NaN"));
    }

    #[test]
    fn rejects_what_postgres_never_prints() {
        for text in [
            "", "-", "+1", "1e5", "1E5", ".5", "5.", "1.2.3", " 1", "1 ", "nan", "infinity", "inf",
            "--1", "1_000", "٣",
        ] {
            assert_eq!(Numeric::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn scale_and_unscaled_bytes() {
        let finite = |text: &str| FiniteNumeric::parse(text).expect("valid");
        assert_eq!(finite("12.50").scale(), 2);
        assert_eq!(finite("1200").scale(), 0);
        assert_eq!(finite("12.50").unscaled_be_bytes(2), Some(vec![0x04, 0xE2]));
        assert_eq!(finite("0").unscaled_be_bytes(0), Some(vec![0x00]));
        assert_eq!(finite("127").unscaled_be_bytes(0), Some(vec![0x7F]));
        assert_eq!(finite("128").unscaled_be_bytes(0), Some(vec![0x00, 0x80]));
        assert_eq!(finite("-1").unscaled_be_bytes(0), Some(vec![0xFF]));
        assert_eq!(finite("-128").unscaled_be_bytes(0), Some(vec![0x80]));
        assert_eq!(finite("-129").unscaled_be_bytes(0), Some(vec![0xFF, 0x7F]));
        assert_eq!(finite("-0.00001").unscaled_be_bytes(5), Some(vec![0xFF]));
        assert_eq!(finite("1.5").unscaled_be_bytes(3), Some(vec![0x05, 0xDC]));
        assert_eq!(finite("1.55").unscaled_be_bytes(1), None);
        // 2^64 = 18446744073709551616.
        assert_eq!(
            finite("18446744073709551616").unscaled_be_bytes(0),
            Some(vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0])
        );
    }
}
