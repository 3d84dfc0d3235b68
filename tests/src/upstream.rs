//! A test upstream (axum) that says who it is and echoes what it received.
//!
//! Every response carries `x-upstream: <name>` and a JSON body
//! `{"upstream": name, "method": .., "path": .., "headers": {name: value}}` with the request
//! headers exactly as Envoy forwarded them (non-UTF-8 bytes replaced, duplicates joined by `,`),
//! so a test can see the route header, a rewritten class header or the `x-request-id`.
//! Its latency and status can be switched at runtime; a request may also ask for its own
//! delay with `x-upstream-delay-ms`. With [`Upstream::set_servers`] it serves at most that many
//! requests at once (the others queue, first come first served): a service of known capacity,
//! `servers / delay`.

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Response header naming the upstream that answered.
pub const UPSTREAM_HEADER: &str = "x-upstream";
/// Request header asking the upstream to delay this one response, in milliseconds.
pub const DELAY_HEADER: &str = "x-upstream-delay-ms";

#[derive(Debug)]
struct Shared {
    name: String,
    delay_ms: AtomicU64,
    status: AtomicU16,
    hits: AtomicU64,
    /// At most this many requests in service at once; `None`: no limit.
    servers: std::sync::Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

/// A running upstream; stops when dropped.
#[derive(Debug)]
pub struct Upstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Bind `127.0.0.1:0` and serve on the current Tokio runtime.
    pub async fn start(name: &str) -> anyhow::Result<Upstream> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("bind upstream on 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            delay_ms: AtomicU64::new(0),
            status: AtomicU16::new(200),
            hits: AtomicU64::new(0),
            servers: std::sync::Mutex::new(None),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                eprintln!("upstream server error: {e}");
            }
        });
        Ok(Upstream {
            shared,
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The name this upstream reports.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delay every response by `delay` (unless the request names its own delay).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Serve at most `servers` requests at once from now on (each holds a server for its
    /// delay); the rest wait in arrival order.
    pub fn set_servers(&self, servers: usize) {
        let mut slot = self
            .shared
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(Arc::new(tokio::sync::Semaphore::new(servers)));
    }

    /// Answer with `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown waits for open keep-alive connections; do not outlive the test.
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.hits.fetch_add(1, Ordering::Relaxed);
    let requested = request
        .headers()
        .get(DELAY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let delay = requested.unwrap_or_else(|| shared.delay_ms.load(Ordering::Relaxed));
    let servers = shared
        .servers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // Tokio's semaphore is fair: waiting requests get a server in arrival order.
    let _server = match &servers {
        Some(s) => s.acquire().await.ok(),
        None => None,
    };
    if delay > 0 {
        // Simulated service time of the upstream, not a test wait.
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut headers = serde_json::Map::new();
    for (name, value) in request.headers() {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&text);
            }
            _ => {
                headers.insert(name.as_str().to_string(), serde_json::Value::String(text));
            }
        }
    }
    let body = serde_json::json!({
        "upstream": shared.name,
        "method": request.method().as_str(),
        "path": request.uri().to_string(),
        "headers": headers,
    });
    let status =
        StatusCode::from_u16(shared.status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(name) = HeaderValue::from_str(&shared.name) {
        out.insert(UPSTREAM_HEADER, name);
    }
    response
}
