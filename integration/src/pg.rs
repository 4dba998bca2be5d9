//! A PostgreSQL server started by the tests themselves.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What to change from the defaults when starting a server.
#[derive(Debug, Clone, Default)]
pub struct PgServerOptions {
    /// Extra `-c name=value` settings for the postmaster.
    pub settings: Vec<(String, String)>,
    /// Lines written to pg_hba.conf before the default `trust` lines (first match wins).
    pub hba_lines: Vec<String>,
    /// SQL run as the superuser right after the server is up (e.g. roles with passwords).
    pub init_sql: Vec<String>,
}

/// A running PostgreSQL server; stopped and deleted on drop.
pub struct PgServer {
    /// Port the server listens on, on 127.0.0.1.
    pub port: u16,
    /// Data directory, inside `_dir`.
    pub data_dir: PathBuf,
    bin_dir: PathBuf,
    run_as_postgres: bool,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl PgServer {
    /// Starts a server with the defaults: trust authentication, wal_level=logical.
    pub fn start() -> Result<PgServer> {
        Self::start_with(PgServerOptions::default())
    }

    /// Starts a server with extra settings, pg_hba lines and initial SQL.
    pub fn start_with(options: PgServerOptions) -> Result<PgServer> {
        let bin_dir = pg_bin_dir()?;
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("entity-cdc-pg-")
            .tempdir()
            .context("creating a temporary folder for PostgreSQL")?;
        let data_dir = dir.path().join("data");
        if run_as_postgres {
            // The postgres user must be able to enter the folder and write the data directory.
            chown_postgres(dir.path())?;
        }
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb.arg("-D").arg(&data_dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run_checked(as_user(initdb, run_as_postgres), "initdb")?;

        if !options.hba_lines.is_empty() {
            let hba = data_dir.join("pg_hba.conf");
            let existing = std::fs::read_to_string(&hba).context("reading pg_hba.conf")?;
            let mut text = options.hba_lines.join("\n");
            text.push('\n');
            text.push_str(&existing);
            std::fs::write(&hba, text).context("writing pg_hba.conf")?;
        }

        let port = free_port()?;
        let mut server = PgServer {
            port,
            data_dir,
            bin_dir,
            run_as_postgres,
            child: None,
            _dir: dir,
        };
        server.spawn(&options.settings)?;
        for sql in &options.init_sql {
            server.psql(sql)?;
        }
        Ok(server)
    }

    fn spawn(&mut self, settings: &[(String, String)]) -> Result<()> {
        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string());
        let socket_dir = self.data_dir.clone();
        let defaults = [
            ("listen_addresses", "127.0.0.1".to_owned()),
            ("unix_socket_directories", socket_dir.display().to_string()),
            ("wal_level", "logical".to_owned()),
            ("max_wal_senders", "20".to_owned()),
            ("max_replication_slots", "20".to_owned()),
            ("fsync", "off".to_owned()),
            ("synchronous_commit", "off".to_owned()),
            ("full_page_writes", "off".to_owned()),
            ("wal_sender_timeout", "60s".to_owned()),
        ];
        for (name, value) in defaults {
            if !settings.iter().any(|(n, _)| n == name) {
                cmd.arg("-c").arg(format!("{name}={value}"));
            }
        }
        for (name, value) in settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        let log = std::fs::File::create(self.data_dir.join("server.log"))
            .context("creating the server log")?;
        let log2 = log
            .try_clone()
            .context("duplicating the server log handle")?;
        let mut cmd = as_user(cmd, self.run_as_postgres);
        cmd.stdout(Stdio::from(log)).stderr(Stdio::from(log2));
        self.child = Some(cmd.spawn().context("starting postgres")?);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = Command::new(self.bin_dir.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("running pg_isready")?;
            if status.success() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(exit) = child.try_wait().context("polling postgres")? {
                    bail!(
                        "postgres exited with {exit} while starting; log:\n{}",
                        self.log()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not become ready in 30 s; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    /// A libpq-style connection string for database `db` as the superuser.
    pub fn conn_str(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Runs SQL through psql on database `postgres` and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_db("postgres", sql)
    }

    /// Runs SQL through psql on database `db` and returns its unaligned, tuples-only output.
    pub fn psql_db(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin_dir.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .arg("-c")
            .arg(sql)
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql failed on {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// Connects with tokio-postgres to database `db` as the superuser.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_str(db), tokio_postgres::NoTls)
                .await
                .with_context(|| format!("connecting to database {db}"))?;
        tokio::spawn(async move {
            // The connection ends when the client is dropped; an error then is expected.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Creates a fresh database and returns its name.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.psql(&format!("create database \"{name}\""))?;
        Ok(name.to_owned())
    }

    /// Stops the server immediately (like a crash) and starts it again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_child();
        self.spawn(&[])
    }

    /// Stops the server (fast shutdown) without starting it again.
    pub fn stop(&mut self) {
        self.stop_child();
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn(&[])
    }

    fn stop_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT is PostgreSQL's fast shutdown: clients are disconnected, WAL is flushed.
            // As root the child is `runuser`, which does not forward SIGINT: signal the
            // postmaster itself (first line of postmaster.pid), or it outlives the test.
            let pid = self.postmaster_pid().unwrap_or(child.id());
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(pid.to_string())
                .status();
            // A fast shutdown waits for walsenders until their client confirms everything
            // sent (up to wal_sender_timeout); past 20 s, escalate to an immediate shutdown
            // (SIGQUIT), then SIGKILL, on the postmaster itself: killing `runuser` alone
            // would leave the postmaster holding the data directory and the port.
            for (signal, wait) in [("-INT", 20), ("-QUIT", 5), ("-KILL", 5)] {
                if signal != "-INT" {
                    let _ = Command::new("kill")
                        .arg(signal)
                        .arg(pid.to_string())
                        .status();
                }
                let deadline = Instant::now() + Duration::from_secs(wait);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The postmaster's process id, from `postmaster.pid` in the data directory.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The folder holding PostgreSQL's programs (initdb, postgres, pg_recvlogical, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop_child();
    }
}

/// Finds PostgreSQL's bin folder: `$ENTITY_CDC_TEST_PG_BIN`, then `pg_config --bindir`,
/// then the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("ENTITY_CDC_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("postgres").exists() {
                return Ok(dir);
            }
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL not found: set ENTITY_CDC_TEST_PG_BIN or install postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    candidates.sort();
    candidates
        .pop()
        .context("no /usr/lib/postgresql/*/bin/postgres found")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_postgres(path: &Path) -> Result<()> {
    let status = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .context("running chown")?;
    if !status.success() {
        bail!(
            "chown postgres {} failed (does the postgres user exist?)",
            path.display()
        );
    }
    Ok(())
}

/// Wraps a command so that it runs as the postgres user when we are root.
fn as_user(cmd: Command, run_as_postgres: bool) -> Command {
    if !run_as_postgres {
        return cmd;
    }
    let mut wrapped = Command::new("runuser");
    wrapped
        .args(["-u", "postgres", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    wrapped
}

fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Asks the kernel for a free loopback port.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

impl PgServer {
    /// Runs a SQL script through `psql -f` on database `db`; with `stop_on_error` false,
    /// statements that fail (as some cases expect) do not stop the script.
    pub fn psql_file(&self, db: &str, sql: &str, stop_on_error: bool) -> Result<String> {
        let mut file = tempfile::NamedTempFile::new().context("creating a temporary SQL file")?;
        std::io::Write::write_all(&mut file, sql.as_bytes()).context("writing the SQL file")?;
        let out = Command::new(self.bin_dir.join("psql"))
            .args(["-X", "-q", "-A", "-t"])
            .args([
                "-v",
                if stop_on_error {
                    "ON_ERROR_STOP=1"
                } else {
                    "ON_ERROR_STOP=0"
                },
            ])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .arg("-f")
            .arg(file.path())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql -f failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }
}
