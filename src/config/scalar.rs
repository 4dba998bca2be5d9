//! Deserializers for the scalar fields whose values often come from `${VAR}` interpolation
//! and so arrive as strings (`port: ${PGPORT:-5432}`): they accept the value written as a
//! YAML scalar or as a string, and their errors say `expected …, got …` with the range.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};

use secrecy::SecretString;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// An integer field type with its accepted range, as told to the operator.
pub(super) trait IntField: Sized {
    /// What the field expects, e.g. `a positive integer`.
    const EXPECTED: &'static str;
    /// The value, when in range.
    fn from_i128(value: i128) -> Option<Self>;
}

/// The TCP port of `source.port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Port(pub(super) u16);

impl IntField for Port {
    const EXPECTED: &'static str = "an integer 1..65535";
    fn from_i128(value: i128) -> Option<Self> {
        u16::try_from(value).ok().filter(|p| *p > 0).map(Port)
    }
}

macro_rules! int_field {
    ($ty:ty, $expected:literal, |$v:ident| $conv:expr) => {
        impl IntField for $ty {
            const EXPECTED: &'static str = $expected;
            fn from_i128($v: i128) -> Option<Self> {
                $conv
            }
        }
    };
}

int_field!(u32, "a non-negative integer", |v| u32::try_from(v).ok());
int_field!(u64, "a non-negative integer", |v| u64::try_from(v).ok());
int_field!(NonZeroU16, "an integer 1..32767", |v| u16::try_from(v)
    .ok()
    .filter(|v| *v <= 32767)
    .and_then(NonZeroU16::new));
int_field!(NonZeroU32, "a positive integer", |v| u32::try_from(v)
    .ok()
    .and_then(NonZeroU32::new));
int_field!(NonZeroU64, "a positive integer", |v| u64::try_from(v)
    .ok()
    .and_then(NonZeroU64::new));
int_field!(NonZeroUsize, "a positive integer", |v| usize::try_from(v)
    .ok()
    .and_then(NonZeroUsize::new));

/// How a found value is shown after `got`: strings quoted, numbers and booleans bare.
fn got_str(s: &str) -> String {
    format!("{s:?}")
}

/// A visitor producing a `T` from an integer scalar or a string of digits.
struct IntVisitor<T>(PhantomData<T>);

impl<T: IntField> IntVisitor<T> {
    fn check<E: de::Error>(value: i128, shown: &dyn fmt::Display) -> Result<T, E> {
        T::from_i128(value)
            .ok_or_else(|| E::custom(format!("expected {}, got {shown}", T::EXPECTED)))
    }
}

impl<'de, T: IntField> Visitor<'de> for IntVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::check(i128::from(v), &v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::check(i128::from(v), &v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // Debug keeps the fraction: `5432.0`, not `5432`.
        Err(E::custom(format!("expected {}, got {v:?}", T::EXPECTED)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Err(E::custom(format!("expected {}, got {v}", T::EXPECTED)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        match v.trim().parse::<i128>() {
            Ok(n) => Self::check(n, &got_str(v)),
            Err(_) => Err(E::custom(format!(
                "expected {}, got {}",
                T::EXPECTED,
                got_str(v)
            ))),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Err(E::custom(format!("expected {}, got null", T::EXPECTED)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        Err(de::Error::custom(format!(
            "expected {}, got a list",
            T::EXPECTED
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        Err(de::Error::custom(format!(
            "expected {}, got a mapping",
            T::EXPECTED
        )))
    }
}

/// An integer field: `#[serde(deserialize_with = "scalar::int")]`.
pub(super) fn int<'de, D: Deserializer<'de>, T: IntField>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(IntVisitor(PhantomData))
}

/// An optional integer field; null means absent.
pub(super) fn opt_int<'de, D: Deserializer<'de>, T: IntField>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Lenient<T>>::deserialize(d).map(|v| v.map(|l| l.0))
}

/// The TCP port of `source.port`.
pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    int::<D, Port>(d).map(|p| p.0)
}

/// An optional TCP port; null means absent.
pub(super) fn opt_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    opt_int::<D, Port>(d).map(|p| p.map(|p| p.0))
}

/// Helper for `Option<T>` fields: lets serde handle null, then `int` the rest.
struct Lenient<T>(T);

impl<'de, T: IntField> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int(d).map(Lenient)
    }
}

/// A boolean that may also be written as the string `true` or `false`.
pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct FlagVisitor;
    impl Visitor<'_> for FlagVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::custom(format!(
                    "expected true or false, got {}",
                    got_str(v)
                ))),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            Err(E::custom(format!("expected true or false, got {v}")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            Err(E::custom(format!("expected true or false, got {v}")))
        }
    }
    d.deserialize_any(FlagVisitor)
}

/// An optional secret; a number is taken as its decimal text, and an empty string (what
/// `${PGPASSWORD:-}` gives when the variable is unset) means no secret.
pub(super) fn opt_secret<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    struct SecretVisitor;
    impl<'de> Visitor<'de> for SecretVisitor {
        type Value = Option<SecretString>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok((!v.is_empty()).then(|| SecretString::from(v)))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok((!v.is_empty()).then(|| SecretString::from(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v.to_string())))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v.to_string())))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            // The value is deliberately not echoed: it is a secret.
            Err(de::Error::custom("expected a string, got a list"))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Err(de::Error::custom("expected a string, got a mapping"))
        }
    }
    d.deserialize_any(SecretVisitor)
}

/// An optional socket address such as `127.0.0.1:9464` or `[::1]:9464`.
pub(super) fn opt_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    text.trim().parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "expected a socket address like 127.0.0.1:9464, got {}",
            got_str(&text)
        ))
    })
}

/// A map of strings whose values may be written as numbers or booleans
/// (`"linger.ms": 5`), kept as their text.
pub(super) fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    BTreeMap::<String, ScalarText>::deserialize(d)
        .map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// A string, or a number or boolean as its text.
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = ScalarText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}
