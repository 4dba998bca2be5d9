//! The HTTP endpoint on `telemetry.listen`: `/metrics` (Prometheus text), `/healthz` (the
//! process is alive) and `/readyz` (the pipeline streams, Kafka is connected, the lag is
//! under the bound). One listener for all three, HTTP/1 on hyper. The handlers read the
//! recorder and atomics only, so they answer at once even when the database or the broker
//! hangs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::health::Health;
use super::metrics::REPLICATION_LAG_SECONDS;

/// A connection that sends nothing for this long is closed: a scraper answers in
/// milliseconds, and a stuck client must not hold a task forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours to bind.
    #[error("telemetry.listen {addr}: cannot listen: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    /// What an operator should do.
    pub fn hint(&self) -> &'static str {
        "another process listens on that address (a second connector?): choose a free port \
         in telemetry.listen, or remove telemetry to run without the endpoint"
    }
}

/// What the endpoint serves from.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
    /// The readiness state.
    pub health: Arc<Health>,
}

/// Binds `addr` and serves until `stop` fires. Binding happens before this returns, so a
/// taken address is an error here, at startup.
pub async fn serve(
    addr: SocketAddr,
    telemetry: Telemetry,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    info!(listen = %local, "serving /metrics, /healthz and /readyz");
    let task = tokio::spawn(accept_loop(listener, telemetry, stop));
    Ok((local, task))
}

async fn accept_loop(listener: TcpListener, telemetry: Telemetry, stop: CancellationToken) {
    loop {
        let (socket, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: the next accept may succeed.
                    debug!(error = %e, "telemetry accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let telemetry = telemetry.clone();
                async move { Ok::<_, Infallible>(respond(&telemetry, &request)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(e) = builder
                .serve_connection(TokioIo::new(socket), service)
                .await
            {
                debug!(%peer, error = %e, "telemetry connection ended with an error");
            }
        });
    }
}

/// Routes one request.
fn respond(telemetry: &Telemetry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "only GET is served"}),
        );
    }
    match request.uri().path() {
        "/metrics" => {
            // The lag in seconds grows with the clock: set it at scrape time.
            metrics::gauge!(REPLICATION_LAG_SECONDS).set(telemetry.health.lag_seconds());
            text_response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                telemetry.metrics.render(),
            )
        }
        "/healthz" => json_response(StatusCode::OK, &json!({"status": "alive"})),
        "/readyz" => {
            let readiness = telemetry.health.readiness();
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(status, &readiness.body)
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found; try /metrics, /healthz or /readyz"}),
        ),
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    text_response(status, "application/json", body.to_string())
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
