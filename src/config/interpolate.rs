//! `${VAR}` and `${VAR:-default}` in connector.yaml's string scalars, expanded on the parsed
//! YAML tree (not on the text) so that a missing variable is reported with its config path
//! and a value cannot inject YAML syntax.

use serde_norway::Value;

use super::error::{child_path, index_path, Problem};

/// Expands every string scalar under `value` in place; map keys are left alone. Problems
/// are appended to `problems`, one per bad scalar.
pub(super) fn interpolate_tree(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        Value::String(text) => match expand(text, env) {
            Ok(expanded) => *text = expanded,
            Err(message) => problems.push(Problem::new(path, message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &index_path(path, i), env, problems);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = match key {
                    Value::String(s) => s.clone(),
                    other => scalar_key(other),
                };
                interpolate_tree(item, &child_path(path, &key), env, problems);
            }
        }
        Value::Tagged(tagged) => interpolate_tree(&mut tagged.value, path, env, problems),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A non-string mapping key as it would be written, for the path of an error.
fn scalar_key(key: &Value) -> String {
    match key {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".to_owned(),
        _ => "?".to_owned(),
    }
}

/// Expands one string: `${NAME}` is the variable's value (an error when it is unset),
/// `${NAME:-default}` falls back to `default` when the variable is unset or empty (as in
/// the shell), and `$${` is a literal `${`. Any other `$` is kept as is.
pub(super) fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(close) = after.find('}') else {
                return Err(format!(
                    "unterminated ${{ in {text:?} (write $${{ for a literal ${{)"
                ));
            };
            let inner = &after[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_variable_name(name) {
                return Err(format!(
                    "invalid environment variable name {name:?} in {text:?}, expected \
                     letters, digits and _ not starting with a digit"
                ));
            }
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{{name}:-default}} \
                         to give a default)"
                    ))
                }
            }
            rest = &after[close + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// POSIX shell variable names: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_default_and_escape() {
        assert_eq!(expand("${HOST}", &env).as_deref(), Ok("db.internal"));
        assert_eq!(
            expand("x-${HOST}:5432", &env).as_deref(),
            Ok("x-db.internal:5432")
        );
        assert_eq!(
            expand("${UNSET:-127.0.0.1}", &env).as_deref(),
            Ok("127.0.0.1")
        );
        assert_eq!(
            expand("${HOST:-127.0.0.1}", &env).as_deref(),
            Ok("db.internal")
        );
        assert_eq!(
            expand("${EMPTY:-fallback}", &env).as_deref(),
            Ok("fallback")
        );
        assert_eq!(expand("${EMPTY}", &env).as_deref(), Ok(""));
        assert_eq!(expand("${UNSET:-}", &env).as_deref(), Ok(""));
        assert_eq!(expand("$${HOST}", &env).as_deref(), Ok("${HOST}"));
        assert_eq!(expand("a$b$$c$", &env).as_deref(), Ok("a$b$$c$"));
        assert_eq!(expand("$$${HOST}", &env).as_deref(), Ok("$${HOST}"));
    }

    #[test]
    fn rejects_unset_unterminated_and_bad_names() {
        assert_eq!(
            expand("${UNSET}", &env),
            Err(
                "environment variable UNSET is not set (write ${UNSET:-default} to give a \
                 default)"
                    .to_owned()
            )
        );
        assert_eq!(
            expand("${HOST", &env),
            Err("unterminated ${ in \"${HOST\" (write $${ for a literal ${)".to_owned())
        );
        assert_eq!(
            expand("${1X}", &env),
            Err(
                "invalid environment variable name \"1X\" in \"${1X}\", expected letters, \
                 digits and _ not starting with a digit"
                    .to_owned()
            )
        );
    }
}
