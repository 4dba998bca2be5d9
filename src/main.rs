//! The `entity-cdc` binary: parse the command line, load the configuration, run the command,
//! and map the outcome to an exit code (0 success, 78 configuration error, 1 runtime error,
//! 2 a database that is not ready).

use std::process::ExitCode;

use clap::Parser;
use entity_cdc::cli::{self, Cli};
use entity_cdc::telemetry;

/// mimalloc rather than glibc's malloc: the connector allocates and frees many small
/// objects per event across threads (built on one, freed on another after delivery), where
/// glibc's arenas spent about a quarter of `run`'s CPU (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    telemetry::init_logging(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            let message = with_causes(&e);
            let hint = e.hint();
            match log_format {
                // A log collector reads one JSON object per line, the final error too.
                cli::LogFormat::Json => {
                    tracing::error!(hint = hint.as_deref(), "{message}");
                }
                cli::LogFormat::Text => {
                    eprintln!("error: {message}");
                    if let Some(hint) = hint {
                        eprintln!("hint: {hint}");
                    }
                }
            }
            e.exit_code()
        }
    }
}

/// The error and its causes, `outer: inner: innermost`. Display texts are lowercase fragments
/// without their source (the project's style), so the causes are added here, where the
/// operator reads them: "connecting to database app on 127.0.0.1:5432 as app" alone does
/// not say whether the server was down or the password wrong. A cause whose text the message
/// already holds (some variants quote their source) is not repeated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !inner_text.is_empty() && !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
