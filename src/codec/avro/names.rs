//! Valid Avro names for any identifier PostgreSQL allows.
//!
//! Avro names must match `[A-Za-z_][A-Za-z0-9_]*`, while a PostgreSQL column may be called
//! `unit price €`, `say "hi"` or `1st` (CASE-27). The mapping is deterministic, so the same
//! table always yields the same schema: ASCII letters, digits and `_` are kept, any other
//! ASCII character becomes `_`, any other character becomes `_u` and its code point in
//! upper-case hex (at least four digits), and a name that starts with a digit (or is empty)
//! gets a leading `_`. Two columns that map to the same name are an error, never a silent
//! merge; the original name travels in the schema as the field property `pg.name`.

use std::collections::HashMap;

/// Two identifiers of one record that map to the same Avro name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("columns {first:?} and {second:?} both map to the Avro name {avro:?}; rename one of them")]
pub struct NameCollision {
    /// The first column, as PostgreSQL names it.
    pub first: String,
    /// The second column, as PostgreSQL names it.
    pub second: String,
    /// The Avro name both map to.
    pub avro: String,
}

/// The Avro name for `identifier` (see the module documentation).
pub fn avro_name(identifier: &str) -> String {
    let mut name = String::with_capacity(identifier.len());
    for c in identifier.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
        } else if c.is_ascii() {
            name.push('_');
        } else {
            name.push_str(&format!("_u{:04X}", u32::from(c)));
        }
    }
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// The Avro names of a record's fields, in order, or the first collision.
pub fn field_names<'a>(
    identifiers: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, NameCollision> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut names = Vec::new();
    for identifier in identifiers {
        let name = avro_name(identifier);
        if let Some(first) = seen.insert(name.clone(), identifier) {
            return Err(NameCollision {
                first: first.to_owned(),
                second: identifier.to_owned(),
                avro: name,
            });
        }
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept() {
        assert_eq!(avro_name("tenant_id"), "tenant_id");
        assert_eq!(avro_name("ID"), "ID");
        assert_eq!(avro_name("_x9"), "_x9");
    }

    #[test]
    fn case_27_names() {
        assert_eq!(avro_name("unit price €"), "unit_price__u20AC");
        assert_eq!(avro_name("say \"hi\""), "say__hi_");
        assert_eq!(avro_name("naïve-col"), "na_u00EFve_col");
        assert_eq!(avro_name("1st"), "_1st");
        assert_eq!(avro_name("select"), "select");
    }

    #[test]
    fn unicode_beyond_the_basic_plane_and_empty() {
        assert_eq!(avro_name("😀"), "_u1F600");
        assert_eq!(avro_name("日付"), "_u65E5_u4ED8");
        assert_eq!(avro_name(""), "_");
        assert_eq!(avro_name("9"), "_9");
    }

    #[test]
    fn case_only_differences_stay_apart() {
        assert_eq!(
            field_names(["ID", "id"]),
            Ok(vec!["ID".to_owned(), "id".to_owned()])
        );
    }

    #[test]
    fn collisions_are_errors_naming_both_columns() {
        let error = field_names(["a b", "a-b"]).err();
        assert_eq!(
            error,
            Some(NameCollision {
                first: "a b".to_owned(),
                second: "a-b".to_owned(),
                avro: "a_b".to_owned(),
            })
        );
        assert_eq!(
            error.map(|e| e.to_string()).unwrap_or_default(),
            r#"columns "a b" and "a-b" both map to the Avro name "a_b"; rename one of them"#
        );
        assert!(field_names(["x", "_x"]).is_ok());
        assert!(field_names(["1a", "_1a"]).is_err());
    }
}
