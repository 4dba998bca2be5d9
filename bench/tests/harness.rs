//! The harness's smoke test: it refuses to run without PostgreSQL or the broker, saying
//! which, and an interrupted run leaves nothing behind (no process, no temporary folder,
//! no slot: the slots are dropped and their cluster removed).
//!
//! Each case runs the bench binary with TMPDIR pointing at a folder of its own, so that
//! "nothing left" is checked exactly: that folder must be empty afterwards.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A TMPDIR of the test's own; the PostgreSQL user must be able to enter it when the tests
/// run as root.
fn tmpdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod the temp dir: {e}"));
    dir
}

/// The bench command with TMPDIR set; `--entity-cdc` names a program that exists but that
/// these cases never reach (only the ceiling, pg_recvlogical, is selected).
fn bench(tmp: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_entity-cdc-bench"));
    cmd.env("TMPDIR", tmp)
        .args([
            "--quick",
            "--only",
            "a,ceiling",
            "--entity-cdc",
            "/bin/true",
        ])
        .args(["--out"])
        .arg(tmp.join("report.md"));
    cmd
}

fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap_or_else(|e| panic!("listing {}: {e}", tmp.display()))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The harness's one smoke test (it stays short in `scripts/test.sh`): the refusals, then
/// an interrupted run.
#[test]
fn refuses_without_servers_and_an_interrupted_run_leaves_nothing() {
    refuses_without_postgresql_or_broker_saying_which_and_leaves_nothing();
    an_interrupted_run_stops_its_children_and_removes_everything();
}

fn refuses_without_postgresql_or_broker_saying_which_and_leaves_nothing() {
    let tmp = tmpdir();
    let out = bench(tmp.path())
        .env("ENTITY_CDC_TEST_PG_BIN", "/nonexistent/pg/bin")
        .output()
        .unwrap_or_else(|e| panic!("running the bench: {e}"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bench: PostgreSQL could not be started: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());

    // PostgreSQL starts, the broker does not: PostgreSQL is stopped and removed again.
    let out = bench(tmp.path())
        .env("ENTITY_CDC_TANSU", "/nonexistent/tansu")
        .env_remove("ENTITY_CDC_TEST_KAFKA")
        .output()
        .unwrap_or_else(|e| panic!("running the bench: {e}"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "bench: the Kafka broker (tansu) could not be started or reached: starting /nonexistent/tansu"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

fn an_interrupted_run_stops_its_children_and_removes_everything() {
    let tmp = tmpdir();
    let mut child = bench(tmp.path())
        .args(["--runs", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the bench: {e}"));
    let stderr = child
        .stderr
        .take()
        .unwrap_or_else(|| panic!("piped stderr"));
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let mut port = None;
    // Interrupt once the workload is being written: slots exist, psql is running.
    for line in lines.by_ref() {
        let line = line.unwrap_or_else(|e| panic!("reading the bench's stderr: {e}"));
        if let Some(rest) = line.strip_prefix("bench: PostgreSQL on port ") {
            port = rest.split(' ').next().map(str::to_owned);
        }
        let writing = line.contains("(a) writing the workload");
        seen.push(line);
        if writing {
            break;
        }
    }
    let port = port.unwrap_or_else(|| panic!("no port line in {seen:#?}"));
    // SAFETY: kill(2) on the child this test started and has not reaped.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0, "kill -INT");
    seen.extend(lines.map_while(Result::ok));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("waiting: {e}")) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bench did not exit: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("bench: SIGINT received"), "{text}");
    let cleanup = seen
        .iter()
        .find(|l| l.starts_with("bench: cleanup: "))
        .unwrap_or_else(|| panic!("no cleanup line: {text}"));
    // Every slot created was dropped (before the cluster itself went).
    let counts: Vec<&str> = cleanup["bench: cleanup: ".len()..]
        .split(' ')
        .take(3)
        .collect();
    assert_eq!(counts[1], "of", "{cleanup}");
    assert_eq!(counts[0], counts[2], "{cleanup}");
    assert_ne!(counts[0], "0", "{cleanup}");
    assert!(cleanup.contains("publication dropped"), "{cleanup}");
    assert!(!cleanup.contains("NOT removed"), "{cleanup}");
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new(), "{text}");
    // PostgreSQL is gone: nothing listens on its port, no process names its folder.
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "PostgreSQL still listens on {port}"
    );
    let tmp_text = tmp.path().to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(&tmp_text),
            "process {:?} still runs in the bench's folder: {cmdline}",
            entry.file_name()
        );
    }
}
