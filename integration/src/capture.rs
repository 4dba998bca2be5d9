//! Runs a case file against a server and captures what the change reader reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use entity_cdc::source::change::SourceEvent;
use entity_cdc::source::reader::{ChangeReader, ReadItem};
use entity_cdc::source::{ConnectParams, Lsn, SourceSettings, SslMode};

use crate::PgServer;

/// The two parts of a case file: setup, and the changes to capture.
pub struct CaseSql {
    /// Creates the schema, tables and the publication `cdc_caseNN`.
    pub setup: String,
    /// Runs while the slot captures.
    pub capture: String,
    /// Clean-up after the capture, if any.
    pub after: Option<String>,
}

/// Reads `integration/cases/<name>.sql` and splits it at `-- @@CAPTURE@@`.
pub fn case_sql(name: &str) -> Result<CaseSql> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("cases")
        .join(format!("{name}.sql"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (setup, rest) = text
        .split_once("-- @@CAPTURE@@")
        .ok_or_else(|| anyhow!("{} has no -- @@CAPTURE@@ line", path.display()))?;
    let (capture, after) = match rest.split_once("-- @@AFTER@@") {
        Some((capture, after)) => (capture.to_owned(), Some(after.to_owned())),
        None => (rest.to_owned(), None),
    };
    // The marker line's own comment continues after the marker: drop that line's rest.
    let capture = capture
        .split_once('\n')
        .map_or(String::new(), |(_, body)| body.to_owned());
    Ok(CaseSql {
        setup: setup.to_owned(),
        capture,
        after,
    })
}

/// Source settings for database `db` on `server`, slot `slot`, publication `publication`.
pub fn settings(server: &PgServer, db: &str, slot: &str, publication: &str) -> SourceSettings {
    SourceSettings {
        params: ConnectParams {
            host: "127.0.0.1".to_owned(),
            port: server.port,
            database: db.to_owned(),
            user: "postgres".to_owned(),
            password: None,
            sslmode: SslMode::Disable,
            sslrootcert: None,
            application_name: "entity-cdc-test".to_owned(),
        },
        slot: slot.to_owned(),
        publication: publication.to_owned(),
        status_interval: Duration::from_secs(1),
        temporary_slot: false,
    }
}

/// Sets up case `name` (e.g. `CASE-01`) in its own database, creates a slot, runs the
/// capture part (errors in it are expected by some cases and do not stop it), and returns
/// everything the reader reads up to the WAL position after the capture part.
pub async fn capture_case(server: &PgServer, name: &str) -> Result<Vec<ReadItem>> {
    let sql = case_sql(name)?;
    let db = name.to_lowercase().replace('-', "_");
    server.create_database(&db)?;
    server.psql_file(&db, &sql.setup, true)?;
    let slot = format!("slot_{db}");
    server.psql_db(
        &db,
        &format!("select pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    )?;
    server.psql_file(&db, &sql.capture, false)?;
    let publication = format!("cdc_{}", db.replace('_', ""));
    let items = read_all(server, &db, &slot, &publication).await?;
    if let Some(after) = &sql.after {
        server.psql_file(&db, after, false)?;
    }
    Ok(items)
}

/// Reads from `slot` until the reader has caught up with the server's current WAL position.
pub async fn read_all(
    server: &PgServer,
    db: &str,
    slot: &str,
    publication: &str,
) -> Result<Vec<ReadItem>> {
    let target: Lsn = server
        .psql_db(db, "select pg_current_wal_insert_lsn()")?
        .parse()
        .context("parsing pg_current_wal_lsn")?;
    let mut reader = entity_cdc::source::open_reader(&settings(server, db, slot, publication))
        .await
        .context("opening the change reader")?;
    let items = read_until(&mut reader, target, Duration::from_secs(60)).await?;
    reader.close().await;
    Ok(items)
}

/// Reads items until the stream has passed `target` outside a transaction.
pub async fn read_until(
    reader: &mut ChangeReader,
    target: Lsn,
    timeout: Duration,
) -> Result<Vec<ReadItem>> {
    let mut items = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let item = tokio::time::timeout_at(deadline, reader.next())
            .await
            .map_err(|_| anyhow!("timed out before lsn {target}; read {} items", items.len()))??;
        let done = match &item {
            ReadItem::Event(SourceEvent::Commit { end_lsn, .. }) => {
                // Everything read is handled once it is in `items`: confirm it, and let a
                // quiet stream confirm the server's WAL end.
                reader.stream().confirm(*end_lsn);
                reader.stream().set_idle(true);
                *end_lsn >= target
            }
            ReadItem::Event(SourceEvent::Keepalive { wal_end }) => {
                !reader.in_transaction() && *wal_end >= target
            }
            _ => false,
        };
        items.push(item);
        if done {
            return Ok(items);
        }
    }
}

/// The printed (tail) JSON lines of the items, without the per-run fields (LSNs, xid,
/// commit time), so that tests can compare them with exact expected values.
pub fn lines(items: &[ReadItem]) -> Vec<serde_json::Value> {
    items
        .iter()
        .filter_map(entity_cdc::source::tail::item_json)
        .map(|mut line| {
            if let Some(object) = line.as_object_mut() {
                for volatile in ["lsn", "xid", "commitTime", "messageLsn"] {
                    object.remove(volatile);
                }
            }
            line
        })
        .collect()
}

/// Fails unless `actual` equals the JSON text `expected` (numbers compare by their digits).
pub fn assert_json(actual: &serde_json::Value, expected: &str) {
    let expected: serde_json::Value = match serde_json::from_str(expected) {
        Ok(v) => v,
        Err(e) => panic!("expected JSON does not parse ({e}): {expected}"),
    };
    assert_eq!(
        actual, &expected,
        "\nactual:   {actual}\nexpected: {expected}"
    );
}

/// Fails with the server log attached.
pub fn fail_with_log(server: &PgServer, message: &str) -> ! {
    panic!("{message}\nserver log:\n{}", server.log())
}

/// Ensures the result is an error whose text contains `needle`.
pub fn expect_error<T: std::fmt::Debug>(result: Result<T>, needle: &str) -> Result<()> {
    match result {
        Ok(v) => bail!("expected an error containing {needle:?}, got {v:?}"),
        Err(e) if format!("{e:#}").contains(needle) => Ok(()),
        Err(e) => bail!("expected an error containing {needle:?}, got {e:#}"),
    }
}
