//! What can be wrong with connector.yaml: each problem names the dotted path of the field
//! (`entities[0].streaming.topicPrefix`) and what was expected.

use std::fmt;

use crate::error::Disposition;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, list entries as `[i]`; empty for the whole document.
    pub path: String,
    /// What was expected and what was found, a lowercase fragment.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why connector.yaml could not be loaded. `Display` prefixes every line with the file's
/// name, one line per problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read: {source}")]
    Read {
        /// The file's name as given.
        origin: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file's name as given.
        origin: String,
        /// The YAML parser's message, with line and column.
        message: String,
    },
    /// The YAML does not describe a valid configuration.
    #[error("{}", render(origin, problems))]
    Invalid {
        /// The file's name as given.
        origin: String,
        /// Every problem found, at least one.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems with paths, empty for read and syntax errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            Self::Read { .. } | Self::Syntax { .. } => &[],
        }
    }

    /// A bad configuration needs an operator: the process stops before it starts.
    pub fn disposition(&self) -> Disposition {
        Disposition::Halt
    }
}

fn render(origin: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{origin}: {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `parent.key`, or `key` at the top level.
pub(super) fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(super) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}
