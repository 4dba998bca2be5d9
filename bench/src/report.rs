//! The figures: medians with min and max over the runs, the table printed at the end and
//! the Markdown written to docs/benchmarks.md with the machine's description.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::latency::Latency;
use crate::pass::{Measurement, Scheduling, Variant};
use crate::priority::PriorityRun;

/// Median, min and max of one figure over the runs.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; NaN for none.
    pub fn of(values: &[f64]) -> Spread {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Spread {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }

    /// `median (min–max)` with `decimals`.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// The passes of one variant on one workload, one per run.
#[derive(Debug, Clone)]
pub struct VariantResult {
    /// The reader.
    pub variant: Variant,
    /// One per run, in run order.
    pub runs: Vec<Measurement>,
    /// The ceiling's changes per second of the same run, for the ratio.
    pub ceiling_rates: Vec<f64>,
}

/// All passes of one workload.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    /// `a`, `b`, `c`.
    pub name: &'static str,
    /// What it writes.
    pub description: String,
    /// Changes in its WAL.
    pub changes: u64,
    /// Per variant.
    pub variants: Vec<VariantResult>,
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Throughput workloads.
    pub workloads: Vec<WorkloadResult>,
    /// Latency runs.
    pub latency: Vec<Latency>,
    /// Rate and duration of the latency runs, for the report.
    pub latency_setup: String,
    /// Priority runs, both scheduling modes of each run.
    pub priority: Vec<PriorityRun>,
    /// What the priority workload does, for the report.
    pub priority_setup: String,
}

impl Results {
    /// The priority runs of one scheduling mode.
    fn priority_of(&self, scheduling: Scheduling) -> Vec<&PriorityRun> {
        self.priority
            .iter()
            .filter(|p| p.scheduling == scheduling)
            .collect()
    }

    /// Per run, FIFO's CRITICAL p99 over the lanes' (runs pair up in order).
    fn priority_p99_ratios(&self) -> Vec<f64> {
        self.priority_of(Scheduling::Fifo)
            .iter()
            .zip(self.priority_of(Scheduling::Weighted))
            .map(|(fifo, lanes)| fifo.critical.p99 / lanes.critical.p99)
            .collect()
    }
}

/// The machine and software the figures come from.
pub fn machine_description(pg_version: &str) -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let parts: Vec<&str> = l.split_whitespace().take(3).collect();
            (parts.len() == 3).then(|| parts.join(" "))
        })
        .unwrap_or_else(|| "?".into());
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    format!(
        "- CPUs (nproc): {cpus}\n- memory: {memory}\n- CPU model: {model}\n- kernel: {kernel}\n\
         - PostgreSQL: {pg_version}\n- entity-cdc commit: {commit}{}\n\
         - load average (1, 5, 15 min) when the run ended: {load} (other work on the machine \
         shares its cores)\n",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    )
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The results as Markdown tables.
pub fn tables(results: &Results) -> String {
    let mut out = String::new();
    if !results.workloads.is_empty() {
        out.push_str(
            "### Throughput, CPU and memory\n\n\
             Changes per second; ratio to the ceiling of the same run; CPU seconds per \
             million changes of the reader, of the walsender serving it and of the broker \
             (tansu, busy only for `run`); peak RSS of the reader. Each cell: median \
             (min–max) over the runs.\n\n\
             | workload | reader | changes/s | ratio to ceiling | reader CPU s / M | walsender CPU s / M | broker CPU s / M | reader peak RSS MiB |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for workload in &results.workloads {
            for result in &workload.variants {
                let rates: Vec<f64> = result.runs.iter().map(Measurement::rate).collect();
                let ratios: Vec<f64> = rates
                    .iter()
                    .zip(&result.ceiling_rates)
                    .map(|(rate, ceiling)| rate / ceiling)
                    .collect();
                let per_million = |f: fn(&Measurement) -> f64| {
                    let values: Vec<f64> = result
                        .runs
                        .iter()
                        .map(|m| f(m) / m.changes as f64 * 1e6)
                        .collect();
                    Spread::of(&values).show(2)
                };
                let rss: Vec<f64> = result
                    .runs
                    .iter()
                    .map(|m| m.client_peak_rss as f64 / 1024.0 / 1024.0)
                    .collect();
                let _ = writeln!(
                    out,
                    "| ({}) {} changes | {} | {} | {} | {} | {} | {} | {} |",
                    workload.name,
                    workload.changes,
                    result.variant.name(),
                    Spread::of(&rates).show(0),
                    if ratios.is_empty() {
                        "–".to_owned()
                    } else {
                        Spread::of(&ratios).show(2)
                    },
                    per_million(|m| m.client_cpu),
                    per_million(|m| m.walsender_cpu),
                    per_million(|m| m.broker_cpu),
                    Spread::of(&rss).show(0),
                );
            }
        }
        out.push('\n');
        for workload in &results.workloads {
            let _ = writeln!(out, "- ({}) {}", workload.name, workload.description);
        }
        out.push('\n');
    }
    if !results.latency.is_empty() {
        let pick = |f: fn(&Latency) -> f64| {
            Spread::of(&results.latency.iter().map(f).collect::<Vec<_>>()).show(1)
        };
        let _ = write!(
            out,
            "### Latency\n\n{}\n\n\
             | events per run | p50 ms | p99 ms | max ms | connector's histogram: p50 ≤ ms | p99 ≤ ms | machine CPU busy % | connector cores |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n\
             | {} | {} | {} | {} | {} | {} | {} | {} |\n\n\
             The last two columns are the connector's own commit -> acknowledgement histogram \
             (`entity_cdc_commit_to_ack_seconds`), as the upper bound of the bucket holding \
             the percentile: coarse (its buckets are 5, 10, 25, 50, 100, 250, 500 ms, 1 s, \
             2.5 s...), but without the consumer's path. Machine CPU busy: all cores, from \
             /proc/stat while pgbench ran (100% = both cores busy, including other work on \
             the machine); connector cores: its CPU seconds per second over the same time.\n\n\
             Latency in arrival order (ms, every 5% of the events), per run:\n\n{}\n",
            results.latency_setup,
            Spread::of(
                &results
                    .latency
                    .iter()
                    .map(|l| l.events as f64)
                    .collect::<Vec<_>>()
            )
            .show(0),
            pick(|l| l.p50),
            pick(|l| l.p99),
            pick(|l| l.max),
            pick(|l| l.connector_p50_bound),
            pick(|l| l.connector_p99_bound),
            pick(|l| l.machine_busy * 100.0),
            Spread::of(
                &results
                    .latency
                    .iter()
                    .map(|l| l.connector_cores)
                    .collect::<Vec<_>>()
            )
            .show(2),
            results
                .latency
                .iter()
                .enumerate()
                .map(|(run, l)| {
                    let points: Vec<String> = l.series.iter().map(|v| format!("{v:.0}")).collect();
                    format!("- run {}: {}\n", run + 1, points.join(" "))
                })
                .collect::<String>(),
        );
    }
    if !results.priority.is_empty() {
        let _ = write!(
            out,
            "### Priority under load\n\n{}\n\n\
             | scheduling | CRITICAL events per run | p50 ms | p99 ms | max ms | import acknowledged after s | spill peak events |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
            results.priority_setup
        );
        for scheduling in [Scheduling::Weighted, Scheduling::Fifo] {
            let runs = results.priority_of(scheduling);
            let pick = |f: fn(&PriorityRun) -> f64| {
                Spread::of(&runs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                scheduling.name(),
                pick(|r| r.critical.events as f64).show(0),
                pick(|r| r.critical.p50).show(1),
                pick(|r| r.critical.p99).show(1),
                pick(|r| r.critical.max).show(1),
                pick(|r| r.drain_seconds).show(1),
                pick(|r| r.spill_peak).show(0),
            );
        }
        let _ = writeln!(
            out,
            "\nFIFO's CRITICAL p99 over the lanes', per run: {}\n",
            results
                .priority_p99_ratios()
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

/// The goals of issue 6 that this harness measures, each met or missed.
pub fn goals(results: &Results) -> String {
    let mut out = String::from("### Goals\n\n");
    let find = |workload: &str, variant: Variant| {
        results
            .workloads
            .iter()
            .find(|w| w.name == workload)
            .and_then(|w| w.variants.iter().find(|v| v.variant == variant))
    };
    for (variant, what, goal) in [
        (Variant::RunJson, "JSON", 0.8),
        (Variant::RunAvro, "Avro", 0.7),
    ] {
        let Some(result) = find("b", variant) else {
            continue;
        };
        let ratios: Vec<f64> = result
            .runs
            .iter()
            .zip(&result.ceiling_rates)
            .map(|(m, c)| m.rate() / c)
            .collect();
        if !ratios.is_empty() {
            let median = Spread::of(&ratios).median;
            let _ = writeln!(
                out,
                "- end to end {what} on (b) >= {goal} of the ceiling: {median:.2}, {}",
                verdict(median >= goal)
            );
        }
    }
    if !results.latency.is_empty() {
        let p99 = Spread::of(&results.latency.iter().map(|l| l.p99).collect::<Vec<_>>()).median;
        let _ = writeln!(
            out,
            "- latency p99 < 50 ms: {p99:.1} ms, {}",
            verdict(p99 < 50.0)
        );
    }
    for workload in ["a", "b"] {
        if let Some(json) = find(workload, Variant::RunJson) {
            let peak = json
                .runs
                .iter()
                .map(|m| m.client_peak_rss)
                .max()
                .unwrap_or(0) as f64
                / 1024.0
                / 1024.0;
            let _ = writeln!(
                out,
                "- peak RSS of `run` on ({workload}) < 256 MiB: {peak:.0} MiB (largest run), {}",
                verdict(peak < 256.0)
            );
        }
    }
    let ratios = results.priority_p99_ratios();
    if !ratios.is_empty() {
        let median = Spread::of(&ratios).median;
        let _ = writeln!(
            out,
            "- CRITICAL p99 under a BULK import at least 10 times lower with the lanes than \
             FIFO: {median:.2} times, {}",
            verdict(median >= 10.0)
        );
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

/// Marks the generated part of docs/benchmarks.md; text outside them is kept.
const BEGIN: &str = "<!-- bench:begin (written by scripts/bench.sh; edit outside) -->";
const END: &str = "<!-- bench:end -->";

/// Writes `generated` between the markers of `path` (creating the file if needed).
pub fn write_markdown(path: &Path, generated: &str) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{generated}{END}\n");
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if end > begin => format!(
            "{}{block}\n{}",
            &existing[..begin],
            existing[end + END.len()..].trim_start_matches('\n')
        ),
        _ => format!("# Benchmarks\n\n{block}"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle_value() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(s.show(1), "2.5 (1.0–4.0)");
    }

    #[test]
    fn the_generated_block_is_replaced_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("benchmarks.md");
        write_markdown(&path, "first\n").unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, format!("{text}\n## Analysis\n\nkept\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        write_markdown(&path, "second\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            format!("# Benchmarks\n\n{BEGIN}\nsecond\n{END}\n\n## Analysis\n\nkept\n")
        );
    }
}
