//! `entity-cdc-bench`: how close entity-cdc comes to PostgreSQL's own logical decoding, on
//! this machine, in one run (issue 6).
//!
//! It starts its own PostgreSQL and broker, and for each workload creates one slot per
//! measured pass *before* writing the workload, so that every pass (the ceiling, `tail`,
//! `run` with JSON, each run) reads exactly the same WAL. Then the latency workload, then a
//! table on stdout and the Markdown report. `scripts/bench.sh` builds entity-cdc in release
//! mode and runs this; see docs/benchmarks.md for what each figure means.

mod lab;
mod latency;
mod pass;
mod priority;
mod process_stats;
mod report;
mod supervision;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::lab::Lab;
use crate::pass::{PassEnv, Scheduling, Variant, VARIANTS};
use crate::report::{Results, VariantResult, WorkloadResult};
use crate::supervision::Interrupted;
use crate::workload::{Sizes, WORKLOADS};

/// Benchmarks entity-cdc against pg_recvlogical on the same WAL.
#[derive(Debug, Parser)]
#[command(name = "entity-cdc-bench")]
struct Args {
    /// Small sizes (20,000 rows, 10,000 pgbench transactions, 5 s of latency) for trying
    /// the harness; the report goes to target/benchmarks-quick.md unless --out says.
    #[arg(long)]
    quick: bool,
    /// Measured runs of each pass; figures are the median with min and max.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Only these workloads (a, b, c, latency, priority) and/or readers (ceiling, tail,
    /// run-json, run-avro),
    /// comma-separated. The ceiling always runs with a throughput workload: the ratios
    /// need it.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The entity-cdc binary to measure (a release build).
    #[arg(long, default_value = "target/release/entity-cdc")]
    entity_cdc: PathBuf,
    /// Where the Markdown report goes: its generated block is replaced, the rest kept.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Names `--only` accepts.
const WORKLOAD_NAMES: &[&str] = &["a", "b", "c", "latency", "priority"];

/// What `--only` selected.
struct Selection {
    workloads: Vec<String>,
    variants: Vec<String>,
}

impl Selection {
    fn parse(only: &[String]) -> Result<Selection> {
        let mut selection = Selection {
            workloads: Vec::new(),
            variants: Vec::new(),
        };
        for name in only {
            let name = name.trim();
            if WORKLOAD_NAMES.contains(&name) {
                selection.workloads.push(name.to_owned());
            } else if VARIANTS.iter().any(|v| v.name() == name) {
                selection.variants.push(name.to_owned());
            } else {
                let readers: Vec<&str> = VARIANTS.iter().map(|v| v.name()).collect();
                bail!(
                    "--only {name:?}: not a workload ({}) nor a reader ({})",
                    WORKLOAD_NAMES.join(", "),
                    readers.join(", ")
                );
            }
        }
        Ok(selection)
    }

    fn workload(&self, name: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|w| w == name)
    }

    fn variant(&self, variant: Variant) -> bool {
        variant == Variant::Ceiling
            || self.variants.is_empty()
            || self.variants.iter().any(|v| v == variant.name())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match try_main(args).await {
            Ok(()) => ExitCode::SUCCESS,
            // A child killed by the signal handler fails its wait before the flag is
            // looked at: after a signal, any failure is the interruption.
            Err(e) if e.is::<Interrupted>() || supervision::cancelled() => {
                eprintln!("bench: interrupted");
                ExitCode::from(130)
            }
            Err(e) => {
                eprintln!("bench: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn try_main(args: Args) -> Result<()> {
    supervision::install_signal_handler()?;
    let selection = Selection::parse(&args.only)?;
    if !args.entity_cdc.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release --bin entity-cdc` \
             (scripts/bench.sh does) or pass --entity-cdc",
            args.entity_cdc.display()
        );
    }
    let entity_cdc = args
        .entity_cdc
        .canonicalize()
        .with_context(|| format!("resolving {}", args.entity_cdc.display()))?;
    let sizes = if args.quick {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    eprintln!("bench: starting PostgreSQL and the broker");
    let lab = Lab::start().await?;
    eprintln!(
        "bench: PostgreSQL on port {} (data in {}), broker at {}",
        lab.pg_port(),
        lab.work_dir().display(),
        lab.bootstrap()
    );
    let outcome = measure(&lab, &entity_cdc, &selection, sizes, args.runs).await;
    let pg_version = lab
        .text("select version()")
        .await
        .unwrap_or_else(|_| "?".into());
    let cleaned = lab.shutdown().await;
    eprintln!("bench: cleanup: {cleaned}");
    let results = outcome?;

    let tables = report::tables(&results);
    let goals = report::goals(&results);
    println!("{tables}{goals}");
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from(if args.quick {
            "target/benchmarks-quick.md"
        } else {
            "docs/benchmarks.md"
        })
    });
    let kind = if args.quick {
        "a --quick run (small sizes: not the issue's figures)"
    } else {
        "a full run"
    };
    let generated = format!(
        "## Figures\n\nFrom {kind}, {} measured run(s) per pass, written by \
         `scripts/bench.sh{}`.\n\n### Machine\n\n{}\n{tables}{goals}",
        args.runs,
        if args.quick { " --quick" } else { "" },
        report::machine_description(&pg_version),
    );
    report::write_markdown(&out, &generated)?;
    eprintln!("bench: report written to {}", out.display());
    Ok(())
}

async fn measure(
    lab: &Lab,
    entity_cdc: &std::path::Path,
    selection: &Selection,
    sizes: Sizes,
    runs: u32,
) -> Result<Results> {
    let env = PassEnv { lab, entity_cdc };
    let mut results = Results::default();
    for workload in WORKLOADS.iter().filter(|w| selection.workload(w.name)) {
        let variants: Vec<Variant> = VARIANTS
            .iter()
            .copied()
            .filter(|v| selection.variant(*v))
            .collect();
        lab.sql(workload::RESET).await?;
        // One slot per measured pass, all created before the workload is written.
        let mut slots = Vec::new();
        for run in 0..runs {
            for variant in &variants {
                let slot = format!(
                    "bench_{}_{}_{run}",
                    workload.name,
                    variant.name().replace('-', "_")
                );
                lab.create_slot(&slot).await?;
                slots.push((run, *variant, slot));
            }
        }
        eprintln!("bench: ({}) writing the workload", workload.name);
        let changes = workload::generate(lab, workload.shape, sizes).await?;
        let end_lsn = lab.current_lsn().await?;
        // With synchronous_commit=off the last commits reach the disk (and the walsenders,
        // which send only flushed WAL) within the WAL writer's delay: wait for that here,
        // not inside the first pass's time.
        lab.wait_until(
            "the workload's WAL flushed",
            std::time::Duration::from_secs(60),
            || async {
                Ok(lab
                    .text(&format!(
                        "select (pg_current_wal_flush_lsn() >= '{end_lsn}'::pg_lsn)::text"
                    ))
                    .await?
                    == "true")
            },
        )
        .await?;
        eprintln!(
            "bench: ({}) {changes} changes written, WAL up to {end_lsn}",
            workload.name
        );
        let mut per_variant: Vec<VariantResult> = variants
            .iter()
            .map(|v| VariantResult {
                variant: *v,
                runs: Vec::new(),
                ceiling_rates: Vec::new(),
            })
            .collect();
        for run in 0..runs {
            let mut ceiling_rate = f64::NAN;
            for (index, variant) in variants.iter().enumerate() {
                let Some((_, _, slot)) = slots.iter().find(|(r, v, _)| *r == run && v == variant)
                else {
                    continue;
                };
                let measurement = pass::run(&env, *variant, slot, &end_lsn, changes).await?;
                eprintln!(
                    "bench: ({}) run {} {}: {:.0} changes/s, {:.2} s",
                    workload.name,
                    run + 1,
                    variant.name(),
                    measurement.rate(),
                    measurement.seconds
                );
                if *variant == Variant::Ceiling {
                    ceiling_rate = measurement.rate();
                }
                per_variant[index].runs.push(measurement);
                if *variant != Variant::Ceiling {
                    per_variant[index].ceiling_rates.push(ceiling_rate);
                }
                lab.drop_slot(slot).await?;
            }
        }
        results.workloads.push(WorkloadResult {
            name: workload.name,
            description: workload.description.to_owned(),
            changes,
            variants: per_variant,
        });
    }
    if selection.workload("latency") {
        results.latency_setup = format!(
            "pgbench at {} single-row insert transactions per second from {} clients for {} s \
             per run (`synchronous_commit=on` for its sessions), `entity-cdc run` (JSON) \
             streaming them; latency is the commit time \
             (the event's `timestamp`) to the record's receipt by a consumer polling the \
             topic (`fetch.wait.max.ms=5`): an upper bound of commit -> delivery report.",
            workload::LATENCY_RATE,
            workload::CLIENTS,
            sizes.latency_seconds
        );
        for run in 0..runs {
            let latency = latency::run(&env, run, sizes.latency_seconds).await?;
            eprintln!(
                "bench: latency run {}: {} events, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                run + 1,
                latency.events,
                latency.p50,
                latency.p99,
                latency.max
            );
            results.latency.push(latency);
        }
    }
    if selection.workload("priority") {
        results.priority_setup = format!(
            "a BULK import of {} orders in transactions of {} rows (as fast as PostgreSQL \
             writes them) while one order is updated to CRITICAL once a second, from the \
             import's start until Kafka acknowledged all of it; NORMAL and BULK lanes of {} \
             events and 32 MiB each, the spill on (its default, 1 GiB), the default producer \
             in-flight window (1,000 records); `streaming.scheduling: weighted` (the lanes, \
             BULK throttled to {} events/s) then `fifo` (every event in one lane, in commit \
             order, no rate limit) in each run. Latency: commit time to receipt by a \
             consumer of the CRITICAL events' topic.",
            sizes.priority_rows,
            priority::IMPORT_BATCH,
            pass::PRIORITY_LANE_CAPACITY,
            pass::PRIORITY_BULK_RATE
        );
        for run in 0..runs {
            for scheduling in [Scheduling::Weighted, Scheduling::Fifo] {
                let measured = priority::run(&env, run, sizes.priority_rows, scheduling).await?;
                eprintln!(
                    "bench: priority run {} {}: {} CRITICAL events, p50 {:.1} ms, p99 {:.1} ms, \
                     max {:.1} ms; import acknowledged after {:.1} s",
                    run + 1,
                    scheduling.name(),
                    measured.critical.events,
                    measured.critical.p50,
                    measured.critical.p99,
                    measured.critical.max,
                    measured.drain_seconds
                );
                results.priority.push(measured);
            }
        }
    }
    Ok(results)
}
