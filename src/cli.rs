//! The command line: `setup`, `check`, `tail`, `consume`, `schemas` and `run`.
//!
//! Every flag can also come from an `ENTITY_CDC_…` environment variable, so that a container
//! is configured the same way as a shell.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::pipeline::{self, PipelineError};
use crate::source;
use crate::source::change::SourceEvent;
use crate::source::reader::{ReadError, ReadItem};
use crate::source::setup::{self, SetupError};
use crate::source::sql::{self, SqlError};
use crate::source::{check, tail, DatabaseTarget, Lsn, OpenError, SourceSettings, TableRef};

/// Change data capture from PostgreSQL to Kafka, as the metamodel's entity events.
#[derive(Debug, Parser)]
#[command(name = "entity-cdc", version, about, long_about = None)]
pub struct Cli {
    /// The connector configuration.
    #[arg(
        long,
        global = true,
        env = "ENTITY_CDC_CONFIG",
        default_value = "connector.yaml"
    )]
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
        /// Stop and exit 0 once everything committed up to this LSN (`16/B374D848`) is
        /// printed, like pg_recvlogical's --endpos: after the commit that ends at or past
        /// it, before a transaction that commits past it, or on a keepalive past it while
        /// no transaction is open. For reading a known stretch of WAL (the benchmarks).
        #[arg(long, env = "ENTITY_CDC_END_LSN")]
        end_lsn: Option<Lsn>,
    },
    /// Print the records of Kafka topics as JSON lines (from the beginning, all partitions,
    /// no consumer group): to see what the connector produced.
    Consume {
        /// Topics to read; by default every topic the configured entities produce to, and
        /// the dead-letter topic.
        #[arg(long = "topic", env = "ENTITY_CDC_TOPICS", value_delimiter = ',')]
        topics: Vec<String>,
        /// Stop after this many records.
        #[arg(long, default_value_t = usize::MAX)]
        count: usize,
        /// Stop when no record came for this many seconds.
        #[arg(long, default_value_t = 3)]
        idle_secs: u64,
    },
    /// Write the Avro schema (`<Entity>.avsc`) of every streamed entity, generated from the
    /// database's catalog as `run` generates it from the replication stream.
    Schemas {
        /// The folder to write to (created if missing).
        #[arg(long, env = "ENTITY_CDC_SCHEMAS_OUT", default_value = "schemas")]
        out: PathBuf,
    },
    /// Run the pipeline: changes of the entity tables become entity events on Kafka; the
    /// slot is confirmed once Kafka has them. SIGINT or SIGTERM drains and stops.
    Run,
}

/// Why a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// connector.yaml is missing, unreadable or invalid (exit 78).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be reached or queried.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// Setup could not plan or apply.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The source could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading changes failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The pipeline stopped with an error (boxed: it is large and rare).
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    /// Records could not be read back.
    #[error(transparent)]
    Consume(#[from] crate::consume::ConsumeError),
    /// A topic name could not be built.
    #[error(transparent)]
    Topic(#[from] crate::event::BuildError),
    /// Stdout was closed or failed.
    #[error("writing to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// The schemas could not be generated.
    #[error(transparent)]
    Schemas(#[from] crate::codec::avro::export::ExportError),
    /// A schema file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl CommandError {
    /// 78 (EX_CONFIG) for configuration errors, 1 for everything else.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CommandError::Config(_) => ExitCode::from(EXIT_CONFIG),
            _ => ExitCode::FAILURE,
        }
    }

    /// What an operator should do, where known.
    pub fn hint(&self) -> Option<String> {
        match self {
            CommandError::Setup(e) => e.hint(),
            CommandError::Open(e) => e.hint(),
            CommandError::Read(ReadError::Replication(e)) => e.hint().map(str::to_owned),
            CommandError::Pipeline(e) => e.hint(),
            _ => None,
        }
    }
}

/// sysexits.h's EX_CONFIG: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 78;
/// `check` found something that would stop the connector.
pub const EXIT_NOT_READY: u8 = 2;

/// Runs the parsed command line.
pub async fn execute(cli: Cli) -> Result<ExitCode, CommandError> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Setup { apply } => setup(&config, apply).await,
        Command::Check => check(&config).await,
        Command::Tail { temporary, end_lsn } => tail(&config, temporary, end_lsn).await,
        Command::Run => run(&config).await,
        Command::Schemas { out } => schemas(&config, &out).await,
        Command::Consume {
            topics,
            count,
            idle_secs,
        } => consume(&config, topics, count, idle_secs).await,
    }
}

/// `schemas`: writes `<out>/<Entity>.avsc` for every streamed entity and lists them.
async fn schemas(config: &Config, out: &std::path::Path) -> Result<ExitCode, CommandError> {
    let files = crate::codec::avro::export::catalog_schemas(config).await?;
    std::fs::create_dir_all(out).map_err(|source| CommandError::Write {
        path: out.to_owned(),
        source,
    })?;
    let mut stdout = std::io::stdout().lock();
    for file in files {
        let path = out.join(&file.file_name);
        std::fs::write(&path, &file.text).map_err(|source| CommandError::Write {
            path: path.clone(),
            source,
        })?;
        writeln!(stdout, "{}: {}", file.entity, path.display()).map_err(CommandError::Stdout)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The database target that connector.yaml describes: its entity tables.
pub fn database_target(config: &Config) -> DatabaseTarget {
    DatabaseTarget {
        params: config.source.connect_params(),
        publication: config.source.publication.clone(),
        slot: config.source.slot.clone(),
        tables: config
            .entities
            .iter()
            .map(|e| TableRef::new(e.table.schema.clone(), e.table.name.clone()))
            .collect(),
    }
}

async fn setup(config: &Config, apply: bool) -> Result<ExitCode, CommandError> {
    let target = database_target(config);
    let mut client = sql::connect(&target.params).await?;
    let plan = setup::plan(&client, &target).await?;
    println!("{}", plan.render());
    if apply && !plan.is_empty() {
        setup::apply(&mut client, &plan).await?;
        println!("applied {} statement(s)", plan.steps.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(config: &Config) -> Result<ExitCode, CommandError> {
    let target = database_target(config);
    let client = sql::connect(&target.params).await?;
    let mut report = check::check(&client, &target).await?;
    // The entities' configured columns against the catalog: what `run` would refuse.
    let problems = crate::model::verify_entities(&client, &config.entities)
        .await
        .map_err(|e| CommandError::Pipeline(Box::new(e.into())))?;
    for entity in config.entities.iter().filter(|e| e.streaming.enabled) {
        let mine: Vec<String> = problems
            .iter()
            .map(ToString::to_string)
            .filter(|p| p.starts_with(&format!("entity {}:", entity.name)))
            .collect();
        report.items.push(check::CheckItem {
            name: format!("entity {}", entity.name),
            status: if mine.is_empty() {
                check::CheckStatus::Ok
            } else {
                check::CheckStatus::Fail
            },
            detail: if mine.is_empty() {
                format!(
                    "key, tenant and configured columns found in {}",
                    entity.table
                )
            } else {
                mine.join("; ")
            },
            fix: (!mine.is_empty())
                .then(|| "correct the entity in connector.yaml or the table".to_owned()),
        });
    }
    let spill = &config.streaming.spill;
    let (status, detail, fix) = match crate::pipeline::spill::probe(spill) {
        Ok(()) if spill.max_bytes == 0 => (
            check::CheckStatus::Ok,
            "off (streaming.spill.maxBytes: 0): a full lane stops reading WAL".to_owned(),
            None,
        ),
        Ok(()) => (
            check::CheckStatus::Ok,
            format!(
                "spill files can be created in {}",
                spill.directory_path().display()
            ),
            None,
        ),
        Err(e) => (
            check::CheckStatus::Fail,
            e.to_string(),
            Some(crate::pipeline::spill::DIRECTORY_FIX.to_owned()),
        ),
    };
    report.items.push(check::CheckItem {
        name: "spill".to_owned(),
        status,
        detail,
        fix,
    });
    println!("{}", report.render());
    Ok(if report.is_ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_READY)
    })
}

/// A token cancelled at the first SIGINT or SIGTERM.
fn shutdown_signal() -> Result<CancellationToken, CommandError> {
    let token = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).map_err(CommandError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(CommandError::Signals)?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received; stopping"),
            _ = interrupt.recv() => info!("SIGINT received; stopping"),
        }
        cancel.cancel();
    });
    Ok(token)
}

async fn tail(
    config: &Config,
    temporary: bool,
    end_lsn: Option<Lsn>,
) -> Result<ExitCode, CommandError> {
    let mut settings = SourceSettings::from_config(config);
    if temporary {
        settings.temporary_slot = true;
        settings.slot = format!("entity_cdc_tail_{}", std::process::id());
    }
    let cancel = shutdown_signal()?;
    let mut reader = source::open_reader(&settings).await?;
    // Nothing is in flight yet: keepalives may confirm the server's WAL end. Otherwise a
    // tail that has printed no transaction never answers a keepalive with the position the
    // server sent, and a fast shutdown of PostgreSQL waits wal_sender_timeout for it.
    reader.stream().set_idle(true);
    info!(slot = %settings.slot, publication = %settings.publication, "tailing");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut end = end_lsn.map(tail::EndPosition::new);
    let result = loop {
        let item = tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(()),
            item = reader.next() => item,
        };
        let item = match item {
            Ok(item) => item,
            Err(e) => break Err(CommandError::Read(e)),
        };
        if let Some(target) = end.as_mut().and_then(|end| end.stops_before(&item)) {
            info!(end_lsn = %target, "end lsn reached");
            break Ok(());
        }
        if let Some(line) = tail::item_json(&item) {
            if let Err(e) = writeln!(out, "{line}") {
                break Err(CommandError::Stdout(e));
            }
        }
        match item {
            ReadItem::Event(SourceEvent::Commit { end_lsn, .. }) => {
                // The transaction is on stdout once flushed: only then may the slot move on.
                if let Err(e) = out.flush() {
                    break Err(CommandError::Stdout(e));
                }
                reader.stream().confirm(end_lsn);
                reader.stream().set_idle(true);
                if let Some(end) = end.as_ref().filter(|end| end.reached_by_commit(end_lsn)) {
                    info!(end_lsn = %end.target(), "end lsn reached");
                    break Ok(());
                }
            }
            // A partly received transaction was dropped and comes again from its start:
            // nothing is in flight, as at the start.
            ReadItem::Event(SourceEvent::Reconnected) => reader.stream().set_idle(true),
            _ => {}
        }
    };
    let _ = out.flush();
    drop(out);
    if let Err(e) = reader.stream().send_status().await {
        warn!(error = %e, "could not send the final status update");
    }
    reader.close().await;
    result.map(|()| ExitCode::SUCCESS)
}

async fn run(config: &Config) -> Result<ExitCode, CommandError> {
    let cancel = shutdown_signal()?;
    pipeline::run(config, cancel)
        .await
        .map_err(|e| CommandError::Pipeline(Box::new(e)))?;
    Ok(ExitCode::SUCCESS)
}

async fn consume(
    config: &Config,
    topics: Vec<String>,
    count: usize,
    idle_secs: u64,
) -> Result<ExitCode, CommandError> {
    let topics = if topics.is_empty() {
        pipeline::topics(config)?
    } else {
        topics
    };
    let bootstrap = config.kafka.bootstrap_servers.clone();
    let options = config.kafka.librdkafka.clone();
    let idle = std::time::Duration::from_secs(idle_secs);
    let records = tokio::task::spawn_blocking(move || {
        crate::consume::consume(&bootstrap, &options, &topics, count, idle)
    })
    .await
    .map_err(|e| CommandError::Stdout(std::io::Error::other(e)))??;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for record in records {
        writeln!(out, "{record}").map_err(CommandError::Stdout)?;
    }
    Ok(ExitCode::SUCCESS)
}
