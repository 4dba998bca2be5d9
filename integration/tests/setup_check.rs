//! `setup`, `check` and the catalog queries against a real PostgreSQL 15.
//!
//! Each test starts its own server (one needs `wal_level=replica`, others hold slots), and
//! uses its own database and slot names, so the tests can run in parallel.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use entity_cdc::source::catalog::{self, CatalogError};
use entity_cdc::source::check::{check, CheckReport, CheckStatus};
use entity_cdc::source::setup::{self, SetupError, StepPhase};
use entity_cdc::source::{sql, ConnectParams, DatabaseTarget, SslMode, TableRef};
use entity_cdc_integration::{PgServer, PgServerOptions};

/// Connection parameters for `db` as the superuser; `prefer` falls back to plain TCP since the
/// test server has no TLS, which also exercises that path.
fn params(server: &PgServer, db: &str) -> ConnectParams {
    ConnectParams {
        host: "127.0.0.1".to_owned(),
        port: server.port,
        database: db.to_owned(),
        user: "postgres".to_owned(),
        password: None,
        sslmode: SslMode::Prefer,
        sslrootcert: None,
        application_name: "entity-cdc-test".to_owned(),
    }
}

fn target(server: &PgServer, db: &str, slot: &str, tables: &[(&str, &str)]) -> DatabaseTarget {
    DatabaseTarget {
        params: params(server, db),
        publication: format!("{slot}_pub"),
        slot: slot.to_owned(),
        tables: tables
            .iter()
            .map(|(schema, name)| TableRef::new(*schema, *name))
            .collect(),
    }
}

fn psql(server: &PgServer, db: &str, sql: &str) -> String {
    server
        .psql_db(db, sql)
        .unwrap_or_else(|e| panic!("psql {sql:?}: {e:#}"))
}

fn status_of(report: &CheckReport, name: &str) -> CheckStatus {
    report
        .item(name)
        .unwrap_or_else(|| panic!("no check item {name:?} in:\n{}", report.render()))
        .status
}

fn fix_of(report: &CheckReport, name: &str) -> String {
    report
        .item(name)
        .and_then(|i| i.fix.clone())
        .unwrap_or_else(|| panic!("no fix for {name:?} in:\n{}", report.render()))
}

/// The three CASE-27 style tables: a plain one, one with a space and upper case, one in a
/// schema whose name has a dot.
const CASE27_TABLES: &[(&str, &str)] = &[
    ("public", "orders"),
    ("case27", "Order Lines"),
    ("case27.sales", "orders"),
];

const CASE27_DDL: &str = r#"
    CREATE TABLE public.orders (id int PRIMARY KEY, note text);
    CREATE SCHEMA case27;
    CREATE SCHEMA "case27.sales";
    CREATE TABLE case27."Order Lines" ("ID" int PRIMARY KEY, "id" int, "select" text,
                                       "unit price €" numeric(10,2), "say ""hi""" text);
    CREATE TABLE "case27.sales".orders (id int PRIMARY KEY, note text);
    CREATE TABLE case27."sales.orders" (id int PRIMARY KEY, note text);
"#;

#[tokio::test(flavor = "multi_thread")]
async fn setup_makes_a_fresh_database_ready_and_is_idempotent() {
    let server = PgServer::start().expect("start postgres");
    let db = server.create_database("setup_fresh").expect("create db");
    psql(&server, &db, CASE27_DDL);
    let target = target(&server, &db, "fresh_slot", CASE27_TABLES);
    let mut client = sql::connect(&target.params).await.expect("connect");

    // The session settings the decoder relies on are pinned.
    for (setting, expected) in [
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
    ] {
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .expect("show");
        assert_eq!(row.get::<_, String>(0), expected, "{setting}");
    }

    let before = check(&client, &target).await.expect("check before setup");
    assert!(!before.is_ready(), "{}", before.render());
    assert_eq!(status_of(&before, "publication"), CheckStatus::Fail);
    assert_eq!(status_of(&before, "slot"), CheckStatus::Fail);

    let plan = setup::plan(&client, &target).await.expect("plan");
    let statements: Vec<&str> = plan.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        statements,
        [
            r#"CREATE PUBLICATION "fresh_slot_pub" FOR TABLE "public"."orders", "case27"."Order Lines", "case27.sales"."orders""#,
            r#"ALTER TABLE "public"."orders" REPLICA IDENTITY FULL"#,
            r#"ALTER TABLE "case27"."Order Lines" REPLICA IDENTITY FULL"#,
            r#"ALTER TABLE "case27.sales"."orders" REPLICA IDENTITY FULL"#,
            "SELECT pg_create_logical_replication_slot('fresh_slot', 'pgoutput')",
        ]
    );
    assert_eq!(
        plan.steps.iter().map(|s| s.phase).collect::<Vec<_>>(),
        [
            StepPhase::Catalog,
            StepPhase::Catalog,
            StepPhase::Catalog,
            StepPhase::Catalog,
            StepPhase::Slot
        ]
    );
    assert!(plan.steps.iter().all(|s| !s.reason.is_empty()));
    println!("{}", plan.render());

    setup::apply(&mut client, &plan).await.expect("apply");

    // The publication holds exactly the three entity tables, not case27."sales.orders".
    assert_eq!(
        psql(
            &server,
            &db,
            "SELECT schemaname || '|' || tablename FROM pg_publication_tables \
             WHERE pubname = 'fresh_slot_pub' ORDER BY 1"
        ),
        "case27.sales|orders\ncase27|Order Lines\npublic|orders"
    );
    assert_eq!(
        psql(
            &server,
            &db,
            "SELECT string_agg(relreplident::text, '' ORDER BY oid) FROM pg_class WHERE oid IN \
             ('public.orders'::regclass, 'case27.\"Order Lines\"'::regclass, \
              '\"case27.sales\".orders'::regclass, 'case27.\"sales.orders\"'::regclass)"
        ),
        "fffd"
    );
    assert_eq!(
        psql(
            &server,
            &db,
            "SELECT plugin || '|' || database FROM pg_replication_slots \
             WHERE slot_name = 'fresh_slot'"
        ),
        "pgoutput|setup_fresh"
    );

    let again = setup::plan(&client, &target).await.expect("second plan");
    assert!(again.is_empty(), "{}", again.render());
    assert!(again.extra_tables.is_empty());
    assert_eq!(again.render(), "-- nothing to do: the database is ready\n");

    let after = check(&client, &target).await.expect("check after setup");
    println!("{}", after.render());
    assert!(after.is_ready(), "{}", after.render());
    assert!(
        after.items.iter().all(|i| i.status == CheckStatus::Ok),
        "{}",
        after.render()
    );
    assert_eq!(status_of(&after, "slot activity"), CheckStatus::Ok);
    assert_eq!(status_of(&after, "slot wal status"), CheckStatus::Ok);

    // A table someone else added stays and is reported; a new entity table is added with
    // ALTER PUBLICATION, not by recreating the publication.
    psql(
        &server,
        &db,
        r#"ALTER PUBLICATION fresh_slot_pub ADD TABLE case27."sales.orders""#,
    );
    psql(
        &server,
        &db,
        "CREATE TABLE public.items (id int PRIMARY KEY)",
    );
    let mut grown = target.clone();
    grown.tables.push(TableRef::new("public", "items"));
    let plan = setup::plan(&client, &grown)
        .await
        .expect("plan with a new table");
    let statements: Vec<&str> = plan.steps.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        statements,
        [
            r#"ALTER PUBLICATION "fresh_slot_pub" ADD TABLE "public"."items""#,
            r#"ALTER TABLE "public"."items" REPLICA IDENTITY FULL"#,
        ]
    );
    assert_eq!(plan.extra_tables, [TableRef::new("case27", "sales.orders")]);
    setup::apply(&mut client, &plan)
        .await
        .expect("apply the new table");
    assert!(setup::plan(&client, &grown).await.expect("plan").is_empty());
    assert_eq!(
        psql(
            &server,
            &db,
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'fresh_slot_pub'"
        ),
        "5"
    );

    // A missing entity table is an error naming it.
    let mut wrong = target.clone();
    wrong.tables.push(TableRef::new("case27", "Missing Table"));
    match setup::plan(&client, &wrong).await {
        Err(error @ SetupError::TableNotFound { .. }) => {
            assert_eq!(
                error.to_string(),
                r#"table "case27"."Missing Table" not found"#
            );
            assert!(error.hint().is_some());
        }
        other => panic!("expected TableNotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_fails_on_wal_level_replica_with_the_fix() {
    let server = PgServer::start_with(PgServerOptions {
        settings: vec![("wal_level".to_owned(), "replica".to_owned())],
        ..PgServerOptions::default()
    })
    .expect("start postgres with wal_level=replica");
    let db = server.create_database("walrep").expect("create db");
    psql(&server, &db, "CREATE TABLE orders (id int PRIMARY KEY)");
    let target = target(&server, &db, "walrep_slot", &[("public", "orders")]);
    let client = sql::connect(&target.params).await.expect("connect");
    let report = check(&client, &target).await.expect("check");
    println!("{}", report.render());
    assert!(!report.is_ready());
    assert_eq!(status_of(&report, "wal_level"), CheckStatus::Fail);
    assert!(
        fix_of(&report, "wal_level").contains("ALTER SYSTEM SET wal_level = logical"),
        "{}",
        report.render()
    );
    assert!(report
        .render()
        .contains("FAIL  wal_level: replica (logical decoding needs logical); fix: ALTER SYSTEM SET wal_level = logical"));
}

/// A `pg_recvlogical` streaming from a slot; killed when dropped.
struct Consumer(Child);

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_identity_missing_slot_and_active_slot() {
    let server = PgServer::start().expect("start postgres");
    let db = server.create_database("checks").expect("create db");
    psql(
        &server,
        &db,
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         CREATE TABLE notes (body text);
         ALTER TABLE notes REPLICA IDENTITY FULL;
         CREATE PUBLICATION checks_slot_pub FOR TABLE orders, notes
             WITH (publish = 'insert, update, delete');",
    );
    let target = target(
        &server,
        &db,
        "checks_slot",
        &[("public", "orders"), ("public", "notes")],
    );
    let client = sql::connect(&target.params).await.expect("connect");

    let report = check(&client, &target).await.expect("check");
    println!("{}", report.render());
    assert!(!report.is_ready());
    let identity = r#"replica identity "public"."orders""#;
    assert_eq!(status_of(&report, identity), CheckStatus::Fail);
    assert_eq!(
        fix_of(&report, identity),
        r#"ALTER TABLE "public"."orders" REPLICA IDENTITY FULL"#
    );
    assert_eq!(
        status_of(&report, r#"replica identity "public"."notes""#),
        CheckStatus::Ok
    );
    assert_eq!(
        status_of(&report, r#"primary key "public"."notes""#),
        CheckStatus::Warn
    );
    assert_eq!(status_of(&report, "publication tables"), CheckStatus::Ok);
    assert_eq!(
        status_of(&report, "publication operations"),
        CheckStatus::Warn
    );
    assert!(fix_of(&report, "publication operations").contains("truncate"));
    assert_eq!(status_of(&report, "slot"), CheckStatus::Fail);
    assert_eq!(fix_of(&report, "slot"), "entity-cdc setup --apply");

    // Fix what check asked for, then hold the slot with pg_recvlogical.
    psql(&server, &db, "ALTER TABLE orders REPLICA IDENTITY FULL");
    psql(
        &server,
        &db,
        "SELECT pg_create_logical_replication_slot('checks_slot', 'pgoutput')",
    );
    let report = check(&client, &target).await.expect("check with slot");
    assert!(report.is_ready(), "{}", report.render());
    assert_eq!(status_of(&report, "slot activity"), CheckStatus::Ok);

    let child = Command::new(server.bin_dir().join("pg_recvlogical"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", &db, "-S", "checks_slot", "--start", "-f", "/dev/null"])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=checks_slot_pub",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pg_recvlogical");
    let _consumer = Consumer(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let pid = psql(
            &server,
            &db,
            "SELECT active_pid FROM pg_replication_slots \
             WHERE slot_name = 'checks_slot' AND active",
        );
        if !pid.is_empty() {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "pg_recvlogical never became active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report = check(&client, &target)
        .await
        .expect("check with active slot");
    println!("{}", report.render());
    assert!(
        report.is_ready(),
        "an active slot is a warning, not a failure"
    );
    let activity = report.item("slot activity").expect("slot activity item");
    assert_eq!(activity.status, CheckStatus::Warn);
    assert!(
        activity.detail.contains(&format!("consumed by pid {pid}")),
        "{activity:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_resolves_keys_types_and_columns() {
    let server = PgServer::start().expect("start postgres");
    let db = server.create_database("catalog").expect("create db");
    psql(
        &server,
        &db,
        r#"CREATE TABLE two_keys (a int, b text, c int, PRIMARY KEY (c, a));
           CREATE TABLE no_key (x int);
           CREATE SCHEMA "case27.sales";
           CREATE TABLE "case27.sales"."Order Lines" ("ID" int, "say ""hi""" int,
                                                      PRIMARY KEY ("say ""hi""", "ID"));
           CREATE TABLE dropped (a int, b int, c int);
           ALTER TABLE dropped DROP COLUMN b;
           CREATE TYPE mood AS ENUM ('sad', 'ok');
           CREATE DOMAIN price AS numeric(8,2);"#,
    );
    // ADD VALUE runs on its own so the labels are committed before they are read.
    psql(&server, &db, "ALTER TYPE mood ADD VALUE 'happy'");
    psql(&server, &db, "ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'");
    let client = sql::connect(&params(&server, &db)).await.expect("connect");

    assert_eq!(
        catalog::primary_key(&client, "public", "two_keys")
            .await
            .expect("primary key"),
        ["c", "a"]
    );
    assert_eq!(
        catalog::primary_key(&client, "case27.sales", "Order Lines")
            .await
            .expect("primary key with odd names"),
        [r#"say "hi""#, "ID"]
    );
    assert!(catalog::primary_key(&client, "public", "no_key")
        .await
        .expect("no key")
        .is_empty());
    match catalog::primary_key(&client, "public", "nope").await {
        Err(error @ CatalogError::TableNotFound { .. }) => {
            assert_eq!(error.to_string(), r#"table "public"."nope" not found"#)
        }
        other => panic!("expected TableNotFound, got {other:?}"),
    }

    // PostgreSQL as the oracle for quoting: the quoted forms read back as the exact names.
    for name in [
        "orders",
        "Order Lines",
        "case27.sales",
        r#"say "hi""#,
        "select",
        "naïve-col",
        "unit price €",
        "1st",
        r"back\slash",
        "it's",
    ] {
        let row = client
            .query_one(
                &format!(
                    "SELECT {} AS {}",
                    setup::quote_literal(name),
                    setup::quote_ident(name)
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("quoting {name:?}: {e}"));
        assert_eq!(row.columns()[0].name(), name);
        assert_eq!(row.get::<_, String>(0), name);
    }

    let oid = |name: &str| -> u32 {
        psql(&server, &db, &format!("SELECT '{name}'::regtype::oid"))
            .parse()
            .unwrap_or_else(|e| panic!("oid of {name}: {e}"))
    };

    let mood = catalog::type_info(&client, oid("mood"))
        .await
        .expect("enum");
    assert!(mood.is_enum());
    assert_eq!(mood.typtype, 'e');
    assert_eq!(mood.namespace, "public");
    assert_eq!(mood.name, "mood");
    assert_eq!(mood.enum_labels, ["sad", "meh", "ok", "happy"]);
    assert_eq!(mood.element_oid, None);
    assert_eq!(mood.base_type_oid, None);

    let price = catalog::type_info(&client, oid("price"))
        .await
        .expect("domain");
    assert!(price.is_domain());
    assert_eq!(price.base_type_oid, Some(1700));
    assert_eq!(price.base_typmod, 524294);
    assert!(price.enum_labels.is_empty());

    let moods = catalog::type_info(&client, oid("mood[]"))
        .await
        .expect("enum array");
    assert!(moods.is_array());
    assert_eq!(moods.name, "_mood");
    assert_eq!(moods.element_oid, Some(mood.oid));
    assert_eq!(moods.delimiter, b',');

    let boxes = catalog::type_info(&client, 1020).await.expect("box[]");
    assert_eq!(boxes.typcategory, 'A');
    assert_eq!(boxes.element_oid, Some(603));
    assert_eq!(boxes.delimiter, b';');

    // point sets typelem but is not an array.
    let point = catalog::type_info(&client, 600).await.expect("point");
    assert_eq!(point.element_oid, None);
    assert_eq!(point.typtype, 'b');

    match catalog::type_info(&client, 4_000_000_000).await {
        Err(CatalogError::TypeNotFound { oid }) => assert_eq!(oid, 4_000_000_000),
        other => panic!("expected TypeNotFound, got {other:?}"),
    }

    let dropped = oid_of_table(&server, &db, "dropped");
    assert_eq!(
        catalog::relation_attnums(&client, dropped)
            .await
            .expect("columns"),
        [(1, "a".to_owned()), (3, "c".to_owned())]
    );
    match catalog::relation_attnums(&client, 4_000_000_000).await {
        Err(CatalogError::RelationNotFound { oid }) => assert_eq!(oid, 4_000_000_000),
        other => panic!("expected RelationNotFound, got {other:?}"),
    }
}

fn oid_of_table(server: &PgServer, db: &str, table: &str) -> u32 {
    psql(server, db, &format!("SELECT '{table}'::regclass::oid"))
        .parse()
        .unwrap_or_else(|e| panic!("oid of {table}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalidated_slot_fails_check_and_setup_refuses_to_replace_it() {
    // A tiny allowance lets a few WAL segment switches invalidate the slot (CASE-26).
    let server = PgServer::start_with(PgServerOptions {
        settings: vec![
            ("max_slot_wal_keep_size".to_owned(), "1MB".to_owned()),
            ("max_wal_size".to_owned(), "32MB".to_owned()),
            ("min_wal_size".to_owned(), "32MB".to_owned()),
        ],
        ..PgServerOptions::default()
    })
    .expect("start postgres");
    let db = server.create_database("lost").expect("create db");
    psql(
        &server,
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         ALTER TABLE t REPLICA IDENTITY FULL;
         CREATE PUBLICATION lost_slot_pub FOR TABLE t;",
    );
    psql(
        &server,
        &db,
        "SELECT pg_create_logical_replication_slot('lost_slot', 'pgoutput')",
    );
    for round in 0..4 {
        psql(
            &server,
            &db,
            &format!("INSERT INTO t VALUES ({round}, 'x')"),
        );
        psql(&server, &db, "SELECT pg_switch_wal()");
    }
    psql(&server, &db, "CHECKPOINT");
    assert_eq!(
        psql(
            &server,
            &db,
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lost_slot'"
        ),
        "lost",
        "the slot should have been invalidated; log:\n{}",
        server.log()
    );

    let target = target(&server, &db, "lost_slot", &[("public", "t")]);
    let client = sql::connect(&target.params).await.expect("connect");
    let report = check(&client, &target).await.expect("check");
    println!("{}", report.render());
    assert!(!report.is_ready());
    let item = report.item("slot wal status").expect("wal status item");
    assert_eq!(item.status, CheckStatus::Fail);
    assert!(item.detail.contains("slot invalidated, data gap"));
    assert!(fix_of(&report, "slot wal status")
        .contains("see CASE-26 hint: drop and recreate the slot and resnapshot"));

    match setup::plan(&client, &target).await {
        Err(error @ SetupError::SlotInvalidated { .. }) => {
            let hint = error.hint().unwrap_or_default();
            assert!(
                hint.contains("pg_drop_replication_slot('lost_slot')"),
                "{hint}"
            );
        }
        other => panic!("expected SlotInvalidated, got {other:?}"),
    }
}

/// Runs openssl in `dir`, panicking with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_connections_follow_sslmode() {
    // A private CA and a server certificate for the name db.test only, so that connecting to
    // 127.0.0.1 passes verify-ca (chain) but not verify-full (name).
    let dir = tempfile::Builder::new()
        .prefix("entity-cdc-tls-")
        .tempdir()
        .expect("tempdir");
    let path = dir.path();
    openssl(
        path,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=entity-cdc test ca",
        ],
    );
    openssl(
        path,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=db.test",
        ],
    );
    std::fs::write(path.join("san.ext"), "subjectAltName=DNS:db.test\n").expect("write ext");
    openssl(
        path,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    // The server reads the key as the postgres user and wants it private.
    let status = Command::new("chmod")
        .args(["0600", "server.key"])
        .current_dir(path)
        .status()
        .expect("chmod");
    assert!(status.success());
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success());
    }
    let server = PgServer::start_with(PgServerOptions {
        settings: vec![
            ("ssl".to_owned(), "on".to_owned()),
            (
                "ssl_cert_file".to_owned(),
                path.join("server.crt").display().to_string(),
            ),
            (
                "ssl_key_file".to_owned(),
                path.join("server.key").display().to_string(),
            ),
        ],
        ..PgServerOptions::default()
    })
    .expect("start postgres with ssl");

    let uses_tls = |client: tokio_postgres::Client| async move {
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get::<_, bool>(0)
    };
    let with = |sslmode, root: Option<&str>| ConnectParams {
        sslmode,
        sslrootcert: root.map(|r| path.join(r)),
        ..params(&server, "postgres")
    };

    let plain = sql::connect(&with(SslMode::Disable, None))
        .await
        .expect("disable");
    assert!(!uses_tls(plain).await);
    for mode in [SslMode::Prefer, SslMode::Require] {
        let client = sql::connect(&with(mode, None))
            .await
            .expect("unverified tls");
        assert!(uses_tls(client).await, "{mode:?}");
    }
    let client = sql::connect(&with(SslMode::VerifyCa, Some("ca.crt")))
        .await
        .expect("verify-ca with the private ca");
    assert!(uses_tls(client).await);

    // verify-full: the certificate names db.test, not 127.0.0.1.
    let error = sql::connect(&with(SslMode::VerifyFull, Some("ca.crt")))
        .await
        .expect_err("verify-full must reject the name");
    assert!(
        format!("{:?}", error).contains("NotValidForName"),
        "{error:?}"
    );
    // verify-ca without our CA: the webpki roots do not know it.
    let error = sql::connect(&with(SslMode::VerifyCa, None))
        .await
        .expect_err("verify-ca must reject an unknown issuer");
    assert!(
        format!("{:?}", error).contains("UnknownIssuer"),
        "{error:?}"
    );
}
