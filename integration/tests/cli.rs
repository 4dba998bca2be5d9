//! The `entity-cdc` binary end to end: configuration errors, `setup`, `check` and `tail`
//! against a real PostgreSQL 15, with the sample connector.yaml pointed at the test server
//! through its `ENTITY_CDC_PG*` variables.
//!
//! The binary is built once per test run with `cargo build --bin entity-cdc` (the
//! integration crate cannot name another package's binary through `CARGO_BIN_EXE_`), and
//! its path is taken from cargo's own build report.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use entity_cdc::source::Lsn;
use entity_cdc_integration::capture::assert_json;
use entity_cdc_integration::PgServer;
use serde_json::Value as Json;

/// Generous bound on any single wait: a passing test needs far less.
const WAIT: Duration = Duration::from_secs(10);

/// The database the sample configuration reads (ENTITY_CDC_PGDATABASE).
const DB: &str = "app";

/// The story's entity tables, as the sample connector.yaml declares them.
const TABLES: &str = "
create table public.orders (id bigint primary key, tenant_id bigint, status text,
  priority text, total numeric(12,2), version int, updated_by text);
create table public.products (id bigint primary key, tenant_id bigint, name text,
  price numeric(10,2), version int);
";

/// The path of the `entity-cdc` binary, built on first use.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cargo = Command::new(env!("CARGO"));
        // Cargo gives this test process the variables of the crate under test; build
        // scripts (ring's) watch CARGO_MANIFEST_DIR, so passing them on would make this
        // build and the next plain `cargo build` rebuild each other.
        for (name, _) in std::env::vars() {
            let set_by_cargo_for_tests = name.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&name.as_str());
            if set_by_cargo_for_tests {
                cargo.env_remove(name);
            }
        }
        let out = cargo
            .args(["build", "--bin", "entity-cdc", "--message-format=json"])
            .arg("--manifest-path")
            .arg(&manifest)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running cargo build: {e}"));
        assert!(out.status.success(), "cargo build --bin entity-cdc failed");
        // The compiler-artifact message of the binary names the executable.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Json>(line).ok())
            .filter(|m| m["target"]["name"] == "entity-cdc")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("cargo did not report the entity-cdc executable"))
    })
}

/// A configuration folder holding the sample connector.yaml, possibly edited.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    /// The sample connector.yaml with `edit` applied to its text.
    fn sample(edit: impl FnOnce(String) -> String) -> ConfigDir {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../connector.yaml");
        let text = std::fs::read_to_string(&sample)
            .unwrap_or_else(|e| panic!("reading {}: {e}", sample.display()));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
        std::fs::write(dir.path().join("connector.yaml"), edit(text))
            .unwrap_or_else(|e| panic!("writing the config: {e}"));
        ConfigDir { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("connector.yaml")
    }
}

/// The command for `entity-cdc --config <config> <args>` against `server` (or nowhere).
fn command(config: &ConfigDir, server: Option<&PgServer>, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("--config").arg(config.path()).args(args);
    // Only what the test says: no ENTITY_CDC_* from the caller's environment.
    for (name, _) in std::env::vars() {
        if name.starts_with("ENTITY_CDC_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("ENTITY_CDC_PGHOST", "127.0.0.1")
        .env("ENTITY_CDC_PGDATABASE", DB)
        .env("ENTITY_CDC_PGUSER", "postgres")
        .env_remove("NO_COLOR");
    if let Some(server) = server {
        cmd.env("ENTITY_CDC_PGPORT", server.port.to_string());
    }
    cmd
}

/// Runs a command to completion.
fn run(config: &ConfigDir, server: Option<&PgServer>, args: &[&str]) -> Output {
    command(config, server, args)
        .output()
        .unwrap_or_else(|e| panic!("running entity-cdc {args:?}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing both streams otherwise.
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

fn start_server() -> PgServer {
    let server = PgServer::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
    server
        .create_database(DB)
        .unwrap_or_else(|e| panic!("creating {DB}: {e:#}"));
    psql(&server, TABLES);
    server
}

fn psql(server: &PgServer, sql: &str) -> String {
    server
        .psql_db(DB, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:#}\nlog:\n{}", server.log()))
}

/// A `tail` process whose stdout lines arrive on a channel.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn spawn(config: &ConfigDir, server: &PgServer, args: &[&str]) -> Tail {
        let mut child = command(config, Some(server), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning entity-cdc {args:?}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tail { child, lines }
    }

    /// The next `count` JSON lines, without the per-run fields (lsn, xid, commitTime), and
    /// the raw lines.
    fn read(&mut self, count: usize) -> (Vec<Json>, Vec<Json>) {
        let deadline = Instant::now() + WAIT;
        let mut raw = Vec::new();
        while raw.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "tail printed {} of {count} lines: {raw:?}; stderr:\n{}",
                    raw.len(),
                    self.stop_for_stderr()
                )
            });
            let json: Json = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("tail printed a line that is not JSON ({e}): {line}"));
            raw.push(json);
        }
        let stable = raw
            .iter()
            .map(|line| {
                let mut line = line.clone();
                if let Some(object) = line.as_object_mut() {
                    for volatile in ["lsn", "xid", "commitTime"] {
                        object.remove(volatile);
                    }
                }
                line
            })
            .collect();
        (stable, raw)
    }

    /// Kills the process and returns what it wrote on stderr, for failure messages.
    fn stop_for_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
        }
        text
    }

    /// Sends SIGINT and waits for the exit; returns the exit code and stderr.
    fn interrupt(self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap_or_else(|e| panic!("running kill: {e}"));
        assert!(status.success(), "kill -INT {pid} failed");
        self.wait_exit()
    }

    /// Waits for a process that is expected to exit by itself (SIGINT if it has not yet,
    /// which is harmless either way); returns the exit code and stderr.
    fn interrupt_or_exit(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.wait_exit();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.interrupt()
    }

    /// Waits for the exit; returns the exit code and stderr.
    fn wait_exit(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let mut err = String::new();
                    if let Some(mut stream) = self.child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut stream, &mut err);
                    }
                    return (status.code(), err);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => panic!(
                    "tail did not exit within {WAIT:?} of SIGINT; stderr:\n{}",
                    self.stop_for_stderr()
                ),
                Err(e) => panic!("waiting for tail: {e}"),
            }
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Only a test that failed midway leaves the process running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `sql` until it prints `expected`.
fn wait_for(server: &PgServer, sql: &str, expected: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = psql(server, sql);
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} printed {got:?}, not {expected:?}, within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lsn(text: &str) -> Lsn {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not an LSN"))
}

#[test]
fn config_errors_exit_78_and_name_the_path_and_expectation() {
    let bad_port =
        ConfigDir::sample(|text| text.replace("port: ${ENTITY_CDC_PGPORT:-5432}", "port: abc"));
    let out = run(&bad_port, None, &["check"]);
    assert_exit(&out, 78, "port abc");
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}: source.port: expected an integer 1..65535, got \"abc\"\n",
            bad_port.path().display()
        )
    );
    assert_eq!(stdout(&out), "");

    let unknown_key = ConfigDir::sample(|text| {
        text.replace(
            "  slot: entity_cdc\n",
            "  slot: entity_cdc\n  colour: blue\n",
        )
    });
    let out = run(&unknown_key, None, &["setup"]);
    assert_exit(&out, 78, "unknown key");
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: {}: source.colour: unknown field, expected one of ",
            unknown_key.path().display()
        )),
        "{err}"
    );

    // A port from a variable is validated the same way, under the same path.
    let sample = ConfigDir::sample(|text| text);
    let out = command(&sample, None, &["tail"])
        .env("ENTITY_CDC_PGPORT", "99999")
        .output()
        .unwrap_or_else(|e| panic!("running entity-cdc tail: {e}"));
    assert_exit(&out, 78, "port 99999");
    assert!(
        stderr(&out).contains("source.port: expected an integer 1..65535, got \"99999\""),
        "{}",
        stderr(&out)
    );

    let missing = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let out = Command::new(binary())
        .arg("--config")
        .arg(missing.path().join("nope.yaml"))
        .arg("check")
        .output()
        .unwrap_or_else(|e| panic!("running entity-cdc: {e}"));
    assert_exit(&out, 78, "missing file");
    assert!(
        stderr(&out).contains("nope.yaml: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn setup_prints_applies_and_is_idempotent_and_check_follows() {
    let server = start_server();
    let config = ConfigDir::sample(|text| text);

    // Before setup: not ready (exit 2), each failing item with its fix.
    let out = run(&config, Some(&server), &["check"]);
    assert_exit(&out, 2, "check before setup");
    let report = stdout(&out);
    for line in [
        "OK    wal_level: logical",
        "FAIL  publication: entity_cdc does not exist; fix: entity-cdc setup --apply",
        "FAIL  replica identity \"public\".\"orders\": DEFAULT: updates and deletes would lack \
         the old row; fix: ALTER TABLE \"public\".\"orders\" REPLICA IDENTITY FULL",
        "FAIL  replica identity \"public\".\"products\": DEFAULT: updates and deletes would \
         lack the old row; fix: ALTER TABLE \"public\".\"products\" REPLICA IDENTITY FULL",
        "FAIL  slot: entity_cdc does not exist; fix: entity-cdc setup --apply",
        "not ready: 4 failed",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "missing line {line:?} in:\n{report}"
        );
    }

    // setup prints the plan and changes nothing.
    let plan = "\
-- publication entity_cdc does not exist
CREATE PUBLICATION \"entity_cdc\" FOR TABLE \"public\".\"orders\", \"public\".\"products\";
-- replica identity of \"public\".\"orders\" is DEFAULT: the connector needs the full old row of every update and delete
ALTER TABLE \"public\".\"orders\" REPLICA IDENTITY FULL;
-- replica identity of \"public\".\"products\" is DEFAULT: the connector needs the full old row of every update and delete
ALTER TABLE \"public\".\"products\" REPLICA IDENTITY FULL;
-- replication slot entity_cdc does not exist
SELECT pg_create_logical_replication_slot('entity_cdc', 'pgoutput');
";
    let out = run(&config, Some(&server), &["setup"]);
    assert_exit(&out, 0, "setup");
    assert_eq!(stdout(&out).trim_end(), plan.trim_end());
    assert_eq!(
        psql(
            &server,
            "select (select count(*) from pg_publication)::text || ' ' || \
             (select count(*) from pg_replication_slots)::text"
        ),
        "0 0",
        "setup without --apply must change nothing"
    );

    let out = run(&config, Some(&server), &["setup", "--apply"]);
    assert_exit(&out, 0, "setup --apply");
    assert_eq!(
        stdout(&out).trim_end(),
        format!("{}\n\napplied 4 statement(s)", plan.trim_end())
    );
    assert_eq!(
        psql(
            &server,
            "select string_agg(c.relname || '=' || c.relreplident::text, ',' order by c.relname) \
             from pg_publication_tables p join pg_class c on c.relname = p.tablename \
             where p.pubname = 'entity_cdc'"
        ),
        "orders=f,products=f"
    );
    assert_eq!(
        psql(
            &server,
            "select slot_name || ' ' || plugin || ' ' || slot_type from pg_replication_slots"
        ),
        "entity_cdc pgoutput logical"
    );

    let out = run(&config, Some(&server), &["setup"]);
    assert_exit(&out, 0, "second setup");
    assert_eq!(
        stdout(&out).trim_end(),
        "-- nothing to do: the database is ready"
    );
    let out = run(&config, Some(&server), &["setup", "--apply"]);
    assert_exit(&out, 0, "second setup --apply");
    assert_eq!(
        stdout(&out).trim_end(),
        "-- nothing to do: the database is ready"
    );

    let out = run(&config, Some(&server), &["check"]);
    assert_exit(&out, 0, "check after setup");
    let report = stdout(&out);
    assert_eq!(report.trim_end().lines().last(), Some("ready"), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    for line in [
        "OK    publication: entity_cdc exists",
        "OK    publication tables: publishes every entity table",
        "OK    replica identity \"public\".\"orders\": FULL",
        "OK    replica identity \"public\".\"products\": FULL",
        "OK    slot: entity_cdc exists",
        "OK    slot plugin: pgoutput",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "missing line {line:?} in:\n{report}"
        );
    }

    assert!(
        report
            .lines()
            .any(|l| l.starts_with("OK    spill: spill files can be created in ")),
        "{report}"
    );

    // A spill directory that cannot be written: `check` says so and `run` refuses to start,
    // both naming the configured path.
    let bad_spill = ConfigDir::sample(|text| {
        text.replace(
            "  lanes:\n    BULK:",
            "  spill: { directory: /nonexistent/entity-cdc-spill }\n  lanes:\n    BULK:",
        )
    });
    let out = run(&bad_spill, Some(&server), &["check"]);
    assert_exit(&out, 2, "check with a missing spill directory");
    assert!(
        stdout(&out).lines().any(|l| l
            == "FAIL  spill: streaming.spill.directory /nonexistent/entity-cdc-spill: cannot \
                create a spill file there: No such file or directory (os error 2); fix: set \
                streaming.spill.directory to a directory the connector may write to, or \
                streaming.spill.maxBytes: 0"),
        "{}",
        stdout(&out)
    );
    let out = command(&bad_spill, Some(&server), &["run"])
        .env("ENTITY_CDC_TELEMETRY_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap_or_else(|e| panic!("running entity-cdc run: {e}"));
    assert_exit(&out, 1, "run with a missing spill directory");
    assert!(
        stderr(&out).contains(
            "streaming.spill.directory /nonexistent/entity-cdc-spill: cannot create a spill \
             file there: No such file or directory (os error 2)"
        ) && stderr(&out).contains("hint: set streaming.spill.directory"),
        "{}",
        stderr(&out)
    );

    // Something that would stop the connector again: a table falls back to DEFAULT.
    psql(
        &server,
        "alter table public.products replica identity default",
    );
    let out = run(&config, Some(&server), &["check"]);
    assert_exit(&out, 2, "check with products back to DEFAULT");
    assert!(
        stdout(&out).contains("fix: ALTER TABLE \"public\".\"products\" REPLICA IDENTITY FULL\n"),
        "{}",
        stdout(&out)
    );
}

/// The expected tail lines of [`STORY`], without lsn, xid and commitTime.
const STORY_LINES: &[&str] = &[
    r#"{"index":0,"relation":{"schema":"public","table":"orders"},"change":"insert","new":{"id":1,"tenant_id":7,"status":"new","priority":"HIGH","total":12.50,"version":1,"updated_by":"alice"}}"#,
    r#"{"index":1,"relation":{"schema":"public","table":"products"},"change":"insert","new":{"id":10,"tenant_id":7,"name":"widget","price":3.99,"version":1}}"#,
    r#"{"index":0,"relation":{"schema":"public","table":"orders"},"change":"update","old":{"id":1,"tenant_id":7,"status":"new","priority":"HIGH","total":12.50,"version":1,"updated_by":"alice"},"new":{"id":1,"tenant_id":7,"status":"paid","priority":"HIGH","total":12.50,"version":2,"updated_by":"bob"}}"#,
    r#"{"index":0,"relation":{"schema":"public","table":"products"},"change":"delete","old":{"id":10,"tenant_id":7,"name":"widget","price":3.99,"version":1}}"#,
];

/// Three transactions over the two entity tables.
fn story(server: &PgServer) {
    psql(
        server,
        "begin; insert into orders values (1, 7, 'new', 'HIGH', 12.50, 1, 'alice'); \
         insert into products values (10, 7, 'widget', 3.99, 1); commit",
    );
    psql(
        server,
        "update orders set status = 'paid', version = 2, updated_by = 'bob' where id = 1",
    );
    psql(server, "delete from products where id = 10");
}

fn assert_lines(actual: &[Json], expected: &[&str]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?}");
    for (line, want) in actual.iter().zip(expected) {
        assert_json(line, want);
    }
}

#[test]
fn tail_temporary_prints_the_changes_and_leaves_nothing_behind() {
    let server = start_server();
    // The publication and identities only: no slot, so that any slot afterwards is a leak.
    psql(
        &server,
        "create publication entity_cdc for table public.orders, public.products; \
         alter table public.orders replica identity full; \
         alter table public.products replica identity full",
    );
    let config = ConfigDir::sample(|text| text);
    let mut tail = Tail::spawn(&config, &server, &["tail", "--temporary"]);
    // Changes count from the temporary slot's creation: wait until it streams.
    wait_for(
        &server,
        "select count(*) from pg_replication_slots where temporary and active",
        "1",
    );

    story(&server);
    let (lines, raw) = tail.read(4);
    assert_lines(&lines, STORY_LINES);
    // The volatile fields are there, and the two changes of the first transaction share them.
    assert_eq!(raw[0]["lsn"], raw[1]["lsn"]);
    assert_eq!(raw[0]["xid"], raw[1]["xid"]);
    assert_ne!(raw[1]["lsn"], raw[2]["lsn"]);
    for line in &raw {
        let time = line["commitTime"].as_str().unwrap_or_default();
        assert!(
            time.ends_with('Z') && time.len() == 27,
            "commitTime {time:?}"
        );
    }

    let (code, err) = tail.interrupt();
    assert_eq!(code, Some(0), "tail exit; stderr:\n{err}");
    // The log goes to stderr, plain text when stderr is not a terminal.
    assert!(err.contains("SIGINT received; stopping"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "escape codes in a log that is not a terminal: {err:?}"
    );
    // The temporary slot goes with its connection: nothing is left behind.
    wait_for(&server, "select count(*) from pg_replication_slots", "0");
}

/// End LSNs of the commits on `slot`, through pgoutput itself: a Commit message is tag `C`,
/// flags, commit LSN, end LSN (bytes 10..18), timestamp.
fn commit_end_lsns(server: &PgServer, slot: &str) -> Vec<Lsn> {
    let text = psql(
        server,
        &format!(
            "select encode(substring(data from 11 for 8), 'hex') \
             from pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL, \
               'proto_version', '1', 'publication_names', 'entity_cdc') \
             where get_byte(data, 0) = 67"
        ),
    );
    text.lines()
        .map(|hex| {
            let value = u64::from_str_radix(hex, 16)
                .unwrap_or_else(|e| panic!("commit end lsn {hex:?}: {e}"));
            lsn(&format!("{:X}/{:X}", value >> 32, value & 0xFFFF_FFFF))
        })
        .collect()
}

#[test]
fn tail_on_the_configured_slot_confirms_what_it_printed() {
    let server = start_server();
    let config = ConfigDir::sample(|text| text);
    let out = run(&config, Some(&server), &["setup", "--apply"]);
    assert_exit(&out, 0, "setup --apply");
    // A second slot, never consumed, tells where each commit record ends.
    psql(
        &server,
        "select pg_create_logical_replication_slot('oracle', 'pgoutput')",
    );

    let mut tail = Tail::spawn(&config, &server, &["tail"]);
    wait_for(
        &server,
        "select active::text from pg_replication_slots where slot_name = 'entity_cdc'",
        "true",
    );
    story(&server);
    let (lines, _) = tail.read(4);
    assert_lines(&lines, STORY_LINES);
    let (code, err) = tail.interrupt();
    assert_eq!(code, Some(0), "tail exit; stderr:\n{err}");

    let ends = commit_end_lsns(&server, "oracle");
    assert_eq!(ends.len(), 3, "three transactions");
    let last_end = ends[2];
    let wal_now = lsn(&psql(&server, "select pg_current_wal_insert_lsn()"));
    wait_for(
        &server,
        "select active::text from pg_replication_slots where slot_name = 'entity_cdc'",
        "false",
    );
    let confirmed = lsn(&psql(
        &server,
        "select confirmed_flush_lsn from pg_replication_slots where slot_name = 'entity_cdc'",
    ));
    // Everything printed is confirmed (the last commit record to its end), and nothing
    // beyond what the server has written.
    assert!(
        confirmed >= last_end,
        "confirmed_flush_lsn {confirmed} is before the last printed commit's end {last_end}"
    );
    assert!(
        confirmed <= wal_now,
        "confirmed_flush_lsn {confirmed} is past the server's WAL {wal_now}"
    );

    // A second tail on the slot starts after what the first printed: only the new row.
    let mut tail = Tail::spawn(&config, &server, &["tail"]);
    wait_for(
        &server,
        "select active::text from pg_replication_slots where slot_name = 'entity_cdc'",
        "true",
    );
    psql(
        &server,
        "insert into products values (11, 8, 'gadget', 10.00, 1)",
    );
    let (lines, _) = tail.read(1);
    assert_lines(
        &lines,
        &[
            r#"{"index":0,"relation":{"schema":"public","table":"products"},"change":"insert","new":{"id":11,"tenant_id":8,"name":"gadget","price":10.00,"version":1}}"#,
        ],
    );
    let (code, err) = tail.interrupt();
    assert_eq!(code, Some(0), "second tail exit; stderr:\n{err}");
    psql(&server, "select pg_drop_replication_slot('oracle')");
}

/// Runs `tail --end-lsn <end>` on the configured slot, which must stop by itself; returns
/// every line it printed, without the per-run fields (lsn, xid, commitTime).
fn tail_to(config: &ConfigDir, server: &PgServer, end: &str) -> Vec<Json> {
    let mut child = command(config, Some(server), &["tail", "--end-lsn", end])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning entity-cdc tail: {e}"));
    let deadline = Instant::now() + WAIT;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            panic!(
                "tail --end-lsn {end} did not stop within {WAIT:?}; stderr:\n{}",
                out.map(|o| stderr(&o)).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("reading tail's output: {e}"));
    assert_exit(&out, 0, &format!("tail --end-lsn {end}"));
    assert!(
        stderr(&out).contains(&format!("end lsn reached end_lsn={end}")),
        "{}",
        stderr(&out)
    );
    stdout(&out)
        .lines()
        .map(|line| {
            let mut json: Json = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("tail printed a line that is not JSON ({e}): {line}"));
            if let Some(object) = json.as_object_mut() {
                for volatile in ["lsn", "xid", "commitTime"] {
                    object.remove(volatile);
                }
            }
            json
        })
        .collect()
}

#[test]
fn tail_end_lsn_prints_the_transactions_up_to_it_and_exits() {
    let server = start_server();
    let config = ConfigDir::sample(|text| text);
    let out = run(&config, Some(&server), &["setup", "--apply"]);
    assert_exit(&out, 0, "setup --apply");
    psql(
        &server,
        "select pg_create_logical_replication_slot('oracle', 'pgoutput')",
    );
    story(&server);
    // With synchronous_commit=off the commits reach the decodable (flushed) WAL within
    // the WAL writer's delay: wait until the oracle sees all three.
    let deadline = Instant::now() + WAIT;
    let ends = loop {
        let ends = commit_end_lsns(&server, "oracle");
        if ends.len() == 3 || Instant::now() > deadline {
            break ends;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ends.len(), 3, "three transactions");

    // Up to the end of the second commit: the first two transactions, whole.
    let lines = tail_to(&config, &server, &ends[1].to_string());
    assert_lines(&lines, &STORY_LINES[..3]);

    // Up to the WAL's current end: the third transaction only (the slot moved on), then
    // the stop comes from the commit or, past it, from the walsender's keepalive.
    let now = psql(&server, "select pg_current_wal_lsn()");
    let lines = tail_to(&config, &server, &now);
    assert_lines(&lines, &STORY_LINES[3..]);

    // Nothing left before the end: no line, and it still stops (on a keepalive).
    let lines = tail_to(&config, &server, &now);
    assert_eq!(lines, Vec::<Json>::new());
    let confirmed = lsn(&psql(
        &server,
        "select confirmed_flush_lsn from pg_replication_slots where slot_name = 'entity_cdc'",
    ));
    assert!(
        confirmed >= ends[2],
        "confirmed_flush_lsn {confirmed} is before the last printed commit's end {}",
        ends[2]
    );
    psql(&server, "select pg_drop_replication_slot('oracle')");
}

#[test]
fn runtime_errors_exit_1_with_the_cause_and_what_to_run() {
    let config = ConfigDir::sample(|text| text);

    // No server: the message names where it tried and why it failed.
    let port = entity_cdc_integration::pg::free_port()
        .unwrap_or_else(|e| panic!("finding a free port: {e:#}"));
    let out = command(&config, None, &["check"])
        .env("ENTITY_CDC_PGPORT", port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("running entity-cdc check: {e}"));
    assert_exit(&out, 1, "check without a server");
    assert!(
        stderr(&out).starts_with(&format!(
            "error: connecting to database app on 127.0.0.1:{port} as postgres: \
             error connecting to server: "
        )),
        "{}",
        stderr(&out)
    );

    let server = start_server();
    let out = command(&config, Some(&server), &["setup"])
        .env("ENTITY_CDC_PGDATABASE", "nope")
        .output()
        .unwrap_or_else(|e| panic!("running entity-cdc setup: {e}"));
    assert_exit(&out, 1, "setup on a missing database");
    assert!(
        stderr(&out).contains("db error: FATAL: database \"nope\" does not exist"),
        "{}",
        stderr(&out)
    );

    // tail before setup: the publication is missing (pgoutput itself would say so only at
    // the first change decoded), and the hint says what to run.
    for args in [&["tail"][..], &["tail", "--temporary"][..]] {
        let out = run(&config, Some(&server), args);
        assert_exit(&out, 1, "tail without a publication");
        assert_eq!(
            stderr(&out),
            "error: publication \"entity_cdc\" does not exist\n\
             hint: create the publication and the slot with `entity-cdc setup --apply`, then \
             verify with `entity-cdc check`\n"
        );
    }
    // With the publication, the missing slot is next.
    psql(
        &server,
        "create publication entity_cdc for table public.orders, public.products",
    );
    let out = run(&config, Some(&server), &["tail"]);
    assert_exit(&out, 1, "tail without a slot");
    assert_eq!(
        stderr(&out),
        "error: replication slot \"entity_cdc\" does not exist\n\
         hint: create the slot and the publication with `entity-cdc setup --apply`, then \
         verify with `entity-cdc check`\n"
    );

    // A second reader of a busy slot is refused with the reason and the way out.
    let out = run(&config, Some(&server), &["setup", "--apply"]);
    assert_exit(&out, 0, "setup --apply");
    let first = Tail::spawn(&config, &server, &["tail"]);
    wait_for(
        &server,
        "select active::text from pg_replication_slots where slot_name = 'entity_cdc'",
        "true",
    );
    let out = run(&config, Some(&server), &["tail"]);
    assert_exit(&out, 1, "tail on a busy slot");
    let err = stderr(&out);
    assert!(
        err.starts_with("error: replication slot \"entity_cdc\" is active for another process"),
        "{err}"
    );
    assert!(
        err.contains("\nhint: another process is reading this slot"),
        "{err}"
    );
    let (code, err) = first.interrupt();
    assert_eq!(code, Some(0), "first tail; stderr:\n{err}");
}

#[test]
fn an_idle_tail_does_not_hold_up_a_server_shutdown() {
    let mut server = start_server();
    psql(
        &server,
        "create publication entity_cdc for table public.orders, public.products",
    );
    let config = ConfigDir::sample(|text| text);
    let tail = Tail::spawn(&config, &server, &["tail", "--temporary"]);
    wait_for(
        &server,
        "select count(*) from pg_replication_slots where temporary and active",
        "1",
    );
    // A fast shutdown waits until each walsender's client has confirmed all it was sent
    // (up to wal_sender_timeout, 60 s). A tail that has printed nothing has nothing in
    // flight: it must answer the walsender's last keepalive with the position sent.
    let started = Instant::now();
    server.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the shutdown took {took:?}");

    // The temporary slot is gone with the server's connection: tail cannot resume.
    let (code, err) = tail.interrupt_or_exit();
    assert_eq!(code, Some(1), "stderr:\n{err}");
    assert!(
        err.contains("error: the server ended the replication stream"),
        "{err}"
    );
    server
        .start_again()
        .unwrap_or_else(|e| panic!("starting PostgreSQL again: {e:#}"));
    wait_for(&server, "select count(*) from pg_replication_slots", "0");
}

#[test]
fn tail_on_the_configured_slot_rides_over_a_server_restart() {
    let mut server = start_server();
    let config = ConfigDir::sample(|text| text);
    let out = run(&config, Some(&server), &["setup", "--apply"]);
    assert_exit(&out, 0, "setup --apply");
    let mut tail = Tail::spawn(&config, &server, &["tail"]);
    wait_for(
        &server,
        "select active::text from pg_replication_slots where slot_name = 'entity_cdc'",
        "true",
    );
    story(&server);
    let (lines, _) = tail.read(4);
    assert_lines(&lines, STORY_LINES);

    server
        .restart()
        .unwrap_or_else(|e| panic!("restarting PostgreSQL: {e:#}"));
    psql(
        &server,
        "insert into products values (11, 8, 'gadget', 10.00, 1)",
    );
    let new_line = r#"{"index":0,"relation":{"schema":"public","table":"products"},"change":"insert","new":{"id":11,"tenant_id":8,"name":"gadget","price":10.00,"version":1}}"#;
    let new_line: Json = serde_json::from_str(new_line).expect("valid JSON");
    // PostgreSQL 15 may resend what was confirmed before the restart (it does not write a
    // slot whose confirmed_flush alone moved at shutdown): lines printed before may come
    // again, nothing else, and the new row comes.
    loop {
        let (lines, _) = tail.read(1);
        if lines[0] == new_line {
            break;
        }
        assert!(
            STORY_LINES
                .iter()
                .any(|l| serde_json::from_str::<Json>(l).ok().as_ref() == Some(&lines[0])),
            "after the restart, neither a resent line nor the new row: {}",
            lines[0]
        );
    }
    let (code, err) = tail.interrupt();
    assert_eq!(code, Some(0), "tail exit; stderr:\n{err}");
}

/// A column named wrongly in connector.yaml is found by `check` and refused by `run` at
/// start, before anything is read, naming the entity, the config path and the table.
#[test]
fn a_misnamed_entity_column_fails_check_and_run_at_start() {
    let server = start_server();
    let good = ConfigDir::sample(|text| text);
    assert_exit(
        &run(&good, Some(&server), &["setup", "--apply"]),
        0,
        "setup --apply",
    );
    let bad = ConfigDir::sample(|text| {
        // The second tenantColumn is Product's.
        let at = text
            .rfind("tenantColumn: tenant_id")
            .expect("Product's tenantColumn");
        format!(
            "{}tenantColumn: tenantid{}",
            &text[..at],
            &text[at + "tenantColumn: tenant_id".len()..]
        )
    });
    let expected = "entity Product: entities[1].tenantColumn names column \"tenantid\", \
                    which \"public\".\"products\" does not have";
    let out = run(&bad, Some(&server), &["check"]);
    assert_exit(&out, 2, "check with a misnamed column");
    assert!(
        stdout(&out).contains(&format!("FAIL  entity Product: {expected}")),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("OK    entity Order:"),
        "{}",
        stdout(&out)
    );
    let out = run(&bad, Some(&server), &["run"]);
    assert_exit(&out, 1, "run with a misnamed column");
    assert!(
        stderr(&out).contains(&format!("error: {expected}")),
        "{}",
        stderr(&out)
    );
}
