//! Reading connector.yaml: YAML tree, interpolation, typed deserialization with paths, then
//! validation; serde's messages are reworded to `path: expected …, got …`.

use std::path::Path;

use serde_norway::Value;

use super::error::{child_path, ConfigError, Problem};
use super::interpolate::interpolate_tree;
use super::Config;

/// The priority names, as serde lists them in an unknown-field message.
const PRIORITY_FIELDS: &str = "CRITICAL, HIGH, NORMAL, BULK";

impl Config {
    /// Reads, interpolates (from the process environment), parses and validates the
    /// file at `path`. Errors are prefixed with `path` as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_yaml_str(&text, &origin),
            Err(source) => Err(ConfigError::Read { origin, source }),
        }
    }

    /// Like [`Config::load`] for text already read; `origin` names it in errors.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::from_yaml_str_with_env(text, origin, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_yaml_str`], with `env` looking up the variables of `${VAR}`
    /// (tests and tools that must not depend on the process environment).
    pub fn from_yaml_str_with_env(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        };
        let mut tree: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        interpolate_tree(&mut tree, "", env, &mut problems);
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let config = match serde_path_to_error::deserialize::<_, Config>(tree) {
            Ok(config) => config,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                return Err(invalid(vec![reword(path, &e.into_inner().to_string())]));
            }
        };
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(invalid(problems))
        }
    }
}

/// Turns serde's wording into ours, moving a field name from the message into the path:
/// `unknown field `hots`, expected one of `host`, …` at `source` becomes
/// `source.hots: unknown field, expected one of host, …`.
fn reword(path: String, message: &str) -> Problem {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, expected) = split_quoted(rest);
        let expected = unquote_list(expected.trim_start_matches(", "));
        // serde_path_to_error has usually pushed the key already; add it when not.
        let path = if path.rsplit('.').next() == Some(field.as_str()) {
            path
        } else {
            child_path(&path, &field)
        };
        let what = if expected == format!("expected one of {PRIORITY_FIELDS}") {
            "unknown priority"
        } else {
            "unknown field"
        };
        return Problem::new(path, format!("{what}, {expected}"));
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (variant, expected) = split_quoted(rest);
        let expected = unquote_list(expected.trim_start_matches(", "));
        return Problem::new(path, format!("{expected}, got {variant:?}"));
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let (field, _) = split_quoted(rest);
        return Problem::new(child_path(&path, &field), "missing required field");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                return Problem::new(
                    path,
                    format!(
                        "expected {}, got {}",
                        expected_text(expected),
                        found_text(found)
                    ),
                );
            }
        }
    }
    Problem::new(path, message)
}

/// Splits `` `name`, rest`` into `name` and `, rest`.
fn split_quoted(text: &str) -> (String, &str) {
    let Some(inner) = text.strip_prefix('`') else {
        return (text.to_owned(), "");
    };
    match inner.split_once('`') {
        Some((name, rest)) => (name.to_owned(), rest),
        None => (inner.to_owned(), ""),
    }
}

/// `` expected one of `a`, `b` `` → `expected one of a, b`; `` expected `a` or `b` `` →
/// `expected one of a, b`; `there are no fields` stays.
fn unquote_list(text: &str) -> String {
    let text = text.replace('`', "");
    match text.strip_prefix("expected ") {
        Some(rest) if rest.contains(" or ") && !rest.starts_with("one of") => {
            format!("expected one of {}", rest.replace(" or ", ", "))
        }
        _ => text,
    }
}

/// serde's names of what it expected, in the operator's words.
fn expected_text(expected: &str) -> String {
    if expected.starts_with("struct ") || expected == "a map" {
        "a mapping".to_owned()
    } else if expected == "a sequence" {
        "a list".to_owned()
    } else {
        expected.replace('`', "")
    }
}

/// serde's `Unexpected` rendering, in the operator's words: `string "abc"` → `"abc"`,
/// `integer `5`` → `5`.
fn found_text(found: &str) -> String {
    if let Some(s) = found.strip_prefix("string ") {
        return s.to_owned();
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = found.strip_prefix(prefix) {
            return v.replace('`', "");
        }
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a mapping".to_owned(),
        "unit value" => "null".to_owned(),
        other => other.to_owned(),
    }
}
