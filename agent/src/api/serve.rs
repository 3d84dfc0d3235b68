//! The API listener's HTTP server (hyper HTTP/1, in place of `axum::serve`), bounded for
//! callers without a credential:
//!
//! - a **header-read timeout** ([`ServeLimits::header_timeout`]) that closes a connection
//!   whose request headers do not arrive in time — a slow or unfinished request, and an idle
//!   keep-alive connection waiting for its next request alike (a held long-poll is a request
//!   in progress, not idle);
//! - a cap on **open connections** ([`ServeLimits::max_connections`]): beyond it a new
//!   connection is closed at once (and counted in the log), so file descriptors stay for the
//!   database, the keys and the filters already connected;
//! - the peer address as `ConnectInfo<SocketAddr>`, for per-client limits in the routes;
//! - a back-off when `accept` fails (file descriptors exhausted) instead of a busy loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// What the server bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time a request's headers (and an idle connection's next request) may take.
    pub header_timeout: Duration,
}

/// Wait after a failed `accept` before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serve `router` on `listener` within `limits` until `shutdown` completes, then let open
/// connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refused = AtomicU64::new(0);
    let failed_accepts = AtomicU64::new(0);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if let Some(n) = super::flood::count(&failed_accepts) {
                        tracing::warn!(so_far = n, "accepting an API connection failed: {e}; backing off");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(n) = super::flood::count(&refused) {
                tracing::warn!(
                    so_far = n,
                    "API connection from {remote} closed: {} connections open (api.max_connections)",
                    limits.max_connections
                );
            }
            drop(tcp);
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(request.map(Body::new))
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(tcp), service);
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(%remote, error = %e, "API connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The client address of a request served by [`serve`] (unspecified when absent, e.g. a
/// router driven directly in a test).
pub fn client_ip(extensions: &axum::http::Extensions) -> std::net::IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// File descriptors kept beside the API connections: databases and their WAL files, keys,
/// listeners, outgoing calls (KMS, peers, SPIRE), the runtime.
pub const FD_RESERVE: u64 = 256;

/// Make sure the process may open `max_connections` plus [`FD_RESERVE`] files: raise the soft
/// limit toward the hard one when needed; the limit in force on success, the reason otherwise.
pub fn ensure_fd_headroom(max_connections: usize) -> Result<u64, String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let needed = max_connections as u64 + FD_RESERVE;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= needed {
        return Ok(current);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard >= needed {
        let raised = Rlimit {
            current: Some(needed),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            tracing::info!(from = current, to = needed, "raised the open-file limit");
            return Ok(needed);
        }
    }
    Err(format!(
        "needs {needed} file descriptors ({max_connections} connections + {FD_RESERVE} reserved), the process may open {current} (hard limit {hard}): lower api.max_connections or raise the limit (ulimit -n, LimitNOFILE=)"
    ))
}
