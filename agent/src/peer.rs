//! The agent-to-agent API, served only over mutual TLS on the peer listener (see
//! [`crate::identity::serve_mtls`]): every handler can rely on the [`PeerId`] extension holding
//! the caller's verified SPIFFE ID.
//!
//! | method, path | answer |
//! |---|---|
//! | `GET /v1/peer/whoami` | `{"peer_id": <caller's SPIFFE ID>, "local_id": <ours>, "backend": "workload-api" or "files"}` |

use std::sync::Arc;

use axum::extract::Extension;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::identity::{Identity, PeerId};

/// Answer of `GET /v1/peer/whoami`.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    /// The caller's SPIFFE ID, as verified in the handshake.
    pub peer_id: String,
    /// Our SPIFFE ID (absent only if our SVID expired since the handshake).
    pub local_id: Option<String>,
    /// Where our identity comes from.
    pub backend: &'static str,
}

async fn whoami(
    Extension(peer): Extension<PeerId>,
    Extension(identity): Extension<Arc<Identity>>,
) -> Json<WhoAmI> {
    Json(WhoAmI {
        peer_id: peer.to_string(),
        local_id: identity.current_id().map(|id| id.to_string()),
        backend: identity.backend(),
    })
}

/// The peer router; serve it with [`crate::identity::serve_mtls`].
pub fn router() -> Router {
    Router::new().route("/v1/peer/whoami", get(whoami))
}
