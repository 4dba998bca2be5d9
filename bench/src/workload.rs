//! The workloads: what is written to PostgreSQL before the passes read it back.
//!
//! Every throughput workload writes story-like `orders` rows (the sample metamodel's Order
//! entity: tenant, status, priority, total, version, user). The table is emptied *before*
//! the workload's slots are created, so the truncate is not part of the WAL the passes read:
//! each pass reads exactly the workload's changes.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::lab::Lab;
use crate::supervision::Supervised;

/// Sizes of a run: the for a full run, small ones for `--quick`.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Rows inserted by (a) and (b); half as many are then updated.
    pub rows: u64,
    /// Single-row transactions of (c).
    pub pgbench_transactions: u64,
    /// Seconds of the steady-rate latency workload.
    pub latency_seconds: u64,
    /// Rows of the priority workload's BULK import.
    pub priority_rows: u64,
}

impl Sizes {
    /// The sizes. (c) has 200,000 transactions, to keep the run short on 2 cores:
    /// the figure is a rate, not a total.
    pub const FULL: Sizes = Sizes {
        rows: 1_000_000,
        pgbench_transactions: 200_000,
        latency_seconds: 20,
        priority_rows: 500_000,
    };

    /// Small sizes for developing the harness and for its smoke test.
    pub const QUICK: Sizes = Sizes {
        rows: 20_000,
        pgbench_transactions: 10_000,
        latency_seconds: 5,
        priority_rows: 50_000,
    };
}

/// Rows per transaction in workload (b).
pub const BATCH: u64 = 100;

/// Concurrent pgbench clients in (c) and in the latency workload.
pub const CLIENTS: u32 = 8;

/// Changes per second of the latency workload.
pub const LATENCY_RATE: u32 = 5_000;

/// How a throughput workload writes its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// (a): all inserts in one transaction, then all updates in one transaction.
    OneTransaction,
    /// (b): the same rows in transactions of [`BATCH`] changes.
    Batches,
    /// (c): single-row insert transactions from [`CLIENTS`] pgbench clients.
    Pgbench,
}

/// A workload of the table: its name for `--only` and the report, and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Short name: `a`, `b`, `c`.
    pub name: &'static str,
    /// One line for the report.
    pub description: &'static str,
    /// How it writes.
    pub shape: Shape,
}

/// The throughput workloads, in the order they run. A new one (the priority workload of
/// the lanes) is a row here plus its writer in [`generate`].
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "a",
        description: "inserts in one transaction, then half as many updates in one transaction",
        shape: Shape::OneTransaction,
    },
    Workload {
        name: "b",
        description: "the same inserts and updates in transactions of 100 changes",
        shape: Shape::Batches,
    },
    Workload {
        name: "c",
        description: "single-row insert transactions from 8 pgbench clients",
        shape: Shape::Pgbench,
    },
];

/// The table and sequence of the benchmark, as the story's `orders`.
pub const SCHEMA: &str = "
create table public.orders (
  id bigint primary key,
  tenant_id bigint not null,
  status text not null,
  priority text,
  total numeric(12,2) not null,
  version int not null default 1,
  updated_by text
);
alter table public.orders replica identity full;
create sequence public.orders_bench_id;
create publication bench for table public.orders;
";

/// Empties the table before a workload's slots are created.
pub const RESET: &str = "truncate public.orders; alter sequence public.orders_bench_id restart";

/// One row insert as pgbench runs it: a new id from the sequence, story-like values.
pub const PGBENCH_INSERT: &str = "insert into public.orders \
(id, tenant_id, status, priority, total, version, updated_by) \
values (nextval('public.orders_bench_id'), :client_id % 100, 'NEW', 'NORMAL', 42.50, 1, 'bench');\n";

/// The changes `shape` writes at `sizes`.
pub fn change_count(shape: Shape, sizes: Sizes) -> u64 {
    match shape {
        Shape::OneTransaction | Shape::Batches => sizes.rows + sizes.rows / 2,
        Shape::Pgbench => sizes.pgbench_transactions,
    }
}

fn insert_rows(from: &str, to: &str) -> String {
    format!(
        "insert into public.orders (id, tenant_id, status, priority, total, version, updated_by) \
         select g, g % 100, 'NEW', 'NORMAL', (g % 100000) / 100.0, 1, 'bench' \
         from generate_series({from}, {to}) g"
    )
}

fn update_rows(from: &str, to: &str) -> String {
    format!(
        "update public.orders set status = 'PAID', version = version + 1, total = total + 1, \
         updated_by = 'bench-update' where id between {from} and {to}"
    )
}

/// The SQL script of (a) or (b).
fn script(shape: Shape, rows: u64) -> String {
    let updated = rows / 2;
    match shape {
        Shape::OneTransaction => format!(
            "begin;\n{};\ncommit;\nbegin;\n{};\ncommit;\n",
            insert_rows("1", &rows.to_string()),
            update_rows("1", &updated.to_string())
        ),
        // A DO block may commit between statements (PostgreSQL 11+) when psql runs it
        // outside a transaction block: each batch is its own transaction, written without
        // a round trip per batch.
        _ => format!(
            "do $$ begin\n\
             for b in 0 .. {last_insert} loop\n  {};\n  commit;\nend loop;\n\
             for b in 0 .. {last_update} loop\n  {};\n  commit;\nend loop;\n\
             end $$;\n",
            insert_rows(
                &format!("b * {BATCH} + 1"),
                &format!("b * {BATCH} + {BATCH}")
            ),
            update_rows(
                &format!("b * {BATCH} + 1"),
                &format!("b * {BATCH} + {BATCH}")
            ),
            last_insert = rows.div_ceil(BATCH).saturating_sub(1),
            last_update = updated.div_ceil(BATCH).saturating_sub(1),
        ),
    }
}

/// Writes the workload and returns the number of changes written.
pub async fn generate(lab: &Lab, shape: Shape, sizes: Sizes) -> Result<u64> {
    match shape {
        Shape::OneTransaction | Shape::Batches => {
            if sizes.rows % BATCH != 0 {
                bail!("rows {} is not a multiple of {BATCH}", sizes.rows);
            }
            lab.psql_script(&script(shape, sizes.rows), "workload script")
                .await?;
        }
        Shape::Pgbench => {
            let per_client = sizes.pgbench_transactions / u64::from(CLIENTS);
            pgbench(lab, &["-t", &per_client.to_string()], false).await?;
        }
    }
    Ok(change_count(shape, sizes))
}

/// Runs pgbench with the single-row insert script, 8 clients on 2 threads, plus `args`;
/// `synchronous_commit` for its sessions (the server's default is off).
pub async fn pgbench(lab: &Lab, args: &[&str], synchronous_commit: bool) -> Result<()> {
    let script = lab.work_dir().join("insert.pgbench");
    std::fs::write(&script, PGBENCH_INSERT).context("writing the pgbench script")?;
    let log = lab.work_dir().join("pgbench.log");
    let log_file = std::fs::File::create(&log).context("creating pgbench's log")?;
    let mut cmd = Command::new(lab.pg_bin().join("pgbench"));
    cmd.args(["-n", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &lab.pg_port().to_string()])
        .args(["-c", &CLIENTS.to_string(), "-j", "2"])
        .arg("-f")
        .arg(&script)
        .args(args)
        .arg(crate::lab::DATABASE)
        .env(
            "PGOPTIONS",
            format!(
                "-c synchronous_commit={}",
                if synchronous_commit { "on" } else { "off" }
            ),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    let mut child = Supervised::spawn(cmd, "pgbench")?;
    child
        .wait_success(|| std::fs::read_to_string(&log).unwrap_or_default())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_row_once_in_transactions_of_100() {
        let text = script(Shape::Batches, 1_000);
        assert!(text.contains("for b in 0 .. 9 loop"), "{text}");
        assert!(text.contains("for b in 0 .. 4 loop"), "{text}");
        assert!(
            text.contains("generate_series(b * 100 + 1, b * 100 + 100)"),
            "{text}"
        );
        assert!(
            text.contains("where id between b * 100 + 1 and b * 100 + 100"),
            "{text}"
        );
        assert_eq!(change_count(Shape::Batches, Sizes::QUICK), 30_000);
        assert_eq!(change_count(Shape::OneTransaction, Sizes::FULL), 1_500_000);
        assert_eq!(change_count(Shape::Pgbench, Sizes::FULL), 200_000);
    }

    #[test]
    fn one_transaction_writes_two_transactions() {
        let text = script(Shape::OneTransaction, 1_000);
        assert_eq!(text.matches("begin;").count(), 2);
        assert!(text.contains("generate_series(1, 1000)"), "{text}");
        assert!(text.contains("where id between 1 and 500"), "{text}");
    }
}
