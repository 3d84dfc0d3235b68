//! [`serve_mtls`]: serve an axum router over mutual TLS with our SVID, to peers whose SVID the
//! allow-list accepts, with the verified [`PeerId`] and our own `Arc<Identity>` as request
//! extensions.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use spiffe::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::material::not_after;
use super::tls::unix_now;
use super::{Identity, IdentityError};

/// Longest time a peer gets to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The peer's SPIFFE ID, verified during the mTLS handshake (chain against the trust bundle,
/// ID against the allow-list); inserted into every request served by [`serve_mtls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerId(pub SpiffeId);

impl PeerId {
    /// The verified SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.0
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn unavailable(message: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(
        serde_json::json!({ "error": message }).to_string(),
    ));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    identity: Arc<Identity>,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%remote, error = %e, "mTLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "mTLS handshake timed out");
            return;
        }
    };
    let Some(leaf) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
    else {
        tracing::warn!(%remote, "refused peer: no client certificate");
        return;
    };
    let (peer, peer_not_after) = match (spiffe::cert::spiffe_id_from_der(&leaf), not_after(&leaf)) {
        (Ok(id), Ok(t)) => (PeerId(id), t),
        _ => {
            tracing::warn!(%remote, "refused peer: certificate unreadable after handshake");
            return;
        }
    };
    tracing::debug!(%remote, peer_id = %peer, "mTLS peer connected");
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let router = router.clone();
        let identity = identity.clone();
        let peer = peer.clone();
        async move {
            if !identity.is_usable() {
                tracing::error!(peer_id = %peer, "own SVID unusable: refusing request (fail closed)");
                return Ok::<_, Infallible>(unavailable("identity unavailable"));
            }
            if peer_not_after <= unix_now() {
                tracing::warn!(peer_id = %peer, "refused request: peer SVID expired during the connection");
                return Ok(unavailable("peer SVID expired"));
            }
            request.extensions_mut().insert(peer);
            request.extensions_mut().insert(identity);
            router.oneshot(request.map(Body::new)).await
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%remote, error = %e, "peer connection ended with an error");
    }
}

/// Serve `router` on `listener` over mutual TLS until `shutdown` completes, then let open
/// connections finish their requests. Handshakes are refused (and logged) when the peer's SVID
/// does not verify or is not in the allow-list, and while our own SVID is unusable.
pub async fn serve_mtls(
    listener: TcpListener,
    identity: Arc<Identity>,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IdentityError> {
    let acceptor = TlsAcceptor::from(identity.server_config());
    let graceful = GracefulShutdown::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, spiffe_id = ?identity.current_id().map(|i| i.to_string()), "peer mTLS listener serving");
    }
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(
            tcp,
            remote,
            acceptor.clone(),
            identity.clone(),
            router.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
