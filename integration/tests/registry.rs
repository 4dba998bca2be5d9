//! The test Schema Registry (`integration/src/registry.rs`) over HTTP, as the connector and
//! a Confluent client use it: register, the same schema again, look-ups, versions,
//! compatibility levels and Confluent's error answers.

use entity_cdc_integration::SchemaRegistry;
use serde_json::{json, Value as Json};

const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
/// V1 plus an optional field: backward and forward compatible.
const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},
    {"name":"b","type":["null","string"],"default":null}]}"#;
/// V1 plus a required field: new readers cannot read old data (not BACKWARD), old readers
/// can read new data (FORWARD).
const V3: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},
    {"name":"c","type":"string"}]}"#;
/// `a` retyped to string: neither way.
const RETYPED: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> (u16, Json) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/vnd.schemaregistry.v1+json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
        )
    }

    async fn register(&self, subject: &str, schema: &str) -> (u16, Json) {
        self.call(
            reqwest::Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": schema })),
        )
        .await
    }

    async fn get(&self, path: &str) -> (u16, Json) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn level(&self, path: &str, level: &str) -> (u16, Json) {
        self.call(
            reqwest::Method::PUT,
            path,
            Some(json!({ "compatibility": level })),
        )
        .await
    }
}

#[tokio::test]
async fn the_test_registry_speaks_the_rest_api_the_connector_uses() {
    entity_cdc::codec::avro::registry::install_crypto_provider();
    let registry = SchemaRegistry::start().await.expect("registry");
    let sr = Client {
        base: registry.url(),
        http: reqwest::Client::new(),
    };

    assert_eq!(sr.register("t-value", V1).await, (200, json!({"id": 1})));
    assert_eq!(
        sr.register("t-value", V1).await,
        (200, json!({"id": 1})),
        "same schema, same id, no new version"
    );
    assert_eq!(sr.register("t-value", V2).await, (200, json!({"id": 2})));
    assert_eq!(
        sr.register("u-value", V1).await,
        (200, json!({"id": 1})),
        "a schema known under another subject keeps its id"
    );
    assert_eq!(
        sr.get("/subjects").await,
        (200, json!(["t-value", "u-value"]))
    );
    assert_eq!(
        sr.get("/subjects/t-value/versions").await,
        (200, json!([1, 2]))
    );
    assert_eq!(
        sr.get("/subjects/t-value/versions/latest").await,
        (
            200,
            json!({"subject": "t-value", "version": 2, "id": 2, "schema": V2})
        )
    );
    assert_eq!(
        sr.get("/subjects/t-value/versions/1").await.1["schema"],
        json!(V1)
    );
    assert_eq!(sr.get("/schemas/ids/2").await, (200, json!({"schema": V2})));
    assert_eq!(
        sr.get("/schemas/ids/9").await,
        (
            404,
            json!({"error_code": 40403, "message": "Schema not found"})
        )
    );
    assert_eq!(
        sr.call(
            reqwest::Method::POST,
            "/subjects/t-value",
            Some(json!({ "schema": V1 }))
        )
        .await,
        (
            200,
            json!({"subject": "t-value", "id": 1, "version": 1, "schema": V1})
        )
    );

    // BACKWARD (the default): a required new field is refused, with Confluent's 409 JSON.
    assert_eq!(
        sr.get("/config").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    let (status, body) = sr.register("t-value", V3).await;
    assert_eq!((status, &body["error_code"]), (409, &json!(409)), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "Schema being registered is incompatible with an earlier schema for subject \"t-value\""
        ) && message.contains("compatibility level BACKWARD"),
        "{message}"
    );
    // FORWARD accepts it; FULL refuses a retype; NONE accepts anything.
    assert_eq!(
        sr.level("/config/t-value", "FORWARD").await,
        (200, json!({"compatibility": "FORWARD"}))
    );
    assert_eq!(sr.register("t-value", V3).await, (200, json!({"id": 3})));
    assert_eq!(sr.level("/config/t-value", "FULL").await.0, 200);
    assert_eq!(sr.register("t-value", RETYPED).await.0, 409);
    assert_eq!(sr.level("/config/t-value", "NONE").await.0, 200);
    assert_eq!(
        sr.register("t-value", RETYPED).await,
        (200, json!({"id": 4}))
    );
    assert_eq!(
        sr.get("/config/t-value").await,
        (200, json!({"compatibilityLevel": "NONE"}))
    );
    assert_eq!(
        sr.get("/config/u-value").await.0,
        404,
        "no subject level without defaultToGlobal"
    );
    assert_eq!(
        sr.get("/config/u-value?defaultToGlobal=true").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    // BACKWARD_TRANSITIVE checks every version, not only the latest.
    assert_eq!(
        sr.level("/config/u-value", "BACKWARD_TRANSITIVE").await.0,
        200
    );
    assert_eq!(sr.register("u-value", V2).await, (200, json!({"id": 2})));

    // Invalid schemas and levels are 422.
    assert_eq!(
        sr.register("t-value", "{\"type\":\"nope\"}").await.1["error_code"],
        json!(42201)
    );
    assert_eq!(
        sr.level("/config", "SIDEWAYS").await.1["error_code"],
        json!(42203)
    );
}
