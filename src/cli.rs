//! The command line: `setup`, `check`, `tail` (and `run` once the Kafka side lands).
//!
//! Every flag can also come from an `ENTITY_CDC_…` environment variable, so that a container
//! is configured the same way as a shell.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Change data capture from PostgreSQL to Kafka, as the metamodel's entity events.
#[derive(Debug, Parser)]
#[command(name = "entity-cdc", version, about, long_about = None)]
pub struct Cli {
    /// The connector configuration.
    #[arg(long, global = true, env = "ENTITY_CDC_CONFIG", default_value = "connector.yaml")]
    pub config: PathBuf,

    /// Log format: `text` for terminals, `json` for log collectors.
    #[arg(long, global = true, env = "ENTITY_CDC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the SQL that makes the database ready (publication, replica identity, slot);
    /// with --apply, run it. A second run changes nothing and says so.
    Setup {
        /// Run the statements instead of only printing them.
        #[arg(long, env = "ENTITY_CDC_APPLY")]
        apply: bool,
    },
    /// Check that the database is ready for the connector; exits non-zero when it is not,
    /// saying what to run.
    Check,
    /// Stream the decoded changes as JSON lines on stdout.
    Tail {
        /// Use a temporary slot that disappears when the command exits, instead of the
        /// configured one (nothing is left behind, nothing is confirmed on the real slot).
        #[arg(long, env = "ENTITY_CDC_TEMPORARY")]
        temporary: bool,
    },
}
