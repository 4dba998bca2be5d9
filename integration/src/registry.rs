//! A Schema Registry stand-in for the tests, the demo and the benchmarks: an HTTP server
//! (hyper on tokio, in-process, on 127.0.0.1:0 unless told otherwise) serving the part of
//! Confluent's Schema Registry REST API that entity-cdc and its tests use.
//!
//! Served:
//! - `POST /subjects/{subject}/versions` registers an Avro schema (`{"schema": "…"}`) and
//!   answers `{"id": n}`; the same schema again answers the same id. A new schema is checked
//!   against the subject's latest version (every version under a `*_TRANSITIVE` level) with
//!   apache-avro's own `SchemaCompatibility::can_read`: `BACKWARD` (the default: the new
//!   schema reads data written with the old), `FORWARD` (the old reads the new), `FULL`
//!   (both) or `NONE`. Only a fully compatible result counts (apache-avro's "partial"
//!   compatibility, e.g. union branches the reader lacks, is refused). A refusal is `409`
//!   with Confluent's error JSON (`{"error_code": 409, "message": "…"}`).
//! - `POST /subjects/{subject}` looks a schema up: `{subject, id, version, schema}` or 404.
//! - `GET /schemas/ids/{id}` answers `{"schema": "…"}`.
//! - `GET /subjects`, `GET /subjects/{subject}/versions`,
//!   `GET /subjects/{subject}/versions/{version|latest}`.
//! - `GET /config`, `PUT /config`, `GET /config/{subject}[?defaultToGlobal=true]`,
//!   `PUT /config/{subject}` read and set the compatibility level
//!   (`{"compatibility": "…"}` in, `{"compatibilityLevel": "…"}` out for GET).
//!
//! Not implemented: schema types other than Avro (`schemaType` PROTOBUF or JSON is refused
//! with 422), schema references, deleting subjects or versions (soft or hard), modes
//! (READONLY, IMPORT), contexts, `GET /schemas/ids/{id}/versions`, the
//! `/compatibility/...` test endpoints, authentication, and persistence (everything lives
//! in memory for the life of the server). Schemas are compared by apache-avro's canonical
//! form, so two texts that differ only in properties such as `doc` or `pg.name` count as
//! the same schema (Confluent compares the text it normalises; the connector always sends
//! the same text for the same columns, so this does not matter to it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The registry's state: schemas by id, subjects' versions, compatibility levels.
#[derive(Default)]
struct State {
    /// Schema texts; id = index + 1.
    schemas: Vec<(String, Schema)>,
    /// Subject → ids of its versions (version = index + 1).
    subjects: HashMap<String, Vec<u32>>,
    /// The global level; BACKWARD when unset.
    global: Option<String>,
    /// Per-subject levels.
    levels: HashMap<String, String>,
    /// `POST /subjects/{subject}/versions` requests served, for tests that check the
    /// connector's cache.
    register_requests: u64,
}

/// A running registry; stopped when dropped.
pub struct SchemaRegistry {
    addr: SocketAddr,
    stop: CancellationToken,
    state: Arc<Mutex<State>>,
}

impl SchemaRegistry {
    /// Starts a registry on a free loopback port.
    pub async fn start() -> anyhow::Result<SchemaRegistry> {
        SchemaRegistry::start_on("127.0.0.1:0".parse()?).await
    }

    /// Starts a registry on `addr` (port 0 for a free one).
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<SchemaRegistry> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let state = Arc::new(Mutex::new(State::default()));
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Ok(SchemaRegistry { addr, stop, state })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many register requests (`POST /subjects/{subject}/versions`) it served.
    pub fn register_requests(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register_requests
    }

    /// Runs until `stop` fires (for the standalone binary).
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

fn reply(status: StatusCode, body: &Json) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.schemaregistry.v1+json"),
    );
    response
}

fn error(status: StatusCode, code: u32, message: &str) -> Response<Full<Bytes>> {
    reply(status, &json!({"error_code": code, "message": message}))
}

/// Percent-decoding of a path segment (subjects may hold `%2F`).
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, 400, "unreadable body"),
    };
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    match (&method, parts.as_slice()) {
        (&Method::POST, ["subjects", subject, "versions"]) => {
            state.register_requests += 1;
            register(&mut state, subject, &body)
        }
        (&Method::POST, ["subjects", subject]) => lookup(&state, subject, &body),
        (&Method::GET, ["subjects"]) => {
            let mut names: Vec<&String> = state.subjects.keys().collect();
            names.sort();
            reply(StatusCode::OK, &json!(names))
        }
        (&Method::GET, ["subjects", subject, "versions"]) => match state.subjects.get(*subject) {
            Some(ids) => reply(StatusCode::OK, &json!((1..=ids.len()).collect::<Vec<_>>())),
            None => error(StatusCode::NOT_FOUND, 40401, "Subject not found."),
        },
        (&Method::GET, ["subjects", subject, "versions", version]) => {
            let Some(ids) = state.subjects.get(*subject) else {
                return error(StatusCode::NOT_FOUND, 40401, "Subject not found.");
            };
            let index = match *version {
                "latest" | "-1" => ids.len().checked_sub(1),
                v => v.parse::<usize>().ok().and_then(|v| v.checked_sub(1)),
            };
            match index.and_then(|i| ids.get(i).map(|&id| (i, id))) {
                Some((i, id)) => {
                    let text = state
                        .schemas
                        .get(id as usize - 1)
                        .map(|(t, _)| t.clone())
                        .unwrap_or_default();
                    reply(
                        StatusCode::OK,
                        &json!({"subject": subject, "version": i + 1, "id": id, "schema": text}),
                    )
                }
                None => error(StatusCode::NOT_FOUND, 40402, "Version not found."),
            }
        }
        (&Method::GET, ["schemas", "ids", id]) => {
            match id
                .parse::<usize>()
                .ok()
                .and_then(|id| id.checked_sub(1))
                .and_then(|i| state.schemas.get(i))
            {
                Some((text, _)) => reply(StatusCode::OK, &json!({"schema": text})),
                None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
            }
        }
        (&Method::GET, ["config"]) => reply(
            StatusCode::OK,
            &json!({"compatibilityLevel": global_level(&state)}),
        ),
        (&Method::GET, ["config", subject]) => match state.levels.get(*subject) {
            Some(level) => reply(StatusCode::OK, &json!({"compatibilityLevel": level})),
            None if query.contains("defaultToGlobal=true") => reply(
                StatusCode::OK,
                &json!({"compatibilityLevel": global_level(&state)}),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                40408,
                &format!(
                    "Subject '{subject}' does not have subject-level compatibility configured"
                ),
            ),
        },
        (&Method::PUT, ["config"]) => match level_of(&body) {
            Ok(level) => {
                state.global = Some(level.clone());
                reply(StatusCode::OK, &json!({"compatibility": level}))
            }
            Err(response) => response,
        },
        (&Method::PUT, ["config", subject]) => match level_of(&body) {
            Ok(level) => {
                state.levels.insert((*subject).to_owned(), level.clone());
                reply(StatusCode::OK, &json!({"compatibility": level}))
            }
            Err(response) => response,
        },
        _ => error(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found"),
    }
}

fn global_level(state: &State) -> String {
    state
        .global
        .clone()
        .unwrap_or_else(|| "BACKWARD".to_owned())
}

const LEVELS: &[&str] = &[
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
];

#[allow(clippy::result_large_err)]
fn level_of(body: &[u8]) -> Result<String, Response<Full<Bytes>>> {
    let level = serde_json::from_slice::<Json>(body).ok().and_then(|v| {
        v.get("compatibility")
            .and_then(Json::as_str)
            .map(str::to_owned)
    });
    match level {
        Some(level) if LEVELS.contains(&level.as_str()) => Ok(level),
        _ => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level. Valid values are none, backward, forward, full, \
             backward_transitive, forward_transitive, and full_transitive",
        )),
    }
}

/// The schema of a register or lookup body.
#[allow(clippy::result_large_err)]
fn schema_of(body: &[u8]) -> Result<(String, Schema), Response<Full<Bytes>>> {
    let request: Json = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, 400, &format!("invalid JSON: {e}")))?;
    if let Some(kind) = request.get("schemaType").and_then(Json::as_str) {
        if kind != "AVRO" {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                &format!("schema type {kind} is not supported by this test registry"),
            ));
        }
    }
    let text = request
        .get("schema")
        .and_then(Json::as_str)
        .ok_or_else(|| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "no schema"))?
        .to_owned();
    let schema = Schema::parse_str(&text).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            &format!("Invalid schema: {e}"),
        )
    })?;
    Ok((text, schema))
}

/// Whether data written with `writer` can be read with `reader`, fully.
fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err("only partially compatible".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn register(state: &mut State, subject: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let (text, schema) = match schema_of(body) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let canonical = schema.canonical_form();
    let versions = state.subjects.get(subject).cloned().unwrap_or_default();
    let same = |id: &u32| {
        state
            .schemas
            .get(*id as usize - 1)
            .is_some_and(|(_, s)| s.canonical_form() == canonical)
    };
    if let Some(id) = versions.iter().find(|id| same(id)) {
        return reply(StatusCode::OK, &json!({"id": id}));
    }
    let level = state
        .levels
        .get(subject)
        .cloned()
        .unwrap_or_else(|| global_level(state));
    let against: Vec<u32> = if level.ends_with("_TRANSITIVE") {
        versions.clone()
    } else {
        versions.last().copied().into_iter().collect()
    };
    for id in against {
        let Some((_, old)) = state.schemas.get(id as usize - 1) else {
            continue;
        };
        let backward = || can_read(old, &schema);
        let forward = || can_read(&schema, old);
        let verdict = match level.trim_end_matches("_TRANSITIVE") {
            "BACKWARD" => backward(),
            "FORWARD" => forward(),
            "FULL" => backward().and_then(|()| forward()),
            _ => Ok(()),
        };
        if let Err(detail) = verdict {
            return error(
                StatusCode::CONFLICT,
                409,
                &format!(
                    "Schema being registered is incompatible with an earlier schema for subject \
                     \"{subject}\", details: [{detail}]; compatibility level {level}, \
                     checked against schema id {id}"
                ),
            );
        }
    }
    let id = match state
        .schemas
        .iter()
        .position(|(_, s)| s.canonical_form() == canonical)
    {
        Some(i) => i as u32 + 1,
        None => {
            state.schemas.push((text, schema));
            state.schemas.len() as u32
        }
    };
    state
        .subjects
        .entry(subject.to_owned())
        .or_default()
        .push(id);
    reply(StatusCode::OK, &json!({"id": id}))
}

fn lookup(state: &State, subject: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let (_, schema) = match schema_of(body) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let Some(ids) = state.subjects.get(subject) else {
        return error(StatusCode::NOT_FOUND, 40401, "Subject not found.");
    };
    let canonical = schema.canonical_form();
    for (i, id) in ids.iter().enumerate() {
        if let Some((text, s)) = state.schemas.get(*id as usize - 1) {
            if s.canonical_form() == canonical {
                return reply(
                    StatusCode::OK,
                    &json!({"subject": subject, "id": id, "version": i + 1, "schema": text}),
                );
            }
        }
    }
    error(StatusCode::NOT_FOUND, 40403, "Schema not found")
}
