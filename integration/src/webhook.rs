//! A webhook receiver on loopback (hyper, HTTP/1.1): records every request it gets and
//! answers with a chosen status, or never answers the first few, like a hung chat service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// `POST`, ...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as text.
    pub body: String,
}

/// What the receiver shares with its connections.
#[derive(Default)]
struct State {
    requests: Mutex<Vec<ReceivedRequest>>,
    arrived: Notify,
    /// The status answered to recorded requests.
    status: AtomicU16,
    /// Requests still to be left hanging (never answered, not recorded).
    hang_next: AtomicUsize,
    /// Requests left hanging so far.
    hung: AtomicUsize,
}

/// A running receiver; stops when dropped.
pub struct WebhookReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver on a free loopback port, answering 200.
    pub async fn start() -> Result<WebhookReceiver> {
        Self::start_on("127.0.0.1:0".parse().context("loopback address")?).await
    }

    /// Starts a receiver on `addr`, answering 200.
    pub async fn start_on(addr: SocketAddr) -> Result<WebhookReceiver> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the webhook receiver to {addr}"))?;
        let addr = listener.local_addr().context("receiver address")?;
        let state = Arc::new(State::default());
        state.status.store(200, Ordering::SeqCst);
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(Arc::clone(&state), request));
                    // A client that goes away mid-request is no test failure.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(WebhookReceiver { addr, state, task })
    }

    /// The URL of path `/hook` on this receiver.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers later requests with `status`.
    pub fn answer_with(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Leaves the next `count` requests hanging: read, never answered, not recorded.
    pub fn hang_next(&self, count: usize) {
        self.state.hang_next.store(count, Ordering::SeqCst);
    }

    /// How many requests were left hanging.
    pub fn hung(&self) -> usize {
        self.state.hung.load(Ordering::SeqCst)
    }

    /// The requests recorded so far.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `count` requests were recorded, at most `limit`.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Result<Vec<ReceivedRequest>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.state.arrived.notified();
            let requests = self.requests();
            if requests.len() >= count {
                return Ok(requests);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                bail!(
                    "{} webhook requests after {limit:?}, expected {count}: {requests:?}",
                    requests.len()
                );
            }
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>> {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = request
        .into_body()
        .collect()
        .await
        .context("reading the request body")?
        .to_bytes();
    let hang = state
        .hang_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if hang {
        state.hung.fetch_add(1, Ordering::SeqCst);
        state.arrived.notify_waiters();
        std::future::pending::<()>().await;
    }
    state
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ReceivedRequest {
            method,
            path,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    state.arrived.notify_waiters();
    let status = state.status.load(Ordering::SeqCst);
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"ok")))
        .context("building the response")
}
