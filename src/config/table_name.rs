//! Schema-qualified table names as an operator writes them in connector.yaml, with SQL's
//! rules: quoted parts keep their case, dots and spaces; unquoted parts are lowercased.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// The schema used when a table name is not qualified, as PostgreSQL's default search path.
const DEFAULT_SCHEMA: &str = "public";

/// PostgreSQL's reserved key words and the ones that cannot name a schema
/// (`pg_get_keywords()` with catcode `R` or `T`): an unquoted part spelled like one of them
/// is a syntax error in SQL, so `Display` quotes them.
const RESERVED: &[&str] = &[
    "authorization",
    "binary",
    "collation",
    "concurrently",
    "cross",
    "current_schema",
    "freeze",
    "full",
    "ilike",
    "inner",
    "is",
    "isnull",
    "join",
    "left",
    "like",
    "natural",
    "notnull",
    "outer",
    "overlaps",
    "right",
    "similar",
    "tablesample",
    "verbose",
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// A table's schema and name, exactly as stored in `pg_namespace.nspname` and
/// `pg_class.relname` (and as pgoutput's Relation message carries them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema (namespace) name, case preserved.
    pub schema: String,
    /// Table name, case preserved.
    pub name: String,
}

/// Why a qualified table name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableNameError {
    /// Nothing but whitespace.
    #[error("expected a table name like schema.table, got an empty string")]
    Empty,
    /// A `"` without its closing `"`.
    #[error("unterminated quoted identifier in {0:?}")]
    Unterminated(String),
    /// `a..b`, `.a`, `a.` or `""`.
    #[error("empty identifier in {0:?}")]
    EmptyPart(String),
    /// More than `schema.table`.
    #[error("expected schema.table or table, got {parts} parts in {text:?}")]
    TooManyParts {
        /// The text as written.
        text: String,
        /// How many dot-separated parts it has.
        parts: usize,
    },
    /// A character that may not appear in an unquoted identifier.
    #[error(
        "unexpected character {found:?} in {text:?} (quote identifiers that contain \
         spaces, dots or other special characters)"
    )]
    Unexpected {
        /// The text as written.
        text: String,
        /// The offending character.
        found: char,
    },
}

impl TableName {
    /// A table name from its exact (already unquoted) schema and name.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses `[schema.]table` with SQL's identifier rules.
    pub fn parse(text: &str) -> Result<Self, TableNameError> {
        if text.trim().is_empty() {
            return Err(TableNameError::Empty);
        }
        let mut parts = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut part = String::new();
            if chars.next_if_eq(&'"').is_some() {
                loop {
                    match chars.next() {
                        None => return Err(TableNameError::Unterminated(text.to_owned())),
                        Some('"') if chars.next_if_eq(&'"').is_some() => part.push('"'),
                        Some('"') => break,
                        Some(c) => part.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| is_unquoted_char(*c)) {
                    // SQL folds unquoted identifiers to lower case (ASCII only, like
                    // PostgreSQL's downcase_identifier for UTF-8 databases).
                    part.push(c.to_ascii_lowercase());
                }
                if part.starts_with(|c: char| c.is_ascii_digit() || c == '$') {
                    let found = part.chars().next().unwrap_or('$');
                    return Err(unexpected(text, found));
                }
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if part.is_empty() {
                return match chars.peek() {
                    None | Some('.') => Err(TableNameError::EmptyPart(text.to_owned())),
                    Some(c) => Err(unexpected(text, *c)),
                };
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') => {}
                Some(c) => return Err(unexpected(text, c)),
            }
        }
        let mut parts = parts.into_iter();
        match (parts.next(), parts.next(), parts.len()) {
            (Some(name), None, _) => Ok(Self::new(DEFAULT_SCHEMA, name)),
            (Some(schema), Some(name), 0) => Ok(Self::new(schema, name)),
            (_, _, rest) => Err(TableNameError::TooManyParts {
                text: text.to_owned(),
                parts: rest + 2,
            }),
        }
    }
}

/// Whether `c` may appear in an unquoted identifier (letters, digits, `_`, `$`, and any
/// non-ASCII character, as in PostgreSQL's scanner).
fn is_unquoted_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

fn unexpected(text: &str, found: char) -> TableNameError {
    TableNameError::Unexpected {
        text: text.to_owned(),
        found,
    }
}

/// Writes `ident` as SQL would need it: bare when it reads back unchanged, else quoted
/// with embedded quotes doubled (PostgreSQL's `quote_ident`).
fn write_ident(f: &mut fmt::Formatter<'_>, ident: &str) -> fmt::Result {
    let bare = ident.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && ident
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !RESERVED.contains(&ident);
    if bare {
        f.write_str(ident)
    } else {
        write!(f, "\"{}\"", ident.replace('"', "\"\""))
    }
}

impl fmt::Display for TableName {
    /// `schema.name`, each part quoted only when needed, so the output parses back to
    /// the same name and can be pasted into SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_ident(f, &self.schema)?;
        f.write_str(".")?;
        write_ident(f, &self.name)
    }
}

impl FromStr for TableName {
    type Err = TableNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> TableName {
        TableName::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn err(text: &str) -> String {
        match TableName::parse(text) {
            Ok(t) => panic!("{text:?} should not parse, got {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn qualified_and_unqualified_names() {
        assert_eq!(ok("public.orders"), TableName::new("public", "orders"));
        assert_eq!(ok("Orders"), TableName::new("public", "orders"));
        assert_eq!(ok(" Sales . Orders "), TableName::new("sales", "orders"));
        assert_eq!(
            ok("\"case27.sales\".orders"),
            TableName::new("case27.sales", "orders")
        );
        assert_eq!(
            ok("case27.\"sales.orders\""),
            TableName::new("case27", "sales.orders")
        );
        assert_eq!(
            ok("case27.\"Order Lines\""),
            TableName::new("case27", "Order Lines")
        );
        assert_eq!(
            ok("\"say \"\"hi\"\"\""),
            TableName::new("public", "say \"hi\"")
        );
        assert_eq!(ok("s.t$1"), TableName::new("s", "t$1"));
    }

    #[test]
    fn bad_names_are_rejected_with_a_reason() {
        assert_eq!(
            err("a.b.c"),
            "expected schema.table or table, got 3 parts in \"a.b.c\""
        );
        assert_eq!(
            err("\"unterminated"),
            "unterminated quoted identifier in \"\\\"unterminated\""
        );
        assert_eq!(
            err(""),
            "expected a table name like schema.table, got an empty string"
        );
        assert_eq!(err("  "), err(""));
        assert_eq!(err("a..b"), "empty identifier in \"a..b\"");
        assert_eq!(err("a."), "empty identifier in \"a.\"");
        assert_eq!(err(".a"), "empty identifier in \".a\"");
        assert_eq!(err("\"\".a"), "empty identifier in \"\\\"\\\".a\"");
        assert_eq!(
            err("order lines"),
            "unexpected character 'l' in \"order lines\" (quote identifiers that contain \
             spaces, dots or other special characters)"
        );
        assert!(err("a-b").starts_with("unexpected character '-'"));
        assert!(err("1abc").starts_with("unexpected character '1'"));
        assert!(err("\"a\"b").starts_with("unexpected character 'b'"));
    }

    #[test]
    fn display_quotes_only_when_needed_and_round_trips() {
        for (text, shown) in [
            ("public.orders", "public.orders"),
            ("Orders", "public.orders"),
            ("\"case27.sales\".orders", "\"case27.sales\".orders"),
            ("case27.\"Order Lines\"", "case27.\"Order Lines\""),
            ("\"say \"\"hi\"\"\"", "public.\"say \"\"hi\"\"\""),
            ("public.\"order\"", "public.\"order\""),
            ("\"1st\".x", "\"1st\".x"),
            ("\"left\".\"select\"", "\"left\".\"select\""),
        ] {
            let table = ok(text);
            assert_eq!(table.to_string(), shown, "display of {text:?}");
            assert_eq!(ok(shown), table, "round trip of {text:?}");
        }
    }
}
