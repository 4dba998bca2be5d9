//! One measured pass: a reader of the workload's WAL, from its start to the end LSN.
//!
//! Each pass reads through a slot of its own, created before the workload was written, so
//! every pass of a workload (each variant, each run) decodes exactly the same WAL.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::lab::{Lab, DATABASE, PUBLICATION};
use crate::process_stats;
use crate::supervision::{check_cancelled, Supervised, POLL};

/// The longest a pass may take before the benchmark gives up on it.
const PASS_TIMEOUT: Duration = Duration::from_secs(900);

/// How often `run` passes ask the connector's /metrics how many events Kafka acknowledged.
/// Each request makes the connector render its metrics, so not every 5 ms; 20 ms is the
/// resolution of the end-to-end time, under 1% of a full pass.
const METRICS_POLL: Duration = Duration::from_millis(20);

/// What reads the WAL in a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `pg_recvlogical` with pgoutput into /dev/null: PostgreSQL's own ceiling.
    Ceiling,
    /// `entity-cdc tail --end-lsn` into /dev/null: replication and decoding only.
    Tail,
    /// `entity-cdc run` with `format: json` to the broker, until Kafka acknowledged all.
    RunJson,
    /// `entity-cdc run` with `format: avro` and the lab's Schema Registry.
    RunAvro,
}

/// The variants measured on each throughput workload, in the order they run within a run.
pub const VARIANTS: &[Variant] = &[
    Variant::Ceiling,
    Variant::Tail,
    Variant::RunJson,
    Variant::RunAvro,
];

impl Variant {
    /// Its name in `--only` and the report.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Ceiling => "ceiling",
            Variant::Tail => "tail",
            Variant::RunJson => "run-json",
            Variant::RunAvro => "run-avro",
        }
    }
}

/// What one pass measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measurement {
    /// Wall-clock seconds from starting the reader to the last change read (ceiling,
    /// tail: the reader's exit at the end LSN) or acknowledged by Kafka (run).
    pub seconds: f64,
    /// Changes in the WAL read.
    pub changes: u64,
    /// CPU seconds of the reader process.
    pub client_cpu: f64,
    /// CPU seconds of the walsender that served it.
    pub walsender_cpu: f64,
    /// Peak resident set size of the reader process, bytes.
    pub client_peak_rss: u64,
    /// CPU seconds the broker (tansu) used during the pass: the third party on the cores.
    pub broker_cpu: f64,
}

impl Measurement {
    /// Changes per second.
    pub fn rate(&self) -> f64 {
        self.changes as f64 / self.seconds
    }
}

/// Where the passes find their programs and write their files.
pub struct PassEnv<'a> {
    /// The benchmark's servers.
    pub lab: &'a Lab,
    /// The entity-cdc binary measured.
    pub entity_cdc: &'a Path,
}

/// Runs one pass of `variant` over `slot` up to `end_lsn`.
pub async fn run(
    env: &PassEnv<'_>,
    variant: Variant,
    slot: &str,
    end_lsn: &str,
    changes: u64,
) -> Result<Measurement> {
    match variant {
        Variant::Ceiling => {
            let mut cmd = Command::new(env.lab.pg_bin().join("pg_recvlogical"));
            cmd.args(["-h", "127.0.0.1", "-U", "postgres", "--no-loop"])
                .args(["-p", &env.lab.pg_port().to_string(), "-d", DATABASE])
                .args(["--slot", slot, "--start", "--endpos", end_lsn])
                .args(["-o", "proto_version=1"])
                .args(["-o", &format!("publication_names={PUBLICATION}")])
                .args(["-f", "/dev/null"]);
            read_to_end(env, cmd, "pg_recvlogical", slot, changes).await
        }
        Variant::Tail => {
            let config = write_config(env.lab, slot, "bench.tail", None, &Setup::default())?;
            let mut cmd = Command::new(env.entity_cdc);
            cmd.arg("--config")
                .arg(&config)
                .args(["tail", "--end-lsn", end_lsn]);
            read_to_end(env, cmd, "entity-cdc tail", slot, changes).await
        }
        Variant::RunJson => {
            env.lab.restart_broker().await?;
            run_connector(env, slot, changes, &Setup::default()).await
        }
        Variant::RunAvro => {
            env.lab.restart_broker().await?;
            let setup = Setup {
                avro: true,
                ..Setup::default()
            };
            run_connector(env, slot, changes, &setup).await
        }
    }
}

/// A reader that exits by itself at the end LSN: timed from spawn to exit, its CPU and
/// peak RSS from wait4, the walsender's CPU sampled until it is gone.
async fn read_to_end(
    env: &PassEnv<'_>,
    mut cmd: Command,
    what: &str,
    slot: &str,
    changes: u64,
) -> Result<Measurement> {
    let log = env.lab.work_dir().join(format!("{slot}.log"));
    let log_file = std::fs::File::create(&log).context("creating a pass log")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .env("RUST_LOG", "warn");
    let broker = BrokerCpu::start(env.lab);
    let start = Instant::now();
    let mut child = Supervised::spawn(cmd, what)?;
    let mut walsender = WalsenderCpu::default();
    loop {
        if let Some((code, usage)) = child.try_reap()? {
            let seconds = start.elapsed().as_secs_f64();
            if code != 0 {
                bail!(
                    "{what} on slot {slot} exited with {code}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            return Ok(Measurement {
                seconds,
                changes,
                client_cpu: usage.cpu_seconds,
                walsender_cpu: walsender.last,
                client_peak_rss: usage.peak_rss_bytes,
                broker_cpu: broker.used(),
            });
        }
        walsender.sample(env.lab, slot).await?;
        check_cancelled()?;
        if start.elapsed() > PASS_TIMEOUT {
            bail!("{what} on slot {slot} did not reach the end LSN in {PASS_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The walsender's CPU seconds, sampled while it runs: the last sample is within one poll
/// (5 ms) of its end.
#[derive(Default)]
struct WalsenderCpu {
    pid: Option<u32>,
    last: f64,
}

impl WalsenderCpu {
    async fn sample(&mut self, lab: &Lab, slot: &str) -> Result<()> {
        if self.pid.is_none() {
            self.pid = lab.walsender_pid(slot).await?;
        }
        if let Some(seconds) = self.pid.and_then(process_stats::cpu_seconds) {
            self.last = seconds;
        }
        Ok(())
    }
}

/// The broker's CPU seconds since the start of a pass.
struct BrokerCpu {
    pid: Option<u32>,
    at_start: f64,
}

impl BrokerCpu {
    fn start(lab: &Lab) -> BrokerCpu {
        let pid = lab.broker_pid();
        BrokerCpu {
            pid,
            at_start: pid.and_then(process_stats::cpu_seconds).unwrap_or_default(),
        }
    }

    fn used(&self) -> f64 {
        self.pid
            .and_then(process_stats::cpu_seconds)
            .map_or(0.0, |now| now - self.at_start)
    }
}

/// `entity-cdc run` until Kafka acknowledged `changes` events (polled on /metrics), then
/// SIGTERM. CPU and RSS are read from /proc at that moment, before the shutdown.
async fn run_connector(
    env: &PassEnv<'_>,
    slot: &str,
    changes: u64,
    setup: &Setup,
) -> Result<Measurement> {
    let broker = BrokerCpu::start(env.lab);
    let mut connector = Connector::start(env, slot, "bench.run", setup)?;
    let start = connector.started;
    let mut walsender = WalsenderCpu::default();
    let mut next_metrics = Instant::now();
    loop {
        connector.check_running()?;
        walsender.sample(env.lab, slot).await?;
        if Instant::now() >= next_metrics {
            next_metrics += METRICS_POLL;
            if let Some(metrics) = connector.metrics().await {
                let acknowledged = metric_sum(&metrics, "entity_cdc_events_acknowledged_total");
                let dead = metric_sum(&metrics, "entity_cdc_events_dead_lettered_total");
                if dead > 0.0 {
                    bail!("entity-cdc run on slot {slot} dead-lettered {dead} event(s)");
                }
                if acknowledged >= changes as f64 {
                    let seconds = start.elapsed().as_secs_f64();
                    let pid = connector.child.pid();
                    let measurement = Measurement {
                        seconds,
                        changes,
                        client_cpu: process_stats::cpu_seconds(pid).unwrap_or_default(),
                        walsender_cpu: walsender.last,
                        client_peak_rss: process_stats::peak_rss_bytes(pid).unwrap_or_default(),
                        broker_cpu: broker.used(),
                    };
                    connector.stop().await?;
                    return Ok(measurement);
                }
            }
        }
        check_cancelled()?;
        if start.elapsed() > PASS_TIMEOUT {
            bail!("entity-cdc run on slot {slot}: not all {changes} events acknowledged in {PASS_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A running `entity-cdc run` with its telemetry address.
pub struct Connector {
    child: Supervised,
    listen: String,
    log: std::path::PathBuf,
    slot: String,
    /// When it was spawned.
    pub started: Instant,
}

impl Connector {
    /// Starts `entity-cdc run` on `slot`, producing under `topic_prefix`.
    pub fn start(
        env: &PassEnv<'_>,
        slot: &str,
        topic_prefix: &str,
        setup: &Setup,
    ) -> Result<Connector> {
        let listen = format!("127.0.0.1:{}", entity_cdc_integration::pg::free_port()?);
        let config = write_config(env.lab, slot, topic_prefix, Some(&listen), setup)?;
        let log = env.lab.work_dir().join(format!("{slot}.log"));
        let log_file = std::fs::File::create(&log).context("creating the connector's log")?;
        let mut cmd = Command::new(env.entity_cdc);
        cmd.arg("--config")
            .arg(&config)
            .arg("run")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let started = Instant::now();
        let child = Supervised::spawn(cmd, "entity-cdc run")?;
        Ok(Connector {
            child,
            listen,
            log,
            slot: slot.to_owned(),
            started,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Fails with the connector's log if it exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some((code, _)) = self.child.try_reap()? {
            bail!(
                "entity-cdc run on slot {} exited with {code}: {}",
                self.slot,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The /metrics text, or None while the endpoint does not answer yet.
    pub async fn metrics(&self) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(&self.listen).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        body.starts_with("HTTP/1.").then_some(body)
    }

    /// SIGTERM (drain and exit 0), then waits up to 60 s.
    pub async fn stop(mut self) -> Result<()> {
        self.child.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((code, _)) = self.child.try_reap()? {
                if code != 0 {
                    bail!(
                        "entity-cdc run on slot {} exited with {code} on SIGTERM: {}",
                        self.slot,
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "entity-cdc run on slot {} did not stop within 60 s of SIGTERM",
                    self.slot
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The sum of every sample of `name` (all label sets) in a Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The upper bound (`le`) of the first bucket of histogram `name` (all label sets added
/// up) holding at least the fraction `q` of the observations; None without observations.
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some(le_start) = rest.find("le=\"") else {
            continue;
        };
        let le_text = &rest[le_start + 4..];
        let Some(le_end) = le_text.find('"') else {
            continue;
        };
        let le = match &le_text[..le_end] {
            "+Inf" => f64::INFINITY,
            other => match other.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let Some(count) = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok()) else {
            continue;
        };
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, total)) => *total += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= q * total)
        .map(|(le, _)| *le)
}

/// How a pass's connector differs from the default one (JSON, default lanes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// `format: avro` with the lab's Schema Registry, rather than JSON.
    pub avro: bool,
    /// Lanes for the priority workload: `streaming.scheduling` and equal bounds for the
    /// NORMAL and BULK lanes (FIFO puts every event in one lane with NORMAL's bounds).
    pub priority: Option<Scheduling>,
}

/// `streaming.scheduling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// The priority lanes with their weights.
    Weighted,
    /// Every event in one lane, in commit order.
    Fifo,
}

impl Scheduling {
    /// Its value in connector.yaml and its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scheduling::Weighted => "weighted",
            Scheduling::Fifo => "fifo",
        }
    }
}

/// Events a NORMAL or BULK lane holds in the priority workload, at most (and 32 MiB).
pub const PRIORITY_LANE_CAPACITY: u64 = 50_000;

/// The BULK lane's rate limit in the priority workload (events/s): bulk imports are
/// throttled, as the story configures them. FIFO mode has no rate limits.
pub const PRIORITY_BULK_RATE: u64 = 20_000;

/// A connector.yaml for one pass: its own slot, the Order entity of the story under
/// `topic_prefix`, telemetry on `listen` (run) or none (tail), and `setup`'s format and
/// lanes.
fn write_config(
    lab: &Lab,
    slot: &str,
    topic_prefix: &str,
    listen: Option<&str>,
    setup: &Setup,
) -> Result<std::path::PathBuf> {
    let telemetry = listen
        .map(|addr| format!("telemetry:\n  listen: {addr}\n"))
        .unwrap_or_default();
    let format = if setup.avro {
        format!(
            "format: avro\nschemaRegistry:\n  url: {}\n",
            lab.registry_url()
        )
    } else {
        "format: json\n".to_owned()
    };
    let streaming = setup
        .priority
        .map(|scheduling| {
            format!(
                "streaming:\n  scheduling: {}\n  lanes:\n    \
                 NORMAL: {{ capacity: {PRIORITY_LANE_CAPACITY}, maxBytes: 33554432 }}\n    \
                 BULK: {{ capacity: {PRIORITY_LANE_CAPACITY}, maxBytes: 33554432, \
                 maxEventsPerSecond: {PRIORITY_BULK_RATE} }}\n",
                scheduling.name()
            )
        })
        .unwrap_or_default();
    let text = format!(
        "source:
  host: 127.0.0.1
  port: {port}
  database: {DATABASE}
  user: postgres
  sslmode: disable
  slot: {slot}
  publication: {PUBLICATION}
  statusIntervalMs: 1000
  applicationName: {slot}
kafka:
  bootstrapServers: {bootstrap}
  topics:
    create: true
    partitions: 1
    replicationFactor: 1
  librdkafka:
    linger.ms: \"5\"
{format}{streaming}{telemetry}entities:
  - name: Order
    table: public.orders
    tenantColumn: tenant_id
    versionColumn: version
    userColumn: updated_by
    streaming:
      topicPrefix: {topic_prefix}
      eventPayloadMode: diff
      priorityField: priority
",
        port = lab.pg_port(),
        bootstrap = lab.bootstrap(),
    );
    let path = lab.work_dir().join(format!("{slot}.yaml"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_every_label_set_of_that_metric_only() {
        let text = "# TYPE entity_cdc_events_acknowledged_total counter\n\
            entity_cdc_events_acknowledged_total{entity=\"Order\",change_type=\"CREATE\"} 1000\n\
            entity_cdc_events_acknowledged_total{entity=\"Order\",change_type=\"UPDATE\"} 500\n\
            entity_cdc_events_acknowledged_totalx 7\n\
            entity_cdc_events_produced_total{entity=\"Order\"} 9\n";
        assert_eq!(
            metric_sum(text, "entity_cdc_events_acknowledged_total"),
            1500.0
        );
        assert_eq!(
            metric_sum(text, "entity_cdc_events_dead_lettered_total"),
            0.0
        );
    }
}
