//! The golden schemas: `schemas/*.avsc` are what `entity-cdc schemas` generates for the
//! sample connector.yaml from the tables of docker/init.sql on a real PostgreSQL 15. The
//! test regenerates them and fails on any drift (a changed type mapping, a new column in
//! init.sql, …), printing the file to update. `ENTITY_CDC_BLESS=1` rewrites the files
//! instead, after a deliberate change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

#[tokio::test]
async fn golden_schemas_match_what_the_sample_generates() {
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
