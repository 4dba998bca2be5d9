//! `entity-cdc check`: is this database ready for the connector, and is its slot healthy?
//!
//! Every finding is one [`CheckItem`] with a status and, when an operator must act, the exact
//! fix. A Fail means the connector cannot run (or would lose data); a Warn means it can run
//! but something deserves attention (an older server, another process on the slot, WAL piling
//! up). The slot items are the ones to watch in operation: a slot whose WAL was removed
//! (`wal_status = lost`) is a data gap that no retry fixes (CASE-26), and retained WAL on an
//! idle database is the symptom of CASE-25.

use std::fmt::Write as _;

use tokio_postgres::Client;

use super::catalog::{self, Publication, Slot};
use super::setup::{quote_ident, quote_literal, replica_identity_name, DatabaseTarget, TableRef};
use super::sql::SqlError;

/// How a finding affects readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckStatus {
    /// As it should be.
    Ok,
    /// Works, but deserves attention.
    Warn,
    /// The connector cannot run correctly until this is fixed.
    Fail,
}

impl CheckStatus {
    /// The label used in the rendered report.
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Ok => "OK",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    /// What was checked, e.g. `wal_level` or `replica identity "public"."orders"`.
    pub name: String,
    /// The verdict.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to do about it, for Warn and Fail.
    pub fix: Option<String>,
}

/// All findings for one database, in the order they were checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The findings.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// Whether nothing failed (warnings allowed).
    pub fn is_ready(&self) -> bool {
        self.items.iter().all(|i| i.status != CheckStatus::Fail)
    }

    /// The finding named `name`, if it was checked.
    pub fn item(&self, name: &str) -> Option<&CheckItem> {
        self.items.iter().find(|i| i.name == name)
    }

    /// One line per finding (`OK`, `WARN` or `FAIL`, name, detail, fix), then a verdict.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for item in &self.items {
            let _ = write!(
                text,
                "{:<4}  {}: {}",
                item.status.label(),
                item.name,
                item.detail
            );
            if let Some(fix) = &item.fix {
                let _ = write!(text, "; fix: {fix}");
            }
            text.push('\n');
        }
        let failures = self
            .items
            .iter()
            .filter(|i| i.status == CheckStatus::Fail)
            .count();
        if failures == 0 {
            text.push_str("ready\n");
        } else {
            let _ = writeln!(text, "not ready: {failures} failed");
        }
        text
    }

    fn push(&mut self, name: impl Into<String>, status: CheckStatus, detail: impl Into<String>) {
        self.items.push(CheckItem {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: None,
        });
    }

    fn push_fix(
        &mut self,
        name: impl Into<String>,
        status: CheckStatus,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.items.push(CheckItem {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }
}

/// The fix for anything `setup` creates.
const SETUP_FIX: &str = "entity-cdc setup --apply";

/// Server-wide facts read in one query.
struct Server {
    version_num: i32,
    version: String,
    wal_level: String,
    max_replication_slots: i32,
    slot_count: i32,
    max_wal_senders: i32,
    wal_sender_count: i32,
    user: String,
    superuser: bool,
    replication: bool,
}

async fn server(client: &Client) -> Result<Server, SqlError> {
    // session_user: the role that logged in is the one the replication connection uses, even
    // if the role has SET ROLE defaults.
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4,
                    current_setting('server_version'),
                    current_setting('wal_level'),
                    current_setting('max_replication_slots')::int4,
                    (SELECT count(*) FROM pg_replication_slots)::int4,
                    current_setting('max_wal_senders')::int4,
                    (SELECT count(*) FROM pg_stat_activity
                     WHERE backend_type = 'walsender')::int4,
                    r.rolname::text, r.rolsuper, r.rolreplication
             FROM pg_roles r WHERE r.rolname = session_user",
            &[],
        )
        .await
        .map_err(SqlError::query("reading server settings"))?;
    let decode = || SqlError::query("decoding server settings");
    Ok(Server {
        version_num: row.try_get(0).map_err(decode())?,
        version: row.try_get(1).map_err(decode())?,
        wal_level: row.try_get(2).map_err(decode())?,
        max_replication_slots: row.try_get(3).map_err(decode())?,
        slot_count: row.try_get(4).map_err(decode())?,
        max_wal_senders: row.try_get(5).map_err(decode())?,
        wal_sender_count: row.try_get(6).map_err(decode())?,
        user: row.try_get(7).map_err(decode())?,
        superuser: row.try_get(8).map_err(decode())?,
        replication: row.try_get(9).map_err(decode())?,
    })
}

/// Checks everything the connector needs from the database of `target`, through `client`
/// (connected to that database). Only a failing query is an error; findings are items.
pub async fn check(client: &Client, target: &DatabaseTarget) -> Result<CheckReport, SqlError> {
    let mut report = CheckReport::default();
    let server = server(client).await?;
    let slot = catalog::slot(client, &target.slot).await?;
    check_server(&mut report, &server, slot.as_ref());

    let publication = catalog::publication(client, &target.publication).await?;
    check_publication(&mut report, target, publication.as_ref());

    let mut seen = std::collections::HashSet::new();
    for table in target.tables.iter().filter(|t| seen.insert(*t)) {
        check_table(client, &mut report, table).await?;
    }

    let database = catalog::current_database(client).await?;
    check_slot(&mut report, &target.slot, &database, slot.as_ref());
    Ok(report)
}

/// Version, wal_level, slot and walsender headroom, role attributes.
fn check_server(report: &mut CheckReport, server: &Server, slot: Option<&Slot>) {
    let version = format!("{} ({})", server.version, server.version_num);
    if server.version_num < 100000 {
        report.push_fix(
            "server version",
            CheckStatus::Fail,
            version,
            "upgrade PostgreSQL: pgoutput needs version 10 or later",
        );
    } else if server.version_num < 140000 {
        report.push_fix(
            "server version",
            CheckStatus::Warn,
            format!("{version}: pgoutput logical decoding messages need version 14"),
            "upgrade to PostgreSQL 14 or later for heartbeats through pg_logical_emit_message",
        );
    } else {
        report.push("server version", CheckStatus::Ok, version);
    }

    if server.wal_level == "logical" {
        report.push("wal_level", CheckStatus::Ok, "logical");
    } else {
        report.push_fix(
            "wal_level",
            CheckStatus::Fail,
            format!("{} (logical decoding needs logical)", server.wal_level),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        );
    }

    // A missing slot needs a free one to be created; an existing one already has its place.
    let free_slots = server.max_replication_slots - server.slot_count;
    let slots = format!(
        "{} of {} used",
        server.slot_count, server.max_replication_slots
    );
    if slot.is_none() && free_slots <= 0 {
        report.push_fix(
            "replication slots",
            CheckStatus::Fail,
            format!("{slots}, none free for the connector's slot"),
            "raise max_replication_slots (then restart PostgreSQL) or drop an unused slot",
        );
    } else {
        report.push("replication slots", CheckStatus::Ok, slots);
    }

    // Streaming needs a walsender; when our slot is being streamed, one of the counted
    // walsenders is already the connector's own.
    let free_senders = server.max_wal_senders - server.wal_sender_count;
    let streaming = slot.is_some_and(|s| s.active);
    let senders = format!(
        "{} of {} used",
        server.wal_sender_count, server.max_wal_senders
    );
    if !streaming && free_senders <= 0 {
        report.push_fix(
            "wal senders",
            CheckStatus::Fail,
            format!("{senders}, none free for the connector"),
            "raise max_wal_senders (then restart PostgreSQL)",
        );
    } else {
        report.push("wal senders", CheckStatus::Ok, senders);
    }

    if server.superuser {
        report.push(
            "role",
            CheckStatus::Ok,
            format!("{} is a superuser", server.user),
        );
    } else if server.replication {
        report.push(
            "role",
            CheckStatus::Ok,
            format!("{} has REPLICATION", server.user),
        );
    } else {
        report.push_fix(
            "role",
            CheckStatus::Fail,
            format!("{} has neither REPLICATION nor superuser", server.user),
            format!(
                "ALTER ROLE {} REPLICATION (on managed services, grant the provider's \
                 replication role instead)",
                quote_ident(&server.user)
            ),
        );
    }
}

/// The publication exists, covers every entity table and publishes every operation.
fn check_publication(
    report: &mut CheckReport,
    target: &DatabaseTarget,
    publication: Option<&Publication>,
) {
    let name = &target.publication;
    let Some(publication) = publication else {
        report.push_fix(
            "publication",
            CheckStatus::Fail,
            format!("{name} does not exist"),
            SETUP_FIX,
        );
        return;
    };
    report.push("publication", CheckStatus::Ok, format!("{name} exists"));

    let missing: Vec<String> = target
        .tables
        .iter()
        .filter(|t| !publication.covers(t))
        .map(TableRef::quoted)
        .collect();
    if missing.is_empty() {
        let scope = if publication.all_tables {
            "publishes all tables"
        } else {
            "publishes every entity table"
        };
        report.push("publication tables", CheckStatus::Ok, scope);
    } else {
        report.push_fix(
            "publication tables",
            CheckStatus::Fail,
            format!("{name} does not publish {}", missing.join(", ")),
            format!(
                "ALTER PUBLICATION {} ADD TABLE {}; or {SETUP_FIX}",
                quote_ident(name),
                missing.join(", ")
            ),
        );
    }

    let operations = publication.missing_operations();
    if operations.is_empty() {
        report.push(
            "publication operations",
            CheckStatus::Ok,
            "insert, update, delete, truncate",
        );
    } else {
        report.push_fix(
            "publication operations",
            CheckStatus::Warn,
            format!(
                "{name} does not publish {}: those changes produce no events",
                operations.join(", ")
            ),
            format!(
                "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate')",
                quote_ident(name)
            ),
        );
    }
}

/// The table exists, has REPLICA IDENTITY FULL, and has a primary key.
async fn check_table(
    client: &Client,
    report: &mut CheckReport,
    table: &TableRef,
) -> Result<(), SqlError> {
    let Some(state) = catalog::table_state(client, table).await? else {
        report.push_fix(
            format!("table {table}"),
            CheckStatus::Fail,
            "not found",
            "create it, or correct the entity's schema and table in connector.yaml",
        );
        return Ok(());
    };
    if !state.is_table() {
        report.push_fix(
            format!("table {table}"),
            CheckStatus::Fail,
            format!("not a table (relkind '{}')", state.relkind),
            "point the entity at a table in connector.yaml",
        );
        return Ok(());
    }
    let identity = format!("replica identity {table}");
    if state.replica_identity == 'f' {
        report.push(identity, CheckStatus::Ok, "FULL");
    } else {
        report.push_fix(
            identity,
            CheckStatus::Fail,
            format!(
                "{}: updates and deletes would lack the old row",
                replica_identity_name(state.replica_identity)
            ),
            format!("ALTER TABLE {} REPLICA IDENTITY FULL", table.quoted()),
        );
    }
    if !state.has_primary_key {
        report.push_fix(
            format!("primary key {table}"),
            CheckStatus::Warn,
            "none: the Kafka key cannot come from the table",
            "declare the entity's key columns in connector.yaml",
        );
    }
    Ok(())
}

/// The slot exists, is ours (pgoutput, this database), is free, and still has its WAL.
fn check_slot(report: &mut CheckReport, name: &str, database: &str, slot: Option<&Slot>) {
    let Some(slot) = slot else {
        report.push_fix(
            "slot",
            CheckStatus::Fail,
            format!("{name} does not exist"),
            SETUP_FIX,
        );
        return;
    };
    let drop_fix = format!(
        "configure another slot name, or drop this one if nothing uses it: \
         SELECT pg_drop_replication_slot({})",
        quote_literal(name)
    );
    if slot.plugin.is_none() {
        report.push_fix(
            "slot",
            CheckStatus::Fail,
            format!("{name} is a physical slot"),
            drop_fix,
        );
        return;
    }
    if let Some(slot_database) = slot.database.as_deref().filter(|d| *d != database) {
        report.push_fix(
            "slot",
            CheckStatus::Fail,
            format!("{name} belongs to database {slot_database}, not {database}"),
            drop_fix,
        );
        return;
    }
    report.push("slot", CheckStatus::Ok, format!("{name} exists"));

    match slot.plugin.as_deref() {
        Some("pgoutput") => report.push("slot plugin", CheckStatus::Ok, "pgoutput"),
        Some(other) => report.push_fix(
            "slot plugin",
            CheckStatus::Fail,
            format!("{other}, not pgoutput"),
            drop_fix,
        ),
        None => {}
    }

    match (slot.active, slot.active_pid) {
        (true, pid) => {
            let pid = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
            report.push_fix(
                "slot activity",
                CheckStatus::Warn,
                format!("active, consumed by pid {pid}: another process is consuming"),
                format!(
                    "stop the other consumer; if it is a stale connector: \
                     SELECT pg_terminate_backend({pid})"
                ),
            );
        }
        (false, _) => report.push("slot activity", CheckStatus::Ok, "inactive"),
    }

    match slot.wal_status.as_deref() {
        Some("lost") => report.push_fix(
            "slot wal status",
            CheckStatus::Fail,
            "lost: slot invalidated, data gap",
            format!(
                "see CASE-26 hint: drop and recreate the slot and resnapshot: \
                 SELECT pg_drop_replication_slot({}); {SETUP_FIX}",
                quote_literal(name)
            ),
        ),
        Some("unreserved") => report.push_fix(
            "slot wal status",
            CheckStatus::Warn,
            "unreserved: WAL beyond max_slot_wal_keep_size, the next checkpoint may invalidate \
             the slot",
            "let the connector catch up now, or raise max_slot_wal_keep_size",
        ),
        Some(status) => report.push("slot wal status", CheckStatus::Ok, status),
        None => report.push(
            "slot wal status",
            CheckStatus::Ok,
            "not reported before PG 13",
        ),
    }

    report.push(
        "slot retained wal",
        CheckStatus::Ok,
        slot.retained_bytes
            .map_or_else(|| "none (no restart_lsn)".to_owned(), human_bytes),
    );
    report.push(
        "slot unconfirmed wal",
        CheckStatus::Ok,
        slot.unconfirmed_bytes.map_or_else(
            || "unknown (no confirmed_flush_lsn)".to_owned(),
            human_bytes,
        ),
    );
    match (slot.safe_wal_size, slot.retained_bytes) {
        // PostgreSQL reports NULL both for an unlimited allowance and for a lost slot, and
        // before PG 13 it has no such column.
        (None, _) if slot.is_invalidated() => report.push(
            "slot safe wal size",
            CheckStatus::Ok,
            "none: the slot is invalidated",
        ),
        (None, _) if slot.wal_status.is_none() => report.push(
            "slot safe wal size",
            CheckStatus::Ok,
            "not reported before PG 13",
        ),
        (None, _) => report.push(
            "slot safe wal size",
            CheckStatus::Ok,
            "unlimited (max_slot_wal_keep_size = -1)",
        ),
        // safe_wal_size is roughly the allowance minus what the slot retains, so falling
        // below the retained amount means more than half of the allowance is used up.
        (Some(safe), Some(retained)) if safe < retained => report.push_fix(
            "slot safe wal size",
            CheckStatus::Warn,
            format!(
                "{} left before invalidation, more than half of the allowance used",
                human_bytes(safe)
            ),
            "let the connector catch up, or raise max_slot_wal_keep_size",
        ),
        (Some(safe), _) => report.push(
            "slot safe wal size",
            CheckStatus::Ok,
            format!("{} left before invalidation", human_bytes(safe)),
        ),
    }
}

/// Bytes in binary units, for people.
fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes.abs() < 1024 {
        return format!("{bytes} B");
    }
    // Display only: the precision lost converting to f64 does not matter.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value.abs() < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            plugin: Some("pgoutput".to_owned()),
            database: Some("app".to_owned()),
            active: false,
            active_pid: None,
            wal_status: Some("reserved".to_owned()),
            retained_bytes: Some(56),
            unconfirmed_bytes: Some(56),
            safe_wal_size: None,
        }
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(56), "56 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(95 * 1024 * 1024), "95.0 MiB");
    }

    #[test]
    fn a_lost_slot_fails_with_the_case_26_hint() {
        let mut report = CheckReport::default();
        let lost = Slot {
            wal_status: Some("lost".to_owned()),
            retained_bytes: None,
            ..slot()
        };
        check_slot(&mut report, "cdc", "app", Some(&lost));
        assert!(!report.is_ready());
        let item = report.item("slot wal status").expect("wal status item");
        assert_eq!(item.status, CheckStatus::Fail);
        assert!(item.detail.contains("slot invalidated, data gap"));
        let fix = item.fix.as_deref().unwrap_or_default();
        assert!(
            fix.contains("drop and recreate the slot and resnapshot"),
            "{fix}"
        );
    }

    #[test]
    fn an_active_slot_warns_with_the_pid() {
        let mut report = CheckReport::default();
        let active = Slot {
            active: true,
            active_pid: Some(4242),
            ..slot()
        };
        check_slot(&mut report, "cdc", "app", Some(&active));
        assert!(report.is_ready());
        let item = report.item("slot activity").expect("activity item");
        assert_eq!(item.status, CheckStatus::Warn);
        assert!(item.detail.contains("4242"));
    }

    #[test]
    fn a_slot_of_another_database_fails() {
        let mut report = CheckReport::default();
        check_slot(&mut report, "cdc", "other", Some(&slot()));
        assert_eq!(
            report.item("slot").map(|i| i.status),
            Some(CheckStatus::Fail)
        );
    }

    #[test]
    fn low_safe_wal_size_warns() {
        let mut report = CheckReport::default();
        let tight = Slot {
            retained_bytes: Some(40 << 20),
            safe_wal_size: Some(20 << 20),
            ..slot()
        };
        check_slot(&mut report, "cdc", "app", Some(&tight));
        assert_eq!(
            report.item("slot safe wal size").map(|i| i.status),
            Some(CheckStatus::Warn)
        );
    }

    #[test]
    fn render_has_one_line_per_item_and_a_verdict() {
        let mut report = CheckReport::default();
        report.push("wal_level", CheckStatus::Ok, "logical");
        report.push_fix("slot", CheckStatus::Fail, "cdc does not exist", SETUP_FIX);
        assert_eq!(
            report.render(),
            "OK    wal_level: logical\n\
             FAIL  slot: cdc does not exist; fix: entity-cdc setup --apply\n\
             not ready: 1 failed\n"
        );
    }
}
