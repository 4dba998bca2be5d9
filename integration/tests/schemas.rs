//! The golden schemas: `schemas/*.avsc` are what `entity-cdc schemas` generates for the
//! sample connector.yaml from the tables of docker/init.sql on a real PostgreSQL 15. The
//! test regenerates them and fails on any drift (a changed type mapping, a new column in
//! init.sql, …), printing the file to update. `ENTITY_CDC_BLESS=1` rewrites the files
//! instead, after a deliberate change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use entity_cdc::codec::avro::export::catalog_schemas;
use entity_cdc::config::Config;
use entity_cdc_integration::PgServer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A PostgreSQL with docker/init.sql applied, and the environment the sample
/// connector.yaml needs to reach it.
fn sample_database() -> (PgServer, HashMap<&'static str, String>) {
    let pg = PgServer::start().expect("starting postgres");
    let db = pg.create_database("app").expect("creating database app");
    pg.psql_db(&db, &read("docker/init.sql"))
        .expect("running docker/init.sql");
    let env: HashMap<&str, String> = [
        ("ENTITY_CDC_PGHOST", "127.0.0.1".to_owned()),
        ("ENTITY_CDC_PGPORT", pg.port.to_string()),
        ("ENTITY_CDC_PGDATABASE", db.clone()),
        ("ENTITY_CDC_PGUSER", "postgres".to_owned()),
    ]
    .into_iter()
    .collect();
    (pg, env)
}

#[tokio::test]
async fn golden_schemas_match_what_the_sample_generates() {
    let (_pg, env) = sample_database();
    let yaml = read("connector.yaml").replace("sslmode: prefer", "sslmode: disable");
    let config = Config::from_yaml_str_with_env(&yaml, "connector.yaml", &|k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("connector.yaml: {e}"));
    let files = catalog_schemas(&config)
        .await
        .unwrap_or_else(|e| panic!("generating the schemas: {e}"));
    let names: Vec<&str> = files.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(names, ["Order.avsc", "Product.avsc"], "one file per entity");
    let bless = std::env::var("ENTITY_CDC_BLESS").is_ok_and(|v| v == "1");
    for file in &files {
        let relative = format!("schemas/{}", file.file_name);
        if bless {
            std::fs::write(root().join(&relative), &file.text)
                .unwrap_or_else(|e| panic!("writing {relative}: {e}"));
            continue;
        }
        assert_eq!(
            read(&relative),
            file.text,
            "{relative} drifted from what `entity-cdc schemas` generates; if the change is \
             meant, run `ENTITY_CDC_BLESS=1 cargo test -p entity-cdc-integration --test schemas` \
             and commit the files"
        );
    }
}

/// The entity-cdc binary, built by cargo (the integration crate cannot name another
/// package's binary through `CARGO_BIN_EXE_`).
fn binary() -> PathBuf {
    let manifest = root().join("Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--bin", "entity-cdc", "--message-format=json"])
        .arg("--manifest-path")
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running cargo build: {e}"));
    assert!(out.status.success(), "cargo build --bin entity-cdc failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["target"]["name"] == "entity-cdc")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo did not report the entity-cdc executable"))
}

/// `entity-cdc schemas --out DIR` writes exactly the golden files and lists them.
#[test]
fn the_schemas_command_writes_the_golden_files() {
    let (_pg, env) = sample_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("connector.yaml");
    std::fs::write(
        &config,
        read("connector.yaml").replace("sslmode: prefer", "sslmode: disable"),
    )
    .expect("writing the config");
    let out_dir = dir.path().join("out");
    let mut command = Command::new(binary());
    command
        .arg("--config")
        .arg(&config)
        .args(["schemas", "--out"])
        .arg(&out_dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("ENTITY_CDC_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let output = command.output().expect("running entity-cdc schemas");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        format!(
            "Order: {0}/Order.avsc\nProduct: {0}/Product.avsc\n",
            out_dir.display()
        )
    );
    for file in ["Order.avsc", "Product.avsc"] {
        let written = std::fs::read_to_string(out_dir.join(file)).expect("written schema");
        assert_eq!(written, read(&format!("schemas/{file}")), "{file}");
    }
}
