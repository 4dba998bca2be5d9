//! docker/: what can be checked without a Docker engine. The compose file is parsed and its
//! services and key settings asserted, the sample connector.yaml is loaded with the
//! environment compose gives entity-cdc, docker/init.sql runs on a real PostgreSQL 15 and
//! `setup` succeeds on it, and the Dockerfile's stages and build command are checked.
//! `docker build` and `docker compose up` themselves are not run (README.md says so).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use entity_cdc::cli::database_target;
use entity_cdc::config::Config;
use entity_cdc::source::{setup, sql};
use entity_cdc_integration::PgServer;
use serde_norway::Value;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

fn read(path: &str) -> String {
    let full = root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// docker/compose.yaml, parsed, with `<<` merge keys applied.
fn compose() -> Value {
    let mut value: Value = serde_norway::from_str(&read("docker/compose.yaml"))
        .unwrap_or_else(|e| panic!("docker/compose.yaml is no valid YAML: {e}"));
    value.apply_merge().expect("applying merge keys");
    value
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("compose.yaml has no service {name}"))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} is no string in {value:?}"))
}

/// A service's environment as strings.
fn environment(service: &Value) -> HashMap<String, String> {
    let map = service
        .get("environment")
        .and_then(Value::as_mapping)
        .unwrap_or_else(|| panic!("no environment mapping in {service:?}"));
    map.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("environment value {other:?}"),
            };
            (k.as_str().expect("string key").to_owned(), v)
        })
        .collect()
}

/// The strings of a list, or of a list under `key`.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("no list: {value:?}"))
        .iter()
        .map(|v| v.as_str().expect("string item").to_owned())
        .collect()
}

#[test]
fn compose_starts_postgres_kafka_registry_and_the_connector() {
    let compose = compose();

    let postgres = service(&compose, "postgres");
    assert_eq!(text(postgres, "image"), "postgres:15");
    let command = strings(postgres.get("command").expect("postgres command"));
    assert!(
        command.windows(2).any(|w| w == ["-c", "wal_level=logical"]),
        "{command:?}"
    );
    let volumes = strings(postgres.get("volumes").expect("postgres volumes"));
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with("./init.sql:/docker-entrypoint-initdb.d/")),
        "{volumes:?}"
    );

    let kafka = service(&compose, "kafka");
    assert!(
        text(kafka, "image").starts_with("apache/kafka:"),
        "{kafka:?}"
    );
    let env = environment(kafka);
    assert_eq!(
        env["KAFKA_PROCESS_ROLES"], "broker,controller",
        "KRaft mode"
    );
    assert!(env["KAFKA_ADVERTISED_LISTENERS"].contains("PLAINTEXT://kafka:9092"));
    assert!(!env.contains_key("KAFKA_ZOOKEEPER_CONNECT"));

    let registry = service(&compose, "schema-registry");
    assert!(text(registry, "image").starts_with("confluentinc/cp-schema-registry:"));
    assert_eq!(
        environment(registry)["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"],
        "PLAINTEXT://kafka:9092"
    );

    let connector = service(&compose, "entity-cdc");
    assert_eq!(strings(connector.get("command").expect("command")), ["run"]);
    let env = environment(connector);
    for key in [
        "ENTITY_CDC_PGHOST",
        "ENTITY_CDC_PGPORT",
        "ENTITY_CDC_PGDATABASE",
        "ENTITY_CDC_PGUSER",
        "ENTITY_CDC_PGPASSWORD",
        "ENTITY_CDC_KAFKA",
    ] {
        assert!(env.contains_key(key), "entity-cdc lacks {key}: {env:?}");
    }
    assert_eq!(env["ENTITY_CDC_KAFKA"], "kafka:9092");
    let volumes = strings(connector.get("volumes").expect("volumes"));
    assert_eq!(
        volumes,
        ["../connector.yaml:/etc/entity-cdc/connector.yaml:ro"]
    );
    let depends = connector.get("depends_on").expect("depends_on");
    assert_eq!(
        text(
            depends.get("entity-cdc-setup").expect("setup dependency"),
            "condition"
        ),
        "service_completed_successfully"
    );
    let setup = service(&compose, "entity-cdc-setup");
    assert_eq!(
        strings(setup.get("command").expect("command")),
        ["setup", "--apply"]
    );
    let build = connector.get("build").expect("build");
    assert_eq!(text(build, "dockerfile"), "docker/Dockerfile");

    // Every file mounted from the host exists (paths are relative to docker/).
    for service in compose
        .get("services")
        .and_then(Value::as_mapping)
        .expect("services")
        .values()
    {
        for volume in service.get("volumes").map(strings).unwrap_or_default() {
            let host = volume.split(':').next().expect("host path");
            let path = root().join("docker").join(host);
            assert!(path.exists(), "{volume}: {} is missing", path.display());
        }
    }
}

#[test]
fn the_sample_config_loads_with_the_compose_environment() {
    let env = environment(service(&compose(), "entity-cdc"));
    let config = Config::from_yaml_str_with_env(&read("connector.yaml"), "connector.yaml", &|k| {
        env.get(k).cloned()
    })
    .unwrap_or_else(|e| panic!("connector.yaml under compose: {e}"));
    assert_eq!(config.source.host, "postgres");
    assert_eq!(config.kafka.bootstrap_servers, "kafka:9092");
    let listen = config
        .telemetry
        .and_then(|t| t.listen)
        .expect("telemetry.listen");
    assert_eq!(listen.to_string(), "0.0.0.0:9464");
}

#[tokio::test]
async fn init_sql_creates_the_story_tables_and_setup_succeeds_on_them() {
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
    let yaml = read("connector.yaml").replace("sslmode: prefer", "sslmode: disable");
    let config = Config::from_yaml_str_with_env(&yaml, "connector.yaml", &|k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("connector.yaml: {e}"));
    let target = database_target(&config);
    let mut client = sql::connect(&target.params)
        .await
        .expect("connecting for setup");
    let plan = setup::plan(&client, &target).await.expect("setup plan");
    setup::apply(&mut client, &plan)
        .await
        .expect("setup apply on the tables of docker/init.sql");
    let replication = pg
        .psql_db(
            &db,
            "select rolreplication from pg_roles where rolname = 'entity_cdc'",
        )
        .expect("role query");
    assert_eq!(
        replication.trim(),
        "t",
        "the connector's role can replicate"
    );
}

#[test]
fn dockerfile_builds_in_rust_and_runs_slim_as_non_root() {
    let dockerfile = read("docker/Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(
        froms[0].starts_with("FROM rust:1") && froms[0].ends_with(" AS builder"),
        "{froms:?}"
    );
    assert!(froms[1].starts_with("FROM debian:") && froms[1].contains("-slim"));
    assert!(dockerfile.contains("cargo build --release --locked --bin entity-cdc"));
    assert!(dockerfile.contains("ca-certificates"));
    assert!(dockerfile.contains("COPY --from=builder"));
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(user.trim() != "root" && user.trim() != "0", "{user}");
    assert!(dockerfile.contains("ENTRYPOINT [\"entity-cdc\"]"));
    assert!(dockerfile.contains("CMD [\"run\"]"));
    // Every workspace member is in the build context: cargo loads them all, even for
    // one binary.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|l| l.starts_with("members = "))
        .expect("a members line in Cargo.toml");
    for member in members_line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| *m != ".")
    {
        assert!(
            dockerfile.contains(&format!("COPY {member} ./{member}\n")),
            "workspace member {member} is not copied into the builder"
        );
    }
    // Every path the builder copies exists in the repository (the build context).
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(root().join(source).exists(), "{line}: {source} is missing");
        }
    }
}
