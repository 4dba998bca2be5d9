//! The benchmark's own PostgreSQL and broker, its working folder, and the slots it made.
//!
//! PostgreSQL is a throwaway cluster (initdb in a temporary folder, the integration
//! crate's [`PgServer`]) with the integration defaults: `fsync=off`,
//! `synchronous_commit=off`, `full_page_writes=off`. Those change how fast the workload is
//! *written*, not what is read: every pass decodes the same WAL from the same server, so the
//! ceiling and the connector are compared on equal terms. Checkpoints are pushed out
//! (`max_wal_size`, `checkpoint_timeout`) so that none lands in the middle of a pass.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use entity_cdc_integration::registry::SchemaRegistry;
use entity_cdc_integration::{KafkaBroker, PgServer, PgServerOptions};

use crate::supervision::{check_cancelled, Supervised, POLL};
use crate::workload;

/// The database the workloads write and the passes read.
pub const DATABASE: &str = "bench";

/// The publication every pass reads.
pub const PUBLICATION: &str = "bench";

/// PostgreSQL, the broker, the Schema Registry stand-in (for `run-avro`), a working folder,
/// and a connection for the harness's queries.
pub struct Lab {
    /// The integration crate's registry, served by this process's runtime: what it costs
    /// (little: the connector registers each schema once and caches its id) is not the
    /// connector's.
    registry: SchemaRegistry,
    client: tokio_postgres::Client,
    /// Replaced by [`Lab::restart_broker`]; never locked across an await.
    broker: std::sync::Mutex<KafkaBroker>,
    pg: PgServer,
    work_dir: tempfile::TempDir,
    slots: std::sync::Mutex<Vec<String>>,
}

impl Lab {
    /// Starts PostgreSQL and the broker, creates the database, table and publication.
    /// Fails saying which of the two could not be started or reached.
    pub async fn start() -> Result<Lab> {
        let work_dir = tempfile::Builder::new()
            .prefix("entity-cdc-bench-")
            .tempdir()
            .context("creating the benchmark's working folder")?;
        let options = PgServerOptions {
            settings: [
                ("max_replication_slots", "64"),
                ("max_wal_senders", "20"),
                ("max_wal_size", "32GB"),
                ("checkpoint_timeout", "1h"),
                ("shared_buffers", "1GB"),
            ]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
            ..PgServerOptions::default()
        };
        let pg = tokio::task::spawn_blocking(move || PgServer::start_with(options))
            .await
            .context("starting PostgreSQL")?
            .map_err(|e| anyhow!("PostgreSQL could not be started: {e:#}"))?;
        check_cancelled()?;
        let broker = tokio::task::spawn_blocking(KafkaBroker::start)
            .await
            .context("starting the broker")?
            .map_err(|e| {
                anyhow!("the Kafka broker (tansu) could not be started or reached: {e:#}")
            })?;
        check_cancelled()?;
        pg.psql(&format!("create database {DATABASE}"))
            .map_err(|e| anyhow!("PostgreSQL on port {} is not usable: {e:#}", pg.port))?;
        let client = pg
            .connect(DATABASE)
            .await
            .with_context(|| format!("connecting to PostgreSQL on port {}", pg.port))?;
        client
            .batch_execute(workload::SCHEMA)
            .await
            .context("creating the orders table and the publication")?;
        let registry = SchemaRegistry::start()
            .await
            .context("starting the Schema Registry stand-in")?;
        Ok(Lab {
            registry,
            client,
            broker: std::sync::Mutex::new(broker),
            pg,
            work_dir,
            slots: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The port PostgreSQL listens on (127.0.0.1).
    pub fn pg_port(&self) -> u16 {
        self.pg.port
    }

    /// PostgreSQL's programs.
    pub fn pg_bin(&self) -> &Path {
        self.pg.bin_dir()
    }

    /// The Schema Registry's URL.
    pub fn registry_url(&self) -> String {
        self.registry.url()
    }

    /// The broker's process id (None for an external broker).
    pub fn broker_pid(&self) -> Option<u32> {
        self.broker_lock().pid()
    }

    /// The broker's bootstrap address.
    pub fn bootstrap(&self) -> String {
        self.broker_lock().bootstrap().to_owned()
    }

    /// Replaces the broker by a fresh one. tansu keeps every record in memory: a full run
    /// produces about ten million, so each `run` pass gets an empty broker.
    pub async fn restart_broker(&self) -> Result<()> {
        let fresh = tokio::task::spawn_blocking(KafkaBroker::start)
            .await
            .context("restarting the broker")?
            .map_err(|e| anyhow!("the Kafka broker (tansu) could not be restarted: {e:#}"))?;
        let old = std::mem::replace(&mut *self.broker_lock(), fresh);
        drop(old);
        check_cancelled()
    }

    fn broker_lock(&self) -> std::sync::MutexGuard<'_, KafkaBroker> {
        self.broker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The working folder (configs, scripts, logs), removed at the end.
    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// Runs SQL on the benchmark database.
    pub async fn sql(&self, sql: &str) -> Result<()> {
        self.client
            .batch_execute(sql)
            .await
            .with_context(|| format!("running {sql:?}"))
    }

    /// The first column of the first row of `sql`, as text.
    pub async fn text(&self, sql: &str) -> Result<String> {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .with_context(|| format!("running {sql:?}"))?;
        row.try_get::<_, String>(0)
            .with_context(|| format!("reading the result of {sql:?}"))
    }

    /// The server's WAL position now, `X/Y`.
    pub async fn current_lsn(&self) -> Result<String> {
        self.text("select pg_current_wal_lsn()::text").await
    }

    /// Creates a pgoutput slot and remembers it for the cleanup.
    pub async fn create_slot(&self, name: &str) -> Result<()> {
        self.sql(&format!(
            "select pg_create_logical_replication_slot('{name}', 'pgoutput')"
        ))
        .await?;
        self.slots_lock().push(name.to_owned());
        Ok(())
    }

    /// Drops a slot, waiting for its reader's walsender to let go of it.
    pub async fn drop_slot(&self, name: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let active = self
                .client
                .query_opt(
                    "select active from pg_replication_slots where slot_name = $1",
                    &[&name],
                )
                .await
                .with_context(|| format!("looking up slot {name}"))?;
            match active {
                None => break,
                Some(row) if !row.try_get::<_, bool>(0).unwrap_or(true) => {
                    self.sql(&format!("select pg_drop_replication_slot('{name}')"))
                        .await?;
                    break;
                }
                Some(_) if Instant::now() > deadline => {
                    anyhow::bail!("slot {name} is still in use after 30 s")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        self.slots_lock().retain(|s| s != name);
        Ok(())
    }

    /// The pid of the walsender serving `slot`, once a reader has started it.
    pub async fn walsender_pid(&self, slot: &str) -> Result<Option<u32>> {
        let row = self
            .client
            .query_opt(
                "select active_pid from pg_replication_slots where slot_name = $1",
                &[&slot],
            )
            .await
            .with_context(|| format!("looking up the walsender of slot {slot}"))?;
        Ok(row
            .and_then(|r| r.try_get::<_, Option<i32>>(0).ok().flatten())
            .and_then(|pid| u32::try_from(pid).ok()))
    }

    /// Runs a SQL script through psql (a registered child, so Ctrl-C stops it).
    pub async fn psql_script(&self, script: &str, what: &str) -> Result<()> {
        let path = self.work_dir().join("script.sql");
        std::fs::write(&path, script).with_context(|| format!("writing the {what}"))?;
        let log = self.work_dir().join("psql.log");
        let log_file = std::fs::File::create(&log).context("creating psql's log")?;
        let mut cmd = std::process::Command::new(self.pg_bin().join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.pg_port().to_string(), "-U", "postgres", "-d"])
            .arg(DATABASE)
            .arg("-f")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log_file);
        let mut child = Supervised::spawn(cmd, what)?;
        child
            .wait_success(|| std::fs::read_to_string(&log).unwrap_or_default())
            .await?;
        Ok(())
    }

    /// Drops every slot left (ending the walsenders still holding one) and the
    /// publication, then stops PostgreSQL and the broker and removes their folders and the
    /// working folder. Returns what it removed, for the last line of the output.
    pub async fn shutdown(self) -> String {
        let mut done = Vec::new();
        let slots: Vec<String> = self.slots_lock().clone();
        let _ = self
            .client
            .batch_execute(
                "select pg_terminate_backend(active_pid) from pg_replication_slots \
                 where active_pid is not null",
            )
            .await;
        let mut dropped = 0;
        for slot in &slots {
            if self.drop_slot(slot).await.is_ok() {
                dropped += 1;
            }
        }
        done.push(format!("{dropped} of {} slot(s) dropped", slots.len()));
        if self
            .client
            .batch_execute(&format!("drop publication if exists {PUBLICATION}"))
            .await
            .is_ok()
        {
            done.push("publication dropped".to_owned());
        }
        let cluster_dir: Option<PathBuf> = self.pg.data_dir.parent().map(Path::to_path_buf);
        let work_dir = self.work_dir.path().to_path_buf();
        drop(self.client);
        drop(self.broker);
        let pg = self.pg;
        let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
        drop(self.work_dir);
        done.push("PostgreSQL and the broker stopped".to_owned());
        for dir in cluster_dir.iter().chain([&work_dir]) {
            if dir.exists() {
                done.push(format!("{} NOT removed", dir.display()));
            } else {
                done.push(format!("{} removed", dir.display()));
            }
        }
        done.join(", ")
    }

    fn slots_lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Polls `ready` until it is true, checking for Ctrl-C; fails with `what` after
    /// `timeout`.
    pub async fn wait_until<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if ready().await? {
                return Ok(());
            }
            check_cancelled()?;
            if Instant::now() > deadline {
                anyhow::bail!("{what} within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
