//! The `entity-cdc` binary: parse the command line, load the configuration, run the command,
//! and map the outcome to an exit code (0 success, 78 configuration error, 1 runtime error,
//! 2 a database that is not ready).

use std::process::ExitCode;

use clap::Parser;
use entity_cdc::cli::{self, Cli};
use entity_cdc::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
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
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            e.exit_code()
        }
    }
}
